"""How busy prod is, as numbers the bot can sample hourly: transactions so far and sessions at work.

``pg_stat_database`` counters are cumulative since the last stats reset, so
one sample means nothing alone; the runs layer stores them and
``runs/traffic.py`` turns consecutive samples into transactions per hour.
"""

from __future__ import annotations

import psycopg

from bot.pg import rows

SAMPLE_SQL = """
SELECT (SELECT coalesce(xact_commit + xact_rollback, 0) FROM pg_stat_database
        WHERE datname = current_database()) AS xact,
       (SELECT count(*) FROM pg_stat_activity
        WHERE datname = current_database() AND state = 'active' AND pid <> pg_backend_pid()) AS active
"""


def sample(conn: psycopg.Connection) -> dict[str, int]:
    found = rows(conn, SAMPLE_SQL)[0]
    return {"xact": int(found["xact"] or 0), "active": int(found["active"] or 0)}
