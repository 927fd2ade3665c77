"""What the benches share: progress notes, their throwaway clusters, their child processes, their start and stop.

The benches are scripts (``.venv/bin/python bench/gate_bench.py``, ``make bench``); each puts the repository
root on ``sys.path`` and imports this as ``bench.benchlib``. Only what several benches do the same way lives
here; what one bench does differently (gate_bench's file copies, digest_bench's single tuned cluster, the
order of a bench's own cleanup) stays visible in that bench.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, TypeVar

T = TypeVar("T")

import psycopg

from bot import devcluster
from bot.interrupts import sigterm_like_ctrl_c

ROOT = Path(__file__).resolve().parents[1]
EXTENSIONS = ("pg_trgm", "citext", "uuid-ossp")  # in every bench database, as in an application's


def note(message: str) -> None:
    """Progress goes to stderr so stdout is only the results."""
    print(f"… {message}", file=sys.stderr, flush=True)


def machine() -> str:
    """The header's machine line: the benches' figures only compare within one run on one (shared) machine."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"- machine: {os.cpu_count()} cores ({affinity} usable), {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()} — shared with other work")


# -- the command line ----------------------------------------------------------------------------------------

def arg_parser(doc: str, example: str) -> argparse.ArgumentParser:
    """``--help`` shows the bench's docstring's first paragraph and one example command."""
    return argparse.ArgumentParser(description=doc.split("\n\n")[0], epilog=f"Example:\n  {example}",
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def run_interruptible(work: Callable[[], None],
                      stopped: str = "the clusters were stopped and their directory removed") -> int:
    """Run ``work``; Ctrl-C and SIGTERM end it through its own ``finally`` (exit 130, saying ``stopped``).

    SIGINT is set back to raising KeyboardInterrupt because a shell starts a background job with it ignored,
    and a bench left running there would keep its clusters after the terminal is gone.
    """
    sigterm_like_ctrl_c()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        work()
    except KeyboardInterrupt:
        print(f"interrupted: {stopped}", file=sys.stderr)
        return 130
    return 0


def alternating(repeats: int, sides: tuple[str, str], run_once: Callable[[int, str], T]) -> list[dict[str, T]]:
    """Both sides ``repeats`` times, the first side first in even repeats and last in odd ones, so neither is
    always the one that meets warm caches; returns each repeat's results by side."""
    runs = []
    for rep in range(repeats):
        order = sides if rep % 2 == 0 else sides[::-1]
        runs.append({side: run_once(rep, side) for side in order})
    return runs


def write_files(folder: Path, files: dict[str, str]) -> Path:
    """A migration set (file name -> text) written into ``folder``, created if need be; returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


# -- child processes -----------------------------------------------------------------------------------------

def clean_env() -> dict[str, str]:
    """This environment without anything that would point a child `migrate-bot` or `psql` at another database."""
    drop = ("PROD_DATABASE_URL", "STAGING_DATABASE_URL", "STAGING_VALIDATION_PASSED", "SLACK_API_URL")
    return {k: v for k, v in os.environ.items() if not k.startswith(("PG", "MIGRATE_BOT_")) and k not in drop}


def migrate_bot() -> str:
    """The `migrate-bot` executable: the project's venv's, else the one beside this Python."""
    path = ROOT / ".venv" / "bin" / "migrate-bot"
    return str(path if path.exists() else Path(sys.executable).parent / "migrate-bot")


class Children:
    """The subprocesses a bench started and has not reaped yet.

    A stop (error, Ctrl-C, SIGTERM) calls ``kill_all`` before the clusters go, so no `migrate-bot` or `psql`
    is left running against a removed data directory.
    """

    def __init__(self) -> None:
        self.running: list[subprocess.Popen] = []

    def start(self, cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
        """``cmd`` with stdout and stderr captured together, as text."""
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.running.append(proc)
        return proc

    def finish(self, proc: subprocess.Popen, timeout: float = 300, *,
               kill_on_timeout: bool = True) -> tuple[int, str]:
        """Wait for ``proc``: (exit code, output).

        Past ``timeout`` it is killed and its output says so: a hung run is a result to print. With
        ``kill_on_timeout=False`` TimeoutExpired ends the bench instead (``kill_all`` then reaps it).
        """
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            if not kill_on_timeout:
                raise
            proc.kill()
            out, _ = proc.communicate()
            out += f"\n[bench: killed after {timeout:.0f} s]"
        self.running.remove(proc)
        return proc.returncode, out

    def kill_all(self) -> None:
        for proc in list(self.running):
            proc.kill()
            proc.wait()


# -- throwaway clusters --------------------------------------------------------------------------------------

@dataclass
class Clusters:
    """Throwaway clusters (prod, staging) in one folder, and the databases a bench clones on them.

    Every measured side runs on its own ``CREATE DATABASE … TEMPLATE`` copy, so no run sees another's
    leftovers. ``file_copy`` is gate_bench's way: ``STRATEGY FILE_COPY`` and a CHECKPOINT after it, so the
    copy's writes are flushed before anything is timed; the other benches take PostgreSQL's default copy.
    """

    base: Path
    template: str
    file_copy: bool = False
    started: dict[str, devcluster.LocalCluster] = field(default_factory=dict)
    copies: int = 0

    @property
    def workdir(self) -> Path:
        """The bench's own files (configs, migration sets, reports): removed with the clusters."""
        return self.base / "work"

    def start(self, passwords: dict[str, str]) -> None:
        """A cluster per environment, in ``passwords``' order; ``remove`` stops those that did start."""
        for env, password in passwords.items():
            note(f"starting the {env} cluster in {self.base}")
            self.started[env] = devcluster.create_cluster(self.base, env, password)

    def remove(self) -> None:
        note("removing the clusters")
        devcluster.remove(self.base, list(self.started.values()))

    def url(self, env: str, dbname: str) -> str:
        return self.started[env].url(dbname)

    def admin(self, env: str, statement: str) -> None:
        """One statement on ``env``'s maintenance database, outside a transaction (CREATE/DROP DATABASE)."""
        with psycopg.connect(self.url(env, "postgres"), autocommit=True) as conn:
            conn.execute(statement)

    def fresh(self, env: str, label: str, template: str | None = None) -> str:
        """A new database ``<label>_<n>`` on ``env``, cloned from ``template`` (by default ``self.template``)."""
        self.copies += 1
        name = f"{label}_{self.copies}"
        if self.file_copy:
            self.admin(env, f"CREATE DATABASE {name} TEMPLATE {template or self.template} STRATEGY FILE_COPY")
            self.admin(env, "CHECKPOINT")
        else:
            self.admin(env, f"CREATE DATABASE {name} TEMPLATE {template or self.template}")
        return name

    def drop(self, env: str, name: str) -> None:
        self.admin(env, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def seed_all(self, seed: Callable[[devcluster.LocalCluster], None]) -> float:
        """``seed`` on every cluster at once (one core each), as seeding is most of a bench's set-up; returns seconds."""
        started = time.perf_counter()
        errors: list[BaseException] = []

        def work(cluster: devcluster.LocalCluster) -> None:
            try:
                seed(cluster)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(c,), daemon=True) for c in self.started.values()]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(timeout=0.5)  # short joins keep Ctrl-C responsive
        if errors:
            raise errors[0]
        return time.perf_counter() - started


def seed_template(cluster: devcluster.LocalCluster, name: str, statements: Iterable[str] = ()) -> None:
    """Create database ``name`` on ``cluster`` with EXTENSIONS, then run ``statements`` in it (autocommit, so
    VACUUM may be one of them)."""
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    with psycopg.connect(cluster.url(name), autocommit=True) as conn:
        for ext in EXTENSIONS:
            conn.execute(f'CREATE EXTENSION IF NOT EXISTS "{ext}"')
        for statement in statements:
            conn.execute(statement)
