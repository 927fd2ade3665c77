"""The Slack emulator, exercised only through real clients: slack_sdk's WebClient, WebhookClient, urllib, Bolt."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode

import pytest
from slack_bolt import App
from slack_bolt.request import BoltRequest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler, ServerErrorRetryHandler
from slack_sdk.http_retry.builtin_interval_calculators import FixedValueRetryIntervalCalculator
from slack_sdk.signature import SignatureVerifier
from slack_sdk.webhook import WebhookClient

from tests.fix_slack import (
    APPROVER1,
    APPROVER2,
    BOT_TOKEN,
    BOT_USER_ID,
    DBA_GROUP,
    DEPLOYS,
    OTHER,
    REQUESTER,
    SIGNING_SECRET,
    default_workspace,
    pytest_report_header,
)
from tests.slack_emulator import (
    SlackEmulator,
    User,
    block_action_body,
    event_body,
    message_event,
    post_to_bot,
    reaction_event,
    signed_request,
    slash_command_body,
)

pytestmark = pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing:UserWarning")


@pytest.fixture
def client(slack_emulator: SlackEmulator) -> WebClient:
    return WebClient(token=BOT_TOKEN, base_url=slack_emulator.base_url)


def _error(call: Any) -> str:
    """Run a client call that must fail; return Slack's error name."""
    with pytest.raises(SlackApiError) as caught:
        call()
    return caught.value.response["error"]


def _section(text: str, **extra: Any) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}, **extra}


def _button(text: str = "Approve", action_id: str = "approve") -> dict[str, Any]:
    return {"type": "button", "text": {"type": "plain_text", "text": text}, "action_id": action_id, "value": "v"}


def _raw_post(url: str, data: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


# --- lifecycle and workspace -----------------------------------------------------------------------


def test_base_url_is_local_ends_in_api_and_uses_a_kernel_port(slack_emulator: SlackEmulator) -> None:
    assert slack_emulator.base_url == f"http://127.0.0.1:{slack_emulator.port}/api/"
    assert slack_emulator.port > 0


def test_stopped_emulator_refuses_connections() -> None:
    with default_workspace() as emulator:
        url = emulator.base_url
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "auth.test", data=b"", timeout=2)


def test_auth_test_names_the_bot(client: WebClient) -> None:
    response = client.auth_test()
    assert (response["user_id"], response["team_id"], response["bot_id"]) == (BOT_USER_ID, "T_TEST", "B_BOT")


def test_default_workspace_channel(client: WebClient) -> None:
    channel = client.conversations_info(channel=DEPLOYS)["channel"]
    assert (channel["name"], channel["is_member"], channel["num_members"]) == ("deploys", True, 5)


@pytest.mark.parametrize("user", [REQUESTER, APPROVER1, APPROVER2, OTHER])
def test_default_workspace_users(client: WebClient, user: str) -> None:
    assert client.users_info(user=user)["user"]["id"] == user


def test_dba_usergroup_holds_the_two_approvers(client: WebClient) -> None:
    assert client.usergroups_users_list(usergroup=DBA_GROUP)["users"] == [APPROVER1, APPROVER2]


def test_report_header_mentions_the_emulator() -> None:
    assert "Slack Web API emulator" in pytest_report_header(None)  # type: ignore[arg-type]


# --- messages, threads, edits ----------------------------------------------------------------------


def test_post_message_is_stored(client: WebClient, slack_emulator: SlackEmulator) -> None:
    response = client.chat_postMessage(channel=DEPLOYS, text="hello", blocks=[_section("*hello*")])
    message = slack_emulator.message(DEPLOYS, response["ts"])
    assert (message.text, message.blocks, message.user) == ("hello", [_section("*hello*")], BOT_USER_ID)


def test_channel_can_be_named(client: WebClient) -> None:
    assert client.chat_postMessage(channel="#deploys", text="hi")["channel"] == DEPLOYS


def test_ts_values_look_like_slack_and_increase(client: WebClient) -> None:
    stamps = [client.chat_postMessage(channel=DEPLOYS, text=str(i))["ts"] for i in range(3)]
    assert stamps[0] == "1700000000.000100"
    assert stamps == sorted(stamps) and len(set(stamps)) == 3


