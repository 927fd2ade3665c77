"""The applier: history table, advisory lock, lock_timeout with retries.

How a migration runs depends on what PostgreSQL allows:

* ordinary files run in one transaction together with their history row
  (Alembic's rule: the change and the record of it commit together);
* files with ``-- migrate:no-transaction`` or a statement PostgreSQL refuses in
  a transaction block (``CREATE INDEX CONCURRENTLY`` …) run statement by
  statement in autocommit; a failed concurrent index build leaves an INVALID
  index, which is dropped (concurrently) before a retry or on failure;
* files that carry their own ``BEGIN; … COMMIT;`` keep their boundaries; the
  history row is written just before their final COMMIT.

Lock waits are bounded by ``lock_timeout``; a ``LockNotAvailable`` (55P03) is
retried with backoff (GitLab's ``with_lock_retries`` idea), so a deploy queued
behind a long transaction never stalls application queries for longer than
one ``lock_timeout`` at a time.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql

from bot.errors import EnvironmentBusy
from bot.migrations.source import Migration, Statement
from bot.pg import rows
from bot.workflow.report import Check

LOCK_KEYS = (0x6D62, 1)  # ("mb", 1): pg_try_advisory_lock(int, int) — classid, objid
HISTORY = "migrate_bot.schema_migrations"
HISTORY_DDL = """
CREATE SCHEMA IF NOT EXISTS migrate_bot;
CREATE TABLE IF NOT EXISTS migrate_bot.schema_migrations (
    version     text PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    duration_ms integer NOT NULL,
    run_id      text,
    applied_by  text,
    cleanup     boolean NOT NULL DEFAULT false
)
"""

EventSink = Callable[[str, dict[str, Any]], None]


def _ignore(kind: str, data: dict[str, Any]) -> None:
    return None


# Statements that fail outside a transaction block: wrapped for the trace they would pass on staging and
# then fail on prod, which runs a no-transaction file in plain autocommit.
ONLY_IN_A_BLOCK = frozenset({"LockStmt", "DeclareCursorStmt"})


class StatementHooks(Protocol):
    """Called around each statement (the staging trace and data pre-checks plug in here)."""

    def before(self, conn: psycopg.Connection, migration: Migration, stmt: Statement) -> list[Check]: ...

    def after(self, conn: psycopg.Connection, migration: Migration, stmt: Statement, seconds: float) -> list[Check]: ...

    def finished(self, conn: psycopg.Connection, migration: Migration) -> list[Check]: ...


@dataclass(frozen=True)
class PgFailure:
    """A database error as data: what triage keys on (SQLSTATE and diag fields)."""

    sqlstate: str
    message: str
    detail: str = ""
    hint: str = ""
    schema: str = ""
    table: str = ""
    column: str = ""
    constraint: str = ""
    statement: str = ""
    line: int = 0

    @classmethod
    def from_error(cls, exc: psycopg.Error, stmt: Statement | None) -> "PgFailure":
        diag = exc.diag
        return cls(
            sqlstate=exc.sqlstate or "",
            message=diag.message_primary or str(exc).strip(),
            detail=diag.message_detail or "",
            hint=diag.message_hint or "",
            schema=diag.schema_name or "",
            table=diag.table_name or "",
            column=diag.column_name or "",
            constraint=diag.constraint_name or "",
            statement=stmt.sql[:500] if stmt else "",
            line=stmt.line if stmt else 0,
        )

    def to_details(self) -> dict[str, Any]:
        """Everything but row data: class 23 details quote the offending values (emails, names…)."""
        data = {k: v for k, v in self.__dict__.items() if v}
        if self.sqlstate.startswith("23"):
            data.pop("detail", None)
        return data


@dataclass
class StatementOutcome:
    line: int
    sql: str
    seconds: float
    attempts: int = 1


@dataclass
class MigrationOutcome:
    migration: Migration
    ok: bool
    seconds: float = 0.0
    attempts: int = 1
    statements: list[StatementOutcome] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)  # from hooks
    failure: PgFailure | None = None
    applied_before_failure: int = 0  # statements already committed when a file failed (never re-run)


@dataclass(frozen=True)
class HistoryRow:
    version: str
    name: str
    checksum: str
    applied_at: Any
    cleanup: bool


@dataclass(frozen=True)
class Plan:
    """Pending work relative to one database's history (pure data)."""

    pending: list[Migration]
    drifted: list[tuple[Migration, HistoryRow]]  # applied, but the file changed since
    missing: list[HistoryRow]  # applied, but no file for it any more


