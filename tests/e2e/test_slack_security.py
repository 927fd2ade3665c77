"""Security at the Slack boundary: signatures, credentials typed into chat, and secrets that must never leak."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import psycopg
import pytest

from bot import messages
from bot.runs.model import Kind, State
from tests.fix_bot import APPROVE, FK_SET, ORPHANED_ORDERS, USERS_AND_ORDERS, BotDriver, BotFactory
from tests.fix_pg import PROD_PASSWORD, STAGING_PASSWORD, TEMPLATE, Databases
from tests.fix_slack import APP_TOKEN, APPROVER1, BOT_TOKEN, DEPLOYS, REQUESTER, SIGNING_SECRET
from tests.slack_emulator import event_body, post_to_bot, reaction_event, signed_request, slash_command_body

STALE = 6 * 60  # Slack's replay window is 5 minutes


def forged(kind: str) -> dict:
    """How a request can fail Slack's signature check: post() keyword arguments."""
    return {
        "wrong secret": {"secret": "not-the-signing-secret"},
        "stale timestamp": {"timestamp": int(time.time()) - STALE},
        "future timestamp": {"timestamp": int(time.time()) + STALE},
    }[kind]


FORGERIES = ["wrong secret", "stale timestamp", "future timestamp"]


@pytest.mark.parametrize("forgery", FORGERIES)
def test_unsigned_slash_command_is_refused_before_anything_happens(slack_bot: BotDriver, forgery: str) -> None:
    mark = slack_bot.mark()
    sent = slack_bot.post(slash_command_body("/migrate", "validate", user_id=REQUESTER), **forged(forgery))
    assert sent.status == 401
    slack_bot.wait_idle()
    assert slack_bot.calls_since(mark) == []
    assert slack_bot.store.runs() == []


def test_tampered_body_is_refused(slack_bot: BotDriver) -> None:
    mark = slack_bot.mark()
    signed_for = slash_command_body("/migrate", "status", user_id=REQUESTER)
    sent_instead = slash_command_body("/migrate", "validate", user_id=REQUESTER)
    status, _ = post_to_bot(slack_bot.url, sent_instead, signed_request(SIGNING_SECRET, signed_for))
    assert status == 401
    slack_bot.wait_idle()
    assert slack_bot.calls_since(mark) == []


def test_missing_signature_headers_are_refused(slack_bot: BotDriver) -> None:
    mark = slack_bot.mark()
    status, _ = post_to_bot(slack_bot.url, slash_command_body("/migrate", "validate"), {})
    assert status == 401
    slack_bot.wait_idle()
    assert slack_bot.calls_since(mark) == []


@pytest.mark.parametrize("forgery", FORGERIES)
def test_forged_approval_reaction_does_not_count(slack_bot: BotDriver, forgery: str) -> None:
    validation, deploy = slack_bot.deploy_awaiting_approval()
    mark = slack_bot.mark()
    event = reaction_event("reaction_added", user=APPROVER1, reaction=APPROVE, ts=validation.thread_ts)
    sent = slack_bot.post(event_body(event), **forged(forgery))
    assert sent.status == 401
    slack_bot.wait_idle()
    assert slack_bot.calls_since(mark) == []
    assert slack_bot.store.get_run(deploy.id).state is State.AWAITING_APPROVAL
    assert slack_bot.store.approvals(deploy.id) == []


# -- the credential guard --------------------------------------------------------------------

PASTED = "can someone check postgres://u:S3cret-x@h/db for me"


def test_pasted_database_url_gets_a_rotate_it_reply_in_its_thread(slack_bot: BotDriver) -> None:
    _, ts = slack_bot.say(PASTED, user=REQUESTER)
    expected = messages.CREDENTIAL_WARNING.format(user=REQUESTER, what="database URL with a password")
    slack_bot.wait_thread_text(ts, expected)
    slack_bot.wait_idle()
    assert slack_bot.thread_texts(ts) == [expected]


