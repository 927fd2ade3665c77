"""Masking ``refresh.mask`` columns in the fresh copy, before anyone can connect to it.

Each value becomes a placeholder derived from ``md5(value || salt)`` with a
random salt made for this refresh and never stored or printed: the same value
masks the same way everywhere in one refresh (joins and unique constraints
keep working), but the placeholder cannot be looked up in a dictionary of
likely emails. Values that look like an email keep the shape
(``user_<hash>@example.invalid``, a reserved domain that can never receive
mail); other text becomes ``masked-<hash>``; uuid and bytea columns get the
hash in their own type. NULLs stay NULL.

An UPDATE leaves the original values in dead tuples, index entries and
planner statistics, so each masked table is rewritten and re-analyzed
(``VACUUM (FULL, ANALYZE)``) and materialized views built on it are refreshed.
User triggers on the table are switched off for the UPDATE (an audit trigger
would copy the originals somewhere else) and back to their previous state.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import psycopg
from psycopg import sql

from bot.pg import rows

EMAIL_SUFFIX = "@example.invalid"
EMAIL_PREFIX = "user_"
TEXT_PREFIX = "masked-"
HASH_HEX = 32
MIN_HASH_HEX = 8  # shorter prefixes would give up the prefix rather than uniqueness
TEXT_TYPES = ("text", "varchar", "bpchar", "citext", "name")
MASKABLE = "text, varchar, char, citext, uuid and bytea"

COLUMN_SQL = """
SELECT n.nspname AS schema, c.relname AS table, c.oid AS relid, c.oid::regclass::text AS regclass,
       a.attname AS column, t.typname AS type,
       format_type(a.atttypid, a.atttypmod) AS declared,
       CASE WHEN t.typname IN ('varchar', 'bpchar') AND a.atttypmod > 4 THEN a.atttypmod - 4 END AS max_len
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type t ON t.oid = CASE WHEN a.atttypid IN (SELECT oid FROM pg_type WHERE typtype = 'd')
                               THEN (SELECT typbasetype FROM pg_type WHERE oid = a.atttypid) ELSE a.atttypid END
WHERE c.oid = to_regclass(%s) AND a.attname = %s
"""
COLUMNS_OF_SQL = """SELECT string_agg(attname, ', ' ORDER BY attnum) FROM pg_attribute
                    WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped"""
TRIGGERS_SQL = "SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = %s AND NOT tgisinternal AND tgenabled <> 'D'"
DEPENDENT_MATVIEWS_SQL = """
WITH RECURSIVE uses(relid) AS (
    SELECT unnest(%s::oid[])
    UNION
    SELECT r.ev_class FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
    JOIN uses u ON d.refobjid = u.relid
    WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass AND r.ev_class <> u.relid
)
SELECT c.oid::regclass::text AS name FROM pg_class c JOIN uses u ON u.relid = c.oid
WHERE c.relkind = 'm' AND c.relispopulated ORDER BY c.oid
"""
_ENABLE = {"O": "ENABLE TRIGGER", "R": "ENABLE REPLICA TRIGGER", "A": "ENABLE ALWAYS TRIGGER"}


class MaskError(Exception):
    """A mask entry that cannot be applied; the message is a sentence for the report."""


@dataclass(frozen=True)
class MaskColumn:
    entry: str  # as written in refresh.mask
    schema: str
    table: str
    column: str
    type: str
    relid: int
    max_len: int | None
    regclass: str = ""  # the table as ``oid::regclass::text`` names it


def split_entry(entry: str) -> tuple[str | None, str, str]:
    parts = entry.split(".")
    return (None, parts[0], parts[1]) if len(parts) == 2 else (parts[0], parts[1], parts[2])


def _regclass_text(schema: str | None, table: str) -> str:
    quote = lambda s: '"' + s.replace('"', '""') + '"'  # noqa: E731 - to_regclass wants quoted text
    return f"{quote(schema)}.{quote(table)}" if schema else quote(table)


def resolve(conn: psycopg.Connection, entries: list[str]) -> list[MaskColumn]:
    """Find every mask column in ``conn``'s database, or MaskError naming the first that is wrong."""
    found = []
    for entry in entries:
        schema, table, column = split_entry(entry)
        target = _regclass_text(schema, table)
        hit = rows(conn, COLUMN_SQL, (target, column))
        if not hit:
            found_cols = rows(conn, COLUMNS_OF_SQL, (target,))[0]["string_agg"]
            where = f"{table} has no column {column} (its columns: {found_cols})" if found_cols else \
                f"there is no table {'.'.join(p for p in (schema, table) if p)}"
            raise MaskError(f"refresh.mask names {entry}, but {where}.")
        r = hit[0]
        if r["type"] not in TEXT_TYPES + ("uuid", "bytea"):
            raise MaskError(f"refresh.mask names {entry}, a {r['declared']} column; only {MASKABLE} columns can be masked.")
        found.append(MaskColumn(entry, r["schema"], r["table"], r["column"], r["type"], r["relid"], r["max_len"],
                                r["regclass"]))
    return found


