"""The refresh's SQL: who is who, what prod holds, and the database shuffle on staging.

Kept apart from ``refresh.py`` so the orchestration reads as the runbook step
and the catalog queries can be read (and pasted into psql) on their own.

Database names: the copy is built as ``<staging>__refresh_<utc timestamp>``
and the previous staging is briefly ``<staging>__old_<timestamp>``. Those two
suffixes are the only names a refresh ever drops, so anything else on the
staging server is out of its reach.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql

from bot.pg import rows, scalar

REFRESH_INFIX = "__refresh_"
OLD_INFIX = "__old_"
MAX_DBNAME_BYTES = 63  # NAMEDATALEN - 1: longer names are silently truncated by PostgreSQL
STAMP_FORMAT = "%Y%m%d%H%M%S"
REFRESH_LOCK_CLASS = 0x6D62  # ("mb", hashtext(staging db)) on the maintenance db: one refresh per staging db
SWAP_ATTEMPTS = 5
SWAP_LOCK_TIMEOUT = "5s"

USER_SCHEMAS = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'"


def extension_members(catalog: str) -> str:
    """Objects of ``catalog`` an extension owns: left to the extension, which creates them and sets their grants."""
    return f"SELECT objid FROM pg_depend WHERE classid = '{catalog}'::regclass AND deptype = 'e'"


EXTENSION_MEMBERS = extension_members("pg_class")

TABLE_SIZES_SQL = f"""
SELECT n.nspname AS schema, c.relname AS name, pg_total_relation_size(c.oid) AS bytes
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND {USER_SCHEMAS} AND c.oid NOT IN ({EXTENSION_MEMBERS})
ORDER BY 3 DESC, 1, 2
"""
OBJECT_COUNTS_SQL = f"""
SELECT CASE WHEN c.relkind IN ('r', 'p') THEN 'tables' WHEN c.relkind IN ('i', 'I') THEN 'indexes'
            WHEN c.relkind = 'S' THEN 'sequences' WHEN c.relkind IN ('v', 'm') THEN 'views'
            ELSE 'foreign tables' END AS kind, count(*) AS n
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_index x ON x.indexrelid = c.oid
WHERE c.relkind IN ('r', 'p', 'i', 'I', 'S', 'v', 'm', 'f') AND {USER_SCHEMAS}
  AND c.oid NOT IN ({EXTENSION_MEMBERS}) AND coalesce(x.indrelid, 0) NOT IN ({EXTENSION_MEMBERS})
GROUP BY 1
UNION ALL
SELECT 'constraints', count(*) FROM pg_constraint con JOIN pg_namespace n ON n.oid = con.connamespace
WHERE con.contype IN ('p', 'u', 'f', 'c', 'x') AND {USER_SCHEMAS} AND con.conrelid NOT IN ({EXTENSION_MEMBERS})
"""
ANALYZABLE_SQL = f"""
SELECT c.oid::regclass::text AS name, pg_total_relation_size(c.oid) AS bytes
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm') AND {USER_SCHEMAS} AND c.oid NOT IN ({EXTENSION_MEMBERS})
ORDER BY 2 DESC
"""
FOREIGN_OWNERS_SQL = f"""
SELECT pg_get_userbyid(c.relowner) AS owner, count(*) AS n
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND {USER_SCHEMAS} AND c.oid NOT IN ({EXTENSION_MEMBERS})
  AND NOT pg_has_role(c.relowner, 'MEMBER')
