"""The deploy duration estimate: staging timings x prod/staging scale x margin, and its one-sentence explanation."""

from __future__ import annotations

import pytest

from bot.workflow.estimate import Scale, TableSize, duration, estimate, scale_for, staging_seconds
from bot.workflow.report import Check, Report, Status


def test_staging_time_is_scaled_and_given_the_margin() -> None:
    assert estimate({"0001_a": 100.0}, {"0001_a": 10.0}).seconds == 1500.0


def test_short_sets_get_the_floor() -> None:
    assert estimate({"0001_a": 1.0}, {"0001_a": 1.0}).seconds == 60.0


def test_a_scale_below_one_counts_as_one() -> None:
    assert estimate({"0001_a": 100.0}, {"0001_a": 0.2}, margin=1.0).seconds == 100.0


def test_a_migration_without_a_staging_timing_gets_the_stated_default_scaled() -> None:
    result = estimate({"0001_a": 10.0}, {"0001_a": 1.0, "0002_b": 2.0}, margin=1.0, untimed_s=60.0)
    assert result.seconds == 10.0 + 60.0 * 2.0
    assert [p.staging_s for p in result.parts] == [10.0, None]


def test_explain_gives_the_numbers_in_one_sentence() -> None:
    result = estimate({"0001_a": 4.0, "0002_b": 0.05, "0003_c": 0.05}, {"0001_a": 180.0, "0002_b": 1.0, "0003_c": 1.0},
                      reasons={"0001_a": "orders is 180x larger on prod"})
    assert result.explain() == ("about 19 min: 3 migrations took 4.1 s on staging; orders is 180x larger on prod; "
                                "x1.5 margin; at least 1 min")


def test_explain_states_the_default_for_untimed_migrations() -> None:
    result = estimate({}, {"0001_a": 1.0, "0002_b": 1.0})
    assert result.explain() == ("about 3 min: 2 migrations without a staging timing counted as 1 min each; "
                                "x1.5 margin; at least 1 min")


def test_explain_keeps_only_the_largest_reasons() -> None:
    scales = {f"000{i}_m": float(10 * i) for i in range(1, 6)}
    result = estimate(dict.fromkeys(scales, 0.01), scales, reasons={k: f"t{k[3]} is larger" for k in scales})
    assert "t5 is larger; t4 is larger; t3 is larger; 2 more tables larger on prod" in result.explain()


@pytest.mark.parametrize(("seconds", "text"), [
    (45.2, "46 s"), (60.0, "1 min"), (61.0, "2 min"), (840.0, "14 min"), (3600.0, "1 h"), (7500.0, "2 h 5 min"),
])
def test_durations_round_up_in_a_planning_unit(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_scale_compares_rows_of_the_largest_touched_table() -> None:
    prod = {"orders": TableSize(180_000, 90_000_000), "users": TableSize(5_000, 1_000_000)}
    staging = {"orders": TableSize(1_000, 500_000), "users": TableSize(5_000, 1_000_000)}
    assert scale_for({"orders", "users"}, prod, staging) == Scale(180.0, "orders is 180x larger on prod")


def test_a_table_absent_on_staging_counts_against_the_row_floor() -> None:
    assert scale_for({"orders"}, {"orders": TableSize(50_000, 9_000_000)}, {}) == Scale(
        50.0, "orders is absent on staging, so prod's 50,000 rows count against a 1,000-row floor (50x)")


def test_an_empty_table_on_staging_counts_against_the_row_floor() -> None:
    assert scale_for({"orders"}, {"orders": TableSize(5_000, 900_000)}, {"orders": TableSize(0, 8192)}) == Scale(
        5.0, "orders has 0 rows on staging, so prod's 5,000 count against a 1,000-row floor (5.0x)")


def test_tables_never_analyzed_are_compared_by_size_on_disk() -> None:
    prod, staging = {"orders": TableSize(None, 64 * 1024 * 1024)}, {"orders": TableSize(None, 1024 * 1024)}
    assert scale_for({"orders"}, prod, staging) == Scale(
        64.0, "orders is 64x larger on prod by size on disk (row counts unknown until both sides are analyzed)")


@pytest.mark.parametrize("staging_rows", [180_000, 500_000])
def test_prod_no_larger_than_staging_scales_by_one_and_says_nothing(staging_rows: int) -> None:
    prod, staging = {"orders": TableSize(180_000, 1)}, {"orders": TableSize(staging_rows, 1)}
    assert scale_for({"orders"}, prod, staging) == Scale(1.0)


def test_tables_the_set_creates_scale_by_one() -> None:
    assert scale_for({"audit_log"}, {}, {"audit_log": TableSize(10, 8192)}) == Scale(1.0)


def passed(label: str, **details: object) -> Check:
    return Check(f"migration.{label}", Status.PASSED, "applied on staging", migration=label, details=dict(details))


def test_staging_seconds_prefer_the_statements_own_timings() -> None:
    report = Report("validate", checks=[
        passed("0001_a", seconds=9.0, statements=[{"line": 1, "seconds": 2.0}, {"line": 2, "seconds": 0.5}]),
        passed("0002_b", seconds=3.0),
        Check("migration.0003_c", Status.FAILED, "failed on staging", migration="0003_c", details={"seconds": 1.0}),
        Check("lint.something", Status.PASSED, "fine"),
    ])
    assert staging_seconds(report) == {"0001_a": 2.5, "0002_b": 3.0}