def new_salt() -> str:
    return secrets.token_hex(16)


def mask_expression(column: MaskColumn) -> sql.Composable:
    """The placeholder for one value; ``%(salt)s`` is bound at execution, never spliced into SQL."""
    col = sql.Identifier(column.column)
    digest = sql.SQL("md5({}::text || %(salt)s)").format(col)
    if column.type == "uuid":
        return sql.SQL("{}::uuid").format(digest)
    if column.type == "bytea":
        return sql.SQL("decode({}, 'hex')").format(digest)
    room = column.max_len or 10_000
    email_hex = min(HASH_HEX, room - len(EMAIL_PREFIX) - len(EMAIL_SUFFIX))
    text_hex = min(HASH_HEX, room - len(TEXT_PREFIX))
    plain = (sql.SQL("{} || left({}, {})").format(sql.Literal(TEXT_PREFIX), digest, sql.Literal(text_hex))
             if text_hex >= MIN_HASH_HEX else sql.SQL("left({}, {})").format(digest, sql.Literal(min(room, HASH_HEX))))
    if email_hex < MIN_HASH_HEX:
        return plain
    email = sql.SQL("{} || left({}, {}) || {}").format(
        sql.Literal(EMAIL_PREFIX), digest, sql.Literal(email_hex), sql.Literal(EMAIL_SUFFIX))
    return sql.SQL("CASE WHEN {}::text LIKE '%%@%%' THEN {} ELSE {} END").format(col, email, plain)


def _qualified(column: MaskColumn) -> sql.Composable:
    return sql.Identifier(column.schema, column.table)


def mask_column(conn: psycopg.Connection, column: MaskColumn, salt: str) -> int:
    """UPDATE one column with user triggers off; returns the rows masked (NULLs are left alone)."""
    table = _qualified(column)
    triggers = rows(conn, TRIGGERS_SQL, (column.relid,))
    with conn.transaction():
        for t in triggers:
            conn.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER {}").format(table, sql.Identifier(t["tgname"])))
        cur = conn.execute(
            sql.SQL("UPDATE {} SET {} = {} WHERE {} IS NOT NULL").format(
                table, sql.Identifier(column.column), mask_expression(column), sql.Identifier(column.column)),
            {"salt": salt},
        )
        masked = cur.rowcount
        for t in triggers:
            conn.execute(sql.SQL("ALTER TABLE {} {} {}").format(
                table, sql.SQL(_ENABLE.get(t["tgenabled"], "ENABLE TRIGGER")), sql.Identifier(t["tgname"])))
    return masked


def scrub(conn: psycopg.Connection, columns: list[MaskColumn]) -> list[str]:
    """Rewrite masked tables and refresh materialized views built on them; returns the views refreshed."""
    for relid in dict.fromkeys(c.relid for c in columns):
        column = next(c for c in columns if c.relid == relid)
        # FULL rewrites the table and its indexes without the dead originals; ANALYZE replaces statistics
        # (most common values, histograms) an autovacuum may have taken from the originals.
        conn.execute(sql.SQL("VACUUM (FULL, ANALYZE) {}").format(_qualified(column)))
    views = [r["name"] for r in rows(conn, DEPENDENT_MATVIEWS_SQL, ([c.relid for c in columns],))]
    for view in views:
        conn.execute(sql.SQL("REFRESH MATERIALIZED VIEW {}").format(sql.SQL(view)))  # regclass text: already quoted
    return views


def apply(conn: psycopg.Connection, entries: list[str]) -> list[tuple[MaskColumn, int]]:
    """Resolve, mask and scrub; returns (column, rows masked) for the report."""
    columns = resolve(conn, entries)
    salt = new_salt()
    done = [(column, mask_column(conn, column, salt)) for column in columns]
    if columns:
        scrub(conn, columns)
    return done
