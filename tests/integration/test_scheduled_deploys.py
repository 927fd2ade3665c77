"""Deploys in windows, end to end in one process: the runtime's real scheduler, real clusters, the real clock.

Windows are written a few seconds ahead of now (seconds are allowed in
window entries for exactly this), so a scheduled deploy fires during the
test; what a person sees is the terminal adapter's transcript of the thread.
"""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator

import pytest

from bot import config, messages
from bot.app import create_runtime
from bot.chat.shell import Shell, ShellAnnouncer
from bot.runs import jobs, planning, traffic, windows
from bot.runs.model import Kind, Run, State
from bot.runs.runtime import Runtime
from tests.fix_bot import wait_until
from tests.fix_pg import Databases

SEED = ("CREATE TABLE users (id bigserial PRIMARY KEY, email text);"
        "INSERT INTO users (email) SELECT 'u' || g || '@x' FROM generate_series(1, 50) g;")
REQUESTER, APPROVER, SECOND = "U_RITA", "U_ADA", "U_BOB"
ONE = {"0001_orders.sql": "CREATE TABLE orders (id bigserial PRIMARY KEY, user_id bigint);"}
WAIT_S = 90.0


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def window(start: datetime, seconds: float) -> str:
    """A daily window entry opening at ``start`` (UTC) for ``seconds``."""
    end = start + timedelta(seconds=seconds)
    return f"daily {start:%H:%M:%S}-{end:%H:%M:%S} UTC"


def settings_with(bot_env: Databases, *, windows_: list[str], freezes: list[str] | None = None,
                  approvers: list[str] | None = None, **deploy: object) -> config.Settings:
    s = config.load(None)
    deploy = {"estimate_floor_s": 1.0, "traffic_sample_minutes": 0, **deploy}
    return replace(s, policy=replace(s.policy, approvers=approvers or [APPROVER]),
                   deploy=replace(s.deploy, windows=windows_, freezes=freezes or [], **deploy))


class Bot:
    """A started runtime and the shell that speaks to it; its transcript is the thread."""

    def __init__(self, settings: config.Settings) -> None:
        self.out = io.StringIO()
        self.runtime: Runtime = create_runtime(settings, ShellAnnouncer(out=self.out))
        self.runtime.start()
        self.shell = Shell(self.runtime, user=REQUESTER, out=self.out)

    @property
    def store(self):
        return self.runtime.store

    def transcript(self) -> str:
        return self.out.getvalue()

    def approved_deploy(self) -> Run:
        self.shell.handle("/migrate validate")
        deploy = self.store.latest_run(Kind.DEPLOY)
        assert deploy is not None and deploy.state is State.AWAITING_APPROVAL, self.transcript()
        self.shell.handle(f"react :white_check_mark: {deploy.id} as {APPROVER}")
        return self.store.get_run(deploy.id)

    def wait_state(self, run_id: str, *states: State, timeout: float = WAIT_S) -> Run:
        def found() -> Run | None:
            run = self.store.get_run(run_id)
            return run if run and run.state in states else None

        wait_until(found, f"{run_id} to be {'/'.join(s.value for s in states)}\n{self.transcript()}", timeout)
        self.runtime.executor.wait(timeout=timeout)
        return self.store.get_run(run_id)

    def wait_text(self, text: str, timeout: float = WAIT_S) -> None:
        wait_until(lambda: text in self.transcript(), f"{text!r} in the thread\n{self.transcript()}", timeout)

    def stop(self, *, clean: bool = True) -> None:
        self.runtime.stop(wait=clean)


@pytest.fixture
def make_bot(bot_env: Databases, make_migrations) -> Iterator[Callable[..., Bot]]:
    bot_env.both(SEED)
    make_migrations(ONE)
    started: list[Bot] = []

    def make(**kw: object) -> Bot:
        started.append(Bot(settings_with(bot_env, **kw)))
        return started[-1]

    yield make
    for bot in started:
        bot.stop()


def applied(bot_env: Databases) -> list[str]:
    if bot_env.sql("prod", "SELECT to_regclass('migrate_bot.schema_migrations')") == [(None,)]:
        return []
    return [v for (v,) in bot_env.sql("prod", "SELECT version FROM migrate_bot.schema_migrations ORDER BY version")]


