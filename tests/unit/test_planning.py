"""Deploys in windows, the pure parts: where a deploy goes, and what it does when its job fires.

The clock is injected: every "now" below is a fixed UTC instant, and calendars are built
with ``parse_calendar`` exactly as the config loader does. 2026-12-08 is a Tuesday; the
usual calendar is one window, daily 02:00-04:00 UTC, and the usual deploy was planned for
its opening at 02:00. Sentences are built from ``bot.messages``, so rewording one changes
no test here.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest

from bot import messages
from bot.runs.model import Kind, Run, State
from bot.runs.planning import (
    LATE,
    RETRY_BUSY,
    FireDecision,
    FireFacts,
    Slot,
    cheap_checks,
    choose_slot,
    decide,
    describe_schedule,
    required_approvals,
    rest_for_next_window,
    slot_text,
)
from bot.runs.windows import Calendar, active_freeze, current_opening, parse_calendar, slack_date
from bot.workflow.report import Report


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def calendar(*windows: str, freezes: tuple[str, ...] = ()) -> Calendar:
    return parse_calendar(list(windows), list(freezes), "UTC")


WINDOWS = calendar("daily 02:00-04:00")
FREEZE = "2026-12-08 00:00 .. 2026-12-09 00:00"
FROZEN = calendar("daily 02:00-04:00", freezes=(FREEZE,))
SCHEDULED = utc(2026, 12, 8, 2, 0)  # Tue: the window opens
ON_TIME = utc(2026, 12, 8, 2, 0, 30)  # the job fired half a minute after its time
WINDOW_END = utc(2026, 12, 8, 4, 0)
SCHEDULED_TEXT = "2026-12-08 02:00 UTC"
WINDOW_END_TEXT = "2026-12-08 04:00 UTC"
PROD_HELD = messages.FIRE_PROD_HELD.format(holder="r-7")


def fire_facts(now: datetime = ON_TIME, cal: Calendar = WINDOWS, **changes: Any) -> FireFacts:
    """What ``planning.facts`` reads at ``now`` from ``cal``: a healthy, approved, validated deploy unless told."""
    healthy: dict[str, Any] = dict(scheduled_for=SCHEDULED, approvers=("U1", "U2"), required=2, estimate_s=600.0,
                                   validation_age_h=2.0, max_age_h=24.0)
    return FireFacts(now=now, freeze=active_freeze(cal, now), opening=current_opening(cal, now),
                     **{**healthy, **changes})


def go_in_window() -> FireDecision:
    return FireDecision("go", messages.FIRE_GO.format(until=WINDOW_END_TEXT), deadline=WINDOW_END)


def deploy_run(**fields: Any) -> Run:
    return Run("r-12", Kind.DEPLOY, State.SCHEDULED, "U9", **fields)


# -- fire time: approvals and validation ------------------------------------------------------------------
def test_fewer_approvals_than_required_unapproves() -> None:
    f = fire_facts(approvers=("U1",), required=2)
    assert decide(f) == FireDecision("unapprove", messages.FIRE_APPROVALS_GONE.format(count=1, required=2))


def test_an_override_with_the_normal_number_of_approvals_unapproves() -> None:
    f = fire_facts(override=True, approvers=("U1", "U2"), required=3)
    assert decide(f) == FireDecision("unapprove", messages.FIRE_APPROVALS_GONE.format(count=2, required=3))


@pytest.mark.parametrize(("data", "required"), [({}, 2), ({"override": True}, 3)], ids=["normal", "override"])
def test_an_override_needs_one_approver_more(data: dict[str, Any], required: int) -> None:
    rt = SimpleNamespace(settings=SimpleNamespace(policy=SimpleNamespace(approvals_required=2)))
    assert required_approvals(rt, deploy_run(data=data)) == required  # type: ignore[arg-type]


def test_no_passing_validation_cancels() -> None:
    assert decide(fire_facts(validation_age_h=None)) == FireDecision("cancel", messages.FIRE_NO_VALIDATION)


def test_a_validation_older_than_the_limit_cancels() -> None:
    f = fire_facts(validation_age_h=30.0, max_age_h=24.0)
    assert decide(f) == FireDecision("cancel", messages.FIRE_VALIDATION_OLD.format(age=30.0, limit=24.0))


@pytest.mark.parametrize(("age_h", "limit_h"), [(24.0, 24.0), (1000.0, 0.0)], ids=["at-the-limit", "limit-0-no-limit"])
def test_a_validation_within_the_limit_deploys(age_h: float, limit_h: float) -> None:
    assert decide(fire_facts(validation_age_h=age_h, max_age_h=limit_h)) == go_in_window()


def test_an_override_still_needs_a_passing_validation() -> None:
    f = fire_facts(cal=FROZEN, override=True, approvers=("U1", "U2", "U3"), required=3, validation_age_h=None)
    assert decide(f) == FireDecision("cancel", messages.FIRE_NO_VALIDATION)


# -- fire time: freezes and windows -----------------------------------------------------------------------
def test_an_active_freeze_replans_from_the_freeze_end() -> None:
    assert decide(fire_facts(cal=FROZEN)) == FireDecision(
        "replan", messages.FIRE_FROZEN.format(freeze=FREEZE), when=utc(2026, 12, 9))


@pytest.mark.parametrize(
    ("cal", "now"),
    [(FROZEN, ON_TIME), (WINDOWS, utc(2026, 12, 8, 12, 0))],
    ids=["inside-a-freeze", "outside-the-windows"],
)
def test_an_override_ignores_freezes_and_windows(cal: Calendar, now: datetime) -> None:
    f = fire_facts(now, cal, scheduled_for=None, override=True, approvers=("U1", "U2", "U3"), required=3)
    text = messages.FIRE_GO_OVERRIDE.format(approvers=messages.who(["U1", "U2", "U3"]))
    assert decide(f) == FireDecision("go", text)


@pytest.mark.parametrize(
    "scheduled_for",
    [utc(2026, 12, 8, 12, 0), utc(2026, 12, 8, 12, 0) - LATE, None],
    ids=["on-time", "exactly-LATE-after", "never-scheduled"],
)
def test_fired_on_time_with_no_open_window_replans_from_now(scheduled_for: datetime | None) -> None:
    now = utc(2026, 12, 8, 12, 0)  # the windows were moved in the config since the deploy was planned
    f = fire_facts(now, scheduled_for=scheduled_for)
    assert decide(f) == FireDecision("replan", messages.FIRE_NO_WINDOW, when=now)


def test_fired_late_after_the_window_closed_says_the_bot_missed_it() -> None:
    now = utc(2026, 12, 8, 5, 0)  # the bot was down from 01:00 to 05:00
    assert decide(fire_facts(now)) == FireDecision(
        "replan", messages.FIRE_MISSED.format(scheduled=SCHEDULED_TEXT), when=now)


def test_less_of_the_window_left_than_the_estimate_replans_from_its_end() -> None:
    now = utc(2026, 12, 8, 3, 50)
    f = fire_facts(now, scheduled_for=now, estimate_s=15 * 60)
    assert decide(f) == FireDecision(
        "replan", messages.FIRE_TOO_LITTLE_LEFT.format(left="10 min", estimate="15 min"), when=WINDOW_END)


def test_exactly_the_estimate_left_is_enough() -> None:
    now = utc(2026, 12, 8, 3, 50)
    assert decide(fire_facts(now, scheduled_for=now, estimate_s=10 * 60)) == go_in_window()


def test_the_cheap_checks_pass_without_asking_prod() -> None:
    assert cheap_checks(fire_facts(fingerprint_problem="changed", busy=PROD_HELD)) is None


# -- fire time: what prod says ----------------------------------------------------------------------------
def test_a_fingerprint_problem_cancels_with_its_text() -> None:
    problem = messages.FIRE_SET_CHANGED.format(now="3 pending (9f2c)", approved="2 pending (41aa)")
    assert decide(fire_facts(fingerprint_problem=problem, busy=PROD_HELD)) == FireDecision("cancel", problem)


def test_busy_prod_the_first_time_waits_and_looks_again() -> None:
    text = messages.FIRE_BUSY.format(busy=PROD_HELD, retry="2 min", until="2026-12-08 02:15 UTC")
    assert decide(fire_facts(busy=PROD_HELD)) == FireDecision("wait", text, when=ON_TIME + RETRY_BUSY)


def test_busy_prod_within_max_wait_waits_until_max_wait_from_the_first_look() -> None:
    now = utc(2026, 12, 8, 2, 10)
    f = fire_facts(now, busy=PROD_HELD, waiting_since=SCHEDULED, max_wait=timedelta(minutes=15))
    text = messages.FIRE_BUSY.format(busy=PROD_HELD, retry="2 min", until="2026-12-08 02:15 UTC")
    assert decide(f) == FireDecision("wait", text, when=now + RETRY_BUSY)


def test_busy_prod_for_longer_than_max_wait_replans_from_the_window_end() -> None:
    now = utc(2026, 12, 8, 2, 16)
    f = fire_facts(now, busy=PROD_HELD, waiting_since=SCHEDULED, max_wait=timedelta(minutes=15))
    assert decide(f) == FireDecision("replan", messages.FIRE_STILL_BUSY.format(busy=PROD_HELD), when=WINDOW_END)


def test_busy_prod_replans_once_the_window_no_longer_fits_the_estimate() -> None:
    now = utc(2026, 12, 8, 3, 0)  # an hour's deploy must start by 03:00 to end by the window's 04:00
    f = fire_facts(now, busy=PROD_HELD, waiting_since=utc(2026, 12, 8, 2, 55), estimate_s=3600)
    assert decide(f) == FireDecision("replan", messages.FIRE_STILL_BUSY.format(busy=PROD_HELD), when=WINDOW_END)


def test_busy_prod_takes_its_last_look_at_the_last_start_that_fits_the_estimate() -> None:
    now = utc(2026, 12, 8, 2, 59)  # a look two minutes on would be too late: the last one is at 03:00
    f = fire_facts(now, busy=PROD_HELD, waiting_since=utc(2026, 12, 8, 2, 55), estimate_s=3600)
    text = messages.FIRE_BUSY.format(busy=PROD_HELD, retry="2 min", until="2026-12-08 03:00 UTC")
    assert decide(f) == FireDecision("wait", text, when=utc(2026, 12, 8, 3, 0))


# -- fire time: go ----------------------------------------------------------------------------------------
def test_all_fine_deploys_until_the_window_end() -> None:
    assert decide(fire_facts()) == go_in_window()


def test_late_but_inside_the_window_deploys_and_says_the_bot_missed_its_time() -> None:
    text = messages.FIRE_GO_LATE.format(scheduled=SCHEDULED_TEXT, until=WINDOW_END_TEXT)
    assert decide(fire_facts(utc(2026, 12, 8, 2, 5))) == FireDecision("go", text, deadline=WINDOW_END)


def test_a_misfire_within_LATE_still_says_the_bot_missed_its_time() -> None:
    """``missed``: no bot was running at ``scheduled_for``, however soon after it one started."""
    text = messages.FIRE_GO_LATE.format(scheduled=SCHEDULED_TEXT, until=WINDOW_END_TEXT)
    assert decide(fire_facts(missed=True)) == FireDecision("go", text, deadline=WINDOW_END)


@pytest.mark.parametrize("missed", [False, True], ids=["bot-was-up", "bot-started-late"])
def test_going_after_waiting_for_prod_is_not_called_a_missed_time(missed: bool) -> None:
    """The bot has been looking at prod since ``waiting_since``: its retries are late on purpose."""
    f = fire_facts(utc(2026, 12, 8, 2, 4), waiting_since=SCHEDULED, missed=missed)
    assert decide(f) == go_in_window()


def test_a_retry_that_finds_the_window_closed_says_no_window_is_open() -> None:
    now = utc(2026, 12, 8, 4, 0)
    f = fire_facts(now, waiting_since=utc(2026, 12, 8, 3, 50), estimate_s=0)
    assert decide(f) == FireDecision("replan", messages.FIRE_NO_WINDOW, when=now)


# -- where a deploy goes ----------------------------------------------------------------------------------
def test_no_windows_and_no_freezes_deploys_on_command() -> None:
    assert choose_slot(calendar(), ON_TIME, 600) == Slot("manual")


def test_with_freezes_only_deploys_stay_on_command() -> None:
    """A freeze refuses the deploy command; without windows nothing is scheduled for the freeze's end."""
    assert choose_slot(calendar(freezes=(FREEZE,)), ON_TIME, 3600) == Slot("manual")


