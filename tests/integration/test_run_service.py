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
from bot.app import create_runtime
from bot.errors import ConfigError
from bot.chat.shell import Shell, ShellAnnouncer
from bot.runs.model import Kind, Run, State, new_run_id
from bot.runs.store.sqlite import SqliteStore
from tests.fix_pg import Databases

SEED = "CREATE TABLE users (id bigserial PRIMARY KEY, email text); INSERT INTO users (email) VALUES ('a@x'), ('b@x');"
REQUESTER, APPROVER, OTHER = "U_RITA", "U_ADA", "U_OSCAR"


def make_shell(settings: config.Settings, out: io.StringIO | None = None) -> Shell:
    out = out or io.StringIO()
    runtime = create_runtime(settings, ShellAnnouncer(out=out))
    return Shell(runtime, user=REQUESTER, out=out)


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
    deploy = shell.runtime.store.latest_run(Kind.DEPLOY)
    assert deploy is not None and deploy.state is State.AWAITING_APPROVAL, transcript(shell)
    return deploy


def test_validate_then_approve_then_deploy(settings, bot_env: Databases) -> None:
    shell = make_shell(settings)
    deploy = validated_deploy(shell)
    shell.handle(f"react :white_check_mark: {deploy.id} as {APPROVER}")
    assert shell.runtime.store.get_run(deploy.id).state is State.SCHEDULED
    reply = shell.handle(f"/migrate deploy {deploy.id}")
    assert reply.ok
    assert shell.runtime.store.get_run(deploy.id).state is State.DEPLOYED
    assert bot_env.sql("prod", "SELECT version FROM migrate_bot.schema_migrations") == [("0001",)]


def test_self_approval_does_not_count(settings) -> None:
    shell = make_shell(settings)
    deploy = validated_deploy(shell)
    shell.handle(f"react :white_check_mark: {deploy.id} as {REQUESTER}")
    assert messages.SELF_APPROVAL.format(approvers=f"`{APPROVER}`") in transcript(shell)
    assert shell.runtime.store.get_run(deploy.id).state is State.AWAITING_APPROVAL


def test_non_approver_does_not_count(settings) -> None:
    shell = make_shell(settings)
    deploy = validated_deploy(shell)
    shell.handle(f"react :white_check_mark: {deploy.id} as {OTHER}")
    assert messages.NOT_APPROVER.format(user=OTHER, approvers=f"`{APPROVER}`") in transcript(shell)


def test_revoked_approval_blocks_the_deploy(settings) -> None:
    shell = make_shell(settings)
    deploy = validated_deploy(shell)
    shell.handle(f"react :white_check_mark: {deploy.id} as {APPROVER}")
    shell.handle(f"unreact :white_check_mark: {deploy.id} as {APPROVER}")
    assert shell.runtime.store.get_run(deploy.id).state is State.AWAITING_APPROVAL
    reply = shell.handle(f"/migrate deploy {deploy.id}")
    assert not reply.ok and reply.text.startswith(f"{deploy.id} is awaiting_approval: it needs 1 approval(s)")


def test_reject_ends_the_deploy(settings) -> None:
    shell = make_shell(settings)
    deploy = validated_deploy(shell)
    shell.handle(f"react :x: {deploy.id} as {APPROVER}")
    assert shell.runtime.store.get_run(deploy.id).state is State.REJECTED
    assert messages.REJECTED.format(user=APPROVER, run_id=deploy.id) in transcript(shell)


