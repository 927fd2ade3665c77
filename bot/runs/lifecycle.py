"""The only writer of run transitions: persist, then announce.

Every change of a run's state goes through ``move`` (a compare-and-set on
the stored state, then the chat is told), so a restart loses nothing and a
stale copy of a run (an executor thread that outlived a restart, another
process) can never overwrite what happened meanwhile. This module also owns
the process's heartbeat, environment leases (one run per environment at a
time, held by a live process) and the recovery of runs whose process died —
and only those.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from typing import Any, Callable

from bot import messages, metrics
from bot.runs import liveness
from bot.runs.announcer import Announcer
from bot.runs.model import Kind, Run, State, can_move
from bot.runs.store import Lease, StateStore

log = logging.getLogger(__name__)


class StaleRun(Exception):
    """A transition from an outdated copy of a run: someone else moved it first."""


def env_lease(env: str) -> str:
    return f"env:{env}"


class Lifecycle:
    def __init__(self, store: StateStore, announcer: Announcer, identity: liveness.Identity | None = None) -> None:
        self.store = store
        self.announcer = announcer
        self.identity = identity or liveness.new_identity()
        liveness.register(self.identity)
        self._beating = threading.Event()
        self._thread: threading.Thread | None = None
        self.on_beat: list[Any] = []  # called after each heartbeat (the scheduler's leadership check)

    @property
    def owner(self) -> str:
        return self.identity.owner

    def alive(self, owner: str) -> bool:
        return liveness.alive(owner, self.store, self.identity)

    # -- transitions ---------------------------------------------------------------------------
    def create(self, run: Run, *, opening: bool = False) -> Run:
        """Store a new run before anyone hears of it.

        ``opening``: its thread is about to be posted; until ``open_thread``
        has done so, the queue passes it over, so a run never starts (and
        reports) into a thread that does not exist yet.
        """
        if opening:
            run = replace(run, owner=self.owner, data=dict(run.data, opening=True))
        return self.store.insert_run(run)

    def open_thread(self, run: Run) -> Run:
        """Post the run's parent message, remember its ts, and let the queue have the run."""
        ts = self.announcer.run_started(run)

        def changes(fresh: Run) -> dict[str, Any]:
            found: dict[str, Any] = {"data": {k: v for k, v in fresh.data.items() if k != "opening"}}
            if fresh.owner == self.owner and fresh.state is State.REQUESTED:
                found["owner"] = ""
            if ts:
                found["thread_ts"] = ts
            return found

        updated = self._update_fresh(run.id, changes, missing=run)
        assert updated is not None  # ``missing`` stands in for a run that is not stored
        return updated

    def sent(self, run_id: str, *, thread_ts: str = "", remember: str = "", ts: str = "") -> None:
        """What a delivered message produced: a run's thread (its parent's ts), or a prompt's ts to remember.

        Runs in the thread (a deploy in its validation's thread) get the thread
        too. A compare-and-set like every write, retried: the run may be
        moving meanwhile, and this must not be lost.
        """
        def changes(run: Run) -> dict[str, Any]:
            found: dict[str, Any] = {}
            if thread_ts:
                found["thread_ts"] = thread_ts
            if remember and ts:
                found["data"] = dict(run.data, **{remember: ts})
            return found

        try:
            if self._update_fresh(run_id, changes) is None:
                return
        except StaleRun:
            pass  # it kept moving: its children still get the thread
        if thread_ts:
            for child in self.store.runs(limit=50):
                if child.parent == run_id and not child.thread_ts:
                    self.sent(child.id, thread_ts=thread_ts)

    def _update_fresh(self, run_id: str, changes_for: Callable[[Run], dict[str, Any]],
                      missing: Run | None = None) -> Run | None:
        """Read the run, work out its changes, save them; retried when the run moved meanwhile (an outbox
        recorded its thread, a transition). None when it is gone (and no ``missing`` stands in)."""
        for _ in range(10):
            fresh = self.store.get_run(run_id) or missing
            if fresh is None:
                return None
            changes = changes_for(fresh)
            if not changes:
                return fresh
            try:
                return self.update(fresh, **changes)
            except StaleRun:
                continue
        raise StaleRun(f"{run_id} kept changing while it was being updated")

    def move(self, run: Run, state: State, *, announce: bool = True, **changes: Any) -> Run:
        """Persist a transition, then announce it; refuse it if the stored run moved on meanwhile."""
        if not can_move(run.state, state, run.kind):
            raise StaleRun(f"{run.id}: {run.state} -> {state} is not a legal transition")
        moved = replace(run, state=state, **changes)
        if not self.store.save_run(moved, expect=run.state):
            stored = self.store.get_run(run.id)
            raise StaleRun(f"{run.id} is {stored.state if stored else 'gone'}, not {run.state}: "
                           f"not moving it to {state}")
        moved = self._as_stored(moved)
        if moved.state.terminal:
            metrics.run_ended(moved.kind.value, moved.state.value, moved.created_at, moved.updated_at)
        if announce:
            self.announcer.run_updated(moved)
        return moved

    def _as_stored(self, run: Run) -> Run:
        """The run as saved: the store keeps facts the outbox recorded meanwhile (its thread, a prompt)."""
        stored = self.store.get_run(run.id)
        return stored if stored is not None and stored.state is run.state else run

    def update(self, run: Run, *, announce: bool = False, **changes: Any) -> Run:
        """Change a run's facts (thread, schedule, data) without a transition, as a compare-and-set too."""
        updated = replace(run, **changes)
        if not self.store.save_run(updated, expect=run.state):
            stored = self.store.get_run(run.id)
            raise StaleRun(f"{run.id} is {stored.state if stored else 'gone'}, not {run.state}: not updating it")
        updated = self._as_stored(updated)
        if announce:
            self.announcer.run_updated(updated)
        return updated

    # -- one run per environment ---------------------------------------------------------------
    def claim(self, run: Run) -> Run | Lease:
        """Take the run's environment and start it (``running``, owned by this process), atomically.

        Returns the holder's lease when another live run has the environment;
        raises StaleRun when the run moved on (cancelled, or claimed by another thread or process).
        """
        if not can_move(run.state, State.RUNNING, run.kind):
            raise StaleRun(f"{run.id}: {run.state} -> running is not a legal transition")
        moved = replace(run, state=State.RUNNING, owner=self.owner)
        lease = self.store.claim(moved, expect=run.state, lease=env_lease(run.env), ttl_s=liveness.LEASE_TTL_S,
                                 alive=self.alive)
        if lease is None:
            raise StaleRun(f"{run.id} moved on before it could be claimed")
        if (lease.owner, lease.run_id) != (self.owner, run.id):
            return lease
        self.announcer.run_updated(moved)
        return moved

    def release(self, run: Run) -> None:
        lease = self.store.lease(env_lease(run.env))
        if lease and lease.run_id == run.id:
            self.store.release_lease(lease.name, lease.owner)

    def holder(self, env: str) -> str | None:
        """The id of the run holding ``env`` while its process lives."""
        lease = self.store.lease(env_lease(env))
        return lease.run_id if lease and self.alive(lease.owner) else None

    # -- liveness ------------------------------------------------------------------------------
    def heartbeat(self) -> None:
        ident = self.identity
        self.store.heartbeat(self.owner, ident.host, ident.pid, liveness.LEASE_TTL_S)

    def recover_dead(self) -> list[Run]:
        """Runs whose process died become ``interrupted`` (and say so); live ones are never touched."""
        touched = []
        for run in self.store.runs(states=[State.RUNNING], limit=1000):
            if self.alive(run.owner):
                continue
            try:
                run = self.move(run, State.INTERRUPTED, summary="interrupted: the process running it stopped")
            except StaleRun:
                continue  # someone else recovered it first
            self.release(run)
            if run.kind is not Kind.DEPLOY:  # a deploy's thread is told what prod holds, once it was read
                self.announcer.say(run, messages.INTERRUPTED.format(run_id=run.id))
            touched.append(run)
        for run in self.store.queue(None):
            if run.data.get("opening") and not self.alive(run.owner):  # its process died while posting it
                self.update(run, owner="", data={k: v for k, v in run.data.items() if k != "opening"})
        for lease in self.store.leases():
            if not self.alive(lease.owner):
                self.store.release_lease(lease.name, lease.owner)
        return touched

    def start(self) -> None:
        """Say we are alive now and every few seconds after, until ``stop``."""
        self.heartbeat()
        if self._thread is None:
            self._thread = threading.Thread(target=self._beat, name="migrate-bot-heartbeat", daemon=True)
            self._thread.start()

    def _beat(self) -> None:
        while not self._beating.wait(liveness.HEARTBEAT_S):
            try:
                self.heartbeat()
                for callback in self.on_beat:
                    callback()
            except Exception as exc:  # noqa: BLE001 - a store hiccup must not stop the heartbeat for good
                log.error("heartbeat failed: %s", type(exc).__name__)

    def stop(self, *, clean: bool = True) -> None:
        """A clean stop gives up leases at once; an unclean one (a simulated crash) just goes silent."""
        self._beating.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        liveness.unregister(self.identity)
        if clean:
            self.store.forget_process(self.owner)