GROUP BY 1 ORDER BY 2 DESC, 1
"""
COUNT_KINDS = ("tables", "indexes", "constraints", "sequences", "views", "foreign tables")


# --- who is who -----------------------------------------------------------------

@dataclass(frozen=True)
class ServerIdentity:
    """What tells two PostgreSQL servers apart, whatever host name reached them.

    ``system_identifier`` is fixed at initdb (a clone made from a base backup
    shares it, so it is never the only evidence); the postmaster start time
    and port tell such clones apart; the data directory needs
    pg_read_all_settings and is compared only when both sides could read it.
    """

    port: int
    started: Any  # pg_postmaster_start_time()
    system_identifier: int | None
    data_directory: str | None

    def same_server(self, other: "ServerIdentity") -> bool:
        if (self.port, self.started) != (other.port, other.started):
            return False
        for mine, theirs in ((self.system_identifier, other.system_identifier),
                             (self.data_directory, other.data_directory)):
            if mine is not None and theirs is not None and mine != theirs:
                return False
        return True

    def describe(self) -> str:
        """The evidence, for the refusal sentence."""
        if self.system_identifier is not None:
            return f"system identifier {self.system_identifier}, port {self.port}"
        return f"port {self.port}, running since {self.started:%Y-%m-%d %H:%M:%S}"

    def difference(self, other: "ServerIdentity") -> str:
        """Why two servers are not the same one, for the PASSED line."""
        if None not in (self.system_identifier, other.system_identifier) and \
                self.system_identifier != other.system_identifier:
            return "different system identifiers"
        return "different ports" if self.port != other.port else "different server start times"


def _optional(conn: psycopg.Connection, query: str) -> Any:
    """A value that needs a privilege some roles lack (42501): None instead of an error."""
    try:
        return scalar(conn, query)
    except (pgerrors.InsufficientPrivilege, pgerrors.UndefinedFunction):
        return None


def server_identity(conn: psycopg.Connection) -> ServerIdentity:
    found = rows(conn, "SELECT current_setting('port')::int AS port, pg_postmaster_start_time() AS started")[0]
    return ServerIdentity(
        port=found["port"],
        started=found["started"],
        system_identifier=_optional(conn, "SELECT system_identifier FROM pg_control_system()"),
        data_directory=_optional(conn, "SELECT current_setting('data_directory')"),
    )


# --- what prod holds ------------------------------------------------------------

@dataclass(frozen=True)
class Catalog:
    """Prod as the refresh needs to know it, read before the dump starts."""

    tables: list[tuple[str, int]]  # ("schema.table", bytes incl. indexes and TOAST), largest first
    counts: dict[str, int]
    extensions: list[str]
    encoding: str
    collate: str
    ctype: str

    @property
    def bytes(self) -> int:
        return sum(size for _, size in self.tables)


def read_catalog(conn: psycopg.Connection) -> Catalog:
    db = rows(conn, """SELECT pg_encoding_to_char(encoding) AS encoding, datcollate, datctype
                       FROM pg_database WHERE datname = current_database()""")[0]
    return Catalog(
        tables=[(f"{r['schema']}.{r['name']}", int(r["bytes"])) for r in rows(conn, TABLE_SIZES_SQL)],
        counts=object_counts(conn),
        extensions=extension_names(conn),
        encoding=db["encoding"], collate=db["datcollate"], ctype=db["datctype"],
    )


def object_counts(conn: psycopg.Connection) -> dict[str, int]:
    found = {r["kind"]: int(r["n"]) for r in rows(conn, OBJECT_COUNTS_SQL)}
    return {kind: found.get(kind, 0) for kind in COUNT_KINDS}


def extension_names(conn: psycopg.Connection) -> list[str]:
    return [r["extname"] for r in rows(conn, "SELECT extname FROM pg_extension ORDER BY 1")]


def count_differences(prod: dict[str, int], copy: dict[str, int]) -> list[str]:
    """["indexes: 12 on prod, 11 in the copy", …] — empty when the copy matches."""
    return [f"{kind}: {prod.get(kind, 0)} on prod, {copy.get(kind, 0)} in the copy"
            for kind in COUNT_KINDS if prod.get(kind, 0) != copy.get(kind, 0)]


def history_differences(prod: dict[str, str], copy: dict[str, str], shown: int = 5) -> list[str]:
    """Migrations applied on one side only ({version: label} each); empty when the histories match.

    A snapshot taken before prod's last deploy lacks what that deploy applied:
    the gate would run pending migrations on a schema prod no longer has.
    """
    def names(versions: list[str], side: dict[str, str]) -> str:
        labels = [side[v] for v in sorted(versions)]
        return ", ".join(labels[:shown]) + (f" and {len(labels) - shown} more" if len(labels) > shown else "")

    missing = [v for v in prod if v not in copy]
    extra = [v for v in copy if v not in prod]
    found = []
    if missing:
        found.append(f"migrations applied on prod but not in the copy: {names(missing, prod)} (the copy is older "
                     "than prod's last deploy; make a newer snapshot)")
    if extra:
        found.append(f"migrations applied in the copy but not on prod: {names(extra, copy)} (is it a copy of prod?)")
    return found


def foreign_owners(conn: psycopg.Connection) -> dict[str, int]:
    """{owner: relations} the current user may not ALTER (not a member of the owner): a copy made elsewhere
    keeps its source's owners, where pg_restore --no-owner makes the staging user own everything."""
    return {r["owner"]: int(r["n"]) for r in rows(conn, FOREIGN_OWNERS_SQL)}


