"""Refresh staging from prod (runbook step 2) — without ever touching prod or losing staging.

The order is the safety argument:

1. **Refuse** when staging is prod: the same URL, or the same server reached
   another way (localhost vs 127.0.0.1, a Unix socket) — compared by what the
   servers say about themselves, not by how the URLs are spelled.
2. **Clean up** what an interrupted refresh left: half-built
   ``<staging>__refresh_*`` copies, a swap that stopped half-way.
3. **Build beside staging**: a new database on the staging server, filled by
   pg_dump | pg_restore (streamed, or parallel through a directory — see
   ``dumpplan``), while the current staging stays up and usable.
4. **Check before trusting it**: object counts match prod, the runbook's
   extensions are there, ``refresh.mask`` columns are masked, statistics fresh.
5. **Swap by rename** in one transaction, then drop the previous copy.

Any failure before step 5 drops the new database and leaves staging exactly as
it was. Progress goes out through ``on_event`` ("refresh_progress", {...});
everything said is redacted.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import psycopg.errors
from psycopg.conninfo import conninfo_to_dict

from bot.config import Settings
from bot.errors import ConfigError, CouldNotRun, EnvironmentBusy, MigrateBotError, ToolMissing
from bot.migrations.apply import LOCK_KEYS
from bot.pg import connect, connection, same_database, scalar, with_dbname
from bot.redact import redact
from bot.secrets import parse_ref
from bot.workflow import checks, masking
from bot.workflow import stagingaccess as access
from bot.workflow import dumprestore as tools
from bot.workflow import refreshdb as db
from bot.workflow.dumpplan import (DIRECTORY, MAX_JOBS, METHODS, PIPE, Progress, ToolResult, choose_method, human_bytes,
                                   plural)
from bot.workflow.report import Report, Status
from bot.workflow.targets import database_url

__all__ = ["RefreshOptions", "run", "choose_method"]

EventSink = Callable[[str, dict[str, Any]], None]
EVENT = "refresh_progress"
EVENT_EVERY_S = 0.5  # table-done events are throttled; phase changes always go out
RESTORE_OPTIONS = "-c synchronous_commit=off"  # the copy is worthless until swapped: no need to wait on fsync
DISK_HEADROOM = 1.2  # the directory format needs the data once, uncompressed, plus room to spare
UNCHANGED = "Staging was not changed."


def _ignore(kind: str, data: dict[str, Any]) -> None:
    return None


@dataclass
class RefreshOptions:
    """Per-run choices that are not settings."""

    on_event: EventSink = field(default=_ignore)
    jobs: int | None = None  # override settings.refresh.jobs; 1 = stream, >1 = parallel directory format
    method: str | None = None  # force "pipe" | "directory"; None = choose from prod's catalog


class _Stop(Exception):
    """The refresh said no; the reason is already a FAILED check in the report."""


@dataclass
class _Plan:
    """What prod looks like and how it will be copied, decided before anything is created."""

    catalog: db.Catalog
    method: str
    jobs: int
    masks: list[str]


@dataclass
class _Run:
    settings: Settings
    options: RefreshOptions
    report: Report
    prod_url: str
    staging_url: str
    staging_db: str
    started: float = field(default_factory=time.perf_counter)
    last_event: float = 0.0

    @property
    def staging_ref(self) -> str:
        return parse_ref(self.settings.databases.staging).describe()

    def elapsed(self) -> float:
        return round(time.perf_counter() - self.started, 2)

    def event(self, phase: str, **data: Any) -> None:
        payload = {"phase": phase, "elapsed_s": self.elapsed(), **data}
        self.last_event = time.perf_counter()
        self.options.on_event(EVENT, {k: redact(v) if isinstance(v, str) else v for k, v in payload.items()})

    def fail(self, name: str, message: str, **details: Any) -> _Stop:
        self.report.failed(name, redact(message), details=details)
        return _Stop(message)

    def url_for(self, dbname: str) -> str:
        """Another database on the staging server; URLs stay URLs so connection errors name host:port/db."""
        if "://" not in self.staging_url:
            return with_dbname(self.staging_url, dbname)
        parts = urlsplit(self.staging_url)
        return urlunsplit(parts._replace(path="/" + quote(dbname, safe="")))


def run(settings: Settings, options: RefreshOptions | None = None) -> Report:
    """Refresh; never raises for expected failures — the Report carries exit 1 (refused) or 2 (could not run)."""
    options = options or RefreshOptions()
    report = Report(step="refresh")
    began = time.perf_counter()
    try:
        _refresh(settings, options, report)
    except MigrateBotError as exc:
        report.error = str(exc)
    except _Stop:
        pass
    except psycopg.Error as exc:  # a server going away mid-refresh, say: still a sentence, never a traceback
        state = f" (SQLSTATE {exc.sqlstate})" if exc.sqlstate else ""
        report.error = redact(f"The refresh stopped on a database error{state}: {str(exc).strip()}. "
                              "Staging was only changed if a PASSED refresh-swap line says so; run the refresh again.")
    report.facts["total_seconds"] = round((time.perf_counter() - began), 2)
    return report.finish()


# --- the step ----------------------------------------------------------------------

def _refresh(settings: Settings, options: RefreshOptions, report: Report) -> None:
    prod_url = database_url(settings, "prod")
    staging_url = database_url(settings, "staging")
    r = _Run(settings, options, report, prod_url, staging_url, _staging_dbname(settings, prod_url, staging_url))
    pg_dump, pg_restore = tools.tool("pg_dump"), tools.tool("pg_restore")
    maintenance = settings.refresh.staging_maintenance_db
    with connection(r.url_for(maintenance), env="staging", app_suffix="-refresh") as maint:
        with connection(prod_url, env="prod", app_suffix="-refresh") as prod:
            # sizing a table takes ACCESS SHARE: never queue behind DDL on prod (and hold up everyone behind us)
            prod.execute(f"SET lock_timeout = '{tools.LOCK_WAIT_MS}ms'")
            _refuse_same_server(r, prod, maint)
            _check_tools(pg_dump, pg_restore, prod)
            plan = _plan(r, prod)
        if not db.try_refresh_lock(maint, r.staging_db):
            raise EnvironmentBusy(f"Another refresh of staging ({r.staging_db}) is running.",
                                  "Wait for it to finish; only one refresh per staging database runs at a time.")
        try:
            _check_privileges(r, maint)
            _recover(r, maint)
            _build_and_swap(r, maint, plan, pg_dump, pg_restore)
        finally:
            db.release_refresh_lock(maint, r.staging_db)


def _staging_dbname(settings: Settings, prod_url: str, staging_url: str) -> str:
    """The staging database's name, after the checks that need no connection."""
    ref = parse_ref(settings.databases.staging).describe()
    if same_database(prod_url, staging_url):
        raise CouldNotRun(
            f"Refusing to refresh: the staging URL names the prod database itself ({_where(prod_url)}).",
            f"Point {ref} at the staging server — a refresh replaces the staging database.",
        )
    params = conninfo_to_dict(staging_url)
    name = str(params.get("dbname") or params.get("user") or "")
    if name == settings.refresh.staging_maintenance_db:
        raise ConfigError(
            f"The staging URL names the maintenance database {name!r}, which a refresh connects to while it "
            "replaces staging.",
            f"Point {ref} at the staging database itself, or set refresh.staging_maintenance_db to another one.",
        )
    if not db.name_fits(name):
        raise ConfigError(
            f"The staging database name {name!r} is too long for the refresh's temporary names "
            f"(at most {db.MAX_DBNAME_BYTES - len(db.refresh_name('', db.stamp()))} bytes).",
            "Use a shorter staging database name.",
        )
    return name


