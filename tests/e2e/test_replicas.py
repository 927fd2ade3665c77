"""Two `migrate-bot serve` replicas on one PostgreSQL state store: no lost and no doubled work.

Real processes (killed with SIGKILL where a test says so), the Slack emulator
over signed HTTP, real prod and staging clusters, and the state store in a
database of its own on the prod test cluster.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

from bot import messages
from bot.runs.model import Kind, State
from bot.runs.schedule import LEADER_LEASE
from tests.fix_bot import wait_until
from tests.fix_pg import write_migrations
from tests.fix_serve import Scenario, Serve, utcnow, window
from tests.fix_slack import APPROVER1, DEPLOYS, REQUESTER, SIGNING_SECRET
from tests.slack_emulator import post_to_bot, signed_request, slash_command_body


def pid_of(owner: str) -> int:
    return int(owner.split("/")[-2])


def leader(scenario: Scenario, serves: list[Serve]) -> Serve:
    lease = wait_until(lambda: scenario.store.lease(LEADER_LEASE), "a replica to lead the scheduler", 60)
    return next(s for s in serves if s.pid == pid_of(lease.owner))


def answers(scenario: Scenario, response_id: str) -> list:
    return [c for c in scenario.emulator.calls("response_url") if c.args.get("response_id") == response_id]


def test_fifty_commands_over_two_replicas_are_each_answered_once(replicas: Scenario) -> None:
    replicas.configure([])
    a, b = replicas.serve(), replicas.serve()
    sent: list[str] = []

    def send(serve: Serve, n: int, text: str) -> None:
        response_id = f"cmd-{n}"
        body = slash_command_body("/migrate", text, user_id=REQUESTER, channel_id=DEPLOYS,
                                  response_url=replicas.emulator.response_url(response_id))
        headers = signed_request(SIGNING_SECRET, body)
        assert post_to_bot(serve.url, body, headers)[0] == 200
        if n % 10 == 0:  # Slack retried this one, and the retry reached the other replica
            other = b if serve is a else a
            assert post_to_bot(other.url, body, {**headers, "X-Slack-Retry-Num": "1"})[0] == 200
        sent.append(response_id)

    texts = ["status", "history", "windows", "help", "validate"]
    threads = [threading.Thread(target=send, args=((a, b)[n % 2], n, texts[n % 5])) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wait_until(lambda: all(answers(replicas, r) for r in sent), "every command to be answered", 120)
    assert Counter(len(answers(replicas, r)) for r in sent) == Counter({1: 50})
    validations = replicas.store.runs(kinds=[Kind.VALIDATE], limit=100)
    assert len(validations) == 10  # one run per validate command, retries included
    done = wait_until(lambda: all(r.state in (State.PASSED, State.FAILED) for r in
                                  (replicas.store.get_run(v.id) for v in validations)) and validations,
                      "the validations to run, one after another", 180)
    assert done
    finished = [replicas.store.get_run(v.id) for v in validations]
    assert sum(r.state is State.PASSED for r in finished) == 1, [(r.state, r.summary[:150]) for r in finished]  # the rest found staging already migrated
    for run in finished:  # each ran once: one report in its thread (delivered by either replica's outbox)
        wait_until(lambda: replicas.thread(run), f"{run.id}'s thread to have its replies", 60)
        replicas.wait_reply(run, "RESULT validate")
        assert sum(t.startswith("RESULT validate") for t in replicas.thread(run)) == 1


def test_the_other_replica_fires_a_scheduled_deploy_once_when_the_leader_is_killed(replicas: Scenario) -> None:
    opens = utcnow().replace(microsecond=0) + timedelta(seconds=25)
    replicas.configure([window(opens, 300)])
    a, b = replicas.serve(), replicas.serve()
    deploy = replicas.approved_deploy(a)
    assert deploy.scheduled_for == opens.isoformat()
    first = leader(replicas, [a, b])
    first.kill()
    assert utcnow() < opens, "the leader had to die before the window opened"
    done = replicas.wait_run(deploy.id, State.DEPLOYED, State.FAILED, timeout=120)
    assert done.state is State.DEPLOYED and replicas.applied() == ["0001"]
    survivor = b if first is a else a
    assert leader(replicas, [survivor]) is survivor
    replicas.wait_reply(done, "Deploying now")
    replicas.wait_reply(done, "RESULT deploy")
    assert sum(t.startswith("Deploying now") for t in replicas.thread(done)) == 1


def test_a_killed_replicas_deploy_is_interrupted_by_the_other_and_never_rerun(replicas: Scenario) -> None:
    write_migrations(replicas.workdir / "migrations", {"0002_slow.sql": "CREATE TABLE slow_done (id int);\n"
                                                                         "SELECT pg_sleep((SELECT s FROM sleep_for));\n"})
    replicas.dbs.sql("prod", "CREATE TABLE sleep_for (s float); INSERT INTO sleep_for VALUES (60)")
    replicas.dbs.sql("staging", "CREATE TABLE sleep_for (s float); INSERT INTO sleep_for VALUES (0)")
    replicas.configure([])
    a, b = replicas.serve(), replicas.serve()
    a.command("validate")
    deploy = wait_until(lambda: (r := replicas.store.latest_run(Kind.DEPLOY)) and r.thread_ts and r,
                        "the deploy offered in its thread", 120)
    a.react(deploy.thread_ts, APPROVER1)
    replicas.wait_run(deploy.id, State.SCHEDULED)
    a.command(f"deploy {deploy.id}")  # replica a runs it
    running = replicas.wait_run(deploy.id, State.RUNNING)
    assert pid_of(running.owner) == a.pid
    wait_until(lambda: replicas.dbs.sql("prod", "SELECT count(*) FROM pg_stat_activity WHERE application_name "
                                        "LIKE %s AND query LIKE '%%pg_sleep%%'", (f"migrate-bot/{deploy.id}%",))[0][0],
               "the slow migration to run on prod", 60)
    a.kill()
    interrupted = replicas.wait_run(deploy.id, State.INTERRUPTED, timeout=60)  # b sees a's lease lapse
    assert interrupted.state is State.INTERRUPTED
    tables = {t for (t,) in replicas.dbs.sql("prod", "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert replicas.applied() == ["0001"] and "coupons" in tables and "slow_done" not in tables
    assert replicas.dbs.sql("prod", "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s",
                            (f"migrate-bot/{deploy.id}%",)) == [(0,)]  # b ended what a left running
    told = replicas.wait_reply(interrupted, messages.DEPLOY_INTERRUPTED.split("{")[0])
    assert messages.DEPLOY_REDEPLOY.format(run_id=deploy.id) in told and "0002_slow" in told, told
    assert replicas.store.get_run(deploy.id).state is State.INTERRUPTED  # and nothing ran it again
    replicas.dbs.sql("prod", "UPDATE sleep_for SET s = 0")  # the team takes it up again: no new approval needed
    b.command(f"deploy {deploy.id}")
    done = replicas.wait_run(deploy.id, State.DEPLOYED, State.FAILED, State.ERROR)
    assert done.state is State.DEPLOYED, done.summary
    assert replicas.applied() == ["0001", "0002"]
