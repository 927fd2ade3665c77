"""`refresh` with `method = "template"` and `method = "command"`, against real prod and staging clusters.

The "prod copy" a clone engine keeps on the staging server (a restored
backup, a promoted replica's database) is simulated by a database
``<test db>_snap`` on the staging cluster, filled like prod.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import psycopg
import pytest
from psycopg import sql

from bot import config
from bot.migrations.apply import ensure_history
from bot.workflow import freshness, refresh, validate
from bot.workflow.refresh import RefreshOptions
from bot.workflow.report import Report
from tests.fix_pg import PROD_PASSWORD, STAGING_PASSWORD, TEMPLATE, Databases
from tests.integration.test_refresh import (HISTORY_ROWS, PROD, databases_like, lines_of, seed,
                                            staging_is_untouched, table_fingerprint)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "clone" / "template-clone.sh"
LEAK = "clone-Secret-77310x"  # a password only the script knows: never registered with the bot
LEAK2 = "dsn-Secret-55102q"
PRELUDE = """#!/usr/bin/env bash
set -euo pipefail
export PGHOST="$MIGRATE_BOT_STAGING_HOST" PGPORT="$MIGRATE_BOT_STAGING_PORT" PGUSER="$MIGRATE_BOT_STAGING_USER"
export PGDATABASE="$MIGRATE_BOT_MAINTENANCE_DB"
"""
MAKE_TARGET = 'psql -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE \\"$MIGRATE_BOT_TARGET_DB\\" TEMPLATE \\"{snap}\\""\n'


# --- fixtures and helpers --------------------------------------------------------------

def settings(**refresh_options) -> config.Settings:
    s = config.load(None)
    return replace(s, refresh=replace(s.refresh, **refresh_options))


def admin(dbs: Databases, env: str, statement: str | sql.Composable) -> None:
    cluster = dbs.clusters.prod if env == "prod" else dbs.clusters.staging
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
        conn.execute(statement)


@pytest.fixture
def snap(bot_env: Databases) -> Iterator[str]:
    """Prod seeded, and its copy ``<db>_snap`` on the staging server, as a restore would leave it."""
    seed(bot_env)
    name = f"{bot_env.name}_snap"
    admin(bot_env, "staging", sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name),
                                                                                sql.Identifier(TEMPLATE)))
    with psycopg.connect(bot_env.clusters.staging.url(name), autocommit=True) as conn:
        conn.execute(PROD)
        ensure_history(conn)  # the snapshot was taken after prod's last deploy: the same history
        for version, label, checksum in HISTORY_ROWS:
            conn.execute("INSERT INTO migrate_bot.schema_migrations (version, name, checksum, duration_ms) "
                         "VALUES (%s, %s, %s, 5)", (version, label, checksum))
    yield name
    admin(bot_env, "staging", sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(PRELUDE + body)
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def pgpass(bot_env: Databases, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """How a team's script finds staging's password without the bot handing it over: libpq's password file."""
    path = tmp_path / "pgpass"
    path.write_text(f"127.0.0.1:{bot_env.clusters.staging.port}:*:postgres:{STAGING_PASSWORD}\n")
    path.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(path))
    return path


def recorded(dbs: Databases) -> freshness.Freshness | None:
    return freshness.Freshness.from_comment(dbs.sql("staging", freshness.READ_SQL)[0][0])


