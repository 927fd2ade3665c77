"""Deploy windows and freezes: when a deploy may start, as pure time maths.

Nothing here reads the clock: every function takes ``now``, so the scheduler,
the Slack replies and the tests agree on what "now" is, and a test can stand
on a DST night without waiting for one.

Config (``[deploy]``)::

    windows  = ["Tue-Thu 02:00-04:00 America/New_York", "Sat 01:00-05:00"]  # empty = any time
    freezes  = ["2026-12-20 00:00 .. 2027-01-04 00:00 Europe/Berlin"]      # beat windows
    timezone = "UTC"                                                       # for entries naming none

The rules a reader would otherwise have to guess:

- A window's days name the day it opens: ``Sat 22:00-02:00`` closes on Sunday.
- Wall times are local to the entry's zone. A time that does not exist (the
  spring-forward gap) moves forward by the gap: 02:30 in New York on that
  night is 03:30 EDT. A time that exists twice (fall-back) is its first
  occurrence, for a start and an end alike. So a window neither vanishes nor
  happens twice on a DST night; only its real length changes.
- Freezes beat windows; overlapping or touching openings merge into one.
- Every result is in UTC; renderers convert (``slack_date`` lets Slack show
  each reader their own zone).
"""

from __future__ import annotations

import difflib
import heapq
import itertools
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Callable, Iterable, Iterator, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from bot.errors import ConfigError

UTC = timezone.utc
DAY = 86_400
HORIZON = timedelta(days=400)
ALWAYS = "any time"
DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_FULL_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

WINDOW_EXPECTED = 'Expected "<days> HH:MM-HH:MM [Area/City]", e.g. "Tue-Thu 02:00-04:00 America/New_York".'
FREEZE_EXPECTED = (
    'Expected "YYYY-MM-DD [HH:MM] .. YYYY-MM-DD [HH:MM] [Area/City]", '
    'e.g. "2026-12-20 00:00 .. 2027-01-04 00:00 Europe/Berlin".'
)
TIMEZONE_EXPECTED = 'Expected an IANA time zone name, e.g. "Europe/Berlin" or "UTC".'

_CLOCK = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?")
_DATE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")

_Span = tuple[datetime, datetime, str]
_Parsed = TypeVar("_Parsed")


@dataclass(frozen=True)
class Window:
    """A weekly recurring interval in wall-clock time; ``seconds`` is its nominal length
    (DST nights make the real one shorter or longer)."""

    days: frozenset[int]  # 0 = Monday .. 6 = Sunday: the days the window opens
    start: time
    end: time  # 00:00 for an end written 24:00
    seconds: int
    tz: ZoneInfo
    text: str


@dataclass(frozen=True)
class Freeze:
    start: datetime  # aware, UTC
    end: datetime
    text: str

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


@dataclass(frozen=True)
class Opening:
    """A stretch of real time in which a deploy may start: windows merged, freezes cut out."""

    start: datetime  # aware, UTC
    end: datetime
    label: str  # the entry (or entries, "; "-joined) it came from; "any time" without windows

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment < self.end

    @property
    def duration(self) -> timedelta:
        return self.end - self.start


@dataclass(frozen=True)
class Calendar:
    windows: tuple[Window, ...]
    freezes: tuple[Freeze, ...]
    tz: ZoneInfo  # for entries that name no zone; renderers may use it too

    @property
    def always_open(self) -> bool:
        """No windows configured: any time outside a freeze is an opening."""
        return not self.windows


class _Unclear(Exception):
    """Why an entry is not understood; the caller wraps it with the entry and the config key."""


# --- parsing -----------------------------------------------------------------------------------


