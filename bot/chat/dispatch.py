"""A parsed command -> the run service. Shared by Slack and the terminal, so both faces behave alike."""

from __future__ import annotations

from bot.chat import commands as cmd
from bot.runs.model import Kind
from bot.runs.service import Reply, RunService


def dispatch(service: RunService, command: cmd.Command, user: str, channel: str) -> Reply:
    """A parsed command -> the run service. Shared by Slack and the terminal."""
    name = command.name
    if name == "validate":
        return service.start(Kind.VALIDATE, user, channel, ref=command.ref)
    if name == "refresh":
        return service.start(Kind.REFRESH, user, channel)
    if name == "unblock":
        return service.start(Kind.UNBLOCK, user, channel)
    if name == "deploy":
        return service.deploy(command.run_id, user)
    if name == "status":
        return service.status(command.run_id)
    if name == "cancel":
        return service.cancel(command.run_id or "", user)
    if name == "triage":
        return service.triage(command.run_id or "")
    if name == "history":
        return service.history()
    if name == "help":
        return Reply(True, cmd.help_text())
    return Reply(False, (command.error + "\n\n" if command.error else "") + cmd.help_text(command.suggestion))
