"""Static lint findings as gate checks, grouped per migration."""

from __future__ import annotations

from bot.migrations.lint import Finding, lint_sql
from bot.migrations.source import Migration
from bot.workflow.report import Check, Status


def finding_check(migration: Migration, finding: Finding) -> Check:
    name = f"lint.{finding.rule}"
    details = {"category": "unsafe-migration", "rule": finding.rule, "line": finding.line,
               "statement": finding.statement, "fix": finding.fix, "path": migration.path}
    if finding.allowed_reason is not None:
        return Check(name, Status.WARNING, f"{migration.label}: {finding.message} — allowed: {finding.allowed_reason}",
                     migration=migration.label, details=dict(details, allowed_reason=finding.allowed_reason))
    status = Status.BLOCKER if finding.severity == "blocker" else Status.WARNING
    return Check(name, status, f"{migration.label}: {finding.message}", migration=migration.label, details=details)


def lint_checks(migrations: list[Migration], schema_sql: str = "") -> list[Check]:
    """Lint each migration knowing what runs before it.

    ``schema_sql`` describes the database the set starts from; each migration
    also sees the migrations before it in the set, so an index created in
    0001 counts for the foreign key added in 0002.
    """
    checks: list[Check] = []
    context = [schema_sql] if schema_sql else []
    for m in migrations:
        findings = lint_sql(m.sql, path=m.path, cleanup=m.cleanup, schema_sql="\n".join(context))
        context.append(m.sql)
        if not findings:
            checks.append(Check(f"lint.{m.label}", Status.PASSED, f"{m.label}: no unsafe patterns found", migration=m.label))
        checks += [finding_check(m, f) for f in findings]
    return checks
