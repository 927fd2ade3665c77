"""Evidence of scans: what a statement read and wrote, from PostgreSQL's own table counters.

Duration is poor evidence that a statement is safe: staging may be small, and
a statement that reads every row of a table under a lock that blocks writes
(``SET NOT NULL`` without a validated CHECK, a validated FOREIGN KEY or CHECK,
a non-concurrent index build, a backfill inside the DDL's transaction) takes
milliseconds on 1,000 rows and minutes on prod's 100 million. So the trace
reads the tables' counters around each statement — sequential scans and the
tuples they returned, rows inserted, updated, deleted — and a full scan or a
full-table write of a non-empty table that existed before the set, under a
read/write-blocking lock, is a BLOCKER whatever it took on staging.

How the counters are read (checked on PostgreSQL 15, see tests/integration/test_trace.py):

* since PG 15 a backend keeps its counters in local "pending" entries and
  flushes them to shared memory at most once a second, when idle — never
  inside a transaction. ``pg_stat_get_xact_*`` returns the pending part,
  ``pg_stat_get_*`` the flushed part, so their sum is the whole count
  whatever was flushed in between (an autocommit statement's may be);
* parallel workers flush their own counters when they exit, into the shared
  part: ``pg_stat_clear_snapshot()`` first, so a transaction does not read a
  cached copy of the shared part (``stats_fetch_consistency = cache``).

Before PG 15 the ``xact`` functions count the current transaction only and
the shared part arrives late through the collector: the sum can then miss a
statement's counts, never invent them.

Also here: what the trace hands the gate about each statement
(``StatementEvidence``, for ``lintgate.overrule``) and prod's table sizes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from pglast import ast
from psycopg import sql

from bot.migrations.lint import RULES
from bot.migrations.lint_ast import walk
from bot.migrations.lint_rules import check_statement
from bot.migrations.lint_types import Ctx
from bot.migrations.sqlfile import Statement
from bot.workflow.estimate import TableSize, table_sizes
from bot.workflow.report import Check, Status

__all__ = ["CLEAR", "Counters", "StatementEvidence", "TableEvidence", "TableSize", "batch", "counters_by_names",
           "counters_by_oids", "counters_from", "prod_tables", "read_counters", "relation_names", "scan_check",
           "scan_fix", "target_names"]

# Statements that can read or write the rows of existing tables (the rest are not worth a round trip).
SCANNING = frozenset({"AlterTableStmt", "IndexStmt", "UpdateStmt", "DeleteStmt", "InsertStmt", "ClusterStmt",
                      "VacuumStmt", "ReindexStmt", "RefreshMatViewStmt", "CreateTableAsStmt", "SelectStmt",
                      "AlterDomainStmt", "DoStmt", "CallStmt", "MergeStmt", "CopyStmt"})
FULL = 0.9  # a scan that returned at least this share of the table's rows read all of it

_COUNTERS = """
SELECT c.oid::bigint AS oid, c.oid::regclass::text AS name, c.relname, c.reltuples,
       pg_stat_get_numscans(c.oid) + pg_stat_get_xact_numscans(c.oid) AS seq_scan,
       pg_stat_get_tuples_returned(c.oid) + pg_stat_get_xact_tuples_returned(c.oid) AS seq_read,
       pg_stat_get_tuples_inserted(c.oid) + pg_stat_get_xact_tuples_inserted(c.oid) AS inserted,
       pg_stat_get_tuples_updated(c.oid) + pg_stat_get_xact_tuples_updated(c.oid) AS updated,
       pg_stat_get_tuples_deleted(c.oid) + pg_stat_get_xact_tuples_deleted(c.oid) AS deleted,
       pg_stat_get_live_tuples(c.oid) + pg_stat_get_xact_tuples_inserted(c.oid)
         - pg_stat_get_xact_tuples_deleted(c.oid) AS live"""
CLEAR = "SELECT pg_stat_clear_snapshot()"  # so a transaction does not read a cached copy of the shared counters


def counters_by_names(conn: psycopg.Connection, names: list[str]) -> str:
    """SQL: the counters of the tables called ``names`` (quoted SQL names), with the name asked for each."""
    return (f"{_COUNTERS}, n.asked FROM unnest({sql.Literal(list(names)).as_string(conn)}::text[]) AS n(asked) "
            "JOIN pg_class c ON c.oid = to_regclass(n.asked) WHERE c.relkind IN ('r', 'p', 'm')")


def counters_by_oids(conn: psycopg.Connection, oids: Iterable[int]) -> str:
    """SQL: the counters of the tables with ``oids``."""
    literal = sql.Literal(sorted(int(o) for o in oids)).as_string(conn)
    return f"{_COUNTERS}, NULL::text AS asked FROM pg_class c WHERE c.oid = ANY ({literal}::oid[])"


def batch(conn: psycopg.Connection, statements: list[str]) -> list[list[dict[str, Any]]]:
    """Rendered statements (no parameters) in one round trip, each one's rows as dicts, in order."""
    if not statements:
        return []
    out: list[list[dict[str, Any]]] = []
    with conn.cursor() as cur:
        cur.execute("; ".join(statements))
        while True:
            cols = [d.name for d in cur.description] if cur.description else []
            out.append([dict(zip(cols, row)) for row in cur.fetchall()] if cols else [])
            if not cur.nextset():
                return out


