"""Triage by evidence: measured failures first, static rules grouped with counts, every fix from a log too."""

from __future__ import annotations

import pytest

from bot.migrations.source import build
from bot.workflow import triage
from bot.workflow.lintgate import lint_checks
from bot.workflow.report import Check, Report, Status

FK = "ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES users (id)"
REWRITE = "ALTER TABLE orders ALTER COLUMN total TYPE bigint"
LOOKUP = "SELECT id, total FROM orders WHERE user_id = $1"


def via_log(checks: list[Check]) -> list[Check]:
    report = Report(step="validate")
    report.extend(checks)
    return triage.checks_from_log("\n".join(report.lines()))


def static_checks() -> list[Check]:
    """What the gate's lint says of three migrations: two non-concurrent index builds, one FK without NOT VALID."""
    return lint_checks([
        build("0003", "orders_idx", "db/0003_orders_idx.sql", "CREATE INDEX orders_user_idx ON orders (user_id);"),
        build("0005", "orders_fk", "db/0005_orders_fk.sql", FK + ";"),
        build("0007", "users_idx", "db/0007_users_idx.sql", "CREATE INDEX users_email_idx ON users (email);"),
    ])


def migration_failed() -> Check:
    return Check("migration.0005_orders_fk", Status.FAILED, "failed on staging: insert or update on table \"orders\" "
                 "violates foreign key constraint", migration="0005_orders_fk",
                 details={"category": "invalid-fk", "sqlstate": "23503", "table": "orders",
                          "constraint": "orders_user_fk", "statement": FK})


def rewrite() -> Check:
    return Check("trace.rewrite", Status.BLOCKER, "0009_total line 1 rewrote public.orders (table) under "
                 "AccessExclusiveLock: 2000 rows, 0.20s on staging. That lock blocks reads and writes",
                 migration="0009_total",
                 details={"category": "unsafe-migration", "rule": "rewrite", "table": "public.orders", "line": 1,
                          "statement": REWRITE, "lock_mode": "AccessExclusiveLock",
                          "fix": "-- Expand/contract instead of rewriting public.orders under AccessExclusiveLock:"})


def lock_held() -> Check:
    return Check("trace.lock-held", Status.BLOCKER, "0010_backfill: ShareRowExclusiveLock on public.orders held 3.10s "
                 "(budget 2s), from line 2 until the end of its transaction", migration="0010_backfill",
                 details={"category": "unsafe-migration", "rule": "lock-held", "table": "public.orders", "line": 2,
                          "statement": "CREATE TRIGGER t AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION f()",
                          "lock_mode": "ShareRowExclusiveLock"})


def perf() -> Check:
    return Check("perf-regression.orders-by-user-id-4eeccc", Status.FAILED,
                 "plan cost of a hot statement (60 calls on prod, mean 0.20 ms) grows 900% (10.0 -> 100.0; limit 20%)",
                 details={"category": "perf-regression", "statement": LOOKUP, "calls": 60, "source": "prod",
                          "before": 10.0, "after": 100.0, "rule": "plan-cost", "table": "orders"})


def no_plan() -> Check:
    return Check("perf-regression.orders-by-note-1a2b3c", Status.FAILED,
                 "a hot statement (120 calls on prod, mean 0.10 ms) no longer plans after the migrations",
                 details={"category": "perf-regression", "statement": "SELECT note FROM orders WHERE id = $1",
                          "calls": 120, "source": "prod", "rule": "no-plan", "table": "orders"})


def extension() -> Check:
    return Check("extensions.prod", Status.BLOCKER, "missing on prod: citext",
                 details={"category": "missing-extension", "env": "prod", "missing": ["citext"]})


def everything() -> list[Check]:
    """A gate's failures in the order a gate writes them: preflight, lint, then the apply and the regression gate."""
    return [extension(), *static_checks(), perf(), lock_held(), rewrite(), migration_failed()]


@pytest.mark.parametrize("source", ["report", "log"])
def test_measured_failures_come_first_in_the_runbooks_order_then_static_rules(source: str) -> None:
    checks = everything() if source == "report" else via_log(everything())
    found = triage.triage(checks)
    assert [(f.kind, f.checks[0]) for f in found] == [
        ("measured", "migration.0005_orders_fk"),
        ("measured", "trace.rewrite"),
        ("measured", "trace.lock-held"),
        ("measured", "perf-regression.orders-by-user-id-4eeccc"),
        ("measured", "extensions.prod"),
        ("static", "lint.create-index-non-concurrent"),
        ("static", "lint.add-foreign-key-without-not-valid"),
    ]


@pytest.mark.parametrize("source", ["report", "log"])
def test_a_static_rule_is_one_finding_with_its_count_and_migrations(source: str) -> None:
    checks = static_checks() if source == "report" else via_log(static_checks())
    group = next(f for f in triage.triage(checks) if f.checks == ("lint.create-index-non-concurrent",))
    assert group.title == "create-index-non-concurrent ×2: 0003_orders_idx, 0007_users_idx"
    assert (group.count, group.migrations) == (2, ("0003_orders_idx", "0007_users_idx"))


@pytest.mark.parametrize("source", ["report", "log"])
def test_each_occurrence_of_a_static_rule_has_its_own_fix(source: str) -> None:
    checks = static_checks() if source == "report" else via_log(static_checks())
    group = next(f for f in triage.triage(checks) if f.checks == ("lint.create-index-non-concurrent",))
    assert "-- 0003_orders_idx line 1:\nCREATE INDEX CONCURRENTLY orders_user_idx ON orders (user_id);" in group.fix
    assert "-- 0007_users_idx line 1:\nCREATE INDEX CONCURRENTLY users_email_idx ON users (email);" in group.fix