def parse_calendar(windows: list[str], freezes: list[str], timezone: str = "UTC") -> Calendar:
    """Parse ``[deploy]`` once at config load, so a typo fails the start-up, not a deploy night."""
    tz = _default_zone(timezone)
    for key, entries in (("deploy.windows", windows), ("deploy.freezes", freezes)):
        if isinstance(entries, str):
            raise ConfigError(f"{key} must be a list of strings, not a single string.", f'Write {key} = ["{entries}"].')
    parsed_freezes = sorted((parse_freeze(text, tz) for text in freezes), key=lambda f: (f.start, f.end))
    return Calendar(tuple(parse_window(text, tz) for text in windows), tuple(parsed_freezes), tz)


def parse_window(text: str, default_tz: ZoneInfo) -> Window:
    """One ``deploy.windows`` entry; a ConfigError quotes it and says what is wrong with it."""
    return _entry("deploy.windows", text, lambda: _parse_window(text, default_tz), WINDOW_EXPECTED)


def parse_freeze(text: str, default_tz: ZoneInfo) -> Freeze:
    """One ``deploy.freezes`` entry; a ConfigError quotes it and says what is wrong with it."""
    return _entry("deploy.freezes", text, lambda: _parse_freeze(text, default_tz), FREEZE_EXPECTED)


def _entry(key: str, text: object, parse: Callable[[], _Parsed], expected: str) -> _Parsed:
    if not isinstance(text, str):
        raise ConfigError(f"{key} entry {text!r} is not a string.", expected)
    try:
        return parse()
    except _Unclear as why:
        raise ConfigError(f'{key} entry "{text}" is not understood: {why}.', expected) from None


def _default_zone(name: str) -> ZoneInfo:
    try:
        return _zone(name)
    except _Unclear as why:
        raise ConfigError(f"deploy.timezone {why}.", TIMEZONE_EXPECTED) from None


def _normalise(text: str) -> str:
    """Forgive the spacing people type (``Mon - Fri``, ``Mon, Wed``) and dashes pasted from docs."""
    text = text.replace("\u2013", "-").replace("\u2014", "-").strip()
    text = re.sub(r"(?<=[A-Za-z])\s*-\s*(?=[A-Za-z])|(?<=\d)\s*-\s*(?=\d)", "-", text)
    return re.sub(r"\s*,\s*", ",", text)


def _parse_window(text: str, default_tz: ZoneInfo) -> Window:
    parts = _normalise(text).split()
    if not parts:
        raise _Unclear("it is empty")
    if parts[0][0].isdigit():
        raise _Unclear('it starts with a time; name the days first (or "daily")')
    days = _parse_days(parts[0])
    if len(parts) == 1:
        raise _Unclear(f'there is no time range after "{parts[0]}"')
    if len(parts) > 3:
        raise _Unclear(f'"{" ".join(parts[3:])}" is left over after the time zone')
    start_s, end_s = _parse_range(parts[1])
    tz = _zone(parts[2]) if len(parts) == 3 else default_tz
    seconds = end_s - start_s if end_s > start_s else end_s + DAY - start_s
    return Window(days, _time_of_day(start_s), _time_of_day(end_s), seconds, tz, text)


def _parse_days(spec: str) -> frozenset[int]:
    if spec.lower() in ("daily", "everyday"):
        return frozenset(range(7))
    days: set[int] = set()
    for part in spec.split(","):
        ends = part.split("-")
        if not part or "" in ends:
            raise _Unclear(f'a day is missing in "{spec}"')
        if len(ends) > 2:
            raise _Unclear(f'"{part}" is not a day range (write two days, e.g. Mon-Fri)')
        first, last = _day(ends[0]), _day(ends[-1])
        days.update((first + i) % 7 for i in range((last - first) % 7 + 1))
    return frozenset(days)


def _day(name: str) -> int:
    """``Tue``, ``Tues``, ``Tuesday``, any case: at least three letters of the full name."""
    low = name.lower()
    for number, full in enumerate(_FULL_DAY_NAMES):
        if len(low) >= 3 and full.startswith(low):
            return number
    raise _Unclear(f'"{name}" is not a day')


