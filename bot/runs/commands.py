"""The run service: start, approve, deploy, cancel — one place for what, who and when.

Chat adapters (Slack, the terminal) turn input into calls here and render
what comes back; they hold no workflow logic. Every transition is persisted
before it is announced, so a restart loses nothing: ``recover`` turns runs
left ``running`` into ``interrupted`` and says so in their threads.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Protocol

from bot import messages
from bot.config import Settings
from bot.redact import redact
from bot.runs import policy
from bot.runs.executor import Executor
from bot.runs.model import Approval, Kind, Run, State, can_move, new_run_id
from bot.runs.store import Store, _now
from bot.workflow import triage as triage_mod
from bot.workflow.report import Report

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 3.0  # chat.update is rate-limited; a live line every few seconds is plenty


class StaleRun(Exception):
    """A transition from an outdated copy of a run: someone else moved it first."""


class Announcer(Protocol):
    """What a chat adapter does with run news. Implementations must not raise for chat hiccups."""

    def run_started(self, run: Run) -> str:
        """Post the run's parent message; return its ts (the thread)."""

    def run_updated(self, run: Run) -> None:
        """Edit the parent message in place to show the current state."""

    def say(self, run: Run, text: str) -> str | None:
        """A short reply in the run's thread; returns its ts when the chat has one."""

    def report(self, run: Run, report: Report) -> None:
        """Per-check details, triage and the full log, as thread replies."""

    def thread_link(self, run: Run) -> str:
        """Where a person can open the run's thread (a URL in Slack), or "" when the chat has none."""


@dataclass(frozen=True)
class Reply:
    """The immediate answer to a command (ephemeral in Slack, printed in the shell)."""

    ok: bool
    text: str
    run: Run | None = None


class Workflow(Protocol):
    def validate(self, settings: Settings, store: Store, run: Run, on_event: Callable) -> Report: ...
    def refresh(self, settings: Settings, run: Run, on_event: Callable) -> Report: ...
    def deploy(self, settings: Settings, store: Store, run: Run, on_event: Callable) -> Report: ...
    def idle_sessions(self, settings: Settings) -> list[dict[str, Any]]: ...
    def terminate(self, settings: Settings, pids: list[int]) -> Report: ...


