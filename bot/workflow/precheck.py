"""Data pre-checks: row-level evidence before a statement that can fail on existing data.

A new foreign key (or the VALIDATE of one), ``SET NOT NULL``, a new unique
index or constraint (or primary key) and a new CHECK constraint (or its
VALIDATE) fail on the rows already in the table. Before such a statement runs
on staging, count the rows that will make it fail and name a few of them, so
the report says *which* rows and how to fix them — with the real table and
column names — instead of only the SQLSTATE the statement then fails with.

Rules of conduct:

* same connection, same snapshot: inside the migration's transaction for
  transactional files, so a pre-check sees what the statement will see (a
  constraint added NOT VALID two statements earlier, an UPDATE's backfill);
* read-only, ACCESS SHARE at most, inside a savepoint with a short
  ``statement_timeout``: a slow or failing pre-check becomes a WARNING and can
  never abort or stall the migration;
* bounded: counts stop at ``cap`` ("more than 100000");
* never on a column the same ALTER (or an earlier statement of the pending
  set) creates, nor on a table the set creates: such a column is NULL (or its
  default) in every row and may not exist yet when the probe would run;
* example keys are primary-key values only (``ctid`` when there is no primary
  key) — never other column values, which may be personal data. For
  duplicates the report gives the number of duplicated groups and the keys of
  up to five rows, never the duplicated values.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import psycopg
from pglast import ast, enums
from pglast.stream import RawStream, maybe_double_quote_name
from psycopg import sql
from psycopg.pq import TransactionStatus

from bot.migrations.lint_ast import rel_key, walk
from bot.migrations.lint_types import Ctx
from bot.migrations.source import Migration, Statement
from bot.pg import rows, scalar
from bot.workflow.report import Check, Status

AT = enums.AlterTableType
CT = enums.ConstrType
CAP = 100_000
EXAMPLES = 5
TIMEOUT_S = 5.0
PROBED = ("IndexStmt", "AlterTableStmt")  # the statement kinds that can fail on existing rows
CATEGORY = {"fk-orphans": "invalid-fk", "not-null": "not-null", "duplicates": "invalid-index",
            "check-violation": "check-violation"}
SQLSTATE = {"fk-orphans": "23503", "not-null": "23502", "duplicates": "23505", "check-violation": "23514"}


@contextmanager
def bounded(conn: psycopg.Connection, timeout_s: float) -> Iterator[None]:
    """Run a read-only probe in a savepoint (or its own short transaction) with a statement_timeout.

    An error inside rolls back only the probe; the migration's transaction and
    its own ``statement_timeout`` are left exactly as they were.
    """
    in_tx = conn.info.transaction_status == TransactionStatus.INTRANS
    previous = scalar(conn, "SELECT current_setting('statement_timeout')") if in_tx else None
    try:
        with conn.transaction():
            conn.execute("SELECT set_config('statement_timeout', %s, true)", (f"{max(int(timeout_s * 1000), 1)}ms",))
            yield
    finally:
        if previous is not None and conn.info.transaction_status == TransactionStatus.INTRANS:
            conn.execute("SELECT set_config('statement_timeout', %s, true)", (previous,))


def q(name: str) -> str:
    """An identifier as PostgreSQL needs it written (quoted only when necessary)."""
    return maybe_double_quote_name(name)


@dataclass(frozen=True)
class Target:
    """The table a statement works on, as the catalog knows it."""

    oid: int
    name: str  # regclass text: schema-qualified and quoted only where needed
    pk: tuple[str, ...]  # primary key columns; () = examples use ctid


@dataclass(frozen=True)
class Probe:
    """What to count before one statement, and how to talk about it."""

    kind: str  # fk-orphans | not-null | duplicates | check-violation
    target: Target
    what: str  # "orders.user_id → users.id", "users.email", "(email)", "CHECK (total > 0)"
    predicate: str = ""  # offending rows, over alias c (all kinds but duplicates)
    keys: tuple[str, ...] = ()  # duplicates: the new unique key, as SQL expressions
    filter: str = "true"  # duplicates: the rows that take part in the key
    column: str = ""
    constraint: str = ""
    not_valid: bool = False  # added NOT VALID: this statement passes, the later VALIDATE fails
    extra: dict[str, Any] = field(default_factory=dict)


# -- finding the probes in a statement ----------------------------------------


def _target(conn: psycopg.Connection, rv: ast.RangeVar) -> Target | None:
    ident = sql.Identifier(*[p for p in (rv.schemaname, rv.relname) if p]).as_string(conn)
    found = rows(conn, "SELECT c.oid, c.oid::regclass::text AS name FROM pg_class c WHERE c.oid = to_regclass(%s)",
                 (ident,))
    if not found:
        return None
    return Target(found[0]["oid"], found[0]["name"], _primary_key(conn, found[0]["oid"]))


def _target_oid(conn: psycopg.Connection, oid: int) -> Target:
    name = scalar(conn, "SELECT %s::oid::regclass::text", (oid,))
    return Target(oid, name, _primary_key(conn, oid))


def _primary_key(conn: psycopg.Connection, oid: int) -> tuple[str, ...]:
    found = rows(conn, """SELECT a.attname FROM pg_index x
                          JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = ANY (x.indkey)
                          WHERE x.indrelid = %s AND x.indisprimary
                          ORDER BY array_position(x.indkey::int2[], a.attnum)""", (oid,))
    return tuple(r["attname"] for r in found)


def probes_for(conn: psycopg.Connection, stmt: Statement, known: Ctx | None = None) -> list[Probe]:
    """The data pre-checks a statement needs (none for most statements).

    ``known``: what the pending set created before this statement (the lint's
    model, kept by the trace); probes on new tables and new columns are skipped.
    """
    node = stmt.node
    if stmt.kind not in PROBED or node is None:
        return []
    known = known or Ctx()
    if isinstance(node, ast.IndexStmt) and node.unique:
        fresh = known.is_new(node.relation) or any(
            p.name and known.is_new_column(rel_key(node.relation), p.name) for p in node.indexParams or ())
        target = None if fresh else _target(conn, node.relation)
        return [_unique_index_probe(target, node)] if target else []
    if not isinstance(node, ast.AlterTableStmt) or node.objtype != enums.ObjectType.OBJECT_TABLE:
        return []
    if known.is_new(node.relation):
        return []
    target = _target(conn, node.relation)
    if target is None:
        return []
    key = rel_key(node.relation)
    added = {c.def_.colname for c in node.cmds or () if c.subtype == AT.AT_AddColumn}
    new = lambda cols: any(c in added or known.is_new_column(key, c) for c in cols)  # noqa: E731
    probes: list[Probe] = []
    for cmd in node.cmds or ():
        if cmd.subtype == AT.AT_SetNotNull and not new([cmd.name]):
            probes.append(_not_null_probe(target, [cmd.name]))
        elif cmd.subtype == AT.AT_AddConstraint and isinstance(cmd.def_, ast.Constraint):
            if not new(_constraint_columns(cmd.def_)):
                probes += _constraint_probes(conn, target, cmd.def_)
        elif cmd.subtype == AT.AT_ValidateConstraint:
            probes += _validate_probes(conn, target, cmd.name)
    return probes


def might_probe(stmt: Statement, known: Ctx | None = None) -> bool:
    """Whether ``probes_for`` could find anything to count, decided on the parse tree alone (no round trip)."""
    node, known = stmt.node, known or Ctx()
    if isinstance(node, ast.IndexStmt):
        return bool(node.unique) and not known.is_new(node.relation)
    if not isinstance(node, ast.AlterTableStmt) or node.objtype != enums.ObjectType.OBJECT_TABLE:
        return False
    if known.is_new(node.relation):
        return False
    return any(c.subtype in (AT.AT_SetNotNull, AT.AT_ValidateConstraint)
               or (c.subtype == AT.AT_AddConstraint and isinstance(c.def_, ast.Constraint)
                   and c.def_.contype in (CT.CONSTR_FOREIGN, CT.CONSTR_CHECK, CT.CONSTR_UNIQUE, CT.CONSTR_PRIMARY))
               for c in node.cmds or ())


def _constraint_columns(con: ast.Constraint) -> list[str]:
    """The table's columns a new constraint reads (FK columns, keys, the columns a CHECK mentions)."""
    cols = [s.sval for s in (con.fk_attrs or ()) + (con.keys or ())]
    if con.raw_expr is not None:
        cols += [n.fields[-1].sval for n in walk(con.raw_expr)
                 if isinstance(n, ast.ColumnRef) and isinstance(n.fields[-1], ast.String)]
    return cols


