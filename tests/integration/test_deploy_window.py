"""Deploys scheduled into low-traffic windows, against real prod and staging clusters.

The duration estimate, the fire-time "is prod quiet enough?" check, and a
deploy that stops at the window's end. The window's clock is injected: it
reads "open" until the second migration starts, then "closed" — so the
deadline passes during that migration without any test sleeping for it. The
ledger is an in-memory one (the workflow's ``Ledger`` protocol), so these
tests exercise the workflow layer alone.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator

import psycopg
import pytest

from bot.config import Settings
from bot.migrations.source import discover
from bot.workflow import deploy, estimate, validate
from bot.workflow.checks import quiet_enough
from bot.workflow.report import Report, Status
from tests.fix_pg import Databases

SEED = "CREATE TABLE users (id bigserial PRIMARY KEY, email text);\n"
TABLES = {"0001": "window_a", "0002": "window_b", "0003": "window_c"}
# The second migration sleeps only where the marker table exists: on prod, for the abort tests; never on staging.
SLOW_ON_PROD = "SELECT pg_sleep(CASE WHEN to_regclass('public.slow_here') IS NULL THEN 0 ELSE 30 END);"
THREE = {
    "0001_a.sql": "CREATE TABLE window_a (id int);",
    "0002_b.sql": "CREATE TABLE window_b (id int);\n" + SLOW_ON_PROD,
    "0003_c.sql": "CREATE TABLE window_c (id int);",
}
DEADLINE = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=2)
CLOSED_AT = f"{DEADLINE:%Y-%m-%d %H:%M} UTC"


class MemoryLedger:
    """The validations and deploys the workflow records, kept in memory."""

    def __init__(self) -> None:
        self.validations: list[dict[str, Any]] = []
        self.deploys: list[dict[str, Any]] = []

    def record_validation(self, *, fingerprint: str, passed: bool, report_json: str, migrations: list[str],
                          run_id: str | None = None, commit: str | None = None,
                          gate_settings: dict | None = None) -> int:
        self.validations.append({"fingerprint": fingerprint, "passed": passed,
                                 "created_at": datetime.now(timezone.utc).isoformat()})
        return len(self.validations)

    def passing_validation(self, fingerprint: str) -> dict[str, Any] | None:
        return next((v for v in reversed(self.validations) if v["fingerprint"] == fingerprint and v["passed"]), None)

    def record_deploy(self, **row: Any) -> int:
        self.deploys.append(row)
        return len(self.deploys)


class WindowClock:
    """Two hours before the deadline until ``close()``, one second after it from then on."""

    def __init__(self) -> None:
        self._closed = threading.Event()

    def close(self) -> None:
        self._closed.set()

    def __call__(self) -> datetime:
        return DEADLINE + (timedelta(seconds=1) if self._closed.is_set() else -timedelta(hours=2))


def closes_when(clock: WindowClock, label: str) -> Callable[[str, dict], None]:
    def on_event(kind: str, data: dict) -> None:
        if kind == "migration_started" and data["migration"] == label:
            clock.close()

    return on_event


@pytest.fixture
def ledger() -> MemoryLedger:
    return MemoryLedger()


@pytest.fixture
def settings() -> Settings:
    s = Settings()
    return replace(s, gate=replace(s.gate, perf_queries=0))


def statuses(report: Report) -> dict[str, Status]:
    return {c.name: c.status for c in report.checks}


def message(report: Report, name: str) -> str:
    return next(c.message for c in report.checks if c.name == name)


def history(db: Databases) -> list[str]:
    return [v for (v,) in db.sql("prod", "SELECT version FROM migrate_bot.schema_migrations ORDER BY 1")]


def tables_on_prod(db: Databases) -> list[str]:
    """The versions whose table exists on prod: what history must agree with."""
    return [v for v, t in sorted(TABLES.items()) if db.sql("prod", "SELECT to_regclass(%s)", (t,)) != [(None,)]]


def validated(db: Databases, make_migrations, settings: Settings, ledger: MemoryLedger,
              files: dict[str, str] = THREE) -> None:
    db.both(SEED)
    make_migrations(files)
    report = validate.run(settings, ledger)
    assert report.exit_code == 0, report.lines()


def deploy_in_window(settings: Settings, ledger: MemoryLedger, on_deadline: str) -> Report:
    clock = WindowClock()
    return deploy.run(settings, ledger, deploy.DeployOptions(
        env_flag=True, deadline=DEADLINE, on_deadline=on_deadline, clock=clock,
        on_event=closes_when(clock, "0002_b")))


def refresh_staging_like_prod(db: Databases) -> None:
    """What `migrate-bot refresh` would leave: staging without what prod does not have."""
    applied = history(db)
    for version, table in TABLES.items():
        if version not in applied:
            db.sql("staging", f"DROP TABLE IF EXISTS {table}")
            db.sql("staging", "DELETE FROM migrate_bot.schema_migrations WHERE version = %s", (version,))


# -- finish-current -----------------------------------------------------------------------------

def test_finish_current_applies_the_running_migration_and_leaves_the_rest(
        bot_env: Databases, make_migrations, settings: Settings, ledger: MemoryLedger) -> None:
    validated(bot_env, make_migrations, settings, ledger)
    report = deploy_in_window(settings, ledger, deploy.FINISH_CURRENT)
    assert statuses(report)["migration.0001_a"] is Status.PASSED
    assert statuses(report)["migration.0002_b"] is Status.PASSED
    assert statuses(report)["window-closed.0003_c"] is Status.HELD
    assert message(report, "window-closed.0003_c") == (
        f"the deploy window closed at {CLOSED_AT}, so it was not started; it stays pending for the next window")
    assert history(bot_env) == tables_on_prod(bot_env) == ["0001", "0002"]


def test_a_deploy_the_window_cut_short_is_a_passing_report(
        bot_env: Databases, make_migrations, settings: Settings, ledger: MemoryLedger) -> None:
    validated(bot_env, make_migrations, settings, ledger)
    report = deploy_in_window(settings, ledger, deploy.FINISH_CURRENT)
    assert report.exit_code == 0, report.lines()
    assert report.facts["applied"] == ["0001_a", "0002_b"]
    assert report.facts["left"] == ["0003_c"] and report.facts["window_closed"] is True
    assert report.summary().startswith("RESULT deploy: PASS") and report.summary().endswith("exit 0")
    assert ledger.deploys[-1]["applied"] == ["0001_a", "0002_b"] and ledger.deploys[-1]["ok"] is True


def test_a_window_that_never_closes_leaves_nothing(
        bot_env: Databases, make_migrations, settings: Settings, ledger: MemoryLedger) -> None:
    validated(bot_env, make_migrations, settings, ledger)
    report = deploy.run(settings, ledger, deploy.DeployOptions(env_flag=True, deadline=DEADLINE, clock=WindowClock()))
    assert report.exit_code == 0, report.lines()
    assert report.facts["left"] == [] and report.facts["window_closed"] is False
    assert history(bot_env) == ["0001", "0002", "0003"]


# -- abort -----------------------------------------------------------------------------------------

def test_abort_cancels_the_running_migration_and_rolls_it_back(
        bot_env: Databases, make_migrations, settings: Settings, ledger: MemoryLedger) -> None:
    validated(bot_env, make_migrations, settings, ledger)
    bot_env.sql("prod", "CREATE TABLE slow_here ()")
    report = deploy_in_window(settings, ledger, deploy.ABORT)
    assert report.exit_code == 1
    assert statuses(report)["migration.0001_a"] is Status.PASSED
    assert statuses(report)["window-closed.0002_b"] is Status.FAILED
    assert "migration.0002_b" not in statuses(report)
    assert statuses(report)["window-closed.0003_c"] is Status.HELD
    cancelled = message(report, "window-closed.0002_b")
    assert cancelled.startswith(f"cancelled at the end of the deploy window ({CLOSED_AT})")
    assert cancelled.endswith(
        "; rolled back with its history row, so nothing of it is on prod; it stays pending for the next window")
    assert report.facts["applied"] == ["0001_a"] and report.facts["cancelled"] == "0002_b"
    assert report.facts["left"] == ["0003_c"] and report.facts["window_closed"] is True
    assert history(bot_env) == tables_on_prod(bot_env) == ["0001"]


def test_abort_says_what_a_no_transaction_file_had_committed(
        bot_env: Databases, make_migrations, settings: Settings, ledger: MemoryLedger) -> None:
    files = dict(THREE, **{"0002_b.sql": "-- migrate:no-transaction\n" + THREE["0002_b.sql"]})
    validated(bot_env, make_migrations, settings, ledger, files)
    bot_env.sql("prod", "CREATE TABLE slow_here ()")
    report = deploy_in_window(settings, ledger, deploy.ABORT)
    assert message(report, "window-closed.0002_b").endswith(
        "; 1 of its 2 statements had already committed and stay applied, but it has no history row — make the file "
        "re-runnable (IF NOT EXISTS …) or finish it by hand before the next window")
    assert history(bot_env) == ["0001"]
    assert tables_on_prod(bot_env) == ["0001", "0002"]


# -- the rest, in a later window ---------------------------------------------------------------------

@pytest.mark.parametrize("on_deadline", [deploy.FINISH_CURRENT, deploy.ABORT])
def test_a_later_deploy_applies_what_the_window_left(
        bot_env: Databases, make_migrations, settings: Settings, ledger: MemoryLedger, on_deadline: str) -> None:
    validated(bot_env, make_migrations, settings, ledger)
    bot_env.sql("prod", "CREATE TABLE slow_here ()" if on_deadline == deploy.ABORT else "SELECT 1")
    assert deploy_in_window(settings, ledger, on_deadline).facts["window_closed"] is True
    bot_env.sql("prod", "DROP TABLE IF EXISTS slow_here")
    refresh_staging_like_prod(bot_env)
    assert validate.run(settings, ledger).exit_code == 0
    report = deploy.run(settings, ledger, deploy.DeployOptions(env_flag=True))
    assert report.exit_code == 0, report.lines()
    assert history(bot_env) == tables_on_prod(bot_env) == ["0001", "0002", "0003"]


# -- is prod quiet enough? ----------------------------------------------------------------------------

@pytest.fixture
def open_transaction(bot_env: Databases) -> Iterator[psycopg.Connection]:
    """A client that read from orders and left its transaction open: it holds ACCESS SHARE on orders."""
    bot_env.both(SEED + "CREATE TABLE orders (id bigserial PRIMARY KEY, note text);"
                 "INSERT INTO orders (note) VALUES ('card 4111-1111');")
    holder = psycopg.connect(bot_env.prod_url, autocommit=False, application_name="billing-report")
    holder.execute("SELECT note FROM orders WHERE note = 'card 4111-1111'")
    yield holder
    holder.close()


def test_an_open_transaction_on_a_touched_table_is_not_quiet(
        bot_env: Databases, open_transaction: psycopg.Connection) -> None:
    with bot_env.connect("prod") as conn:
        check = quiet_enough(conn, {"orders", "users"}, max_active=10, max_idle_in_tx=0)
    pid = open_transaction.info.backend_pid
    assert check.status is Status.FAILED
    assert check.message.startswith(
        "prod is too busy to deploy now: 0 active session(s) (limit 10), 1 idle in transaction holding a lock on "
        f"orders, users (limit 0). pid {pid} (billing-report, idle in transaction for ")
    assert check.message.endswith("s, holds a lock on orders). Wait for traffic to drop or for those transactions to "
                                  "end (`/migrate unblock` ends idle ones after an approval), then deploy again")
    assert check.details["sessions"][0]["tables"] == ["orders"]
    assert "4111" not in check.message and "4111" not in str(check.details)


def test_an_open_transaction_on_an_unrelated_table_is_quiet(
        bot_env: Databases, open_transaction: psycopg.Connection) -> None:
    with bot_env.connect("prod") as conn:
        check = quiet_enough(conn, {"users"}, max_active=10, max_idle_in_tx=0)
    assert check.status is Status.PASSED
    assert check.message == ("prod is quiet enough to deploy: 0 active session(s) (limit 10), 0 idle in transaction "
                             "holding a lock on users (limit 0)")


def sleeping(db: Databases, application_name: str, started: list[psycopg.Connection]) -> threading.Thread:
    conn = psycopg.connect(db.prod_url, autocommit=True, application_name=application_name)
    started.append(conn)

    def sleep() -> None:
        try:
            conn.execute("SELECT pg_sleep(30)")
        except psycopg.errors.QueryCanceled:
            pass

    thread = threading.Thread(target=sleep)
    thread.start()
    return thread


def wait_until_active(db: Databases, count: int) -> None:
    give_up = time.monotonic() + 10
    while time.monotonic() < give_up:
        found = db.sql("prod", "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' "
                               "AND state = 'active'")[0][0]
        if found >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"{count} sleeping sessions never became active")


def test_busy_sessions_count_but_the_bots_own_do_not(bot_env: Databases) -> None:
    bot_env.both(SEED)
    started: list[psycopg.Connection] = []
    threads = [sleeping(bot_env, "reporting", started), sleeping(bot_env, "migrate-bot-trace", started)]
    reporting_pid = started[0].info.backend_pid
    try:
        wait_until_active(bot_env, 2)
        with bot_env.connect("prod") as conn:
            within = quiet_enough(conn, {"users"}, max_active=1, max_idle_in_tx=0)
            over = quiet_enough(conn, {"users"}, max_active=0, max_idle_in_tx=0)
    finally:
        for conn in started:
            conn.cancel_safe()
        for thread in threads:
            thread.join()
        for conn in started:
            conn.close()
    assert within.status is Status.PASSED and within.details["active"] == 1
    assert over.status is Status.FAILED and over.details["category"] == "busy"
    assert f"pid {reporting_pid} (reporting, active for " in over.message
    assert "migrate-bot-trace" not in over.message


# -- how long will it take? ---------------------------------------------------------------------------

def test_the_estimate_scales_staging_timings_by_prod_size(
        bot_env: Databases, make_migrations, settings: Settings, ledger: MemoryLedger) -> None:
    bot_env.both(SEED + "CREATE TABLE orders (id bigserial PRIMARY KEY, total numeric);")
    bot_env.sql("prod", "INSERT INTO orders (total) SELECT g FROM generate_series(1, 100000) g")
    bot_env.sql("staging", "INSERT INTO orders (total) SELECT g FROM generate_series(1, 1000) g")
    for env in ("prod", "staging"):
        bot_env.sql(env, "VACUUM ANALYZE orders")
    root = make_migrations({"0001_orders_note.sql": "ALTER TABLE orders ADD COLUMN note text;",
                            "0002_audit.sql": "CREATE TABLE audit (id int);"})
    report = validate.run(settings, ledger)
    assert report.exit_code == 0, report.lines()
    with bot_env.connect("prod") as prod, bot_env.connect("staging") as staging:
        result = estimate.measure(prod, staging, discover(root), report)
    note, audit = result.parts
    assert (note.migration, note.scale, note.reason) == ("0001_orders_note", 100.0, "orders is 100x larger on prod")
    assert (audit.migration, audit.scale, audit.reason) == ("0002_audit", 1.0, "")
    assert result.seconds == max(60.0, (note.staging_s * 100 + audit.staging_s) * 1.5)
    assert result.explain().startswith("about 1 min: 2 migrations took ")
    assert result.explain().endswith(" s on staging; orders is 100x larger on prod; x1.5 margin; at least 1 min")
