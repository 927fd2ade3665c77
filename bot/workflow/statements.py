"""pg_stat_statements snapshots: read once, plain data out, never reset.

PgHero and pg_profile call ``pg_stat_statements_reset()`` on every sample,
which wipes the view for every other tool and every person looking at it. We
never do: a snapshot is the view's cumulative counters at one moment, and
``bot.workflow.digest`` turns two snapshots into the period's deltas, coping
with whoever else resets, evicts or restarts.

``take(conn, source)`` is the only function here that touches a database. It
reads the top-level statements of the connection's database, the view's
global facts (``pg_stat_statements_info``: deallocations, last full reset;
PostgreSQL 14+), ``pg_stat_statements.max`` and the server's identity. The
view's columns differ across PostgreSQL 12-17 (``total_time`` became
``total_exec_time`` in 13, ``toplevel`` came in 14, ``blk_read_time`` split
into shared/local in 17, ``stats_since`` in 17, and the extension's version
can lag the server's), so the columns are looked up in the catalog first and
the query is built from those that exist.

Query texts are normalised once more on the way in: pg_stat_statements
replaces constants with ``$n`` in planned statements, but utility statements
(``SET``, ``ALTER ROLE … PASSWORD '…'``, ``COPY … FROM '…'``) keep their
literals. Every string, number and bit-string literal and every comment is
replaced using pglast's scanner (PostgreSQL's own lexer), so a parameter value
never reaches a snapshot, the state store, a digest or a chart.
"""

from __future__ import annotations

import base64
import json
import re
import zlib
from contextlib import nullcontext
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from typing import Any

import psycopg
from psycopg import errors, sql
from psycopg.rows import dict_row

from bot.errors import CouldNotRun

QUERY_MAX = 300  # characters of a normalised statement kept in a snapshot
FORMAT_VERSION = 1

NOT_INSTALLED = "pg_stat_statements is not installed in {source}'s database {database}, so there is nothing to digest."
NOT_INSTALLED_FIX = ("Run `CREATE EXTENSION pg_stat_statements;` there (the server also needs "
                     "shared_preload_libraries = 'pg_stat_statements' and a restart).")
NOT_PRELOADED = ("pg_stat_statements is installed in {source}'s database {database} but the server has not loaded it, "
                 "so it records nothing.")
NOT_PRELOADED_FIX = ("Add shared_preload_libraries = 'pg_stat_statements' to postgresql.conf (or the provider's "
                     "parameter group) and restart the server.")

NO_PRIVILEGE = "The bot's database role may not read pg_stat_statements in {source}'s database {database}."
NO_PRIVILEGE_FIX = ("Grant that role SELECT on pg_stat_statements (and pg_read_all_stats, to see every role's "
                    "statements).")


class StatementsUnavailable(CouldNotRun):
    """pg_stat_statements cannot be read: ``reason`` is "not-installed", "not-preloaded" or "no-privilege"."""

    def __init__(self, reason: str, message: str, next_step: str) -> None:
        super().__init__(message, next_step)
        self.reason = reason


# -- plain data ----------------------------------------------------------------------------------------

COUNTERS = ("calls", "total_exec_ms", "total_plan_ms", "rows", "shared_blks_hit", "shared_blks_read",
            "shared_blks_dirtied", "shared_blks_written", "local_blks_hit", "local_blks_read",
            "temp_blks_read", "temp_blks_written", "blk_read_ms", "blk_write_ms", "wal_bytes", "jit_ms")
_FLOATS = frozenset({"total_exec_ms", "total_plan_ms", "blk_read_ms", "blk_write_ms", "jit_ms"})


@dataclass(frozen=True)
class Entry:
    """One statement's cumulative counters, as pg_stat_statements keeps them (times in ms)."""

    userid: int
    dbid: int
    queryid: int
    query: str  # normalised: no literal, no comment, at most QUERY_MAX characters
    calls: int = 0
    total_exec_ms: float = 0.0
    total_plan_ms: float = 0.0
    rows: int = 0
    shared_blks_hit: int = 0
    shared_blks_read: int = 0
    shared_blks_dirtied: int = 0
    shared_blks_written: int = 0
    local_blks_hit: int = 0
    local_blks_read: int = 0
    temp_blks_read: int = 0
    temp_blks_written: int = 0
    blk_read_ms: float = 0.0  # shared + local block read time (track_io_timing); 0 when off
    blk_write_ms: float = 0.0
    wal_bytes: int = 0
    jit_ms: float = 0.0  # generation + inlining + optimization + emission (+ deform, 17)
    stats_since: datetime | None = None  # PostgreSQL 17+: when this entry's counters started

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.userid, self.dbid, self.queryid)


