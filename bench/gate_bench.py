"""Gate bench: what `migrate-bot` costs, and what it saves, against plain `psql -f`.

    .venv/bin/python bench/gate_bench.py [--rows 1000000]

Starts its own throwaway prod + staging clusters (``bot.devcluster``, in a temp
dir that is always removed, also on error, Ctrl-C or SIGTERM), seeds
``users`` + ``orders`` (--rows) once per cluster into a template database, and
measures in one run, every side on a fresh ``CREATE DATABASE … TEMPLATE``
copy of the same data:

1. Gate overhead: ``migrate-bot validate`` (a subprocess; it applies the set on
   staging, with whatever pre-checks and tracing the gate does) vs ``psql -v
   ON_ERROR_STOP=1 -f`` per file on the same cluster. 3 repeats, alternating
   order; medians and the ratio ours/psql.
2. Lock queue: while a long transaction holds ACCESS SHARE on ``orders`` for
   25 s and 4 application threads query it, ``ALTER TABLE orders ADD COLUMN
   note text`` is deployed by ``migrate-bot deploy`` with the default lock
   settings (lock_timeout from 100 ms growing towards ``gate.lock_timeout_s``
   over ``gate.lock_wait_s``, jittered pauses) vs by ``psql -f`` (no
   lock_timeout). The application's worst stall and p99, and how soon after the
   reader's end the ALTER is done, are the result.

The machine is shared and noisy: figures are only compared within one run.
Nothing here asserts a timing; a bench prints.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `bench.benchlib`, also when run as a script

import psycopg  # noqa: E402

from bench.benchlib import (EXTENSIONS, Children, Clusters, alternating, arg_parser, clean_env, machine, migrate_bot,  # noqa: E402
                            note, run_interruptible, seed_template, write_files)
from bot import devcluster  # noqa: E402

PASSWORDS = {"prod": "bench-prod-9Qx2", "staging": "bench-stg-4Lm7"}
TEMPLATE = "seeded"
REPEATS = 3
LOCK_TIMEOUT_S = 0.5
LOCK_RETRIES = 8
APP_THREADS = 4
READER_AT_S = 1.0  # the long reader begins this long into the window…
READER_HOLD_S = 25.0  # …and keeps its transaction open this long (issue 11: "a 25 s reader")
WINDOW_S = READER_AT_S + READER_HOLD_S + 6.0  # app load window of each lock-queue scenario
STALL_GOAL_S = 0.5  # issue 11: the worst app stall a deploy may cause with default settings

GATE_SET = {
    "0001_orders_add_coupon_code.sql": "ALTER TABLE orders ADD COLUMN coupon_code text;\n",
    "0002_orders_user_id_index.sql":
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_user_id_idx ON orders (user_id);\n",
    "0003_orders_constraints_not_valid.sql":
        "ALTER TABLE orders ADD CONSTRAINT orders_user_id_fkey\n"
        "    FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID;\n"
        "ALTER TABLE orders ADD CONSTRAINT orders_total_nonnegative CHECK (total >= 0) NOT VALID;\n",
    "0004_orders_constraints_validate.sql":
        "ALTER TABLE orders VALIDATE CONSTRAINT orders_user_id_fkey;\n"
        "ALTER TABLE orders VALIDATE CONSTRAINT orders_total_nonnegative;\n",
}
NOTE_SET = {"0001_orders_add_note.sql": "ALTER TABLE orders ADD COLUMN note text;\n"}

CONFIG = f"""\
# written by bench/gate_bench.py
[gate]
lock_timeout_s = {LOCK_TIMEOUT_S}
lock_retries = {LOCK_RETRIES}
required_extensions = {list(EXTENSIONS)!r}
"""
# Part 2 deploys with the default lock settings. `lock_retries = 0` is the proposed new default (no count
# limit: gate.lock_wait_s bounds the wait); written out while config.Gate still defaults it to 5.
DEFAULTS_CONFIG = f"""\
# written by bench/gate_bench.py: the default lock settings
[gate]
lock_retries = 0
perf_queries = 0
required_extensions = {list(EXTENSIONS)!r}
"""

SEED_SQL = [
    "CREATE TABLE users (id bigserial, email text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())",
    """INSERT INTO users (email, created_at)
       SELECT 'user' || g || '@example.com', now() - g * interval '1 minute' FROM generate_series(1, {users}) g""",
    "ALTER TABLE users ADD PRIMARY KEY (id)",
    """CREATE TABLE orders (id bigserial, user_id bigint NOT NULL, status text NOT NULL,
                            total numeric(12, 2) NOT NULL, created_at timestamptz NOT NULL DEFAULT now())""",
    """INSERT INTO orders (user_id, status, total, created_at)
       SELECT 1 + (g * 7919) % {users}, (ARRAY['new', 'paid', 'shipped', 'delivered', 'refunded'])[1 + g % 5],
              round(((g * 37) % 50000) / 100.0, 2), now() - (g % 525600) * interval '1 minute'
       FROM generate_series(1::bigint, {rows}) g""",
    "ALTER TABLE orders ADD PRIMARY KEY (id)",
    "VACUUM (ANALYZE) users",
    "VACUUM (ANALYZE) orders",
]

children = Children()  # still running when we stop = killed in the finally
_stop = threading.Event()  # set on the way out: every loop and wait ends


# -- clusters and databases ----------------------------------------------------

@dataclass(kw_only=True)
class Bench(Clusters):
    rows: int


def seed(cluster: devcluster.LocalCluster, rows: int) -> None:
    seed_template(cluster, TEMPLATE, (statement.format(rows=rows, users=max(1000, rows // 10))
                                      for statement in SEED_SQL))


def server_facts(bench: Bench) -> tuple[str, str]:
    with psycopg.connect(bench.url("prod", TEMPLATE)) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        size = conn.execute("SELECT pg_size_pretty(pg_total_relation_size('orders'))").fetchone()[0]
    return version, size


# -- running the two tools -----------------------------------------------------

def bot_env(bench: Bench, prod_db: str, staging_db: str, *, deploy: bool = False,
            config: str = "migrate-bot.toml") -> dict[str, str]:
    env = clean_env()
    env.update(MIGRATE_BOT_CONFIG=str(bench.workdir / config),
               MIGRATE_BOT_STATE=str(bench.workdir / "state.db"),
               PROD_DATABASE_URL=bench.url("prod", prod_db), STAGING_DATABASE_URL=bench.url("staging", staging_db))
    if deploy:
        env["STAGING_VALIDATION_PASSED"] = "true"
    return env


def run_bot(bench: Bench, command: str, migrations: Path, prod_db: str, staging_db: str,
            *extra: str, config: str = "migrate-bot.toml") -> tuple[float, int, str]:
    """`migrate-bot <command> --migrations DIR` as a subprocess: (seconds, exit code, output)."""
    env = bot_env(bench, prod_db, staging_db, deploy=command == "deploy", config=config)
    cmd = [migrate_bot(), command, "--migrations", str(migrations), *extra]
    started = time.perf_counter()
    code, out = children.finish(children.start(cmd, env, bench.workdir))
    return time.perf_counter() - started, code, out


def psql_cmd(bench: Bench, env_name: str, dbname: str, path: Path) -> tuple[list[str], dict[str, str]]:
    cluster = bench.started[env_name]
    conninfo = f"host=127.0.0.1 port={cluster.port} user={cluster.user} dbname={dbname}"
    env = dict(clean_env(), PGPASSWORD=cluster.password)
    return [str(devcluster.bindir() / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-f", str(path)], env


def run_psql_set(bench: Bench, env_name: str, dbname: str, migrations: Path) -> tuple[float, int, str]:
    """`psql -f` per file, in order, stopping at the first failure: (seconds, exit code, output)."""
    started = time.perf_counter()
    code, out = 0, ""
    for path in sorted(migrations.glob("*.sql")):
        cmd, env = psql_cmd(bench, env_name, dbname, path)
        code, text = children.finish(children.start(cmd, env, bench.workdir))
        out += text
        if code:
            break
    return time.perf_counter() - started, code, out


def summary_line(out: str) -> str:
    found = [line for line in out.splitlines() if line.startswith("RESULT ")]
    return found[-1] if found else (out.strip().splitlines() or ["(no output)"])[-1]


def notable_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(("FAILED", "BLOCKER", "WARNING", "error:"))]


# -- part 1: gate overhead -----------------------------------------------------

@dataclass
class GateRun:
    side: str  # "ours" | "psql"
    seconds: float
    code: int
    output: str
    applying: float = float("nan")  # ours: the migrations' own seconds, from the gate's JSON report


def applying_seconds(report_path: Path) -> float:
    """Sum of the gate's per-migration apply times (its `migration.*` checks)."""
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return float("nan")
    found = [c["details"].get("seconds") for c in report.get("checks", []) if c["name"].startswith("migration.")]
    return sum(found) if found and None not in found else float("nan")


