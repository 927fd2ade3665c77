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
  builds the index's validity afterwards;
* what it read and wrote: the tables' own counters (sequential scans, tuples
  returned, rows updated/deleted) before and after it (``bot.workflow.scans``),
  in the same round trip as its locks — two small batched queries per
  statement, and the tables' files are only compared after statements that
  can give a table a new one.

Every statement comes from the statement model (``bot.migrations.sqlfile``):
the trace reads its parse tree, never re-parses its text.

Verdicts (all added to the report; the trace never clears a static blocker):

* a rewrite of an existing non-empty table or of its indexes under a lock that
  blocks writes is a BLOCKER however fast it was here — production only grows,
  and a rewrite's time, disk and WAL grow with it (``trace.rewrite``);
* any other read/write-blocking lock on an existing table held longer than
  ``gate.lock_budget_s`` is a BLOCKER (``trace.lock-held``); so are a
  transaction over ``gate.transaction_budget_s`` (``trace.transaction-time``)
  and a migration over ``gate.migration_budget_s`` (``trace.migration-time``);
* a full scan or a full-table write of a non-empty table that existed before
  the set, under a read/write-blocking lock, is a BLOCKER whatever its
  duration (``trace.scan``), with the rows, the lock, the safe pattern and —
  given prod's sizes — the duration scaled to prod's rows;
* a type change PostgreSQL did *not* rewrite is a WARNING with the evidence,
  never a blocker (``trace.type-change``); a CONCURRENTLY index is PASSED when valid
  (``trace.concurrent-index``); one summary per migration (``trace.<label>``).

