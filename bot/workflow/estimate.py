"""How long a deploy will take: staging's timings, scaled to prod's table sizes, plus a margin.

A scheduled deploy goes into the next window opening that leaves room for it,
so its duration is needed before it runs. The gate already timed every
migration on staging, a fresh copy of prod; but staging may be masked,
subsetted or simply smaller, and DDL that scans or rewrites a table takes time
roughly in proportion to its size. So each migration's staging time is scaled
by how much larger its biggest table is on prod, and a margin covers what
staging cannot show (cold caches, live traffic, lock waits). Sizes come from
cheap catalog reads (``reltuples``, ``pg_total_relation_size``), never from
``count(*)`` on prod. The arithmetic is pure; ``measure`` is the only I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import psycopg

from bot.migrations.source import Migration
from bot.pg import rows
from bot.workflow.report import Report, Status
from bot.workflow.schemactx import touched_tables

MARGIN = 1.5
FLOOR_S = 60.0  # no window is worth less: connecting, preflight and spot checks take time too
UNTIMED_S = 60.0  # staging seconds assumed for a migration the validation did not time
ROW_FLOOR = 1000  # a tiny table on staging times fixed overhead, not work per row
BYTES_FLOOR = 128 * 1024  # the same floor when rows are unknown (a table never analyzed)

# Per relation name, the largest table of that name in any schema; a partitioned table counts its leaves.
SIZES_SQL = """
SELECT DISTINCT ON (t.relname) t.relname AS name, s.rows, s.bytes
FROM pg_class t
JOIN pg_namespace n ON n.oid = t.relnamespace
CROSS JOIN LATERAL (
    SELECT CASE WHEN bool_or(c.reltuples < 0) THEN NULL ELSE coalesce(sum(c.reltuples), 0) END AS rows,
           coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint AS bytes
    FROM pg_class c
    WHERE c.oid IN (SELECT t.oid WHERE t.relkind = 'r'
                    UNION ALL SELECT relid FROM pg_partition_tree(t.oid) WHERE isleaf)
) s
WHERE t.relkind IN ('r', 'p') AND t.relname = ANY(%s)
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'migrate_bot')
ORDER BY t.relname, s.bytes DESC
"""


@dataclass(frozen=True)
class TableSize:
    rows: float | None  # reltuples; None when the table was never analyzed
    bytes: int


@dataclass(frozen=True)
class Scale:
    """How much slower a migration should run on prod than on staging, and the reason in words."""

    factor: float
    reason: str = ""  # empty when prod is not larger


@dataclass(frozen=True)
class Part:
    """One migration's share of the estimate, before the margin."""

    migration: str
    staging_s: float | None  # None: no staging timing, ``UNTIMED_S`` stood in
    scale: float
    reason: str
    seconds: float


@dataclass(frozen=True)
class Estimate:
    seconds: float
    parts: list[Part]
    margin: float = MARGIN
    floor_s: float = FLOOR_S
    untimed_s: float = UNTIMED_S

    def explain(self) -> str:
        """One short sentence with the numbers, for the message that announces the slot."""
        timed = [p for p in self.parts if p.staging_s is not None]
        untimed = [p for p in self.parts if p.staging_s is None]
        clauses = []
        if timed:
            total = sum(p.staging_s or 0.0 for p in timed)
            clauses.append(f"{_count(len(timed), 'migration')} took {_staging_seconds(total)} on staging")
        if untimed:
            clauses.append(f"{_count(len(untimed), 'migration')} without a staging timing counted as "
                           f"{duration(self.untimed_s)} each")
        if not self.parts:
            clauses.append("nothing to apply")
        clauses += _reasons(self.parts)
        clauses += [f"x{self.margin:g} margin", f"at least {duration(self.floor_s)}"]
        return f"about {duration(self.seconds)}: " + "; ".join(clauses)


def estimate(seconds_by_migration: dict[str, float], scale_by_migration: dict[str, float], *,
             margin: float = MARGIN, floor_s: float = FLOOR_S, untimed_s: float = UNTIMED_S,
             reasons: dict[str, str] | None = None) -> Estimate:
    """The deploy's duration from staging seconds and prod/staging scales, keyed by migration label.

    Every label in either mapping is a migration of the deploy; one with no
    staging seconds counts as ``untimed_s`` staging seconds (scaled like the
    rest — an unknown is not assumed to be small). ``reasons`` says in words
    why a scale is what it is (``measure`` fills it).
    """
    reasons = reasons or {}
    parts = []
    for label in dict.fromkeys([*scale_by_migration, *seconds_by_migration]):
        staging_s = seconds_by_migration.get(label)
        scale = max(1.0, scale_by_migration.get(label, 1.0))
        base = untimed_s if staging_s is None else staging_s
        parts.append(Part(label, staging_s, scale, reasons.get(label, ""), base * scale))
    total = sum(p.seconds for p in parts) * margin
    return Estimate(max(total, floor_s), parts, margin, floor_s, untimed_s)