@dataclass(frozen=True)
class Snapshot:
    """pg_stat_statements for one database at one moment."""

    source: str  # the environment: "prod", "staging"
    taken_at: datetime  # the server's clock, UTC-aware
    server_id: str  # pg_control_system()'s system_identifier, else "host:port/major"
    server_version: int  # server_version_num, e.g. 150004
    database: str
    dbid: int
    entries: tuple[Entry, ...] = ()
    stats_reset: datetime | None = None  # pg_stat_statements_info (14+): the last full reset
    dealloc: int | None = None  # pg_stat_statements_info (14+): deallocations since that reset
    max_entries: int | None = None  # the pg_stat_statements.max setting
    entries_total: int | None = None  # entries in the whole view, every database and role
    hidden: int = 0  # this database's entries whose text and queryid this role may not see

    def by_key(self) -> dict[tuple[int, int, int], Entry]:
        return {e.key: e for e in self.entries}


# -- query normalisation -------------------------------------------------------------------------------

_LITERALS = frozenset({"SCONST", "USCONST", "ICONST", "FCONST", "BCONST", "XCONST"})
_COMMENTS = frozenset({"C_COMMENT", "SQL_COMMENT"})
_PARAM_NUMBER = re.compile(r"\$(\d+)")
_FALLBACK = re.compile(
    r"(?P<dollar>\$(?P<tag>[A-Za-z_][A-Za-z_0-9]*)?\$.*?(?:\$(?P=tag)?\$|\Z))"
    r"|(?P<quoted>[EeBbXxNn]?(?:U&)?'(?:[^']|'')*(?:'|\Z))"
    r"|(?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))"
    r"|(?P<number>(?<![\w$])(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)",
    re.DOTALL)


def normalise(query: str, limit: int = QUERY_MAX) -> str:
    """The statement with every literal replaced by ``$n``, comments dropped, whitespace collapsed, shortened."""
    start = max((int(n) for n in _PARAM_NUMBER.findall(query)), default=0) + 1
    try:
        text = _scan_replace(query, start)
    except Exception:  # noqa: BLE001 - pglast's ParseError, or a gap holding more than whitespace
        text = _regex_replace(query, start)
    return shorten(" ".join(text.split()), limit)


def _scan_replace(query: str, number: int) -> str:
    from pglast import parser

    out, pos = [], 0
    for token in parser.scan(query):
        gap = query[pos:token.start]
        if gap.strip():
            raise ValueError("the scanner skipped something other than whitespace")
        out.append(" " if gap else "")
        if token.name in _LITERALS:
            out.append(f"${number}")
            number += 1
        elif token.name not in _COMMENTS:
            out.append(query[token.start:token.end + 1])
        pos = token.end + 1
    if query[pos:].strip():
        raise ValueError("the scanner stopped early")
    return "".join(out)


def _regex_replace(query: str, number: int) -> str:
    """For text the scanner refuses: a coarser pass that errs on replacing too much."""
    counter = iter(range(number, number + len(query) + 1))
    return _FALLBACK.sub(lambda m: " " if m.group("comment") else f"${next(counter)}", query)


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:max(0, limit - 1)].rstrip() + "…"


# -- reading the view ----------------------------------------------------------------------------------

OWN = "/* migrate-bot snapshot */"  # leads every statement take() runs, so the digest can leave them out
_EXTENSION_SQL = OWN + """
SELECT n.nspname AS schema, e.extversion AS version
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = 'pg_stat_statements'
"""
_COLUMNS_SQL = OWN + """
SELECT attname FROM pg_attribute
WHERE attrelid = to_regclass(format('%%I.%%I', %s::text, 'pg_stat_statements')) AND attnum > 0 AND NOT attisdropped
"""
_SERVER_SQL = OWN + """
SELECT clock_timestamp() AS taken_at, current_setting('server_version_num')::int AS version,
       current_database() AS database, (SELECT oid FROM pg_database WHERE datname = current_database())::bigint AS dbid,
       current_setting('pg_stat_statements.max', true) AS max_entries,
       CASE WHEN has_function_privilege('pg_control_system()', 'EXECUTE')
            THEN (SELECT system_identifier::text FROM pg_control_system()) END AS system_identifier
"""

# each field: the columns that may hold it, newest name first; a list of alternatives or of addends
_SAME_NAME = ("calls", "rows", "shared_blks_hit", "shared_blks_read", "shared_blks_dirtied", "shared_blks_written",
              "local_blks_hit", "local_blks_read", "temp_blks_read", "temp_blks_written")
