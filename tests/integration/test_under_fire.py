"""Issue 11, "under fire", against real clusters: interrupted deploys, lost sessions, missing privileges, unblock,
and lock waits that name who is in the way.

A dead bot is simulated by terminating its backend from another connection
(``pg_terminate_backend``), as the server sees nothing else of a killed
process: the session clusters are shared, so nothing here stops a server.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from argparse import Namespace
from dataclasses import replace
from typing import Callable, Iterator

import psycopg
import pytest

from bot import config
from bot.migrations import apply
from bot.migrations.source import discover
from bot.runs.store.sqlite import SqliteStore
from bot.workflow import deploy, resume, unblock, validate
from bot.workflow.report import Report, Status
from tests.fix_pg import Databases

SEED = "CREATE TABLE users (id bigserial PRIMARY KEY, email text);\n"
# Sleeps only where the marker table exists: on prod for the interruption, never on staging or once it is dropped.
SLOW_ON_PROD = "SELECT pg_sleep(CASE WHEN to_regclass('public.slow_here') IS NULL THEN 0 ELSE 30 END);"
NO_TX = ("-- migrate:no-transaction\nALTER TABLE users ADD COLUMN c3 int;\n" + SLOW_ON_PROD +
         "\nALTER TABLE users ADD COLUMN c4 int;\n")
IN_TX = "ALTER TABLE users ADD COLUMN t1 int;\n" + SLOW_ON_PROD + "\n"
_roles = itertools.count(1)


def settings(**gate) -> config.Settings:
    s = config.load(None)
    return replace(s, gate=replace(s.gate, perf_queries=0, **gate))


def run_validate(s: config.Settings | None = None) -> Report:
    s = s or settings()
    return validate.run(s, SqliteStore(s.state.path))


def run_deploy(s: config.Settings | None = None, **kw) -> Report:
    s = s or settings()
    return deploy.run(s, SqliteStore(s.state.path), deploy.DeployOptions(env_flag=True, **kw))


def check(report: Report, name: str):
    return next(c for c in report.checks if c.name == name)


def wait_for(probe: Callable[[], object], what: str, timeout_s: float = 20.0) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def sleeping_backend(db: Databases, env: str) -> int:
    """The pid running the migration's pg_sleep (the bot's backend, mid-statement)."""
    def probe() -> int | None:
        found = db.sql(env, "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND state = 'active' "
                            "AND query LIKE 'SELECT pg_sleep(CASE%%' AND pid <> pg_backend_pid()")
        return found[0][0] if found else None

    return int(wait_for(probe, f"the migration's pg_sleep on {env}"))


def interrupted_deploy(db: Databases) -> Report:
    """A deploy whose backend is terminated while its slow statement runs, as if the bot had died."""
    db.sql("prod", "CREATE TABLE slow_here ()")
    done: dict[str, Report] = {}
    thread = threading.Thread(target=lambda: done.update(report=run_deploy()))
    thread.start()
    try:
        db.sql("prod", "SELECT pg_terminate_backend(%s)", (sleeping_backend(db, "prod"),))
    finally:
        thread.join(timeout=60)
    db.sql("prod", "DROP TABLE slow_here")
    return done["report"]


def columns(db: Databases, env: str = "prod") -> list[str]:
    return [c for (c,) in db.sql(env, "SELECT column_name FROM information_schema.columns WHERE table_name = 'users' "
                                      "ORDER BY ordinal_position")]


def history(db: Databases) -> list[str]:
    return [v for (v,) in db.sql("prod", "SELECT version FROM migrate_bot.schema_migrations ORDER BY 1")]


def partial_rows(db: Databases) -> list[tuple]:
    """The partial rows on prod (the table is created by the first statement-by-statement file)."""
    if db.sql("prod", "SELECT to_regclass('migrate_bot.partial_migrations')") == [(None,)]:
        return []
    return db.sql("prod", "SELECT version, statements_done, statements_total FROM migrate_bot.partial_migrations")


# -- 1. deploy progress that survives the bot -----------------------------------------------------------

def test_an_interrupted_no_transaction_file_is_recorded_refused_then_resumed(bot_env: Databases,
                                                                             make_migrations) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_cols.sql": NO_TX})
    assert run_validate().exit_code == 0

    cut = interrupted_deploy(bot_env)
    assert cut.exit_code == 2 and cut.error.startswith("Prod ended the bot's session (SQLSTATE 57P01")
    failed = check(cut, "migration.0001_cols")
    assert failed.status is Status.FAILED
    assert failed.message.startswith(
        "failed on prod: terminating connection due to administrator command; 1 of its 3 statements committed and "
        "stay applied, recorded in migrate_bot.partial_migrations on prod: a deploy with resume continues at line 3 "
        "(SELECT pg_sleep(CASE WHEN to_regclass(")
    assert failed.message.endswith("…) — or undo them by hand and delete that row to run the file whole")
    assert history(bot_env) == [] and partial_rows(bot_env) == [("0001", 1, 3)]
    assert columns(bot_env) == ["id", "email", "c3"]

    (progress,) = resume.on_prod(settings())
    assert (progress.migration, progress.done, progress.total, progress.next_line) == ("0001_cols", 1, 3, 3)

    refused = run_deploy()
    blocker = check(refused, "partial.0001_cols")
    assert refused.exit_code == 1 and blocker.status is Status.BLOCKER
    assert "after 1 of its 3 statements (the last: line 2, `ALTER TABLE users ADD COLUMN c3 int`) had committed" \
        in blocker.message and "Resume it from there" in blocker.message
    assert "DELETE FROM migrate_bot.partial_migrations WHERE version = '0001';" in blocker.message
    assert columns(bot_env) == ["id", "email", "c3"]

    resumed = run_deploy(resume=True)
    assert resumed.exit_code == 0, resumed.lines()
    assert check(resumed, "partial.0001_cols").status is Status.PASSED
    assert resumed.facts["resumed"] == {"0001_cols": 1}
    assert columns(bot_env) == ["id", "email", "c3", "c4"]
    assert history(bot_env) == ["0001"] and partial_rows(bot_env) == []


def test_an_interrupted_transactional_file_rolled_back_and_can_be_redeployed_as_is(bot_env: Databases,
                                                                                   make_migrations) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_t1.sql": IN_TX})
    assert run_validate().exit_code == 0

    cut = interrupted_deploy(bot_env)
    assert cut.exit_code == 2
    assert check(cut, "migration.0001_t1").message.endswith(
        "; the connection to prod was lost: the migration ran in one transaction, which rolled back with its history "
        "row, so nothing of it is on prod and it can be re-deployed as is")
    assert columns(bot_env) == ["id", "email"] and history(bot_env) == [] and partial_rows(bot_env) == []

    after = resume.interrupted(settings(), discover("migrations"))
    assert check(after, "interrupted.0001_t1").message == (
        "not on prod: it runs in one transaction, which rolls back entirely when a deploy is interrupted, so it can "
        "be re-deployed as is")
    again = run_deploy()
    assert again.exit_code == 0, again.lines()
    assert columns(bot_env) == ["id", "email", "t1"] and history(bot_env) == ["0001"]


# -- 2. the busy message names the real holder ------------------------------------------------------------

@pytest.mark.parametrize(("env", "head"), [("staging", "staging is busy: "),
                                           ("prod", "A deploy is already running on prod: ")])
def test_the_busy_message_names_the_run_holding_the_lock(bot_env: Databases, make_migrations, env: str,
                                                         head: str) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_orders.sql": "CREATE TABLE orders (id bigserial PRIMARY KEY);"})
    if env == "prod":
        assert run_validate().exit_code == 0
    with psycopg.connect(bot_env.url(env), autocommit=True, application_name="migrate-bot/r-0123abcd") as other:
        other.execute("SELECT pg_try_advisory_lock(%s, %s)", apply.LOCK_KEYS)
        pid = other.info.backend_pid
        report = run_validate() if env == "staging" else run_deploy()
    assert report.exit_code == 2
    assert report.error.startswith(f"{head}run r-0123abcd holds the migration lock (backend pid {pid}, since ")
    assert report.error.endswith(" UTC). `/migrate status r-0123abcd` shows it; if no bot is running, the lock goes "
                                 "when that session ends.")


# -- 3. one error boundary ---------------------------------------------------------------------------------

@pytest.fixture
def weak_prod(bot_env: Databases, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The bot's prod URL for a role that may connect and nothing more."""
    role = f"weak_{os.getpid()}_{next(_roles)}"
    bot_env.sql("prod", f"CREATE ROLE {role} LOGIN PASSWORD 'weak-Pa55w0rd'")
    bot_env.sql("prod", f"GRANT CONNECT ON DATABASE {bot_env.name} TO {role}")
    url = bot_env.clusters.prod.url(bot_env.name, user=role, password="weak-Pa55w0rd")
    monkeypatch.setenv("PROD_DATABASE_URL", url)
    yield role
    bot_env.sql("prod", f"DROP OWNED BY {role}")
    bot_env.sql("prod", f"DROP ROLE {role}")


