"""Refresh staging from prod (runbook step 2) — without ever touching prod or losing staging.

The order is the safety argument:

1. **Refuse** when staging is prod: the same URL, or the same server reached
   another way (localhost vs 127.0.0.1, a Unix socket) — compared by what the
   servers say about themselves, not by how the URLs are spelled.
2. **Clean up** what an interrupted refresh left: half-built
   ``<staging>__refresh_*`` copies, a swap that stopped half-way.
3. **Build beside staging**: a new database on the staging server, filled by
   ``refresh.method``: pg_dump | pg_restore (``dump``: streamed, or parallel
   through a directory — see ``dumpplan``), ``CREATE DATABASE … TEMPLATE`` of a
   prod copy on the staging server (``template``), or the team's own clone
   script (``command``) — see ``refreshcopy`` and ``clone`` — while the
   current staging stays up.
4. **Check before trusting it**: object counts (and, for a copy the bot did
   not dump itself, the migration history) match prod, the runbook's
   extensions are there, ``refresh.mask`` columns are masked, staging's own
   settings and grants are carried over, ANALYZE ran; when, how and whether
   ANALYZE ran is recorded on the copy (``freshness``) for every gate to say.
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
from dataclasses import replace
from datetime import datetime, timezone
from typing import Iterator

import psycopg
import psycopg.errors
from psycopg.conninfo import conninfo_to_dict

from bot.config import Settings
from bot.errors import ConfigError, CouldNotRun, DatabaseFailed, EnvironmentBusy, MigrateBotError, ToolMissing
from bot.migrations.apply import LOCK_KEYS, read_history
from bot.pg import application_name, connect, connection, database_error, run_of, same_database, scalar
from bot.redact import redact
from bot.secrets import parse_ref
from bot.workflow import checks, clone, freshness, masking, refreshcopy
from bot.workflow import stagingaccess as access
from bot.workflow import dumprestore as tools
from bot.workflow import refreshdb as db
from bot.workflow.dumpplan import DIRECTORY, MAX_JOBS, METHODS, PIPE, choose_method, human_bytes, plural
from bot.workflow.refreshstate import UNCHANGED, Build, Plan, RefreshOptions, Run, Stop
from bot.workflow.report import Report, Status
from bot.workflow.targets import database_url

__all__ = ["RefreshOptions", "run", "choose_method"]

DISK_HEADROOM = 1.2  # the directory format needs the data once, uncompressed, plus room to spare
UNCHANGED_UNLESS_SWAPPED = "Staging was only changed if a PASSED refresh-swap line says so."
OWNERS_ADVICE = ("have the prod copy's objects owned by the staging user (or a role it is a member of), or use "
                 "refresh.method = \"dump\", which restores everything as the staging user")


def run(settings: Settings, options: RefreshOptions | None = None) -> Report:
    """Refresh; never raises for expected failures — the Report carries exit 1 (refused) or 2 (could not run)."""
    options = options or RefreshOptions()
    report = Report(step="refresh")
    began = time.perf_counter()
    try:
        _refresh(settings, options, report)
    except DatabaseFailed as exc:
        report.error = redact(f"{exc.in_step('refresh')} {UNCHANGED_UNLESS_SWAPPED}")
    except MigrateBotError as exc:
        report.error = str(exc)
    except Stop:
        pass
    except psycopg.Error as exc:  # a server going away mid-refresh, say: the one mapping's sentence, never a traceback
        report.error = redact(f"{database_error(exc, step='refresh')} {UNCHANGED_UNLESS_SWAPPED}")
    report.facts["total_seconds"] = round((time.perf_counter() - began), 2)
    return report.finish()


# --- the step ----------------------------------------------------------------------

def _refresh(settings: Settings, options: RefreshOptions, report: Report) -> None:
    prod_url = database_url(settings, "prod")
    staging_url = database_url(settings, "staging")
    r = Run(settings, options, report, prod_url, staging_url, _staging_dbname(settings, prod_url, staging_url))
    kind = settings.refresh.method
    dump_tools = (tools.tool("pg_dump"), tools.tool("pg_restore")) if kind == "dump" else None
    maintenance = settings.refresh.staging_maintenance_db
    with connection(r.url_for(maintenance), env="staging", app_suffix="-refresh") as maint:
        with connection(prod_url, env="prod", app_suffix="-refresh") as prod:
            # sizing a table takes ACCESS SHARE: never queue behind DDL on prod (and hold up everyone behind us)
            prod.execute(f"SET lock_timeout = '{tools.LOCK_WAIT_MS}ms'")
            _refuse_same_server(r, prod, maint)
            if dump_tools is not None:
                _check_tools(*dump_tools, prod)
            plan = _plan(r, prod)
        if kind == "template":
            plan.template = clone.template_source(settings, maint, prod_url, r.server())
        if not db.try_refresh_lock(maint, r.staging_db):
            raise EnvironmentBusy(f"Another refresh of staging ({r.staging_db}) is running.",
                                  "Wait for it to finish; only one refresh per staging database runs at a time.")
        try:
            _check_privileges(r, maint)
            _recover(r, maint)
            _build_and_swap(r, maint, plan, refreshcopy.builder(r, plan, dump_tools))
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


def _refuse_same_server(r: Run, prod: psycopg.Connection, maint: psycopg.Connection) -> None:
    """Refuse when staging's server is prod's, however it was reached: the copy is created (and dropped) there."""
    r.event("safety")
    mine, theirs = db.server_identity(prod), db.server_identity(maint)
    r.prod_identity, r.identity = mine, theirs
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


def _plan(r: Run, prod: psycopg.Connection) -> Plan:
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
    kind = r.settings.refresh.method
    if kind != "dump":  # a copy made elsewhere must also be as far along prod's migrations as prod is
        history = {v: f"{v}_{h.name}" if h.name else v for v, h in read_history(prod).items()}
        return Plan(catalog=catalog, method=kind, jobs=0, masks=masks, kind=kind, history=history)
    method, jobs = _method(r, catalog)
    return Plan(catalog=catalog, method=method, jobs=jobs, masks=masks)


def _method(r: Run, catalog: db.Catalog) -> tuple[str, int]:
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


def _check_privileges(r: Run, maint: psycopg.Connection) -> None:
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


def _recover(r: Run, maint: psycopg.Connection) -> None:
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

def _build_and_swap(r: Run, maint: psycopg.Connection, plan: Plan, build: Build) -> None:
    ts = db.stamp()
    new = db.refresh_name(r.staging_db, ts)
    existed = db.database_exists(maint, r.staging_db)
    with _no_validation_meanwhile(r, existed) as old_staging:
        try:
            r.copy_began = datetime.now(timezone.utc)
            build(maint, new)
            analyzed = _verify(r, new, plan)
            if old_staging is not None:
                _carry_access(r, maint, old_staging, new)
            _record_freshness(r, maint, new, plan, analyzed)
        except BaseException:
            _drop_quietly(r, maint, new)
            raise
        ours = frozenset({old_staging.info.backend_pid}) if old_staging is not None else frozenset()
    _swap(r, maint, new, db.old_name(r.staging_db, ts) if existed else None, ours)


def _record_freshness(r: Run, maint: psycopg.Connection, new: str, plan: Plan, analyzed: bool) -> None:
    """When, how, from what and whether ANALYZE ran — on the copy, so it arrives with the swap."""
    fresh = freshness.Freshness(at=r.copy_began or datetime.now(timezone.utc), method=plan.kind, analyzed=analyzed,
                                source=r.source, run_id=run_of(application_name()), data_as_of=r.data_as_of)
    try:
        freshness.record(maint, new, fresh)
    except psycopg.Error as exc:
        r.report.warning("refresh-freshness", f"could not record when staging was refreshed "
                                              f"({exc.diag.message_primary or exc}); the gate will call its age unknown")
    r.report.facts.update(refresh_method=plan.kind, refreshed_at=fresh.to_comment()[len(freshness.MARK):])


@contextmanager
def _no_validation_meanwhile(r: Run, existed: bool) -> Iterator[psycopg.Connection | None]:
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


def _drop_quietly(r: Run, maint: psycopg.Connection, name: str) -> None:
    """Best effort: if this fails too, the next refresh removes the leftover."""
    try:
        if not maint.closed:
            db.drop_database(maint, name)
            return
        with connection(r.url_for(r.settings.refresh.staging_maintenance_db), env="staging") as fresh:
            db.drop_database(fresh, name)
    except (psycopg.Error, MigrateBotError):
        pass


def _verify(r: Run, new: str, plan: Plan) -> bool:
    """Sanity, extensions, masking and statistics — all in the new database, before anyone can see it.

    Returns whether ANALYZE covered every table.
    """
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
    missed = db.analyze(r.url_for(new), jobs, skip=masked)  # masked tables were analyzed right after masking
    if missed:
        r.report.warning("refresh-analyze", f"ANALYZE could not analyze {plural(len(missed), 'tables')} of the copy "
                                            f"({', '.join(missed[:5])}{' …' if len(missed) > 5 else ''}); the gate's "
                                            "plans on those tables may mislead until autovacuum analyzes them")
    return not missed


def _carry_access(r: Run, maint: psycopg.Connection, old_staging: psycopg.Connection, new: str) -> None:
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


def _sanity(r: Run, conn: psycopg.Connection, plan: Plan) -> None:
    copy = db.object_counts(conn)
    differences = db.count_differences(plan.catalog.counts, copy)
    history = ""
    if plan.history is not None:
        try:
            theirs = {v: f"{v}_{h.name}" if h.name else v for v, h in read_history(conn).items()}
        except DatabaseFailed as exc:  # read_history names the GRANT; a copy's history is the owners' question
            if exc.sqlstate != "42501" or not isinstance(exc.source, psycopg.Error):
                raise
            raise r.fail("refresh-sanity", f"the staging user may not read the copy's migration history "
                         f"({exc.source.diag.message_primary}), which every gate reads first: {OWNERS_ADVICE}. "
                         f"{UNCHANGED}")
        differences += db.history_differences(plan.history, theirs)
        history = f"; the same {plural(len(theirs), 'migrations')} applied as on prod"
    if differences:
        raise r.fail("refresh-sanity", f"the copy does not match prod — {'; '.join(differences)}. {UNCHANGED}")
    shown = ", ".join(plural(n, kind) for kind, n in copy.items() if n)
    r.report.passed("refresh-sanity", f"the copy matches prod: {shown or 'no objects'} in user schemas{history}")
    if plan.history is not None:
        _owners(r, conn)


def _owners(r: Run, conn: psycopg.Connection) -> None:
    """A copy the bot did not restore itself keeps its source's owners; the gate's ALTERs need the staging user's."""
    others = db.foreign_owners(conn)
    if others:
        user = scalar(conn, "SELECT current_user")
        owned = ", ".join(f"{owner} ({n})" for owner, n in others.items())
        r.report.warning("refresh-owners", f"the copy keeps its source's owners: {plural(sum(others.values()), 'relations')} "
                                           f"belong to {owned}, and the staging user {user} is not a member — the "
                                           f"gate's migrations cannot ALTER them. {OWNERS_ADVICE[0].upper()}"
                                           f"{OWNERS_ADVICE[1:]}")


def _extensions(r: Run, conn: psycopg.Connection, plan: Plan) -> None:
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
        raise Stop(check.message)
    absent = sorted(set(plan.catalog.extensions) - set(db.extension_names(conn)))
    if absent:
        r.report.warning("extensions.staging-extra", f"prod has {', '.join(absent)}, which the restore could not "
                         "create on staging (the staging user may lack the privilege); the gate does not need them")


def _mask(r: Run, conn: psycopg.Connection, plan: Plan) -> set[str]:
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


def _swap(r: Run, maint: psycopg.Connection, new: str, old: str | None,
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
