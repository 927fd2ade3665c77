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
retried, starting at 100 ms with jittered pauses and growing towards
``gate.lock_timeout_s`` only after repeated timeouts (``lockwait``: GitLab's
``with_lock_retries`` idea), so a deploy queued behind a long transaction
stalls application queries by little at a time, and each retry names the
sessions in the way.

A statement-by-statement file records each committed statement on the target
(``partial``), so after any interruption the target says how far it got, and
``apply(migration, start=n)`` resumes it at statement ``n``.
"""

from __future__ import annotations

import random
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import timezone
from typing import Any, Callable, Iterator, Protocol

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql

from bot.errors import BOT_SCHEMA, EnvironmentBusy, session_gone
from bot.migrations import partial as partial_mod
from bot.migrations.lockwait import DEFAULT_WAIT_S, BlockerProbe, LockPolicy, LockWait
from bot.migrations.partial import Partial, PartialRow
from bot.migrations.source import Migration, Statement
from bot.pg import APP_NAME, application_name, database_error, rows, run_of, where_of
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
    connection_lost: bool = False  # the session went with the error (class 08, 57P01-57P03): nothing more ran

    @classmethod
    def from_error(cls, exc: psycopg.Error, stmt: Statement | None) -> "PgFailure":
        diag = exc.diag
        return cls(
            connection_lost=session_gone(exc),
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
    resumed_from: int = 0  # statements committed by an earlier, interrupted deploy (resume started here)
    blockers: list[dict[str, Any]] = field(default_factory=list)  # sessions last seen in its way (lock waits)


@dataclass(frozen=True)
class HistoryRow:
    version: str
    name: str
    checksum: str
    applied_at: Any
    cleanup: bool
    run_id: str | None = None  # the run that applied it (None before runs were recorded)


@dataclass(frozen=True)
class Plan:
    """Pending work relative to one database's history (pure data)."""

    pending: list[Migration]  # a partially applied file is pending: it has no history row
    drifted: list[tuple[Migration, HistoryRow]]  # applied, but the file changed since
    missing: list[HistoryRow]  # applied, but no file for it any more
    partial: list[Partial] = field(default_factory=list)  # interrupted part-way: how far each got

    def resume_at(self) -> dict[str, int]:
        """{version: the statement to resume at} for the partially applied files that can resume as recorded."""
        return {p.row.version: p.done for p in self.partial if p.resumable}


def plan(migrations: list[Migration], history: dict[str, HistoryRow],
         partial: dict[str, PartialRow] | None = None) -> Plan:
    by_version = {m.version: m for m in migrations}
    pending = [m for m in migrations if m.version not in history]
    drifted = [(m, history[m.version]) for m in migrations if m.version in history and history[m.version].checksum != m.checksum]
    missing = [row for v, row in sorted(history.items()) if v not in by_version]
    return Plan(pending=pending, drifted=drifted, missing=missing,
                partial=partial_mod.match(partial or {}, migrations, set(history)))


def read_history(conn: psycopg.Connection) -> dict[str, HistoryRow]:
    """The applied migrations (partial rows are not in it: see ``read_partial``)."""
    with _bot_schema(conn):
        exists = rows(conn, "SELECT to_regclass(%s) AS t", (HISTORY,))[0]["t"]
        if not exists:
            return {}
        found = rows(conn, f"SELECT version, name, checksum, applied_at, cleanup, run_id FROM {HISTORY} ORDER BY applied_at")
    return {r["version"]: HistoryRow(**r) for r in found}


def read_partial(conn: psycopg.Connection) -> dict[str, PartialRow]:
    """The partially applied migrations by version."""
    with _bot_schema(conn):
        return partial_mod.read_partial(conn)


def ensure_history(conn: psycopg.Connection) -> None:
    with _bot_schema(conn, creating=True), conn.transaction():
        for stmt in HISTORY_DDL.strip().split(";\n"):
            conn.execute(stmt)


