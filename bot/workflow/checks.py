"""The runbook's SQL checks, each returning a Check.

Each function runs one of the runbook's queries against one environment and
turns the rows into a verdict with the evidence in ``details`` — the same
queries a DBA would paste into psql, so a failing check can be reproduced by
hand.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from bot.pg import APP_NAME, rows, scalar
from bot.workflow.report import Check, Status

EXTENSIONS_SQL = "SELECT extname FROM pg_extension WHERE extname = ANY(%s)"
UNVALIDATED_SQL = """
SELECT n.nspname AS schema, c.relname AS table, con.conname AS constraint, con.contype AS type
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE con.contype IN ('f', 'u', 'c') AND NOT con.convalidated
ORDER BY 1, 2, 3
"""
INVALID_INDEXES_SQL = """
SELECT n.nspname AS schema, t.relname AS table, i.relname AS index, x.indisvalid AS valid, x.indisready AS ready
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_namespace n ON n.oid = i.relnamespace
WHERE NOT x.indisvalid OR NOT x.indisready
ORDER BY 1, 2, 3
"""
IDLE_IN_TX_SQL = """
SELECT pid, usename AS user, application_name AS application,
       extract(epoch FROM now() - state_change)::int AS idle_seconds
FROM pg_stat_activity
WHERE state = 'idle in transaction' AND now() - state_change > make_interval(mins => %s)
  AND datname = current_database()
ORDER BY state_change
"""
SESSIONS_SQL = """
SELECT a.pid, coalesce(a.usename, '') AS user, coalesce(a.application_name, '') AS application,
       coalesce(a.state, '') AS state, a.state IS NOT NULL AS visible,
       coalesce(extract(epoch FROM now() - a.state_change)::int, 0) AS idle_seconds,
       (a.state = 'idle in transaction' AND now() - a.state_change > make_interval(mins => %s)) AS still_idle,
       coalesce(r.rolsuper, false) AS superuser
FROM pg_stat_activity a LEFT JOIN pg_roles r ON r.oid = a.usesysid
WHERE a.datname = current_database() AND a.pid = ANY(%s)
"""
# Terminates only if the session is still idle in transaction past the limit, in the same statement that checks it.
TERMINATE_ONE_SQL = """
SELECT pg_terminate_backend(pid) AS terminated FROM pg_stat_activity
WHERE pid = %s AND state = 'idle in transaction' AND now() - state_change > make_interval(mins => %s)
  AND datname = current_database()
"""
MAY_SIGNAL_SQL = """
SELECT r.rolsuper AS superuser, pg_has_role(current_user, 'pg_signal_backend', 'MEMBER') AS signal_backend,
       current_user AS role
FROM pg_roles r WHERE r.rolname = current_user
"""

# Sessions that make a deploy unwelcome now: running ones, and transactions left open. Locks are joined by
# relation name in any schema, as migrations name tables; query texts are never read (they carry values).
QUIET_SQL = """
SELECT a.pid, coalesce(a.application_name, '') AS application_name, a.state,
       coalesce(extract(epoch FROM now() - CASE WHEN a.state = 'active' THEN a.query_start
                                                  ELSE a.state_change END)::int, 0) AS seconds,
       coalesce(array_agg(DISTINCT c.relname ORDER BY c.relname) FILTER (WHERE c.relname IS NOT NULL), '{}')
           AS tables
FROM pg_stat_activity a
LEFT JOIN pg_locks l ON l.pid = a.pid AND l.locktype = 'relation' AND l.granted
     AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
LEFT JOIN pg_class c ON c.oid = l.relation AND c.relname = ANY(%(tables)s)
WHERE a.datname = current_database() AND a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()
  AND (a.state = 'active' OR a.state LIKE 'idle in transaction%%')
