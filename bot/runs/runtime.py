"""The runs layer assembled: what commands, executions and scheduled jobs all work with.

One ``Runtime`` per bot: settings, the state store, the lifecycle (the only
writer of transitions), the chat voice, the workflow, the executor for slow
work and the scheduler for work at a time. ``start`` makes it live (the
heartbeat, recovery of dead runs, the queue, the scheduler); tests that only
drive commands need not start it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Protocol

from bot.config import Settings
from bot.runs import policy
from bot.runs.announcer import Announcer
from bot.runs.executor import Executor
from bot.runs.lifecycle import Lifecycle
from bot.runs.model import Run
from bot.runs.schedule import Scheduler
from bot.runs.store import StateStore
from bot.runs.windows import Calendar, parse_calendar
from bot.workflow.report import Report

log = logging.getLogger(__name__)


class Workflow(Protocol):
    """The workflow as the runs layer calls it (``steps.Steps``): one method per thing a run does."""

    def validate(self, settings: Settings, store: StateStore, run: Run, on_event: Callable) -> Report: ...
    def refresh(self, settings: Settings, run: Run, on_event: Callable) -> Report: ...
    def deploy(self, settings: Settings, store: StateStore, run: Run, on_event: Callable,
               deadline: datetime | None = None) -> Report: ...
    def idle_sessions(self, settings: Settings) -> list[dict[str, Any]]: ...
    def terminate(self, settings: Settings, pids: list[int]) -> Report: ...
    def interrupted(self, settings: Settings, run: Run) -> Report: ...
    def estimate(self, settings: Settings, store: StateStore, run: Run) -> Any: ...
    def preflight(self, settings: Settings, run: Run) -> Any: ...
    def traffic(self, settings: Settings) -> dict[str, int]: ...
    def end_sessions(self, settings: Settings, run_ids: list[str]) -> dict[str, list[int]]: ...


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Runtime:
    settings: Settings
    store: StateStore
    announcer: Announcer
    workflow: Workflow
    groups: policy.GroupMembers = lambda group: set()
    clock: Callable[[], datetime] = _utcnow
    lifecycle: Lifecycle = field(init=False)
    executor: Executor = field(init=False)
    scheduler: Scheduler = field(init=False)
    started_at: datetime | None = field(default=None, init=False)  # when this process went live
    outbox: Any = field(default=None, init=False)  # runs/outbox.Outbox when the chat face delivers through one

    def __post_init__(self) -> None:
        from bot.runs import execution  # the crash handler turns a crashed job into a run state

        self.lifecycle = Lifecycle(self.store, self.announcer)
        self.executor = Executor(on_crash=lambda run_id, exc: execution.crashed(self, run_id, exc))
        from bot.runs import jobs  # jobs run for the runtime whose scheduler's thread runs them

        self.scheduler = Scheduler(self.store, self.lifecycle.alive, self.lifecycle.owner,
                                   worker_init=lambda: jobs.enter(self))

    @property
    def calendar(self) -> Calendar:
        d = self.settings.deploy
        return parse_calendar(d.windows, d.freezes, d.timezone)

    def now(self) -> datetime:
        return self.clock()

    # -- life ------------------------------------------------------------------------------------
    def recover(self) -> list[Run]:
        """Dead processes' runs become interrupted; queued runs start when their environment is free."""
        from bot.runs import execution

        touched = self.lifecycle.recover_dead()
        execution.after_interruption(self, touched)
        execution.dispatch_all(self)
        return touched

    def start(self) -> None:
        """Go live: heartbeat, recovery, the queue, and the scheduler (run here if we win the election)."""
        from bot.runs import jobs

        self.started_at = self.now()
        if self.outbox is not None:
            self.outbox.start()  # messages a previous process stored go out first
        self.lifecycle.start()
        self.recover()
        jobs.install_recurring(self)
        self.lifecycle.on_beat.append(self._on_beat)
        self.scheduler.elect()
        jobs.reconcile(self)

    def _on_beat(self) -> None:
        from bot.runs import execution

        execution.after_interruption(self, self.lifecycle.recover_dead())
        self.scheduler.elect()

    def stop(self, *, wait: bool = True) -> None:
        """No new work; wait for running runs (``wait``); give up leases (only when ``wait``: else as a crash)."""
        self.scheduler.stop()
        self.executor.shutdown(wait=wait)
        if self.outbox is not None:
            self.outbox.stop(drain_s=10.0 if wait else 0.0)  # what is not delivered stays stored
        self.lifecycle.stop(clean=wait)
