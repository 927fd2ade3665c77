"""History bench: the gate on whole project histories, against one `psql -f` session over the same files.

    .venv/bin/python bench/history_bench.py                       # synthetic prisma + golang-migrate histories
    .venv/bin/python bench/history_bench.py --dir PATH --format prisma|golang-migrate|flyway|dbmate|plain

Issue 10 tried the gate on two public projects' real histories; this bench
measures the same things on histories shaped like them (``bench/histories.py``:
our own statements, never copied from a project) or on any checked-out
project's folder (``--dir``):

1. lint wall time per 100 files at 100/200/400/800 files (linear?): the
   gate's lint of the whole folder as one pending set, and ``migrate-bot lint
   DIR``; with how many times PostgreSQL's parser ran;
2. ``validate`` (discover + lint + apply on staging with trace and pre-checks
   + post-checks, in-process) vs one ``psql -f f1 -f f2 …`` session over the
   same files, on empty databases: the ratio, and the gate's own milliseconds
   per statement;
3. the same with data: the first 80% of the history applied (by the bot's
   applier, so history rows exist) and every table filled with ``--rows`` rows
   by a generic catalog-driven filler (ids 1..N, foreign keys valid), then the
   last 20% pending: ``validate`` vs ``psql -f`` over those files;
4. blockers per 100 files: ``lint DIR`` (each file as the next deploy after
   the history), the gate's lint on the whole folder as one pending set (an
   empty prod), and the gate on the populated tail — beside the dangerous
   statements the generator planted there (the signal).

Throwaway prod + staging clusters (``bot.devcluster``, removed at the end, also
on error, Ctrl-C or SIGTERM). The machine is shared and noisy: figures are only
compared within one run. Nothing here asserts; a bench prints.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pglast  # noqa: E402
import pglast.parser  # noqa: E402

PARSES = [0]
_real_parse = pglast.parser.parse_sql


def _counting_parse(text: str, *args: object) -> object:
    PARSES[0] += 1
    return _real_parse(text, *args)


# Count PostgreSQL parser runs, whichever module calls it (patched before the bot's modules bind it).
pglast.parser.parse_sql = _counting_parse
pglast.parse_sql = _counting_parse

import psycopg  # noqa: E402

from bench import histories  # noqa: E402
from bot import devcluster  # noqa: E402
from bot.config import Databases, Settings, State  # noqa: E402
from bot.interrupts import sigterm_like_ctrl_c  # noqa: E402
from bot.migrations import apply as applier_mod  # noqa: E402
from bot.migrations.lint import lint_paths  # noqa: E402
from bot.migrations.source import discover  # noqa: E402
from bot.runs.store.sqlite import SqliteStore  # noqa: E402
from bot.workflow import validate  # noqa: E402
from bot.workflow.lintgate import lint_checks  # noqa: E402
from bot.workflow.report import Report, Status  # noqa: E402
from bot.workflow.trace import StagingTrace  # noqa: E402

PASSWORDS = {"prod": "hist-bench-prod-5Tz1", "staging": "hist-bench-stg-8Kc3"}
ENV_VARS = {"prod": "HISTORY_BENCH_PROD_URL", "staging": "HISTORY_BENCH_STAGING_URL"}
TEMPLATE = "history_template"
EXTENSIONS = ("pg_trgm", "citext", "uuid-ossp")
HEAD_SHARE = 0.8


def note(message: str) -> None:
    """Progress to stderr: stdout holds only the results."""
    print(f"… {message}", file=sys.stderr, flush=True)


# -- clusters ---------------------------------------------------------------------------------------------


@dataclass
class Clusters:
    base: Path
    started: dict[str, devcluster.LocalCluster] = field(default_factory=dict)
    copies: int = 0

    def admin(self, env: str, statement: str) -> None:
        with psycopg.connect(self.started[env].url("postgres"), autocommit=True) as conn:
            conn.execute(statement)

    def url(self, env: str, dbname: str) -> str:
        return self.started[env].url(dbname)

    def fresh(self, env: str, template: str = TEMPLATE) -> str:
        self.copies += 1
        name = f"h{self.copies}"
        self.admin(env, f"CREATE DATABASE {name} TEMPLATE {template}")
        return name

    def drop(self, env: str, name: str) -> None:
        self.admin(env, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def start_clusters(base: Path) -> Clusters:
    clusters = Clusters(base)
    for env in ("prod", "staging"):
        note(f"starting the {env} cluster in {base}")
        clusters.started[env] = devcluster.create_cluster(base, env, PASSWORDS[env])
        clusters.admin(env, f"CREATE DATABASE {TEMPLATE}")
        with psycopg.connect(clusters.url(env, TEMPLATE), autocommit=True) as conn:
            for ext in EXTENSIONS:
                conn.execute(f'CREATE EXTENSION IF NOT EXISTS "{ext}"')
    return clusters


def settings(state_dir: Path) -> Settings:
    return Settings(databases=Databases(prod=f"env:{ENV_VARS['prod']}", staging=f"env:{ENV_VARS['staging']}"),
                    state=State(path=str(state_dir / "state.db")), source="bench/history_bench.py")


# -- one history ------------------------------------------------------------------------------------------


@dataclass
class Source:
    """A folder of migrations in one layout, and what was planted in it (empty for a real project)."""

    name: str
    layout: str
    root: Path
    planted: list[tuple[str, str]] = field(default_factory=list)
    kinds: dict[str, str] = field(default_factory=dict)  # relative file -> the generator's kind of change

    def migrations(self) -> list:
        return discover(self.root, self.layout)


def pending_files(migrations: list) -> list[Path]:
    return [Path(m.path) for m in migrations]


def count_statements(migrations: list) -> int:
    return sum(1 for m in migrations for s in m.statements if not s.transaction_control)


def with_semicolons(src: Source, target: Path) -> Source:
    """The same folder with every file ending in `;` (what the old gate needed not to crash)."""
    shutil.copytree(src.root, target)
    for path in target.rglob("*.sql"):
        text = path.read_text(encoding="utf-8").rstrip()
        if not text.endswith(";"):
            path.write_text(text + ";\n", encoding="utf-8")
    return Source(src.name + " (every file ending in ;)", src.layout, target, src.planted, src.kinds)


# -- 1. lint time -------------------------------------------------------------------------------------------


def time_lint(src: Source) -> dict[str, object]:
    """Gate lint (one pending set, from discover) and lint DIR: seconds and parser runs."""
    out: dict[str, object] = {}
    PARSES[0] = 0
    started = time.perf_counter()
    try:
        migrations = src.migrations()
        parsed_reading = PARSES[0]
        lint_checks(migrations, "")
        out["gate"] = time.perf_counter() - started
        out["gate_parses"] = PARSES[0]
        out["read_parses"] = parsed_reading
    except Exception as exc:  # noqa: BLE001 - the old gate's crash is a result
        out["gate_error"] = f"{type(exc).__name__}: {str(exc)[:90]}"
    PARSES[0] = 0
    started = time.perf_counter()
    try:
        lint_paths([str(src.root)])
        out["dir"] = time.perf_counter() - started
        out["dir_parses"] = PARSES[0]
    except Exception as exc:  # noqa: BLE001
        out["dir_error"] = f"{type(exc).__name__}: {str(exc)[:90]}"
    return out


def lint_scaling(layout: str, sizes: list[int], work: Path) -> None:
    print(f"\n1. lint wall time, {layout} (printed, not asserted)")
    print(f"   {'files':>5}  {'gate lint':>10} {'per 100':>8}  {'lint DIR':>10} {'per 100':>8}  parser runs (read + lint)")
    longest = histories.LAYOUTS[layout](max(sizes))
    for n in sizes:
        root = longest.write(work / f"{layout}-{n}", n)
        src = Source(layout, layout, root)
        r = time_lint(src)
        if "gate_error" in r:
            fixed = with_semicolons(src, work / f"{layout}-{n}-semi")
            r2 = time_lint(fixed)
            gate = f"crashed; with every `;` {r2.get('gate', float('nan')):.2f}s"
            per = f"{r2.get('gate', float('nan')) * 100 / n:7.2f}s"
            parses = f"{r2.get('gate_parses', '?')}"
            note(f"{layout} {n}: gate lint crashed: {r['gate_error']}")
        else:
            gate, per = f"{r['gate']:9.2f}s", f"{r['gate'] * 100 / n:7.2f}s"
            parses = f"{r['read_parses']} + {r['gate_parses'] - r['read_parses']}"
        dir_ = f"{r['dir']:9.2f}s {r['dir'] * 100 / n:7.2f}s" if "dir" in r else f"crashed: {r['dir_error']}"
        print(f"   {n:5d}  {gate:>10} {per:>8}  {dir_}  {parses}")


# -- 2 and 3. validate vs psql ------------------------------------------------------------------------------


def psql(clusters: Clusters, env: str, dbname: str, files: list[Path]) -> tuple[float, int, str]:
    """One psql session over the files, in order, stopping at the first error."""
    cluster = clusters.started[env]
    args = [str(devcluster.bindir() / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
            "-d", f"host=127.0.0.1 port={cluster.port} user={cluster.user} dbname={dbname}"]
    for f in files:
        args += ["-f", str(f)]
    env_vars = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    started = time.perf_counter()
    done = subprocess.run(args, env=dict(env_vars, PGPASSWORD=cluster.password), capture_output=True, text=True,
                          check=False, timeout=3600)
    return time.perf_counter() - started, done.returncode, (done.stdout + done.stderr)[-400:]


def run_gate(clusters: Clusters, src: Source, prod_db: str, staging_db: str, state: Path,
             prechecks: bool = True) -> tuple[float, Report | None, str]:
    for env, db in (("prod", prod_db), ("staging", staging_db)):
        os.environ[ENV_VARS[env]] = clusters.url(env, db)
    s = settings(state)
    started = time.perf_counter()
    try:
        migrations = src.migrations()
        hooks = None if prechecks else StagingTrace(s.gate, None)
        report = validate.run(s, SqliteStore(s.state.path), validate.GateOptions(migrations=migrations, hooks=hooks))
        return time.perf_counter() - started, report, ""
    except Exception as exc:  # noqa: BLE001 - the old gate's crash is a result
        return time.perf_counter() - started, None, f"{type(exc).__name__}: {str(exc)[:120]}"


def applied_all(report: Report | None, pending: int) -> str:
    if report is None:
        return "crashed"
    ok = sum(1 for c in report.checks if c.name.startswith("migration.") and c.status is Status.PASSED)
    return f"{ok}/{pending} applied" + (f", error: {report.error[:80]}" if report.error else "")


def best_of(clusters: Clusters, src: Source, files: list[Path], template: str, state: Path,
            repeats: int = 2) -> tuple[float, float, float, Report | None, str, int, str]:
    """(psql s, validate s, validate without pre-checks s, report, crash, psql exit, psql output): each the best
    of ``repeats`` runs, every run on fresh copies of ``template``, alternating the order."""
    psql_s = gate_s = bare_s = float("inf")
    report, crash, code, out = None, "", 0, ""
    for i in range(repeats):
        prod, staging, plain = clusters.fresh("prod", template), clusters.fresh("staging", template), \
            clusters.fresh("staging", template)
        prod2, staging2 = clusters.fresh("prod", template), clusters.fresh("staging", template)
        try:
            runs = [lambda: psql(clusters, "staging", plain, files),
                    lambda: run_gate(clusters, src, prod, staging, state),
                    lambda: run_gate(clusters, src, prod2, staging2, state, prechecks=False)]
            results = [None, None, None]
            for k in (range(3) if i % 2 == 0 else reversed(range(3))):
                results[k] = runs[k]()
        finally:
            for env, db in (("prod", prod), ("staging", staging), ("staging", plain), ("prod", prod2),
                            ("staging", staging2)):
                clusters.drop(env, db)
        (p_s, code, out), (g_s, report, crash), (b_s, _, _) = results
        psql_s, gate_s, bare_s = min(psql_s, p_s), min(gate_s, g_s), min(bare_s, b_s)
    return psql_s, gate_s, bare_s, report, crash, code, out


def compare_empty(clusters: Clusters, src: Source, state: Path) -> bool:
    """One line of section 2; True when the gate crashed."""
    migrations = src.migrations()
    stmts = count_statements(migrations)
    psql_s, gate_s, bare_s, report, crash, code, out = best_of(clusters, src, pending_files(migrations), TEMPLATE,
                                                               state)
    if code:
        note(f"psql failed on {src.name}: {out}")
    verdict = crash or (report.summary() if report else "")
    ms = (gate_s - psql_s) * 1000 / max(stmts, 1)
    print(f"   {src.name:34s} {len(migrations):5d} {stmts:6d} {psql_s:8.2f}s {gate_s:9.2f}s {gate_s / psql_s:6.1f}x "
          f"{ms:8.2f}   {bare_s:6.2f}s {bare_s / psql_s:5.1f}x   {applied_all(report, len(migrations))}")
    print(f"      {verdict}")
    return report is None


def fill(conn: psycopg.Connection, rows: int) -> list[str]:
    """Every ordinary table filled with ``rows`` rows, catalog-driven; returns the tables left empty (and why)."""
    left: list[str] = []
    conn.execute("SET session_replication_role = replica")  # no FK or user triggers: ids 1..N make FKs valid anyway
    tables = conn.execute("""
        SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'migrate_bot')
          AND n.nspname !~ '^pg_' AND NOT c.relispartition ORDER BY 1""").fetchall()
    for (table,) in tables:
        cols, exprs, overriding = [], [], False
        for name, expr, identity in column_exprs(conn, table, rows):
            if expr is None:
                continue
            cols.append(f'"{name}"')
            exprs.append(expr)
            overriding |= identity == "a"
        if not cols:
            continue
        sql_text = (f"INSERT INTO {table} ({', '.join(cols)}) {'OVERRIDING SYSTEM VALUE ' if overriding else ''}"
                    f"SELECT {', '.join(exprs)} FROM generate_series(1, {rows}) AS g")
        try:
            with conn.transaction():
                conn.execute(sql_text)
        except psycopg.Error as exc:
            left.append(f"{table} ({(exc.diag.message_primary or '')[:60]})")
    conn.execute("RESET session_replication_role")
    conn.execute("""SELECT setval(s.oid::regclass, greatest((SELECT coalesce(max(last_value), 1) FROM pg_sequences
                                                              WHERE schemaname || '.' || sequencename = s.oid::regclass::text), %s))
                    FROM pg_class s WHERE s.relkind = 'S'""", (rows + 1,))
    return left


_VALUE = {  # a value of each type for row number {g}: the same for a key and for the FKs pointing at it
    "smallint": "(({g}) % 30000)::smallint", "integer": "({g})::integer", "bigint": "({g})::bigint",
    "numeric": "({g})::numeric", "real": "({g})::real", "double precision": "({g})::double precision",
    "boolean": "(({g}) % 2 = 0)", "text": "('v' || ({g}))", "character varying": "('v' || ({g}))",
    "citext": "('v' || ({g}))::citext", "uuid": "md5(({g})::text)::uuid", "jsonb": "'{{}}'::jsonb",
    "json": "'{{}}'::json", "bytea": "'\\x00'::bytea", "date": "(current_date - (({g}) % 3650)::int)",
    "inet": "'10.0.0.1'::inet", "interval": "'1 day'::interval",
}


def _value(type_: str, typtype: str, g: str) -> str | None:
    """A value of the type for row number expression ``g``; None when the filler has no value for it."""
    base = type_.split("(")[0].strip()
    if type_.endswith("[]"):
        return f"'{{}}'::{type_}"
    if typtype == "e":
        return f"(enum_range(NULL::{type_}))[1]"
    if base.startswith("timestamp"):
        return f"(now() - ({g}) * interval '1 minute')::{type_}"
    if base in ("character varying", "character") and "(" in type_:
        n = int(type_.split("(")[1].split(")")[0])
        return f"left('v' || ({g}), {n})::{type_}"
    if base == "character":
        return f"left('v' || ({g}), 1)"
    template = _VALUE.get(base)
    return template.format(g=g) if template else None


def column_exprs(conn: psycopg.Connection, table: str, rows: int) -> list[tuple[str, str | None, str]]:
    """(column, value expression over g or None to leave it to its default/NULL, identity kind)."""
    found = conn.execute("""
        SELECT a.attname, format_type(a.atttypid, a.atttypmod), t.typtype, a.attnotnull, a.attidentity,
               a.attgenerated, a.atthasdef,
               (SELECT format_type(pa.atttypid, pa.atttypmod) || '|' || pt.typtype::text
                  FROM pg_constraint k JOIN pg_attribute pa ON pa.attrelid = k.confrelid AND pa.attnum = k.confkey[1]
                  JOIN pg_type pt ON pt.oid = pa.atttypid
                 WHERE k.conrelid = a.attrelid AND k.contype = 'f' AND k.conkey = ARRAY[a.attnum]
                 LIMIT 1) AS fk,
               EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = a.attrelid AND k.contype IN ('p', 'u')
                        AND a.attnum = ANY (k.conkey)) AS keyed,
               EXISTS (SELECT 1 FROM pg_index x WHERE x.indrelid = a.attrelid AND x.indisunique
                        AND a.attnum = ANY (x.indkey)) AS unique_ix
        FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
        WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum""",
                         (table,)).fetchall()
    out = []
    for name, type_, typtype, notnull, identity, generated, hasdef, fk, keyed, unique in found:
        if generated:
            continue
        if fk:
            ptype, ptyptype = fk.split("|")
            out.append((name, _value(ptype, ptyptype, f"1 + (g % {rows})"), identity))
            continue
        if hasdef and not keyed and not unique and identity != "a":
            out.append((name, None, identity))  # its default (now(), false, a sequence …)
            continue
        out.append((name, _value(type_, typtype, "g"), identity))
    return out


def prepare_populated(clusters: Clusters, src: Source, rows: int) -> tuple[str, list, list, list[str]]:
    """A template on both clusters with the head applied by the bot's applier (history rows) and filled."""
    migrations = src.migrations()
    cut = int(len(migrations) * HEAD_SHARE)
    head, tail = migrations[:cut], migrations[cut:]
    name = f"{TEMPLATE}_{src.layout.replace('-', '_')}_filled"
    left: list[str] = []
    for env in ("prod", "staging"):
        clusters.admin(env, f"DROP DATABASE IF EXISTS {name}")
        clusters.admin(env, f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
        with psycopg.connect(clusters.url(env, name), autocommit=True) as conn:
            applier_mod.ensure_history(conn)
            applier = applier_mod.Applier(conn=conn, env=env)
            for m in head:
                outcome = applier.apply(m)
                if not outcome.ok:
                    raise RuntimeError(f"the head did not apply on {env}: {m.label}: {outcome.failure}")
            left = fill(conn, rows)
            conn.execute("VACUUM ANALYZE")
    return name, head, tail, left


def compare_populated(clusters: Clusters, src: Source, rows: int, state: Path) -> Report | None:
    note(f"{src.name}: applying the head and filling every table with {rows} rows, on both clusters")
    template, head, tail, left = prepare_populated(clusters, src, rows)
    if left:
        note(f"{src.name}: left empty by the filler: {', '.join(left[:6])}{' …' if len(left) > 6 else ''}")
    stmts = count_statements(tail)
    psql_s, gate_s, bare_s, report, crash, code, out = best_of(clusters, src, pending_files(tail), template, state)
    if code:
        note(f"psql failed on the tail of {src.name}: {out}")
    ms = (gate_s - psql_s) * 1000 / max(stmts, 1)
    print(f"   {src.name:34s} {len(head):4d}/{len(tail):<4d} {stmts:6d} {psql_s:8.2f}s {gate_s:9.2f}s "
          f"{gate_s / psql_s:6.2f}x {ms:8.2f}   {bare_s:6.2f}s {bare_s / psql_s:5.2f}x   {applied_all(report, len(tail))}")
    print(f"      {crash or (report.summary() if report else '')}")
    return report


# -- 4. blockers per 100 files ------------------------------------------------------------------------------


def blocker_counts(src: Source, tail_report: Report | None) -> None:
    migrations = src.migrations()
    n = len(migrations)
    try:
        dir_blockers = [f for f in lint_paths([str(src.root)]) if f.severity == "blocker" and f.allowed_reason is None]
        dir_text = f"{len(dir_blockers) * 100 / n:7.1f}"
    except Exception as exc:  # noqa: BLE001
        dir_blockers, dir_text = [], f"crashed ({type(exc).__name__})"
    try:
        set_blockers = [c for c in lint_checks(migrations, "") if c.status is Status.BLOCKER]
        set_text = f"{len(set_blockers) * 100 / n:7.1f}"
    except Exception as exc:  # noqa: BLE001
        set_blockers, set_text = [], f"crashed ({type(exc).__name__})"
    cut = int(n * HEAD_SHARE)
    tail_paths = {m.path for m in migrations[cut:]}
    tail_names = {Path(p).parent.name if src.layout == "prisma" else Path(p).name for p in tail_paths}
    planted_tail = [p for p in src.planted if Path(p[0]).parent.name in tail_names or Path(p[0]).name in tail_names]
    gate = [c for c in (tail_report.checks if tail_report else []) if c.status is Status.BLOCKER]
    statements = {(c.migration, c.details.get("line")) for c in gate}
    gate_text = f"{len(gate) * 100 / max(n - cut, 1):7.1f}" if tail_report else "   n/a"
    print(f"   {src.name:34s} lint DIR {dir_text}   gate lint, one set {set_text}   gate on populated tail "
          f"{gate_text} ({len(gate)} blocker lines on {len(statements)} statements; {len(planted_tail)} planted "
          f"in {n - cut} files)")
    for label, items in (("lint DIR", Counter(f.rule for f in dir_blockers)),
                         ("gate on tail", Counter(c.name for c in gate))):
        if items:
            print(f"      {label}: " + ", ".join(f"{k} {v}" for k, v in items.most_common(8)))
    if planted_tail:
        print("      planted in the tail: " + ", ".join(sorted({w for _, w in planted_tail})))
    if src.kinds and gate:
        by_path = {m.label: str(Path(m.path).relative_to(src.root)) for m in migrations}
        kinds = Counter(src.kinds.get(by_path.get(label, ""), "?") for label, _ in statements)
        print("      blocked statements by the kind of change their file makes: "
              + "; ".join(f"{k}: {v}" for k, v in kinds.most_common()))


# -- main ---------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Example:\n  .venv/bin/python bench/history_bench.py --dir "
                                            "~/src/app/prisma/migrations --format prisma",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", help="a checked-out project's migrations folder (instead of synthetic histories)")
    parser.add_argument("--format", default="auto", help="its layout: prisma, golang-migrate, flyway, dbmate, plain")
    parser.add_argument("--rows", type=int, default=20000, help="rows per table for the populated run (default 20000)")
    parser.add_argument("--sizes", default="100,200,400,800", help="history lengths for the lint timing")
    parser.add_argument("--prisma", type=int, default=160, help="synthetic Prisma history length (default 160)")
    parser.add_argument("--golang", type=int, default=260, help="synthetic golang-migrate pairs (default 260)")
    parser.add_argument("--skip-db", action="store_true", help="lint timing and static counts only")
    parser.add_argument("--sections", default="1,2,3,4", help="which of the four measurements to run (default all)")
    args = parser.parse_args(argv)
    sigterm_like_ctrl_c()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    work = Path(tempfile.mkdtemp(prefix="mb-history-"))
    clusters: Clusters | None = None
    try:
        if args.dir:
            sources = [Source(Path(args.dir).name, args.format, Path(args.dir).resolve())]
        else:
            sources = []
            for layout, n in (("prisma", args.prisma), ("golang-migrate", args.golang)):
                h = histories.LAYOUTS[layout](n)
                sources.append(Source(f"{layout} ({n})", layout, h.write(work / layout), h.planted, h.kinds))
            for layout in ("prisma", "golang-migrate"):
                if "1" in args.sections:
                    lint_scaling(layout, [int(x) for x in args.sizes.split(",")], work)
        if args.dir and "1" in args.sections:
            print("\n1. lint wall time (printed, not asserted)")
            for src in sources:
                r = time_lint(src)
                n = len(src.migrations())
                print(f"   {src.name}: {n} files; gate lint {r.get('gate', float('nan')):.2f}s, lint DIR "
                      f"{r.get('dir', float('nan')):.2f}s; parser runs {r.get('gate_parses', '?')} "
                      f"{r.get('gate_error', '')}{r.get('dir_error', '')}")
        tail_reports: dict[str, Report | None] = {}
        if not args.skip_db and ("2" in args.sections or "3" in args.sections):
            clusters = start_clusters(work / "pg")
        if clusters is not None and "2" in args.sections:
            print("\n2. validate vs one psql -f session, empty databases (printed, not asserted)")
            print(f"   {'history':34s} {'files':>5} {'stmts':>6} {'psql -f':>9} {'validate':>10} {'ratio':>7} "
                  f"{'gate ms/stmt':>8}   no pre-checks")
            for src in sources:
                if compare_empty(clusters, src, work):
                    compare_empty(clusters, with_semicolons(src, work / f"semi-{src.layout}"), work)
        if clusters is not None and "3" in args.sections:
            print(f"\n3. validate vs psql -f over the last {100 - int(HEAD_SHARE * 100)}% of the history, the rest "
                  f"applied and every table filled with {args.rows} rows")
            print(f"   {'history':34s} {'head/tail':>9} {'stmts':>6} {'psql -f':>9} {'validate':>10} {'ratio':>7} "
                  f"{'gate ms/stmt':>8}   no pre-checks")
            for src in sources:
                try:
                    tail_reports[src.name] = compare_populated(clusters, src, args.rows, work)
                    if tail_reports[src.name] is None:  # the gate crashed: time it on files it can read
                        semi = work / f"semi-{src.layout}"
                        fixed = Source(src.name + " (every file ending in ;)", src.layout, semi, src.planted,
                                       src.kinds) \
                            if semi.exists() else with_semicolons(src, semi)
                        compare_populated(clusters, fixed, args.rows, work)
                except RuntimeError as exc:
                    print(f"   {src.name}: {exc}")
        if "4" in args.sections:
            print("\n4. blockers per 100 files")
            for src in sources:
                blocker_counts(src, tail_reports.get(src.name))
    except KeyboardInterrupt:
        print("interrupted: the clusters were stopped and their directory removed", file=sys.stderr)
        return 130
    finally:
        if clusters is not None:
            devcluster.remove(clusters.base, list(clusters.started.values()))
        for var in ENV_VARS.values():
            os.environ.pop(var, None)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