def _cols(names: list[str] | tuple[str, ...], alias: str = "") -> list[str]:
    prefix = f"{alias}." if alias else ""
    return [prefix + q(n) for n in names]


def _not_null_probe(target: Target, columns: list[str], constraint: str = "") -> Probe:
    pred = " OR ".join(f"{c} IS NULL" for c in _cols(columns, "c"))
    shown = ", ".join(q(c) for c in columns)
    return Probe("not-null", target, f"{target.name}.{shown}", predicate=pred, column=", ".join(columns),
                 constraint=constraint)


def _constraint_probes(conn: psycopg.Connection, target: Target, con: ast.Constraint) -> list[Probe]:
    name = con.conname or ""
    if con.contype == CT.CONSTR_FOREIGN:
        parent = _target(conn, con.pktable)
        cols = [s.sval for s in con.fk_attrs or ()]
        pcols = [s.sval for s in con.pk_attrs or ()] or list(parent.pk if parent else ())
        if not parent or not cols or len(cols) != len(pcols):
            return []
        return [_fk_probe(target, parent, cols, pcols, name, con.fk_matchtype == "f", bool(con.skip_validation))]
    if con.contype == CT.CONSTR_CHECK and con.raw_expr is not None:
        return [_check_probe(target, RawStream()(con.raw_expr), name, bool(con.skip_validation))]
    if con.contype in (CT.CONSTR_UNIQUE, CT.CONSTR_PRIMARY) and not con.indexname and con.keys:
        keys = [s.sval for s in con.keys]
        probes = [_duplicates_probe(target, _cols(keys), name, not con.nulls_not_distinct, "true")]
        if con.contype == CT.CONSTR_PRIMARY:
            probes.insert(0, _not_null_probe(target, keys, name))
        return probes
    return []