def test_the_rest_of_an_open_window_counts_when_the_estimate_fits_it() -> None:
    now = utc(2026, 12, 8, 2, 30)
    assert choose_slot(WINDOWS, now, 600) == Slot("at", now, WINDOW_END)


def test_a_long_estimate_skips_short_windows_to_one_that_fits() -> None:
    cal = calendar("daily 02:00-04:00", "Sat 01:00-09:00")
    assert choose_slot(cal, utc(2026, 12, 8, 1, 0), 3 * 3600) == Slot("at", utc(2026, 12, 12, 1), utc(2026, 12, 12, 9))


def test_no_window_long_enough_says_how_long_the_longest_is() -> None:
    assert choose_slot(WINDOWS, utc(2026, 12, 8, 1, 0), 3 * 3600) == Slot("none", longest=timedelta(hours=2))


def test_after_pushes_the_search_past_a_time() -> None:
    slot = choose_slot(WINDOWS, utc(2026, 12, 8, 2, 30), 600, after=WINDOW_END)
    assert slot == Slot("at", utc(2026, 12, 9, 2), utc(2026, 12, 9, 4))


def test_slot_text_for_no_fit_names_the_estimate_and_the_longest_opening() -> None:
    text = slot_text(deploy_run(), Slot("none", longest=timedelta(hours=2)), "3.0 h")
    assert text == messages.NO_WINDOW_FITS.format(run_id="r-12", estimate="3.0 h", longest="2.0 h")


