"""Socket Mode, end to end: the real bot opens a WebSocket to the emulator and gets its work as envelopes.

Most teams run the bot behind a firewall with ``slack.app_token`` set: no
public endpoint, Slack pushes slash commands, events and button presses down
a WebSocket the bot opened, and the bot must ack each envelope. Here the SDK's
own Socket Mode client talks to ``tests/slack_socket.py`` over a real socket:
the same flows as HTTP mode, the reconnect Slack asks for, and the start-up
sentences.
"""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from bot import messages
from bot.errors import ConfigError
from bot.runs.model import Kind, State
from tests.fix_bot import APPROVE, FK_SET, ORPHANED_ORDERS, USERS_AND_ORDERS, BotDriver, BotFactory, wait_until
from tests.fix_slack import APP_TOKEN, APPROVER1, BOT_TOKEN, DEPLOYS, REQUESTER


@pytest.fixture
def socket_bot(make_bot: BotFactory) -> BotDriver:
    bot = make_bot(socket_mode=True)
    assert bot.bot.server is None  # no HTTP endpoint at all
    return bot


def test_the_bot_opens_its_websocket_with_the_app_token_only(socket_bot: BotDriver) -> None:
    (opened,) = socket_bot.emulator.calls("apps.connections.open")
    assert opened.ok and opened.headers.get("Authorization") == f"Bearer {APP_TOKEN}"
    assert socket_bot.emulator.socket_mode.live()
    assert all(c.headers.get("Authorization") != f"Bearer {APP_TOKEN}"
               for c in socket_bot.emulator.calls() if c.method != "apps.connections.open")


def test_a_slash_command_envelope_is_acked_then_answered_on_its_response_url(socket_bot: BotDriver) -> None:
    sent = socket_bot.command("history")
    assert sent.status == 200
    assert socket_bot.reply(sent) == messages.NO_RUNS


def test_failing_validation_over_socket_mode_posts_triage_and_the_log_in_its_thread(socket_bot: BotDriver) -> None:
    socket_bot.dbs.both(USERS_AND_ORDERS + ORPHANED_ORDERS)
    socket_bot.write_migrations(FK_SET)
    run = socket_bot.validate()
    assert run.state is State.FAILED, run.summary
    replies = socket_bot.thread_texts(run.thread_ts)
    assert any(text.startswith("Triage: ") for text in replies)
    (log,) = socket_bot.emulator.files()
    assert (log.channel, log.thread_ts) == (DEPLOYS, run.thread_ts)
    assert "RESULT validate: FAIL" in log.text


def test_approval_by_reaction_event_then_deploy_over_socket_mode(socket_bot: BotDriver) -> None:
    validation, deploy = socket_bot.deploy_awaiting_approval()
    socket_bot.react(validation.thread_ts, APPROVE, APPROVER1)
    socket_bot.wait_idle()
    assert socket_bot.store.get_run(deploy.id).state is State.SCHEDULED
    sent = socket_bot.command(f"deploy {deploy.id}", user=REQUESTER)
    assert socket_bot.reply(sent) == f"Deploying {deploy.id} to prod."
    socket_bot.wait_idle()
    assert socket_bot.store.get_run(deploy.id).state is State.DEPLOYED
    assert socket_bot.dbs.sql("prod", "SELECT count(*) FROM migrate_bot.schema_migrations") == [(3,)]


def test_the_approve_button_arrives_as_an_interactive_envelope(socket_bot: BotDriver) -> None:
    validation, deploy = socket_bot.deploy_awaiting_approval()
    socket_bot.click("approve", deploy.id, APPROVER1, validation.thread_ts)
    socket_bot.wait_idle()
    assert socket_bot.thread_texts(validation.thread_ts)[-1] == messages.APPROVALS_MET.format(count=1, required=1, approvers=f"<@{APPROVER1}>", requester=REQUESTER,
        run_id=deploy.id)


def test_when_slack_recycles_the_connection_the_bot_reconnects_and_keeps_working(socket_bot: BotDriver) -> None:
    hub = socket_bot.emulator.socket_mode
    hub.ask_to_reconnect()
    hub.wait_connected(opened_at_least=2)
    assert len(socket_bot.emulator.calls("apps.connections.open")) == 2
    sent = socket_bot.command("history")
    assert socket_bot.reply(sent) == messages.NO_RUNS


def test_a_restart_in_socket_mode_marks_the_running_validation_interrupted(socket_bot: BotDriver) -> None:
    socket_bot.dbs.both(USERS_AND_ORDERS)
    socket_bot.write_migrations({"0001_slow.sql": "CREATE TABLE slow_things (id int);\nSELECT pg_sleep(5);\n"})
    sent = socket_bot.command("validate")
    run_id = socket_bot.reply(sent).split()[1].rstrip(":")
    socket_bot.wait_run(run_id, State.RUNNING)
    socket_bot.restart()
    run = socket_bot.store.get_run(run_id)
    assert run.state is State.INTERRUPTED
    assert socket_bot.emulator.socket_mode.opened == 2  # the new process opened its own connection
    assert socket_bot.store.latest_run(Kind.VALIDATE).id == run_id


def test_a_refused_app_token_is_a_sentence_without_the_token(make_bot: BotFactory, monkeypatch) -> None:
    monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-1-revoked")
    before = set(threading.enumerate())
    with pytest.raises(ConfigError) as err:
        make_bot(socket_mode=True)
    assert str(err.value).startswith("Slack refused the app-level token (invalid_auth).")
    assert "xapp-1-revoked" not in str(err.value)
    left = wait_until(lambda: not (set(threading.enumerate()) - before) or None, "no thread to outlive the refusal")
    assert left is True


def test_a_bot_token_in_the_app_token_setting_is_refused_before_connecting(make_bot: BotFactory, monkeypatch) -> None:
    monkeypatch.setenv("SLACK_APP_TOKEN", BOT_TOKEN)
    with pytest.raises(ConfigError) as err:
        make_bot(socket_mode=True)
    assert str(err.value).startswith("slack.app_token does not look like an app-level token (xapp-…). Generate")
    assert not make_bot.emulator.calls("apps.connections.open")


def test_serve_in_socket_mode_needs_no_signing_secret(make_bot: BotFactory, monkeypatch) -> None:
    monkeypatch.delenv("SLACK_SIGNING_SECRET")
    bot = make_bot(socket_mode=True)
    assert bot.command("history").status == 200


def test_migrate_bot_serve_with_a_refused_app_token_exits_2_with_a_sentence(make_bot: BotFactory, workdir,
                                                                            monkeypatch) -> None:
    monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-1-revoked-too")
    config_path = workdir / "serve.toml"
    config_path.write_text('[slack]\nbot_token = "env:SLACK_BOT_TOKEN"\napp_token = "env:SLACK_APP_TOKEN"\n'
                           f'[state]\npath = "{(workdir / "state.db").as_posix()}"\n', encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "bot.cli", "serve", "--config", str(config_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "Slack refused the app-level token (invalid_auth)." in done.stderr
    assert "Traceback" not in done.stderr and "xapp-1-revoked-too" not in done.stderr + done.stdout