def plain(text: str) -> str:
    """A thread sentence as the terminal shows it (Slack date tokens read as their fallback)."""
    from bot.chat.render import terminal_text

    return terminal_text(text)


# -- scheduling ---------------------------------------------------------------------------------------


def test_an_approved_deploy_is_scheduled_at_the_next_window_and_fires_there(make_bot, bot_env) -> None:
    opens = utcnow().replace(microsecond=0) + timedelta(seconds=6)
    bot = make_bot(windows_=[window(opens, 120)])
    deploy = bot.approved_deploy()
    bot.wait_text(f"{deploy.id} is scheduled for {opens:%Y-%m-%d %H:%M} UTC")
    scheduled = bot.store.get_run(deploy.id)
    assert scheduled.state is State.SCHEDULED and scheduled.scheduled_for == opens.isoformat()
    assert "Estimated duration: about" in bot.transcript()
    assert applied(bot_env) == []  # nothing before the window opens
    done = bot.wait_state(deploy.id, State.DEPLOYED, State.FAILED)
    assert done.state is State.DEPLOYED, bot.transcript()
    assert applied(bot_env) == ["0001"]
    assert datetime.fromisoformat(done.updated_at) >= opens
    assert "Deploying now; the window is open until" in bot.transcript()


def test_the_schedule_message_carries_a_slack_date_token(make_bot) -> None:
    opens = utcnow().replace(microsecond=0) + timedelta(hours=2)
    bot = make_bot(windows_=[window(opens, 600)])
    deploy = bot.approved_deploy()
    bot.runtime.executor.wait(timeout=WAIT_S)
    slot = planning.Slot("at", opens, opens + timedelta(seconds=600))
    text = planning.slot_text(bot.store.get_run(deploy.id), slot, bot.store.get_run(deploy.id).data["estimate"])
    assert f"<!date^{int(opens.timestamp())}^" in text
    assert plain(text) in bot.transcript()


def test_deploy_outside_the_window_answers_when_it_is_scheduled(make_bot) -> None:
    opens = utcnow().replace(microsecond=0) + timedelta(hours=2)
    bot = make_bot(windows_=[window(opens, 600)])
    deploy = bot.approved_deploy()
    bot.runtime.executor.wait(timeout=WAIT_S)
    reply = bot.shell.handle(f"/migrate deploy {deploy.id}")
    assert not reply.ok
    assert plain(reply.text) == plain(messages.DEPLOY_WAITS_FOR_WINDOW.format(
        run_id=deploy.id, when=windows.slack_date(opens)))
    assert bot.store.get_run(deploy.id).state is State.SCHEDULED


def test_deploy_inside_a_window_deploys_now(make_bot, bot_env) -> None:
    opens = utcnow().replace(microsecond=0) - timedelta(seconds=5)
    bot = make_bot(windows_=[window(opens, 3600)])
    deploy = bot.approved_deploy()
    done = bot.wait_state(deploy.id, State.DEPLOYED, State.FAILED)  # scheduled for "now": it fires at once
    assert done.state is State.DEPLOYED and applied(bot_env) == ["0001"]


def test_a_deploy_too_long_for_any_window_is_said_with_the_numbers(make_bot, bot_env) -> None:
    opens = utcnow().replace(microsecond=0) + timedelta(hours=1)
    bot = make_bot(windows_=[window(opens, 30)], estimate_floor_s=120.0)
    deploy = bot.approved_deploy()
    bot.runtime.executor.wait(timeout=WAIT_S)
    run = bot.store.get_run(deploy.id)
    assert run.state is State.SCHEDULED and run.scheduled_for == "" and run.data["unschedulable"]
    text = plain(messages.NO_WINDOW_FITS.format(run_id=deploy.id, estimate=run.data["estimate"], longest="30 s"))
    assert text in bot.transcript()
    assert run.data["estimate"].startswith("about 2 min")
    reply = bot.shell.handle(f"/migrate deploy {deploy.id}")
    assert not reply.ok and reply.text == messages.DEPLOY_NO_WINDOW_FITS.format(run_id=deploy.id)


