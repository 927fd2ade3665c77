"""Pure parts of issue 11: the database-error mapping, the lock-wait ladder, the busy sentence, partial progress."""

from __future__ import annotations

import random
from datetime import datetime, timezone

import psycopg
import pytest

from bot import errors
from bot.errors import EXIT_COULD_NOT_RUN, database_error
from bot.migrations import apply, partial
from bot.migrations.lockwait import LockPolicy, LockWait, blocker_text
from bot.migrations.source import build, set_fingerprint
from bot.workflow import resume
from bot.workflow.report import Status, run_step

WHEN = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc)


def error(code: str, message: str = "server said so") -> psycopg.Error:
    return psycopg.errors.lookup(code)(message)


# -- one mapping, by SQLSTATE ---------------------------------------------------------------------------

@pytest.mark.parametrize(("code", "kind"), [
    ("08006", errors.ConnectionLost),
    ("08003", errors.ConnectionLost),
    ("57P01", errors.ServerUnavailable),
    ("57P02", errors.ServerUnavailable),
    ("57P03", errors.ServerUnavailable),
    ("53100", errors.ServerResources),
    ("53200", errors.ServerResources),
    ("53300", errors.ServerResources),
    ("53400", errors.ServerResources),
    ("42501", errors.PrivilegeMissing),
    ("55P03", errors.LockUnavailable),
    ("57014", errors.DatabaseFailed),
    ("42P01", errors.DatabaseFailed),
])
def test_each_sqlstate_class_maps_to_a_could_not_run_sentence(code: str, kind: type) -> None:
    mapped = database_error(error(code), env="staging", step="validate")
    assert type(mapped) is kind
    assert mapped.exit_code == EXIT_COULD_NOT_RUN and mapped.sqlstate == code and mapped.env == "staging"
    assert mapped.next_step  # always a next step


def test_a_connection_psycopg_found_closed_is_a_lost_connection() -> None:
    mapped = database_error(psycopg.OperationalError("the connection is closed"), env="prod", step="deploy")
    assert str(mapped) == (
        "The connection to prod was lost during deploy (the connection is closed). Nothing more was done there. "
        "Check that prod is up and reachable, then run deploy again: a migration that runs in one transaction "
        "rolled back with its history row, and one that runs statement by statement is recorded statement by "
        "statement (the next deploy says what committed).")


def test_a_terminated_session_says_so() -> None:
    mapped = database_error(error("57P01", "terminating connection due to administrator command"),
                            env="staging", step="validate")
    assert str(mapped) == (
        "Staging ended the bot's session (SQLSTATE 57P01: an administrator terminated it, or the server is "
        "shutting down) during validate. If someone ended it on purpose, ask them first; otherwise run validate "
        "again: a migration that runs in one transaction rolled back with its history row, and the next deploy "
        "says what of a statement-by-statement one committed.")


def test_the_message_text_never_decides() -> None:
    """The same words under another SQLSTATE map by the SQLSTATE."""
    mapped = database_error(error("53100", "permission denied for schema migrate_bot"), env="prod")
    assert isinstance(mapped, errors.ServerResources) and str(mapped).startswith("Prod is out of disk space")


def test_a_missing_privilege_on_the_bots_schema_names_the_grant() -> None:
    mapped = database_error(error("42501", "permission denied for schema migrate_bot"), env="prod", step="deploy",
                            role="app_rw", schema="migrate_bot")
    assert str(mapped) == (
        "The app_rw role lacks a privilege on prod during deploy (SQLSTATE 42501: permission denied for schema "
        "migrate_bot). Ask the DBA to run, on prod: GRANT USAGE, CREATE ON SCHEMA migrate_bot TO app_rw; GRANT "
        "SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA migrate_bot TO app_rw; Then run deploy again.")


def test_a_missing_create_on_the_database_names_that_grant() -> None:
    mapped = database_error(error("42501"), env="prod", step="deploy", role="app_rw", database="shop")
    assert "GRANT CREATE ON DATABASE shop TO app_rw; (or, as its owner: CREATE SCHEMA migrate_bot AUTHORIZATION " \
           "app_rw;)" in str(mapped)


def test_run_step_turns_a_database_error_into_exit_2_with_the_sentence() -> None:
    def body(report) -> None:
        report.passed("first", "done before the error")
        raise error("53300", "sorry, too many clients already")

    report = run_step("validate", body)
    assert report.exit_code == 2 and report.facts["sqlstate"] == "53300"
    assert [c.name for c in report.checks] == ["first"]  # what the step found stays in the Report (--log/--json)
    assert report.error.startswith("The database has no free connection slots (too many connections) during "
                                   "validate. Wait for connections to drop")


