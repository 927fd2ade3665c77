"""Score the gate's verdict on tests/corpus, next to the static lint and squawk.

Why: ``bench/lint_score.py`` scores what can be decided from the SQL alone,
but the corpus verdicts are verdicts *on a live database* — whether a type
change rewrites, whether existing rows violate a constraint, whether a
function is volatile. This bench runs the real gate in-process
(``bot.workflow.validate.run``: static lint, pre-flight, the apply on staging
with its trace and data pre-checks, post-checks) on every corpus entry and
scores its verdict: block when ``report.exit_code != 0``.

For each entry: a fresh database on a throwaway prod and a throwaway staging
cluster (``bot.devcluster``; removed at the end, also on error, Ctrl-C or
SIGTERM), cloned from a template with the runbook's extensions; the entry's
``setup`` SQL on both, so staging equals prod as after a refresh; then the gate
with ``Settings()`` defaults whose databases are secret references
(``env:GATE_SCORE_PROD_URL``, ``env:GATE_SCORE_STAGING_URL``).

"block" is the positive class: precision = of the migrations blocked, how many
are dangerous; recall = of the dangerous migrations, how many are blocked.
Scores are printed over all entries and over the needs_db entries (the ones
whose verdict needs a live database). Throughput is printed, never asserted.

Run: .venv/bin/python bench/gate_score.py
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from bench.lint_score import (  # noqa: E402  (corpus loading, scoring and squawk: shared with the lint bench)
    compare,
    corpus_line,
    CORPUS,
    Entry,
    Score,
    lint_verdict,
    load_corpus,
)
from bot import devcluster  # noqa: E402
from bot.config import Databases, Settings, State  # noqa: E402
from bot.interrupts import sigterm_like_ctrl_c  # noqa: E402
from bot.migrations.source import build  # noqa: E402
from bot.runs.store.sqlite import SqliteStore  # noqa: E402
from bot.workflow import validate  # noqa: E402
from bot.workflow.report import Report, Status  # noqa: E402

PASSWORDS = {"prod": "gate-score-prod-3Hq8", "staging": "gate-score-stg-7Wd2"}
ENV_VARS = {"prod": "GATE_SCORE_PROD_URL", "staging": "GATE_SCORE_STAGING_URL"}
TEMPLATE = "gate_score_template"
EXTENSIONS = ("pg_trgm", "citext", "uuid-ossp")


@dataclass
class GateResult:
    """The gate's verdict on one corpus entry, with what it took to reach it."""

    entry: Entry
    report: Report
    seconds: float  # validate.run alone

    @property
    def verdict(self) -> str:
        return "block" if self.report.exit_code != 0 else "pass"

    @property
    def failing(self) -> list[str]:
        """Names of the checks that failed the gate (or the error, for exit 2)."""
        names = [c.name for c in self.report.failures]
        return names + ([f"error: {self.report.error}"] if self.report.error else [])


@dataclass
class Clusters:
    """The throwaway prod and staging clusters, and where they live."""

    base: Path
    started: dict[str, devcluster.LocalCluster] = field(default_factory=dict)

    def admin(self, env: str, statement: str) -> None:
        with psycopg.connect(self.started[env].url("postgres"), autocommit=True) as conn:
            conn.execute(statement)

    def run_sql(self, env: str, dbname: str, text: str) -> None:
        with psycopg.connect(self.started[env].url(dbname), autocommit=True) as conn:
            conn.execute(text)


def note(message: str) -> None:
    """Progress goes to stderr, so stdout holds only the results."""
    print(f"… {message}", file=sys.stderr, flush=True)


def start_clusters(clusters: Clusters) -> None:
    """Both clusters, each with a template database that has the runbook's extensions."""
    for env in ("prod", "staging"):
        note(f"starting the {env} cluster in {clusters.base}")
        clusters.started[env] = devcluster.create_cluster(clusters.base, env, PASSWORDS[env])
        clusters.admin(env, f"CREATE DATABASE {TEMPLATE}")
        clusters.run_sql(env, TEMPLATE, "".join(f'CREATE EXTENSION IF NOT EXISTS "{ext}";' for ext in EXTENSIONS))


def gate_settings(state_dir: Path) -> Settings:
    """Defaults everywhere; databases are env references (the clusters have passwords)."""
    return Settings(
        databases=Databases(prod=f"env:{ENV_VARS['prod']}", staging=f"env:{ENV_VARS['staging']}"),
        state=State(path=str(state_dir / "state.db")),
        source="bench/gate_score.py",
    )