def _where(url: str) -> str:
    """host:port/db for sentences — also for Unix sockets and key=value strings; never the user or password."""
    params = conninfo_to_dict(url)
    host = str(params.get("host") or "localhost")
    return f"{host}:{params.get('port') or 5432}/{params.get('dbname') or params.get('user') or ''}"


def _refuse_same_server(r: _Run, prod: psycopg.Connection, maint: psycopg.Connection) -> None:
    """Refuse when staging's server is prod's, however it was reached: the copy is created (and dropped) there."""
    r.event("safety")
    mine, theirs = db.server_identity(prod), db.server_identity(maint)
    prod_at, staging_at = _where(r.prod_url), _where(r.staging_url)
    if mine.same_server(theirs):
        raise CouldNotRun(
            f"Refusing to refresh: staging ({staging_at}) is on the same PostgreSQL server as prod ({prod_at}) — "
            f"{mine.describe()} — so the refresh would create, rename and drop databases on prod's server.",
            f"Point {r.staging_ref} at a separate staging server.",
        )
    r.report.passed("refresh-safety", f"staging ({staging_at}) and prod ({prod_at}) are different PostgreSQL servers "
                                      f"({mine.difference(theirs)}); prod is only read")


def _check_tools(pg_dump: str, pg_restore: str, prod: psycopg.Connection) -> None:
    server = prod.info.server_version // 10000
    dump_major, restore_major = tools.tool_major(pg_dump), tools.tool_major(pg_restore)
    if dump_major < server or restore_major < dump_major:
        raise ToolMissing(
            f"pg_dump {dump_major} / pg_restore {restore_major} cannot copy prod, which runs PostgreSQL {server}.",
            f"Install postgresql-client-{server} (or newer) where the bot runs.",
        )


