"""Sessions a dead bot left behind: found by the run id in their application_name, then ended.

A killed process's connections close with it, but PostgreSQL only notices
when the backend next talks to the client: a statement in progress (an
ALTER waiting on a lock, a long backfill, a pg_sleep) runs on, holding its
locks and the bot's advisory lock. So when a run is found dead, its sessions
on staging and prod are cancelled and then terminated — and only its own:
every connection of a run is named ``migrate-bot/<run-id>``.
"""

from __future__ import annotations

import psycopg

from bot.pg import APP_NAME, rows

END_SQL = """
SELECT pid, application_name, pg_cancel_backend(pid) AS cancelled, pg_terminate_backend(pid) AS terminated
FROM pg_stat_activity
WHERE pid <> pg_backend_pid() AND application_name LIKE ANY(%s)
"""


def patterns(run_ids: list[str]) -> list[str]:
    """LIKE patterns for those runs' sessions (run ids are r- plus hex: nothing to escape)."""
    return [f"{APP_NAME}/{run_id}%" for run_id in run_ids]


def end_sessions(conn: psycopg.Connection, run_ids: list[str]) -> list[dict]:
    """Cancel, then terminate, the sessions of ``run_ids`` on this server; returns what was ended."""
    if not run_ids:
        return []
    return rows(conn, END_SQL, (patterns(run_ids),))
