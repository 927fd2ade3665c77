"""Scheduled jobs: module-level functions taking ids, so the persisted job store can name them.

APScheduler stores a job as ``"bot.runs.jobs:deploy_in_window"`` plus its
arguments; it cannot store a bound method or a closure. The runtime these
functions work with is the one whose scheduler runs them: each scheduler
worker thread learns it when it starts (``enter``). Each function is a thin
entry point: the decisions live in ``planning`` and ``execution``.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from bot.runs import digests, execution, planning, traffic
from bot.runs.model import State
from bot.runs.runtime import Runtime
from bot.runs.store import Sample

log = logging.getLogger(__name__)
SAMPLER_JOB = "sample-traffic"
SNAPSHOT_JOB = "snapshot-statements"
DIGEST_JOB = "post-digest"
_thread = threading.local()


def enter(rt: Runtime) -> None:
    """Run in each scheduler worker thread as it starts: the runtime its jobs work for."""
    _thread.runtime = rt


def _runtime() -> Runtime | None:
    rt = getattr(_thread, "runtime", None)
    if rt is None:
        log.error("a scheduled job ran outside a bot's scheduler; it did nothing")
    return rt


def deploy_in_window(run_id: str) -> None:
    """Fire a scheduled deploy: re-check, then deploy, wait or re-plan (``planning.fire``)."""
    rt = _runtime()
    if rt is not None:
        planning.fire(rt, run_id)


def remind_cleanup(run_id: str) -> None:
    """A held cleanup migration became eligible: say so in the thread of the deploy it follows."""
    rt = _runtime()
    if rt is not None:
        planning.remind(rt, run_id)


def sample_traffic() -> None:
    """An hourly sample of prod's transactions and active sessions, so `windows` can show quiet hours."""
    rt = _runtime()
    if rt is None:
        return
    try:
        found = rt.workflow.traffic(rt.settings)
    except Exception as exc:  # noqa: BLE001 - prod unreachable this hour: the next sample will do
        log.warning("traffic sample failed: %s", type(exc).__name__)
        return
    rt.store.add_sample(Sample(traffic.SERIES, "prod", datetime.now(timezone.utc).isoformat(), found))


def snapshot_statements() -> None:
    """pg_stat_statements snapshots of the digest's databases, so a digest has a period to compare with."""
    rt = _runtime()
    if rt is None:
        return
    for env in rt.settings.digest.databases:
        try:
            digests.take(rt.settings, rt.store, env)
        except Exception as exc:  # noqa: BLE001 - unreachable or no extension this hour: the digest says why
            log.warning("pg_stat_statements snapshot of %s failed: %s", env, type(exc).__name__)
    digests.prune(rt.settings, rt.store, datetime.now(timezone.utc))


def post_digest(channel: str) -> None:
    """The daily digest: made now, posted to ``channel`` with its chart."""
    rt = _runtime()
    if rt is not None:
        execution.post_digests(rt, channel, rt.settings.digest.databases)


def install_recurring(rt: Runtime) -> None:
    """The recurring jobs the config asks for; one no longer asked for is removed (a config change + restart)."""
    minutes = rt.settings.deploy.traffic_sample_minutes
    if minutes:
        rt.scheduler.every(SAMPLER_JOB, "bot.runs.jobs:sample_traffic", seconds=minutes * 60)
    else:
        rt.scheduler.cancel(SAMPLER_JOB)
    d = rt.settings.digest
    if d.snapshot_minutes:
        rt.scheduler.every(SNAPSHOT_JOB, "bot.runs.jobs:snapshot_statements", seconds=d.snapshot_minutes * 60)
    else:
        rt.scheduler.cancel(SNAPSHOT_JOB)
    if d.channel:
        hour, minute = (int(part) for part in d.at.split(":"))
        rt.scheduler.daily(DIGEST_JOB, "bot.runs.jobs:post_digest", hour=hour, minute=minute,
                           tz=ZoneInfo(d.timezone), args=(d.channel,))
    else:
        rt.scheduler.cancel(DIGEST_JOB)


def reconcile(rt: Runtime) -> None:
    """Every scheduled deploy with a time has its job (a job store lost or older than the run is repaired)."""
    jobs = set(rt.scheduler.job_ids())
    for run in rt.store.runs(states=[State.SCHEDULED], limit=1000):
        job_id = run.data.get("job_id")
        if run.scheduled_for and job_id and job_id not in jobs:
            when = datetime.fromisoformat(run.scheduled_for)
            rt.scheduler.at(job_id, planning.DEPLOY_JOB, when, run.id)
