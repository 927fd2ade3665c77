"""The run service driven through the terminal chat adapter, against real clusters."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from bot import config, messages
from bot.app import create_service
from bot.errors import ConfigError
from bot.chat.shell import Shell, ShellAnnouncer
from bot.runs.model import Kind, State
from bot.runs.store import Store
from tests.fix_pg import Databases

SEED = "CREATE TABLE users (id bigserial PRIMARY KEY, email text); INSERT INTO users (email) VALUES ('a@x'), ('b@x');"
REQUESTER, APPROVER, OTHER = "U_RITA", "U_ADA", "U_OSCAR"


def make_shell(settings: config.Settings, out: io.StringIO | None = None) -> Shell:
    out = out or io.StringIO()
    service = create_service(settings, ShellAnnouncer(out=out))
    return Shell(service, user=REQUESTER, out=out)


@pytest.fixture
def settings(bot_env: Databases, make_migrations) -> config.Settings:
    bot_env.both(SEED)
    make_migrations({"0001_orders.sql": "CREATE TABLE orders (id bigserial PRIMARY KEY, user_id bigint);"})
    s = config.load(None)
    return replace(s, policy=replace(s.policy, approvers=[APPROVER]))


def transcript(shell: Shell) -> str:
    return shell.out.getvalue()


def validated_deploy(shell: Shell):
    shell.handle("/migrate validate")
    deploy = shell.service.store.latest_run(Kind.DEPLOY)
    assert deploy is not None and deploy.state is State.AWAITING_APPROVAL, transcript(shell)
    return deploy


def test_validate_then_approve_then_deploy(settings, bot_env: Databases) -> None:
    shell = make_shell(settings)
    deploy = validated_deploy(shell)
    shell.handle(f"react :white_check_mark: {deploy.id} as {APPROVER}")
    assert shell.service.store.get_run(deploy.id).state is State.SCHEDULED
    reply = shell.handle(f"/migrate deploy {deploy.id}")
    assert reply.ok
    assert shell.service.store.get_run(deploy.id).state is State.DEPLOYED
    assert bot_env.sql("prod", "SELECT version FROM migrate_bot.schema_migrations") == [("0001",)]


def test_self_approval_does_not_count(settings) -> None:
    shell = make_shell(settings)
    deploy = validated_deploy(shell)
    shell.handle(f"react :white_check_mark: {deploy.id} as {REQUESTER}")
    assert messages.SELF_APPROVAL.format(approvers=f"<@{APPROVER}>") in transcript(shell)
    assert shell.service.store.get_run(deploy.id).state is State.AWAITING_APPROVAL


def test_non_approver_does_not_count(settings) -> None:
    shell = make_shell(settings)
    deploy = validated_deploy(shell)
    shell.handle(f"react :white_check_mark: {deploy.id} as {OTHER}")
    assert messages.NOT_APPROVER.format(user=OTHER, approvers=f"<@{APPROVER}>") in transcript(shell)


def test_revoked_approval_blocks_the_deploy(settings) -> None:
    shell = make_shell(settings)
    deploy = validated_deploy(shell)
    shell.handle(f"react :white_check_mark: {deploy.id} as {APPROVER}")
    shell.handle(f"unreact :white_check_mark: {deploy.id} as {APPROVER}")
    assert shell.service.store.get_run(deploy.id).state is State.AWAITING_APPROVAL
    reply = shell.handle(f"/migrate deploy {deploy.id}")
    assert not reply.ok and reply.text.startswith(f"{deploy.id} is awaiting_approval: it needs 1 approval(s)")


def test_reject_ends_the_deploy(settings) -> None:
    shell = make_shell(settings)
    deploy = validated_deploy(shell)
    shell.handle(f"react :x: {deploy.id} as {APPROVER}")
    assert shell.service.store.get_run(deploy.id).state is State.REJECTED
    assert messages.REJECTED.format(user=APPROVER, run_id=deploy.id) in transcript(shell)


def test_without_approvers_the_refusal_names_the_setting(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_orders.sql": "CREATE TABLE orders (id bigserial PRIMARY KEY);"})
    shell = make_shell(config.load(None))
    deploy = validated_deploy(shell)
    shell.handle(f"react :white_check_mark: {deploy.id} as {APPROVER}")
    assert messages.NO_APPROVERS in transcript(shell)


def test_a_busy_environment_names_the_holder(settings) -> None:
    shell = make_shell(settings)
    store = shell.service.store
    assert store.lock_env("staging", "r-0000aaaa") is None
    reply = shell.handle("/migrate validate")
    assert not reply.ok and reply.text.startswith("staging is busy with r-0000aaaa")


def test_cancel_before_start(settings) -> None:
    shell = make_shell(settings)
    deploy = validated_deploy(shell)
    reply = shell.handle(f"/migrate cancel {deploy.id}")
    assert reply.ok and shell.service.store.get_run(deploy.id).state is State.CANCELLED
    assert not shell.handle(f"/migrate deploy {deploy.id}").ok


def test_restart_marks_running_runs_interrupted(settings) -> None:
    store = Store(settings.state.path)
    shell = make_shell(settings)
    shell.wait_after_each = False
    from bot.runs.model import Run, new_run_id

    run = Run(id=new_run_id(), kind=Kind.VALIDATE, state=State.RUNNING, requested_by=REQUESTER,
              channel="C_SHELL", thread_ts="t1")
    store.start_run(run)  # as the process that died left it: running, holding staging
    fresh = make_shell(settings)  # a new process would build a new service on the same state file
    fresh.service.recover()
    assert fresh.service.store.get_run(run.id).state is State.INTERRUPTED
    assert messages.INTERRUPTED.format(run_id=run.id) in transcript(fresh)
    assert fresh.service.store.env_holder("staging") is None


def test_triage_of_a_failed_run(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED + "UPDATE users SET email = NULL WHERE id = 1;")
    make_migrations({"0001_email_nn.sql": "ALTER TABLE users ALTER COLUMN email SET NOT NULL;"})
    shell = make_shell(config.load(None))
    run = shell.handle("/migrate validate").run
    assert shell.service.store.get_run(run.id).state is State.FAILED
    reply = shell.handle(f"/migrate triage {run.id}")
    assert "UPDATE users SET email = <default_value> WHERE email IS NULL;" in reply.text


def test_unknown_command_suggests_the_closest(settings) -> None:
    shell = make_shell(settings)
    reply = shell.handle("/migrate valdate")
    assert not reply.ok and "validate" in reply.text


def test_unblock_terminates_only_after_an_approver(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    make_migrations({})
    s = config.load(None)
    s = replace(s, policy=replace(s.policy, approvers=[APPROVER]),
                gate=replace(s.gate, idle_in_transaction_minutes=0))
    idle = bot_env.connect("prod", autocommit=False)
    idle.execute("SELECT 1")  # now idle in transaction
    pid = idle.info.backend_pid
    shell = make_shell(s)
    run = shell.handle("/migrate unblock").run
    assert shell.service.store.get_run(run.id).state is State.AWAITING_APPROVAL
    assert f"pid {pid}" in transcript(shell)
    assert bot_env.sql("prod", "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)) == [(1,)]
    shell.handle(f"react :white_check_mark: {run.id} as {APPROVER}")
    assert shell.service.store.get_run(run.id).state is State.PASSED
    assert bot_env.sql("prod", "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)) == [(0,)]
    idle.close()


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def test_deploy_uses_the_validated_commit(bot_env: Databases, workdir: Path) -> None:
    bot_env.both(SEED)
    origin, work = workdir / "origin.git", workdir / "work"
    git("init", "--bare", "-q", "-b", "main", str(origin), cwd=workdir)
    git("clone", "-q", str(origin), str(work), cwd=workdir)
    git("config", "user.email", "t@example.com", cwd=work)
    git("config", "user.name", "t", cwd=work)
    (work / "db").mkdir()
    (work / "db" / "0001_orders.sql").write_text("CREATE TABLE orders (id bigserial PRIMARY KEY);")
    git("add", ".", cwd=work)
    git("commit", "-qm", "orders", cwd=work)
    git("push", "-q", "origin", "main", cwd=work)
    validated = git("rev-parse", "HEAD", cwd=work)
    s = config.load(None)
    s = replace(s, policy=replace(s.policy, approvers=[APPROVER]),
                migrations=replace(s.migrations, repo=str(origin), path="db"))
    shell = make_shell(s)
    shell.handle("/migrate validate main")
    deploy = shell.service.store.latest_run(Kind.DEPLOY)
    assert deploy.commit == validated
    (work / "db" / "0002_sneaky.sql").write_text("DROP TABLE users;")
    git("add", ".", cwd=work)
    git("commit", "-qm", "sneaky", cwd=work)
    git("push", "-q", "origin", "main", cwd=work)
    shell.handle(f"react :white_check_mark: {deploy.id} as {APPROVER}")
    shell.handle(f"/migrate deploy {deploy.id}")
    assert shell.service.store.get_run(deploy.id).state is State.DEPLOYED, transcript(shell)
    assert bot_env.sql("prod", "SELECT to_regclass('users') IS NOT NULL, to_regclass('orders') IS NOT NULL") == [(True, True)]


def test_unknown_ref_is_a_sentence(bot_env: Databases, workdir: Path) -> None:
    origin = workdir / "origin.git"
    git("init", "--bare", "-q", str(origin), cwd=workdir)
    s = config.load(None)
    s = replace(s, migrations=replace(s.migrations, repo=str(origin)))
    shell = make_shell(s)
    run = shell.handle("/migrate validate no-such-branch").run
    stored = shell.service.store.get_run(run.id)
    assert stored.state is State.ERROR
    assert "There is no branch, tag or commit called 'no-such-branch'" in stored.summary


def test_a_stale_copy_cannot_overwrite_an_interrupted_run(settings) -> None:
    """An executor thread that outlived a restart finishes late: the stored 'interrupted' stands."""
    from bot.runs.model import Run, new_run_id

    store = Store(settings.state.path)
    run = Run(id=new_run_id(), kind=Kind.VALIDATE, state=State.RUNNING, requested_by=REQUESTER, channel="C_SHELL",
              thread_ts="t1")
    store.start_run(run)
    make_shell(settings).service.recover()
    assert not store.save_run(replace(run, state=State.PASSED), expect=State.RUNNING)
    assert store.get_run(run.id).state is State.INTERRUPTED


def test_a_malformed_reaction_line_says_how_to_write_it(settings) -> None:
    reply = make_shell(settings).handle("react :x:")
    assert not reply.ok and reply.text == "Write it as: react :EMOJI: RUN-ID [as USER]"


def test_status_before_any_run_is_not_an_error(settings) -> None:
    reply = make_shell(settings).handle("/migrate status")
    assert reply.ok and reply.text == messages.NO_RUNS


def test_seen_event_ids_are_forgotten_after_a_day(workdir) -> None:
    store = Store(workdir / "state.db")
    store.db["seen_events"].insert({"id": "Ev-old", "seen_at": "2020-01-01T00:00:00+00:00"})
    assert store.first_time("Ev-new") and not store.first_time("Ev-new")
    assert [r["id"] for r in store.db["seen_events"].rows] == ["Ev-new"]


def test_a_bare_command_word_in_the_shell_means_the_slash_command(settings) -> None:
    shell = make_shell(settings)
    deploy = validated_deploy(shell)
    reply = shell.handle(f"status {deploy.id}")
    assert reply.ok and reply.text == shell.handle(f"/migrate status {deploy.id}").text
    assert deploy.id in reply.text


def test_a_state_path_that_cannot_exist_is_a_sentence(workdir) -> None:
    (workdir / "a-file").write_text("not a directory", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        Store(workdir / "a-file" / "state.db")
    assert str(err.value).startswith(f"Cannot open the state store {workdir / 'a-file' / 'state.db'} (")
    assert "MIGRATE_BOT_STATE" in err.value.next_step


def test_a_damaged_state_file_is_named_and_left_in_place(workdir) -> None:
    damaged = workdir / "state.db"
    damaged.write_bytes(b"this was never sqlite" * 100)
    with pytest.raises(ConfigError) as err:
        Store(damaged)
    assert str(err.value).startswith(f"The state store {damaged} is not a migrate-bot state file (or it is damaged). ")
    assert damaged.read_bytes() == b"this was never sqlite" * 100


def test_the_cli_says_the_state_store_sentence_with_exit_2(workdir, bot_env: Databases) -> None:
    damaged = workdir / "state.db"
    damaged.write_bytes(b"garbage")
    done = subprocess.run([sys.executable, "-m", "bot.cli", "shell", "--migrations", str(workdir)], input="history\n",
                          capture_output=True, text=True, timeout=60, env={**os.environ, "MIGRATE_BOT_STATE": str(damaged)})
    assert done.returncode == 2
    assert "is not a migrate-bot state file" in done.stderr and "Traceback" not in done.stderr + done.stdout
