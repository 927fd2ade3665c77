"""Runs in worker processes: validate, refresh and deploy each work in a child, so the bot's process only answers.

Why: a run is mostly Python (parsing, lint, trace, report building) and holds
the GIL for long stretches; three of them in the bot's process made the answer
to a plain `/migrate status` wait seconds (bench/ack_latency.py). In a child,
a run competes for a CPU core, not for the interpreter that answers people.

The parent stays the run's owner: it holds the environment lease and beats
its heartbeat, turns the child's progress events into the thread's live line
and stores the final report, exactly as for a run in a thread. The child only
runs the workflow step (``steps.Steps``), with its own state-store connection
(the ledger of validations and deploys) and the run id on its sessions, so
recovery finds what a dead run left behind the same way.

The protocol is one pickle in (our own parent, never the network) and JSON
lines out, on a pipe of its own so nothing the workflow prints can be taken for
a message: ``{"kind": …, "data": …}`` per event, ``{"report": …}`` once at the
end. Both are redacted in the child, which is where the secrets were resolved.

A child never outlives the thread that started it (``PR_SET_PDEATHSIG``, which
the child asks for itself: no Python runs between fork and exec in a threaded
bot): a SIGKILLed bot leaves no run working on its own, and recovery marks it
interrupted as before.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

from bot.config import Settings
from bot.redact import redact
from bot.runs.model import Run
from bot.runs.steps import Steps
from bot.runs.store import StateStore
from bot.workflow.dumprestore import _PRCTL, PR_SET_PDEATHSIG
from bot.workflow.report import Report

log = logging.getLogger(__name__)
WORKER_LOST = "worker_lost"  # a report fact: the child ended without a report of its own


@dataclass(frozen=True)
class Request:
    """What a child needs to run one step: the settings hold secret references, never secrets."""

    step: str  # validate | refresh | deploy
    settings: Settings
    run: Run
    deadline: datetime | None = None
    verbose: bool = False
    json_logs: bool = False


class ProcessSteps(Steps):
    """``Steps`` whose long steps run in a child process (``[runs] workers = "processes"``, the default)."""

    def validate(self, settings: Settings, store: StateStore, run: Run, on_event: Callable) -> Report:
        return self.in_child(Request("validate", settings, run, **_logging()), on_event)

    def refresh(self, settings: Settings, run: Run, on_event: Callable) -> Report:
        return self.in_child(Request("refresh", settings, run, **_logging()), on_event)

    def deploy(self, settings: Settings, store: StateStore, run: Run, on_event: Callable,
               deadline: datetime | None = None) -> Report:
        return self.in_child(Request("deploy", settings, run, deadline, **_logging()), on_event)

    def in_child(self, request: Request, on_event: Callable[[str, dict], None]) -> Report:
        """``request`` in a child; a child that ended without its report had its database sessions ended."""
        report, died = in_child(request, on_event)
        if report is not None:
            return report
        try:
            ended = self.end_sessions(request.settings, [request.run.id])
        except Exception as exc:  # noqa: BLE001 - the run's error says what is known
            log.warning("could not end the sessions of %s: %s", request.run.id, type(exc).__name__)
            ended = {}
        pids = [f"{env} pid {pid}" for env, found in ended.items() for pid in found]
        left = f"; its database sessions were ended ({', '.join(pids)})" if pids else ""
        report = _error(request.step, died + left)
        report.facts[WORKER_LOST] = True  # a deploy becomes interrupted: what prod holds is read and told
        return report


def workflow_for(settings: Settings) -> Steps:
    """The workflow ``runs.workers`` asks for."""
    return ProcessSteps() if settings.runs.workers == "processes" else Steps()


def _logging() -> dict[str, bool]:
    """The child logs like its parent: the same level, text or JSON (``bot.logs``)."""
    from bot.logs import JsonFormatter

    root = logging.getLogger()
    return {"verbose": root.getEffectiveLevel() <= logging.INFO,
            "json_logs": any(isinstance(h.formatter, JsonFormatter) for h in root.handlers)}


# -- the parent's side -------------------------------------------------------------------------------
def in_child(request: Request, on_event: Callable[[str, dict], None]) -> tuple[Report | None, str]:
    """Run ``request`` in a child and wait for it; its events reach ``on_event`` as they come.

    Returns (the child's report, "") or (None, what happened to it): a child that could not start or ended
    without a report (killed, out of memory) is a sentence, never an exception.
    """
    read_fd, write_fd = os.pipe()
    try:
        # no preexec_fn: forking a threaded bot and running Python before exec can deadlock (the child asks
        # for PR_SET_PDEATHSIG itself, first thing); a new session: a terminal's Ctrl-C is the bot's to handle
        proc = subprocess.Popen([sys.executable, "-m", "bot.runs.worker", str(write_fd), str(os.getpid())],
                                stdin=subprocess.PIPE, pass_fds=(write_fd,), start_new_session=True)
    except OSError as exc:
        os.close(read_fd)
        return None, f"could not start a worker process ({exc.strerror or type(exc).__name__})"
    finally:
        os.close(write_fd)
    report: Report | None = None
    with os.fdopen(read_fd, "r", encoding="utf-8", errors="replace") as lines:
        try:
            assert proc.stdin is not None
            proc.stdin.write(pickle.dumps(request))
            proc.stdin.close()
        except BrokenPipeError:
            pass  # it died at once: its exit status says how
        for line in lines:
            report = _take(line, on_event) or report
    code = proc.wait()
    if report is not None:
        return report, ""
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"ended with exit code {code}"
    return None, f"the worker process running it (pid {proc.pid}) {how} before it reported"


def _take(line: str, on_event: Callable[[str, dict], None]) -> Report | None:
    """One line from the child: an event is passed on (a failing display never stops the run), a report returned."""
    try:
        message = json.loads(line)
    except ValueError:
        log.warning("a worker process wrote a line that is not JSON (%d characters); ignored", len(line))
        return None
    if "report" in message:
        return Report.from_json(message["report"])
    try:
        on_event(str(message.get("kind", "")), dict(message.get("data") or {}))
    except Exception as exc:  # noqa: BLE001 - progress is shown, not stored: the run goes on
        log.warning("showing a run's progress failed: %s", type(exc).__name__)
    return None


AFTER_LOST = {
    "validate": "Ask for it again; a migration that runs without a transaction may have left statements on staging, "
                "which `/migrate refresh` clears.",
    "refresh": "Staging was only changed if its thread shows a PASSED refresh-swap line; ask for it again.",
    "deploy": "What prod holds now is read and said in the deploy's thread.",
}


def _error(step: str, reason: str) -> Report:
    report = Report(step=step)
    report.error = f"The {step} did not finish: {reason}. {AFTER_LOST.get(step, '')}".strip()
    return report.finish()


# -- the child's side --------------------------------------------------------------------------------
class _Events:
    """The pipe back to the parent; events come from the step's threads too (a dump's progress reader)."""

    def __init__(self, fd: int) -> None:
        self._out = os.fdopen(fd, "w", encoding="utf-8")
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        line = redact(json.dumps(message, default=str, ensure_ascii=True))
        with self._lock:
            self._out.write(line + "\n")
            self._out.flush()

    def event(self, kind: str, data: dict) -> None:
        self.send({"kind": kind, "data": data})


def run_request(request: Request, events: _Events) -> Report:
    from bot.pg import run_context
    from bot.runs.store import open_state

    steps = Steps()
    with run_context(request.run.id):
        if request.step == "refresh":
            return steps.refresh(request.settings, request.run, events.event)
        store = open_state(request.settings)  # the ledger: validations recorded, deploys checked against them
        try:
            if request.step == "validate":
                return steps.validate(request.settings, store, request.run, events.event)
            return steps.deploy(request.settings, store, request.run, events.event, request.deadline)
        finally:
            store.close()


def _die_with(parent_pid: int) -> None:
    """SIGKILL this process when the thread that started it ends; if the parent is gone already, go now."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # it died before the request above took effect
        os._exit(1)


def main(argv: list[str]) -> int:
    from bot.logs import configure

    _die_with(int(argv[1]))
    events = _Events(int(argv[0]))
    request: Request = pickle.load(sys.stdin.buffer)
    configure(verbose=request.verbose, json_lines=request.json_logs)
    try:
        report = run_request(request, events)
    except Exception as exc:  # noqa: BLE001 - the parent is told, in the report it waits for
        log.error("worker for %s %s crashed: %s", request.step, request.run.id, type(exc).__name__)
        report = _error(request.step, f"unexpected {type(exc).__name__} — this is a bug in migrate-bot")
    report.facts["worker_pid"] = os.getpid()  # which process did the work, for the logs and for the curious
    events.send({"report": report.to_json()})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
