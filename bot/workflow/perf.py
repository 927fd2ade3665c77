"""The regression gate: do prod's hottest queries get more expensive after the migrations?

Prod's ``pg_stat_statements`` names the queries that matter (by total time);
staging, a fresh copy of prod, plans each of them before and after the
pending migrations. Plans are generic (``plan_cache_mode =
force_generic_plan``), so the normalised ``$1`` texts need no real values
and no row data is ever read. A plan whose estimated cost grows by more than
``gate.perf_regression_pct`` (the runbook's 20%) fails the gate with both
plans' costs — a dropped index or a rewritten predicate shows up here before
it shows up in production latency.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import psycopg

from bot.pg import rows, scalar
from bot.workflow.report import Check, Status

TOP_QUERIES_SQL = """
SELECT queryid::text AS queryid, query, calls, total_exec_time
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND toplevel AND calls > 0
  AND query ~* '^\\s*(select|with|update|delete|insert)\\y'  -- \\y: a word boundary in PostgreSQL regexes
  AND query ~* '\\yfrom\\y'
  AND query !~* '\\y(pg_[a-z_]+|to_regclass|information_schema|migrate_bot)\\y'  -- catalogs and our own queries
ORDER BY total_exec_time DESC
LIMIT %s
"""
_PARAM = re.compile(r"\$(\d+)")


@dataclass(frozen=True)
class HotQuery:
    queryid: str
    query: str
    calls: int


def hot_queries(prod: psycopg.Connection, limit: int = 20) -> list[HotQuery] | None:
    """Prod's top queries by total time; None when pg_stat_statements is not installed there."""
    installed = scalar(prod, "SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'")
    if not installed:
        return None
    try:
        found = rows(prod, TOP_QUERIES_SQL, (limit,))
    except psycopg.Error:  # not preloaded: the view exists but cannot be read
        return None
    return [HotQuery(r["queryid"], r["query"], int(r["calls"])) for r in found]


def plan_cost(conn: psycopg.Connection, query: str) -> float | None:
    """The generic plan's total cost, or None when the query no longer plans (e.g. a dropped column)."""
    params = max((int(n) for n in _PARAM.findall(query)), default=0)
    args = f"({', '.join(['NULL'] * params)})" if params else ""
    try:
        with conn.transaction():  # a savepoint when called inside the migration's transaction
            conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            conn.execute(f"PREPARE migrate_bot_perf AS {query}")
            try:
                plan = scalar(conn, f"EXPLAIN (FORMAT JSON) EXECUTE migrate_bot_perf{args}")
            finally:
                conn.execute("DEALLOCATE migrate_bot_perf")
    except psycopg.Error:
        return None
    data = plan if isinstance(plan, list) else json.loads(plan)
    return float(data[0]["Plan"]["Total Cost"])


def baseline(conn: psycopg.Connection, queries: list[HotQuery]) -> dict[str, float | None]:
    return {q.queryid: plan_cost(conn, q.query) for q in queries}


def compare(conn: psycopg.Connection, queries: list[HotQuery], before: dict[str, float | None],
            threshold_pct: float) -> list[Check]:
    """One FAILED check per query whose plan got more than threshold_pct more expensive."""
    checks = []
    compared = 0
    for q in queries:
        old, new = before.get(q.queryid), plan_cost(conn, q.query)
        if old is None:
            continue
        short = " ".join(q.query.split())[:300]
        if new is None:
            checks.append(Check(f"perf.{q.queryid}", Status.FAILED,
                                f"a hot prod query ({q.calls} calls) no longer plans after the migrations: {short}",
                                details={"category": "perf-regression", "statement": short}))
            continue
        compared += 1
        growth = (new - old) / old * 100 if old > 0 else 0.0
        if growth > threshold_pct:
            checks.append(Check(
                f"perf.{q.queryid}", Status.FAILED,
                f"plan cost of a hot prod query ({q.calls} calls) grows {growth:.0f}% "
                f"({old:.1f} -> {new:.1f}; limit {threshold_pct:.0f}%): {short}",
                details={"category": "perf-regression", "statement": short, "before": old, "after": new}))
    if not checks:
        checks.append(Check("perf-regression", Status.PASSED,
                            f"{compared} hot prod queries planned on staging: none more than "
                            f"{threshold_pct:.0f}% more expensive after the migrations"))
    return checks


def unavailable() -> Check:
    return Check("perf-regression", Status.WARNING,
                 "pg_stat_statements is not available on prod, so hot queries could not be compared; "
                 "CREATE EXTENSION pg_stat_statements there (it needs shared_preload_libraries)")