def test_the_static_fix_from_a_log_is_the_one_the_report_carried() -> None:
    (from_report,) = [f for f in triage.triage(static_checks()) if "add-foreign-key" in f.title]
    (from_log,) = [f for f in triage.triage(via_log(static_checks())) if "add-foreign-key" in f.title]
    assert from_log.fix == from_report.fix
    assert "ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID;" in from_log.fix


def test_many_occurrences_list_the_first_migrations_in_the_title() -> None:
    files = [build(f"{i:04d}", f"idx_{i}", f"db/{i:04d}_idx_{i}.sql", f"CREATE INDEX t{i}_idx ON t{i} (x);")
             for i in range(1, 15)]
    (group,) = triage.triage(lint_checks(files))
    assert group.title == ("create-index-non-concurrent ×14: 0001_idx_1, 0002_idx_2, 0003_idx_3, 0004_idx_4, "
                           "0005_idx_5, …")
    assert group.fix.count("CREATE INDEX CONCURRENTLY") == 14


def test_a_measured_rewrite_from_a_log_gets_the_trace_s_rewrite_with_its_names() -> None:
    (finding,) = triage.triage(via_log([rewrite()]))
    assert finding.title == "Table rewrite under a blocking lock (measured on staging)"
    assert finding.fix.startswith("-- Expand/contract instead of rewriting public.orders under AccessExclusiveLock:")
    assert "ALTER TABLE public.orders ADD COLUMN total_new bigint;" in finding.fix


def test_a_long_lock_hold_from_a_log_names_the_table_and_its_lock() -> None:
    (finding,) = triage.triage(via_log([lock_held()]))
    assert finding.fix.startswith("-- Keep the ShareRowExclusiveLock on public.orders short:")


def test_a_scan_from_a_log_gets_the_static_rules_rewrite_of_its_statement() -> None:
    scan = Check("trace.scan", Status.BLOCKER, "0004_nn line 1 read every row of public.users (500 rows; 500 tuples "
                 "by 1 sequential scan(s)) under AccessExclusiveLock, which blocks reads and writes — 0.010s on staging",
                 migration="0004_nn", details={"category": "unsafe-migration", "rule": "scan", "table": "public.users",
                                               "line": 1, "statement": "ALTER TABLE users ALTER COLUMN email SET NOT NULL"})
    (finding,) = triage.triage(via_log([scan]))
    assert "CHECK (email IS NOT NULL) NOT VALID" in finding.fix


def test_perf_findings_show_the_statement_its_calls_and_both_costs() -> None:
    for finding in (triage.triage([perf()])[0], triage.triage(via_log([perf()]))[0]):
        assert finding.evidence == ("statement: SELECT id, total FROM orders WHERE user_id = $1\n"
                                    "calls on prod: 60\n"
                                    "plan cost: 10.0 -> 100.0")


def test_a_statement_that_no_longer_plans_says_what_the_planner_did() -> None:
    (finding,) = triage.triage([no_plan()])
    assert finding.evidence == ("statement: SELECT note FROM orders WHERE id = $1\ncalls on prod: 120\n"
                                "plan cost: after the migrations the planner refuses it")
    assert finding.fix.endswith("(expand/contract).")


def test_the_planners_error_is_shown_when_the_gate_kept_it() -> None:
    check = no_plan()
    check = Check(check.name, check.status, check.message,
                  details=dict(check.details, before=12.5, plan_error='column "note" does not exist (42703)'))
    (finding,) = triage.triage([check])
    assert finding.evidence.endswith(
        'plan cost: 12.5 before; after the migrations the planner refuses it: column "note" does not exist (42703)')


def test_two_regressions_with_the_same_generic_fix_stay_two_findings() -> None:
    other = Check("perf-regression.users-by-email-9f9f9f", Status.FAILED, "plan cost of a hot statement (70 calls on "
                  "prod) grows 300% (5.0 -> 20.0; limit 20%)",
                  details={"category": "perf-regression", "statement": "SELECT id FROM users WHERE email = $1",
                           "calls": 70, "before": 5.0, "after": 20.0, "rule": "plan-cost", "table": "users"})
    assert len(triage.triage([perf(), other])) == 2


def test_the_text_puts_measured_before_static_with_the_evidence() -> None:
    text = triage.render_text(triage.triage(everything()))
    measured, static = text.split("Static rules (read from the SQL, not measured):")
    assert measured.startswith("7 failure(s) to fix before deploying:\n\nMeasured on the databases:\n\n1. Invalid "
                               "foreign key (orphaned rows) — migration.0005_orders_fk")
    assert "   statement: SELECT id, total FROM orders WHERE user_id = $1\n   calls on prod: 60\n" in measured
    assert "6. create-index-non-concurrent ×2: 0003_orders_idx, 0007_users_idx" in static
    assert not any(line != line.rstrip() for line in text.splitlines())


def test_an_unadopted_history_has_the_baseline_commands_as_its_fix() -> None:
    check = Check("history-adopt", Status.BLOCKER, "prod has no migrate_bot.schema_migrations, but …",
                  details={"category": "unadopted-history"})
    (finding,) = triage.triage(via_log([check]))
    assert finding.title == "Another tool's migration history is not adopted"
    assert finding.fix.endswith("migrate-bot baseline --yes")


def test_a_log_line_knows_its_migration() -> None:
    checks = [migration_failed(), rewrite(), lock_held(), *static_checks()]
    assert [c.migration for c in via_log(checks)] == [c.migration for c in checks]
    assert {c.migration for c in checks} == {"0005_orders_fk", "0009_total", "0010_backfill", "0003_orders_idx",
                                             "0007_users_idx"}
