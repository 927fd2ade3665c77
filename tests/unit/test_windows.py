"""Deploy windows and freezes: pure time maths, checked against hand-computed UTC instants.

Calendar landmarks used below: 2026-12-08 is a Tuesday. DST in 2026: New York springs
forward on Sun 03-08 (02:00 EST -> 03:00 EDT) and falls back on Sun 11-01 (02:00 EDT ->
01:00 EST); Berlin springs forward on Sun 03-29 (02:00 CET -> 03:00 CEST) and falls back
on Sun 10-25 (03:00 CEST -> 02:00 CET).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.errors import ConfigError
from bot.runs.windows import (
    DAY_NAMES,
    FREEZE_EXPECTED,
    HORIZON,
    WINDOW_EXPECTED,
    Calendar,
    Opening,
    active_freeze,
    current_opening,
    describe,
    longest_opening,
    next_fit,
    next_openings,
    occurrence,
    openings,
    parse_calendar,
    slack_date,
    to_utc,
)

NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def calendar(*windows: str, freezes: tuple[str, ...] = (), tz: str = "UTC") -> Calendar:
    return parse_calendar(list(windows), list(freezes), tz)


def spans(found: list[Opening]) -> list[tuple[datetime, datetime]]:
    return [(o.start, o.end) for o in found]


def window_error(entry: str) -> str:
    with pytest.raises(ConfigError) as err:
        calendar(entry)
    return str(err.value)


def freeze_error(entry: str) -> str:
    with pytest.raises(ConfigError) as err:
        calendar(freezes=(entry,))
    return str(err.value)


# --- parsing windows ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "days"),
    [
        ("Mon", {0}),
        ("mon-fri", {0, 1, 2, 3, 4}),
        ("Mon,Wed,Fri", {0, 2, 4}),
        ("daily", {0, 1, 2, 3, 4, 5, 6}),
        ("DAILY", {0, 1, 2, 3, 4, 5, 6}),
        ("Monday", {0}),
        ("Tues-Thurs", {1, 2, 3}),
        ("Fri-Mon", {4, 5, 6, 0}),
        ("Sun-Sun", {6}),
        ("Mon-Wed,Fri", {0, 1, 2, 4}),
        ("Mon - Fri", {0, 1, 2, 3, 4}),
        ("Mon, Wed", {0, 2}),
    ],
)
def test_day_specs(spec: str, days: set[int]) -> None:
    assert calendar(f"{spec} 02:00-04:00").windows[0].days == frozenset(days)


@pytest.mark.parametrize(
    ("entry", "start", "end", "seconds"),
    [
        ("Tue 02:00-04:00", time(2), time(4), 2 * 3600),
        ("Sat 22:00-02:00", time(22), time(2), 4 * 3600),
        ("Mon 00:00-24:00", time(0), time(0), 24 * 3600),
        ("Mon 22:00-24:00", time(22), time(0), 2 * 3600),
        ("Mon 02:00:30-02:00:45", time(2, 0, 30), time(2, 0, 45), 15),
        ("Mon 2:00-4:30", time(2), time(4, 30), 2 * 3600 + 1800),
        ("Mon 02:00 - 04:00", time(2), time(4), 2 * 3600),
        ("Mon 02:00\u201304:00", time(2), time(4), 2 * 3600),
    ],
)
def test_window_times(entry: str, start: time, end: time, seconds: int) -> None:
    window = calendar(entry).windows[0]
    assert (window.start, window.end, window.seconds, window.text) == (start, end, seconds, entry)


def test_a_window_without_a_zone_takes_deploy_timezone() -> None:
    cal = calendar("Tue 02:00-04:00", "Tue 02:00-04:00 Asia/Tokyo", tz="Europe/Berlin")
    assert [w.tz.key for w in cal.windows] == ["Europe/Berlin", "Asia/Tokyo"]
    assert cal.tz.key == "Europe/Berlin"


def test_always_open_means_no_windows_even_with_freezes() -> None:
    assert calendar(freezes=("2026-12-20 .. 2027-01-04",)).always_open
    assert not calendar("Tue 02:00-04:00").always_open


# --- malformed entries -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "sentence"),
    [
        (
            "Tue-Thx 02:00-04:00",
            'deploy.windows entry "Tue-Thx 02:00-04:00" is not understood: "Thx" is not a day. '
            'Expected "<days> HH:MM-HH:MM [Area/City]", e.g. "Tue-Thu 02:00-04:00 America/New_York".',
        ),
        (
            "Mon 25:00-04:00",
            'deploy.windows entry "Mon 25:00-04:00" is not understood: "25:00" is not a time '
            "(hours go up to 23; 24:00 only as an end). " + WINDOW_EXPECTED,
        ),
        (
            "Mon 02:00-04:00 America/New_Yrok",
            'deploy.windows entry "Mon 02:00-04:00 America/New_Yrok" is not understood: '
            '"America/New_Yrok" is not a time zone (did you mean "America/New_York"?). ' + WINDOW_EXPECTED,
        ),
        (
            "Mon 02:00 04:00",
            'deploy.windows entry "Mon 02:00 04:00" is not understood: "02:00" has no end time (missing "-"). '
            + WINDOW_EXPECTED,
        ),
    ],
)
def test_bad_window_exact_sentence(entry: str, sentence: str) -> None:
    assert window_error(entry) == sentence


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("", "it is empty"),
        ("   ", "it is empty"),
        ("02:00-04:00", 'it starts with a time; name the days first (or "daily")'),
        ("Mon", 'there is no time range after "Mon"'),
        ("Mo 02:00-04:00", '"Mo" is not a day'),
        ("Mon,,Fri 02:00-04:00", 'a day is missing in "Mon,,Fri"'),
        ("Mon- 02:00-04:00", 'a day is missing in "Mon-"'),
        ("Mon-Wed-Fri 02:00-04:00", '"Mon-Wed-Fri" is not a day range (write two days, e.g. Mon-Fri)'),
        ("Mon Wed 02:00-04:00", '"Wed" is not a time range'),
        ("Mon 02:60-04:00", '"02:60" is not a time (minutes go up to 59)'),
        ("Mon 02:00:61-04:00", '"02:00:61" is not a time (seconds go up to 59)'),
        ("Mon 02:00-24:30", '"24:30" is not a time (hours go up to 23; 24:00 only as an end)'),
        ("Mon 2am-4am", '"2am" is not a time (write HH:MM, e.g. 02:00)'),
        ("Mon 02:00-03:00-04:00", '"02:00-03:00-04:00" has more than one "-"'),
        ("Mon 02:00-", '"02:00-" is missing its end time'),
        ("Mon 02:00-02:00", "it starts and ends at 02:00; a whole day is 00:00-24:00"),
        ("Mon 00:00-00:00", "it starts and ends at 00:00; a whole day is 00:00-24:00"),
        ("Mon 24:00-02:00", "24:00 can only end a window; a window opening at midnight starts at 00:00"),
        ("Mon 02:00-04:00 Mars/Olympus", '"Mars/Olympus" is not a time zone.'),
        ("Mon 02:00-04:00 europe/berlin", '"europe/berlin" is not a time zone (did you mean "Europe/Berlin"?)'),
        ("Mon 02:00-04:00 UTC extra", '"extra" is left over after the time zone'),
    ],
)
def test_bad_window_names_the_reason(entry: str, reason: str) -> None:
    message = window_error(entry)
    assert message.startswith(f'deploy.windows entry "{entry}" is not understood: {reason}')
    assert message.endswith(WINDOW_EXPECTED)


def test_a_window_that_is_not_a_string() -> None:
    assert window_error(5) == f"deploy.windows entry 5 is not a string. {WINDOW_EXPECTED}"  # type: ignore[arg-type]


def test_a_single_string_instead_of_a_list() -> None:
    with pytest.raises(ConfigError) as err:
        parse_calendar("Mon 02:00-04:00", [])  # type: ignore[arg-type]
    assert str(err.value) == (
        'deploy.windows must be a list of strings, not a single string. Write deploy.windows = ["Mon 02:00-04:00"].'
    )


def test_bad_default_timezone() -> None:
    with pytest.raises(ConfigError) as err:
        calendar(tz="Mars/Olympus")
    assert str(err.value) == (
        'deploy.timezone "Mars/Olympus" is not a time zone. '
        'Expected an IANA time zone name, e.g. "Europe/Berlin" or "UTC".'
    )


# --- parsing freezes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "tz", "start", "end"),
    [
        ("2026-12-20 00:00 .. 2027-01-04 00:00 Europe/Berlin", "UTC", utc(2026, 12, 19, 23), utc(2027, 1, 3, 23)),
        ("2026-12-20 .. 2027-01-04", "UTC", utc(2026, 12, 20), utc(2027, 1, 4)),
        ("2026-12-20 .. 2027-01-04", "America/New_York", utc(2026, 12, 20, 5), utc(2027, 1, 4, 5)),
        ("2026-12-20 12:30:15..2026-12-20 13:00", "UTC", utc(2026, 12, 20, 12, 30, 15), utc(2026, 12, 20, 13)),
        ("2026-12-20T12:30 .. 2026-12-20T13:00", "UTC", utc(2026, 12, 20, 12, 30), utc(2026, 12, 20, 13)),
        ("2026-12-20 22:00 .. 2026-12-20 24:00", "UTC", utc(2026, 12, 20, 22), utc(2026, 12, 21)),
        # 02:30 does not exist in Berlin on 2026-03-29: it moves forward to 03:30 CEST
        ("2026-03-29 02:30 .. 2026-03-29 04:00 Europe/Berlin", "UTC", utc(2026, 3, 29, 1, 30), utc(2026, 3, 29, 2)),
    ],
)
def test_freeze_instants(entry: str, tz: str, start: datetime, end: datetime) -> None:
    freeze = calendar(freezes=(entry,), tz=tz).freezes[0]
    assert (freeze.start, freeze.end, freeze.text) == (start, end, entry)


def test_freezes_are_kept_in_time_order() -> None:
    cal = calendar(freezes=("2027-02-01 .. 2027-02-02", "2026-12-20 .. 2026-12-21"))
    assert [f.start for f in cal.freezes] == [utc(2026, 12, 20), utc(2027, 2, 1)]


@pytest.mark.parametrize(
    ("entry", "sentence"),
    [
        (
            "2026-12-20",
            'deploy.freezes entry "2026-12-20" is not understood: there is no ".." between the start and the end. '
            'Expected "YYYY-MM-DD [HH:MM] .. YYYY-MM-DD [HH:MM] [Area/City]", '
            'e.g. "2026-12-20 00:00 .. 2027-01-04 00:00 Europe/Berlin".',
        ),
        (
            "2026-12-20 .. 2026-12-19",
            'deploy.freezes entry "2026-12-20 .. 2026-12-19" is not understood: it ends before it starts. '
            + FREEZE_EXPECTED,
        ),
    ],
)
def test_bad_freeze_exact_sentence(entry: str, sentence: str) -> None:
    assert freeze_error(entry) == sentence


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("2026-12-20 .. 2026-12-20", "it ends when it starts"),
        ("2026-13-01 .. 2027-01-01", '"2026-13-01" is not a date (month must be in 1..12)'),
        ("2026-02-30 .. 2027-01-01", '"2026-02-30" is not a date (day is out of range for month)'),
        ("20.12.2026 .. 2027-01-04", '"20.12.2026" is not a date (write YYYY-MM-DD)'),
        ("2026-12-20 25:00 .. 2027-01-04", '"25:00" is not a time (hours go up to 23; 24:00 only as an end)'),
        ("2026-12-20 noon .. 2027-01-04", '"noon" belongs at the end: one time zone for both ends'),
        ("2026-12-20 .. 2027-01-04 Mars/Olympus", '"Mars/Olympus" is not a time zone.'),
        ("2026-12-20 Europe/Berlin .. 2027-01-04", '"Europe/Berlin" belongs at the end: one time zone for both ends'),
        (".. 2027-01-04", "the start date is missing"),
        ("2026-12-20 ..", "the end date is missing"),
        ("2026-12-20 .. Europe/Berlin", "the end date is missing"),
        ("2026-12-20 .. 2027-01-04 .. 2027-02-01", 'it has more than one ".."'),
        ("2026-12-20 00:00 00:00 .. 2027-01-04", '"2026-12-20 00:00 00:00" is not a date and a time'),
    ],
)
def test_bad_freeze_names_the_reason(entry: str, reason: str) -> None:
    message = freeze_error(entry)
    assert message.startswith(f'deploy.freezes entry "{entry}" is not understood: {reason}')
    assert message.endswith(FREEZE_EXPECTED)


# --- finding openings --------------------------------------------------------------------------


def test_a_saturday_window_asked_on_sunday_is_next_saturday() -> None:
    cal = calendar("Sat 01:00-05:00")
    [nxt] = next_openings(cal, utc(2026, 12, 13, 10), count=1)
    assert (nxt.start, nxt.end, nxt.label) == (utc(2026, 12, 19, 1), utc(2026, 12, 19, 5), "Sat 01:00-05:00")
    assert current_opening(cal, utc(2026, 12, 13, 10)) is None


def test_next_openings_come_in_order_across_entries_and_zones() -> None:
    cal = calendar("Tue-Thu 02:00-04:00 America/New_York", "Sat 01:00-05:00")
    assert spans(next_openings(cal, utc(2026, 12, 8, 12), count=4)) == [
        (utc(2026, 12, 9, 7), utc(2026, 12, 9, 9)),
        (utc(2026, 12, 10, 7), utc(2026, 12, 10, 9)),
        (utc(2026, 12, 12, 1), utc(2026, 12, 12, 5)),
        (utc(2026, 12, 15, 7), utc(2026, 12, 15, 9)),
    ]


def test_the_current_opening_is_clipped_to_start_now() -> None:
    opening = current_opening(calendar("Tue 07:00-09:00"), utc(2026, 12, 8, 7, 30))
    assert opening == Opening(utc(2026, 12, 8, 7, 30), utc(2026, 12, 8, 9), "Tue 07:00-09:00")
    assert opening.duration == timedelta(minutes=90)


def test_next_openings_leave_out_the_current_one() -> None:
    cal = calendar("Tue 07:00-09:00")
    assert spans(next_openings(cal, utc(2026, 12, 8, 7, 30), count=2)) == [
        (utc(2026, 12, 15, 7), utc(2026, 12, 15, 9)),
        (utc(2026, 12, 22, 7), utc(2026, 12, 22, 9)),
    ]


@pytest.mark.parametrize(
    ("now", "inside"),
    [
        (utc(2026, 12, 12, 21, 59), False),
        (utc(2026, 12, 12, 22), True),
        (utc(2026, 12, 12, 23, 30), True),
        (utc(2026, 12, 13, 0), True),
        (utc(2026, 12, 13, 1), True),
        (utc(2026, 12, 13, 1, 59, 59), True),
        (utc(2026, 12, 13, 2), False),
        (utc(2026, 12, 14, 1), False),
    ],
)
def test_a_window_across_midnight_closes_the_next_day(now: datetime, inside: bool) -> None:
    opening = current_opening(calendar("Sat 22:00-02:00"), now)
    assert (opening is not None) == inside
    if opening is not None:
        assert (opening.start, opening.end) == (now, utc(2026, 12, 13, 2))


def test_the_end_is_exclusive_and_the_start_inclusive() -> None:
    opening = Opening(utc(2026, 12, 8, 7), utc(2026, 12, 8, 9), "x")
    assert opening.contains(utc(2026, 12, 8, 7))
    assert not opening.contains(utc(2026, 12, 8, 9))


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="has no time zone"):
        current_opening(calendar("Tue 07:00-09:00"), datetime(2026, 12, 8, 8))


def test_an_aware_now_in_another_zone_gives_utc_openings() -> None:
    opening = current_opening(calendar("Tue 07:00-09:00"), datetime(2026, 12, 8, 9, 0, tzinfo=BERLIN))
    assert opening is not None
    assert (opening.start, opening.start.utcoffset()) == (utc(2026, 12, 8, 8), timedelta(0))


# --- DST nights --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "night", "start", "end"),
    [
        # New York springs forward on 2026-03-08: 02:00-03:00 local does not exist
        ("Sun 02:00-04:00 America/New_York", date(2026, 3, 8), utc(2026, 3, 8, 7), utc(2026, 3, 8, 8)),
        ("Sun 02:30-05:00 America/New_York", date(2026, 3, 8), utc(2026, 3, 8, 7, 30), utc(2026, 3, 8, 9)),
        ("Sun 01:00-03:00 America/New_York", date(2026, 3, 8), utc(2026, 3, 8, 6), utc(2026, 3, 8, 7)),
        ("Sun 01:30-02:30 America/New_York", date(2026, 3, 8), utc(2026, 3, 8, 6, 30), utc(2026, 3, 8, 7, 30)),
        ("Sun 02:15-02:45 America/New_York", date(2026, 3, 8), utc(2026, 3, 8, 7, 15), utc(2026, 3, 8, 7, 45)),
        ("Sun 02:30-03:00 America/New_York", date(2026, 3, 8), utc(2026, 3, 8, 7, 30), utc(2026, 3, 8, 8)),
        ("Sat 23:00-03:00 America/New_York", date(2026, 3, 8), utc(2026, 3, 8, 4), utc(2026, 3, 8, 7)),
        # New York falls back on 2026-11-01: 01:00-02:00 local happens twice, the first (EDT) counts
        ("Sun 01:00-03:00 America/New_York", date(2026, 11, 1), utc(2026, 11, 1, 5), utc(2026, 11, 1, 8)),
        ("Sun 01:15-01:45 America/New_York", date(2026, 11, 1), utc(2026, 11, 1, 5, 15), utc(2026, 11, 1, 5, 45)),
        ("Sun 00:30-02:00 America/New_York", date(2026, 11, 1), utc(2026, 11, 1, 4, 30), utc(2026, 11, 1, 7)),
        ("Sat 23:00-01:30 America/New_York", date(2026, 11, 1), utc(2026, 11, 1, 3), utc(2026, 11, 1, 5, 30)),
        # Berlin springs forward on 2026-03-29: 02:00-03:00 local does not exist
        ("Sun 02:00-04:00 Europe/Berlin", date(2026, 3, 29), utc(2026, 3, 29, 1), utc(2026, 3, 29, 2)),
        ("Sun 01:00-03:00 Europe/Berlin", date(2026, 3, 29), utc(2026, 3, 29, 0), utc(2026, 3, 29, 1)),
        ("Sun 02:30-02:45 Europe/Berlin", date(2026, 3, 29), utc(2026, 3, 29, 1, 30), utc(2026, 3, 29, 1, 45)),
        # Berlin falls back on 2026-10-25: 02:00-03:00 local happens twice, the first (CEST) counts
        ("Sun 02:00-04:00 Europe/Berlin", date(2026, 10, 25), utc(2026, 10, 25, 0), utc(2026, 10, 25, 3)),
        ("Sun 02:30-02:45 Europe/Berlin", date(2026, 10, 25), utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 0, 45)),
        ("Sat 23:00-03:00 Europe/Berlin", date(2026, 10, 25), utc(2026, 10, 24, 21), utc(2026, 10, 25, 2)),
        ("Sat 22:00-02:30 Europe/Berlin", date(2026, 10, 25), utc(2026, 10, 24, 20), utc(2026, 10, 25, 0, 30)),
    ],
)
def test_a_dst_night_has_exactly_one_interval(entry: str, night: date, start: datetime, end: datetime) -> None:
    around = datetime.combine(night, time(), timezone.utc)
    found = list(openings(calendar(entry), around - timedelta(days=2), around + timedelta(days=2)))
    assert spans(found) == [(start, end)]


@pytest.mark.parametrize(
    ("entry", "since", "expected"),
    [
        (
            "Sun 02:00-04:00 America/New_York",
            utc(2026, 3, 1),
            [
                (utc(2026, 3, 1, 7), utc(2026, 3, 1, 9)),
                (utc(2026, 3, 8, 7), utc(2026, 3, 8, 8)),
                (utc(2026, 3, 15, 6), utc(2026, 3, 15, 8)),
            ],
        ),
        (
            "daily 01:00-03:00 America/New_York",
            utc(2026, 10, 31),
            [
                (utc(2026, 10, 31, 5), utc(2026, 10, 31, 7)),
                (utc(2026, 11, 1, 5), utc(2026, 11, 1, 8)),
                (utc(2026, 11, 2, 6), utc(2026, 11, 2, 8)),
            ],
        ),
        (
            "daily 02:00-04:00 Europe/Berlin",
            utc(2026, 3, 28),
            [
                (utc(2026, 3, 28, 1), utc(2026, 3, 28, 3)),
                (utc(2026, 3, 29, 1), utc(2026, 3, 29, 2)),
                (utc(2026, 3, 30, 0), utc(2026, 3, 30, 2)),
            ],
        ),
    ],
)
def test_the_wall_time_holds_on_both_sides_of_a_dst_change(
    entry: str, since: datetime, expected: list[tuple[datetime, datetime]]
) -> None:
    assert spans(next_openings(calendar(entry), since, count=3)) == expected


@pytest.mark.parametrize(
    ("local", "tz", "instant"),
    [
        (datetime(2026, 3, 8, 2, 30), NEW_YORK, utc(2026, 3, 8, 7, 30)),  # gap: 03:30 EDT
        (datetime(2026, 3, 8, 2, 0), NEW_YORK, utc(2026, 3, 8, 7, 0)),  # gap: 03:00 EDT
        (datetime(2026, 3, 8, 3, 0), NEW_YORK, utc(2026, 3, 8, 7, 0)),  # first real time after the gap
        (datetime(2026, 11, 1, 1, 30), NEW_YORK, utc(2026, 11, 1, 5, 30)),  # twice: EDT, the first
        (datetime(2026, 11, 1, 1, 30, fold=1), NEW_YORK, utc(2026, 11, 1, 5, 30)),  # fold is not trusted
        (datetime(2026, 10, 25, 2, 30), BERLIN, utc(2026, 10, 25, 0, 30)),
        (datetime(2026, 7, 1, 12), BERLIN, utc(2026, 7, 1, 10)),
    ],
)
def test_wall_time_to_utc(local: datetime, tz: ZoneInfo, instant: datetime) -> None:
    assert to_utc(local, tz) == instant


# --- freezes -----------------------------------------------------------------------------------


def test_a_freeze_in_the_middle_splits_a_window() -> None:
    cal = calendar("Thu 02:00-04:00", freezes=("2026-12-10 03:00 .. 2026-12-10 03:30",))
    assert spans(next_openings(cal, utc(2026, 12, 9), count=2)) == [
        (utc(2026, 12, 10, 2), utc(2026, 12, 10, 3)),
        (utc(2026, 12, 10, 3, 30), utc(2026, 12, 10, 4)),
    ]


def test_a_freeze_removes_the_windows_it_covers() -> None:
    cal = calendar("Tue-Thu 02:00-04:00 America/New_York", freezes=("2026-12-20 .. 2027-01-04 Europe/Berlin",))
    [first] = next_openings(cal, utc(2026, 12, 19), count=1)
    assert (first.start, first.end) == (utc(2027, 1, 5, 7), utc(2027, 1, 5, 9))


def test_a_freeze_clips_the_end_of_the_current_opening() -> None:
    cal = calendar("Tue 07:00-09:00", freezes=("2026-12-08 08:00 .. 2026-12-09",))
    expected = Opening(utc(2026, 12, 8, 7), utc(2026, 12, 8, 8), "Tue 07:00-09:00")
    assert current_opening(cal, utc(2026, 12, 8, 7)) == expected


def test_inside_a_freeze_there_is_no_current_opening() -> None:
    cal = calendar("daily 00:00-24:00", freezes=("2026-12-20 .. 2027-01-04",))
    assert current_opening(cal, utc(2026, 12, 24, 12)) is None
    assert active_freeze(cal, utc(2026, 12, 24, 12)) == cal.freezes[0]


def test_without_windows_the_openings_are_the_gaps_between_freezes() -> None:
    cal = calendar(freezes=("2026-12-20 .. 2027-01-04", "2026-12-10 .. 2026-12-11"))
    found = list(openings(cal, utc(2026, 12, 8), utc(2027, 2, 1)))
    assert [(o.start, o.end, o.label) for o in found] == [
        (utc(2026, 12, 8), utc(2026, 12, 10), "any time"),
        (utc(2026, 12, 11), utc(2026, 12, 20), "any time"),
        (utc(2027, 1, 4), utc(2027, 2, 1), "any time"),
    ]


def test_overlapping_freezes_report_the_one_ending_last() -> None:
    cal = calendar(freezes=("2026-12-20 .. 2026-12-27", "2026-12-22 .. 2027-01-04"))
    assert active_freeze(cal, utc(2026, 12, 23)).end == utc(2027, 1, 4)


@pytest.mark.parametrize(
    "now", [utc(2026, 12, 19, 23, 59), utc(2027, 1, 4), utc(2027, 6, 1)], ids=["before", "at-end", "after"]
)
def test_no_active_freeze_outside_it(now: datetime) -> None:
    assert active_freeze(calendar(freezes=("2026-12-20 .. 2027-01-04",)), now) is None


# --- merging -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entries", "start", "end", "label"),
    [
        (
            ("Mon 02:00-04:00", "Mon 03:00-05:00"),
            utc(2026, 12, 14, 2), utc(2026, 12, 14, 5), "Mon 02:00-04:00; Mon 03:00-05:00",
        ),
        (
            ("Mon 02:00-04:00", "Mon 04:00-06:00"),
            utc(2026, 12, 14, 2), utc(2026, 12, 14, 6), "Mon 02:00-04:00; Mon 04:00-06:00",
        ),
        (
            ("Mon 02:00-04:00", "Mon 02:00-04:00"),
            utc(2026, 12, 14, 2), utc(2026, 12, 14, 4), "Mon 02:00-04:00",
        ),
        (
            ("Sun 22:00-24:00", "Mon 00:00-03:00"),
            utc(2026, 12, 13, 22), utc(2026, 12, 14, 3), "Sun 22:00-24:00; Mon 00:00-03:00",
        ),
        (
            ("Mon 03:00-04:00 Europe/Berlin", "Mon 02:00-02:30"),  # 03:00 Berlin is 02:00 UTC in winter
            utc(2026, 12, 14, 2), utc(2026, 12, 14, 3), "Mon 02:00-02:30; Mon 03:00-04:00 Europe/Berlin",
        ),
    ],
    ids=["overlapping", "touching", "the-same-entry-twice", "across-midnight", "across-zones"],
)
def test_overlapping_or_touching_entries_are_one_opening(
    entries: tuple[str, ...], start: datetime, end: datetime, label: str
) -> None:
    [first] = next_openings(calendar(*entries), utc(2026, 12, 13, 12), count=1)
    assert (first.start, first.end, first.label) == (start, end, label)


def test_consecutive_whole_days_are_one_opening_up_to_the_horizon() -> None:
    now = utc(2026, 12, 8, 7)
    assert spans(list(openings(calendar("daily 00:00-24:00"), now))) == [(now, now + HORIZON)]


def test_with_nothing_configured_it_is_always_open_up_to_the_horizon() -> None:
    now = utc(2026, 12, 8, 7)
    assert current_opening(calendar(), now) == Opening(now, now + HORIZON, "any time")


def test_openings_stop_at_the_horizon() -> None:
    now = utc(2026, 12, 8, 7)
    found = list(openings(calendar("Mon 02:00-04:00"), now))
    assert (len(found), found[-1].start) == (57, utc(2028, 1, 10, 2))
    assert all(o.end <= now + HORIZON for o in found)


def test_openings_stop_at_until() -> None:
    found = list(openings(calendar("daily 02:00-04:00"), utc(2026, 12, 8, 3), until=utc(2026, 12, 10, 3)))
    assert spans(found) == [
        (utc(2026, 12, 8, 3), utc(2026, 12, 8, 4)),
        (utc(2026, 12, 9, 2), utc(2026, 12, 9, 4)),
        (utc(2026, 12, 10, 2), utc(2026, 12, 10, 3)),
    ]


# --- fitting a deploy --------------------------------------------------------------------------


FIT = calendar("Tue 02:00-03:00", "Wed 02:00-02:30", "Thu 02:00-06:00")


@pytest.mark.parametrize(
    ("now", "duration", "start", "end"),
    [
        (utc(2026, 12, 8, 2, 30), timedelta(minutes=20), utc(2026, 12, 8, 2, 30), utc(2026, 12, 8, 3)),
        (utc(2026, 12, 8, 2, 30), timedelta(minutes=30), utc(2026, 12, 8, 2, 30), utc(2026, 12, 8, 3)),
        (utc(2026, 12, 8, 2, 30), timedelta(minutes=31), utc(2026, 12, 10, 2), utc(2026, 12, 10, 6)),
        (utc(2026, 12, 8, 12), timedelta(minutes=30), utc(2026, 12, 9, 2), utc(2026, 12, 9, 2, 30)),
        (utc(2026, 12, 8, 12), timedelta(hours=1), utc(2026, 12, 10, 2), utc(2026, 12, 10, 6)),
        (utc(2026, 12, 10, 3), timedelta(hours=4), utc(2026, 12, 17, 2), utc(2026, 12, 17, 6)),
    ],
    ids=["current-fits", "current-exactly", "current-too-short", "next-fits", "skips-short-ones", "a-week-later"],
)
def test_next_fit(now: datetime, duration: timedelta, start: datetime, end: datetime) -> None:
    opening = next_fit(FIT, now, duration)
    assert opening is not None and (opening.start, opening.end) == (start, end)


def test_nothing_fits_a_deploy_longer_than_every_window() -> None:
    assert next_fit(FIT, utc(2026, 12, 8), timedelta(hours=4, seconds=1)) is None


def test_always_open_fits_anything_within_the_horizon() -> None:
    now = utc(2026, 12, 8)
    assert next_fit(calendar(), now, timedelta(days=30)) == Opening(now, now + HORIZON, "any time")


@pytest.mark.parametrize(
    ("cal", "longest"),
    [
        (FIT, timedelta(hours=4)),
        (calendar("Mon 02:00-04:00", freezes=("2026-01-01 .. 2029-01-01",)), timedelta(0)),
        (calendar(), HORIZON),
    ],
    ids=["windows", "frozen-for-years", "always-open"],
)
def test_longest_opening(cal: Calendar, longest: timedelta) -> None:
    assert longest_opening(cal, utc(2026, 12, 8)) == longest


# --- rendering ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "text"),
    [
        (utc(2026, 12, 8, 7), utc(2026, 12, 8, 9), "Tue 2026-12-08 07:00-09:00 UTC"),
        (utc(2026, 12, 8, 22), utc(2026, 12, 9), "Tue 2026-12-08 22:00-24:00 UTC"),
        (utc(2026, 12, 12, 22), utc(2026, 12, 13, 2), "Sat 2026-12-12 22:00 to Sun 2026-12-13 02:00 UTC"),
        (utc(2026, 12, 8, 7, 0, 30), utc(2026, 12, 8, 7, 0, 45), "Tue 2026-12-08 07:00:30-07:00:45 UTC"),
        (datetime(2026, 12, 8, 8, tzinfo=BERLIN), datetime(2026, 12, 8, 10, tzinfo=BERLIN),
         "Tue 2026-12-08 07:00-09:00 UTC"),
    ],
)
def test_describe(start: datetime, end: datetime, text: str) -> None:
    assert describe(Opening(start, end, "x")) == text


@pytest.mark.parametrize(
    ("moment", "fallback", "token"),
    [
        (utc(2026, 12, 8, 7), None, "<!date^1796713200^{date_short_pretty} {time}|2026-12-08 07:00 UTC>"),
        (datetime(2026, 12, 8, 8, tzinfo=BERLIN), None,
         "<!date^1796713200^{date_short_pretty} {time}|2026-12-08 07:00 UTC>"),
        (utc(2026, 12, 8, 7), "Tue <soon> & later",
         "<!date^1796713200^{date_short_pretty} {time}|Tue &lt;soon&gt; &amp; later>"),
    ],
)
def test_slack_date(moment: datetime, fallback: str | None, token: str) -> None:
    assert slack_date(moment, fallback) == token


def test_slack_date_refuses_a_naive_datetime() -> None:
    with pytest.raises(ValueError, match="has no time zone"):
        slack_date(datetime(2026, 12, 8, 7))


# --- properties --------------------------------------------------------------------------------

ZONES = ["UTC", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "Asia/Kathmandu"]
BASES = [utc(2026, 3, 1), utc(2026, 3, 25), utc(2026, 10, 20), utc(2026, 3, 31)]


@st.composite
def window_entries(draw: st.DrawFn) -> str:
    days = draw(st.sets(st.integers(0, 6), min_size=1))
    start = draw(st.integers(0, 95)) * 15
    end = start + draw(st.integers(1, 95)) * 15
    end = end if end <= 1440 else end - 1440
    zone = draw(st.sampled_from(ZONES))
    spec = ",".join(DAY_NAMES[d] for d in sorted(days))
    return f"{spec} {start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d} {zone}"


@st.composite
def freeze_entries(draw: st.DrawFn) -> str:
    start = draw(st.sampled_from(BASES)) + timedelta(hours=draw(st.integers(0, 24 * 30)))
    end = start + timedelta(hours=draw(st.integers(1, 24 * 5)))
    return f"{start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M}"


def _raw_occurrences(cal: Calendar, since: datetime, until: datetime) -> list[tuple[datetime, datetime]]:
    """Every window occurrence near [since, until), straight from ``occurrence``: the oracle."""
    found = []
    for window in cal.windows:
        day = since.date() - timedelta(days=3)
        while day <= until.date() + timedelta(days=1):
            if day.weekday() in window.days:
                found.append(occurrence(window, day))
            day += timedelta(days=1)
    return found


def _in_a_window(moment: datetime, raw: list[tuple[datetime, datetime]]) -> bool:
    return any(start <= moment < end for start, end in raw)


@given(
    windows=st.lists(window_entries(), min_size=0, max_size=3),
    freezes=st.lists(freeze_entries(), max_size=2),
    base=st.sampled_from(BASES),
    minutes=st.integers(0, 20 * 1440),
)
def test_openings_are_ordered_apart_unfrozen_and_inside_windows(
    windows: list[str], freezes: list[str], base: datetime, minutes: int
) -> None:
    cal = calendar(*windows, freezes=tuple(freezes))
    now = base + timedelta(minutes=minutes)
    until = now + timedelta(days=15)
    found = list(openings(cal, now, until))
    raw = _raw_occurrences(cal, now, until) if windows else [(now, until)]
    frozen = [(f.start, f.end) for f in cal.freezes]
    for opening in found:
        assert now <= opening.start < opening.end <= until
        assert not any(f_start < opening.end and opening.start < f_end for f_start, f_end in frozen)
        for moment in (opening.start, opening.start + opening.duration / 2, opening.end - timedelta(microseconds=1)):
            assert _in_a_window(moment, raw)
    for earlier, later in zip(found, found[1:]):
        assert earlier.end < later.start
        gap = earlier.end + (later.start - earlier.end) / 2
        assert not _in_a_window(gap, raw) or _in_a_window(gap, frozen)


DST_NIGHTS = [datetime(2026, 3, 8), datetime(2026, 11, 1), datetime(2026, 3, 29), datetime(2026, 10, 25),
              datetime(2026, 4, 5), datetime(2026, 10, 4)]  # New York, Berlin, Lord Howe (a 30-minute shift)
NEAR_A_DST_CHANGE = st.builds(
    lambda night, seconds: night + timedelta(seconds=seconds), st.sampled_from(DST_NIGHTS), st.integers(0, 4 * 3600)
)


@given(
    local=st.one_of(NEAR_A_DST_CHANGE, st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 1, 1))),
    zone=st.sampled_from(ZONES),
)
def test_wall_time_never_moves_back_and_only_moves_out_of_a_gap(local: datetime, zone: str) -> None:
    tz = ZoneInfo(zone)
    wall = to_utc(local, tz).astimezone(tz).replace(tzinfo=None, fold=0)
    round_trips = (local.replace(tzinfo=tz, fold=fold).astimezone(timezone.utc).astimezone(tz) for fold in (0, 1))
    exists = any(back.replace(tzinfo=None, fold=0) == local for back in round_trips)
    assert wall == local if exists else local < wall <= local + timedelta(hours=1)
