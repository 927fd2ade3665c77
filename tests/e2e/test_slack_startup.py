"""Starting the Slack bot with a bad token or no route to Slack: a sentence, never a traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest

from bot import config
from bot.app import create_slack_bot
from bot.devcluster import free_port
from bot.chat import render
from bot.errors import ConfigError, ConnectionFailed
from bot.runs.model import Kind, State
from bot.runs.store.sqlite import SqliteStore
from tests.fix_bot import USERS_AND_ORDERS, bot_toml, wait_until
from tests.fix_pg import write_migrations
from tests.fix_slack import APP_TOKEN, BOT_TOKEN, DEPLOYS, REQUESTER, SIGNING_SECRET
from tests.slack_emulator import post_to_bot, signed_request, slash_command_body


@pytest.fixture
def slack_env(workdir, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SIGNING_SECRET)
    monkeypatch.setenv("MIGRATE_BOT_STATE", str(workdir / "state.db"))
    return monkeypatch


def test_a_revoked_token_is_named(slack_env, slack_emulator) -> None:
    slack_env.setenv("SLACK_BOT_TOKEN", "xoxb-revoked-token")
    slack_env.setenv("SLACK_API_URL", slack_emulator.base_url)
    with pytest.raises(ConfigError) as err:
        create_slack_bot(config.load(None))
    assert str(err.value).startswith("Slack refused the bot token (invalid_auth).")
    assert "xoxb-revoked-token" not in str(err.value)


def test_no_route_to_slack_is_a_sentence(slack_env) -> None:
    url = f"http://127.0.0.1:{free_port()}/api/"
    slack_env.setenv("SLACK_BOT_TOKEN", "xoxb-fine-token")
    slack_env.setenv("SLACK_API_URL", url)
    with pytest.raises(ConnectionFailed) as err:
        create_slack_bot(config.load(None))
    assert str(err.value).startswith(f"Could not reach Slack at {url}")


@pytest.mark.parametrize("socket_mode", [False, True], ids=["http", "socket-mode"])
def test_sigterm_stops_serve_cleanly_with_exit_0(slack_env, slack_emulator, workdir, socket_mode: bool) -> None:
    """What Kubernetes and systemd send: the bot stops taking commands, drains, says so, exits 0."""
    env = {**os.environ, "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_API_URL": slack_emulator.base_url,
           "MIGRATE_BOT_STATE": str(workdir / "state.db"), "PYTHONUNBUFFERED": "1"}
    if socket_mode:
        env["SLACK_APP_TOKEN"] = APP_TOKEN
        (workdir / "socket.toml").write_text('[slack]\napp_token = "env:SLACK_APP_TOKEN"\n', encoding="utf-8")
    args = ["--config", str(workdir / "socket.toml")] if socket_mode else ["--host", "127.0.0.1", "--port", "0"]
    serve = subprocess.Popen([sys.executable, "-m", "bot.cli", "serve", *args], stderr=subprocess.PIPE, text=True,
                             env=env)
    watchdog = threading.Timer(60, serve.kill)
    watchdog.start()
    try:
        first = serve.stderr.readline()
        assert first.startswith("migrate-bot connected to Slack in Socket Mode" if socket_mode
                                else "migrate-bot listening on http://127.0.0.1:"), first
        serve.send_signal(signal.SIGTERM)
        rest = serve.stderr.read()
        assert serve.wait() == 0, rest
    finally:
        watchdog.cancel()
        serve.kill()
    assert rest.splitlines()[-2:] == [
        "migrate-bot stopping: no new commands; waiting for 0 running run(s) to finish (Ctrl-C again stops at once; "
        "a run cut short is marked interrupted at the next start)", "migrate-bot stopped"]
    assert "Traceback" not in rest


class _Serving:
    """The real `migrate-bot serve` process, with a signed `/migrate validate` already running in it."""

    def __init__(self, dbs, emulator, workdir, sleep_s: float) -> None:
        dbs.both(USERS_AND_ORDERS)
        write_migrations(workdir / "migrations", {"0001_slow.sql": "CREATE TABLE slow_things (id int);\n"
                                                                   f"SELECT pg_sleep({sleep_s});\n"})
        (workdir / "bot.toml").write_text(bot_toml(workdir / "migrations"), encoding="utf-8")
        env = {**os.environ, "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET,
               "SLACK_API_URL": emulator.base_url, "MIGRATE_BOT_STATE": str(workdir / "state.db"),
               "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}
        self.process = subprocess.Popen([sys.executable, "-m", "bot.cli", "serve", "--config", str(workdir / "bot.toml"),
                                         "--host", "127.0.0.1", "--port", "0"], stderr=subprocess.PIPE, text=True,
                                        env=env)
        # a hung serve prints every thread's stack (faulthandler on SIGABRT) into the failing assertion's text
        self.watchdog = threading.Timer(120, self.process.send_signal, args=(signal.SIGABRT,))
        self.watchdog.start()
        url = self.process.stderr.readline().split(" listening on ")[1].split(" ")[0]
        body = slash_command_body("/migrate", "validate", user_id=REQUESTER, channel_id=DEPLOYS,
                                  response_url=emulator.response_url("drain"))
        assert post_to_bot(url, body, signed_request(SIGNING_SECRET, body))[0] == 200
        self.store = SqliteStore(workdir / "state.db")
        wait_until(lambda: self.store.runs(states=[State.RUNNING]), "the validation to start running")

    def close(self) -> None:
        self.watchdog.cancel()
        self.process.kill()


@pytest.fixture
def serving(bot_env, slack_emulator, workdir):
    made: list[_Serving] = []

    def start(sleep_s: float) -> _Serving:
        made.append(_Serving(bot_env, slack_emulator, workdir, sleep_s))
        return made[-1]

    yield start
    for serve in made:
        serve.close()


def test_sigterm_waits_for_a_running_validation_which_then_passes(serving, slack_emulator) -> None:
    """The drain is real: a run in flight when SIGTERM arrives finishes and is told in its thread, not cut off."""
    serve = serving(2)
    serve.process.send_signal(signal.SIGTERM)
    rest = serve.process.stderr.read()
    assert serve.process.wait() == 0, rest
    assert "waiting for 1 running run(s) to finish" in rest and rest.splitlines()[-1] == "migrate-bot stopped"
    assert "Traceback" not in rest
    runs = {r.kind: r for r in serve.store.runs()}
    run = runs[Kind.VALIDATE]
    assert run.state is State.PASSED and runs[Kind.DEPLOY].state is State.AWAITING_APPROVAL
    (parent,) = [m for m in slack_emulator.messages(DEPLOYS) if m.ts == run.thread_ts]
    assert parent.text == render.run_title(run)


def test_a_second_sigterm_while_draining_stops_at_once(serving) -> None:
    """Kubernetes' patience is finite and so is an operator's: the second stop means now, and says what follows."""
    serve = serving(30)
    serve.process.send_signal(signal.SIGTERM)
    draining = next(line for line in serve.process.stderr if "migrate-bot stopping" in line)
    assert "waiting for 1 running run(s) to finish" in draining
    serve.process.send_signal(signal.SIGTERM)
    rest = serve.process.stderr.read()
    assert serve.process.wait(timeout=20) == 130, rest
    assert rest.splitlines() == ["migrate-bot stopped without waiting: the next start marks what was running as "
                                 "interrupted"]
    (run,) = serve.store.runs(states=[State.RUNNING])  # left as a kill leaves it: recover() marks it interrupted
    assert run.kind is Kind.VALIDATE