_RENAMED = {"total_exec_ms": ("total_exec_time", "total_time"), "total_plan_ms": ("total_plan_time",)}
_SUMMED = {
    "blk_read_ms": (("shared_blk_read_time", "local_blk_read_time"), ("blk_read_time",)),
    "blk_write_ms": (("shared_blk_write_time", "local_blk_write_time"), ("blk_write_time",)),
    "wal_bytes": (("wal_bytes",),),
    "jit_ms": (("jit_generation_time", "jit_inlining_time", "jit_optimization_time", "jit_emission_time",
                "jit_deform_time"),),
}


def select_list(columns: set[str]) -> sql.Composed:
    """The snapshot's SELECT list over the view's columns that exist (PostgreSQL 12-17 and extension versions)."""
    items = [sql.SQL("userid::bigint AS userid, dbid::bigint AS dbid, queryid, query")]
    for name in _SAME_NAME:
        items.append(sql.SQL("{} AS {}").format(_col_or_zero(columns, name), sql.Identifier(name)))
    for name, candidates in _RENAMED.items():
        found = next((c for c in candidates if c in columns), None)
        items.append(sql.SQL("{} AS {}").format(_col_or_zero(columns, found), sql.Identifier(name)))
    for name, generations in _SUMMED.items():
        present = next(([c for c in group if c in columns] for group in generations
                        if any(c in columns for c in group)), [])
        expr = (sql.SQL(" + ").join(sql.SQL("coalesce({}, 0)").format(sql.Identifier(c)) for c in present)
                if present else sql.SQL("0"))
        items.append(sql.SQL("({})::float8 AS {}").format(expr, sql.Identifier(name)))
    since = sql.Identifier("stats_since") if "stats_since" in columns else sql.SQL("NULL::timestamptz")
    items.append(sql.SQL("{} AS stats_since").format(since))
    return sql.SQL(", ").join(items)


def _col_or_zero(columns: set[str], name: str | None) -> sql.Composable:
    return sql.Identifier(name) if name and name in columns else sql.SQL("0")


def statements_query(schema: str, columns: set[str]) -> sql.Composed:
    """This database's top-level statements; ``toplevel`` only where the column exists (14+)."""
    where = sql.SQL("dbid = (SELECT oid FROM pg_database WHERE datname = current_database())")
    if "toplevel" in columns:
        where = sql.SQL("{} AND toplevel").format(where)
    return sql.SQL(OWN + " SELECT {} FROM {}.pg_stat_statements WHERE {}").format(
        select_list(columns), sql.Identifier(schema), where)


def take(conn: psycopg.Connection, source: str) -> Snapshot:
    """Read pg_stat_statements for ``conn``'s database; StatementsUnavailable when it cannot be read.

    Reads only, never resets. Its own statements start with ``OWN`` and are
    left out of the snapshot. On an autocommit connection (``bot.pg``'s
    default) it adds no BEGIN/COMMIT to the view; on another it runs in a
    transaction of its own, so the connection is left as it was.
    """
    with (nullcontext() if conn.autocommit else conn.transaction()), conn.cursor(row_factory=dict_row) as cur:
        server = cur.execute(_SERVER_SQL).fetchone()
        ext = cur.execute(_EXTENSION_SQL).fetchone()
        where = {"source": source, "database": server["database"]}
        if ext is None:
            raise StatementsUnavailable("not-installed", NOT_INSTALLED.format(**where), NOT_INSTALLED_FIX)
        columns = {r["attname"] for r in cur.execute(_COLUMNS_SQL, (ext["schema"],)).fetchall()}
        try:
            found = cur.execute(statements_query(ext["schema"], columns)).fetchall()
        except errors.ObjectNotInPrerequisiteState:  # 55000: installed, but not in shared_preload_libraries
            raise StatementsUnavailable("not-preloaded", NOT_PRELOADED.format(**where), NOT_PRELOADED_FIX) from None
        except errors.InsufficientPrivilege:  # 42501: someone revoked SELECT on the view
            raise StatementsUnavailable("no-privilege", NO_PRIVILEGE.format(**where), NO_PRIVILEGE_FIX) from None
        info = _info(cur, ext["schema"])
        total = cur.execute(sql.SQL(OWN + " SELECT count(*) AS n FROM {}.pg_stat_statements(false)").format(
            sql.Identifier(ext["schema"]))).fetchone()["n"]
    mine = [r for r in found if r["queryid"] is not None and not (r["query"] or "").startswith(OWN)]
    entries = tuple(_entry(r) for r in mine)
    return Snapshot(
        source=source, taken_at=_utc(server["taken_at"]), server_id=_identity(conn, server),
        server_version=int(server["version"]), database=server["database"], dbid=int(server["dbid"]),
        entries=entries, stats_reset=_utc(info.get("stats_reset")), dealloc=info.get("dealloc"),
        max_entries=int(server["max_entries"]) if server["max_entries"] else None, entries_total=int(total),
        hidden=sum(1 for r in found if r["queryid"] is None))