def test_slot_text_starts_with_the_reason_it_was_given() -> None:
    because = messages.FIRE_NO_WINDOW
    text = slot_text(deploy_run(), Slot("none", longest=timedelta(minutes=45)), "3.0 h", because=because)
    assert text == f"{because} " + messages.NO_WINDOW_FITS.format(run_id="r-12", estimate="3.0 h", longest="45 min")


def test_slot_text_for_a_time_shows_slack_date_tokens() -> None:
    start, end = utc(2026, 12, 9, 2), utc(2026, 12, 9, 4)
    text = slot_text(deploy_run(), Slot("at", start, end), "10 min")
    assert text == messages.DEPLOY_SCHEDULED.format(run_id="r-12", when=slack_date(start), until=slack_date(end),
                                                    estimate="10 min")
    assert f"<!date^{int(start.timestamp())}^" in text and f"<!date^{int(end.timestamp())}^" in text


@pytest.mark.parametrize(
    ("fields", "line"),
    [
        ({"scheduled_for": "2026-12-08T02:00:00+00:00"}, "deploys at 2026-12-08 02:00 UTC"),
        ({}, "deploys on command"),
        ({"data": {"unschedulable": True}}, "no window is long enough"),
    ],
    ids=["at-a-time", "on-command", "unschedulable"],
)
def test_describe_schedule(fields: dict[str, Any], line: str) -> None:
    assert describe_schedule(deploy_run(**fields)) == line


