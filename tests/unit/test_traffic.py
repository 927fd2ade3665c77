"""Traffic from prod's cumulative counters: rates, quietest hours, and whether the window is quiet.

Landmark: 2026-01-05 is a Monday, and New York is on EST (UTC-5) all January.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Callable
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.runs.traffic import (
    HourOfWeek,
    Sample,
    WindowTraffic,
    has_a_week,
    quietest_hours,
    rates,
    render,
    window_traffic,
)
from bot.runs.windows import parse_calendar

NEW_YORK = ZoneInfo("America/New_York")
MONDAY = datetime(2026, 1, 5, tzinfo=NEW_YORK)
BUSY = 5000


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def hourly(start: datetime, hours: int, per_hour: Callable[[datetime], float], active: int = 3) -> list[Sample]:
    """Samples every hour; the traffic between two samples is ``per_hour`` of the first one's local time."""
    samples, total = [], 0
    for n in range(hours + 1):
        taken_at = start + timedelta(hours=n)
        samples.append(Sample(taken_at, total, active))
        total += int(per_hour(taken_at.astimezone(NEW_YORK)))
    return samples


def quiet_at_night(local: datetime) -> float:
    """Busy all week except three known hours, quietest first."""
    return {(1, 3): 10, (6, 4): 20, (5, 2): 30}.get((local.weekday(), local.hour), BUSY)


TWO_WEEKS = hourly(MONDAY, 14 * 24, quiet_at_night)


# --- rates -------------------------------------------------------------------------------------


def test_a_rate_is_dated_at_the_middle_of_its_pair() -> None:
    samples = [Sample(utc(2026, 1, 5, 3), 1000, 1), Sample(utc(2026, 1, 5, 4), 1600, 4)]
    assert rates(samples) == [(utc(2026, 1, 5, 3, 30), 600.0, 4)]


def test_rates_are_per_hour_whatever_the_sampling_interval() -> None:
    samples = [Sample(utc(2026, 1, 5, 3), 0, 1), Sample(utc(2026, 1, 5, 3, 15), 100, 2)]
    assert rates(samples) == [(utc(2026, 1, 5, 3, 7, 30), 400.0, 2)]


def test_a_counter_reset_gives_no_rate_for_that_pair() -> None:
    samples = [
        Sample(utc(2026, 1, 5, 1), 1000, 1),
        Sample(utc(2026, 1, 5, 2), 1500, 1),
        Sample(utc(2026, 1, 5, 3), 40, 2),  # stats reset or restart
        Sample(utc(2026, 1, 5, 4), 740, 3),
    ]
    assert rates(samples) == [(utc(2026, 1, 5, 1, 30), 500.0, 1), (utc(2026, 1, 5, 3, 30), 700.0, 3)]


@pytest.mark.parametrize(
    ("gap", "kept"),
    [(timedelta(hours=3), True), (timedelta(hours=3, seconds=1), False), (timedelta(0), False)],
    ids=["three-hours", "longer", "same-moment"],
)
def test_pairs_too_far_apart_or_at_the_same_moment_are_skipped(gap: timedelta, kept: bool) -> None:
    samples = [Sample(utc(2026, 1, 5, 1), 0, 1), Sample(utc(2026, 1, 5, 1) + gap, 300, 1)]
    assert len(rates(samples)) == (1 if kept else 0)


def test_samples_are_taken_in_time_order_whatever_order_they_come_in() -> None:
    samples = [Sample(utc(2026, 1, 5, 2), 200, 1), Sample(utc(2026, 1, 5, 1), 100, 1)]
    assert rates(samples) == [(utc(2026, 1, 5, 1, 30), 100.0, 1)]


@pytest.mark.parametrize("samples", [[], [Sample(utc(2026, 1, 5), 0, 0)]], ids=["none", "one"])
def test_no_rate_without_a_pair(samples: list[Sample]) -> None:
    assert rates(samples) == []


@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 10**9)), max_size=30))
def test_a_rate_is_never_negative(points: list[tuple[int, int]]) -> None:
    samples = [Sample(utc(2026, 1, 5) + timedelta(minutes=minute), xact, 0) for minute, xact in points]
    assert all(per_hour >= 0 for _, per_hour, _ in rates(samples))


# --- a week of samples -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hours", "enough"),
    [(None, False), (0, False), (7 * 24 - 1, False), (7 * 24, True)],
    ids=["none", "one", "short", "week"],
)
def test_has_a_week(hours: int | None, enough: bool) -> None:
    samples = [] if hours is None else hourly(MONDAY, hours, lambda _: 1)
    assert has_a_week(samples) is enough


# --- quietest hours ----------------------------------------------------------------------------


def test_the_quietest_hours_come_first_in_the_teams_zone() -> None:
    quiet = quietest_hours(TWO_WEEKS, NEW_YORK, count=4)
    assert [(h.label(), h.xact_per_hour, h.weeks) for h in quiet] == [
        ("Tue 03:00", 10.0, 2),
        ("Sun 04:00", 20.0, 2),
        ("Sat 02:00", 30.0, 2),
        ("Mon 00:00", BUSY, 2),  # a tie among busy hours goes to the earliest of the week
    ]


def test_the_same_traffic_in_utc_lands_five_hours_later() -> None:
    quiet = quietest_hours(TWO_WEEKS, ZoneInfo("UTC"), count=3)
    assert [h.label() for h in quiet] == ["Tue 08:00", "Sun 09:00", "Sat 07:00"]


def test_five_hours_by_default() -> None:
    assert len(quietest_hours(TWO_WEEKS, NEW_YORK)) == 5


