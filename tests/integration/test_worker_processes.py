"""Runs in worker processes (``[runs] workers = "processes"``, the default), against real clusters.

The bot's process keeps the lease and the thread; the child does the work. These tests show the work
really happens elsewhere, comes back whole, and that a child killed mid-run is told truthfully: a
validation ends as an error naming the signal, a deploy becomes interrupted with prod read and said.
"""

from __future__ import annotations

import io
import os
import signal
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from bot import config, messages
from bot.app import create_runtime
from bot.chat.shell import Shell, ShellAnnouncer
from bot.errors import ConfigError
from bot.runs.model import Kind, Run, State
from bot.runs.steps import Steps
from bot.runs.worker import ProcessSteps
from bot.workflow.report import Report
from tests.fix_bot import wait_until
from tests.fix_pg import Databases

REQUESTER, APPROVER = "U_RITA", "U_ADA"
SEED = ("CREATE TABLE users (id bigserial PRIMARY KEY, email text); INSERT INTO users (email) VALUES ('a@x');"
        "CREATE TABLE sleep_for (s float); INSERT INTO sleep_for VALUES (0);")
PART_WAY = {"0001_columns.sql": "-- migrate:no-transaction\n"
                                "ALTER TABLE users ADD COLUMN c3 int;\n"
                                "SELECT pg_sleep((SELECT s FROM sleep_for));\n"
                                "ALTER TABLE users ADD COLUMN c4 int;\n"}


@pytest.fixture
def settings(bot_env: Databases, make_migrations) -> config.Settings:
    bot_env.both(SEED)
    make_migrations(PART_WAY)
    s = config.load(None)
    return replace(s, policy=replace(s.policy, approvers=[APPROVER]))


def shell_for(settings: config.Settings) -> Shell:
    out = io.StringIO()
    return Shell(create_runtime(settings, ShellAnnouncer(out=out)), user=REQUESTER, out=out)


def in_background(shell: Shell, line: str) -> threading.Thread:
    worker = threading.Thread(target=shell.handle, args=(line,), daemon=True)
    worker.start()
    return worker


def kill_the_worker(started: threading.Thread) -> int:
    """SIGKILL the one worker process (as the OOM killer would); returns its pid once the bot has finished the run."""
    (child,) = workers_of_this_process()
    os.kill(child, signal.SIGKILL)
    started.join(timeout=60)
    assert not started.is_alive()
    return child