def _plan(r: _Run, prod: psycopg.Connection) -> _Plan:
    """Read prod's catalog, check the mask columns exist there, choose how to copy."""
    try:
        catalog = db.read_catalog(prod)
    except psycopg.errors.LockNotAvailable:
        raise EnvironmentBusy(
            f"A table on prod is locked exclusively (DDL or a deploy in progress), so the refresh cannot read it "
            f"without queueing behind the lock for more than {tools.LOCK_WAIT_MS / 1000:g}s.",
            "Refresh again when that has finished.",
        ) from None
    masks = list(r.settings.refresh.mask)
    try:
        masking.resolve(prod, masks)
    except masking.MaskError as exc:
        raise r.fail("refresh-mask", f"{exc} Fix refresh.mask in the config. {UNCHANGED}")
    method, jobs = _method(r, catalog)
    return _Plan(catalog=catalog, method=method, jobs=jobs, masks=masks)


def _method(r: _Run, catalog: db.Catalog) -> tuple[str, int]:
    """options.method/jobs, then settings.refresh.jobs (1 = stream, N = N parallel jobs), then the catalog."""
    jobs = r.options.jobs if r.options.jobs is not None else (r.settings.refresh.jobs or None)
    if jobs is not None and jobs < 1:
        raise ConfigError(f"The refresh job count must be 1 or more, not {jobs}.",
                          "Use 0 in refresh.jobs to let the bot choose.")
    method = r.options.method
    if method is not None and method not in METHODS:
        raise ConfigError(f"Unknown refresh method {method!r}.", f"Use one of: {', '.join(METHODS)}.")
    cores = os.cpu_count() or 1
    if method is None and jobs is None:
        method, jobs = choose_method(catalog.tables, cores)
    elif method is None:
        method = PIPE if jobs == 1 else DIRECTORY
    elif method == DIRECTORY and jobs is None:
        jobs = max(2, min(cores, MAX_JOBS))
    if method == DIRECTORY and shutil.disk_usage(tempfile.gettempdir()).free < catalog.bytes * DISK_HEADROOM:
        r.report.warning("refresh-method", f"not enough free space in {tempfile.gettempdir()} for a "
                                           f"{human_bytes(catalog.bytes)} directory dump; streaming instead")
        method = PIPE
    return method, 1 if method == PIPE else int(jobs or 2)


def _check_privileges(r: _Run, maint: psycopg.Connection) -> None:
    """What the staging user must be allowed to do, checked before anything is built."""
    user = scalar(maint, "SELECT current_user")
    if scalar(maint, "SELECT pg_is_in_recovery()"):
        raise CouldNotRun(f"The staging server ({_where(r.staging_url)}) is a read-only standby; a refresh needs "
                          "a writable server.", f"Point {r.staging_ref} at the staging primary.")
    if not db.can_create_databases(maint):
        raise CouldNotRun(f"The staging user {user} cannot create databases, which a refresh needs to build the "
                          "copy beside staging.", f"Ask the DBA: ALTER ROLE {user} CREATEDB;")
    if db.database_exists(maint, r.staging_db) and not db.owns_database(maint, r.staging_db):
        raise CouldNotRun(f"The staging user {user} does not own the staging database {r.staging_db}, so it "
                          "cannot swap a fresh copy in.", f"Ask the DBA: ALTER DATABASE {r.staging_db} OWNER TO {user};")


