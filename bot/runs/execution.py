"""Running runs: the queue per environment, the workflow call, and what a finished run leads to.

Validations and refreshes wait their turn (``requested`` is the queue) and
start, oldest first, when their environment is free; a finished run starts
the next. Everything here takes the runtime and a run id and reads the run
from the store, so it works the same from a command, the executor, a
scheduled job or a restart.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Callable

from bot import messages
from bot.errors import MigrateBotError
from bot.migrations.lockwait import blocker_text
from bot.pg import run_context
from bot.redact import redact
from bot.runs import planning
from bot.runs.lifecycle import StaleRun
from bot.runs.model import ENVIRONMENT, Kind, Run, State, new_run_id
from bot.runs.runtime import Runtime
from bot.runs.store import Lease
from bot.runs.worker import WORKER_LOST
from bot.workflow.report import Report

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 3.0  # chat.update is rate-limited; a live line every few seconds is plenty


# -- the queue ---------------------------------------------------------------------------------------
def dispatch(rt: Runtime, env: str) -> Run | None:
    """Start the oldest queued run of ``env`` if the environment is free; returns the run started."""
    for run in rt.store.queue(env):
        if run.data.get("opening"):
            continue  # its thread is being posted; it joins the line when that is done
        try:
            claimed = rt.lifecycle.claim(run)
        except StaleRun:
            continue  # cancelled (or started elsewhere) since we read the queue
        if isinstance(claimed, Lease):
            return None  # busy: it starts when the holder finishes
        rt.executor.submit(claimed.id, lambda run_id=claimed.id: execute(rt, run_id))
        return claimed
    return None


def dispatch_all(rt: Runtime) -> None:
    for env in sorted(set(ENVIRONMENT.values())):
        dispatch(rt, env)


def end_sessions_of(rt: Runtime, dead: list[Run]) -> None:
    """A dead process's statements may still run on staging or prod: end them before anything else starts there.

    Synchronous on purpose: the queue is dispatched right after, and a new validation must not meet the dead
    one's advisory lock.
    """
    if not dead:
        return
    try:
        ended = rt.workflow.end_sessions(rt.settings, [r.id for r in dead])
    except Exception as exc:  # noqa: BLE001 - recovery goes on; the sessions end when their statements do
        log.warning("could not end the sessions of interrupted runs: %s", type(exc).__name__)
        return
    for env, pids in ended.items():
        if pids:
            log.warning("ended %d session(s) of interrupted runs on %s: pids %s", len(pids), env,
                        ", ".join(map(str, pids)))


def after_interruption(rt: Runtime, dead: list[Run]) -> None:
    """End what dead runs left running, then tell each interrupted deploy's thread what prod holds now.

    Sessions first: a statement still running for the dead process would make what prod holds a guess.
    """
    end_sessions_of(rt, dead)
    for run in dead:
        if run.kind is Kind.DEPLOY:
            tell_interrupted(rt, run)


def tell_interrupted(rt: Runtime, run: Run) -> None:
    """Read prod and say, in the run's thread and its status, what of its set is applied, part-applied or not there."""
    try:
        report = rt.workflow.interrupted(rt.settings, run)
    except Exception as exc:  # noqa: BLE001 - recovery goes on; `/migrate deploy <run>` reads prod again
        report = Report(step="deploy", error=f"unexpected {type(exc).__name__}").finish()
    if report.exit_code == 2:
        rt.announcer.say(run, messages.DEPLOY_INTERRUPTED_UNREAD.format(run_id=run.id, error=report.error))
        return
    partial = report.facts.get("partial") or []
    summary = "interrupted: " + "; ".join(
        [f"{p['migration']} stopped after {p['done']} of {p['total']} statements" for p in partial]
        + [f"{len(report.facts.get('applied', []))} applied, {len(report.facts.get('pending', []))} not on prod"])
    try:
        run = rt.lifecycle.update(run, report=report.to_json(), summary=summary, announce=True)
    except StaleRun:
        return  # a person took it up again meanwhile: their command reads prod itself
    way_on = messages.DEPLOY_RESUME if partial else messages.DEPLOY_REDEPLOY
    rt.announcer.say(run, messages.DEPLOY_INTERRUPTED.format(run_id=run.id, lines="\n".join(report.lines()[:-1]))
                     + "\n" + way_on.format(run_id=run.id))


def position(rt: Runtime, run: Run) -> int:
    """1 = next to start."""
    ids = [r.id for r in rt.store.queue(run.env) if not r.data.get("opening")]
    return ids.index(run.id) + 1 if run.id in ids else 0