# --- names ----------------------------------------------------------------------

def stamp(now: datetime | None = None) -> str:
    return (now or datetime.now(timezone.utc)).strftime(STAMP_FORMAT)


def refresh_name(staging: str, ts: str) -> str:
    return f"{staging}{REFRESH_INFIX}{ts}"


def old_name(staging: str, ts: str) -> str:
    return f"{staging}{OLD_INFIX}{ts}"


def name_fits(staging: str) -> bool:
    return len(refresh_name(staging, stamp()).encode()) <= MAX_DBNAME_BYTES


def databases_named(conn: psycopg.Connection, staging: str, infix: str) -> list[str]:
    """``<staging><infix>…`` databases, oldest first (exact prefix: '_' is a LIKE wildcard)."""
    prefix = staging + infix
    found = rows(conn, "SELECT datname FROM pg_database WHERE left(datname, %s) = %s ORDER BY datname",
                 (len(prefix), prefix))
    return [r["datname"] for r in found]


def database_exists(conn: psycopg.Connection, name: str) -> bool:
    return bool(scalar(conn, "SELECT count(*) FROM pg_database WHERE datname = %s", (name,)))


# --- the shuffle ------------------------------------------------------------------

def try_refresh_lock(conn: psycopg.Connection, staging: str) -> bool:
    return bool(scalar(conn, "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (REFRESH_LOCK_CLASS, staging)))


def release_refresh_lock(conn: psycopg.Connection, staging: str) -> None:
    if not conn.closed:
        conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (REFRESH_LOCK_CLASS, staging))


def create_database(conn: psycopg.Connection, name: str, like: Catalog) -> bool:
    """CREATE DATABASE from template0 with prod's encoding and locale; False if the locale had to be dropped.

    template0, because objects an admin added to template1 would collide with
    the restore. Prod's locale may not exist on the staging server (22023):
    then the server's default locale is used and the caller warns.
    """
    base = sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING {}").format(
        sql.Identifier(name), sql.Literal(like.encoding))
    try:
        conn.execute(base + sql.SQL(" LC_COLLATE {} LC_CTYPE {}").format(sql.Literal(like.collate),
                                                                           sql.Literal(like.ctype)))
        return True
    except pgerrors.InvalidParameterValue:
        conn.execute(base)
        return False


def drop_database(conn: psycopg.Connection, name: str) -> None:
    """DROP … WITH (FORCE): a killed pg_restore's backend may still be on its way out."""
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def rename_database(conn: psycopg.Connection, old: str, new: str) -> None:
    conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new)))


def terminate_sessions(conn: psycopg.Connection, dbname: str, ours: frozenset[int] = frozenset()) -> int:
    """pg_terminate_backend for everyone connected to ``dbname``; returns how many *other clients* went.

    Autovacuum workers and our own just-closed backends (``ours``: a closed
    connection's server process exits a moment later) also hold the database
    and must go for the rename, but they are not anybody's session: counting
    them would tell the team that someone was disconnected when nobody was.
    """
    found = rows(conn, """SELECT pid, pg_terminate_backend(pid) AS gone, backend_type = 'client backend' AS client
                          FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()""", (dbname,))
    return sum(1 for r in found if r["gone"] and r["client"] and r["pid"] not in ours)


def other_sessions(conn: psycopg.Connection, dbname: str) -> list[dict[str, Any]]:
    return rows(conn, """SELECT pid, usename AS user, application_name AS application FROM pg_stat_activity
                         WHERE datname = %s AND pid <> pg_backend_pid()""", (dbname,))


