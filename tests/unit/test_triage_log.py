"""Triage from a plain gate log: the facts in brackets and the statement lines are enough."""

from __future__ import annotations

from bot.workflow import triage
from bot.workflow.report import Check, Report, Status


def gate_log(*checks: Check) -> str:
    report = Report(step="validate")
    report.extend(list(checks))
    return "\n".join(report.lines())


def test_fk_failure_round_trips_through_the_log() -> None:
    text = gate_log(Check("migration.0003_fk", Status.FAILED, "insert or update on table violates foreign key",
                          details={"sqlstate": "23503", "table": "orders", "constraint": "orders_user_fk",
                                   "statement": "ALTER TABLE orders ADD CONSTRAINT orders_user_fk\n FOREIGN KEY (user_id) REFERENCES users (id)"}))
    (finding,) = triage.triage(triage.checks_from_log(text))
    assert finding.category == "invalid-fk"
    assert "ALTER TABLE orders VALIDATE CONSTRAINT orders_user_fk;" in finding.fix
    assert "NOT EXISTS (SELECT 1 FROM users p WHERE p.id = c.user_id)" in finding.fix


def test_not_null_from_log_names_the_column() -> None:
    text = gate_log(Check("migration.0004_nn", Status.FAILED, "column contains null values",
                          details={"sqlstate": "23502", "table": "users", "column": "email"}))
    (finding,) = triage.triage(triage.checks_from_log(text))
    assert "UPDATE users SET email = <default_value> WHERE email IS NULL;" in finding.fix


def test_missing_extension_from_log() -> None:
    text = gate_log(Check("extensions.prod", Status.BLOCKER, "missing on prod: citext",
                          details={"category": "missing-extension", "env": "prod"}))
    (finding,) = triage.triage(triage.checks_from_log(text))
    assert finding.category == "missing-extension" and 'CREATE EXTENSION IF NOT EXISTS "citext";' in finding.fix


def test_undefined_type_from_an_extension_is_a_missing_extension() -> None:
    check = Check("migration.1_x", Status.FAILED, 'type "citext" does not exist', details={"sqlstate": "42704"})
    assert triage.triage([check])[0].category == "missing-extension"


def test_passed_lines_are_not_triaged() -> None:
    text = gate_log(Check("pending", Status.PASSED, "1 pending"))
    assert triage.triage(triage.checks_from_log(text)) == []
    assert triage.render_text([]) == "Nothing to triage: no FAILED or BLOCKER lines."


def test_unknown_sqlstate_is_other() -> None:
    check = Check("migration.1_x", Status.FAILED, "boom", details={"sqlstate": "XX000"})
    assert triage.triage([check])[0].category == "other"