def test_replies_form_a_thread(client: WebClient, slack_emulator: SlackEmulator) -> None:
    parent = client.chat_postMessage(channel=DEPLOYS, text="parent")["ts"]
    client.chat_postMessage(channel=DEPLOYS, text="one", thread_ts=parent)
    client.chat_postMessage(channel=DEPLOYS, text="two", thread_ts=parent)
    assert [m.text for m in slack_emulator.thread(DEPLOYS, parent)] == ["one", "two"]


def test_reply_to_a_reply_joins_the_parent_thread(client: WebClient, slack_emulator: SlackEmulator) -> None:
    parent = client.chat_postMessage(channel=DEPLOYS, text="parent")["ts"]
    reply = client.chat_postMessage(channel=DEPLOYS, text="one", thread_ts=parent)["ts"]
    client.chat_postMessage(channel=DEPLOYS, text="two", thread_ts=reply)
    assert [m.text for m in slack_emulator.thread(DEPLOYS, parent)] == ["one", "two"]


def test_conversations_replies_returns_parent_then_replies(client: WebClient) -> None:
    parent = client.chat_postMessage(channel=DEPLOYS, text="parent")["ts"]
    client.chat_postMessage(channel=DEPLOYS, text="reply", thread_ts=parent)
    messages = client.conversations_replies(channel=DEPLOYS, ts=parent)["messages"]
    assert [(m["text"], m.get("reply_count")) for m in messages] == [("parent", 1), ("reply", None)]


def test_conversations_replies_paginates(client: WebClient) -> None:
    parent = client.chat_postMessage(channel=DEPLOYS, text="p")["ts"]
    for i in range(4):
        client.chat_postMessage(channel=DEPLOYS, text=str(i), thread_ts=parent)
    texts = [
        m["text"]
        for page in client.conversations_replies(channel=DEPLOYS, ts=parent, limit=2)
        for m in page["messages"]
    ]
    assert texts == ["p", "0", "1", "2", "3"]


def test_update_edits_in_place_and_keeps_history(client: WebClient, slack_emulator: SlackEmulator) -> None:
    ts = client.chat_postMessage(channel=DEPLOYS, text="v1")["ts"]
    client.chat_update(channel=DEPLOYS, ts=ts, text="v2")
    message = slack_emulator.message(DEPLOYS, ts)
    assert (message.text, [h["text"] for h in message.history]) == ("v2", ["v1"])
    assert len(slack_emulator.messages(DEPLOYS)) == 1


def test_update_keeps_blocks_not_resent(client: WebClient, slack_emulator: SlackEmulator) -> None:
    ts = client.chat_postMessage(channel=DEPLOYS, text="v1", blocks=[_section("b")])["ts"]
    client.chat_update(channel=DEPLOYS, ts=ts, text="v2")
    assert slack_emulator.message(DEPLOYS, ts).blocks == [_section("b")]


def test_update_unknown_ts_is_message_not_found(client: WebClient) -> None:
    assert _error(lambda: client.chat_update(channel=DEPLOYS, ts="1.000001", text="x")) == "message_not_found"


def test_update_of_a_persons_message_is_refused(client: WebClient, slack_emulator: SlackEmulator) -> None:
    ts = slack_emulator.post_user_message(DEPLOYS, "mine", REQUESTER).ts
    assert _error(lambda: client.chat_update(channel=DEPLOYS, ts=ts, text="x")) == "cant_update_message"


def test_ephemeral_reaches_a_member(client: WebClient, slack_emulator: SlackEmulator) -> None:
    client.chat_postEphemeral(channel=DEPLOYS, user=REQUESTER, text="only you")
    assert [e.text for e in slack_emulator.ephemerals(REQUESTER)] == ["only you"]


def test_ephemeral_to_a_non_member_is_refused(client: WebClient, slack_emulator: SlackEmulator) -> None:
    slack_emulator.add_user(User("U_OUTSIDER", "outsider"))
    assert _error(lambda: client.chat_postEphemeral(channel=DEPLOYS, user="U_OUTSIDER", text="x")) == "user_not_in_channel"


def test_reaction_is_recorded(client: WebClient, slack_emulator: SlackEmulator) -> None:
    ts = client.chat_postMessage(channel=DEPLOYS, text="x")["ts"]
    client.reactions_add(channel=DEPLOYS, timestamp=ts, name="hourglass_flowing_sand")
    assert slack_emulator.message(DEPLOYS, ts).reactions == {"hourglass_flowing_sand": [BOT_USER_ID]}