def everything_said(report: Report, events: list, caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(report.lines()) + report.to_json() + repr(events) + caplog.text


def no_secret_in(text: str) -> None:
    for secret in (PROD_PASSWORD, STAGING_PASSWORD, LEAK, LEAK2):
        assert secret not in text, secret


def pids_gone(pids: list[int], within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        alive = []
        for pid in pids:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":
                alive.append(pid)
        if not alive:
            return True
        time.sleep(0.05)
    return False


# --- template ------------------------------------------------------------------------

def test_template_copies_the_prod_copy_checks_it_and_swaps_it_in(bot_env: Databases, snap: str) -> None:
    events: list = []
    report = refresh.run(settings(method="template", template=snap),
                         RefreshOptions(on_event=lambda kind, data: events.append(data)))
    assert report.exit_code == 0, report.lines()
    found = lines_of(report)
    assert list(found) == ["refresh-safety", "refresh-clone", "refresh-sanity", "extensions.staging", "refresh-swap"]
    assert re.fullmatch(rf"PASSED refresh-clone: copied {snap} \(\d+ kB\) on the staging server with CREATE DATABASE "
                        r"… TEMPLATE in \d+\.\ds", found["refresh-clone"]), found["refresh-clone"]
    assert found["refresh-sanity"] == ("PASSED refresh-sanity: the copy matches prod: 3 tables, 6 indexes, "
                                       "6 constraints, 3 sequences, 1 view in user schemas; the same 2 migrations "
                                       "applied as on prod")
    assert table_fingerprint(bot_env, "staging", "orders") == table_fingerprint(bot_env, "prod", "orders")
    assert bot_env.sql("staging", "SELECT to_regclass('stale')") == [(None,)]
    assert bot_env.sql("staging", "SELECT count(*) FROM pg_stats WHERE tablename = 'orders'")[0][0] > 0
    fresh = recorded(bot_env)
    assert fresh is not None and (fresh.method, fresh.analyzed, fresh.source) == ("template", True, f"template {snap}")
    assert datetime.now(timezone.utc) - fresh.at < timedelta(minutes=1)
    assert "clone" in [e["phase"] for e in events]
    assert databases_like(bot_env, "staging", "_snap") == [snap]  # the prod copy is left as it was


def test_every_gate_says_how_fresh_staging_is(bot_env: Databases, snap: str) -> None:
    before = validate.run(settings(), None, validate.GateOptions(migrations=[]))
    assert before.lines()[0] == (
        "WARNING staging-freshness: no refresh by migrate-bot is recorded on staging (never refreshed by the bot, or "
        "replaced another way), so how old its copy of prod is is unknown — refresh it first: migrate-bot refresh "
        "(/migrate refresh)")
    assert refresh.run(settings(method="template", template=snap)).exit_code == 0
    after = validate.run(settings(), None, validate.GateOptions(migrations=[]))
    assert after.lines()[0] == "PASSED staging-freshness: staging was refreshed just now by template, ANALYZE ran"
    assert after.exit_code == 0


def test_a_gate_that_applies_migrations_on_a_template_copy_passes_and_says_so(bot_env: Databases, snap: str,
                                                                            make_migrations) -> None:
    from bot.migrations.source import discover

    folder = make_migrations({"0003_note.sql": "ALTER TABLE orders ADD COLUMN note2 text;"})
    assert refresh.run(settings(method="template", template=snap)).exit_code == 0
    report = validate.run(settings(), None, validate.GateOptions(migrations=discover(str(folder), "auto")))
    assert report.exit_code == 0, report.lines()
    assert report.lines()[0] == "PASSED staging-freshness: staging was refreshed just now by template, ANALYZE ran"
    assert "PASSED migration.0003_note" in "\n".join(report.lines())


def test_a_copy_older_than_a_day_is_a_warning_in_the_gate(bot_env: Databases) -> None:
    old = freshness.Freshness(at=datetime.now(timezone.utc) - timedelta(hours=30), method="command", analyzed=True)
    admin(bot_env, "staging", sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(bot_env.name),
                                                                              sql.Literal(old.to_comment())))
    report = validate.run(settings(), None, validate.GateOptions(migrations=[]))
    assert report.lines()[0] == (
        "WARNING staging-freshness: staging was refreshed 30 h ago by command, ANALYZE ran — older than "
        "refresh.stale_after_hours (24 h): prod may have moved on since — refresh it first: migrate-bot refresh "
        "(/migrate refresh)")


def test_a_template_with_a_session_on_it_is_refused_naming_the_session(bot_env: Databases, snap: str) -> None:
    url = bot_env.clusters.staging.url(snap)
    with psycopg.connect(url, autocommit=True, application_name="alice-psql") as someone:
        report = refresh.run(settings(method="template", template=snap))
        pid = someone.info.backend_pid
    assert report.exit_code == 1
    line = lines_of(report)["refresh-clone"]
    assert line.startswith(f"FAILED refresh-clone: could not copy {snap}: CREATE DATABASE … TEMPLATE needs the "
                           f"template to itself, and 1 other session is connected to it: pid {pid} alice-psql "
                           "(postgres, 127.0.0.1, idle, connected since "), line
    assert line.endswith(f"Have them disconnect (keep the prod copy free of sessions while refreshes run; ALTER "
                         f"DATABASE {snap} ALLOW_CONNECTIONS false keeps new ones out), then refresh again. "
                         "Staging was not changed."), line
    assert staging_is_untouched(bot_env)
    assert databases_like(bot_env, "staging", "__refresh_") == []


@pytest.mark.parametrize("how", ["prod's URL", "prod's URL through localhost", "prod's server, another database"])
def test_a_template_that_leads_to_prod_is_refused(bot_env: Databases, snap: str, monkeypatch: pytest.MonkeyPatch,
                                                  how: str) -> None:
    prod = bot_env.clusters.prod
    if how == "prod's URL":
        url = bot_env.prod_url
    elif how == "prod's URL through localhost":
        url = bot_env.prod_url.replace("127.0.0.1", "localhost")
    else:
        url = prod.url("postgres")
    monkeypatch.setenv("SNAPSHOT_URL", url)
    report = refresh.run(settings(method="template", template="env:SNAPSHOT_URL"))
    assert report.exit_code == 2
    if how == "prod's server, another database":
        sysid = bot_env.sql("prod", "SELECT system_identifier FROM pg_control_system()")[0][0]
        assert report.error == (
            f"Refusing to refresh: refresh.template (127.0.0.1:{prod.port}/postgres) is on prod's PostgreSQL server "
            f"(system identifier {sysid}, port {prod.port}). The template method copies a prod copy that lives on the "
            "staging server, never prod under load. Point refresh.template at that copy, or use "
            'refresh.method = "dump".')
    else:
        host = "localhost" if "localhost" in how else "127.0.0.1"
        assert report.error == (
            f"Refusing to refresh: refresh.template leads to the prod database itself ({host}:{prod.port}/"
            f"{bot_env.name}). The template method copies a prod copy that lives on the staging server (a restored "
            'backup, a promoted replica), never prod under load. Point refresh.template at that copy, or use '
            'refresh.method = "dump".')
    assert PROD_PASSWORD not in report.to_json()
    assert staging_is_untouched(bot_env)


def test_a_template_url_on_the_staging_server_is_accepted(bot_env: Databases, snap: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNAPSHOT_URL", bot_env.clusters.staging.url(snap))
    report = refresh.run(settings(method="template", template="env:SNAPSHOT_URL"))
    assert report.exit_code == 0, report.lines()
    assert lines_of(report)["refresh-clone"].startswith(
        f"PASSED refresh-clone: copied 127.0.0.1:{bot_env.clusters.staging.port}/{snap} (")


def test_a_template_that_does_not_exist_is_a_sentence(bot_env: Databases) -> None:
    seed(bot_env)
    report = refresh.run(settings(method="template", template="nightly_restore"))
    assert report.exit_code == 2
    assert report.error == (
        f"refresh.template names nightly_restore, which does not exist on the staging server "
        f"(127.0.0.1:{bot_env.clusters.staging.port}). Restore (or clone) the prod copy there first, or fix "
        "refresh.template.")


def test_a_snapshot_older_than_prods_last_deploy_fails_the_sanity_check(bot_env: Databases, snap: str) -> None:
    with bot_env.connect("prod") as conn:
        conn.execute("INSERT INTO migrate_bot.schema_migrations (version, name, checksum, duration_ms) "
                     "VALUES ('0003', 'invoices', 'c3', 5)")
    report = refresh.run(settings(method="template", template=snap))
    assert report.exit_code == 1
    assert lines_of(report)["refresh-sanity"] == (
        "FAILED refresh-sanity: the copy does not match prod — migrations applied on prod but not in the copy: "
        "0003_invoices (the copy is older than prod's last deploy; make a newer snapshot). Staging was not changed.")
    assert staging_is_untouched(bot_env)
    assert databases_like(bot_env, "staging", "__refresh_") == []


def test_masking_applies_to_a_template_copy(bot_env: Databases, snap: str) -> None:
    originals = {r[0] for r in bot_env.sql("prod", "SELECT email::text FROM users")}
    report = refresh.run(settings(method="template", template=snap, mask=["users.email"]))
    assert report.exit_code == 0, report.lines()
    assert lines_of(report)["refresh-mask"] == "PASSED refresh-mask: users.email masked (200 rows)"
    assert not {r[0] for r in bot_env.sql("staging", "SELECT email::text FROM users")} & originals


# --- command: the example script -------------------------------------------------------

def test_the_example_clone_script_makes_the_copy_and_the_bot_swaps_it_in(bot_env: Databases, snap: str,
                                                                         pgpass: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLONE_SOURCE_DB", snap)
    monkeypatch.setenv("CLONE_SNAPSHOT_AT", (datetime.now(timezone.utc) - timedelta(hours=3)).isoformat())
    report = refresh.run(settings(method="command", command=str(EXAMPLE), timeout_s=120))
    assert report.exit_code == 0, report.lines()
    found = lines_of(report)
    assert list(found) == ["refresh-safety", "refresh-command", "refresh-sanity", "extensions.staging", "refresh-swap"]
    command = found["refresh-command"].splitlines()
    assert re.fullmatch(rf"PASSED refresh-command: {EXAMPLE} exited 0 after \d+\.\ds; it made "
                        rf"{bot_env.name}__refresh_\d{{14}} on the staging server", command[0]), command[0]
    assert command[1].startswith(f"    | stderr: copying snapshot {snap} into {bot_env.name}__refresh_")
    # stdout and stderr are two pipes: lines keep their order within a stream, not across the two
    url_prefix = f"    | postgresql://postgres@127.0.0.1:{bot_env.clusters.staging.port}/{bot_env.name}__refresh_"
    urls = [line for line in command if line.startswith(url_prefix)]
    assert len(urls) == 1 and re.fullmatch(r"\d{14}", urls[0][len(url_prefix):]), command
    assert [line for line in command if line.startswith("    | stderr: ")][-1].startswith("    | stderr: copied in ")
    assert table_fingerprint(bot_env, "staging", "orders") == table_fingerprint(bot_env, "prod", "orders")
    fresh = recorded(bot_env)
    assert fresh is not None and (fresh.method, fresh.analyzed, fresh.source) == ("command", True,
                                                                                 f"command {EXAMPLE}")
    assert fresh.data_as_of is not None
    gate = validate.run(settings(), None, validate.GateOptions(migrations=[]))
    assert gate.lines()[0] == ("PASSED staging-freshness: staging was refreshed just now by command "
                               "(its data is from 3 h ago), ANALYZE ran")


def test_the_script_gets_names_and_where_staging_is_but_no_password(bot_env: Databases, snap: str,
                                                                    tmp_path: Path) -> None:
    dumped = tmp_path / "env.txt"
    path = script(tmp_path, "env.sh", f'env > "{dumped}"\nexit 1\n')
    report = refresh.run(settings(method="command", command=path))
    assert report.exit_code == 1
    env = dict(line.split("=", 1) for line in dumped.read_text().splitlines() if "=" in line)
    target = env["MIGRATE_BOT_TARGET_DB"]
    assert re.fullmatch(rf"{bot_env.name}__refresh_\d{{14}}", target)
    assert {k: env[k] for k in ("MIGRATE_BOT_PROD_DB", "MIGRATE_BOT_STAGING_DB", "MIGRATE_BOT_STAGING_HOST",
                                "MIGRATE_BOT_STAGING_PORT", "MIGRATE_BOT_STAGING_USER", "MIGRATE_BOT_MAINTENANCE_DB",
                                "MIGRATE_BOT_RUN_ID", "PGAPPNAME", "MIGRATE_BOT_TIMEOUT_S")} == {
        "MIGRATE_BOT_PROD_DB": bot_env.name, "MIGRATE_BOT_STAGING_DB": bot_env.name,
        "MIGRATE_BOT_STAGING_HOST": "127.0.0.1", "MIGRATE_BOT_STAGING_PORT": str(bot_env.clusters.staging.port),
        "MIGRATE_BOT_STAGING_USER": "postgres", "MIGRATE_BOT_MAINTENANCE_DB": "postgres",
        "MIGRATE_BOT_RUN_ID": "refresh-" + target[-14:], "PGAPPNAME": "migrate-bot-clone",
        "MIGRATE_BOT_TIMEOUT_S": "3600"}
    assert "STAGING_DATABASE_URL" not in env and "PROD_DATABASE_URL" not in env
    no_secret_in(dumped.read_text())


def test_the_run_id_is_the_runs_own(bot_env: Databases, snap: str, tmp_path: Path) -> None:
    from bot.pg import run_context

    dumped = tmp_path / "env.txt"
    path = script(tmp_path, "env.sh", f'echo "$MIGRATE_BOT_RUN_ID $PGAPPNAME" > "{dumped}"\nexit 1\n')
    with run_context("r-3f9a1c02"):
        refresh.run(settings(method="command", command=path))
    assert dumped.read_text().split() == ["r-3f9a1c02", "migrate-bot/r-3f9a1c02-clone"]


# --- command: scripts that go wrong ----------------------------------------------------

def test_a_script_that_fails_leaves_nothing_swapped_and_no_copy_behind(bot_env: Databases, snap: str, pgpass: Path,
                                                                       tmp_path: Path) -> None:
    path = script(tmp_path, "fails.sh", MAKE_TARGET.format(snap=snap) +
                  'echo "restore step 2 of 3" \necho "pgbackrest: error: [082]: WAL segment missing" >&2\nexit 3\n')
    report = refresh.run(settings(method="command", command=path))
    assert report.exit_code == 1
    line = lines_of(report)["refresh-command"].splitlines()
    assert re.fullmatch(rf"FAILED refresh-command: the clone script {path} exited 3 after \d+\.\ds; nothing was "
                        rf"swapped in, and {bot_env.name}__refresh_\d{{14}} was dropped if it had been made\. "
                        "Staging was not changed.", line[0]), line[0]
    assert sorted(line[1:]) == ["    | restore step 2 of 3", "    | stderr: pgbackrest: error: [082]: WAL segment missing"]
    assert staging_is_untouched(bot_env)
    assert databases_like(bot_env, "staging", "__refresh_") == []


def test_a_hanging_script_is_stopped_with_its_whole_process_group(bot_env: Databases, snap: str, pgpass: Path,
                                                                  tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    path = script(tmp_path, "hangs.sh", MAKE_TARGET.format(snap=snap) + f"""
psql -X -q -d "$MIGRATE_BOT_TARGET_DB" -c "SELECT pg_sleep(300)" & echo $! >> "{pids}"
sleep 300 & echo $! >> "{pids}"
echo $$ >> "{pids}"
echo "waiting for the restore"
wait
""")
    began = time.monotonic()
    report = refresh.run(settings(method="command", command=path, timeout_s=1.5))
    assert time.monotonic() - began < 30
    assert report.exit_code == 1
    line = lines_of(report)["refresh-command"].splitlines()
    assert re.fullmatch(rf"FAILED refresh-command: the clone script {path} did not finish within its timeout and was "
                        r"stopped \(its whole process group\) after \d+\.\ds \(refresh\.timeout_s = 1\.5\); nothing "
                        rf"was swapped in, and {bot_env.name}__refresh_\d{{14}} was dropped if it had been made\. "
                        "Staging was not changed.", line[0]), line[0]
    assert line[-1] == "    | waiting for the restore"
    assert pids_gone([int(p) for p in pids.read_text().split()])
    assert staging_is_untouched(bot_env)
    assert databases_like(bot_env, "staging", "__refresh_") == []


def test_a_script_that_prints_a_password_is_masked_and_warned_about(bot_env: Databases, snap: str, pgpass: Path,
                                                                    tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    url = f"postgresql://postgres:{LEAK}@127.0.0.1:$PGPORT/$MIGRATE_BOT_TARGET_DB"
    path = script(tmp_path, "leaks.sh", MAKE_TARGET.format(snap=snap) +
                  f'echo "{url}"\necho "connected with {LEAK}"\necho "password={LEAK2}" >&2\necho "{url}"\n')
    events: list = []
    report = refresh.run(settings(method="command", command=path),
                         RefreshOptions(on_event=lambda kind, data: events.append(data)))
    assert report.exit_code == 0, report.lines()
    found = lines_of(report)
    assert found["refresh-command-output"] == (
        f"WARNING refresh-command-output: the clone script {path} printed a password or another secret; it is masked "
        "(***) in this report and the logs. Print the URL without the password: the bot connects to the copy with "
        "staging's own credentials — and rotate that password if the output went anywhere else")
    assert "    | connected with ***" in found["refresh-command"].splitlines()
    assert f"    | postgresql://postgres:***@127.0.0.1:{bot_env.clusters.staging.port}/" in found["refresh-command"]
    assert found["refresh-swap"].startswith("PASSED refresh-swap:")
    assert "clone script out: connected with ***" in caplog.text
    no_secret_in(everything_said(report, events, caplog))


def test_a_script_that_prints_a_password_and_fails_swaps_nothing_and_says_nothing_secret(
        bot_env: Databases, snap: str, pgpass: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    path = script(tmp_path, "leaks-and-fails.sh", MAKE_TARGET.format(snap=snap) +
                  f'echo "trying postgresql://postgres:{LEAK}@127.0.0.1:$PGPORT/x"\n'
                  f'echo "auth failed for {LEAK}" >&2\necho "password={LEAK2}" >&2\nexit 2\n')
    events: list = []
    report = refresh.run(settings(method="command", command=path),
                         RefreshOptions(on_event=lambda kind, data: events.append(data)))
    assert report.exit_code == 1
    assert sorted(lines_of(report)["refresh-command"].splitlines()[1:]) == [  # two pipes: any order between them
        "    | stderr: auth failed for ***", "    | stderr: password=***",
        f"    | trying postgresql://postgres:***@127.0.0.1:{bot_env.clusters.staging.port}/x"]
    assert staging_is_untouched(bot_env)
    assert databases_like(bot_env, "staging", "__refresh_") == []
    no_secret_in(everything_said(report, events, caplog))


def test_a_script_printing_staging_s_own_password_is_masked(bot_env: Databases, snap: str, pgpass: Path,
                                                            tmp_path: Path) -> None:
    path = script(tmp_path, "reads-pgpass.sh", MAKE_TARGET.format(snap=snap) +
                  'echo "password is $(cut -d: -f5 "$PGPASSFILE")"\necho "$MIGRATE_BOT_TARGET_DB"\n')
    report = refresh.run(settings(method="command", command=path))
    assert report.exit_code == 0, report.lines()
    assert "    | password is ***" in lines_of(report)["refresh-command"].splitlines()
    no_secret_in("\n".join(report.lines()) + report.to_json())


def test_a_database_made_on_another_server_is_refused(bot_env: Databases, snap: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Staging's credentials work on prod's server too (one role on both): the server identity tells them apart."""
    role, password = f"cloner_{bot_env.name}", "cloner-pw-31337"
    for env in ("prod", "staging"):
        admin(bot_env, env, f"CREATE ROLE {role} LOGIN CREATEDB PASSWORD '{password}'")
    admin(bot_env, "staging", f"ALTER DATABASE {bot_env.name} OWNER TO {role}")
    try:
        monkeypatch.setenv("STAGING_DATABASE_URL", bot_env.clusters.staging.url(bot_env.name, user=role,
                                                                                  password=password))
        prod_port, staging_port = bot_env.clusters.prod.port, bot_env.clusters.staging.port
        path = script(tmp_path, "elsewhere.sh", f'echo "postgresql://{role}@127.0.0.1:{prod_port}/{bot_env.name}"\n')
        report = refresh.run(settings(method="command", command=path))
        assert report.exit_code == 1
        assert lines_of(report)["refresh-command"].splitlines()[0] == (
            f"FAILED refresh-command: the clone script made its database at 127.0.0.1:{prod_port}/{bot_env.name}, "
            f"which is not the staging server (127.0.0.1:{staging_port}): migrate-bot swaps in only a database on the "
            "staging server, by rename, because the gate, the deploy estimate and the Slack commands all use "
            "databases.staging, which it never rewrites. It was left where it is — have the script make the copy on "
            'the staging server (see "Refresh through your clone engine" in the README). Staging was not changed.')
        assert staging_is_untouched(bot_env)
        assert bot_env.sql("prod", "SELECT count(*) FROM users") == [(200,)]
        assert password not in report.to_json()
    finally:
        with psycopg.connect(bot_env.clusters.staging.url(bot_env.name), autocommit=True) as conn:
            conn.execute(f"REASSIGN OWNED BY {role} TO postgres")
        admin(bot_env, "staging", f"ALTER DATABASE {bot_env.name} OWNER TO postgres")
        for env in ("prod", "staging"):
            admin(bot_env, env, f"DROP ROLE {role}")


def test_a_database_that_existed_before_the_script_ran_is_not_swapped_in(bot_env: Databases, snap: str,
                                                                         tmp_path: Path) -> None:
    path = script(tmp_path, "names-the-snapshot.sh", f'echo "{snap}"\n')
    report = refresh.run(settings(method="command", command=path))
    assert report.exit_code == 1
    assert lines_of(report)["refresh-command"].splitlines()[0] == (
        f"FAILED refresh-command: the clone script {path} named {snap}, which existed before it ran: the bot swaps in "
        "only a database the script made for this refresh (the previous staging is dropped after the swap, and so is "
        "this one if a check fails) — have it create $MIGRATE_BOT_TARGET_DB. Staging was not changed.")
    assert databases_like(bot_env, "staging", "_snap") == [snap]
    assert staging_is_untouched(bot_env)


def test_a_database_under_another_name_is_renamed_and_swapped_in(bot_env: Databases, snap: str, pgpass: Path,
                                                                 tmp_path: Path) -> None:
    made = f"{bot_env.name}_clone"
    path = script(tmp_path, "own-name.sh",
                  f'psql -X -q -c "CREATE DATABASE {made} TEMPLATE {snap}"\necho "postgresql:///{made}"\n')
    report = refresh.run(settings(method="command", command=path))
    assert report.exit_code == 0, report.lines()
    assert re.match(rf"PASSED refresh-command: {path} exited 0 after \d+\.\ds; it made {made} on the staging server, "
                    rf"renamed to {bot_env.name}__refresh_\d{{14}} for the checks", lines_of(report)["refresh-command"])
    assert databases_like(bot_env, "staging", "_clone") == []
    assert bot_env.sql("staging", "SELECT count(*) FROM users") == [(200,)]


def test_a_script_that_cannot_be_started_is_a_sentence(bot_env: Databases, snap: str, tmp_path: Path) -> None:
    report = refresh.run(settings(method="command", command=str(tmp_path / "missing.sh")))
    assert report.exit_code == 2
    assert report.error == (f"refresh.command could not be started: {tmp_path / 'missing.sh'}: No such file or "
                            "directory. Check the path and that the file is executable (chmod +x).")
    assert staging_is_untouched(bot_env)


STOP_WHILE_THE_SCRIPT_RUNS = """
import os, signal, sys, threading, time
from pathlib import Path
from bot import cli

def stop_once_it_runs():
    while not Path(sys.argv[1]).exists() or len(Path(sys.argv[1]).read_text().split()) < 2:
        time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGTERM)  # what Kubernetes, systemd and a plain `kill` send

threading.Thread(target=stop_once_it_runs, daemon=True).start()
sys.exit(cli.main(["refresh"]))
"""


def test_a_refresh_stopped_while_the_script_runs_ends_the_script_and_its_copy(bot_env: Databases, snap: str,
                                                                              pgpass: Path, tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    pids = tmp_path / "pids"
    path = script(tmp_path, "slow.sh", MAKE_TARGET.format(snap=snap) +
                  f'sleep 300 & echo $! >> "{pids}"\necho $$ >> "{pids}"\nwait\n')
    toml = tmp_path / "bot.toml"
    toml.write_text(f'[refresh]\nmethod = "command"\ncommand = "{path}"\n')
    monkeypatch.setenv("MIGRATE_BOT_CONFIG", str(toml))
    stopped = subprocess.run([sys.executable, "-c", STOP_WHILE_THE_SCRIPT_RUNS, str(pids)], cwd=ROOT, timeout=120,
                             capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert stopped.returncode == 130, stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert pids_gone([int(p) for p in pids.read_text().split()])
    assert staging_is_untouched(bot_env)
    assert databases_like(bot_env, "staging", "__refresh_") == []


def test_a_non_superuser_may_copy_a_template_marked_as_one_and_is_told_about_foreign_owners(
        bot_env: Databases, snap: str, monkeypatch: pytest.MonkeyPatch) -> None:
    role, password = f"refresher_{bot_env.name}", "refresher-pw-6631"
    admin(bot_env, "staging", f"CREATE ROLE {role} LOGIN CREATEDB PASSWORD '{password}'")
    admin(bot_env, "staging", f"ALTER DATABASE {bot_env.name} OWNER TO {role}")
    monkeypatch.setenv("STAGING_DATABASE_URL", bot_env.clusters.staging.url(bot_env.name, user=role,
                                                                              password=password))
    try:
        refused = refresh.run(settings(method="template", template=snap))
        assert refused.exit_code == 2
        assert refused.error == (
            f"The staging user {role} may not copy {snap}: CREATE DATABASE … TEMPLATE needs the template's owner, a "
            f"superuser, or a database marked as a template. Ask the DBA: ALTER DATABASE {snap} IS_TEMPLATE true; "
            f"(or OWNER TO {role}).")
        admin(bot_env, "staging", f"ALTER DATABASE {snap} IS_TEMPLATE true")
        unreadable = refresh.run(settings(method="template", template=snap))
        assert unreadable.exit_code == 1, (unreadable.error, unreadable.lines())
        assert lines_of(unreadable)["refresh-sanity"] == (
            "FAILED refresh-sanity: the staging user may not read the copy's migration history (permission denied for "
            "schema migrate_bot), which every gate reads first: have the prod copy's objects owned by the staging user "
            "(or a role it is a member of), or use refresh.method = \"dump\", which restores everything as the "
            "staging user. Staging was not changed.")
        with psycopg.connect(bot_env.clusters.staging.url(snap), autocommit=True) as conn:
            conn.execute("GRANT USAGE ON SCHEMA migrate_bot TO PUBLIC")
            conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA migrate_bot TO PUBLIC")
        report = refresh.run(settings(method="template", template=snap))
        assert report.exit_code == 0, report.lines()
        assert lines_of(report)["refresh-owners"] == (
            "WARNING refresh-owners: the copy keeps its source's owners: 7 relations belong to postgres (7), and the "
            f"staging user {role} is not a member — the gate's migrations cannot ALTER them. Have the prod copy's "
            "objects owned by the staging user (or a role it is a member of), or use refresh.method = \"dump\", "
            "which restores everything as the staging user")
        assert recorded(bot_env).analyzed  # the database's owner may ANALYZE every table in it
        assert password not in report.to_json()
    finally:
        admin(bot_env, "staging", f"ALTER DATABASE {snap} IS_TEMPLATE false")
        with psycopg.connect(bot_env.clusters.staging.url(bot_env.name), autocommit=True) as conn:
            conn.execute(f"REASSIGN OWNED BY {role} TO postgres")
            conn.execute(f"DROP OWNED BY {role}")
        admin(bot_env, "staging", f"DROP ROLE {role}")


def test_a_template_url_on_a_third_server_is_refused(bot_env: Databases, snap: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Two clusters are all the tests have: "staging" here is a server that is neither of them."""
    from bot.errors import CouldNotRun
    from bot.workflow import clone
    from bot.workflow.refreshdb import ServerIdentity

    elsewhere = ServerIdentity(port=1, started=datetime.now(timezone.utc), system_identifier=1, data_directory=None)
    prod = ServerIdentity(port=2, started=datetime.now(timezone.utc), system_identifier=2, data_directory=None)
    server = clone.Server(identity=elsewhere, prod_identity=prod, url_for=lambda name: name,
                          staging_url="postgresql://app@staging-db:5432/app", staging_db="app",
                          maintenance_db="postgres")
    monkeypatch.setenv("SNAPSHOT_URL", bot_env.clusters.staging.url(snap))
    with psycopg.connect(bot_env.clusters.staging.url("postgres"), autocommit=True) as maint:
        with pytest.raises(CouldNotRun) as refused:
            clone.template_source(settings(method="template", template="env:SNAPSHOT_URL"), maint, bot_env.prod_url,
                                  server)
    assert str(refused.value) == (
        f"refresh.template (127.0.0.1:{bot_env.clusters.staging.port}/{snap}) is not on the staging server "
        "(staging-db:5432): CREATE DATABASE … TEMPLATE copies only within one server. Restore the prod copy onto the "
        'staging server, or use refresh.method = "command" or "dump".')


def test_a_database_on_a_server_staging_s_credentials_do_not_open_is_refused(bot_env: Databases, snap: str,
                                                                             tmp_path: Path) -> None:
    prod_port = bot_env.clusters.prod.port
    path = script(tmp_path, "elsewhere.sh", f'echo "postgresql://postgres@127.0.0.1:{prod_port}/{bot_env.name}"\n')
    report = refresh.run(settings(method="command", command=path))
    assert report.exit_code == 1
    assert lines_of(report)["refresh-command"].splitlines()[0] == (
        f"FAILED refresh-command: the database the clone script made (127.0.0.1:{prod_port}/{bot_env.name}) is not "
        f"reachable with staging's credentials (Could not connect to the clone script's server (127.0.0.1:{prod_port}"
        "/postgres): the password was rejected); the bot swaps in only a database on the staging server. "
        "Staging was not changed.")
    assert staging_is_untouched(bot_env)
    no_secret_in("\n".join(report.lines()) + report.to_json())


# --- ANALYZE: what it could not do is said ---------------------------------------------

def test_analyze_retries_a_table_it_skipped_and_returns_what_it_still_could_not(bot_env: Databases,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.workflow import refreshdb

    seed(bot_env)
    monkeypatch.setattr(refreshdb, "ANALYZE_LOCK_WAIT", "300ms")
    with bot_env.connect("prod", autocommit=False) as holder:
        holder.execute("LOCK TABLE orders IN SHARE UPDATE EXCLUSIVE MODE")  # what a running (auto)vacuum holds
        assert refreshdb.analyze(bot_env.prod_url, 2) == ["orders"]
    assert refreshdb.analyze(bot_env.prod_url, 2) == []
    assert bot_env.sql("prod", "SELECT count(*) FROM pg_stats WHERE tablename = 'orders'")[0][0] > 0
