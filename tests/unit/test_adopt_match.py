"""Other tools' histories mapped onto the migrations here, and their checksums (pure; no database)."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path

from bot.migrations import adopt, toolsums
from bot.migrations.apply import HistoryRow
from bot.migrations.source import build

T = datetime(2024, 1, 2, 10, 0, tzinfo=timezone.utc)


def migration(version: str, name: str, text: str = "SELECT 1;\n", path: str = ""):
    return build(version, name, path or f"db/{version}_{name}.sql", text)


def flyway_row(rank: int, version: str | None, kind: str = "SQL", success: bool = True, checksum: int | None = 1):
    return {"installed_rank": rank, "version": version, "type": kind, "script": f"V{version}__x.sql",
            "checksum": checksum, "installed_on": T, "success": success}


def test_flyway_versions_compare_numerically_with_trailing_zeros_aside() -> None:
    assert adopt.flyway_key("1.0") == adopt.flyway_key("1") == (1,)
    assert adopt.flyway_key("1.2.0") == adopt.flyway_key("1_2") == (1, 2)
    assert adopt.flyway_key("1.10") > adopt.flyway_key("1.9")


def test_flyway_undo_and_delete_rows_take_an_applied_version_back() -> None:
    history = adopt.flyway_history([flyway_row(1, "1"), flyway_row(2, "2"), flyway_row(3, "3"),
                                    flyway_row(4, "2", kind="UNDO_SQL"), flyway_row(5, "3", kind="DELETE")], "h")
    assert [e.key for e in history.applied] == ["1"]


def test_a_failed_flyway_row_followed_by_a_success_counts_as_applied() -> None:
    history = adopt.flyway_history([flyway_row(1, "1", success=False), flyway_row(2, "1")], "h")
    assert ([e.key for e in history.applied], history.failed) == (["1"], ())


def test_flyway_repeatables_and_the_schema_marker_are_skipped() -> None:
    history = adopt.flyway_history([flyway_row(0, None, kind="SCHEMA"), flyway_row(1, None), flyway_row(2, "1")], "h")
    assert [e.key for e in history.applied] == ["1"] and history.summary == "1 applied"


def test_a_flyway_version_written_1_0_adopts_the_file_v1() -> None:
    history = adopt.flyway_history([flyway_row(1, "1.0", checksum=None)], "h")
    adoption = adopt.match(history, [migration("1", "users")], {})
    assert [a.migration.label for a in adoption.adopt] == ["1_users"]


def test_prisma_keeps_the_latest_outcome_of_each_migration() -> None:
    rows = [
        {"migration_name": "1_a", "checksum": "x", "finished_at": None, "rolled_back_at": T, "started_at": T},
        {"migration_name": "1_a", "checksum": "x", "finished_at": T, "rolled_back_at": None, "started_at": T},
        {"migration_name": "2_b", "checksum": "y", "finished_at": None, "rolled_back_at": T, "started_at": T},
        {"migration_name": "3_c", "checksum": "z", "finished_at": None, "rolled_back_at": None, "started_at": T},
    ]
    history = adopt.prisma_history(rows, "h")
    assert [e.key for e in history.applied] == ["1_a"] and [e.key for e in history.failed] == ["3_c"]
    assert history.summary == "1 applied, 1 failed"


def test_what_the_tool_applied_is_adopted_and_the_rest_stays_pending() -> None:
    history = adopt.ToolHistory("dbmate", "public.schema_migrations", (adopt.Entry("20240101000000"),
                                                                        adopt.Entry("20230101000000")))
    ms = [migration("20240101000000", "a"), migration("20240102000000", "b")]
    adoption = adopt.match(history, ms, {})
    assert [a.migration.version for a in adoption.adopt] == ["20240101000000"]
    assert [m.version for m in adoption.pending] == ["20240102000000"]
    assert adoption.unknown == ["20230101000000"]


def test_migrations_already_in_our_history_are_left_alone() -> None:
    history = adopt.ToolHistory("golang-migrate", "t", (), through=adopt.Entry("2"))
    ms = [migration("0001", "a"), migration("0002", "b")]
    ours = {"0001": HistoryRow("0001", "a", ms[0].checksum, T, False)}
    adoption = adopt.match(history, ms, ours)
    assert [m.version for m in adoption.already] == ["0001"] and [a.migration.version for a in adoption.adopt] == ["0002"]


def test_golang_migrate_at_a_version_with_no_file_here_says_so() -> None:
    history = adopt.ToolHistory("golang-migrate", "t", (), through=adopt.Entry("5"))
    adoption = adopt.match(history, [migration("0001", "a"), migration("0007", "b")], {})
    assert ([a.migration.version for a in adoption.adopt], adoption.unknown) == (["0001"], ["5"])


def test_a_version_the_tool_cannot_name_stays_pending() -> None:
    history = adopt.ToolHistory("golang-migrate", "t", (), through=adopt.Entry("9"))
    adoption = adopt.match(history, [migration("1.2", "flyway_style")], {})
    assert adoption.adopt == [] and [m.label for m in adoption.pending] == ["1.2_flyway_style"]


def test_prisma_checksum_is_the_sha256_of_the_file_line_endings_aside(tmp_path: Path) -> None:
    path = tmp_path / "migration.sql"
    path.write_bytes(b"CREATE TABLE a (id int);\r\nCREATE TABLE b (id int);\r\n")
    lf = hashlib.sha256(b"CREATE TABLE a (id int);\nCREATE TABLE b (id int);\n").hexdigest()
    assert toolsums.prisma_matches(path, lf)
    assert toolsums.prisma_matches(path, toolsums.prisma_checksum(path).upper())
    assert not toolsums.prisma_matches(path, hashlib.sha256(b"something else").hexdigest())


def test_flyway_checksum_ignores_line_endings_and_a_bom(tmp_path: Path) -> None:
    unix, windows = tmp_path / "u.sql", tmp_path / "w.sql"
    unix.write_bytes(b"CREATE TABLE a (id int);\nSELECT 1;\n")
    windows.write_bytes(b"\xef\xbb\xbfCREATE TABLE a (id int);\r\nSELECT 1;\r\n")
    assert toolsums.flyway_checksum(unix) == toolsums.flyway_checksum(windows)


def test_flyway_checksum_is_a_signed_32_bit_crc_of_the_lines(tmp_path: Path) -> None:
    import zlib

    path = tmp_path / "V1__a.sql"
    path.write_text("CREATE TABLE a (id int);\nINSERT INTO a VALUES (1);\n")
    crc = zlib.crc32(b"CREATE TABLE a (id int);INSERT INTO a VALUES (1);")
    assert toolsums.flyway_checksum(path) == (crc - 2**32 if crc >= 2**31 else crc)
    assert -2**31 <= toolsums.flyway_checksum(path) < 2**31