def test_reacting_twice_is_already_reacted(client: WebClient) -> None:
    ts = client.chat_postMessage(channel=DEPLOYS, text="x")["ts"]
    client.reactions_add(channel=DEPLOYS, timestamp=ts, name="eyes")
    assert _error(lambda: client.reactions_add(channel=DEPLOYS, timestamp=ts, name="eyes")) == "already_reacted"


def test_views_publish_stores_the_home_tab(client: WebClient, slack_emulator: SlackEmulator) -> None:
    client.views_publish(user_id=REQUESTER, view={"type": "home", "blocks": [_section("home")]})
    assert slack_emulator.home_view(REQUESTER)["blocks"] == [_section("home")]  # type: ignore[index]


# --- files -----------------------------------------------------------------------------------------


def test_files_upload_v2_round_trip(client: WebClient, slack_emulator: SlackEmulator) -> None:
    parent = client.chat_postMessage(channel=DEPLOYS, text="run")["ts"]
    response = client.files_upload_v2(
        channel=DEPLOYS, thread_ts=parent, content="line 1\nline 2\n", filename="report.txt",
        title="Validation report", initial_comment="full report",
    )  # fmt: skip
    (upload,) = slack_emulator.files()
    assert (upload.id, upload.content, upload.title, upload.channel, upload.thread_ts) == (
        response["file"]["id"], b"line 1\nline 2\n", "Validation report", DEPLOYS, parent,
    )  # fmt: skip


def test_completed_upload_appears_in_the_thread(client: WebClient, slack_emulator: SlackEmulator) -> None:
    parent = client.chat_postMessage(channel=DEPLOYS, text="run")["ts"]
    client.files_upload_v2(channel=DEPLOYS, thread_ts=parent, content="x", filename="r.txt", initial_comment="here")
    (reply,) = slack_emulator.thread(DEPLOYS, parent)
    assert (reply.text, reply.files) == ("here", [slack_emulator.files()[0].id])


def test_completing_an_upload_never_sent_is_refused(client: WebClient) -> None:
    file_id = client.files_getUploadURLExternal(filename="r.txt", length=3)["file_id"]
    assert _error(lambda: client.files_completeUploadExternal(files=[{"id": file_id}], channel_id=DEPLOYS)) == (
        "file_not_found"
    )


def test_upload_url_points_at_the_emulator(client: WebClient, slack_emulator: SlackEmulator) -> None:
    response = client.files_getUploadURLExternal(filename="r.txt", length=3)
    assert response["upload_url"] == f"{slack_emulator.root_url}/upload/{response['file_id']}"


# --- Slack's validation, by Slack's error names ----------------------------------------------------

