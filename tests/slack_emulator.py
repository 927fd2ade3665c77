"""A local Slack Web API emulator: real HTTP on 127.0.0.1, Slack's validation, a workspace model.

Why this exists: no maintained Slack emulator exists for Python, and mocking
``WebClient`` methods tests nothing that matters — not the wire format, not
Slack's Block Kit limits, not the SDK's retry handlers. This server speaks the
same HTTP as slack.com for the methods the bot uses, so the bot runs unmodified
with ``WebClient(base_url=emulator.base_url)`` and every request crosses a real
socket. It is deliberately *stricter* than lenient corners of Slack (a
``thread_ts`` naming no message is refused with ``thread_not_found``; Slack
would silently orphan the reply), because a test double should surface bugs.

What it models (in memory, per emulator): channels, users, usergroups,
messages with threads, edits (with history) and reactions, ephemeral
messages, uploaded files (bytes, title, channel, thread), Home tab views and
``response_url`` posts. Every request is recorded — method, parsed args,
headers, status, response — so tests can assert on everything the bot sent
(``calls``, ``all_text``) and wait for asynchronous handlers (``wait_for``).

Fault injection (``fail_next``) answers the next N calls of a method with a
429 + ``Retry-After``, a 5xx, or a Slack error, *before* the call touches the
model — exactly as Slack does — so retry handlers are tested over HTTP
without duplicating or losing messages.

The bottom of the module holds the other direction (Slack -> bot): request
signing and payload builders for slash commands, events and block actions,
plus ``post_to_bot``.

Standalone on purpose: imports nothing from ``bot``.
"""

from __future__ import annotations

import base64
import copy
import email.parser
import email.policy
import hashlib
import hmac
import itertools
import json
import logging
import secrets
import re
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from tests.slack_socket import Refused, SocketModeHub

log = logging.getLogger(__name__)

# --- Slack's published limits ------------------------------------------------------------------

MAX_MESSAGE_TEXT = 40_000
MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_BLOCKS_TEXT_TOTAL = 12_000
MAX_SECTION_TEXT = 3_000
MAX_SECTION_FIELDS = 10
MAX_FIELD_TEXT = 2_000
MAX_HEADER_TEXT = 150
MAX_CONTEXT_ELEMENTS = 10
MAX_ACTIONS_ELEMENTS = 25
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2_000
MAX_URL = 3_000
MAX_ID = 255  # block_id, action_id
MAX_ALT_TEXT = 2_000
MAX_MARKDOWN_BLOCK_TEXT = 12_000
RESPONSE_URL_MAX_USES = 5

BLOCK_TYPES = frozenset(
    {"actions", "context", "divider", "file", "header", "image", "input", "markdown", "rich_text", "section", "video"}
)
ELEMENT_TYPES = frozenset(
    {
        "button", "checkboxes", "channels_select", "conversations_select", "datepicker", "datetimepicker",
        "email_text_input", "external_select", "file_input", "image", "multi_channels_select",
        "multi_conversations_select", "multi_external_select", "multi_static_select", "multi_users_select",
        "number_input", "overflow", "plain_text_input", "radio_buttons", "rich_text_input", "static_select",
        "timepicker", "url_text_input", "users_select", "workflow_button",
    }
)  # fmt: skip
TEXT_TYPES = frozenset({"plain_text", "mrkdwn"})

_REACTION_NAME = re.compile(r"[a-z0-9_+'\-]+(?:::skin-tone-[2-6])?")
# Keys whose form-encoded value is a JSON document (WebClient sends lists/dicts as JSON strings there).
_JSON_ARGS = frozenset({"blocks", "attachments", "view", "files", "metadata"})


# --- the workspace model ---------------------------------------------------------------------------


@dataclass
class Channel:
    id: str
    name: str
    members: set[str] = field(default_factory=set)
    is_private: bool = False
    is_archived: bool = False
    is_im: bool = False
    topic: str = ""

    def to_api(self, bot_user_id: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "is_channel": not self.is_private and not self.is_im,
            "is_group": self.is_private,
            "is_im": self.is_im,
            "is_private": self.is_private,
            "is_archived": self.is_archived,
            "is_member": bot_user_id in self.members,
            "created": 1_600_000_000,
            "num_members": len(self.members),
            "topic": {"value": self.topic, "creator": "", "last_set": 0},
        }


@dataclass
class User:
    id: str
    name: str
    real_name: str = ""
    is_bot: bool = False
    deleted: bool = False
    tz: str = "UTC"
    email: str | None = None

    def to_api(self, team_id: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "team_id": team_id,
            "name": self.name,
            "deleted": self.deleted,
            "real_name": self.real_name or self.name,
            "tz": self.tz,
            "tz_offset": 0,
            "is_bot": self.is_bot,
            "is_admin": False,
            "profile": {
                "real_name": self.real_name or self.name,
                "display_name": self.name,
                "email": self.email or f"{self.name}@example.com",
                "image_72": f"https://avatars.example.com/{self.id}.png",
            },
        }


@dataclass
class Usergroup:
    id: str
    handle: str
    users: list[str] = field(default_factory=list)
    name: str = ""


