"""The regression gate on real clusters: prod's hot statements measured on staging before and after the migrations."""

from __future__ import annotations

import re
from dataclasses import replace

import psycopg
import pytest

from bot import config
from bot.runs.store.sqlite import SqliteStore
from bot.workflow import perfmeasure, triage, validate
from bot.workflow.report import Report, Status
from tests.fix_pg import Databases

SEED = """
CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL, orders_total numeric NOT NULL DEFAULT 0);
INSERT INTO users (email) SELECT 'secret-' || g || '@example.com' FROM generate_series(1, 2000) g;
CREATE UNIQUE INDEX users_email_idx ON users (email);
CREATE TABLE orders (id bigserial PRIMARY KEY, user_id bigint NOT NULL REFERENCES users (id),
                     status text NOT NULL, total numeric NOT NULL);
INSERT INTO orders (user_id, status, total)
SELECT 1 + g % 2000, (ARRAY['new', 'paid', 'shipped'])[1 + g % 3], g % 500 FROM generate_series(1, 20000) g;
CREATE INDEX orders_user_id_idx ON orders (user_id);
ANALYZE users;
ANALYZE orders;
"""
LOOKUP = "SELECT id, total FROM orders WHERE user_id = %s"
BY_EMAIL = "SELECT id FROM users WHERE email = %s"
WRITE = "UPDATE orders SET status = %s WHERE id = %s"
INSERT = "INSERT INTO orders (user_id, status, total) VALUES (%s, %s, %s)"
RECOUNT_TRIGGER = """
CREATE FUNCTION orders_recount() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE users SET orders_total = (SELECT sum(total) FROM orders WHERE user_id = NEW.user_id) WHERE id = NEW.user_id;
  RETURN NEW;
END $$;
CREATE TRIGGER orders_recount AFTER INSERT OR UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION orders_recount();
"""
CALLS = 60  # above gate.perf_min_calls (50)


def hot_path_on_prod(dbs: Databases, *statements: str) -> None:
    """The application's hot path, as prod's pg_stat_statements sees it (real values, CALLS times each)."""
    args = {LOOKUP: lambda i: (1 + i,), BY_EMAIL: lambda i: (f"secret-{1 + i}@example.com",),
            WRITE: lambda i: ("paid", 1 + i), INSERT: lambda i: (1 + i, "new", i)}
    with dbs.connect("prod") as conn:
        for statement in statements:
            for i in range(CALLS):
                conn.execute(statement, args[statement](i))


def gate(**changes) -> Report:
    s = config.load(None)
    s = replace(s, gate=replace(s.gate, lint=False, **changes))
    return validate.run(s, SqliteStore(s.state.path))


def perf_checks(report: Report, status: Status | None = None) -> list:
    return [c for c in report.checks if c.name.startswith("perf-regression") and (status is None or c.status is status)]


def copies_left(dbs: Databases) -> list[str]:
    with psycopg.connect(dbs.clusters.staging.url("postgres")) as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                                           (f"%{perfmeasure.COPY_INFIX}%",))]


@pytest.fixture
def shop(bot_env: Databases) -> Databases:
    bot_env.both(SEED)
    return bot_env


def test_dropping_the_index_of_a_hot_lookup_fails(shop: Databases, make_migrations) -> None:
    hot_path_on_prod(shop, LOOKUP, WRITE)
    make_migrations({"0001_drop_idx.sql": "-- migrate:cleanup\nDROP INDEX CONCURRENTLY orders_user_id_idx;"})
    report = gate()
    (failed,) = perf_checks(report, Status.FAILED)
    assert re.fullmatch(r"perf-regression\.orders-by-user-id-[0-9a-f]{6}", failed.name), failed.name
    assert failed.message.startswith(f"measurably slower after the migrations ({CALLS} calls on prod")
    assert failed.details["statement"] == "SELECT id, total FROM orders WHERE user_id = $1"
    assert failed.details["rule"] == "lost-index" and failed.details["index"] == "orders_user_id_idx"
    assert failed.details["blocks_after"] > 1.2 * failed.details["blocks_before"]
    assert report.exit_code == 1