def _parse_range(token: str) -> tuple[int, int]:
    if token[0].isalpha():
        raise _Unclear(f'"{token}" is not a time range')
    if "-" not in token:
        raise _Unclear(f'"{token}" has no end time (missing "-")')
    first, _, second = token.partition("-")
    if "-" in second:
        raise _Unclear(f'"{token}" has more than one "-"')
    if not first or not second:
        raise _Unclear(f'"{token}" is missing its {"start" if not first else "end"} time')
    start_s, end_s = _parse_clock(first), _parse_clock(second)
    if start_s == DAY:
        raise _Unclear("24:00 can only end a window; a window opening at midnight starts at 00:00")
    if start_s == end_s:
        raise _Unclear(f"it starts and ends at {first}; a whole day is 00:00-24:00")
    return start_s, end_s


def _parse_clock(text: str) -> int:
    """Seconds since midnight; 24:00 is allowed (as 86400) and the caller decides where."""
    match = _CLOCK.fullmatch(text)
    if not match:
        raise _Unclear(f'"{text}" is not a time (write HH:MM, e.g. 02:00)')
    hours, minutes, seconds = int(match[1]), int(match[2]), int(match[3] or 0)
    if minutes > 59:
        raise _Unclear(f'"{text}" is not a time (minutes go up to 59)')
    if seconds > 59:
        raise _Unclear(f'"{text}" is not a time (seconds go up to 59)')
    if hours > 24 or (hours == 24 and (minutes or seconds)):
        raise _Unclear(f'"{text}" is not a time (hours go up to 23; 24:00 only as an end)')
    return hours * 3600 + minutes * 60 + seconds