def _validate_probes(conn: psycopg.Connection, target: Target, name: str) -> list[Probe]:
    found = rows(conn, """
        SELECT c.contype, c.confrelid, c.confmatchtype, pg_get_expr(c.conbin, c.conrelid) AS expr,
               ARRAY(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
                     JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i) AS cols,
               ARRAY(SELECT a.attname FROM unnest(c.confkey) WITH ORDINALITY k(n, i)
                     JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i) AS pcols
        FROM pg_constraint c WHERE c.conrelid = %s AND c.conname = %s""", (target.oid, name))
    if not found:
        return []
    con = found[0]
    if con["contype"] == "f":
        parent = _target_oid(conn, con["confrelid"])
        return [_fk_probe(target, parent, con["cols"], con["pcols"], name, con["confmatchtype"] == "f", False)]
    if con["contype"] == "c" and con["expr"]:
        return [_check_probe(target, con["expr"], name, False)]
    return []


def _fk_probe(child: Target, parent: Target, cols: list[str], pcols: list[str], name: str, match_full: bool,
              not_valid: bool) -> Probe:
    ccols, pq = _cols(cols, "c"), _cols(pcols, "p")
    join = " AND ".join(f"{p} = {c}" for p, c in zip(pq, ccols))
    present = " AND ".join(f"{c} IS NOT NULL" for c in ccols)
    pred = f"{present} AND NOT EXISTS (SELECT 1 FROM {parent.name} p WHERE {join})"
    if match_full and len(cols) > 1:
        pred = f"({pred}) OR num_nulls({', '.join(ccols)}) BETWEEN 1 AND {len(cols) - 1}"
    what = f"{', '.join(map(q, cols))} → {parent.name} ({', '.join(map(q, pcols))})"
    return Probe("fk-orphans", child, what, predicate=pred, column=", ".join(cols), constraint=name,
                 not_valid=not_valid, extra={"parent": parent.name})