def _recover(r: _Run, maint: psycopg.Connection) -> None:
    """Undo or finish what an interrupted refresh left; one PASSED line says what, if anything, was done."""
    notes = []
    olds = db.databases_named(maint, r.staging_db, db.OLD_INFIX)
    if olds and not db.database_exists(maint, r.staging_db):
        db.rename_database(maint, olds[-1], r.staging_db)
        notes.append(f"renamed {olds.pop()} back to {r.staging_db} (a swap was interrupted)")
    for old in olds:
        db.drop_database(maint, old)
        notes.append(f"dropped {old}, the previous staging left behind by a finished swap")
    for left in db.databases_named(maint, r.staging_db, db.REFRESH_INFIX):
        db.drop_database(maint, left)
        notes.append(f"removed leftover database {left} from an interrupted refresh")
    if notes:
        r.report.passed("refresh-cleanup", "; ".join(notes))


# --- build beside staging, then swap -----------------------------------------------

def _build_and_swap(r: _Run, maint: psycopg.Connection, plan: _Plan, pg_dump: str, pg_restore: str) -> None:
    ts = db.stamp()
    new = db.refresh_name(r.staging_db, ts)
    existed = db.database_exists(maint, r.staging_db)
    with _no_validation_meanwhile(r, existed) as old_staging:
        if not db.create_database(maint, new, plan.catalog):
            r.report.warning("refresh-locale", f"prod's locale ({plan.catalog.collate}) does not exist on the staging "
                                               "server; the copy uses the server's default locale")
        try:
            _copy(r, new, plan, pg_dump, pg_restore)
            _verify(r, new, plan)
            if old_staging is not None:
                _carry_access(r, maint, old_staging, new)
        except BaseException:
            _drop_quietly(r, maint, new)
            raise
        ours = frozenset({old_staging.info.backend_pid}) if old_staging is not None else frozenset()
    _swap(r, maint, new, db.old_name(r.staging_db, ts) if existed else None, ours)


@contextmanager
def _no_validation_meanwhile(r: _Run, existed: bool) -> Iterator[psycopg.Connection | None]:
    """Hold the environment lock on staging while building, so no validation starts on a database about to go.

    Yields that session (None when there is no staging yet): the copy reads
    staging's own grants through it, and the swap must not count it, still
    exiting after close, as a user it disconnected.
    """
    if not existed:
        yield None
        return
    conn = connect(r.url_for(r.staging_db), env="staging", app_suffix="-refresh")
    try:
        if not scalar(conn, "SELECT pg_try_advisory_lock(%s, %s)", LOCK_KEYS):
            raise EnvironmentBusy("A validation or deploy is running on staging; a refresh now would pull the "
                                  "database out from under it.", "Wait for it to finish, then refresh.")
        yield conn
    finally:
        conn.close()  # closing releases the session-level lock


def _drop_quietly(r: _Run, maint: psycopg.Connection, name: str) -> None:
    """Best effort: if this fails too, the next refresh removes the leftover."""
    try:
        if not maint.closed:
            db.drop_database(maint, name)
            return
        with connection(r.url_for(r.settings.refresh.staging_maintenance_db), env="staging") as fresh:
            db.drop_database(fresh, name)
    except (psycopg.Error, MigrateBotError):
        pass


def _copy(r: _Run, new: str, plan: _Plan, pg_dump: str, pg_restore: str) -> None:
    src = tools.Endpoint.from_url(r.prod_url, "prod")
    dst = tools.Endpoint.from_url(r.url_for(new), "staging")
    progress = Progress(sizes=dict(plan.catalog.tables), parallel=plan.jobs > 1)
    on_line = _progress_reporter(r, progress)
    r.event("copy", method=plan.method, jobs=plan.jobs, tables_total=progress.tables_total,
            bytes_total=progress.bytes_total)
    began = time.perf_counter()
    if plan.method == PIPE:
        dumped, restored = tools.stream(pg_dump, pg_restore, src, dst, on_line, RESTORE_OPTIONS)
    else:
        with tempfile.TemporaryDirectory(prefix="migrate-bot-refresh-") as workdir:
            progress.start_phase("dump")
            r.event("dump", **progress.snapshot())

            def restore_starts(line: str) -> None:
                if progress.phase == "dump":
                    progress.start_phase("schema")
                on_line(line)

            dumped, restored = tools.via_directory(pg_dump, pg_restore, src, dst, plan.jobs, Path(workdir),
                                                   on_line, restore_starts, RESTORE_OPTIONS)
    seconds = time.perf_counter() - began
    _judge_copy(r, dumped, restored)
    progress.complete()
    r.event("restored", **progress.snapshot())
    _restore_passed(r, plan, seconds, restored)


