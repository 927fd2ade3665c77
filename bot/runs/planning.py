"""Deploys in low-traffic windows: when an approved deploy runs, and what it does at fire time.

The runbook says "schedule a low-traffic window first". Each decision here
follows ``workflow/stagingaccess.py``'s shape: read a snapshot (the run, the
clock, the calendar, approvals, prod), decide with a pure function, then
apply the decision through the lifecycle and say it in the run's thread.

* ``plan``: once approvals are met, put the deploy at the next window
  opening that leaves room for its estimated duration (or say plainly that
  no window is long enough, with the numbers).
* ``fire`` (the ``deploy_in_window`` job): re-check everything before
  touching prod — fingerprint, approvals, freezes, the validation's age,
  whether prod is quiet — then deploy, wait inside the window (bounded), or
  re-plan into the next one.
* ``window_closed``: the migrations a closing window left are re-planned.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Literal

from bot import messages
from bot.runs import policy, windows
from bot.runs.lifecycle import StaleRun
from bot.runs.model import Run, State
from bot.runs.runtime import Runtime
from bot.workflow.report import Report

log = logging.getLogger(__name__)
RETRY_BUSY = timedelta(minutes=2)  # how often a deploy waiting inside its window looks at prod again
LATE = timedelta(seconds=60)  # fired this much after its time counts as missed even if this process was up
DEPLOY_JOB = "bot.runs.jobs:deploy_in_window"
REMIND_JOB = "bot.runs.jobs:remind_cleanup"


def _iso(moment: datetime | None) -> str:
    return moment.astimezone(timezone.utc).isoformat() if moment else ""


def _parse(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def when_text(moment: datetime) -> str:
    """A time as Slack shows it to each reader in their own zone, with UTC for everyone else."""
    return windows.slack_date(moment)


def _minutes(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# -- where a deploy goes (pure) ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Slot:
    """Where an approved deploy goes: ``manual`` (no windows: deploy on command), ``at`` a time, or ``none``."""

    kind: Literal["manual", "at", "none"]
    start: datetime | None = None
    end: datetime | None = None
    longest: timedelta = timedelta(0)


def choose_slot(cal: windows.Calendar, now: datetime, estimate_s: float, *, after: datetime | None = None) -> Slot:
    """Without windows a team deploys on command (a freeze refuses the command, it schedules nothing)."""
    if cal.always_open:
        return Slot("manual")
    since = max(now, after or now)
    fit = windows.next_fit(cal, since, timedelta(seconds=estimate_s))
    if fit is None:
        return Slot("none", longest=windows.longest_opening(cal, since))
    return Slot("at", fit.start, fit.end)


def slot_text(run: Run, slot: Slot, estimate_text: str, *, because: str = "") -> str:
    lead = f"{because} " if because else ""
    if slot.kind == "none":
        return lead + messages.NO_WINDOW_FITS.format(run_id=run.id, estimate=estimate_text,
                                                     longest=_minutes(slot.longest.total_seconds()))
    assert slot.start is not None and slot.end is not None
    return lead + messages.DEPLOY_SCHEDULED.format(run_id=run.id, when=when_text(slot.start),
                                                   until=windows.slack_date(slot.end), estimate=estimate_text)


# -- the decision at fire time (pure) -----------------------------------------------------------------
@dataclass(frozen=True)
class FireFacts:
    now: datetime
    scheduled_for: datetime | None
    approvers: tuple[str, ...]  # whose approvals count now
    required: int
    freeze: windows.Freeze | None
    opening: windows.Opening | None  # the open window now, clipped to start now
    estimate_s: float
    validation_age_h: float | None  # None: no passing validation of this set any more
    max_age_h: float
    override: bool = False  # two approvers said "now": windows and freezes do not apply
    missed: bool = False  # no bot was running at scheduled_for (this process started later): a misfire
    fingerprint_problem: str = ""  # filled in only when the cheaper checks passed
    busy: str = ""  # why prod is not free/quiet now ("" = go)
    waiting_since: datetime | None = None
    max_wait: timedelta = timedelta(minutes=15)


@dataclass(frozen=True)
class FireDecision:
    action: Literal["go", "wait", "replan", "cancel", "unapprove"]
    text: str
    when: datetime | None = None  # wait: when to look again; replan: from when to search
    deadline: datetime | None = None  # go: when the window closes


def cheap_checks(f: FireFacts) -> FireDecision | None:
    """Everything that needs no database: approvals, age, freezes, the window. None = all fine."""
    if len(f.approvers) < f.required:
        return FireDecision("unapprove", messages.FIRE_APPROVALS_GONE.format(count=len(f.approvers),
                                                                             required=f.required))
    if f.validation_age_h is None:
        return FireDecision("cancel", messages.FIRE_NO_VALIDATION)
    if f.max_age_h and f.validation_age_h > f.max_age_h:
        return FireDecision("cancel", messages.FIRE_VALIDATION_OLD.format(age=f.validation_age_h, limit=f.max_age_h))
    if f.override:
        return None
    if f.freeze is not None:
        return FireDecision("replan", messages.FIRE_FROZEN.format(freeze=f.freeze.text), when=f.freeze.end)
    late = _late(f)
    if f.opening is None:
        text = messages.FIRE_MISSED if late else messages.FIRE_NO_WINDOW
        return FireDecision("replan", text.format(scheduled=_hhmm(f.scheduled_for)), when=f.now)
    remaining = (f.opening.end - f.now).total_seconds()
    if remaining < f.estimate_s:
        return FireDecision("replan", messages.FIRE_TOO_LITTLE_LEFT.format(
            left=_minutes(remaining), estimate=_minutes(f.estimate_s)), when=f.opening.end)
    return None


def decide(f: FireFacts) -> FireDecision:
    """What to do now with a scheduled deploy (pure): every branch is a sentence for its thread."""
    early = cheap_checks(f)
    if early is not None:
        return early
    if f.fingerprint_problem:
        return FireDecision("cancel", f.fingerprint_problem)
    deadline = None if f.override or f.opening is None else f.opening.end
    late = _late(f)
    if f.busy:
        since = f.waiting_since or f.now
        give_up_at = since + f.max_wait
        if deadline is not None:
            give_up_at = min(give_up_at, deadline - timedelta(seconds=f.estimate_s))
        if f.now >= give_up_at:
            after = deadline or f.now
            return FireDecision("replan", messages.FIRE_STILL_BUSY.format(busy=f.busy), when=after)
        return FireDecision("wait", messages.FIRE_BUSY.format(busy=f.busy, retry=_minutes(RETRY_BUSY.total_seconds()),
                                                             until=_hhmm(give_up_at)),
                            when=min(f.now + RETRY_BUSY, give_up_at))  # the last look is at the give-up time
    if f.override:
        return FireDecision("go", messages.FIRE_GO_OVERRIDE.format(approvers=messages.who(list(f.approvers))))
    assert deadline is not None
    text = messages.FIRE_GO_LATE if late else messages.FIRE_GO
    return FireDecision("go", text.format(scheduled=_hhmm(f.scheduled_for), until=_hhmm(deadline)), deadline=deadline)


def _late(f: FireFacts) -> bool:
    """Fired after its time because no bot was running then (a retry while waiting for quiet is not late)."""
    if f.waiting_since is not None:
        return False
    return f.missed or (f.scheduled_for is not None and f.now - f.scheduled_for > LATE)


def _hhmm(moment: datetime | None) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if moment else "the scheduled time"


# -- snapshots and applying decisions -----------------------------------------------------------------
def required_approvals(rt: Runtime, run: Run) -> int:
    """An override ("deploy now", outside the window) needs one approver more than a normal deploy."""
    base = rt.settings.policy.approvals_required
    return base + 1 if run.data.get("override") else base


def counted_approvals(rt: Runtime, run: Run) -> list[str]:
    found = policy.counted(rt.settings.policy, run, rt.store.approvals(run.id), rt.groups)
    return [a.user for a in found]


def validation_age_h(rt: Runtime, run: Run, now: datetime) -> float | None:
    found = rt.store.passing_validation(run.fingerprint)
    if not found:
        return None
    return (now - datetime.fromisoformat(found["created_at"])).total_seconds() / 3600


def facts(rt: Runtime, run: Run) -> FireFacts:
    now = rt.now()
    cal = rt.calendar
    return FireFacts(
        now=now, scheduled_for=_parse(run.scheduled_for), approvers=tuple(counted_approvals(rt, run)),
        required=required_approvals(rt, run), freeze=windows.active_freeze(cal, now),
        opening=windows.current_opening(cal, now), estimate_s=float(run.data.get("estimate_s", 0)),
        validation_age_h=validation_age_h(rt, run, now), max_age_h=rt.settings.deploy.validation_max_age_hours,
        override=bool(run.data.get("override")), waiting_since=_parse(run.data.get("waiting_since")),
        missed=bool(rt.started_at and run.scheduled_for and _parse(run.scheduled_for) < rt.started_at),
        max_wait=timedelta(minutes=rt.settings.deploy.quiet_wait_minutes))


def with_prod(rt: Runtime, run: Run, f: FireFacts) -> FireFacts:
    """Add what only prod can tell: is the pending set still the approved one, and is prod quiet and free."""
    holder = rt.lifecycle.holder("prod")
    if holder and holder != run.id:
        return replace(f, busy=messages.FIRE_PROD_HELD.format(holder=holder))
    pre = rt.workflow.preflight(rt.settings, run)
    return replace(f, fingerprint_problem=pre.fingerprint_problem, busy=pre.busy)


def plan(rt: Runtime, run_id: str, *, because: str = "", after: datetime | None = None) -> Run | None:
    """Put an approved deploy into the next window that fits (``scheduled`` with a time), and say so."""
    run = rt.store.get_run(run_id)
    if run is None or run.state is not State.SCHEDULED:
        return None
    now = rt.now()
    if "estimate_s" not in run.data:
        seconds, text = _estimate(rt, run)
        run = rt.lifecycle.update(run, data=dict(run.data, estimate_s=seconds, estimate=text))
    slot = choose_slot(rt.calendar, now, float(run.data["estimate_s"]), after=after)
    unschedule(rt, run)
    data = {k: v for k, v in run.data.items() if k not in ("waiting_since", "window_end", "job_id")}
    if slot.kind == "manual":
        return rt.lifecycle.update(run, scheduled_for="", data=data, announce=True)
    if slot.kind == "none":
        run = rt.lifecycle.update(run, scheduled_for="", data=dict(data, unschedulable=True), announce=True)
        rt.announcer.say(run, slot_text(run, slot, run.data["estimate"], because=because))
        return run
    assert slot.start is not None
    job_id = f"deploy:{run.id}:{int(slot.start.timestamp())}"
    data = dict(data, window_end=_iso(slot.end), job_id=job_id)
    data.pop("unschedulable", None)
    run = rt.lifecycle.update(run, scheduled_for=_iso(slot.start), data=data,
                              summary=f"scheduled for {_hhmm(slot.start)}", announce=True)
    rt.scheduler.at(job_id, DEPLOY_JOB, slot.start, run.id)
    rt.announcer.say(run, slot_text(run, slot, run.data["estimate"], because=because))
    return run


def _estimate(rt: Runtime, run: Run) -> tuple[float, str]:
    """The deploy's estimated duration and its explanation; a failure to measure still gives a plan."""
    try:
        found = rt.workflow.estimate(rt.settings, rt.store, run)
        return found.seconds, found.explain()
    except Exception as exc:  # noqa: BLE001 - an approved deploy must get a slot (or a sentence), never silence
        d = rt.settings.deploy
        log.warning("estimating %s failed: %s", run.id, type(exc).__name__)
        seconds = d.estimate_floor_s * d.estimate_margin
        return seconds, messages.ESTIMATE_UNKNOWN.format(seconds=seconds, error=type(exc).__name__)


