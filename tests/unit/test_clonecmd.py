"""Running a clone script: its process group, its deadline, its output (no database needed)."""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from bot.redact import redact
from bot.workflow import clonecmd


def script(tmp_path: Path, body: str, name: str = "clone.sh") -> list[str]:
    path = tmp_path / name
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)
    return [str(path)]


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_the_last_stdout_line_is_where_the_copy_is(tmp_path: Path) -> None:
    result = clonecmd.run_script(script(tmp_path, 'echo working >&2\necho "postgresql://app@db/x"\necho\n'),
                                 dict(os.environ), 10)
    assert result.ok and result.returncode == 0
    assert result.last_stdout == "postgresql://app@db/x"
    assert sorted(result.lines) == [("err", "working"), ("out", ""), ("out", "postgresql://app@db/x")]


def test_a_failing_script_says_its_exit_code(tmp_path: Path) -> None:
    result = clonecmd.run_script(script(tmp_path, "exit 7\n"), dict(os.environ), 10)
    assert not result.ok
    assert result.how().startswith("exited 7 after ")


def test_the_data_as_of_line_is_read(tmp_path: Path) -> None:
    result = clonecmd.run_script(script(tmp_path, "echo MIGRATE_BOT_DATA_AS_OF=2026-03-01T02:00:00Z\necho x\n"),
                                 dict(os.environ), 10)
    assert result.data_as_of == datetime(2026, 3, 1, 2, tzinfo=timezone.utc)


def test_a_hanging_script_and_its_children_are_stopped_at_the_deadline(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    began = time.monotonic()
    result = clonecmd.run_script(script(tmp_path, f'sleep 300 & echo $! >> "{pids}"\necho $$ >> "{pids}"\nwait\n'),
                                 dict(os.environ), 0.5)
    assert time.monotonic() - began < 5
    assert result.timed_out and not result.ok
    assert result.how().startswith("did not finish within its timeout and was stopped (its whole process group)")
    assert not [pid for pid in map(int, pids.read_text().split()) if alive(pid)]


def test_a_script_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    began = time.monotonic()
    result = clonecmd.run_script(script(tmp_path, "trap '' TERM\necho stubborn\nwhile true; do sleep 0.1; done\n"),
                                 dict(os.environ), 0.3, grace_s=0.5)
    assert result.timed_out
    assert 0.7 < time.monotonic() - began < 5
    assert result.lines == [("out", "stubborn")]


def test_what_a_finished_script_left_running_is_ended(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    result = clonecmd.run_script(script(tmp_path, f'sleep 300 > /dev/null 2>&1 &\necho $! > "{pidfile}"\necho db\n'),
                                 dict(os.environ), 10)
    assert result.ok
    deadline = time.monotonic() + 5
    while alive(int(pidfile.read_text())) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(int(pidfile.read_text()))


def test_passwords_in_the_output_are_masked_and_remembered(tmp_path: Path) -> None:
    secret = "pw-only-the-script-knows-4417"
    result = clonecmd.run_script(script(tmp_path, f'echo "postgres://u:{secret}@h/db"\necho "again: {secret}"\n'
                                                  f'echo "host=h password={secret}x"\necho db\n'),
                                 dict(os.environ), 10)
    assert result.secrets_masked
    assert [line for _, line in result.lines] == ["postgres://u:***@h/db", "again: ***", "host=h password=***", "db"]
    assert redact(f"later {secret}") == "later ***"
    assert secret not in result.shown()


def test_a_script_that_says_nothing_secret_is_not_flagged(tmp_path: Path) -> None:
    assert not clonecmd.run_script(script(tmp_path, "echo fine\n"), dict(os.environ), 10).secrets_masked


def test_the_report_shows_only_the_last_lines(tmp_path: Path) -> None:
    result = clonecmd.run_script(script(tmp_path, "for i in $(seq 1 100); do echo line $i; done\n"),
                                 dict(os.environ), 10)
    shown = result.shown().splitlines()
    assert shown[0] == f"    | … {100 - clonecmd.SHOW_LINES} earlier lines not shown"
    assert shown[1:] == [f"    | line {i}" for i in range(100 - clonecmd.SHOW_LINES + 1, 101)]


def test_long_lines_are_cut_and_the_total_stays_within_the_cap(tmp_path: Path) -> None:
    result = clonecmd.run_script(script(tmp_path, "for i in $(seq 1 20); do printf 'x%.0s' $(seq 1 900); echo; done\n"),
                                 dict(os.environ), 10)
    assert all(len(line) <= clonecmd.LINE_CHARS + 1 for _, line in result.lines)
    assert len(result.shown()) <= clonecmd.SHOW_CHARS + 100


def test_a_missing_script_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        clonecmd.run_script([str(tmp_path / "nope.sh")], dict(os.environ), 10)


def test_ctrl_c_while_it_runs_stops_the_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pids = tmp_path / "pids"
    argv = script(tmp_path, f'sleep 300 & echo $! >> "{pids}"\necho $$ >> "{pids}"\nwait\n')
    real_wait = clonecmd.subprocess.Popen.wait

    def interrupted(self, timeout=None):
        if timeout is not None:  # the deadline wait: Ctrl-C arrives once the script is running
            while not pids.exists() or len(pids.read_text().split()) < 2:
                time.sleep(0.02)
            raise KeyboardInterrupt
        return real_wait(self)

    monkeypatch.setattr(clonecmd.subprocess.Popen, "wait", interrupted)
    with pytest.raises(KeyboardInterrupt):
        clonecmd.run_script(argv, dict(os.environ), 60, grace_s=1)
    monkeypatch.undo()
    deadline = time.monotonic() + 5
    while any(alive(int(p)) for p in pids.read_text().split()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in pids.read_text().split() if alive(int(p))]
