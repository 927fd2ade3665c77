"""One scheduler per deployment: APScheduler 3 over a job store that lives in the state store.

APScheduler's docs warn that a job store must never be shared by two
schedulers processing jobs. So every bot process starts its scheduler
*paused* (it can still add and remove jobs, which go straight to the state
store), and only the holder of the ``scheduler`` lease resumes it and runs
jobs. When the leader dies its lease lapses and another process takes over
on its next heartbeat. A leader also wakes its scheduler on each heartbeat,
because a job another process added would otherwise wait for its next own
wake-up; that is one indexed query every few seconds, not a poll loop.

Jobs are module-level functions named by text (``bot.runs.jobs:…``) with ids
as arguments, so a job survives a restart as a row. A job whose time passed
while no bot was running fires on start however late (``misfire_grace_time
= None``): the job itself decides what lateness means (a deploy window may
still be open, or it re-plans), and says so in its thread.
"""

from __future__ import annotations

import logging
import pickle
import threading
from datetime import datetime, timezone
from typing import Any, Callable

from apscheduler.job import Job
from apscheduler.jobstores.base import BaseJobStore, ConflictingIdError, JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.base import STATE_RUNNING, STATE_STOPPED

from bot.runs import liveness
from bot.runs.store import JobRecord, StateStore

log = logging.getLogger(__name__)
LEADER_LEASE = "scheduler"


