"""The validation gate and deploy against real prod and staging clusters."""

from __future__ import annotations

import threading


from bot import config
from bot.migrations import apply
from bot.migrations.source import discover
from bot.runs.store.sqlite import SqliteStore
from bot.workflow import deploy, triage, validate
from bot.workflow.report import Status
from tests.fix_pg import Databases

USERS = "CREATE TABLE users (id bigserial PRIMARY KEY, email text);\n"
SEED = USERS + "INSERT INTO users (email) SELECT 'u' || g || '@example.com' FROM generate_series(1, 200) g;\n"


def settings(**gate) -> config.Settings:
    s = config.load(None)
    if gate:
        from dataclasses import replace

        s = replace(s, gate=replace(s.gate, **gate))
    return s


def statuses(report) -> dict[str, Status]:
    return {c.name: c.status for c in report.checks}


def run_validate(s=None, **kw):
    s = s or settings()
    return validate.run(s, SqliteStore(s.state.path), validate.GateOptions(**kw))


def run_deploy(s=None, **kw):
    s = s or settings()
    kw.setdefault("env_flag", True)
    return deploy.run(s, SqliteStore(s.state.path), deploy.DeployOptions(**kw))


def test_passing_gate_records_its_fingerprint(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    make_migrations({
        "0001_orders.sql": "CREATE TABLE orders (id bigserial PRIMARY KEY, user_id bigint, total numeric);",
        "0002_orders_user_idx.sql": "CREATE INDEX CONCURRENTLY orders_user_idx ON orders (user_id);",
    })
    report = run_validate()
    assert report.exit_code == 0, report.lines()
    assert statuses(report)["migration.0001_orders"] is Status.PASSED
    assert statuses(report)["migration.0002_orders_user_idx"] is Status.PASSED
    assert statuses(report)["indexes-valid.staging"] is Status.PASSED
    assert SqliteStore(settings().state.path).passing_validation(report.fingerprint) is not None
    assert bot_env.sql("staging", "SELECT version FROM migrate_bot.schema_migrations ORDER BY 1") == [("0001",), ("0002",)]
    assert bot_env.sql("prod", "SELECT to_regclass('orders')") == [(None,)]


def test_every_gate_line_follows_the_contract(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_orders.sql": "CREATE TABLE orders (id bigserial PRIMARY KEY);"})
    report = run_validate()
    *checks, summary = [line for line in report.lines() if not line.startswith("    > ")]
    assert all(line.split(" ", 1)[0] in {"PASSED", "FAILED", "BLOCKER", "WARNING", "HELD"} for line in checks)
    assert summary.startswith("RESULT validate: PASS") and summary.endswith("exit 0")


def test_deploy_applies_exactly_what_passed_and_spot_checks(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_orders.sql": "CREATE TABLE orders (id bigserial PRIMARY KEY, user_id bigint);"})
    assert run_validate().exit_code == 0
    report = run_deploy()
    assert report.exit_code == 0, report.lines()
    found = statuses(report)
    assert found["validation"] is Status.PASSED
    assert found["constraints-validated.prod"] is Status.PASSED
    assert found["indexes-valid.prod"] is Status.PASSED
    assert bot_env.sql("prod", "SELECT version, name FROM migrate_bot.schema_migrations") == [("0001", "orders")]


def test_deploy_without_a_passing_validation_is_refused(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_orders.sql": "CREATE TABLE orders (id bigserial PRIMARY KEY);"})
    report = run_deploy()
    assert report.exit_code == 1
    assert statuses(report)["validation"] is Status.BLOCKER
    assert bot_env.sql("prod", "SELECT to_regclass('orders')") == [(None,)]


def test_deploy_refuses_a_set_that_changed_after_validation(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    root = make_migrations({"0001_orders.sql": "CREATE TABLE orders (id bigserial PRIMARY KEY);"})
    assert run_validate().exit_code == 0
    (root / "0002_more.sql").write_text("CREATE TABLE more_things (id int);")
    report = run_deploy()
    assert statuses(report)["validation"] is Status.BLOCKER
    assert "fingerprint" in report.checks[-1].message


def test_deploy_needs_the_runbook_flag(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_orders.sql": "CREATE TABLE orders (id bigserial PRIMARY KEY);"})
    assert run_validate().exit_code == 0
    report = run_deploy(env_flag=False)
    assert statuses(report)["validation-flag"] is Status.BLOCKER


def test_fk_over_orphaned_rows_fails_with_the_real_fix(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED + "CREATE TABLE orders (id bigserial PRIMARY KEY, user_id bigint);"
                 "INSERT INTO orders (user_id) VALUES (1), (2), (99999);")
    make_migrations({"0001_orders_fk.sql":
                     "ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES users (id);"})
    report = run_validate()
    assert report.exit_code == 1
    failed = next(c for c in report.checks if c.name == "migration.0001_orders_fk")
    assert failed.status is Status.FAILED and failed.details["sqlstate"] == "23503"
    finding = next(f for f in triage.triage(report.checks) if failed.name in f.checks)
    assert finding.category == "invalid-fk"
    assert "ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID;" in finding.fix
    assert "ALTER TABLE orders VALIDATE CONSTRAINT orders_user_fk;" in finding.fix


def test_set_not_null_over_nulls_fails_with_the_backfill(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED + "UPDATE users SET email = NULL WHERE id % 10 = 0;")
    make_migrations({"0001_email_required.sql": "ALTER TABLE users ALTER COLUMN email SET NOT NULL;"})
    report = run_validate()
    failed = next(c for c in report.checks if c.name == "migration.0001_email_required")
    assert failed.details["sqlstate"] == "23502"
    finding = next(f for f in triage.triage(report.checks) if failed.name in f.checks)
    assert finding.category == "not-null"
    assert "UPDATE users SET email = <default_value> WHERE email IS NULL;" in finding.fix


def test_unique_index_over_duplicates_leaves_nothing_invalid(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED + "INSERT INTO users (email) VALUES ('dup@example.com'), ('dup@example.com');")
    make_migrations({"0001_unique_email.sql":
                     "-- migrate:no-transaction\nCREATE UNIQUE INDEX CONCURRENTLY users_email_key ON users (email);"})
    report = run_validate()
    failed = next(c for c in report.checks if c.name == "migration.0001_unique_email")
    assert failed.status is Status.FAILED and failed.details["sqlstate"] == "23505"
    assert statuses(report)["indexes-valid.staging"] is Status.PASSED
    assert bot_env.sql("staging", "SELECT count(*) FROM pg_index WHERE NOT indisvalid") == [(0,)]
    finding = next(f for f in triage.triage(report.checks) if failed.name in f.checks)
    assert "SELECT email, count(*) FROM users GROUP BY email HAVING count(*) > 1" in finding.fix


def test_duplicate_key_values_never_reach_the_report(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED + "INSERT INTO users (email) VALUES ('secret.person@example.com'), ('secret.person@example.com');")
    make_migrations({"0001_unique_email.sql": "CREATE UNIQUE INDEX CONCURRENTLY users_email_key ON users (email);"})
    report = run_validate()
    assert report.exit_code == 1
    assert "secret.person" not in report.to_json()


def test_missing_extension_on_prod_is_a_blocker(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    bot_env.sql("prod", "DROP EXTENSION citext")
    make_migrations({"0001_orders.sql": "CREATE TABLE orders (id bigserial PRIMARY KEY);"})
    report = run_validate()
    check = next(c for c in report.checks if c.name == "extensions.prod")
    assert check.status is Status.BLOCKER and "citext" in check.message
    finding = next(f for f in triage.triage(report.checks) if "extensions.prod" in f.checks)
    assert finding.category == "missing-extension" and 'CREATE EXTENSION IF NOT EXISTS "citext";' in finding.fix


def test_missing_extension_on_staging_is_installed_when_asked(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    bot_env.sql("staging", 'DROP EXTENSION "uuid-ossp"')
    make_migrations({"0001_orders.sql": "CREATE TABLE orders (id bigserial PRIMARY KEY);"})
    report = run_validate(install_extensions=True)
    assert report.exit_code == 0, report.lines()
    assert bot_env.sql("staging", "SELECT count(*) FROM pg_extension WHERE extname = 'uuid-ossp'") == [(1,)]


def test_missing_extension_on_staging_fails_without_install(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    bot_env.sql("staging", "DROP EXTENSION pg_trgm")
    make_migrations({"0001_orders.sql": "CREATE TABLE orders (id bigserial PRIMARY KEY);"})
    report = run_validate()
    assert statuses(report)["extensions.staging"] is Status.FAILED


def test_stale_staging_is_refused(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_orders.sql": "CREATE TABLE orders (id bigserial PRIMARY KEY);"})
    assert run_validate().exit_code == 0
    again = run_validate()
    assert statuses(again)["staging-fresh"] is Status.FAILED
    assert "migrate-bot refresh" in next(c for c in again.checks if c.name == "staging-fresh").message


def test_checksum_drift_is_a_blocker_and_never_rerun(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    root = make_migrations({"0001_orders.sql": "CREATE TABLE orders (id bigserial PRIMARY KEY);"})
    assert run_validate().exit_code == 0
    assert run_deploy().exit_code == 0
    (root / "0001_orders.sql").write_text("CREATE TABLE orders (id bigserial PRIMARY KEY, note text);")
    (root / "0002_next.sql").write_text("CREATE TABLE next_things (id int);")
    report = run_validate()
    assert statuses(report)["checksum-drift.0001_orders"] is Status.BLOCKER
    assert report.exit_code == 1
    finding = next(f for f in triage.triage(report.checks) if f.category == "checksum-drift")
    assert "new migration" in finding.fix


def test_own_transaction_file_keeps_its_boundaries(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_two_tables.sql": "BEGIN;\nCREATE TABLE a (id int);\nCREATE TABLE b (id int);\nCOMMIT;\n"})
    report = run_validate()
    assert report.exit_code == 0, report.lines()
    assert bot_env.sql("staging", "SELECT version FROM migrate_bot.schema_migrations") == [("0001",)]


def test_failing_transactional_file_leaves_no_trace(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_half.sql": "CREATE TABLE half (id int);\nALTER TABLE nope ADD COLUMN x int;"})
    report = run_validate()
    assert report.exit_code == 1
    assert bot_env.sql("staging", "SELECT to_regclass('half')") == [(None,)]
    assert bot_env.sql("staging", "SELECT count(*) FROM migrate_bot.schema_migrations") == [(0,)]


def test_malformed_sql_fails_the_gate_with_its_line(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_broken.sql": "CREATE TABLE ok (id int);\nALTER TABLE ok ADD COLUMN;\n"})
    report = run_validate()
    check = next(c for c in report.checks if c.name == "syntax.0001_broken")
    assert report.exit_code == 1 and check.details["line"] == 2


def test_cleanup_migration_is_held_after_a_recent_deploy(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    root = make_migrations({"0001_orders.sql": "CREATE TABLE orders (id bigserial PRIMARY KEY, legacy text);"})
    assert run_validate().exit_code == 0 and run_deploy().exit_code == 0
    bot_env.both("DROP TABLE IF EXISTS orders; DROP SCHEMA migrate_bot CASCADE;")  # staging fresh again…
    bot_env.sql("staging", "CREATE TABLE orders (id bigserial PRIMARY KEY, legacy text)")
    (root / "0002_drop_legacy.sql").write_text("-- migrate:cleanup\nALTER TABLE orders DROP COLUMN legacy;")
    bot_env.sql("prod", "CREATE TABLE orders (id bigserial PRIMARY KEY, legacy text)")
    apply.ensure_history(bot_env.connect("prod"))
    bot_env.sql("prod", "INSERT INTO migrate_bot.schema_migrations (version, name, checksum, duration_ms) "
                "VALUES ('0001', 'orders', %s, 1)", (discover(root)[0].checksum,))
    assert run_validate().exit_code == 0
    report = run_deploy()
    assert statuses(report)["hold-back.0002_drop_legacy"] is Status.HELD
    assert report.exit_code == 0
    assert bot_env.sql("prod", "SELECT count(*) FROM information_schema.columns WHERE column_name = 'legacy'") == [(1,)]


def test_two_concurrent_deploys_never_overlap(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_slow.sql": "CREATE TABLE slow (id int);\nSELECT pg_sleep(3);"})
    assert run_validate().exit_code == 0
    first: dict = {}
    thread = threading.Thread(target=lambda: first.update(report=run_deploy()))
    thread.start()
    with bot_env.connect("prod") as watcher:
        for _ in range(200):
            held = watcher.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted").fetchone()[0]
            if held:
                break
            threading.Event().wait(0.05)
    second = run_deploy()
    thread.join()
    assert first["report"].exit_code == 0
    assert second.exit_code == 2 and "A deploy is already running on prod" in second.error


def lock_settings(retries: int) -> config.Settings:
    return settings(lock_timeout_s=0.3, lock_retries=retries)


def test_lock_timeout_then_retry_succeeds_once_released(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    root = make_migrations({"0001_add_col.sql": "ALTER TABLE users ADD COLUMN nickname text;"})
    holder = bot_env.connect("staging", autocommit=False)
    holder.execute("SELECT count(*) FROM users")  # ACCESS SHARE held until commit
    events = []

    def on_event(kind: str, data: dict) -> None:
        events.append(kind)
        if kind == "lock_retry":
            holder.commit()

    with bot_env.connect("staging") as conn:
        apply.ensure_history(conn)
        applier = apply.Applier(conn, "staging", lock_timeout_s=0.3, lock_retries=3, backoff_s=0.05, on_event=on_event)
        outcome = applier.apply(discover(root)[0])
    holder.close()
    assert outcome.ok and outcome.attempts == 2
    assert events.count("lock_retry") == 1


def test_lock_never_released_fails_clearly(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_add_col.sql": "ALTER TABLE users ADD COLUMN nickname text;"})
    holder = bot_env.connect("staging", autocommit=False)
    holder.execute("SELECT count(*) FROM users")
    try:
        s = lock_settings(retries=1)
        report = validate.run(s, SqliteStore(s.state.path))
    finally:
        holder.close()
    failed = next(c for c in report.checks if c.name == "migration.0001_add_col")
    assert failed.details["sqlstate"] == "55P03" and failed.details["attempts"] == 2
    assert "after 2 attempts" in failed.message
    finding = next(f for f in triage.triage(report.checks) if failed.name in f.checks)
    assert finding.category == "lock" and "pg_terminate_backend" in finding.fix


def test_failed_concurrent_index_on_lock_timeout_leaves_nothing_invalid(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    root = make_migrations({"0001_idx.sql": "CREATE INDEX CONCURRENTLY users_email_idx ON users (email);"})
    holder = bot_env.connect("staging", autocommit=False)
    holder.execute("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE")
    with bot_env.connect("staging") as conn:
        apply.ensure_history(conn)
        outcome = apply.Applier(conn, "staging", lock_timeout_s=0.2, lock_retries=1, backoff_s=0.05).apply(discover(root)[0])
    holder.close()
    assert not outcome.ok and outcome.failure.sqlstate == "55P03"
    assert bot_env.sql("staging", "SELECT count(*) FROM pg_index WHERE NOT indisvalid") == [(0,)]


def test_not_valid_constraint_left_for_a_later_validate_is_a_warning(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED + "CREATE TABLE orders (id bigserial PRIMARY KEY, user_id bigint);")
    make_migrations({"0001_fk.sql": "ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) "
                                    "REFERENCES users (id) NOT VALID;"})
    report = run_validate()
    check = next(c for c in report.checks if c.name == "constraints-validated.staging")
    assert check.status is Status.WARNING and "left NOT VALID by this set: orders.orders_user_fk" in check.message
    assert report.exit_code == 0


def test_plain_spot_check_fails_on_any_not_valid_constraint(bot_env: Databases) -> None:
    from bot.workflow import checks

    bot_env.both(SEED + "ALTER TABLE users ADD CONSTRAINT email_set CHECK (email IS NOT NULL) NOT VALID;")
    with bot_env.connect("prod") as conn:
        check = checks.unvalidated_constraints(conn, "prod")
    assert check.status is Status.FAILED and "users.email_set" in check.message


def test_lint_sees_the_real_schema_of_touched_tables(bot_env: Databases, make_migrations) -> None:
    """A validated CHECK (email IS NOT NULL) already on prod makes SET NOT NULL safe; only the catalog knows."""
    bot_env.both(SEED + "ALTER TABLE users ADD CONSTRAINT users_email_not_null CHECK (email IS NOT NULL);")
    make_migrations({"0001_email_nn.sql": "ALTER TABLE users ALTER COLUMN email SET NOT NULL;"})
    report = run_validate()
    assert "lint.set-not-null-without-check" not in statuses(report)
    assert report.exit_code == 0, report.lines()


def test_lint_knows_a_column_type_from_the_catalog(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED + "ALTER TABLE users ADD COLUMN nick varchar(50);")
    make_migrations({"0001_nick.sql": "ALTER TABLE users ALTER COLUMN nick TYPE text;"})
    report = run_validate()
    assert not any(c.name.startswith("lint.alter-column-type") for c in report.checks), report.lines()


def test_own_transaction_file_is_never_rerun_after_a_partial_commit(bot_env: Databases, make_migrations) -> None:
    """CREATE TABLE commits on its own; a lock timeout in the later block must not run the file twice."""
    bot_env.both(SEED)
    root = make_migrations({"0001_two_steps.sql": "CREATE TABLE audit_log (id int);\n"
                                                  "BEGIN;\nALTER TABLE users ADD COLUMN nickname text;\nCOMMIT;\n"})
    holder = bot_env.connect("staging", autocommit=False)
    holder.execute("SELECT count(*) FROM users")
    with bot_env.connect("staging") as conn:
        apply.ensure_history(conn)
        outcome = apply.Applier(conn, "staging", lock_timeout_s=0.2, lock_retries=3, backoff_s=0.05).apply(
            discover(root)[0])
    holder.close()
    assert not outcome.ok and outcome.attempts == 1
    assert outcome.failure.sqlstate == "55P03" and outcome.applied_before_failure == 1


def test_a_stale_validation_is_refused(bot_env: Databases, make_migrations) -> None:
    from datetime import datetime, timedelta, timezone

    bot_env.both(SEED)
    make_migrations({"0001_orders.sql": "CREATE TABLE orders (id bigserial PRIMARY KEY);"})
    assert run_validate().exit_code == 0
    report = run_deploy(now=datetime.now(timezone.utc) + timedelta(hours=100))
    check = next(c for c in report.checks if c.name == "validation")
    assert check.status is Status.BLOCKER and "100 hours old (limit 72)" in check.message
    assert bot_env.sql("prod", "SELECT to_regclass('orders')") == [(None,)]


def test_staging_that_is_prod_under_another_name_is_refused(bot_env: Databases, make_migrations, monkeypatch) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_orders.sql": "CREATE TABLE orders (id bigserial PRIMARY KEY);"})
    monkeypatch.setenv("STAGING_DATABASE_URL", bot_env.prod_url.replace("127.0.0.1", "localhost"))
    report = run_validate()
    assert report.exit_code == 2
    assert "The staging database URL leads to the prod database" in report.error
    assert bot_env.sql("prod", "SELECT to_regclass('orders')") == [(None,)]
