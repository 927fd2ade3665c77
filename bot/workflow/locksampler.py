"""Sampling another backend's relation locks from a side connection, while an autocommit statement runs.

Statements PostgreSQL refuses in a transaction block (CREATE INDEX
CONCURRENTLY, VACUUM, …) cannot be wrapped in a transaction of their own, so
the trace cannot read their locks from their own backend before they are
released: a thread reads them from outside every few milliseconds instead,
over one side connection the trace keeps from statement to statement.
"""

from __future__ import annotations

import threading

import psycopg
from psycopg.conninfo import make_conninfo

Lock = tuple[int, str]  # (table oid, mode)
LOCKS_SQL = ("SELECT relation::bigint AS oid, mode FROM pg_locks "
             "WHERE pid = %s AND locktype = 'relation' AND granted AND relation IS NOT NULL")


def side_connection(conn: psycopg.Connection) -> psycopg.Connection:
    """A second connection to the same database, for sampling the first one's locks."""
    info = conn.info
    return psycopg.connect(make_conninfo(info.dsn, password=info.password or None,
                                         application_name="migrate-bot-trace"), autocommit=True)


class LockSampler:
    """Samples another backend's relation locks from a side connection while an autocommit statement runs."""

    def __init__(self, conn: psycopg.Connection, interval_s: float, side: psycopg.Connection) -> None:
        self.found: set[Lock] = set()
        self._conn, self._pid, self._interval = conn, conn.info.backend_pid, interval_s
        self._stop = threading.Event()
        self._side = side  # the trace's, reused from statement to statement (connecting costs more than sampling)
        self.broken = False
        self._thread = threading.Thread(target=self._run, name="migrate-bot-lock-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set() and not self._conn.closed:
                for oid, mode in self._side.execute(LOCKS_SQL, (self._pid,)).fetchall():
                    self.found.add((int(oid), mode))
                self._stop.wait(self._interval)
        except psycopg.Error:
            self.broken = True

    def stop(self) -> set[Lock]:
        self._stop.set()
        self._thread.join(timeout=10)
        return set(self.found)
