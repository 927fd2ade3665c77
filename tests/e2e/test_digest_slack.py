"""The digest in Slack: Block Kit within Slack's limits (the emulator checks them) and its chart uploaded with it."""

from __future__ import annotations

from datetime import datetime, timezone

from bot.runs import jobs
from tests.fix_bot import USERS_AND_ORDERS, BotFactory, wait_until
from tests.fix_slack import DEPLOYS, REQUESTER

DIGEST = '[digest]\nchannel = "C_DEPLOYS"\nat = "09:00"\nsnapshot_minutes = 0\n'


def busy_prod(bot) -> None:
    bot.dbs.both(USERS_AND_ORDERS)
    with bot.dbs.connect("prod") as conn:
        for n in range(300):  # many distinct statements: a digest bigger than one Slack message section
            conn.execute(f"SELECT id, total FROM orders WHERE user_id = %s AND total > {n}", (n % 200,))


def digest_messages(bot) -> list:
    return [m for m in bot.emulator.messages(DEPLOYS) if m.thread_ts is None
            and m.text.startswith("pg_stat_statements digest: prod")]


def test_the_daily_digest_is_posted_with_its_chart(make_bot: BotFactory) -> None:
    bot = make_bot(DIGEST)
    busy_prod(bot)
    bot.runtime.scheduler.at(jobs.DIGEST_JOB, "bot.runs.jobs:post_digest", datetime.now(timezone.utc), DEPLOYS)
    (message,) = wait_until(lambda: digest_messages(bot), "the digest in the channel", 60)
    posted = [c for c in bot.emulator.calls("chat.postMessage") if c.args.get("text", "").startswith(
        "pg_stat_statements digest")]
    assert posted and all(c.ok for c in posted)  # the emulator refuses blocks beyond Slack's limits
    (chart,) = wait_until(lambda: [f for f in bot.emulator.files() if f.filename == "digest-prod.png"],
                          "the chart upload", 60)
    assert chart.content.startswith(b"\x89PNG\r\n\x1a\n")


def test_slash_digest_posts_in_the_channel_it_was_asked_in(make_bot: BotFactory) -> None:
    bot = make_bot(DIGEST)
    busy_prod(bot)
    answer = bot.reply(bot.command("digest prod", user=REQUESTER))
    assert answer.startswith("Making the pg_stat_statements digest of prod")
    wait_until(lambda: digest_messages(bot), "the digest in the channel", 60)
