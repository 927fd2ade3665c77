"""Digest bench: what a pg_stat_statements digest costs over 5,000 statements.

    .venv/bin/python bench/digest_bench.py [--statements 5000] [--repeats 5]

Starts its own throwaway cluster (``bot.devcluster``, in a temp dir that is
always removed, also on error, Ctrl-C or SIGTERM) with
``pg_stat_statements.max = 10000``, creates 100 tables of 10 columns and runs
--statements distinct statements (``SELECT <a column subset> FROM t<k> WHERE
id = $1`` in an ORM's style, 1-5 calls each) so the view holds that many
entries for the database. Then it times, each over --repeats runs (median and
best):

1. ``take``: reading the view (and normalising every text with pglast);
2. ``store``: ``to_dict`` + ``json.dumps`` (what the state store writes), and
   the way back (``json.loads`` + ``from_dict``), with the stored size;
3. ``compute``: a digest with a previous and an earlier snapshot and a
   deploy's hold-back (every section filled);
4. ``render``: text, Markdown, JSON, and the PNG chart;

and the sum of one daily digest's steps: take, serialise it, read the
previous one back, compute, render text + JSON + chart. The machine is shared
and noisy: nothing here asserts a timing; a bench prints.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `bench.benchlib`, also when run as a script

import psycopg  # noqa: E402

from bench.benchlib import arg_parser, machine, note, run_interruptible  # noqa: E402
from bot import devcluster  # noqa: E402
from bot.workflow import digest, digestchart, digestrender, statements  # noqa: E402
from bot.workflow.digest import DeployMark  # noqa: E402

PASSWORD = "bench-pgss-7Hq2"
DBNAME = "app"
TABLES = 100
COLUMNS = 10
MAX_ENTRIES = 10_000


def start_cluster(base: Path) -> devcluster.LocalCluster:
    cluster = devcluster.create_cluster(base, "pgss", PASSWORD)
    cluster.stop()
    with open(cluster.datadir / "postgresql.conf", "a", encoding="utf-8") as conf:
        conf.write(f"pg_stat_statements.max = {MAX_ENTRIES}\npg_stat_statements.track = 'top'\n")
    cluster.start()
    return cluster


def shapes(count: int) -> list[str]:
    """``count`` distinct ORM-style statements: a different column subset per table (bit patterns of 1..count/TABLES).

    Quoted, table-qualified column lists as ORMs write them, so texts (and the
    stored snapshot) are as long as an application's usually are.
    """
    per_table = -(-count // TABLES)
    out = []
    for subset in range(1, per_table + 1):
        for t in range(TABLES):
            cols = ", ".join(f'"t{t}"."c{b}"' for b in range(COLUMNS) if subset >> b & 1)
            out.append(f'SELECT "t{t}"."id", {cols} FROM "public"."t{t}" WHERE "t{t}"."id" = %s '
                       f'ORDER BY "t{t}"."id" LIMIT 20')
    return out[:count]


def fill(conn: psycopg.Connection, texts: list[str], rounds: Callable[[int], int]) -> int:
    """Run each statement ``rounds(i)`` times in one pipeline; returns how many executions."""
    done = 0
    with conn.pipeline():
        for i, text in enumerate(texts):
            for r in range(rounds(i)):
                conn.execute(text, (1 + (i + r) % 50,))
                done += 1
    return done


def seed(conn: psycopg.Connection) -> None:
    cols = ", ".join(f"c{b} int" for b in range(COLUMNS))
    with conn.transaction():
        for t in range(TABLES):
            conn.execute(f"CREATE TABLE t{t} (id int PRIMARY KEY, {cols})")
            conn.execute(f"INSERT INTO t{t} SELECT g, {', '.join(['g'] * COLUMNS)} FROM generate_series(1, 50) g")


def timed(fn: Callable[[], Any], repeats: int) -> tuple[list[float], Any]:
    times, result = [], None
    for _ in range(repeats):
        began = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - began) * 1000)
    return times, result


def row(name: str, times: list[float], extra: str = "") -> str:
    return f"| {name} | {statistics.median(times):,.1f} | {min(times):,.1f} | {extra} |"


def run(count: int, repeats: int) -> None:
    base = Path(tempfile.mkdtemp(prefix="mb-bench-pgss-"))
    clusters: list[devcluster.LocalCluster] = []
    started = time.perf_counter()
    try:
        note(f"starting a cluster in {base} (pg_stat_statements.max = {MAX_ENTRIES:,})")
        cluster = start_cluster(base)
        clusters.append(cluster)
        with psycopg.connect(cluster.url(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {DBNAME}")
        with psycopg.connect(cluster.url(DBNAME), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_stat_statements")
            seed(conn)
            texts = shapes(count)
            note(f"running {len(texts):,} distinct statements")
            fill(conn, texts, lambda i: 1 + i % 5)
            earlier = statements.take(conn, "prod")
            fill(conn, texts, lambda i: 1 + i % 3)
            previous = statements.take(conn, "prod")
            fill(conn, texts[: len(texts) // 2], lambda i: 2)
            note(f"timing {repeats} repeats of each step")
            measure(conn, earlier, previous, repeats, cluster)
        print(f"\n(bench wall time {time.perf_counter() - started:.0f} s)")
    finally:
        note("removing the cluster")
        devcluster.remove(base, clusters)


def measure(conn: psycopg.Connection, earlier: statements.Snapshot, previous: statements.Snapshot, repeats: int,
            cluster: devcluster.LocalCluster) -> None:
    take_ms, current = timed(lambda: statements.take(conn, "prod"), repeats)
    normalise_ms, _ = timed(lambda: [statements.normalise(e.query) for e in current.entries], repeats)
    dump_ms, stored = timed(lambda: json.dumps(statements.to_dict(current)), repeats)
    plain = json.dumps(statements.to_dict(current, compress=False))
    load_ms, _ = timed(lambda: statements.from_dict(json.loads(stored)), repeats)
    mark = DeployMark("r-1", previous.taken_at, ["0001_example"], "https://example.invalid/t")
    compute_ms, d = timed(lambda: digest.compute(previous, current, earlier=earlier, deploy=mark,
                                                 before_deploy=previous, before_deploy_base=earlier), repeats)
    text_ms, _ = timed(lambda: digestrender.text(d), repeats)
    md_ms, _ = timed(lambda: digestrender.markdown(d), repeats)
    json_ms, _ = timed(lambda: json.dumps(digestrender.json_dict(d)), repeats)
    chart_ms, png = timed(lambda: digestchart.png(d), repeats)
    version = conn.execute("SHOW server_version").fetchone()[0]
    daily = [t + s + lo + c + tx + j + ch for t, s, lo, c, tx, j, ch in
             zip(take_ms, dump_ms, load_ms, compute_ms, text_ms, json_ms, chart_ms)]

    print("# migrate-bot digest bench\n")
    print(machine())
    print(f"- PostgreSQL {version}: a throwaway local cluster, pg_stat_statements.max = {MAX_ENTRIES:,}")
    print(f"- snapshot: {len(current.entries):,} statements of database `{DBNAME}` "
          f"({current.entries_total:,} entries in the whole view); {repeats} repeats per step\n")
    print("| step | median (ms) | best (ms) | notes |")
    print("|---|---:|---:|---|")
    print(row("take (read the view + normalise)", take_ms, f"{len(current.entries):,} entries"))
    print(row("… of which normalising the texts (pglast scanner)", normalise_ms, ""))
    print(row("store: to_dict + json.dumps", dump_ms,
              f"{len(stored):,} bytes stored (uncompressed rows: {len(plain):,} bytes)"))
    print(row("load: json.loads + from_dict", load_ms, ""))
    print(row("compute (previous + earlier + hold-back)", compute_ms,
              f"{len(d.top)} top, {d.new_count} new, {d.regressions_count} regressions, "
              f"{len(d.since_deploy.rows) if d.since_deploy else 0} since-deploy rows"))
    print(row("render text", text_ms, ""))
    print(row("render Markdown", md_ms, ""))
    print(row("render JSON (json_dict + dumps)", json_ms, ""))
    print(row("chart (PNG)", chart_ms, f"{len(png):,} bytes"))
    print(row("**a daily digest: take + store + load previous + compute + text + JSON + chart**", daily, ""))
    print(f"\nVerdict: one digest over {len(current.entries):,} statements takes {statistics.median(daily):,.0f} ms "
          f"(median), of which reading the view {statistics.median(take_ms):,.0f} ms; a stored snapshot is "
          f"{len(stored) / 1024:,.0f} KiB ({len(stored) / len(current.entries):,.0f} bytes per statement).")


def main(argv: list[str] | None = None) -> int:
    parser = arg_parser(__doc__, ".venv/bin/python bench/digest_bench.py --statements 5000")
    parser.add_argument("--statements", type=int, default=5000, help="distinct statements to run (default 5,000)")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each timed step (default 5)")
    args = parser.parse_args(argv)
    if not 100 <= args.statements <= MAX_ENTRIES - 500:
        parser.error(f"--statements must be between 100 and {MAX_ENTRIES - 500:,}")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return run_interruptible(lambda: run(args.statements, args.repeats),
                             "the cluster was stopped and its directory removed")


if __name__ == "__main__":
    sys.exit(main())
