"""Ack latency: how fast the real bot acknowledges slash commands while validations run.

    .venv/bin/python bench/ack_latency.py [--commands 200] [--concurrency 20] [--migrations 120]

Slack gives an app 3 s to acknowledge a slash command; after that the user
sees "operation_timeout" whatever the bot does next. The bot acks in the
bolt listener and hands the work to its own pool, so acks should stay fast
even while long runs keep the process busy. This measures it, over real
HTTP with signed requests, against the real bot (``bot.app.create_slack_bot``
in HTTP mode) — nothing is mocked.

What runs in this one process (the bots' runs too, with ``threads``):

* two throwaway PostgreSQL clusters, "prod" and "staging" (``bot.devcluster``,
  127.0.0.1, in a temp dir that is always removed, also on error, Ctrl-C or
  SIGTERM), and the Slack Web API emulator (``tests/slack_emulator.py``);
* three real bots, each with its own state file and its own prod/staging
  database pair: one bot runs one validation at a time (staging is locked per
  run), so three validations at once need three environments;
* each validation applies ``--migrations`` migrations (create a table, fill
  it, index it, ``pg_sleep(0.05)``), so the bots' executor threads keep
  linting, tracing and talking to PostgreSQL and Slack throughout;
* the measured bot is bot 1, itself running one of the three validations.

Two scenarios, the same burst each time: ``--commands`` signed ``/migrate
status`` and ``/migrate history`` (alternating), ``--concurrency`` in flight
from as many threads. "idle" (no run anywhere) is the baseline; "3
validations running" starts the three validations, waits until all three are
``running``, then sends the burst. *ack* is the time to the HTTP response
(what the 3 s limit is about); *answer* is the time until the ephemeral reply
reached the response_url (what a person waits for; the goal is p99 < 1 s).

Both scenarios run twice, with new bots and databases each time: once with
runs in the bots' own process (``[runs] workers = "threads"``) and once with a
worker process per run (``"processes"``, the default), so the two ways are
compared within one run on one machine.

The machine is shared and noisy: figures are only compared within one run.
Nothing here asserts a timing; a bench prints.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.slack_emulator is not an installed package

from bench.benchlib import EXTENSIONS, arg_parser, machine, note, run_interruptible  # noqa: E402
from bot import config, devcluster  # noqa: E402
from bot.app import SlackBot, create_slack_bot  # noqa: E402
from bot.runs.model import Kind, State  # noqa: E402
from tests.fix_bot import bot_toml  # noqa: E402
from tests.fix_slack import BOT_TOKEN, REQUESTER, SIGNING_SECRET, default_workspace  # noqa: E402
from tests.slack_emulator import SlackEmulator, post_to_bot, signed_request, slash_command_body  # noqa: E402

PASSWORDS = {"prod": "bench-ack-prod-3Kq8", "staging": "bench-ack-stg-7Vn2"}
TEMPLATE = "ack_template"
BOTS = 3
WORKERS = ("threads", "processes")  # where runs work: the bot's own process, or a child per run (the default)
ACK_LIMIT_S = 3.0
WAIT_S = 600.0


# -- the environment -------------------------------------------------------------------------


def load_set(count: int) -> dict[str, str]:
    """A validation that keeps the bot busy: each migration creates, fills and indexes a table, then naps."""
    return {
        f"{i:04d}_bench_table_{i}.sql": (
            f"CREATE TABLE bench_{i} (id bigint PRIMARY KEY, v text);\n"
            f"INSERT INTO bench_{i} SELECT g, md5(g::text) FROM generate_series(1, 2000) g;\n"
            f"CREATE INDEX bench_{i}_v_idx ON bench_{i} (v);\n"
            "SELECT pg_sleep(0.05);\n"
        )
        for i in range(1, count + 1)
    }


def bench_toml(name: str, workdir: Path, workers: str) -> str:
    """The e2e tests' bot config, plus this bot's own databases, state file and way of running runs."""
    return bot_toml(workdir / "migrations", (
        "[databases]\n"
        f'prod = "env:BENCH_PROD_URL_{name}"\n'
        f'staging = "env:BENCH_STAGING_URL_{name}"\n'
        "[state]\n"
        f'path = "{(workdir / "state.db").as_posix()}"\n'
        "[runs]\n"
        f'workers = "{workers}"\n'
    ))


@dataclass
class Bench:
    base: Path
    migrations: int
    clusters: dict[str, devcluster.LocalCluster] = field(default_factory=dict)
    emulator: SlackEmulator | None = None
    bots: list[SlackBot] = field(default_factory=list)

    def url(self, i: int = 0) -> str:
        server = self.bots[i].server
        assert server is not None
        return f"http://127.0.0.1:{server.server_port}/slack/events"


def make_databases(bench: Bench) -> None:
    for env, cluster in bench.clusters.items():
        with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {TEMPLATE}")
        with psycopg.connect(cluster.url(TEMPLATE), autocommit=True) as conn:
            for ext in EXTENSIONS:
                conn.execute(f'CREATE EXTENSION IF NOT EXISTS "{ext}"')
            conn.execute("CREATE TABLE users (id bigserial PRIMARY KEY, email text)")
            conn.execute("INSERT INTO users (email) SELECT 'u' || g || '@example.com' FROM generate_series(1, 1000) g")
        with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
            for workers in WORKERS:
                for n in range(1, BOTS + 1):
                    conn.execute(f"CREATE DATABASE {workers}{n} TEMPLATE {TEMPLATE}")
                    os.environ[f"BENCH_{env.upper()}_URL_{workers}{n}"] = cluster.url(f"{workers}{n}")


def start_bots(bench: Bench, workers: str) -> None:
    """``BOTS`` bots whose runs work in ``workers`` (processes | threads), on databases of their own."""
    assert bench.emulator is not None
    os.environ.update(SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_SIGNING_SECRET=SIGNING_SECRET,
                      SLACK_API_URL=bench.emulator.base_url)
    for var in ("MIGRATE_BOT_CONFIG", "MIGRATE_BOT_STATE"):
        os.environ.pop(var, None)
    for n in range(1, BOTS + 1):
        workdir = bench.base / f"{workers}{n}"
        (workdir / "migrations").mkdir(parents=True)
        for name, text in load_set(bench.migrations).items():
            (workdir / "migrations" / name).write_text(text, encoding="utf-8")
        path = workdir / "migrate-bot.toml"
        path.write_text(bench_toml(f"{workers}{n}", workdir, workers), encoding="utf-8")
        bot = create_slack_bot(config.load(str(path)))
        bot.runtime.start()
        bot.serve_http("127.0.0.1", 0)
        bench.bots.append(bot)


# -- the burst -------------------------------------------------------------------------------


@dataclass
class Sample:
    response_id: str
    status: int
    ack_s: float
    sent_at: float  # wall clock, to compare with the emulator's record of the reply
    answer_s: float = math.nan


def send(bench: Bench, url: str, text: str, response_id: str) -> Sample:
    assert bench.emulator is not None
    body = slash_command_body("/migrate", text, user_id=REQUESTER,
                              response_url=bench.emulator.response_url(response_id))
    headers = signed_request(SIGNING_SECRET, body)
    sent_at, started = time.time(), time.perf_counter()
    status, _ = post_to_bot(url, body, headers, timeout=30)
    return Sample(response_id, status, time.perf_counter() - started, sent_at)


def burst(bench: Bench, label: str, commands: int, concurrency: int) -> list[Sample]:
    assert bench.emulator is not None
    url = bench.url(0)

    def one(i: int) -> Sample:
        return send(bench, url, "status" if i % 2 == 0 else "history", f"{label}-{i}")

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="bench-slack") as pool:
        samples = list(pool.map(one, range(commands)))
    ok = [s for s in samples if s.status == 200]
    replies = bench.emulator.wait_for("response_url", count=len(ok), timeout=WAIT_S,
                                      where=lambda c: str(c.args.get("response_id", "")).startswith(f"{label}-"))
    arrived = {c.args["response_id"]: c.at for c in replies}
    for sample in samples:
        if sample.response_id in arrived:
            sample.answer_s = arrived[sample.response_id] - sample.sent_at
    return samples


def start_validations(bench: Bench, label: str) -> list[str]:
    """``/migrate validate`` on every bot; wait until all are running. Returns the run ids."""
    for i in range(BOTS):
        send(bench, bench.url(i), "validate", f"{label}-validate-{i}")
    run_ids = []
    for bot in bench.bots:
        deadline = time.monotonic() + WAIT_S
        while True:
            run = bot.runtime.store.latest_run(Kind.VALIDATE)
            if run is not None and run.state is State.RUNNING:
                run_ids.append(run.id)
                break
            if run is not None and run.state.terminal or time.monotonic() > deadline:
                raise RuntimeError(f"a validation did not start running: {run}")
            time.sleep(0.02)
    return run_ids


# -- report ----------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(v for v in values if not math.isnan(v))
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:8.1f}"


def row(label: str, samples: list[Sample], concurrency: int) -> str:
    acks = [s.ack_s for s in samples if s.status == 200]
    answers = [s.answer_s for s in samples]
    failed = sum(s.status != 200 for s in samples)
    over = sum(a > ACK_LIMIT_S for a in acks)
    p99 = pct(acks, 99)
    worst = max(acks or [math.nan])
    return (f"{label:<34} {len(samples):>5} {concurrency:>6} {ms(pct(acks, 50))} {ms(p99)} {ms(worst)}"
            f"   {p99 / ACK_LIMIT_S * 100:6.2f} %  {over:>5} {failed:>5}"
            f"   {ms(pct(answers, 50))} {ms(pct(answers, 99))}")


def header_lines(args: argparse.Namespace, bench: Bench) -> None:
    with psycopg.connect(bench.clusters["prod"].url("postgres")) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
    print("# ack latency of /migrate over HTTP (signed requests, real bot, Slack emulator)")
    print(machine())
    print(f"- PostgreSQL {version}: throwaway prod + staging clusters on 127.0.0.1; {BOTS} bots, each with its own "
          "prod/staging database pair and state file")
    print(f"- burst: {args.commands} commands (`/migrate status`, `/migrate history` alternating), "
          f"{args.concurrency} in flight from {args.concurrency} threads, all to bot 1")
    print(f"- load: {BOTS} validations at once (bot 1 runs one of them), each applying {args.migrations} migrations "
          "(CREATE TABLE, INSERT 2000 rows, CREATE INDEX, pg_sleep(0.05)) on its own staging")
    print("- the same, once with runs in the bots' own process (`[runs] workers = \"threads\"`) and once in a "
          "worker process per run (`\"processes\"`, the default): new bots and databases for each")


@dataclass
class Scenario:
    """One way of running runs, measured: the idle burst, the loaded burst, and how the validations ended."""

    workers: str
    idle: list[Sample]
    loaded: list[Sample]
    burst_s: float
    still_running: int
    finished: list[str]


def measure(bench: Bench, workers: str, args: argparse.Namespace) -> Scenario:
    start_bots(bench, workers)
    try:
        note(f"{workers}: the burst with nothing running")
        idle = burst(bench, f"{workers}-idle", args.commands, args.concurrency)
        note(f"{workers}: starting {BOTS} validations")
        run_ids = start_validations(bench, workers)
        loaded_started = time.perf_counter()
        loaded = burst(bench, f"{workers}-loaded", args.commands, args.concurrency)
        burst_s = time.perf_counter() - loaded_started
        still = [bot.runtime.store.get_run(rid) for bot, rid in zip(bench.bots, run_ids)]
        still_running = sum(r is not None and r.state is State.RUNNING for r in still)
        note(f"{workers}: waiting for the validations to finish")
        for bot in bench.bots:
            bot.runtime.executor.wait(timeout=WAIT_S)
        finished = [f"{r.id} {r.state.value} — {r.summary}" for bot, rid in zip(bench.bots, run_ids)
                    if (r := bot.runtime.store.get_run(rid)) is not None]
    finally:
        for bot in bench.bots:
            bot.stop()
        bench.bots.clear()
    return Scenario(workers, idle, loaded, burst_s, still_running, finished)


def print_results(scenarios: list[Scenario], args: argparse.Namespace) -> None:
    print()
    print(f"{'scenario':<34} {'cmds':>5} {'flight':>6} {'ack p50':>8} {'ack p99':>8} {'ack max':>8}"
          f"   {'p99/3 s':>8}  {'>3 s':>5} {'!200':>5}   {'ans p50':>8} {'ans p99':>8}")
    print(f"{'':<34} {'':>5} {'':>6} {'ms':>8} {'ms':>8} {'ms':>8}   {'':>8}  {'':>5} {'':>5}"
          f"   {'ms':>8} {'ms':>8}")
    for sc in scenarios:
        print(row(f"{sc.workers}: idle (baseline)", sc.idle, args.concurrency))
        print(row(f"{sc.workers}: {BOTS} validations running", sc.loaded, args.concurrency))
    print()
    for sc in scenarios:
        answers = [s.answer_s for s in sc.loaded]
        print(f"- {sc.workers}: answer p99 under load {ms(pct(answers, 99)).strip()} ms (goal < 1000 ms); the loaded "
              f"burst took {sc.burst_s:.1f} s; validations still running when it ended: {sc.still_running}/{BOTS}")
        for n, line in enumerate(sc.finished, start=1):
            print(f"  - bot {n}: {line}")


def run(args: argparse.Namespace) -> None:
    bench = Bench(base=Path(tempfile.mkdtemp(prefix="mb-ack-bench-")), migrations=args.migrations)
    started = time.perf_counter()
    try:
        for env in ("prod", "staging"):
            note(f"starting the {env} cluster in {bench.base}")
            bench.clusters[env] = devcluster.create_cluster(bench.base, env, PASSWORDS[env])
        make_databases(bench)
        bench.emulator = default_workspace().start()
        header_lines(args, bench)
        scenarios = [measure(bench, workers, args) for workers in args.workers]
        print_results(scenarios, args)
        print(f"\n(bench wall time {time.perf_counter() - started:.0f} s)")
    finally:
        for bot in bench.bots:
            bot.stop()
        if bench.emulator is not None:
            bench.emulator.stop()
        note("removing the clusters")
        devcluster.remove(bench.base, list(bench.clusters.values()))


def main(argv: list[str] | None = None) -> int:
    parser = arg_parser(__doc__, ".venv/bin/python bench/ack_latency.py --commands 200")
    parser.add_argument("--commands", type=int, default=200, help="slash commands per scenario (default 200)")
    parser.add_argument("--concurrency", type=int, default=20, help="commands in flight at once (default 20)")
    parser.add_argument("--migrations", type=int, default=120,
                        help="migrations per validation; more = longer validations (default 120)")
    parser.add_argument("--workers", choices=WORKERS, action="append",
                        help="measure only this way of running runs (repeatable; default: both)")
    args = parser.parse_args(argv)
    if args.commands < 1 or args.concurrency < 1 or args.migrations < 1:
        parser.error("--commands, --concurrency and --migrations must be at least 1")
    args.workers = args.workers or list(WORKERS)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    return run_interruptible(lambda: run(args), "the bots and clusters were stopped and their directory removed")


if __name__ == "__main__":
    sys.exit(main())
