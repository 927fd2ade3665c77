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
    assert {"slack_sdk", "bot"} <= {r.name.split(".")[0] for r in caplog.records}
    assert any(r.name == "bot.chat.bolt" for r in caplog.records)  # bolt's own logging, through our filter
    assert deploy.id in places["the bot's state files"]
    assert DEPLOYS in places["call arguments"]


# -- a hostile HTTP front ----------------------------------------------------------------------------


def raw_post(url: str, head: str, body_chunks: int = 0, chunk: bytes = b"x" * 65536) -> tuple[int, int]:
    """Send a hand-made request (headers as given), then stream ``body_chunks`` chunks while the answer comes.

    Returns (status, bytes of body the bot let us send before it answered and closed). A bot that reads an
    unbounded body would keep accepting bytes; one that refuses before reading closes after answering.
    """
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    sent = 0
    try:
        sock.sendall(head.format(path=parts.path).encode())
        for _ in range(body_chunks):
            try:
                sock.sendall(chunk)
                sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sock.settimeout(0.001)
            try:
                if sock.recv(1, socket.MSG_PEEK):
                    break  # the answer is here: the bot did not wait for the body
            except (BlockingIOError, TimeoutError, socket.timeout):
                pass
            finally:
                sock.settimeout(30)
        answer = sock.recv(4096).decode("latin-1")
    finally:
        sock.close()
    return int(answer.split()[1]), sent


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@pytest.mark.parametrize(("length", "status"), [("-1", 400), ("abc", 400), ("99999999999", 413)])
def test_a_bad_content_length_is_refused_before_the_body_is_read(slack_bot: BotDriver, length: str,
                                                                  status: int) -> None:
    before = rss_kb()
    head = f"POST {{path}} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n"
    answered, sent = raw_post(slack_bot.url, head, body_chunks=4000)  # up to 256 MB if the bot kept reading
    assert answered == status
    assert sent < 64 * 1024 * 1024 and rss_kb() - before < 100 * 1024
    assert slack_bot.store.runs() == []


def test_a_chunked_body_is_refused(slack_bot: BotDriver) -> None:
    head = "POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert raw_post(slack_bot.url, head, body_chunks=10)[0] == 411


def test_a_missing_content_length_is_refused(slack_bot: BotDriver) -> None:
    assert raw_post(slack_bot.url, "POST {path} HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 411


def test_a_replayed_slash_command_is_answered_once(slack_bot: BotDriver) -> None:
    body = slash_command_body("/migrate", "history", user_id=REQUESTER, channel_id=DEPLOYS,
                              response_url=slack_bot.emulator.response_url("replayed"))
    headers = signed_request(SIGNING_SECRET, body)
    assert post_to_bot(slack_bot.url, body, headers)[0] == 200
    assert post_to_bot(slack_bot.url, body, headers)[0] == 200  # the same signed request, again within 5 min
    slack_bot.wait_idle()
    answers = [c for c in slack_bot.emulator.calls("response_url") if c.args.get("response_id") == "replayed"]
    assert len(answers) == 1


def test_a_replayed_approve_click_counts_once(slack_bot: BotDriver) -> None:
    from tests.slack_emulator import block_action_body

    _, deploy = slack_bot.deploy_awaiting_approval()
    body = block_action_body("approve", deploy.id, user=APPROVER1, channel=DEPLOYS, message_ts=deploy.thread_ts,
                             response_url=slack_bot.emulator.response_url("click"))
    headers = signed_request(SIGNING_SECRET, body)
    for _ in range(2):
        assert post_to_bot(slack_bot.url, body, headers)[0] == 200
    slack_bot.wait_idle()
    counted = [t for t in slack_bot.thread_texts(deploy.thread_ts) if t.startswith("Approved")]
    assert len(counted) == 1


def test_a_large_badly_signed_body_is_refused_quickly_and_never_logged(slack_bot: BotDriver,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    import threading

    caplog.set_level(logging.DEBUG)  # as with `migrate-bot -v` and more
    secret_looking = "hunter2-in-a-body"
    body = ("text=" + secret_looking + "&" + "a" * 999_000).encode()
    status: list[int] = []
    worker = threading.Thread(target=lambda: status.append(
        post_to_bot(slack_bot.url, body, signed_request("wrong-secret", body), timeout=60)[0]))
    worker.start()
    answered = slack_bot.reply(slack_bot.command("history"))  # another request meanwhile is answered
    worker.join(timeout=60)
    assert not worker.is_alive() and status == [401]
    assert answered == messages.NO_RUNS
    assert secret_looking not in caplog.text and "a" * 1000 not in caplog.text
    assert "(request body not logged)" in caplog.text