def test_deploy_now_needs_a_second_approver_and_is_recorded(make_bot, bot_env) -> None:
    opens = utcnow().replace(microsecond=0) + timedelta(hours=2)
    bot = make_bot(windows_=[window(opens, 600)], approvers=[APPROVER, SECOND])
    deploy = bot.approved_deploy()
    bot.runtime.executor.wait(timeout=WAIT_S)
    asked = bot.shell.handle(f"/migrate deploy {deploy.id} now")
    assert asked.ok and asked.text == messages.OVERRIDE_ASKED.format(
        user=REQUESTER, run_id=deploy.id, needed=2, count=1, approvers=f"<@{APPROVER}>, <@{SECOND}>",
        reaction="white_check_mark")
    assert applied(bot_env) == []
    bot.shell.handle(f"react :white_check_mark: {deploy.id} as {SECOND}")
    done = bot.wait_state(deploy.id, State.DEPLOYED, State.FAILED)
    assert done.state is State.DEPLOYED and applied(bot_env) == ["0001"]
    override = done.data["override"]
    assert (override["asked_by"], sorted(override["approved_by"])) == (REQUESTER, [APPROVER, SECOND])
    assert messages.FIRE_GO_OVERRIDE.format(approvers=f"<@{APPROVER}>, <@{SECOND}>") in bot.transcript()


def test_deploy_now_without_windows_is_not_needed(make_bot) -> None:
    bot = make_bot(windows_=[])
    deploy = bot.approved_deploy()
    reply = bot.shell.handle(f"/migrate deploy {deploy.id} now")
    assert not reply.ok and reply.text == messages.OVERRIDE_NOT_NEEDED.format(run_id=deploy.id)


def test_a_freeze_refuses_an_on_command_deploy(make_bot, bot_env) -> None:
    start, end = utcnow() - timedelta(hours=1), utcnow() + timedelta(days=2)
    freeze = f"{start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC"
    bot = make_bot(windows_=[], freezes=[freeze])
    deploy = bot.approved_deploy()
    assert bot.store.get_run(deploy.id).scheduled_for == ""  # no windows: deploys stay on command
    reply = bot.shell.handle(f"/migrate deploy {deploy.id}")
    assert not reply.ok and reply.text == messages.DEPLOY_FROZEN.format(
        until=windows.slack_date(end.replace(second=0, microsecond=0)), freeze=freeze, run_id=deploy.id)
    assert applied(bot_env) == []


# -- fire-time checks -----------------------------------------------------------------------------------


def test_a_migration_added_before_fire_time_cancels_the_deploy(make_bot, make_migrations, bot_env) -> None:
    opens = utcnow().replace(microsecond=0) + timedelta(seconds=6)
    bot = make_bot(windows_=[window(opens, 120)])
    deploy = bot.approved_deploy()
    bot.wait_text(f"{deploy.id} is scheduled for")
    make_migrations({"0002_sneaky.sql": "DROP TABLE users;"})
    done = bot.wait_state(deploy.id, State.CANCELLED)
    assert done.summary.startswith("Not deploying: prod's pending migrations are no longer the set")
    assert applied(bot_env) == [] and bot_env.sql("prod", "SELECT to_regclass('users') IS NOT NULL") == [(True,)]


def test_revoking_the_approval_takes_the_deploy_off_the_schedule(make_bot, bot_env) -> None:
    opens = utcnow().replace(microsecond=0) + timedelta(seconds=8)
    bot = make_bot(windows_=[window(opens, 120)])
    deploy = bot.approved_deploy()
    bot.wait_text(f"{deploy.id} is scheduled for")
    job = bot.store.get_run(deploy.id).data["job_id"]
    bot.shell.handle(f"unreact :white_check_mark: {deploy.id} as {APPROVER}")
    run = bot.store.get_run(deploy.id)
    assert run.state is State.AWAITING_APPROVAL and run.scheduled_for == ""
    assert bot.store.get_job(job) is None
    assert messages.APPROVAL_REVOKED.format(user=APPROVER, count=0, required=1) in bot.transcript()