def gate_once(bench: Bench, migrations: Path, side: str) -> GateRun:
    if side == "ours":
        prod_db, staging_db = bench.fresh("prod", "p1_prod"), bench.fresh("staging", "p1_ours")
        report = bench.workdir / f"{staging_db}.json"
        try:
            seconds, code, out = run_bot(bench, "validate", migrations, prod_db, staging_db, "--json", str(report))
            return GateRun(side, seconds, code, out, applying_seconds(report))
        finally:
            bench.drop("prod", prod_db)
            bench.drop("staging", staging_db)
    dbname = bench.fresh("staging", "p1_psql")
    try:
        return GateRun(side, *run_psql_set(bench, "staging", dbname, migrations))
    finally:
        bench.drop("staging", dbname)


def part1(bench: Bench) -> None:
    migrations = write_files(bench.workdir / "gate_set", GATE_SET)
    def once(rep: int, side: str) -> GateRun:
        note(f"part 1 run {rep + 1}/{REPEATS}: {'migrate-bot validate' if side == 'ours' else 'psql -f'}")
        return gate_once(bench, migrations, side)

    # (ours, psql) per repeat
    print_part1(migrations, [(done["ours"], done["psql"]) for done in alternating(REPEATS, ("ours", "psql"), once)])


def print_part1(migrations: Path, runs: list[tuple[GateRun, GateRun]]) -> None:
    files = sorted(migrations.glob("*.sql"))
    ours = statistics.median(o.seconds for o, _ in runs)
    psql = statistics.median(p.seconds for _, p in runs)
    applying = statistics.median(o.applying for o, _ in runs)
    own_work = statistics.median(o.seconds - o.applying for o, _ in runs)
    print("\n## 1. Gate overhead: `migrate-bot validate` vs `psql -v ON_ERROR_STOP=1 -f` per file\n")
    print("Migration set (applied on a fresh copy of the staging data each time):")
    for path in files:
        print(f"- `{path.name}`: {' '.join(path.read_text().split())}")
    print("\n| run | order | migrate-bot validate (s) | of which applying (s) | psql -f (s) | ours/psql |")
    print("|---|---|---:|---:|---:|---:|")
    for i, (o, p) in enumerate(runs):
        order = "ours → psql" if i % 2 == 0 else "psql → ours"
        print(f"| {i + 1} | {order} | {o.seconds:.2f} | {o.applying:.2f} | {p.seconds:.2f} | {o.seconds / p.seconds:.2f}x |")
    print(f"| **median** | | **{ours:.2f}** | **{applying:.2f}** | **{psql:.2f}** | **{ours / psql:.2f}x** |")
    print("\n\"of which applying\" is the sum of the gate's own per-migration times (its JSON report); the rest is "
          "Python start-up, connections to prod and staging, preflight, lint, history and post-checks.\n")
    print("Gate summary line per run:")
    notes: list[str] = []
    for i, (o, _) in enumerate(runs):
        print(f"- run {i + 1}: `{summary_line(o.output)}`")
        notes += [line for line in notable_lines(o.output) if line not in notes]
    for line in notes:
        print(f"- gate said: `{line}`")
    problems = [f"run {i + 1} {r.side}: exit {r.code}: {summary_line(r.output)}"
                for i, pair in enumerate(runs) for r in pair if r.code]
    for line in problems:
        print(f"- NOTE, not a clean run: {line}")
    print(f"\nVerdict: ours/psql = {ours / psql:.2f}x (median {ours:.2f} s vs {psql:.2f} s for the same {len(files)} "
          f"files; the gate's own work outside applying: median {own_work:.2f} s)"
          + (" — NOT comparable, see notes" if problems else ""))


