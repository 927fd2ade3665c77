"""Score the static migration lint against tests/corpus, side by side with squawk.

Why: the gate's static lint should block what is dangerous and pass what is
safe; the corpus (tests/corpus/expected.toml) holds the expected verdict of
each migration on a live database. "block" is the positive class:

* precision: of the migrations a tool blocks, how many really are dangerous;
* recall: of the dangerous migrations, how many the tool blocks.

Scores are printed for every corpus file and for the files whose verdict can
be decided without a database (needs_db = false). squawk (PyPI `squawk-cli`)
runs on the same files when installed, in two readings: any violation blocks
(its default rule set includes style rules such as require-lock-timeout), and
only its hazard rules block (style/robustness rules listed in SQUAWK_STYLE are
ignored). Throughput (statements per second) is printed for both tools and
never asserted: it depends on the machine.

Run: .venv/bin/python bench/lint_score.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pglast import parse_sql  # noqa: E402

from bot.migrations.lint import lint_file, lint_sql  # noqa: E402
from bot.migrations.lint_parse import parsed_or_raise  # noqa: E402
from bot.migrations.lint_types import Ctx  # noqa: E402

CORPUS = ROOT / "tests" / "corpus"
SERVER_VERSION_NUM = 150000
SQUAWK_PG_VERSION = "15.0"

# squawk rules about style or re-runnability rather than locks, rewrites or
# breaking running code: they fire on nearly every file.
SQUAWK_STYLE = frozenset(
    {
        "require-lock-timeout",
        "require-statement-timeout",
        "prefer-robust-stmts",
        "prefer-text-field",
        "prefer-bigint-over-int",
        "prefer-bigint-over-smallint",
        "prefer-identity",
        "prefer-timestamptz",
        "ban-char-field",
        "require-enum-value-ordering",
        "require-table-schema",
    }
)


@dataclass
class Entry:
    """One corpus file with its expected verdict."""

    name: str
    path: Path
    sql: str
    verdict: str
    needs_db: bool
    before: str = ""  # an earlier migration of the same pending set, when the entry needs one


@dataclass
class Score:
    """Confusion counts with "block" as the positive class."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def add(self, predicted: str, expected: str) -> None:
        """Count one verdict."""
        if predicted == "block":
            self.tp += expected == "block"
            self.fp += expected != "block"
        else:
            self.fn += expected == "block"
            self.tn += expected != "block"

    def row(self) -> str:
        """TP FP FN TN precision recall F1, fixed width."""
        precision = self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0
        recall = self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return f"{self.tp:3d} {self.fp:3d} {self.fn:3d} {self.tn:3d}  {precision:5.2f}  {recall:5.2f}  {f1:5.2f}"


def load_corpus() -> list[Entry]:
    """Corpus files in name order, with their expected verdicts."""
    expected = tomllib.loads((CORPUS / "expected.toml").read_text(encoding="utf-8"))
    entries = []
    for name in sorted(expected):
        path = CORPUS / f"{name}.sql"
        spec = expected[name]
        entries.append(Entry(name, path, path.read_text(encoding="utf-8"), spec["verdict"], bool(spec["needs_db"]),
                             spec.get("before", "")))
    return entries


def lint_verdict(sql: str, before: str = "") -> str:
    """Our gate's static verdict: any blocker not suppressed by -- migrate:allow (after ``before``, as one set)."""
    if before:
        ctx = Ctx(server_version_num=SERVER_VERSION_NUM)
        lint_file(parsed_or_raise(before), ctx, same_set=True)
        findings = lint_file(parsed_or_raise(sql), ctx, same_set=True)
    else:
        findings = lint_sql(sql, server_version_num=SERVER_VERSION_NUM)
    return "block" if any(f.severity == "blocker" and f.allowed_reason is None for f in findings) else "pass"


def find_squawk() -> str | None:
    """squawk from the virtualenv next to this interpreter, else from PATH."""
    local = Path(sys.executable).parent / "squawk"
    return str(local) if local.exists() else shutil.which("squawk")