def _progress_reporter(r: _Run, progress: Progress) -> Callable[[str], None]:
    def on_line(line: str) -> None:
        phase = progress.phase
        if not progress.feed(line):
            return
        snap = progress.snapshot()
        last_table = snap["tables_done"] == snap["tables_total"]
        if progress.phase != phase or last_table or time.perf_counter() - r.last_event >= EVENT_EVERY_S:
            current = progress.running[-1] if progress.running else None
            r.event(progress.phase, **snap, **({"table": current} if current else {}))

    return on_line


def _judge_copy(r: _Run, dumped: ToolResult, restored: ToolResult | None) -> None:
    """Fail on anything that means the copy is not prod: a tool killed or failed, rows that did not load.

    When one end of the pipe dies the other fails too (a truncated archive, a
    broken pipe), so the report blames the tool whose error is not a symptom.
    """
    if dumped.returncode != 0 and not dumped.broken_pipe:
        how = f"was killed (signal {-dumped.returncode})" if dumped.killed else "failed"
        raise r.fail("refresh-restore", f"pg_dump {how} reading prod: {dumped.summary()}. {UNCHANGED}")
    if restored is not None and restored.killed:
        raise r.fail("refresh-restore", f"pg_restore was killed (signal {-restored.returncode}) while restoring "
                                        f"into the new database. {UNCHANGED}")
    if restored is None or dumped.returncode != 0 or restored.lost_data or (
            restored.returncode != 0 and not restored.ignored_errors):
        failed = restored if restored is not None and restored.returncode != 0 else dumped
        raise r.fail("refresh-restore", f"{failed.tool} failed: {failed.summary()}. {UNCHANGED}")


def _restore_passed(r: _Run, plan: _Plan, seconds: float, restored: ToolResult | None) -> None:
    tables, size = len(plan.catalog.tables), plan.catalog.bytes
    r.report.passed("refresh-restore", f"{plural(tables, 'tables')}, {human_bytes(size)} in {seconds:.1f}s "
                                       f"({plan.method}, {plural(plan.jobs, 'jobs')})",
                    details={"seconds": round(seconds, 2), "bytes": size})
    r.report.facts.update(method=plan.method, jobs=plan.jobs, seconds=round(seconds, 2), bytes=size, tables=tables)
    if restored is not None and restored.ignored_errors:
        r.report.warning("refresh-restore-errors", f"pg_restore skipped statements that failed: {restored.summary()}")


def _verify(r: _Run, new: str, plan: _Plan) -> None:
    """Sanity, extensions, masking and statistics — all in the new database, before anyone can see it."""
    masked: set[str] = set()
    with connection(r.url_for(new), env="staging", app_suffix="-refresh") as conn:
        r.event("sanity")
        _sanity(r, conn, plan)
        _extensions(r, conn, plan)
        if plan.masks:
            r.event("mask")
            masked = _mask(r, conn, plan)
    r.event("analyze")
    jobs = min(os.cpu_count() or 1, MAX_JOBS)
    db.analyze(r.url_for(new), jobs, skip=masked)  # masked tables were analyzed right after masking


def _carry_access(r: _Run, maint: psycopg.Connection, old_staging: psycopg.Connection, new: str) -> None:
    """Staging's own settings and grants onto the copy; what cannot be applied is a WARNING naming the statements."""
    r.event("access")
    with connection(r.url_for(new), env="staging", app_suffix="-refresh") as copy:
        planned = access.plan(access.snapshot(maint, old_staging, r.staging_db), access.snapshot(maint, copy, new), new,
                              r.staging_db)
        said = access.describe(planned, access.apply(planned.changes, maint, copy))
    if said is None:
        return
    complete, message = said
    (r.report.passed if complete else r.report.warning)("refresh-access", redact(message))


