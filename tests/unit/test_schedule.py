"""The scheduler over a real state file: persisted jobs, one leader, takeover when the leader dies.

Each ``process(owner)`` is a bot process: its own connection to one state
file and its own Scheduler. Jobs are this module's functions named by text,
as the bot's are; they write which process ran them, so a test sees the
leader and never a follower running a job.
"""

from __future__ import annotations

import sqlite3

import logging
import pickle
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator

import pytest
from apscheduler.schedulers.base import STATE_STOPPED

from bot.runs.schedule import LEADER_LEASE, Scheduler
from bot.runs.store import JobRecord
from bot.runs.store.sqlite import SqliteStore

RECORD = "tests.unit.test_schedule:record"
_worker = threading.local()  # which process a job thread works for (set by the scheduler's worker_init)


def record(path: str, value: str) -> None:
    """The job: append ``value`` and the process that ran it to ``path``."""
    with open(path, "a", encoding="utf-8") as out:
        out.write(f"{value} by {getattr(_worker, 'owner', '?')}\n")


def _work_for(owner: str) -> Callable[[], None]:
    return lambda: setattr(_worker, "owner", owner)


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout}s: {predicate.__doc__ or predicate}")
        time.sleep(0.01)


def fired(scheduler: Scheduler, ran: "Ran") -> list[str]:
    """What ran, once something did and the scheduler is done with its one-off jobs (their rows are gone)."""
    wait_until(lambda: ran.lines() != [] and scheduler.job_ids() == [])
    return ran.lines()


def soon(seconds: float = 0.0) -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=seconds)


class Deaths:
    """Every process's ``alive`` callback: an owner lives until the test says it died."""

    def __init__(self) -> None:
        self.dead: set[str] = set()

    def alive(self, owner: str) -> bool:
        return owner not in self.dead


@pytest.fixture
def deaths() -> Deaths:
    return Deaths()