def test_a_lost_index_is_triaged_with_the_index_to_recreate(shop: Databases, make_migrations) -> None:
    hot_path_on_prod(shop, LOOKUP)
    make_migrations({"0001_drop_idx.sql": "-- migrate:cleanup\nDROP INDEX CONCURRENTLY orders_user_id_idx;"})
    report = gate()
    (finding,) = triage.triage(report.checks)
    assert finding.category == "perf-regression"
    assert "CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_user_id_idx ON public.orders USING btree (user_id);" \
        in finding.fix
    from_log = triage.triage(triage.checks_from_log("\n".join(report.lines())))
    assert "CREATE INDEX CONCURRENTLY IF NOT EXISTS ON orders (user_id);" in from_log[0].fix


def test_a_trigger_on_a_hot_write_fails_though_its_plan_cost_is_unchanged(shop: Databases, make_migrations) -> None:
    hot_path_on_prod(shop, LOOKUP, WRITE)
    make_migrations({"0001_recount.sql": RECOUNT_TRIGGER})
    report = gate()
    (failed,) = perf_checks(report, Status.FAILED)
    assert failed.name.startswith("perf-regression.update-orders-by-id-")
    assert failed.details["before"] == failed.details["after"]  # the plan cost did not move
    assert failed.details["rule"] == "trigger" and failed.details["triggers"] == ["orders_recount"]
    assert failed.details["ci"][0] > 1.2
    (finding,) = triage.triage(report.checks)
    assert "orders_recount on orders now run for every row" in finding.fix


def test_a_harmless_migration_passes(shop: Databases, make_migrations) -> None:
    hot_path_on_prod(shop, LOOKUP, WRITE, INSERT)
    make_migrations({"0001_note.sql": "ALTER TABLE orders ADD COLUMN note text;\n"
                                      "CREATE TABLE audit_log (id bigserial PRIMARY KEY, body text);"})
    report = gate()
    (check,) = perf_checks(report)
    assert check.status is Status.PASSED, report.lines()
    assert check.message == ("3 hot statements measured before/after on staging (7 paired runs each): "
                             "none measurably slower (limit +20%)")


def test_a_new_index_that_speeds_up_a_hot_lookup_passes_without_a_warning(shop: Databases, make_migrations) -> None:
    shop.both("DROP INDEX orders_user_id_idx")
    hot_path_on_prod(shop, LOOKUP)
    make_migrations({"0001_idx.sql": "CREATE INDEX CONCURRENTLY orders_user_id_idx ON orders (user_id);"})
    report = gate()
    (check,) = perf_checks(report)
    assert check.status is Status.PASSED
    assert check.message.endswith("none measurably slower (limit +20%); 1 measurably faster with a new plan")
    assert "passed: measurably faster with a new plan" in report.facts["perf_report_md"]


def test_a_write_that_fails_only_after_the_migrations_fails(shop: Databases, make_migrations) -> None:
    hot_path_on_prod(shop, INSERT)
    make_migrations({"0001_check.sql": "ALTER TABLE orders ADD CONSTRAINT orders_total_negative "
                                       "CHECK (total < 0) NOT VALID;"})
    report = gate()
    (failed,) = perf_checks(report, Status.FAILED)
    assert "fails after the migrations but not before: CheckViolation (SQLSTATE 23514)" in failed.message
    assert failed.details["rule"] == "fails-after"


