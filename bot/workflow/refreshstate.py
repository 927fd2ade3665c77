"""What one refresh carries from step to step: options, the plan, the run's report and events.

Shared by ``refresh`` (the order of the steps) and ``refreshcopy`` (how the
copy is made, per ``refresh.method``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg

from bot.config import Settings
from bot.pg import with_dbname
from bot.redact import redact
from bot.secrets import parse_ref
from bot.workflow import clone
from bot.workflow import refreshdb as db
from bot.workflow.report import Report

EventSink = Callable[[str, dict[str, Any]], None]
EVENT = "refresh_progress"
EVENT_EVERY_S = 0.5  # table-done events are throttled; phase changes always go out
UNCHANGED = "Staging was not changed."


def _ignore(kind: str, data: dict[str, Any]) -> None:
    return None


@dataclass
class RefreshOptions:
    """Per-run choices that are not settings."""

    on_event: EventSink = field(default=_ignore)
    jobs: int | None = None  # override settings.refresh.jobs; 1 = stream, >1 = parallel directory format
    method: str | None = None  # force "pipe" | "directory"; None = choose from prod's catalog


class Stop(Exception):
    """The refresh said no; the reason is already a FAILED check in the report."""


@dataclass
class Plan:
    """What prod looks like and how it will be copied, decided before anything is created."""

    catalog: db.Catalog
    method: str  # dump: pipe | directory; otherwise refresh.method (template | command)
    jobs: int
    masks: list[str]
    kind: str = "dump"  # refresh.method
    history: dict[str, str] | None = None  # prod's applied migrations (version -> label), for copies not dumped here
    template: clone.Template | None = None


Build = Callable[[psycopg.Connection, str], None]  # fills the new database (it may have to create it)


@dataclass
class Run:
    settings: Settings
    options: RefreshOptions
    report: Report
    prod_url: str
    staging_url: str
    staging_db: str
    started: float = field(default_factory=time.perf_counter)
    last_event: float = 0.0
    identity: db.ServerIdentity | None = None  # the staging server's
    prod_identity: db.ServerIdentity | None = None
    copy_began: datetime | None = None  # what the freshness record says the copy's data is as of
    data_as_of: datetime | None = None  # a clone script's own word on its snapshot's age
    source: str = "prod"

    @property
    def staging_ref(self) -> str:
        return parse_ref(self.settings.databases.staging).describe()

    def elapsed(self) -> float:
        return round(time.perf_counter() - self.started, 2)

    def event(self, phase: str, **data: Any) -> None:
        payload = {"phase": phase, "elapsed_s": self.elapsed(), **data}
        self.last_event = time.perf_counter()
        self.options.on_event(EVENT, {k: redact(v) if isinstance(v, str) else v for k, v in payload.items()})

    def fail(self, name: str, message: str, **details: Any) -> Stop:
        self.report.failed(name, redact(message), details=details)
        return Stop(message)

    def server(self) -> clone.Server:
        """The staging server, as the clone methods need it (after the safety check has identified it)."""
        assert self.identity is not None and self.prod_identity is not None
        return clone.Server(identity=self.identity, prod_identity=self.prod_identity, url_for=self.url_for,
                            staging_url=self.staging_url, staging_db=self.staging_db,
                            maintenance_db=self.settings.refresh.staging_maintenance_db)

    def url_for(self, dbname: str) -> str:
        """Another database on the staging server; URLs stay URLs so connection errors name host:port/db."""
        if "://" not in self.staging_url:
            return with_dbname(self.staging_url, dbname)
        parts = urlsplit(self.staging_url)
        return urlunsplit(parts._replace(path="/" + quote(dbname, safe="")))
