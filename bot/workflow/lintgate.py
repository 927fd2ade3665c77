"""Static lint findings as gate checks, grouped per migration; and the trace's measurements overruling them.

The pending set is linted in one pass over the statement model: each
migration sees what staging's catalog says about the tables the set touches
and what the migrations before it in the set created, accumulated
incrementally (nothing is re-parsed, no file is joined with another), so a
table created in 0001 is still new — not on prod, no rows there — when 0002
indexes it.

Static rules guess; the staging trace measures. ``overrule`` takes the static
checks and the trace's per-statement evidence and downgrades a static
BLOCKER whose tables were all measured empty on staging and do not exist on
prod: no running code can wait on a lock of a table prod does not have, and
there is no row to scan.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from bot.migrations.lint import Finding, lint_migrations
from bot.migrations.lint_types import Ctx, schema_context
from bot.migrations.source import Migration
from bot.workflow.report import Check, Status
from bot.workflow.scans import StatementEvidence, TableSize


def finding_check(migration: Migration, finding: Finding) -> Check:
    name = f"lint.{finding.rule}"
    details = {"category": "unsafe-migration", "rule": finding.rule, "line": finding.line,
               "statement": finding.statement, "fix": finding.fix, "path": migration.path}
    if finding.allowed_reason is not None:
        return Check(name, Status.WARNING, f"{migration.label}: {finding.message} — allowed: {finding.allowed_reason}",
                     migration=migration.label, details=dict(details, allowed_reason=finding.allowed_reason))
    status = Status.BLOCKER if finding.severity == "blocker" else Status.WARNING
    return Check(name, status, f"{migration.label}: {finding.message}", migration=migration.label, details=details)


def lint_checks(migrations: list[Migration], schema_sql: str = "", server_version_num: int = 150000) -> list[Check]:
    """Lint the pending set in order, each migration knowing what runs before it.

    ``schema_sql`` describes the database the set starts from (parsed once);
    each migration also sees what the migrations before it in the set created,
    so an index created in 0001 counts for the foreign key added in 0002, and
    a table created in 0001 is new (empty, unused on prod) for 0002.
    """
    ctx = Ctx(server_version_num=server_version_num)
    if schema_sql:
        schema_context(schema_sql, ctx)
    checks: list[Check] = []
    for m, findings in lint_migrations(migrations, ctx, same_set=True):
        if not findings:
            checks.append(Check(f"lint.{m.label}", Status.PASSED, f"{m.label}: no unsafe patterns found", migration=m.label))
        checks += [finding_check(m, f) for f in findings]
    return checks


def overrule(checks: Iterable[Check], evidence: Iterable[StatementEvidence],
             prod: dict[str, TableSize]) -> list[Check]:
    """The checks, with static lint BLOCKERs the trace disproved turned into WARNINGs (pure; order kept).

    A ``lint.*`` BLOCKER is downgraded when the trace measured its statement
    (same migration, same line) and every table the statement works on was
    empty on staging when it ran, did not exist before the set, and is absent
    from ``prod`` (table name -> size, as ``scans.prod_tables`` reads it).
    The warning keeps the finding and says why it no longer blocks.
    """
    by_statement = {(e.migration, e.line): e for e in evidence}
    out = []
    for check in checks:
        e = by_statement.get((check.migration, check.details.get("line")))
        if check.status is not Status.BLOCKER or not check.name.startswith("lint.") or e is None or not e.targets:
            out.append(check)
            continue
        absent = [t for t in e.targets if t.rows == 0 and not t.existed_before_set and t.name not in prod
                  and t.name.split(".")[-1] not in prod]
        if len(absent) < len(e.targets):
            out.append(check)
            continue
        names = ", ".join(t.name for t in absent)
        reason = (f"measured: {names} had no rows on staging when this ran and {'does' if len(absent) == 1 else 'do'} "
                  "not exist on prod (created by this pending set), so no running query waits on its lock and there "
                  "is no row to scan")
        out.append(replace(check, status=Status.WARNING, message=f"{check.message} — {reason}",
                           details=dict(check.details, overruled_by="trace", overruled_reason=reason)))
    return out