def unschedule(rt: Runtime, run: Run) -> None:
    job_id = run.data.get("job_id")
    if job_id:
        rt.scheduler.cancel(job_id)


def fire(rt: Runtime, run_id: str, *, manual: bool = False) -> FireDecision | None:
    """The deploy_in_window job: snapshot -> decide -> apply. ``manual``: a person said deploy."""
    run = rt.store.get_run(run_id)
    if run is None or run.state is not State.SCHEDULED:
        log.info("scheduled deploy %s is %s now; nothing to fire", run_id, run.state.value if run else "gone")
        return None
    f = facts(rt, run)
    decision = cheap_checks(f)
    if decision is None:
        f = with_prod(rt, run, f)
        decision = decide(f)
    if manual and decision.action in ("replan", "wait"):
        return decision  # a person asked: the caller answers them; the schedule stands
    apply(rt, run, decision)
    return decision


def apply(rt: Runtime, run: Run, d: FireDecision) -> Run | None:
    try:
        if d.action == "go":
            return _go(rt, run, d)
        if d.action == "wait":
            first = "waiting_since" not in run.data
            job_id = f"deploy:{run.id}:{int(d.when.timestamp())}" if d.when else ""
            data = dict(run.data, job_id=job_id, waiting_since=run.data.get("waiting_since") or _iso(rt.now()))
            run = rt.lifecycle.update(run, data=data)
            rt.scheduler.at(job_id, DEPLOY_JOB, d.when, run.id)
            if first:
                rt.announcer.say(run, d.text)
            return run
        if d.action == "replan":
            return plan(rt, run.id, because=d.text, after=d.when)
        if d.action == "unapprove":
            unschedule(rt, run)
            run = rt.lifecycle.move(run, State.AWAITING_APPROVAL, scheduled_for="", summary="approvals no longer stand")
            rt.announcer.say(run, d.text)
            return run
        unschedule(rt, run)
        run = rt.lifecycle.move(run, State.CANCELLED, scheduled_for="", summary=d.text)
        rt.announcer.say(run, d.text)
        return run
    except StaleRun as exc:
        log.warning("%s", exc)
        return None


