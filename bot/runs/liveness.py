"""Is the process behind a lease or a running run still alive? Decided here and nowhere else.

A run that is ``running`` belongs to the process executing it (its owner).
Marking it ``interrupted`` because *some* process restarted — what the bot
did before — would, with two processes on one state store, kill a live run
of the other. So a run is interrupted only when its owner is dead:

* its heartbeat lapsed (the lease expired): true on any host;
* or, on this host, its pid no longer exists: a kill -9 and a restart need
  not wait for the lease to lapse;
* or it was an earlier bot in this very process (tests restart a bot in
  process; a real restart always has a new pid): alive only while registered.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol

from bot.runs.store import ProcessRecord

HEARTBEAT_S = 5.0  # how often a process says it is alive (and renews its leases)
LEASE_TTL_S = 30.0  # how long a lease outlives a silent process


@dataclass(frozen=True)
class Identity:
    """Who this bot is, as written into leases and runs: ``host/pid/token``."""

    host: str
    pid: int
    token: str

    @property
    def owner(self) -> str:
        return f"{self.host}/{self.pid}/{self.token}"


def new_identity() -> Identity:
    return Identity(socket.gethostname(), os.getpid(), secrets.token_hex(4))


def parse_owner(owner: str) -> Identity | None:
    host, _, rest = owner.rpartition("/")
    host, _, pid = host.rpartition("/")
    return Identity(host, int(pid), rest) if host and pid.isdigit() else None


_registered: set[str] = set()  # bots alive in this process
_registered_lock = threading.Lock()


def register(identity: Identity) -> None:
    with _registered_lock:
        _registered.add(identity.owner)


def unregister(identity: Identity) -> None:
    with _registered_lock:
        _registered.discard(identity.owner)


class Processes(Protocol):
    def process(self, owner: str) -> ProcessRecord | None: ...


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def alive(owner: str, processes: Processes, me: Identity, now: datetime | None = None) -> bool:
    """Whether ``owner`` (a process identity) may still be working."""
    if not owner:
        return False
    if owner == me.owner:
        return True
    other = parse_owner(owner)
    if other is not None and other.host == me.host:
        if other.pid == me.pid:
            with _registered_lock:
                return owner in _registered
        if not _pid_exists(other.pid):
            return False
    record = processes.process(owner)
    moment = (now or datetime.now(timezone.utc)).isoformat()
    return record is not None and record.expires_at > moment
