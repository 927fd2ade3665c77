"""The regression gate: do prod's hot statements get slower after the migrations? Measured, not estimated.

Which statements: prod's ``pg_stat_statements`` top statements by total time
with at least ``gate.perf_min_calls`` calls (``gate.perf_queries`` of them),
plus the statements pinned in ``perf/workload.sql`` beside the migrations
(``-- weight: N`` comments).

Two signals, on staging (a fresh copy of prod):

1. **Plan cost**, the fast first signal: each statement's generic plan
   (``plan_cache_mode = force_generic_plan``, no values needed) before and
   after the migrations. A statement that no longer plans fails; a cost
   growing more than ``gate.perf_regression_pct`` fails when the statement
   could not be measured.
2. **Measurement** (``gate.perf_measure``): staging is copied (``CREATE
   DATABASE … TEMPLATE``) before the migrations; the copy is "before",
   migrated staging is "after". Each statement runs with concrete values
   sampled from the data it touches (``bot.workflow.perfsample``), A/B
   interleaved under ``EXPLAIN (ANALYZE, BUFFERS, TIMING OFF)``, writes rolled
   back (``bot.workflow.perfmeasure``), and is judged on blocks and paired
   time ratios with a bootstrap interval (``bot.workflow.perfstats``). This
   sees what a plan cost cannot: triggers, foreign-key and CHECK work on
   writes, functions, row-level security, bloat after a backfill.

Verdicts, per statement, as ``perf-regression.<readable name>`` checks:
measurably slower, failing or cut off only after the migrations = FAILED; a
plan-shape change that is neither slower nor measurably faster = WARNING (a
new index doing its job passes, and the summary counts it); a statement that
cannot be given values = WARNING naming it (then only its plan cost counts).
``report.facts["perf_report_md"]`` holds the evidence (``perf_report.md``),
``report.facts["perf_seconds"]`` where the measurement's time went.

Privacy: sampled values exist only in memory for execution. Checks, the
report, logs and errors carry the normalised ``$1`` text, counts, names of
tables, columns, indexes and triggers, and SQLSTATEs — never a value or a
server message (which may quote one). ``pg_stat_statements_reset()`` is
never called: the view is shared with everyone who reads it.
"""

from __future__ import annotations

import json
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import psycopg
from psycopg import errors as pgerrors
from psycopg.conninfo import conninfo_to_dict

from bot.config import Gate, Settings
from bot.errors import MigrateBotError
from bot.migrations.source import Migration
from bot.pg import connection, rows, scalar, with_dbname
from bot.workflow import perfmeasure, perfplans, perfstats
from bot.workflow.perfparams import Shape, analyse, describe_missing, parse_workload, readable_name, runnable
from bot.workflow.perfreport import Outcome, markdown
from bot.workflow.perfsample import Catalog, parameter_sets
from bot.workflow.report import Check, Report, Status

TOP_QUERIES_SQL = """
SELECT queryid::text AS queryid, query, calls, total_exec_time
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND toplevel AND calls >= %s
  AND query ~* '^\\s*(select|with|update|delete|insert)\\y'  -- \\y: a word boundary in PostgreSQL regexes
  AND (query ~* '\\y(from|into)\\y' OR query ~* '^\\s*update\\y')  -- not `SELECT 1` / `SELECT $1`
  AND query !~* '\\y(pg_[a-z_]+|to_regclass|information_schema|migrate_bot)\\y'  -- catalogs and our own queries
ORDER BY total_exec_time DESC
LIMIT %s
"""
WARMUP_PAIRS = 2
WARM_ENOUGH_MS = 5.0  # a statement this slow needs no warm-up run on a new session: cold caches are noise to it
CHECK = "perf-regression"
_PARAM = re.compile(r"\$(\d+)")


@dataclass(frozen=True)
class HotQuery:
    queryid: str
    query: str  # normalised ($1 …): what reports show
    calls: int
    mean_ms: float | None = None
    source: str = "prod"  # "prod" | "workload"
    text: str = ""  # what runs, when it differs from `query` (a pinned statement's literals)

    @property
    def runs(self) -> str:
        return self.text or self.query


