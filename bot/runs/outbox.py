"""The chat outbox: every message a run makes is stored first, then delivered by one worker, in order per thread.

Slack fails now and then (429 with Retry-After, 5xx, a dropped connection).
The SDK retries a few times within a call; when it gives up, a message sent
directly would be lost — and if that message was a run's parent, its thread
never existed, so its deploy could never be approved. Here a message is a row
in the state store before anyone tries to send it (so a restart loses
nothing), and the worker:

* keeps each thread in order: a reply waits for its parent, and for earlier
  replies that are still failing;
* retries with growing waits (or what Retry-After says), forever for a
  run's thread, and tells the requester by DM when its parent still could
  not be posted after a few tries;
* records what a delivery produced (the parent's ts becomes the run's
  thread; a prompt's ts is where reactions count) through ``on_sent``.

The sending itself is the chat face's (``Deliverer``); this module never
imports Slack.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Protocol

from bot import messages, metrics
from bot.runs.store import Delivery, StateStore

log = logging.getLogger(__name__)
CLAIM_TTL_S = 120.0
MAX_WAIT_S = 300.0
DM_AFTER = 5  # failed attempts at a parent before the requester hears of it by DM
IDLE_WAKE_S = 30.0  # with nothing due, look again this often (deliveries other processes stored)


class DeliveryFailed(Exception):
    """The chat did not take the message; ``retry_after_s`` when it said when to try again."""

    def __init__(self, error: str, retry_after_s: float | None = None, *, permanent: bool = False) -> None:
        super().__init__(error)
        self.retry_after_s = retry_after_s
        self.permanent = permanent


class Deliverer(Protocol):
    def deliver(self, delivery: Delivery, thread_ts: str) -> str | None:
        """Send it (``thread_ts`` is its thread's parent, "" for none); return the new message's ts, if any."""


def backoff_s(attempts: int, retry_after_s: float | None = None) -> float:
    """1, 2, 4 … seconds, at most five minutes; the chat's own Retry-After wins when it is longer."""
    wait = min(2.0 ** attempts, MAX_WAIT_S)
    return max(wait, retry_after_s or 0.0)


def next_batch(pending: list[Delivery], now: str, thread_ts: Callable[[str], str]) -> list[Delivery]:
    """Which deliveries may go now (pure, given how threads stand): due, and first in their thread.

    A thread is blocked from its first undelivered message on: one not due
    yet (a retry waiting), or a reply whose parent has no ts yet. Deliveries
    outside a run's thread never wait for each other.
    """
    blocked: set[str] = set()
    ready: list[Delivery] = []
    for d in pending:
        if d.thread and d.thread in blocked:
            continue
        waiting = d.next_at > now or (d.thread and d.kind != "parent" and not thread_ts(d.thread))
        if waiting:
            if d.thread:
                blocked.add(d.thread)
            continue
        ready.append(d)
        if d.thread:
            blocked.add(d.thread)  # one at a time per thread: the next goes after this one was sent
    return ready


@dataclass
class Outbox:
    store: StateStore
    deliverer: Deliverer
    owner: str
    on_sent: Callable[[Delivery, str | None], None]
    _wake: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _idle: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def kick(self) -> None:
        """Something was stored: deliver it now rather than at the next wake-up."""
        self._idle.clear()
        self._wake.set()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="migrate-bot-outbox", daemon=True)
            self._thread.start()
        self.kick()

    def stop(self, *, drain_s: float = 10.0) -> None:
        """Deliver what can be delivered within ``drain_s``; the rest stays stored for the next start."""
        self.wait_empty(drain_s)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=drain_s)

    def wait_empty(self, timeout: float) -> bool:
        """True once nothing is left to deliver (tests and a clean stop wait for this)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.store.deliveries(limit=1):
                return True
            self.kick()
            self._idle.wait(min(0.1, max(0.0, deadline - time.monotonic())))
        return not self.store.deliveries(limit=1)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                wait = self.deliver_due()
            except Exception as exc:  # noqa: BLE001 - a store hiccup must not end the worker
                log.error("outbox: %s", type(exc).__name__)
                wait = 5.0
            if wait is None:
                self._idle.set()
            self._wake.wait(wait if wait is not None else IDLE_WAKE_S)

    def deliver_due(self) -> float | None:
        """Send everything that may go now; returns seconds until the next retry is due (None: nothing waits)."""
        while True:
            pending = self.store.deliveries()
            if not pending:
                return None
            now = datetime.now(timezone.utc).isoformat()
            batch = next_batch(pending, now, self._thread_ts)
            if not batch:
                due = min(d.next_at for d in pending)
                if due <= now:
                    return 1.0  # replies waiting for a parent another delivery will post
                return max(0.05, (datetime.fromisoformat(due) - datetime.now(timezone.utc)).total_seconds())
            for delivery in batch:
                self._send(delivery)

    def _thread_ts(self, run_id: str) -> str:
        run = self.store.get_run(run_id)
        return run.thread_ts if run else "gone"  # a deleted run's messages go out top-level, never wait forever

    def _send(self, d: Delivery) -> None:
        if not self.store.claim_delivery(d.id, self.owner, CLAIM_TTL_S):
            return  # another process is sending it
        thread_ts = self._thread_ts(d.thread) if d.thread and d.kind != "parent" else ""
        try:
            ts = self.deliverer.deliver(d, "" if thread_ts == "gone" else thread_ts)
        except DeliveryFailed as exc:
            self._failed(d, exc)
            return
        self.store.delivered(d.id)
        self.on_sent(d, ts)

    def _failed(self, d: Delivery, exc: DeliveryFailed) -> None:
        where = f"run {d.thread}" if d.thread else "no run"
        metrics.SLACK_ERRORS.labels(d.kind, str(exc)[:60]).inc()
        if exc.permanent:
            log.error("outbox: gave up on a %s message (%s): %s", d.kind, where, exc)
            self.store.delivered(d.id)
            return
        wait = backoff_s(d.attempts, exc.retry_after_s)
        metrics.SLACK_RETRIES.labels(d.kind).inc()
        log.warning("outbox: %s message for %s failed (%s); attempt %d, next in %.0f s", d.kind, where, exc,
                    d.attempts + 1, wait)
        self.store.postpone(d.id, next_at=datetime.now(timezone.utc) + timedelta(seconds=wait), error=str(exc))
        if d.kind == "parent" and d.attempts + 1 == DM_AFTER:
            run = self.store.get_run(d.thread)
            if run is not None:
                self.store.enqueue("dm", {"user": run.requested_by,
                                          "text": messages.THREAD_NOT_POSTED.format(run_id=run.id, kind=run.kind.value)})
