"""How to copy prod into staging, and how far along the copy is (pure functions).

Two ways to move a database with pg_dump/pg_restore, and neither wins everywhere
(measured on 2 cores; bench/refresh_bench.py repeats it):

* ``pipe`` — ``pg_dump -Fc | pg_restore``, one job, nothing on disk. Dumping and
  restoring already overlap (two processes, two servers), so one large table
  goes fastest this way: 4.8 s against 5.7 s for the directory format.
* ``directory`` — ``pg_dump -Fd -j N`` into a temp dir, then ``pg_restore -j N``.
  It pays to write and re-read every byte and cannot start restoring before the
  dump is complete, but then N tables (and their index builds) load at once:
  six indexed tables, 9.7 s against 12.8 s streamed.

So the choice is a small cost model over the catalog (table sizes including
indexes): streaming costs about the total; the directory format costs a fixed
share of the total for its disk round trip plus the larger of the biggest table
and total/jobs. That reproduces the rule of thumb — parallel only when the
largest table is well under half of the total — and picks the job count.

Both ways run uncompressed (``-Z 0``): the bytes never leave the machine, and on
2 cores gzip was the single largest cost (the standard pipe took 8.4 s on the
table that ``-Z 0`` streams in 4.3 s).

The second half turns ``pg_dump``/``pg_restore --verbose`` lines into progress
(tables and bytes done) for chat renderers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

PIPE = "pipe"
DIRECTORY = "directory"
METHODS = (PIPE, DIRECTORY)

MIN_PARALLEL_BYTES = 64 * 1024 * 1024  # below this, process start-up dominates: stream it
MAX_JOBS = 8  # each job is a connection on both servers and a maintenance_work_mem on staging
DISK_ROUND_TRIP = 0.35  # share of the total the directory format pays to write and re-read its files
WORTH_IT = 0.90  # a parallel plan must be at least 10% cheaper than streaming…
EXTRA_JOB_WORTH_IT = 0.95  # …and each extra job at least 5% cheaper than one fewer


def choose_method(tables: list[tuple[str, int]], cores: int) -> tuple[str, int]:
    """(method, jobs) for copying ``tables`` — (name, bytes incl. indexes) — with ``cores`` CPUs.

    Pure, so the rule can be tested and explained without a database.
    """
    sizes = [max(int(size), 0) for _, size in tables]
    total = sum(sizes)
    if cores < 2 or len(sizes) < 2 or total < MIN_PARALLEL_BYTES:
        return PIPE, 1
    largest = max(sizes)
    best_jobs, best_cost = 1, float(total)
    for jobs in range(2, min(cores, MAX_JOBS, len(sizes)) + 1):
        cost = directory_cost(total, largest, jobs)
        threshold = WORTH_IT if best_jobs == 1 else EXTRA_JOB_WORTH_IT
        if cost < best_cost * threshold:
            best_jobs, best_cost = jobs, cost
    return (PIPE, 1) if best_jobs == 1 else (DIRECTORY, best_jobs)


def directory_cost(total: int, largest: int, jobs: int) -> float:
    """Relative cost of the directory format, in "bytes streamed" units (streaming = total)."""
    return DISK_ROUND_TRIP * total + max(float(largest), total / jobs)


def plural(n: int, word: str) -> str:
    """``1 table``, ``2 tables``, ``1 index``, ``3 indexes``."""
    if n == 1:
        return f"1 {word[:-2] if word.endswith('xes') else word[:-1] if word.endswith('s') else word}"
    return f"{n} {word}"


def human_bytes(size: int) -> str:
    """1024-based like pg_size_pretty, so numbers match what a DBA sees in psql."""
    value = float(size)
    for unit in ("bytes", "kB", "MB", "GB"):
        if value < 10 * 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "bytes" or value >= 10 else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.0f} TB"  # pragma: no cover - loop always returns


# --- progress from --verbose output --------------------------------------------

_STARTED = re.compile(r'^pg_(?:restore|dump): (?:processing data for table|dumping contents of table) "(?P<name>.+)"$')
_FINISHED = re.compile(r"^pg_(?:restore|dump): finished item \d+ TABLE DATA (?P<name>.+)$")
_POST_DATA = re.compile(r"^pg_restore: creating (?:INDEX|CONSTRAINT|FK CONSTRAINT|TRIGGER|RULE|POLICY) ")
_SEQUENTIAL_OTHER = re.compile(r"^pg_restore: (?:creating|executing|processing|launching) ")
_CHATTER = re.compile(
    r"^pg_(?:restore|dump): (?:creating|executing|processing|launching|finished|connecting|entering|reading|"
    r"identifying|finding|flagging|saving|dumping|last built-in|implied data-only|skipping|"
    r"while PROCESSING TOC|from TOC entry|restoring|reducing|transferring|disabling|enabling)"
)


@dataclass
class Progress:
    """Tables and bytes done, fed one verbose line at a time.

    Sequential pg_restore says only when a table *starts*; the table before it
    is then done, and so is the last one when anything else follows. Parallel
    runs (and pg_dump -j) also say ``finished item … TABLE DATA <name>``.
    """

    sizes: dict[str, int]  # "schema.table" -> bytes
    parallel: bool = False
    phase: str = "schema"
    running: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)

    @property
    def tables_total(self) -> int:
        return len(self.sizes)

    @property
    def bytes_total(self) -> int:
        return sum(self.sizes.values())

    @property
    def bytes_done(self) -> int:
        return sum(self.sizes.get(name, 0) for name in self.done)

    def feed(self, line: str) -> bool:
        """Read one line; True when tables done or the phase changed (worth an event)."""
        before = (self.phase, len(self.done))
        line = line.rstrip("\n")
        started = _STARTED.match(line)
        finished = _FINISHED.match(line)
        if started:
            if not self.parallel:
                self._finish_running()
            self.running.append(started.group("name"))
            self.phase = "dump" if line.startswith("pg_dump") else "restore"
        elif finished:
            self._finish_named(finished.group("name"))
        elif not self.parallel and self.running and _SEQUENTIAL_OTHER.match(line):
            self._finish_running()
        if _POST_DATA.match(line) and self.phase == "restore" and len(self.done) >= self.tables_total:
            self.phase = "indexes"
        return (self.phase, len(self.done)) != before

    def start_phase(self, phase: str) -> None:
        """A new pass over the tables (directory format: dump, then restore)."""
        self.phase, self.running, self.done = phase, [], []

    def complete(self) -> None:
        self._finish_running()
        self.done = list(dict.fromkeys(self.done + [n for n in self.sizes if n not in self.done]))

    def _finish_running(self) -> None:
        self.done += [n for n in self.running if n not in self.done]
        self.running = []

    def _finish_named(self, bare: str) -> None:
        """``finished item`` names the table without its schema: match it to a running one."""
        for name in self.running:
            if name == bare or name.endswith("." + bare):
                self.running.remove(name)
                if name not in self.done:
                    self.done.append(name)
                return

    def snapshot(self) -> dict[str, int]:
        """Counters for an event (the phase travels separately)."""
        return {
            "tables_done": min(len(self.done), self.tables_total),
            "tables_total": self.tables_total,
            "bytes_done": min(self.bytes_done, self.bytes_total),
            "bytes_total": self.bytes_total,
        }


def is_chatter(line: str) -> bool:
    """Verbose progress noise, as opposed to errors and warnings worth keeping."""
    return bool(_CHATTER.match(line))


@dataclass(frozen=True)
class ToolResult:
    """What one pg_dump / pg_restore run left behind: exit code and its non-chatter lines."""

    tool: str
    returncode: int
    messages: tuple[str, ...] = ()

    @property
    def killed(self) -> bool:
        return self.returncode < 0

    @property
    def broken_pipe(self) -> bool:
        """pg_dump stopped only because the pg_restore it fed had died: a symptom, not the cause."""
        return self.returncode == -13 or any("Broken pipe" in m for m in self.messages)

    @property
    def ignored_errors(self) -> bool:
        """pg_restore finished but skipped failing statements ("errors ignored on restore: N")."""
        return self.returncode == 1 and any("errors ignored on restore" in m for m in self.messages)

    @property
    def lost_data(self) -> bool:
        """A table's rows did not load — staging would silently miss data."""
        return any("COPY failed for table" in m for m in self.messages)

    def summary(self, limit: int = 3) -> str:
        """The first few error lines, one sentence-ish string (already redacted by the caller)."""
        errors = [m for m in self.messages if "error:" in m] or list(self.messages)
        shown = [" ".join(m.split())[:300] for m in errors[:limit]]
        more = f" (and {len(errors) - limit} more)" if len(errors) > limit else ""
        return "; ".join(shown) + more if shown else f"{self.tool} exited with code {self.returncode}"