def written(report: Report, tmp_path) -> tuple[str, str]:
    """What `--log` and `--json` would hold: the CLI writes both from the Report."""
    from bot import cli

    log, js = tmp_path / "out.log", tmp_path / "out.json"
    assert cli.emit(report, Namespace(log=str(log), json=str(js))) == 2
    return log.read_text(), js.read_text()


@pytest.mark.parametrize("step", ["validate", "deploy"])
def test_a_prod_role_without_privileges_on_migrate_bot_gets_the_grant(bot_env: Databases, make_migrations,
                                                                      weak_prod: str, step: str, tmp_path) -> None:
    bot_env.both(SEED)
    apply.ensure_history(bot_env.connect("prod"))  # the schema exists; the bot's role has no grant on it
    make_migrations({"0001_orders.sql": "CREATE TABLE orders (id bigserial PRIMARY KEY);"})
    report = run_validate() if step == "validate" else run_deploy()
    assert report.exit_code == 2
    assert report.error == (
        f"The {weak_prod} role lacks a privilege on prod during {step} (SQLSTATE 42501: permission denied for schema "
        f"migrate_bot). Ask the DBA to run, on prod: GRANT USAGE, CREATE ON SCHEMA migrate_bot TO {weak_prod}; GRANT "
        f"SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA migrate_bot TO {weak_prod}; Then run {step} again.")
    log, js = written(report, tmp_path)
    assert log.splitlines()[-1].startswith(f"RESULT {step}: COULD NOT RUN — The {weak_prod} role lacks a privilege")
    assert '"sqlstate": "42501"' in js and '"exit_code": 2' in js