def _sanity(r: _Run, conn: psycopg.Connection, plan: _Plan) -> None:
    copy = db.object_counts(conn)
    differences = db.count_differences(plan.catalog.counts, copy)
    if differences:
        raise r.fail("refresh-sanity", f"the copy does not match prod — {'; '.join(differences)}. {UNCHANGED}")
    shown = ", ".join(plural(n, kind) for kind, n in copy.items() if n)
    r.report.passed("refresh-sanity", f"the copy matches prod: {shown or 'no objects'} in user schemas")


def _extensions(r: _Run, conn: psycopg.Connection, plan: _Plan) -> None:
    """The runbook's extensions are installed if missing; others prod has are reported if the restore lacked them."""
    required = list(r.settings.gate.required_extensions)
    missing = checks.missing_extensions(conn, required)
    if missing:
        try:
            checks.install_extensions(conn, missing)
        except psycopg.Error as exc:
            raise r.fail("extensions.staging", f"could not install {', '.join(missing)} on staging: "
                         f"{exc.diag.message_primary or exc} — ask the DBA to install them. {UNCHANGED}",
                         category="missing-extension", sqlstate=exc.sqlstate or "")
    check = checks.extensions(conn, "staging", required, missing_status=Status.FAILED)
    if missing and check.status is Status.PASSED:
        check = replace(check, message=f"installed on staging: {', '.join(missing)} ({check.message})")
    r.report.add(check)
    if check.status is Status.FAILED:
        raise _Stop(check.message)
    absent = sorted(set(plan.catalog.extensions) - set(db.extension_names(conn)))
    if absent:
        r.report.warning("extensions.staging-extra", f"prod has {', '.join(absent)}, which the restore could not "
                         "create on staging (the staging user may lack the privilege); the gate does not need them")


def _mask(r: _Run, conn: psycopg.Connection, plan: _Plan) -> set[str]:
    """Mask in place; returns the masked tables (regclass text), already rewritten and analyzed."""
    try:
        done = masking.apply(conn, plan.masks)
    except masking.MaskError as exc:
        raise r.fail("refresh-mask", f"{exc} Fix refresh.mask in the config. {UNCHANGED}")
    except psycopg.Error as exc:
        raise r.fail("refresh-mask", f"masking failed: {exc.diag.message_primary or exc} (SQLSTATE {exc.sqlstate}). "
                     f"{UNCHANGED}", sqlstate=exc.sqlstate or "", table=exc.diag.table_name or "")
    r.report.passed("refresh-mask", ", ".join(f"{c.entry} masked ({n} row{'s' if n != 1 else ''})" for c, n in done))
    return {c.regclass for c, _ in done}


def _swap(r: _Run, maint: psycopg.Connection, new: str, old: str | None,
          ours: frozenset[int] = frozenset()) -> None:
    """Rename the copy in; the previous staging is dropped only now that the copy is in place."""
    r.event("swap")
    try:
        ended = db.swap(maint, r.staging_db, new, old, ours)
    except psycopg.Error as exc:
        sessions = ", ".join(f"{s['pid']} ({s['application'] or s['user']})"
                             for s in db.other_sessions(maint, r.staging_db)[:5])
        _drop_quietly(r, maint, new)
        raise r.fail("refresh-swap", f"could not swap the copy in: {exc.diag.message_primary or exc}"
                     f"{'; still connected: ' + sessions if sessions else ''} — the staging user may need "
                     f"pg_signal_backend to disconnect other roles. {UNCHANGED}", category="lock",
                     sqlstate=exc.sqlstate or "")
    if old is None:
        r.report.passed("refresh-swap", f"created {r.staging_db} from prod (there was no staging database before)")
        r.event("done")
        return
    try:
        db.drop_database(maint, old)
        dropped = "the previous copy was dropped"
    except psycopg.Error:
        dropped = f"the previous copy is still there as {old} (the next refresh drops it)"
    ended_note = f"; {ended} session{'s' if ended != 1 else ''} disconnected" if ended else ""
    r.report.passed("refresh-swap", f"{r.staging_db} now holds the copy of prod; {dropped}{ended_note}")
    r.event("done")