# -- the lock-wait ladder ------------------------------------------------------------------------------

def test_the_ladder_doubles_from_100_ms_to_the_configured_timeout() -> None:
    assert LockPolicy(max_timeout_s=2.0).rungs() == (0.1, 0.2, 0.4, 0.8, 1.6, 2.0)
    assert LockPolicy(max_timeout_s=0.3).rungs() == (0.1, 0.2, 0.3)
    assert LockPolicy(max_timeout_s=0.05).rungs() == (0.05,)


@pytest.mark.parametrize(("waited", "timeout"), [(0, 0.1), (14.9, 0.1), (15, 0.2), (25, 0.2), (30, 0.4),
                                                 (44.9, 0.4), (45, 0.8), (75, 2.0), (600, 2.0)])
def test_with_defaults_a_25_s_reader_never_meets_more_than_a_fifth_of_a_second(waited: float, timeout: float) -> None:
    assert LockPolicy(max_timeout_s=2.0).timeout_s(waited) == timeout  # lock_wait_s 90: six rungs of 15 s


def test_statements_that_never_block_the_app_wait_the_full_timeout_at_once() -> None:
    assert LockPolicy(max_timeout_s=2.0).timeout_s(0, escalate=False) == 2.0


def test_pauses_are_jittered_around_the_attempt_and_capped() -> None:
    policy, rng = LockPolicy(max_timeout_s=2.0, max_pause_s=0.5), random.Random(7)
    short = [policy.pause_s(0.1, rng) for _ in range(200)]
    long = [policy.pause_s(2.0, rng) for _ in range(200)]
    assert 0.1 <= min(short) and max(short) <= 0.3 and len(set(short)) > 100
    assert 0.25 <= min(long) and max(long) <= 0.75


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_wait_stops_at_its_budget() -> None:
    clock = Clock()
    wait = LockWait(LockPolicy(budget_s=1.0, max_pause_s=0.1), clock=clock, rng=random.Random(1))
    pauses = []
    while (pause := wait.next_pause(0.1)) is not None:
        pauses.append(pause)
        clock.now += 0.1 + pause
    assert pauses and clock.now < 1.0 + 0.3 and wait.retries == len(pauses)


def test_a_retry_count_still_caps_the_wait_when_set() -> None:
    wait = LockWait(LockPolicy(max_retries=2), clock=Clock())
    assert [wait.next_pause(0.1) is not None for _ in range(3)] == [True, True, False]


def test_only_the_first_retry_each_longer_timeout_and_new_blockers_are_announced() -> None:
    wait = LockWait(LockPolicy(), clock=Clock())
    a, b = [{"pid": 1}], [{"pid": 2}]
    said = []
    for timeout, blockers in ((0.1, a), (0.1, a), (0.1, []), (0.2, a), (0.2, a), (0.2, b), (0.4, b)):
        wait.next_pause(timeout)
        said.append(wait.announce(timeout, blockers))
    assert said == [True, False, False, True, False, True, True]


def test_a_blocker_is_named_by_its_run_or_application() -> None:
    assert blocker_text({"pid": 42, "application_name": "billing-report", "state": "idle in transaction",
                         "seconds": 25, "run": ""}) == "pid 42 (billing-report, idle in transaction for 25 s)"
    assert blocker_text({"pid": 7, "application_name": "migrate-bot/r-0123abcd", "state": "active", "seconds": 3,
                         "run": "r-0123abcd"}) == "pid 7 (run r-0123abcd, active for 3 s)"


# -- who holds the migration lock ----------------------------------------------------------------------

def holder(app: str) -> list[dict]:
    return [{"pid": 4242, "application_name": app, "backend_start": WHEN}]


def test_the_busy_sentence_names_the_run_holding_the_lock() -> None:
    assert str(apply.busy("staging", holder("migrate-bot/r-0123abcd-refresh"))) == (
        "staging is busy: run r-0123abcd holds the migration lock (backend pid 4242, since 2026-03-04 05:06:07 UTC). "
        "`/migrate status r-0123abcd` shows it; if no bot is running, the lock goes when that session ends.")


