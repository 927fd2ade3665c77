"""The measurement's machinery: a before-copy of staging, two sessions, interleaved A/B runs.

Method (the module docstring of ``bot.workflow.perf`` says why):

1. ``CREATE DATABASE <staging>__perfbefore_<stamp> TEMPLATE <staging>`` from
   the maintenance database, before the migrations run. PostgreSQL refuses to
   copy a database someone is connected to, so the gate closes its own
   staging connection around it; another session is named in the sentence.
   Copies left by a run that was killed are dropped first (nobody may be
   connected to them). The copy is dropped afterwards — on failure and
   Ctrl-C too — with ``DROP DATABASE … WITH (FORCE)``.
2. Two sessions: the copy ("before") and staging ("after"), with the same
   session settings (staging's ``ALTER DATABASE … SET`` values are not copied
   by ``CREATE DATABASE``, so they are set on the copy's session), a
   statement timeout, ``plan_cache_mode = force_custom_plan`` (plans for the
   real values, as the application's literal queries get).
3. ``VACUUM (ANALYZE)`` of the tables the statements read, on both sides.
4. Per statement: ``PREPARE`` on both sides, warm-up pairs, then pairs of
   ``EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, FORMAT JSON) EXECUTE …`` with the
   same values on both sides, alternating which side goes first; every run is
   inside a transaction that is rolled back (writes leave nothing behind).
5. A timing-only suspect is measured again with every pair on a new pair of
   sessions (``fresh_ab_runs``): a backend keeps its CPU placement, and on a
   busy machine the one beside the noisy neighbour runs 1.5x slower for as
   long as it lives — with both sessions on the same database, too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql

from bot.pg import connection, rows, scalar
from bot.workflow.perfplans import Explain, blocks, execution_ms
from bot.workflow.perfstats import TIMEOUT, Pair, Run

COPY_INFIX = "__perfbefore_"
MAX_DBNAME_BYTES = 63
STAMP_FORMAT = "%Y%m%d%H%M%S"
STAMP_LEN = 14
FILE_COPY_FROM_BYTES = 1 << 30  # a staging database larger than 1 GiB is copied file by file
EXPLAIN = "EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, FORMAT JSON) "
SESSION_SETTINGS = ("search_path", "TimeZone", "DateStyle", "IntervalStyle", "extra_float_digits")
DB_SETTINGS_SQL = """
SELECT unnest(setconfig) AS setting FROM pg_db_role_setting
WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND setrole IN (0, (SELECT oid FROM pg_roles WHERE rolname = current_user))
ORDER BY setrole
"""
OTHER_SESSIONS_SQL = """
SELECT coalesce(nullif(application_name, ''), 'unnamed client') AS app, usename AS who, count(*) AS n
FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()
  AND backend_type = 'client backend'  -- CREATE DATABASE stops autovacuum workers itself; they are not in the way