def scale_for(tables: set[str], prod: dict[str, TableSize], staging: dict[str, TableSize]) -> Scale:
    """max(1, prod/staging) for the largest touched table on prod (by size on disk).

    Rows are compared when both sides were analyzed, sizes on disk otherwise;
    staging's side never counts for less than ``ROW_FLOOR`` rows (or
    ``BYTES_FLOOR``), so a table absent, empty or tiny there does not turn
    milliseconds of fixed overhead into hours.
    """
    on_prod = [t for t in tables if t in prod]
    if not on_prod:
        return Scale(1.0)  # created by the set itself: nothing on prod to scale by
    table = max(on_prod, key=lambda t: (prod[t].bytes, t))
    big, small = prod[table], staging.get(table)
    if big.rows is not None and (small is None or small.rows is not None):
        return _row_scale(table, big.rows, None if small is None else small.rows)
    return _byte_scale(table, big.bytes, None if small is None else small.bytes)


def _row_scale(table: str, prod_rows: float, staging_rows: float | None) -> Scale:
    factor = prod_rows / max(staging_rows or 0, ROW_FLOOR)
    if factor <= 1:
        return Scale(1.0)
    if staging_rows is None:
        return Scale(factor, f"{table} is absent on staging, so prod's {prod_rows:,.0f} rows count against a "
                             f"{ROW_FLOOR:,}-row floor ({_times(factor)})")
    if staging_rows < ROW_FLOOR:
        return Scale(factor, f"{table} has {staging_rows:,.0f} rows on staging, so prod's {prod_rows:,.0f} count "
                             f"against a {ROW_FLOOR:,}-row floor ({_times(factor)})")
    return Scale(factor, f"{table} is {_times(factor)} larger on prod")


def _byte_scale(table: str, prod_bytes: int, staging_bytes: int | None) -> Scale:
    factor = prod_bytes / max(staging_bytes or 0, BYTES_FLOOR)
    if factor <= 1:
        return Scale(1.0)
    where = "absent on staging" if staging_bytes is None else "row counts unknown until both sides are analyzed"
    return Scale(factor, f"{table} is {_times(factor)} larger on prod by size on disk ({where})")


def staging_seconds(report: Report) -> dict[str, float]:
    """Seconds each migration took on staging, from the gate's ``migration.<label>`` checks.

    The sum of the statements' own timings is preferred to the migration's
    total: on staging the total also holds the trace's lock sampling and data
    pre-checks, which prod's deploy does not run.
    """
    found = {}
    for check in report.checks:
        if check.status is not Status.PASSED or not check.name.startswith("migration."):
            continue
        statements = check.details.get("statements") or []
        seconds = sum(float(s.get("seconds", 0.0)) for s in statements) if statements else check.details.get("seconds")
        if seconds is not None:
            found[check.migration or check.name.removeprefix("migration.")] = float(seconds)
    return found


def table_sizes(conn: psycopg.Connection, names: set[str]) -> dict[str, TableSize]:
    if not names:
        return {}
    found = rows(conn, SIZES_SQL, (sorted(names),))
    return {r["name"]: TableSize(None if r["rows"] is None else float(r["rows"]), int(r["bytes"])) for r in found}


def measure(prod_conn: psycopg.Connection, staging_conn: psycopg.Connection, migrations: list[Migration],
            report: Report, *, margin: float = MARGIN, floor_s: float = FLOOR_S) -> Estimate:
    """The estimate for deploying ``migrations`` (pending on prod), from the gate's ``report``.

    Staging has the set applied by the time this runs; tables the set creates
    are absent on prod and so never scale anything.
    """
    touched = {m.label: touched_tables([m]) for m in migrations}
    names: set[str] = set().union(*touched.values())
    prod, staging = table_sizes(prod_conn, names), table_sizes(staging_conn, names)
    scales = {label: scale_for(tables, prod, staging) for label, tables in touched.items()}
    timings = staging_seconds(report)
    return estimate({label: timings[label] for label in touched if label in timings},
                    {label: s.factor for label, s in scales.items()},
                    margin=margin, floor_s=floor_s, reasons={label: s.reason for label, s in scales.items()})


def duration(seconds: float) -> str:
    """Rounded up, in the unit a person plans with: "45 s", "14 min", "2 h 5 min"."""
    if seconds < 60:
        return f"{math.ceil(seconds)} s"
    minutes = math.ceil(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def _reasons(parts: list[Part], limit: int = 3) -> list[str]:
    """Distinct scale reasons, largest scale first; the rest summed up so the sentence stays short."""
    ranked = sorted((p for p in parts if p.reason), key=lambda p: -p.scale)
    distinct = list(dict.fromkeys(p.reason for p in ranked))
    more = len(distinct) - limit
    return distinct[:limit] + ([f"{more} more table{'s' if more > 1 else ''} larger on prod"] if more > 0 else [])


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _staging_seconds(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds < 1 else f"{seconds:.1f} s"


def _times(factor: float) -> str:
    return f"{factor:.1f}x" if factor < 10 else f"{factor:,.0f}x"