def test_on_prod_only_a_deploy_takes_the_lock() -> None:
    assert str(apply.busy("prod", holder("migrate-bot/r-0123abcd"))).startswith(
        "A deploy is already running on prod: run r-0123abcd holds the migration lock (backend pid 4242, ")


def test_a_holder_that_is_no_run_is_named_with_the_way_to_end_it() -> None:
    assert str(apply.busy("staging", holder("psql"))) == (
        "staging is busy: a session named 'psql' holds the migration lock (backend pid 4242, since 2026-03-04 "
        "05:06:07 UTC). Wait for it to finish; if nothing should be running, the lock goes when that session ends "
        "(SELECT pg_terminate_backend(4242) ends it). Never run two at once.")


# -- partial progress ------------------------------------------------------------------------------------

THREE = "-- migrate:no-transaction\nALTER TABLE t ADD COLUMN c3 int;\nSELECT pg_sleep(10);\nALTER TABLE t ADD COLUMN c4 int;\n"


def row(m, done: int, checksum: str | None = None) -> partial.PartialRow:
    return partial.PartialRow(m.version, m.name, checksum or m.checksum, done, len(m.statements), WHEN, WHEN,
                              "r-0123abcd", "U1")


def test_a_partial_row_is_not_applied_and_its_progress_is_in_the_plan() -> None:
    m = build("0002", "cols", "0002_cols.sql", THREE)
    plan = apply.plan([m], {}, {"0002": row(m, 1)})
    assert plan.pending == [m] and plan.resume_at() == {"0002": 1}
    (p,) = resume.progress(plan)
    assert (p.done, p.total, p.last_line, p.next_line, p.next_text) == (1, 3, 2, 3, "SELECT pg_sleep(10)")


def test_without_resume_a_partial_migration_is_a_blocker_with_both_ways_out() -> None:
    m = build("0002", "cols", "0002_cols.sql", THREE)
    (check,) = resume.checks(apply.plan([m], {}, {"0002": row(m, 1)}), "prod", resume=False)
    assert check.status is Status.BLOCKER
    assert check.message == (
        "0002_cols was interrupted on prod after 1 of its 3 statements (the last: line 2, `ALTER TABLE t ADD COLUMN "
        "c3 int`) had committed; the next is line 3: `SELECT pg_sleep(10)`. Resume it from there (`/migrate deploy "
        "<run> resume`, or `migrate-bot deploy --resume`), or undo what committed by hand and delete its partial row "
        "(DELETE FROM migrate_bot.partial_migrations WHERE version = '0002';) so that the next deploy runs the file "
        "whole")


def test_a_changed_file_never_resumes() -> None:
    m = build("0002", "cols", "0002_cols.sql", THREE)
    plan = apply.plan([m], {}, {"0002": row(m, 1, checksum="0" * 64)})
    (check,) = resume.checks(plan, "prod", resume=True)
    assert check.status is Status.BLOCKER and "has changed since" in check.message and plan.resume_at() == {}


# -- taking an interrupted deploy up again: is what is left still the approved set? --------------------------

def _row(m, run_id: str | None) -> apply.HistoryRow:
    return apply.HistoryRow(m.version, m.name, m.checksum, datetime(2026, 1, 1, tzinfo=timezone.utc), False, run_id)


def test_the_rest_of_the_approved_set_may_go_without_a_new_approval() -> None:
    a, b, c = (build(f"000{n}", f"m{n}", f"000{n}_m{n}.sql", f"CREATE TABLE t{n} (id int);") for n in (1, 2, 3))
    approved = set_fingerprint([b, c])
    history = {a.version: _row(a, "r-old"), b.version: _row(b, "r-this")}  # a: long ago; b: by the interrupted run
    assert resume.remaining([a, b, c], history, "r-this", approved) == set_fingerprint([c])


def test_a_set_someone_else_changed_meanwhile_needs_a_new_validation() -> None:
    a, b, c = (build(f"000{n}", f"m{n}", f"000{n}_m{n}.sql", f"CREATE TABLE t{n} (id int);") for n in (1, 2, 3))
    approved = set_fingerprint([b, c])
    assert resume.remaining([a, b, c], {b.version: _row(b, "r-other")}, "r-this", approved) is None  # b by another run
    d = build("0004", "m4", "0004_m4.sql", "CREATE TABLE t4 (id int);")
    assert resume.remaining([a, b, c, d], {a.version: _row(a, "r-old")}, "r-this", approved) is None  # a new file