def test_approvals_that_no_longer_count_at_fire_time_stop_the_deploy(make_bot, bot_env) -> None:
    """The approver left the approver list (a config change and a restart): at fire time their approval is gone."""
    opens = utcnow().replace(microsecond=0) + timedelta(seconds=8)
    first = make_bot(windows_=[window(opens, 120)])
    deploy = first.approved_deploy()
    first.wait_text(f"{deploy.id} is scheduled for")
    first.stop()
    second = make_bot(windows_=[window(opens, 120)], approvers=[SECOND])
    done = second.wait_state(deploy.id, State.AWAITING_APPROVAL)
    assert messages.FIRE_APPROVALS_GONE.format(count=0, required=1) in second.transcript()
    assert applied(bot_env) == []
    assert done.summary == "approvals no longer stand"


def test_prod_busy_at_fire_time_makes_the_deploy_wait_then_it_goes(make_bot, bot_env) -> None:
    opens = utcnow().replace(microsecond=0) + timedelta(seconds=6)
    bot = make_bot(windows_=[window(opens, 600)])
    bot_env.both("CREATE TABLE orders_archive (id bigint);")
    blocker = bot_env.connect("prod", autocommit=False)
    blocker.execute("LOCK TABLE users IN ACCESS SHARE MODE")  # idle in transaction, holding a lock on users
    try:
        Path("migrations/0001_orders.sql").write_text("ALTER TABLE users ADD COLUMN nick text;")
        deploy = bot.approved_deploy()
        bot.wait_text("Not deploying yet:")
        run = bot.store.get_run(deploy.id)
        assert run.state is State.SCHEDULED and run.data["waiting_since"]
        assert "1 idle in transaction holding a lock on users (limit 0)" in bot.transcript()
        due = bot.runtime.scheduler.due(run.data["job_id"])
        assert due is not None and timedelta(minutes=1) < due - utcnow() <= planning.RETRY_BUSY
    finally:
        blocker.close()
    decision = planning.fire(bot.runtime, deploy.id)  # the retry, two minutes early: prod is quiet now
    assert decision is not None and decision.action == "go"
    assert bot.wait_state(deploy.id, State.DEPLOYED, State.FAILED).state is State.DEPLOYED


def test_a_freeze_that_began_moves_the_deploy_past_it(make_bot, bot_env) -> None:
    opens = utcnow().replace(microsecond=0) + timedelta(seconds=6)
    bot = make_bot(windows_=[window(opens, 600)])
    deploy = bot.approved_deploy()
    bot.wait_text(f"{deploy.id} is scheduled for")
    start, end = utcnow() - timedelta(minutes=1), utcnow() + timedelta(days=3)
    freeze = f"{start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC"
    bot.runtime.settings = replace(bot.runtime.settings, deploy=replace(bot.runtime.settings.deploy, freezes=[freeze]))
    wait_until(lambda: messages.FIRE_FROZEN.format(freeze=freeze) in bot.transcript(), "the freeze to be seen",
               WAIT_S)
    run = bot.store.get_run(deploy.id)
    assert run.state is State.SCHEDULED and datetime.fromisoformat(run.scheduled_for) >= end - timedelta(minutes=1)
    assert applied(bot_env) == []


# -- restarts and misfires (in process; tests/e2e has the same with real processes and SIGKILL) ---------


def test_a_job_missed_while_no_bot_ran_fires_on_start_inside_the_window(make_bot, bot_env) -> None:
    opens = utcnow().replace(microsecond=0) + timedelta(seconds=5)
    first = make_bot(windows_=[window(opens, 600)])
    deploy = first.approved_deploy()
    first.wait_text(f"{deploy.id} is scheduled for")
    first.stop(clean=False)  # dies before the window opens
    wait_until(lambda: utcnow() > opens + timedelta(seconds=1), "the window to open with no bot running", 30)
    second = make_bot(windows_=[window(opens, 600)])
    done = second.wait_state(deploy.id, State.DEPLOYED, State.FAILED)
    assert done.state is State.DEPLOYED and applied(bot_env) == ["0001"]
    assert messages.FIRE_GO_LATE.format(scheduled=f"{opens:%Y-%m-%d %H:%M} UTC",
                                        until=f"{opens + timedelta(seconds=600):%Y-%m-%d %H:%M} UTC") \
        in second.transcript()


