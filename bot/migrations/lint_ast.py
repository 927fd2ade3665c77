"""Reading pglast nodes and writing SQL back: what every lint module shares.

Rules decide on PostgreSQL's own parse tree, so they need comparable keys for
names (``rel_key``: quoted names keep their case, ``public`` equals
unqualified) and a few accessors. Their fixes are deparsed from the
statement's own nodes so they carry its real, correctly quoted names; the fix
builders copy a node shallowly and only ever *replace* its attributes, so the
parsed statement stays intact.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass

from pglast import ast, enums
from pglast.stream import RawStream, maybe_double_quote_name

AT = enums.AlterTableType
CT = enums.ConstrType
OT = enums.ObjectType


@dataclass(frozen=True)
class Hit:
    """A rule firing on one statement; ``severity`` None means the RULES default."""

    rule: str
    message: str
    fix: str
    severity: str | None = None


# --------------------------------------------------------------------------
# Names and node accessors
# --------------------------------------------------------------------------

RelKey = tuple[str, str]


def obj_key(names: list[str]) -> RelKey:
    """(schema or "", name) for a dotted name; "public" and unqualified compare equal."""
    schema = names[-2] if len(names) >= 2 else ""
    return ("" if schema == "public" else schema, names[-1])


def rel_key(rv: ast.RangeVar) -> RelKey:
    """Comparable key of a RangeVar (quoted names keep their case, as PostgreSQL does)."""
    return obj_key([rv.schemaname, rv.relname] if rv.schemaname else [rv.relname])


def walk(node: object) -> Iterator[ast.Node]:
    """Every AST node below (and including) ``node``."""
    if isinstance(node, ast.Node):
        yield node
        for attr in node:
            yield from walk(getattr(node, attr))
    elif isinstance(node, (tuple, list)):
        for item in node:
            yield from walk(item)


def column_constraints(col: ast.ColumnDef) -> dict[CT, ast.Constraint]:
    """A column's inline constraints by kind (last one wins, as in PostgreSQL)."""
    return {c.contype: c for c in col.constraints or ()}


def fk_columns(con: ast.Constraint) -> list[str]:
    """Referencing columns of a table-level FOREIGN KEY constraint."""
    return [a.sval for a in con.fk_attrs or ()]


def index_columns(node: ast.IndexStmt) -> tuple[str | None, ...]:
    """Key columns of an index; expressions are None (they never lead an FK lookup)."""
    return tuple(e.name for e in node.indexParams or ())


# --------------------------------------------------------------------------
# SQL rendering for fixes
# --------------------------------------------------------------------------


def sql(node: ast.Node) -> str:
    """Deparse an AST node back to SQL text."""
    return RawStream()(node)


def q(name: str) -> str:
    """Quote an identifier only when PostgreSQL needs it."""
    return maybe_double_quote_name(name)


def rel(rv: ast.RangeVar) -> str:
    """A relation's name as written (schema-qualified, quoted), without ONLY."""
    return ".".join(q(part) for part in (rv.catalogname, rv.schemaname, rv.relname) if part)


def alter(stmt: ast.AlterTableStmt, *cmds: ast.AlterTableCmd) -> str:
    """The statement's own ALTER TABLE header (IF EXISTS, ONLY, name) with other subcommands."""
    clone = copy.copy(stmt)
    clone.cmds = tuple(cmds)
    return sql(clone) + ";"


def alter_cmd(subtype: AT, **kw: object) -> ast.AlterTableCmd:
    """A new ALTER TABLE subcommand node (RESTRICT, as the parser leaves it)."""
    return ast.AlterTableCmd(subtype=subtype, behavior=enums.DropBehavior.DROP_RESTRICT, **kw)


def validate_constraint(stmt: ast.AlterTableStmt, conname: str) -> str:
    """`ALTER TABLE <the statement's table> VALIDATE CONSTRAINT <conname>;`"""
    return alter(stmt, alter_cmd(AT.AT_ValidateConstraint, name=conname))


def not_null_steps(stmt: ast.AlterTableStmt, col: str, value: str = "<value>") -> str:
    """The PG12+ online NOT NULL sequence for one column."""
    table = stmt.relation.relname
    con = f"{table}_{col}_not_null"
    check = ast.Constraint(
        contype=CT.CONSTR_CHECK,
        conname=con,
        raw_expr=ast.NullTest(arg=colref(col), nulltesttype=enums.NullTestType.IS_NOT_NULL),
        skip_validation=True,
        initially_valid=False,
        is_enforced=True,
    )
    return join_lines(
        alter(stmt, alter_cmd(AT.AT_AddConstraint, def_=check)),
        f"UPDATE {rel(stmt.relation)} SET {q(col)} = {value} WHERE {q(col)} IS NULL;  -- backfill, in batches",
        "-- then, in a separate migration:",
        validate_constraint(stmt, con),
        alter(stmt, alter_cmd(AT.AT_SetNotNull, name=col)),
        alter(stmt, alter_cmd(AT.AT_DropConstraint, name=con)),
    )


def colref(col: str) -> ast.ColumnRef:
    """A reference to one column, for deparsed expressions."""
    return ast.ColumnRef(fields=(ast.String(sval=col),))


def col_list(names: tuple[str, ...] | list[str]) -> str:
    """`a, "B", c`: quoted column names, comma-separated."""
    return ", ".join(q(n) for n in names)


def join_lines(*parts: str) -> str:
    """Fix text: the non-empty parts, one per line."""
    return "\n".join(p for p in parts if p)


def cleanup_fix(what: str, statement: str) -> str:
    """The expand/contract advice for breaking changes: ship the code first, then a cleanup migration."""
    return f"-- first deploy code that no longer uses {what}, then run this in its own migration:\n-- migrate:cleanup\n{statement}"


def literal(value: str) -> str:
    """A string as an SQL literal."""
    return "'" + value.replace("'", "''") + "'"