# -- part 2: lock queue --------------------------------------------------------

@dataclass
class AppLoad:
    """APP_THREADS connections doing point SELECTs and small UPDATEs, each timing itself."""

    url: str
    max_id: int
    go: threading.Event = field(default_factory=threading.Event)
    t0: float = 0.0
    until: float = 0.0
    samples: list[tuple[float, float]] = field(default_factory=list)  # (start since t0, latency)
    errors: list[str] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)
    connected: threading.Barrier = field(default_factory=lambda: threading.Barrier(APP_THREADS + 1))

    def connect(self) -> None:
        """Start the threads; returns once every one is connected and waiting for `begin`."""
        self.threads = [threading.Thread(target=self._worker, args=(n,), daemon=True) for n in range(APP_THREADS)]
        for t in self.threads:
            t.start()
        self.connected.wait(timeout=30)

    def begin(self, window_s: float) -> float:
        self.t0 = time.perf_counter()
        self.until = self.t0 + window_s
        self.go.set()
        return self.t0

    def join(self) -> None:
        for t in self.threads:
            t.join(timeout=120)

    def _worker(self, n: int) -> None:
        rng, mine = random.Random(n), []
        try:
            with psycopg.connect(self.url, autocommit=True, options="-c statement_timeout=60000") as conn:
                self.connected.wait(timeout=30)
                self.go.wait(timeout=60)
                self._loop(conn, rng, mine)
        except (psycopg.Error, threading.BrokenBarrierError) as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            self.samples.extend(mine)  # list.extend is atomic under the GIL

    def _loop(self, conn: psycopg.Connection, rng: random.Random, mine: list[tuple[float, float]]) -> None:
        i = 0
        while not _stop.is_set() and time.perf_counter() < self.until:
            order_id = rng.randint(1, self.max_id)
            began = time.perf_counter()
            if i % 4 == 3:
                conn.execute("UPDATE orders SET total = total + 0.01 WHERE id = %s", (order_id,))
            else:
                conn.execute("SELECT id, user_id, status, total FROM orders WHERE id = %s", (order_id,)).fetchone()
            mine.append((began - self.t0, time.perf_counter() - began))
            i += 1