def run_entry(clusters: Clusters, settings: Settings, store: SqliteStore, entry: Entry, setup: str) -> GateResult:
    """Fresh databases, the entry's setup on both sides, then the gate on its one migration."""
    dbname = f"score_{entry.name}"
    for env in ("prod", "staging"):
        clusters.admin(env, f"CREATE DATABASE {dbname} TEMPLATE {TEMPLATE}")
    try:
        for env in ("prod", "staging"):
            if setup.strip():
                clusters.run_sql(env, dbname, setup)
            os.environ[ENV_VARS[env]] = clusters.started[env].url(dbname)
        version, _, name = entry.name.partition("_")
        migrations = [build(version.lstrip("c"), name, str(entry.path), entry.sql)]
        if entry.before:  # an earlier migration of the same pending set
            migrations.insert(0, build(version.lstrip("c") + ".0", "before", f"{entry.path} (before)", entry.before))
        started = time.perf_counter()
        report = validate.run(settings, store, validate.GateOptions(migrations=migrations))
        return GateResult(entry, report, time.perf_counter() - started)
    finally:
        for env in ("prod", "staging"):
            clusters.admin(env, f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")


def run_gate(entries: list[Entry], setups: dict[str, str]) -> tuple[list[GateResult], float]:
    """The gate on every entry (clusters started and always removed here); (results, wall seconds)."""
    clusters = Clusters(base=Path(tempfile.mkdtemp(prefix="mb-gate-score-")))
    try:
        start_clusters(clusters)
        settings = gate_settings(clusters.base)
        store = SqliteStore(settings.state.path)
        started, results = time.perf_counter(), []
        for i, entry in enumerate(entries, 1):
            note(f"[{i}/{len(entries)}] {entry.name}")
            results.append(run_entry(clusters, settings, store, entry, setups[entry.name]))
        return results, time.perf_counter() - started
    finally:
        note("removing the clusters")
        devcluster.remove(clusters.base, list(clusters.started.values()))
        for var in ENV_VARS.values():
            os.environ.pop(var, None)


def subset_score(verdicts: dict[str, str], entries: list[Entry]) -> Score:
    """Confusion counts of one tool over some entries."""
    s = Score()
    for e in entries:
        s.add(verdicts[e.name], e.verdict)
    return s


def print_table(tools: dict[str, dict[str, str]], entries: list[Entry]) -> None:
    """Precision/recall/F1 of every tool, over all entries and over the needs_db entries."""
    live = [e for e in entries if e.needs_db]
    head = "TP  FP  FN  TN   prec  recall  F1  "
    print(f"{'':28s} {f'all {len(entries)} files':44s}{len(live)} files with needs_db = true")
    print(f"{'tool':28s} {head}       {head}")
    for name, verdicts in tools.items():
        print(f"{name:28s} {subset_score(verdicts, entries).row()}        {subset_score(verdicts, live).row()}")


def print_disagreements(results: list[GateResult], show_lines: bool) -> None:
    """file, expected, got, failing checks — and the report's lines that say why, to investigate."""
    wrong = [r for r in results if r.verdict != r.entry.verdict]
    print(f"\ngate disagreements: {len(wrong)}")
    for r in wrong:
        failing = ", ".join(r.failing) or "no failing check"
        print(f"  {r.entry.name}{'*' if r.entry.needs_db else ''}: expected {r.entry.verdict}, got {r.verdict} "
              f"(exit {r.report.exit_code}) — {failing}")
        if show_lines:
            notable = [c for c in r.report.checks if c.status is not Status.PASSED or c.name.startswith("trace.")]
            for check in notable:
                for line in check.line().splitlines():
                    print(f"      {line}")
            print(f"      {r.report.summary()}")


def print_live_entries(results: list[GateResult]) -> None:
    """What decided each needs_db entry: the evidence static rules cannot have."""
    print("\ngate on the needs_db entries:")
    for r in results:
        if r.entry.needs_db:
            mark = "ok " if r.verdict == r.entry.verdict else "BAD"
            print(f"  {mark} {r.entry.name:44s} expected {r.entry.verdict:5s} got {r.verdict:5s} "
                  f"{', '.join(r.failing) or '-'}")


def print_throughput(results: list[GateResult], wall_s: float) -> None:
    """Migrations per second through the gate (printed, never asserted: it depends on the machine)."""
    gate_s = sum(r.seconds for r in results)
    slowest = max(results, key=lambda r: r.seconds)
    print("\nthroughput (printed, not asserted):")
    print(f"  gate (validate.run)      : {len(results) / gate_s:6.2f} migrations/s  "
          f"({len(results)} migrations in {gate_s:.1f} s; slowest {slowest.entry.name} {slowest.seconds:.2f} s)")
    print(f"  with per-entry setup     : {len(results) / wall_s:6.2f} migrations/s  "
          f"(fresh databases + setup SQL on both clusters included, {wall_s:.1f} s)")


def main(argv: list[str] | None = None) -> int:
    """Print scores, disagreements and throughput; exit 0 (numbers are reported, never asserted)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Example:\n  .venv/bin/python bench/gate_score.py --quiet",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quiet", action="store_true", help="list disagreements without their report lines")
    args = parser.parse_args(argv)
    sigterm_like_ctrl_c()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background (SIG_IGN)
    entries = load_corpus()
    setups = {name: spec.get("setup", "") for name, spec in
              tomllib.loads((CORPUS / "expected.toml").read_text(encoding="utf-8")).items()}
    try:
        results, wall_s = run_gate(entries, setups)
    except KeyboardInterrupt:
        print("interrupted: the clusters were stopped and their directory removed", file=sys.stderr)
        return 130
    print(f"{corpus_line(entries)}\n")
    tools = {"migrate-bot gate (live)": {r.entry.name: r.verdict for r in results},
             "migrate-bot lint (static)": {e.name: lint_verdict(e.sql, e.before) for e in entries}}
    compare(tools, entries, print_table)
    print_live_entries(results)
    print_disagreements(results, show_lines=not args.quiet)
    print_throughput(results, wall_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
