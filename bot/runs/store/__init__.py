"""The state store: everything the bot must not lose, behind one protocol.

Runs, approvals, the validations and deploys the workflow records (its
``Ledger``), leases (which process runs what, and until when), seen Slack
event ids, the scheduler's persisted jobs, time series samples and the chat
outbox. The sqlite-utils file (``sqlite.py``) is the default for one process;
``postgres.py`` is the same protocol in a PostgreSQL database that several
replicas share (``state.url``). ``open_state`` picks one from the settings.

Rules every implementation keeps:

* every write commits before it returns, so a caller may announce it;
* ``save_run(run, expect=state)`` is a compare-and-set: it fails when the
  stored run has moved on (a stale executor thread, a second replica);
* a lease is held by an owner (a process) until it expires; it can be taken
  when it is free, expired, or already the taker's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from bot.runs.model import Approval, Kind, Run, State

if TYPE_CHECKING:
    from bot.config import Settings


@dataclass(frozen=True)
class Lease:
    """Who holds a named thing (``env:prod``, ``scheduler``) and until when (ISO-8601 UTC)."""

    name: str
    owner: str
    run_id: str
    acquired_at: str
    expires_at: str


@dataclass(frozen=True)
class ProcessRecord:
    """A live bot process: its heartbeat keeps its leases and its runs alive."""

    owner: str
    host: str
    pid: int
    started_at: str
    expires_at: str


@dataclass(frozen=True)
class JobRecord:
    """One persisted scheduler job: opaque state plus the time it is due (epoch seconds, None = paused)."""

    id: str
    next_run_time: float | None
    state: bytes


@dataclass(frozen=True)
class Sample:
    """A point of a time series (traffic, pg_stat_statements snapshots): what was measured, when, where."""

    series: str
    source: str
    taken_at: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Delivery:
    """A chat message waiting to be delivered (the outbox): stored before it is sent, removed once it was."""

    id: int
    kind: str  # parent | update | reply | upload | post | dm
    thread: str  # the run whose thread it belongs to ("" = not in a run's thread)
    key: str  # a pending delivery with the same key is not queued twice (e.g. "update:r-…"); "" = none
    payload: dict[str, Any]
    attempts: int
    next_at: str  # ISO-8601 UTC: not before
    created_at: str
    last_error: str = ""


DELIVERED_KEYS = ("prompt_ts", "override_prompt_ts")  # run.data facts only the outbox writes


def keep_delivered(stored: Run, new: Run) -> Run:
    """What the outbox recorded (a thread's ts, a prompt's ts) survives a save from an older copy of the run.

    Those facts arrive asynchronously, whenever Slack takes the message; a copy
    read before that (an executor finishing a run, a planner scheduling it)
    must not erase them when it saves its own change.
    """
    from dataclasses import replace

    thread_ts = new.thread_ts or stored.thread_ts
    kept = {k: stored.data[k] for k in DELIVERED_KEYS if k in stored.data and k not in new.data}
    if thread_ts == new.thread_ts and not kept:
        return new
    return replace(new, thread_ts=thread_ts, data={**new.data, **kept})


class StateStore(Protocol):
    # -- the workflow's ledger (bot.workflow.ledger.Ledger) ---------------------------------
    def record_validation(self, *, fingerprint: str, passed: bool, report_json: str, migrations: list[str],
                          run_id: str | None = None, commit: str | None = None,
                          gate_settings: dict[str, Any] | None = None) -> int: ...

    def passing_validation(self, fingerprint: str) -> dict[str, Any] | None: ...

    def record_deploy(self, *, fingerprint: str, ok: bool, applied: list[str], held: list[str], report_json: str,
                      run_id: str | None = None) -> int: ...

    def last_deploy(self, *, since: datetime) -> dict[str, Any] | None: ...

    # -- runs --------------------------------------------------------------------------------
    def insert_run(self, run: Run) -> Run: ...

    def save_run(self, run: Run, *, expect: State | None = None) -> bool: ...

    def get_run(self, run_id: str) -> Run | None: ...

    def run_by_message(self, channel: str, ts: str) -> Run | None: ...

    def runs(self, *, states: list[State] | None = None, kinds: list[Kind] | None = None,
             limit: int = 20) -> list[Run]: ...

    def latest_run(self, kind: Kind | None = None) -> Run | None: ...

    def queue(self, env: str | None) -> list[Run]: ...

    # -- approvals ---------------------------------------------------------------------------
    def put_approval(self, approval: Approval) -> None: ...

    def revoke_approval(self, run_id: str, user: str) -> bool: ...

    def approvals(self, run_id: str) -> list[Approval]: ...

    # -- leases and processes ----------------------------------------------------------------
    def acquire_lease(self, name: str, owner: str, ttl_s: float, *, run_id: str = "",
                      alive: "OwnerCheck | None" = None) -> Lease: ...

    def claim(self, run: Run, *, expect: State, lease: str, ttl_s: float,
              alive: "OwnerCheck") -> Lease | None: ...

    def release_lease(self, name: str, owner: str) -> None: ...

    def leases(self) -> list[Lease]: ...

    def lease(self, name: str) -> Lease | None: ...

    def heartbeat(self, owner: str, host: str, pid: int, ttl_s: float) -> None: ...

    def forget_process(self, owner: str) -> None: ...

    def process(self, owner: str) -> ProcessRecord | None: ...

    # -- Slack idempotency -------------------------------------------------------------------
    def first_time(self, event_id: str) -> bool: ...

    # -- the scheduler's job store -----------------------------------------------------------
    def put_job(self, job: JobRecord) -> None: ...

    def get_job(self, job_id: str) -> JobRecord | None: ...

    def jobs(self, *, due_by: float | None = None) -> list[JobRecord]: ...

    def remove_job(self, job_id: str) -> bool: ...

    # -- the chat outbox ----------------------------------------------------------------------
    def enqueue(self, kind: str, payload: dict[str, Any], *, thread: str = "", key: str = "") -> int: ...

    def deliveries(self, *, limit: int = 500) -> list[Delivery]: ...

    def claim_delivery(self, delivery_id: int, owner: str, ttl_s: float) -> bool: ...

    def delivered(self, delivery_id: int) -> None: ...

    def postpone(self, delivery_id: int, *, next_at: datetime, error: str) -> None: ...

    # -- time series -------------------------------------------------------------------------
    def add_sample(self, sample: Sample) -> None: ...

    def samples(self, series: str, source: str, *, since: datetime | None = None) -> list[Sample]: ...

    def last_sample(self, series: str, source: str, *, before: datetime) -> Sample | None: ...

    def first_sample(self, series: str, source: str, *, after: datetime) -> Sample | None: ...

    def prune_samples(self, series: str, source: str, *, before: datetime) -> int: ...

    def thin_samples(self, series: str, source: str, *, before: datetime) -> int: ...

    # -- the store itself ------------------------------------------------------------------------
    def close(self) -> None:
        """Give back its connections (a worker process closes the one it opened for its run)."""

class OwnerCheck(Protocol):
    """Is the process that holds a lease still alive? (lifecycle knows; the store only asks.)"""

    def __call__(self, owner: str) -> bool: ...


def open_store(path: str) -> StateStore:
    """The sqlite-utils file at ``path`` (``state.path``)."""
    from bot.runs.store.sqlite import SqliteStore

    return SqliteStore(path)


def open_state(settings: Settings) -> StateStore:
    """The configured store: PostgreSQL at ``state.url`` when it is set (replicas), else the file at ``state.path``.

    ``state.url`` is a secret reference, resolved now and registered for redaction.
    """
    if not settings.state.url:
        return open_store(settings.state.path)
    from bot.runs.store.postgres import PostgresStore
    from bot.secrets import resolve

    return PostgresStore(resolve(settings.state.url, what="state database URL (state.url)"))