def long_reader(url: str, holding: threading.Event, times: dict[str, float]) -> None:
    """BEGIN; SELECT count(*) FROM orders; … READER_HOLD_S later, COMMIT."""
    with psycopg.connect(url) as conn:  # not autocommit: the SELECT opens the transaction
        conn.execute("SELECT count(*) FROM orders").fetchone()
        times["holding"] = time.perf_counter()
        holding.set()
        _stop.wait(READER_HOLD_S)
        conn.commit()
        times["committed"] = time.perf_counter()


@dataclass
class Scenario:
    name: str
    lock_timeout: str
    samples: list[tuple[float, float]]
    errors: list[str]
    reader_from: float
    reader_to: float
    migration_from: float
    migration_to: float
    exit_code: int
    output: str
    attempts: int = 0  # lock attempts of the ALTER (ours: from the deploy's JSON report)

    def latencies(self) -> list[float]:
        return sorted(latency for _, latency in self.samples)

    def percentile(self, q: float) -> float:
        values = self.latencies()
        return values[max(0, math.ceil(q * len(values)) - 1)] if values else float("nan")

    @property
    def worst(self) -> float:
        return max(self.latencies(), default=float("nan"))

    def slow(self, threshold: float) -> tuple[int, float]:
        """How many queries took longer than ``threshold``, and their summed seconds (thread-seconds stalled)."""
        stalled = [latency for latency in self.latencies() if latency > threshold]
        return len(stalled), sum(stalled)


