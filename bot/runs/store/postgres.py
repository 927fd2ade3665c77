"""The state store in PostgreSQL: one store shared by several bot replicas (``state.url``).

Same protocol, same answers as the sqlite file (``sqlite.py`` states the
semantics); what changes is that the writers are other processes on other
hosts, so every read-then-write is made safe by the database, not by a
process lock:

* compare-and-set saves lock the run row (``FOR UPDATE``, so the outbox's
  thread/prompt facts survive a save from an older copy) and update it
  ``WHERE state = expect``: the rowcount is the answer;
* a lease is taken in one transaction: its row locked ``FOR UPDATE`` (a free
  lease: ``INSERT … ON CONFLICT DO NOTHING``, looked at again when another
  taker got there first), the holder checked, the row written; ``claim``
  saves the run in that same transaction, so two claimants never both win;
* ``claim_delivery`` is one conditional UPDATE; ``enqueue`` coalesces on a
  key under an advisory lock on that key, skipping a row a sender is
  claiming right now (``FOR UPDATE SKIP LOCKED``);
* a seen event is ``INSERT … ON CONFLICT DO NOTHING``.

Connections come from a psycopg pool in autocommit mode; a multi-statement
write is one visible ``conn.transaction()``. Within it, a nested call on the
same thread (``claim``'s ``alive`` callback asking for a process record)
reuses the transaction's connection, as the sqlite store's re-entrant lock
does. "Now" is Python's (``datetime.now`` in this module, like sqlite's), never
the server's ``now()``: one clock for both stores, and tests can move it.
Timestamps are ``timestamptz`` and come back as ``isoformat()`` in UTC.
The schema is versioned and brought up to date on start (``postgres_schema``).
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from dataclasses import fields
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator
from urllib.parse import urlsplit

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from bot.errors import ConfigError, ConnectionFailed
from bot.pg import APP_NAME, CONNECT_TIMEOUT_S, _why, describe_url
from bot.redact import redact, register
from bot.runs.model import ENVIRONMENT, QUEUED, Approval, Kind, Run, State
from bot.runs.store import Delivery, JobRecord, Lease, OwnerCheck, ProcessRecord, Sample, keep_delivered
from bot.runs.store import postgres_schema
from bot.runs.store.postgres_schema import SCHEMA

EVENT_MEMORY = timedelta(days=1)  # as the sqlite store: Slack stops redelivering after minutes
POOL_SIZE = 10  # executor threads, the outbox, the heartbeat, the scheduler and Slack's handlers share it
POOL_TIMEOUT_S = 30.0  # waiting for a free connection longer than this means the database is gone
TAKE_ATTEMPTS = 100  # a free lease inserted by another taker between two of our statements: look again
KEY_LOCKS = 0x6D62  # pg_advisory_xact_lock(KEY_LOCKS, hashtext(key)): enqueues of one key, one at a time
CONNECT_KWARGS: dict[str, Any] = {"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S,
                                  "application_name": f"{APP_NAME}-state"}

RUNS, APPROVALS, LEASES = f"{SCHEMA}.runs", f"{SCHEMA}.approvals", f"{SCHEMA}.leases"
PROCESSES, EVENTS, JOBS = f"{SCHEMA}.processes", f"{SCHEMA}.seen_events", f"{SCHEMA}.jobs"
VALIDATIONS, DEPLOYS = f"{SCHEMA}.validations", f"{SCHEMA}.deploys"
OUTBOX, SAMPLES = f"{SCHEMA}.outbox", f"{SCHEMA}.samples"

RUN_FIELDS = [f.name for f in fields(Run)]
_RUN_COLUMNS = ", ".join(f'"{c}"' for c in RUN_FIELDS)
_RUN_VALUES = ", ".join(f"%({c})s" for c in RUN_FIELDS)
_RUN_SET = ", ".join(f'"{c}" = %({c})s' for c in RUN_FIELDS if c != "id")
_LEASE_COLUMNS = "name, owner, run_id, acquired_at, expires_at"
_OUTBOX_COLUMNS = "id, kind, thread, key, payload, attempts, next_at, created_at, last_error"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def now_iso() -> str:
    return _now().isoformat()


def _later(seconds: float) -> datetime:
    return _now() + timedelta(seconds=seconds)


def _ts(text: str) -> datetime | None:
    """An ISO-8601 string from the protocol as a timestamptz ("" = NULL; a zoneless one is UTC)."""
    if not text:
        return None
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _iso(moment: datetime | None) -> str:
    """A timestamptz as the protocol's string: ``isoformat()`` in UTC, "" for NULL."""
    return moment.astimezone(timezone.utc).isoformat() if moment else ""


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc)


