"""The terminal chat adapter: the same commands and run service, rendered for a terminal.

Like Hubot's shell adapter or Errbot's text backend: what you type is what a
Slack user would type, and you can speak or react as any named user, which
makes the shell both the demo and a chat-level test driver:

    /migrate validate                       as the current user
    @U_ADA /migrate deploy r-3f9a1c02       as another user
    react :white_check_mark: r-3f9a1c02 as U_ADA     (unreact … revokes)
    user U_ADA                              switch the current user
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field
from typing import Callable, TextIO

from bot.chat import commands as cmd
from bot.chat import render
from bot.chat.dispatch import dispatch
from bot.redact import redact
from bot.runs.announcer import Reply
from bot.runs.commands import Commands
from bot.runs.model import Run
from bot.runs.runtime import Runtime
from bot.workflow import triage as triage_mod
from bot.workflow.digest import Digest
from bot.workflow.report import Report

CHANNEL = "C_SHELL"
SHELL_HELP = """Type what you would type in Slack, e.g. `/migrate validate`.
  @USER /migrate …              speak as USER
  react :EMOJI: RUN-ID [as USER] react on a run's thread (unreact … removes it)
  user USER                     switch the current user
  wait                          wait for running work to finish
  quit"""


@dataclass
class ShellAnnouncer:
    """Prints run news as a threaded transcript."""

    out: TextIO = sys.stdout
    _threads: dict[str, str] = field(default_factory=dict)

    def _print(self, text: str) -> None:
        self.out.write(render.chat_commands(redact(render.terminal_text(text))) + "\n")
        self.out.flush()

    def run_started(self, run: Run) -> str:
        ts = f"thread-{run.id}"
        self._print(f"\n┌ {render.terminal_run(run)}   (asked by {run.requested_by})")
        return ts

    def run_updated(self, run: Run) -> None:
        self._print(f"│ {render.terminal_run(run)}")

    def say(self, run: Run, text: str, *, remember: str = "") -> str | None:
        for i, line in enumerate(text.splitlines() or [""]):
            self._print(("│ ↳ " if i == 0 else "│   ") + line)
        return None  # the shell reacts by run id, not on a reply

    def thread_link(self, run: Run) -> str:
        return ""  # one terminal, one conversation: the run id says it all

    def post(self, channel: str, text: str) -> str | None:
        self._print(f"\n┌ {text}")
        return None

    def digest(self, channel: str, digest: Digest, chart: bytes | None) -> None:
        from bot.workflow import digestrender

        lines = digestrender.text(digest).rstrip().splitlines()
        self._print("\n┌ " + lines[0])
        for line in lines[1:]:
            self._print("│ " + line)
        if chart:
            self._print(f"│ (a chart of {len(chart):,} bytes goes with it in Slack)")

    def report(self, run: Run, report: Report) -> None:
        for line in report.lines():
            self._print("│   " + line)
        findings = triage_mod.triage(report.checks)
        if findings:
            self._print("│ ↳ triage:")
            for line in triage_mod.render_text(findings).splitlines():
                self._print("│   " + line)


@dataclass
class Shell:
    runtime: Runtime
    user: str = "U_ME"
    out: TextIO = sys.stdout
    wait_after_each: bool = True  # the shell waits for runs so the transcript reads in order

    def _reply(self, reply: Reply | None) -> Reply | None:
        if reply is not None and reply.text:
            self.out.write(("" if reply.ok else "✗ ") + render.chat_commands(redact(render.terminal_text(reply.text)))
                           + "\n")
            self.out.flush()
        return reply

    def handle(self, line: str) -> Reply | None:
        """One line of input; returns the immediate reply (if any)."""
        line = line.strip()
        if not line:
            return None
        speaker = self.user
        if line.startswith("@"):
            speaker, _, line = line[1:].partition(" ")
            line = line.strip()
        reply = self._handle_as(speaker, line)
        if self.wait_after_each:
            self.runtime.executor.wait(timeout=600)
        return reply

    def _handle_as(self, user: str, line: str) -> Reply | None:
        if line.startswith("/migrate"):
            text = line[len("/migrate"):]
            return self._reply(dispatch(self.runtime, cmd.parse(text), user, CHANNEL))
        words = _split(line)
        if not words:
            return self._reply(Reply(False, "I couldn't read that line (unbalanced quotes?). " + SHELL_HELP))
        if words[0] in ("react", "unreact"):
            if len(words) not in (3, 5):
                return self._reply(Reply(False, f"Write it as: {words[0]} :EMOJI: RUN-ID [as USER]"))
            return self._react(words, user)
        if words[0] == "user" and len(words) == 2:
            self.user = words[1]
            return self._reply(Reply(True, f"You are now {self.user}."))
        if words[0] == "wait":
            self.runtime.executor.wait(timeout=600)
            return None
        if words[0] in ("help", "?"):
            return self._reply(Reply(True, SHELL_HELP))
        if words[0] in cmd.COMMANDS:  # `validate` for `/migrate validate`: nobody else is listening here
            return self._reply(dispatch(self.runtime, cmd.parse(line), user, CHANNEL))
        return self._reply(Reply(False, f"I don't know {words[0]!r}. " + SHELL_HELP))

    def _react(self, words: list[str], user: str) -> Reply | None:
        emoji, run_id = words[1].strip(":"), cmd.normalise_run_id(words[2]) or words[2]
        if len(words) == 5:
            if words[3] != "as":
                return self._reply(Reply(False, "Write it as: react :EMOJI: RUN-ID as USER"))
            user = words[4]
        run = self.runtime.store.get_run(run_id)
        if run is None:
            return self._reply(Reply(False, f"I can't find a run called {run_id}. `/migrate history` lists recent runs."))
        self.out.write(f"({user} {'reacts' if words[0] == 'react' else 'removes'} :{emoji}: on {run.id})\n")
        reply = Commands(self.runtime).react(run.channel, run.thread_ts, user, emoji, words[0] == "react")
        if reply is None:  # the service already answered in the thread otherwise
            self._reply(Reply(False, f"That reaction means nothing on {run.id}: nothing there awaits approval."))
        return reply

    def loop(self, read: Callable[[str], str] = input) -> None:
        self.out.write("migrate-bot shell — type `help` for how to speak as others, `quit` to leave.\n")
        while True:
            try:
                line = read(f"{self.user}> ")
            except (EOFError, KeyboardInterrupt):
                self.out.write("\n")
                return
            if line.strip() in ("quit", "exit"):
                return
            self.handle(line)


def _split(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError:
        return []
