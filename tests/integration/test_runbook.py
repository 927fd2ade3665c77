"""`migrate-bot refresh` and `migrate-bot run`: the runbook's automated workflow from the command line."""

from __future__ import annotations

import pytest

from bot.cli import main
from tests.fix_pg import Databases

SEED = """
CREATE TABLE users (id bigserial PRIMARY KEY, email text);
INSERT INTO users (email) SELECT 'u' || g || '@example.com' FROM generate_series(1, 100) g;
CREATE TABLE orders (id bigserial PRIMARY KEY, user_id bigint);
INSERT INTO orders (user_id) VALUES (1), (2), (424242);
"""


def staging_fresh_from_prod(dbs: Databases) -> None:
    """Prod holds the data; staging starts empty, so only a refresh can make the gate meaningful."""
    dbs.sql("prod", SEED)


def test_refresh_command_copies_prod(bot_env: Databases, capsys: pytest.CaptureFixture) -> None:
    staging_fresh_from_prod(bot_env)
    assert main(["refresh"]) == 0
    assert "RESULT refresh: PASS" in capsys.readouterr().out
    assert bot_env.sql("staging", "SELECT count(*) FROM orders") == [(3,)]


def test_run_refreshes_validates_and_triages_a_failure(bot_env: Databases, make_migrations,
                                                      capsys: pytest.CaptureFixture) -> None:
    staging_fresh_from_prod(bot_env)
    make_migrations({"0001_fk.sql": "ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) "
                                    "REFERENCES users (id) NOT VALID;",
                     "0002_validate.sql": "ALTER TABLE orders VALIDATE CONSTRAINT orders_user_fk;"})
    assert main(["run", "--deploy", "--log", "run.log"]) == 1
    out = capsys.readouterr().out
    assert "RESULT refresh: PASS" in out and "RESULT validate: FAIL" in out
    assert "Invalid foreign key (orphaned rows)" in out and "RESULT deploy" not in out
    assert bot_env.sql("prod", "SELECT to_regclass('migrate_bot.schema_migrations')") == [(None,)]


def test_run_deploys_only_after_a_pass(bot_env: Databases, make_migrations, capsys: pytest.CaptureFixture) -> None:
    staging_fresh_from_prod(bot_env)
    make_migrations({"0001_note.sql": "ALTER TABLE orders ADD COLUMN note text;"})
    assert main(["run", "--deploy"]) == 0
    out = capsys.readouterr().out
    assert "RESULT validate: PASS" in out and "RESULT deploy: PASS" in out
    assert bot_env.sql("prod", "SELECT version FROM migrate_bot.schema_migrations") == [("0001",)]


def test_run_without_deploy_stops_after_the_gate(bot_env: Databases, make_migrations,
                                                 capsys: pytest.CaptureFixture) -> None:
    staging_fresh_from_prod(bot_env)
    make_migrations({"0001_note.sql": "ALTER TABLE orders ADD COLUMN note text;"})
    assert main(["run"]) == 0
    assert "RESULT deploy" not in capsys.readouterr().out
    assert bot_env.sql("prod", "SELECT to_regclass('migrate_bot.schema_migrations')") == [(None,)]