def test_a_write_cut_off_by_the_timeout_only_after_the_migrations_fails(shop: Databases, make_migrations) -> None:
    hot_path_on_prod(shop, WRITE)
    make_migrations({"0001_slow.sql": "CREATE FUNCTION orders_wait() RETURNS trigger LANGUAGE plpgsql AS $$\n"
                                      "BEGIN PERFORM pg_sleep(0.5); RETURN NEW; END $$;\n"
                                      "CREATE TRIGGER orders_wait BEFORE UPDATE ON orders FOR EACH ROW "
                                      "EXECUTE FUNCTION orders_wait();"})
    report = gate(perf_statement_timeout_s=0.2)
    (failed,) = perf_checks(report, Status.FAILED)
    assert "is cut off by the 0.2 s statement timeout after the migrations (2 runs;" in failed.message
    assert failed.details["rule"] == "timeout"


def test_one_off_statements_are_not_hot(shop: Databases, make_migrations) -> None:
    hot_path_on_prod(shop, LOOKUP)
    with shop.connect("prod") as conn:
        for user_id in (1, 2, 3):
            conn.execute("SELECT count(*) FROM orders WHERE user_id > %s", (user_id,))
    make_migrations({"0001_note.sql": "ALTER TABLE orders ADD COLUMN note text;"})
    report = gate()
    assert "user_id > $1" not in report.facts["perf_report_md"]
    assert perf_checks(report)[0].message.startswith("1 hot statement measured")


def test_a_statement_that_cannot_be_given_values_is_named(shop: Databases, make_migrations) -> None:
    with shop.connect("prod") as conn:
        for i in range(CALLS):
            conn.execute("SELECT %s::int + count(*) FROM orders", (i,))
    make_migrations({"0001_note.sql": "ALTER TABLE orders ADD COLUMN note text;"})
    report = gate()
    (warning,) = perf_checks(report, Status.WARNING)
    assert warning.name.startswith("perf-regression.orders-")
    assert "was not measured: it cannot be given values: $1 is not compared with a column" in warning.message
    assert warning.details["statement"] == "SELECT $1::int + count(*) FROM orders"


def test_the_pinned_workload_is_measured_and_reported_normalised(shop: Databases, make_migrations) -> None:
    make_migrations({
        "0001_drop_idx.sql": "-- migrate:cleanup\nDROP INDEX CONCURRENTLY orders_user_id_idx;",
        "perf/workload.sql": "-- the account page\n-- weight: 30\nSELECT id, total FROM orders WHERE user_id = 1777;\n",
    })
    report = gate()
    (failed,) = perf_checks(report, Status.FAILED)
    assert "pinned in the workload file, weight 30" in failed.message
    assert failed.details["statement"] == "SELECT id, total FROM orders WHERE user_id = $1"
    assert "1777" not in "\n".join(report.lines()) + report.to_json()


def test_no_sampled_value_reaches_a_line_the_json_or_the_report(shop: Databases, make_migrations) -> None:
    hot_path_on_prod(shop, BY_EMAIL, LOOKUP)
    make_migrations({"0001_drop_email_idx.sql": "-- migrate:cleanup\nDROP INDEX CONCURRENTLY users_email_idx;"})
    report = gate()
    assert perf_checks(report, Status.FAILED)[0].name.startswith("perf-regression.users-by-email-")
    emitted = "\n".join(report.lines()) + report.to_json() + report.facts["perf_report_md"]
    assert "secret-" not in emitted and "@example.com" not in emitted


def test_the_report_shows_both_plans_side_by_side(shop: Databases, make_migrations) -> None:
    hot_path_on_prod(shop, LOOKUP)
    make_migrations({"0001_drop_idx.sql": "-- migrate:cleanup\nDROP INDEX CONCURRENTLY orders_user_id_idx;"})
    md = gate().facts["perf_report_md"]
    assert md.startswith("# Regression gate: prod's hot statements before and after the migrations")
    assert f"- {CALLS} calls on prod" in md
    side = next(line for line in md.splitlines() if "Seq Scan on orders" in line)
    assert re.search(r"Bitmap Heap Scan on orders .*\| Seq Scan on orders", side), side


