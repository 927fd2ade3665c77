"""Perf bench: what the measured regression gate adds to `migrate-bot validate`, for 20 hot statements.

    .venv/bin/python bench/perf_bench.py [--rows 200000] [--repeats 3]

Starts its own throwaway prod + staging clusters (``bot.devcluster``, in a temp
dir that is always removed, also on error, Ctrl-C or SIGTERM), seeds a shop
(``users``, ``orders`` with --rows rows, ``products``, ``order_items``) once
per cluster into a template database, and for each run clones fresh prod and
staging databases from it (``CREATE DATABASE … TEMPLATE``), plays the
application's 20 hot statements on prod with real values (60 calls each, so
prod's pg_stat_statements ranks them) and runs ``migrate-bot validate`` on a
harmless migration set (a nullable column, a new table):

- ``measure on``: ``gate.perf_measure = true`` (the default): plan costs,
  the before-copy of staging, VACUUM ANALYZE, sampled values and A/B runs;
- ``measure off``: ``gate.perf_measure = false``: plan costs only.

Both sides run in the same invocation, alternating which goes first; the
table shows each run and the medians, the added seconds and the ratio
on/off. The machine is shared and noisy: compare within one run. Nothing
here asserts a timing; a bench prints.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg

from bot import devcluster
from bot.interrupts import sigterm_like_ctrl_c

ROOT = Path(__file__).resolve().parents[1]
PASSWORDS = {"prod": "bench-prod-7Hq1", "staging": "bench-stg-2Wd8"}
TEMPLATE = "shop"
EXTENSIONS = ("pg_trgm", "citext", "uuid-ossp")
CALLS = 60  # per hot statement on prod: above gate.perf_min_calls (50)
HARMLESS = {"0001_orders_coupon_code.sql": "ALTER TABLE orders ADD COLUMN coupon_code text;\n",
            "0002_audit_log.sql": "CREATE TABLE audit_log (id bigserial PRIMARY KEY, at timestamptz, body text);\n"}

SEED_SQL = [
    "CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL, last_seen timestamptz)",
    "INSERT INTO users (email) SELECT 'user' || g || '@example.com' FROM generate_series(1, {users}) g",
    "CREATE UNIQUE INDEX users_email_idx ON users (email)",
    "CREATE TABLE products (id bigserial PRIMARY KEY, sku text NOT NULL, name text NOT NULL, price numeric NOT NULL)",
    "INSERT INTO products (sku, name, price) SELECT 'SKU-' || g, 'product ' || g, g % 90 + 0.99 "
    "FROM generate_series(1, 1000) g",
    "CREATE UNIQUE INDEX products_sku_idx ON products (sku)",
    """CREATE TABLE orders (id bigserial PRIMARY KEY, user_id bigint NOT NULL REFERENCES users (id),
                            status text NOT NULL, total numeric(12, 2) NOT NULL, created_at timestamptz NOT NULL)""",
    """INSERT INTO orders (user_id, status, total, created_at)
       SELECT 1 + (g * 7919) % {users}, (ARRAY['new', 'paid', 'shipped', 'delivered', 'refunded'])[1 + g % 5],
              round(((g * 37) % 50000) / 100.0, 2), now() - (g % 525600) * interval '1 minute'
       FROM generate_series(1::bigint, {rows}) g""",
    "CREATE INDEX orders_user_id_idx ON orders (user_id)",
    "CREATE INDEX orders_created_at_idx ON orders (created_at)",
    """CREATE TABLE order_items (order_id bigint NOT NULL REFERENCES orders (id),
                                 product_id bigint NOT NULL REFERENCES products (id), qty int NOT NULL)""",
    "INSERT INTO order_items SELECT g, 1 + g % 1000, 1 + g % 3 FROM generate_series(1, {rows}) g",
    "CREATE INDEX order_items_order_id_idx ON order_items (order_id)",
    "VACUUM (ANALYZE)",
]


def hot_statements(rows: int) -> list[tuple[str, object]]:
    """The application's 20 hot statements, each with a function giving the i-th call's real values."""
    users = max(1000, rows // 10)
    when = lambda i: datetime.now(timezone.utc) - timedelta(days=1 + i % 30)  # noqa: E731
    return [
        ("SELECT id, total FROM orders WHERE user_id = %s", lambda i: (1 + i * 13 % users,)),
        ("SELECT id, status FROM orders WHERE user_id = %s AND status = %s", lambda i: (1 + i % users, "paid")),
        ("SELECT * FROM users WHERE email = %s", lambda i: (f"user{1 + i}@example.com",)),
        ("SELECT id FROM users WHERE id = %s", lambda i: (1 + i,)),
        ("UPDATE orders SET status = %s WHERE id = %s", lambda i: ("shipped", 1 + i)),
        ("UPDATE users SET last_seen = now() WHERE id = %s", lambda i: (1 + i,)),
        ("INSERT INTO orders (user_id, status, total, created_at) VALUES (%s, %s, %s, now())",
         lambda i: (1 + i, "new", 9.99)),
        ("SELECT count(*) FROM orders WHERE created_at > %s", lambda i: (when(i),)),
        ("SELECT o.id, u.email FROM orders o JOIN users u ON u.id = o.user_id WHERE o.id = %s", lambda i: (1 + i,)),
        ("SELECT id FROM orders WHERE user_id = ANY(%s)", lambda i: ([1 + i, 2 + i, 3 + i],)),
        ("SELECT id, total FROM orders WHERE user_id = %s ORDER BY created_at DESC LIMIT 10", lambda i: (1 + i,)),
        ("SELECT sum(total) FROM orders WHERE user_id = %s", lambda i: (1 + i,)),
        ("SELECT id, price FROM products WHERE sku = %s", lambda i: (f"SKU-{1 + i}",)),
        ("SELECT p.name FROM order_items i JOIN products p ON p.id = i.product_id WHERE i.order_id = %s",
         lambda i: (1 + i,)),
        ("INSERT INTO order_items (order_id, product_id, qty) VALUES (%s, %s, %s)", lambda i: (1 + i, 1 + i, 1)),
        ("DELETE FROM order_items WHERE order_id = %s AND product_id = %s", lambda i: (rows - i, 1)),
        ("SELECT count(*) FROM orders WHERE total BETWEEN %s AND %s", lambda i: (10 + i, 20 + i)),
        ("UPDATE products SET price = %s WHERE id = %s", lambda i: (19.99, 1 + i)),
        ("SELECT id FROM users WHERE lower(email) = %s", lambda i: (f"user{1 + i}@example.com",)),
        ("SELECT status, count(*) FROM orders WHERE created_at >= %s GROUP BY status", lambda i: (when(i),)),
    ]


_children: list[subprocess.Popen] = []


def note(message: str) -> None:
    print(f"… {message}", file=sys.stderr, flush=True)


@dataclass
class Bench:
    base: Path
    rows: int
    clusters: dict[str, devcluster.LocalCluster] = field(default_factory=dict)
    copies: int = 0

    @property
    def workdir(self) -> Path:
        return self.base / "work"

    def admin(self, env: str, statement: str) -> None:
        with psycopg.connect(self.clusters[env].url("postgres"), autocommit=True) as conn:
            conn.execute(statement)

    def fresh(self, env: str, label: str) -> str:
        self.copies += 1
        name = f"{label}_{self.copies}"
        self.admin(env, f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
        return name

    def drop(self, env: str, name: str) -> None:
        self.admin(env, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def url(self, env: str, dbname: str) -> str:
        return self.clusters[env].url(dbname)


def seed(cluster: devcluster.LocalCluster, rows: int) -> None:
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {TEMPLATE}")
    with psycopg.connect(cluster.url(TEMPLATE), autocommit=True) as conn:
        for ext in EXTENSIONS:
            conn.execute(f'CREATE EXTENSION IF NOT EXISTS "{ext}"')
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        for statement in SEED_SQL:
            conn.execute(statement.format(rows=rows, users=max(1000, rows // 10)))


def seed_both(bench: Bench) -> float:
    started, errors = time.perf_counter(), []

    def work(cluster: devcluster.LocalCluster) -> None:
        try:
            seed(cluster, bench.rows)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(c,), daemon=True) for c in bench.clusters.values()]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(timeout=0.5)  # short joins keep Ctrl-C responsive
    if errors:
        raise errors[0]
    return time.perf_counter() - started


def play_hot_path(url: str, rows: int) -> None:
    """The application on prod: every hot statement CALLS times with real values (what pg_stat_statements ranks)."""
    with psycopg.connect(url, autocommit=True) as conn:
        for statement, args in hot_statements(rows):
            for i in range(CALLS):
                conn.execute(statement, args(i))  # type: ignore[operator]


# -- one validation ------------------------------------------------------------------------------------------

@dataclass
class Run:
    side: str  # "on" | "off"
    seconds: float
    code: int
    output: str
    report: dict = field(default_factory=dict)

    @property
    def perf_checks(self) -> list[dict]:
        return [c for c in self.report.get("checks", []) if c["name"].startswith("perf-regression")]

    @property
    def phases(self) -> dict[str, float]:
        return self.report.get("facts", {}).get("perf_seconds", {})

    @property
    def measured(self) -> str:
        md = self.report.get("facts", {}).get("perf_report_md", "")
        remeasured = md.count("- first measurement")
        statements = md.count("\n## perf-regression.")
        return f"{statements} statements" + (f", {remeasured} re-measured" if remeasured else "")


def clean_env() -> dict[str, str]:
    drop = ("PROD_DATABASE_URL", "STAGING_DATABASE_URL", "STAGING_VALIDATION_PASSED", "SLACK_API_URL")
    return {k: v for k, v in os.environ.items() if not k.startswith(("PG", "MIGRATE_BOT_")) and k not in drop}


def migrate_bot() -> str:
    path = ROOT / ".venv" / "bin" / "migrate-bot"
    return str(path if path.exists() else Path(sys.executable).parent / "migrate-bot")


def validate_once(bench: Bench, migrations: Path, side: str) -> Run:
    prod_db, staging_db = bench.fresh("prod", f"p_{side}"), bench.fresh("staging", f"s_{side}")
    try:
        play_hot_path(bench.url("prod", prod_db), bench.rows)
        config = bench.workdir / f"measure_{side}.toml"
        config.write_text(f"[gate]\nperf_measure = {'true' if side == 'on' else 'false'}\n", encoding="utf-8")
        report_path = bench.workdir / f"{staging_db}.json"
        env = dict(clean_env(), PYTHONPATH=str(ROOT), MIGRATE_BOT_CONFIG=str(config),
                   MIGRATE_BOT_STATE=str(bench.workdir / "state.db"),
                   PROD_DATABASE_URL=bench.url("prod", prod_db), STAGING_DATABASE_URL=bench.url("staging", staging_db))
        cmd = [migrate_bot(), "validate", "--migrations", str(migrations), "--json", str(report_path)]
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=bench.workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        _children.append(proc)
        out, _ = proc.communicate(timeout=900)
        _children.remove(proc)
        seconds = time.perf_counter() - started
        report = json.loads(report_path.read_text(encoding="utf-8")) if report_path.exists() else {}
        return Run(side, seconds, proc.returncode, out, report)
    finally:
        bench.drop("prod", prod_db)
        bench.drop("staging", staging_db)


# -- output ----------------------------------------------------------------------------------------------------

def header(bench: Bench, seeded_s: float) -> None:
    with psycopg.connect(bench.url("staging", TEMPLATE)) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()[0]
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print("# migrate-bot perf bench: the measured regression gate's added wall time\n")
    print(f"- machine: {os.cpu_count()} cores ({affinity} usable), {platform.system()} {platform.release()}, "
          f"Python {platform.python_version()} — shared with other work, so compare within this run only")
    print(f"- PostgreSQL {version}: two throwaway local clusters (prod, staging) on 127.0.0.1")
    print(f"- data: orders and order_items {bench.rows:,} rows each, users {max(1000, bench.rows // 10):,}, products "
          f"1,000; staging database {size}; seeded in {seeded_s:.1f} s; every run on fresh `TEMPLATE` copies")
    print(f"- workload: {len(hot_statements(bench.rows))} hot statements played {CALLS} times each on prod; "
          f"migrations: {', '.join(HARMLESS)}")


def print_runs(runs: list[tuple[Run, Run]]) -> None:
    print("\n| run | order | measure on (s) | measure off (s) | added (s) | on/off | perf checks (on) |")
    print("|---|---|---:|---:|---:|---:|---|")
    for i, (on, off) in enumerate(runs):
        order = "on → off" if i % 2 == 0 else "off → on"
        print(f"| {i + 1} | {order} | {on.seconds:.2f} | {off.seconds:.2f} | {on.seconds - off.seconds:+.2f} "
              f"| {on.seconds / off.seconds:.2f}x | {on.measured} |")
    on_s = statistics.median(o.seconds for o, _ in runs)
    off_s = statistics.median(f.seconds for _, f in runs)
    added = statistics.median(o.seconds - f.seconds for o, f in runs)
    print(f"| **median** | | **{on_s:.2f}** | **{off_s:.2f}** | **{added:+.2f}** | **{on_s / off_s:.2f}x** | |")
    phases = sorted({k for on, _ in runs for k in on.phases})
    if phases:
        medians = ", ".join(f"{k.replace('_', ' ')} {statistics.median(on.phases.get(k, 0.0) for on, _ in runs):.2f} s"
                            for k in phases)
        print(f"\nWhere the added time goes (measure on, medians of the gate's own `perf_seconds`): {medians}; the "
              f"rest is the measurement's connections, catalog reads and the report.")
    lines = sorted({f"{c['status']} {c['name']}: {c['message'][:160]}" for on, off in runs for run in (on, off)
                    for c in run.perf_checks if c["status"] != "PASSED"})
    for line in lines:
        print(f"- gate said: `{line}`")
    problems = [f"run {i + 1} measure {r.side}: exit {r.code}" for i, pair in enumerate(runs) for r in pair if r.code]
    for problem in problems:
        print(f"- NOTE, not a clean run: {problem}")
    print(f"\nVerdict: the measurement adds {added:.2f} s (median) to validate for "
          f"{len(hot_statements(0))} hot statements: {on_s:.2f} s vs {off_s:.2f} s, {on_s / off_s:.2f}x"
          + (" — NOT comparable, see notes" if problems else ""))


def run(rows: int, repeats: int) -> None:
    bench = Bench(base=Path(tempfile.mkdtemp(prefix="mb-perf-bench-")), rows=rows)
    started = time.perf_counter()
    try:
        for env in ("prod", "staging"):
            note(f"starting the {env} cluster in {bench.base}")
            bench.clusters[env] = devcluster.create_cluster(bench.base, env, PASSWORDS[env])
        bench.workdir.mkdir()
        migrations = bench.workdir / "migrations"
        migrations.mkdir()
        for name, text in HARMLESS.items():
            (migrations / name).write_text(text, encoding="utf-8")
        note(f"seeding {rows:,} orders on both clusters")
        header(bench, seed_both(bench))
        runs: list[tuple[Run, Run]] = []
        for rep in range(repeats):
            order = ("on", "off") if rep % 2 == 0 else ("off", "on")
            done = {}
            for side in order:
                note(f"run {rep + 1}/{repeats}: validate with measure {side}")
                done[side] = validate_once(bench, migrations, side)
            runs.append((done["on"], done["off"]))
        print_runs(runs)
        print(f"\n(bench wall time {time.perf_counter() - started:.0f} s)")
    finally:
        for proc in list(_children):
            proc.kill()
            proc.wait()
        note("removing the clusters")
        devcluster.remove(bench.base, list(bench.clusters.values()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Example:\n  .venv/bin/python bench/perf_bench.py --rows 200000",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000, help="orders (and order_items) rows (default 200,000)")
    parser.add_argument("--repeats", type=int, default=3, help="pairs of validations (default 3)")
    args = parser.parse_args(argv)
    if args.rows < 1000 or args.repeats < 1:
        parser.error("--rows must be at least 1000 and --repeats at least 1")
    sigterm_like_ctrl_c()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        run(args.rows, args.repeats)
    except KeyboardInterrupt:
        print("interrupted: the clusters were stopped and their directory removed", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
