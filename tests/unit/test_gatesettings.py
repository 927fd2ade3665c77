"""The gate settings a validation ran under, and in which of them it was looser than a deploy's config (pure)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from bot.config import Gate
from bot.workflow import gatesettings
from bot.workflow.gatesettings import SETTINGS, differences, record, refusal, weaker

DEFAULT = Gate()


def recorded(**changes) -> dict:
    """What a validation under the default config with ``changes`` records, through JSON as the store keeps it."""
    return json.loads(json.dumps(record(replace(DEFAULT, **changes))))


def test_the_record_holds_every_loosening_setting_and_its_shape_version() -> None:
    found = record(DEFAULT)
    assert found == {"v": 1, "lint": True, "lock_budget_s": 2.0, "transaction_budget_s": 15.0,
                     "migration_budget_s": 180.0, "lock_timeout_s": 2.0, "lock_retries": 0, "lock_wait_s": 90.0,
                     "statement_timeout_s": 0.0,
                     "idle_in_transaction_minutes": 5, "connections_needed": 5,
                     "required_extensions": ["pg_trgm", "citext", "uuid-ossp"], "perf_queries": 20,
                     "perf_regression_pct": 20.0, "perf_min_calls": 50, "perf_measure": True,
                     "perf_workload": "perf/workload.sql"}


def test_the_same_config_is_not_weaker() -> None:
    assert weaker(recorded(), DEFAULT) == []


def test_nothing_recorded_is_never_weaker() -> None:
    assert weaker(None, DEFAULT) == [] and weaker({}, DEFAULT) == []
    assert refusal(None, DEFAULT) is None


def test_lint_off_says_the_briefs_sentence() -> None:
    assert weaker(recorded(lint=False), DEFAULT) == ["lint off, but this deploy's config has lint on"]
    assert refusal(recorded(lint=False), DEFAULT) == (
        "the validation ran with lint off, but this deploy's config has lint on: validate again under this config")


@pytest.mark.parametrize("key, looser, stricter", [
    ("lock_budget_s", 10.0, 2.0),
    ("transaction_budget_s", 60.0, 15.0),
    ("migration_budget_s", 600.0, 180.0),
    ("lock_timeout_s", 30.0, 2.0),
    ("lock_retries", 50, 5),
    ("lock_retries", 0, 5),  # 0 is no count limit
    ("lock_wait_s", 300.0, 90.0),
    ("statement_timeout_s", 60.0, 30.0),
    ("statement_timeout_s", 0.0, 30.0),  # 0 is no limit at all
    ("idle_in_transaction_minutes", 60, 5),
    ("connections_needed", 1, 5),
    ("perf_queries", 0, 20),  # the regression gate off
    ("perf_queries", 5, 20),
    ("perf_regression_pct", 50.0, 20.0),
    ("perf_min_calls", 1000, 50),
    ("perf_measure", False, True),
    ("perf_workload", "", "perf/workload.sql"),
    ("required_extensions", ["pg_trgm"], ["pg_trgm", "citext"]),
])
def test_each_loosening_setting_is_named(key: str, looser, stricter) -> None:
    current = replace(DEFAULT, **{key: stricter})
    (said,) = weaker(recorded(**{key: looser}), current)
    assert said.startswith(key) and f"but this deploy's config has {key}" in said


@pytest.mark.parametrize("key, stricter, looser", [
    ("lock_budget_s", 1.0, 2.0),
    ("statement_timeout_s", 30.0, 0.0),
    ("connections_needed", 10, 5),
    ("perf_queries", 40, 20),
    ("perf_measure", True, False),
    ("lint", True, False),
    ("required_extensions", ["pg_trgm", "citext", "uuid-ossp", "hstore"], ["pg_trgm"]),
    ("perf_workload", "perf/workload.sql", ""),
])
def test_a_validation_stricter_than_the_deploy_passes(key: str, stricter, looser) -> None:
    assert weaker(recorded(**{key: stricter}), replace(DEFAULT, **{key: looser})) == []


def test_numbers_say_their_unit_and_zero_says_what_it_means() -> None:
    assert weaker(recorded(lock_budget_s=10.0), DEFAULT) == [
        "lock_budget_s 10 s, but this deploy's config has lock_budget_s 2 s"]
    assert weaker(recorded(perf_queries=0), DEFAULT) == [
        "perf_queries 0 (the regression gate off), but this deploy's config has perf_queries 20"]
    assert weaker(recorded(statement_timeout_s=0.0), replace(DEFAULT, statement_timeout_s=30.0)) == [
        "statement_timeout_s 0 (none), but this deploy's config has statement_timeout_s 30 s"]
    assert weaker(recorded(perf_regression_pct=50.0), DEFAULT) == [
        "perf_regression_pct 50%, but this deploy's config has perf_regression_pct 20%"]


def test_several_settings_are_named_in_one_sentence_in_a_fixed_order() -> None:
    sentence = refusal(recorded(perf_measure=False, lint=False, lock_budget_s=10.0), DEFAULT)
    assert sentence == ("the validation ran with lint off, lock_budget_s 10 s and perf_measure off, but this deploy's "
                        "config has lint on, lock_budget_s 2 s and perf_measure on: validate again under this config")


def test_a_setting_the_record_does_not_have_is_not_compared() -> None:
    old = recorded(lint=False)
    del old["lint"]
    assert weaker(old, DEFAULT) == []


def test_values_of_the_wrong_type_are_not_called_weaker() -> None:
    odd = dict(recorded(), lint="no", lock_budget_s="ten", required_extensions="pg_trgm", perf_workload=None)
    assert weaker(odd, DEFAULT) == []


def test_a_bool_is_not_taken_for_a_number() -> None:
    assert weaker(dict(recorded(), lock_retries=True), replace(DEFAULT, lock_retries=0)) == []


def test_the_current_config_may_be_a_record_too() -> None:
    assert differences(recorded(lint=False), record(DEFAULT)) == [("lint off", "lint on")]


def test_unknown_keys_in_a_record_are_ignored() -> None:
    assert weaker(dict(recorded(), some_future_setting=1, v=99), DEFAULT) == []


def test_every_setting_is_a_gate_setting_with_a_direction() -> None:
    assert {s.key for s in SETTINGS} <= set(Gate.__dataclass_fields__)
    assert {s.looser for s in SETTINGS} <= {gatesettings.HIGHER, gatesettings.LOWER, gatesettings.OFF,
                                            gatesettings.SUBSET, gatesettings.EMPTY}
