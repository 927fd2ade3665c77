"""The state-store contract: what every ``StateStore`` keeps, whatever it stores in.

Every contract test takes the ``store`` fixture, parametrized over the
implementations; a new one joins by adding a parameter and a branch to that
one fixture (``opened``). The PostgreSQL store's branch is here, but its
parameter is not in ``IMPLEMENTATIONS``: unit tests start no database, so
``tests/integration/test_state_store_postgres.py`` runs these same contract
tests with ``store`` parametrized as "postgres". The last sections are the
sqlite file's own: a state file written by an older bot, and claims from
separate connections to one file.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import sys
import threading
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator
from zoneinfo import ZoneInfo

import pytest

from bot.runs.model import Approval, Kind, Run, State, new_run_id
from bot.runs.store import JobRecord, Lease, OwnerCheck, Sample, StateStore
from bot.runs.store.sqlite import SqliteStore

IMPLEMENTATIONS = ["sqlite"]  # and "postgres", in tests/integration/test_state_store_postgres.py
STAGING = "env:staging"
TTL_S = 30.0
_databases = itertools.count(1)


@pytest.fixture(params=IMPLEMENTATIONS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    """An empty state store of each implementation."""
    yield from opened(request.param, request, tmp_path)


def opened(implementation: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    """An empty store of ``implementation``, closed (and its database dropped) after the test: the one place a new
    implementation is added."""
    if implementation == "sqlite":
        store = SqliteStore(tmp_path / "state.db")
        yield store
        store.db.conn.close()
    elif implementation == "postgres":
        from bot.runs.store.postgres import PostgresStore

        with state_database(request.getfixturevalue("pg_clusters")) as url:
            store = PostgresStore(url)
            yield store
            store.close()
    else:
        raise AssertionError(f"no state store implementation called {implementation!r}")


@contextmanager
def state_database(clusters: Any, options: str = "") -> Iterator[str]:
    """A new empty database on the session's prod cluster (``tests.fix_pg``) for one test; its URL. Dropped after."""
    import psycopg

    name = f"state{os.getpid()}_{next(_databases)}"
    admin = clusters.prod.url("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} {options}")
    try:
        yield clusters.prod.url(name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def everyone_alive(owner: str) -> bool:
    return True


def dead(*owners: str) -> OwnerCheck:
    """An ``alive`` callback that reports ``owners`` dead and everyone else alive."""
    return lambda owner: owner not in owners


def a_run(kind: Kind = Kind.VALIDATE, state: State = State.REQUESTED, **facts: Any) -> Run:
    return Run(id=new_run_id(), kind=kind, state=state, requested_by="U1", channel="C1", **facts)


def claim(store: StateStore, run: Run, owner: str, alive: OwnerCheck = everyone_alive) -> Lease | None:
    """``owner`` starts ``run`` (a copy that says it is still ``run.state``) on its environment's lease."""
    running = replace(run, state=State.RUNNING, owner=owner)
    return store.claim(running, expect=run.state, lease=f"env:{run.env}", ttl_s=TTL_S, alive=alive)


def a_job(job_id: str, next_run_time: float | None) -> JobRecord:
    return JobRecord(job_id, next_run_time, f"state of {job_id}".encode())


def an_approval(run_id: str, user: str, created_at: str = "2026-01-05T10:00:00+00:00") -> Approval:
    return Approval(run_id=run_id, user=user, verdict="approve", fingerprint="f" * 64, created_at=created_at)


def later_by(store: StateStore, delta: timedelta, monkeypatch: pytest.MonkeyPatch) -> None:
    """Move the store's clock: it reads ``datetime.now`` from its module (both stores do; the PostgreSQL store
    never asks its server for the time)."""
    real = datetime

    class Later(real):
        @classmethod
        def now(cls, tz: timezone | None = None) -> datetime:  # type: ignore[override]
            return real.now(tz) + delta

    monkeypatch.setattr(sys.modules[type(store).__module__], "datetime", Later)


# --- runs ----------------------------------------------------------------------------------------


def test_an_inserted_run_reads_back_as_it_was_stored(store: StateStore) -> None:
    run = store.insert_run(a_run(thread_ts="111.1", scheduled_for="2026-01-05T03:00:00+00:00", owner="",
                                 data={"prompt_ts": "222.2", "estimate_s": 12}))
    assert store.get_run(run.id) == run


def test_insert_run_stamps_created_and_updated(store: StateStore) -> None:
    run = store.insert_run(a_run())
    assert run.created_at != "" and run.updated_at == run.created_at


def test_an_unknown_run_is_none(store: StateStore) -> None:
    assert store.get_run("r-missing") is None


def test_save_run_without_expect_replaces_the_run(store: StateStore) -> None:
    run = store.insert_run(a_run())
    assert store.save_run(replace(run, state=State.CANCELLED, summary="cancelled by U2")) is True
    stored = store.get_run(run.id)
    assert (stored.state, stored.summary) == (State.CANCELLED, "cancelled by U2")


def test_save_run_with_the_stored_state_as_expect_saves(store: StateStore) -> None:
    run = store.insert_run(a_run())
    assert store.save_run(replace(run, state=State.RUNNING), expect=State.REQUESTED) is True
    assert store.get_run(run.id).state == State.RUNNING


def test_save_run_fails_when_the_stored_state_moved(store: StateStore) -> None:
    run = store.insert_run(a_run())
    store.save_run(replace(run, state=State.CANCELLED), expect=State.REQUESTED)
    assert store.save_run(replace(run, state=State.RUNNING), expect=State.REQUESTED) is False


def test_a_failed_compare_and_set_leaves_the_stored_run_alone(store: StateStore) -> None:
    run = store.insert_run(a_run())
    store.save_run(replace(run, state=State.CANCELLED, summary="cancelled"), expect=State.REQUESTED)
    store.save_run(replace(run, state=State.RUNNING, summary="stale"), expect=State.REQUESTED)
    stored = store.get_run(run.id)
    assert (stored.state, stored.summary) == (State.CANCELLED, "cancelled")


def test_a_compare_and_set_of_an_unknown_run_fails(store: StateStore) -> None:
    assert store.save_run(a_run(), expect=State.REQUESTED) is False


def test_runs_lists_newest_first_filtered_by_state_and_kind(store: StateStore) -> None:
    older = store.insert_run(a_run(Kind.DEPLOY, State.AWAITING_APPROVAL))
    store.insert_run(a_run(Kind.VALIDATE, State.AWAITING_APPROVAL))
    store.insert_run(a_run(Kind.DEPLOY, State.SCHEDULED))
    newer = store.insert_run(a_run(Kind.DEPLOY, State.AWAITING_APPROVAL))
    found = store.runs(states=[State.AWAITING_APPROVAL], kinds=[Kind.DEPLOY])
    assert [r.id for r in found] == [newer.id, older.id]


def test_a_runs_summary_and_report_are_stored_redacted(store: StateStore) -> None:
    from bot.redact import register

    register("Sekrit-Value-7q2")
    run = store.insert_run(a_run(summary="failed with Sekrit-Value-7q2", report='{"x": "Sekrit-Value-7q2"}'))
    stored = store.get_run(run.id)
    assert (stored.summary, stored.report) == ("failed with ***", '{"x": "***"}')


def test_latest_run_of_a_kind(store: StateStore) -> None:
    deploy = store.insert_run(a_run(Kind.DEPLOY, State.AWAITING_APPROVAL))
    store.insert_run(a_run(Kind.VALIDATE))
    assert store.latest_run(Kind.DEPLOY).id == deploy.id


# --- claims: the environment's lease and the run's start, in one transaction ----------------------


def test_a_claim_of_a_free_environment_returns_the_claimants_lease(store: StateStore) -> None:
    run = store.insert_run(a_run())
    lease = claim(store, run, "a")
    assert (lease.name, lease.owner, lease.run_id) == (STAGING, "a", run.id)


def test_a_claim_of_a_free_environment_starts_the_run(store: StateStore) -> None:
    run = store.insert_run(a_run())
    claim(store, run, "a")
    stored = store.get_run(run.id)
    assert (stored.state, stored.owner) == (State.RUNNING, "a")


def test_a_second_claim_for_another_run_returns_the_holders_lease(store: StateStore) -> None:
    first, second = store.insert_run(a_run()), store.insert_run(a_run())
    held = claim(store, first, "a")
    assert claim(store, second, "b") == held


def test_a_losing_claim_leaves_its_run_waiting(store: StateStore) -> None:
    first, second = store.insert_run(a_run()), store.insert_run(a_run())
    claim(store, first, "a")
    claim(store, second, "b")
    assert store.get_run(second.id).state == State.REQUESTED


@pytest.mark.parametrize(
    "loser, alive",
    [
        pytest.param("a", everyone_alive, id="a-stale-thread-of-the-winners-process"),
        pytest.param("b", dead("a"), id="a-replica-that-thinks-the-winner-died"),
    ],
)
def test_a_claim_of_a_run_that_moved_on_returns_none(store: StateStore, loser: str, alive: OwnerCheck) -> None:
    run = store.insert_run(a_run())
    claim(store, run, "a")
    assert claim(store, run, loser, alive) is None


@pytest.mark.parametrize(
    "loser, alive",
    [
        pytest.param("a", everyone_alive, id="a-stale-thread-of-the-winners-process"),
        pytest.param("b", dead("a"), id="a-replica-that-thinks-the-winner-died"),
    ],
)
def test_a_claim_of_a_run_that_moved_on_leaves_the_winners_lease(store: StateStore, loser: str,
                                                                  alive: OwnerCheck) -> None:
    run = store.insert_run(a_run())
    won = claim(store, run, "a")
    claim(store, run, loser, alive)
    assert store.lease(STAGING) == won


def test_a_claim_of_a_cancelled_run_takes_no_lease(store: StateStore) -> None:
    run = store.insert_run(a_run())
    store.save_run(replace(run, state=State.CANCELLED), expect=State.REQUESTED)
    assert (claim(store, run, "a"), store.lease(STAGING)) == (None, None)


def test_a_claim_takes_the_lease_of_a_dead_owner(store: StateStore) -> None:
    first, second = store.insert_run(a_run()), store.insert_run(a_run())
    claim(store, first, "a")
    lease = claim(store, second, "b", alive=dead("a"))
    assert (lease.owner, lease.run_id) == ("b", second.id)


def test_concurrent_claims_for_one_environment_have_exactly_one_winner(store: StateStore) -> None:
    runs = [store.insert_run(a_run()) for _ in range(8)]
    start = threading.Barrier(len(runs))
    leases: dict[str, Lease | None] = {}

    def claimant(n: int, run: Run) -> None:
        start.wait()
        leases[run.id] = claim(store, run, f"host/{n}/t")

    threads = [threading.Thread(target=claimant, args=(n, run)) for n, run in enumerate(runs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    winners = [run_id for run_id, lease in leases.items() if lease is not None and lease.run_id == run_id]
    states = sorted(store.get_run(run.id).state for run in runs)
    assert (len(leases), len(winners), states) == (8, 1, [State.REQUESTED] * 7 + [State.RUNNING])


# --- leases --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "holder_ttl_s, alive, taken",
    [
        pytest.param(TTL_S, dead("a"), True, id="a-dead-owners-lease-is-taken"),
        pytest.param(TTL_S, everyone_alive, False, id="a-live-owners-lease-is-kept"),
        pytest.param(-1.0, everyone_alive, False, id="a-live-owners-expired-lease-is-kept"),
        pytest.param(-1.0, None, True, id="without-alive-an-expired-lease-is-taken"),
        pytest.param(TTL_S, None, False, id="without-alive-an-unexpired-lease-is-kept"),
    ],
)
def test_a_held_lease_is_taken_only_from_a_gone_holder(store: StateStore, holder_ttl_s: float,
                                                       alive: OwnerCheck | None, taken: bool) -> None:
    store.acquire_lease("scheduler", "a", holder_ttl_s)
    lease = store.acquire_lease("scheduler", "b", TTL_S, alive=alive)
    assert lease.owner == ("b" if taken else "a")


def test_a_free_lease_is_taken(store: StateStore) -> None:
    lease = store.acquire_lease("scheduler", "a", TTL_S, run_id="r-1")
    assert (store.lease("scheduler"), lease.owner, lease.run_id) == (lease, "a", "r-1")


def test_acquiring_ones_own_lease_renews_it(store: StateStore) -> None:
    first = store.acquire_lease("scheduler", "a", 1.0)
    again = store.acquire_lease("scheduler", "a", TTL_S)
    assert (again.acquired_at, again.expires_at > first.expires_at) == (first.acquired_at, True)


def test_a_lease_is_released_by_its_owner(store: StateStore) -> None:
    store.acquire_lease("scheduler", "a", TTL_S)
    store.release_lease("scheduler", "a")
    assert store.lease("scheduler") is None


def test_a_lease_is_not_released_by_another_owner(store: StateStore) -> None:
    held = store.acquire_lease("scheduler", "a", TTL_S)
    store.release_lease("scheduler", "b")
    assert store.lease("scheduler") == held


def test_leases_lists_every_lease_by_name(store: StateStore) -> None:
    store.acquire_lease("scheduler", "a", TTL_S)
    store.acquire_lease("env:prod", "b", TTL_S, run_id="r-1")
    assert [(lease.name, lease.owner) for lease in store.leases()] == [("env:prod", "b"), ("scheduler", "a")]


# --- processes -----------------------------------------------------------------------------------


def test_a_heartbeat_renews_the_processs_leases(store: StateStore) -> None:
    before = store.acquire_lease("scheduler", "a", 1.0)
    store.heartbeat("a", "host", 1, TTL_S)
    assert store.lease("scheduler").expires_at > before.expires_at


def test_a_heartbeat_leaves_other_processes_leases(store: StateStore) -> None:
    before = store.acquire_lease("scheduler", "b", 1.0)
    store.heartbeat("a", "host", 1, TTL_S)
    assert store.lease("scheduler") == before


def test_a_heartbeat_records_the_process_until_its_ttl(store: StateStore) -> None:
    store.heartbeat("a", "host", 41, TTL_S)
    record = store.process("a")
    assert (record.host, record.pid, record.expires_at > datetime.now(timezone.utc).isoformat()) == ("host", 41, True)


def test_a_heartbeat_keeps_the_processs_start(store: StateStore) -> None:
    store.heartbeat("a", "host", 1, 1.0)
    started = store.process("a").started_at
    store.heartbeat("a", "host", 1, TTL_S)
    assert store.process("a").started_at == started


def test_forget_process_drops_the_process(store: StateStore) -> None:
    store.heartbeat("a", "host", 1, TTL_S)
    store.forget_process("a")
    assert store.process("a") is None


def test_forget_process_drops_its_leases_only(store: StateStore) -> None:
    store.acquire_lease("scheduler", "a", TTL_S)
    store.acquire_lease("env:staging", "a", TTL_S, run_id="r-1")
    kept = store.acquire_lease("env:prod", "b", TTL_S, run_id="r-2")
    store.forget_process("a")
    assert store.leases() == [kept]


# --- the queue -----------------------------------------------------------------------------------


def test_the_queue_lists_waiting_validations_and_refreshes_oldest_first(store: StateStore) -> None:
    ids = [store.insert_run(a_run(kind)).id for kind in (Kind.REFRESH, Kind.VALIDATE, Kind.VALIDATE)]
    assert [r.id for r in store.queue("staging")] == ids


@pytest.mark.parametrize(
    "kind, state",
    [
        (Kind.VALIDATE, State.RUNNING),
        (Kind.VALIDATE, State.PASSED),
        (Kind.REFRESH, State.CANCELLED),
        (Kind.DEPLOY, State.REQUESTED),
        (Kind.DEPLOY, State.AWAITING_APPROVAL),
        (Kind.UNBLOCK, State.SCHEDULED),
    ],
)
def test_the_queue_leaves_out_runs_not_waiting_their_turn(store: StateStore, kind: Kind, state: State) -> None:
    store.insert_run(a_run(kind, state))
    assert store.queue(None) == []


def test_the_queue_of_prod_is_empty(store: StateStore) -> None:
    store.insert_run(a_run(Kind.VALIDATE))
    store.insert_run(a_run(Kind.DEPLOY))
    assert store.queue("prod") == []


def test_the_queue_of_every_environment_lists_all_waiting_runs(store: StateStore) -> None:
    ids = [store.insert_run(a_run(kind)).id for kind in (Kind.VALIDATE, Kind.REFRESH)]
    store.insert_run(a_run(Kind.VALIDATE, State.RUNNING))
    assert [r.id for r in store.queue(None)] == ids


def test_the_queue_includes_runs_still_opening_their_thread(store: StateStore) -> None:
    run = store.insert_run(a_run(data={"opening": True}))
    assert [r.id for r in store.queue("staging")] == [run.id]


# --- the run a message is about --------------------------------------------------------------------


@pytest.mark.parametrize(
    "facts",
    [
        pytest.param({"thread_ts": "111.1"}, id="the-thread-parent"),
        pytest.param({"thread_ts": "100.0", "data": {"prompt_ts": "111.1"}}, id="its-approval-prompt"),
        pytest.param({"thread_ts": "100.0", "data": {"override_prompt_ts": "111.1"}}, id="its-override-prompt"),
    ],
)
def test_run_by_message_finds_the_run_a_message_belongs_to(store: StateStore, facts: dict) -> None:
    run = store.insert_run(a_run(Kind.DEPLOY, State.AWAITING_APPROVAL, **facts))
    assert store.run_by_message("C1", "111.1").id == run.id


def test_run_by_message_in_another_channel_is_none(store: StateStore) -> None:
    store.insert_run(a_run(thread_ts="111.1"))
    assert store.run_by_message("C2", "111.1") is None


def test_run_by_message_of_an_unknown_message_is_none(store: StateStore) -> None:
    store.insert_run(a_run(thread_ts="111.1"))
    assert store.run_by_message("C1", "999.9") is None


@pytest.mark.parametrize("kind", [Kind.DEPLOY, Kind.UNBLOCK])
def test_run_by_message_prefers_a_deploy_to_a_newer_validation_in_its_thread(store: StateStore, kind: Kind) -> None:
    deploy = store.insert_run(a_run(kind, State.AWAITING_APPROVAL, thread_ts="111.1"))
    store.insert_run(a_run(Kind.VALIDATE, thread_ts="111.1"))
    assert store.run_by_message("C1", "111.1").id == deploy.id


# --- approvals -----------------------------------------------------------------------------------


def test_a_put_approval_is_listed(store: StateStore) -> None:
    approval = an_approval("r-1", "U2")
    store.put_approval(approval)
    assert store.approvals("r-1") == [approval]


def test_approvals_are_listed_per_run_in_the_order_given(store: StateStore) -> None:
    later = an_approval("r-1", "U2", "2026-01-05T11:00:00+00:00")
    earlier = an_approval("r-1", "U3", "2026-01-05T10:00:00+00:00")
    for approval in (later, earlier, an_approval("r-2", "U4")):
        store.put_approval(approval)
    assert store.approvals("r-1") == [earlier, later]


def test_a_revoked_approval_is_not_listed(store: StateStore) -> None:
    store.put_approval(an_approval("r-1", "U2"))
    assert (store.revoke_approval("r-1", "U2"), store.approvals("r-1")) == (True, [])


@pytest.mark.parametrize("approved", [pytest.param(True, id="revoked-already"), pytest.param(False, id="never-given")])
def test_revoking_an_approval_that_does_not_count_is_false(store: StateStore, approved: bool) -> None:
    if approved:
        store.put_approval(an_approval("r-1", "U2"))
        store.revoke_approval("r-1", "U2")
    assert store.revoke_approval("r-1", "U2") is False


def test_an_approval_given_again_after_a_revoke_counts(store: StateStore) -> None:
    store.put_approval(an_approval("r-1", "U2"))
    store.revoke_approval("r-1", "U2")
    again = an_approval("r-1", "U2", "2026-01-05T12:00:00+00:00")
    store.put_approval(again)
    assert store.approvals("r-1") == [again]


# --- Slack idempotency ---------------------------------------------------------------------------


def test_an_event_id_is_new_the_first_time(store: StateStore) -> None:
    assert store.first_time("Ev1") is True


def test_an_event_id_seen_before_is_not_new(store: StateStore) -> None:
    store.first_time("Ev1")
    assert store.first_time("Ev1") is False


def test_an_empty_event_id_is_always_new(store: StateStore) -> None:
    store.first_time("")
    assert store.first_time("") is True


@pytest.mark.parametrize("hours, new", [pytest.param(23, False, id="a-day-remembers"),
                                        pytest.param(25, True, id="older-ids-are-forgotten")])
def test_an_event_id_is_remembered_for_a_day(store: StateStore, monkeypatch: pytest.MonkeyPatch, hours: int,
                                             new: bool) -> None:
    store.first_time("Ev1")
    later_by(store, timedelta(hours=hours), monkeypatch)
    store.first_time("Ev2")  # later traffic: a store may forget old ids as new ones arrive
    assert store.first_time("Ev1") is new


# --- the scheduler's jobs ------------------------------------------------------------------------


def test_a_put_job_reads_back(store: StateStore) -> None:
    job = a_job("deploy:r-1", 1_767_600_000.5)
    store.put_job(job)
    assert store.get_job("deploy:r-1") == job


def test_an_unknown_job_is_none(store: StateStore) -> None:
    assert store.get_job("deploy:r-missing") is None


def test_putting_a_job_again_replaces_it(store: StateStore) -> None:
    store.put_job(a_job("sample", 100.0))
    store.put_job(JobRecord("sample", 200.0, b"rescheduled"))
    assert store.jobs() == [JobRecord("sample", 200.0, b"rescheduled")]


def test_jobs_are_listed_in_due_order_with_paused_ones_last(store: StateStore) -> None:
    for job in (a_job("paused", None), a_job("c", 300.0), a_job("b", 100.0), a_job("a", 100.0)):
        store.put_job(job)
    assert [j.id for j in store.jobs()] == ["a", "b", "c", "paused"]


@pytest.mark.parametrize("due_by, due", [(99.0, []), (100.0, ["a", "b"]), (1e12, ["a", "b", "c"])])
def test_jobs_due_by_a_time_leave_out_later_and_paused_ones(store: StateStore, due_by: float,
                                                            due: list[str]) -> None:
    for job in (a_job("paused", None), a_job("c", 300.0), a_job("b", 100.0), a_job("a", 100.0)):
        store.put_job(job)
    assert [j.id for j in store.jobs(due_by=due_by)] == due


def test_a_removed_job_is_gone(store: StateStore) -> None:
    store.put_job(a_job("sample", 100.0))
    assert (store.remove_job("sample"), store.get_job("sample")) == (True, None)


def test_removing_an_unknown_job_is_false(store: StateStore) -> None:
    assert store.remove_job("sample") is False


# --- time series ---------------------------------------------------------------------------------


def a_sample(taken_at: str, series: str = "traffic", source: str = "prod") -> Sample:
    return Sample(series=series, source=source, taken_at=taken_at, data={"xact": 1000, "active": 3})


def test_samples_of_a_series_and_source_are_listed_oldest_first(store: StateStore) -> None:
    later, earlier = a_sample("2026-01-05T04:00:00+00:00"), a_sample("2026-01-05T03:00:00+00:00")
    for sample in (later, earlier, a_sample("2026-01-05T03:30:00+00:00", series="pgss"),
                   a_sample("2026-01-05T03:30:00+00:00", source="staging")):
        store.add_sample(sample)
    assert store.samples("traffic", "prod") == [earlier, later]


@pytest.mark.parametrize("since", [
    pytest.param(datetime(2026, 1, 5, 4, tzinfo=timezone.utc), id="utc"),
    pytest.param(datetime(2026, 1, 4, 23, tzinfo=ZoneInfo("America/New_York")), id="another-zone"),
])
def test_samples_since_a_moment_start_at_it(store: StateStore, since: datetime) -> None:
    taken = ["2026-01-05T03:00:00+00:00", "2026-01-05T04:00:00+00:00", "2026-01-05T04:00:00.500000+00:00"]
    for taken_at in taken:
        store.add_sample(a_sample(taken_at))
    assert [s.taken_at for s in store.samples("traffic", "prod", since=since)] == taken[1:]


# --- the workflow's ledger -----------------------------------------------------------------------


def test_the_passing_validation_of_a_fingerprint_is_the_latest_that_passed(store: StateStore) -> None:
    store.record_validation(fingerprint="f1", passed=True, report_json="{}", migrations=["001_a.sql"])
    latest = store.record_validation(fingerprint="f1", passed=True, report_json="{}", migrations=["001_a.sql"])
    store.record_validation(fingerprint="f1", passed=False, report_json="{}", migrations=["001_a.sql"])
    assert store.passing_validation("f1")["id"] == latest


def test_a_fingerprint_without_a_passing_validation_has_none(store: StateStore) -> None:
    store.record_validation(fingerprint="f1", passed=False, report_json="{}", migrations=["001_a.sql"])
    assert store.passing_validation("f1") is None


# --- sqlite: a state file written by the previous schema --------------------------------------------

OLD_SCHEMA = """
CREATE TABLE [runs] ([id] TEXT PRIMARY KEY, [kind] TEXT, [state] TEXT, [requested_by] TEXT, [channel] TEXT,
    [thread_ts] TEXT, [fingerprint] TEXT, [commit] TEXT, [ref] TEXT, [parent] TEXT, [summary] TEXT, [report] TEXT,
    [created_at] TEXT, [updated_at] TEXT, [data] TEXT);
CREATE TABLE [env_locks] ([env] TEXT PRIMARY KEY, [run_id] TEXT, [acquired_at] TEXT);
INSERT INTO runs VALUES ('r-old', 'deploy', 'deployed', 'U1', 'C1', '111.1', 'f1', 'abc', 'main', 'r-val', 'done',
    '{}', '2025-12-01T10:00:00+00:00', '2025-12-01T10:05:00+00:00', '{"prompt_ts": "222.2"}');
INSERT INTO env_locks VALUES ('prod', 'r-old', '2025-12-01T10:00:00+00:00');
"""


@pytest.fixture
def old_state_file(tmp_path: Path) -> Path:
    """A state file as the bot wrote it before deploy windows and leases: no scheduled_for/owner, env_locks."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(OLD_SCHEMA)
    conn.close()
    return path


def _raw(path: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_an_old_state_files_run_reads_back_with_empty_new_facts(old_state_file: Path) -> None:
    run = SqliteStore(old_state_file).get_run("r-old")
    assert (run.state, run.data, run.scheduled_for, run.owner) == (State.DEPLOYED, {"prompt_ts": "222.2"}, "", "")


def test_an_old_state_file_gains_the_new_columns_defaulting_to_empty(old_state_file: Path) -> None:
    SqliteStore(old_state_file)
    columns = {row[1]: (row[3], row[4]) for row in _raw(old_state_file, "PRAGMA table_info(runs)")}
    assert (columns["scheduled_for"], columns["owner"]) == ((1, "''"), (1, "''"))


def test_an_old_state_files_rows_hold_empty_strings_in_the_new_columns(old_state_file: Path) -> None:
    SqliteStore(old_state_file)
    assert _raw(old_state_file, "SELECT scheduled_for, owner FROM runs") == [("", "")]


def test_an_old_state_file_loses_its_env_locks(old_state_file: Path) -> None:
    SqliteStore(old_state_file)
    assert _raw(old_state_file, "SELECT name FROM sqlite_master WHERE name = 'env_locks'") == []


def test_an_old_state_file_takes_new_runs(old_state_file: Path) -> None:
    store = SqliteStore(old_state_file)
    run = store.insert_run(a_run(owner="a"))
    assert store.get_run(run.id) == run


# --- sqlite: claims from separate connections (processes) to one file ------------------------------


def test_concurrent_claims_from_separate_connections_have_exactly_one_winner(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    runs = [SqliteStore(path).insert_run(a_run()) for _ in range(8)]
    stores = [SqliteStore(path) for _ in runs]
    start = threading.Barrier(len(runs))
    leases: dict[str, Lease | None] = {}

    def claimant(n: int) -> None:
        start.wait()
        leases[runs[n].id] = claim(stores[n], runs[n], f"host/{n}/t")

    threads = [threading.Thread(target=claimant, args=(n,)) for n in range(len(runs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    winners = [run_id for run_id, lease in leases.items() if lease is not None and lease.run_id == run_id]
    states = sorted(SqliteStore(path).get_run(run.id).state for run in runs)
    assert (len(leases), len(winners), states) == (8, 1, [State.REQUESTED] * 7 + [State.RUNNING])


def test_the_last_sample_before_a_moment_is_the_newest_not_after_it(store: StateStore) -> None:
    for taken_at in ("2026-01-05T03:00:00+00:00", "2026-01-05T04:00:00+00:00", "2026-01-05T05:00:00+00:00"):
        store.add_sample(a_sample(taken_at))
    found = store.last_sample("traffic", "prod", before=datetime(2026, 1, 5, 4, 30, tzinfo=timezone.utc))
    assert found is not None and found.taken_at == "2026-01-05T04:00:00+00:00"
    assert store.last_sample("traffic", "prod", before=datetime(2026, 1, 5, 2, tzinfo=timezone.utc)) is None


def test_the_first_sample_after_a_moment_is_the_oldest_not_before_it(store: StateStore) -> None:
    for taken_at in ("2026-01-05T03:00:00+00:00", "2026-01-05T04:00:00+00:00"):
        store.add_sample(a_sample(taken_at))
    found = store.first_sample("traffic", "prod", after=datetime(2026, 1, 5, 3, 30, tzinfo=timezone.utc))
    assert found is not None and found.taken_at == "2026-01-05T04:00:00+00:00"


def test_pruning_drops_only_older_samples_of_that_series_and_source(store: StateStore) -> None:
    for sample in (a_sample("2026-01-01T00:00:00+00:00"), a_sample("2026-01-09T00:00:00+00:00"),
                   a_sample("2026-01-01T00:00:00+00:00", series="pgss")):
        store.add_sample(sample)
    assert store.prune_samples("traffic", "prod", before=datetime(2026, 1, 5, tzinfo=timezone.utc)) == 1
    assert [s.taken_at for s in store.samples("traffic", "prod")] == ["2026-01-09T00:00:00+00:00"]
    assert len(store.samples("pgss", "prod")) == 1


def test_the_last_deploy_is_the_newest_successful_one_that_applied_something(store: StateStore) -> None:
    store.record_deploy(fingerprint="f1", ok=True, applied=["0001_a"], held=[], report_json="{}", run_id="r-00000001")
    store.record_deploy(fingerprint="f2", ok=False, applied=["0002_b"], held=[], report_json="{}", run_id="r-00000002")
    store.record_deploy(fingerprint="f3", ok=True, applied=[], held=["0003_c"], report_json="{}", run_id="r-00000003")
    found = store.last_deploy(since=datetime(2020, 1, 1, tzinfo=timezone.utc))
    assert found is not None and (found["run_id"], found["applied"]) == ("r-00000001", ["0001_a"])
    assert store.last_deploy(since=datetime.now(timezone.utc) + timedelta(minutes=1)) is None


def test_thinning_keeps_the_first_sample_of_each_day_before_the_cutoff(store: StateStore) -> None:
    for taken_at in ("2026-01-01T01:00:00+00:00", "2026-01-01T02:00:00+00:00", "2026-01-02T01:00:00+00:00",
                     "2026-01-02T05:00:00+00:00", "2026-01-09T01:00:00+00:00", "2026-01-09T02:00:00+00:00"):
        store.add_sample(a_sample(taken_at))
    assert store.thin_samples("traffic", "prod", before=datetime(2026, 1, 5, tzinfo=timezone.utc)) == 2
    assert [s.taken_at[:13] for s in store.samples("traffic", "prod")] == [
        "2026-01-01T01", "2026-01-02T01", "2026-01-09T01", "2026-01-09T02"]


# --- the chat outbox -----------------------------------------------------------------------------


def test_deliveries_come_back_oldest_first_with_their_payload(store: StateStore) -> None:
    first = store.enqueue("parent", {"run": "r-00000001"}, thread="r-00000001")
    second = store.enqueue("reply", {"text": "hello"}, thread="r-00000001")
    found = store.deliveries()
    assert [d.id for d in found] == [first, second] and found[1].payload == {"text": "hello"}
    assert found[0].attempts == 0 and found[0].kind == "parent"


def test_an_unclaimed_delivery_with_the_same_key_is_not_queued_twice(store: StateStore) -> None:
    first = store.enqueue("update", {"run": "r-00000001"}, key="update:r-00000001")
    assert store.enqueue("update", {"run": "r-00000001"}, key="update:r-00000001") == first
    assert store.claim_delivery(first, "me", 30)
    assert store.enqueue("update", {"run": "r-00000001"}, key="update:r-00000001") != first  # one is being sent


def test_a_delivery_is_claimed_by_one_sender_until_its_claim_lapses(store: StateStore) -> None:
    delivery = store.enqueue("reply", {"text": "x"})
    assert store.claim_delivery(delivery, "a", 30) and not store.claim_delivery(delivery, "b", 30)
    assert store.claim_delivery(delivery, "a", 30)  # its own claim, renewed
    other = store.enqueue("reply", {"text": "y"})
    assert store.claim_delivery(other, "a", -1) and store.claim_delivery(other, "b", 30)  # a lapsed claim


def test_postponing_counts_the_attempt_keeps_the_error_and_frees_the_claim(store: StateStore) -> None:
    delivery = store.enqueue("reply", {"text": "x"})
    store.claim_delivery(delivery, "a", 30)
    later = datetime(2030, 1, 1, tzinfo=timezone.utc)
    store.postpone(delivery, next_at=later, error="HTTP 500")
    (found,) = store.deliveries()
    assert (found.attempts, found.last_error, found.next_at) == (1, "HTTP 500", later.isoformat())
    assert store.claim_delivery(delivery, "b", 30)


def test_a_delivered_message_is_gone(store: StateStore) -> None:
    delivery = store.enqueue("reply", {"text": "x"})
    store.delivered(delivery)
    assert store.deliveries() == []


def test_a_save_from_an_older_copy_keeps_the_thread_and_prompt_the_outbox_recorded(store: StateStore) -> None:
    from dataclasses import replace as copy_with

    old = store.insert_run(Run(id="r-0000abcd", kind=Kind.DEPLOY, state=State.AWAITING_APPROVAL, requested_by="U1"))
    store.save_run(copy_with(old, thread_ts="1700.1", data={"prompt_ts": "1700.2"}), expect=State.AWAITING_APPROVAL)
    assert store.save_run(copy_with(old, state=State.SCHEDULED, data={"estimate_s": 60}), expect=State.AWAITING_APPROVAL)
    saved = store.get_run(old.id)
    assert (saved.thread_ts, saved.data) == ("1700.1", {"estimate_s": 60, "prompt_ts": "1700.2"})


# --- which store the settings choose ------------------------------------------------------------------


def test_without_a_state_url_the_settings_open_the_sqlite_file(tmp_path: Path) -> None:
    from bot.config import Settings, State as StateSettings
    from bot.runs.store import open_state

    found = open_state(Settings(state=StateSettings(path=str(tmp_path / "state.db"))))
    assert (type(found), found.path) == (SqliteStore, tmp_path / "state.db")


def test_a_state_url_with_a_literal_password_is_refused() -> None:
    from bot.config import parse_settings
    from bot.errors import ConfigError

    with pytest.raises(ConfigError) as refused:
        parse_settings('[state]\nurl = "postgres://bot:Hunter2-Pw@db.internal/state"\n')
    assert str(refused.value) == (
        "state.url contains a password written into the config file. Credentials belong in a secret store: use "
        "env:STATE_DATABASE_URL, file:, aws-sm: or vault: instead, and rotate that password, since it has been "
        "on disk.")


@pytest.mark.parametrize("url", ["env:STATE_DATABASE_URL", "vault:apps/bot#state_url",
                                 "postgres://bot@db.internal/state"])
def test_a_state_url_reference_or_a_url_without_password_is_accepted(url: str) -> None:
    from bot.config import parse_settings

    assert parse_settings(f'[state]\nurl = "{url}"\n').state.url == url


def test_overriding_the_state_path_keeps_the_state_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.config import load

    config = tmp_path / "migrate-bot.toml"
    config.write_text('[state]\nurl = "env:STATE_DATABASE_URL"\n', encoding="utf-8")
    monkeypatch.setenv("MIGRATE_BOT_STATE", str(tmp_path / "other.db"))
    state = load(str(config)).state
    assert (state.path, state.url) == (str(tmp_path / "other.db"), "env:STATE_DATABASE_URL")
