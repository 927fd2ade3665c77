"""The cleanup hold-back: what a deploy holds, and when the first held migration becomes eligible."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from bot.migrations.apply import HistoryRow
from bot.migrations.source import Migration, build
from bot.workflow.deploy import held_back

HOLD = timedelta(days=7)
UTC = timezone.utc
NOW = datetime(2024, 5, 3, 12, 0, tzinfo=UTC)


def migration(version: str, sql: str, cleanup: bool = False) -> Migration:
    text = ("-- migrate:cleanup\n" if cleanup else "") + sql
    return build(version, f"m{version}", f"{version}_m{version}.sql", text)


def history(applied_at: datetime) -> dict[str, HistoryRow]:
    return {"0001": HistoryRow("0001", "m0001", "x", applied_at, False)}


EXPAND = migration("0002", "ALTER TABLE orders ADD COLUMN total_cents bigint;")
CONTRACT = migration("0003", "ALTER TABLE orders DROP COLUMN total;", cleanup=True)
LATER = migration("0004", "CREATE INDEX orders_total_cents_idx ON orders (total_cents);")


def test_nothing_held_has_no_date() -> None:
    split = held_back([EXPAND], history(NOW - timedelta(days=1)), HOLD, NOW)
    assert split.to_apply == [EXPAND] and split.held == [] and split.held_until is None


def test_a_cleanup_after_a_recent_deploy_is_held_until_seven_days_after_it() -> None:
    split = held_back([CONTRACT, LATER], history(datetime(2024, 5, 1, 10, 30, tzinfo=UTC)), HOLD, NOW)
    assert split.to_apply == []
    assert split.held_until == datetime(2024, 5, 8, 10, 30, tzinfo=UTC)
    assert split.held[0][1] == "cleanup migration held until 2024-05-08 10:30 UTC (7 days after the previous deploy)"
    assert split.held[1] == (LATER, "waits behind held 0003_m0003 (migrations apply in order)")


def test_a_cleanup_behind_an_expand_in_the_same_set_is_held_from_now() -> None:
    split = held_back([EXPAND, CONTRACT], history(NOW - timedelta(days=30)), HOLD, NOW)
    assert split.to_apply == [EXPAND]
    assert split.held_until == NOW + HOLD


def test_a_cleanup_seven_days_after_the_previous_deploy_applies() -> None:
    split = held_back([CONTRACT], history(NOW - HOLD), HOLD, NOW)
    assert split.to_apply == [CONTRACT] and split.held_until is None


def test_no_previous_deploy_holds_nothing() -> None:
    assert held_back([CONTRACT], {}, HOLD, NOW).held_until is None


def test_the_date_is_utc_whatever_the_session_time_zone() -> None:
    paris = timezone(timedelta(hours=2))
    split = held_back([CONTRACT], history(datetime(2024, 5, 1, 12, 30, tzinfo=paris)), HOLD, NOW)
    assert split.held_until == datetime(2024, 5, 8, 10, 30, tzinfo=UTC)
    assert split.held_until.tzinfo == UTC
    assert "held until 2024-05-08 10:30 UTC" in split.held[0][1]
