"""What a kill -9 leaves behind, and what the next process does about it (real processes, real clusters)."""

from __future__ import annotations

from pathlib import Path

from bot import messages
from bot.runs.model import Kind, Run, State
from tests.fix_bot import wait_until
from tests.fix_pg import write_migrations
from tests.fix_serve import Scenario, Serve
from tests.fix_slack import APPROVER1

SLOW = {"0002_slow.sql": "CREATE TABLE slow_things (id int);\nSELECT pg_sleep(60);\n"}
QUICK = {"0002_slow.sql": "CREATE TABLE slow_things (id int);\n"}


def workers_of(pid: int) -> list[int]:
    """Live worker processes started by the bot process ``pid`` (the parent's pid is their last argument)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
            state = (cmdline.parent / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if b"bot.runs.worker" in args and args[-2:-1] == [str(pid).encode()] and state != "Z":
            found.append(int(cmdline.parent.name))
    return found


def sessions_of(scenario: Scenario, env: str, run_id: str) -> int:
    return scenario.dbs.sql(env, "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s",
                            (f"migrate-bot/{run_id}%",))[0][0]


def test_a_validation_killed_mid_statement_is_ended_and_the_next_one_passes(scenario: Scenario) -> None:
    (scenario.workdir / "migrations" / "0001_coupons.sql").unlink()  # the slow one is the whole set
    write_migrations(scenario.workdir / "migrations", SLOW)
    scenario.configure([])
    first = scenario.serve()
    first.command("validate")
    run = wait_until(lambda: scenario.store.latest_run(Kind.VALIDATE), "the validation to exist", 60)
    wait_until(lambda: sessions_of(scenario, "staging", run.id) and scenario.dbs.sql(
        "staging", "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%%pg_sleep(60)%%' AND state = 'active' "
        "AND application_name LIKE %s", (f"migrate-bot/{run.id}%",))[0][0], "the slow statement to run", 60)
    assert len(workers_of(first.pid)) == 1  # the validation works in a child of the bot's process
    first.kill()
    wait_until(lambda: not workers_of(first.pid), "the worker to die with the bot", 10)
    assert sessions_of(scenario, "staging", run.id) >= 1  # the statement runs on without its process
    write_migrations(scenario.workdir / "migrations", QUICK)  # the team shortens it and asks again
    second = scenario.serve()
    assert scenario.wait_run(run.id, State.INTERRUPTED).state is State.INTERRUPTED
    assert sessions_of(scenario, "staging", run.id) == 0  # ended by the new process before anything else
    second.command("validate")
    again = wait_until(lambda: next((r for r in scenario.store.runs(kinds=[Kind.VALIDATE]) if r.id != run.id), None),
                       "the new validation", 60)
    done = scenario.wait_run(again.id, State.PASSED, State.FAILED, State.ERROR)
    assert done.state is State.PASSED, done.summary


# -- a deploy killed mid no-transaction file: the thread says what committed, an approver resumes it ---------

PART_WAY = {"0002_columns.sql": "-- migrate:no-transaction\n"
                                "ALTER TABLE users ADD COLUMN c3 int;\n"
                                "SELECT pg_sleep((SELECT s FROM sleep_for));\n"
                                "ALTER TABLE users ADD COLUMN c4 int;\n"}


def columns(scenario: Scenario) -> list[str]:
    return [c for (c,) in scenario.dbs.sql("prod", "SELECT attname FROM pg_attribute WHERE attrelid = 'users'::regclass "
                                           "AND attnum > 0 AND NOT attisdropped ORDER BY attnum")]


def partial_rows(scenario: Scenario) -> list[tuple]:
    return scenario.dbs.sql("prod", "SELECT version, statements_done, statements_total "
                                    "FROM migrate_bot.partial_migrations ORDER BY 1")


def killed_mid_deploy(scenario: Scenario, migrations: dict[str, str]) -> tuple[Run, Serve]:
    """Validate, approve and deploy ``migrations`` (whose pg_sleep waits on prod), kill -9 the bot while it
    sleeps, start the next one; return the interrupted deploy and the new process."""
    (scenario.workdir / "migrations" / "0001_coupons.sql").unlink()
    write_migrations(scenario.workdir / "migrations", migrations)
    scenario.dbs.sql("prod", "CREATE TABLE sleep_for (s float); INSERT INTO sleep_for VALUES (60)")
    scenario.dbs.sql("staging", "CREATE TABLE sleep_for (s float); INSERT INTO sleep_for VALUES (0)")
    scenario.configure([])
    first = scenario.serve()
    first.command("validate")
    deploy = wait_until(lambda: (r := scenario.store.latest_run(Kind.DEPLOY)) and r.thread_ts and r,
                        "the deploy offered in its thread", 120)
    first.react(deploy.thread_ts, APPROVER1)
    scenario.wait_run(deploy.id, State.SCHEDULED)
    first.command(f"deploy {deploy.id}")
    scenario.wait_run(deploy.id, State.RUNNING)
    wait_until(lambda: scenario.dbs.sql("prod", "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s "
                                        "AND query LIKE '%%pg_sleep%%' AND state = 'active'",
                                        (f"migrate-bot/{deploy.id}%",))[0][0], "the sleep to run on prod", 60)
    first.kill()
    second = scenario.serve()
    return scenario.wait_run(deploy.id, State.INTERRUPTED), second


def test_a_deploy_killed_part_way_says_what_committed_and_an_approver_resumes_it(scenario: Scenario) -> None:
    deploy, second = killed_mid_deploy(scenario, PART_WAY)
    told = scenario.wait_reply(deploy, messages.DEPLOY_INTERRUPTED.split("{")[0])
    assert "0002_columns" in told and "1 of its 3 statements" in told and "ALTER TABLE users ADD COLUMN c3" in told
    assert messages.DEPLOY_RESUME.format(run_id=deploy.id) in told
    assert "c3" in columns(scenario) and "c4" not in columns(scenario)  # what the thread says is what prod holds
    assert partial_rows(scenario) == [("0002", 1, 3)] and scenario.applied() == []
    assert "stopped after 1 of 3 statements" in scenario.run(deploy.id).summary  # `/migrate status` shows it

    plain = scenario.answer(second.command(f"deploy {deploy.id}"))
    assert plain.startswith(f"{deploy.id} left a migration part-applied on prod") and "resume" in plain, plain
    by_requester = scenario.answer(second.command(f"deploy {deploy.id} resume"))  # the requester is no approver
    assert "Only an approver" in by_requester, by_requester
    assert scenario.run(deploy.id).state is State.INTERRUPTED

    scenario.dbs.sql("prod", "UPDATE sleep_for SET s = 0")
    second.command(f"deploy {deploy.id} resume", user=APPROVER1)
    done = scenario.wait_run(deploy.id, State.DEPLOYED, State.FAILED, State.ERROR)
    assert done.state is State.DEPLOYED, done.summary
    assert columns(scenario)[-2:] == ["c3", "c4"]  # c3 not added twice: the resume began at statement 2
    assert scenario.applied() == ["0002"] and partial_rows(scenario) == []
