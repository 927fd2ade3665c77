"""The workflow as the runs layer calls it: one method per thing a run does.

This is where a run's context (its git ref or commit, its fingerprint, who
asked, its window's end) becomes the workflow's options. The runtime
depends on this shape only (``runtime.Workflow``), so tests and the shell use
the real workflow without any Slack.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from bot import messages
from bot.config import Settings
from bot.errors import MigrateBotError
from bot.migrations import apply as applier_mod
from bot.migrations import gitsource
from bot.migrations.source import Migration, discover, set_fingerprint
from bot.pg import connection
from bot.runs.model import Run
from bot.runs.store import StateStore
from bot.workflow import activity, checks, deploy, estimate, orphans, resume, unblock, validate
from bot.workflow.report import Report, Status, run_step
from bot.workflow.schemactx import touched_tables
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


@dataclass(frozen=True)
class Preflight:
    """What only prod can say right before a scheduled deploy starts: "" = fine."""

    fingerprint_problem: str
    busy: str


def expected_pending(run: Run) -> str:
    """The fingerprint prod's pending set must have now: the approved set, or what a closing window left of it."""
    return str(run.data.get("expect_pending") or run.fingerprint)


class Steps:
    """The real workflow behind the runs layer."""

    def validate(self, settings: Settings, store: StateStore, run: Run, on_event: Callable) -> Report:
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

    def deploy(self, settings: Settings, store: StateStore, run: Run, on_event: Callable,
               deadline: datetime | None = None) -> Report:
        try:
            migrations, _ = migrations_for(settings, None, run.commit or None)
        except MigrateBotError as exc:
            return _failed("deploy", exc)
        deployer = run.data.get("deployed_by") or ("migrate-bot schedule" if run.scheduled_for else run.requested_by)
        options = deploy.DeployOptions(env_flag=True, run_id=run.id, requested_by=deployer,
                                       migrations=migrations, expected_fingerprint=expected_pending(run),
                                       validated_fingerprint=run.fingerprint, on_event=on_event,
                                       deadline=deadline, on_deadline=settings.deploy.on_window_close,
                                       resume=bool(run.data.get("resume")))
        return deploy.run(settings, store, options)

    def interrupted(self, settings: Settings, run: Run) -> Report:
        """What an interrupted deploy left on prod, and what a re-deploy must find pending (``expect_pending``)."""
        try:
            migrations, _ = migrations_for(settings, None, run.commit or None)
        except MigrateBotError as exc:
            return _failed("deploy", exc)
        return resume.interrupted(settings, migrations, run_id=run.id, approved=run.fingerprint)

    def idle_sessions(self, settings: Settings) -> list[dict[str, Any]]:
        with connection(database_url(settings, "prod"), env="prod") as prod:
            check = checks.idle_in_transaction(prod, "prod", settings.gate.idle_in_transaction_minutes)
        return list(check.details.get("sessions", []))

    def terminate(self, settings: Settings, pids: list[int]) -> Report:
        return unblock.run(settings, pids)

    def estimate(self, settings: Settings, store: StateStore, run: Run) -> estimate.Estimate:
        """How long the deploy will take: the validation's staging timings scaled to prod's table sizes."""
        found = store.passing_validation(run.fingerprint)
        report = Report.from_json(found["report"]) if found else Report(step="validate")
        margin, floor_s = settings.deploy.estimate_margin, settings.deploy.estimate_floor_s
        try:
            migrations, _ = migrations_for(settings, None, run.commit or None)
            with connection(database_url(settings, "prod"), env="prod") as prod, \
                    connection(database_url(settings, "staging"), env="staging") as staging:
                pending = applier_mod.plan(migrations, applier_mod.read_history(prod)).pending
                return estimate.measure(prod, staging, pending, report, margin=margin, floor_s=floor_s)
        except MigrateBotError:  # sizes unknown: the staging timings alone, unscaled, still say something
            timings = estimate.staging_seconds(report)
            return estimate.estimate(timings, {label: 1.0 for label in timings}, margin=margin, floor_s=floor_s)

    def preflight(self, settings: Settings, run: Run) -> Preflight:
        """Right before a scheduled deploy: is prod's pending set still the approved one, and is prod quiet?"""
        try:
            migrations, _ = migrations_for(settings, None, run.commit or None)
            with connection(database_url(settings, "prod"), env="prod") as prod:
                pending = applier_mod.plan(migrations, applier_mod.read_history(prod)).pending
                now = set_fingerprint(pending)
                d = settings.deploy
                quiet = checks.quiet_enough(prod, touched_tables(pending), max_active=d.max_active_sessions,
                                            max_idle_in_tx=d.max_idle_in_transaction)
        except MigrateBotError as exc:
            return Preflight("", messages.FIRE_PROD_UNREACHABLE.format(error=exc))
        problem = "" if now == expected_pending(run) else messages.FIRE_SET_CHANGED.format(
            now=now[:12], approved=expected_pending(run)[:12])
        return Preflight(problem, "" if quiet.status is Status.PASSED else quiet.message)

    def end_sessions(self, settings: Settings, run_ids: list[str]) -> dict[str, list[int]]:
        """End what dead runs left running on staging and prod: {env: [pids]}; an unreachable env is skipped."""
        ended: dict[str, list[int]] = {}
        for env in ("staging", "prod"):
            try:
                with connection(database_url(settings, env), env=env) as conn:
                    ended[env] = [int(r["pid"]) for r in orphans.end_sessions(conn, run_ids)]
            except MigrateBotError:
                continue
        return ended

    def traffic(self, settings: Settings) -> dict[str, int]:
        with connection(database_url(settings, "prod"), env="prod") as prod:
            return activity.sample(prod)
