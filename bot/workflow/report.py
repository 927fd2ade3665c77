"""Check / Report: what every workflow step returns, and its log-line contract.

The gate's contract is one line per check — ``PASSED <check>: …``,
``FAILED <check>: …``, ``BLOCKER <check>: …`` (plus ``WARNING`` and ``HELD``
lines that never fail the gate) — then one summary line, and an exit code:
0 = pass, 1 = gate failed, 2 = could not run. Renderers (terminal, JSON,
Block Kit) all start from this plain data; redaction is applied on the way out.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any, Callable

import psycopg

from bot.errors import EXIT_COULD_NOT_RUN, EXIT_FAILED, EXIT_PASS, DatabaseFailed, MigrateBotError, session_gone
from bot.pg import database_error
from bot.redact import redact

log = logging.getLogger(__name__)


LINE_FACTS = ("category", "sqlstate", "schema", "table", "column", "constraint", "line", "rule")


class Status(StrEnum):
    PASSED = "PASSED"
    FAILED = "FAILED"
    BLOCKER = "BLOCKER"
    WARNING = "WARNING"
    HELD = "HELD"

    @property
    def fails_gate(self) -> bool:
        return self in (Status.FAILED, Status.BLOCKER)


@dataclass(frozen=True)
class Check:
    """One verdict. ``details`` is structured data triage keys on (sqlstate, table, column, …)."""

    name: str
    status: Status
    message: str
    migration: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        """``STATUS name: message [key=value …]``, then ``    > statement`` when there is one.

        The bracketed facts and the statement let ``triage`` work from a plain
        log file as well as from the JSON report.
        """
        facts = " ".join(f"{k}={self.details[k]}" for k in LINE_FACTS if self.details.get(k) not in (None, ""))
        text = f"{self.status.value} {self.name}: {self.message}" + (f" [{facts}]" if facts else "")
        statement = self.details.get("statement")
        if statement:
            text += "\n    > " + " ".join(str(statement).split())[:400]
        return redact(text)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Check":
        return cls(
            name=data["name"],
            status=Status(data["status"]),
            message=data.get("message", ""),
            migration=data.get("migration"),
            details=dict(data.get("details") or {}),
        )


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Report:
    """The outcome of one workflow step (validate, deploy, refresh, run)."""

    step: str
    checks: list[Check] = field(default_factory=list)
    fingerprint: str | None = None
    error: str | None = None  # set when the step could not run (exit 2)
    started_at: datetime = field(default_factory=now_utc)
    finished_at: datetime | None = None
    facts: dict[str, Any] = field(default_factory=dict)  # migrations applied, held, timings…

    def add(self, check: Check) -> Check:
        self.checks.append(check)
        return check

    def passed(self, name: str, message: str, **kw: Any) -> Check:
        return self.add(Check(name, Status.PASSED, message, **kw))

    def failed(self, name: str, message: str, **kw: Any) -> Check:
        return self.add(Check(name, Status.FAILED, message, **kw))

    def blocker(self, name: str, message: str, **kw: Any) -> Check:
        return self.add(Check(name, Status.BLOCKER, message, **kw))

    def warning(self, name: str, message: str, **kw: Any) -> Check:
        return self.add(Check(name, Status.WARNING, message, **kw))

    def held(self, name: str, message: str, **kw: Any) -> Check:
        return self.add(Check(name, Status.HELD, message, **kw))

    def extend(self, checks: list[Check]) -> None:
        self.checks.extend(checks)

    def finish(self) -> "Report":
        self.finished_at = now_utc()
        return self

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status.fails_gate]

    @property
    def exit_code(self) -> int:
        if self.error:
            return EXIT_COULD_NOT_RUN
        return EXIT_FAILED if self.failures else EXIT_PASS

    @property
    def ok(self) -> bool:
        return self.exit_code == EXIT_PASS

    def count(self, status: Status) -> int:
        return sum(1 for c in self.checks if c.status is status)

    def summary(self) -> str:
        if self.error:
            return redact(f"RESULT {self.step}: COULD NOT RUN — {self.error} (exit 2)")
        verdict = "PASS" if self.ok else "FAIL"
        parts = [f"{self.count(s)} {s.value.lower()}" for s in Status if self.count(s)]
        counted = ", ".join(parts) or "no checks"
        return f"RESULT {self.step}: {verdict} ({counted}) exit {self.exit_code}"

    def lines(self) -> list[str]:
        """The log-line contract: one line per check, then the summary."""
        return [c.line() for c in self.checks] + [self.summary()]

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "exit_code": self.exit_code,
            "fingerprint": self.fingerprint,
            "error": self.error,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "facts": self.facts,
            "checks": [c.to_dict() for c in self.checks],
        }

    def to_json(self) -> str:
        return redact(json.dumps(self.to_dict(), indent=2, default=str))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Report":
        report = cls(
            step=data.get("step", "unknown"),
            checks=[Check.from_dict(c) for c in data.get("checks", [])],
            fingerprint=data.get("fingerprint"),
            error=data.get("error"),
            facts=dict(data.get("facts") or {}),
        )
        if data.get("started_at"):
            report.started_at = datetime.fromisoformat(data["started_at"])
        if data.get("finished_at"):
            report.finished_at = datetime.fromisoformat(data["finished_at"])
        return report

    @classmethod
    def from_json(cls, text: str) -> "Report":
        return cls.from_dict(json.loads(text))


def run_step(step: str, body: Callable[[Report], None]) -> Report:
    """Run a workflow step: the one error boundary every step (validate, deploy, refresh, unblock…) runs in.

    An expected failure becomes the Report's exit 2, never an exception: a
    ``MigrateBotError`` says its own sentence, and a database error from
    anywhere in the step is mapped by SQLSTATE (``bot.errors.database_error``)
    to one — so whatever the step found before it stopped stays in the Report,
    and the faces still write ``--log``/``--json`` from it.
    """
    report = Report(step=step)
    try:
        body(report)
    except DatabaseFailed as exc:
        mapped = exc.in_step(step)
        report.error = str(mapped)
        _note_sqlstate(report, mapped)
    except MigrateBotError as exc:
        report.error = str(exc)
    except psycopg.Error as exc:
        if os.environ.get("MIGRATE_BOT_DEBUG"):
            log.exception("%s: database error", step)
        first, hints = _first_cause(report, exc)
        mapped = database_error(first, step=step, **hints)
        report.error = str(mapped)
        _note_sqlstate(report, mapped)
    return report.finish()


def _first_cause(report: Report, exc: psycopg.Error) -> tuple[BaseException, dict[str, str]]:
    """The error to explain: a migration's lost session (57P01 …) rather than the closed connection met next."""
    lost = report.facts.get("connection_lost")
    if not lost or not session_gone(exc) or exc.sqlstate:
        return exc, {}
    code = lost.get("sqlstate") or ""
    try:
        cls = psycopg.errors.lookup(code) if code else psycopg.OperationalError
    except KeyError:  # a SQLSTATE psycopg has no class for
        cls = psycopg.OperationalError
    return cls(lost.get("message") or ""), {"env": lost.get("env") or ""}


def _note_sqlstate(report: Report, exc: DatabaseFailed) -> None:
    if exc.sqlstate:
        report.facts["sqlstate"] = exc.sqlstate
    if exc.env:
        report.facts["error_env"] = exc.env
