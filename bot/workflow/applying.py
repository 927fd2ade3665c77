"""Applying a list of migrations and turning outcomes into checks (shared by validate and deploy)."""

from __future__ import annotations

from bot.migrations.apply import Applier, MigrationOutcome, Plan
from bot.migrations.lockwait import blocker_text
from bot.migrations.partial import shown
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
    details = dict(f.to_details(), category=category, attempts=outcome.attempts, path=m.path)
    if outcome.blockers:
        details["blockers"] = outcome.blockers
    if m.no_transaction:
        details.update(committed_statements=outcome.applied_before_failure, statements_total=len(m.statements))
    message = f"failed on {env}{tries}: {f.message}{_in_the_way(outcome)}{what_stays(outcome, env)}"
    return Check(name, Status.FAILED, message, migration=m.label, details=details)


def _in_the_way(outcome: MigrationOutcome) -> str:
    if not outcome.blockers or outcome.failure is None or outcome.failure.sqlstate != "55P03":
        return ""
    return "; in its way: " + "; ".join(blocker_text(b) for b in outcome.blockers[:5])


def what_stays(outcome: MigrationOutcome, env: str) -> str:
    """"; …" saying what of a failed migration is on ``env`` now and how to go on (pure)."""
    m, f = outcome.migration, outcome.failure
    committed = outcome.applied_before_failure
    lost = f is not None and f.connection_lost
    if m.no_transaction:
        done = f"{committed} of its {len(m.statements)} statements" if committed else "none of its statements"
        if not committed:
            return f"; {done} had committed, so nothing of it is on {env}; it can be re-deployed as is" if lost else ""
        after = m.statements[committed] if committed < len(m.statements) else None
        nxt = f"continues at line {after.line} ({shown(after)})" if after else "writes its history row"
        return (f"; {done} committed and stay applied, recorded in migrate_bot.partial_migrations on {env}: a deploy "
                f"with resume {nxt} — or undo them by hand and delete that row to run the file whole")
    if committed:  # a file with its own BEGIN … COMMIT: statements outside its blocks commit one by one
        return (f"; {committed} earlier statement(s) of this migration were already committed and stay applied — "
                "make the file re-runnable or finish it by hand before retrying")
    if lost:
        return (f"; the connection to {env} was lost: the migration ran in one transaction, which rolled back with "
                f"its history row, so nothing of it is on {env} and it can be re-deployed as is")
    return ""


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
    if outcome.failure is not None and outcome.failure.connection_lost:
        # what ends the step is this failure: the next query only finds the connection closed (``run_step``)
        report.facts["connection_lost"] = {"env": env, "sqlstate": outcome.failure.sqlstate,
                                           "message": outcome.failure.message, "migration": outcome.migration.label}
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