def test_a_job_missed_past_its_window_is_replanned_into_the_next(make_bot, bot_env) -> None:
    opens = utcnow().replace(microsecond=0) + timedelta(seconds=4)
    first = make_bot(windows_=[window(opens, 3)])
    deploy = first.approved_deploy()
    first.wait_text(f"{deploy.id} is scheduled for")
    first.stop(clean=False)
    wait_until(lambda: utcnow() > opens + timedelta(seconds=4), "the window to pass with no bot running", 30)
    second = make_bot(windows_=[window(opens, 3)])
    second.wait_text(messages.FIRE_MISSED.format(scheduled=f"{opens:%Y-%m-%d %H:%M} UTC"))
    run = second.store.get_run(deploy.id)
    assert run.state is State.SCHEDULED and run.scheduled_for == (opens + timedelta(days=1)).isoformat()
    assert applied(bot_env) == []


# -- a window closing mid-run ----------------------------------------------------------------------------

SLOW_ON_PROD = {  # a migration slow on prod only: staging's timings (and so the estimate) stay small
    "0001_orders.sql": "CREATE TABLE orders (id bigserial PRIMARY KEY);",
    "0002_slow.sql": "CREATE TABLE slow_done (id int); SELECT pg_sleep((SELECT s FROM sleep_for));",
    "0003_after.sql": "CREATE TABLE after_window (id int);",
}