def plan(migrations: list[Migration], history: dict[str, HistoryRow]) -> Plan:
    by_version = {m.version: m for m in migrations}
    pending = [m for m in migrations if m.version not in history]
    drifted = [(m, history[m.version]) for m in migrations if m.version in history and history[m.version].checksum != m.checksum]
    missing = [row for v, row in sorted(history.items()) if v not in by_version]
    return Plan(pending=pending, drifted=drifted, missing=missing)


def read_history(conn: psycopg.Connection) -> dict[str, HistoryRow]:
    exists = rows(conn, "SELECT to_regclass(%s) AS t", (HISTORY,))[0]["t"]
    if not exists:
        return {}
    found = rows(conn, f"SELECT version, name, checksum, applied_at, cleanup FROM {HISTORY} ORDER BY applied_at")
    return {r["version"]: HistoryRow(**r) for r in found}


def ensure_history(conn: psycopg.Connection) -> None:
    with conn.transaction():
        for stmt in HISTORY_DDL.strip().split(";\n"):
            conn.execute(stmt)


@contextmanager
def environment_lock(conn: psycopg.Connection, env: str) -> Iterator[None]:
    """pg_try_advisory_lock on the target: two deploys can never overlap."""
    got = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", LOCK_KEYS).fetchone()[0]
    if not got:
        holder = rows(
            conn,
            """SELECT a.pid, a.application_name, a.backend_start FROM pg_locks l
               JOIN pg_stat_activity a ON a.pid = l.pid
               WHERE l.locktype = 'advisory' AND l.classid = %s AND l.objid = %s AND l.granted""",
            LOCK_KEYS,
        )
        who = f" (backend pid {holder[0]['pid']}, {holder[0]['application_name'] or 'unknown client'})" if holder else ""
        raise EnvironmentBusy(
            f"A deploy is already running on {env}{who}.",
            "Wait for it to finish; `migrate-bot status` shows it. Never run two at once.",
        )
    try:
        yield
    finally:
        if not conn.closed:
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", LOCK_KEYS)


def _invalid_indexes(conn: psycopg.Connection) -> set[tuple[str, str]]:
    found = rows(
        conn,
        """SELECT n.nspname, c.relname FROM pg_index x
           JOIN pg_class c ON c.oid = x.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE NOT x.indisvalid""",
    )
    return {(r["nspname"], r["relname"]) for r in found}


def _drop_new_invalid(conn: psycopg.Connection, before: set[tuple[str, str]], events: EventSink) -> None:
    """A failed CONCURRENTLY build leaves an INVALID index behind: drop it, concurrently."""
    for schema, name in sorted(_invalid_indexes(conn) - before):
        conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}.{}").format(sql.Identifier(schema), sql.Identifier(name)))
        events("invalid_index_dropped", {"index": f"{schema}.{name}"})