def _go(rt: Runtime, run: Run, d: FireDecision) -> Run | None:
    from bot.runs import execution

    unschedule(rt, run)
    data = {k: v for k, v in run.data.items() if k not in ("waiting_since", "job_id")}
    summary = f"deploying; the window closes at {_hhmm(d.deadline)}" if d.deadline else "deploying"
    run = rt.lifecycle.update(run, data=data, summary=summary)
    started = execution.start_deploy(rt, run, deadline_iso=_iso(d.deadline))
    if not isinstance(started, Run):  # prod was taken between the look and the claim: decide again with that
        f = replace(facts(rt, run), busy=messages.FIRE_PROD_HELD.format(holder=started.run_id))
        return apply(rt, run, decide(f))
    rt.announcer.say(started, d.text)
    return started


# -- after a deploy ---------------------------------------------------------------------------------------
def rest_for_next_window(report: Report) -> list[str]:
    """What a closing window left untouched, to re-plan (pure); [] when there is nothing to re-plan safely.

    A migration cancelled at the window's end counts when nothing of it
    committed (it rolled back); one that committed some statements needs a
    person first, so then nothing is re-planned and the run reports as failed.
    """
    facts = report.facts
    if not facts.get("window_closed"):
        return []
    cancelled = facts.get("cancelled")
    if cancelled:
        check = next((c for c in report.checks if c.name == f"window-closed.{cancelled}"), None)
        if check is None or check.details.get("committed_statements"):
            return []
        return [cancelled, *facts.get("left", [])]
    return list(facts.get("left", [])) if report.exit_code == 0 else []