def test_without_approvers_the_refusal_names_the_setting(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_orders.sql": "CREATE TABLE orders (id bigserial PRIMARY KEY);"})
    shell = make_shell(config.load(None))
    deploy = validated_deploy(shell)
    shell.handle(f"react :white_check_mark: {deploy.id} as {APPROVER}")
    assert messages.NO_APPROVERS in transcript(shell)


def hold(store, env: str, owner: str = "elsewhere/4242/live") -> Run:
    """A run of another live process holding ``env``: its process record is fresh, its lease taken."""
    run = store.insert_run(Run(id=new_run_id(), kind=Kind.VALIDATE, state=State.RUNNING, requested_by=OTHER,
                               channel="C_SHELL", thread_ts="t0", owner=owner))
    store.heartbeat(owner, "elsewhere", 4242, 60)
    store.acquire_lease(f"env:{env}", owner, 60, run_id=run.id)
    return run


def test_a_validation_while_staging_is_busy_is_queued_and_named(settings) -> None:
    shell = make_shell(settings)
    holder = hold(shell.runtime.store, "staging")
    reply = shell.handle("/migrate validate")
    assert reply.ok and reply.text.startswith(f"Queued {reply.run.id}: validate on staging, number 1 in line; "
                                              f"staging is busy with {holder.id} (validate, asked by <@{OTHER}>)")
    assert shell.runtime.store.get_run(reply.run.id).state is State.REQUESTED
    assert "Waiting for staging: number 1 in line" in transcript(shell)


def test_a_queued_validation_starts_when_staging_frees(settings) -> None:
    shell = make_shell(settings)
    store = shell.runtime.store
    holder = hold(store, "staging")
    first, second = shell.handle("/migrate validate").run, shell.handle("/migrate validate").run
    assert "number 2 in line" in shell.handle("/migrate status").text or execution_position(shell, second) == 2
    store.save_run(replace(holder, state=State.PASSED), expect=State.RUNNING)
    store.release_lease("env:staging", holder.owner)
    shell.runtime.recover()  # what the holder's finish (or the heartbeat) does: the queue moves
    shell.runtime.executor.wait(timeout=120)
    assert store.get_run(first.id).state is State.PASSED
    assert store.get_run(second.id).state in (State.PASSED, State.FAILED)  # ran after the first, on its own turn


def execution_position(shell: Shell, run) -> int:
    from bot.runs import execution

    return execution.position(shell.runtime, run)


def test_status_shows_the_queue(settings) -> None:
    shell = make_shell(settings)
    holder = hold(shell.runtime.store, "staging")
    queued = shell.handle("/migrate validate").run
    text = shell.handle("/migrate status").text
    assert f"Queue for staging (busy with {holder.id}): 1. {queued.id} validate by <@{REQUESTER}>" in text


def test_cancel_before_start(settings) -> None:
    shell = make_shell(settings)
    deploy = validated_deploy(shell)
    reply = shell.handle(f"/migrate cancel {deploy.id}")
    assert reply.ok and shell.runtime.store.get_run(deploy.id).state is State.CANCELLED
    assert not shell.handle(f"/migrate deploy {deploy.id}").ok


def test_restart_marks_a_dead_processes_running_run_interrupted(settings) -> None:
    store = SqliteStore(settings.state.path)
    dead = "gone-host/31337/dead"  # never heartbeated here: nothing says it is alive
    run = store.insert_run(Run(id=new_run_id(), kind=Kind.VALIDATE, state=State.RUNNING, requested_by=REQUESTER,
                               channel="C_SHELL", thread_ts="t1", owner=dead))
    store.acquire_lease("env:staging", dead, 60, run_id=run.id)
    fresh = make_shell(settings)  # a new process builds a new runtime on the same state file
    fresh.runtime.recover()
    assert fresh.runtime.store.get_run(run.id).state is State.INTERRUPTED
    assert messages.INTERRUPTED.format(run_id=run.id) in transcript(fresh)
    assert fresh.runtime.lifecycle.holder("staging") is None


def test_recovery_never_touches_a_live_processes_run(settings) -> None:
    """Two processes on one state store: the second starting must not interrupt the first's live run."""
    shell = make_shell(settings)
    live = hold(shell.runtime.store, "staging")
    shell.runtime.recover()
    assert shell.runtime.store.get_run(live.id).state is State.RUNNING
    assert shell.runtime.lifecycle.holder("staging") == live.id


def test_a_run_whose_heartbeat_lapsed_is_interrupted(settings) -> None:
    shell = make_shell(settings)
    store = shell.runtime.store
    run = hold(store, "staging", owner="elsewhere/4243/stale")
    store.heartbeat("elsewhere/4243/stale", "elsewhere", 4243, -1)  # its last heartbeat has expired
    shell.runtime.recover()
    assert store.get_run(run.id).state is State.INTERRUPTED


def test_triage_of_a_failed_run(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED + "UPDATE users SET email = NULL WHERE id = 1;")
    make_migrations({"0001_email_nn.sql": "ALTER TABLE users ALTER COLUMN email SET NOT NULL;"})
    shell = make_shell(config.load(None))
    run = shell.handle("/migrate validate").run
    assert shell.runtime.store.get_run(run.id).state is State.FAILED
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
    assert shell.runtime.store.get_run(run.id).state is State.AWAITING_APPROVAL
    assert f"pid {pid}" in transcript(shell)
    assert bot_env.sql("prod", "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)) == [(1,)]
    shell.handle(f"react :white_check_mark: {run.id} as {APPROVER}")
    assert shell.runtime.store.get_run(run.id).state is State.PASSED
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
    deploy = shell.runtime.store.latest_run(Kind.DEPLOY)
    assert deploy.commit == validated
    (work / "db" / "0002_sneaky.sql").write_text("DROP TABLE users;")
    git("add", ".", cwd=work)
    git("commit", "-qm", "sneaky", cwd=work)
    git("push", "-q", "origin", "main", cwd=work)
    shell.handle(f"react :white_check_mark: {deploy.id} as {APPROVER}")
    shell.handle(f"/migrate deploy {deploy.id}")
    assert shell.runtime.store.get_run(deploy.id).state is State.DEPLOYED, transcript(shell)
    assert bot_env.sql("prod", "SELECT to_regclass('users') IS NOT NULL, to_regclass('orders') IS NOT NULL") == [(True, True)]


def test_unknown_ref_is_a_sentence(bot_env: Databases, workdir: Path) -> None:
    origin = workdir / "origin.git"
    git("init", "--bare", "-q", str(origin), cwd=workdir)
    s = config.load(None)
    s = replace(s, migrations=replace(s.migrations, repo=str(origin)))
    shell = make_shell(s)
    run = shell.handle("/migrate validate no-such-branch").run
    stored = shell.runtime.store.get_run(run.id)
    assert stored.state is State.ERROR
    assert "There is no branch, tag or commit called 'no-such-branch'" in stored.summary


def test_a_stale_copy_cannot_overwrite_an_interrupted_run(settings) -> None:
    """An executor thread that outlived a restart finishes late: the stored 'interrupted' stands."""
    store = SqliteStore(settings.state.path)
    run = store.insert_run(Run(id=new_run_id(), kind=Kind.VALIDATE, state=State.RUNNING, requested_by=REQUESTER,
                               channel="C_SHELL", thread_ts="t1", owner="gone-host/1/dead"))
    make_shell(settings).runtime.recover()
    assert not store.save_run(replace(run, state=State.PASSED), expect=State.RUNNING)
    assert store.get_run(run.id).state is State.INTERRUPTED


def test_a_malformed_reaction_line_says_how_to_write_it(settings) -> None:
    reply = make_shell(settings).handle("react :x:")
    assert not reply.ok and reply.text == "Write it as: react :EMOJI: RUN-ID [as USER]"


def test_status_before_any_run_is_not_an_error(settings) -> None:
    reply = make_shell(settings).handle("/migrate status")
    assert reply.ok and reply.text == messages.NO_RUNS


def test_seen_event_ids_are_forgotten_after_a_day(workdir) -> None:
    store = SqliteStore(workdir / "state.db")
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
        SqliteStore(workdir / "a-file" / "state.db")
    assert str(err.value).startswith(f"Cannot open the state store {workdir / 'a-file' / 'state.db'} (")
    assert "MIGRATE_BOT_STATE" in err.value.next_step


def test_a_damaged_state_file_is_named_and_left_in_place(workdir) -> None:
    damaged = workdir / "state.db"
    damaged.write_bytes(b"this was never sqlite" * 100)
    with pytest.raises(ConfigError) as err:
        SqliteStore(damaged)
    assert str(err.value).startswith(f"The state store {damaged} is not a migrate-bot state file (or it is damaged). ")
    assert damaged.read_bytes() == b"this was never sqlite" * 100


def test_the_cli_says_the_state_store_sentence_with_exit_2(workdir, bot_env: Databases) -> None:
    damaged = workdir / "state.db"
    damaged.write_bytes(b"garbage")
    done = subprocess.run([sys.executable, "-m", "bot.cli", "shell", "--migrations", str(workdir)], input="history\n",
                          capture_output=True, text=True, timeout=60, env={**os.environ, "MIGRATE_BOT_STATE": str(damaged)})
    assert done.returncode == 2
    assert "is not a migrate-bot state file" in done.stderr and "Traceback" not in done.stderr + done.stdout


# -- what people are told (issue 11, item 6) -------------------------------------------------------------


def test_a_ref_without_a_repository_is_refused_with_the_folder_named(settings) -> None:
    reply = make_shell(settings).handle("/migrate validate feature/x")
    assert not reply.ok and reply.text == messages.REF_WITHOUT_REPO.format(
        folder=f"`{settings.migrations.dir}`", ref="feature/x")


def test_a_reaction_on_a_finished_run_gets_no_reply(settings) -> None:
    shell = make_shell(settings)
    deploy = validated_deploy(shell)
    shell.handle(f"/migrate cancel {deploy.id}")
    before = transcript(shell)
    assert shell.handle(f"react :white_check_mark: {deploy.id} as {OTHER}") is None
    assert transcript(shell)[len(before):].count("doesn't count") == 0


def test_status_says_when_who_approved_and_who_deployed(settings) -> None:
    shell = make_shell(settings)
    deploy = validated_deploy(shell)
    shell.handle(f"react :white_check_mark: {deploy.id} as {APPROVER}")
    shell.handle(f"@{APPROVER} /migrate deploy {deploy.id}")
    text = shell.handle(f"/migrate status {deploy.id}").text
    assert f"approved by <@{APPROVER}>" in text and f"deployed by <@{APPROVER}>" in text and " ago (" in text


def test_history_lines_carry_their_time(settings) -> None:
    shell = make_shell(settings)
    validated_deploy(shell)
    lines = shell.handle("/migrate history").text.splitlines()
    assert all(line[2] == "-" and " UTC · r-" in line for line in lines)


def test_history_rows_record_who_deployed_not_who_asked(settings, bot_env: Databases) -> None:
    shell = make_shell(settings)
    deploy = validated_deploy(shell)
    shell.handle(f"react :white_check_mark: {deploy.id} as {APPROVER}")
    shell.handle(f"@{APPROVER} /migrate deploy {deploy.id}")
    assert bot_env.sql("prod", "SELECT run_id, applied_by FROM migrate_bot.schema_migrations") == [(deploy.id, APPROVER)]


def test_a_refused_deploy_keeps_the_fingerprint_that_was_approved(settings, make_migrations) -> None:
    shell = make_shell(settings)
    deploy = validated_deploy(shell)
    shell.handle(f"react :white_check_mark: {deploy.id} as {APPROVER}")
    make_migrations({"0002_more.sql": "CREATE TABLE more_things (id int);"})  # the set changed after approval
    shell.handle(f"/migrate deploy {deploy.id}")
    refused = shell.runtime.store.get_run(deploy.id)
    assert refused.state is State.FAILED and refused.fingerprint == deploy.fingerprint


def test_the_requester_is_told_when_a_run_ends(settings) -> None:
    shell = make_shell(settings)
    run = shell.handle("/migrate validate").run
    assert messages.RUN_ENDED.format(requester=REQUESTER, kind="validate", run_id=run.id, state="passed") \
        in transcript(shell)