def _info(cur: psycopg.Cursor, schema: str) -> dict[str, Any]:
    """pg_stat_statements_info (extension 1.9, PostgreSQL 14+); {} where it does not exist."""
    exists = cur.execute(OWN + " SELECT to_regclass(format('%%I.%%I', %s::text, 'pg_stat_statements_info')) AS r",
                         (schema,)).fetchone()["r"]
    if exists is None:
        return {}
    row = cur.execute(sql.SQL(OWN + " SELECT dealloc, stats_reset FROM {}.pg_stat_statements_info").format(
        sql.Identifier(schema))).fetchone()
    return {"dealloc": int(row["dealloc"]), "stats_reset": row["stats_reset"]} if row else {}


def _identity(conn: psycopg.Connection, server: dict[str, Any]) -> str:
    if server["system_identifier"]:
        return str(server["system_identifier"])
    return f"{conn.info.host}:{conn.info.port}/{int(server['version']) // 10000}"


def _entry(row: dict[str, Any]) -> Entry:
    values: dict[str, Any] = {name: (round(float(row[name] or 0), 3) if name in _FLOATS else int(row[name] or 0))
                              for name in COUNTERS}  # times to the µs: what to_dict stores, so both compare equal
    return Entry(userid=int(row["userid"]), dbid=int(row["dbid"]), queryid=int(row["queryid"]),
                 query=normalise(row["query"] or ""), stats_since=_utc(row["stats_since"]), **values)


def _utc(moment: datetime | None) -> datetime | None:
    return moment.astimezone(timezone.utc) if moment else None


# -- storing -------------------------------------------------------------------------------------------

_ROW_FIELDS = tuple(f.name for f in fields(Entry))


def to_dict(snapshot: Snapshot, *, compress: bool = True) -> dict[str, Any]:
    """JSON-safe and compact: the entries as rows of a column list, zlib + base64 unless ``compress=False``."""
    rows = [[_cell(getattr(e, name)) for name in _ROW_FIELDS] for e in snapshot.entries]
    data: dict[str, Any] = {
        "v": FORMAT_VERSION, "source": snapshot.source, "taken_at": snapshot.taken_at.isoformat(),
        "server_id": snapshot.server_id, "server_version": snapshot.server_version,
        "database": snapshot.database, "dbid": snapshot.dbid,
        "stats_reset": snapshot.stats_reset.isoformat() if snapshot.stats_reset else None,
        "dealloc": snapshot.dealloc, "max_entries": snapshot.max_entries, "entries_total": snapshot.entries_total,
        "hidden": snapshot.hidden, "count": len(rows), "fields": list(_ROW_FIELDS),
    }
    if compress:
        raw = json.dumps(rows, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        data["rows_z"] = base64.b64encode(zlib.compress(raw, 6)).decode("ascii")
    else:
        data["rows"] = rows
    return data


def from_dict(data: dict[str, Any]) -> Snapshot:
    """The inverse of ``to_dict``; fields a later version added come back with their defaults."""
    if "rows_z" in data:
        rows = json.loads(zlib.decompress(base64.b64decode(data["rows_z"])).decode("utf-8"))
    else:
        rows = data.get("rows", [])
    names = list(data.get("fields", _ROW_FIELDS))
    known = set(_ROW_FIELDS)
    entries = []
    for row in rows:
        values = {n: v for n, v in zip(names, row) if n in known}
        if values.get("stats_since"):
            values["stats_since"] = datetime.fromisoformat(values["stats_since"])
        entries.append(Entry(**values))
    return Snapshot(
        source=data["source"], taken_at=datetime.fromisoformat(data["taken_at"]), server_id=data["server_id"],
        server_version=int(data["server_version"]), database=data["database"], dbid=int(data["dbid"]),
        entries=tuple(entries),
        stats_reset=datetime.fromisoformat(data["stats_reset"]) if data.get("stats_reset") else None,
        dealloc=data.get("dealloc"), max_entries=data.get("max_entries"), entries_total=data.get("entries_total"),
        hidden=int(data.get("hidden", 0)))


def _cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float):
        return round(value, 3)
    return value