# -- after a window closed mid-deploy ---------------------------------------------------------------------
def closed_window(left: list[str], *, cancelled: str | None = None, committed: int = 0) -> Report:
    """A deploy report as ``workflow/deploy.py`` writes it when the window closed before it was done."""
    report = Report("deploy", facts={"applied": ["001_users"], "left": left, "window_closed": True})
    if cancelled:
        report.failed(f"window-closed.{cancelled}", "cancelled at the end of the deploy window (2026-12-08 04:00 UTC)",
                      migration=cancelled, details={"category": "window-closed", "sqlstate": "57014",
                                                    "committed_statements": committed})
        report.facts["cancelled"] = cancelled
    for label in left:
        report.held(f"window-closed.{label}", "the deploy window closed, so it was not started", migration=label,
                    details={"category": "window-closed"})
    return report


@pytest.mark.parametrize(
    "facts",
    [{}, {"applied": ["001_users"], "left": [], "window_closed": False}],
    ids=["failed-before-applying", "finished-in-time"],
)
def test_nothing_to_replan_when_the_window_did_not_close(facts: dict[str, Any]) -> None:
    assert rest_for_next_window(Report("deploy", facts=facts)) == []


def test_finish_current_replans_what_was_left() -> None:
    assert rest_for_next_window(closed_window(["003_orders", "004_index"])) == ["003_orders", "004_index"]


def test_a_deploy_that_did_not_pass_replans_nothing() -> None:
    report = closed_window(["003_orders"])
    report.error = "lost the connection to prod"
    assert rest_for_next_window(report) == []


@pytest.mark.parametrize("left", [[], ["004_index"]], ids=["nothing-after-it", "more-after-it"])
def test_abort_replans_a_cancelled_migration_that_committed_nothing_first(left: list[str]) -> None:
    assert rest_for_next_window(closed_window(left, cancelled="003_orders")) == ["003_orders", *left]


def test_a_cancelled_migration_that_committed_statements_needs_a_person() -> None:
    assert rest_for_next_window(closed_window(["004_index"], cancelled="003_concurrently", committed=2)) == []


def test_a_cancelled_migration_without_its_check_replans_nothing() -> None:
    report = closed_window(["004_index"])
    report.facts["cancelled"] = "003_orders"
    assert rest_for_next_window(report) == []