def _unwrap(expr: str) -> str:
    """pg_get_expr's "(total > 0)" -> "total > 0" (only when the outer parentheses enclose it all)."""
    if not (expr.startswith("(") and expr.endswith(")")):
        return expr
    depth = 0
    for i, ch in enumerate(expr):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0 and i < len(expr) - 1:
            return expr
    return expr[1:-1]


def _check_probe(target: Target, expr: str, name: str, not_valid: bool) -> Probe:
    expr = _unwrap(expr)
    return Probe("check-violation", target, f"CHECK ({expr})", predicate=f"({expr}) IS FALSE", constraint=name,
                 not_valid=not_valid, extra={"expression": expr})


def _unique_index_probe(target: Target, node: ast.IndexStmt) -> Probe:
    keys = [q(p.name) if p.name else f"({RawStream()(p.expr)})" for p in node.indexParams or ()]
    where = f"({RawStream()(node.whereClause)})" if node.whereClause is not None else "true"
    return _duplicates_probe(target, keys, node.idxname or "", not node.nulls_not_distinct, where)


def _duplicates_probe(target: Target, keys: list[str], name: str, nulls_distinct: bool, where: str) -> Probe:
    parts = [f"{k} IS NOT NULL" for k in keys] if nulls_distinct else []
    filt = " AND ".join(parts + ([where] if where != "true" else [])) or "true"
    return Probe("duplicates", target, f"({', '.join(keys)})", keys=tuple(keys), filter=filt,
                 column=", ".join(keys), constraint=name)


# -- counting -------------------------------------------------------------------


def _pk_list(target: Target, alias: str = "") -> str:
    return ", ".join(_cols(target.pk, alias)) if target.pk else (f"{alias}.ctid" if alias else "ctid")


def _count(conn: psycopg.Connection, probe: Probe, cap: int) -> int:
    t = probe.target.name
    if probe.kind == "duplicates":
        keys = ", ".join(probe.keys)
        query = (f"SELECT count(*) FROM (SELECT 1 FROM {t} WHERE {probe.filter} GROUP BY {keys} "
                 f"HAVING count(*) > 1 LIMIT {cap + 1}) s")
    else:
        query = f"SELECT count(*) FROM (SELECT 1 FROM {t} AS c WHERE {probe.predicate} LIMIT {cap + 1}) s"
    return int(scalar(conn, query))


def _examples(conn: psycopg.Connection, probe: Probe) -> list[dict[str, Any]]:
    """Primary-key values (or ctid) of up to five offending rows — never any other column."""
    t, pk = probe.target.name, _pk_list(probe.target)
    if probe.kind == "duplicates":
        aliased = ", ".join(f"{k} AS __mb_k{i}" for i, k in enumerate(probe.keys))
        groups = ", ".join(str(i + 1) for i in range(len(probe.keys)))
        on = " AND ".join(f"{k} IS NOT DISTINCT FROM d.__mb_k{i}" for i, k in enumerate(probe.keys))
        query = (f"SELECT {pk} FROM {t} JOIN (SELECT {aliased} FROM {t} WHERE {probe.filter} GROUP BY {groups} "
                 f"HAVING count(*) > 1 ORDER BY {groups} LIMIT {EXAMPLES}) d ON {on} "
                 f"WHERE {probe.filter} ORDER BY {pk} LIMIT {EXAMPLES}")
    else:
        keys = _pk_list(probe.target, "c")
        query = f"SELECT {keys} FROM {t} AS c WHERE {probe.predicate} ORDER BY 1 LIMIT {EXAMPLES}"
    names = list(probe.target.pk) or ["ctid"]
    with conn.cursor() as cur:
        cur.execute(query)
        return [{n: (v if isinstance(v, (int, str)) else str(v)) for n, v in zip(names, row)} for row in cur.fetchall()]