def swap(conn: psycopg.Connection, staging: str, new: str, old: str | None,
         ours: frozenset[int] = frozenset()) -> int:
    """Rename ``staging`` -> ``old`` and ``new`` -> ``staging`` in ONE transaction; returns sessions ended.

    Both renames commit together, so there is never a moment without a
    staging database. A rename needs the database to itself: sessions are
    terminated first, and a client that reconnects in between makes the
    rename fail with 55006 (object in use) — then terminate and try again.
    """
    ended = 0
    for attempt in range(SWAP_ATTEMPTS):
        if old is not None:
            ended += terminate_sessions(conn, staging, ours)
        try:
            with conn.transaction():
                conn.execute(f"SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}'")
                if old is not None:
                    rename_database(conn, staging, old)
                rename_database(conn, new, staging)
            return ended
        except (pgerrors.ObjectInUse, pgerrors.LockNotAvailable):
            if attempt == SWAP_ATTEMPTS - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


# --- privileges -------------------------------------------------------------------

def can_create_databases(conn: psycopg.Connection) -> bool:
    return bool(scalar(conn, "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"))


def owns_database(conn: psycopg.Connection, name: str) -> bool:
    """Renaming a database takes ownership (membership in the owning role)."""
    return bool(scalar(conn, "SELECT pg_has_role(datdba, 'MEMBER') FROM pg_database WHERE datname = %s", (name,)))


# --- statistics ---------------------------------------------------------------------

def analyze_groups(tables: list[tuple[str, int]], jobs: int) -> list[list[str]]:
    """Largest first onto the least loaded group, so ``jobs`` connections finish at about the same time."""
    groups: list[tuple[int, list[str]]] = [(0, []) for _ in range(max(1, min(jobs, len(tables))))]
    for name, size in sorted(tables, key=lambda t: -t[1]):
        load, names = min(groups, key=lambda g: g[0])
        groups[groups.index((load, names))] = (load + size, names + [name])
    return [names for _, names in groups if names]


ANALYZE_LOCK_WAIT = "30s"  # a table skipped because it was locked is analyzed again, waiting this long


def analyze(url: str, jobs: int, skip: set[str] = frozenset()) -> list[str]:
    """ANALYZE the copy's tables over up to ``jobs`` connections; returns the tables it could not analyze.

    pg_restore leaves no statistics, a copy made elsewhere may carry stale
    ones, and the gate's plans and timings need them. SKIP_LOCKED passes over
    a table someone holds (autovacuum, often, after a bulk load) instead of
    queueing behind it; the skipped ones — PostgreSQL says so in a warning —
    are analyzed once more at the end, waiting up to ``ANALYZE_LOCK_WAIT``
    (autovacuum gives way to a waiting ANALYZE). Whatever is still missed is
    returned, for the report and the freshness record.
    """
    from concurrent.futures import ThreadPoolExecutor

    from bot.pg import connection

    with connection(url, env="staging", app_suffix="-refresh") as conn:
        tables = [(r["name"], int(r["bytes"])) for r in rows(conn, ANALYZABLE_SQL) if r["name"] not in skip]
    groups = analyze_groups(tables, jobs)

    def run(names: list[str], options: str = "(SKIP_LOCKED) ") -> list[str]:
        warned: list[str] = []
        missed = []
        with connection(url, env="staging", app_suffix="-refresh") as worker:
            # "skipping analyze of … --- lock not available" / "… only table or database owner can analyze it"
            worker.add_notice_handler(lambda d: warned.append(d.message_primary or "")
                                      if d.severity_nonlocalized == "WARNING" else None)
            if not options:
                worker.execute(f"SET lock_timeout = '{ANALYZE_LOCK_WAIT}'")
            for name in names:
                warned.clear()
                try:
                    worker.execute(sql.SQL("ANALYZE " + options) + sql.SQL(name))
                except pgerrors.LockNotAvailable:
                    warned.append("lock not available")
                if warned:
                    missed.append(name)
        return missed

    with ThreadPoolExecutor(max_workers=max(1, len(groups))) as pool:
        skipped = [name for missed in pool.map(run, groups) for name in missed]  # re-raises a worker's error
    return run(skipped, options="") if skipped else []
