"""pytest plugin: the REAL bot in HTTP mode, talking to the Slack emulator over real sockets.

What it starts, per test: the composition root (``bot.app.create_slack_bot``)
with settings read from a TOML file written into the test's workdir (secret
*references* for the Slack credentials, ``SLACK_API_URL`` pointing at the
emulator), ``runtime.start()`` as ``migrate-bot serve`` does, and the
threaded HTTP endpoint on 127.0.0.1 with a kernel-chosen port. Tests drive it
the way Slack does — signed POSTs of slash commands, events and block
actions — through a small ``BotDriver``; they observe it through the
emulator (what the bot sent) and the bot's state store.

Depends on ``tests.fix_pg`` (``bot_env``: real prod + staging databases) and
``tests.fix_slack`` (``slack_emulator``), both loaded by ``addopts``.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import psycopg
import pytest

from bot import config
from bot.app import SlackBot, create_slack_bot
from bot.runs.model import Kind, Run, State
from bot.runs.runtime import Runtime
from bot.runs.store import StateStore
from bot.runs.store.sqlite import SqliteStore
from tests.fix_pg import Databases, write_migrations
from tests.fix_slack import APP_TOKEN, BOT_TOKEN, DBA_GROUP, DEPLOYS, REQUESTER, SIGNING_SECRET
from tests.slack_emulator import (
    Call,
    SlackEmulator,
    block_action_body,
    event_body,
    message_event,
    post_to_bot,
    reaction_event,
    signed_request,
    slash_command_body,
)
from tests.slack_socket import form_payload, interactive_payload

WAIT_S = 60.0  # the longest any helper waits for the bot; a deadline, never a sleep
APPROVE = "white_check_mark"  # the default approve reaction (slack.approve_reaction)
_event_ids = itertools.count(1)

# -- the scenario: users and their orders, and an FK added the runbook's way ----------------------
USERS_AND_ORDERS = (
    "CREATE TABLE users (id bigserial PRIMARY KEY, email text);\n"
    "INSERT INTO users (email) SELECT 'u' || g || '@example.com' FROM generate_series(1, 200) g;\n"
    "CREATE TABLE orders (id bigserial PRIMARY KEY, user_id bigint, total numeric);\n"
    "INSERT INTO orders (user_id, total) SELECT 1 + g % 200, g FROM generate_series(1, 500) g;\n"
)
ORPHANED_ORDERS = "INSERT INTO orders (user_id, total) VALUES (99999, 1), (88888, 2);\n"
ONE_TABLE_FOR_METRICS = {"0001_metrics.sql": "CREATE TABLE metric_things (id bigint PRIMARY KEY);\n"}
FK_SET = {
    "0001_orders_user_idx.sql": "CREATE INDEX CONCURRENTLY orders_user_id_idx ON orders (user_id);\n",
    "0002_orders_user_fk.sql":
        "ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID;\n",
    "0003_orders_user_fk_validate.sql": "ALTER TABLE orders VALIDATE CONSTRAINT orders_user_fk;\n",
}


def bot_toml(migrations_dir: Path, extra: str = "", *, socket_mode: bool = False) -> str:
    """The bot's config file: secret references only, approvers = the DBA user group."""
    return (
        "# written by tests/fix_bot.py\n"
        "[slack]\n"
        'bot_token = "env:SLACK_BOT_TOKEN"\n'
        'signing_secret = "env:SLACK_SIGNING_SECRET"\n'
        + ('app_token = "env:SLACK_APP_TOKEN"\n' if socket_mode else "") +
        "[policy]\n"
        f'approvers = ["{DBA_GROUP}"]\n'
        "[migrations]\n"
        f'dir = "{migrations_dir.as_posix()}"\n'
        + extra
    )


@dataclass(frozen=True)
class Sent:
    """One request the driver POSTed to the bot: Slack's view of the answer."""

    status: int
    body: str
    elapsed_s: float  # time to the HTTP response (the ack); measured, never asserted
    response_id: str = ""  # the response_url id of a slash command / block action


