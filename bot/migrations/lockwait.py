"""Waiting for a lock without stalling the application: an escalating lock_timeout, and who is in the way.

A DDL statement waiting for a lock sits in the table's lock queue, and every
query that arrives after it queues behind it: the application stalls for as
long as the statement waits. ``lock_timeout`` bounds one wait; GitLab's
``with_lock_retries`` starts with a short one and lengthens it only after
repeated timeouts. Here (``LockPolicy``):

* the first attempts wait at most ``FIRST_TIMEOUT_S`` (100 ms), with jittered
  pauses about twice as long as the attempt between them (at most
  ``gate.lock_backoff_s``), so a queued statement holds the application up
  by at most that, a third of the time;
* the timeout doubles rung by rung, each rung an equal share of the wait
  budget (``gate.lock_wait_s``), up to ``gate.lock_timeout_s`` on the last
  rung — for a crowd of short transactions a longer wait is what gets the
  lock at all;
* the budget bounds the whole wait (and ``gate.lock_retries``, when set, the
  count); then the statement fails with 55P03 as before.

Statements PostgreSQL refuses in a transaction block (CREATE INDEX
CONCURRENTLY and the like) wait at the full ``lock_timeout`` from the first
attempt: their locks do not block the application's reads and writes, their
waits are for older transactions to end, and a timeout throws their work away.

While a statement waits, ``BlockerProbe`` reads ``pg_blocking_pids`` of our
backend from a side connection — at most twice per attempt, since the
function takes the lock manager's locks — so the events name the sessions in
the way: pid, application_name, state and for how long, never their query
text. Every retry is a ``lock_wait`` event (logs, progress); the ones worth a
message in the run's thread — the first, each longer timeout, other sessions
in the way — are ``lock_retry`` events, a handful per statement however long
the wait.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import psycopg
from psycopg.conninfo import make_conninfo

from bot.pg import rows, run_of

FIRST_TIMEOUT_S = 0.1
DEFAULT_WAIT_S = 90.0  # a reader of a minute and more still lets the deploy through, at short stalls
PAUSE_FACTOR = 2.0  # a pause is about twice the attempt it follows…
JITTER = (0.5, 1.5)  # …times a random factor in this range
PROBE_FIRST_S = 0.05  # the first look at who blocks us, this long into an attempt…
PROBE_LATE = 0.8  # …and, if nothing was seen yet, at this fraction of the attempt's lock_timeout
SIDE_TIMEOUTS = "-c statement_timeout=1000 -c lock_timeout=500"
BLOCKERS_SQL = """
SELECT a.pid, coalesce(a.application_name, '') AS application_name, coalesce(a.state, '') AS state,
       coalesce(extract(epoch FROM now() - coalesce(a.xact_start, a.query_start, a.backend_start)), 0)::int
           AS seconds
