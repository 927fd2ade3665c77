"""slack-bolt wiring: ack -> parse -> authorize -> hand off. No workflow logic here.

Every listener acknowledges at once and passes the work to the bot's own
thread pool (bolt has five listener threads; slow runs must never hold
them). The runs layer decides; ``chat/slack_outbox.py`` renders its news into the
run's thread: the parent message edited in place, replies for details,
triage and the uploaded log.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from slack_bolt import App
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.webhook import WebhookClient

from bot import messages
from bot.errors import ConfigError, ConnectionFailed
from bot.chat import commands as cmd
from bot.chat import render
from bot.chat.guard import looks_like_secret
from bot.config import Settings
from bot.redact import redact
from bot.chat.dispatch import dispatch
from bot.runs.commands import Commands
from bot.runs.runtime import Runtime
from bot.runs.store import StateStore

log = logging.getLogger(__name__)
DEFAULT_API_URL = "https://slack.com/api/"


def _retry_handlers() -> list[RetryHandler]:
    return [ConnectionErrorRetryHandler(max_retry_count=2), RateLimitErrorRetryHandler(max_retry_count=5),
            ServerErrorRetryHandler(max_retry_count=3)]


def make_client(token: str, api_url: str = "") -> WebClient:
    """A WebClient that survives 429 (honouring Retry-After), 5xx and dropped connections."""
    base = api_url or DEFAULT_API_URL
    if not base.endswith("/"):
        base += "/"
    return WebClient(token=token, base_url=base, retry_handlers=_retry_handlers())


def responder(response_url: str) -> Callable[..., None]:
    """``respond`` with the same retries as the WebClient (bolt's own has none for 429/5xx) and a logged failure."""
    def respond(text: str, response_type: str = "ephemeral") -> None:
        response = WebhookClient(response_url, retry_handlers=_retry_handlers()).send(text=text,
                                                                                       response_type=response_type)
        if response.status_code != 200:
            log.error("response_url answer failed: HTTP %s", response.status_code)

    return respond


def check_token(client: WebClient) -> None:
    """auth.test before anything else, so a bad token or no route to Slack is a sentence, not a traceback."""
    try:
        client.auth_test()
    except SlackApiError as exc:
        error = exc.response.get("error") if exc.response else "unknown"
        raise ConfigError(f"Slack refused the bot token ({error}).",
                          "Check the Bot User OAuth Token in the secret store; reinstall the app if it was revoked.") from None
    except OSError as exc:  # URLError, timeouts, refused connections
        reason = getattr(exc, "reason", exc)
        raise ConnectionFailed(f"Could not reach Slack at {client.base_url} ({reason}).",
                               "Check the network, the proxy, or SLACK_API_URL.") from None


def _connected(app: App, app_token: str) -> SocketModeHandler:
    handler = SocketModeHandler(app, app_token)
    try:
        handler.connect()
    except (SlackApiError, OSError):
        handler.close()  # the client's polling threads started with it; a refused start must not leave them
        raise
    return handler


def connect_socket_mode(app: App, app_token: str) -> SocketModeHandler:
    """Open the Socket Mode WebSocket; a refused app token or no route to Slack is a sentence, not a traceback."""
    try:
        return _connected(app, app_token)
    except SlackApiError as exc:
        error = exc.response.get("error") if exc.response else "unknown"
        raise ConfigError(f"Slack refused the app-level token ({error}).",
                          "Generate an app-level token with the connections:write scope (Basic Information → "
                          "App-Level Tokens) and put it in the secret store.") from None
    except OSError as exc:
        reason = getattr(exc, "reason", exc)
        raise ConnectionFailed(f"Could not open the Socket Mode connection to Slack ({reason}).",
                               "Check the network and the proxy; Socket Mode needs outbound HTTPS only.") from None


class GroupCache:
    """usergroups.users.list, cached briefly: approvals must not hammer the API."""

    def __init__(self, client: WebClient, ttl_s: float = 300.0) -> None:
        self.client, self.ttl_s = client, ttl_s
        self._cache: dict[str, tuple[float, set[str]]] = {}

    def __call__(self, group: str) -> set[str]:
        hit = self._cache.get(group)
        if hit and time.monotonic() - hit[0] < self.ttl_s:
            return hit[1]
        try:
            users = set(self.client.usergroups_users_list(usergroup=group)["users"])
        except SlackApiError as exc:
            log.error("usergroups.users.list %s failed: %s", group, exc.response.get("error"))
            users = hit[1] if hit else set()
        self._cache[group] = (time.monotonic(), users)
        return users


def _not_the_unused_token_warning(record: logging.LogRecord) -> bool:
    """bolt warns that $SLACK_BOT_TOKEN goes unused when given a client; ours (retries, base URL) is on purpose."""
    return "`token` will be unused" not in record.getMessage()


def _without_bodies(record: logging.LogRecord) -> bool:
    """Request bodies never reach a log: bolt logs them at INFO (bad signatures, unhandled requests) and DEBUG,
    and a body can carry whatever a person typed, secrets included. The sentence stays; the body goes."""
    message = record.getMessage()
    for marker in ("body: ", "request body", "({'", '({"'):
        at = message.find(marker)
        if at >= 0:
            record.msg, record.args = message[:at] + "(request body not logged)", None
            break
    return True


def bolt_logger() -> logging.Logger:
    """The logger bolt writes through (all of its loggers, when passed to App): no bodies, no token warning."""
    logger = logging.getLogger("bot.chat.bolt")
    for wanted in (_not_the_unused_token_warning, _without_bodies):
        if wanted not in logger.filters:
            logger.addFilter(wanted)
    return logger


def first_delivery(store: StateStore, body: dict, request: Any) -> bool:
    """Slack retries, and an attacker may replay a signed request within its 5 minutes: each is handled once.

    Events carry an event_id; slash commands and interactive payloads carry a
    trigger_id; failing that, a request's signature and timestamp identify it.
    """
    key = body.get("event_id") or body.get("trigger_id")
    if not key and request is not None:
        headers = request.headers or {}
        signature = (headers.get("x-slack-signature") or [""])[0]
        stamp = (headers.get("x-slack-request-timestamp") or [""])[0]
        key = f"{signature}:{stamp}" if signature else ""
    return store.first_time(key or "")


def build_app(settings: Settings, runtime: Runtime, client: WebClient, signing_secret: str,
              pool: ThreadPoolExecutor) -> App:
    app = App(client=client, signing_secret=signing_secret, process_before_response=False, logger=bolt_logger())
    store = runtime.store
    commands = Commands(runtime)

    @app.command("/migrate")
    def on_migrate(ack: Callable, command: dict, body: dict, request: Any) -> None:
        ack()
        if first_delivery(store, body, request):
            pool.submit(_answer, runtime, responder(command["response_url"]), command.get("text", ""),
                        command["user_id"], command["channel_id"])

    @app.event("reaction_added")
    def on_reaction_added(event: dict, body: dict) -> None:
        if store.first_time(body.get("event_id", "")):
            pool.submit(_react, commands, event, True)

    @app.event("reaction_removed")
    def on_reaction_removed(event: dict, body: dict) -> None:
        if store.first_time(body.get("event_id", "")):
            pool.submit(_react, commands, event, False)

    @app.action("approve")
    def on_approve(ack: Callable, body: dict, action: dict, request: Any) -> None:
        ack()
        if first_delivery(store, body, request):
            pool.submit(commands.approve, action["value"], body["user"]["id"])

    @app.action("reject")
    def on_reject(ack: Callable, body: dict, action: dict, request: Any) -> None:
        ack()
        if first_delivery(store, body, request):
            pool.submit(commands.reject, action["value"], body["user"]["id"])

    @app.event("app_home_opened")
    def on_home_opened(event: dict) -> None:
        if event.get("tab") == "home":
            pool.submit(_publish_home, client, store, event["user"])

    @app.event("message")
    def on_message(event: dict, body: dict) -> None:
        if event.get("bot_id") or event.get("subtype") or not store.first_time(body.get("event_id", "")):
            return
        kind = looks_like_secret(event.get("text"))
        if kind:
            pool.submit(_warn_credential, client, event, kind)

    return app


def _answer(runtime: Runtime, respond: Callable, text: str, user: str, channel: str) -> None:
    try:
        reply_text = dispatch(runtime, cmd.parse(text), user, channel).text
    except Exception as exc:  # noqa: BLE001 - the user gets a sentence, the log gets the type
        log.error("command %r failed: %s", cmd.parse(text).name, type(exc).__name__)
        reply_text = messages.UNEXPECTED.format(error=type(exc).__name__)
    try:
        respond(text=render.chat_commands(redact(reply_text)), response_type="ephemeral")
    except Exception as exc:  # noqa: BLE001 - Slack unreachable after retries: log it, nothing else to do
        log.error("could not answer the command: %s", type(exc).__name__)


def _react(commands: Commands, event: dict, added: bool) -> None:
    item = event.get("item") or {}
    if item.get("type") != "message":
        return
    commands.react(item.get("channel", ""), item.get("ts", ""), event.get("user", ""), event.get("reaction", ""), added)


def _publish_home(client: WebClient, store: StateStore, user: str) -> None:
    try:
        client.views_publish(user_id=user, view=render.home_view(store.runs(limit=20)))
    except SlackApiError as exc:
        log.error("views.publish failed: %s", exc.response.get("error"))


def _warn_credential(client: WebClient, event: dict, kind: str) -> None:
    text = messages.CREDENTIAL_WARNING.format(user=event.get("user", "someone"), what=kind)
    try:
        client.chat_postMessage(channel=event["channel"], thread_ts=event.get("thread_ts") or event["ts"], text=text)
    except SlackApiError as exc:
        log.error("credential warning failed: %s", exc.response.get("error"))