def workers_of_this_process() -> list[int]:
    """Our children running ``bot.runs.worker`` (read from /proc: what the kernel says, not what we think)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and b"bot.runs.worker" in cmdline:
            found.append(int(stat.parent.name))
    return found


def sleeping(dbs: Databases, env: str, run: Run) -> int:
    return dbs.sql(env, "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s "
                        "AND query LIKE '%%pg_sleep%%' AND state = 'active'", (f"migrate-bot/{run.id}%",))[0][0]


def test_processes_are_the_default_and_threads_the_other_choice(settings: config.Settings) -> None:
    assert type(shell_for(settings).runtime.workflow) is ProcessSteps
    threads = replace(settings, runs=replace(settings.runs, workers="threads"))
    assert type(shell_for(threads).runtime.workflow) is Steps
    with pytest.raises(ConfigError, match="'runs.workers' must be \"processes\" or \"threads\", not 'fork'"):
        config.parse_settings('[runs]\nworkers = "fork"\n')


def test_a_validation_runs_in_a_child_and_its_report_and_ledger_come_back_whole(settings: config.Settings,
                                                                                bot_env: Databases) -> None:
    shell = shell_for(settings)
    shell.handle("/migrate validate")
    validation = shell.runtime.store.latest_run(Kind.VALIDATE)
    assert validation.state is State.PASSED, shell.out.getvalue()
    stored = Report.from_json(validation.report)
    assert stored.facts["worker_pid"] != os.getpid()  # the work happened in another process
    assert stored.fingerprint == validation.fingerprint
    assert shell.runtime.store.passing_validation(validation.fingerprint)  # the child wrote the ledger
    deploy = shell.runtime.store.latest_run(Kind.DEPLOY)
    assert deploy.state is State.AWAITING_APPROVAL and deploy.parent == validation.id
    assert "RESULT validate: PASS" in shell.out.getvalue()
    assert workers_of_this_process() == []  # each child is reaped when its run ends


def test_a_killed_validation_worker_is_an_error_that_says_so_and_frees_staging(settings: config.Settings,
                                                                               bot_env: Databases,
                                                                               make_migrations) -> None:
    bot_env.sql("staging", "UPDATE sleep_for SET s = 60")
    shell = shell_for(settings)
    started = in_background(shell, "/migrate validate")
    run = wait_until(lambda: shell.runtime.store.latest_run(Kind.VALIDATE), "the validation to start")
    wait_until(lambda: sleeping(bot_env, "staging", run), "the sleep to run on staging")
    child = kill_the_worker(started)

    ended = shell.runtime.store.get_run(run.id)
    assert ended.state is State.ERROR
    assert f"the worker process running it (pid {child}) was killed by SIGKILL before it reported" in ended.summary
    assert "its database sessions were ended (staging pid " in ended.summary
    assert "may have left statements on staging, which `/migrate refresh` clears" in shell.out.getvalue()
    assert sleeping(bot_env, "staging", run) == 0
    assert shell.runtime.store.leases() == []

    assert "c3" in [c for (c,) in bot_env.sql("staging", "SELECT attname FROM pg_attribute "
                                                          "WHERE attrelid = 'users'::regclass")]  # as it said
    bot_env.sql("staging", "UPDATE sleep_for SET s = 0; ALTER TABLE users DROP COLUMN c3")  # what a refresh does
    shell.handle("/migrate validate")  # staging is free again: the next one runs and passes
    assert shell.runtime.store.latest_run(Kind.VALIDATE).state is State.PASSED, shell.out.getvalue()


def test_a_killed_deploy_worker_leaves_an_interrupted_deploy_that_says_what_prod_holds_and_resumes(
        settings: config.Settings, bot_env: Databases) -> None:
    shell = shell_for(settings)
    shell.handle("/migrate validate")
    deploy = shell.runtime.store.latest_run(Kind.DEPLOY)
    assert deploy is not None and deploy.state is State.AWAITING_APPROVAL, shell.out.getvalue()
    shell.handle(f"react :white_check_mark: {deploy.id} as {APPROVER}")
    bot_env.sql("prod", "UPDATE sleep_for SET s = 60")
    started = in_background(shell, f"/migrate deploy {deploy.id}")
    wait_until(lambda: sleeping(bot_env, "prod", deploy), "the sleep to run on prod")
    kill_the_worker(started)

    ended = shell.runtime.store.get_run(deploy.id)
    assert ended.state is State.INTERRUPTED, ended.summary
    assert "0001_columns stopped after 1 of 3 statements" in ended.summary
    told = shell.out.getvalue()
    assert messages.DEPLOY_INTERRUPTED.split("{")[0] in told and messages.DEPLOY_RESUME.format(run_id=deploy.id) in told
    assert sleeping(bot_env, "prod", deploy) == 0 and shell.runtime.store.leases() == []

    bot_env.sql("prod", "UPDATE sleep_for SET s = 0")
    shell.handle(f"@{APPROVER} /migrate deploy {deploy.id} resume")
    done = shell.runtime.store.get_run(deploy.id)
    assert done.state is State.DEPLOYED, shell.out.getvalue()
    assert [c for (c,) in bot_env.sql("prod", "SELECT attname FROM pg_attribute WHERE attrelid = 'users'::regclass "
                                              "AND attnum > 0 ORDER BY attnum")][-2:] == ["c3", "c4"]