_OVER_LIMIT: list[tuple[str, dict[str, Any], str]] = [
    ("51 blocks", {"blocks": [_section("x")] * 51}, "invalid_blocks"),
    ("section text 3001", {"blocks": [_section("x" * 3001)]}, "invalid_blocks"),
    ("header text 151", {"blocks": [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}]}, "invalid_blocks"),
    ("header mrkdwn", {"blocks": [{"type": "header", "text": {"type": "mrkdwn", "text": "h"}}]}, "invalid_blocks"),
    ("context 11 elements", {"blocks": [{"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 11}]}, "invalid_blocks"),
    ("button text 76", {"blocks": [{"type": "actions", "elements": [_button("b" * 76)]}]}, "invalid_blocks"),
    ("action_id 256", {"blocks": [{"type": "actions", "elements": [_button(action_id="a" * 256)]}]}, "invalid_blocks"),
    ("block_id 256", {"blocks": [_section("x", block_id="b" * 256)]}, "invalid_blocks"),
    ("duplicate block_id", {"blocks": [_section("x", block_id="b"), _section("y", block_id="b")]}, "invalid_blocks"),
    ("empty section text", {"blocks": [_section("")]}, "invalid_blocks"),
    ("unknown block type", {"blocks": [{"type": "banner", "text": "x"}]}, "invalid_blocks"),
    ("blocks total 12001", {"blocks": [_section("x" * 3000)] * 4 + [_section("y")]}, "msg_blocks_too_long"),
    ("malformed blocks JSON", {"blocks": '[{"type": "section"'}, "invalid_blocks_format"),
    ("text 40001", {"text": "x" * 40_001}, "msg_too_long"),
    ("neither text nor blocks", {}, "no_text"),
]

_AT_LIMIT: list[tuple[str, dict[str, Any]]] = [
    ("50 blocks", {"blocks": [_section("x")] * 50}),
    ("section text 3000", {"blocks": [_section("x" * 3000)]}),
    ("header text 150", {"blocks": [{"type": "header", "text": {"type": "plain_text", "text": "h" * 150}}]}),
    ("context 10 elements", {"blocks": [{"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 10}]}),
    ("button text 75", {"blocks": [{"type": "actions", "elements": [_button("b" * 75)]}]}),
    ("ids 255", {"blocks": [{"type": "actions", "block_id": "b" * 255, "elements": [_button(action_id="a" * 255)]}]}),
    ("blocks total 12000", {"blocks": [_section("x" * 3000)] * 4}),
    ("text 40000", {"text": "x" * 40_000}),
]


@pytest.mark.parametrize(("case", "payload", "error"), _OVER_LIMIT, ids=[c[0] for c in _OVER_LIMIT])
def test_over_the_limit_is_refused_by_slacks_name(
    client: WebClient, slack_emulator: SlackEmulator, case: str, payload: dict[str, Any], error: str
) -> None:
    assert _error(lambda: client.chat_postMessage(channel=DEPLOYS, **payload)) == error
    assert slack_emulator.messages(DEPLOYS) == []


@pytest.mark.parametrize(("case", "payload"), _AT_LIMIT, ids=[c[0] for c in _AT_LIMIT])
def test_at_the_limit_is_accepted(client: WebClient, case: str, payload: dict[str, Any]) -> None:
    assert client.chat_postMessage(channel=DEPLOYS, text=payload.pop("text", "fallback"), **payload)["ok"]


def test_invalid_blocks_names_the_json_pointer(client: WebClient) -> None:
    with pytest.raises(SlackApiError) as caught:
        client.chat_postMessage(channel=DEPLOYS, text="t", blocks=[_section("ok"), _section("x" * 3001)])
    assert caught.value.response["errors"] == ["must be less than 3001 characters [json-pointer:/blocks/1/text/text]"]


def test_update_is_validated_like_a_post(client: WebClient) -> None:
    ts = client.chat_postMessage(channel=DEPLOYS, text="v1")["ts"]
    assert _error(lambda: client.chat_update(channel=DEPLOYS, ts=ts, blocks=[_section("x")] * 51)) == "invalid_blocks"


def test_home_tab_allows_100_blocks(client: WebClient) -> None:
    assert client.views_publish(user_id=REQUESTER, view={"type": "home", "blocks": [_section("x")] * 100})["ok"]


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda c: c.chat_postMessage(channel="C_NOPE", text="x"), "channel_not_found"),
        (lambda c: c.chat_postMessage(channel=DEPLOYS, text="x", thread_ts="1.000001"), "thread_not_found"),
        (lambda c: c.conversations_info(channel="C_NOPE"), "channel_not_found"),
        (lambda c: c.conversations_replies(channel=DEPLOYS, ts="1.000001"), "thread_not_found"),
        (lambda c: c.users_info(user="U_NOPE"), "user_not_found"),
        (lambda c: c.usergroups_users_list(usergroup="S_NOPE"), "no_such_subteam"),
        (lambda c: c.reactions_add(channel=DEPLOYS, timestamp="1.000001", name="eyes"), "message_not_found"),
        (lambda c: c.reactions_add(channel=DEPLOYS, timestamp="1.000001", name=":eyes:"), "invalid_name"),
        (lambda c: c.views_publish(user_id=REQUESTER, view={"type": "modal", "blocks": []}), "invalid_arguments"),
        (lambda c: c.api_call("files.getUploadURLExternal", params={"filename": "x"}), "invalid_arguments"),
        (lambda c: c.api_call("admin.users.list"), "unknown_method"),
    ],
    ids=["post-channel", "post-thread", "info", "replies", "user", "usergroup", "reaction-ts", "reaction-name",
         "view-type", "missing-arg", "unknown-method"],  # fmt: skip
)
def test_lookups_fail_by_slacks_name(client: WebClient, call: Any, error: str) -> None:
    assert _error(lambda: call(client)) == error


# --- authentication --------------------------------------------------------------------------------


@pytest.mark.parametrize(("token", "error"), [("xoxb-wrong", "invalid_auth"), (None, "not_authed")])
def test_bad_or_missing_token(slack_emulator: SlackEmulator, token: str | None, error: str) -> None:
    client = WebClient(token=token, base_url=slack_emulator.base_url)
    assert _error(lambda: client.chat_postMessage(channel=DEPLOYS, text="x")) == error


def test_token_may_be_a_form_parameter(slack_emulator: SlackEmulator) -> None:
    body = urlencode({"token": BOT_TOKEN, "channel": DEPLOYS, "text": "form"}).encode()
    status, response = _raw_post(slack_emulator.base_url + "chat.postMessage", body, {})
    assert (status, response["ok"]) == (200, True)


def test_token_in_a_json_body_is_not_accepted(slack_emulator: SlackEmulator) -> None:
    body = json.dumps({"token": BOT_TOKEN, "channel": DEPLOYS, "text": "json"}).encode()
    _, response = _raw_post(slack_emulator.base_url + "chat.postMessage", body, {"Content-Type": "application/json"})
    assert response["error"] == "not_authed"


# --- recording -------------------------------------------------------------------------------------


def test_calls_record_method_args_and_headers(client: WebClient, slack_emulator: SlackEmulator) -> None:
    client.chat_postMessage(channel=DEPLOYS, text="x", blocks=[_section("b")])
    (call,) = slack_emulator.calls("chat.postMessage")
    assert (call.args["text"], call.args["blocks"], call.headers["Authorization"], call.ok) == (
        "x", [_section("b")], f"Bearer {BOT_TOKEN}", True,
    )  # fmt: skip


def test_all_text_covers_messages_blocks_and_file_contents(client: WebClient, slack_emulator: SlackEmulator) -> None:
    client.chat_postMessage(channel=DEPLOYS, text="plain", blocks=[_section("in-a-block")])
    client.files_upload_v2(channel=DEPLOYS, content="in-a-file", filename="f.txt")
    text = slack_emulator.all_text()
    assert all(needle in text for needle in ("plain", "in-a-block", "in-a-file"))


def test_all_text_leaves_out_the_bot_token(client: WebClient, slack_emulator: SlackEmulator) -> None:
    client.chat_postMessage(channel=DEPLOYS, text="x")
    assert BOT_TOKEN not in slack_emulator.all_text()


def test_concurrent_posts_are_all_kept_with_unique_ts(client: WebClient, slack_emulator: SlackEmulator) -> None:
    threads = [threading.Thread(target=client.chat_postMessage, kwargs={"channel": DEPLOYS, "text": str(i)}) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({m.ts for m in slack_emulator.messages(DEPLOYS)}) == 20


def test_wait_for_returns_once_the_call_arrives(client: WebClient, slack_emulator: SlackEmulator) -> None:
    threading.Timer(0.2, lambda: client.chat_postMessage(channel=DEPLOYS, text="later")).start()
    (call,) = slack_emulator.wait_for("chat.postMessage", timeout=5)
    assert call.args["text"] == "later"


def test_wait_for_times_out_with_what_it_saw(slack_emulator: SlackEmulator) -> None:
    with pytest.raises(TimeoutError, match="chat.postMessage"):
        slack_emulator.wait_for("chat.postMessage", timeout=0.1)


# --- fault injection and the SDK's retry handlers --------------------------------------------------


@pytest.mark.parametrize(
    ("status", "handler"),
    [(429, RateLimitErrorRetryHandler(max_retry_count=1)), (500, ServerErrorRetryHandler(max_retry_count=1))],
    ids=["429-rate-limit", "500-server-error"],
)
def test_retry_handler_survives_without_losing_the_message(
    slack_emulator: SlackEmulator, status: int, handler: Any
) -> None:
    client = WebClient(token=BOT_TOKEN, base_url=slack_emulator.base_url, retry_handlers=[handler])
    slack_emulator.fail_next("chat.postMessage", status=status, retry_after=1)
    ts = client.chat_postMessage(channel=DEPLOYS, text="survives")["ts"]
    assert [c.status for c in slack_emulator.calls("chat.postMessage")] == [status, 200]
    assert [m.text for m in slack_emulator.messages(DEPLOYS)] == ["survives"]
    assert slack_emulator.message(DEPLOYS, ts).text == "survives"


def test_429_carries_retry_after(slack_emulator: SlackEmulator, client: WebClient) -> None:
    slack_emulator.fail_next("chat.postMessage", status=429, retry_after=7)
    with pytest.raises(SlackApiError) as caught:
        client.chat_postMessage(channel=DEPLOYS, text="x")
    assert (caught.value.response.status_code, caught.value.response.headers["Retry-After"]) == (429, "7")


def test_rate_limited_call_without_a_handler_stores_nothing(slack_emulator: SlackEmulator, client: WebClient) -> None:
    slack_emulator.fail_next("chat.postMessage", status=429)
    assert _error(lambda: client.chat_postMessage(channel=DEPLOYS, text="x")) == "ratelimited"
    assert slack_emulator.messages(DEPLOYS) == []


def test_faults_can_repeat(slack_emulator: SlackEmulator) -> None:
    client = WebClient(
        token=BOT_TOKEN,
        base_url=slack_emulator.base_url,
        retry_handlers=[ServerErrorRetryHandler(max_retry_count=3, interval_calculator=FixedValueRetryIntervalCalculator(0.01))],
    )
    slack_emulator.fail_next("auth.test", status=503, times=3)
    client.auth_test()
    assert [c.status for c in slack_emulator.calls("auth.test")] == [503, 503, 503, 200]


def test_fault_can_be_a_slack_error(slack_emulator: SlackEmulator, client: WebClient) -> None:
    slack_emulator.fail_next("chat.postMessage", status=200, error="channel_not_found")
    assert _error(lambda: client.chat_postMessage(channel=DEPLOYS, text="x")) == "channel_not_found"


def test_faults_only_hit_their_method(slack_emulator: SlackEmulator, client: WebClient) -> None:
    slack_emulator.fail_next("chat.update", status=500)
    assert client.chat_postMessage(channel=DEPLOYS, text="x")["ok"]


# --- response_url ----------------------------------------------------------------------------------


def test_response_url_post_is_recorded(slack_emulator: SlackEmulator) -> None:
    url = slack_emulator.response_url("abc")
    response = WebhookClient(url).send(text="later", response_type="ephemeral")
    (call,) = slack_emulator.calls("response_url")
    assert (response.status_code, call.args["response_id"], call.args["text"]) == (200, "abc", "later")


def test_response_url_validates_blocks(slack_emulator: SlackEmulator) -> None:
    response = WebhookClient(slack_emulator.response_url()).send(blocks=[_section("x" * 3001)])
    assert (response.status_code, response.body) == (400, "invalid_blocks")


def test_response_url_allows_five_uses(slack_emulator: SlackEmulator) -> None:
    webhook = WebhookClient(slack_emulator.response_url())
    statuses = [webhook.send(text=str(i)).status_code for i in range(6)]
    assert statuses == [200] * 5 + [404]


# --- Slack -> bot helpers --------------------------------------------------------------------------


def test_signed_request_verifies_with_slack_sdk() -> None:
    body = slash_command_body(text="status")
    headers = signed_request(SIGNING_SECRET, body)
    verifier = SignatureVerifier(SIGNING_SECRET)
    assert verifier.is_valid(body, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"])


def test_signed_request_with_a_fixed_timestamp_is_deterministic() -> None:
    assert signed_request("s", b"body", timestamp=1) == {
        "X-Slack-Request-Timestamp": "1",
        "X-Slack-Signature": "v0=" + __import__("hmac").new(b"s", b"v0:1:body", "sha256").hexdigest(),
    }


def test_slash_command_body_is_form_encoded() -> None:
    fields = parse_qs(slash_command_body(text="deploy r-3f9a1c02", response_url="http://x/response/1").decode())
    assert {k: v[0] for k, v in fields.items() if k in ("command", "text", "user_id", "channel_id", "response_url")} == {
        "command": "/migrate", "text": "deploy r-3f9a1c02", "user_id": REQUESTER, "channel_id": DEPLOYS,
        "response_url": "http://x/response/1",
    }  # fmt: skip


def test_event_body_wraps_an_event_callback() -> None:
    envelope = json.loads(event_body(message_event("hi"), event_id="Ev1"))
    assert (envelope["type"], envelope["event_id"], envelope["event"]["text"]) == ("event_callback", "Ev1", "hi")


@pytest.mark.parametrize("kind", ["reaction_added", "reaction_removed"])
def test_reaction_event_points_at_the_message(kind: str) -> None:
    event = reaction_event(kind, user=APPROVER1, reaction="white_check_mark", ts="1700000000.000100")
    assert (event["type"], event["item"]) == (kind, {"type": "message", "channel": DEPLOYS, "ts": "1700000000.000100"})


def test_block_action_body_carries_the_action() -> None:
    payload = json.loads(parse_qs(block_action_body("approve", "r-1", APPROVER2, DEPLOYS, "1.2").decode())["payload"][0])
    action = payload["actions"][0]
    assert (payload["type"], action["action_id"], action["value"], payload["user"]["id"]) == (
        "block_actions", "approve", "r-1", APPROVER2,
    )  # fmt: skip


# A real Bolt app behind a real HTTP server proves the builders produce what Slack's SDK accepts.


@pytest.fixture
def bolt_url(slack_emulator: SlackEmulator) -> Iterator[str]:
    app = App(
        token=BOT_TOKEN,
        signing_secret=SIGNING_SECRET,
        client=WebClient(token=BOT_TOKEN, base_url=slack_emulator.base_url),
    )

    @app.command("/migrate")
    def _command(ack: Any, command: dict[str, Any], client: WebClient) -> None:
        ack(f"got {command['text']}")
        client.chat_postMessage(channel=command["channel_id"], text=f"running {command['text']}")

    @app.event("reaction_added")
    def _reaction(event: dict[str, Any], client: WebClient) -> None:
        client.chat_postMessage(channel=event["item"]["channel"], thread_ts=event["item"]["ts"], text=event["reaction"])

    @app.action("approve")
    def _approve(ack: Any, body: dict[str, Any], respond: Any) -> None:
        ack()
        respond(text=f"approved by {body['user']['id']}")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            response = app.dispatch(BoltRequest(body=body, headers={k: [v] for k, v in self.headers.items()}))
            payload = response.body.encode()
            self.send_response(response.status)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/slack/events"
    server.shutdown()
    server.server_close()


def test_bolt_accepts_a_signed_slash_command(bolt_url: str, slack_emulator: SlackEmulator) -> None:
    body = slash_command_body(text="status", response_url=slack_emulator.response_url())
    status, text = post_to_bot(bolt_url, body, signed_request(SIGNING_SECRET, body))
    assert (status, text) == (200, "got status")
    assert slack_emulator.wait_for("chat.postMessage")[0].args["text"] == "running status"


def test_bolt_rejects_a_bad_signature(bolt_url: str) -> None:
    body = slash_command_body(text="status")
    status, _ = post_to_bot(bolt_url, body, signed_request("wrong-secret", body))
    assert status == 401


def test_bolt_rejects_a_stale_timestamp(bolt_url: str) -> None:
    body = slash_command_body(text="status")
    status, _ = post_to_bot(bolt_url, body, signed_request(SIGNING_SECRET, body, timestamp=int(time.time()) - 3600))
    assert status == 401


def test_bolt_receives_a_reaction_event(bolt_url: str, slack_emulator: SlackEmulator) -> None:
    ts = WebClient(token=BOT_TOKEN, base_url=slack_emulator.base_url).chat_postMessage(channel=DEPLOYS, text="x")["ts"]
    body = event_body(reaction_event(user=APPROVER1, reaction="white_check_mark", ts=ts))
    assert post_to_bot(bolt_url, body, signed_request(SIGNING_SECRET, body))[0] == 200
    slack_emulator.wait_for("chat.postMessage", count=2)
    assert [m.text for m in slack_emulator.thread(DEPLOYS, ts)] == ["white_check_mark"]


def test_bolt_button_click_responds_via_response_url(bolt_url: str, slack_emulator: SlackEmulator) -> None:
    body = block_action_body("approve", "r-3f9a1c02", APPROVER1, response_url=slack_emulator.response_url("btn"))
    assert post_to_bot(bolt_url, body, signed_request(SIGNING_SECRET, body))[0] == 200
    (call,) = slack_emulator.wait_for("response_url")
    assert call.args["text"] == f"approved by {APPROVER1}"
