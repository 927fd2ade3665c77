"""The workflow as the run service calls it: one function per run kind.

This is where a run's context (its git ref or commit, its fingerprint, who
asked) becomes the workflow's options. The service depends on this shape
only, so tests and the shell use the real workflow without any Slack.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from bot.config import Settings
from bot.errors import MigrateBotError
from bot.migrations import gitsource
from bot.migrations.source import Migration, discover
from bot.pg import connection
from bot.runs.model import Run
from bot.runs.store import Store
from bot.workflow import checks, deploy, validate
from bot.workflow.report import Report, run_step
from bot.workflow.targets import database_url


def migrations_for(settings: Settings, ref: str | None, commit: str | None) -> tuple[list[Migration], str]:
    """(migrations, commit) from the configured source; a commit pins exactly what was validated."""
    source = settings.migrations
    if not source.repo:
        return discover(source.dir, source.format), ""
    cache = Path(settings.state.path).parent / "git-cache"
    folder, resolved = gitsource.checkout(source.repo, commit or ref or source.branch or None, source.path, cache)
    return discover(folder, source.format), resolved


def _failed(step: str, exc: MigrateBotError) -> Report:
    def fail(report: Report) -> None:
        raise exc

    return run_step(step, fail)


class Steps:
    """The real workflow behind the run service."""

    def validate(self, settings: Settings, store: Store, run: Run, on_event: Callable) -> Report:
        try:
            migrations, commit = migrations_for(settings, run.ref or None, None)
        except MigrateBotError as exc:
            return _failed("validate", exc)
        options = validate.GateOptions(run_id=run.id, commit=commit or None, requested_by=run.requested_by,
                                       migrations=migrations, on_event=on_event)
        report = validate.run(settings, store, options)
        report.facts["commit"] = commit
        return report

    def refresh(self, settings: Settings, run: Run, on_event: Callable) -> Report:
        from bot.workflow import refresh

        return refresh.run(settings, refresh.RefreshOptions(on_event=on_event))

    def deploy(self, settings: Settings, store: Store, run: Run, on_event: Callable) -> Report:
        try:
            migrations, _ = migrations_for(settings, None, run.commit or None)
        except MigrateBotError as exc:
            return _failed("deploy", exc)
        options = deploy.DeployOptions(env_flag=True, run_id=run.id, requested_by=run.requested_by,
                                       migrations=migrations, expected_fingerprint=run.fingerprint,
                                       on_event=on_event)
        return deploy.run(settings, store, options)

    def idle_sessions(self, settings: Settings) -> list[dict[str, Any]]:
        with connection(database_url(settings, "prod"), env="prod") as prod:
            check = checks.idle_in_transaction(prod, "prod", settings.gate.idle_in_transaction_minutes)
        return list(check.details.get("sessions", []))

    def terminate(self, settings: Settings, pids: list[int]) -> Report:
        report = Report(step="unblock")
        minutes = settings.gate.idle_in_transaction_minutes
        try:
            with connection(database_url(settings, "prod"), env="prod") as prod:
                done = checks.terminate_idle(prod, minutes, pids)
        except MigrateBotError as exc:
            report.error = str(exc)
            return report.finish()
        gone = sorted(set(pids) - set(done))
        report.passed("unblock", f"terminated {len(done)} session(s): {', '.join(map(str, done)) or 'none'}"
                      + (f"; {len(gone)} had already finished or were no longer idle" if gone else ""))
        return report.finish()

