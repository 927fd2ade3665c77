"""How far a statement-by-statement migration got, recorded on the database it runs on.

A ``-- migrate:no-transaction`` file (or one with CREATE INDEX CONCURRENTLY …)
commits each statement on its own, so a deploy that dies half-way — the bot
killed, its session terminated, the server restarted — leaves part of the file
applied and no history row. The applier records each committed statement in
``migrate_bot.partial_migrations``: in the same transaction as the statement
when PostgreSQL allows it in a block, right after it otherwise. When the file
completes, its history row replaces the partial row in one transaction. So
after any interruption the database itself says how far the file got, and a
resume starts at the next statement.

Why a table of its own rather than columns on ``schema_migrations``: a row in
the history table means "applied" to every reader there is — older bot
versions, the refresh's history comparison, the hold-back's "previous
deploy", people's own queries — and a half-applied file must look applied to
none of them. ``read_history`` is unchanged; ``apply.plan`` takes these rows
beside it and exposes them as ``Plan.partial``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

from bot.migrations.source import Migration, Statement
from bot.pg import rows

PARTIAL = "migrate_bot.partial_migrations"
PARTIAL_DDL = """
CREATE TABLE IF NOT EXISTS migrate_bot.partial_migrations (
    version          text PRIMARY KEY,
    name             text NOT NULL,
    checksum         text NOT NULL,
    statements_done  integer NOT NULL,
    statements_total integer NOT NULL,
    started_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    run_id           text,
    applied_by       text
)
"""
UPSERT_SQL = f"""
INSERT INTO {PARTIAL} (version, name, checksum, statements_done, statements_total, run_id, applied_by)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (version) DO UPDATE SET statements_done = EXCLUDED.statements_done, checksum = EXCLUDED.checksum,
    statements_total = EXCLUDED.statements_total, updated_at = now(), run_id = EXCLUDED.run_id,
    applied_by = EXCLUDED.applied_by
"""
TEXT_SHOWN = 80


@dataclass(frozen=True)
class PartialRow:
    """One row of ``migrate_bot.partial_migrations``: a file of which ``statements_done`` statements committed."""

    version: str
    name: str
    checksum: str
    statements_done: int
    statements_total: int
    started_at: datetime
    updated_at: datetime
    run_id: str | None = None
    applied_by: str | None = None


@dataclass(frozen=True)
class Partial:
    """A partial row next to the file of its version (plain data, in ``Plan.partial``)."""

    row: PartialRow
    migration: Migration | None  # None: no file of that version here any more
    applied: bool = False  # the version also has a history row: the partial row is a leftover

    @property
    def label(self) -> str:
        return self.migration.label if self.migration else f"{self.row.version}_{self.row.name}"

    @property
    def done(self) -> int:
        return self.row.statements_done

    @property
    def total(self) -> int:
        return len(self.migration.statements) if self.migration else self.row.statements_total

    @property
    def checksum_matches(self) -> bool:
        return self.migration is not None and self.migration.checksum == self.row.checksum

    @property
    def resumable(self) -> bool:
        """Resume continues exactly where the record says: only with the very file whose statements committed."""
        return self.checksum_matches and not self.applied and self.migration is not None \
            and self.migration.no_transaction and self.done <= len(self.migration.statements)

    @property
    def committed(self) -> list[Statement]:
        return list(self.migration.statements[:self.done]) if self.checksum_matches and self.migration else []

    @property
    def next_statement(self) -> Statement | None:
        """The statement a resume runs first (None when all committed and only the history row is missing)."""
        if not self.checksum_matches or self.migration is None or self.done >= len(self.migration.statements):
            return None
        return self.migration.statements[self.done]


def shown(stmt: Statement) -> str:
    """A statement's start on one line, for sentences: "ALTER TABLE t ADD COLUMN c4 …"."""
    text = " ".join(stmt.sql.split())
    return text if len(text) <= TEXT_SHOWN else text[:TEXT_SHOWN - 1] + "…"


def read_partial(conn: psycopg.Connection) -> dict[str, PartialRow]:
    """The partial rows by version ({} before the table exists: older databases, or nothing ever interrupted)."""
    if rows(conn, "SELECT to_regclass(%s) AS t", (PARTIAL,))[0]["t"] is None:
        return {}
    found = rows(conn, f"SELECT version, name, checksum, statements_done, statements_total, started_at, updated_at, "
                       f"run_id, applied_by FROM {PARTIAL} ORDER BY version")
    return {r["version"]: PartialRow(**r) for r in found}


def record(conn: psycopg.Connection, migration: Migration, done: int, run_id: str | None,
           applied_by: str | None) -> None:
    """``done`` statements of ``migration`` have committed (in the caller's transaction, when it has one)."""
    conn.execute(UPSERT_SQL, (migration.version, migration.name, migration.checksum, done,
                              len(migration.statements), run_id, applied_by))


def ensure(conn: psycopg.Connection) -> None:
    """The table, created on first need (with the history table's schema already there)."""
    conn.execute(PARTIAL_DDL)


def clear(conn: psycopg.Connection, version: str) -> None:
    conn.execute(f"DELETE FROM {PARTIAL} WHERE version = %s", (version,))


def match(partial: dict[str, PartialRow], migrations: list[Migration], applied: set[str]) -> list[Partial]:
    """Each partial row next to its file (pure)."""
    by_version = {m.version: m for m in migrations}
    return [Partial(row, by_version.get(version), version in applied) for version, row in sorted(partial.items())]