FROM pg_stat_activity a
WHERE a.pid = ANY(pg_blocking_pids(%s))
ORDER BY a.xact_start NULLS LAST, a.pid
"""


@dataclass(frozen=True)
class LockPolicy:
    """How long each attempt may wait for its locks, how long to pause between attempts, when to give up (pure)."""

    max_timeout_s: float = 2.0  # gate.lock_timeout_s: the last rung
    budget_s: float = DEFAULT_WAIT_S  # gate.lock_wait_s: attempts and pauses together, per statement
    max_retries: int = 0  # gate.lock_retries: at most this many retries; 0 = as many as the budget allows
    max_pause_s: float = 0.5  # gate.lock_backoff_s: the longest pause between two attempts (before jitter)
    first_timeout_s: float = FIRST_TIMEOUT_S

    def rungs(self) -> tuple[float, ...]:
        """The lock_timeouts in order: 0.1, 0.2, 0.4 … doubling, then ``max_timeout_s``."""
        found: list[float] = []
        timeout = min(self.first_timeout_s, self.max_timeout_s)
        while timeout < self.max_timeout_s * 0.999:
            found.append(timeout)
            timeout *= 2
        return (*found, self.max_timeout_s)

    def timeout_s(self, waited_s: float, escalate: bool = True) -> float:
        """The lock_timeout of an attempt that starts ``waited_s`` into the wait."""
        rungs = self.rungs()
        if not escalate or self.budget_s <= 0 or len(rungs) == 1:
            return self.max_timeout_s
        share = self.budget_s / len(rungs)
        return rungs[min(int(waited_s / share), len(rungs) - 1)]

    def pause_s(self, timeout_s: float, rng: random.Random) -> float:
        """The pause after an attempt of ``timeout_s``: twice as long, at most ``max_pause_s``, jittered.

        The application queues behind us only while we wait, so pausing twice
        as long as we wait keeps us out of its way two thirds of the time.
        """
        return min(PAUSE_FACTOR * timeout_s, self.max_pause_s) * rng.uniform(*JITTER)


@dataclass
class LockWait:
    """One statement's (or one transactional file's) wait for its locks, attempt after attempt."""

    policy: LockPolicy
    escalate: bool = True
    rng: random.Random = field(default_factory=random.Random)
    clock: Callable[[], float] = time.monotonic
    retries: int = 0
    started: float = field(init=False)
    announced: tuple[float, frozenset[int]] = field(init=False, default=(0.0, frozenset()))

    def __post_init__(self) -> None:
        self.started = self.clock()

    def waited_s(self) -> float:
        return self.clock() - self.started

    def timeout_s(self, ahead_s: float = 0.0) -> float:
        return self.policy.timeout_s(self.waited_s() + ahead_s, self.escalate)

    def next_pause(self, timeout_s: float) -> float | None:
        """After a lock timeout: the pause before the next attempt, or None when the count or the budget is spent."""
        if self.policy.max_retries and self.retries >= self.policy.max_retries:
            return None
        pause = self.policy.pause_s(timeout_s, self.rng)
        if self.waited_s() + pause >= self.policy.budget_s:
            return None
        self.retries += 1
        return pause

    def announce(self, next_timeout_s: float, blockers: list[dict[str, Any]] | None = None) -> bool:
        """Whether this retry is worth telling people: the first one, each time the timeout grows, and when
        other sessions are seen in the way."""
        pids = frozenset(int(b["pid"]) for b in blockers or [])
        timeout, seen = self.announced
        if self.retries == 1 or next_timeout_s != timeout or (pids and pids != seen):
            self.announced = (next_timeout_s, pids or seen)
            return True
        return False


def blocker_text(blocker: dict[str, Any]) -> str:
    """"pid 4242 (billing-report, idle in transaction for 25 s)", or the run for one of ours (pure)."""
    run = blocker.get("run") or ""
    who = f"run {run}" if run else (blocker.get("application_name") or "no application_name")
    return f"pid {blocker.get('pid')} ({who}, {blocker.get('state') or 'unknown state'} for {blocker.get('seconds', 0)} s)"


class BlockerProbe:
    """Who blocks our backend, read from a side connection while a statement runs (opened on first need)."""

    def __init__(self, conn: psycopg.Connection, app_name: str) -> None:
        self._conn, self._app_name = conn, app_name
        self._pid = conn.info.backend_pid
        self._side: psycopg.Connection | None = None
        self._broken = self._closed = False
        self.last: list[dict[str, Any]] = []  # the latest sessions seen in our way (this wait)

    def reset(self) -> None:
        self.last = []

    def watching(self, timeout_s: float) -> "_Watch":
        return _Watch(self, timeout_s)

    def probe(self) -> list[dict[str, Any]]:
        if self._broken:
            return []
        try:
            if self._side is None:
                info = self._conn.info
                self._side = psycopg.connect(make_conninfo(
                    info.dsn, password=info.password or None, application_name=self._app_name,
                    connect_timeout="2", options=SIDE_TIMEOUTS), autocommit=True)
                if self._closed:  # the migration ended while we connected
                    self.close()
                    return []
            found = rows(self._side, BLOCKERS_SQL, (self._pid,))
        except psycopg.Error:
            self._broken = True  # no second try: naming blockers is a courtesy, never a reason to fail
            return []
        for row in found:
            row["run"] = run_of(row["application_name"])
        if found:
            self.last = found
        return found

    def close(self) -> None:
        self._closed = True
        side, self._side = self._side, None
        if side is not None:
            side.close()


class _Watch:
    """Looks once shortly after the statement starts, once more late in its lock_timeout, until it ends."""

    def __init__(self, probe: BlockerProbe, timeout_s: float) -> None:
        self._probe, self._timeout_s = probe, timeout_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="migrate-bot-blockers", daemon=True)

    def __enter__(self) -> "_Watch":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)

    def _run(self) -> None:
        first = min(PROBE_FIRST_S, self._timeout_s / 2)
        for delay in (first, max(self._timeout_s * PROBE_LATE - first, 0.0)):
            if self._stop.wait(delay) or self._probe.probe():
                return