def execute(rt: Runtime, run_id: str) -> None:
    run = rt.store.get_run(run_id)
    if run is None or run.state is not State.RUNNING or run.owner != rt.lifecycle.owner:
        return
    try:
        on_event = progress(rt, run)
        with run_context(run.id):
            if run.kind is Kind.VALIDATE:
                report = rt.workflow.validate(rt.settings, rt.store, run, on_event)
            else:
                report = rt.workflow.refresh(rt.settings, run, on_event)
        finish(rt, run, report)
    finally:
        rt.lifecycle.release(run)
        dispatch(rt, run.env)


def crashed(rt: Runtime, run_id: str, exc: BaseException) -> None:
    """A job raised: an outdated copy losing a race is fine; anything else makes the run an error."""
    if isinstance(exc, StaleRun):
        log.warning("%s", exc)
        return
    run = rt.store.get_run(run_id)
    if run and run.state is State.RUNNING:
        text = messages.UNEXPECTED.format(error=type(exc).__name__)
        try:
            run = rt.lifecycle.move(run, State.ERROR, summary=redact(text))
        except StaleRun:
            return
        rt.announcer.say(run, text)
    if run:
        rt.lifecycle.release(run)
        dispatch(rt, run.env)


def progress(rt: Runtime, run: Run) -> Callable[[str, dict], None]:
    """Progress events -> the parent message's summary line, at most every few seconds.

    Progress is not a transition, so it is shown, not stored: after a
    restart the stored state is what counts.
    """
    last_shown = [0.0]

    def on_event(kind: str, data: dict) -> None:
        log.info("%s %s %s", run.id, kind, redact(str(data)))
        if kind == "lock_retry":  # the one event people must see in the thread: we wait on their locks
            rt.announcer.say(run, _lock_retry_text(data))
        line = progress_line(kind, data)
        now = time.monotonic()
        if line and (kind == "step" or now - last_shown[0] >= PROGRESS_EVERY_S):
            last_shown[0] = now
            rt.announcer.run_updated(replace(run, summary=line))

    return on_event


def finish(rt: Runtime, run: Run, report: Report) -> Run:
    state = {0: State.PASSED, 1: State.FAILED}.get(report.exit_code, State.ERROR)
    if run.kind is Kind.DEPLOY and state is State.PASSED:
        state = State.DEPLOYED
    # a deploy stays bound to the set that was approved, whatever prod's pending set turned out to be
    fingerprint = run.fingerprint if run.kind is Kind.DEPLOY else report.fingerprint or run.fingerprint
    run = rt.lifecycle.move(run, state, summary=report.summary(), report=report.to_json(), fingerprint=fingerprint,
                            commit=report.facts.get("commit") or run.commit)
    rt.announcer.report(run, report)
    rt.announcer.say(run, messages.RUN_ENDED.format(requester=run.requested_by, kind=run.kind.value, run_id=run.id,
                                                   state=state.value.replace("_", " ")))
    if run.kind is Kind.VALIDATE and state is State.PASSED:
        offer_deploy(rt, run, report)
    return run


def offer_deploy(rt: Runtime, validation: Run, report: Report) -> None:
    validation = rt.store.get_run(validation.id) or validation  # its thread may have arrived while it ran
    if not report.facts.get("pending"):
        rt.announcer.say(validation, messages.NOTHING_TO_DEPLOY)
        return
    deploy = rt.lifecycle.create(Run(
        id=new_run_id(), kind=Kind.DEPLOY, state=State.AWAITING_APPROVAL, requested_by=validation.requested_by,
        channel=validation.channel, thread_ts=validation.thread_ts, fingerprint=report.fingerprint or "",
        commit=validation.commit, ref=validation.ref, parent=validation.id,
        summary=f"{len(report.facts['pending'])} migration(s) validated by {validation.id}"))
    rt.announcer.run_updated(deploy)
    p = rt.settings.policy
    rt.announcer.say(deploy, messages.DEPLOY_AWAITING.format(
        run_id=deploy.id, required=p.approvals_required, approvers=messages.who(p.approvers),
        reaction=rt.settings.slack.approve_reaction), remember="prompt_ts")  # reactions on it count


# -- deploys -----------------------------------------------------------------------------------------
def start_deploy(rt: Runtime, run: Run, *, deadline_iso: str = "") -> Run | Lease:
    """Take prod and hand the deploy to the executor; returns the holder's lease when prod is busy."""
    claimed = rt.lifecycle.claim(run)
    if isinstance(claimed, Lease):
        return claimed
    rt.executor.submit(claimed.id, lambda: run_deploy(rt, claimed.id, deadline_iso))
    return claimed


