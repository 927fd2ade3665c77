"""`refresh` (runbook step 2) against real prod and staging clusters."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from bot import config
from bot.migrations.apply import ensure_history
from bot.workflow import dumprestore, refresh, refreshdb
from bot.workflow.refresh import RefreshOptions, choose_method
from bot.workflow.report import Report
from tests.fix_pg import PROD_PASSWORD, STAGING_PASSWORD, Databases

ROOT = Path(__file__).resolve().parents[2]
MB = 1024 * 1024

PROD = """
CREATE TABLE users (id bigserial PRIMARY KEY, email citext UNIQUE, name text NOT NULL,
                    token uuid NOT NULL DEFAULT uuid_generate_v4(), created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE orders (id bigserial PRIMARY KEY, user_id bigint NOT NULL REFERENCES users (id),
                     total numeric(12, 2) NOT NULL CHECK (total >= 0), note text);
CREATE INDEX orders_user_idx ON orders (user_id);
CREATE INDEX users_name_trgm ON users USING gin (name gin_trgm_ops);
CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 100;
CREATE SEQUENCE invoice_no;
SELECT setval('invoice_no', 4242);
INSERT INTO users (email, name) SELECT 'u' || g || '@example.com', 'User ' || g FROM generate_series(1, 200) g;
INSERT INTO orders (user_id, total, note) SELECT 1 + g % 200, g * 1.5, md5(g::text) FROM generate_series(1, 3000) g;
"""
STALE_STAGING = "CREATE TABLE stale (id int); INSERT INTO stale SELECT generate_series(1, 3);"
HISTORY_ROWS = [("0001", "users", "c1"), ("0002", "orders", "c2")]
# enough rows that pg_dump is still writing (blocked on the pipe) when pg_restore starts loading data
BULK_ORDERS = "INSERT INTO orders (user_id, total) SELECT 1, g FROM generate_series(1, 200000) g"


# --- helpers ---------------------------------------------------------------------

def settings(**refresh_options) -> config.Settings:
    s = config.load(None)
    return replace(s, refresh=replace(s.refresh, **refresh_options)) if refresh_options else s


def seed(dbs: Databases) -> None:
    dbs.sql("prod", PROD)
    with dbs.connect("prod") as conn:
        ensure_history(conn)
        for version, name, checksum in HISTORY_ROWS:
            conn.execute("INSERT INTO migrate_bot.schema_migrations (version, name, checksum, duration_ms) "
                         "VALUES (%s, %s, %s, 5)", (version, name, checksum))
    dbs.sql("staging", STALE_STAGING)


def lines_of(report) -> dict[str, str]:
    return {c.name: c.line() for c in report.checks}


def databases_like(dbs: Databases, env: str, infix: str) -> list[str]:
    prefix = dbs.name + infix
    cluster = dbs.clusters.prod if env == "prod" else dbs.clusters.staging
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
        found = conn.execute("SELECT datname FROM pg_database WHERE left(datname, %s) = %s", (len(prefix), prefix))
        return [r[0] for r in found.fetchall()]


def pg_dump_text(dbs: Databases, env: str, *args: str) -> str:
    cluster = dbs.clusters.prod if env == "prod" else dbs.clusters.staging
    out = subprocess.run(
        ["pg_dump", "--no-owner", "--no-privileges", *args, f"--dbname={cluster.url(dbs.name, password='')}"],
        env=dict(os.environ, PGPASSWORD=cluster.password), capture_output=True, text=True, check=True,
    )
    return out.stdout


def normalised_schema(dbs: Databases, env: str) -> list[str]:
    """Schema-only dump without comments and the per-dump random \\restrict key."""
    return [line for line in pg_dump_text(dbs, env, "--schema-only").splitlines()
            if line.strip() and not line.startswith(("--", "\\restrict", "\\unrestrict"))]


def table_fingerprint(dbs: Databases, env: str, table: str) -> tuple:
    return dbs.sql(env, f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {table} t")[0]


def staging_is_untouched(dbs: Databases) -> bool:
    return dbs.sql("staging", "SELECT count(*) FROM stale") == [(3,)] and dbs.sql(
        "staging", "SELECT to_regclass('users')") == [(None,)]


# --- round trip ------------------------------------------------------------------

@pytest.mark.parametrize("method", ["pipe", "directory"])
def test_refresh_copies_schema_data_sequences_extensions_and_history(bot_env: Databases, method: str) -> None:
    seed(bot_env)
    report = refresh.run(settings(), RefreshOptions(method=method))
    assert report.exit_code == 0, report.lines()
    assert normalised_schema(bot_env, "staging") == normalised_schema(bot_env, "prod")
    for table in ("users", "orders", "migrate_bot.schema_migrations"):
        assert table_fingerprint(bot_env, "staging", table) == table_fingerprint(bot_env, "prod", table), table
    sequences = "SELECT sequencename, last_value FROM pg_sequences ORDER BY 1"
    assert bot_env.sql("staging", sequences) == bot_env.sql("prod", sequences)
    extensions = "SELECT extname, extversion FROM pg_extension ORDER BY 1"
    assert bot_env.sql("staging", extensions) == bot_env.sql("prod", extensions)
    assert bot_env.sql("staging", "SELECT to_regclass('stale')") == [(None,)]


def test_refresh_reports_one_contract_line_per_check(bot_env: Databases) -> None:
    seed(bot_env)
    report = refresh.run(settings(), RefreshOptions(method="pipe"))
    found = lines_of(report)
    assert list(found) == ["refresh-safety", "refresh-restore", "refresh-sanity", "extensions.staging", "refresh-swap"]
    prod, staging = bot_env.clusters.prod.port, bot_env.clusters.staging.port
    assert found["refresh-safety"] == (
        f"PASSED refresh-safety: staging (127.0.0.1:{staging}/{bot_env.name}) and prod (127.0.0.1:{prod}/{bot_env.name}) "
        "are different PostgreSQL servers (different system identifiers); prod is only read")
    assert re.fullmatch(r"PASSED refresh-restore: 3 tables, \d+ kB in \d+\.\ds \(pipe, 1 job\)", found["refresh-restore"])
    assert found["refresh-sanity"] == ("PASSED refresh-sanity: the copy matches prod: 3 tables, 6 indexes, "
                                       "6 constraints, 3 sequences, 1 view in user schemas")
    assert found["extensions.staging"] == "PASSED extensions.staging: pg_trgm, citext, uuid-ossp present on staging"
    assert found["refresh-swap"] == (f"PASSED refresh-swap: {bot_env.name} now holds the copy of prod; "
                                     "the previous copy was dropped")
    assert report.lines()[-1] == "RESULT refresh: PASS (5 passed) exit 0"
    assert {k: report.facts[k] for k in ("method", "jobs", "tables")} == {"method": "pipe", "jobs": 1, "tables": 3}
    assert report.facts["bytes"] > 0 and report.facts["seconds"] > 0


def test_a_client_left_on_old_staging_is_disconnected_and_counted(bot_env: Databases) -> None:
    seed(bot_env)
    left_open = bot_env.connect("staging")
    report = refresh.run(settings(), RefreshOptions(method="pipe"))
    assert report.exit_code == 0, report.lines()
    assert lines_of(report)["refresh-swap"].endswith("the previous copy was dropped; 1 session disconnected")
    with pytest.raises(psycopg.OperationalError):
        left_open.execute("SELECT 1")
    left_open.close()


def test_the_swap_ends_our_own_lingering_backend_without_counting_it(bot_env: Databases) -> None:
    """A closed connection's backend exits a moment later; the swap must not report it as a user it disconnected."""
    name, staging = bot_env.name, bot_env.clusters.staging
    with psycopg.connect(staging.url("postgres"), autocommit=True) as maint, bot_env.connect("staging") as lingering:
        maint.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name + "_next")))
        ended = refreshdb.swap(maint, name, name + "_next", name + "_prev", frozenset({lingering.info.backend_pid}))
        refreshdb.drop_database(maint, name + "_prev")
        assert ended == 0
        with pytest.raises(psycopg.OperationalError):
            lingering.execute("SELECT 1")