def _time_of_day(seconds: int) -> time:
    seconds %= DAY
    return time(seconds // 3600, seconds // 60 % 60, seconds % 60)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise _Unclear(f'"{name}" is not a time zone{_zone_hint(name)}') from None


def _zone_hint(name: str) -> str:
    """Only computed on the error path: listing the zone database takes a few milliseconds."""
    known = sorted(available_timezones())  # sorted: the same typo gets the same hint on every run
    by_case = {zone.lower(): zone for zone in known}
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
    guess = by_case.get(name.lower()) or (close[0] if close else None)
    return f' (did you mean "{guess}"?)' if guess else ""


def _parse_freeze(text: str, default_tz: ZoneInfo) -> Freeze:
    normal = re.sub(r"(\d)T(\d)", r"\1 \2", text.strip())
    if ".." not in normal:
        raise _Unclear('there is no ".." between the start and the end')
    first, _, second = normal.partition("..")
    if ".." in second:
        raise _Unclear('it has more than one ".."')
    start_parts, end_parts = first.split(), second.split()
    tz = _zone(end_parts.pop()) if end_parts and not end_parts[-1][0].isdigit() else default_tz
    if start_parts and not start_parts[-1][0].isdigit():
        raise _Unclear(f'"{start_parts[-1]}" belongs at the end: one time zone for both ends')
    start = to_utc(_parse_moment(start_parts, "start"), tz)
    end = to_utc(_parse_moment(end_parts, "end"), tz)
    if end <= start:
        raise _Unclear("it ends before it starts" if end < start else "it ends when it starts")
    return Freeze(start, end, text)


def _parse_moment(parts: list[str], which: str) -> datetime:
    if not parts:
        raise _Unclear(f"the {which} date is missing")
    if len(parts) > 2:
        raise _Unclear(f'"{" ".join(parts)}" is not a date and a time')
    match = _DATE.fullmatch(parts[0])
    if not match:
        raise _Unclear(f'"{parts[0]}" is not a date (write YYYY-MM-DD)')
    try:
        day = date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError as exc:
        raise _Unclear(f'"{parts[0]}" is not a date ({exc})') from None
    seconds = _parse_clock(parts[1]) if len(parts) == 2 else 0
    return datetime.combine(day, time()) + timedelta(seconds=seconds)


# --- local wall time -> UTC --------------------------------------------------------------------


def to_utc(local: datetime, tz: ZoneInfo) -> datetime:
    """Naive wall time in ``tz`` -> aware UTC, with the module's DST promise.

    ``fold`` alone is not enough to be sure: for a time that exists, fold 0 and 1 are its
    first and second occurrence; in a gap neither round-trips to the same wall time, and
    the offset from before the jump (the later of the two instants) moves it forward by
    the gap. Checking the round trip says which case we are in instead of trusting it.
    """
    local = local.replace(tzinfo=None, fold=0)
    candidates = {local.replace(tzinfo=tz, fold=fold).astimezone(UTC) for fold in (0, 1)}
    real = [moment for moment in candidates if _wall(moment, tz) == local]
    return min(real) if real else max(candidates)


def _wall(moment: datetime, tz: ZoneInfo) -> datetime:
    return moment.astimezone(tz).replace(tzinfo=None, fold=0)


def occurrence(window: Window, day: date) -> tuple[datetime, datetime]:
    """The real (UTC) interval of ``window`` opening on local ``day``, whether or not it opens that weekday.

    The end is the start's wall time plus the nominal length, converted on its own, so a
    window across the jump is an hour shorter or longer. Only a window that starts in the
    gap and ends within a gap's length after it would come out inside-out; it keeps its
    nominal length from the moved start instead of vanishing.
    """
    local_start = datetime.combine(day, window.start)
    start = to_utc(local_start, window.tz)
    end = to_utc(local_start + timedelta(seconds=window.seconds), window.tz)
    return (start, end) if end > start else (start, start + timedelta(seconds=window.seconds))


# --- openings ----------------------------------------------------------------------------------


def openings(cal: Calendar, now: datetime, until: datetime | None = None) -> Iterator[Opening]:
    """Lazily, in time order, up to a horizon: an endless iterator is a hang waiting for its caller."""
    now = _utc(now)
    until = now + HORIZON if until is None else _utc(until)
    spans: Iterable[_Span] = _window_spans(cal.windows, now, until) if cal.windows else [(now, until, ALWAYS)]
    for start, end, labels in _merged(spans):
        for piece_start, piece_end in _minus_freezes(start, end, cal.freezes):
            piece_start, piece_end = max(piece_start, now), min(piece_end, until)
            if piece_start < piece_end:
                yield Opening(piece_start, piece_end, "; ".join(labels))


def _window_spans(windows: Iterable[Window], since: datetime, until: datetime) -> Iterator[_Span]:
    return heapq.merge(*(_occurrences(window, since, until) for window in windows))


def _occurrences(window: Window, since: datetime, until: datetime) -> Iterator[_Span]:
    """Starts two local days early: yesterday's window may still be open, even across a 25-hour DST day."""
    day = since.astimezone(window.tz).date() - timedelta(days=2)
    last = until.astimezone(window.tz).date() + timedelta(days=1)
    while day <= last:
        if day.weekday() in window.days:
            start, end = occurrence(window, day)
            if start >= until:
                return
            if end > since:
                yield start, end, window.text
        day += timedelta(days=1)


def _merged(spans: Iterable[_Span]) -> Iterator[tuple[datetime, datetime, tuple[str, ...]]]:
    """Spans sorted by start -> maximal runs; touching counts, so back-to-back days are one opening."""
    current: tuple[datetime, datetime, tuple[str, ...]] | None = None
    for start, end, label in spans:
        if current is not None and start <= current[1]:
            labels = current[2] if label in current[2] else (*current[2], label)
            current = (current[0], max(current[1], end), labels)
            continue
        if current is not None:
            yield current
        current = (start, end, (label,))
    if current is not None:
        yield current


def _minus_freezes(start: datetime, end: datetime, freezes: Iterable[Freeze]) -> list[tuple[datetime, datetime]]:
    pieces = [(start, end)]
    for freeze in freezes:
        kept: list[tuple[datetime, datetime]] = []
        for a, b in pieces:
            if freeze.end <= a or freeze.start >= b:
                kept.append((a, b))
                continue
            if a < freeze.start:
                kept.append((a, freeze.start))
            if freeze.end < b:
                kept.append((freeze.end, b))
        pieces = kept
    return pieces


def current_opening(cal: Calendar, now: datetime) -> Opening | None:
    """The opening ``now`` is in, clipped to start at ``now``: what is left of it is what counts."""
    first = next(openings(cal, now), None)
    return first if first is not None and first.contains(_utc(now)) else None


def next_openings(cal: Calendar, now: datetime, count: int = 3) -> list[Opening]:
    """Openings still to come (not the current one), for "next windows:" lines."""
    now = _utc(now)
    return list(itertools.islice((o for o in openings(cal, now) if o.start > now), count))


def next_fit(cal: Calendar, now: datetime, duration: timedelta) -> Opening | None:
    """The first opening long enough for ``duration``; the current one counts with what is left of it."""
    return next((o for o in openings(cal, now) if o.duration >= duration), None)


def active_freeze(cal: Calendar, now: datetime) -> Freeze | None:
    """Of overlapping freezes, the one ending last: "frozen until" should not be an early lie."""
    now = _utc(now)
    return max((f for f in cal.freezes if f.contains(now)), key=lambda f: f.end, default=None)


def longest_opening(cal: Calendar, now: datetime) -> timedelta:
    """For "this deploy is too long for any window" messages; zero when the horizon has no opening."""
    return max((o.duration for o in openings(cal, now)), default=timedelta(0))


# --- rendering ---------------------------------------------------------------------------------


def describe(opening: Opening) -> str:
    """``Tue 2026-12-08 07:00-09:00 UTC``; an opening that ends on a later date names that date too."""
    start, end = opening.start.astimezone(UTC), opening.end.astimezone(UTC)
    head = f"{DAY_NAMES[start.weekday()]} {start:%Y-%m-%d} {_clock(start)}"
    if end.date() == start.date():
        return f"{head}-{_clock(end)} UTC"
    if end - timedelta(days=1) == datetime.combine(start.date(), time(), UTC):
        return f"{head}-24:00 UTC"
    return f"{head} to {DAY_NAMES[end.weekday()]} {end:%Y-%m-%d} {_clock(end)} UTC"


def _clock(moment: datetime) -> str:
    return f"{moment:%H:%M:%S}" if moment.second else f"{moment:%H:%M}"


def slack_date(moment: datetime, fallback: str | None = None) -> str:
    """A Slack date token: each reader sees their own zone; the fallback is what clients without it show."""
    moment = _utc(moment)
    text = fallback if fallback is not None else f"{moment:%Y-%m-%d %H:%M} UTC"
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} {{time}}|{escaped}>"


def _utc(moment: datetime) -> datetime:
    """A naive datetime would silently mean the server's zone; refuse it instead."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{moment!r} has no time zone; pass an aware datetime")
    return moment.astimezone(UTC)


# --- may a deploy start now? ---------------------------------------------------------------------


@dataclass(frozen=True)
class Gate:
    """Whether a deploy may start at ``now``, until when, and otherwise when it next may."""

    open: bool
    deadline: datetime | None  # the end of the opening it starts in; None = no window bounds it
    next: Opening | None  # when closed: the next opening
    freeze: Freeze | None  # when closed by a freeze


def gate(cal: Calendar, now: datetime) -> Gate:
    """The one answer to "may a deploy start now?" for the CLI and chat alike."""
    if cal.always_open and not cal.freezes:
        return Gate(True, None, None, None)
    current = current_opening(cal, now)
    if current is not None:
        bounded = not cal.always_open or current.end - _utc(now) < HORIZON - timedelta(days=1)
        return Gate(True, current.end if bounded else None, None, None)
    upcoming = next_openings(cal, now, 1)
    return Gate(False, None, upcoming[0] if upcoming else None, active_freeze(cal, now))