@contextmanager
def _bot_schema(conn: psycopg.Connection, creating: bool = False) -> Iterator[None]:
    """The bot's own tables: a missing privilege on them becomes the sentence with the GRANT that fixes it.

    PostgreSQL leaves 42501's schema/table diag fields empty, so the object
    is named here, where it is known: the migrate_bot schema, or (when it
    must be created) the database.
    """
    try:
        yield
    except pgerrors.InsufficientPrivilege as exc:
        found = where_of(conn)
        hint = {"database": conn.info.dbname} if creating and not _schema_exists(conn) else {"schema": BOT_SCHEMA}
        raise database_error(exc, conn=conn, role=found.role if found else conn.info.user, **hint) from exc


def _schema_exists(conn: psycopg.Connection) -> bool:
    try:
        return bool(rows(conn, "SELECT to_regnamespace(%s) AS s", (BOT_SCHEMA,))[0]["s"])
    except psycopg.Error:
        return True  # cannot tell: name the schema, the likelier fix


LOCK_HOLDER_SQL = """
SELECT a.pid, coalesce(a.application_name, '') AS application_name, a.backend_start
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid = %s AND l.objid = %s AND l.objsubid = 2 AND l.granted
"""


@contextmanager
def environment_lock(conn: psycopg.Connection, env: str) -> Iterator[None]:
    """pg_try_advisory_lock on the target: two runs can never overlap there."""
    got = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", LOCK_KEYS).fetchone()[0]
    if not got:
        raise busy(env, rows(conn, LOCK_HOLDER_SQL, LOCK_KEYS))
    try:
        yield
    finally:
        if not conn.closed:
            try:
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", LOCK_KEYS)
            except psycopg.Error:
                pass  # the session is going anyway, and its end releases the lock; the first error is the news


