"""The validation gate (runbook step 3): run the pending migrations on staging.

Pending means pending *on prod* — that is what a deploy would apply — so the
gate's fingerprint is the fingerprint a deploy must match. Staging must be a
fresh copy: if it already has any of those migrations, the gate would prove
nothing and says so. Preflight (extensions on both sides, blockers, pool
headroom), static lint, the apply itself with per-statement timings, then the
runbook's post-checks. A pass is recorded in the state store, with the gate
settings it ran under (``gatesettings``). A prod whose history another tool
kept (Prisma, golang-migrate, Flyway, dbmate) and that has none of ours is one
BLOCKER saying to adopt it first (``migrate-bot baseline --yes``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import psycopg

from bot.config import Settings
from bot.errors import ConfigError
from bot.migrations import adopt
from bot.migrations import apply as applier_mod
from bot.migrations.source import Migration, discover, set_fingerprint
from bot.pg import connection
from bot.workflow.ledger import Ledger
from bot.workflow import checks, freshness, gatesettings, perf
from bot.workflow.applying import apply_in_order, drift_checks, syntax_checks
from bot.workflow.lintgate import lint_checks, overrule
from bot.workflow.report import Report, Status, run_step
from bot.workflow.refreshdb import ServerIdentity, server_identity
from bot.workflow.schemactx import schema_ddl, touched_tables
from bot.workflow.targets import database_url
from bot.workflow.scans import prod_tables
from bot.workflow.trace import StagingTrace


@dataclass
class GateOptions:
    """Per-run choices that are not settings (who, which commit, overrides)."""

    install_extensions: bool | None = None  # None = settings.gate.install_extensions
    run_id: str | None = None
    commit: str | None = None
    requested_by: str | None = None
    migrations: list[Migration] | None = None  # None = discover settings.migrations.dir
    on_event: applier_mod.EventSink = field(default=applier_mod._ignore)
    hooks: applier_mod.StatementHooks | None = None


def load_migrations(settings: Settings, options: GateOptions) -> list[Migration]:
    if options.migrations is not None:
        return options.migrations
    return discover(settings.migrations.dir, settings.migrations.format)


def run(settings: Settings, store: Ledger | None, options: GateOptions | None = None) -> Report:
    """Validate; never raises for expected failures — the Report carries exit 2 instead."""
    options = options or GateOptions()
    return run_step("validate", lambda report: _validate(settings, store, options, report))


def _validate(settings: Settings, store: Ledger | None, options: GateOptions, report: Report) -> None:
    migrations = load_migrations(settings, options)
    prod_url = database_url(settings, "prod")
    staging_url = database_url(settings, "staging")
    report.add(freshness.check(settings, staging_url))  # how old the copy the verdict stands on is
    options.on_event("step", {"step": "preflight"})
    with connection(prod_url, env="prod") as prod:
        prod_history = applier_mod.read_history(prod)
        unadopted = adopt.unadopted_check(prod, migrations, prod_history)
        if unadopted is not None:  # another tool's history: adopt it first, or the whole history is "pending"
            report.add(unadopted)
            return
        prod_plan = applier_mod.plan(migrations, prod_history)
        _preflight_prod(prod, settings, report)
        hot = (perf.hot_queries(prod, settings.gate.perf_queries, settings.gate.perf_min_calls)
               if settings.gate.perf_queries else None)
        prod_is = (server_identity(prod), prod.info.dbname)
        prod_sizes = prod_tables(prod, touched_tables(prod_plan.pending))  # scales staging's evidence to prod
    report.extend(drift_checks(prod_plan, "prod"))
    pending = prod_plan.pending
    report.fingerprint = set_fingerprint(pending)
    report.facts["pending"] = [m.label for m in pending]
    if not pending:
        report.passed("pending", "no pending migrations: prod is up to date with the migration source")
        return
    report.passed("pending", f"{len(pending)} pending on prod: {', '.join(m.label for m in pending)}")
    _hold_back_notes(pending, settings, report)
    report.extend(syntax_checks(pending))
    regression = perf.RegressionGate.for_run(settings, hot, options.migrations)
    with connection(staging_url, env="staging") as staging:
        _refuse_prod_as_staging(prod_is, staging)
        ready = _preflight_staging(staging, settings, options, pending, report)
        if settings.gate.lint:
            lintable = [m for m in pending if not m.parse_error]
            report.extend(lint_checks(lintable, schema_ddl(staging, touched_tables(lintable))))
        if not ready or any(m.parse_error for m in pending):
            return  # nothing sensible to apply
        regression.plan_before(staging)
    # the measurement's before-copy of staging is made here, while the gate holds no staging connection
    with regression.before_copy(staging_url, report), connection(staging_url, env="staging") as staging:
        _apply_on_staging(staging, staging_url, settings, options, pending, report, regression, prod_sizes)
    _record(store, report, pending, options, gatesettings.record(settings.gate))


def _refuse_prod_as_staging(prod_is: tuple[ServerIdentity, str], staging: psycopg.Connection) -> None:
    """The gate applies migrations to staging: if "staging" is prod under another name, stop."""
    identity, dbname = prod_is
    if dbname == staging.info.dbname and identity.same_server(server_identity(staging)):
        raise ConfigError(
            f"The staging database URL leads to the prod database ({dbname} on the server with "
            f"{identity.describe()}): the gate would apply the migrations to prod.",
            "Point STAGING_DATABASE_URL (databases.staging) at the staging database.",
        )


def _preflight_prod(prod: psycopg.Connection, settings: Settings, report: Report) -> None:
    report.add(checks.extensions(prod, "prod", settings.gate.required_extensions, missing_status=Status.BLOCKER))


def _preflight_staging(staging: psycopg.Connection, settings: Settings, options: GateOptions,
                       pending: list[Migration], report: Report) -> bool:
    """Extensions, freshness, blockers and headroom on staging; False = do not apply.

    Earlier failures (static lint) do not stop the apply: running the set on
    staging still yields the data and lock evidence the triage needs.
    """
    failures_before = len(report.failures)
    staging_history = applier_mod.read_history(staging)
    already = [m.label for m in pending if m.version in staging_history]
    if already:
        report.failed(
            "staging-fresh",
            f"staging already has {', '.join(already)} applied but prod does not — validating again there proves "
            "nothing. Refresh staging from prod first: migrate-bot refresh",
            details={"category": "staging-stale"},
        )
        return False
    required = settings.gate.required_extensions
    install = settings.gate.install_extensions if options.install_extensions is None else options.install_extensions
    missing = checks.missing_extensions(staging, required)
    if missing and install:
        checks.install_extensions(staging, missing)
        report.passed("extensions.staging", f"installed on staging: {', '.join(missing)}")
    else:
        status = Status.FAILED if missing else Status.PASSED
        check = checks.extensions(staging, "staging", required, missing_status=status)
        if missing:
            check = replace(check, message=check.message + " (or run with --install-extensions)")
        report.add(check)
    report.add(checks.idle_in_transaction(staging, "staging", settings.gate.idle_in_transaction_minutes))
    report.add(checks.connection_headroom(staging, "staging", settings.gate.connections_needed))
    return len(report.failures) == failures_before


def _apply_on_staging(staging: psycopg.Connection, staging_url: str, settings: Settings, options: GateOptions,
                      pending: list[Migration], report: Report, regression: perf.RegressionGate,
                      prod_sizes: dict) -> None:
    applier_mod.ensure_history(staging)
    not_valid_before = {checks.constraint_key(r) for r in checks.unvalidated(staging)}
    gate = settings.gate
    # locks, rewrites, scans, durations scaled to prod + data pre-checks
    hooks = options.hooks or StagingTrace(gate, prod_sizes=prod_sizes)
    applier = applier_mod.Applier(
        conn=staging, env="staging", lock_timeout_s=gate.lock_timeout_s, lock_retries=gate.lock_retries, backoff_s=gate.lock_backoff_s,
        lock_wait_s=gate.lock_wait_s, statement_timeout_s=gate.statement_timeout_s, run_id=options.run_id,
        applied_by=options.requested_by, hooks=hooks, on_event=options.on_event,
    )
    options.on_event("step", {"step": "apply", "env": "staging", "count": len(pending)})
    with applier_mod.environment_lock(staging, "staging"):
        applied = apply_in_order(applier, pending, report, "staging")
    if isinstance(hooks, StagingTrace):  # what the trace measured overrules what the lint had to guess
        report.checks[:] = overrule(report.checks, hooks.evidence, prod_sizes)
        hooks.close()
    options.on_event("step", {"step": "post-checks", "env": "staging"})
    report.add(checks.unvalidated_constraints(staging, "staging", not_valid_before))
    report.add(checks.invalid_indexes(staging, "staging"))
    if len(applied) == len(pending):  # comparing after a half-applied set would say nothing
        options.on_event("step", {"step": "regression gate", "env": "staging"})
        regression.compare(staging, staging_url, report)


def _hold_back_notes(pending: list[Migration], settings: Settings, report: Report) -> None:
    days = settings.deploy.cleanup_hold_days
    for m in pending:
        if m.cleanup:
            report.warning(
                f"hold-back.{m.label}",
                f"cleanup migration: a deploy holds it until {days} days after the previous deploy "
                f"(the expand phase must bake first)",
                migration=m.label,
            )


def _record(store: Ledger | None, report: Report, pending: list[Migration], options: GateOptions,
            gate_settings: dict) -> None:
    """The verdict, with the gate settings it ran under (a deploy under a stricter config refuses a looser pass)."""
    if store is None or report.fingerprint is None or report.error:
        return
    store.record_validation(
        fingerprint=report.fingerprint,
        passed=report.ok,
        report_json=report.to_json(),
        migrations=[m.label for m in pending],
        run_id=options.run_id,
        commit=options.commit,
        gate_settings=gate_settings,
    )