def run_deploy(rt: Runtime, run_id: str, deadline_iso: str = "") -> None:
    from datetime import datetime

    run = rt.store.get_run(run_id)
    if run is None or run.state is not State.RUNNING:
        return
    try:
        deadline = datetime.fromisoformat(deadline_iso) if deadline_iso else None
        with run_context(run.id):
            report = rt.workflow.deploy(rt.settings, rt.store, run, progress(rt, run), deadline)
        if report.facts.get(WORKER_LOST):  # like a dead process's deploy: prod is read, the thread told
            run = rt.lifecycle.move(run, State.INTERRUPTED, summary=f"interrupted: {report.error}")
            tell_interrupted(rt, run)
            return
        if planning.rest_for_next_window(report):
            planning.window_closed(rt, run, report)
            return
        run = finish(rt, run, report)
        planning.after_deploy(rt, run, report)
    finally:
        rt.lifecycle.release(run)


# -- unblock -----------------------------------------------------------------------------------------
def list_idle(rt: Runtime, run_id: str) -> None:
    """An unblock lists the sessions first (no lease: it is often what a blocked deploy needs), then asks."""
    run = rt.store.get_run(run_id)
    if run is None or run.state is not State.REQUESTED:
        return
    sessions = rt.workflow.idle_sessions(rt.settings)
    minutes = rt.settings.gate.idle_in_transaction_minutes
    if not sessions:
        run = rt.lifecycle.move(run, State.RUNNING, owner=rt.lifecycle.owner)
        rt.lifecycle.move(run, State.PASSED, summary=messages.NO_IDLE_SESSIONS.format(minutes=minutes))
        rt.announcer.say(run, messages.NO_IDLE_SESSIONS.format(minutes=minutes))
        return
    lines = [f"pid {s['pid']} ({s['application'] or s['user']}, idle {s['idle_seconds']}s)" for s in sessions]
    run = rt.lifecycle.move(run, State.AWAITING_APPROVAL, data={"pids": [s["pid"] for s in sessions]},
                            summary=f"{len(sessions)} idle-in-transaction session(s) to terminate")
    p = rt.settings.policy
    rt.announcer.say(run, "Sessions idle in transaction on prod:\n" + "\n".join(lines) +
                     f"\nAn approver ({messages.who(p.approvers)}) must react "
                     f":{rt.settings.slack.approve_reaction}: on this message to terminate them.", remember="prompt_ts")


def terminate(rt: Runtime, run_id: str) -> None:
    run = rt.store.get_run(run_id)
    if run is None or run.state is not State.SCHEDULED:
        return
    run = rt.lifecycle.move(run, State.RUNNING, owner=rt.lifecycle.owner)
    with run_context(run.id):
        report = rt.workflow.terminate(rt.settings, list(run.data.get("pids", [])))
    finish(rt, run, report)


# -- words -------------------------------------------------------------------------------------------
def _lock_retry_text(data: dict) -> str:
    """Sent a handful of times per wait (the first retry, each longer timeout, new sessions in the way)."""
    who = "; ".join(blocker_text(b) for b in (data.get("blockers") or [])[:3]) or "a session I could not see"
    return (f"{data.get('migration')}: waiting for a lock held by {who}; retrying with lock_timeout "
            f"{data.get('next_lock_timeout_s', 0):.1f}s ({data.get('waited_s', 0):.0f}s of "
            f"{data.get('budget_s', 0):.0f}s so far). `/migrate unblock` ends idle-in-transaction sessions after "
            "an approval.")


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


# -- digests -----------------------------------------------------------------------------------------
def post_digests(rt: Runtime, channel: str, envs: list[str]) -> None:
    """Make each database's digest now and post it (with its chart) to ``channel``; a failure is a sentence there."""
    from bot.runs import digests
    from bot.workflow import digestchart

    for env in envs:
        try:
            made = digests.make(rt.settings, rt.store, env, thread_url=lambda run_id: _thread_url(rt, run_id))
        except MigrateBotError as exc:
            rt.announcer.post(channel, messages.DIGEST_FAILED.format(env=env, error=exc))
            continue
        try:
            chart = digestchart.png(made.digest)
        except Exception as exc:  # noqa: BLE001 - the numbers matter more than the picture
            log.warning("digest chart failed: %s", type(exc).__name__)
            chart = None
        rt.announcer.digest(channel, made.digest, chart)


def _thread_url(rt: Runtime, run_id: str) -> str:
    run = rt.store.get_run(run_id)
    return rt.announcer.thread_link(run) if run and run.thread_ts else ""