GROUP BY a.pid, a.application_name, a.state, a.query_start, a.state_change
ORDER BY seconds DESC, a.pid
"""
QUIET_SHOWN = 5

_CONTYPES = {"f": "foreign key", "u": "unique", "c": "check"}


def _names(found: list[dict], *keys: str, limit: int = 10) -> str:
    shown = [".".join(str(r[k]) for k in keys) for r in found[:limit]]
    more = f" and {len(found) - limit} more" if len(found) > limit else ""
    return ", ".join(shown) + more


def missing_extensions(conn: psycopg.Connection, required: list[str]) -> list[str]:
    present = {r["extname"] for r in rows(conn, EXTENSIONS_SQL, (list(required),))}
    return [e for e in required if e not in present]


def extensions(conn: psycopg.Connection, env: str, required: list[str], *, missing_status: Status) -> Check:
    name = f"extensions.{env}"
    missing = missing_extensions(conn, required)
    if not missing:
        return Check(name, Status.PASSED, f"{', '.join(required) or 'no extensions'} present on {env}")
    create = "; ".join(f'CREATE EXTENSION IF NOT EXISTS "{e}"' for e in missing)
    return Check(
        name,
        missing_status,
        f"missing on {env}: {', '.join(missing)} — create before deploying: {create};",
        details={"category": "missing-extension", "env": env, "missing": missing},
    )


def install_extensions(conn: psycopg.Connection, names: list[str]) -> list[str]:
    """CREATE EXTENSION IF NOT EXISTS for each; returns those installed."""
    for ext in names:
        conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(ext)))
    return list(names)


def unvalidated(conn: psycopg.Connection) -> list[dict]:
    return rows(conn, UNVALIDATED_SQL)


def constraint_key(row: dict) -> str:
    return f"{row['schema']}.{row['table']}.{row['constraint']}"


def unvalidated_constraints(conn: psycopg.Connection, env: str, before: set[str] | None = None) -> Check:
    """The runbook's spot check: 0 NOT VALID foreign key/unique/check constraints.

    With ``before`` (the keys found before this set ran), constraints the set
    left NOT VALID on purpose — the expand step of NOT VALID now, VALIDATE in
    a later migration — and older ones are warnings naming what to VALIDATE;
    without it (a plain spot check) any is a failure.
    """
    found = unvalidated(conn)
    name = f"constraints-validated.{env}"
    if not found:
        return Check(name, Status.PASSED, f"0 unvalidated foreign key/unique/check constraints on {env}")
    items = [dict(r, type=_CONTYPES.get(r["type"], r["type"])) for r in found]
    details = {"category": "invalid-constraint", "env": env, "constraints": items}
    if before is None:
        return Check(name, Status.FAILED,
                     f"{len(found)} constraint(s) NOT VALID on {env}: {_names(found, 'table', 'constraint')}",
                     details=details)
    new = [r for r in found if constraint_key(r) not in before]
    old = [r for r in found if constraint_key(r) in before]
    parts = []
    if new:
        parts.append(f"left NOT VALID by this set: {_names(new, 'table', 'constraint')} — ship the "
                     "VALIDATE CONSTRAINT migration next")
    if old:
        parts.append(f"already NOT VALID before: {_names(old, 'table', 'constraint')}")
    return Check(name, Status.WARNING, f"on {env}, " + "; ".join(parts), details=details)


def invalid_indexes(conn: psycopg.Connection, env: str) -> Check:
    found = rows(conn, INVALID_INDEXES_SQL)
    name = f"indexes-valid.{env}"
    if not found:
        return Check(name, Status.PASSED, f"0 invalid or unready indexes on {env}")
    return Check(
        name,
        Status.FAILED,
        f"{len(found)} invalid/unready index(es) on {env}: {_names(found, 'table', 'index')}",
        details={"category": "invalid-index", "env": env, "indexes": found},
    )


def idle_in_transaction(conn: psycopg.Connection, env: str, minutes: int) -> Check:
    found = rows(conn, IDLE_IN_TX_SQL, (minutes,))
    name = f"idle-in-transaction.{env}"
    if not found:
        return Check(name, Status.PASSED, f"no session idle in transaction for more than {minutes} min on {env}")
    pids = ", ".join(f"{r['pid']} ({r['application'] or r['user']}, {r['idle_seconds']}s)" for r in found[:10])
    return Check(
        name,
        Status.BLOCKER,
        f"{len(found)} session(s) idle in transaction for more than {minutes} min on {env} would block DDL: {pids}",
        details={"category": "lock", "env": env, "sessions": found, "minutes": minutes},
    )


TERMINATED, GONE, NOT_IDLE, NOT_PERMITTED, FAILED = "terminated", "gone", "not-idle", "not-permitted", "failed"


@dataclass(frozen=True)
class Termination:
    """What ``terminate_idle`` did to one listed session (plain data)."""

    pid: int
    outcome: str  # TERMINATED | GONE | NOT_IDLE | NOT_PERMITTED | FAILED
    why: str = ""  # for NOT_PERMITTED / FAILED / NOT_IDLE: the reason, with the next step
    user: str = ""
    application: str = ""
    idle_seconds: int = 0

    @property
    def ended(self) -> bool:
        return self.outcome == TERMINATED


def terminate_idle(conn: psycopg.Connection, minutes: int, pids: list[int]) -> list[Termination]:
    """Terminate the listed pids that are still idle in transaction; one result per pid, in order; never raises
    midway: a session the bot's role may not end (a superuser's, when the bot is not one) is reported as such,
    and the others are still ended.

    Each pid is ended by its own statement, which checks it is still idle in
    transaction past the limit — a session that moved on since it was listed
    is left alone.
    """
    seen = {r["pid"]: r for r in rows(conn, SESSIONS_SQL, (minutes, list(pids)))}
    me = (rows(conn, MAY_SIGNAL_SQL) or [{}])[0]
    return [_terminate_one(conn, minutes, pid, seen.get(pid), me) for pid in pids]


def _terminate_one(conn: psycopg.Connection, minutes: int, pid: int, session: dict | None, me: dict) -> Termination:
    if session is None:
        return Termination(pid, GONE)
    who = {k: session[k] for k in ("user", "application", "idle_seconds")}
    if not session["visible"]:  # without pg_read_all_stats, other roles' sessions show no state
        role = me.get("role") or "the bot's role"
        return Termination(pid, NOT_PERMITTED, f"the {role} role cannot see whether it is still idle in transaction "
                           f"(other roles' sessions show no state to it): ask a DBA to GRANT pg_read_all_stats TO "
                           f"{role};", **who)
    if not session["still_idle"]:
        return Termination(pid, NOT_IDLE, f"it is {session['state'] or 'no longer idle in transaction'} now", **who)
    try:
        found = rows(conn, TERMINATE_ONE_SQL, (pid, minutes))
    except psycopg.errors.InsufficientPrivilege:
        return Termination(pid, NOT_PERMITTED, _not_permitted(session, me), **who)
    except psycopg.Error as exc:  # one session's trouble never stops the others
        return Termination(pid, FAILED, f"{exc.diag.message_primary or type(exc).__name__} "
                           f"(SQLSTATE {exc.sqlstate or 'none'})", **who)
    if not found:
        return Termination(pid, GONE, "it ended or moved on just before", **who)
    if not found[0]["terminated"]:
        return Termination(pid, GONE, "it had already ended", **who)
    return Termination(pid, TERMINATED, **who)


def _not_permitted(session: dict, me: dict) -> str:
    """Why PostgreSQL refused (42501), from the roles involved rather than the message's words."""
    role = me.get("role") or "the bot's role"
    if session["superuser"] and not me.get("superuser"):
        return (f"it belongs to the superuser {session['user']}, and only a superuser may end a superuser's session: "
                f"ask a DBA to run SELECT pg_terminate_backend({session['pid']}); or have its owner end the "
                "transaction")
    if not me.get("signal_backend"):
        return (f"the {role} role may only end its own sessions: ask a DBA to GRANT pg_signal_backend TO {role}; "
                f"or to run SELECT pg_terminate_backend({session['pid']});")
    return f"PostgreSQL refused it to the {role} role (SQLSTATE 42501): ask a DBA to end it"