def lock_scenario(name: str, lock_timeout: str, url: str, max_id: int,
                  launch: Callable[[], subprocess.Popen]) -> Scenario:
    """One fixed timeline: app load from t=0, long reader from READER_AT_S, the migration right after."""
    load = AppLoad(url, max_id)
    load.connect()
    t0 = load.begin(WINDOW_S)
    _stop.wait(READER_AT_S)
    holding, reader_times = threading.Event(), {}
    reader = threading.Thread(target=long_reader, args=(url, holding, reader_times), daemon=True)
    reader.start()
    if not holding.wait(timeout=30):
        raise RuntimeError("the long reader never got its lock")
    migration_from = time.perf_counter()
    proc = launch()
    done: dict[str, float] = {}
    watcher = threading.Thread(target=lambda: (proc.wait(), done.setdefault("at", time.perf_counter())), daemon=True)
    watcher.start()
    _stop.wait(max(0.0, load.until - time.perf_counter()))
    load.join()
    code, out = children.finish(proc, timeout=120)
    watcher.join(timeout=5)
    reader.join(timeout=30)
    return Scenario(name, lock_timeout, load.samples, load.errors, reader_times["holding"] - t0,
                    reader_times.get("committed", float("nan")) - t0, migration_from - t0,
                    done.get("at", float("nan")) - t0, code, out)


def part2(bench: Bench) -> None:
    migrations = write_files(bench.workdir / "note_set", NOTE_SET)
    path = next(migrations.glob("*.sql"))
    note("part 2: naive psql -f under load")
    naive_db = bench.fresh("prod", "p2_psql")
    cmd, env = psql_cmd(bench, "prod", naive_db, path)
    naive = lock_scenario("psql -f (naive)", "none", bench.url("prod", naive_db), bench.rows,
                          lambda: children.start(cmd, env, bench.workdir))
    bench.drop("prod", naive_db)

    note("part 2: migrate-bot validate, then deploy under load (default lock settings)")
    (bench.workdir / "defaults.toml").write_text(DEFAULTS_CONFIG, encoding="utf-8")
    ours_db, staging_db = bench.fresh("prod", "p2_ours"), bench.fresh("staging", "p2_stage")
    _, vcode, vout = run_bot(bench, "validate", migrations, ours_db, staging_db, config="defaults.toml")
    env = bot_env(bench, ours_db, staging_db, deploy=True, config="defaults.toml")
    report = bench.workdir / "p2_deploy.json"
    cmd = [migrate_bot(), "deploy", "--now", "--migrations", str(migrations), "--json", str(report)]
    ours = lock_scenario("migrate-bot deploy", lock_ladder(), bench.url("prod", ours_db), bench.rows,
                         lambda: children.start(cmd, env, bench.workdir))
    ours.attempts = deploy_attempts(report)
    bench.drop("prod", ours_db)
    bench.drop("staging", staging_db)
    print_part2(path, naive, ours, (vcode, vout))


def lock_ladder() -> str:
    """The default lock policy in words: "0.1→2.0 s over 90 s"."""
    from bot.config import Gate
    from bot.migrations.lockwait import DEFAULT_WAIT_S, LockPolicy

    gate = Gate()
    budget = float(getattr(gate, "lock_wait_s", DEFAULT_WAIT_S))
    rungs = LockPolicy(max_timeout_s=gate.lock_timeout_s, budget_s=budget).rungs()
    return f"{rungs[0]:g}→{rungs[-1]:g} s over {budget:g} s"


def deploy_attempts(report_path: Path) -> int:
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0
    found = [c["details"].get("attempts", 0) for c in report.get("checks", []) if c["name"].startswith("migration.")]
    return int(found[0]) if found else 0


