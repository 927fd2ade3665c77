"""Digests as people get them: the CLI, /migrate digest in the terminal adapter, the daily job, the hold-back.

Real clusters with pg_stat_statements preloaded; statements are run on prod
by the test, snapshots go through the real state store.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from bot import config, messages
from bot.app import create_runtime
from bot.chat.shell import Shell, ShellAnnouncer
from bot.runs import digests, jobs
from bot.runs.model import Kind, State
from tests.fix_bot import wait_until
from tests.fix_pg import PROD_PASSWORD, Databases

SEED = ("CREATE TABLE accounts (id bigserial PRIMARY KEY, name text);"
        "INSERT INTO accounts (name) SELECT 'n' || g FROM generate_series(1, 200) g;")
LOOKUP = "SELECT name FROM accounts WHERE id = %s"


def run_on_prod(bot_env: Databases, times: int, query: str = LOOKUP) -> None:
    with bot_env.connect("prod") as conn:
        for n in range(times):
            conn.execute(query, (1 + n % 200,))


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=dict(os.environ), timeout=120)


@pytest.fixture
def seeded(bot_env: Databases, make_migrations) -> Databases:
    bot_env.both(SEED)
    make_migrations({"0001_orders.sql": "CREATE TABLE orders (id bigserial PRIMARY KEY);"})
    return bot_env


def test_the_cli_digest_is_cumulative_first_then_a_period(seeded: Databases, workdir: Path) -> None:
    run_on_prod(seeded, 60)
    first = cli("digest", "--format", "json", cwd=workdir)
    assert first.returncode == 0, first.stderr
    data = json.loads(first.stdout)
    assert data["period"]["basis"] == "first" and data["stats_reset"] is False
    lookup = [s for s in data["statements"] if s["query"].startswith("SELECT name FROM accounts")]
    assert lookup and {"query", "calls", "total_ms", "mean_ms"} <= set(lookup[0]) and lookup[0]["calls"] >= 60
    run_on_prod(seeded, 25)
    again = cli("digest", "--format", "json", cwd=workdir)
    second = json.loads(again.stdout)
    assert second["period"]["basis"] == "delta"
    (row,) = [s for s in second["statements"] if s["query"] == lookup[0]["query"]]
    assert row["calls"] == 25  # only the period's calls: the earlier 60 are the previous snapshot's
    assert PROD_PASSWORD not in first.stdout + again.stdout


def test_the_cli_digest_as_text_names_the_period_and_the_top_statement(seeded: Databases, workdir: Path) -> None:
    run_on_prod(seeded, 30)
    done = cli("digest", cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("pg_stat_statements digest: prod, database ")
    assert "This is the first snapshot" in done.stdout and "accounts" in done.stdout


def test_no_parameter_value_reaches_the_digest(seeded: Databases, workdir: Path) -> None:
    with seeded.connect("prod") as conn:
        for _ in range(5):
            conn.execute("SELECT name FROM accounts WHERE name = 'secret-customer-42'")
    done = cli("digest", "--format", "markdown", cwd=workdir)
    assert done.returncode == 0 and "secret-customer-42" not in done.stdout


def make_shell(settings: config.Settings) -> tuple[Shell, io.StringIO]:
    out = io.StringIO()
    runtime = create_runtime(settings, ShellAnnouncer(out=out))
    return Shell(runtime, user="U_RITA", out=out), out


def test_slash_digest_posts_the_digest_where_it_was_asked(seeded: Databases) -> None:
    run_on_prod(seeded, 40)
    shell, out = make_shell(config.load(None))
    reply = shell.handle("/migrate digest")
    assert reply.ok and reply.text == messages.DIGEST_POSTING.format(env="prod")
    assert "┌ pg_stat_statements digest: prod, database" in out.getvalue()
    assert "Top " in out.getvalue() and "a chart of" in out.getvalue()


def test_a_digest_during_the_hold_back_compares_since_the_deploy(seeded: Databases) -> None:
    s = config.load(None)
    s = replace(s, policy=replace(s.policy, approvers=["U_ADA"]))
    shell, out = make_shell(s)
    store = shell.runtime.store
    run_on_prod(seeded, 60)
    digests.take(s, store, "prod")  # the hourly snapshot before the deploy
    shell.handle("/migrate validate")
    deploy = store.latest_run(Kind.DEPLOY)
    shell.handle(f"react :white_check_mark: {deploy.id} as U_ADA")
    shell.handle(f"/migrate deploy {deploy.id}")
    assert store.get_run(deploy.id).state is State.DEPLOYED
    run_on_prod(seeded, 70)
    made = digests.make(s, store, "prod").digest
    assert made.since_deploy is not None and made.since_deploy.run_id == deploy.id
    assert made.since_deploy.migrations == ("0001_orders",) and not made.since_deploy.missing
    (row,) = [r for r in made.since_deploy.rows if r.query.startswith("SELECT name FROM accounts")]
    assert (row.before_calls, row.after_calls) == (60, 70)


def test_the_daily_digest_job_is_at_the_configured_time_and_survives_a_restart(seeded: Databases,
                                                                                workdir: Path) -> None:
    from datetime import datetime, timedelta, timezone
    from zoneinfo import ZoneInfo

    s = config.load(None)
    s = replace(s, digest=replace(s.digest, channel="C_DIGEST", at="09:00", timezone="Europe/Berlin",
                                  snapshot_minutes=0),
                deploy=replace(s.deploy, traffic_sample_minutes=0))
    shell, out = make_shell(s)
    shell.runtime.start()
    try:
        due = shell.runtime.scheduler.due(jobs.DIGEST_JOB)
        local = due.astimezone(ZoneInfo("Europe/Berlin"))
        assert (local.hour, local.minute) == (9, 0) and timedelta(0) < due - datetime.now(timezone.utc) <= \
            timedelta(days=1)
    finally:
        shell.runtime.stop()
    again, out2 = make_shell(s)
    again.runtime.start()
    try:
        assert again.runtime.scheduler.due(jobs.DIGEST_JOB) == due  # the persisted job, not a new one
        run_on_prod(seeded, 20)
        again.runtime.scheduler.at(jobs.DIGEST_JOB, "bot.runs.jobs:post_digest", datetime.now(timezone.utc),
                                   "C_DIGEST")  # nine o'clock, now
        wait_until(lambda: "pg_stat_statements digest: prod" in out2.getvalue(), "the digest to be posted", 60)
    finally:
        again.runtime.stop()


def test_without_the_extension_the_digest_is_one_sentence(seeded: Databases, workdir: Path) -> None:
    seeded.sql("prod", "DROP EXTENSION pg_stat_statements")
    done = cli("digest", cwd=workdir)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "pg_stat_statements is not installed in prod's database" in done.stderr
    assert "CREATE EXTENSION pg_stat_statements;" in done.stderr