def hot_queries(prod: psycopg.Connection, limit: int = 20, min_calls: int = 1) -> list[HotQuery] | None:
    """Prod's top statements by total time with at least ``min_calls`` calls; None without pg_stat_statements."""
    installed = scalar(prod, "SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'")
    if not installed:
        return None
    try:
        found = rows(prod, TOP_QUERIES_SQL, (max(1, min_calls), limit))
    except psycopg.Error:  # not preloaded: the view exists but cannot be read
        return None
    return [HotQuery(r["queryid"], r["query"], int(r["calls"]),
                     float(r["total_exec_time"]) / int(r["calls"]) if r["calls"] else None) for r in found]


def plan_cost(conn: psycopg.Connection, query: str) -> float | None:
    """The generic plan's total cost, or None when the query no longer plans (e.g. a dropped column)."""
    for text in dict.fromkeys([query, runnable(query)]):
        params = max((int(n) for n in _PARAM.findall(text)), default=0)
        args = f"({', '.join(['NULL'] * params)})" if params else ""
        try:
            with conn.transaction():  # a savepoint when called inside the migration's transaction
                conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                conn.execute(f"PREPARE migrate_bot_perf AS {text}")
                try:
                    plan = scalar(conn, f"EXPLAIN (FORMAT JSON) EXECUTE migrate_bot_perf{args}")
                finally:
                    conn.execute("DEALLOCATE migrate_bot_perf")
        except psycopg.Error:
            continue
        data = plan if isinstance(plan, list) else json.loads(plan)
        return float(data[0]["Plan"]["Total Cost"])
    return None


def unavailable() -> Check:
    return Check(CHECK, Status.WARNING,
                 "pg_stat_statements is not available on prod, so hot queries could not be compared; "
                 "CREATE EXTENSION pg_stat_statements there (it needs shared_preload_libraries)")


def workload_file(settings: Settings, migrations: list[Migration] | None) -> Path | None:
    """``gate.perf_workload`` beside the migrations: the configured folder, or the folder the files came from."""
    name = settings.gate.perf_workload
    if not name:
        return None
    if Path(name).is_absolute():
        return Path(name)
    roots = [Path(settings.migrations.dir)]
    if migrations:
        common = Path(os.path.commonpath([str(Path(m.path).resolve().parent) for m in migrations]))
        roots = [common, common.parent]  # a Prisma-style layout keeps one folder per migration
    return next((root / name for root in roots if (root / name).is_file()), None)


def load_workload(path: Path | None) -> tuple[list[HotQuery], Check | None]:
    if path is None or not path.is_file():
        return [], None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [], Check(f"{CHECK}.workload", Status.WARNING, f"could not read {path} ({type(exc).__name__})")
    pinned, problem = parse_workload(text)
    if problem:
        return [], Check(f"{CHECK}.workload", Status.WARNING,
                         f"{path} was not used: {problem}; its statements were not measured")
    return [HotQuery(f"workload:{p.line}", p.display, p.weight, None, "workload", p.text) for p in pinned], None