@dataclass
class Applier:
    """Applies migrations to one database over one autocommit connection."""

    conn: psycopg.Connection
    env: str
    lock_timeout_s: float = 2.0
    lock_retries: int = 5
    statement_timeout_s: float = 0.0
    backoff_s: float = 0.5
    run_id: str | None = None
    applied_by: str | None = None
    hooks: StatementHooks | None = None
    on_event: EventSink = _ignore

    def apply(self, migration: Migration) -> MigrationOutcome:
        self.on_event("migration_started", {"migration": migration.label})
        started = time.perf_counter()
        if migration.own_transaction:
            outcome = self._with_retries(migration, self._run_own_transaction)
        elif migration.no_transaction:
            outcome = self._run_autocommit(migration)
        else:
            outcome = self._with_retries(migration, self._run_in_transaction)
        outcome.seconds = time.perf_counter() - started
        self.on_event("migration_finished", {"migration": migration.label, "ok": outcome.ok, "seconds": outcome.seconds})
        return outcome

    # -- settings -----------------------------------------------------------
    def _set_timeouts(self, local: bool) -> None:
        scope = "SET LOCAL" if local else "SET"
        self.conn.execute(f"{scope} lock_timeout = '{int(self.lock_timeout_s * 1000)}ms'")
        self.conn.execute(f"{scope} statement_timeout = '{int(self.statement_timeout_s * 1000)}ms'")

    def _reset_timeouts(self) -> None:
        self.conn.execute("RESET lock_timeout")
        self.conn.execute("RESET statement_timeout")

    def _record(self, migration: Migration, seconds: float) -> None:
        self.conn.execute(
            f"INSERT INTO {HISTORY} (version, name, checksum, duration_ms, run_id, applied_by, cleanup)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (migration.version, migration.name, migration.checksum, int(seconds * 1000), self.run_id,
             self.applied_by, migration.cleanup),
        )

    def _backoff(self, attempt: int) -> float:
        return min(self.backoff_s * (2 ** attempt), 10.0)

    # -- one statement ------------------------------------------------------
    def _execute(self, migration: Migration, stmt: Statement, outcome: MigrationOutcome) -> None:
        if self.hooks and not stmt.transaction_control:
            outcome.checks += self.hooks.before(self.conn, migration, stmt)
        started = time.perf_counter()
        self.conn.execute(stmt.sql)
        seconds = time.perf_counter() - started
        outcome.statements.append(StatementOutcome(stmt.line, stmt.sql, seconds, outcome.attempts))
        self.on_event("statement", {"migration": migration.label, "line": stmt.line, "seconds": seconds})
        if self.hooks and not stmt.transaction_control:
            outcome.checks += self.hooks.after(self.conn, migration, stmt, seconds)

    def _execute_alone(self, migration: Migration, stmt: Statement, outcome: MigrationOutcome) -> bool:
        """Traced (staging): run an autocommit statement in an explicit transaction of its own.

        Autocommit runs it in an implicit one-statement transaction anyway, so
        nothing changes for the database; but the hooks can now read the locks
        it took from their own backend before COMMIT releases them, instead of
        sampling them from outside while it runs (a fast statement slips
        between samples). A statement the server refuses in a block (25001)
        that the parser did not know about runs unwrapped; returns whether the
        wrapping should be kept for retries.
        """
        try:
            with self.conn.transaction():
                self._execute(migration, stmt, outcome)
            return True
        except pgerrors.ActiveSqlTransaction:
            self._execute(migration, stmt, outcome)
            return False

    def _finished_hooks(self, migration: Migration, outcome: MigrationOutcome) -> None:
        if self.hooks:
            outcome.checks += self.hooks.finished(self.conn, migration)

    # -- the three ways to run a file --------------------------------------
    def _with_retries(self, migration: Migration, attempt_once: Callable[[Migration, MigrationOutcome], None]) -> MigrationOutcome:
        for attempt in range(self.lock_retries + 1):
            outcome = MigrationOutcome(migration, ok=False, attempts=attempt + 1)
            try:
                attempt_once(migration, outcome)
                outcome.ok = True
                return outcome
            except pgerrors.LockNotAvailable as exc:
                self._rollback_if_open()
                outcome.failure = PgFailure.from_error(exc, self._current(migration, outcome))
                if attempt == self.lock_retries or outcome.applied_before_failure:
                    return outcome  # out of retries, or part of the file already committed: never run it twice
                wait = self._backoff(attempt)
                self.on_event("lock_retry", {"migration": migration.label, "attempt": attempt + 1, "wait_s": wait,
                                             "table": outcome.failure.table})
                time.sleep(wait)
            except psycopg.Error as exc:
                self._rollback_if_open()
                outcome.failure = PgFailure.from_error(exc, self._current(migration, outcome))
                return outcome
        raise AssertionError("unreachable")

    def _current(self, migration: Migration, outcome: MigrationOutcome) -> Statement | None:
        """The statement that was running when an error struck (the one after the last finished)."""
        runnable = list(migration.statements)
        done = len(outcome.statements)
        return runnable[done] if done < len(runnable) else None

    def _rollback_if_open(self) -> None:
        if self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            self.conn.execute("ROLLBACK")

    def _run_in_transaction(self, migration: Migration, outcome: MigrationOutcome) -> None:
        started = time.perf_counter()
        with self.conn.transaction():
            self._set_timeouts(local=True)
            for stmt in migration.statements:
                self._execute(migration, stmt, outcome)
            self._finished_hooks(migration, outcome)
            self._record(migration, time.perf_counter() - started)

    def _run_own_transaction(self, migration: Migration, outcome: MigrationOutcome) -> None:
        started = time.perf_counter()
        last_commit = max(i for i, s in enumerate(migration.statements) if s.transaction_control)
        self._set_timeouts(local=False)
        try:
            for i, stmt in enumerate(migration.statements):
                if i == last_commit and stmt.tx_kind == "commit":
                    self._finished_hooks(migration, outcome)
                    self._record(migration, time.perf_counter() - started)
                self._execute(migration, stmt, outcome)
                if self.conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                    outcome.applied_before_failure = len(outcome.statements)  # durable from here on
            if migration.statements[last_commit].tx_kind != "commit":
                self._record(migration, time.perf_counter() - started)
        finally:
            self._rollback_if_open()
            self._reset_timeouts()

    def _run_autocommit(self, migration: Migration) -> MigrationOutcome:
        outcome = MigrationOutcome(migration, ok=False)
        started = time.perf_counter()
        self._set_timeouts(local=False)
        try:
            for stmt in migration.statements:
                failure = self._autocommit_statement(migration, stmt, outcome)
                if failure:
                    outcome.failure = failure
                    outcome.applied_before_failure = len(outcome.statements)
                    return outcome
            self._finished_hooks(migration, outcome)
            self._record(migration, time.perf_counter() - started)
            outcome.ok = True
            return outcome
        finally:
            self._reset_timeouts()

    def _autocommit_statement(self, migration: Migration, stmt: Statement, outcome: MigrationOutcome) -> PgFailure | None:
        alone = (self.hooks is not None and not stmt.no_transaction and not stmt.transaction_control
                 and stmt.kind not in ONLY_IN_A_BLOCK)
        for attempt in range(self.lock_retries + 1):
            before = _invalid_indexes(self.conn) if stmt.no_transaction else set()
            try:
                if alone:
                    alone = self._execute_alone(migration, stmt, outcome)
                else:
                    self._execute(migration, stmt, outcome)
                return None
            except psycopg.Error as exc:
                failure = PgFailure.from_error(exc, stmt)
                self._rollback_if_open()
                if stmt.no_transaction:
                    _drop_new_invalid(self.conn, before, self.on_event)
                if not isinstance(exc, pgerrors.LockNotAvailable) or attempt == self.lock_retries:
                    return failure
                wait = self._backoff(attempt)
                outcome.attempts += 1
                self.on_event("lock_retry", {"migration": migration.label, "attempt": attempt + 1, "wait_s": wait,
                                             "table": failure.table})
                time.sleep(wait)
        return None
