"""Running pg_dump and pg_restore: arguments, credentials, child processes.

Passwords reach the tools only through each child's own environment
(``PGPASSWORD``), never on the command line, where ``ps`` would show them to
every user of the machine; the connection string on the command line has the
password removed. Everything a tool prints is redacted before it is kept.

Children are started with ``PR_SET_PDEATHSIG`` (Linux): if the bot is killed
mid-restore, pg_dump and pg_restore die with it instead of finishing a restore
nobody will swap in. The next refresh removes what they left behind.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bot.errors import ToolMissing
from bot.redact import redact, register
from bot.workflow.dumpplan import ToolResult, is_chatter

APP_NAME = "migrate-bot-refresh"
LOCK_WAIT_MS = 60_000  # pg_dump gives up instead of queueing behind DDL on prod forever
KEEP_LINES = 200
# --no-owner/--no-privileges: the staging user owns everything and prod's roles need not exist there.
# No subscriptions or publications: staging must never replicate from or to anyone.
RESTORE_FLAGS = ("--no-owner", "--no-privileges", "--no-tablespaces", "--no-subscriptions", "--no-publications",
                 "--no-security-labels")

LineSink = Callable[[str], None]


@dataclass(frozen=True)
class Endpoint:
    """One side of the copy: a connection string without password, and the password apart."""

    env: str  # "prod" / "staging"
    conninfo: str
    password: str | None

    @classmethod
    def from_url(cls, url: str, env: str) -> "Endpoint":
        params = conninfo_to_dict(url)
        password = params.pop("password", None)
        register(password)
        return cls(env=env, conninfo=make_conninfo(**params), password=password or None)

    def child_env(self, *, options: str = "") -> dict[str, str]:
        """The bot's environment minus anything carrying a secret, plus this side's password.

        pg_dump never sees the staging password and pg_restore never sees
        prod's, even though both URLs sit in the bot's own environment.
        """
        env = {key: value for key, value in os.environ.items() if redact(value) == value}
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        env["PGAPPNAME"] = APP_NAME
        env.setdefault("PGCONNECT_TIMEOUT", "10")
        if options:
            env["PGOPTIONS"] = f"{env.get('PGOPTIONS', '')} {options}".strip()
        return env


def tool(name: str) -> str:
    """The path of pg_dump/pg_restore, or ToolMissing with what to install."""
    found = shutil.which(name)
    if not found:
        raise ToolMissing(
            f"{name} is needed to refresh staging but was not found on PATH.",
            "Install the PostgreSQL client tools matching prod's major version "
            "(e.g. apt-get install -y postgresql-client-15).",
        )
    return found


@lru_cache(maxsize=8)
def tool_major(path: str) -> int:
    """Major version of a client tool ("pg_dump (PostgreSQL) 15.18" -> 15); asked once per process."""
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False).stdout
    digits = out.strip().rsplit(" ", 1)[-1].split(".")[0]
    return int(digits) if digits.isdigit() else 0


def dump_argv(pg_dump: str, src: Endpoint, *, directory: Path | None = None, jobs: int = 1) -> list[str]:
    """Custom format to stdout (streamed), or directory format with ``jobs`` workers; never compressed."""
    argv = [pg_dump, "--compress=0", f"--lock-wait-timeout={LOCK_WAIT_MS}", f"--dbname={src.conninfo}"]
    if directory is None:
        return argv + ["--format=custom"]
    return argv + ["--format=directory", f"--jobs={jobs}", "--no-sync", "--verbose", f"--file={directory}"]


def restore_argv(pg_restore: str, dst: Endpoint, *, directory: Path | None = None, jobs: int = 1) -> list[str]:
    argv = [pg_restore, "--verbose", *RESTORE_FLAGS, f"--dbname={dst.conninfo}"]
    if directory is None:
        return argv
    return argv + [f"--jobs={jobs}", "--format=directory", str(directory)]


# --- children ------------------------------------------------------------------

def _find_prctl() -> Callable[..., int] | None:
    """prctl(2), resolved once in the parent: dlopen between fork and exec could deadlock a threaded bot."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _find_prctl()
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGKILL this child when the bot (the thread that forked it) dies."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL)


