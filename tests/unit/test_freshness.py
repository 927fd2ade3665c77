"""The gate's staging-freshness line, from what a refresh recorded (pure)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from bot.workflow.freshness import Freshness, ago, verdict
from bot.workflow.report import Status

NOW = datetime(2026, 5, 4, 12, 0, tzinfo=timezone.utc)


def recorded(hours: float, method: str = "template", analyzed: bool = True, data_hours: float | None = None) -> Freshness:
    return Freshness(at=NOW - timedelta(hours=hours), method=method, analyzed=analyzed, source="template snap",
                     run_id="r-3f9a1c02",
                     data_as_of=NOW - timedelta(hours=data_hours) if data_hours is not None else None)


def test_a_fresh_analyzed_copy_passes() -> None:
    check = verdict(recorded(3), 24, NOW)
    assert check.line() == "PASSED staging-freshness: staging was refreshed 3 h ago by template, ANALYZE ran"
    assert check.details["method"] == "template" and check.details["age_hours"] == 3.0


def test_never_refreshed_by_the_bot_is_a_warning() -> None:
    check = verdict(None, 24, NOW)
    assert check.status is Status.WARNING
    assert check.message.startswith("no refresh by migrate-bot is recorded on staging")


def test_older_than_the_limit_is_a_warning() -> None:
    assert verdict(recorded(25, "dump"), 24, NOW).line() == (
        "WARNING staging-freshness: staging was refreshed 25 h ago by dump, ANALYZE ran — older than "
        "refresh.stale_after_hours (24 h): prod may have moved on since — refresh it first: migrate-bot refresh "
        "(/migrate refresh)")


def test_without_analyze_is_a_warning() -> None:
    check = verdict(recorded(1, analyzed=False), 24, NOW)
    assert check.status is Status.WARNING
    assert check.message.startswith("staging was refreshed 1 h ago by template, ANALYZE did not run on every table — "
                                    "the planner may lack statistics")


def test_an_old_snapshot_copied_recently_is_judged_by_its_data() -> None:
    check = verdict(recorded(1, "command", data_hours=50), 24, NOW)
    assert check.status is Status.WARNING
    assert check.message.startswith("staging was refreshed 1 h ago by command (its data is from 2 days ago), "
                                    "ANALYZE ran — older than refresh.stale_after_hours")


def test_the_record_round_trips_through_the_comment() -> None:
    fresh = recorded(2, "command", data_hours=5)
    assert Freshness.from_comment(fresh.to_comment()) == fresh


@pytest.mark.parametrize("comment", [None, "", "the team's own comment", "migrate-bot refresh {not json",
                                     'migrate-bot refresh {"method": "dump"}'])
def test_other_comments_are_no_record(comment: str | None) -> None:
    assert Freshness.from_comment(comment) is None


@pytest.mark.parametrize("seconds,said", [(5, "just now"), (-30, "just now"), (125, "2 min ago"),
                                          (3 * 3600 + 10, "3 h ago"), (47 * 3600, "47 h ago"), (72 * 3600, "3 days ago")])
def test_ages_read_like_a_person_says_them(seconds: float, said: str) -> None:
    assert ago(seconds) == said
