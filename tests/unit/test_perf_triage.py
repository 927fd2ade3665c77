"""Triage of the regression gate's failures: the likely cause's fix, with the real names, from JSON or a log."""

from __future__ import annotations

import pytest

from bot.workflow import triage
from bot.workflow.report import Check, Report, Status

NAME = "perf-regression.orders-by-user-id-4eeccc"
STATEMENT = "SELECT id, total FROM orders WHERE user_id = $1"


def failed(**details) -> Check:
    return Check(NAME, Status.FAILED, "measurably slower after the migrations (60 calls on prod): blocks 12 -> 148",
                 details={"category": "perf-regression", "statement": STATEMENT, **details})


def via_log(check: Check) -> triage.Finding:
    report = Report(step="validate")
    report.add(check)
    (finding,) = triage.triage(triage.checks_from_log("\n".join(report.lines())))
    return finding


def test_a_lost_index_is_recreated_from_its_definition() -> None:
    (finding,) = triage.triage([failed(rule="lost-index", table="orders", column="user_id", index="orders_user_id_idx",
                                       indexdef="CREATE INDEX orders_user_id_idx ON public.orders USING btree (user_id)")])
    assert finding.category == "perf-regression" and finding.checks == (NAME,)
    assert finding.fix.endswith(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_user_id_idx ON public.orders USING btree (user_id);")


def test_a_lost_index_from_the_log_uses_the_table_and_columns() -> None:
    finding = via_log(failed(rule="lost-index", table="orders", column="user_id,status"))
    assert finding.fix.endswith("CREATE INDEX CONCURRENTLY IF NOT EXISTS ON orders (user_id, status);")


def test_a_unique_index_stays_unique() -> None:
    (finding,) = triage.triage([failed(rule="lost-index", table="users", column="email", index="users_email_idx",
                                       indexdef="CREATE UNIQUE INDEX users_email_idx ON public.users USING btree (email)")])
    assert "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS users_email_idx ON public.users" in finding.fix


def test_a_trigger_names_the_trigger_and_lists_the_tables_triggers() -> None:
    (finding,) = triage.triage([failed(rule="trigger", table="orders", triggers=["orders_recount"])])
    assert finding.fix.startswith("-- orders_recount on orders now run for every row this hot statement writes.")
    assert "WHERE tgrelid = 'orders'::regclass AND NOT tgisinternal;" in finding.fix


def test_a_new_foreign_key_check_names_the_constraint() -> None:
    finding = via_log(failed(rule="trigger", table="orders", constraint="orders_user_id_fkey"))
    assert finding.fix.startswith("-- The foreign key orders_user_id_fkey now checks every row this statement writes")


@pytest.mark.parametrize("rule, expected", [
    ("bloat", "VACUUM (ANALYZE) orders;"),
    ("row-estimate", "ALTER TABLE orders ALTER COLUMN user_id SET STATISTICS 1000;"),
    ("no-plan", "expand/contract"),
    ("slower", "-- Add the missing index (see the plans in perf_report.md)"),
])
def test_each_cause_has_its_fix(rule: str, expected: str) -> None:
    assert expected in via_log(failed(rule=rule, table="orders", column="user_id")).fix


def test_failing_after_the_migrations_says_the_sqlstate() -> None:
    finding = via_log(failed(rule="fails-after", table="orders", sqlstate="23514"))
    assert finding.fix.startswith("-- The statement now fails after the migrations (SQLSTATE 23514)")