def render_keys(examples: list[dict[str, Any]]) -> str:
    """"id 3, 17" or "(tenant_id, id) (1, 3), (1, 9)"."""
    if not examples:
        return ""
    names = list(examples[0])
    if len(names) == 1:
        return f"{names[0]} " + ", ".join(str(e[names[0]]) for e in examples)
    return f"({', '.join(names)}) " + ", ".join("(" + ", ".join(str(v) for v in e.values()) + ")" for e in examples)


# -- the fix, with the real names ---------------------------------------------------


def _fix(probe: Probe, label: str) -> str:
    t = name = probe.target.name
    if probe.kind == "not-null":
        col = q(probe.column) if "," not in probe.column else "<column>"
        lines = [f"-- Backfill the NULLs first ({label}), in batches on a big table:",
                 f"UPDATE {t} SET {col} = <value> WHERE {col} IS NULL;"]
        if len(probe.target.pk) == 1:
            pk = q(probe.target.pk[0])
            lines.append(f"-- batch form: UPDATE {t} SET {col} = <value> WHERE {pk} IN "
                         f"(SELECT {pk} FROM {t} WHERE {col} IS NULL LIMIT 10000);")
        lines.append(f"-- then: ALTER TABLE {t} ALTER COLUMN {col} SET NOT NULL;")
        return "\n".join(lines)
    if probe.kind == "fk-orphans":
        first = q(probe.column.split(", ")[0])
        return "\n".join([
            f"-- The orphaned rows of {name} ({label}):",
            f"SELECT {_pk_list(probe.target, 'c')} FROM {t} AS c WHERE {probe.predicate};",
            "-- Re-point them, clear the reference, or delete them after review:",
            f"UPDATE {t} AS c SET {first} = NULL WHERE {probe.predicate};",
            f"-- DELETE FROM {t} AS c WHERE {probe.predicate};",
            f"-- then add the FK NOT VALID and ALTER TABLE {t} VALIDATE CONSTRAINT "
            f"{q(probe.constraint or '<fk_name>')};",
        ])
    if probe.kind == "duplicates":
        keys = ", ".join(probe.keys)
        tie = q(probe.target.pk[0]) if len(probe.target.pk) == 1 else "ctid"
        lines = [f"-- The duplicated keys of {name} ({label}):",
                 f"SELECT {keys}, count(*) FROM {t} WHERE {probe.filter} GROUP BY {keys} HAVING count(*) > 1;",
                 "-- Merge or delete the extra rows after review, keeping one per key, e.g.:"]
        if all(not k.startswith("(") for k in probe.keys):
            same = " AND ".join(f"a.{k} = b.{k}" for k in probe.keys)
            lines.append(f"-- DELETE FROM {t} a USING {t} b WHERE {same} AND a.{tie} > b.{tie};")
        index = q(probe.constraint) if probe.constraint else "…"
        lines.append(f"-- then build it concurrently: CREATE UNIQUE INDEX CONCURRENTLY {index} ON {t} ({keys});")
        return "\n".join(lines)
    expr = probe.extra.get("expression", "<condition>")
    return "\n".join([
        f"-- The rows of {name} that violate CHECK ({expr}) ({label}):",
        f"SELECT {_pk_list(probe.target)} FROM {t} WHERE ({expr}) IS FALSE;",
        "-- Correct them (or delete after review) before validating, e.g.:",
        f"UPDATE {t} SET <column> = <value> WHERE ({expr}) IS FALSE;",
        f"-- or add it NOT VALID (new rows are checked at once) and ALTER TABLE {t} VALIDATE CONSTRAINT "
        f"{q(probe.constraint or '<name>')}; after the cleanup.",
    ])


# -- checks -------------------------------------------------------------------------


_FOUND = {
    "fk-orphans": "{n} row(s) of {table} reference no row of {parent} ({constraint}: {what})",
    "not-null": "{n} row(s) of {table} have NULL in {col}",
    "duplicates": "{n} duplicated key group(s) of {what} in {table}",
    "check-violation": "{n} row(s) of {table} violate {what}",
}
_CLEAN = {
    "fk-orphans": "every row of {table} has its {parent} row ({constraint}: {what})",
    "not-null": "{table} has no NULLs in {col}",
    "duplicates": "no duplicates of {what} in {table}",
    "check-violation": "every row of {table} satisfies {what}",
}