def _stamp(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


class StateJobStore(BaseJobStore):
    """APScheduler jobs as rows of the state store (pickled like APScheduler's own SQL store does)."""

    def __init__(self, store: StateStore) -> None:
        super().__init__()
        self.store = store

    def _job(self, record: JobRecord) -> Job | None:
        try:
            state = pickle.loads(record.state)
            job = Job.__new__(Job)
            job.__setstate__(state)
        except Exception as exc:  # noqa: BLE001 - a job from an older bot whose function is gone
            log.error("dropping scheduled job %s that can no longer be restored (%s)", record.id, type(exc).__name__)
            self.store.remove_job(record.id)
            return None
        job._scheduler = self._scheduler
        job._jobstore_alias = self._alias
        return job

    def _jobs(self, records: list[JobRecord]) -> list[Job]:
        return [job for job in (self._job(r) for r in records) if job is not None]

    def _record(self, job: Job) -> JobRecord:
        return JobRecord(job.id, _stamp(job.next_run_time), pickle.dumps(job.__getstate__(), pickle.HIGHEST_PROTOCOL))

    def lookup_job(self, job_id: str) -> Job | None:
        record = self.store.get_job(job_id)
        return self._job(record) if record else None

    def get_due_jobs(self, now: datetime) -> list[Job]:
        return self._jobs(self.store.jobs(due_by=now.timestamp()))

    def get_next_run_time(self) -> datetime | None:
        due = [r.next_run_time for r in self.store.jobs() if r.next_run_time is not None]
        return datetime.fromtimestamp(min(due), timezone.utc) if due else None

    def get_all_jobs(self) -> list[Job]:
        return self._jobs(self.store.jobs())

    def add_job(self, job: Job) -> None:
        if self.store.get_job(job.id) is not None:
            raise ConflictingIdError(job.id)
        self.store.put_job(self._record(job))

    def update_job(self, job: Job) -> None:
        if self.store.get_job(job.id) is None:
            raise JobLookupError(job.id)
        self.store.put_job(self._record(job))

    def remove_job(self, job_id: str) -> None:
        """Tolerates a job that is already gone: a fired job may cancel itself before APScheduler removes it,
        and a JobLookupError raised inside the scheduler's loop would end its thread."""
        self.store.remove_job(job_id)

    def remove_all_jobs(self) -> None:
        for record in self.store.jobs():
            self.store.remove_job(record.id)


class _StoppableScheduler(BackgroundScheduler):
    """APScheduler 3's BackgroundScheduler, made safe to stop at any moment.

    Its shutdown wakes the loop, whose paused check does not cover a stopped
    scheduler: it takes one more pass over the due jobs, submits them to
    executors that are gone (an ERROR per job), and moves recurring jobs on
    without running them. And a pass that was half done when shutdown began
    hands a job to a worker but cannot remove its row any more, so the next
    leader runs it again. Here a pass and the start of a shutdown exclude each
    other: a pass in progress finishes (its job rows removed), then none starts.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._pass = threading.Lock()
        self._stopping = False

    def _process_jobs(self) -> float | None:
        with self._pass:
            if self._stopping:
                return None
            return super()._process_jobs()

    def shutdown(self, wait: bool = True) -> None:
        with self._pass:
            self._stopping = True
        super().shutdown(wait)


class Scheduler:
    """The bot's sense of time: persisted one-off and recurring jobs, run by the elected leader only."""

    def __init__(self, store: StateStore, alive: Callable[[str], bool], owner: str,
                 worker_init: Callable[[], None] | None = None) -> None:
        """``worker_init`` runs in each job thread before its first job: it tells ``jobs`` whose runtime the
        thread works for, so several bots in one process (tests, benches) never run each other's jobs."""
        self.store = store
        self.alive = alive
        self.owner = owner
        self._lock = threading.Lock()
        self.leader = False
        pool = {"initializer": worker_init} if worker_init else {}
        self.aps = _StoppableScheduler(
            jobstores={"default": StateJobStore(store)},
            executors={"default": ThreadPoolExecutor(4, pool_kwargs=pool)},
            job_defaults={"coalesce": True, "misfire_grace_time": None, "max_instances": 1},
            timezone=timezone.utc,
        )

    def _started(self) -> BackgroundScheduler:
        with self._lock:
            if self.aps.state == STATE_STOPPED:
                self.aps.start(paused=True)
        return self.aps

    # -- leadership ------------------------------------------------------------------------------
    def elect(self) -> bool:
        """Take (or keep) the leader lease; run jobs while we hold it. Called on start and every heartbeat."""
        aps = self._started()
        try:
            lease = self.store.acquire_lease(LEADER_LEASE, self.owner, liveness.LEASE_TTL_S, alive=self.alive)
        except Exception:
            if self.leader:  # cut off from the store: another process takes over once our lease lapses
                log.warning("the state store cannot be reached: this process stops running the scheduler")
                aps.pause()
                self.leader = False
            raise
        leading = lease.owner == self.owner
        if leading and not self.leader:
            log.info("this process now runs the scheduler")
            aps.resume()
        elif not leading and self.leader:
            log.info("another process runs the scheduler now (%s)", lease.owner)
            aps.pause()
        elif leading:
            aps.wakeup()  # pick up jobs other processes added since
        self.leader = leading
        return leading

    def stop(self) -> None:
        with self._lock:
            if self.aps.state != STATE_STOPPED:
                self.aps.shutdown(wait=False)
        if self.leader:
            self.store.release_lease(LEADER_LEASE, self.owner)
            self.leader = False

    @property
    def running(self) -> bool:
        return self.aps.state == STATE_RUNNING

    @property
    def started(self) -> bool:
        """Running jobs as the leader, or standing by (paused) as a follower: either way alive."""
        return self.aps.state != STATE_STOPPED

    # -- jobs --------------------------------------------------------------------------------------
    def at(self, job_id: str, func: str, when: datetime, *args: Any) -> str:
        """A one-off job at ``when`` (UTC); replaces a job with the same id."""
        self._started().add_job(func, "date", run_date=when, args=list(args), id=job_id, replace_existing=True,
                                name=job_id)
        return job_id

    def every(self, job_id: str, func: str, *, seconds: float, args: tuple = ()) -> None:
        """A recurring job (the traffic sampler); kept if it exists, so a restart does not reset its phase."""
        aps = self._started()
        if aps.get_job(job_id) is None:
            aps.add_job(func, "interval", seconds=seconds, args=list(args), id=job_id, name=job_id)

    def daily(self, job_id: str, func: str, *, hour: int, minute: int, tz: Any, args: tuple = ()) -> None:
        """A job every day at a local time; replaced so a changed config takes effect on restart."""
        self._started().add_job(func, "cron", hour=hour, minute=minute, timezone=tz, args=list(args), id=job_id,
                                name=job_id, replace_existing=True)

    def cancel(self, job_id: str) -> bool:
        return self.store.remove_job(job_id)

    def due(self, job_id: str) -> datetime | None:
        record = self.store.get_job(job_id)
        if record is None or record.next_run_time is None:
            return None
        return datetime.fromtimestamp(record.next_run_time, timezone.utc)

    def job_ids(self) -> list[str]:
        return [r.id for r in self.store.jobs()]
