"""The composition root: settings -> state store -> runtime (lifecycle, executor, scheduler) -> a chat face.

Only this module knows how the layers are wired, so `serve`, `shell` and the
demo assemble the bot the same way.
"""

from __future__ import annotations

import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import ThreadingHTTPServer

from slack_bolt import App
from slack_bolt.adapter.socket_mode import SocketModeHandler

from bot.config import Settings
from bot.errors import ConfigError
from bot.runs import policy
from bot.runs.announcer import Announcer
from bot.runs.commands import Commands
from bot.runs.runtime import Runtime
from bot.runs.store import StateStore, open_state
from bot.runs.worker import workflow_for
from bot.secrets import resolve

log = logging.getLogger(__name__)


def create_runtime(settings: Settings, announcer: Announcer, *, groups: policy.GroupMembers = lambda g: set(),
                   store: StateStore | None = None) -> Runtime:
    store = store or open_state(settings)
    return Runtime(settings, store, announcer, workflow=workflow_for(settings), groups=groups)


@dataclass
class SlackBot:
    runtime: Runtime
    app: App
    pool: ThreadPoolExecutor
    app_token: str = ""
    server: ThreadingHTTPServer | None = None
    socket: SocketModeHandler | None = None

    def serve_http(self, host: str, port: int) -> ThreadingHTTPServer:
        """The HTTP front: Slack's endpoint (HTTP mode only), /healthz, /readyz and /metrics (both modes)."""
        from bot import metrics
        from bot.chat.http_server import Probes, make_server, serve_in_thread

        registry = metrics.runtime_registry(self.runtime)
        probes = Probes(ready=self.ready, metrics=lambda: metrics.exposition(registry))
        self.server = make_server(None if self.app_token else self.app, host, port, probes=probes)
        serve_in_thread(self.server)
        return self.server

    def ready(self) -> tuple[bool, list[str]]:
        """Ready when Slack is connected, the state store answers and the scheduler leads or stands by."""
        reasons = []
        if self.socket is not None and not self.socket.client.is_connected():
            reasons.append("not connected to Slack (Socket Mode is reconnecting)")
        try:
            self.runtime.store.lease("scheduler")
        except Exception as exc:  # noqa: BLE001 - any failure to read the store means not ready
            reasons.append(f"the state store does not answer ({type(exc).__name__})")
        if not self.runtime.scheduler.started:
            reasons.append("the scheduler is not running")
        return not reasons, reasons

    def connect_socket_mode(self) -> SocketModeHandler:
        """Connect out to Slack over a WebSocket (no public endpoint needed); returns at once, runs in threads."""
        from bot.chat.slack_app import connect_socket_mode

        self.socket = connect_socket_mode(self.app, self.app_token)
        return self.socket

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
        if self.socket:
            self.socket.close()
        self.pool.shutdown(wait=True)
        self.runtime.stop(wait=True)

    @property
    def commands(self) -> Commands:
        return Commands(self.runtime)


# Python hands the GIL over every 5 ms by default: with validations busy in Python (parsing, linting,
# tracing) each chat thread waits that long at every I/O step, and answers queue behind them.
# 1 ms halved the ephemeral answer's p50 under load in bench/ack_latency.py (2.8-4.4 s -> 1.2-2.1 s).
CHAT_SWITCH_INTERVAL_S = 0.001


def create_slack_bot(settings: Settings, *, store: StateStore | None = None) -> SlackBot:
    """Resolve the Slack credentials (secret references), build the client, the service and the bolt app.

    Also shortens the interpreter's thread switch interval: this process's
    job is answering people while runs work in the background.
    """
    sys.setswitchinterval(CHAT_SWITCH_INTERVAL_S)
    from bot.chat.slack_app import GroupCache, build_app, check_token, make_client
    from bot.chat.slack_outbox import SlackAnnouncer, SlackDeliverer, on_sent
    from bot.runs.outbox import Outbox

    token = resolve(settings.slack.bot_token, what="Slack bot token")
    app_token = resolve(settings.slack.app_token, what="Slack app token") if settings.slack.app_token else ""
    # Socket Mode requests arrive on the bot's own authenticated WebSocket: nothing to verify a signature of
    signing_secret = "" if app_token else resolve(settings.slack.signing_secret, what="Slack signing secret")
    if not token.startswith("xoxb-"):
        raise ConfigError("The Slack bot token does not look like a bot token (xoxb-…).",
                          "Copy the Bot User OAuth Token from the app's OAuth & Permissions page into the secret store.")
    if app_token and not app_token.startswith("xapp-"):
        raise ConfigError("slack.app_token does not look like an app-level token (xapp-…).",
                          "Generate one under Basic Information → App-Level Tokens with the connections:write scope, "
                          "or leave slack.app_token empty to serve HTTP.")
    client = make_client(token, settings.slack.api_url)
    check_token(client)
    store = store or open_state(settings)
    announcer = SlackAnnouncer(client, store)
    runtime = create_runtime(settings, announcer, groups=GroupCache(client), store=store)
    runtime.outbox = announcer.outbox = Outbox(store, SlackDeliverer(client, store), runtime.lifecycle.owner,
                                               on_sent=on_sent(runtime.lifecycle))
    pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="migrate-bot-chat")
    app = build_app(settings, runtime, client, signing_secret, pool)
    return SlackBot(runtime=runtime, app=app, pool=pool, app_token=app_token)