def test_refresh_installs_the_runbooks_extensions_when_prod_lacks_them(bot_env: Databases) -> None:
    bot_env.sql("prod", 'DROP EXTENSION pg_trgm; DROP EXTENSION "uuid-ossp"')
    report = refresh.run(settings())
    assert lines_of(report)["extensions.staging"] == (
        "PASSED extensions.staging: installed on staging: pg_trgm, uuid-ossp "
        "(pg_trgm, citext, uuid-ossp present on staging)")
    assert bot_env.sql("staging", "SELECT count(*) FROM pg_extension WHERE extname IN ('pg_trgm', 'uuid-ossp')") == [(2,)]


def test_progress_events_count_tables_and_bytes_up_to_the_total(bot_env: Databases) -> None:
    seed(bot_env)
    events: list[tuple[str, dict]] = []
    report = refresh.run(settings(), RefreshOptions(on_event=lambda kind, data: events.append((kind, data))))
    assert report.exit_code == 0, report.lines()
    assert {kind for kind, _ in events} == {"refresh_progress"}
    phases = [data["phase"] for _, data in events]
    assert phases[0] == "safety" and phases[-1] == "done" and "restore" in phases and "swap" in phases
    restored = next(data for _, data in events if data["phase"] == "restored")
    assert restored["tables_done"] == restored["tables_total"] == 3
    assert restored["bytes_done"] == restored["bytes_total"] == report.facts["bytes"]
    elapsed = [data["elapsed_s"] for _, data in events]
    assert elapsed == sorted(elapsed)