def print_part2(path: Path, naive: Scenario, ours: Scenario, validation: tuple[int, str]) -> None:
    print(f"\n## 2. Lock queue: `{path.read_text().strip()}` under application load\n")
    print(f"{APP_THREADS} app threads (point SELECT by id, every 4th an UPDATE) for a {WINDOW_S:.0f} s window; a "
          f"long transaction (`BEGIN; SELECT count(*) FROM orders;`) holds ACCESS SHARE for {READER_HOLD_S:.0f} s; "
          "the migration starts as soon as the reader holds its lock. Times are seconds since the window opened. "
          "The app threads are closed-loop (a stalled thread sends nothing else), so p99 understates a stall; "
          "worst stall, queries completed and stalled thread-seconds tell it.\n")
    print("| deploy by | lock_timeout | reader held | migration started | ALTER finished | after reader commit "
          "| app queries | worst stall | p99 | p50 | queries > 0.25 s | stalled thread-s |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in (naive, ours):
        slow, stalled = s.slow(0.25)
        print(f"| {s.name} | {s.lock_timeout} | {s.reader_from:.1f}–{s.reader_to:.1f} | {s.migration_from:.2f} "
              f"| {s.migration_to:.2f} | {s.migration_to - s.reader_to:+.2f} | {len(s.samples):,} "
              f"| {s.worst:.3f} s | {s.percentile(0.99) * 1000:.1f} ms | {s.percentile(0.5) * 1000:.2f} ms "
              f"| {slow} | {stalled:.1f} |")
    vcode, vout = validation
    print(f"\n- validate before the deploy: `{summary_line(vout)}`")
    print(f"\n- migrate-bot's ALTER took {ours.attempts} lock attempt(s); app stall goal with default settings: "
          f"≤ {STALL_GOAL_S} s")
    for s in (naive, ours):
        applied = [line for line in s.output.splitlines() if line.startswith(("PASSED migration.", "FAILED migration."))]
        shown = applied[-1] if applied else summary_line(s.output) if s.output.strip() else ""
        print(f"- {s.name}: exit {s.exit_code}" + (f"; `{shown}`" if shown else ""))
        for error in sorted(set(s.errors)):
            print(f"- {s.name}: app thread error: {error}")
    if "RESULT deploy" in ours.output:
        print(f"- migrate-bot deploy summary: `{summary_line(ours.output)}`")
    clean = naive.exit_code == 0 and ours.exit_code == 0 and vcode == 0
    print(f"\nVerdict: worst app stall: psql {naive.worst:.1f} s vs migrate-bot {ours.worst:.2f} s "
          f"(lock_timeout {lock_ladder()}); app queries completed {len(naive.samples):,} vs {len(ours.samples):,}; "
          f"ALTER done {naive.migration_to - naive.reader_to:+.1f} s vs {ours.migration_to - ours.reader_to:+.1f} s "
          "after the long reader committed" + ("" if clean else " — NOT a clean run, see exit codes above"))


# -- main ----------------------------------------------------------------------

def header(bench: Bench, seeded_s: float) -> None:
    version, size = server_facts(bench)
    print("# migrate-bot gate bench\n")
    print(f"{machine()}, so compare ratios within this run only")
    print(f"- PostgreSQL {version}: two throwaway local clusters (prod, staging) on 127.0.0.1, "
          "fsync/full_page_writes off")
    print(f"- data: orders {bench.rows:,} rows ({size} with its primary key), users {max(1000, bench.rows // 10):,} "
          f"rows; seeded in {seeded_s:.1f} s; every measured side runs on a fresh `CREATE DATABASE … TEMPLATE` copy")


def run(rows: int) -> None:
    # file_copy: every fresh copy is a FILE_COPY of the template, checkpointed before anything is timed
    bench = Bench(base=Path(tempfile.mkdtemp(prefix="mb-bench-")), template=TEMPLATE, file_copy=True, rows=rows)
    started = time.perf_counter()
    try:
        bench.start(PASSWORDS)
        bench.workdir.mkdir()
        (bench.workdir / "migrate-bot.toml").write_text(CONFIG, encoding="utf-8")
        note(f"seeding {rows:,} orders on both clusters")
        seeded_s = bench.seed_all(lambda cluster: seed(cluster, rows))
        header(bench, seeded_s)
        part1(bench)
        part2(bench)
        print(f"\n(bench wall time {time.perf_counter() - started:.0f} s)")
    finally:
        _stop.set()
        children.kill_all()
        bench.remove()


def main(argv: list[str] | None = None) -> int:
    parser = arg_parser(__doc__, ".venv/bin/python bench/gate_bench.py --rows 1000000")
    parser.add_argument("--rows", type=int, default=1_000_000, help="orders rows to seed (default 1,000,000)")
    args = parser.parse_args(argv)
    if args.rows < 1000:
        parser.error("--rows must be at least 1000")
    return run_interruptible(lambda: run(args.rows))


if __name__ == "__main__":
    sys.exit(main())
