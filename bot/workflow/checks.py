"""The runbook's SQL checks, each returning a Check.

Each function runs one of the runbook's queries against one environment and
turns the rows into a verdict with the evidence in ``details`` — the same
queries a DBA would paste into psql, so a failing check can be reproduced by
hand.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from bot.pg import rows, scalar
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
