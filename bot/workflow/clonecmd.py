"""Running a team's clone script: its own process group, a deadline, redacted output.

The contract the script is held to (``refresh.method = "command"``; the
README's "Refresh through your clone engine" is the long version):

- **in**: the environment below, never a password — variables whose value
  holds a secret the bot knows (the database URLs) are removed, so a script
  that needs credentials fetches them itself (a ``.pgpass``, its own secret
  store). Its libpq clients announce themselves as ``PGAPPNAME``.
- **out**: the last non-empty line on stdout is the URL (or the bare name) of
  the database it made on the staging server; a line
  ``MIGRATE_BOT_DATA_AS_OF=<ISO 8601 time>`` anywhere on stdout says how old
  the snapshot's data is (optional).
- **exit code** 0 = made; anything else = failed, nothing is swapped.
- **timeout**: ``refresh.timeout_s``; then SIGTERM to the whole process
  group, SIGKILL after a grace period. Whatever the script leaves running in
  its group when it exits is ended too (it would hold the output pipes open).

Every line is redacted as it is read (registered secrets, URL and ``password=``
passwords, which are registered on sight so a bare repeat is masked too) and
only the last lines are kept, for the report.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from bot.redact import redact, register
from bot.workflow.dumprestore import _PRCTL, _die_with_parent

log = logging.getLogger(__name__)

GRACE_S = 5.0  # SIGTERM, then this long before SIGKILL
KEEP_LINES = 200  # per run, for the report (the rest is counted)
LINE_CHARS = 500
SHOW_LINES = 30  # in the report's line
SHOW_CHARS = 2500
DATA_AS_OF = "MIGRATE_BOT_DATA_AS_OF="
_DSN_PASSWORD = re.compile(r"\bpassword\s*=\s*('[^']*'|\S+)", re.IGNORECASE)

LineSink = Callable[[str], None]


@dataclass
class ScriptResult:
    argv: list[str]
    returncode: int | None  # None: killed after the timeout
    seconds: float
    lines: list[tuple[str, str]] = field(default_factory=list)  # ("out"|"err", redacted line), last KEEP_LINES
    total_lines: int = 0
    last_stdout: str = ""  # the raw last non-empty stdout line (may hold a password: never shown as is)
    data_as_of: datetime | None = None
    secrets_masked: bool = False  # something in the output was masked

    @property
    def timed_out(self) -> bool:
        return self.returncode is None

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def how(self) -> str:
        """ "exited 0 after 1.2s", "exited 3 after 0.1s", "was killed by signal 9 after 2.0s" """
        if self.returncode is None:
            return f"did not finish within its timeout and was stopped (its whole process group) after {self.seconds:.1f}s"
        if self.returncode < 0:
            return f"was killed by signal {-self.returncode} after {self.seconds:.1f}s"
        return f"exited {self.returncode} after {self.seconds:.1f}s"

    def shown(self) -> str:
        """The output's last lines for the report, indented so no line can pass for a gate line."""
        picked: list[str] = []
        size = 0
        for stream, line in reversed(self.lines):
            text = f"    | {'stderr: ' if stream == 'err' else ''}{line}"
            if len(picked) >= SHOW_LINES or size + len(text) > SHOW_CHARS:
                break
            picked.append(text)
            size += len(text) + 1
        left_out = self.total_lines - len(picked)
        head = [f"    | … {left_out} earlier line{'s' if left_out != 1 else ''} not shown"] if left_out else []
        return "\n".join(head + picked[::-1])


def register_passwords(line: str) -> None:
    """A URL's or a DSN's password in the output is a secret from now on, wherever it turns up again."""
    for token in line.split():
        if "://" in token and "@" in token:
            try:
                register(urlsplit(token.strip("'\"<>()")).password)
            except ValueError:
                pass
    for found in _DSN_PASSWORD.finditer(line):
        register(found.group(1).strip("'"))


def _parse_when(text: str) -> datetime | None:
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


class _Output:
    """Both streams' lines, in arrival order, redacted as they are read."""

    def __init__(self, on_line: LineSink | None) -> None:
        self.kept: deque[tuple[str, str]] = deque(maxlen=KEEP_LINES)
        self.total = 0
        self.last_stdout = ""
        self.data_as_of: datetime | None = None
        self.masked = False
        self.on_line = on_line
        self.lock = threading.Lock()

    def take(self, stream: str, raw: str) -> None:
        raw = raw.rstrip("\r\n")
        register_passwords(raw)
        clean = redact(raw)
        with self.lock:
            self.masked = self.masked or clean != raw
            self.total += 1
            self.kept.append((stream, clean[:LINE_CHARS] + ("…" if len(clean) > LINE_CHARS else "")))
            if stream == "out" and raw.strip():
                self.last_stdout = raw.strip()
                if raw.strip().startswith(DATA_AS_OF):
                    self.data_as_of = _parse_when(raw.strip()[len(DATA_AS_OF):]) or self.data_as_of
        log.info("clone script %s: %s", stream, clean)
        if self.on_line is not None:
            self.on_line(clean)

    def read(self, stream: str, pipe) -> None:
        for raw in pipe:
            self.take(stream, raw)


def _signal_group(pgid: int, sig: int) -> bool:
    """Signal the whole group; False when nobody is left in it."""
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _group_alive(pgid: int) -> bool:
    """Anyone in the group still running. Zombies do not count: an orphan is reaped by whoever is PID 1,
    which in a container may take its time, and a zombie holds no pipe and no connection."""
    proc = Path("/proc")
    if not proc.is_dir():
        return _signal_group(pgid, 0)
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def _stop_group(proc: subprocess.Popen, pgid: int, grace_s: float) -> None:
    """SIGTERM to everyone in the group, SIGKILL to whoever is still there after ``grace_s``; reap the leader."""
    if _signal_group(pgid, signal.SIGTERM):
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if proc.poll() is not None and not _group_alive(pgid):
                break
            time.sleep(0.05)
        _signal_group(pgid, signal.SIGKILL)
    proc.wait()


def run_script(argv: list[str], env: dict[str, str], timeout_s: float, on_line: LineSink | None = None,
               grace_s: float | None = None) -> ScriptResult:
    """Run ``argv`` in a new session (its own process group) until it exits or ``timeout_s`` passes.

    Raises OSError when it cannot be started (not found, not executable).
    Ctrl-C (or SIGTERM, which the CLI turns into one) stops the group too.
    """
    grace_s = GRACE_S if grace_s is None else grace_s
    output = _Output(on_line)
    began = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, errors="replace", start_new_session=True,
                            preexec_fn=_die_with_parent if _PRCTL is not None else None)
    pgid = proc.pid  # start_new_session: the script leads its own group
    readers = [threading.Thread(target=output.read, args=(name, pipe), daemon=True)
               for name, pipe in (("out", proc.stdout), ("err", proc.stderr))]
    for reader in readers:
        reader.start()
    returncode: int | None = None
    try:
        try:
            returncode = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            returncode = None
    finally:
        _stop_group(proc, pgid, grace_s if returncode is None else 0.0)  # leftovers of a finished script too
        for reader in readers:
            reader.join(timeout=grace_s)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    with output.lock:
        return ScriptResult(argv=list(argv), returncode=returncode, seconds=time.monotonic() - began,
                            lines=list(output.kept), total_lines=output.total, last_stdout=output.last_stdout,
                            data_as_of=output.data_as_of, secrets_masked=output.masked)