def connection_headroom(conn: psycopg.Connection, env: str, needed: int) -> Check:
    limit = int(scalar(conn, "SHOW max_connections"))
    reserved = int(scalar(conn, "SHOW superuser_reserved_connections"))
    in_use = int(scalar(conn, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"))
    free = limit - reserved - in_use
    name = f"connection-headroom.{env}"
    facts = {"category": "pool", "env": env, "max_connections": limit, "in_use": in_use, "reserved": reserved,
             "free": free, "needed": needed}
    if free >= needed:
        return Check(name, Status.PASSED, f"{free} free connection slots on {env} (max_connections {limit}, {in_use} in use); the run needs {needed}", details=facts)
    return Check(
        name,
        Status.BLOCKER,
        f"only {free} free connection slots on {env} (max_connections {limit}, {in_use} in use, {reserved} reserved); "
        f"the run needs {needed} during VALIDATE",
        details=facts,
    )


def quiet_enough(conn: psycopg.Connection, tables: set[str], *, max_active: int, max_idle_in_tx: int,
                 env: str = "prod") -> Check:
    """Whether prod is quiet enough to start a deploy now (re-checked when a scheduled one fires).

    A window is chosen from yesterday's traffic; this looks at today's. Busy
    backends slow DDL down and are slowed by it; a transaction left open on a
    table the set touches holds a lock that DDL queues behind — and everything
    queues behind the DDL. The bot's own sessions do not count as traffic.
    """
    return quiet_verdict(rows(conn, QUIET_SQL, {"tables": sorted(tables)}), tables, max_active=max_active,
                         max_idle_in_tx=max_idle_in_tx, env=env)


def quiet_verdict(sessions: list[dict], tables: set[str], *, max_active: int, max_idle_in_tx: int,
                  env: str = "prod") -> Check:
    """The verdict from ``QUIET_SQL``'s rows (pure): counts against the limits, the worst sessions named."""
    active = [s for s in sessions if s["state"] == "active" and not s["application_name"].startswith(APP_NAME)]
    idle = [s for s in sessions if s["state"] != "active" and s["tables"]]
    on = ", ".join(sorted(tables)) or "the touched tables"
    counts = (f"{len(active)} active session(s) (limit {max_active}), {len(idle)} idle in transaction holding "
              f"a lock on {on} (limit {max_idle_in_tx})")
    shown = (idle + active)[:QUIET_SHOWN]
    details = {"env": env, "active": len(active), "max_active": max_active, "idle_in_tx": len(idle),
               "max_idle_in_tx": max_idle_in_tx, "tables": sorted(tables),
               "sessions": [{k: s[k] for k in ("pid", "application_name", "state", "seconds", "tables")}
                            for s in shown]}
    name = f"quiet-enough.{env}"
    if len(active) <= max_active and len(idle) <= max_idle_in_tx:
        return Check(name, Status.PASSED, f"{env} is quiet enough to deploy: {counts}", details=details)
    more = len(idle) + len(active) - len(shown)
    listing = "; ".join(_session(s) for s in shown) + (f"; and {more} more" if more > 0 else "")
    details["category"] = "lock" if len(idle) > max_idle_in_tx else "busy"
    return Check(name, Status.FAILED,
                 f"{env} is too busy to deploy now: {counts}. {listing}. Wait for traffic to drop or for those "
                 "transactions to end (`/migrate unblock` ends idle ones after an approval), then deploy again",
                 details=details)


def _session(s: dict) -> str:
    holds = f", holds a lock on {', '.join(s['tables'])}" if s["tables"] else ""
    who = s["application_name"] or "no application_name"
    return f"pid {s['pid']} ({who}, {s['state']} for {s['seconds']} s{holds})"