class PostgresStore:
    def __init__(self, url: str, *, pool_size: int = POOL_SIZE) -> None:
        register(_password(url))
        self.where = describe_url(url)
        self._local = threading.local()
        conn = _connect(url, self.where)
        try:
            postgres_schema.migrate(conn, self.where)
        except psycopg.OperationalError as exc:
            if not _connection_lost(exc):
                raise
            raise _lost(exc, self.where) from None
        finally:
            conn.close()
        self.pool = ConnectionPool(url, min_size=1, max_size=max(pool_size, 2), kwargs=CONNECT_KWARGS, open=False,
                                   name="migrate-bot-state", timeout=POOL_TIMEOUT_S,
                                   check=ConnectionPool.check_connection)
        try:
            self.pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except PoolTimeout:
            self.pool.close()
            raise ConnectionFailed(f"Could not keep connections to the state database ({self.where}, state.url).",
                                   "Check the server's free connection slots and the network.") from None

    def close(self) -> None:
        self.pool.close()

    @contextmanager
    def _cursor(self, *, transaction: bool = False) -> Iterator[psycopg.Cursor[dict[str, Any]]]:
        """A cursor: on this thread's open transaction if there is one, else on a pooled connection.

        With ``transaction``, the block is one transaction (committed when it
        ends, rolled back by an exception); without, each statement commits
        on its own (autocommit), which is all a one-statement write needs.
        """
        held = getattr(self._local, "conn", None)
        if held is not None:
            with held.cursor(row_factory=dict_row) as cur:
                yield cur
            return
        try:
            with self.pool.connection() as conn:
                if not transaction:
                    with conn.cursor(row_factory=dict_row) as cur:
                        yield cur
                    return
                self._local.conn = conn
                try:
                    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
                        yield cur
                finally:
                    self._local.conn = None
        except PoolTimeout:
            raise ConnectionFailed(f"The state database ({self.where}, state.url) gave no connection within "
                                   f"{POOL_TIMEOUT_S:g} s: it is down, unreachable or out of connection slots.",
                                   "Check that the server is up and reachable from the bot.") from None
        except psycopg.OperationalError as exc:
            if not _connection_lost(exc):
                raise
            raise _lost(exc, self.where) from None

    def _one(self, query: str, params: Any = None) -> dict[str, Any] | None:
        with self._cursor() as cur:
            return cur.execute(query, params).fetchone()

    def _all(self, query: str, params: Any = None) -> list[dict[str, Any]]:
        with self._cursor() as cur:
            return cur.execute(query, params).fetchall()

    def _count(self, query: str, params: Any = None) -> int:
        with self._cursor() as cur:
            return cur.execute(query, params).rowcount

    # -- the workflow's ledger -------------------------------------------------------------------
    def record_validation(self, *, fingerprint: str, passed: bool, report_json: str, migrations: list[str],
                          run_id: str | None = None, commit: str | None = None,
                          gate_settings: dict[str, Any] | None = None) -> int:
        row = self._one(f'INSERT INTO {VALIDATIONS} (fingerprint, passed, env, run_id, "commit", migrations, report, '
                        "created_at, gate_settings) VALUES (%s, %s, 'staging', %s, %s, %s, %s, %s, %s) RETURNING id",
                        [fingerprint, passed, run_id or "", commit or "", Jsonb(migrations), redact(report_json),
                         _now(), None if gate_settings is None else Jsonb(gate_settings)])
        return int(row["id"])

    def passing_validation(self, fingerprint: str) -> dict[str, Any] | None:
        """The newest passing validation of ``fingerprint``, as the sqlite store's row: passed 1, migrations as JSON,
        ``gate_settings`` as the dict it was recorded with (None: not recorded)."""
        row = self._one(f'SELECT id, fingerprint, passed, env, run_id, "commit", migrations, report, '
                        f"created_at, gate_settings FROM {VALIDATIONS} WHERE fingerprint = %s AND passed "
                        "ORDER BY id DESC LIMIT 1", [fingerprint])
        if row is None:
            return None
        return {**row, "passed": int(row["passed"]), "migrations": json.dumps(row["migrations"]),
                "created_at": _iso(row["created_at"])}

    def record_deploy(self, *, fingerprint: str, ok: bool, applied: list[str], held: list[str], report_json: str,
                      run_id: str | None = None) -> int:
        row = self._one(f"INSERT INTO {DEPLOYS} (fingerprint, ok, run_id, applied, held, report, created_at) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
                        [fingerprint, ok, run_id or "", Jsonb(applied), Jsonb(held), redact(report_json), _now()])
        return int(row["id"])

    def last_deploy(self, *, since: datetime) -> dict[str, Any] | None:
        """The newest successful deploy that applied something, at or after ``since`` (the hold-back's start)."""
        row = self._one(f"SELECT run_id, created_at, applied, held, fingerprint FROM {DEPLOYS} "
                        "WHERE ok AND applied <> '[]'::jsonb AND created_at >= %s ORDER BY id DESC LIMIT 1",
                        [_utc(since)])
        return None if row is None else {**row, "created_at": _utc(row["created_at"])}

    # -- runs ------------------------------------------------------------------------------------
    def insert_run(self, run: Run) -> Run:
        run.created_at = run.updated_at = now_iso()
        with self._cursor() as cur:
            cur.execute(f"INSERT INTO {RUNS} ({_RUN_COLUMNS}) VALUES ({_RUN_VALUES})", _run_params(run))
        return run

    def save_run(self, run: Run, *, expect: State | None = None) -> bool:
        """Replace the stored run; with ``expect``, only if the stored state is still ``expect``."""
        with self._cursor(transaction=True) as cur:
            return self._save_run(cur, _stamped(run), expect)

    def _save_run(self, cur: psycopg.Cursor, run: Run, expect: State | None) -> bool:
        found = cur.execute(f"SELECT * FROM {RUNS} WHERE id = %s FOR UPDATE", [run.id]).fetchone()
        params = _run_params(keep_delivered(_run(found), run) if found else run)
        if expect is None:
            cur.execute(f"INSERT INTO {RUNS} ({_RUN_COLUMNS}) VALUES ({_RUN_VALUES}) "
                        f"ON CONFLICT (id) DO UPDATE SET {_RUN_SET}", params)
            return True
        cur.execute(f"UPDATE {RUNS} SET {_RUN_SET} WHERE id = %(id)s AND state = %(expect)s",
                    {**params, "expect": expect.value})
        return cur.rowcount == 1

    def get_run(self, run_id: str) -> Run | None:
        found = self._one(f"SELECT * FROM {RUNS} WHERE id = %s", [run_id])
        return _run(found) if found else None

    def run_by_message(self, channel: str, ts: str) -> Run | None:
        """The run a reaction on (channel, ts) is about: the thread's parent or a prompt in it (deploys first)."""
        found = [_run(r) for r in self._all(
            f"SELECT * FROM {RUNS} WHERE channel = %(channel)s AND (thread_ts = %(ts)s OR data->>'prompt_ts' = %(ts)s "
            "OR data->>'override_prompt_ts' = %(ts)s) ORDER BY created_at DESC, seq DESC",
            {"channel": channel, "ts": ts})]
        deploys = [r for r in found if r.kind in (Kind.DEPLOY, Kind.UNBLOCK)]
        return (deploys or found or [None])[0]

    def runs(self, *, states: list[State] | None = None, kinds: list[Kind] | None = None,
             limit: int = 20) -> list[Run]:
        clauses, args = [], []
        for column, values in (("state", states), ("kind", kinds)):
            if values:
                clauses.append(f"{column} = ANY(%s)")
                args.append([v.value for v in values])
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        found = self._all(f"SELECT * FROM {RUNS}{where} ORDER BY created_at DESC, seq DESC LIMIT %s", [*args, limit])
        return [_run(r) for r in found]

    def latest_run(self, kind: Kind | None = None) -> Run | None:
        found = self.runs(kinds=[kind] if kind else None, limit=1)
        return found[0] if found else None

    def queue(self, env: str | None) -> list[Run]:
        """Runs waiting for ``env`` (None: any), oldest first: the order they will start in.

        Includes runs whose thread is still being opened (``data.opening``); the caller skips those.
        A listing, not a taking (``claim`` takes), so nothing is locked or skipped here.
        """
        kinds = [k.value for k in QUEUED if env is None or ENVIRONMENT[k] == env]
        if not kinds:
            return []
        found = self._all(f"SELECT * FROM {RUNS} WHERE state = %s AND kind = ANY(%s) ORDER BY created_at, seq",
                          [State.REQUESTED.value, kinds])
        return [_run(r) for r in found]

    # -- approvals -------------------------------------------------------------------------------
    def put_approval(self, approval: Approval) -> None:
        with self._cursor() as cur:
            cur.execute(f'INSERT INTO {APPROVALS} (run_id, "user", verdict, fingerprint, created_at, revoked_at) '
                        "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (run_id, \"user\") DO UPDATE SET "
                        "verdict = EXCLUDED.verdict, fingerprint = EXCLUDED.fingerprint, "
                        "created_at = EXCLUDED.created_at, revoked_at = EXCLUDED.revoked_at",
                        [approval.run_id, approval.user, approval.verdict, approval.fingerprint,
                         _ts(approval.created_at), _ts(approval.revoked_at)])

    def revoke_approval(self, run_id: str, user: str) -> bool:
        return self._count(f'UPDATE {APPROVALS} SET revoked_at = %s WHERE run_id = %s AND "user" = %s '
                           "AND revoked_at IS NULL", [_now(), run_id, user]) == 1

    def approvals(self, run_id: str) -> list[Approval]:
        found = self._all(f'SELECT run_id, "user", verdict, fingerprint, created_at FROM {APPROVALS} '
                          "WHERE run_id = %s AND revoked_at IS NULL ORDER BY created_at, seq", [run_id])
        return [Approval(**{**r, "created_at": _iso(r["created_at"])}) for r in found]

    # -- leases and processes --------------------------------------------------------------------
    def acquire_lease(self, name: str, owner: str, ttl_s: float, *, run_id: str = "",
                      alive: OwnerCheck | None = None) -> Lease:
        """Take ``name`` for (``owner``, ``run_id``) unless someone else holds it; returns the lease as it stands.

        A holder counts while ``alive`` says its process lives (the lifecycle
        decides that); without ``alive``, while the lease has not expired.
        """
        with self._cursor(transaction=True) as cur:
            return self._take(cur, name, owner, run_id, ttl_s, alive)

    def _take(self, cur: psycopg.Cursor, name: str, owner: str, run_id: str, ttl_s: float,
              alive: OwnerCheck | None) -> Lease:
        """Inside a transaction: lock the lease row, decide, write; the lock is held until the caller commits."""
        for _ in range(TAKE_ATTEMPTS):
            held = cur.execute(f"SELECT {_LEASE_COLUMNS} FROM {LEASES} WHERE name = %s FOR UPDATE", [name]).fetchone()
            if held is None:
                cur.execute(f"INSERT INTO {LEASES} ({_LEASE_COLUMNS}) VALUES (%s, %s, %s, %s, %s) "
                            f"ON CONFLICT (name) DO NOTHING RETURNING {_LEASE_COLUMNS}",
                            [name, owner, run_id, _now(), _later(ttl_s)])
                taken = cur.fetchone()
                if taken is not None:
                    return _lease(taken)
                continue  # another taker inserted it first (and committed): decide against its row
            mine = (held["owner"], held["run_id"]) == (owner, run_id)
            if not mine and (alive(held["owner"]) if alive else held["expires_at"] > _now()):
                return _lease(held)
            acquired = held["acquired_at"] if mine else _now()
            cur.execute(f"UPDATE {LEASES} SET owner = %s, run_id = %s, acquired_at = %s, expires_at = %s "
                        f"WHERE name = %s RETURNING {_LEASE_COLUMNS}", [owner, run_id, acquired, _later(ttl_s), name])
            return _lease(cur.fetchone())
        raise ConnectionFailed(f"The lease {name} kept changing hands in the state database ({self.where}).",
                               "Try again; if it persists, look for a replica stuck in a loop.")

    def claim(self, run: Run, *, expect: State, lease: str, ttl_s: float, alive: OwnerCheck) -> Lease | None:
        """Take ``lease`` for ``run`` and save ``run`` (its new state) in one transaction.

        Returns the lease as it stands (ours when claimed, the holder's when
        not); None when the stored run is no longer ``expect`` — then nothing
        changed. The lease row stays locked until the run is saved and both
        commit, so two claimants (threads or replicas) never both win.
        """
        try:
            with self._cursor(transaction=True) as cur:
                taken = self._take(cur, lease, run.owner, run.id, ttl_s, alive)
                ours = (taken.owner, taken.run_id) == (run.owner, run.id)
                if ours and not self._save_run(cur, _stamped(run), expect):
                    raise _Moved
                return taken
        except _Moved:
            return None

    def release_lease(self, name: str, owner: str) -> None:
        self._count(f"DELETE FROM {LEASES} WHERE name = %s AND owner = %s", [name, owner])

    def leases(self) -> list[Lease]:
        return [_lease(r) for r in self._all(f"SELECT {_LEASE_COLUMNS} FROM {LEASES} ORDER BY name")]

    def lease(self, name: str) -> Lease | None:
        found = self._one(f"SELECT {_LEASE_COLUMNS} FROM {LEASES} WHERE name = %s", [name])
        return _lease(found) if found else None

    def heartbeat(self, owner: str, host: str, pid: int, ttl_s: float) -> None:
        """The process is alive: extend its record and every lease it holds."""
        expires = _later(ttl_s)
        with self._cursor(transaction=True) as cur:
            cur.execute(f"INSERT INTO {PROCESSES} (owner, host, pid, started_at, expires_at) "
                        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (owner) DO UPDATE SET host = EXCLUDED.host, "
                        "pid = EXCLUDED.pid, expires_at = EXCLUDED.expires_at", [owner, host, pid, _now(), expires])
            cur.execute(f"UPDATE {LEASES} SET expires_at = %s WHERE owner = %s", [expires, owner])
            cur.execute(f"DELETE FROM {PROCESSES} WHERE expires_at < %s", [_now() - timedelta(days=1)])

    def forget_process(self, owner: str) -> None:
        """A clean stop: the process and its leases are gone now, not when they would have expired."""
        with self._cursor(transaction=True) as cur:
            cur.execute(f"DELETE FROM {PROCESSES} WHERE owner = %s", [owner])
            cur.execute(f"DELETE FROM {LEASES} WHERE owner = %s", [owner])

    def process(self, owner: str) -> ProcessRecord | None:
        found = self._one(f"SELECT owner, host, pid, started_at, expires_at FROM {PROCESSES} WHERE owner = %s", [owner])
        if found is None:
            return None
        return ProcessRecord(**{**found, "started_at": _iso(found["started_at"]),
                                "expires_at": _iso(found["expires_at"])})

    # -- Slack idempotency -------------------------------------------------------------------------
    def first_time(self, event_id: str) -> bool:
        """True once per id, across replicas too: Slack redelivers events it thinks were not acknowledged."""
        if not event_id:
            return True
        with self._cursor(transaction=True) as cur:
            cur.execute(f"INSERT INTO {EVENTS} (id, seen_at) VALUES (%s, %s) ON CONFLICT (id) DO NOTHING",
                        [event_id, _now()])
            if cur.rowcount == 0:
                return False
            cur.execute(f"DELETE FROM {EVENTS} WHERE seen_at < %s", [_now() - EVENT_MEMORY])
            return True

    # -- the scheduler's job store -----------------------------------------------------------------
    def put_job(self, job: JobRecord) -> None:
        self._count(f"INSERT INTO {JOBS} (id, next_run_time, state) VALUES (%s, %s, %s) ON CONFLICT (id) DO UPDATE "
                    "SET next_run_time = EXCLUDED.next_run_time, state = EXCLUDED.state",
                    [job.id, job.next_run_time, job.state])

    def get_job(self, job_id: str) -> JobRecord | None:
        found = self._one(f"SELECT id, next_run_time, state FROM {JOBS} WHERE id = %s", [job_id])
        return _job(found) if found else None

    def jobs(self, *, due_by: float | None = None) -> list[JobRecord]:
        """All jobs in due order (paused ones last); with ``due_by``, only those due by then."""
        if due_by is None:
            found = self._all(f"SELECT id, next_run_time, state FROM {JOBS} ORDER BY next_run_time NULLS LAST, id")
        else:
            found = self._all(f"SELECT id, next_run_time, state FROM {JOBS} WHERE next_run_time <= %s "
                              "ORDER BY next_run_time, id", [due_by])
        return [_job(r) for r in found]

    def remove_job(self, job_id: str) -> bool:
        return self._count(f"DELETE FROM {JOBS} WHERE id = %s", [job_id]) == 1

    # -- the chat outbox ---------------------------------------------------------------------------
    def enqueue(self, kind: str, payload: dict[str, Any], *, thread: str = "", key: str = "") -> int:
        """Store a message to deliver; with ``key``, it replaces an undelivered unclaimed one with that key
        (keeping that one's place in line): a burst of edits of one message is one edit, the latest.

        Enqueues of one key take turns (an advisory lock on the key), so two
        replicas cannot both queue it; a row a sender is claiming at this very
        moment is skipped (it is being sent), as a claimed one is.
        """
        now = _now()
        with self._cursor(transaction=True) as cur:
            if key:
                cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [KEY_LOCKS, key])
                found = cur.execute(f"SELECT id FROM {OUTBOX} WHERE key = %s AND claimed_by = '' ORDER BY id "
                                    "LIMIT 1 FOR UPDATE SKIP LOCKED", [key]).fetchone()
                if found:
                    cur.execute(f"UPDATE {OUTBOX} SET payload = %s WHERE id = %s", [Jsonb(payload), found["id"]])
                    return int(found["id"])
            row = cur.execute(f"INSERT INTO {OUTBOX} (kind, thread, key, payload, next_at, created_at) "
                              "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                              [kind, thread, key, Jsonb(payload), now, now]).fetchone()
            return int(row["id"])

    def deliveries(self, *, limit: int = 500) -> list[Delivery]:
        """Undelivered messages, oldest first (the order they must reach each thread in).

        Claimed ones included and nothing skipped: the outbox keeps a thread in
        order by seeing the message another sender is sending.
        """
        found = self._all(f"SELECT {_OUTBOX_COLUMNS} FROM {OUTBOX} ORDER BY id LIMIT %s", [limit])
        return [Delivery(**{**r, "next_at": _iso(r["next_at"]), "created_at": _iso(r["created_at"])}) for r in found]

    def claim_delivery(self, delivery_id: int, owner: str, ttl_s: float) -> bool:
        """One sender per message, even with several processes; a claim lapses if its sender dies."""
        return self._count(f"UPDATE {OUTBOX} SET claimed_by = %s, claim_expires = %s WHERE id = %s AND "
                           "(claimed_by = '' OR claimed_by = %s OR claim_expires < %s)",
                           [owner, _later(ttl_s), delivery_id, owner, _now()]) == 1

    def delivered(self, delivery_id: int) -> None:
        self._count(f"DELETE FROM {OUTBOX} WHERE id = %s", [delivery_id])

    def postpone(self, delivery_id: int, *, next_at: datetime, error: str) -> None:
        self._count(f"UPDATE {OUTBOX} SET attempts = attempts + 1, next_at = %s, last_error = %s, claimed_by = '', "
                    "claim_expires = NULL WHERE id = %s", [_utc(next_at), redact(error)[:500], delivery_id])

    # -- time series -----------------------------------------------------------------------------
    def add_sample(self, sample: Sample) -> None:
        self._count(f"INSERT INTO {SAMPLES} (series, source, taken_at, data) VALUES (%s, %s, %s, %s)",
                    [sample.series, sample.source, _ts(sample.taken_at), Jsonb(sample.data)])

    def last_sample(self, series: str, source: str, *, before: datetime) -> Sample | None:
        """The newest sample taken at or before ``before`` (one row: snapshots can be large)."""
        found = self._one(f"SELECT series, source, taken_at, data FROM {SAMPLES} WHERE series = %s AND source = %s "
                          "AND taken_at <= %s ORDER BY taken_at DESC, id DESC LIMIT 1", [series, source, _utc(before)])
        return _sample(found) if found else None

    def first_sample(self, series: str, source: str, *, after: datetime) -> Sample | None:
        """The oldest sample taken at or after ``after``."""
        found = self._one(f"SELECT series, source, taken_at, data FROM {SAMPLES} WHERE series = %s AND source = %s "
                          "AND taken_at >= %s ORDER BY taken_at, id LIMIT 1", [series, source, _utc(after)])
        return _sample(found) if found else None

    def prune_samples(self, series: str, source: str, *, before: datetime) -> int:
        return self._count(f"DELETE FROM {SAMPLES} WHERE series = %s AND source = %s AND taken_at < %s",
                           [series, source, _utc(before)])

    def thin_samples(self, series: str, source: str, *, before: datetime) -> int:
        """Before ``before``, keep only the first sample of each UTC day (old snapshots are kept daily)."""
        args = {"series": series, "source": source, "cutoff": _utc(before)}
        return self._count(
            f"DELETE FROM {SAMPLES} WHERE series = %(series)s AND source = %(source)s AND taken_at < %(cutoff)s "
            f"AND id NOT IN (SELECT min(id) FROM {SAMPLES} WHERE series = %(series)s AND source = %(source)s "
            "AND taken_at < %(cutoff)s GROUP BY (taken_at AT TIME ZONE 'UTC')::date)", args)

    def samples(self, series: str, source: str, *, since: datetime | None = None) -> list[Sample]:
        where, args = "series = %s AND source = %s", [series, source]
        if since is not None:
            where += " AND taken_at >= %s"
            args.append(_utc(since))
        found = self._all(f"SELECT series, source, taken_at, data FROM {SAMPLES} WHERE {where} ORDER BY taken_at, id",
                          args)
        return [_sample(r) for r in found]


class _Moved(Exception):
    """Rolls a claim back: the run moved on before it could be claimed."""


def _password(url: str) -> str | None:
    try:
        return urlsplit(url).password if "://" in url else None
    except ValueError:
        return None


def _connect(url: str, where: str) -> psycopg.Connection:
    """The first connection, made directly so that a refusal is a sentence naming state.url (a pool only times out)."""
    try:
        return psycopg.connect(url, **CONNECT_KWARGS)
    except psycopg.OperationalError as exc:
        reason, next_step = _why(str(exc))
        raise ConnectionFailed(f"Could not connect to the state database ({where}, state.url): {reason}.",
                               next_step) from None
    except psycopg.ProgrammingError as exc:  # a malformed conninfo string
        raise ConfigError(f"state.url is not a PostgreSQL URL ({type(exc).__name__}).",
                          "Expected postgres://user@host:5432/dbname, from a reference such as env:STATE_DATABASE_URL."
                          ) from None


def _connection_lost(exc: psycopg.OperationalError) -> bool:
    """A broken connection or a server going away (SQLSTATE 08…, 57P0…), not a statement's own failure."""
    state = exc.sqlstate or ""
    return not state or state.startswith("08") or state.startswith("57P0")


def _lost(exc: psycopg.OperationalError, where: str) -> ConnectionFailed:
    reason, next_step = _why(str(exc))
    if reason == "the connection failed":
        reason = "the connection was lost"
    return ConnectionFailed(f"The state database ({where}, state.url) stopped answering: {reason}.", next_step)


def _stamped(run: Run) -> Run:
    """The run about to be saved, its ``updated_at`` now (and ``created_at`` too, if it never had one)."""
    run.updated_at = now_iso()
    run.created_at = run.created_at or run.updated_at
    return run


def _run_params(run: Run) -> dict[str, Any]:
    return {**run.__dict__, "kind": run.kind.value, "state": run.state.value, "report": redact(run.report),
            "summary": redact(run.summary), "created_at": _ts(run.created_at), "updated_at": _ts(run.updated_at),
            "scheduled_for": _ts(run.scheduled_for), "data": Jsonb(run.data)}


def _run(row: dict[str, Any]) -> Run:
    facts = {k: row[k] for k in RUN_FIELDS}
    facts.update(kind=Kind(row["kind"]), state=State(row["state"]), data=row["data"] or {},
                 created_at=_iso(row["created_at"]), updated_at=_iso(row["updated_at"]),
                 scheduled_for=_iso(row["scheduled_for"]))
    return Run(**facts)


def _lease(row: dict[str, Any]) -> Lease:
    return Lease(name=row["name"], owner=row["owner"], run_id=row["run_id"], acquired_at=_iso(row["acquired_at"]),
                 expires_at=_iso(row["expires_at"]))


def _job(row: dict[str, Any]) -> JobRecord:
    return JobRecord(id=row["id"], next_run_time=row["next_run_time"], state=bytes(row["state"]))


def _sample(row: dict[str, Any]) -> Sample:
    return Sample(series=row["series"], source=row["source"], taken_at=_iso(row["taken_at"]), data=row["data"])