GROUP BY 1, 2 ORDER BY 3 DESC, 1
"""
INDEX_COLUMNS_SQL = """
SELECT i.relname AS index, array_agg(a.attname ORDER BY k.n) AS columns, pg_get_indexdef(x.indexrelid) AS ddl
FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, n)
JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum
WHERE i.relname = ANY(%s)
GROUP BY i.relname, x.indexrelid
"""


class CopyFailed(Exception):
    """The before-copy could not be made; ``str()`` is the sentence for the report."""


def copy_name(staging_db: str, now: datetime | None = None) -> str:
    stamp = (now or datetime.now(timezone.utc)).strftime(STAMP_FORMAT)
    suffix = f"{COPY_INFIX}{stamp}"
    head = staging_db.encode()[: MAX_DBNAME_BYTES - len(suffix)].decode(errors="ignore")
    return head + suffix


def drop_leftovers(maint: psycopg.Connection, staging_db: str) -> list[str]:
    """Copies a killed run left behind (nobody connected to them): dropped, and named."""
    prefix = staging_db.encode()[: MAX_DBNAME_BYTES - len(COPY_INFIX) - STAMP_LEN].decode(errors="ignore")
    found = [r["datname"] for r in rows(maint, "SELECT datname FROM pg_database WHERE starts_with(datname, %s)",
                                        (prefix + COPY_INFIX,))]
    dropped = []
    for name in found:
        try:
            maint.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
            dropped.append(name)
        except pgerrors.ObjectInUse:
            continue  # someone is using it: not ours to drop
    return dropped


def create_copy(maint: psycopg.Connection, staging_db: str, name: str) -> None:
    """``CREATE DATABASE name TEMPLATE staging``; CopyFailed with the sentence when PostgreSQL refuses.

    PostgreSQL 15's default strategy (WAL_LOG) writes the whole copy to the WAL,
    which is quick for a small database; a large one is copied file by file
    (FILE_COPY: two checkpoints, no WAL).
    """
    create = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(staging_db))
    big = scalar(maint, "SELECT current_setting('server_version_num')::int >= 150000 AND "
                        "pg_database_size(%s) > %s", (staging_db, FILE_COPY_FROM_BYTES))
    if big:
        create += sql.SQL(" STRATEGY FILE_COPY")
    try:
        maint.execute(create)
    except pgerrors.ObjectInUse:
        others = rows(maint, OTHER_SESSIONS_SQL, (staging_db,))
        who = ", ".join(f"{r['n']} × {r['app']} ({r['who']})" for r in others) or "a session that has since left"
        raise CopyFailed(
            f"could not copy staging for the before/after measurement: other sessions are connected to the staging "
            f"database {staging_db} ({who}), and CREATE DATABASE … TEMPLATE needs it to itself for a moment. "
            f"Close them and validate again, or set gate.perf_measure = false") from None
    except pgerrors.InsufficientPrivilege:
        raise CopyFailed(
            f"could not copy staging for the before/after measurement: the staging user may not CREATE DATABASE "
            f"… TEMPLATE {staging_db}. Grant it CREATEDB (and make it the database's owner), or set "
            f"gate.perf_measure = false") from None
    except psycopg.Error as exc:
        raise CopyFailed(f"could not copy staging for the before/after measurement "
                         f"({type(exc).__name__}, SQLSTATE {exc.sqlstate}); set gate.perf_measure = false to skip "
                         f"the measurement") from None


def drop_copy(maint: psycopg.Connection, name: str) -> None:
    maint.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# -- sessions -----------------------------------------------------------------------------------------------

Settings = list[tuple[str, str]]


def session_settings(after: psycopg.Connection, timeout_s: float) -> tuple[Settings, Settings]:
    """(before's, after's) session settings: staging's own (per-database ones too), a timeout, custom plans."""
    common = [("statement_timeout", f"{int(timeout_s * 1000)}ms"), ("lock_timeout", f"{int(timeout_s * 1000)}ms"),
              ("plan_cache_mode", "force_custom_plan")]
    own = [tuple(r["setting"].partition("=")[::2]) for r in rows(after, DB_SETTINGS_SQL)]
    current = [(key, str(scalar(after, "SELECT current_setting(%s)", (key,)))) for key in SESSION_SETTINGS]
    return own + current + common, common  # type: ignore[return-value]


def apply_settings(conn: psycopg.Connection, settings: Settings) -> None:
    """One round trip when every setting is allowed; one by one (skipping refusals) when one is not."""
    if not settings:
        return
    calls = sql.SQL(", ").join(sql.SQL("set_config({}, {}, false)").format(sql.Literal(k), sql.Literal(v))
                               for k, v in settings)
    try:
        with conn.transaction():
            conn.execute(sql.SQL("SELECT ") + calls)
        return
    except psycopg.Error:
        pass
    for key, value in settings:
        try:
            with conn.transaction():
                conn.execute("SELECT set_config(%s, %s, false)", (key, value))
        except psycopg.Error:
            pass  # a setting this user may not set: the session keeps the server's value


def vacuum_analyze(conn: psycopg.Connection, tables: list[tuple[str, str]]) -> None:
    """VACUUM (ANALYZE) each table that exists on this side; a table that cannot be vacuumed is skipped."""
    for schema, name in tables:
        try:
            conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(schema, name)))
        except (pgerrors.UndefinedTable, pgerrors.InsufficientPrivilege, pgerrors.QueryCanceled):
            continue


def index_columns(conn: psycopg.Connection, names: list[str]) -> dict[str, tuple[list[str], str]]:
    """index -> (columns, CREATE INDEX statement), read on the before side."""
    if not names:
        return {}
    return {r["index"]: (list(r["columns"]), r["ddl"]) for r in rows(conn, INDEX_COLUMNS_SQL, (names,))}