@dataclass
class Message:
    """A channel message or thread reply; ``history`` holds every version replaced by chat.update."""

    channel: str
    ts: str
    user: str
    text: str = ""
    blocks: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[Any] = field(default_factory=list)
    thread_ts: str | None = None
    bot_id: str | None = None
    reply_broadcast: bool = False
    metadata: dict[str, Any] | None = None
    files: list[str] = field(default_factory=list)
    reactions: dict[str, list[str]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    edited_ts: str | None = None

    @property
    def is_reply(self) -> bool:
        return self.thread_ts is not None and self.thread_ts != self.ts

    def to_api(self, replies: list[Message] | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {"type": "message", "user": self.user, "text": self.text, "ts": self.ts}
        if self.bot_id:
            data["bot_id"] = self.bot_id
        if self.blocks:
            data["blocks"] = copy.deepcopy(self.blocks)
        if self.attachments:
            data["attachments"] = copy.deepcopy(self.attachments)
        if self.thread_ts:
            data["thread_ts"] = self.thread_ts
        if replies:
            data.update(
                reply_count=len(replies),
                reply_users=sorted({r.user for r in replies}),
                latest_reply=replies[-1].ts,
            )
        if self.edited_ts:
            data["edited"] = {"user": self.user, "ts": self.edited_ts}
        if self.reactions:
            data["reactions"] = [{"name": n, "users": list(u), "count": len(u)} for n, u in self.reactions.items()]
        if self.files:
            data["files"] = [{"id": f} for f in self.files]
        if self.metadata:
            data["metadata"] = copy.deepcopy(self.metadata)
        return data


@dataclass
class Ephemeral:
    channel: str
    user: str
    ts: str
    text: str = ""
    blocks: list[dict[str, Any]] = field(default_factory=list)
    thread_ts: str | None = None


@dataclass
class UploadedFile:
    """A file from files.getUploadURLExternal; ``content`` arrives by the raw upload, sharing by completion."""

    id: str
    filename: str
    length: int
    content: bytes | None = None
    title: str | None = None
    alt_txt: str | None = None
    snippet_type: str | None = None
    completed: bool = False
    channel: str | None = None
    thread_ts: str | None = None
    initial_comment: str | None = None
    message_ts: str | None = None

    @property
    def text(self) -> str:
        return (self.content or b"").decode("utf-8", errors="replace")


@dataclass
class Call:
    """One request the emulator received, in arrival order."""

    seq: int
    method: str  # API method, or "upload" (raw file bytes) / "response_url"
    args: dict[str, Any]
    headers: dict[str, str]
    status: int
    response: Any
    at: float = field(default_factory=time.time)
    injected: bool = False  # answered by fail_next, never reached the model

    @property
    def ok(self) -> bool:
        if self.status != 200:
            return False
        return bool(self.response.get("ok")) if isinstance(self.response, dict) else True

    @property
    def error(self) -> str | None:
        """Slack's error name; for the plain-text endpoints (upload, response_url) the body of a failure."""
        if isinstance(self.response, dict):
            return self.response.get("error")
        return None if self.ok else str(self.response)


@dataclass
class _Fault:
    status: int
    retry_after: int | None
    error: str
    remaining: int


class SlackError(Exception):
    """Raised inside handlers; becomes ``{"ok": false, "error": ..., **extra}`` with HTTP 200."""

    def __init__(self, error: str, detail: str | None = None, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra
        if detail:
            self.extra.setdefault("response_metadata", {"messages": [f"[ERROR] {detail}"]})


# --- Block Kit validation --------------------------------------------------------------------------


def _text_lengths(node: Any) -> int:
    """Total characters in every ``text`` string (text objects, rich text, markdown) under ``node``."""
    if isinstance(node, dict):
        return sum(len(v) if k == "text" and isinstance(v, str) else _text_lengths(v) for k, v in node.items())
    if isinstance(node, list):
        return sum(_text_lengths(v) for v in node)
    return 0


class _BlockChecker:
    """Collects Slack-style error strings (``message [json-pointer:/blocks/0/text]``) for one payload."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def fail(self, message: str, ptr: str) -> None:
        self.errors.append(f"{message} [json-pointer:{ptr}]")

    def max_len(self, value: Any, limit: int, ptr: str) -> None:
        if isinstance(value, str) and len(value) > limit:
            self.fail(f"must be less than {limit + 1} characters", ptr)

    def text_obj(self, obj: Any, ptr: str, limit: int, *, plain_only: bool = False) -> None:
        if not isinstance(obj, dict):
            self.fail("must be a text object", ptr)
            return
        kind, text = obj.get("type"), obj.get("text")
        if kind not in TEXT_TYPES or (plain_only and kind != "plain_text"):
            allowed = "plain_text" if plain_only else "plain_text or mrkdwn"
            self.fail(f"must be {allowed}", f"{ptr}/type")
        if not isinstance(text, str) or not text:
            self.fail("must be more than 0 characters", f"{ptr}/text")
        self.max_len(text, limit, f"{ptr}/text")
        if kind == "mrkdwn" and "emoji" in obj:
            self.fail("invalid additional property: emoji", ptr)
        if kind == "plain_text" and "verbatim" in obj:
            self.fail("invalid additional property: verbatim", ptr)

    def element(self, el: Any, ptr: str, action_ids: set[str]) -> None:
        if not isinstance(el, dict) or el.get("type") not in ELEMENT_TYPES:
            self.fail(f"unsupported element type {el.get('type') if isinstance(el, dict) else el!r}", ptr)
            return
        action_id = el.get("action_id")
        if action_id is not None:
            self.max_len(action_id, MAX_ID, f"{ptr}/action_id")
            if action_id in action_ids:
                self.fail(f"duplicate action_id {action_id!r}", f"{ptr}/action_id")
            action_ids.add(action_id)
        if el["type"] == "button":
            self.text_obj(el.get("text"), f"{ptr}/text", MAX_BUTTON_TEXT, plain_only=True)
            self.max_len(el.get("value"), MAX_BUTTON_VALUE, f"{ptr}/value")
            self.max_len(el.get("url"), MAX_URL, f"{ptr}/url")
            if el.get("style") not in (None, "primary", "danger"):
                self.fail("must be primary or danger", f"{ptr}/style")
        if el["type"] == "image":
            self.max_len(el.get("image_url"), MAX_URL, f"{ptr}/image_url")
            self.max_len(el.get("alt_text"), MAX_ALT_TEXT, f"{ptr}/alt_text")

    def block(self, block: Any, ptr: str, block_ids: set[str]) -> None:
        if not isinstance(block, dict):
            self.fail("must be an object", ptr)
            return
        kind = block.get("type")
        if kind not in BLOCK_TYPES:
            self.fail(f"unsupported type: {kind}", f"{ptr}/type")
            return
        block_id = block.get("block_id")
        if block_id is not None:
            self.max_len(block_id, MAX_ID, f"{ptr}/block_id")
            if block_id in block_ids:
                self.fail(f"duplicate block_id {block_id!r}", f"{ptr}/block_id")
            block_ids.add(block_id)
        getattr(self, f"_{kind}", lambda b, p: None)(block, ptr)

    def _section(self, block: dict[str, Any], ptr: str) -> None:
        if "text" not in block and "fields" not in block:
            self.fail("must provide either text or fields", ptr)
        if "text" in block:
            self.text_obj(block["text"], f"{ptr}/text", MAX_SECTION_TEXT)
        fields_ = block.get("fields", [])
        if not isinstance(fields_, list) or len(fields_) > MAX_SECTION_FIELDS:
            self.fail(f"must be a list of at most {MAX_SECTION_FIELDS} items", f"{ptr}/fields")
        else:
            for i, f in enumerate(fields_):
                self.text_obj(f, f"{ptr}/fields/{i}", MAX_FIELD_TEXT)
        if "accessory" in block:
            self.element(block["accessory"], f"{ptr}/accessory", set())

    def _header(self, block: dict[str, Any], ptr: str) -> None:
        self.text_obj(block.get("text"), f"{ptr}/text", MAX_HEADER_TEXT, plain_only=True)

    def _context(self, block: dict[str, Any], ptr: str) -> None:
        elements = block.get("elements")
        if not isinstance(elements, list) or not 1 <= len(elements) <= MAX_CONTEXT_ELEMENTS:
            self.fail(f"must have between 1 and {MAX_CONTEXT_ELEMENTS} items", f"{ptr}/elements")
            return
        for i, el in enumerate(elements):
            if isinstance(el, dict) and el.get("type") == "image":
                self.element(el, f"{ptr}/elements/{i}", set())
            else:
                self.text_obj(el, f"{ptr}/elements/{i}", MAX_SECTION_TEXT)

    def _actions(self, block: dict[str, Any], ptr: str) -> None:
        elements = block.get("elements")
        if not isinstance(elements, list) or not 1 <= len(elements) <= MAX_ACTIONS_ELEMENTS:
            self.fail(f"must have between 1 and {MAX_ACTIONS_ELEMENTS} items", f"{ptr}/elements")
            return
        action_ids: set[str] = set()
        for i, el in enumerate(elements):
            self.element(el, f"{ptr}/elements/{i}", action_ids)

    def _image(self, block: dict[str, Any], ptr: str) -> None:
        if not block.get("image_url") and not block.get("slack_file"):
            self.fail("must provide image_url or slack_file", ptr)
        self.max_len(block.get("image_url"), MAX_URL, f"{ptr}/image_url")
        if not block.get("alt_text"):
            self.fail("must provide alt_text", f"{ptr}/alt_text")
        self.max_len(block.get("alt_text"), MAX_ALT_TEXT, f"{ptr}/alt_text")

    def _markdown(self, block: dict[str, Any], ptr: str) -> None:
        if not isinstance(block.get("text"), str) or not block["text"]:
            self.fail("must be more than 0 characters", f"{ptr}/text")
        self.max_len(block.get("text"), MAX_MARKDOWN_BLOCK_TEXT, f"{ptr}/text")

    def _rich_text(self, block: dict[str, Any], ptr: str) -> None:
        if not isinstance(block.get("elements"), list):
            self.fail("must be a list", f"{ptr}/elements")


def check_blocks(raw: Any, *, max_blocks: int = MAX_MESSAGE_BLOCKS) -> list[dict[str, Any]]:
    """Decode and validate a ``blocks`` argument like Slack does; return the blocks or raise SlackError.

    Order matters and mirrors Slack: unreadable JSON is ``invalid_blocks_format``,
    any per-block violation is ``invalid_blocks`` (with ``errors`` naming the
    JSON pointer), and only a structurally valid payload can be
    ``msg_blocks_too_long``.
    """
    blocks = raw
    if isinstance(raw, (str, bytes)):
        try:
            blocks = json.loads(raw)
        except ValueError as exc:
            raise SlackError("invalid_blocks_format", f"blocks is not valid JSON: {exc}") from None
    if not isinstance(blocks, list):
        raise SlackError("invalid_blocks_format", "blocks must be a JSON array")
    checker = _BlockChecker()
    if len(blocks) > max_blocks:
        checker.fail(f"no more than {max_blocks} items allowed", "/blocks")
    block_ids: set[str] = set()
    for i, block in enumerate(blocks):
        checker.block(block, f"/blocks/{i}", block_ids)
    if checker.errors:
        raise SlackError(
            "invalid_blocks", errors=checker.errors, response_metadata={"messages": [f"[ERROR] {e}" for e in checker.errors]}
        )
    total = _text_lengths(blocks)
    if total > MAX_BLOCKS_TEXT_TOTAL:
        raise SlackError("msg_blocks_too_long", f"blocks carry {total} characters of text; the limit is {MAX_BLOCKS_TEXT_TOTAL}")
    return blocks


# --- the emulator ----------------------------------------------------------------------------------

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class SlackEmulator:
    """An in-memory Slack workspace behind a real HTTP server on 127.0.0.1 (port chosen by the kernel).

    Use ``start()``/``stop()`` or ``with SlackEmulator(...) as emulator``; point
    ``WebClient(token=emulator.bot_token, base_url=emulator.base_url)`` at it.
    """

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-test-token",
        app_token: str = "xapp-1-test-app-token",
        signing_secret: str = "test-signing-secret",
        team_id: str = "T_TEST",
        team_domain: str = "test",
        bot_user_id: str = "U_BOT",
        bot_id: str = "B_BOT",
        bot_name: str = "migrate-bot",
        channels: Iterable[Channel] = (),
        users: Iterable[User] = (),
        usergroups: Iterable[Usergroup] = (),
    ) -> None:
        self.bot_token = bot_token
        self.signing_secret = signing_secret
        self.team_id = team_id
        self.team_domain = team_domain
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.bot_name = bot_name
        self.valid_tokens: set[str] = {bot_token}
        self.socket_mode = SocketModeHub(app_token)  # apps.connections.open + the WebSocket endpoint

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._channels: dict[str, Channel] = {}
        self._users: dict[str, User] = {}
        self._usergroups: dict[str, Usergroup] = {}
        self._messages: dict[str, dict[str, Message]] = defaultdict(dict)  # channel -> ts -> message
        self._ephemerals: list[Ephemeral] = []
        self._files: dict[str, UploadedFile] = {}
        self._views: dict[str, dict[str, Any]] = {}
        self._response_uses: dict[str, int] = defaultdict(int)
        self._calls: list[Call] = []
        self._faults: dict[str, deque[_Fault]] = defaultdict(deque)
        self._ts_counter = itertools.count(1)
        self._id_counter = itertools.count(1)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

        self.add_user(User(bot_user_id, bot_name, real_name=bot_name, is_bot=True))
        for user in users:
            self.add_user(user)
        for channel in channels:
            self.add_channel(channel)
        for group in usergroups:
            self.add_usergroup(group)

        self._methods: dict[str, Handler] = {
            "api.test": lambda args: {"args": {k: v for k, v in args.items() if k != "token"}},
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.getPermalink": self._chat_get_permalink,
            "reactions.add": self._reactions_add,
            "reactions.remove": self._reactions_remove,
            "conversations.info": self._conversations_info,
            "conversations.replies": self._conversations_replies,
            "users.info": self._users_info,
            "usergroups.users.list": self._usergroups_users_list,
            "files.getUploadURLExternal": self._files_get_upload_url,
            "files.completeUploadExternal": self._files_complete_upload,
            "views.publish": self._views_publish,
        }

    # -- lifecycle --

    def start(self) -> SlackEmulator:
        """Bind 127.0.0.1 on a kernel-chosen port and serve in a daemon thread."""
        if self._server is not None:
            return self
        server = _Server(("127.0.0.1", 0), _RequestHandler)
        server.emulator = self
        self._server = server
        # A short poll interval keeps stop() (and so every test's teardown) fast.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="slack-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port; safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        self.socket_mode.close_all()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> SlackEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the Slack emulator is not running; call start() first")
        return self._server.server_address[1]

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """What ``WebClient(base_url=...)`` needs: ends in ``/api/``."""
        return f"{self.root_url}/api/"

    def response_url(self, response_id: str | None = None) -> str:
        """A ``response_url`` on this emulator; posts to it are recorded as method ``response_url``."""
        return f"{self.root_url}/response/{response_id or self._new_id('R')}"

    # -- workspace configuration --

    def add_channel(self, channel: Channel) -> Channel:
        with self._lock:
            self._channels[channel.id] = channel
        return channel

    def add_user(self, user: User) -> User:
        with self._lock:
            self._users[user.id] = user
        return user

    def add_usergroup(self, group: Usergroup) -> Usergroup:
        with self._lock:
            self._usergroups[group.id] = group
        return group

    def channel(self, channel_id: str) -> Channel:
        with self._lock:
            return self._channels[channel_id]

    # -- seeding the model as people would (these are not API calls, so they are not recorded) --

    def post_user_message(self, channel: str, text: str, user: str, *, thread_ts: str | None = None) -> Message:
        """Put a human's message into the model (e.g. a reply in the bot's thread)."""
        with self._lock:
            message = Message(channel=channel, ts=self._next_ts(), user=user, text=text, thread_ts=thread_ts)
            self._messages[channel][message.ts] = message
            self._changed.notify_all()
            return message

    def add_reaction(self, channel: str, ts: str, name: str, user: str) -> None:
        """Record a person's reaction in the model (deliver the event itself with ``reaction_event``)."""
        with self._lock:
            users = self._messages[channel][ts].reactions.setdefault(name, [])
            if user not in users:
                users.append(user)

    # -- fault injection --

    def fail_next(
        self, method: str, status: int = 429, retry_after: int | None = 1, *, times: int = 1, error: str | None = None
    ) -> None:
        """Answer the next ``times`` calls of ``method`` with a failure instead of running them.

        ``status=429`` sends ``Retry-After: retry_after`` and ``ratelimited``;
        ``status=500``/``503`` a server error; ``status=200`` with ``error`` a
        plain Slack error (``{"ok": false, "error": error}``). ``method`` may
        also be ``"upload"`` or ``"response_url"``.
        """
        if status == 200 and not error:
            raise ValueError("fail_next(status=200) needs error=, e.g. error='channel_not_found'")
        default_error = {429: "ratelimited", 503: "service_unavailable"}.get(status, "internal_error")
        fault = _Fault(status, retry_after if status == 429 else None, error or default_error, times)
        with self._lock:
            self._faults[method].append(fault)

    def _take_fault(self, method: str) -> _Fault | None:
        queue = self._faults.get(method)
        if not queue:
            return None
        fault = queue[0]
        fault.remaining -= 1
        if fault.remaining <= 0:
            queue.popleft()
        return fault

    # -- inspection --

    def calls(self, method: str | None = None) -> list[Call]:
        """Every recorded request (including injected failures), in arrival order."""
        with self._lock:
            return [c for c in self._calls if method is None or c.method == method]

    def wait_for(
        self, method: str, *, count: int = 1, timeout: float = 5.0, where: Callable[[Call], bool] | None = None
    ) -> list[Call]:
        """Block until ``count`` successful calls of ``method`` (matching ``where``) arrived; return them.

        Bolt acknowledges first and works afterwards, so tests must wait for the
        bot's calls rather than sleep.
        """
        deadline = time.monotonic() + timeout

        def matching() -> list[Call]:
            return [c for c in self._calls if c.method == method and c.ok and (where is None or where(c))]

        with self._changed:
            while len(found := matching()) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [(c.method, c.status, c.error) for c in self._calls]
                    raise TimeoutError(f"waited {timeout}s for {count} ok {method} call(s); saw {seen}")
                self._changed.wait(remaining)
            return found

    def messages(self, channel: str) -> list[Message]:
        """Top-level messages and replies in ``channel``, oldest first."""
        with self._lock:
            return sorted(self._messages.get(channel, {}).values(), key=lambda m: _ts_key(m.ts))

    def message(self, channel: str, ts: str) -> Message:
        with self._lock:
            try:
                return self._messages[channel][ts]
            except KeyError:
                known = sorted(self._messages.get(channel, {}))
                raise KeyError(f"no message {ts} in {channel}; known: {known}") from None

    def thread(self, channel: str, ts: str) -> list[Message]:
        """The replies under the message ``ts`` (without the parent), oldest first."""
        return [m for m in self.messages(channel) if m.thread_ts == ts and m.ts != ts]

    def ephemerals(self, user: str | None = None) -> list[Ephemeral]:
        with self._lock:
            return [e for e in self._ephemerals if user is None or e.user == user]

    def files(self, *, include_incomplete: bool = False) -> list[UploadedFile]:
        """Uploaded files; by default only those completed with files.completeUploadExternal."""
        with self._lock:
            return [f for f in self._files.values() if f.completed or include_incomplete]

    def home_view(self, user_id: str) -> dict[str, Any] | None:
        with self._lock:
            return copy.deepcopy(self._views.get(user_id))

    def all_text(self) -> str:
        """Every string the bot sent — all args of all calls, block text, file contents — newline-joined.

        One string, so ``assert secret not in emulator.all_text()`` is a
        substring check. The ``token`` argument and HTTP headers are left out:
        the bot token is the one credential the bot must send.
        """
        with self._lock:
            parts = [s for call in self._calls for s in _strings(call.args, skip_keys={"token"})]
            parts += [f.text for f in self._files.values() if f.content is not None]
        return "\n".join(parts)

    # -- HTTP entry point (also usable without a socket) --

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        """Route one request; returns (status, headers, body)."""
        parts = urlsplit(path)
        route, _, name = parts.path.lstrip("/").partition("/")
        if route == "api" and name:
            return self._handle_api(name, parts.query, headers, body)
        if route == "upload" and name:
            return self._handle_upload(name, headers, body)
        if route == "response" and name:
            return self._handle_response_url(name, headers, body)
        return 404, {"Content-Type": "text/plain"}, b"not found"

    def _record(self, method: str, args: dict[str, Any], headers: dict[str, str], status: int, response: Any,
                injected: bool = False) -> None:  # fmt: skip
        with self._changed:
            self._calls.append(Call(len(self._calls) + 1, method, args, dict(headers), status, response, injected=injected))
            self._changed.notify_all()

    def _handle_api(self, method: str, query: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        try:
            args, is_json = _parse_body(headers, body)
        except SlackError as exc:
            args, is_json, parse_error = {}, False, exc
        else:
            parse_error = None
        args = {**dict(parse_qsl(query, keep_blank_values=True)), **args}
        with self._lock:
            fault = self._take_fault(method)
            if fault is not None:
                status, extra, response = _fault_response(fault)
                self._record(method, _decode_json_args(args, lenient=True), headers, status, response, injected=True)
                return status, {"Content-Type": "application/json; charset=utf-8", **extra}, _json(response)
            try:
                if parse_error is not None:
                    raise parse_error
                if method == "apps.connections.open":
                    response = {"ok": True, "url": self._connections_open(headers, args)}
                elif method not in self._methods:
                    raise SlackError("unknown_method", req_method=method)
                else:
                    self._authenticate(headers, args, is_json)
                    response = {"ok": True, **self._methods[method](_decode_json_args(args))}
            except SlackError as exc:
                response = {"ok": False, "error": exc.error, **exc.extra}
            self._record(method, _decode_json_args(args, lenient=True), headers, 200, response)
        return 200, {"Content-Type": "application/json; charset=utf-8", "X-Slack-Req-Id": self._new_id("req")}, _json(response)

    def _connections_open(self, headers: dict[str, str], args: dict[str, Any]) -> str:
        """Socket Mode's URL: only for the app-level token, which no other method accepts."""
        auth = _header(headers, "Authorization")
        token = auth.partition(" ")[2].strip() if auth else args.get("token")
        try:
            return self.socket_mode.open_url(token, self.root_url)
        except Refused as exc:
            raise SlackError(exc.error) from None

    def _authenticate(self, headers: dict[str, str], args: dict[str, Any], is_json: bool) -> None:
        """Bearer header or (form only, like Slack) a ``token`` argument."""
        auth = _header(headers, "Authorization")
        if auth is not None:
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or token.strip() not in self.valid_tokens:
                raise SlackError("invalid_auth")
            return
        token = None if is_json else args.get("token")
        if not token:
            raise SlackError("not_authed")
        if token not in self.valid_tokens:
            raise SlackError("invalid_auth")

    def _handle_upload(self, file_id: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            fault = self._take_fault("upload")
            record_args = {"file_id": file_id, "length": len(body)}
            if fault is not None:
                self._record("upload", record_args, headers, fault.status, fault.error, injected=True)
                return fault.status, {"Content-Type": "text/plain"}, fault.error.encode()
            upload = self._files.get(file_id)
            if upload is None or upload.completed:
                self._record("upload", record_args, headers, 404, "not found")
                return 404, {"Content-Type": "text/plain"}, b"not found"
            upload.content = _multipart_file(headers, body) if "multipart/" in (_header(headers, "Content-Type") or "") else body
            reply = f"OK - {len(upload.content)}"
            self._record("upload", record_args, headers, 200, reply)
        return 200, {"Content-Type": "text/plain"}, reply.encode()

    def _handle_response_url(self, rid: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        """Slash-command/interaction delayed responses: JSON, validated, at most 5 uses per URL."""
        with self._lock:
            try:
                payload = json.loads(body or b"{}")
            except ValueError:
                payload = {"_raw": body.decode("utf-8", errors="replace")}
            args = {"response_id": rid, **(payload if isinstance(payload, dict) else {"_raw": payload})}
            fault = self._take_fault("response_url")
            if fault is not None:
                self._record("response_url", args, headers, fault.status, fault.error, injected=True)
                return fault.status, {"Content-Type": "text/plain"}, fault.error.encode()
            status, reply = self._check_response_payload(rid, payload)
            self._record("response_url", args, headers, status, reply)
        return status, {"Content-Type": "text/plain"}, reply.encode()

    def _check_response_payload(self, rid: str, payload: Any) -> tuple[int, str]:
        if not isinstance(payload, dict):
            return 400, "invalid_payload"
        if self._response_uses[rid] >= RESPONSE_URL_MAX_USES:
            return 404, "used_url"
        if not payload.get("delete_original"):
            try:
                self._content(payload, update=False)
            except SlackError as exc:
                return 400, exc.error
        self._response_uses[rid] += 1
        return 200, "ok"

    # -- helpers for handlers --

    def _next_ts(self) -> str:
        micros = 1_700_000_000_000_000 + 100 * next(self._ts_counter)
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._id_counter):08X}"

    def _visible_channel(self, value: Any, *, allow_names: bool = False, allow_users: bool = False) -> Channel:
        """A channel the bot can see; private channels it is not in look absent, as on Slack."""
        if not value or not isinstance(value, str):
            raise SlackError("channel_not_found")
        channel = self._channels.get(value)
        if channel is None and allow_names:
            channel = next((c for c in self._channels.values() if c.name == value.lstrip("#")), None)
        if channel is None and allow_users and value in self._users:
            channel = self._channels.setdefault(
                f"D{value}", Channel(f"D{value}", value, members={value, self.bot_user_id}, is_private=True, is_im=True)
            )
        if channel is None or (channel.is_private and self.bot_user_id not in channel.members):
            raise SlackError("channel_not_found")
        return channel

    def _content(self, args: dict[str, Any], *, update: bool, max_blocks: int = MAX_MESSAGE_BLOCKS) -> dict[str, Any]:
        """Text/blocks/attachments validated as Slack does; returns only the keys that were given."""
        content: dict[str, Any] = {}
        if "text" in args and args["text"] is not None:
            content["text"] = str(args["text"])
        if "blocks" in args and args["blocks"] not in (None, ""):
            content["blocks"] = check_blocks(args["blocks"], max_blocks=max_blocks)
        if "attachments" in args and args["attachments"] not in (None, ""):
            attachments = args["attachments"]
            if not isinstance(attachments, list):
                raise SlackError("invalid_attachments")
            content["attachments"] = attachments
        has_text = bool(content.get("text")) or bool(content.get("blocks")) or bool(content.get("attachments"))
        # chat.update may clear blocks (blocks=[]) and keep the old text; an empty text alone is still no_text.
        changes_something = update and any(key != "text" for key in content)
        if not has_text and not changes_something:
            raise SlackError("no_text")
        if len(content.get("text", "")) > MAX_MESSAGE_TEXT:
            raise SlackError("msg_too_long")
        return content

    def _thread_parent(self, channel: Channel, thread_ts: Any) -> str | None:
        """Normalise ``thread_ts`` to the parent's ts (a reply's ts threads under its parent)."""
        if thread_ts in (None, ""):
            return None
        parent = self._messages[channel.id].get(str(thread_ts))
        if parent is None:
            raise SlackError("thread_not_found", f"no message {thread_ts} in {channel.id}")
        return parent.thread_ts if parent.is_reply else parent.ts

    def _find_message(self, channel: Channel, ts: Any) -> Message:
        message = self._messages[channel.id].get(str(ts)) if ts else None
        if message is None:
            raise SlackError("message_not_found")
        return message

    @staticmethod
    def _require(args: dict[str, Any], *names: str) -> None:
        for name in names:
            if args.get(name) in (None, ""):
                raise SlackError("invalid_arguments", f"missing required field: {name}")

    # -- API methods --

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": f"https://{self.team_domain}.slack.com/",
            "team": "Test Team",
            "user": self.bot_name,
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _chat_post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._visible_channel(args.get("channel"), allow_names=True, allow_users=True)
        if channel.is_archived:
            raise SlackError("is_archived")
        content = self._content(args, update=False)
        thread_ts = self._thread_parent(channel, args.get("thread_ts"))
        message = Message(
            channel=channel.id,
            ts=self._next_ts(),
            user=self.bot_user_id,
            bot_id=self.bot_id,
            thread_ts=thread_ts,
            reply_broadcast=_truthy(args.get("reply_broadcast")),
            metadata=args.get("metadata") if isinstance(args.get("metadata"), dict) else None,
            **content,
        )
        self._messages[channel.id][message.ts] = message
        return {"channel": channel.id, "ts": message.ts, "message": message.to_api()}

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._visible_channel(args.get("channel"))
        message = self._find_message(channel, args.get("ts"))
        if message.user != self.bot_user_id:
            raise SlackError("cant_update_message")
        content = self._content(args, update=True)
        message.history.append({"text": message.text, "blocks": message.blocks, "attachments": message.attachments,
                                "edited_ts": message.edited_ts})  # fmt: skip
        for key, value in content.items():
            setattr(message, key, value)
        message.edited_ts = self._next_ts()
        return {"channel": channel.id, "ts": message.ts, "text": message.text, "message": message.to_api()}

    def _chat_post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._visible_channel(args.get("channel"))
        self._require(args, "user")
        if args["user"] not in self._users:
            raise SlackError("user_not_found")
        if args["user"] not in channel.members:
            raise SlackError("user_not_in_channel")
        content = self._content(args, update=False)
        thread_ts = self._thread_parent(channel, args.get("thread_ts"))
        ephemeral = Ephemeral(channel.id, args["user"], self._next_ts(), content.get("text", ""),
                              content.get("blocks", []), thread_ts)  # fmt: skip
        self._ephemerals.append(ephemeral)
        return {"message_ts": ephemeral.ts}

    def _reaction_target(self, args: dict[str, Any]) -> tuple[Message, str]:
        if not args.get("channel") or not args.get("timestamp"):
            raise SlackError("no_item_specified")
        name = args.get("name")
        if not isinstance(name, str) or not _REACTION_NAME.fullmatch(name):
            raise SlackError("invalid_name")
        channel = self._visible_channel(args["channel"])
        return self._find_message(channel, args["timestamp"]), name

    def _reactions_add(self, args: dict[str, Any]) -> dict[str, Any]:
        message, name = self._reaction_target(args)
        users = message.reactions.setdefault(name, [])
        if self.bot_user_id in users:
            raise SlackError("already_reacted")
        users.append(self.bot_user_id)
        return {}

    def _reactions_remove(self, args: dict[str, Any]) -> dict[str, Any]:
        message, name = self._reaction_target(args)
        users = message.reactions.get(name, [])
        if self.bot_user_id not in users:
            raise SlackError("no_reaction")
        users.remove(self.bot_user_id)
        if not users:
            del message.reactions[name]
        return {}

    def _conversations_info(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"channel": self._visible_channel(args.get("channel")).to_api(self.bot_user_id)}

    def _chat_get_permalink(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._visible_channel(args.get("channel"))
        self._require(args, "message_ts")
        message = self._find_message(channel, args["message_ts"])
        link = f"https://{self.team_domain}.slack.com/archives/{channel.id}/p{message.ts.replace('.', '')}"
        if message.is_reply:
            link += f"?thread_ts={message.thread_ts}&cid={channel.id}"
        return {"channel": channel.id, "permalink": link}

    def _conversations_replies(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._visible_channel(args.get("channel"))
        self._require(args, "ts")
        parent = self._messages[channel.id].get(str(args["ts"]))
        if parent is None:
            raise SlackError("thread_not_found")
        replies = [m for m in self.messages(channel.id) if m.thread_ts == parent.ts and m.ts != parent.ts]
        thread = [parent.to_api(replies)] + [r.to_api() for r in replies] if not parent.is_reply else [parent.to_api()]
        try:
            limit = max(1, min(int(args.get("limit") or 1000), 1000))
        except (TypeError, ValueError):
            raise SlackError("invalid_limit") from None
        offset = _decode_cursor(args.get("cursor"))
        page = thread[offset : offset + limit]
        more = offset + limit < len(thread)
        return {
            "messages": page,
            "has_more": more,
            "response_metadata": {"next_cursor": _encode_cursor(offset + limit) if more else ""},
        }

    def _users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        self._require(args, "user")
        user = self._users.get(args["user"])
        if user is None:
            raise SlackError("user_not_found")
        return {"user": user.to_api(self.team_id)}

    def _usergroups_users_list(self, args: dict[str, Any]) -> dict[str, Any]:
        self._require(args, "usergroup")
        group = self._usergroups.get(args["usergroup"])
        if group is None:
            raise SlackError("no_such_subteam")
        return {"users": list(group.users)}

    def _files_get_upload_url(self, args: dict[str, Any]) -> dict[str, Any]:
        self._require(args, "filename", "length")
        try:
            length = int(args["length"])
        except (TypeError, ValueError):
            raise SlackError("invalid_arguments", "length must be an integer") from None
        if length <= 0:
            raise SlackError("invalid_arguments", "length must be positive")
        upload = UploadedFile(self._new_id("F"), str(args["filename"]), length, alt_txt=args.get("alt_txt"),
                              snippet_type=args.get("snippet_type"))  # fmt: skip
        self._files[upload.id] = upload
        return {"upload_url": f"{self.root_url}/upload/{upload.id}", "file_id": upload.id}

    def _files_complete_upload(self, args: dict[str, Any]) -> dict[str, Any]:
        self._require(args, "files")
        items = args["files"]
        if not isinstance(items, list) or not items or not all(isinstance(i, dict) and i.get("id") for i in items):
            raise SlackError("invalid_arguments", "files must be a JSON array of {id, title}")
        uploads = [self._files.get(str(i["id"])) for i in items]
        for item, upload in zip(items, uploads):
            if upload is None or upload.completed:
                raise SlackError("file_not_found", f"no pending upload {item['id']}")
            if upload.content is None:
                raise SlackError("file_not_found", f"{item['id']} was never uploaded to its upload_url")
        channel_id = args.get("channel_id") or (str(args.get("channels") or "").split(",")[0] or None)
        channel = self._visible_channel(channel_id) if channel_id else None
        if args.get("thread_ts") and channel is None:
            raise SlackError("invalid_arguments", "thread_ts requires channel_id")
        thread_ts = self._thread_parent(channel, args.get("thread_ts")) if channel else None
        comment = args.get("initial_comment")
        if comment is not None and len(str(comment)) > MAX_MESSAGE_TEXT:
            raise SlackError("msg_too_long")
        message_ts = None
        if channel is not None:
            message = Message(channel=channel.id, ts=self._next_ts(), user=self.bot_user_id, bot_id=self.bot_id,
                              text=str(comment or ""), thread_ts=thread_ts, files=[u.id for u in uploads])  # fmt: skip
            self._messages[channel.id][message.ts] = message
            message_ts = message.ts
        for item, upload in zip(items, uploads):
            upload.title = item.get("title") or upload.filename
            upload.completed, upload.channel, upload.thread_ts = True, channel.id if channel else None, thread_ts
            upload.initial_comment, upload.message_ts = comment, message_ts
        return {"files": [_file_api(u) for u in uploads]}

    def _views_publish(self, args: dict[str, Any]) -> dict[str, Any]:
        self._require(args, "user_id", "view")
        if args["user_id"] not in self._users:
            raise SlackError("user_not_found")
        view = args["view"]
        if not isinstance(view, dict) or view.get("type") != "home":
            raise SlackError("invalid_arguments", "view must be a JSON object with type home")
        blocks = check_blocks(view.get("blocks", []), max_blocks=MAX_VIEW_BLOCKS)
        current = self._views.get(args["user_id"])
        if args.get("hash") and current and args["hash"] != current["hash"]:
            raise SlackError("hash_conflict")
        stored = {**view, "blocks": blocks, "id": self._new_id("V"), "hash": self._new_id("h"), "team_id": self.team_id}
        self._views[args["user_id"]] = stored
        return {"view": copy.deepcopy(stored)}


class _Server(ThreadingHTTPServer):
    """A bigger listen backlog than http.server's 5, so bursts of concurrent clients are not delayed by SYN retries."""

    daemon_threads = True
    request_queue_size = 128
    emulator: SlackEmulator


class _RequestHandler(BaseHTTPRequestHandler):
    """Reads the request, hands it to the emulator, writes the answer; nothing else."""

    server_version = "SlackEmulator/1.0"

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        emulator = self.server.emulator  # type: ignore[attr-defined]
        try:
            status, headers, payload = emulator.handle(self.path, dict(self.headers.items()), body)
        except Exception:  # an emulator bug must show up as a 500, not a hung client
            log.exception("slack emulator failed on %s", self.path)
            status, headers, payload = 500, {"Content-Type": "text/plain"}, b"emulator error"
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        """Socket Mode's WebSocket upgrade on ``/link``; otherwise like POST (Slack accepts GET with a query)."""
        if not self.path.startswith("/link"):
            self.do_POST()
            return
        emulator = self.server.emulator  # type: ignore[attr-defined]
        self.close_connection = True
        emulator.socket_mode.serve(self.path, dict(self.headers.items()), self.rfile, self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature from http.server
        log.debug("slack emulator: " + format, *args)


# --- request/response plumbing ---------------------------------------------------------------------


def _header(headers: dict[str, str], name: str) -> str | None:
    lowered = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lowered), None)


def _parse_body(headers: dict[str, str], body: bytes) -> tuple[dict[str, Any], bool]:
    """Form, multipart or JSON body -> (args, was_json)."""
    content_type = (_header(headers, "Content-Type") or "").lower()
    if not body:
        return {}, "json" in content_type
    if "application/json" in content_type:
        try:
            data = json.loads(body)
        except ValueError:
            raise SlackError("invalid_json") from None
        if not isinstance(data, dict):
            raise SlackError("invalid_json")
        return data, True
    if "multipart/form-data" in content_type:
        return _multipart_fields(headers, body), False
    return dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True)), False


def _multipart_parts(headers: dict[str, str], body: bytes) -> Iterator[tuple[str, str | None, bytes]]:
    head = f"Content-Type: {_header(headers, 'Content-Type')}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        yield str(name), part.get_filename(), payload


def _multipart_fields(headers: dict[str, str], body: bytes) -> dict[str, Any]:
    return {
        name: payload if filename else payload.decode("utf-8", errors="replace")
        for name, filename, payload in _multipart_parts(headers, body)
    }


def _multipart_file(headers: dict[str, str], body: bytes) -> bytes:
    """The first file part of a multipart upload (curl -F style), else the whole body."""
    return next((payload for _, filename, payload in _multipart_parts(headers, body) if filename), body)


def _decode_json_args(args: dict[str, Any], *, lenient: bool = False) -> dict[str, Any]:
    """Form-encoded JSON arguments -> Python values. Lenient mode (for the record) keeps bad JSON as text."""
    decoded = dict(args)
    for key in _JSON_ARGS & decoded.keys():
        value = decoded[key]
        if isinstance(value, str) and value:
            try:
                decoded[key] = json.loads(value)
            except ValueError:
                if not lenient and key != "blocks":  # blocks: check_blocks names the error invalid_blocks_format
                    raise SlackError("invalid_arguments", f"{key} is not valid JSON") from None
    return decoded


def _fault_response(fault: _Fault) -> tuple[int, dict[str, str], dict[str, Any]]:
    extra = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
    return fault.status, extra, {"ok": False, "error": fault.error}


def _file_api(upload: UploadedFile) -> dict[str, Any]:
    return {
        "id": upload.id,
        "name": upload.filename,
        "title": upload.title,
        "size": len(upload.content or b""),
        "shares": {} if not upload.channel else {"public": {upload.channel: [{"ts": upload.message_ts}]}},
    }


def _json(data: Any) -> bytes:
    return json.dumps(data).encode("utf-8")


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() in ("true", "1")


def _ts_key(ts: str) -> tuple[int, int]:
    seconds, _, micros = ts.partition(".")
    return int(seconds), int(micros or 0)


def _encode_cursor(offset: int) -> str:
    return base64.b64encode(f"offset:{offset}".encode()).decode()


def _decode_cursor(cursor: Any) -> int:
    if not cursor:
        return 0
    try:
        return int(base64.b64decode(str(cursor)).decode().removeprefix("offset:"))
    except ValueError:
        raise SlackError("invalid_cursor") from None


def _strings(node: Any, *, skip_keys: frozenset[str] | set[str] = frozenset()) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, bytes):
        yield node.decode("utf-8", errors="replace")
    elif isinstance(node, dict):
        for key, value in node.items():
            if key not in skip_keys:
                yield from _strings(value, skip_keys=skip_keys)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from _strings(value, skip_keys=skip_keys)


# --- Slack -> bot: signing, payload builders, a tiny client ----------------------------------------

DEFAULT_TEAM = "T_TEST"
DEFAULT_APP = "A_TEST"
DEFAULT_CHANNEL = "C_DEPLOYS"
# Where a forgotten response_url points: a closed local port, so it fails fast and never reaches the internet.
UNSET_RESPONSE_URL = "http://127.0.0.1:9/response/unset"


def make_ts(seconds: float | None = None) -> str:
    """A Slack-style ``ts`` (``"1700000000.000100"``) for payloads built outside the emulator."""
    return f"{time.time() if seconds is None else seconds:.6f}"


def signed_request(signing_secret: str, body: bytes | str, timestamp: int | str | None = None) -> dict[str, str]:
    """The two headers Slack signs requests with: v0 HMAC-SHA256 of ``v0:{ts}:{body}``."""
    raw = body.encode("utf-8") if isinstance(body, str) else body
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(signing_secret.encode(), f"v0:{ts}:".encode() + raw, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


_triggers = itertools.count(1)


def new_trigger_id(team_id: str = DEFAULT_TEAM) -> str:
    """Unique per invocation, as Slack's are (``13345224609.738474920.8088930838d88f008e0``)."""
    return f"{int(time.time())}.{next(_triggers)}.{team_id}.{secrets.token_hex(8)}"


def slash_command_body(
    command: str = "/migrate",
    text: str = "",
    user_id: str = "U_REQ",
    channel_id: str = DEFAULT_CHANNEL,
    team_id: str = DEFAULT_TEAM,
    trigger_id: str | None = None,
    response_url: str | None = None,
    *,
    user_name: str | None = None,
    channel_name: str = "deploys",
    api_app_id: str = DEFAULT_APP,
) -> bytes:
    """A slash-command POST body, form-encoded exactly as Slack sends it."""
    return urlencode(
        {
            "token": "verification-token-unused",
            "team_id": team_id,
            "team_domain": "test",
            "channel_id": channel_id,
            "channel_name": channel_name,
            "user_id": user_id,
            "user_name": user_name or user_id.lower(),
            "command": command,
            "text": text,
            "api_app_id": api_app_id,
            "is_enterprise_install": "false",
            "response_url": response_url or UNSET_RESPONSE_URL,
            "trigger_id": trigger_id or new_trigger_id(team_id),
        }
    ).encode()


def event_body(
    event: dict[str, Any],
    event_id: str | None = None,
    *,
    team_id: str = DEFAULT_TEAM,
    api_app_id: str = DEFAULT_APP,
    bot_user_id: str = "U_BOT",
    event_time: int | None = None,
) -> bytes:
    """An Events API ``event_callback`` envelope around ``event``, JSON-encoded."""
    return json.dumps(
        {
            "token": "verification-token-unused",
            "team_id": team_id,
            "api_app_id": api_app_id,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or f"Ev{int(time.time() * 1e6):X}",
            "event_time": event_time or int(time.time()),
            "authorizations": [
                {"team_id": team_id, "user_id": bot_user_id, "is_bot": True, "is_enterprise_install": False}
            ],
            "is_ext_shared_channel": False,
        }
    ).encode()


def reaction_event(
    kind: str = "reaction_added",
    *,
    user: str,
    reaction: str,
    ts: str,
    channel: str = DEFAULT_CHANNEL,
    item_user: str = "U_BOT",
    event_ts: str | None = None,
) -> dict[str, Any]:
    """A ``reaction_added``/``reaction_removed`` event on the message ``channel``/``ts``."""
    if kind not in ("reaction_added", "reaction_removed"):
        raise ValueError(f"kind must be reaction_added or reaction_removed, not {kind!r}")
    return {
        "type": kind,
        "user": user,
        "reaction": reaction,
        "item_user": item_user,
        "item": {"type": "message", "channel": channel, "ts": ts},
        "event_ts": event_ts or make_ts(),
    }


def message_event(
    text: str,
    *,
    user: str = "U_REQ",
    channel: str = DEFAULT_CHANNEL,
    ts: str | None = None,
    thread_ts: str | None = None,
    channel_type: str = "channel",
    subtype: str | None = None,
    bot_id: str | None = None,
    team: str = DEFAULT_TEAM,
) -> dict[str, Any]:
    """A ``message`` event as a person (or, with ``bot_id``, a bot) posting ``text``."""
    ts = ts or make_ts()
    event: dict[str, Any] = {
        "type": "message",
        "user": user,
        "text": text,
        "ts": ts,
        "channel": channel,
        "channel_type": channel_type,
        "event_ts": ts,
        "team": team,
    }
    if thread_ts:
        event["thread_ts"] = thread_ts
    if subtype:
        event["subtype"] = subtype
    if bot_id:
        event["bot_id"] = bot_id
    return event


def block_action_body(
    action_id: str,
    value: str | None = None,
    user: str = "U_APPROVER1",
    channel: str = DEFAULT_CHANNEL,
    message_ts: str | None = None,
    *,
    block_id: str = "actions",
    team_id: str = DEFAULT_TEAM,
    trigger_id: str | None = None,
    response_url: str | None = None,
    message_text: str = "",
    api_app_id: str = DEFAULT_APP,
) -> bytes:
    """A button click (``block_actions``) as Slack posts it: form-encoded ``payload=<json>``."""
    message_ts = message_ts or make_ts()
    action: dict[str, Any] = {
        "type": "button",
        "action_id": action_id,
        "block_id": block_id,
        "text": {"type": "plain_text", "text": action_id, "emoji": True},
        "action_ts": make_ts(),
    }
    if value is not None:
        action["value"] = value
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": team_id},
        "api_app_id": api_app_id,
        "token": "verification-token-unused",
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel, "is_ephemeral": False},
        "trigger_id": trigger_id or new_trigger_id(team_id),
        "team": {"id": team_id, "domain": "test"},
        "channel": {"id": channel, "name": channel.lower()},
        "message": {"type": "message", "user": "U_BOT", "ts": message_ts, "text": message_text},
        "response_url": response_url or UNSET_RESPONSE_URL,
        "actions": [action],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def post_to_bot(url: str, body: bytes, headers: dict[str, str], *, timeout: float = 10.0) -> tuple[int, str]:
    """POST ``body`` to the bot like Slack would; returns (status, body text), errors included.

    Content-Type is inferred (JSON for ``{...}``, else form-encoded) unless given;
    proxies from the environment are ignored because the bot is on localhost.
    """
    all_headers = dict(headers)
    if _header(all_headers, "Content-Type") is None:
        json_body = body.lstrip().startswith(b"{")
        all_headers["Content-Type"] = "application/json" if json_body else "application/x-www-form-urlencoded"
    request = urllib.request.Request(url, data=body, headers=all_headers, method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", errors="replace")