def _base(probe: Probe, migration: Migration, stmt: Statement) -> dict[str, Any]:
    details: dict[str, Any] = {"category": CATEGORY[probe.kind], "table": probe.target.name,
                               "statement": stmt.sql[:500], "line": stmt.line, "path": migration.path}
    if probe.column:
        details["column"] = probe.column
    if probe.constraint:
        details["constraint"] = probe.constraint
    return details


def probe_check(probe: Probe, migration: Migration, stmt: Statement, count: int, cap: int,
                examples: list[dict[str, Any]]) -> Check:
    name = f"precheck.{probe.kind}"
    words = {"table": probe.target.name, "what": probe.what, "col": probe.column,
             "parent": probe.extra.get("parent", ""), "constraint": probe.constraint or "new foreign key"}
    details = _base(probe, migration, stmt)
    where = f"{migration.label} line {stmt.line}"
    if count == 0:
        clean = {k: v for k, v in details.items() if k != "category"}  # nothing for triage to pick up
        return Check(name, Status.PASSED, f"{where}: " + _CLEAN[probe.kind].format(**words),
                     migration=migration.label, details=dict(clean, count=0))
    shown = f"more than {cap}" if count > cap else str(count)
    keys = render_keys(examples)
    rows_word = "rows" if probe.kind == "duplicates" else "e.g."
    message = f"{where}: " + _FOUND[probe.kind].format(n=shown, **words) + (f", {rows_word} {keys}" if keys else "")
    details.update(count=shown if count > cap else count, examples=examples, fix=_fix(probe, migration.label))
    if probe.not_valid:
        return Check(name, Status.WARNING,
                     message + " — added NOT VALID, so this statement passes, but VALIDATE CONSTRAINT will fail "
                               "until they are fixed", migration=migration.label, details=details)
    return Check(name, Status.FAILED, message + f" — the statement will fail ({SQLSTATE[probe.kind]})",
                 migration=migration.label, details=dict(details, sqlstate_expected=SQLSTATE[probe.kind]))


@dataclass(frozen=True)
class DataPrechecks:
    """Row-level pre-checks; usable on its own as StatementHooks, or from the staging trace."""

    timeout_s: float = TIMEOUT_S
    cap: int = CAP

    def run(self, conn: psycopg.Connection, migration: Migration, stmt: Statement,
            known: Ctx | None = None) -> list[Check]:
        if stmt.kind not in PROBED or not might_probe(stmt, known):
            return []
        try:
            with bounded(conn, self.timeout_s):  # catalog lookups, in a savepoint all the same
                probes = probes_for(conn, stmt, known)
        except psycopg.Error:
            return []
        return [self._probe(conn, migration, stmt, p) for p in probes]

    def _probe(self, conn: psycopg.Connection, migration: Migration, stmt: Statement, probe: Probe) -> Check:
        try:
            with bounded(conn, self.timeout_s):
                count = _count(conn, probe, self.cap)
                examples = _examples(conn, probe) if count else []
        except psycopg.Error as exc:
            reason = (exc.diag.message_primary or type(exc).__name__) if hasattr(exc, "diag") else str(exc)
            return Check(f"precheck.{probe.kind}", Status.WARNING,
                         f"{migration.label} line {stmt.line}: could not count the offending rows of "
                         f"{probe.target.name} within {self.timeout_s:g}s on staging ({reason}); the statement "
                         "itself decides", migration=migration.label,
                         details={k: v for k, v in _base(probe, migration, stmt).items() if k != "category"})
        return probe_check(probe, migration, stmt, count, self.cap, examples)

    # StatementHooks
    def before(self, conn: psycopg.Connection, migration: Migration, stmt: Statement) -> list[Check]:
        return self.run(conn, migration, stmt)

    def after(self, conn: psycopg.Connection, migration: Migration, stmt: Statement, seconds: float) -> list[Check]:
        return []

    def finished(self, conn: psycopg.Connection, migration: Migration) -> list[Check]:
        return []
