"""The state store in one sqlite-utils file: the default for one bot process, the CLI and `make demo`.

Every write commits before it returns (the run lifecycle announces only what
is stored). WAL mode lets the CLI and a running bot share the file; one
connection serves the process's threads, serialised by a lock, and writes
that read-then-write (compare-and-set, leases) run inside one transaction.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import sqlite_utils
from sqlite_utils.db import NotFoundError

from bot.errors import ConfigError
from bot.redact import redact
from bot.runs.model import ENVIRONMENT, QUEUED, Approval, Kind, Run, State
from bot.runs.store import Delivery, JobRecord, Lease, OwnerCheck, ProcessRecord, Sample, keep_delivered

EVENT_MEMORY = timedelta(days=1)  # Slack stops redelivering after minutes; a day of ids is plenty


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def _later(seconds: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).isoformat()


def _unusable(path: Path, exc: Exception) -> ConfigError:
    """The state file cannot be opened: a sentence that says where and what to do, never a bug report."""
    reason = getattr(exc, "strerror", None) or str(exc)
    if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
        return ConfigError(f"The state store {path} is not a migrate-bot state file (or it is damaged).",
                           "Point state.path (or MIGRATE_BOT_STATE) at the right file; move a damaged one aside "
                           "and keep it — runs, approvals and validations live there.")
    return ConfigError(f"Cannot open the state store {path} ({reason}).",
                       "Set state.path (or MIGRATE_BOT_STATE) to a file in a directory the bot can write.")


RUN_COLUMNS = {"id": str, "kind": str, "state": str, "requested_by": str, "channel": str, "thread_ts": str,
               "fingerprint": str, "commit": str, "ref": str, "parent": str, "summary": str, "report": str,
               "created_at": str, "updated_at": str, "scheduled_for": str, "owner": str, "data": str}


class SqliteStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            if str(path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite_utils.Database(sqlite3.connect(str(path), check_same_thread=False, timeout=15,
                                                            isolation_level=None))
            if str(path) != ":memory:":
                self.db.enable_wal()
            with self._write():
                self._schema()
        except (OSError, sqlite3.Error) as exc:
            raise _unusable(self.path, exc) from None

    def close(self) -> None:
        with self._lock:
            self.db.conn.close()

    def _write(self) -> "_Transaction":
        """One write transaction (BEGIN IMMEDIATE), so a read-then-write cannot interleave with another process."""
        return _Transaction(self)

    def _schema(self) -> None:
        self.db["validations"].create(
            {"id": int, "fingerprint": str, "passed": int, "env": str, "run_id": str, "commit": str,
             "migrations": str, "report": str, "created_at": str, "gate_settings": str},
            pk="id", if_not_exists=True,
        )
        if "gate_settings" not in self.db["validations"].columns_dict:  # files written before it was recorded
            self.db["validations"].add_column("gate_settings", str)
        self.db["validations"].create_index(["fingerprint"], if_not_exists=True)
        self.db["deploys"].create(
            {"id": int, "fingerprint": str, "ok": int, "run_id": str, "applied": str, "held": str, "report": str,
             "created_at": str},
            pk="id", if_not_exists=True,
        )
        self.db["runs"].create(RUN_COLUMNS, pk="id", if_not_exists=True)
        existing = set(self.db["runs"].columns_dict)
        for column in ("scheduled_for", "owner"):  # state files written before deploy windows existed
            if column not in existing:
                self.db["runs"].add_column(column, str, not_null_default="")
        self.db["runs"].create_index(["thread_ts"], if_not_exists=True)
        self.db["runs"].create_index(["state"], if_not_exists=True)
        self.db["approvals"].create(
            {"run_id": str, "user": str, "verdict": str, "fingerprint": str, "created_at": str, "revoked_at": str},
            pk=("run_id", "user"), if_not_exists=True,
        )
        self.db["leases"].create({"name": str, "owner": str, "run_id": str, "acquired_at": str, "expires_at": str},
                                 pk="name", if_not_exists=True)
        self.db["processes"].create({"owner": str, "host": str, "pid": int, "started_at": str, "expires_at": str},
                                    pk="owner", if_not_exists=True)
        self.db["seen_events"].create({"id": str, "seen_at": str}, pk="id", if_not_exists=True)
        self.db["jobs"].create({"id": str, "next_run_time": float, "state": bytes}, pk="id", if_not_exists=True)
        self.db["jobs"].create_index(["next_run_time"], if_not_exists=True)
        self.db["outbox"].create({"id": int, "kind": str, "thread": str, "key": str, "payload": str, "attempts": int,
                                  "next_at": str, "created_at": str, "last_error": str, "claimed_by": str,
                                  "claim_expires": str}, pk="id", if_not_exists=True)
        self.db["samples"].create({"id": int, "series": str, "source": str, "taken_at": str, "data": str},
                                  pk="id", if_not_exists=True)
        self.db["samples"].create_index(["series", "source", "taken_at"], if_not_exists=True)
        if "env_locks" in self.db.table_names():  # replaced by leases (owner + expiry)
            self.db["env_locks"].drop()

    def _rows(self, table: str, where: str | None = None, args: list[Any] | None = None, **kw: Any) -> list[dict]:
        with self._lock:
            return list(self.db[table].rows_where(where, args or [], **kw))

    # -- the workflow's ledger -------------------------------------------------------------------
    def record_validation(self, *, fingerprint: str, passed: bool, report_json: str, migrations: list[str],
                          run_id: str | None = None, commit: str | None = None,
                          gate_settings: dict[str, Any] | None = None) -> int:
        with self._write():
            row = self.db["validations"].insert(
                {"fingerprint": fingerprint, "passed": int(passed), "env": "staging", "run_id": run_id or "",
                 "commit": commit or "", "migrations": json.dumps(migrations), "report": redact(report_json),
                 "created_at": now_iso(),
                 "gate_settings": None if gate_settings is None else json.dumps(gate_settings, sort_keys=True)}
            )
            return int(row.last_pk)

    def passing_validation(self, fingerprint: str) -> dict[str, Any] | None:
        """The newest passing validation; ``gate_settings`` as the dict it was recorded with (None: not recorded)."""
        found = self._rows("validations", "fingerprint = ? AND passed = 1", [fingerprint], order_by="id desc",
                           limit=1)
        if not found:
            return None
        row = found[0]
        return {**row, "gate_settings": json.loads(row["gate_settings"]) if row.get("gate_settings") else None}

    def record_deploy(self, *, fingerprint: str, ok: bool, applied: list[str], held: list[str], report_json: str,
                      run_id: str | None = None) -> int:
        with self._write():
            row = self.db["deploys"].insert(
                {"fingerprint": fingerprint, "ok": int(ok), "run_id": run_id or "", "applied": json.dumps(applied),
                 "held": json.dumps(held), "report": redact(report_json), "created_at": now_iso()}
            )
            return int(row.last_pk)

    def last_deploy(self, *, since: datetime) -> dict[str, Any] | None:
        """The newest successful deploy that applied something, at or after ``since`` (the hold-back's start)."""
        found = self._rows("deploys", "ok = 1 AND applied != '[]' AND created_at >= ?",
                           [since.astimezone(timezone.utc).isoformat()], order_by="id desc", limit=1)
        if not found:
            return None
        row = found[0]
        return {"run_id": row["run_id"], "created_at": datetime.fromisoformat(row["created_at"]),
                "applied": json.loads(row["applied"]), "held": json.loads(row["held"]),
                "fingerprint": row["fingerprint"]}

    # -- runs ------------------------------------------------------------------------------------
    def insert_run(self, run: Run) -> Run:
        run.created_at = run.updated_at = now_iso()
        with self._write():
            self.db["runs"].insert(_row(run), pk="id")
        return run

    def save_run(self, run: Run, *, expect: State | None = None) -> bool:
        """Replace the stored run; with ``expect``, only if the stored state is still ``expect``."""
        run.updated_at = now_iso()
        run.created_at = run.created_at or run.updated_at
        with self._write():
            stored = self._get_run(run.id)
            row = _row(keep_delivered(stored, run) if stored else run)
            if expect is None:
                self.db["runs"].upsert(row, pk="id")
                return True
            cursor = self.db.execute(
                "UPDATE runs SET " + ", ".join(f"[{k}] = ?" for k in row) + " WHERE id = ? AND state = ?",
                [*row.values(), run.id, expect.value],
            )
            return cursor.rowcount == 1

    def get_run(self, run_id: str) -> Run | None:
        with self._lock:
            return self._get_run(run_id)

    def _get_run(self, run_id: str) -> Run | None:
        try:
            return _run_from_row(self.db["runs"].get(run_id))
        except NotFoundError:
            return None

    def run_by_message(self, channel: str, ts: str) -> Run | None:
        """The run a reaction on (channel, ts) is about: the thread's parent or a prompt in it (deploys first)."""
        found = self._rows("runs", "channel = ? AND (thread_ts = ? OR json_extract(data, '$.prompt_ts') = ? "
                           "OR json_extract(data, '$.override_prompt_ts') = ?)",
                           [channel, ts, ts, ts], order_by="created_at desc")
        runs = [_run_from_row(r) for r in found]
        deploys = [r for r in runs if r.kind in (Kind.DEPLOY, Kind.UNBLOCK)]
        return (deploys or runs or [None])[0]

    def runs(self, *, states: list[State] | None = None, kinds: list[Kind] | None = None,
             limit: int = 20) -> list[Run]:
        clauses, args = [], []
        for column, values in (("state", states), ("kind", kinds)):
            if values:
                clauses.append(f"{column} IN (" + ", ".join("?" for _ in values) + ")")
                args += [v.value for v in values]
        found = self._rows("runs", " AND ".join(clauses) or None, args, order_by="created_at desc, rowid desc",
                           limit=limit)
        return [_run_from_row(r) for r in found]

    def latest_run(self, kind: Kind | None = None) -> Run | None:
        found = self.runs(kinds=[kind] if kind else None, limit=1)
        return found[0] if found else None

    def queue(self, env: str | None) -> list[Run]:
        """Runs waiting for ``env`` (None: any), oldest first: the order they will start in.

        Includes runs whose thread is still being opened (``data.opening``); the caller skips those.
        """
        kinds = [k for k in QUEUED if env is None or ENVIRONMENT[k] == env]
        if not kinds:
            return []
        found = self._rows("runs", "state = ? AND kind IN (" + ", ".join("?" for _ in kinds) + ")",
                           [State.REQUESTED.value, *[k.value for k in kinds]], order_by="created_at, rowid")
        return [_run_from_row(r) for r in found]

    # -- approvals -------------------------------------------------------------------------------
    def put_approval(self, approval: Approval) -> None:
        with self._write():
            self.db["approvals"].upsert(approval.__dict__, pk=("run_id", "user"))

    def revoke_approval(self, run_id: str, user: str) -> bool:
        with self._write():
            cursor = self.db.execute("UPDATE approvals SET revoked_at = ? WHERE run_id = ? AND user = ? "
                                     "AND revoked_at = ''", [now_iso(), run_id, user])
            return cursor.rowcount == 1

    def approvals(self, run_id: str) -> list[Approval]:
        found = self._rows("approvals", "run_id = ? AND revoked_at = ''", [run_id], order_by="created_at")
        return [Approval(**r) for r in found]

    # -- leases and processes --------------------------------------------------------------------
    def acquire_lease(self, name: str, owner: str, ttl_s: float, *, run_id: str = "",
                      alive: OwnerCheck | None = None) -> Lease:
        """Take ``name`` for (``owner``, ``run_id``) unless someone else holds it; returns the lease as it stands.

        A holder counts while ``alive`` says its process lives (the lifecycle
        decides that); without ``alive``, while the lease has not expired.
        """
        with self._write():
            held = self._lease(name)
            mine = held is not None and (held.owner, held.run_id) == (owner, run_id)
            if held and not mine and (alive(held.owner) if alive else held.expires_at > now_iso()):
                return held
            if held and mine:
                row = {**held.__dict__, "expires_at": _later(ttl_s)}
            else:
                row = {"name": name, "owner": owner, "run_id": run_id, "acquired_at": now_iso(),
                       "expires_at": _later(ttl_s)}
            self.db["leases"].upsert(row, pk="name")
            return Lease(**row)

    def claim(self, run: Run, *, expect: State, lease: str, ttl_s: float, alive: OwnerCheck) -> Lease | None:
        """Take ``lease`` for ``run`` and save ``run`` (its new state) in one transaction.

        Returns the lease as it stands (ours when claimed, the holder's when
        not); None when the stored run is no longer ``expect`` — then nothing
        changed. One transaction, so two claimants can never both win, nor
        can a losing claimant release the winner's lease.
        """
        try:
            with self._write():
                taken = self.acquire_lease(lease, run.owner, ttl_s, run_id=run.id, alive=alive)
                if (taken.owner, taken.run_id) == (run.owner, run.id) and not self.save_run(run, expect=expect):
                    raise _Moved
                return taken
        except _Moved:
            return None

    def release_lease(self, name: str, owner: str) -> None:
        with self._write():
            self.db.execute("DELETE FROM leases WHERE name = ? AND owner = ?", [name, owner])

    def leases(self) -> list[Lease]:
        return [Lease(**r) for r in self._rows("leases", order_by="name")]

    def lease(self, name: str) -> Lease | None:
        with self._lock:
            return self._lease(name)

    def _lease(self, name: str) -> Lease | None:
        found = list(self.db["leases"].rows_where("name = ?", [name]))
        return Lease(**found[0]) if found else None

    def heartbeat(self, owner: str, host: str, pid: int, ttl_s: float) -> None:
        """The process is alive: extend its record and every lease it holds."""
        expires = _later(ttl_s)
        with self._write():
            known = list(self.db["processes"].rows_where("owner = ?", [owner]))
            started = known[0]["started_at"] if known else now_iso()
            self.db["processes"].upsert({"owner": owner, "host": host, "pid": pid, "started_at": started,
                                         "expires_at": expires}, pk="owner")
            self.db.execute("UPDATE leases SET expires_at = ? WHERE owner = ?", [expires, owner])
            cutoff = (datetime.now(timezone.utc) - timedelta(days=1)).isoformat()
            self.db.execute("DELETE FROM processes WHERE expires_at < ?", [cutoff])

    def forget_process(self, owner: str) -> None:
        """A clean stop: the process and its leases are gone now, not when they would have expired."""
        with self._write():
            self.db.execute("DELETE FROM processes WHERE owner = ?", [owner])
            self.db.execute("DELETE FROM leases WHERE owner = ?", [owner])

    def process(self, owner: str) -> ProcessRecord | None:
        found = self._rows("processes", "owner = ?", [owner])
        return ProcessRecord(**found[0]) if found else None

    # -- Slack idempotency -------------------------------------------------------------------------
    def first_time(self, event_id: str) -> bool:
        """True once per id: Slack redelivers events it thinks were not acknowledged."""
        if not event_id:
            return True
        with self._write():
            try:
                self.db["seen_events"].insert({"id": event_id, "seen_at": now_iso()})
            except sqlite3.IntegrityError:
                return False
            cutoff = (datetime.now(timezone.utc) - EVENT_MEMORY).isoformat()
            self.db.execute("DELETE FROM seen_events WHERE seen_at < ?", [cutoff])
            return True

    # -- the scheduler's job store -----------------------------------------------------------------
    def put_job(self, job: JobRecord) -> None:
        with self._write():
            self.db["jobs"].upsert({"id": job.id, "next_run_time": job.next_run_time, "state": job.state}, pk="id")

    def get_job(self, job_id: str) -> JobRecord | None:
        found = self._rows("jobs", "id = ?", [job_id])
        return JobRecord(**found[0]) if found else None

    def jobs(self, *, due_by: float | None = None) -> list[JobRecord]:
        """All jobs in due order (paused ones last); with ``due_by``, only those due by then."""
        if due_by is None:
            found = self._rows("jobs", order_by="next_run_time IS NULL, next_run_time, id")
        else:
            found = self._rows("jobs", "next_run_time <= ?", [due_by], order_by="next_run_time, id")
        return [JobRecord(**r) for r in found]

    def remove_job(self, job_id: str) -> bool:
        with self._write():
            return self.db.execute("DELETE FROM jobs WHERE id = ?", [job_id]).rowcount == 1

    # -- the chat outbox ---------------------------------------------------------------------------
    def enqueue(self, kind: str, payload: dict[str, Any], *, thread: str = "", key: str = "") -> int:
        """Store a message to deliver; with ``key``, it replaces an undelivered unclaimed one with that key
        (keeping that one's place in line): a burst of edits of one message is one edit, the latest."""
        now = now_iso()
        with self._write():
            if key:
                found = list(self.db.execute("SELECT id FROM outbox WHERE key = ? AND claimed_by = '' LIMIT 1",
                                             [key]).fetchall())
                if found:
                    self.db.execute("UPDATE outbox SET payload = ? WHERE id = ?", [json.dumps(payload), found[0][0]])
                    return int(found[0][0])
            row = self.db["outbox"].insert({"kind": kind, "thread": thread, "key": key, "payload": json.dumps(payload),
                                            "attempts": 0, "next_at": now, "created_at": now, "last_error": "",
                                            "claimed_by": "", "claim_expires": ""})
            return int(row.last_pk)

    def deliveries(self, *, limit: int = 500) -> list[Delivery]:
        """Undelivered messages, oldest first (the order they must reach each thread in)."""
        return [Delivery(id=r["id"], kind=r["kind"], thread=r["thread"], key=r["key"],
                         payload=json.loads(r["payload"]), attempts=r["attempts"], next_at=r["next_at"],
                         created_at=r["created_at"], last_error=r["last_error"])
                for r in self._rows("outbox", order_by="id", limit=limit)]

    def claim_delivery(self, delivery_id: int, owner: str, ttl_s: float) -> bool:
        """One sender per message, even with several processes; a claim lapses if its sender dies."""
        with self._write():
            return self.db.execute(
                "UPDATE outbox SET claimed_by = ?, claim_expires = ? WHERE id = ? AND "
                "(claimed_by = '' OR claimed_by = ? OR claim_expires < ?)",
                [owner, _later(ttl_s), delivery_id, owner, now_iso()]).rowcount == 1

    def delivered(self, delivery_id: int) -> None:
        with self._write():
            self.db.execute("DELETE FROM outbox WHERE id = ?", [delivery_id])

    def postpone(self, delivery_id: int, *, next_at: datetime, error: str) -> None:
        with self._write():
            self.db.execute("UPDATE outbox SET attempts = attempts + 1, next_at = ?, last_error = ?, claimed_by = '', "
                            "claim_expires = '' WHERE id = ?",
                            [next_at.astimezone(timezone.utc).isoformat(), redact(error)[:500], delivery_id])

    # -- time series -----------------------------------------------------------------------------
    def add_sample(self, sample: Sample) -> None:
        with self._write():
            self.db["samples"].insert({"series": sample.series, "source": sample.source, "taken_at": sample.taken_at,
                                       "data": json.dumps(sample.data)})

    def last_sample(self, series: str, source: str, *, before: datetime) -> Sample | None:
        """The newest sample taken at or before ``before`` (one row: snapshots can be large)."""
        found = self._rows("samples", "series = ? AND source = ? AND taken_at <= ?",
                           [series, source, before.astimezone(timezone.utc).isoformat()], order_by="taken_at desc",
                           limit=1)
        return _sample(found[0]) if found else None

    def first_sample(self, series: str, source: str, *, after: datetime) -> Sample | None:
        """The oldest sample taken at or after ``after``."""
        found = self._rows("samples", "series = ? AND source = ? AND taken_at >= ?",
                           [series, source, after.astimezone(timezone.utc).isoformat()], order_by="taken_at",
                           limit=1)
        return _sample(found[0]) if found else None

    def prune_samples(self, series: str, source: str, *, before: datetime) -> int:
        with self._write():
            return self.db.execute("DELETE FROM samples WHERE series = ? AND source = ? AND taken_at < ?",
                                   [series, source, before.astimezone(timezone.utc).isoformat()]).rowcount

    def thin_samples(self, series: str, source: str, *, before: datetime) -> int:
        """Before ``before``, keep only the first sample of each UTC day (old snapshots are kept daily)."""
        cutoff = before.astimezone(timezone.utc).isoformat()
        with self._write():
            return self.db.execute(
                "DELETE FROM samples WHERE series = ? AND source = ? AND taken_at < ? AND id NOT IN ("
                " SELECT min(id) FROM samples WHERE series = ? AND source = ? AND taken_at < ?"
                " GROUP BY substr(taken_at, 1, 10))", [series, source, cutoff, series, source, cutoff]).rowcount

    def samples(self, series: str, source: str, *, since: datetime | None = None) -> list[Sample]:
        where, args = "series = ? AND source = ?", [series, source]
        if since is not None:
            where += " AND taken_at >= ?"
            args.append(since.astimezone(timezone.utc).isoformat())
        return [_sample(r) for r in self._rows("samples", where, args, order_by="taken_at")]


class _Moved(Exception):
    """Rolls a claim back: the run moved on before it could be claimed."""


class _Transaction:
    """``with store._write():`` — the process lock plus one sqlite write transaction (re-entrant)."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.outer = False

    def __enter__(self) -> None:
        self.store._lock.acquire()
        self.outer = not self.store.db.conn.in_transaction
        if self.outer:
            self.store.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        try:
            if self.outer:
                self.store.db.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self.store._lock.release()


def _sample(row: dict[str, Any]) -> Sample:
    return Sample(series=row["series"], source=row["source"], taken_at=row["taken_at"], data=json.loads(row["data"]))


def _row(run: Run) -> dict[str, Any]:
    row = dict(run.__dict__)
    row.update(kind=run.kind.value, state=run.state.value, data=json.dumps(run.data),
               report=redact(run.report), summary=redact(run.summary))
    return row


def _run_from_row(row: dict[str, Any]) -> Run:
    data = {k: v for k, v in row.items() if k in RUN_COLUMNS}
    data["kind"] = Kind(data["kind"])
    data["state"] = State(data["state"])
    data["data"] = json.loads(data.get("data") or "{}")
    for column in ("scheduled_for", "owner"):
        data[column] = data.get(column) or ""
    return Run(**data)