@pytest.fixture
def state_file(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


class Ran:
    """What the jobs did so far, one line per run: ``"<value> by <owner>"``."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def lines(self) -> list[str]:
        return Path(self.path).read_text(encoding="utf-8").splitlines() if Path(self.path).exists() else []


@pytest.fixture
def ran(tmp_path: Path) -> Ran:
    return Ran(tmp_path / "ran.txt")


@pytest.fixture
def process(state_file: Path, deaths: Deaths) -> Iterator[Callable[[str], Scheduler]]:
    """Start a bot process's scheduler (paused until it wins an election); every one is stopped at teardown."""
    started: list[Scheduler] = []

    def start(owner: str) -> Scheduler:
        scheduler = Scheduler(SqliteStore(state_file), deaths.alive, owner, worker_init=_work_for(owner))
        started.append(scheduler)
        return scheduler

    yield start
    for scheduler in started:
        scheduler.stop()
        scheduler.store.db.conn.close()


def held(lock: threading.RLock) -> bool:
    """Whether another thread holds ``lock`` now."""
    if lock.acquire(blocking=False):
        lock.release()
        return False
    return True


def crash(scheduler: Scheduler) -> None:
    """The process dies: its scheduler stops without a word, its lease stays in the store."""
    scheduler.aps.shutdown(wait=False)


# --- persisted jobs ------------------------------------------------------------------------------


def test_a_job_at_a_time_is_a_row_in_the_store(process: Callable[[str], Scheduler], state_file: Path,
                                               ran: Ran) -> None:
    when = soon(3600)
    process("a").at("deploy:r-1", RECORD, when, ran.path, "deploy")
    rows = SqliteStore(state_file).jobs()
    assert [(job.id, job.next_run_time) for job in rows] == [("deploy:r-1", when.timestamp())]


def test_a_jobs_due_time_is_known(process: Callable[[str], Scheduler], ran: Ran) -> None:
    when = soon(3600)
    scheduler = process("a")
    scheduler.at("deploy:r-1", RECORD, when, ran.path, "deploy")
    assert scheduler.due("deploy:r-1") == when


def test_a_job_survives_a_restart_and_fires_there(process: Callable[[str], Scheduler], ran: Ran) -> None:
    before = process("a")  # never elected: it only stores the job
    before.at("deploy:r-1", RECORD, soon(0.3), ran.path, "deploy")
    before.stop()
    after = process("b")
    after.elect()
    assert fired(after, ran) == ["deploy by b"]


def test_a_job_whose_time_passed_fires_when_its_scheduler_leads(process: Callable[[str], Scheduler],
                                                                ran: Ran) -> None:
    scheduler = process("a")
    scheduler.at("deploy:r-1", RECORD, soon(-86_400), ran.path, "a day late")
    scheduler.elect()
    assert fired(scheduler, ran) == ["a day late by a"]


def test_a_fired_one_off_job_leaves_the_store(process: Callable[[str], Scheduler], ran: Ran) -> None:
    scheduler = process("a")
    scheduler.elect()
    scheduler.at("deploy:r-1", RECORD, soon(), ran.path, "deploy")
    assert fired(scheduler, ran) == ["deploy by a"]


# --- one leader ----------------------------------------------------------------------------------


def test_the_first_process_to_elect_leads(process: Callable[[str], Scheduler]) -> None:
    leader = process("a")
    assert (leader.elect(), leader.running) == (True, True)


def test_a_second_process_follows_while_the_leader_lives(process: Callable[[str], Scheduler]) -> None:
    process("a").elect()
    follower = process("b")
    assert (follower.elect(), follower.running) == (False, False)


def test_a_job_added_through_a_follower_is_a_row_in_the_store(process: Callable[[str], Scheduler], state_file: Path,
                                                              ran: Ran) -> None:
    process("a").elect()
    follower = process("b")
    follower.elect()
    follower.at("deploy:r-1", RECORD, soon(3600), ran.path, "deploy")
    assert [job.id for job in SqliteStore(state_file).jobs()] == ["deploy:r-1"]


def test_the_leader_runs_a_job_a_follower_added_once_elect_wakes_it(process: Callable[[str], Scheduler],
                                                                    ran: Ran) -> None:
    leader = process("a")
    leader.elect()
    follower = process("b")
    follower.elect()
    follower.at("deploy:r-1", RECORD, soon(), ran.path, "deploy")
    follower.elect()  # the follower's heartbeat: it still loses, so it still must not run the job
    leader.elect()  # the leader's heartbeat wakes its scheduler
    assert fired(leader, ran) == ["deploy by a"]


def test_a_follower_takes_the_lease_when_the_leader_dies(process: Callable[[str], Scheduler],
                                                         deaths: Deaths, state_file: Path) -> None:
    leader = process("a")
    leader.elect()
    follower = process("b")
    follower.elect()
    crash(leader)
    deaths.dead.add("a")
    assert (follower.elect(), SqliteStore(state_file).lease(LEADER_LEASE).owner) == (True, "b")


def test_a_follower_that_took_over_runs_the_pending_job(process: Callable[[str], Scheduler], deaths: Deaths,
                                                        ran: Ran) -> None:
    leader = process("a")
    leader.elect()
    follower = process("b")
    follower.elect()
    crash(leader)
    follower.at("deploy:r-1", RECORD, soon(), ran.path, "deploy")  # due while the leader's lease outlives it
    deaths.dead.add("a")
    follower.elect()
    assert fired(follower, ran) == ["deploy by b"]


def test_a_leader_whose_lease_was_taken_pauses_on_its_next_elect(process: Callable[[str], Scheduler],
                                                                 deaths: Deaths) -> None:
    leader = process("a")
    leader.elect()
    deaths.dead.add("a")  # its heartbeat lapsed, so another process took over
    process("b").elect()
    deaths.dead.discard("a")
    assert (leader.elect(), leader.running) == (False, False)


def test_a_leader_cut_off_from_the_store_stops_leading(process: Callable[[str], Scheduler]) -> None:
    leader = process("a")
    assert leader.elect() and leader.running

    def unreachable(*args, **kwargs):  # what a store raises when its database is gone (the scheduler is on test)
        raise sqlite3.OperationalError("unable to open database file")

    leader.store.acquire_lease = unreachable  # type: ignore[method-assign]
    with pytest.raises(sqlite3.OperationalError):
        leader.elect()
    assert (leader.leader, leader.running) == (False, False)


def test_stop_releases_the_leader_lease(process: Callable[[str], Scheduler], state_file: Path) -> None:
    leader = process("a")
    leader.elect()
    leader.stop()
    assert SqliteStore(state_file).lease(LEADER_LEASE) is None


def test_a_followers_stop_leaves_the_leaders_lease(process: Callable[[str], Scheduler], state_file: Path) -> None:
    process("a").elect()
    follower = process("b")
    follower.elect()
    follower.stop()
    assert SqliteStore(state_file).lease(LEADER_LEASE).owner == "a"


def test_stopping_a_follower_while_a_job_is_due_logs_no_error(process: Callable[[str], Scheduler], ran: Ran,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    process("a").elect()
    follower = process("b")
    follower.elect()
    follower.at("deploy:r-1", RECORD, soon(), ran.path, "deploy")  # the leader's, when it next wakes
    with caplog.at_level(logging.WARNING):
        follower.stop()
    assert [record.getMessage() for record in caplog.records] == []


def test_a_job_that_fired_as_stop_began_leaves_no_row_to_fire_again(process: Callable[[str], Scheduler], ran: Ran,
                                                                     state_file: Path) -> None:
    """stop() lands while the leader's pass is under way: here its read waits on the store's connection, as it
    does behind another thread's write. The job is submitted, so its row must go, or the next leader fires it again
    (however late)."""
    leader = process("a")
    leader.elect()
    process("b").at("remind:r-1", RECORD, soon(), ran.path, "remind")
    with leader.store._lock:
        leader.aps.wakeup()
        wait_until(lambda: held(leader.aps._jobstores_lock))  # the pass has begun
        stopping = threading.Thread(target=leader.stop)
        stopping.start()
        stopping.join(timeout=0.5)
        assert stopping.is_alive()  # stop waits for the pass in progress instead of cutting it short
    stopping.join(timeout=10)
    assert not stopping.is_alive() and leader.aps.state == STATE_STOPPED
    wait_until(lambda: ran.lines() != [])
    assert [job.id for job in SqliteStore(state_file).jobs()] == []


# --- recurring jobs and cancelling ---------------------------------------------------------------


def test_every_keeps_an_existing_jobs_phase(process: Callable[[str], Scheduler], ran: Ran) -> None:
    before = process("a")
    before.every("sample", RECORD, seconds=3600, args=(ran.path, "sample"))
    due = before.due("sample")
    before.stop()
    after = process("b")
    after.every("sample", RECORD, seconds=3600, args=(ran.path, "sample"))
    assert after.due("sample") == due


def test_cancel_removes_the_job(process: Callable[[str], Scheduler], ran: Ran) -> None:
    scheduler = process("a")
    scheduler.at("deploy:r-1", RECORD, soon(3600), ran.path, "deploy")
    assert (scheduler.cancel("deploy:r-1"), scheduler.job_ids()) == (True, [])


def test_cancelling_an_unknown_job_is_false(process: Callable[[str], Scheduler]) -> None:
    assert process("a").cancel("deploy:r-1") is False


def test_a_cancelled_job_never_fires(process: Callable[[str], Scheduler], ran: Ran) -> None:
    scheduler = process("a")
    scheduler.at("cancelled", RECORD, soon(), ran.path, "cancelled")
    scheduler.cancel("cancelled")
    scheduler.at("kept", RECORD, soon(), ran.path, "kept")  # due alongside: the pass that runs it would run both
    scheduler.elect()
    assert fired(scheduler, ran) == ["kept by a"]


# --- jobs that can no longer be restored ---------------------------------------------------------


def _not_a_pickle(process: Callable[[str], Scheduler], path: str) -> bytes:
    return b"not a pickle"


def _gone_function(process: Callable[[str], Scheduler], path: str) -> bytes:
    """A job's state as an older bot stored it, naming a function this bot no longer has."""
    older = process("older")
    older.at("broken", RECORD, soon(3600), path, "broken")
    state = pickle.loads(older.store.get_job("broken").state)
    older.cancel("broken")
    older.stop()
    return pickle.dumps(dict(state, func="tests.unit.test_schedule:no_such_job"), pickle.HIGHEST_PROTOCOL)


UNRESTORABLE = {  # how a stored job can no longer be restored -> the error its log line names
    "not-a-pickle": (_not_a_pickle, "UnpicklingError"),
    "its-function-is-gone": (_gone_function, "LookupError"),
}


@pytest.fixture(params=list(UNRESTORABLE))
def unrestorable(request: pytest.FixtureRequest, process: Callable[[str], Scheduler], state_file: Path,
                 ran: Ran) -> str:
    """A job row ``broken``, due now, that cannot be restored; returns the error its log line names."""
    make, error = UNRESTORABLE[request.param]
    store = SqliteStore(state_file)
    store.put_job(JobRecord("broken", soon(-1).timestamp(), make(process, ran.path)))
    store.db.conn.close()
    return error


def test_a_job_that_cannot_be_restored_is_dropped_with_a_log_line(process: Callable[[str], Scheduler],
                                                                  unrestorable: str,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    scheduler = process("a")
    with caplog.at_level(logging.ERROR, logger="bot.runs.schedule"):
        scheduler.elect()
        wait_until(lambda: scheduler.store.get_job("broken") is None)
    assert caplog.messages == [f"dropping scheduled job broken that can no longer be restored ({unrestorable})"]


def test_a_job_that_cannot_be_restored_does_not_stop_the_scheduler(process: Callable[[str], Scheduler],
                                                                   unrestorable: str, ran: Ran) -> None:
    scheduler = process("a")
    scheduler.elect()
    wait_until(lambda: scheduler.store.get_job("broken") is None)
    scheduler.at("after", RECORD, soon(), ran.path, "after")
    assert fired(scheduler, ran) == ["after by a"]
