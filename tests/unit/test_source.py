"""Discovering and ordering migrations in every supported layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import MigrationSourceError
from bot.migrations.source import build, detect_format, discover, set_fingerprint
from tests.fix_pg import write_migrations


@pytest.mark.parametrize(
    ("files", "layout", "versions"),
    [
        ({"0002_b.sql": "SELECT 2;", "0001_a.sql": "SELECT 1;", "0010_c.sql": "SELECT 3;", "README.md": "x"},
         "plain", ["0001", "0002", "0010"]),
        ({"20240102000000_b.sql": "SELECT 2;", "20240101000000_a.sql": "SELECT 1;"},
         "plain", ["20240101000000", "20240102000000"]),
        ({"20240101_init/migration.sql": "SELECT 1;", "20240202_users/migration.sql": "SELECT 2;",
          "migration_lock.toml": "provider = 'postgresql'"}, "prisma", ["20240101", "20240202"]),
        ({"V1__init.sql": "SELECT 1;", "V1.2__more.sql": "SELECT 2;", "V1_10__last.sql": "SELECT 3;", "V2__x.sql": "SELECT 4;"},
         "flyway", ["1", "1.2", "1.10", "2"]),
        ({"000001_init.up.sql": "SELECT 1;", "000001_init.down.sql": "DROP x;", "000002_users.up.sql": "SELECT 2;"},
         "golang-migrate", ["000001", "000002"]),
        ({"20240101000000_init.sql": "-- migrate:up\nSELECT 1;\n-- migrate:down\nDROP TABLE x;\n"},
         "dbmate", ["20240101000000"]),
    ],
)
def test_layouts_are_detected_and_ordered(tmp_path: Path, files: dict, layout: str, versions: list) -> None:
    root = write_migrations(tmp_path / "m", files)
    assert detect_format(root) == layout
    assert [m.version for m in discover(root)] == versions


def test_dbmate_down_section_is_never_run(tmp_path: Path) -> None:
    root = write_migrations(tmp_path / "m", {"1_a.sql": "-- migrate:up\nCREATE TABLE a (id int);\n-- migrate:down\nDROP TABLE a;\n"})
    (migration,) = discover(root)
    assert [s.sql for s in migration.statements] == ["CREATE TABLE a (id int)"]


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MigrationSourceError) as err:
        discover(tmp_path / "nope")
    assert str(err.value) == (f"The migrations directory {tmp_path / 'nope'} does not exist. "
                              "Pass --migrations DIR or set migrations.dir in the config.")


def test_duplicate_versions_are_refused(tmp_path: Path) -> None:
    root = write_migrations(tmp_path / "m", {"0001_a.sql": "SELECT 1;", "1_b.sql": "SELECT 2;"})
    with pytest.raises(MigrationSourceError, match="share version"):
        discover(root)


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE INDEX CONCURRENTLY i ON t (a)",
        "DROP INDEX CONCURRENTLY i",
        "REINDEX INDEX CONCURRENTLY i",
        "ALTER TABLE p DETACH PARTITION c CONCURRENTLY",
        "VACUUM t",
    ],
)
def test_statements_refused_in_a_transaction_switch_to_autocommit(statement: str) -> None:
    m = build("1", "x", "1_x.sql", f"{statement};")
    assert m.no_transaction and m.statements[0].no_transaction


def test_plain_ddl_stays_transactional() -> None:
    m = build("1", "x", "1_x.sql", "CREATE TABLE t (id int); ANALYZE t;")
    assert not m.no_transaction


def test_directives() -> None:
    m = build("1", "x", "1_x.sql", "-- migrate:no-transaction\n-- migrate:cleanup\nALTER TABLE t DROP COLUMN c;")
    assert m.no_transaction and m.cleanup


def test_own_transaction_is_kept() -> None:
    m = build("1", "x", "1_x.sql", "BEGIN;\nCREATE TABLE t (id int);\nCOMMIT;")
    assert m.own_transaction and not m.no_transaction


def test_statements_split_by_the_parser_not_by_semicolons() -> None:
    text = "-- café ☕\nINSERT INTO t VALUES ('a;b');\nCREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;\n"
    statements = build("1", "x", "1_x.sql", text).statements
    assert [s.line for s in statements] == [2, 3]
    assert statements[0].sql == "INSERT INTO t VALUES ('a;b')"


def test_parse_error_is_kept_with_its_line() -> None:
    m = build("1", "x", "1_x.sql", "SELECT 1;\n\nALTER TABLE t ADD COLUMN;")
    assert m.parse_error and m.parse_error_line == 3


def test_fingerprint_covers_versions_and_checksums() -> None:
    a, b = build("1", "a", "1_a.sql", "SELECT 1;"), build("2", "b", "2_b.sql", "SELECT 2;")
    b2 = build("2", "b", "2_b.sql", "SELECT 22;")
    assert set_fingerprint([a, b]) != set_fingerprint([a, b2])
    assert set_fingerprint([a, b]) != set_fingerprint([b, a])
    assert set_fingerprint([a, b]) == set_fingerprint([a, b])