@dataclass
class Side:
    """One measured session: "before" (the copy) or "after" (staging)."""

    label: str
    conn: psycopg.Connection
    prepared: set[str] = field(default_factory=set)

    def prepare(self, name: str, texts: list[str]) -> str:
        """PREPARE the first text PostgreSQL accepts; "" or the SQLSTATE of the last refusal."""
        error = ""
        for text in dict.fromkeys(texts):
            try:
                with self.conn.transaction():
                    self.conn.execute(sql.SQL("PREPARE {} AS ").format(sql.Identifier(name)) + sql.SQL(text))
                self.prepared.add(name)
                return ""
            except psycopg.Error as exc:
                error = exc.sqlstate or "?"
        return error

    def run(self, name: str, args: list[str | None]) -> tuple[Run, Explain | None]:
        """One EXPLAIN ANALYZE execution, rolled back; the SQLSTATE (never the message) when it fails."""
        call = sql.SQL("EXECUTE {}").format(sql.Identifier(name))
        if args:
            call += sql.SQL("({})").format(sql.SQL(", ").join(sql.Literal(a) for a in args))
        try:
            with self.conn.transaction(force_rollback=True):
                data = scalar(self.conn, sql.SQL(EXPLAIN) + call)
        except pgerrors.QueryCanceled:
            return Run(None, 0, TIMEOUT), None
        except psycopg.Error as exc:
            return Run(None, 0, exc.sqlstate or "?"), None
        explain = (data if isinstance(data, list) else json.loads(data))[0]
        return Run(execution_ms(explain), blocks(explain)), explain

    def deallocate(self) -> None:
        for name in list(self.prepared):
            try:
                self.conn.execute(sql.SQL("DEALLOCATE {}").format(sql.Identifier(name)))
            except psycopg.Error:
                pass
            self.prepared.discard(name)


@dataclass
class Measured:
    pairs: list[Pair]
    plans: tuple[Explain | None, Explain | None]  # one representative pair's plans (the first complete one)


def ab_runs(before: Side, after: Side, name: str, sets: list[list[str | None]], samples: int, warmup: int,
            offset: int = 0, parity: int = 0) -> Measured:
    """``warmup`` + ``samples`` pairs; which side goes first alternates; the same values on both sides."""
    pairs: list[Pair] = []
    plans: tuple[Explain | None, Explain | None] = (None, None)
    after_cut = 0
    for i in range(warmup + samples):
        args = sets[(offset + i) % len(sets)] if sets else []
        before_first = (i + parity) % 2 == 0
        done: dict[str, tuple[Run, Explain | None]] = {}
        for side in ((before, after) if before_first else (after, before)):
            done[side.label] = side.run(name, args)
        (b, b_plan), (a, a_plan) = done[before.label], done[after.label]
        after_cut += a.error == TIMEOUT and not b.error
        if i >= warmup or TIMEOUT in (a.error, b.error):  # a cut-off run is evidence, warm-up or not
            pairs.append(Pair(b, a, before_first))
        if b_plan and a_plan and (plans == (None, None) or (i == warmup and warmup)):
            plans = (b_plan, a_plan)  # the first measured pair's plans (a warm-up's only if none was measured)
        if after_cut >= 2:
            break  # slower than the statement timeout after the migrations: enough evidence, no more waiting
    return Measured(pairs, plans)


@dataclass(frozen=True)
class Fresh:
    """How to open a new session pair: a backend's CPU placement biases its timings for as long as it lives."""

    before_url: str
    after_url: str
    before_settings: Settings
    after_settings: Settings


def fresh_ab_runs(fresh: Fresh, name: str, texts: list[str], sets: list[list[str | None]], samples: int,
                  offset: int = 0, warmup: int = 1) -> Measured:
    """``samples`` pairs, each on a new pair of sessions (prepared, warmed up ``warmup`` times, then measured).

    On a busy 2-core machine two long-lived sessions can sit on different
    cores for the whole measurement, one beside the noisy neighbour: the
    same statement then runs 1.5x slower on one side, pair after pair (seen
    with both sides on the same database). New backends land anew, so the
    pairs' biases no longer line up; this is how a timing-only suspect is
    measured again.
    """
    pairs: list[Pair] = []
    plans: tuple[Explain | None, Explain | None] = (None, None)
    for k in range(samples):
        args = sets[(offset + k) % len(sets)] if sets else []
        with connection(fresh.before_url, env="staging", app_suffix="-perf") as b_conn, \
                connection(fresh.after_url, env="staging", app_suffix="-perf") as a_conn:
            apply_settings(b_conn, fresh.before_settings)
            apply_settings(a_conn, fresh.after_settings)
            before, after = Side("before", b_conn), Side("after", a_conn)
            refused = [(side, side.prepare(name, texts)) for side in (before, after)]
            if any(state for _, state in refused):
                errors = {side.label: Run(None, 0, state) if state else Run(None, 0, "") for side, state in refused}
                pairs.append(Pair(errors["before"], errors["after"], k % 2 == 0))
                continue
            measured = ab_runs(before, after, name, [args], 1, warmup, parity=k + warmup)
        pairs.extend(measured.pairs)
        if plans == (None, None):
            plans = measured.plans
    return Measured(pairs, plans)