def run_squawk(squawk: str, paths: list[Path]) -> list[dict]:
    """squawk's JSON violations for the files (one process for all of them)."""
    proc = subprocess.run(
        [squawk, "--reporter", "json", f"--pg-version={SQUAWK_PG_VERSION}", *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"squawk failed ({proc.returncode}): {proc.stderr.strip()[:300]}")
    return json.loads(proc.stdout or "[]")


def squawk_verdicts(violations: list[dict], entries: list[Entry]) -> tuple[dict[str, str], dict[str, str]]:
    """(any rule blocks, hazard rules block) verdicts per corpus file name."""
    rules_by_file: dict[str, set[str]] = {}
    for v in violations:
        rules_by_file.setdefault(Path(v["file"]).stem, set()).add(v["rule_name"])
    every, hazard = {}, {}
    for e in entries:
        rules = rules_by_file.get(e.name, set())
        every[e.name] = "block" if rules else "pass"
        hazard[e.name] = "block" if rules - SQUAWK_STYLE else "pass"
    return every, hazard


def score(verdicts: dict[str, str], entries: list[Entry], static_only: bool) -> Score:
    """Confusion counts over all entries, or only those with needs_db = false."""
    s = Score()
    for e in entries:
        if not (static_only and e.needs_db):
            s.add(verdicts[e.name], e.verdict)
    return s


def count_statements(entries: list[Entry]) -> int:
    """Statements in the corpus, as PostgreSQL's parser splits them."""
    return sum(len(parse_sql(e.sql)) for e in entries)


def lint_throughput(entries: list[Entry], statements: int, min_seconds: float = 1.0) -> tuple[float, int, float]:
    """(statements/s, rounds, seconds) linting every corpus file, repeated for at least min_seconds."""
    rounds, start = 0, time.perf_counter()
    while True:
        for e in entries:
            lint_sql(e.sql, server_version_num=SERVER_VERSION_NUM)
        rounds += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return statements * rounds / elapsed, rounds, elapsed


def squawk_throughput(squawk: str, entries: list[Entry], statements: int, copies: int = 20) -> dict[str, float]:
    """squawk statements/s: one run over the corpus files, and one over a large concatenated file."""
    paths = [e.path for e in entries]
    start = time.perf_counter()
    for _ in range(3):
        run_squawk(squawk, paths)
    per_files = statements * 3 / (time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.sql"
        big.write_text("\n".join(e.sql.rstrip().rstrip(";") + ";" for e in entries * copies), encoding="utf-8")
        start = time.perf_counter()
        run_squawk(squawk, [big])
        one_file = statements * copies / (time.perf_counter() - start)
    return {"files": per_files, "big": one_file}


def big_file_lint_throughput(entries: list[Entry], statements: int, copies: int = 20) -> float:
    """Our statements/s on the same large concatenated file squawk gets."""
    text = "\n".join(e.sql.rstrip().rstrip(";") + ";" for e in entries * copies)
    start = time.perf_counter()
    lint_sql(text, server_version_num=SERVER_VERSION_NUM)
    return statements * copies / (time.perf_counter() - start)


def print_scores(tools: dict[str, dict[str, str]], entries: list[Entry]) -> None:
    """The side-by-side precision/recall table."""
    n_static = sum(not e.needs_db for e in entries)
    head = "TP  FP  FN  TN   prec  recall  F1  "
    print(f"{'':28s} all {len(entries)} files (live-DB verdicts)    {n_static} files with needs_db = false")
    print(f"{'tool':28s} {head}       {head}")
    for name, verdicts in tools.items():
        print(f"{name:28s} {score(verdicts, entries, False).row()}        {score(verdicts, entries, True).row()}")


def add_squawk(tools: dict[str, dict[str, str]], entries: list[Entry]) -> str | None:
    """Add squawk's two readings to ``tools`` when it is installed; returns its path (or None)."""
    squawk = find_squawk()
    if squawk:
        every, hazard = squawk_verdicts(run_squawk(squawk, [e.path for e in entries]), entries)
        tools["squawk (any violation)"] = every
        tools["squawk (hazard rules only)"] = hazard
    return squawk


def corpus_line(entries: list[Entry]) -> str:
    blocks = sum(e.verdict == "block" for e in entries)
    return (f"corpus: {len(entries)} files ({blocks} block / {len(entries) - blocks} pass), "
            f"{sum(e.needs_db for e in entries)} need a live database")


def compare(tools: dict[str, dict[str, str]], entries: list[Entry],
            print_table: Callable[[dict[str, dict[str, str]], list[Entry]], None]) -> str | None:
    """squawk added beside our tools, the score table, then each tool's misses; returns squawk's path (or None)."""
    squawk = add_squawk(tools, entries)
    print_table(tools, entries)
    if not squawk:
        print("squawk not installed")
    print()
    print_misses(tools, entries)
    return squawk


def print_misses(tools: dict[str, dict[str, str]], entries: list[Entry]) -> None:
    """Which files each tool gets wrong (needs_db files marked with *)."""
    for name, verdicts in tools.items():
        wrong = [f"{e.name}{'*' if e.needs_db else ''}" for e in entries if verdicts[e.name] != e.verdict]
        print(f"{name} wrong on {len(wrong)}: " + (", ".join(wrong) if wrong else "none"))


def main() -> int:
    """Print scores and throughput; exit 0 (numbers are reported, never asserted)."""
    entries = load_corpus()
    statements = count_statements(entries)
    print(f"{corpus_line(entries)}, {statements} statements\n")
    tools = {"migrate-bot lint": {e.name: lint_verdict(e.sql, e.before) for e in entries}}
    squawk = compare(tools, entries, print_scores)
    print("\nthroughput (statements/s; printed, not asserted):")
    rate, rounds, seconds = lint_throughput(entries, statements)
    print(f"  migrate-bot lint  corpus files : {rate:10,.0f} stmt/s  ({statements} statements x {rounds} rounds in {seconds:.2f} s)")
    print(f"  migrate-bot lint  one big file : {big_file_lint_throughput(entries, statements):10,.0f} stmt/s  (corpus x 20 in one file)")
    if squawk:
        rates = squawk_throughput(squawk, entries, statements)
        print(f"  squawk            corpus files : {rates['files']:10,.0f} stmt/s  (one process per run, start-up included)")
        print(f"  squawk            one big file : {rates['big']:10,.0f} stmt/s  (corpus x 20 in one file)")
    else:
        print("  squawk not installed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