class RunService:
    def __init__(self, settings: Settings, store: Store, announcer: Announcer, *, workflow: Workflow,
                 executor: Executor | None = None, groups: policy.GroupMembers = lambda group: set()) -> None:
        self.settings = settings
        self.store = store
        self.announcer = announcer
        self.workflow = workflow
        self.groups = groups
        self.executor = executor or Executor(on_crash=self._crashed)

    # -- transitions -------------------------------------------------------------
    def _move(self, run: Run, state: State, **changes: Any) -> Run:
        """Persist a transition, then announce it; refuse it if the stored run moved on meanwhile."""
        if not can_move(run.state, state):
            raise StaleRun(f"{run.id}: {run.state} -> {state} is not a legal transition")
        moved = replace(run, state=state, **changes)
        if not self.store.save_run(moved, expect=run.state):
            stored = self.store.get_run(run.id)
            raise StaleRun(f"{run.id} is {stored.state if stored else 'gone'}, not {run.state}: not moving it to {state}")
        self.announcer.run_updated(moved)
        return moved

    def _crashed(self, run_id: str, exc: BaseException) -> None:
        if isinstance(exc, StaleRun):  # an outdated thread lost a race; the stored run is the truth
            log.warning("%s", exc)
            return
        run = self.store.get_run(run_id)
        if run and run.state is State.RUNNING:
            text = messages.UNEXPECTED.format(error=type(exc).__name__)
            self._move(run, State.ERROR, summary=redact(text))
            self.announcer.say(run, text)
        if run:
            self.store.unlock_env(run.env, run.id)

    # -- starting runs -----------------------------------------------------------
    def start(self, kind: Kind, user: str, channel: str, ref: str | None = None) -> Reply:
        """validate / refresh / unblock: check policy, take the environment, hand to the executor."""
        for decision in (policy.in_channel(self.settings.slack, channel),
                         policy.may_start(self.settings.policy, user, self.groups)):
            if not decision.allowed:
                return Reply(False, decision.reason)
        run = Run(id=new_run_id(), kind=kind, state=State.REQUESTED, requested_by=user, channel=channel,
                  ref=ref or "")
        holder = self.store.start_run(run)  # the lock and the run row together: a rival always finds the holder
        if holder:
            return Reply(False, self._busy_text(run.env, holder))
        ts = self.announcer.run_started(run)
        run = replace(run, thread_ts=ts)
        self.store.save_run(run)
        self.executor.submit(run.id, lambda: self._execute(run.id))
        return Reply(True, f"Started {run.id}: {kind.value} on {run.env}.", run)

    def _busy_text(self, env: str, holder_id: str) -> str:
        holder = self.store.get_run(holder_id)
        if holder is None:
            return messages.ENV_BUSY.format(env=env, holder=holder_id, kind="run", state="unknown", by="?", link="")
        url = self.announcer.thread_link(holder) if holder.thread_ts else ""
        link = (f" — <{url}|its thread>" if url else f" — its thread is in <#{holder.channel}>" if holder.channel
                else "")
        return messages.ENV_BUSY.format(env=env, holder=holder.id, kind=holder.kind.value, state=holder.state.value,
                                        by=holder.requested_by, link=link)

    def _execute(self, run_id: str) -> None:
        run = self.store.get_run(run_id)
        if run is None or run.state is not State.REQUESTED:
            return  # cancelled while queued
        try:
            if run.kind is Kind.UNBLOCK:
                self._list_idle(run)
                return
            run = self._move(run, State.RUNNING)
            on_event = self._progress(run)
            if run.kind is Kind.VALIDATE:
                report = self.workflow.validate(self.settings, self.store, run, on_event)
            else:
                report = self.workflow.refresh(self.settings, run, on_event)
            self._finish(run, report)
        finally:
            self.store.unlock_env(run.env, run.id)

    def _progress(self, run: Run) -> Callable[[str, dict], None]:
        """Progress events -> the parent message's summary line, at most every few seconds.

        Progress is not a transition, so it is shown, not stored: after a
        restart the stored state is what counts.
        """
        last_shown = [0.0]

        def on_event(kind: str, data: dict) -> None:
            log.info("%s %s %s", run.id, kind, redact(str(data)))
            if kind == "lock_retry":  # the one event people must see in the thread: we wait on their locks
                self.announcer.say(run, _lock_retry_text(data))
            line = progress_line(kind, data)
            now = time.monotonic()
            if line and (kind == "step" or now - last_shown[0] >= PROGRESS_EVERY_S):
                last_shown[0] = now
                self.announcer.run_updated(replace(run, summary=line))

        return on_event

    def _finish(self, run: Run, report: Report) -> Run:
        state = {0: State.PASSED, 1: State.FAILED}.get(report.exit_code, State.ERROR)
        if run.kind is Kind.DEPLOY and state is State.PASSED:
            state = State.DEPLOYED
        run = self._move(run, state, summary=report.summary(), report=report.to_json(),
                         fingerprint=report.fingerprint or run.fingerprint,
                         commit=report.facts.get("commit") or run.commit)
        self.announcer.report(run, report)
        if run.kind is Kind.VALIDATE and state is State.PASSED:
            self._offer_deploy(run, report)
        return run

    def _offer_deploy(self, validation: Run, report: Report) -> None:
        if not report.facts.get("pending"):
            self.announcer.say(validation, messages.NOTHING_TO_DEPLOY)
            return
        deploy = Run(id=new_run_id(), kind=Kind.DEPLOY, state=State.AWAITING_APPROVAL,
                     requested_by=validation.requested_by, channel=validation.channel,
                     thread_ts=validation.thread_ts, fingerprint=report.fingerprint or "",
                     commit=validation.commit, ref=validation.ref, parent=validation.id,
                     summary=f"{len(report.facts['pending'])} migration(s) validated by {validation.id}")
        self.store.save_run(deploy)
        self.announcer.run_updated(deploy)
        p = self.settings.policy
        prompt = self.announcer.say(deploy, messages.DEPLOY_AWAITING.format(
            run_id=deploy.id, required=p.approvals_required, approvers=messages.who(p.approvers),
            reaction=self.settings.slack.approve_reaction))
        self._remember_prompt(deploy, prompt)

    def _remember_prompt(self, run: Run, ts: str | None) -> None:
        """Reactions on the message that asks for approval count like reactions on the parent."""
        if ts:
            self.store.save_run(replace(run, data=dict(run.data, prompt_ts=ts)), expect=run.state)

    # -- approvals ---------------------------------------------------------------
    def react(self, channel: str, ts: str, user: str, reaction: str, added: bool) -> Reply | None:
        """A reaction on a run's parent message; None when it is not ours to count."""
        run = self.store.run_by_message(channel, ts)
        if run is None or run.kind not in (Kind.DEPLOY, Kind.UNBLOCK):
            return None
        slack = self.settings.slack
        if reaction == slack.approve_reaction:
            return self.approve(run.id, user) if added else self.revoke(run.id, user)
        if reaction == slack.reject_reaction and added:
            return self.reject(run.id, user)
        return None

    def approve(self, run_id: str, user: str) -> Reply:
        run = self.store.get_run(run_id)
        if run is None:
            return Reply(False, messages.NO_SUCH_RUN.format(run_id=run_id))
        if run.state not in (State.AWAITING_APPROVAL, State.SCHEDULED):
            return self._tell(run, messages.APPROVE_WRONG_STATE.format(run_id=run.id, state=run.state.value), False)
        decision = policy.may_approve(self.settings.policy, user, run, self.groups)
        if not decision.allowed:
            return self._tell(run, decision.reason, False)
        self.store.put_approval(Approval(run.id, user, "approve", run.fingerprint, _now()))
        return self._recount(run, user)

    def _recount(self, run: Run, user: str) -> Reply:
        p = self.settings.policy
        count = len(policy.counted(p, run, self.store.approvals(run.id), self.groups))
        if count < p.approvals_required:
            return self._tell(run, messages.APPROVAL_COUNTED.format(user=user, count=count,
                                                                    required=p.approvals_required), True)
        if run.state is State.AWAITING_APPROVAL:
            run = self._move(run, State.SCHEDULED)
        if run.kind is Kind.UNBLOCK:
            self._tell(run, messages.UNBLOCK_APPROVED.format(user=user), True)
            self.executor.submit(run.id, lambda: self._terminate(run.id))
            return Reply(True, messages.UNBLOCK_APPROVED.format(user=user), run)
        return self._tell(run, messages.APPROVALS_MET.format(count=count, required=p.approvals_required,
                                                             requester=run.requested_by, run_id=run.id), True)

    def revoke(self, run_id: str, user: str) -> Reply:
        run = self.store.get_run(run_id)
        if run is None:
            return Reply(False, messages.NO_SUCH_RUN.format(run_id=run_id))
        if run.state not in (State.AWAITING_APPROVAL, State.SCHEDULED):
            return self._tell(run, messages.REVOKE_TOO_LATE.format(run_id=run.id), False)
        if not self.store.revoke_approval(run.id, user):
            return Reply(False, "", run)  # a reaction that never counted: nothing to say
        p = self.settings.policy
        count = len(policy.counted(p, run, self.store.approvals(run.id), self.groups))
        if run.state is State.SCHEDULED and count < p.approvals_required:
            run = self._move(run, State.AWAITING_APPROVAL)
        return self._tell(run, messages.APPROVAL_REVOKED.format(user=user, count=count,
                                                                required=p.approvals_required), True)

    def reject(self, run_id: str, user: str) -> Reply:
        run = self.store.get_run(run_id)
        if run is None:
            return Reply(False, messages.NO_SUCH_RUN.format(run_id=run_id))
        decision = policy.may_approve(self.settings.policy, user, run, self.groups)
        if not decision.allowed or run.state not in (State.AWAITING_APPROVAL, State.SCHEDULED):
            reason = decision.reason or messages.APPROVE_WRONG_STATE.format(run_id=run.id, state=run.state.value)
            return self._tell(run, reason, False)
        self.store.put_approval(Approval(run.id, user, "reject", run.fingerprint, _now()))
        run = self._move(run, State.REJECTED, summary=f"rejected by {user}")
        return self._tell(run, messages.REJECTED.format(user=user, run_id=run.id), True)

    def _tell(self, run: Run, text: str, ok: bool) -> Reply:
        self.announcer.say(run, text)
        return Reply(ok, text, run)

    # -- deploying ---------------------------------------------------------------
    def deploy(self, run_id: str | None, user: str) -> Reply:
        run = self.store.get_run(run_id) if run_id else self.store.latest_run(Kind.DEPLOY)
        if run is None or run.kind is not Kind.DEPLOY:
            return Reply(False, messages.NO_SUCH_RUN.format(run_id=run_id or "(latest deploy)"))
        decision = policy.may_deploy(self.settings.policy, user, run, self.groups)
        if not decision.allowed:
            return Reply(False, decision.reason, run)
        if run.state is not State.SCHEDULED:
            p = self.settings.policy
            return Reply(False, messages.NOT_APPROVED.format(run_id=run.id, state=run.state.value,
                                                             required=p.approvals_required,
                                                             approvers=messages.who(p.approvers)), run)
        holder = self.store.lock_env("prod", run.id)
        if holder:
            return Reply(False, self._busy_text("prod", holder), run)
        run = self._move(run, State.RUNNING)
        self.executor.submit(run.id, lambda: self._run_deploy(run.id))
        return Reply(True, f"Deploying {run.id} to prod.", run)

    def _run_deploy(self, run_id: str) -> None:
        run = self.store.get_run(run_id)
        if run is None:
            return
        try:
            report = self.workflow.deploy(self.settings, self.store, run, self._progress(run))
            self._finish(run, report)
        finally:
            self.store.unlock_env("prod", run.id)

    # -- unblock -----------------------------------------------------------------
    def _list_idle(self, run: Run) -> None:
        sessions = self.workflow.idle_sessions(self.settings)
        minutes = self.settings.gate.idle_in_transaction_minutes
        if not sessions:
            run = self._move(run, State.RUNNING)
            self._move(run, State.PASSED, summary=messages.NO_IDLE_SESSIONS.format(minutes=minutes))
            self.announcer.say(run, messages.NO_IDLE_SESSIONS.format(minutes=minutes))
            return
        lines = [f"pid {s['pid']} ({s['application'] or s['user']}, idle {s['idle_seconds']}s)" for s in sessions]
        run = self._move(run, State.AWAITING_APPROVAL, data={"pids": [s["pid"] for s in sessions]},
                         summary=f"{len(sessions)} idle-in-transaction session(s) to terminate")
        p = self.settings.policy
        prompt = self.announcer.say(run, "Sessions idle in transaction on prod:\n" + "\n".join(lines) +
                                    f"\nAn approver ({messages.who(p.approvers)}) must react "
                                    f":{self.settings.slack.approve_reaction}: on this message to terminate them.")
        self._remember_prompt(run, prompt)

    def _terminate(self, run_id: str) -> None:
        run = self.store.get_run(run_id)
        if run is None or run.state is not State.SCHEDULED:
            return
        run = self._move(run, State.RUNNING)
        report = self.workflow.terminate(self.settings, list(run.data.get("pids", [])))
        self._finish(run, report)

    # -- reading -----------------------------------------------------------------
    def status(self, run_id: str | None) -> Reply:
        run = self.store.get_run(run_id) if run_id else (self.store.runs(limit=1) or [None])[0]
        if run is None:
            return Reply(False, messages.NO_SUCH_RUN.format(run_id=run_id)) if run_id else Reply(True, messages.NO_RUNS)
        return Reply(True, describe(run), run)

    def history(self, limit: int = 10) -> Reply:
        runs = self.store.runs(limit=limit)
        if not runs:
            return Reply(True, messages.NO_RUNS)
        return Reply(True, "\n".join(describe(r) for r in runs))

    def triage(self, run_id: str) -> Reply:
        run = self.store.get_run(run_id)
        if run is None:
            return Reply(False, messages.NO_SUCH_RUN.format(run_id=run_id))
        checks = Report.from_json(run.report).checks if run.report else []
        findings = triage_mod.triage(checks)
        if not findings:
            return Reply(True, messages.NOTHING_TO_TRIAGE.format(run_id=run.id), run)
        return Reply(True, triage_mod.render_text(findings), run)

    def cancel(self, run_id: str, user: str) -> Reply:
        run = self.store.get_run(run_id)
        if run is None:
            return Reply(False, messages.NO_SUCH_RUN.format(run_id=run_id))
        decision = policy.may_cancel(self.settings.policy, user, run, self.groups)
        if not decision.allowed:
            return Reply(False, decision.reason, run)
        if not can_move(run.state, State.CANCELLED):
            return Reply(False, messages.CANNOT_CANCEL.format(run_id=run.id, state=run.state.value), run)
        run = self._move(run, State.CANCELLED, summary=f"cancelled by {user}")
        self.store.unlock_env(run.env, run.id)
        return self._tell(run, messages.CANCELLED.format(user=user, run_id=run.id), True)

    # -- start-up ----------------------------------------------------------------
    def recover(self) -> list[Run]:
        """Runs left running by a previous process become interrupted; queued ones run again."""
        touched = []
        for run in self.store.runs(states=[State.RUNNING], limit=1000):
            run = self._move(run, State.INTERRUPTED, summary="interrupted by a restart")
            self.store.unlock_env(run.env, run.id)
            self.announcer.say(run, messages.INTERRUPTED.format(run_id=run.id))
            touched.append(run)
        for run in self.store.runs(states=[State.REQUESTED], limit=1000):
            self.store.lock_env(run.env, run.id)
            self.executor.submit(run.id, lambda run_id=run.id: self._execute(run_id))
            touched.append(run)
        return touched


def _lock_retry_text(data: dict) -> str:
    return (f"{data.get('migration')}: lock not available on {data.get('table') or 'a table'}, "
            f"retry {data.get('attempt')} in {data.get('wait_s', 0):.1f}s")


def progress_line(kind: str, data: dict) -> str:
    """One line for the parent message while a run works (pure)."""
    if kind == "step":
        where = f" on {data['env']}" if data.get("env") else ""
        count = f" ({data['count']} migration(s))" if data.get("count") else ""
        return f"now: {data.get('step', 'working')}{where}{count}"
    if kind == "migration_finished":
        return f"now: {data.get('migration')} {'applied' if data.get('ok') else 'failed'} in {data.get('seconds', 0):.1f}s"
    if kind == "refresh_progress":
        return "now: refreshing staging — " + ", ".join(f"{k} {v}" for k, v in data.items() if k != "phase")
    return ""


def describe(run: Run) -> str:
    parts = [f"{run.id} {run.kind.value} — {run.state.value}", *run.facts()]
    if run.summary:
        parts.append(run.summary)
    return " · ".join(parts)