def busy(env: str, holders: list[dict[str, Any]]) -> EnvironmentBusy:
    """The sentence naming who holds ``env``'s migration lock, from the holder's application_name (pure).

    Every bot connection is named ``migrate-bot/<run-id>``, so the run is
    known; whether it validates, refreshes or deploys is not, except on prod,
    which only deploys lock.
    """
    head = f"A deploy is already running on {env}: " if env == "prod" else f"{env} is busy: "
    if not holders:
        return EnvironmentBusy(f"{head}another session held the migration lock a moment ago and has just let go.",
                               "Run it again.")
    h = holders[0]
    since = h["backend_start"].astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    where = f"(backend pid {h['pid']}, since {since})"
    run = run_of(h["application_name"])
    if run:
        return EnvironmentBusy(f"{head}run {run} holds the migration lock {where}.",
                               f"`/migrate status {run}` shows it; if no bot is running, the lock goes when that "
                               "session ends.")
    app = h["application_name"]
    who = ("a migrate-bot session started outside the bot (the command line)" if app.startswith(APP_NAME) else
           f"a session named {app!r}" if app else "a session without an application_name")
    return EnvironmentBusy(f"{head}{who} holds the migration lock {where}.",
                           f"Wait for it to finish; if nothing should be running, the lock goes when that session "
                           f"ends (SELECT pg_terminate_backend({h['pid']}) ends it). Never run two at once.")


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
    lock_timeout_s: float = 2.0  # the longest one attempt waits for a lock; reached after repeated timeouts
    lock_retries: int = 0  # at most this many retries; 0 = as many as lock_wait_s allows
    statement_timeout_s: float = 0.0
    backoff_s: float = 0.5  # the longest pause between two attempts (jittered)
    run_id: str | None = None
    applied_by: str | None = None
    hooks: StatementHooks | None = None
    on_event: EventSink = _ignore
    lock_wait_s: float = DEFAULT_WAIT_S  # how long one statement (or transactional file) keeps trying for its locks
    name_blockers: bool = True  # read who blocks us from a side connection while a statement waits
    rng: random.Random = field(default_factory=random.Random)
    _probe: BlockerProbe | None = field(default=None, init=False, repr=False)

    @property
    def lock_policy(self) -> LockPolicy:
        return LockPolicy(max_timeout_s=self.lock_timeout_s, budget_s=self.lock_wait_s,
                          max_retries=self.lock_retries, max_pause_s=self.backoff_s)

    def apply(self, migration: Migration, start: int = 0) -> MigrationOutcome:
        """Apply ``migration``; ``start`` > 0 resumes a statement-by-statement file after its first ``start``
        statements, which an interrupted deploy committed (``Plan.resume_at``)."""
        if start and not migration.no_transaction:
            raise ValueError(f"{migration.label} runs in transactions: it can only run whole, never resume")
        self.on_event("migration_started", {"migration": migration.label, **({"resumed_at": start} if start else {})})
        started = time.perf_counter()
        self._probe = BlockerProbe(self.conn, application_name("-locks")) if self.name_blockers else None
        try:
            if migration.own_transaction:
                outcome = self._with_retries(migration, self._run_own_transaction)
            elif migration.no_transaction:
                outcome = self._run_autocommit(migration, start)
            else:
                outcome = self._with_retries(migration, self._run_in_transaction)
        finally:
            if self._probe is not None:
                self._probe.close()
        outcome.seconds = time.perf_counter() - started
        self.on_event("migration_finished", {"migration": migration.label, "ok": outcome.ok, "seconds": outcome.seconds})
        return outcome

    # -- settings -----------------------------------------------------------
    def _set_timeouts(self, local: bool, lock_timeout_s: float) -> None:
        scope = "SET LOCAL" if local else "SET"
        self.conn.execute(f"{scope} lock_timeout = '{max(int(lock_timeout_s * 1000), 1)}ms'")
        self.conn.execute(f"{scope} statement_timeout = '{int(self.statement_timeout_s * 1000)}ms'")

    def _reset_timeouts(self) -> None:
        if self.conn.broken:
            return
        self.conn.execute("RESET lock_timeout")
        self.conn.execute("RESET statement_timeout")

    def _record(self, migration: Migration, seconds: float) -> None:
        self.conn.execute(
            f"INSERT INTO {HISTORY} (version, name, checksum, duration_ms, run_id, applied_by, cleanup)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (migration.version, migration.name, migration.checksum, int(seconds * 1000), self.run_id,
             self.applied_by, migration.cleanup),
        )

    def _record_partial(self, migration: Migration, done: int) -> None:
        partial_mod.record(self.conn, migration, done, self.run_id, self.applied_by)

    # -- waiting for locks --------------------------------------------------
    def _lock_wait(self, escalate: bool) -> LockWait:
        if self._probe is not None:
            self._probe.reset()
        return LockWait(self.lock_policy, escalate=escalate, rng=self.rng)

    def _lock_retry(self, migration: Migration, outcome: MigrationOutcome, wait: LockWait, timeout_s: float,
                    pause_s: float) -> None:
        """Tell the runs layer we wait on someone's locks: who, how long so far, what the next attempt waits.

        ``lock_wait`` at every retry; ``lock_retry`` (what the thread shows) only when worth a message.
        """
        blockers = self._blockers()
        next_timeout = wait.timeout_s(ahead_s=pause_s)
        failure = outcome.failure
        data = {
            "migration": migration.label, "attempt": wait.retries, "wait_s": round(pause_s, 3),
            "table": failure.table if failure else "", "lock_timeout_s": timeout_s,
            "next_lock_timeout_s": next_timeout, "waited_s": round(wait.waited_s(), 1),
            "budget_s": wait.policy.budget_s, "blockers": blockers,
        }
        self.on_event("lock_wait", data)
        if wait.announce(next_timeout, blockers):
            self.on_event("lock_retry", data)

    def _blockers(self) -> list[dict[str, Any]]:
        """The sessions last seen in our way during this wait ([] when none was seen, or no probe)."""
        return list(self._probe.last) if self._probe is not None else []

    # -- one statement ------------------------------------------------------
    def _execute(self, migration: Migration, stmt: Statement, outcome: MigrationOutcome,
                 lock_timeout_s: float = 0.0) -> None:
        if self.hooks and not stmt.transaction_control:
            outcome.checks += self.hooks.before(self.conn, migration, stmt)
        started = time.perf_counter()
        watching = self._probe.watching(lock_timeout_s or self.lock_timeout_s) if self._probe else nullcontext()
        with watching:
            self.conn.execute(stmt.sql)
        seconds = time.perf_counter() - started
        outcome.statements.append(StatementOutcome(stmt.line, stmt.sql, seconds, outcome.attempts))
        self.on_event("statement", {"migration": migration.label, "line": stmt.line, "seconds": seconds})
        if self.hooks and not stmt.transaction_control:
            outcome.checks += self.hooks.after(self.conn, migration, stmt, seconds)

    def _execute_recorded(self, migration: Migration, position: int, stmt: Statement, outcome: MigrationOutcome,
                          lock_timeout_s: float) -> bool:
        """Run an autocommit statement in an explicit transaction of its own, together with its progress row.

        Autocommit runs it in an implicit one-statement transaction anyway, so
        nothing changes for the database, except that the statement and the
        record that it committed now commit together: whatever kills the bot,
        the partial row never says less or more than what is applied. On
        staging the hooks can also read the locks it took from its own backend
        before COMMIT releases them, instead of sampling them from outside
        while it runs (a fast statement slips between samples). A statement
        the server refuses in a block (25001) that the parser did not know
        about runs on its own and is recorded right after; returns whether the
        wrapping should be kept for retries.
        """
        ran = len(outcome.statements)
        try:
            with self.conn.transaction():
                self._execute(migration, stmt, outcome, lock_timeout_s)
                self._record_partial(migration, position + 1)
            return True
        except pgerrors.ActiveSqlTransaction:
            del outcome.statements[ran:]
            self._execute(migration, stmt, outcome, lock_timeout_s)
            self._record_partial(migration, position + 1)
            return False
        except BaseException:
            del outcome.statements[ran:]  # rolled back: it did not happen
            raise

    def _finished_hooks(self, migration: Migration, outcome: MigrationOutcome) -> None:
        if self.hooks:
            outcome.checks += self.hooks.finished(self.conn, migration)

    # -- the three ways to run a file --------------------------------------
    def _with_retries(self, migration: Migration,
                      attempt_once: Callable[[Migration, MigrationOutcome, float], None]) -> MigrationOutcome:
        wait = self._lock_wait(escalate=not any(s.no_transaction for s in migration.statements))
        attempt = 0
        while True:
            attempt += 1
            outcome = MigrationOutcome(migration, ok=False, attempts=attempt)
            timeout = wait.timeout_s()
            try:
                attempt_once(migration, outcome, timeout)
                outcome.ok = True
                return outcome
            except pgerrors.LockNotAvailable as exc:
                self._rollback_if_open()
                outcome.failure = PgFailure.from_error(exc, self._current(migration, outcome))
                if outcome.applied_before_failure:
                    return outcome  # part of the file already committed: never run it twice
                pause = wait.next_pause(timeout)
                if pause is None:
                    outcome.blockers = self._blockers()
                    return outcome
                self._lock_retry(migration, outcome, wait, timeout, pause)
                time.sleep(pause)
            except psycopg.Error as exc:
                self._rollback_if_open()
                outcome.failure = PgFailure.from_error(exc, self._current(migration, outcome))
                return outcome

    def _current(self, migration: Migration, outcome: MigrationOutcome) -> Statement | None:
        """The statement that was running when an error struck (the one after the last finished)."""
        runnable = list(migration.statements)
        done = outcome.resumed_from + len(outcome.statements)
        return runnable[done] if done < len(runnable) else None

    def _rollback_if_open(self) -> None:
        if self.conn.broken:
            return  # the server ended the session: whatever was open rolled back with it
        if self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            self.conn.execute("ROLLBACK")

    def _run_in_transaction(self, migration: Migration, outcome: MigrationOutcome, lock_timeout_s: float) -> None:
        started = time.perf_counter()
        with self.conn.transaction():
            self._set_timeouts(local=True, lock_timeout_s=lock_timeout_s)
            for stmt in migration.statements:
                self._execute(migration, stmt, outcome, lock_timeout_s)
            self._finished_hooks(migration, outcome)
            self._record(migration, time.perf_counter() - started)

    def _run_own_transaction(self, migration: Migration, outcome: MigrationOutcome, lock_timeout_s: float) -> None:
        started = time.perf_counter()
        last_commit = max(i for i, s in enumerate(migration.statements) if s.transaction_control)
        self._set_timeouts(local=False, lock_timeout_s=lock_timeout_s)
        try:
            for i, stmt in enumerate(migration.statements):
                if i == last_commit and stmt.tx_kind == "commit":
                    self._finished_hooks(migration, outcome)
                    self._record(migration, time.perf_counter() - started)
                self._execute(migration, stmt, outcome, lock_timeout_s)
                if self.conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                    outcome.applied_before_failure = len(outcome.statements)  # durable from here on
            if migration.statements[last_commit].tx_kind != "commit":
                self._record(migration, time.perf_counter() - started)
        finally:
            self._rollback_if_open()
            self._reset_timeouts()

    def _run_autocommit(self, migration: Migration, start: int = 0) -> MigrationOutcome:
        """Statement by statement, each recorded on the target as it commits; from ``start`` when resuming."""
        outcome = MigrationOutcome(migration, ok=False, resumed_from=start)
        started = time.perf_counter()
        with _bot_schema(self.conn, creating=True):
            partial_mod.ensure(self.conn)  # created on first need: databases that never ran such a file lack it
        try:
            for position in range(start, len(migration.statements)):
                failure = self._autocommit_statement(migration, position, migration.statements[position], outcome)
                if failure:
                    outcome.failure = failure
                    outcome.applied_before_failure = start + len(outcome.statements)
                    return outcome
            self._finished_hooks(migration, outcome)
            with self.conn.transaction():  # the history row replaces the partial row, both or neither
                self._record(migration, time.perf_counter() - started)
                partial_mod.clear(self.conn, migration.version)
            outcome.ok = True
            return outcome
        except psycopg.Error as exc:  # recording what committed failed (or the hooks' own queries)
            self._rollback_if_open()
            outcome.failure = PgFailure.from_error(exc, None)
            outcome.applied_before_failure = start + len(outcome.statements)
            return outcome
        finally:
            self._reset_timeouts()

    def _autocommit_statement(self, migration: Migration, position: int, stmt: Statement,
                              outcome: MigrationOutcome) -> PgFailure | None:
        wrap = not stmt.no_transaction and not stmt.transaction_control and stmt.kind not in ONLY_IN_A_BLOCK
        wait = self._lock_wait(escalate=not stmt.no_transaction)
        while True:
            timeout = wait.timeout_s()
            self._set_timeouts(local=False, lock_timeout_s=timeout)
            before = _invalid_indexes(self.conn) if stmt.no_transaction else set()
            ran = len(outcome.statements)
            try:
                if wrap:
                    wrap = self._execute_recorded(migration, position, stmt, outcome, timeout)
                    return None
                self._execute(migration, stmt, outcome, timeout)
            except psycopg.Error as exc:
                failure = PgFailure.from_error(exc, stmt)
                if self.conn.broken:
                    return failure  # the session is gone: nothing to clean up from here, nothing to retry
                self._rollback_if_open()
                if stmt.no_transaction:
                    _drop_new_invalid(self.conn, before, self.on_event)
                if not isinstance(exc, pgerrors.LockNotAvailable):
                    return failure
                pause = wait.next_pause(timeout)
                if pause is None:
                    outcome.blockers = self._blockers()
                    return failure
                outcome.attempts += 1
                outcome.failure = failure
                self._lock_retry(migration, outcome, wait, timeout, pause)
                outcome.failure = None
                time.sleep(pause)
                continue
            if len(outcome.statements) > ran:  # committed on its own (it cannot run in a block): record it now
                self._record_partial(migration, position + 1)
            return None