def counters_from(found: list[dict[str, Any]]) -> tuple[dict[int, "Counters"], dict[str, int]]:
    """(counters by oid, asked name -> oid) from rows of ``counters_by_*``."""
    counters, names = {}, {}
    for r in found:
        asked = r.pop("asked")
        c = Counters(**{k: (v if k in ("name", "relname", "reltuples") else int(v)) for k, v in r.items()})
        counters[c.oid] = c
        if asked is not None:
            names[asked] = c.oid
    return counters, names


def read_counters(conn: psycopg.Connection, oids: Iterable[int]) -> dict[int, "Counters"]:
    """Counters of the tables with ``oids``, read now (one round trip)."""
    oids = list(oids)
    if not oids:
        return {}
    return counters_from(batch(conn, [CLEAR, counters_by_oids(conn, oids)])[1])[0]


@dataclass(frozen=True)
class Counters:
    """One table's cumulative counters at one moment (flushed + pending)."""

    oid: int
    name: str  # regclass text
    relname: str
    reltuples: float
    seq_scan: int
    seq_read: int
    inserted: int
    updated: int
    deleted: int
    live: int  # estimate of live rows (flushed n_live_tup + pending inserts - deletes)

    def minus(self, before: "Counters") -> "Counters":
        """What happened between ``before`` and now (``live`` stays the earlier estimate)."""
        return Counters(self.oid, self.name, self.relname, self.reltuples, self.seq_scan - before.seq_scan,
                        self.seq_read - before.seq_read, self.inserted - before.inserted,
                        self.updated - before.updated, self.deleted - before.deleted, before.live)

    @property
    def rows_estimate(self) -> int:
        return max(int(self.reltuples), self.live, 0)


def _quoted(rv: ast.RangeVar) -> str:
    return ".".join(sql.Identifier(p).as_string(None) for p in (rv.schemaname, rv.relname) if p)


def relation_names(stmt: Statement) -> list[str]:
    """Every relation a statement that can read or write rows names (targets and referenced tables), quoted."""
    if stmt.kind not in SCANNING or stmt.node is None:
        return []
    found: dict[str, None] = {}
    for node in walk(stmt.node):
        if isinstance(node, ast.RangeVar) and node.relname:
            found[_quoted(node)] = None
    return list(found)


def target_names(stmt: Statement) -> list[str]:
    """The relations the statement works on (its subject, not the tables it references), quoted."""
    node = stmt.node
    rels: list[ast.RangeVar] = []
    if isinstance(node, (ast.IndexStmt, ast.AlterTableStmt, ast.ClusterStmt, ast.RefreshMatViewStmt, ast.RenameStmt,
                         ast.ReindexStmt)):
        rels = [node.relation] if node.relation is not None else []
    elif isinstance(node, ast.TruncateStmt):
        rels = list(node.relations)
    elif isinstance(node, ast.VacuumStmt):
        rels = [v.relation for v in node.rels or () if v.relation is not None]
    return [_quoted(r) for r in rels if r.relname]