@pytest.mark.parametrize("mode", ["finish-current", "abort"])
def test_a_window_closing_mid_deploy_keeps_history_true_and_replans_the_rest(make_bot, make_migrations, bot_env,
                                                                             mode: str) -> None:
    bot_env.sql("prod", "CREATE TABLE sleep_for (s float); INSERT INTO sleep_for VALUES (6)")
    bot_env.sql("staging", "CREATE TABLE sleep_for (s float); INSERT INTO sleep_for VALUES (0)")
    for old in Path("migrations").glob("*.sql"):
        old.unlink()
    make_migrations(SLOW_ON_PROD)
    opens = utcnow().replace(microsecond=0) + timedelta(seconds=6)
    bot = make_bot(windows_=[window(opens, 4)], on_window_close=mode)
    deploy = bot.approved_deploy()
    bot.wait_text(f"{deploy.id} is scheduled for")
    run = bot.wait_state(deploy.id, State.SCHEDULED, State.FAILED, State.DEPLOYED, timeout=WAIT_S)
    wait_until(lambda: "The deploy window closed during the deploy" in bot.transcript(), "the window to close",
               WAIT_S)
    run = bot.wait_state(deploy.id, State.SCHEDULED)
    history = applied(bot_env)
    tables = {t for (t,) in bot_env.sql("prod", "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    if mode == "finish-current":
        assert history == ["0001", "0002"] and {"slow_done", "orders"} <= tables and "after_window" not in tables
    else:
        assert history == ["0001"] and "slow_done" not in tables and "after_window" not in tables
    assert run.scheduled_for == (opens + timedelta(days=1)).isoformat()
    assert run.data["applied"] == ["0001_orders"] + (["0002_slow"] if mode == "finish-current" else [])
    # the next window: the rest deploys without a new validation (it is the rest of the validated set)
    bot.runtime.clock = lambda: opens + timedelta(days=1, seconds=1)
    bot_env.sql("prod", "UPDATE sleep_for SET s = 0")
    assert planning.fire(bot.runtime, deploy.id).action == "go"
    done = bot.wait_state(deploy.id, State.DEPLOYED, State.FAILED)
    assert done.state is State.DEPLOYED, bot.transcript()
    assert applied(bot_env) == ["0001", "0002", "0003"]


# -- hold-back reminders, traffic, the windows command ----------------------------------------------------


def test_a_held_cleanup_migration_gets_a_reminder_in_its_thread(make_bot, make_migrations, bot_env) -> None:
    make_migrations({"0002_drop_email.sql": "-- migrate:cleanup\nALTER TABLE users DROP COLUMN email;"})
    bot = make_bot(windows_=[])
    deploy = bot.approved_deploy()
    bot.shell.handle(f"/migrate deploy {deploy.id}")
    done = bot.store.get_run(deploy.id)
    assert done.state is State.DEPLOYED and applied(bot_env) == ["0001"]
    job = f"remind:{deploy.id}"
    due = bot.runtime.scheduler.due(job)
    assert due is not None and timedelta(days=6, hours=23) < due - utcnow() <= timedelta(days=7)
    bot.runtime.scheduler.at(job, planning.REMIND_JOB, utcnow(), deploy.id)  # let the week pass
    bot.wait_text(messages.CLEANUP_ELIGIBLE.format(migrations="`0002_drop_email`", days=7, run_id=deploy.id))


def test_the_traffic_sampler_stores_prod_transactions_and_sessions(make_bot, bot_env) -> None:
    bot = make_bot(windows_=[])
    jobs.enter(bot.runtime)
    jobs.sample_traffic()
    bot_env.sql("prod", "SELECT count(*) FROM users")
    jobs.sample_traffic()
    first, second = bot.store.samples(traffic.SERIES, "prod")
    assert second.data["xact"] > first.data["xact"] > 0 and first.data["active"] >= 0


def test_windows_command_lists_the_next_openings(make_bot) -> None:
    opens = utcnow().replace(microsecond=0) + timedelta(hours=3)
    bot = make_bot(windows_=[window(opens, 3600)])
    reply = bot.shell.handle("/migrate windows")
    assert reply.ok and "Next deploy windows:" in reply.text
    first = windows.next_openings(bot.runtime.calendar, utcnow(), 1)[0]
    assert f"• {windows.describe(first)}" in reply.text
    assert "Quiet hours: shown after a week of hourly traffic samples" in reply.text


def test_status_shows_the_schedule(make_bot) -> None:
    opens = utcnow().replace(microsecond=0) + timedelta(hours=2)
    bot = make_bot(windows_=[window(opens, 600)])
    deploy = bot.approved_deploy()
    bot.runtime.executor.wait(timeout=WAIT_S)
    text = bot.shell.handle("/migrate status").text
    assert f"Scheduled: {deploy.id} deploys at {opens:%Y-%m-%d %H:%M} UTC" in text


def test_windows_shows_the_quietest_hours_after_a_week_of_samples(make_bot) -> None:
    from bot.runs.store import Sample

    bot = make_bot(windows_=["daily 03:00-04:00 UTC"])
    start = utcnow().replace(minute=0, second=0, microsecond=0) - timedelta(days=8)
    xact = 0
    for hour in range(8 * 24 + 1):
        taken = start + timedelta(hours=hour)
        xact += 100 if taken.hour == 4 else 5000  # 03:00-04:00 UTC (counted by the 04:00 sample) is quiet
        bot.store.add_sample(Sample(traffic.SERIES, "prod", taken.isoformat(), {"xact": xact, "active": 1}))
    text = bot.shell.handle("/migrate windows").text
    assert "Quiet hours: shown after" not in text
    quiet = traffic.quietest_hours(commands_samples(bot), windows.parse_calendar([], [], "UTC").tz)
    assert quiet[0].hour == 3 and f"{quiet[0].label()}" in text, text


def commands_samples(bot: Bot) -> list[traffic.Sample]:
    from bot.runs.commands import traffic_samples

    return traffic_samples(bot.store)


def test_a_deploy_whose_size_cannot_be_measured_still_gets_a_slot_and_says_why(bot_env, make_migrations) -> None:
    from bot.runs.steps import Steps

    class Unmeasurable(Steps):
        def estimate(self, settings, store, run):
            raise RuntimeError("catalog unreadable")

    bot_env.both(SEED)
    make_migrations(ONE)
    opens = utcnow().replace(microsecond=0) + timedelta(hours=2)
    settings = settings_with(bot_env, windows_=[window(opens, 600)], estimate_floor_s=60.0)
    out = io.StringIO()
    runtime = Runtime(settings, create_runtime(settings, ShellAnnouncer(out=out)).store, ShellAnnouncer(out=out),
                      workflow=Unmeasurable())
    shell = Shell(runtime, user=REQUESTER, out=out)
    try:
        shell.handle("/migrate validate")
        deploy = runtime.store.latest_run(Kind.DEPLOY)
        shell.handle(f"react :white_check_mark: {deploy.id} as {APPROVER}")
        run = runtime.store.get_run(deploy.id)
        assert run.scheduled_for == opens.isoformat() and run.data["estimate_s"] == 90.0
        assert messages.ESTIMATE_UNKNOWN.format(seconds=90.0, error="RuntimeError") in out.getvalue()
    finally:
        runtime.stop()
