"""What a kill -9 leaves behind, and what the next process does about it (real processes, real clusters)."""

from __future__ import annotations

from bot.runs.model import Kind, State
from tests.fix_bot import wait_until
from tests.fix_pg import write_migrations
from tests.fix_serve import Scenario

SLOW = {"0002_slow.sql": "CREATE TABLE slow_things (id int);\nSELECT pg_sleep(60);\n"}
QUICK = {"0002_slow.sql": "CREATE TABLE slow_things (id int);\n"}


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
    first.kill()
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