def scan_fix(stmt: Statement, table: str, wrote: bool) -> str:
    """The safe pattern for a statement that scanned (or wrote) a whole table under a blocking lock.

    The static rules already know the safe rewrite of most such statements
    with their real names (``CHECK … NOT VALID``, ``VALIDATE`` it, then ``SET
    NOT NULL``; ``NOT VALID`` + ``VALIDATE``; ``CONCURRENTLY``): ask them, with
    nothing assumed about the table.
    """
    if wrote:
        return "\n".join([
            f"-- Do not rewrite every row of {table} while the DDL's lock is held:",
            "-- commit the DDL first (its own short transaction), then backfill in batches,",
            f"-- one short transaction each: UPDATE {table} SET … WHERE <key> BETWEEN <from> AND <to>;",
            "-- then enforce constraints with CHECK … NOT VALID + VALIDATE CONSTRAINT (SHARE UPDATE EXCLUSIVE).",
        ])
    hits = [h for h in check_statement(stmt, Ctx()) if h.rule not in ("prefer-jsonb", "foreign-key-without-index")]
    if hits:
        return hits[0].fix
    return (f"-- Read {table} without blocking writes: constraints as NOT VALID + VALIDATE CONSTRAINT in a later "
            "migration, indexes CONCURRENTLY, backfills in batches outside the DDL's transaction.")


def allowed(stmt: Statement) -> tuple[str, str] | None:
    """(rule, reason) of a valid `-- migrate:allow` on this statement for the static rule of its hazard: the
    author's reasoned allow covers what the trace measured of the same hazard."""
    for rule in dict.fromkeys(h.rule for h in check_statement(stmt, Ctx())):
        reason = stmt.allowed(rule, RULES)
        if reason:
            return rule, reason
    return None


def scan_check(label: str, path: str, stmt: Statement, seconds: float,
               found: list[tuple[str, "Counters", int, str, bool]], prod: TableSize | None) -> Check:
    """The ``trace.scan`` BLOCKER for one statement: (table, what it did, rows, lock mode, wrote every row) per table,
    staging's duration scaled to prod's rows when known; a WARNING when the author allowed the hazard."""
    parts, tables = [], []
    for table, d, rows, mode, wrote in found:
        did = f"wrote every row ({d.updated} updated, {d.deleted} deleted)" if wrote else "read every row"
        parts.append(f"{did} of {table} ({rows} rows; {d.seq_read} tuples by {d.seq_scan} sequential scan(s)) "
                     f"under {mode}, which {'blocks reads and writes' if mode == 'AccessExclusiveLock' else 'blocks writes'}")
        tables.append({"table": table, "rows": rows, "lock_mode": mode, "seq_scan": d.seq_scan,
                       "seq_tup_read": d.seq_read, "rows_written": d.updated + d.deleted})
    table, _, rows, mode, wrote = found[0]
    details: dict[str, Any] = {"category": "unsafe-migration", "rule": "scan", "table": table,
                               "statement": stmt.sql[:500], "line": stmt.line, "path": path, "lock_mode": mode,
                               "seconds": round(seconds, 4), "rows": rows, "tables": tables,
                               "fix": scan_fix(stmt, table, wrote)}
    scaled = ""
    if prod is not None and prod.rows:
        estimate = seconds * prod.rows / max(rows, 1)
        scaled = f"; prod has ~{int(prod.rows)} rows there: about {estimate:.1f}s under that lock"
        details.update(prod_rows=int(prod.rows), prod_seconds_estimate=round(estimate, 3))
    message = (f"{label} line {stmt.line} " + "; ".join(parts) + f" — {seconds:.3f}s on staging{scaled}. "
               "A full scan's time grows with the table, so no staging timing makes it safe")
    ok = allowed(stmt)
    if ok:
        details.update(allowed_reason=ok[1], allowed_rule=ok[0])
        return Check("trace.scan", Status.WARNING, f"{message} — allowed ({ok[0]}): {ok[1]}", migration=label,
                     details=details)
    return Check("trace.scan", Status.BLOCKER, message, migration=label, details=details)


@dataclass(frozen=True)
class TableEvidence:
    """What the trace saw of one table a statement works on."""

    name: str  # regclass text
    relname: str
    rows: int | None  # rows when the statement started (None: unknown)
    existed_before_set: bool
    scanned: int = 0  # tuples returned by sequential scans during the statement
    written: int = 0  # rows updated or deleted by it


@dataclass(frozen=True)
class StatementEvidence:
    """The trace's measurements of one statement, keyed like the lint's findings (migration label, line)."""

    migration: str
    line: int
    targets: tuple[TableEvidence, ...]
    seconds: float
    rewrote: bool = False


def prod_tables(conn: psycopg.Connection, names: set[str]) -> dict[str, TableSize]:
    """Prod's tables among ``names`` (bare relation names): rows (reltuples) and bytes; absent ones are missing.

    Catalog reads only (never ``count(*)`` on prod), the same numbers the deploy estimate uses.
    """
    return table_sizes(conn, {n.split(".")[-1].strip('"') for n in names}) if names else {}