class RegressionGate:
    """The regression gate of one validation: plan costs before, a before-copy, then the verdicts.

    validate.py calls, in order: ``plan_before(staging)`` (before the
    migrations), ``with before_copy(staging_url, report):`` around the apply
    (no other connection to staging may be open when it starts), and
    ``compare(staging, staging_url, report)`` once every migration applied.
    """

    def __init__(self, gate: Gate, hot: list[HotQuery] | None, workload: list[HotQuery],
                 notes: list[Check], maintenance_db: str = "postgres") -> None:
        self.gate = gate
        self.hot = hot
        self.statements = (hot or []) + workload
        self.notes = notes
        self.maintenance_db = maintenance_db
        self.baseline: dict[str, float | None] = {}
        self.copy_url: str | None = None  # set while the before-copy exists
        self.copied = False
        self.seconds: dict[str, float] = {}  # where the measurement's time went: copy, vacuum, runs

    @classmethod
    def for_run(cls, settings: Settings, hot: list[HotQuery] | None,
                migrations: list[Migration] | None) -> "RegressionGate":
        workload, note = ([], None)
        if settings.gate.perf_queries:
            workload, note = load_workload(workload_file(settings, migrations))
        return cls(settings.gate, hot, workload, [note] if note else [], settings.refresh.staging_maintenance_db)

    @property
    def enabled(self) -> bool:
        return bool(self.gate.perf_queries)

    def plan_before(self, staging: psycopg.Connection) -> None:
        self.baseline = {s.queryid: plan_cost(staging, s.runs) for s in self.statements}

    # -- the before-copy -------------------------------------------------------------------------

    @contextmanager
    def before_copy(self, staging_url: str, report: Report) -> Iterator[None]:
        """A copy of staging as it is now, for the measurement's "before" side; dropped on the way out."""
        wanted = self.enabled and self.gate.perf_measure and any(v is not None for v in self.baseline.values())
        if not wanted:
            yield
            return
        staging_db = str(conninfo_to_dict(staging_url).get("dbname") or "")
        maintenance = self.maintenance_db if self.maintenance_db != staging_db else "template1"
        maint_url = with_dbname(staging_url, maintenance)
        name = perfmeasure.copy_name(staging_db)
        attempted = False
        try:
            try:
                with connection(maint_url, env="staging", app_suffix="-perf") as maint:
                    for left in perfmeasure.drop_leftovers(maint, staging_db):
                        report.warning(f"{CHECK}.copy", f"dropped {left}, a before-copy an earlier validation "
                                       f"left behind (it was stopped before it could drop it)")
                    attempted = True
                    began = time.perf_counter()
                    perfmeasure.create_copy(maint, staging_db, name)
                    self.seconds["copy"] = time.perf_counter() - began
                self.copy_url, self.copied = with_dbname(staging_url, name), True
            except perfmeasure.CopyFailed as exc:
                report.warning(f"{CHECK}.copy", f"{exc}; this run compared plan costs only")
            except MigrateBotError as exc:
                report.warning(f"{CHECK}.copy", f"could not connect to staging's maintenance database {maintenance} "
                               f"to copy staging ({exc}); set refresh.staging_maintenance_db, or gate.perf_measure "
                               f"= false. This run compared plan costs only")
            yield
        finally:
            self.copy_url = None
            if attempted:
                self._drop(maint_url, name, report)

    @staticmethod
    def _drop(maint_url: str, name: str, report: Report) -> None:
        try:
            with connection(maint_url, env="staging", app_suffix="-perf") as maint:
                perfmeasure.drop_copy(maint, name)
        except (MigrateBotError, psycopg.Error) as exc:
            report.warning(f"{CHECK}.copy", f"could not drop the before-copy {name} "
                           f"({type(exc).__name__}): drop it by hand: DROP DATABASE {name} WITH (FORCE);")

    # -- after the migrations --------------------------------------------------------------------

    def compare(self, staging: psycopg.Connection, staging_url: str, report: Report) -> None:
        if not self.enabled:
            return
        report.extend(self.notes)
        if self.hot is None:
            report.add(unavailable())
        if not self.statements:
            return
        outcomes = [Outcome(s.queryid, s.query, s.runs, s.calls, s.source, mean_ms=s.mean_ms,
                            cost_before=self.baseline.get(s.queryid), cost_after=plan_cost(staging, s.runs))
                    for s in self.statements]
        if self.copy_url:
            try:
                self._measure(staging_url, [o for o in outcomes if None not in (o.cost_before, o.cost_after)])
            except (psycopg.Error, MigrateBotError) as exc:  # what was measured stands; the rest is judged on plans
                sqlstate = f", SQLSTATE {exc.sqlstate}" if isinstance(exc, psycopg.Error) and exc.sqlstate else ""
                report.warning(f"{CHECK}.measure", f"the measurement stopped ({type(exc).__name__}{sqlstate}); "
                               f"the statements not measured were judged on their plan costs")
        catalog = Catalog(staging)
        for o in outcomes:
            if o.shape is None:
                o.shape = analyse(o.run_text, catalog.columns_of)
            o.name = readable_name(o.shape if o.run_text == o.query else analyse(o.query, catalog.columns_of))
        checks = [self._check(o) for o in outcomes]
        report.extend([c for c in checks if c is not None])
        if not any(c.status is Status.FAILED for c in checks if c is not None):
            report.add(self._summary(outcomes))
        report.facts["perf_report_md"] = markdown(outcomes, self.gate.perf_regression_pct, self._method())
        if self.seconds:
            report.facts["perf_seconds"] = {k: round(v, 3) for k, v in self.seconds.items()}

    def _method(self) -> str:
        if not self.copied:
            why = "gate.perf_measure = false" if not self.gate.perf_measure else "staging could not be copied"
            return f"Plan costs only ({why}): generic plans on staging before and after the migrations."
        n = self.gate.perf_samples
        return (f"Staging, before = a copy taken before the migrations (`CREATE DATABASE … TEMPLATE`), after = "
                f"staging with them applied; `VACUUM (ANALYZE)` of the statements' tables on both. Each statement "
                f"runs with values sampled from the rows it touches: {WARMUP_PAIRS} warm-up pairs, then {n} pairs "
                f"of `EXPLAIN (ANALYZE, BUFFERS, TIMING OFF)`, interleaved A/B (alternating which side goes "
                f"first), writes rolled back; a timing-only failure is measured again with {2 * n} pairs, each "
                f"on a new pair of sessions (a long-lived session's CPU placement biases its timings). "
                f"Values are used for execution only and shown nowhere.")

    def _summary(self, outcomes: list[Outcome]) -> Check:
        measured = sum(1 for o in outcomes if o.numbers is not None and o.numbers.pairs)
        planned = sum(1 for o in outcomes if o.cost_before is not None) - measured
        quicker = sum(1 for o in outcomes if o.verdict == "faster")
        limit = f"{self.gate.perf_regression_pct:.0f}%"
        if measured:
            extra = f", {planned} planned only" if planned else ""
            gain = f"; {quicker} measurably faster with a new plan" if quicker else ""
            return Check(CHECK, Status.PASSED,
                         f"{_count(measured, 'hot statement')} measured before/after on staging "
                         f"({self.gate.perf_samples} paired runs each{extra}): none measurably slower "
                         f"(limit +{limit}){gain}")
        return Check(CHECK, Status.PASSED, f"{_count(planned, 'hot prod query', 'hot prod queries')} planned on "
                                           f"staging: none more than {limit} more expensive after the migrations")

    # -- measuring ---------------------------------------------------------------------------------

    def _measure(self, staging_url: str, todo: list[Outcome]) -> None:
        if not todo or not self.copy_url:
            return
        gate = self.gate
        with connection(self.copy_url, env="staging", app_suffix="-perf") as b_conn, \
                connection(staging_url, env="staging", app_suffix="-perf") as a_conn:
            catalog = Catalog(b_conn)
            for o in todo:
                o.shape = analyse(o.run_text, catalog.columns_of)
            named = [table for o in todo for table in (o.shape.tables if o.shape else ())]
            tables = list(dict.fromkeys((t.schema, t.name) for s, n in named if (t := catalog.table(s, n)) is not None))
            began = time.perf_counter()
            perfmeasure.vacuum_analyze(b_conn, tables)
            perfmeasure.vacuum_analyze(a_conn, tables)
            self.seconds["vacuum_analyze"] = time.perf_counter() - began
            catalog = Catalog(b_conn)  # again: VACUUM ANALYZE has just counted the pages sampling is sized by
            before_settings, after_settings = perfmeasure.session_settings(a_conn, gate.perf_statement_timeout_s)
            perfmeasure.apply_settings(b_conn, before_settings)
            perfmeasure.apply_settings(a_conn, after_settings)
            fresh = perfmeasure.Fresh(self.copy_url, staging_url, before_settings, after_settings)
            before, after = perfmeasure.Side("before", b_conn), perfmeasure.Side("after", a_conn)
            began = time.perf_counter()
            for i, o in enumerate(todo):
                try:
                    self._measure_one(before, after, fresh, catalog, o, f"migrate_bot_perf_{i}")
                finally:
                    before.deallocate()
                    after.deallocate()
            self.seconds["sample_and_run"] = time.perf_counter() - began

    def _measure_one(self, before: perfmeasure.Side, after: perfmeasure.Side, fresh: perfmeasure.Fresh,
                     catalog: Catalog, o: Outcome, handle: str) -> None:
        shape: Shape = o.shape  # type: ignore[assignment]
        n, pct = max(1, self.gate.perf_samples), self.gate.perf_regression_pct
        seed = int(shape.fingerprint[:8], 16) if re.fullmatch(r"[0-9a-f]{8,}", shape.fingerprint) else 7
        sets: list[list[str | None]] = [[]]
        if shape.params:
            sets, problem = parameter_sets(catalog, shape, WARMUP_PAIRS + 3 * n, seed)
            if not sets:
                o.note = f"it cannot be given values: {describe_missing(shape) if problem == 'missing' else problem}"
                return
        texts = [o.run_text, runnable(o.run_text)]
        for side in (before, after):
            state = side.prepare(handle, texts)
            if state:
                o.note = f"it does not run on the {side.label} side ({_condition(state)})"
                return
        first = perfmeasure.ab_runs(before, after, handle, sets, n, WARMUP_PAIRS)
        numbers = perfstats.summarise(first.pairs, seed)
        verdict = perfstats.verdict(numbers, pct)
        plans = first.plans
        if verdict == "slower-timing":  # timing alone: once more, twice the pairs, each on new sessions
            warmup = 1 if numbers.ms_before < WARM_ENOUGH_MS else 0  # a new backend's first run: cold caches
            again = perfmeasure.fresh_ab_runs(fresh, handle, texts, sets, 2 * n, offset=WARMUP_PAIRS + n,
                                              warmup=warmup)
            o.first, numbers = numbers, perfstats.summarise(again.pairs, seed + 1)
            verdict = perfstats.verdict(numbers, pct)
            verdict = "slower" if verdict in ("slower", "slower-timing") else verdict
            plans = again.plans if again.plans != (None, None) else plans
        o.numbers, o.verdict, o.plans = numbers, verdict, plans
        if verdict == "unmeasured":
            o.note = (f"only {numbers.pairs} of {n} pairs of runs finished on both sides "
                      f"({numbers.errors_before + numbers.timeouts_before} before and "
                      f"{numbers.errors_after + numbers.timeouts_after} after did not)")
        self._explain(o, before.conn)

    def _explain(self, o: Outcome, before: psycopg.Connection) -> None:
        """The likely cause of a slower statement, and whether a plan changed without slowing down."""
        b_plan, a_plan = o.plans
        if not (b_plan and a_plan and o.numbers is not None and o.verdict in ("slower", "same")):
            return
        changed = perfplans.shape(b_plan) != perfplans.shape(a_plan)
        if o.verdict == "same" and changed:  # a new plan that is measurably faster is what a new index is for
            o.verdict = "faster" if perfstats.faster(o.numbers) else "plan-changed"
        if o.verdict in ("same", "faster"):
            return
        indexes = perfmeasure.index_columns(before, list(perfplans.index_uses(b_plan)))
        columns = {index: found[0] for index, found in indexes.items()}
        o.cause = perfplans.likely_cause(b_plan, a_plan, o.numbers.blocks_ratio, self.gate.perf_regression_pct,
                                         columns, _compared(o.shape) if o.shape else {})
        if o.cause.index:
            o.index_ddl = indexes.get(o.cause.index, ([], ""))[1]

    # -- checks --------------------------------------------------------------------------------------

    def _check(self, o: Outcome) -> Check | None:
        name, pct = f"{CHECK}.{o.name}", self.gate.perf_regression_pct
        base = {"category": "perf-regression", "statement": o.query, "calls": o.calls, "source": o.source}
        if o.cost_before is None:
            o.verdict = "not-measured"
            o.note = o.note or "it does not plan on staging before the migrations"
            return Check(name, Status.WARNING, f"a hot statement ({o.calls_text}) was not compared: {o.note}",
                         details=base)
        if o.cost_after is None:
            o.verdict = "no-plan"
            return Check(name, Status.FAILED, f"a hot statement ({o.calls_text}) no longer plans after the migrations",
                         details=dict(base, rule="no-plan", table=_first_table(o)))
        growth = (o.cost_after - o.cost_before) / o.cost_before * 100 if o.cost_before > 0 else 0.0
        cost = f"plan cost {o.cost_before:.1f} -> {o.cost_after:.1f} ({growth:+.0f}%)"
        n = o.numbers
        if o.verdict in ("slower", "fails-after", "cut-off-after") and n is not None:
            return Check(name, Status.FAILED, self._failed_message(o, cost), details=self._details(o, base, cost))
        if o.verdict == "plan-changed" and n is not None:
            b, a = o.plans
            return Check(name, Status.WARNING,
                         f"plan changed ({perfplans.describe(b or {})} -> {perfplans.describe(a or {})}) but not "
                         f"measurably slower ({o.calls_text}): {perfstats.describe(n)}; {cost}",
                         details=self._details(o, base, cost))
        if o.verdict in ("same", "faster"):
            return None
        # not measured: the plan cost decides, and why it was not measured is said
        if growth > pct:
            o.verdict = "cost"
            why = f"; not measured: {o.note}" if o.note else ""
            return Check(name, Status.FAILED,
                         f"plan cost of a hot statement ({o.calls_text}) grows {growth:.0f}% "
                         f"({o.cost_before:.1f} -> {o.cost_after:.1f}; limit {pct:.0f}%){why}",
                         details=dict(base, before=o.cost_before, after=o.cost_after, rule="plan-cost",
                                      table=_first_table(o)))
        if o.note:
            o.verdict = "not-measured"
            return Check(name, Status.WARNING, f"a hot statement ({o.calls_text}) was not measured: {o.note}; "
                         f"its {cost} is within the limit", details=base)
        o.verdict = "planned"
        return None

    def _failed_message(self, o: Outcome, cost: str) -> str:
        n = o.numbers
        assert n is not None
        if o.verdict == "fails-after":
            return (f"a hot statement ({o.calls_text}) fails after the migrations but not before: "
                    f"{_condition(n.after_error)} in {n.errors_after} of {n.pairs + n.errors_after} runs")
        if o.verdict == "cut-off-after":
            before = f"{n.ms_before:.3f} ms before" if n.pairs else "finished before"
            return (f"a hot statement ({o.calls_text}) is cut off by the {self.gate.perf_statement_timeout_s:g} s "
                    f"statement timeout after the migrations ({n.timeouts_after} runs; {before})")
        b, a = o.plans
        plan = ""
        if b and a:
            old, new = perfplans.describe(b), perfplans.describe(a)
            plan = f"; plan {old} -> {new}" if old != new else f"; same plan ({new})"
        cause = f"; likely cause: {o.cause.why}" if o.cause else ""
        return (f"measurably slower after the migrations ({o.calls_text}): {perfstats.describe(n, o.first is not None)}"
                f" (limit +{self.gate.perf_regression_pct:.0f}%){plan}; {cost}{cause}")

    @staticmethod
    def _details(o: Outcome, base: dict, cost: str) -> dict:
        details = dict(base, before=o.cost_before, after=o.cost_after, verdict=o.verdict)
        n = o.numbers
        if n is not None and n.pairs:
            details.update(blocks_before=n.blocks_before, blocks_after=n.blocks_after, ms_before=n.ms_before,
                           ms_after=n.ms_after, ratio=round(n.ratio, 3), ci=[round(n.low, 3), round(n.high, 3)],
                           pairs=n.pairs)
        if o.verdict == "fails-after" and n is not None:
            details.update(rule="fails-after", sqlstate=n.after_error, table=_first_table(o))
        elif o.verdict == "cut-off-after":
            details.update(rule="timeout", table=_first_table(o))
        c = o.cause
        if c is not None:
            details.update(rule=c.rule, table=c.table, column=c.column, cause=c.why)
            if c.index:
                details.update(index=c.index, indexdef=o.index_ddl)
            if c.triggers:
                details["triggers"] = list(c.triggers)
            if c.constraint:
                details["constraint"] = c.constraint
        return {k: v for k, v in details.items() if v not in (None, "")}


def _count(n: int, one: str, many: str = "") -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def _first_table(o: Outcome) -> str:
    return o.shape.tables[0][1] if o.shape and o.shape.tables else ""


def _compared(shape: Shape) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for target in shape.targets.values():
        s = target.source
        if s and s.column and target.kind not in ("set", "insert") and s.column not in found.get(s.table, []):
            found.setdefault(s.table, []).append(s.column)
    return found


def _condition(sqlstate: str) -> str:
    """``NotNullViolation (SQLSTATE 23502)``: the condition, never the server's message (it may quote values)."""
    try:
        return f"{pgerrors.lookup(sqlstate).__name__} (SQLSTATE {sqlstate})"
    except KeyError:
        return f"SQLSTATE {sqlstate}"

