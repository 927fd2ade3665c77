"""How the new database gets its copy of prod, per ``refresh.method``.

- ``dump``: ``CREATE DATABASE … TEMPLATE template0`` with prod's encoding and
  locale, then pg_dump | pg_restore (streamed, or parallel through a
  directory), with progress events and a verdict on what the tools said.
- ``template``: ``CREATE DATABASE … TEMPLATE`` of the prod copy on the staging server.
- ``command``: the team's clone script (``clone`` / ``clonecmd``).

Each builder fills the database ``refresh`` named, or raises ``Stop`` after a
FAILED line; ``refresh`` drops the database on any failure.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable

import psycopg

from bot.workflow import clone
from bot.workflow import dumprestore as tools
from bot.workflow import refreshdb as db
from bot.workflow.dumpplan import PIPE, Progress, ToolResult, human_bytes, plural
from bot.workflow.refreshstate import EVENT_EVERY_S, UNCHANGED, Build, Plan, Run

RESTORE_OPTIONS = "-c synchronous_commit=off"  # the copy is worthless until swapped: no need to wait on fsync


def builder(r: Run, plan: Plan, dump_tools: tuple[str, str] | None) -> Build:
    """How the new database gets its copy of prod: refresh.method."""
    if plan.kind == "template":
        return lambda maint, new: _from_template(r, maint, plan, new)
    if plan.kind == "command":
        return lambda maint, new: _from_command(r, maint, new)
    assert dump_tools is not None
    pg_dump, pg_restore = dump_tools

    def dump(maint: psycopg.Connection, new: str) -> None:
        if not db.create_database(maint, new, plan.catalog):
            r.report.warning("refresh-locale", f"prod's locale ({plan.catalog.collate}) does not exist on the staging "
                                               "server; the copy uses the server's default locale")
        _copy(r, new, plan, pg_dump, pg_restore)

    return dump


def _from_template(r: Run, maint: psycopg.Connection, plan: Plan, new: str) -> None:
    template = plan.template
    assert template is not None
    r.source = f"template {template.name}"
    r.event("clone", template=template.name)
    try:
        seconds, size = clone.copy_template(maint, template, new)
    except clone.CloneFailed as exc:
        raise r.fail("refresh-clone", f"{exc}. {UNCHANGED}")
    r.report.passed("refresh-clone", f"copied {template.shown} ({human_bytes(size)}) on the staging server with "
                                     f"CREATE DATABASE … TEMPLATE in {seconds:.1f}s",
                    details={"seconds": round(seconds, 2), "bytes": size})
    r.report.facts.update(method="template", seconds=round(seconds, 2), bytes=size)


def _from_command(r: Run, maint: psycopg.Connection, new: str) -> None:
    argv0 = clone.script_argv(r.settings.refresh.command)[0]
    r.source = f"command {argv0}"
    r.event("clone", command=argv0)

    def on_line(line: str) -> None:
        if time.perf_counter() - r.last_event >= EVENT_EVERY_S:
            r.event("clone", command=argv0, line=line[:200])

    try:
        made = clone.run_command(r.settings, maint, r.prod_url, r.server(), new, on_line)
    except clone.CloneFailed as exc:
        output = f"\n{exc.output}" if exc.output else ""
        raise r.fail("refresh-command", f"{exc}. {UNCHANGED}{output}")
    result = made.result
    renamed = f", renamed to {new} for the checks" if made.name != new else ""
    output = result.shown()
    r.report.passed("refresh-command", f"{argv0} {result.how()}; it made "
                                       f"{made.name} on the staging server{renamed}" + (f"\n{output}" if output else ""),
                    details={"seconds": round(result.seconds, 2), "output": output})
    for note in made.notes:
        r.report.warning("refresh-command-output", note)
    r.data_as_of = result.data_as_of
    r.report.facts.update(method="command", seconds=round(result.seconds, 2))


def _copy(r: Run, new: str, plan: Plan, pg_dump: str, pg_restore: str) -> None:
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


def _progress_reporter(r: Run, progress: Progress) -> Callable[[str], None]:
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


def _judge_copy(r: Run, dumped: ToolResult, restored: ToolResult | None) -> None:
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


def _restore_passed(r: Run, plan: Plan, seconds: float, restored: ToolResult | None) -> None:
    tables, size = len(plan.catalog.tables), plan.catalog.bytes
    r.report.passed("refresh-restore", f"{plural(tables, 'tables')}, {human_bytes(size)} in {seconds:.1f}s "
                                       f"({plan.method}, {plural(plan.jobs, 'jobs')})",
                    details={"seconds": round(seconds, 2), "bytes": size})
    r.report.facts.update(method=plan.method, jobs=plan.jobs, seconds=round(seconds, 2), bytes=size, tables=tables)
    if restored is not None and restored.ignored_errors:
        r.report.warning("refresh-restore-errors", f"pg_restore skipped statements that failed: {restored.summary()}")
