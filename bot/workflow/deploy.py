"""Production deploy (runbook step 5A): only after a pass, then spot checks and hold-backs.

A deploy is bound to the exact migration set that passed: the fingerprint of
prod's pending set must match a passing validation in the state store. The
advisory lock is taken before anything is read, so two deploys can never
interleave. Cleanup (contract-phase) migrations wait ``cleanup_hold_days``
after the previous deploy; migrations are applied strictly in order, so a
held one also holds everything after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import psycopg

from bot.config import Settings
from bot.migrations import apply as applier_mod
from bot.migrations.source import Migration, discover, set_fingerprint
from bot.pg import connection
from bot.workflow.ledger import Ledger
from bot.workflow import checks
from bot.workflow.applying import apply_in_order, drift_checks
from bot.workflow.report import Report, Status, run_step
from bot.workflow.targets import database_url


@dataclass
class DeployOptions:
    env_flag: bool = False  # STAGING_VALIDATION_PASSED=true (the runbook's belt and braces)
    run_id: str | None = None
    requested_by: str | None = None
    migrations: list[Migration] | None = None
    now: datetime | None = None  # for hold-back arithmetic; None = the clock
    expected_fingerprint: str | None = None  # the run service binds a deploy run to what was approved
    on_event: applier_mod.EventSink = field(default=applier_mod._ignore)


def held_back(pending: list[Migration], history: dict[str, applier_mod.HistoryRow], hold: timedelta,
              now: datetime) -> tuple[list[Migration], list[tuple[Migration, str]]]:
    """Split pending into (to apply, held with reason). Pure.

    The previous deploy is the newest ``applied_at`` on prod; non-cleanup
    migrations earlier in this same set count as a deploy happening now.
    """
    last = max((row.applied_at for row in history.values()), default=None)
    to_apply: list[Migration] = []
    held: list[tuple[Migration, str]] = []
    for m in pending:
        if held:
            held.append((m, f"waits behind held {held[0][0].label} (migrations apply in order)"))
            continue
        if m.cleanup:
            baseline = now if to_apply else last
            if baseline is not None and now - baseline < hold:
                until = (baseline + hold).strftime("%Y-%m-%d %H:%M UTC")
                held.append((m, f"cleanup migration held until {until} ({hold.days} days after the previous deploy)"))
                continue
        to_apply.append(m)
    return to_apply, held


def run(settings: Settings, store: Ledger, options: DeployOptions | None = None) -> Report:
    options = options or DeployOptions()
    return run_step("deploy", lambda report: _deploy(settings, store, options, report))


def _deploy(settings: Settings, store: Ledger, options: DeployOptions, report: Report) -> None:
    migrations = options.migrations if options.migrations is not None else discover(
        settings.migrations.dir, settings.migrations.format)
    prod_url = database_url(settings, "prod")
    with connection(prod_url, env="prod") as prod, applier_mod.environment_lock(prod, "prod"):
        history = applier_mod.read_history(prod)
        plan = applier_mod.plan(migrations, history)
        report.extend(drift_checks(plan, "prod"))
        report.fingerprint = set_fingerprint(plan.pending)
        if not plan.pending:
            report.passed("pending", "nothing to deploy: prod is up to date")
            return
        if not _allowed(settings, store, options, report) or report.failures:
            return
        _preflight(prod, settings, report)
        if report.failures:
            return
        now = _now(options)
        to_apply, held = held_back(plan.pending, history, timedelta(days=settings.deploy.cleanup_hold_days), now)
        for m, why in held:
            report.held(f"hold-back.{m.label}", why, migration=m.label)
        not_valid_before = {checks.constraint_key(r) for r in checks.unvalidated(prod)}
        applied = _apply(prod, settings, options, to_apply, report)
        report.facts.update(applied=[m.label for m in applied], held=[m.label for m, _ in held])
        report.add(checks.unvalidated_constraints(prod, "prod", not_valid_before))
        report.add(checks.invalid_indexes(prod, "prod"))
    _orm_reminder(settings, migrations, report)
    store.record_deploy(fingerprint=report.fingerprint, ok=report.ok, applied=report.facts["applied"],
                        held=report.facts["held"], report_json=report.to_json(), run_id=options.run_id)


def _allowed(settings: Settings, store: Ledger, options: DeployOptions, report: Report) -> bool:
    fingerprint = report.fingerprint or ""
    if options.expected_fingerprint and options.expected_fingerprint != fingerprint:
        report.blocker("fingerprint", f"prod's pending set ({fingerprint[:12]}) is not the set that was validated and "
                       f"approved ({options.expected_fingerprint[:12]}); validate again and get a fresh approval",
                       details={"category": "staging-stale"})
        return False
    if settings.deploy.require_env_flag and not options.env_flag:
        report.blocker("validation-flag", "STAGING_VALIDATION_PASSED is not true: the runbook deploys only after a "
                       "pass. Run `migrate-bot validate`, then export STAGING_VALIDATION_PASSED=true",
                       details={"category": "staging-stale"})
        return False
    found = store.passing_validation(fingerprint)
    if not found:
        report.blocker("validation", f"no passing validation for this exact migration set (fingerprint "
                       f"{fingerprint[:12]}); run `migrate-bot validate` first — a deploy only applies what passed",
                       details={"category": "staging-stale"})
        return False
    limit_h = settings.deploy.validation_max_age_hours
    age_h = (_now(options) - datetime.fromisoformat(found["created_at"])).total_seconds() / 3600
    if limit_h and age_h > limit_h:
        report.blocker("validation", f"the passing validation of this set is {age_h:.0f} hours old (limit {limit_h:g}); "
                       "prod's data has moved on since — refresh staging and validate again",
                       details={"category": "staging-stale"})
        return False
    report.passed("validation", f"passed on staging at {found['created_at'][:19]} for fingerprint {fingerprint[:12]}")
    return True


def _now(options: DeployOptions) -> datetime:
    return options.now or datetime.now(timezone.utc)


def _preflight(prod: psycopg.Connection, settings: Settings, report: Report) -> None:
    report.add(checks.extensions(prod, "prod", settings.gate.required_extensions, missing_status=Status.BLOCKER))
    report.add(checks.idle_in_transaction(prod, "prod", settings.gate.idle_in_transaction_minutes))
    report.add(checks.connection_headroom(prod, "prod", settings.gate.connections_needed))


def _apply(prod: psycopg.Connection, settings: Settings, options: DeployOptions, to_apply: list[Migration],
           report: Report) -> list[Migration]:
    if not to_apply:
        return []
    applier_mod.ensure_history(prod)
    gate = settings.gate
    applier = applier_mod.Applier(
        conn=prod, env="prod", lock_timeout_s=gate.lock_timeout_s, lock_retries=gate.lock_retries, backoff_s=gate.lock_backoff_s,
        statement_timeout_s=gate.statement_timeout_s, run_id=options.run_id, applied_by=options.requested_by,
        on_event=options.on_event,
    )
    options.on_event("step", {"step": "apply", "env": "prod", "count": len(to_apply)})
    return apply_in_order(applier, to_apply, report, "prod")


def _orm_reminder(settings: Settings, migrations: list[Migration], report: Report) -> None:
    """The runbook's third pitfall: the ORM client must be regenerated after schema changes."""
    if report.facts.get("applied") and any("/" in m.path and m.path.endswith("migration.sql") for m in migrations):
        report.warning("orm-client", "Prisma schema changed: regenerate the client and run the integration tests "
                       "(npx prisma generate && npm test -- tests/integration/)")