def test_a_prod_role_that_may_not_create_the_bots_schema_gets_that_grant(bot_env: Databases, make_migrations,
                                                                         weak_prod: str) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_orders.sql": "CREATE TABLE orders (id bigserial PRIMARY KEY);"})
    assert run_validate().exit_code == 0  # validate only reads prod
    report = run_deploy()
    assert report.exit_code == 2
    assert report.error.startswith(f"The {weak_prod} role lacks a privilege on prod during deploy (SQLSTATE 42501: "
                                   f"permission denied for database {bot_env.name}). Ask the DBA to run, on prod: "
                                   f"GRANT CREATE ON DATABASE {bot_env.name} TO {weak_prod};")


def test_staging_terminated_mid_validation_is_a_could_not_run(bot_env: Databases, make_migrations,
                                                              tmp_path) -> None:
    bot_env.both(SEED)
    bot_env.sql("staging", "CREATE TABLE slow_here ()")
    make_migrations({"0001_t1.sql": IN_TX})
    done: dict[str, Report] = {}
    thread = threading.Thread(target=lambda: done.update(report=run_validate()))
    thread.start()
    try:
        bot_env.sql("staging", "SELECT pg_terminate_backend(%s)", (sleeping_backend(bot_env, "staging"),))
    finally:
        thread.join(timeout=60)
    report = done["report"]
    assert report.exit_code == 2
    assert report.error.startswith("Staging ended the bot's session (SQLSTATE 57P01: an administrator terminated it, "
                                   "or the server is shutting down) during validate. If someone ended it on purpose")
    assert check(report, "migration.0001_t1").details["sqlstate"] == "57P01"
    log, _ = written(report, tmp_path)
    assert "FAILED migration.0001_t1" in log and "RESULT validate: COULD NOT RUN" in log


# -- 4. unblock reports per session ---------------------------------------------------------------------------

