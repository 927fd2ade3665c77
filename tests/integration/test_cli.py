"""The command line as a user meets it: exit codes, one clear sentence, no traceback, no secret."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bot.cli import COMMANDS, build_parser, main
from tests.fix_pg import PROD_PASSWORD, STAGING_PASSWORD, Databases

SEED = "CREATE TABLE users (id bigserial PRIMARY KEY, email text); INSERT INTO users (email) VALUES ('a@x'), (NULL);"


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the real console entry point in a subprocess (what a user or CI runs)."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True, text=True, env=full_env,
                          cwd=cwd, timeout=120)


def assert_clean_failure(result: subprocess.CompletedProcess, code: int, sentence: str) -> None:
    assert result.returncode == code, (result.stdout, result.stderr)
    output = result.stdout + result.stderr
    assert sentence in output
    assert "Traceback" not in output
    assert PROD_PASSWORD not in output and STAGING_PASSWORD not in output


def test_unknown_command(workdir: Path) -> None:
    assert_clean_failure(cli("vallidate", cwd=workdir), 2, "error: argument COMMAND: invalid choice: 'vallidate'")


def test_missing_env_var(workdir: Path, make_migrations) -> None:
    make_migrations({"0001_a.sql": "SELECT 1;"})
    env = {"PROD_DATABASE_URL": "", "STAGING_DATABASE_URL": ""}
    result = cli("validate", cwd=workdir, env=env)
    assert_clean_failure(result, 2, "The environment variable PROD_DATABASE_URL is not set, so there is no prod database URL.")


def test_unreachable_host(workdir: Path, make_migrations) -> None:
    make_migrations({"0001_a.sql": "SELECT 1;"})
    from bot.devcluster import free_port

    url = f"postgresql://app:unreachable-pw-1@127.0.0.1:{free_port()}/app"
    result = cli("validate", cwd=workdir, env={"PROD_DATABASE_URL": url, "STAGING_DATABASE_URL": url})
    assert_clean_failure(result, 2, "Could not connect to prod (127.0.0.1:")
    assert "nothing is listening there" in result.stdout
    assert "unreachable-pw-1" not in result.stdout + result.stderr


def test_wrong_password(bot_env: Databases, make_migrations) -> None:
    make_migrations({"0001_a.sql": "SELECT 1;"})
    wrong = bot_env.clusters.prod.url(bot_env.name, password="Wrong-Pa55-zz9")
    result = cli("validate", env={"PROD_DATABASE_URL": wrong})
    assert_clean_failure(result, 2, "the password was rejected. Check the credential in the secret store")
    assert "Wrong-Pa55-zz9" not in result.stdout + result.stderr


def test_missing_migrations_directory(bot_env: Databases) -> None:
    result = cli("validate", "--migrations", "does-not-exist")
    assert_clean_failure(result, 2, "The migrations directory does-not-exist does not exist.")


def test_malformed_sql_fails_the_gate(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_broken.sql": "ALTER TABLE users ADD COLUMN ;"})
    result = cli("validate")
    assert_clean_failure(result, 1, "FAILED syntax.0001_broken: migrations/0001_broken.sql does not parse")


def test_bad_config_value(workdir: Path) -> None:
    (workdir / "migrate-bot.toml").write_text("[gate]\nlock_retries = 'many'\n")
    assert_clean_failure(cli("validate", cwd=workdir), 2, "Config key 'gate.lock_retries' must be a whole number")


def test_triage_of_a_missing_file(workdir: Path) -> None:
    assert_clean_failure(cli("triage", "nope.log", cwd=workdir), 2, "Could not read nope.log: No such file or directory.")


def test_validate_log_then_triage_it(bot_env: Databases, make_migrations, capsys: pytest.CaptureFixture) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_email_required.sql": "ALTER TABLE users ALTER COLUMN email SET NOT NULL;"})
    assert main(["validate", "--log", "staging_validation.log", "--json", "report.json"]) == 1
    out = capsys.readouterr().out
    assert "FAILED migration.0001_email_required" in out and out.rstrip().endswith("exit 1")
    assert main(["triage", "staging_validation.log"]) == 1
    text = capsys.readouterr().out
    assert "SET NOT NULL failing (NULLs present)" in text
    assert "UPDATE users SET email = <default_value> WHERE email IS NULL;" in text
    assert main(["triage", "report.json"]) == 1


def test_full_cli_flow_validate_then_deploy(bot_env: Databases, make_migrations, monkeypatch, capsys) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_orders.sql": "CREATE TABLE orders (id bigserial PRIMARY KEY);"})
    assert main(["validate"]) == 0
    assert main(["deploy"]) == 1  # the runbook's flag is missing
    assert "BLOCKER validation-flag" in capsys.readouterr().out
    monkeypatch.setenv("STAGING_VALIDATION_PASSED", "true")
    assert main(["deploy", "--log", "prod_deploy.log"]) == 0
    log = Path("prod_deploy.log").read_text()
    assert "PASSED constraints-validated.prod" in log and "PASSED indexes-valid.prod" in log


build_parser()  # fills COMMANDS


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_help_has_an_example(name: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([name, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    example = out.split("Example:\n", 1)[1]
    assert "migrate-bot " + name in example


def test_lint_exits_1_on_a_blocker_with_json_findings(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    (workdir / "0001_idx.sql").write_text("CREATE INDEX orders_user_idx ON orders (user_id);\n")
    assert main(["lint", "0001_idx.sql", "--format", "json"]) == 1
    import json

    (finding,) = json.loads(capsys.readouterr().out)
    assert set(finding) >= {"file", "line", "statement", "rule", "severity", "message", "fix"}
    assert (finding["rule"], finding["severity"], finding["line"]) == ("create-index-non-concurrent", "blocker", 1)
    assert "CREATE INDEX CONCURRENTLY orders_user_idx ON orders" in finding["fix"]


def test_lint_passes_safe_sql(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    (workdir / "0001_idx.sql").write_text("CREATE INDEX CONCURRENTLY orders_user_idx ON orders (user_id);\n")
    assert main(["lint", "0001_idx.sql"]) == 0
    assert capsys.readouterr().out.strip() == "0 finding(s), 0 blocker(s)"


def test_lint_of_unparsable_sql_is_a_sentence(workdir: Path) -> None:
    (workdir / "0001_bad.sql").write_text("SELECT 1;\nALTER TABLE;\n")
    assert_clean_failure(cli("lint", "0001_bad.sql", cwd=workdir), 2, "0001_bad.sql")


def test_lint_of_a_missing_path(workdir: Path) -> None:
    assert_clean_failure(cli("lint", "nope.sql", cwd=workdir), 2, "nope.sql")


def test_sigterm_mid_validate_cancels_the_statement_and_rolls_back(bot_env: Databases, make_migrations) -> None:
    """What `kubectl delete pod` or a CI timeout sends: the running statement is cancelled, not orphaned."""
    bot_env.both(SEED)
    make_migrations({"0001_slow.sql": "CREATE TABLE slow_things (id int);\nSELECT pg_sleep(60);\n"})
    sleeping = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(60)%' AND state = 'active'"
    validate = subprocess.Popen([sys.executable, "-m", "bot.cli", "validate"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):
            if bot_env.sql("staging", sleeping) == [(1,)] or validate.poll() is not None:
                break
            threading.Event().wait(0.05)
        validate.send_signal(signal.SIGTERM)
        out, err = validate.communicate(timeout=60)
    finally:
        validate.kill()
    assert validate.returncode == 130, (out, err)
    assert err.splitlines()[-1].startswith("error: interrupted."), err
    assert "Traceback" not in out + err
    assert bot_env.sql("staging", sleeping) == [(0,)]
    assert bot_env.sql("staging", "SELECT to_regclass('slow_things') IS NULL") == [(True,)]


# -- deploy windows --------------------------------------------------------------------------------------


def windows_toml(workdir: Path, *entries: str) -> str:
    path = workdir / "windows.toml"
    quoted = ", ".join(f'"{e}"' for e in entries)
    path.write_text(f"[deploy]\nwindows = [{quoted}]\n", encoding="utf-8")
    return str(path)


def window_at(start, seconds: int) -> str:
    from datetime import timedelta

    return f"daily {start:%H:%M:%S}-{start + timedelta(seconds=seconds):%H:%M:%S} UTC"


def test_windows_prints_the_next_openings_as_json(workdir: Path) -> None:
    import json

    result = cli("windows", "--config", windows_toml(workdir, "Tue-Thu 02:00-04:00 America/New_York"), "--format",
                 "json", cwd=workdir)
    assert result.returncode == 0, result.stderr
    openings = json.loads(result.stdout)
    assert len(openings) == 3 and set(openings[0]) == {"start", "end"}
    from datetime import datetime

    first = datetime.fromisoformat(openings[0]["start"])
    assert first.utcoffset().total_seconds() == 0 and first.strftime("%H:%M") in ("06:00", "07:00")


def test_a_malformed_window_is_a_sentence_with_exit_2(workdir: Path) -> None:
    result = cli("windows", "--config", windows_toml(workdir, "Tue-Thx 02:00-04:00"), cwd=workdir)
    assert_clean_failure(result, 2, 'deploy.windows entry "Tue-Thx 02:00-04:00" is not understood: "Thx" is not a day.')


def validated(bot_env: Databases, make_migrations, workdir: Path) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_orders.sql": "CREATE TABLE orders (id bigserial PRIMARY KEY);"})
    assert cli("validate", cwd=workdir).returncode == 0


def prod_versions(bot_env: Databases) -> list[str]:
    if bot_env.sql("prod", "SELECT to_regclass('migrate_bot.schema_migrations')") == [(None,)]:
        return []
    return [v for (v,) in bot_env.sql("prod", "SELECT version FROM migrate_bot.schema_migrations")]


def test_deploy_outside_a_window_exits_1_naming_the_next_opening(bot_env: Databases, make_migrations,
                                                                  workdir: Path) -> None:
    from datetime import datetime, timedelta, timezone

    validated(bot_env, make_migrations, workdir)
    opens = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=3)
    result = cli("deploy", "--config", windows_toml(workdir, window_at(opens, 600)), cwd=workdir,
                 env={"STAGING_VALIDATION_PASSED": "true"})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "BLOCKER deploy-window: outside the deploy windows: the next opens " in result.stdout
    shown = f"{opens:%Y-%m-%d %H:%M}" + (f":{opens:%S}" if opens.second else "")  # seconds only when there are some
    assert shown in result.stdout and "--wait" in result.stdout and "--now" in result.stdout
    assert prod_versions(bot_env) == []


def test_deploy_now_overrides_the_window_and_says_so(bot_env: Databases, make_migrations, workdir: Path) -> None:
    from datetime import datetime, timedelta, timezone

    validated(bot_env, make_migrations, workdir)
    opens = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=3)
    result = cli("deploy", "--now", "--log", "prod_deploy.log", "--config",
                 windows_toml(workdir, window_at(opens, 600)), cwd=workdir, env={"STAGING_VALIDATION_PASSED": "true"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "deploying outside the deploy windows (--now): this override is logged" in result.stderr
    assert "WARNING deploy-window: deployed outside the deploy windows with --now" in \
        (workdir / "prod_deploy.log").read_text()
    assert prod_versions(bot_env) == ["0001"]


def test_deploy_wait_sleeps_until_the_window_opens_then_deploys(bot_env: Databases, make_migrations,
                                                                workdir: Path) -> None:
    from datetime import datetime, timedelta, timezone

    validated(bot_env, make_migrations, workdir)
    opens = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=4)
    result = cli("deploy", "--wait", "--config", windows_toml(workdir, window_at(opens, 600)), cwd=workdir,
                 env={"STAGING_VALIDATION_PASSED": "true"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.startswith("waiting for the deploy window ")
    assert datetime.now(timezone.utc) >= opens and prod_versions(bot_env) == ["0001"]


# --- who applied it, and in which run (issue 10) ------------------------------------------------------


def test_a_cli_deploy_records_its_run_id_and_who_applied_it(bot_env: Databases, make_migrations, monkeypatch,
                                                            capsys: pytest.CaptureFixture) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_orders.sql": "CREATE TABLE orders (id bigserial PRIMARY KEY);"})
    monkeypatch.setenv("MIGRATE_BOT_USER", "ada@example.com")
    assert main(["validate"]) == 0
    validated = capsys.readouterr().out.splitlines()[0]
    monkeypatch.setenv("STAGING_VALIDATION_PASSED", "true")
    assert main(["deploy", "--log", "prod_deploy.log"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("RUN r-") and first.endswith(": deploy by ada@example.com")
    run_id = first.split()[1].rstrip(":")
    assert bot_env.sql("prod", "SELECT run_id, applied_by FROM migrate_bot.schema_migrations") == [
        (run_id, "ada@example.com")]
    assert Path("prod_deploy.log").read_text().splitlines()[0] == first
    staging_run = validated.split()[1].rstrip(":")
    assert bot_env.sql("staging", "SELECT run_id, applied_by FROM migrate_bot.schema_migrations") == [
        (staging_run, "ada@example.com")]


def test_without_migrate_bot_user_the_os_user_applied_it(bot_env: Databases, make_migrations, monkeypatch) -> None:
    import getpass

    bot_env.both(SEED)
    make_migrations({"0001_orders.sql": "CREATE TABLE orders (id bigserial PRIMARY KEY);"})
    monkeypatch.delenv("MIGRATE_BOT_USER", raising=False)
    assert main(["validate"]) == 0
    monkeypatch.setenv("STAGING_VALIDATION_PASSED", "true")
    assert main(["deploy"]) == 0
    assert bot_env.sql("prod", "SELECT applied_by FROM migrate_bot.schema_migrations") == [(getpass.getuser(),)]


def test_lint_reads_a_directory_in_the_layout_it_is_told(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    folder = workdir / "db"
    folder.mkdir()
    (folder / "0001_users.up.sql").write_text("CREATE TABLE users (id bigint PRIMARY KEY, email text);\n")
    (folder / "0001_users.down.sql").write_text("DROP TABLE users;\n")
    (folder / "0002_email_idx.up.sql").write_text("CREATE INDEX users_email_idx ON users (email);\n")
    (folder / "0002_email_idx.down.sql").write_text("DROP INDEX users_email_idx;\n")
    assert main(["lint", "db", "--layout", "golang-migrate", "--format", "json"]) == 1
    import json

    (finding,) = json.loads(capsys.readouterr().out)
    assert (finding["rule"], finding["file"]) == ("create-index-non-concurrent", "db/0002_email_idx.up.sql")
    assert main(["lint", "db", "--layout", "golang-migrate", "--one-set"]) == 0  # users is new in the same set
    assert capsys.readouterr().out.strip() == "0 finding(s), 0 blocker(s)"


def test_lint_with_the_wrong_layout_says_what_it_found(workdir: Path) -> None:
    folder = workdir / "db"
    folder.mkdir()
    (folder / "V1__users.sql").write_text("CREATE TABLE users (id bigint);\n")
    result = cli("lint", "db", "--layout", "golang-migrate", cwd=workdir)
    assert_clean_failure(result, 2, "No migrations found in db: its .sql files (V1__users.sql) match none of the "
                                    "golang-migrate layout")


def test_baseline_is_a_dry_run_until_yes(bot_env: Databases, make_migrations, capsys: pytest.CaptureFixture) -> None:
    make_migrations({"0001_users.up.sql": "CREATE TABLE users (id bigint);", "0002_orders.up.sql":
                     "CREATE TABLE orders (id bigint);"})
    bot_env.sql("prod", "CREATE TABLE users (id bigint); CREATE TABLE orders (id bigint); "
                        "CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL); "
                        "INSERT INTO schema_migrations VALUES (2, false);")
    assert main(["baseline"]) == 0
    out = capsys.readouterr().out
    assert "PASSED baseline.0002_orders: at or below golang-migrate's version 2 — would be recorded" in out
    assert "Record them: migrate-bot baseline --yes" in out
    assert bot_env.sql("prod", "SELECT to_regclass('migrate_bot.schema_migrations')") == [(None,)]
    assert main(["baseline", "--yes"]) == 0
    assert bot_env.sql("prod", "SELECT version, applied_by FROM migrate_bot.schema_migrations ORDER BY 1") == [
        ("0001", "baseline from golang-migrate"), ("0002", "baseline from golang-migrate")]
