"""Is a deploy window really low-traffic? Pure arithmetic over prod's own counters.

The bot samples prod's ``pg_stat_database`` hourly: the cumulative
``xact_commit + xact_rollback`` summed over databases, and the number of
active sessions at that moment. Counters are cumulative, so traffic is the
difference between consecutive samples; a team's guess of "nobody is on at
3 a.m." becomes a table of the quietest hours of its week, and the configured
windows get compared with the rest of the week.

Nothing here queries a database or reads the clock: the sampler stores
``Sample`` rows, these functions turn them into lines for the CLI and Slack.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import fmean
from zoneinfo import ZoneInfo

from bot.runs.windows import DAY_NAMES, Calendar, openings

SERIES = "traffic"  # samples of prod's pg_stat_database in the state store (written by jobs.sample_traffic)
MAX_GAP = timedelta(hours=3)
A_WEEK = timedelta(days=7)
HOUR = timedelta(hours=1)

Rate = tuple[datetime, float, int]  # (midpoint of the pair, transactions per hour, active at the later sample)


@dataclass(frozen=True)
class Sample:
    taken_at: datetime  # aware
    xact: int  # cumulative xact_commit + xact_rollback over all databases
    active: int  # sessions in state 'active' when the sample was taken


@dataclass(frozen=True)
class HourOfWeek:
    weekday: int  # 0 = Monday, in the zone quietest_hours was asked for
    hour: int
    xact_per_hour: float
    active: float  # average active sessions
    weeks: int  # how many distinct days fed this hour: one a week

    def label(self) -> str:
        return f"{DAY_NAMES[self.weekday]} {self.hour:02d}:00"


@dataclass(frozen=True)
class WindowTraffic:
    """The configured windows against the whole sampled time, so a team sees whether its window is quiet."""

    configured: bool  # False: no deploy.windows, nothing to compare
    inside: float | None  # average tx/hour inside the windows; None when no sample fell inside
    overall: float | None  # average tx/hour over every rate; None without rates
    inside_hours: int  # how many rates fell inside a window
    hours: int  # how many rates in all

    @property
    def ratio(self) -> float | None:
        if self.inside is None or not self.overall:
            return None
        return self.inside / self.overall


def rates(samples: list[Sample]) -> list[Rate]:
    """Differences of consecutive samples, per hour, dated at the pair's midpoint.

    The midpoint puts the 03:00 -> 04:00 pair in the 03:00 hour, which is what it measured.
    A counter that went down means a stats reset or a restart: that pair says nothing, and a
    negative rate would drag an hour's average towards "quiet". Pairs further apart than
    ``MAX_GAP`` are skipped too: a day's traffic divided by 24 is not any one hour's.
    """
    ordered = sorted(samples, key=lambda s: s.taken_at)
    result: list[Rate] = []
    for earlier, later in zip(ordered, ordered[1:]):
        span = later.taken_at - earlier.taken_at
        if span <= timedelta(0) or span > MAX_GAP or later.xact < earlier.xact:
            continue
        per_hour = (later.xact - earlier.xact) / (span / HOUR)
        result.append((earlier.taken_at + span / 2, per_hour, later.active))
    return result


def sampled_span(samples: list[Sample]) -> timedelta:
    if not samples:
        return timedelta(0)
    moments = [s.taken_at for s in samples]
    return max(moments) - min(moments)


def has_a_week(samples: list[Sample]) -> bool:
    """Fewer than seven days leaves some hours of the week unseen, so "quietest" is a guess."""
    return sampled_span(samples) >= A_WEEK


def quietest_hours(samples: list[Sample], tz: ZoneInfo, count: int = 5) -> list[HourOfWeek]:
    """Hours of the week in the team's zone, quietest first; ties go to the earlier hour of the week."""
    buckets: dict[tuple[int, int], list[Rate]] = defaultdict(list)
    for rate in rates(samples):
        local = rate[0].astimezone(tz)
        buckets[(local.weekday(), local.hour)].append(rate)
    hours = [_hour_of_week(key, bucket, tz) for key, bucket in buckets.items()]
    return sorted(hours, key=lambda h: (h.xact_per_hour, h.weekday, h.hour))[:count]


def _hour_of_week(key: tuple[int, int], bucket: list[Rate], tz: ZoneInfo) -> HourOfWeek:
    days = {moment.astimezone(tz).date() for moment, _, _ in bucket}
    return HourOfWeek(
        weekday=key[0],
        hour=key[1],
        xact_per_hour=fmean(per_hour for _, per_hour, _ in bucket),
        active=fmean(active for _, _, active in bucket),
        weeks=len(days),
    )


def window_traffic(samples: list[Sample], cal: Calendar) -> WindowTraffic:
    """Freezes are left out on purpose: the question is whether the window's hours are quiet,
    and a freeze during the sampled weeks would only hide some of them."""
    measured = rates(samples)
    overall = fmean(r[1] for r in measured) if measured else None
    if cal.always_open:
        return WindowTraffic(False, None, overall, 0, len(measured))
    starts, ends = _window_bounds(cal, measured[0][0], measured[-1][0]) if measured else ([], [])
    inside = [r for r in measured if _inside(r[0], starts, ends)]
    average = fmean(r[1] for r in inside) if inside else None
    return WindowTraffic(True, average, overall, len(inside), len(measured))


def _window_bounds(cal: Calendar, first: datetime, last: datetime) -> tuple[list[datetime], list[datetime]]:
    windows_only = Calendar(cal.windows, (), cal.tz)
    found = list(openings(windows_only, first, last + timedelta(seconds=1)))
    return [o.start for o in found], [o.end for o in found]


def _inside(moment: datetime, starts: list[datetime], ends: list[datetime]) -> bool:
    """Openings are sorted and disjoint, so the only candidate is the last one starting at or before."""
    index = bisect.bisect_right(starts, moment) - 1
    return index >= 0 and moment < ends[index]


def render(
    quiet: list[HourOfWeek],
    window: WindowTraffic | None = None,
    *,
    tz: ZoneInfo | None = None,
    span: timedelta | None = None,
) -> list[str]:
    """Plain lines, no markup: the CLI prints them and Slack posts them as they are."""
    if not quiet:
        return ["No traffic measured yet: the bot samples prod hourly, so ask again in a few hours."]
    zone = tz.key if tz is not None else "UTC"
    lines = [f"Quietest hours ({zone}), average transactions per hour:"]
    lines += [_hour_line(hour) for hour in quiet]
    if span is not None and span < A_WEEK:
        days = span / timedelta(days=1)
        lines.append(f"Only {days:.1f} days sampled: some hours of the week are not measured yet.")
    if window is not None:
        lines.append(_window_line(window))
    return lines


def _hour_line(hour: HourOfWeek) -> str:
    weeks = f"{hour.weeks} week" + ("" if hour.weeks == 1 else "s")
    return f"  {hour.label()}  {hour.xact_per_hour:,.0f} tx/h, {hour.active:.1f} active ({weeks})"


def _window_line(window: WindowTraffic) -> str:
    if not window.configured:
        return "No deploy windows configured (deploy.windows): the hours above are candidates."
    if window.inside is None or window.ratio is None:
        return "No traffic measured inside the deploy windows yet."
    return (
        f"Inside the deploy windows: {window.inside:,.0f} tx/h on average, "
        f"{window.ratio:.0%} of the {window.overall:,.0f} tx/h average over the whole week."
    )