def test_unblock_reports_each_session_and_never_stops_midway(bot_env: Databases, monkeypatch) -> None:
    n = f"{os.getpid()}_{next(_roles)}"
    unblocker, owner = f"unblocker_{n}", f"app_{n}"
    bot_env.sql("prod", f"CREATE ROLE {unblocker} LOGIN PASSWORD 'unb-Pa55w0rd'; GRANT pg_signal_backend, "
                        f"pg_read_all_stats TO {unblocker}; CREATE ROLE {owner} LOGIN PASSWORD 'app-Pa55w0rd'")
    monkeypatch.setenv("PROD_DATABASE_URL", bot_env.clusters.prod.url(bot_env.name, user=unblocker,
                                                                     password="unb-Pa55w0rd"))
    superuser = bot_env.connect("prod", autocommit=False)
    ordinary = psycopg.connect(bot_env.clusters.prod.url(bot_env.name, user=owner, password="app-Pa55w0rd"),
                               application_name="billing-report")
    try:
        for conn in (superuser, ordinary):
            conn.execute("SELECT 1")  # idle in transaction from now on
        pids = [superuser.info.backend_pid, ordinary.info.backend_pid, 999999]
        report = unblock.run(settings(idle_in_transaction_minutes=0), pids)
        alive = bot_env.sql("prod", "SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,))
    finally:
        superuser.close()
        ordinary.close()
        bot_env.sql("prod", f"DROP ROLE {unblocker}; DROP ROLE {owner}")
    su_pid, app_pid, _ = pids
    assert report.exit_code == 1 and alive == [(su_pid,)]
    refused = check(report, f"unblock.pid-{su_pid}")
    assert refused.status is Status.FAILED and refused.message.startswith(f"may not terminate pid {su_pid} (")
    assert refused.message.endswith(f"it belongs to the superuser postgres, and only a superuser may end a superuser's "
                                    f"session: ask a DBA to run SELECT pg_terminate_backend({su_pid}); or have its "
                                    "owner end the transaction")
    assert check(report, f"unblock.pid-{app_pid}").message.startswith(f"terminated pid {app_pid} (billing-report, idle ")
    assert check(report, "unblock.pid-999999").message == "pid 999999 had already ended"
    assert report.facts["terminated"] == [app_pid] and report.facts["not_permitted"] == [su_pid]


# -- 5. a short stall, and who is in the way ------------------------------------------------------------------

def test_a_lock_wait_starts_short_and_names_the_blocking_session(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    root = make_migrations({"0001_add_col.sql": "ALTER TABLE users ADD COLUMN nickname text;"})
    holder = psycopg.connect(bot_env.prod_url, autocommit=False, application_name="billing-report")
    holder.execute("SELECT count(*) FROM users")  # ACCESS SHARE until it commits
    holder_pid = holder.info.backend_pid
    retries: list[dict] = []
    said: list[dict] = []

    def on_event(kind: str, data: dict) -> None:
        if kind == "lock_retry":
            said.append(data)
        if kind == "lock_wait":
            retries.append(data)
            if len(retries) == 3:
                holder.commit()

    with bot_env.connect("prod") as conn:
        apply.ensure_history(conn)
        outcome = apply.Applier(conn, "prod", on_event=on_event).apply(discover(root)[0])  # default policy
    holder.close()
    assert outcome.ok and outcome.attempts == 4
    first = retries[0]
    assert first["lock_timeout_s"] == 0.1 and said == [first]  # the thread hears of the first retry only
    (blocker,) = first["blockers"]
    assert blocker["pid"] == holder_pid and blocker["application_name"] == "billing-report"
    assert blocker["state"] == "idle in transaction" and "query" not in blocker


def test_a_lock_never_released_fails_naming_who_was_in_the_way(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_add_col.sql": "ALTER TABLE users ADD COLUMN nickname text;"})
    holder = psycopg.connect(bot_env.staging_url, autocommit=False, application_name="billing-report")
    holder.execute("SELECT count(*) FROM users")
    try:
        report = run_validate(settings(lock_timeout_s=0.3, lock_retries=3))
    finally:
        holder.close()
    failed = check(report, "migration.0001_add_col")
    assert failed.details["sqlstate"] == "55P03" and failed.details["attempts"] == 4
    assert "in its way: pid " in failed.message and "(billing-report, idle in transaction for " in failed.message
