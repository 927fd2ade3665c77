"""Scheduled deploys across real processes: `migrate-bot serve` killed with SIGKILL, another started on its state.

Slack is the emulator over real HTTP with signed requests; prod and staging
are real clusters; time is the real clock (windows a few seconds ahead, with
seconds in the entries). What the tests read is what a person would: the
thread in the emulator, prod's history, and the state file.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from bot import messages
from bot.runs.model import State
from tests.fix_bot import wait_until
from tests.fix_pg import write_migrations
from tests.fix_serve import Scenario, utcnow, window
from tests.fix_slack import APPROVER1


def test_a_deploy_scheduled_by_a_killed_process_fires_in_the_next_one(scenario: Scenario) -> None:
    opens = utcnow().replace(microsecond=0) + timedelta(seconds=20)
    scenario.configure([window(opens, 300)])
    deploy = scenario.approved_deploy(scenario.serve())
    assert deploy.scheduled_for == opens.isoformat()
    scenario.served[0].kill()
    assert utcnow() < opens, "the first process had to die before the window opened"
    scenario.serve()
    done = scenario.wait_run(deploy.id, State.DEPLOYED, State.FAILED)
    assert done.state is State.DEPLOYED and scenario.applied() == ["0001"]
    assert datetime.fromisoformat(done.updated_at) >= opens
    assert scenario.wait_reply(done, "Deploying now; the window is open until")


def test_a_job_missed_while_killed_fires_on_start_when_the_window_is_still_open(scenario: Scenario) -> None:
    opens = utcnow().replace(microsecond=0) + timedelta(seconds=15)
    scenario.configure([window(opens, 300)])
    deploy = scenario.approved_deploy(scenario.serve())
    scenario.served[0].kill()
    wait_until(lambda: utcnow() > opens + timedelta(seconds=2), "the window to open with no bot running", 60)
    scenario.serve()
    done = scenario.wait_run(deploy.id, State.DEPLOYED, State.FAILED)
    assert done.state is State.DEPLOYED and scenario.applied() == ["0001"]
    assert scenario.wait_reply(done, "The bot was not running at the scheduled time").endswith(": deploying now.")


def test_a_job_missed_past_its_window_is_replanned_and_the_thread_says_so(scenario: Scenario) -> None:
    opens = utcnow().replace(microsecond=0) + timedelta(seconds=15)
    scenario.configure([window(opens, 3)])
    deploy = scenario.approved_deploy(scenario.serve())
    scenario.served[0].kill()
    wait_until(lambda: utcnow() > opens + timedelta(seconds=5), "the window to pass with no bot running", 60)
    scenario.serve()
    text = scenario.wait_reply(deploy, messages.FIRE_MISSED.format(scheduled=f"{opens:%Y-%m-%d %H:%M} UTC"))
    assert f"is scheduled for <!date^{int((opens + timedelta(days=1)).timestamp())}^" in text
    assert scenario.run(deploy.id).scheduled_for == (opens + timedelta(days=1)).isoformat()
    assert scenario.applied() == []


def test_a_changed_migration_set_at_fire_time_stops_the_deploy(scenario: Scenario) -> None:
    opens = utcnow().replace(microsecond=0) + timedelta(seconds=15)
    scenario.configure([window(opens, 300)])
    deploy = scenario.approved_deploy(scenario.serve())
    write_migrations(scenario.workdir / "migrations", {"0002_more.sql": "CREATE TABLE extra (id int);\n"})
    done = scenario.wait_run(deploy.id, State.CANCELLED)
    assert scenario.wait_reply(done, "Not deploying: prod's pending migrations are no longer the set")
    assert scenario.applied() == []


def test_a_revoked_approval_stops_the_scheduled_deploy(scenario: Scenario) -> None:
    opens = utcnow().replace(microsecond=0) + timedelta(seconds=15)
    scenario.configure([window(opens, 300)])
    serve = scenario.serve()
    deploy = scenario.approved_deploy(serve)
    serve.react(deploy.thread_ts, APPROVER1, added=False)
    scenario.wait_run(deploy.id, State.AWAITING_APPROVAL)
    assert scenario.wait_reply(deploy, messages.APPROVAL_REVOKED.format(user=APPROVER1, count=0, required=1))
    assert not [j for j in scenario.store.jobs() if j.id.startswith(f"deploy:{deploy.id}")]  # nothing left to fire
    wait_until(lambda: utcnow() > opens + timedelta(seconds=3), "the window to open", 60)
    assert scenario.run(deploy.id).state is State.AWAITING_APPROVAL and scenario.applied() == []


def test_a_window_closing_mid_deploy_leaves_history_matching_the_schema(scenario: Scenario) -> None:
    scenario.dbs.sql("prod", "CREATE TABLE sleep_for (s float); INSERT INTO sleep_for VALUES (6)")
    scenario.dbs.sql("staging", "CREATE TABLE sleep_for (s float); INSERT INTO sleep_for VALUES (0)")
    write_migrations(scenario.workdir / "migrations", {
        "0002_slow.sql": "CREATE TABLE slow_done (id int); SELECT pg_sleep((SELECT s FROM sleep_for));\n",
        "0003_after.sql": "CREATE TABLE after_window (id int);\n"})
    opens = utcnow().replace(microsecond=0) + timedelta(seconds=15)
    scenario.configure([window(opens, 4)])
    deploy = scenario.approved_deploy(scenario.serve())
    scenario.wait_reply(deploy, "The deploy window closed during the deploy")
    run = scenario.wait_run(deploy.id, State.SCHEDULED)
    tables = {t for (t,) in scenario.dbs.sql("prod", "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert scenario.applied() == ["0001", "0002"]
    assert {"coupons", "slow_done"} <= tables and "after_window" not in tables
    assert run.scheduled_for == (opens + timedelta(days=1)).isoformat()
