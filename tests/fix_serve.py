"""Real `migrate-bot serve` processes for tests: started, spoken to over signed HTTP, killed, started again.

Each process writes stderr to a file (a full pipe can never stall it) and
shares the test's state file, so a test can kill one with SIGKILL and start
the next on what it left. ``Scenario`` holds the databases, the emulator and
the processes of one test, and reads what a person would: the thread in the
emulator, prod's history, the state file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

from bot.runs.model import Kind, Run, State
from bot.runs.store import StateStore
from bot.runs.store.postgres import PostgresStore
from bot.runs.store.sqlite import SqliteStore
from tests.fix_bot import USERS_AND_ORDERS, bot_toml, wait_until
from tests.fix_pg import Databases, write_migrations
from tests.fix_slack import APPROVER1, BOT_TOKEN, DEPLOYS, REQUESTER, SIGNING_SECRET
from tests.slack_emulator import (
    SlackEmulator,
    event_body,
    post_to_bot,
    reaction_event,
    signed_request,
    slash_command_body,
)

ONE = {"0001_coupons.sql": "CREATE TABLE coupons (id bigint PRIMARY KEY, code text);\n"}
WAIT_S = 120.0
_ids = iter(range(1, 10**6))


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def window(start: datetime, seconds: float) -> str:
    end = start + timedelta(seconds=seconds)
    return f"daily {start:%H:%M:%S}-{end:%H:%M:%S} UTC"


@dataclass
class Serve:
    """One `migrate-bot serve` process; its stderr goes to a file so a full pipe can never stall it."""

    workdir: Path
    emulator: SlackEmulator
    config: Path
    name: str
    state_url: str = ""  # a PostgreSQL state store shared by replicas; "" = the sqlite file in workdir
    process: subprocess.Popen = field(init=False)
    url: str = field(init=False, default="")

    def __post_init__(self) -> None:
        env = {**os.environ, "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET,
               "SLACK_API_URL": self.emulator.base_url, "MIGRATE_BOT_STATE": str(self.workdir / "state.db"),
               "PYTHONUNBUFFERED": "1", "STATE_DATABASE_URL": self.state_url}
        self.log = self.workdir / f"{self.name}.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "serve", "--config", str(self.config), "--host", "127.0.0.1",
             "--port", "0"], stderr=self.log.open("w"), stdout=subprocess.DEVNULL, env=env)
        first = wait_until(self._ready, f"{self.name} to listen", 60)
        self.url = first.split(" listening on ")[1].split(" ")[0]

    def _ready(self) -> str | None:
        if self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited {self.process.returncode}: {self.log.read_text()}")
        lines = self.log.read_text().splitlines()
        return next((line for line in lines if " listening on " in line), None)

    def command(self, text: str, user: str = REQUESTER) -> str:
        """Send ``/migrate <text>``; the id its answer arrives under (``Scenario.answer``)."""
        response_id = f"{self.name}-{next(_ids)}"
        body = slash_command_body("/migrate", text, user_id=user, channel_id=DEPLOYS,
                                  response_url=self.emulator.response_url(response_id))
        assert post_to_bot(self.url, body, signed_request(SIGNING_SECRET, body))[0] == 200
        return response_id

    def react(self, ts: str, user: str, added: bool = True) -> None:
        if added:
            self.emulator.add_reaction(DEPLOYS, ts, "white_check_mark", user)
        kind = "reaction_added" if added else "reaction_removed"
        body = event_body(reaction_event(kind, user=user, reaction="white_check_mark", ts=ts, channel=DEPLOYS),
                          f"Ev{next(_ids):08d}")
        assert post_to_bot(self.url, body, signed_request(SIGNING_SECRET, body))[0] == 200

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye — leases and the job are left as a crash leaves them."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()


@dataclass
class Scenario:
    dbs: Databases
    emulator: SlackEmulator
    workdir: Path
    served: list[Serve] = field(default_factory=list)
    state_url: str = ""
    _pg: Any = None

    def configure(self, windows: list[str], extra: str = "") -> Path:
        config = self.workdir / "bot.toml"
        deploy = ("[deploy]\n" + f"windows = [{', '.join(repr(w).replace(chr(39), chr(34)) for w in windows)}]\n"
                  "estimate_floor_s = 1.0\ntraffic_sample_minutes = 0\n" + extra)
        if self.state_url:
            deploy += '[state]\nurl = "env:STATE_DATABASE_URL"\n'
        deploy += "[digest]\nsnapshot_minutes = 0\n"
        config.write_text(bot_toml(self.workdir / "migrations", deploy), encoding="utf-8")
        return config

    def serve(self) -> Serve:
        self.served.append(Serve(self.workdir, self.emulator, self.workdir / "bot.toml", f"serve{len(self.served) + 1}",
                                 state_url=self.state_url))
        return self.served[-1]

    @property
    def store(self) -> StateStore:
        if self.state_url:
            if self._pg is None:
                self._pg = PostgresStore(self.state_url)
            return self._pg
        return SqliteStore(self.workdir / "state.db")

    def run(self, run_id: str) -> Run:
        run = self.store.get_run(run_id)
        assert run is not None
        return run

    def wait_run(self, run_id: str, *states: State, timeout: float = WAIT_S) -> Run:
        def found() -> Run | None:
            run = self.store.get_run(run_id)
            return run if run and run.state in states else None

        return wait_until(found, f"{run_id} to be {'/'.join(s.value for s in states)}", timeout)

    def approved_deploy(self, serve: Serve) -> Run:
        """/migrate validate, wait for its deploy, an approver's reaction, and the schedule in the thread."""
        serve.command("validate")
        deploy = wait_until(lambda: (run := self.store.latest_run(Kind.DEPLOY)) and run.thread_ts and run,
                            "the validation to offer a deploy in its thread", WAIT_S)
        serve.react(deploy.thread_ts, APPROVER1)
        wait_until(lambda: self.run(deploy.id).scheduled_for, "the deploy to be scheduled", WAIT_S)
        return self.run(deploy.id)

    def answer(self, response_id: str, timeout: float = WAIT_S) -> str:
        """The text the bot answered a command with (to the person, over its response_url)."""
        def found() -> str | None:
            calls = [c for c in self.emulator.calls("response_url") if c.args.get("response_id") == response_id]
            return str(calls[0].args.get("text", "")) if calls else None

        return wait_until(found, f"the answer to {response_id}", timeout)

    def thread(self, run: Run) -> list[str]:
        return [m.text for m in self.emulator.thread(DEPLOYS, run.thread_ts)]

    def wait_reply(self, run: Run, starts: str, timeout: float = WAIT_S) -> str:
        return wait_until(lambda: next((t for t in self.thread(run) if t.startswith(starts)), None),
                          f"a reply starting {starts!r} in {run.id}'s thread", timeout)

    def applied(self) -> list[str]:
        if self.dbs.sql("prod", "SELECT to_regclass('migrate_bot.schema_migrations')") == [(None,)]:
            return []
        return [v for (v,) in self.dbs.sql("prod", "SELECT version FROM migrate_bot.schema_migrations ORDER BY 1")]


@pytest.fixture
def scenario(bot_env: Databases, slack_emulator: SlackEmulator, workdir: Path) -> Iterator[Scenario]:
    bot_env.both(USERS_AND_ORDERS)
    write_migrations(workdir / "migrations", ONE)
    made = Scenario(bot_env, slack_emulator, workdir)
    yield made
    for serve in made.served:
        serve.stop()


@pytest.fixture
def replicas(scenario: Scenario, pg_clusters: Any) -> Iterator[Scenario]:
    """The same scenario with a PostgreSQL state store that several serve processes share."""
    from tests.unit.test_state_store import state_database

    with state_database(pg_clusters) as url:
        scenario.state_url = url
        yield scenario
        for serve in scenario.served:
            serve.stop()
        if scenario._pg is not None:
            scenario._pg.close()
