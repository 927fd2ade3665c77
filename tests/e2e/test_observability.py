"""What an operator sees: /healthz, /readyz, /metrics on the bot's HTTP front, and JSON log lines."""

from __future__ import annotations

import json
import logging
import urllib.request

from bot.logs import JsonFormatter
from bot.pg import run_context
from tests.fix_bot import BotDriver


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def base(bot: BotDriver) -> str:
    return bot.url.rsplit("/slack/events", 1)[0]


def test_healthz_says_the_process_is_alive(slack_bot: BotDriver) -> None:
    assert get(base(slack_bot) + "/healthz") == (200, "ok")


def test_readyz_is_ready_with_slack_the_state_store_and_the_scheduler(slack_bot: BotDriver) -> None:
    status, body = get(base(slack_bot) + "/readyz")
    assert (status, json.loads(body)) == (200, {"ready": True, "reasons": []})


def test_readyz_is_not_ready_when_the_scheduler_stopped(slack_bot: BotDriver) -> None:
    slack_bot.runtime.scheduler.stop()
    status, body = get(base(slack_bot) + "/readyz")
    assert status == 503 and json.loads(body)["reasons"] == ["the scheduler is not running"]


def test_metrics_count_runs_and_show_the_queue_and_the_schedule(slack_bot: BotDriver) -> None:
    from tests.fix_bot import ONE_TABLE_FOR_METRICS

    slack_bot.dbs.both("CREATE TABLE users (id bigserial PRIMARY KEY);")
    slack_bot.write_migrations(ONE_TABLE_FOR_METRICS)
    slack_bot.validate()
    status, text = get(base(slack_bot) + "/metrics")
    assert status == 200
    assert 'migrate_bot_runs_total{kind="validate",outcome="passed"}' in text
    assert 'migrate_bot_queue_length{env="staging"} 0.0' in text
    assert "migrate_bot_scheduler_leader 1.0" in text and "migrate_bot_outbox_pending 0.0" in text
    assert "migrate_bot_run_duration_seconds_bucket" in text


def test_json_log_lines_carry_the_run_id_and_no_secret() -> None:
    from bot.redact import RedactingFilter, register

    register("hunter2-in-a-log-line")
    record = logging.LogRecord("bot.x", logging.WARNING, __file__, 1, "password %s used", ("hunter2-in-a-log-line",),
                               None)
    RedactingFilter().filter(record)
    with run_context("r-0123abcd"):
        line = json.loads(JsonFormatter().format(record))
    assert line["run_id"] == "r-0123abcd" and line["level"] == "WARNING" and line["logger"] == "bot.x"
    assert "hunter2" not in line["message"]
