"""Starting the Slack bot with a bad token or no route to Slack: a sentence, never a traceback."""

from __future__ import annotations

import pytest

from bot import config
from bot.app import create_slack_bot
from bot.devcluster import free_port
from bot.errors import ConfigError, ConnectionFailed
from tests.fix_slack import SIGNING_SECRET


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