def test_credential_warning_never_repeats_the_secret(slack_bot: BotDriver) -> None:
    _, ts = slack_bot.say(PASTED, user=REQUESTER)
    slack_bot.emulator.wait_for("chat.postMessage", where=lambda c: c.args.get("thread_ts") == ts)
    slack_bot.wait_idle()
    assert "S3cret-x" not in slack_bot.emulator.all_text()


def test_ordinary_message_gets_no_reply(slack_bot: BotDriver) -> None:
    mark = slack_bot.mark()
    slack_bot.say("deploying the orders FK after lunch, ok?", user=REQUESTER)
    slack_bot.wait_idle()
    assert slack_bot.calls_since(mark) == []


# -- the whole flow leaks nothing ------------------------------------------------------------


def refresh_staging(dbs: Databases, seed: str) -> None:
    """What the runbook's step 2 leaves behind: staging as a fresh copy of prod (recreated, reseeded)."""
    with psycopg.connect(dbs.clusters.staging.url("postgres"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {dbs.name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {dbs.name} TEMPLATE {TEMPLATE}")
    dbs.sql("staging", seed)


@pytest.mark.parametrize("socket_mode", [False, True], ids=["http", "socket-mode"])
def test_no_secret_reaches_slack_files_or_logs(make_bot: BotFactory, caplog: pytest.LogCaptureFixture,
                                               socket_mode: bool) -> None:
    caplog.set_level(logging.DEBUG)
    bot = make_bot(socket_mode=socket_mode)  # started inside the test so its start-up logs are captured too
    bot.dbs.both(USERS_AND_ORDERS + ORPHANED_ORDERS)
    bot.write_migrations(FK_SET)
    assert bot.validate().state is State.FAILED
    bot.dbs.sql("prod", "DELETE FROM orders WHERE user_id NOT IN (SELECT id FROM users)")  # the team fixes the data
    refresh_staging(bot.dbs, USERS_AND_ORDERS)
    validation = bot.validate()
    assert validation.state is State.PASSED, validation.summary
    deploy = bot.latest(Kind.DEPLOY)
    bot.react(validation.thread_ts, APPROVE, APPROVER1)
    bot.wait_idle()
    bot.reply(bot.command(f"deploy {deploy.id}"))
    bot.wait_idle()
    assert bot.store.get_run(deploy.id).state is State.DEPLOYED

    calls = bot.emulator.calls()
    places = {
        "the emulator's text": bot.emulator.all_text(),
        "call arguments": "\n".join(json.dumps(c.args, default=str) for c in calls),
        "uploaded files": "\n".join(f.text for f in bot.emulator.files(include_incomplete=True)),
        "logs": caplog.text + "\n".join(r.getMessage() for r in caplog.records),
        "the bot's state files": "\n".join(p.read_bytes().decode("utf-8", "replace")
                                           for p in Path(bot.store.path).parent.glob(Path(bot.store.path).name + "*")),
    }
    for where, text in places.items():
        for name, secret in {"prod password": PROD_PASSWORD, "staging password": STAGING_PASSWORD,
                             "bot token": BOT_TOKEN, "signing secret": SIGNING_SECRET,
                             "app-level token": APP_TOKEN}.items():
            assert secret not in text, f"the {name} leaked into {where}"
    # the search looked at real content, not at nothing
    assert f"deploy {deploy.id} — deployed" in places["the emulator's text"]
    assert "RESULT deploy: PASS" in places["uploaded files"]
    assert "FAILED migration.0003_orders_user_fk_validate" in places["uploaded files"]
    assert len(calls) > 20 and len(caplog.records) > 20
    assert {"slack_sdk", "slack_bolt", "bot"} <= {r.name.split(".")[0] for r in caplog.records}
    assert deploy.id in places["the bot's state files"]
    assert DEPLOYS in places["call arguments"]
