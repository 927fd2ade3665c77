"""The Slack app manifest asks for exactly the scopes the bot's code needs — no fewer, no more.

What the code needs is read from bot/chat/slack_app.py itself (its WebClient
calls and bolt listeners, by AST), and each WebClient method is resolved to
the Web API methods it really calls by reading slack_sdk's own source
(``files_upload_v2`` is two API methods and a raw upload). Only the
method -> scope table below is written by hand, from Slack's method pages.
"""

from __future__ import annotations

import ast
import inspect
import re
from functools import cache
from pathlib import Path

import pytest
import yaml
from slack_sdk import WebClient

from bot.chat import commands

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "manifests" / "slack-app.yaml"
SLACK_APP = ROOT / "bot" / "chat" / "slack_app.py"
ENDPOINT = "/slack/events"  # bot/chat/http_server.py

# Web API method -> the bot scope it needs (api.slack.com/methods/<method>); None = no scope.
METHOD_SCOPES: dict[str, str | None] = {
    "auth.test": None,
    "chat.postMessage": "chat:write",
    "chat.update": "chat:write",
    "chat.postEphemeral": "chat:write",
    "chat.getPermalink": None,
    "files.getUploadURLExternal": "files:write",
    "files.completeUploadExternal": "files:write",
    "usergroups.users.list": "usergroups:read",
    "users.info": "users:read",
    "conversations.replies": "channels:history",
    "reactions.add": "reactions:write",
    "views.publish": None,
}
# bolt event listener -> (manifest bot event, the scope it needs); "message" here means public channels.
EVENT_SCOPES: dict[str, tuple[str, str | None]] = {
    "app_home_opened": ("app_home_opened", None),
    "reaction_added": ("reaction_added", "reactions:read"),
    "reaction_removed": ("reaction_removed", "reactions:read"),
    "message": ("message.channels", "channels:history"),
}
BOLT_CALLS = {"auth.test"}  # bolt verifies the token when the App is built


@cache
def manifest() -> dict:
    return yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))


@cache
def slack_app_tree() -> ast.Module:
    return ast.parse(SLACK_APP.read_text(encoding="utf-8"))


def client_methods() -> set[str]:
    """WebClient methods called on ``client`` / ``self.client`` anywhere in the Slack face (slack_app, its outbox)."""
    found = set()
    trees = [slack_app_tree(), ast.parse(SLACK_APP.with_name("slack_outbox.py").read_text(encoding="utf-8"))]
    for node in (n for tree in trees for n in ast.walk(tree)):
        if isinstance(node, ast.Attribute) and hasattr(WebClient, node.attr) and not node.attr.startswith("_"):
            owner = node.value
            if (isinstance(owner, ast.Name) and owner.id == "client") or (
                    isinstance(owner, ast.Attribute) and owner.attr == "client"):
                found.add(node.attr)
    return found


def api_methods(sdk_method: str) -> set[str]:
    """The Web API methods one WebClient method calls, following its calls to other WebClient methods."""
    source = inspect.getsource(getattr(WebClient, sdk_method))
    methods = set(re.findall(r'api_call\(\s*"([\w.]+)"', source))
    for nested in set(re.findall(r"self\.([a-zA-Z]\w*)\(", source)) - {"api_call", sdk_method}:
        if hasattr(WebClient, nested):
            methods |= api_methods(nested)
    return methods


def listeners(kind: str) -> set[str]:
    """The first argument of every ``@app.<kind>(...)`` decorator in slack_app.py."""
    names = set()
    for node in ast.walk(slack_app_tree()):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == kind
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "app" and node.args
                and isinstance(node.args[0], ast.Constant)):
            names.add(node.args[0].value)
    return names


def called_api_methods() -> set[str]:
    return {m for sdk in client_methods() for m in api_methods(sdk)} | BOLT_CALLS


def test_the_code_calls_the_methods_we_think_it_does() -> None:
    assert called_api_methods() == {"auth.test", "chat.postMessage", "chat.update", "chat.getPermalink",
                                    "files.getUploadURLExternal",
                                    "files.completeUploadExternal", "usergroups.users.list", "views.publish"}


def test_every_called_method_has_a_known_scope() -> None:
    unknown = called_api_methods() - METHOD_SCOPES.keys()
    assert not unknown, f"add the scope of {sorted(unknown)} to METHOD_SCOPES (see api.slack.com/methods)"


def test_bot_scopes_are_exactly_what_the_code_needs() -> None:
    needed = {METHOD_SCOPES[m] for m in called_api_methods()} - {None}
    needed |= {EVENT_SCOPES[e][1] for e in listeners("event")} - {None}
    needed |= {"commands"} if listeners("command") else set()
    assert sorted(manifest()["oauth_config"]["scopes"]["bot"]) == sorted(needed)


def test_bot_events_are_the_events_the_app_listens_to() -> None:
    expected = {EVENT_SCOPES[e][0] for e in listeners("event")}
    assert sorted(manifest()["settings"]["event_subscriptions"]["bot_events"]) == sorted(expected)


def test_the_slash_command_is_migrate_with_a_usage_hint_of_real_commands() -> None:
    (command,) = manifest()["features"]["slash_commands"]
    assert {command["command"]} == listeners("command") == {"/migrate"}
    verbs = [part.split()[0] for part in command["usage_hint"].split("|")]
    assert verbs and set(verbs) <= set(commands.COMMANDS)
    assert command["should_escape"] is True  # the parser strips <@U…> mentions, which only escaping produces


def test_interactivity_is_on_for_the_approve_and_reject_buttons() -> None:
    assert listeners("action") == {"approve", "reject"}
    assert manifest()["settings"]["interactivity"]["is_enabled"] is True


@pytest.mark.parametrize("where", ["command", "events", "interactivity"])
def test_every_request_url_is_the_bolt_endpoint(where: str) -> None:
    data = manifest()
    url = {"command": data["features"]["slash_commands"][0]["url"],
           "events": data["settings"]["event_subscriptions"]["request_url"],
           "interactivity": data["settings"]["interactivity"]["request_url"]}[where]
    assert url.startswith("https://") and url.endswith(ENDPOINT)


def test_http_mode_by_default_with_socket_mode_documented() -> None:
    assert manifest()["settings"]["socket_mode_enabled"] is False
    assert "connections:write" in MANIFEST.read_text(encoding="utf-8")  # the Socket Mode note says what to add
