"""The bot's own state: validations, runs, approvals — in one sqlite-utils file.

Everything that must survive a restart lives here, and every write commits
before the caller announces anything (the run lifecycle's rule). SQLite in WAL
mode lets the CLI and a running bot share the file.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlite_utils

from bot.redact import redact


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self.db = sqlite_utils.Database(str(path), recreate=False)
        if str(path) != ":memory:":
            self.db.enable_wal()
        self._schema()

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

    def latest_validation(self) -> dict[str, Any] | None:
        with self._lock:
            found = list(self.db["validations"].rows_where(order_by="id desc", limit=1))
        return found[0] if found else None

    def record_deploy(self, *, fingerprint: str, ok: bool, applied: list[str], held: list[str], report_json: str,
                      run_id: str | None = None) -> int:
        with self._lock:
            row = self.db["deploys"].insert(
                {"fingerprint": fingerprint, "ok": int(ok), "run_id": run_id or "", "applied": json.dumps(applied),
                 "held": json.dumps(held), "report": redact(report_json), "created_at": _now()}
            )
            return int(row.last_pk)
