"""Applying a list of migrations and turning outcomes into checks (shared by validate and deploy)."""

from __future__ import annotations

from bot.migrations.apply import Applier, MigrationOutcome, Plan
from bot.migrations.source import Migration
from bot.workflow.report import Check, Report, Status
from bot.workflow.triage import category_for_sqlstate


def outcome_check(outcome: MigrationOutcome, env: str) -> Check:
    m = outcome.migration
    name = f"migration.{m.label}"
    if outcome.ok:
        retries = f" after {outcome.attempts - 1} lock retr{'y' if outcome.attempts == 2 else 'ies'}" if outcome.attempts > 1 else ""
        slowest = max(outcome.statements, key=lambda s: s.seconds, default=None)
        slow = f"; slowest statement line {slowest.line} took {slowest.seconds:.2f}s" if slowest else ""
        return Check(name, Status.PASSED,
                     f"applied on {env} in {outcome.seconds:.2f}s ({len(outcome.statements)} statements{retries}{slow})",
                     migration=m.label,
                     details={"seconds": round(outcome.seconds, 3), "attempts": outcome.attempts,
                              "statements": [{"line": s.line, "seconds": round(s.seconds, 4)} for s in outcome.statements]})
    f = outcome.failure
    assert f is not None
    category = category_for_sqlstate(f.sqlstate)
    tries = f" after {outcome.attempts} attempts" if outcome.attempts > 1 else ""
    left = (f"; {outcome.applied_before_failure} earlier statement(s) of this migration were already committed "
            "and stay applied — make the file re-runnable or finish it by hand before retrying"
            if outcome.applied_before_failure else "")
    details = dict(f.to_details(), category=category, attempts=outcome.attempts, path=m.path)
    return Check(name, Status.FAILED, f"failed on {env}{tries}: {f.message}{left}", migration=m.label, details=details)


def apply_in_order(applier: Applier, migrations: list[Migration], report: Report, env: str) -> list[Migration]:
    """Apply until the first failure; returns the migrations applied."""
    applied = []
    for position, migration in enumerate(migrations):
        if not record_outcome(report, applier.apply(migration), migrations[position + 1:], env):
            break
        applied.append(migration)
    return applied


def record_outcome(report: Report, outcome: MigrationOutcome, rest: list[Migration], env: str) -> bool:
    """Put one outcome in the report; returns whether it applied.

    Migrations apply strictly in order, so a failure leaves ``rest`` not
    attempted — named in ``facts["not_attempted"]`` for the re-plan.
    """
    report.extend(outcome.checks)
    report.add(outcome_check(outcome, env))
    if not outcome.ok and rest:
        report.facts["not_attempted"] = [m.label for m in rest]
    return outcome.ok


def drift_checks(plan: Plan, env: str) -> list[Check]:
    checks = [
        Check(f"checksum-drift.{m.label}", Status.BLOCKER,
              f"{m.path} changed after it was applied on {env} (applied checksum {row.checksum[:12]}, file {m.checksum[:12]}); "
              "an applied migration is never re-run — restore the file and put the change in a new migration",
              migration=m.label, details={"category": "checksum-drift", "env": env})
        for m, row in plan.drifted
    ]
    checks += [
        Check(f"unknown-applied.{row.version}", Status.WARNING,
              f"version {row.version} ({row.name}) is applied on {env} but has no file here",
              details={"env": env})
        for row in plan.missing
    ]
    return checks


def syntax_checks(migrations: list[Migration]) -> list[Check]:
    return [
        Check(f"syntax.{m.label}", Status.FAILED,
              f"{m.path} does not parse: {m.parse_error}" + (f" (line {m.parse_error_line})" if m.parse_error_line else ""),
              migration=m.label,
              details={"category": "syntax", "line": m.parse_error_line or "", "path": m.path})
        for m in migrations if m.parse_error
    ]