# --- refusing to touch prod --------------------------------------------------------

def test_refuses_when_staging_url_is_the_prod_url(bot_env: Databases, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAGING_DATABASE_URL", bot_env.prod_url)
    report = refresh.run(settings())
    assert report.exit_code == 2
    assert report.error == (
        f"Refusing to refresh: the staging URL names the prod database itself "
        f"(127.0.0.1:{bot_env.clusters.prod.port}/{bot_env.name}). "
        "Point env:STAGING_DATABASE_URL at the staging server — a refresh replaces the staging database.")


@pytest.mark.parametrize("via", ["localhost", "unix socket"])
def test_refuses_when_staging_is_prods_server_under_another_name(bot_env: Databases, monkeypatch: pytest.MonkeyPatch,
                                                                   via: str) -> None:
    prod = bot_env.clusters.prod
    if via == "localhost":  # another database on prod's server: the copy would be built there
        url, where = f"postgresql://postgres:{PROD_PASSWORD}@localhost:{prod.port}/app_staging", \
            f"localhost:{prod.port}/app_staging"
    else:  # prod's own database, through the socket instead of TCP
        socket_dir = prod.datadir.parent
        url, where = f"postgresql://postgres@/{bot_env.name}?host={socket_dir}&port={prod.port}", \
            f"{socket_dir}:{prod.port}/{bot_env.name}"
    monkeypatch.setenv("STAGING_DATABASE_URL", url)
    sysid = bot_env.sql("prod", "SELECT system_identifier FROM pg_control_system()")[0][0]
    report = refresh.run(settings())
    assert report.exit_code == 2
    assert report.error == (
        f"Refusing to refresh: staging ({where}) is on the same PostgreSQL server as prod "
        f"(127.0.0.1:{prod.port}/{bot_env.name}) — system identifier {sysid}, port {prod.port} — so the refresh "
        "would create, rename and drop databases on prod's server. "
        "Point env:STAGING_DATABASE_URL at a separate staging server.")
    assert databases_like(bot_env, "prod", "__refresh_") == []


def test_refuses_while_another_refresh_of_the_same_staging_runs(bot_env: Databases) -> None:
    seed(bot_env)
    with psycopg.connect(bot_env.clusters.staging.url("postgres"), autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (0x6D62, bot_env.name))
        report = refresh.run(settings())
    assert report.error == (f"Another refresh of staging ({bot_env.name}) is running. Wait for it to finish; "
                            "only one refresh per staging database runs at a time.")
    assert staging_is_untouched(bot_env)


# --- interrupted and failed refreshes --------------------------------------------

KILL_AT_FIRST_RESTORE_EVENT = """
import os, signal
from bot import config
from bot.workflow import dumprestore, refresh

def on_event(kind, data):
    if data.get("phase") == "restore":
        os.kill(os.getpid(), signal.SIGKILL)  # the bot dies mid-restore; its children die with it

refresh.run(config.load(None), refresh.RefreshOptions(on_event=on_event, method="pipe"))
"""


def test_refresh_killed_mid_restore_leaves_staging_usable_and_the_next_run_cleans_up(bot_env: Databases) -> None:
    seed(bot_env)
    bot_env.sql("prod", BULK_ORDERS)
    killed = subprocess.run([sys.executable, "-c", KILL_AT_FIRST_RESTORE_EVENT], cwd=ROOT, timeout=120)
    assert killed.returncode == -signal.SIGKILL
    assert staging_is_untouched(bot_env)
    (leftover,) = databases_like(bot_env, "staging", "__refresh_")

    report = refresh.run(settings())
    assert report.exit_code == 0, report.lines()
    assert lines_of(report)["refresh-cleanup"] == (
        f"PASSED refresh-cleanup: removed leftover database {leftover} from an interrupted refresh")
    assert databases_like(bot_env, "staging", "__refresh_") == []
    assert table_fingerprint(bot_env, "staging", "orders") == table_fingerprint(bot_env, "prod", "orders")


STOP_AT_FIRST_RESTORE_EVENT = """
import os, signal, sys
from bot import cli

def stop_mid_restore(args):
    def on_event(kind, data):
        if data.get("phase") == "restore":
            os.kill(os.getpid(), signal.SIGTERM)  # what Kubernetes, systemd and a plain `kill` send
    return on_event

cli._progress_printer = stop_mid_restore
sys.exit(cli.main(["refresh"]))
"""


def test_refresh_stopped_with_sigterm_removes_its_copy_on_the_way_out(bot_env: Databases) -> None:
    """SIGTERM leaves like Ctrl-C: the half-built copy is dropped at once, not left for the next run."""
    seed(bot_env)
    bot_env.sql("prod", BULK_ORDERS)
    stopped = subprocess.run([sys.executable, "-c", STOP_AT_FIRST_RESTORE_EVENT], cwd=ROOT, timeout=120,
                             capture_output=True, text=True)
    assert stopped.returncode == 130, stopped.stderr
    assert stopped.stderr.splitlines()[-1].startswith("error: interrupted."), stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert staging_is_untouched(bot_env)
    assert databases_like(bot_env, "staging", "__refresh_") == []


def test_a_half_done_swap_is_undone_before_refreshing(bot_env: Databases) -> None:
    seed(bot_env)
    old = f"{bot_env.name}__old_20200101000000"
    with psycopg.connect(bot_env.clusters.staging.url("postgres"), autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{bot_env.name}" RENAME TO "{old}"')
    report = refresh.run(settings())
    assert report.exit_code == 0, report.lines()
    assert lines_of(report)["refresh-cleanup"] == (
        f"PASSED refresh-cleanup: renamed {old} back to {bot_env.name} (a swap was interrupted)")
    assert databases_like(bot_env, "staging", "__old_") == []
    assert bot_env.sql("staging", "SELECT count(*) FROM users") == [(200,)]


GUARDED = """
CREATE TABLE zz_allow_list (v text);
CREATE FUNCTION public.allowed(value text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    -- zz_allow_list is restored after guarded: on staging the check fails and quotes the value
    IF NOT EXISTS (SELECT 1 FROM public.zz_allow_list WHERE v = value) THEN
        RAISE EXCEPTION 'not allowed: %', value;
    END IF;
    RETURN true;
END $$;
CREATE TABLE guarded (v text CHECK (public.allowed(v)));
INSERT INTO zz_allow_list VALUES ({value});
INSERT INTO guarded VALUES ({value});
"""


def make_rows_fail_to_load(dbs: Databases, value: str) -> None:
    with dbs.connect("prod") as conn:
        conn.execute(sql.SQL(GUARDED).format(value=sql.Literal(value)))


def test_a_table_locked_on_prod_makes_pg_dump_give_up_instead_of_queueing(bot_env: Databases,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    seed(bot_env)
    monkeypatch.setattr(dumprestore, "LOCK_WAIT_MS", 300)
    with bot_env.connect("prod", autocommit=False) as ddl:
        def lock_orders_once_copying(kind: str, data: dict) -> None:
            if data["phase"] == "copy":
                ddl.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")

        report = refresh.run(settings(), RefreshOptions(on_event=lock_orders_once_copying, method="pipe"))
    assert report.exit_code == 1
    assert lines_of(report)["refresh-restore"] == (
        "FAILED refresh-restore: pg_dump failed reading prod: pg_dump: error: query failed: ERROR: canceling "
        "statement due to statement timeout. Staging was not changed.")
    assert staging_is_untouched(bot_env)
    assert databases_like(bot_env, "staging", "__refresh_") == []


def test_a_table_locked_on_prod_before_the_refresh_is_a_busy_environment(bot_env: Databases,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    seed(bot_env)
    monkeypatch.setattr(dumprestore, "LOCK_WAIT_MS", 300)
    with bot_env.connect("prod", autocommit=False) as ddl:
        ddl.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        report = refresh.run(settings())
    assert report.exit_code == 2
    assert report.error == (
        "A table on prod is locked exclusively (DDL or a deploy in progress), so the refresh cannot read it without "
        "queueing behind the lock for more than 0.3s. Refresh again when that has finished.")
    assert staging_is_untouched(bot_env)


def test_a_restore_that_loses_rows_fails_and_leaves_staging_untouched(bot_env: Databases) -> None:
    seed(bot_env)
    make_rows_fail_to_load(bot_env, "row-42")
    report = refresh.run(settings())
    assert report.exit_code == 1
    assert lines_of(report)["refresh-restore"] == (
        'FAILED refresh-restore: pg_restore failed: pg_restore: error: COPY failed for table "guarded": '
        "ERROR: not allowed: row-42. Staging was not changed.")
    assert staging_is_untouched(bot_env)
    assert databases_like(bot_env, "staging", "__refresh_") == []


def test_passwords_never_appear_in_report_events_or_tool_output(bot_env: Databases) -> None:
    seed(bot_env)
    make_rows_fail_to_load(bot_env, f"{PROD_PASSWORD} {STAGING_PASSWORD}")
    events: list = []
    report = refresh.run(settings(), RefreshOptions(on_event=lambda kind, data: events.append((kind, data))))
    assert lines_of(report)["refresh-restore"] == (
        'FAILED refresh-restore: pg_restore failed: pg_restore: error: COPY failed for table "guarded": '
        "ERROR: not allowed: *** ***. Staging was not changed.")
    said = "\n".join(report.lines()) + report.to_json() + repr(events) + repr([c.message for c in report.checks])
    assert PROD_PASSWORD not in said and STAGING_PASSWORD not in said


def tool_processes() -> dict[str, tuple[str, str]]:
    """{"pg_dump": (command line, environment), "pg_restore": …} of the running tools, from /proc."""
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (proc / "environ").read_bytes().replace(b"\0", b"\n").decode(errors="replace")
        except OSError:
            continue
        for tool in ("pg_dump", "pg_restore"):
            if tool in cmdline.split(" --", 1)[0] and "--dbname=" in cmdline:
                found[tool] = (cmdline, environ)
    return found


def tools_seen_during_a_refresh(dbs: Databases) -> tuple[Report, dict[str, tuple[str, str]]]:
    """Refresh, looking at pg_dump's and pg_restore's command lines and environments while they run."""
    seed(dbs)
    dbs.sql("prod", BULK_ORDERS)
    seen: dict[str, tuple[str, str]] = {}

    def look_at_processes(kind: str, data: dict) -> None:
        if data["phase"] == "restore":
            seen.update(tool_processes())

    return refresh.run(settings(), RefreshOptions(on_event=look_at_processes, method="pipe")), seen


def test_passwords_never_reach_the_tools_command_lines(bot_env: Databases) -> None:
    report, seen = tools_seen_during_a_refresh(bot_env)
    assert report.exit_code == 0, report.lines()
    assert set(seen) == {"pg_dump", "pg_restore"}
    assert not [cmd for cmd, _ in seen.values() if PROD_PASSWORD in cmd or STAGING_PASSWORD in cmd]


def test_each_tool_gets_only_its_own_sides_password(bot_env: Databases) -> None:
    _, seen = tools_seen_during_a_refresh(bot_env)
    dump_env, restore_env = seen["pg_dump"][1].splitlines(), seen["pg_restore"][1].splitlines()
    assert f"PGPASSWORD={PROD_PASSWORD}" in dump_env and STAGING_PASSWORD not in "\n".join(dump_env)
    assert f"PGPASSWORD={STAGING_PASSWORD}" in restore_env and PROD_PASSWORD not in "\n".join(restore_env)


def test_wrong_staging_password_is_a_sentence_without_the_password(bot_env: Databases,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "not-the-staging-password-123"
    monkeypatch.setenv("STAGING_DATABASE_URL", bot_env.clusters.staging.url(bot_env.name, password=wrong))
    report = refresh.run(settings())
    assert report.exit_code == 2
    assert report.error == (f"Could not connect to staging (127.0.0.1:{bot_env.clusters.staging.port}/postgres): "
                            "the password was rejected. Check the credential in the secret store "
                            "(it may have been rotated).")
    assert wrong not in report.to_json()


# --- masking ---------------------------------------------------------------------

MASK_EXTRAS = """
INSERT INTO users (email, name) VALUES (NULL, 'No Email');
CREATE TABLE invites (id serial PRIMARY KEY, email text NOT NULL);
INSERT INTO invites (email) SELECT 'u' || g || '@example.com' FROM generate_series(1, 10) g;
CREATE TABLE audit (what text);
CREATE FUNCTION audit_users() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN INSERT INTO audit VALUES (OLD.email::text); RETURN NEW; END $$;
CREATE TRIGGER users_audit BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION audit_users();
CREATE MATERIALIZED VIEW user_emails AS SELECT id, email FROM users;
"""


def prod_emails(dbs: Databases) -> list[str]:
    return [r[0] for r in dbs.sql("prod", "SELECT email::text FROM users WHERE email IS NOT NULL "
                                          "UNION SELECT email FROM invites")]


def test_masking_leaves_no_original_value_behind(bot_env: Databases) -> None:
    seed(bot_env)
    bot_env.sql("prod", MASK_EXTRAS)
    originals = prod_emails(bot_env)
    report = refresh.run(settings(mask=["users.email", "public.invites.email"]))
    assert report.exit_code == 0, report.lines()
    assert lines_of(report)["refresh-mask"] == (
        "PASSED refresh-mask: users.email masked (200 rows), public.invites.email masked (10 rows)")
    text_columns = bot_env.sql("staging", """
        SELECT table_name, column_name FROM information_schema.columns
        WHERE table_schema = 'public' AND table_name IN ('users', 'invites', 'audit', 'user_emails')
          AND data_type IN ('text', 'USER-DEFINED', 'character varying')""")
    for table, column in text_columns:
        values = {r[0] for r in bot_env.sql("staging", f'SELECT "{column}"::text FROM "{table}"')}
        assert not values & set(originals), f"{table}.{column} kept an original value"
    dumped = pg_dump_text(bot_env, "staging")
    assert [e for e in originals if e in dumped] == []
    assert bot_env.sql("staging", "SELECT count(*) FROM audit") == [(0,)]  # the audit trigger did not fire
    assert sorted(prod_emails(bot_env)) == sorted(originals)  # prod is only read


def test_masked_values_keep_their_shape_uniqueness_joins_and_nulls(bot_env: Databases) -> None:
    seed(bot_env)
    bot_env.sql("prod", MASK_EXTRAS)
    report = refresh.run(settings(mask=["users.email", "invites.email", "users.name"]))
    assert report.exit_code == 0, report.lines()
    emails = [r[0] for r in bot_env.sql("staging", "SELECT email::text FROM users WHERE email IS NOT NULL")]
    assert len(emails) == len(set(emails)) == 200
    assert all(re.fullmatch(r"user_[0-9a-f]{32}@example\.invalid", e) for e in emails)
    names = [r[0] for r in bot_env.sql("staging", "SELECT name FROM users")]
    assert all(re.fullmatch(r"masked-[0-9a-f]{32}", n) for n in names)
    assert bot_env.sql("staging", "SELECT count(*) FROM users WHERE email IS NULL") == [(1,)]
    joined = "SELECT count(*) FROM invites i JOIN users u ON u.email = i.email"
    assert bot_env.sql("staging", joined) == bot_env.sql("prod", joined) == [(10,)]
    assert bot_env.sql("staging", "SELECT tgenabled FROM pg_trigger WHERE tgname = 'users_audit'") == [("O",)]


def test_a_mask_column_that_does_not_exist_fails_before_anything_is_built(bot_env: Databases) -> None:
    seed(bot_env)
    report = refresh.run(settings(mask=["users.emial"]))
    assert report.exit_code == 1
    assert lines_of(report)["refresh-mask"] == (
        "FAILED refresh-mask: refresh.mask names users.emial, but users has no column emial "
        "(its columns: id, email, name, token, created_at). Fix refresh.mask in the config. Staging was not changed.")
    assert staging_is_untouched(bot_env)
    assert databases_like(bot_env, "staging", "__refresh_") == []


# --- a staging user that is not a superuser ---------------------------------------

def test_refresh_works_as_a_non_superuser_staging_owner(bot_env: Databases, monkeypatch: pytest.MonkeyPatch) -> None:
    seed(bot_env)
    role, password = f"refresher_{bot_env.name}", "refresher-pw-5521"
    staging = bot_env.clusters.staging
    with psycopg.connect(staging.url("postgres"), autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN CREATEDB PASSWORD '{password}'")
        admin.execute(f"ALTER DATABASE {bot_env.name} OWNER TO {role}")
    try:
        monkeypatch.setenv("STAGING_DATABASE_URL", staging.url(bot_env.name, user=role, password=password))
        report = refresh.run(settings())
        assert report.exit_code == 0, report.lines()
        assert lines_of(report)["extensions.staging-extra"] == (
            "WARNING extensions.staging-extra: prod has pg_stat_statements, which the restore could not create on "
            "staging (the staging user may lack the privilege); the gate does not need them")
        owners = bot_env.sql("staging", "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")
        assert owners == [(role,)]
        assert password not in report.to_json()
    finally:
        with psycopg.connect(staging.url(bot_env.name), autocommit=True) as conn:
            conn.execute(f"REASSIGN OWNED BY {role} TO postgres")
            conn.execute(f"DROP OWNED BY {role}")
        with psycopg.connect(staging.url("postgres"), autocommit=True) as admin:
            admin.execute(f"DROP ROLE {role}")


# --- staging's own access survives ---------------------------------------------------

def staging_access_setup(name: str, app: str, outsider: str) -> list[str]:
    """What a staging team sets up on their database: who may connect, the app role's settings and grants."""
    return [f"CREATE ROLE {app} LOGIN PASSWORD 'app-pw-7731'", f"CREATE ROLE {outsider} LOGIN PASSWORD 'out-pw-7732'",
            f"REVOKE ALL ON DATABASE {name} FROM PUBLIC", f"GRANT CONNECT ON DATABASE {name} TO {app}",
            f"ALTER DATABASE {name} SET search_path = app, public",
            f"ALTER ROLE {app} IN DATABASE {name} SET statement_timeout = '5s'"]


ROUTINES_AND_TYPES = """
CREATE FUNCTION order_total(bigint) RETURNS numeric LANGUAGE sql AS 'SELECT 1.0';
CREATE FUNCTION order_total(text) RETURNS numeric LANGUAGE sql AS 'SELECT 2.0';
CREATE PROCEDURE archive_orders(before date) LANGUAGE sql AS 'SELECT 1';
CREATE TYPE order_state AS ENUM ('new', 'paid');
CREATE DOMAIN positive AS numeric CHECK (VALUE > 0);
"""
STAGING_GRANTS = ROUTINES_AND_TYPES + """
CREATE TABLE users (id int, name text, email text);
GRANT SELECT, INSERT ON users TO {app};
GRANT UPDATE (name) ON users TO {app};
GRANT SELECT ON stale TO {app};
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO {app};
REVOKE EXECUTE ON FUNCTION order_total(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION order_total(bigint) TO {app};
REVOKE EXECUTE ON PROCEDURE archive_orders(date) FROM PUBLIC;
REVOKE USAGE ON TYPE order_state FROM PUBLIC;
GRANT USAGE ON TYPE order_state TO {app};
GRANT USAGE ON DOMAIN positive TO {app} WITH GRANT OPTION;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {app};
ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
"""


def test_staging_keeps_its_own_settings_and_grants_across_a_refresh(bot_env: Databases) -> None:
    seed(bot_env)
    name, staging = bot_env.name, bot_env.clusters.staging
    app, outsider = f"app_{name}", f"outsider_{name}"
    with psycopg.connect(staging.url("postgres"), autocommit=True) as admin:
        for statement in staging_access_setup(name, app, outsider):
            admin.execute(statement)
    try:
        bot_env.sql("prod", ROUTINES_AND_TYPES)
        bot_env.sql("staging", STAGING_GRANTS.format(app=app))
        report = refresh.run(settings(), RefreshOptions(method="pipe"))
        assert report.exit_code == 0, report.lines()
        assert lines_of(report)["refresh-access"] == (
            "PASSED refresh-access: carried staging's own access over to the copy: 2 settings, 1 database grant, "
            "7 grants, 6 revokes, 2 default privileges; 1 grant on an object prod does not have was left behind")
        users = bot_env.sql("prod", "SELECT count(*) FROM users")[0]
        assert users[0] > 0  # so the count below shows the copy, not the old staging's empty table
        with psycopg.connect(staging.url(name, user=app, password="app-pw-7731")) as conn:
            assert conn.execute("SHOW search_path").fetchone() == ("app, public",)
            assert conn.execute("SHOW statement_timeout").fetchone() == ("5s",)
            assert conn.execute("SELECT count(*) FROM users").fetchone() == users
        bot_env.sql("staging", "CREATE TABLE made_later (id int)")
        bot_env.sql("staging", "CREATE FUNCTION made_later() RETURNS int LANGUAGE sql AS 'SELECT 1'")
        checks_as_owner = bot_env.sql("staging", f"""
            SELECT has_database_privilege('{outsider}', '{name}', 'CONNECT'),
                   has_schema_privilege('{outsider}', 'public', 'USAGE'),
                   has_table_privilege('{app}', 'users', 'INSERT'),
                   has_table_privilege('{app}', 'users', 'DELETE'),
                   has_table_privilege('{app}', 'made_later', 'SELECT')""")
        assert checks_as_owner == [(False, False, True, False, True)]
        routines_and_types = bot_env.sql("staging", f"""
            SELECT has_column_privilege('{app}', 'users', 'name', 'UPDATE'),
                   has_column_privilege('{app}', 'users', 'email', 'UPDATE'),
                   has_function_privilege('{app}', 'order_total(bigint)', 'EXECUTE'),
                   has_function_privilege('{outsider}', 'order_total(bigint)', 'EXECUTE'),
                   has_function_privilege('{outsider}', 'order_total(text)', 'EXECUTE'),
                   has_function_privilege('{outsider}', 'archive_orders(date)', 'EXECUTE'),
                   has_type_privilege('{app}', 'order_state', 'USAGE'),
                   has_type_privilege('{outsider}', 'order_state', 'USAGE'),
                   has_type_privilege('{app}', 'positive', 'USAGE WITH GRANT OPTION'),
                   has_function_privilege('{outsider}', 'made_later()', 'EXECUTE')""")
        assert routines_and_types == [(True, False, True, False, True, False, True, False, True, False)]
    finally:
        with psycopg.connect(staging.url(name), autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {app}, {outsider}")
        with psycopg.connect(staging.url("postgres"), autocommit=True) as admin:
            admin.execute(f"DROP ROLE {app}")
            admin.execute(f"DROP ROLE {outsider}")


def test_access_the_refresher_may_not_carry_is_a_warning_naming_the_statement(bot_env: Databases,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    seed(bot_env)
    name, staging = bot_env.name, bot_env.clusters.staging
    refresher, other = f"refresher_{name}", f"other_{name}"
    with psycopg.connect(staging.url("postgres"), autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {refresher} LOGIN CREATEDB PASSWORD 'refresher-pw-5522'")
        admin.execute(f"CREATE ROLE {other}")
        admin.execute(f"ALTER DATABASE {name} OWNER TO {refresher}")
        admin.execute(f"ALTER ROLE {other} IN DATABASE {name} SET work_mem = '8MB'")
    try:
        monkeypatch.setenv("STAGING_DATABASE_URL", staging.url(name, user=refresher, password="refresher-pw-5522"))
        report = refresh.run(settings())
        assert report.exit_code == 0, report.lines()
        assert lines_of(report)["refresh-access"] == (
            "WARNING refresh-access: nothing of staging's own access could be carried over; could not apply 1 "
            f'statement: ALTER ROLE "{other}" IN DATABASE "{name}" SET "work_mem" FROM CURRENT (permission denied) '
            f'— run them on staging as a role allowed to (a superuser or the objects\' owner)')
        assert lines_of(report)["refresh-swap"].startswith("PASSED refresh-swap:")
    finally:
        with psycopg.connect(staging.url(name), autocommit=True) as conn:
            conn.execute(f"REASSIGN OWNED BY {refresher} TO postgres")
            conn.execute(f"DROP OWNED BY {refresher}")
        with psycopg.connect(staging.url("postgres"), autocommit=True) as admin:
            admin.execute(f"DROP ROLE {refresher}")
            admin.execute(f"DROP ROLE {other}")


# --- choose_method (pure) ------------------------------------------------------------

def test_one_large_table_streams_in_one_job() -> None:
    assert choose_method([("public.events", 380 * MB)], cores=2) == ("pipe", 1)


def test_several_large_tables_go_parallel_through_the_directory_format() -> None:
    assert choose_method([(f"public.t{i}", 97 * MB) for i in range(6)], cores=2) == ("directory", 2)


def test_a_table_larger_than_half_the_total_streams() -> None:
    assert choose_method([("a", 300 * MB), ("b", 100 * MB), ("c", 100 * MB)], cores=4) == ("pipe", 1)


def test_a_small_database_streams() -> None:
    assert choose_method([(f"t{i}", 5 * MB) for i in range(10)], cores=8) == ("pipe", 1)


def test_one_core_streams() -> None:
    assert choose_method([(f"t{i}", 100 * MB) for i in range(6)], cores=1) == ("pipe", 1)


@pytest.mark.parametrize("tables,cores", [(3, 8), (6, 2), (20, 4), (40, 64)])
def test_jobs_never_exceed_cores_tables_or_eight(tables: int, cores: int) -> None:
    method, jobs = choose_method([(f"t{i}", 50 * MB) for i in range(tables)], cores=cores)
    assert method == "directory" and 2 <= jobs <= min(cores, tables, 8)


def test_no_tables_streams() -> None:
    assert choose_method([], cores=4) == ("pipe", 1)