def test_the_before_copy_is_dropped_after_a_failing_gate(shop: Databases, make_migrations) -> None:
    hot_path_on_prod(shop, LOOKUP)
    make_migrations({"0001_drop_idx.sql": "-- migrate:cleanup\nDROP INDEX CONCURRENTLY orders_user_id_idx;"})
    assert gate().exit_code == 1
    assert copies_left(shop) == []


def test_the_before_copy_is_dropped_on_ctrl_c(shop: Databases, make_migrations,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    hot_path_on_prod(shop, LOOKUP)
    make_migrations({"0001_note.sql": "ALTER TABLE orders ADD COLUMN note text;"})

    def interrupted(*args, **kwargs):
        assert copies_left(shop), "the copy exists while measuring"
        raise KeyboardInterrupt

    monkeypatch.setattr(perfmeasure, "ab_runs", interrupted)
    with pytest.raises(KeyboardInterrupt):
        gate()
    assert copies_left(shop) == []


def test_a_copy_left_by_a_killed_run_is_dropped_and_said(shop: Databases, make_migrations) -> None:
    hot_path_on_prod(shop, LOOKUP)
    leftover = f"{shop.name}{perfmeasure.COPY_INFIX}20000101000000"
    with psycopg.connect(shop.clusters.staging.url("postgres"), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {leftover}")
    make_migrations({"0001_note.sql": "ALTER TABLE orders ADD COLUMN note text;"})
    report = gate()
    (note,) = [c for c in report.checks if c.name == "perf-regression.copy"]
    assert note.status is Status.WARNING and note.message.startswith(f"dropped {leftover}, a before-copy")
    assert copies_left(shop) == []


def test_another_session_on_staging_is_named_and_plans_are_still_compared(shop: Databases, make_migrations) -> None:
    hot_path_on_prod(shop, LOOKUP)
    make_migrations({"0001_drop_idx.sql": "-- migrate:cleanup\nDROP INDEX CONCURRENTLY orders_user_id_idx;"})
    with psycopg.connect(shop.staging_url, autocommit=True, application_name="psql-by-ada"):
        report = gate()
    (note,) = [c for c in report.checks if c.name == "perf-regression.copy"]
    assert note.status is Status.WARNING
    assert (f"other sessions are connected to the staging database {shop.name} (1 × psql-by-ada (postgres))"
            in note.message)
    assert note.message.endswith("set gate.perf_measure = false; this run compared plan costs only")
    (failed,) = perf_checks(report, Status.FAILED)
    assert "plan cost of a hot statement (60 calls on prod" in failed.message


def test_with_measuring_off_only_plan_costs_count(shop: Databases, make_migrations) -> None:
    hot_path_on_prod(shop, LOOKUP, WRITE)
    make_migrations({"0001_recount.sql": RECOUNT_TRIGGER})
    report = gate(perf_measure=False)
    (check,) = perf_checks(report)
    assert check.status is Status.PASSED  # a trigger does not change a plan cost: what the measurement is for
    assert check.message == "2 hot prod queries planned on staging: none more than 20% more expensive after the migrations"
    assert copies_left(shop) == []


def test_a_query_that_no_longer_plans_fails(shop: Databases, make_migrations) -> None:
    hot_path_on_prod(shop, LOOKUP)
    make_migrations({"0001_drop_total.sql": "-- migrate:cleanup\nALTER TABLE orders DROP COLUMN total;"})
    report = gate()
    (failed,) = perf_checks(report, Status.FAILED)
    assert failed.message.startswith(f"a hot statement ({CALLS} calls on prod, mean ")
    assert failed.message.endswith("no longer plans after the migrations")


def test_without_pg_stat_statements_the_gate_says_so(shop: Databases, make_migrations) -> None:
    shop.sql("prod", "DROP EXTENSION pg_stat_statements")
    make_migrations({"0001_note.sql": "ALTER TABLE orders ADD COLUMN note text;"})
    report = gate()
    (check,) = perf_checks(report)
    assert check.status is Status.WARNING and report.exit_code == 0
    assert check.message.startswith("pg_stat_statements is not available on prod")
