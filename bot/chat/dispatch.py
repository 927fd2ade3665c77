"""A parsed command -> the runs layer's commands. Shared by Slack and the terminal, so both faces behave alike."""

from __future__ import annotations

from bot import messages
from bot.chat import commands as cmd
from bot.runs.announcer import Reply
from bot.runs.commands import Commands
from bot.runs.lifecycle import StaleRun
from bot.runs.model import Kind
from bot.runs.runtime import Runtime


def dispatch(runtime: Runtime, command: cmd.Command, user: str, channel: str) -> Reply:
    """A parsed command -> one call in ``bot.runs.commands``; a run that moved meanwhile is a sentence."""
    try:
        return _dispatch(runtime, command, user, channel)
    except StaleRun:  # two people (or a replay) moved the same run at once: the other one won
        return Reply(False, messages.RUN_MOVED_ON.format(run_id=command.run_id or "that run"))


def _dispatch(runtime: Runtime, command: cmd.Command, user: str, channel: str) -> Reply:
    commands = Commands(runtime)
    name = command.name
    if name == "validate":
        return commands.start(Kind.VALIDATE, user, channel, ref=command.ref)
    if name == "refresh":
        return commands.start(Kind.REFRESH, user, channel)
    if name == "unblock":
        return commands.start(Kind.UNBLOCK, user, channel)
    if name == "deploy":
        return commands.deploy(command.run_id, user, now=command.now, resume=command.resume)
    if name == "status":
        return commands.status(command.run_id)
    if name == "approve":
        return commands.approve(command.run_id or "", user)
    if name == "reject":
        return commands.reject(command.run_id or "", user)
    if name == "cancel":
        return commands.cancel(command.run_id or "", user)
    if name == "triage":
        return commands.triage(command.run_id or "")
    if name == "history":
        return commands.history()
    if name == "windows":
        return commands.windows()
    if name == "digest":
        return commands.digest(command.database, user, channel)
    if name == "help":
        return Reply(True, cmd.help_text(idle_minutes=runtime.settings.gate.idle_in_transaction_minutes))
    return Reply(False, command.error or messages.COMMAND_UNREADABLE)  # one sentence; `/migrate help` has the rest
