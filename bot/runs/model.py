"""Runs and approvals as plain data, and the lifecycle they move through.

validate / refresh:  requested (queued) -> running -> passed | failed | error
deploy:              awaiting_approval -> scheduled -> running -> deployed | failed | interrupted
unblock:             awaiting_approval -> scheduled -> running -> passed | failed | error
any state before running can become cancelled; running becomes interrupted
when the process running it died (its lease lapsed). A deploy whose window
closed mid-run goes from running back to scheduled, for the migrations left;
an interrupted deploy goes back to scheduled when a person re-deploys or
resumes it (``/migrate deploy <run> [resume]``) — only deploys, because only
their approval still binds what is left to do.
``scheduled`` carries a time (``scheduled_for``) when deploy windows are
configured. Transitions outside this table are refused, so a bug can never,
say, deploy a cancelled run.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Kind(StrEnum):
    VALIDATE = "validate"
    REFRESH = "refresh"
    DEPLOY = "deploy"
    UNBLOCK = "unblock"


class State(StrEnum):
    REQUESTED = "requested"
    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"
    AWAITING_APPROVAL = "awaiting_approval"
    SCHEDULED = "scheduled"
    DEPLOYED = "deployed"
    INTERRUPTED = "interrupted"
    CANCELLED = "cancelled"
    REJECTED = "rejected"

    @property
    def terminal(self) -> bool:
        """The run's work has ended (an interrupted deploy may still be taken up again by a person)."""
        return self not in TRANSITIONS or self is State.INTERRUPTED


TRANSITIONS: dict[State, set[State]] = {
    State.REQUESTED: {State.RUNNING, State.CANCELLED, State.INTERRUPTED, State.AWAITING_APPROVAL},
    State.AWAITING_APPROVAL: {State.SCHEDULED, State.CANCELLED, State.REJECTED},
    State.SCHEDULED: {State.RUNNING, State.CANCELLED, State.AWAITING_APPROVAL},
    State.RUNNING: {State.PASSED, State.FAILED, State.ERROR, State.DEPLOYED, State.INTERRUPTED, State.SCHEDULED},
    State.INTERRUPTED: {State.SCHEDULED},  # deploys only (see can_move): re-deployed or resumed by a person
}

ENVIRONMENT = {Kind.VALIDATE: "staging", Kind.REFRESH: "staging", Kind.DEPLOY: "prod", Kind.UNBLOCK: "prod"}
QUEUED = (Kind.VALIDATE, Kind.REFRESH)  # requested runs of these kinds wait their turn for their environment


def new_run_id() -> str:
    return "r-" + secrets.token_hex(4)


def can_move(current: State, target: State, kind: Kind | None = None) -> bool:
    if current is State.INTERRUPTED and kind is not Kind.DEPLOY:
        return False  # an interrupted validation is simply asked for again: a new run
    return target in TRANSITIONS.get(current, set())


@dataclass
class Run:
    id: str
    kind: Kind
    state: State
    requested_by: str
    channel: str = ""
    thread_ts: str = ""  # the parent message: edited in place as the run advances
    fingerprint: str = ""
    commit: str = ""
    ref: str = ""
    parent: str = ""  # a deploy's validation run
    summary: str = ""  # one line for status/history
    report: str = ""  # the step's Report as JSON
    created_at: str = ""
    updated_at: str = ""
    scheduled_for: str = ""  # ISO-8601 UTC: when a scheduled deploy fires ("" = on command)
    owner: str = ""  # the process executing it (while running); its lease says whether it lives
    data: dict[str, Any] = field(default_factory=dict)  # kind-specific (unblock pids, estimate, override, …)

    @property
    def env(self) -> str:
        return ENVIRONMENT[self.kind]

    def facts(self) -> list[str]:
        """Who, where and exactly what: shown on the parent message and in status/history."""
        found = [f"asked by <@{self.requested_by}>", f"env: {self.env}"]
        if self.ref:
            found.append(f"ref: `{self.ref}`")
        if self.commit:
            found.append(f"commit: `{self.commit[:10]}`")
        if self.fingerprint:
            found.append(f"fingerprint: `{self.fingerprint[:12]}`")
        return found


@dataclass(frozen=True)
class Approval:
    run_id: str
    user: str
    verdict: str  # "approve" | "reject"
    fingerprint: str
    created_at: str
    revoked_at: str = ""
