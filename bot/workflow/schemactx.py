"""The tables a migration set touches, described as DDL from staging's catalog.

Static rules guess when they cannot see the database: is ``email`` nullable
today, what type is ``total``, is there already an index on ``user_id``?
Staging is a fresh copy of prod, so the gate hands the lint the real answers
— only for the tables the pending migrations name, to keep it cheap.
"""

from __future__ import annotations

import pglast
import psycopg
from pglast import visitors

from bot.migrations.source import Migration
from bot.pg import rows

COLUMNS_SQL = """
SELECT n.nspname AS schema, c.relname AS table, a.attname AS column,
       format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS not_null
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'p') AND c.relname = ANY(%s)
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'migrate_bot')
ORDER BY n.nspname, c.relname, a.attnum
"""
INDEXES_SQL = """
SELECT pg_get_indexdef(x.indexrelid) AS ddl
FROM pg_index x JOIN pg_class c ON c.oid = x.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname = ANY(%s) AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'migrate_bot') AND x.indisvalid
"""
CHECKS_SQL = """
SELECT format('ALTER TABLE %%I.%%I ADD CONSTRAINT %%I %%s', n.nspname, c.relname, con.conname,
              pg_get_constraintdef(con.oid)) AS ddl
FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE con.contype = 'c' AND con.convalidated AND c.relname = ANY(%s)
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'migrate_bot')
"""


class _Tables(visitors.Visitor):
    def __init__(self) -> None:
        self.names: set[str] = set()

    def visit_RangeVar(self, ancestors: object, node: pglast.ast.RangeVar) -> None:
        self.names.add(node.relname)


def touched_tables(migrations: list[Migration]) -> set[str]:
    """Relation names the migrations mention (pure; read from the statement model, nothing re-parsed;
    unparsable files have no statements)."""
    finder = _Tables()
    for m in migrations:
        for stmt in m.statements:
            if stmt.node is not None:
                finder(stmt.node)
    return finder.names


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def schema_ddl(conn: psycopg.Connection, tables: set[str]) -> str:
    """CREATE TABLE / CREATE INDEX / validated CHECK statements for those tables, as they are now."""
    if not tables:
        return ""
    names = sorted(tables)
    columns: dict[tuple[str, str], list[str]] = {}
    for r in rows(conn, COLUMNS_SQL, (names,)):
        not_null = " NOT NULL" if r["not_null"] else ""
        columns.setdefault((r["schema"], r["table"]), []).append(f"{_quote(r['column'])} {r['type']}{not_null}")
    ddl = [f"CREATE TABLE {_quote(s)}.{_quote(t)} ({', '.join(cols)});" for (s, t), cols in columns.items()]
    ddl += [r["ddl"] + ";" for r in rows(conn, INDEXES_SQL, (names,))]
    ddl += [r["ddl"] + ";" for r in rows(conn, CHECKS_SQL, (names,))]
    return "\n".join(ddl)