class _Tracker:
    """Remembers the futures an executor was handed, so ``wait_idle`` can wait for them.

    Wraps ``submit`` on the instance (the bolt listener pool and the bot's chat
    pool are plain ThreadPoolExecutors captured in closures we cannot reach).
    """

    def __init__(self, executor: Executor) -> None:
        self._futures: list[Future] = []
        self._lock = threading.Lock()
        original = executor.submit

        def submit(fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
            future = original(fn, *args, **kwargs)
            with self._lock:
                self._futures.append(future)
            return future

        executor.submit = submit  # type: ignore[method-assign]

    def pending(self) -> list[Future]:
        with self._lock:
            self._futures = [f for f in self._futures if not f.done()]
            return list(self._futures)


class BotDriver:
    """Plays Slack towards the real bot (signed HTTP) and reads what came back."""

    def __init__(self, emulator: SlackEmulator, settings_path: Path, dbs: Databases) -> None:
        self.emulator = emulator
        self.settings_path = settings_path
        self.dbs = dbs
        self.bot: SlackBot = self._start()
        self.retired: list[SlackBot] = []

    # -- lifecycle -------------------------------------------------------------------
    def _start(self) -> SlackBot:
        settings = config.load(str(self.settings_path))
        bot = create_slack_bot(settings)
        self._trackers = [_Tracker(bot.pool), _Tracker(bot.app.listener_runner.listener_executor)]
        bot.runtime.start()  # what `migrate-bot serve` does before it listens
        try:
            if bot.app_token:
                bot.connect_socket_mode()
                self._trackers.append(_Tracker(bot.socket.client.message_workers))
            else:
                bot.serve_http("127.0.0.1", 0)
        except BaseException:
            bot.stop()  # as `serve` does when it cannot listen: no thread outlives the refusal
            raise
        return bot

    @property
    def socket_mode(self) -> bool:
        return bool(self.bot.app_token)

    @property
    def url(self) -> str:
        assert self.bot.server is not None
        return f"http://127.0.0.1:{self.bot.server.server_port}/slack/events"

    @property
    def runtime(self) -> Runtime:
        return self.bot.runtime

    @property
    def store(self) -> StateStore:
        return self.bot.runtime.store

    def restart(self) -> None:
        """The process dies mid-work and a new one starts on the same state file.

        Python cannot kill a thread, so the old bot is made inert instead: its
        HTTP endpoint closes, its runtime stops without a clean goodbye (no
        heartbeat any more, leases left to lapse, as after a kill), it loses
        the shared state store and its Slack voice (what a dead process no
        longer has), and its database sessions are terminated — as a crash
        drops them, releasing advisory locks and rolling back open
        transactions. Then a new bot is built on the same state file, starts
        (recovering the dead one's runs) and listens on a new port.
        """
        old = self.bot
        if old.server:
            old.server.shutdown()
            old.server.server_close()
        if old.socket:
            old.socket.close()
        old.pool.shutdown(wait=False, cancel_futures=True)
        old.runtime.stop(wait=False)
        old.runtime.store = SqliteStore(":memory:")
        old.runtime.announcer = _Silent()
        old.runtime.lifecycle.store = old.runtime.store
        old.runtime.lifecycle.announcer = old.runtime.announcer
        self._terminate_sessions()
        self.retired.append(old)
        self.bot = self._start()

    def _terminate_sessions(self) -> None:
        for cluster in (self.dbs.clusters.prod, self.dbs.clusters.staging):
            with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE datname = %s AND application_name LIKE 'migrate-bot%%' AND pid <> pg_backend_pid()",
                             (self.dbs.name,))

    def stop(self) -> None:
        self.wait_idle(timeout=WAIT_S, strict=False)
        self.bot.stop()
        for old in self.retired:
            old.runtime.executor.wait(timeout=WAIT_S)

    # -- Slack -> bot ------------------------------------------------------------------
    def post(self, body: bytes, *, timestamp: int | None = None, secret: str = SIGNING_SECRET,
             headers: dict[str, str] | None = None) -> Sent:
        """POST a body signed like Slack signs it (or not, with another ``secret``/``timestamp``)."""
        all_headers = {**signed_request(secret, body, timestamp), **(headers or {})}
        started = time.perf_counter()
        status, text = post_to_bot(self.url, body, all_headers)
        return Sent(status, text, time.perf_counter() - started)

    def deliver(self, kind: str, body: bytes, **post: Any) -> Sent:
        """Slack -> bot the way this bot listens: a signed HTTP POST, or an envelope on its WebSocket.

        ``kind`` is the Socket Mode envelope type (slash_commands, events_api,
        interactive); ``body`` is what HTTP mode would POST. In Socket Mode
        the answer is the bot's ack of the envelope (status 200 once acked).
        """
        if not self.socket_mode:
            return self.post(body, **post)
        decode = {"slash_commands": form_payload, "interactive": interactive_payload, "events_api": json.loads}[kind]
        hub = self.emulator.socket_mode
        started = time.perf_counter()
        ack = hub.wait_ack(hub.send(kind, decode(body)))
        return Sent(200, json.dumps(ack.get("payload") or {}), time.perf_counter() - started)

    def command(self, text: str, user: str = REQUESTER, channel: str = DEPLOYS, **post: Any) -> Sent:
        """``/migrate <text>`` as ``user``; the ephemeral answer arrives on its own response_url."""
        response_id = f"cmd{next(_event_ids)}"
        body = slash_command_body("/migrate", text, user_id=user, channel_id=channel,
                                  response_url=self.emulator.response_url(response_id))
        sent = self.deliver("slash_commands", body, **post)
        return Sent(sent.status, sent.body, sent.elapsed_s, response_id)

    def event(self, event: dict[str, Any], event_id: str | None = None, *, retry_num: int | None = None,
              **post: Any) -> Sent:
        """An Events API delivery; ``retry_num`` adds Slack's redelivery headers."""
        headers = dict(post.pop("headers", None) or {})
        if retry_num is not None:
            headers.update({"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "http_timeout"})
        body = event_body(event, event_id or f"Ev{next(_event_ids):08d}")
        return self.deliver("events_api", body, headers=headers, **post)

    def react(self, ts: str, reaction: str, user: str, added: bool = True, *, channel: str = DEPLOYS,
              event_id: str | None = None, retry_num: int | None = None) -> Sent:
        """A person adds (or removes) ``:reaction:`` on the message ``ts``."""
        if added:
            self.emulator.add_reaction(channel, ts, reaction, user)
        kind = "reaction_added" if added else "reaction_removed"
        event = reaction_event(kind, user=user, reaction=reaction, ts=ts, channel=channel)
        return self.event(event, event_id, retry_num=retry_num)

    def say(self, text: str, user: str = REQUESTER, channel: str = DEPLOYS, **kw: Any) -> tuple[Sent, str]:
        """A person posts ``text`` in the channel: into the emulator's model, and as a message event."""
        message = self.emulator.post_user_message(channel, text, user)
        return self.event(message_event(text, user=user, channel=channel, ts=message.ts, **kw)), message.ts

    def click(self, action_id: str, value: str, user: str, message_ts: str, channel: str = DEPLOYS) -> Sent:
        """A button press (block_actions) on the message ``message_ts``."""
        response_id = f"act{next(_event_ids)}"
        body = block_action_body(action_id, value, user=user, channel=channel, message_ts=message_ts,
                                 response_url=self.emulator.response_url(response_id))
        sent = self.deliver("interactive", body)
        return Sent(sent.status, sent.body, sent.elapsed_s, response_id)

    # -- the scenario ---------------------------------------------------------------------
    def write_migrations(self, files: dict[str, str]) -> Path:
        """(Re)write the migration set the bot reads (settings.migrations.dir)."""
        root = Path(self.runtime.settings.migrations.dir)
        for old in root.glob("*.sql"):
            old.unlink()
        return write_migrations(root, files)

    def validate(self, user: str = REQUESTER) -> Run:
        """``/migrate validate`` and wait for it to finish; the finished validation run."""
        sent = self.command("validate", user=user)
        assert sent.status == 200, sent
        started = self.reply(sent)
        assert started.startswith("Started r-"), started
        self.wait_idle()
        return self.store.get_run(started.split()[1].rstrip(":"))  # type: ignore[return-value]

    def deploy_awaiting_approval(self) -> tuple[Run, Run]:
        """Seed both databases (no orphans), validate FK_SET; (validation, deploy) with the deploy awaiting approval."""
        self.dbs.both(USERS_AND_ORDERS)
        self.write_migrations(FK_SET)
        validation = self.validate()
        assert validation.state is State.PASSED, validation.summary
        deploy = self.latest(Kind.DEPLOY)
        assert deploy.state is State.AWAITING_APPROVAL and deploy.parent == validation.id
        return validation, deploy

    # -- waiting and reading -----------------------------------------------------------
    def reply(self, sent: Sent, timeout: float = WAIT_S) -> str:
        """The text the bot posted to ``sent``'s response_url (the ephemeral answer)."""
        calls = self.emulator.wait_for("response_url", timeout=timeout,
                                       where=lambda c: c.args.get("response_id") == sent.response_id)
        return str(calls[0].args.get("text", ""))

    def wait_idle(self, timeout: float = WAIT_S, *, strict: bool = True) -> None:
        """Wait until bolt's listeners, the chat pool, the run executor and the outbox have nothing left to do."""
        deadline = time.monotonic() + timeout
        quiet_rounds = 0
        while quiet_rounds < 2:  # twice in a row: work hands work on (listener -> pool -> executor)
            if time.monotonic() > deadline:
                if strict:
                    raise TimeoutError(f"the bot was still busy after {timeout}s")
                return
            pending = [f for t in self._trackers for f in t.pending()]
            for future in pending:
                try:
                    future.result(timeout=max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    break
                except Exception:  # noqa: BLE001 - a listener's own error is the test's to find, not ours
                    pass
            idle = self.runtime.executor.wait(timeout=max(0.0, deadline - time.monotonic()))
            delivered = self.runtime.outbox.wait_empty(max(0.0, deadline - time.monotonic()))
            quiet_rounds = quiet_rounds + 1 if not pending and idle and delivered else 0

    def wait_run(self, run_id: str, *states: State, timeout: float = WAIT_S) -> Run:
        """Poll the state store until ``run_id`` is in one of ``states``."""
        def found() -> Run | None:
            run = self.store.get_run(run_id)
            return run if run is not None and run.state in states else None

        return wait_until(found, f"{run_id} to be {'/'.join(s.value for s in states)}", timeout)

    def latest(self, kind: Kind) -> Run:
        run = self.store.latest_run(kind)
        assert run is not None, f"no {kind.value} run in the state store"
        return run

    def thread_texts(self, ts: str, channel: str = DEPLOYS) -> list[str]:
        """The fallback text of every reply in the thread under ``ts``."""
        return [m.text for m in self.emulator.thread(channel, ts)]

    def wait_thread_text(self, ts: str, text: str, channel: str = DEPLOYS, timeout: float = WAIT_S) -> None:
        """Block until a reply in the thread under ``ts`` says exactly ``text``."""
        self.emulator.wait_for("chat.postMessage", timeout=timeout,
                               where=lambda c: c.args.get("thread_ts") == ts and c.args.get("text") == text)

    def calls_since(self, mark: int) -> list[Call]:
        return [c for c in self.emulator.calls() if c.seq > mark]

    def mark(self) -> int:
        calls = self.emulator.calls()
        return calls[-1].seq if calls else 0


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    """Poll ``predicate`` until it returns something truthy (and return that), or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout}s for {what}")
        time.sleep(0.02)
    return value


class _Silent:
    """The voice of a dead process: says nothing."""

    def run_started(self, run: Run) -> str:
        return ""

    def run_updated(self, run: Run) -> None:
        return None

    def say(self, run: Run, text: str, *, remember: str = "") -> None:
        return None

    def report(self, run: Run, report: Any) -> None:
        return None

    def thread_link(self, run: Run) -> str:
        return ""

    def post(self, channel: str, text: str) -> None:
        return None

    def digest(self, channel: str, digest: Any, chart: bytes | None) -> None:
        return None


@dataclass
class BotFactory:
    """``make_bot(extra_toml)``: start the real bot; every bot started is stopped after the test."""

    emulator: SlackEmulator
    dbs: Databases
    workdir: Path
    started: list[BotDriver] = field(default_factory=list)

    def __call__(self, extra_toml: str = "", *, socket_mode: bool = False) -> BotDriver:
        path = self.workdir / f"migrate-bot-{len(self.started) + 1}.toml"
        path.write_text(bot_toml(self.workdir / "migrations", extra_toml, socket_mode=socket_mode), encoding="utf-8")
        (self.workdir / "migrations").mkdir(exist_ok=True)
        driver = BotDriver(self.emulator, path, self.dbs)
        self.started.append(driver)
        return driver


@pytest.fixture
def make_bot(bot_env: Databases, slack_emulator: SlackEmulator, workdir: Path,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[BotFactory]:
    """A factory for real bots in HTTP mode against the emulator (for tests that need extra config)."""
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SIGNING_SECRET)
    monkeypatch.setenv("SLACK_APP_TOKEN", APP_TOKEN)  # read only by bots made with socket_mode=True
    monkeypatch.setenv("SLACK_API_URL", slack_emulator.base_url)
    factory = BotFactory(slack_emulator, bot_env, workdir)
    try:
        yield factory
    finally:
        for driver in factory.started:
            driver.stop()


@pytest.fixture
def slack_bot(make_bot: BotFactory) -> BotDriver:
    """The real bot with the default test config, listening on 127.0.0.1."""
    return make_bot()


def pytest_report_header(config: pytest.Config) -> str:
    return "bot: the real migrate-bot (bolt over HTTP) per e2e test, on 127.0.0.1 with a kernel-chosen port"
