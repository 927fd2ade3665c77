"""The bot's own state: validations, runs, approvals — in one sqlite-utils file.

Everything that must survive a restart lives here, and every write commits
before the caller announces anything (the run lifecycle's rule). SQLite in WAL
mode lets the CLI and a running bot share the file.
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
from bot.runs.model import Approval, Kind, Run, State


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _unusable(path: Path, exc: Exception) -> ConfigError:
    """The state file cannot be opened: a sentence that says where and what to do, never a bug report."""
    reason = getattr(exc, "strerror", None) or str(exc)
    if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
        return ConfigError(f"The state store {path} is not a migrate-bot state file (or it is damaged).",
                           "Point state.path (or MIGRATE_BOT_STATE) at the right file; move a damaged one aside "
                           "and keep it — runs, approvals and validations live there.")
    return ConfigError(f"Cannot open the state store {path} ({reason}).",
                       "Set state.path (or MIGRATE_BOT_STATE) to a file in a directory the bot can write.")


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            if str(path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            # one connection shared by the executor's threads, serialised by self._lock
            self.db = sqlite_utils.Database(sqlite3.connect(str(path), check_same_thread=False, timeout=15))
            if str(path) != ":memory:":
                self.db.enable_wal()
            self._schema()
        except (OSError, sqlite3.Error) as exc:
            raise _unusable(self.path, exc) from None

    def _schema(self) -> None:
        self.db["validations"].create(
            {"id": int, "fingerprint": str, "passed": int, "env": str, "run_id": str, "commit": str,
             "migrations": str, "report": str, "created_at": str},
            pk="id", if_not_exists=True,
        )
        self.db["validations"].create_index(["fingerprint"], if_not_exists=True)
        self.db["deploys"].create(
            {"id": int, "fingerprint": str, "ok": int, "run_id": str, "applied": str, "held": str, "report": str,
             "created_at": str},
            pk="id", if_not_exists=True,
        )
        self.db["runs"].create(
            {"id": str, "kind": str, "state": str, "requested_by": str, "channel": str, "thread_ts": str,
             "fingerprint": str, "commit": str, "ref": str, "parent": str, "summary": str, "report": str,
             "created_at": str, "updated_at": str, "data": str},
            pk="id", if_not_exists=True,
        )
        self.db["runs"].create_index(["thread_ts"], if_not_exists=True)
        self.db["approvals"].create(
            {"run_id": str, "user": str, "verdict": str, "fingerprint": str, "created_at": str, "revoked_at": str},
            pk=("run_id", "user"), if_not_exists=True,
        )
        self.db["env_locks"].create({"env": str, "run_id": str, "acquired_at": str}, pk="env", if_not_exists=True)
        self.db["seen_events"].create({"id": str, "seen_at": str}, pk="id", if_not_exists=True)

    # -- validations ---------------------------------------------------------
    def record_validation(self, *, fingerprint: str, passed: bool, report_json: str, migrations: list[str],
                          run_id: str | None = None, commit: str | None = None) -> int:
        with self._lock:
            row = self.db["validations"].insert(
                {"fingerprint": fingerprint, "passed": int(passed), "env": "staging", "run_id": run_id or "",
                 "commit": commit or "", "migrations": json.dumps(migrations), "report": redact(report_json),
                 "created_at": _now()}
            )
            return int(row.last_pk)

    def passing_validation(self, fingerprint: str) -> dict[str, Any] | None:
        with self._lock:
            found = list(
                self.db["validations"].rows_where(
                    "fingerprint = ? AND passed = 1", [fingerprint], order_by="id desc", limit=1
                )
            )
        return found[0] if found else None

    def record_deploy(self, *, fingerprint: str, ok: bool, applied: list[str], held: list[str], report_json: str,
                      run_id: str | None = None) -> int:
        with self._lock:
            row = self.db["deploys"].insert(
                {"fingerprint": fingerprint, "ok": int(ok), "run_id": run_id or "", "applied": json.dumps(applied),
                 "held": json.dumps(held), "report": redact(report_json), "created_at": _now()}
            )
            return int(row.last_pk)

    # -- runs ------------------------------------------------------------------
    def _row(self, run: Run) -> dict[str, Any]:
        row = dict(run.__dict__)
        row.update(kind=run.kind.value, state=run.state.value, data=json.dumps(run.data),
                   report=redact(run.report), summary=redact(run.summary))
        return row

    def save_run(self, run: Run, *, expect: State | None = None) -> bool:
        """Insert or replace; with ``expect``, only if the stored state is still ``expect``.

        The condition makes a transition from a stale copy (an executor thread
        that outlived a restart, a second replica) fail instead of overwriting
        what happened meanwhile. Callers persist every transition before
        announcing it.
        """
        run.updated_at = _now()
        run.created_at = run.created_at or run.updated_at
        row = self._row(run)
        with self._lock, self.db.conn:
            if expect is not None:
                cursor = self.db.execute(
                    "UPDATE runs SET " + ", ".join(f"[{k}] = ?" for k in row) + " WHERE id = ? AND state = ?",
                    [*row.values(), run.id, expect.value],
                )
                return cursor.rowcount == 1
            self.db["runs"].upsert(row, pk="id")
        return True

    def start_run(self, run: Run) -> str | None:
        """Take the run's environment and store the run in one transaction.

        Returns the id of the run holding the environment when it is taken, so
        a competing request always finds the holder's row.
        """
        run.created_at = run.updated_at = _now()
        with self._lock, self.db.conn:
            holder = list(self.db["env_locks"].rows_where("env = ?", [run.env]))
            if holder and holder[0]["run_id"] != run.id:
                return str(holder[0]["run_id"])
            self.db["runs"].insert(self._row(run), pk="id")
            self.db["env_locks"].upsert({"env": run.env, "run_id": run.id, "acquired_at": _now()}, pk="env")
        return None

    def get_run(self, run_id: str) -> Run | None:
        with self._lock:
            try:
                row = self.db["runs"].get(run_id)
            except NotFoundError:
                return None
        return _run_from_row(row)

    def run_by_message(self, channel: str, ts: str) -> Run | None:
        """The run a reaction on (channel, ts) is about: the thread's parent or the approval prompt."""
        with self._lock:
            found = list(self.db["runs"].rows_where(
                "channel = ? AND (thread_ts = ? OR json_extract(data, '$.prompt_ts') = ?)", [channel, ts, ts],
                order_by="created_at desc"))
        runs = [_run_from_row(r) for r in found]
        deploys = [r for r in runs if r.kind in (Kind.DEPLOY, Kind.UNBLOCK)]
        return (deploys or runs or [None])[0]

    def runs(self, *, states: list[State] | None = None, limit: int = 20) -> list[Run]:
        where, args = None, []
        if states:
            where = "state IN (" + ", ".join("?" for _ in states) + ")"
            args = [s.value for s in states]
        with self._lock:
            found = list(self.db["runs"].rows_where(where, args, order_by="created_at desc, rowid desc", limit=limit))
        return [_run_from_row(r) for r in found]

    def latest_run(self, kind: Kind | None = None) -> Run | None:
        with self._lock:
            where, args = ("kind = ?", [kind.value]) if kind else (None, [])
            found = list(self.db["runs"].rows_where(where, args, order_by="created_at desc, rowid desc", limit=1))
        return _run_from_row(found[0]) if found else None

    # -- approvals ---------------------------------------------------------------
    def put_approval(self, approval: Approval) -> None:
        with self._lock:
            self.db["approvals"].upsert(approval.__dict__, pk=("run_id", "user"))

    def revoke_approval(self, run_id: str, user: str) -> bool:
        with self._lock:
            found = list(self.db["approvals"].rows_where("run_id = ? AND user = ? AND revoked_at = ''", [run_id, user]))
            if not found:
                return False
            self.db["approvals"].update((run_id, user), {"revoked_at": _now()})
            return True

    def approvals(self, run_id: str) -> list[Approval]:
        with self._lock:
            found = list(self.db["approvals"].rows_where("run_id = ? AND revoked_at = ''", [run_id],
                                                         order_by="created_at"))
        return [Approval(**r) for r in found]

    # -- environment locks -------------------------------------------------------
    def lock_env(self, env: str, run_id: str) -> str | None:
        """Take the environment for run_id; returns the holder's run id when it is taken."""
        with self._lock, self.db.conn:
            holder = list(self.db["env_locks"].rows_where("env = ?", [env]))
            if holder and holder[0]["run_id"] != run_id:
                return str(holder[0]["run_id"])
            self.db["env_locks"].upsert({"env": env, "run_id": run_id, "acquired_at": _now()}, pk="env")
            return None

    def unlock_env(self, env: str, run_id: str) -> None:
        with self._lock:
            self.db.execute("DELETE FROM env_locks WHERE env = ? AND run_id = ?", [env, run_id])
            self.db.conn.commit()

    def env_holder(self, env: str) -> str | None:
        with self._lock:
            holder = list(self.db["env_locks"].rows_where("env = ?", [env]))
        return str(holder[0]["run_id"]) if holder else None

    # -- idempotency for retried Slack events ----------------------------------
    def first_time(self, event_id: str) -> bool:
        """True once per id: Slack redelivers events it thinks were not acknowledged."""
        if not event_id:
            return True
        with self._lock:
            try:
                self.db["seen_events"].insert({"id": event_id, "seen_at": _now()})
            except sqlite3.IntegrityError:
                return False
            # Slack stops redelivering after minutes; a day of ids is plenty and keeps the table small.
            cutoff = (datetime.now(timezone.utc) - timedelta(days=1)).isoformat()
            self.db.execute("DELETE FROM seen_events WHERE seen_at < ?", [cutoff])
            self.db.conn.commit()
            return True


def _run_from_row(row: dict[str, Any]) -> Run:
    data = dict(row)
    data["kind"] = Kind(data["kind"])
    data["state"] = State(data["state"])
    data["data"] = json.loads(data.get("data") or "{}")
    return Run(**data)