def window_closed(rt: Runtime, run: Run, report: Report) -> None:
    """The window closed mid-deploy: report what was applied, keep the rest for the next window."""
    applied = list(run.data.get("applied", [])) + list(report.facts.get("applied", []))
    left = rest_for_next_window(report)
    data = dict(run.data, applied=applied, expect_pending=report.facts.get("remaining_fingerprint", ""))
    data.pop("estimate_s", None)  # the rest is re-estimated: it is smaller
    run = rt.lifecycle.move(run, State.SCHEDULED, owner="", data=data, report=report.to_json(),
                            summary=f"window closed: {len(applied)} applied, {len(left)} left")
    rt.announcer.report(run, report)
    rt.lifecycle.release(run)
    text = messages.WINDOW_CLOSED.format(applied=", ".join(applied) or "none", left=", ".join(left))
    plan(rt, run.id, because=text)


def after_deploy(rt: Runtime, run: Run, report: Report) -> None:
    """A held cleanup migration gets a reminder in this thread when it becomes eligible."""
    held_until = _parse(report.facts.get("held_until"))
    if run.state is State.DEPLOYED and held_until is not None:
        rt.scheduler.at(f"remind:{run.id}", REMIND_JOB, held_until, run.id)


def remind(rt: Runtime, run_id: str) -> None:
    """Once per deploy: a job that fires twice (a restart at the wrong moment) must not say it twice."""
    run = rt.store.get_run(run_id)
    if run is None or run.data.get("reminded"):
        return
    try:
        run = rt.lifecycle.update(run, data=dict(run.data, reminded=True))
    except StaleRun:
        return
    held = (Report.from_json(run.report).facts.get("held") if run.report else None) or []
    rt.announcer.say(run, messages.CLEANUP_ELIGIBLE.format(migrations=", ".join(f"`{m}`" for m in held) or "the held",
                                                           days=rt.settings.deploy.cleanup_hold_days, run_id=run.id))


def describe_schedule(run: Run) -> str:
    """One line on where a scheduled deploy stands, for status and the queue view."""
    when = _parse(run.scheduled_for)
    if run.data.get("unschedulable"):
        return messages.SCHEDULE_NONE_FITS
    return messages.SCHEDULE_AT.format(when=_hhmm(when)) if when else messages.SCHEDULE_ON_COMMAND