def test_an_hour_is_averaged_over_the_weeks_sampled() -> None:
    def tuesday_3am_differs(local: datetime) -> float:
        if (local.weekday(), local.hour) == (1, 3):
            return 100 if local.day < 12 else 300
        return BUSY

    [quietest] = quietest_hours(hourly(MONDAY, 14 * 24, tuesday_3am_differs, active=2), NEW_YORK, count=1)
    assert quietest == HourOfWeek(weekday=1, hour=3, xact_per_hour=200.0, active=2.0, weeks=2)


def test_a_reset_does_not_make_a_busy_hour_look_quiet() -> None:
    samples = TWO_WEEKS[:]
    reset_at = 24 + 12  # Tuesday 12:00 of the first week: the counter restarts from zero
    offset = samples[reset_at].xact
    samples[reset_at:] = [Sample(s.taken_at, s.xact - offset, s.active) for s in samples[reset_at:]]
    assert [h.label() for h in quietest_hours(samples, NEW_YORK, count=3)] == ["Tue 03:00", "Sun 04:00", "Sat 02:00"]


def test_no_samples_no_quiet_hours() -> None:
    assert quietest_hours([], NEW_YORK) == []


@pytest.mark.parametrize(("weekday", "hour", "label"), [(0, 0, "Mon 00:00"), (1, 3, "Tue 03:00"), (6, 23, "Sun 23:00")])
def test_hour_of_week_label(weekday: int, hour: int, label: str) -> None:
    assert HourOfWeek(weekday, hour, 0.0, 0.0, 1).label() == label


# --- windows against the week ------------------------------------------------------------------


def test_a_window_on_the_quietest_hour_shows_as_quiet() -> None:
    cal = parse_calendar(["Tue 03:00-04:00 America/New_York"], [], "UTC")
    traffic = window_traffic(TWO_WEEKS, cal)
    overall = (BUSY * (14 * 24 - 6) + 2 * (10 + 20 + 30)) / (14 * 24)
    assert traffic == WindowTraffic(True, inside=10.0, overall=pytest.approx(overall), inside_hours=2, hours=336)
    assert traffic.ratio == pytest.approx(10.0 / overall)


def test_freezes_do_not_hide_window_hours_from_the_comparison() -> None:
    cal = parse_calendar(["Tue 03:00-04:00 America/New_York"], ["2026-01-01 .. 2026-02-01"], "UTC")
    assert window_traffic(TWO_WEEKS, cal).inside_hours == 2


def test_a_busy_window_shows_as_busy() -> None:
    cal = parse_calendar(["Wed 12:00-14:00 America/New_York"], [], "UTC")
    traffic = window_traffic(TWO_WEEKS, cal)
    assert (traffic.inside, traffic.inside_hours) == (BUSY, 4)
    assert traffic.ratio > 1


def test_without_windows_there_is_nothing_to_compare() -> None:
    traffic = window_traffic(TWO_WEEKS, parse_calendar([], [], "UTC"))
    assert (traffic.configured, traffic.inside, traffic.ratio, traffic.hours) == (False, None, None, 336)


def test_no_samples_inside_the_windows() -> None:
    traffic = window_traffic(hourly(MONDAY, 12, lambda _: 100), parse_calendar(["Sat 01:00-05:00"], [], "UTC"))
    assert (traffic.configured, traffic.inside, traffic.overall, traffic.ratio) == (True, None, 100.0, None)


def test_no_samples_at_all() -> None:
    traffic = window_traffic([], parse_calendar(["Sat 01:00-05:00"], [], "UTC"))
    assert traffic == WindowTraffic(True, None, None, 0, 0)


# --- rendering ---------------------------------------------------------------------------------


QUIET = [HourOfWeek(1, 3, 10.0, 0.5, 2), HourOfWeek(6, 4, 12_345.6, 2.25, 1)]


def test_render_quiet_hours_and_the_window() -> None:
    window = WindowTraffic(True, inside=1200.0, overall=8400.0, inside_hours=4, hours=336)
    assert render(QUIET, window, tz=NEW_YORK, span=timedelta(days=14)) == [
        "Quietest hours (America/New_York), average transactions per hour:",
        "  Tue 03:00  10 tx/h, 0.5 active (2 weeks)",
        "  Sun 04:00  12,346 tx/h, 2.2 active (1 week)",
        "Inside the deploy windows: 1,200 tx/h on average, 14% of the 8,400 tx/h average over the whole week.",
    ]


@pytest.mark.parametrize(
    ("window", "line"),
    [
        (
            WindowTraffic(False, None, 8400.0, 0, 336),
            "No deploy windows configured (deploy.windows): the hours above are candidates.",
        ),
        (WindowTraffic(True, None, 8400.0, 0, 336), "No traffic measured inside the deploy windows yet."),
    ],
    ids=["no-windows", "nothing-inside"],
)
def test_render_the_window_line(window: WindowTraffic, line: str) -> None:
    assert render(QUIET, window)[-1] == line


def test_render_says_when_less_than_a_week_is_sampled() -> None:
    assert render(QUIET, span=timedelta(days=3, hours=12))[-1] == (
        "Only 3.5 days sampled: some hours of the week are not measured yet."
    )


def test_render_defaults_to_utc_and_no_extra_lines() -> None:
    assert render(QUIET) == [
        "Quietest hours (UTC), average transactions per hour:",
        "  Tue 03:00  10 tx/h, 0.5 active (2 weeks)",
        "  Sun 04:00  12,346 tx/h, 2.2 active (1 week)",
    ]


def test_render_with_nothing_measured() -> None:
    assert render([]) == ["No traffic measured yet: the bot samples prod hourly, so ask again in a few hours."]
