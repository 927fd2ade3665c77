"""What the runs layer says to people, and the shape a chat face implements to say it.

A Protocol, like ``workflow.ledger``: the runs layer never imports Slack or
the terminal; ``chat/slack_app.py`` and ``chat/shell.py`` implement this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bot.runs.model import Run
from bot.workflow.digest import Digest
from bot.workflow.report import Report


class Announcer(Protocol):
    """What a chat adapter does with run news. Implementations must not raise for chat hiccups."""

    def run_started(self, run: Run) -> str:
        """Post the run's parent message; return its ts (the thread)."""

    def run_updated(self, run: Run) -> None:
        """Edit the parent message in place to show the current state."""

    def say(self, run: Run, text: str, *, remember: str = "") -> str | None:
        """A short reply in the run's thread; ``remember``: store its ts in the run's data under that key once
        it is posted (a prompt whose reactions count as approvals)."""

    def report(self, run: Run, report: Report) -> None:
        """Per-check details, triage and the full log, as thread replies."""

    def thread_link(self, run: Run) -> str:
        """Where a person can open the run's thread (a URL in Slack), or "" when the chat has none."""

    def post(self, channel: str, text: str) -> str | None:
        """A message of its own in ``channel`` (not about a run); returns its ts when the chat has one."""

    def digest(self, channel: str, digest: Digest, chart: bytes | None) -> None:
        """The pg_stat_statements digest in ``channel``, with its chart when there is one."""


@dataclass(frozen=True)
class Reply:
    """The immediate answer to a command (ephemeral in Slack, printed in the shell)."""

    ok: bool
    text: str
    run: Run | None = None