class Children:
    """Child processes that never outlive the step: whatever still runs on exit is killed."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def spawn(self, argv: list[str], env: dict[str, str], **kwargs) -> subprocess.Popen:
        preexec = _die_with_parent if _PRCTL is not None else None
        proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True, errors="replace",
                                preexec_fn=preexec, **kwargs)
        self.procs.append(proc)
        return proc

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            proc.wait()


@contextmanager
def children() -> Iterator[Children]:
    kids = Children()
    try:
        yield kids
    finally:
        kids.kill_all()


class _Lines:
    """Redacted non-chatter lines of one stream, read on a thread or in the caller's loop."""

    def __init__(self) -> None:
        self.kept: deque[str] = deque(maxlen=KEEP_LINES)

    def take(self, line: str) -> str:
        clean = redact(line.rstrip("\n"))
        if clean.strip() and not is_chatter(clean):
            self.kept.append(clean)
        return clean

    def read_all(self, stream, on_line: LineSink | None = None) -> None:
        for line in stream:
            clean = self.take(line)
            if on_line is not None:
                on_line(clean)

    def drain_in_thread(self, stream) -> threading.Thread:
        thread = threading.Thread(target=self.read_all, args=(stream,), daemon=True)
        thread.start()
        return thread

    def result(self, tool_name: str, returncode: int) -> ToolResult:
        return ToolResult(tool_name, returncode, tuple(self.kept))


def stream(pg_dump: str, pg_restore: str, src: Endpoint, dst: Endpoint, on_line: LineSink,
           restore_options: str = "") -> tuple[ToolResult, ToolResult]:
    """``pg_dump -Fc | pg_restore``: one job, nothing on disk. ``on_line`` sees pg_restore's verbose lines."""
    dump_lines, restore_lines = _Lines(), _Lines()
    with children() as kids:
        dump = kids.spawn(dump_argv(pg_dump, src), src.child_env(), stdout=subprocess.PIPE)
        restore = kids.spawn(restore_argv(pg_restore, dst), dst.child_env(options=restore_options),
                             stdin=dump.stdout, stdout=subprocess.DEVNULL)
        dump.stdout.close()  # pg_restore holds the read end now; pg_dump sees EPIPE if it dies
        reader = dump_lines.drain_in_thread(dump.stderr)
        restore_lines.read_all(restore.stderr, on_line)
        restore_rc, dump_rc = restore.wait(), dump.wait()
        reader.join()
    return dump_lines.result("pg_dump", dump_rc), restore_lines.result("pg_restore", restore_rc)


def run_tool(kids: Children, argv: list[str], env: dict[str, str], on_line: LineSink) -> ToolResult:
    """One tool to completion, its verbose stderr fed to ``on_line`` as it comes."""
    lines = _Lines()
    proc = kids.spawn(argv, env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    lines.read_all(proc.stderr, on_line)
    return lines.result(Path(argv[0]).name, proc.wait())


def via_directory(pg_dump: str, pg_restore: str, src: Endpoint, dst: Endpoint, jobs: int, workdir: Path,
                  on_dump_line: LineSink, on_restore_line: LineSink,
                  restore_options: str = "") -> tuple[ToolResult, ToolResult | None]:
    """``pg_dump -Fd -j N`` into ``workdir``, then ``pg_restore -j N``; the restore is skipped if the dump failed."""
    target = workdir / "dump"
    with children() as kids:
        dumped = run_tool(kids, dump_argv(pg_dump, src, directory=target, jobs=jobs), src.child_env(), on_dump_line)
        if dumped.returncode != 0:
            return dumped, None
        argv = restore_argv(pg_restore, dst, directory=target, jobs=jobs)
        restored = run_tool(kids, argv, dst.child_env(options=restore_options), on_restore_line)
    return dumped, restored
