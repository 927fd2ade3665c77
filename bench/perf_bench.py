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

import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `bench.benchlib`, also when run as a script

import psycopg  # noqa: E402

from bench.benchlib import (Children, Clusters, alternating, arg_parser, clean_env, machine, migrate_bot, note,  # noqa: E402
                            run_interruptible, seed_template, write_files)
from bot import devcluster  # noqa: E402

PASSWORDS = {"prod": "bench-prod-7Hq1", "staging": "bench-stg-2Wd8"}
TEMPLATE = "shop"
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


children = Children()  # still running when we stop = killed in the finally


@dataclass(kw_only=True)
class Bench(Clusters):
    rows: int


def seed(cluster: devcluster.LocalCluster, rows: int) -> None:
    seed_template(cluster, TEMPLATE, ["CREATE EXTENSION IF NOT EXISTS pg_stat_statements",
                                      *(statement.format(rows=rows, users=max(1000, rows // 10))
                                        for statement in SEED_SQL)])


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
        # a validation past 900 s ends the bench (not a result to print, unlike gate_bench's timeouts)
        code, out = children.finish(children.start(cmd, env, bench.workdir), timeout=900, kill_on_timeout=False)
        seconds = time.perf_counter() - started
        report = json.loads(report_path.read_text(encoding="utf-8")) if report_path.exists() else {}
        return Run(side, seconds, code, out, report)
    finally:
        bench.drop("prod", prod_db)
        bench.drop("staging", staging_db)


# -- output ----------------------------------------------------------------------------------------------------

def header(bench: Bench, seeded_s: float) -> None:
    with psycopg.connect(bench.url("staging", TEMPLATE)) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()[0]
    print("# migrate-bot perf bench: the measured regression gate's added wall time\n")
    print(f"{machine()}, so compare within this run only")
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
    bench = Bench(base=Path(tempfile.mkdtemp(prefix="mb-perf-bench-")), template=TEMPLATE, rows=rows)
    started = time.perf_counter()
    try:
        bench.start(PASSWORDS)
        bench.workdir.mkdir()
        migrations = write_files(bench.workdir / "migrations", HARMLESS)
        note(f"seeding {rows:,} orders on both clusters")
        header(bench, bench.seed_all(lambda cluster: seed(cluster, rows)))
        def once(rep: int, side: str) -> Run:
            note(f"run {rep + 1}/{repeats}: validate with measure {side}")
            return validate_once(bench, migrations, side)

        print_runs([(done["on"], done["off"]) for done in alternating(repeats, ("on", "off"), once)])
        print(f"\n(bench wall time {time.perf_counter() - started:.0f} s)")
    finally:
        children.kill_all()
        bench.remove()


def main(argv: list[str] | None = None) -> int:
    parser = arg_parser(__doc__, ".venv/bin/python bench/perf_bench.py --rows 200000")
    parser.add_argument("--rows", type=int, default=200_000, help="orders (and order_items) rows (default 200,000)")
    parser.add_argument("--repeats", type=int, default=3, help="pairs of validations (default 3)")
    args = parser.parse_args(argv)
    if args.rows < 1000 or args.repeats < 1:
        parser.error("--rows must be at least 1000 and --repeats at least 1")
    return run_interruptible(lambda: run(args.rows, args.repeats))


if __name__ == "__main__":
    sys.exit(main())
