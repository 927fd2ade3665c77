"""The runbook's SQL checks, each returning a Check.

Each function runs one of the runbook's queries against one environment and
turns the rows into a verdict with the evidence in ``details`` — the same
queries a DBA would paste into psql, so a failing check can be reproduced by
hand.
"""

from __future__ import annotations

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
TERMINATE_IDLE_SQL = """
SELECT pid, pg_terminate_backend(pid) AS terminated
FROM pg_stat_activity
WHERE state = 'idle in transaction' AND now() - state_change > make_interval(mins => %s)
  AND datname = current_database() AND pid = ANY(%s)
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


def terminate_idle(conn: psycopg.Connection, minutes: int, pids: list[int]) -> list[int]:
    """Terminate only the listed pids, and only if they are still idle in transaction."""
    found = rows(conn, TERMINATE_IDLE_SQL, (minutes, pids))
    return [r["pid"] for r in found if r["terminated"]]


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
