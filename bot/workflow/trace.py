"""Staging trace: what each statement really did, measured on production-sized data.

Static rules guess; the trace watches (eugene's idea, run on staging — a fresh
copy of prod — instead of an empty database). Around every statement the
applier runs it records, on the migration's own connection:

* the locks it took on tables that existed before the migration started (its
  own backend's ``pg_locks``; a statement of a no-transaction file runs in a
  one-statement transaction of its own when traced — see the applier's
  ``_execute_alone`` — so its locks are read the same way; only the ones
  PostgreSQL refuses in a transaction block, like CONCURRENTLY, are sampled
  from a side connection while they run);
* how long each read/write-blocking lock was held: from the statement that
  took it to the end of its transaction (``finished``), or for a statement
  run on its own, the statement's own duration — minus the trace's own time;
* ``relfilenode`` of the touched tables and their indexes, before and after: a
  change is a real rewrite, whatever the static rules predicted;
* rows and size of the touched tables, durations, and for CONCURRENTLY index
  builds the index's validity afterwards.

Verdicts (all added to the report; the trace never clears a static blocker):

* a rewrite of an existing non-empty table or of its indexes under a lock that
  blocks writes is a BLOCKER however fast it was here — production only grows,
  and a rewrite's time, disk and WAL grow with it (``trace.rewrite``);
* any other read/write-blocking lock on an existing table held longer than
  ``gate.lock_budget_s`` is a BLOCKER (``trace.lock-held``); so are a
  transaction over ``gate.transaction_budget_s`` (``trace.transaction-time``)
  and a migration over ``gate.migration_budget_s`` (``trace.migration-time``);
* a type change PostgreSQL did *not* rewrite is a WARNING with the evidence,
  never a blocker (``trace.type-change``); a CONCURRENTLY index is PASSED when valid
  (``trace.concurrent-index``); one summary per migration (``trace.<label>``).

Data pre-checks (``bot.workflow.precheck``) run first in ``before()``, so both
plug into the applier as one ``StatementHooks``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import pglast
import psycopg
from pglast import ast, enums
from pglast.parser import ParseError
from pglast.stream import RawStream
from psycopg.conninfo import make_conninfo
from psycopg.pq import TransactionStatus

from bot.config import Gate
from bot.migrations.source import Migration, Statement
from bot.pg import rows, scalar
from bot.workflow.precheck import DataPrechecks, _primary_key, bounded, q
from bot.workflow.report import Check, Status

LOCK_MODES = ("AccessShareLock", "RowShareLock", "RowExclusiveLock", "ShareUpdateExclusiveLock", "ShareLock",
              "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock")
BLOCKS_WRITES = frozenset(LOCK_MODES[4:])  # conflict with RowExclusiveLock (INSERT/UPDATE/DELETE)
BLOCKS_READS = frozenset({"AccessExclusiveLock"})  # conflicts with AccessShareLock (SELECT)
COUNT_CAP = 1_000_000
AT = enums.AlterTableType

_INDEXES = """COALESCE((SELECT json_object_agg(i.relname, i.relfilenode) FROM pg_index x
                        JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = c.oid), '{}') AS indexes"""
SNAPSHOT_SQL = f"""
SELECT c.oid, c.oid::regclass::text AS name, c.relfilenode, c.reltuples, {_INDEXES}
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'migrate_bot')
  AND n.nspname !~ '^pg_(toast|temp)'"""
NODES_SQL = f"SELECT c.oid, c.relfilenode, {_INDEXES} FROM pg_class c WHERE c.oid = ANY (%s::oid[])"
LOCKS_SQL = ("SELECT relation::bigint AS oid, mode FROM pg_locks "
             "WHERE pid = %s AND locktype = 'relation' AND granted AND relation IS NOT NULL")

Lock = tuple[int, str]  # (table oid, mode)


def strength(mode: str) -> int:
    return LOCK_MODES.index(mode) if mode in LOCK_MODES else -1


def blocks(mode: str) -> str:
    return "blocks reads and writes" if mode in BLOCKS_READS else "blocks writes"


def human_bytes(n: int | None) -> str:
    if n is None:
        return "size unknown"
    size = float(n)
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{int(size)} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} bytes"


@lru_cache(maxsize=256)
def _parse(text: str) -> ast.Node | None:
    try:
        return pglast.parse_sql(text)[0].stmt
    except (ParseError, IndexError):
        return None


def _concurrently(stmt: Statement) -> bool:
    node = _parse(stmt.sql)
    if isinstance(node, ast.ReindexStmt):
        return any(getattr(p, "defname", "") == "concurrently" for p in node.params or ())
    return bool(getattr(node, "concurrent", False))


def _rel_text(rv: ast.RangeVar) -> str:
    """A RangeVar as text for to_regclass (without ONLY)."""
    return ".".join(q(p) for p in (rv.schemaname, rv.relname) if p)


def _type_changes(stmt: Statement) -> tuple[ast.RangeVar | None, list[tuple[str, str]]]:
    """(table, [(column, new type)]) of an ALTER TABLE … ALTER COLUMN … TYPE."""
    node = _parse(stmt.sql)
    if not isinstance(node, ast.AlterTableStmt):
        return None, []
    changes = [(c.name, RawStream()(c.def_.typeName)) for c in node.cmds or ()
               if c.subtype == AT.AT_AlterColumnType and isinstance(c.def_, ast.ColumnDef)]
    return node.relation, changes


@dataclass
class _Table:
    """An existing table, as of the last statement that touched it."""

    oid: int
    name: str
    relfilenode: int
    indexes: dict[str, int]
    reltuples: float


@dataclass
class _Hold:
    oid: int
    mode: str
    stmt: Statement
    started: float  # perf_counter when the statement that took it started
    overhead: float  # the trace's own seconds spent before then (subtracted from holds)
    seconds: float = 0.0


@dataclass
class _Attempt:
    """One attempt at one migration (a lock-timeout retry starts a new one)."""

    migration: Migration
    tables: dict[int, _Table]
    overhead: float = 0.0
    first: tuple[float, float] | None = None  # (start, overhead) of the first statement
    stmt_start: tuple[float, float] = (0.0, 0.0)
    last_end: tuple[float, float] = (0.0, 0.0)
    in_tx: bool = False
    tx: tuple[float, float] | None = None  # (start, overhead) of the open transaction
    baseline: set[Lock] = field(default_factory=set)
    open: dict[Lock, _Hold] = field(default_factory=dict)
    closed: list[_Hold] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # rewrites that were not blockers
    blocked: set[int] = field(default_factory=set)  # tables with a rewrite blocker
    blockers: int = 0
    durations: list[tuple[Statement, float]] = field(default_factory=list)
    sampler: "_LockSampler | None" = None
    index: tuple[int, str, set[int]] | None = None  # concurrent build: (table oid, name, index oids before)
    last_before: Statement | None = None


def _statement_by_statement(migration: Migration) -> bool:
    """A no-transaction file: the applier runs each statement alone (and retries just that one)."""
    return migration.no_transaction and not migration.own_transaction


class _LockSampler:
    """Samples another backend's relation locks from a side connection while an autocommit statement runs."""

    def __init__(self, conn: psycopg.Connection, interval_s: float) -> None:
        self.found: set[Lock] = set()
        self._conn, self._pid, self._interval = conn, conn.info.backend_pid, interval_s
        self._stop = threading.Event()
        info = conn.info
        self._side = psycopg.connect(make_conninfo(info.dsn, password=info.password or None,
                                                   application_name="migrate-bot-trace"), autocommit=True)
        self._thread = threading.Thread(target=self._run, name="migrate-bot-lock-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set() and not self._conn.closed:
                for oid, mode in self._side.execute(LOCKS_SQL, (self._pid,)).fetchall():
                    self.found.add((int(oid), mode))
                self._stop.wait(self._interval)
        except psycopg.Error:
            pass
        finally:
            self._side.close()

    def stop(self) -> set[Lock]:
        self._stop.set()
        self._thread.join(timeout=10)
        return set(self.found)


class StagingTrace:
    """StatementHooks for the staging gate: data pre-checks, then locks, rewrites and durations."""

    def __init__(self, gate: Gate, prechecks: DataPrechecks | None = DataPrechecks(), *,
                 sample_interval_s: float = 0.02) -> None:
        self.gate = gate
        self.prechecks = prechecks
        self.sample_interval_s = sample_interval_s
        self._a: _Attempt | None = None
        self._broken: str | None = None  # label of a migration the trace gave up on

    # -- StatementHooks ---------------------------------------------------------------
    def before(self, conn: psycopg.Connection, migration: Migration, stmt: Statement) -> list[Check]:
        first = next((s for s in migration.statements if not s.transaction_control), None)
        if stmt == first or self._broken != migration.label:
            self._broken = None
        return self._guard(migration, self._before, conn, migration, stmt)

    def after(self, conn: psycopg.Connection, migration: Migration, stmt: Statement, seconds: float) -> list[Check]:
        return self._guard(migration, self._after, conn, migration, stmt, seconds)

    def finished(self, conn: psycopg.Connection, migration: Migration) -> list[Check]:
        return self._guard(migration, self._finished, conn, migration)

    def _guard(self, migration: Migration, hook: Any, *args: Any) -> list[Check]:
        """A bug in the trace must not take the gate down: say so, and stop tracing this migration.

        Database errors still propagate — inside the migration's transaction
        they have already aborted it, and the applier reports them.
        """
        if self._broken == migration.label:
            return []
        try:
            return hook(*args)
        except psycopg.Error:
            raise
        except Exception as exc:  # noqa: BLE001
            if self._a is not None:
                self._stop_sampler(self._a)
            self._a, self._broken = None, migration.label
            return [Check("trace.error", Status.WARNING,
                          f"{migration.label}: the staging trace stopped for this migration ({type(exc).__name__}: "
                          f"{exc}); its statements still ran and were checked by the applier",
                          migration=migration.label)]

    def _before(self, conn: psycopg.Connection, migration: Migration, stmt: Statement) -> list[Check]:
        t0 = time.perf_counter()
        in_tx = conn.info.transaction_status == TransactionStatus.INTRANS
        a = self._a
        # an autocommit lock-timeout retry of the same statement: keep the state, do not repeat the pre-checks
        retry = (a is not None and a.migration.label == migration.label and _statement_by_statement(migration)
                 and a.last_before == stmt)
        first = next((s for s in migration.statements if not s.transaction_control), None)
        if not retry and (a is None or a.migration.label != migration.label or stmt == first):
            self._begin(conn, migration)
        a = self._a
        assert a is not None
        out: list[Check] = []
        a.in_tx = in_tx
        if not a.in_tx and a.tx:  # the file's own COMMIT ended a transaction since the last statement
            out += self._close_tx(conn, a, *a.last_end)
        a.last_before = stmt
        if self.prechecks and not retry:
            out += self.prechecks.run(conn, migration, stmt)
        a.index = self._index_before(conn, stmt)
        if a.in_tx:
            a.baseline = self._locks(conn, a)
        else:
            self._stop_sampler(a)
            a.sampler = self._sampler(conn)
        end = time.perf_counter()
        a.overhead += end - t0
        a.stmt_start = (end, a.overhead)
        a.first = a.first or a.stmt_start
        if a.in_tx and (a.tx is None or _statement_by_statement(migration)):
            a.tx = a.stmt_start  # run on its own: this statement's transaction, even after a failed attempt
        return self._count(a, out)

    def _after(self, conn: psycopg.Connection, migration: Migration, stmt: Statement, seconds: float) -> list[Check]:
        a = self._a
        if a is None or a.migration.label != migration.label:
            return []
        t0 = time.perf_counter()
        a.durations.append((stmt, seconds))
        if a.in_tx:
            locks = self._locks(conn, a)
            taken = locks - a.baseline
            for oid, mode in sorted(taken - a.open.keys()):
                a.open[(oid, mode)] = _Hold(oid, mode, stmt, *a.stmt_start)
            touched = {oid for oid, _ in locks}
        else:
            locks = {lk for lk in self._stop_sampler(a) if lk[0] in a.tables}
            if a.index and a.index[0] in a.tables and not any(oid == a.index[0] for oid, _ in locks):
                locks.add((a.index[0], "ShareUpdateExclusiveLock"))  # what CONCURRENTLY takes, if too fast to sample
            touched = set(a.tables)  # the sampler may miss a fast statement's locks; compare them all
        modes: dict[int, str] = {}
        for oid, mode in locks:
            if strength(mode) > strength(modes.get(oid, "")):
                modes[oid] = mode
        out = self._rewrites(conn, a, stmt, seconds, touched, modes)
        out += self._concurrent_index(conn, a, stmt, seconds)
        if not a.in_tx:
            holds = [_Hold(oid, mode, stmt, *a.stmt_start, seconds=seconds) for oid, mode in sorted(locks)]
            a.closed += holds
            out += self._lock_verdicts(conn, a, holds, "for the statement's own duration (autocommit)")
        end = time.perf_counter()
        a.overhead += end - t0
        a.last_end = (end, a.overhead)
        if a.in_tx and _statement_by_statement(migration):  # the applier commits its one-statement transaction now
            out += self._close_tx(conn, a, end, a.overhead)
        return self._count(a, out)

    def _finished(self, conn: psycopg.Connection, migration: Migration) -> list[Check]:
        a = self._a
        if a is None or a.migration.label != migration.label:
            return []
        t0 = time.perf_counter()
        self._stop_sampler(a)
        out = self._close_tx(conn, a, t0, a.overhead) if a.tx else []
        total = t0 - a.first[0] - (a.overhead - a.first[1]) if a.first else 0.0
        if total > self.gate.migration_budget_s:
            out.append(self._budget_check(a, "migration-time", "migration", total, self.gate.migration_budget_s))
        self._count(a, out)
        out.append(self._summary(a, total))
        self._a = None
        return out

    # -- bookkeeping ------------------------------------------------------------------
    def _begin(self, conn: psycopg.Connection, migration: Migration) -> None:
        if self._a is not None:
            self._stop_sampler(self._a)
        tables = {r["oid"]: _Table(r["oid"], r["name"], r["relfilenode"], dict(r["indexes"]), r["reltuples"])
                  for r in rows(conn, SNAPSHOT_SQL)}
        self._a = _Attempt(migration, tables)

    def _locks(self, conn: psycopg.Connection, a: _Attempt) -> set[Lock]:
        found = rows(conn, LOCKS_SQL, (conn.info.backend_pid,))
        return {(int(r["oid"]), r["mode"]) for r in found if int(r["oid"]) in a.tables}

    def _sampler(self, conn: psycopg.Connection) -> _LockSampler | None:
        try:
            return _LockSampler(conn, self.sample_interval_s)
        except psycopg.Error:
            return None  # no side connection (e.g. no free slot): rewrites are still seen by relfilenode

    @staticmethod
    def _stop_sampler(a: _Attempt) -> set[Lock]:
        sampler, a.sampler = a.sampler, None
        return sampler.stop() if sampler else set()

    @staticmethod
    def _count(a: _Attempt, checks: list[Check]) -> list[Check]:
        a.blockers += sum(1 for c in checks if c.status is Status.BLOCKER and c.name.startswith("trace."))
        return checks

    def _numbers(self, conn: psycopg.Connection, table: _Table) -> dict[str, Any]:
        """Rows (estimate when analyzed, else a bounded count) and total size of a table."""
        out: dict[str, Any] = {"rows": None, "rows_estimated": table.reltuples > 0, "bytes": None}
        try:
            with bounded(conn, 10.0):
                out["bytes"] = scalar(conn, "SELECT pg_total_relation_size(%s)", (table.oid,))
                if table.reltuples > 0:
                    out["rows"] = int(table.reltuples)
                else:
                    n = scalar(conn, f"SELECT count(*) FROM (SELECT 1 FROM {table.name} LIMIT {COUNT_CAP + 1}) s")
                    out["rows"] = f"more than {COUNT_CAP}" if n > COUNT_CAP else int(n)
        except psycopg.Error:
            pass
        return out

    @staticmethod
    def _describe(numbers: dict[str, Any]) -> str:
        rows_ = numbers["rows"]
        if rows_ is None:
            shown = "rows unknown"
        else:
            shown = f"~{rows_} rows" if numbers["rows_estimated"] else f"{rows_} rows"
        return f"{shown}, {human_bytes(numbers['bytes'])}"

    # -- rewrites and type changes ----------------------------------------------------
    def _rewrites(self, conn: psycopg.Connection, a: _Attempt, stmt: Statement, seconds: float, touched: set[int],
                  modes: dict[int, str]) -> list[Check]:
        if not touched:
            return []
        current = {r["oid"]: r for r in rows(conn, NODES_SQL, (sorted(touched),))}
        relation, changes = _type_changes(stmt)
        typed = scalar(conn, "SELECT to_regclass(%s)::oid", (_rel_text(relation),)) if changes else None
        out: list[Check] = []
        for oid in sorted(touched):
            table, now = a.tables[oid], current.get(oid)
            if now is None:
                continue  # dropped
            old_node, old_indexes = table.relfilenode, table.indexes
            table.relfilenode, table.indexes = now["relfilenode"], dict(now["indexes"])
            table_rewritten = bool(old_node and now["relfilenode"] and now["relfilenode"] != old_node)
            indexes = sorted(n for n, node in old_indexes.items() if n in table.indexes and table.indexes[n] != node)
            if stmt.kind == "TruncateStmt":
                continue  # a new empty file, not a copy of the data
            mode = modes.get(oid) or ("ShareUpdateExclusiveLock" if _concurrently(stmt) else "AccessExclusiveLock")
            if table_rewritten or indexes:
                out += self._rewrite(conn, a, stmt, seconds, table, mode, (old_node, now["relfilenode"]),
                                     table_rewritten, indexes)
            elif oid == typed:
                out.append(self._no_rewrite(a, stmt, seconds, table, mode, changes))
        return out

    def _rewrite(self, conn: psycopg.Connection, a: _Attempt, stmt: Statement, seconds: float, table: _Table,
                 mode: str, nodes: tuple[int, int], table_rewritten: bool, indexes: list[str]) -> list[Check]:
        what = ("table" if table_rewritten else "") + (" and " if table_rewritten and indexes else "")
        what += f"index{'es' if len(indexes) > 1 else ''} {', '.join(indexes)}" if indexes else ""
        numbers = self._numbers(conn, table)
        if mode not in BLOCKS_WRITES:
            a.notes.append(f"{table.name} ({what}) rebuilt online under {mode} at line {stmt.line}")
            return []
        if numbers["rows"] == 0:
            a.notes.append(f"empty {table.name} ({what}) rewritten at line {stmt.line}")
            return []
        a.blocked.add(table.oid)
        label = a.migration.label
        message = (f"{label} line {stmt.line} rewrote {table.name} ({what}) under {mode}: "
                   f"{self._describe(numbers)}, {seconds:.2f}s on staging"
                   + (f" (relfilenode {nodes[0]} → {nodes[1]})" if table_rewritten else "")
                   + f". That lock {blocks(mode)} for the whole rewrite, and production only grows: "
                   "the rewrite's time, disk and WAL grow with the table")
        details = {"category": "unsafe-migration", "rule": "rewrite", "table": table.name, "statement": stmt.sql[:500],
                   "line": stmt.line, "path": a.migration.path, "lock_mode": mode, "seconds": round(seconds, 4),
                   "rows": numbers["rows"], "bytes": numbers["bytes"], "table_rewritten": table_rewritten,
                   "indexes_rebuilt": indexes, "relfilenode_before": nodes[0], "relfilenode_after": nodes[1],
                   "fix": rewrite_fix(stmt, table.name, mode, _primary_key(conn, table.oid))}
        return [Check("trace.rewrite", Status.BLOCKER, message, migration=label, details=details)]

    def _no_rewrite(self, a: _Attempt, stmt: Statement, seconds: float, table: _Table, mode: str,
                    changes: list[tuple[str, str]]) -> Check:
        cols = ", ".join(f"{q(col)} TYPE {typ}" for col, typ in changes)
        message = (f"{a.migration.label} line {stmt.line}: ALTER COLUMN {cols} did not rewrite {table.name} "
                   f"(relfilenode {table.relfilenode} unchanged, indexes kept) — a catalog-only change here, "
                   f"{mode} for {seconds:.2f}s; not a blocker, but the lock still queues behind long queries on "
                   "prod: the deploy's lock_timeout and retries cover that")
        return Check("trace.type-change", Status.WARNING, message, migration=a.migration.label,
                     details={"table": table.name, "column": ", ".join(c for c, _ in changes), "line": stmt.line,
                              "statement": stmt.sql[:500], "relfilenode": table.relfilenode, "lock_mode": mode,
                              "seconds": round(seconds, 4), "rewrite": False})

    # -- CONCURRENTLY index builds ----------------------------------------------------
    def _index_before(self, conn: psycopg.Connection, stmt: Statement) -> tuple[int, str, set[int]] | None:
        node = _parse(stmt.sql)
        if not isinstance(node, ast.IndexStmt) or not node.concurrent:
            return None
        oid = scalar(conn, "SELECT to_regclass(%s)::oid", (_rel_text(node.relation),))
        if oid is None:
            return None
        found = rows(conn, "SELECT indexrelid::bigint AS oid FROM pg_index WHERE indrelid = %s", (oid,))
        return int(oid), node.idxname or "", {int(r["oid"]) for r in found}

    def _concurrent_index(self, conn: psycopg.Connection, a: _Attempt, stmt: Statement,
                          seconds: float) -> list[Check]:
        if a.index is None:
            return []
        table_oid, name, before = a.index
        a.index = None
        found = rows(conn, """SELECT i.oid::bigint AS oid, i.relname, x.indisvalid, x.indisready FROM pg_index x
                              JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = %s""", (table_oid,))
        mine = [r for r in found if (r["relname"] == name if name else int(r["oid"]) not in before)]
        table_name = scalar(conn, "SELECT %s::oid::regclass::text", (table_oid,))
        table = a.tables.get(table_oid) or _Table(table_oid, table_name, 0, {}, -1)
        numbers = self._numbers(conn, table)
        out = []
        for r in mine:
            valid = bool(r["indisvalid"] and r["indisready"])
            details = {"table": table.name, "index": r["relname"], "statement": stmt.sql[:500], "line": stmt.line,
                       "seconds": round(seconds, 4), "valid": valid, "rows": numbers["rows"], "bytes": numbers["bytes"]}
            where = f"{a.migration.label} line {stmt.line}: {r['relname']} built concurrently on {table.name}"
            if valid:
                out.append(Check("trace.concurrent-index", Status.PASSED,
                                 f"{where} in {seconds:.2f}s ({self._describe(numbers)}); valid and ready",
                                 migration=a.migration.label, details=details))
            else:
                details.update(category="unsafe-migration", rule="concurrent-index", path=a.migration.path,
                               fix=f"DROP INDEX CONCURRENTLY IF EXISTS {q(r['relname'])};\n-- fix the cause, "
                                   f"then build it again:\n{stmt.sql.rstrip(';')};")
                out.append(Check("trace.concurrent-index", Status.BLOCKER,
                                 f"{where} but is INVALID afterwards (indisvalid={r['indisvalid']}, "
                                 f"indisready={r['indisready']}): queries cannot use it and every write maintains it",
                                 migration=a.migration.label, details=details))
        return out

    # -- lock holds and budgets -------------------------------------------------------
    def _close_tx(self, conn: psycopg.Connection, a: _Attempt, end: float, end_overhead: float) -> list[Check]:
        holds = list(a.open.values())
        for h in holds:
            h.seconds = max(0.0, end - h.started - (end_overhead - h.overhead))
        a.closed += holds
        a.open = {}
        out = self._lock_verdicts(conn, a, holds, "until the end of its transaction")
        assert a.tx is not None
        seconds = max(0.0, end - a.tx[0] - (end_overhead - a.tx[1]))
        a.tx = None
        if seconds > self.gate.transaction_budget_s:
            budget = self.gate.transaction_budget_s
            out.append(self._budget_check(a, "transaction-time", "transaction", seconds, budget))
        return out

    def _lock_verdicts(self, conn: psycopg.Connection, a: _Attempt, holds: list[_Hold], until: str) -> list[Check]:
        budget = self.gate.lock_budget_s
        worst: dict[int, _Hold] = {}
        for h in holds:
            if h.mode not in BLOCKS_WRITES or h.oid in a.blocked or h.seconds <= budget:
                continue
            if h.oid not in worst or strength(h.mode) > strength(worst[h.oid].mode):
                worst[h.oid] = h
        out = []
        for h in worst.values():
            table = a.tables[h.oid]
            numbers = self._numbers(conn, table)
            message = (f"{a.migration.label}: {h.mode} on {table.name} held {h.seconds:.2f}s (budget {budget:g}s), "
                       f"from line {h.stmt.line} {until} — it {blocks(h.mode)} on {table.name} "
                       f"({self._describe(numbers)}) for that long")
            details = {"category": "unsafe-migration", "rule": "lock-held", "table": table.name,
                       "statement": h.stmt.sql[:500], "line": h.stmt.line, "path": a.migration.path,
                       "lock_mode": h.mode, "seconds": round(h.seconds, 4), "budget_s": budget,
                       "rows": numbers["rows"], "bytes": numbers["bytes"], "fix": lock_fix(table.name, h.mode)}
            out.append(Check("trace.lock-held", Status.BLOCKER, message, migration=a.migration.label, details=details))
        return out

    def _budget_check(self, a: _Attempt, rule: str, what: str, seconds: float, budget: float) -> Check:
        slowest = max(a.durations, key=lambda d: d[1], default=None)
        slow = f"; slowest statement line {slowest[0].line} took {slowest[1]:.2f}s" if slowest else ""
        details = {"category": "unsafe-migration", "rule": rule, "seconds": round(seconds, 3), "budget_s": budget,
                   "path": a.migration.path,
                   "fix": (f"-- Split {a.migration.label}: keep lock-taking DDL in short transactions of its own; "
                           "backfill and fix data in batches (one transaction per batch, or a "
                           "`-- migrate:no-transaction` file); build indexes CONCURRENTLY in their own migration.")}
        if slowest:
            details.update(statement=slowest[0].sql[:500], line=slowest[0].line)
        return Check(f"trace.{rule}", Status.BLOCKER,
                     f"{a.migration.label}: the {what} ran {seconds:.2f}s on staging (budget {budget:g}s){slow}",
                     migration=a.migration.label, details=details)

    # -- the per-migration summary ----------------------------------------------------
    def _summary(self, a: _Attempt, total: float) -> Check:
        seen: dict[tuple[str, str], _Hold] = {}
        for h in a.closed:
            key = (a.tables[h.oid].name, h.mode)
            if key not in seen or h.seconds > seen[key].seconds:
                seen[key] = h
        locks = [{"table": t, "mode": m, "line": h.stmt.line, "held_s": round(h.seconds, 4)}
                 for (t, m), h in sorted(seen.items(), key=lambda kv: (kv[0][0], -strength(kv[0][1])))]
        blocking = [h.seconds for h in a.closed if h.mode in BLOCKS_WRITES]
        shown = ", ".join(f"{x['table']} {x['mode']} (line {x['line']})" for x in locks[:8])
        shown += f", … {len(locks) - 8} more" if len(locks) > 8 else ""
        hold = (f"max read/write-blocking hold {max(blocking):.2f}s (budget {self.gate.lock_budget_s:g}s)" if blocking
                else "no read/write-blocking locks on existing tables")
        rewrites = "; ".join(a.notes) if a.notes else ("none" if not a.blocked else "see the BLOCKER lines")
        message = (f"{len(a.durations)} statement(s) in {total:.2f}s on staging; "
                   f"locks: {shown or 'none seen on existing tables'}; {hold}; rewrites: {rewrites}")
        status = Status.PASSED if not a.blockers else Status.WARNING
        if a.blockers:
            message += f" — {a.blockers} trace blocker(s) above"
        return Check(f"trace.{a.migration.label}", status, message, migration=a.migration.label,
                     details={"locks": locks, "max_hold_s": round(max(blocking), 4) if blocking else 0.0,
                              "rewrites": list(a.notes), "seconds": round(total, 4), "statements": len(a.durations)})


# -- fixes -------------------------------------------------------------------------------


def lock_fix(table: str, mode: str) -> str:
    return "\n".join([
        f"-- Keep the {mode} on {table} short:",
        "-- * move slow work (backfills, data fixes, long scans, sleeps) out of the DDL's transaction,",
        "--   into its own migration, in batches;",
        "-- * prefer ADD CONSTRAINT … NOT VALID + VALIDATE CONSTRAINT, CREATE INDEX CONCURRENTLY,",
        "--   and a CHECK (col IS NOT NULL) NOT VALID + VALIDATE before SET NOT NULL;",
        "-- * one lock-taking DDL per transaction, committed at once, with a short lock_timeout.",
    ])


def rewrite_fix(stmt: Statement, table: str, mode: str, pk: tuple[str, ...]) -> str:
    """A safe alternative to a statement that rewrote a table, with its real names."""
    node = _parse(stmt.sql)
    key = q(pk[0]) if len(pk) == 1 else "<key>"
    for cmd in getattr(node, "cmds", None) or ():
        if cmd.subtype == AT.AT_AlterColumnType and isinstance(cmd.def_, ast.ColumnDef):
            col, new = q(cmd.name), q(f"{cmd.name}_new")
            return "\n".join([
                f"-- Expand/contract instead of rewriting {table} under {mode}:",
                f"ALTER TABLE {table} ADD COLUMN {new} {RawStream()(cmd.def_.typeName)};",
                f"-- keep {new} in sync for new writes (a trigger), then backfill in batches,"
                " one short transaction each:",
                f"UPDATE {table} SET {new} = {col} WHERE {key} BETWEEN <from> AND <to>;",
                f"-- switch the application to {new}; drop {col} later in a `-- migrate:cleanup` migration.",
            ])
        if cmd.subtype == AT.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef):
            default = next((c.raw_expr for c in cmd.def_.constraints or ()
                            if c.contype == enums.ConstrType.CONSTR_DEFAULT), None)
            if default is not None:
                col, expr = q(cmd.def_.colname), RawStream()(default)
                return "\n".join([
                    "-- Add the column without the volatile default (catalog-only), default new rows, then backfill:",
                    f"ALTER TABLE {table} ADD COLUMN {col} {RawStream()(cmd.def_.typeName)};",
                    f"ALTER TABLE {table} ALTER COLUMN {col} SET DEFAULT {expr};",
                    f"UPDATE {table} SET {col} = {expr} WHERE {col} IS NULL AND {key} BETWEEN <from> AND <to>;"
                    "  -- in batches, outside the DDL's transaction",
                ])
    if isinstance(node, (ast.IndexStmt, ast.ReindexStmt)):
        return f"-- Build or rebuild indexes of {table} CONCURRENTLY, each in its own no-transaction migration."
    if isinstance(node, ast.RefreshMatViewStmt):
        return (f"-- Refresh without blocking readers (needs a unique index on the view, built CONCURRENTLY once):\n"
                f"REFRESH MATERIALIZED VIEW CONCURRENTLY {table};")
    return (f"-- Avoid rewriting {table} in place under {mode}: build a new table (or column) alongside, copy in "
            "batches and swap, or use pg_repack for CLUSTER / VACUUM FULL / SET TABLESPACE style rewrites.")