Data pre-checks (``bot.workflow.precheck``) run first in ``before()``, so both
plug into the applier as one ``StatementHooks``; they are told what the set
created so far (``facts``, the lint's own model). ``evidence`` collects, per
statement, what ``lintgate.overrule`` needs to downgrade a static guess the
measurements disproved.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field
from typing import Any

import psycopg
from pglast import ast, enums
from pglast.stream import RawStream
from psycopg.sql import Identifier
from psycopg.pq import TransactionStatus

from bot.config import Gate
from bot.migrations.lint_ast import walk
from bot.migrations.lint_types import Ctx, learn
from bot.migrations.source import Migration, Statement
from bot.migrations.sqlfile import is_concurrent
from bot.pg import rows, scalar
from bot.workflow.precheck import DataPrechecks, _primary_key, bounded, q
from bot.workflow.report import Check, Status
from bot.workflow.scans import (
    CLEAR,
    FULL,
    Counters,
    StatementEvidence,
    TableEvidence,
    TableSize,
    batch,
    counters_by_names,
    counters_by_oids,
    counters_from,
    relation_names,
    scan_check,
    target_names,
)
from bot.workflow.locksampler import LOCKS_SQL, Lock, LockSampler, side_connection
from bot.workflow.tracefixes import lock_fix, rewrite_fix

LOCK_MODES = ("AccessShareLock", "RowShareLock", "RowExclusiveLock", "ShareUpdateExclusiveLock", "ShareLock",
              "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock")
BLOCKS_WRITES = frozenset(LOCK_MODES[4:])  # conflict with RowExclusiveLock (INSERT/UPDATE/DELETE)
BLOCKS_READS = frozenset({"AccessExclusiveLock"})  # conflicts with AccessShareLock (SELECT)
COUNT_CAP = 1_000_000
AT = enums.AlterTableType

_INDEXES = """COALESCE((SELECT json_object_agg(i.relname, i.relfilenode) FROM pg_index x
                        JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = c.oid), '{}') AS indexes"""
SNAPSHOT_SQL = f"""
SELECT c.oid, c.oid::regclass::text AS name, c.relfilenode, c.reltuples, c.relkind, {_INDEXES}
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'migrate_bot')
  AND n.nspname !~ '^pg_(toast|temp)'"""
TABLE_OIDS_SQL = """SELECT c.oid, c.oid::regclass::text AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'migrate_bot')
  AND n.nspname !~ '^pg_(toast|temp)'"""
NODES_SQL = f"SELECT c.oid, c.relfilenode, {_INDEXES} FROM pg_class c WHERE c.oid = ANY (%s::oid[])"
LOCKED_NODES_SQL = (f"SELECT c.oid, c.relfilenode, {_INDEXES} FROM pg_class c WHERE c.oid IN "
                    "(SELECT relation FROM pg_locks WHERE pid = {pid} AND locktype = 'relation' AND granted)")

# Statements that never give an existing table or index a new file: no relfilenode to compare after them.
KEEPS_FILES = frozenset({"CreateStmt", "IndexStmt", "ViewStmt", "CreateFunctionStmt", "CreateEnumStmt",
                         "CompositeTypeStmt", "CreateDomainStmt", "CreateSeqStmt", "AlterSeqStmt", "CommentStmt",
                         "GrantStmt", "CreateTrigStmt", "InsertStmt", "UpdateStmt", "DeleteStmt", "DropStmt",
                         "RenameStmt", "AlterEnumStmt", "CreateSchemaStmt", "VariableSetStmt", "CreateExtensionStmt",
                         "LockStmt", "CreatePolicyStmt", "RuleStmt"})


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


def _rel_text(rv: ast.RangeVar) -> str:
    """A RangeVar as text for to_regclass (without ONLY)."""
    return ".".join(q(p) for p in (rv.schemaname, rv.relname) if p)


def _nodes_sql(oids: list[int]) -> str:
    return NODES_SQL.replace("%s::oid[]", "'{" + ",".join(str(int(o)) for o in oids) + "}'::oid[]")


def _relations(node: ast.Node | None) -> list[ast.RangeVar]:
    return [n for n in walk(node) if isinstance(n, ast.RangeVar)] if node is not None else []


def _quoted_rv(rv: ast.RangeVar) -> str:
    return ".".join(Identifier(p).as_string(None) for p in (rv.schemaname, rv.relname) if p)


def _type_changes(stmt: Statement) -> tuple[ast.RangeVar | None, list[tuple[str, str]]]:
    """(table, [(column, new type)]) of an ALTER TABLE … ALTER COLUMN … TYPE."""
    node = stmt.node
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
    relkind: str = "r"


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
    sampler: "LockSampler | None" = None
    index: tuple[int, str, set[int]] | None = None  # concurrent build: (table oid, name, index oids before)
    last_before: Statement | None = None
    watch: dict[int, Counters] = field(default_factory=dict)  # counters of the statement's tables, before it
    names: dict[str, int] = field(default_factory=dict)  # the statement's relation names -> oids, before it
    evidence_for: list[str] = field(default_factory=list)  # its target tables the static rules do not know as new
    nodes_stale: set[int] = field(default_factory=set)  # locked by statements whose files were not compared
    rewritten_now: set[int] = field(default_factory=set)  # tables the current statement got a rewrite blocker for
    scans: list[str] = field(default_factory=list)  # full scans that were not blockers (summary)


def _statement_by_statement(migration: Migration) -> bool:
    """A no-transaction file: the applier runs each statement alone (and retries just that one)."""
    return migration.no_transaction and not migration.own_transaction


class StagingTrace:
    """StatementHooks for the staging gate: data pre-checks, then locks, rewrites and durations."""

    def __init__(self, gate: Gate, prechecks: DataPrechecks | None = DataPrechecks(), *,
                 sample_interval_s: float = 0.02, prod_sizes: dict[str, TableSize] | None = None) -> None:
        self.gate = gate
        self.prechecks = prechecks
        self.sample_interval_s = sample_interval_s
        self.prod_sizes = prod_sizes or {}  # prod's rows per table name (scans.prod_tables): durations scaled
        self.evidence: list[StatementEvidence] = []  # per statement, for lintgate.overrule
        self.facts = Ctx()  # what the set created so far (the lint's model): pre-checks skip new columns
        self._set_tables: set[int] | None = None  # tables that existed before the set (first migration's start)
        self._a: _Attempt | None = None
        self._broken: str | None = None  # label of a migration the trace gave up on
        self._side: psycopg.Connection | None = None  # the lock sampler's connection, opened when first needed
        self._tables: dict[int, _Table] = {}  # the existing tables, kept from migration to migration
        self._changed: set[int] = set()  # tables whose files changed since the last snapshot
        self._closer: weakref.finalize | None = None

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
            out += self.prechecks.run(conn, migration, stmt, self.facts)
        a.index = self._index_before(conn, stmt)
        a.evidence_for = [n for n in target_names(stmt) if not self._known_new(n, stmt)]
        names = list(dict.fromkeys(relation_names(stmt) + a.evidence_for))
        # one round trip, last: nothing of the trace's own is counted
        refresh = sorted(a.nodes_stale) if a.nodes_stale and stmt.kind not in KEEPS_FILES else []
        parts = ([_nodes_sql(refresh)] if refresh else []) + (
            [CLEAR, counters_by_names(conn, names)] if names else []) + (
            [LOCKS_SQL % conn.info.backend_pid] if a.in_tx else [])
        found = batch(conn, parts)
        if refresh:  # the files as they are now, before this statement, of tables earlier ones locked
            for r in found.pop(0):
                if r["oid"] in a.tables:
                    a.tables[r["oid"]].relfilenode, a.tables[r["oid"]].indexes = r["relfilenode"], dict(r["indexes"])
            a.nodes_stale = set()
        a.watch, a.names = counters_from(found[1]) if names else ({}, {})
        if a.in_tx:
            a.baseline = {(int(r["oid"]), r["mode"]) for r in found[-1] if int(r["oid"]) in a.tables}
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
        pid = conn.info.backend_pid
        compare = stmt.kind not in KEEPS_FILES or not a.in_tx  # autocommit: compare all (locks may be missed)
        parts = ([CLEAR, counters_by_oids(conn, a.watch)] if a.watch else []) + (
            [LOCKS_SQL % pid] if a.in_tx else []) + (
            [LOCKED_NODES_SQL.replace("{pid}", str(int(pid)))] if a.in_tx and compare else [])
        found = batch(conn, parts)  # one round trip, first: before the trace's own queries
        counted = counters_from(found[1])[0] if a.watch else {}
        a.durations.append((stmt, seconds))
        a.rewritten_now = set()
        learn(stmt.node, self.facts)
        current = None
        if a.in_tx:
            locks = {(int(r["oid"]), r["mode"]) for r in found[-2 if compare else -1] if int(r["oid"]) in a.tables}
            current = {r["oid"]: r for r in found[-1]} if compare else None
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
        if not compare:  # nothing rewritten; an index may be gone or new: read those tables' files again when it matters
            a.nodes_stale |= {oid for oid, _ in locks}
            self._changed |= a.nodes_stale
            touched = set()
        out = self._rewrites(conn, a, stmt, seconds, touched, modes, current)
        out += self._scans(conn, a, stmt, seconds, counted, modes)
        out += self._concurrent_index(conn, a, stmt, seconds)
        self._record_evidence(conn, a, stmt, seconds, counted)
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
        """The tables as they are now. Only tables the trace has not seen yet, or saw change (a rewrite that may
        have been rolled back since), are read again: nothing else runs on staging between two statements."""
        if self._a is not None:
            self._stop_sampler(self._a)
        names = {int(r["oid"]): r["name"] for r in rows(conn, TABLE_OIDS_SQL)}
        oids = set(names)
        stale = (oids - self._tables.keys()) | (self._changed & oids)
        self._tables = {oid: t for oid, t in self._tables.items() if oid in oids}
        for oid, t in self._tables.items():
            t.name = names[oid]  # a RENAME changes no file
        if stale:
            for r in rows(conn, SNAPSHOT_SQL + " AND c.oid = ANY (%s::oid[])", (sorted(stale),)):
                self._tables[r["oid"]] = _Table(r["oid"], r["name"], r["relfilenode"], dict(r["indexes"]),
                                                r["reltuples"], r["relkind"])
        self._changed = set()
        if self._set_tables is None:
            self._set_tables = set(self._tables)
        self._a = _Attempt(migration, self._tables)

    def _locks(self, conn: psycopg.Connection, a: _Attempt) -> set[Lock]:
        found = rows(conn, LOCKS_SQL, (conn.info.backend_pid,))
        return {(int(r["oid"]), r["mode"]) for r in found if int(r["oid"]) in a.tables}

    def _sampler(self, conn: psycopg.Connection) -> LockSampler | None:
        try:
            if self._side is None or self._side.closed:
                self._side = side_connection(conn)
                self._closer = weakref.finalize(self, self._side.close)
            return LockSampler(conn, self.sample_interval_s, self._side)
        except psycopg.Error:
            return None  # no side connection (e.g. no free slot): rewrites are still seen by relfilenode

    def _stop_sampler(self, a: _Attempt) -> set[Lock]:
        sampler, a.sampler = a.sampler, None
        if sampler is None:
            return set()
        found = sampler.stop()
        if sampler.broken and self._side is not None:
            self._side.close()  # a fresh one next time
        return found

    def close(self) -> None:
        """Close the side connection (also done when the trace is garbage-collected)."""
        if self._side is not None:
            self._side.close()

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
                  modes: dict[int, str], current: dict[int, dict] | None = None) -> list[Check]:
        if not touched:
            return []
        if current is None:
            current = {r["oid"]: r for r in rows(conn, NODES_SQL, (sorted(touched),))}
        relation, changes = _type_changes(stmt)
        typed = scalar(conn, "SELECT to_regclass(%s)::oid", (_rel_text(relation),)) if changes else None
        out: list[Check] = []
        for oid in sorted(touched):
            table, now = a.tables[oid], current.get(oid)
            if now is None:
                continue  # dropped
            old_node, old_indexes = table.relfilenode, table.indexes
            if table.relfilenode != now["relfilenode"] or table.indexes != now["indexes"]:
                self._changed.add(oid)  # read again at the next migration: a rollback may undo it
            table.relfilenode, table.indexes = now["relfilenode"], dict(now["indexes"])
            table_rewritten = bool(old_node and now["relfilenode"] and now["relfilenode"] != old_node)
            indexes = sorted(n for n, node in old_indexes.items() if n in table.indexes and table.indexes[n] != node)
            if stmt.kind == "TruncateStmt":
                continue  # a new empty file, not a copy of the data
            mode = modes.get(oid) or ("ShareUpdateExclusiveLock" if is_concurrent(stmt.node) else "AccessExclusiveLock")
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
        a.rewritten_now.add(table.oid)
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

    # -- scans and full-table writes, from the tables' own counters -------------------
    def _scans(self, conn: psycopg.Connection, a: _Attempt, stmt: Statement, seconds: float,
               counted: dict[int, Counters], modes: dict[int, str]) -> list[Check]:
        """A full scan or full-table write of a non-empty table that existed before the set, under a
        read/write-blocking lock, is a BLOCKER whatever its duration here (see ``bot.workflow.scans``)."""
        found = []
        for oid, before in a.watch.items():
            now = counted.get(oid)
            if now is None or oid not in a.tables or oid not in (self._set_tables or ()):
                continue
            d = now.minus(before)
            written = d.updated + d.deleted
            if d.seq_read <= 0 and written <= 0:
                continue
            rows_ = self._rows(conn, a.tables[oid], before)
            if not rows_ or (d.seq_read < FULL * rows_ and written < FULL * rows_):
                continue
            mode = modes.get(oid, "")
            blocking = BLOCKS_READS if a.tables[oid].relkind == "m" else BLOCKS_WRITES  # nobody writes a matview
            if mode not in blocking or oid in a.rewritten_now:
                if oid not in a.rewritten_now:
                    a.scans.append(f"{a.tables[oid].name} ({rows_} rows) read at line {stmt.line} under "
                                   f"{mode or 'no lock seen'}")
                continue
            found.append((a.tables[oid], d, rows_, mode, written >= FULL * rows_))
        if not found:
            return []
        prod = self.prod_sizes.get(found[0][0].name.split(".")[-1].strip('"'))
        return [scan_check(a.migration.label, a.migration.path, stmt, seconds,
                           [(t.name, d, rows_, mode, wrote) for t, d, rows_, mode, wrote in found], prod)]

    def _known_new(self, name: str, stmt: Statement) -> bool:
        """The static rules already know the set created this table (they exempt it): no evidence needed."""
        rv = next((r for r in _relations(stmt.node) if _quoted_rv(r) == name), None)
        return rv is not None and self.facts.is_new(rv)

    def _rows(self, conn: psycopg.Connection, table: _Table, before: Counters) -> int:
        if before.rows_estimate > 0:
            return before.rows_estimate
        n = self._numbers(conn, table)["rows"]
        return n if isinstance(n, int) else COUNT_CAP

    def _record_evidence(self, conn: psycopg.Connection, a: _Attempt, stmt: Statement, seconds: float,
                         counted: dict[int, Counters]) -> None:
        """What ``lintgate.overrule`` needs: the statement's tables, their rows, whether the set created them."""
        targets = []
        for name in a.evidence_for:
            oid = a.names.get(name)
            c = a.watch.get(oid) if oid is not None else None
            if oid is None or c is None:
                continue  # not a table before the statement ran
            existed = oid in (self._set_tables or ())
            rows_: int | None = c.rows_estimate
            if not existed:  # the set created it: is it really empty? (one cheap probe)
                try:
                    with bounded(conn, 5.0):
                        rows_ = None if scalar(conn, f"SELECT EXISTS (SELECT 1 FROM {c.name})") else 0
                except psycopg.Error:
                    rows_ = None
            targets.append(TableEvidence(c.name, c.relname, rows_, existed))
        if targets:
            self.evidence.append(StatementEvidence(a.migration.label, stmt.line, tuple(targets), seconds,
                                                   rewrote=bool(a.rewritten_now)))

    # -- CONCURRENTLY index builds ----------------------------------------------------
    def _index_before(self, conn: psycopg.Connection, stmt: Statement) -> tuple[int, str, set[int]] | None:
        node = stmt.node
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
        if a.scans:
            message += "; full scans without a blocking lock: " + "; ".join(a.scans[:5])
        status = Status.PASSED if not a.blockers else Status.WARNING
        if a.blockers:
            message += f" — {a.blockers} trace blocker(s) above"
        return Check(f"trace.{a.migration.label}", status, message, migration=a.migration.label,
                     details={"locks": locks, "max_hold_s": round(max(blocking), 4) if blocking else 0.0,
                              "rewrites": list(a.notes), "scans": list(a.scans), "seconds": round(total, 4),
                              "statements": len(a.durations)})
