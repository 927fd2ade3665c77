"""Making a pg_stat_statements digest from the snapshots in the state store.

The workflow reads a snapshot (``workflow/statements.py``) and turns two of
them into a digest (``workflow/digest.py``); this module decides *which*
two: the snapshot taken now, and the newest one stored at least ``since``
before it (else the oldest one since then, a shorter period, said as such;
else none: cumulative since the last reset). During the hold-back after a
deploy it also finds the last snapshot before that deploy, so the digest can
say what changed since. The CLI, `/migrate digest` and the daily job all
make their digest here, so they agree.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable

from bot.config import Settings
from bot.pg import connection
from bot.runs.store import Sample, StateStore
from bot.workflow import digest as digest_mod
from bot.workflow import statements
from bot.workflow.targets import database_url

log = logging.getLogger(__name__)
SERIES = "pgss"
DAY = timedelta(days=1)


@dataclass(frozen=True)
class Made:
    digest: digest_mod.Digest
    snapshot: statements.Snapshot


def take(settings: Settings, store: StateStore, env: str) -> statements.Snapshot:
    """A snapshot of ``env``'s pg_stat_statements, stored; StatementsUnavailable says what to fix."""
    with connection(database_url(settings, env), env=env) as conn:
        snapshot = statements.take(conn, env)
    store.add_sample(Sample(SERIES, env, snapshot.taken_at.astimezone(timezone.utc).isoformat(),
                            statements.to_dict(snapshot)))
    return snapshot


def prune(settings: Settings, store: StateStore, now: datetime) -> int:
    """Snapshots are hourly while a hold-back may still look at them, daily after that, gone after keep_days.

    A snapshot of 5,000 statements is about 200 KB: hourly for 35 days would be 160 MB per database.
    """
    keep = timedelta(days=settings.digest.keep_days)
    hourly = timedelta(days=settings.deploy.cleanup_hold_days + 1)
    return sum(store.prune_samples(SERIES, env, before=now - keep) + store.thin_samples(SERIES, env, before=now - hourly)
               for env in ("prod", "staging"))


def _stored(sample: Sample | None) -> statements.Snapshot | None:
    return statements.from_dict(sample.data) if sample is not None else None


def previous_of(store: StateStore, env: str, current: statements.Snapshot,
                since: timedelta) -> statements.Snapshot | None:
    """The snapshot a digest of the last ``since`` compares with (see the module docstring)."""
    start = current.taken_at - since
    found = _stored(store.last_sample(SERIES, env, before=start))
    if found is None:
        later = _stored(store.first_sample(SERIES, env, after=start))
        found = later if later is not None and later.taken_at < current.taken_at else None
    return found


def deploy_mark(settings: Settings, store: StateStore, now: datetime,
                thread_url: Callable[[str], str]) -> digest_mod.DeployMark | None:
    """The latest successful deploy whose hold-back is still running, from any face (bot or CLI)."""
    found = store.last_deploy(since=now - timedelta(days=settings.deploy.cleanup_hold_days))
    if found is None or not found["applied"]:
        return None
    return digest_mod.DeployMark(run_id=found["run_id"], deployed_at=found["created_at"],
                                 migrations=list(found["applied"]),
                                 thread_url=thread_url(found["run_id"]) if found["run_id"] else "")


def make(settings: Settings, store: StateStore, env: str, *, since: timedelta = DAY,
         thread_url: Callable[[str], str] = lambda run_id: "") -> Made:
    """Take a snapshot of ``env`` now and digest it against the stored ones."""
    current = take(settings, store, env)
    previous = previous_of(store, env, current, since)
    earlier = _stored(store.last_sample(SERIES, env, before=previous.taken_at - since)) if previous else None
    mark = deploy_mark(settings, store, current.taken_at, thread_url) if env == "prod" else None
    before_deploy = _stored(store.last_sample(SERIES, env, before=mark.deployed_at)) if mark else None
    base = (_stored(store.last_sample(SERIES, env, before=before_deploy.taken_at - since))
            if before_deploy else None)
    d = settings.digest
    made = digest_mod.compute(previous, current, top=d.top, regression_pct=d.regression_pct, min_calls=d.min_calls,
                              deploy=mark, before_deploy=before_deploy, earlier=earlier,
                              before_deploy_base=base, hold_days=settings.deploy.cleanup_hold_days)
    return Made(made, current)


def parse_since(text: str) -> timedelta:
    """``24h``, ``90m``, ``7d`` (what `migrate-bot digest --since` takes); ValueError with the reason."""
    units = {"m": 60, "h": 3600, "d": 86400}
    number, unit = text[:-1], text[-1:].lower()
    if unit not in units or not number.isdigit() or int(number) == 0:
        raise ValueError(f"{text!r} is not a period; write it like 24h, 90m or 7d")
    return timedelta(seconds=int(number) * units[unit])
