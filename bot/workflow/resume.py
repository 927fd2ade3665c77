"""What an interrupted deploy left on prod, and the way on: resume, or clean up by hand.

A file that runs statement by statement (``-- migrate:no-transaction``)
records each committed statement on prod (``bot.migrations.partial``). From
those rows:

* ``progress(plan)`` / ``read(conn, migrations)`` / ``on_prod(settings, …)``:
  per partially applied migration, how many statements committed of how many,
  the last one committed and the next one to run (line and text start);
* ``checks(plan, env, resume)``: what a deploy says about them — a BLOCKER
  naming the committed statements and both ways out, unless it resumes the
  very file (same checksum) that was interrupted;
* ``interrupted(settings, migrations)``: the Report a run shows when its
  deploy was interrupted (the bot killed, its session ended): what of its set
  is applied, partly applied, or not on prod at all — a migration that runs in
  one transaction rolls back entirely, so it can be re-deployed as is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import psycopg

from bot.config import Settings
from bot.migrations import apply as applier_mod
from bot.migrations.partial import PARTIAL, Partial, shown
from bot.migrations.source import Migration, discover, set_fingerprint
from bot.pg import connection
from bot.workflow.report import Check, Report, Status, run_step
from bot.workflow.targets import database_url

CATEGORY = "partial-migration"
RESUME_HOW = "`/migrate deploy <run> resume`, or `migrate-bot deploy --resume`"


@dataclass(frozen=True)
class Progress:
    """How far one partially applied migration got (plain data; ``Report.facts["partial"]`` holds these as dicts)."""

    migration: str  # label
    version: str
    path: str
    done: int  # statements committed
    total: int  # statements in the file
    last_line: int | None  # the last committed statement
    last_text: str
    next_line: int | None  # the statement a resume runs first (None: all committed, only the history row is missing)
    next_text: str
    checksum_matches: bool  # the file is still exactly what ran
    has_file: bool
    resumable: bool
    run_id: str | None  # the run that committed the last statement
    updated_at: str  # when (ISO 8601)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def committed(self) -> str:
        """"2 of its 3 statements (the last: line 4, `ALTER TABLE t ADD COLUMN c3`)"."""
        last = f" (the last: line {self.last_line}, `{self.last_text}`)" if self.last_line else ""
        return f"{self.done} of its {self.total} statements{last}"

    def next(self) -> str:
        if self.next_line is None:
            return "every statement committed and only its history row is missing"
        return f"the next is line {self.next_line}: `{self.next_text}`"

    def delete_sql(self) -> str:
        return delete_sql(self.version)


def delete_sql(version: str) -> str:
    """The one statement that forgets a partial run, once its committed statements were undone by hand."""
    return f"DELETE FROM {PARTIAL} WHERE version = '{version}';"


def fix(details: dict[str, Any]) -> str:
    """The triage fix for a ``partial-migration`` check: resume, or undo and forget (pure)."""
    return ("-- Continue at its next statement (the file unchanged):\nmigrate-bot deploy --resume\n"
            "-- or undo its committed statements by hand, then:\n" + delete_sql(str(details.get("version") or "<version>")))


def _progress(p: Partial) -> Progress:
    committed = p.committed
    nxt = p.next_statement
    return Progress(
        migration=p.label, version=p.row.version, path=p.migration.path if p.migration else "",
        done=p.done, total=p.total, last_line=committed[-1].line if committed else None,
        last_text=shown(committed[-1]) if committed else "", next_line=nxt.line if nxt else None,
        next_text=shown(nxt) if nxt else "", checksum_matches=p.checksum_matches, has_file=p.migration is not None,
        resumable=p.resumable, run_id=p.row.run_id, updated_at=p.row.updated_at.isoformat())


def progress(plan: applier_mod.Plan) -> list[Progress]:
    """Per partially applied, still pending migration: how far it got (pure)."""
    return [_progress(p) for p in plan.partial if not p.applied]


def read(conn: psycopg.Connection, migrations: list[Migration]) -> list[Progress]:
    """The partially applied migrations on the database behind ``conn``."""
    history = applier_mod.read_history(conn)
    return progress(applier_mod.plan(migrations, history, applier_mod.read_partial(conn)))


def on_prod(settings: Settings, migrations: list[Migration] | None = None) -> list[Progress]:
    """The partially applied migrations on prod (raises ``MigrateBotError`` when prod cannot be read)."""
    if migrations is None:
        migrations = discover(settings.migrations.dir, settings.migrations.format)
    with connection(database_url(settings, "prod"), env="prod") as prod:
        return read(prod, migrations)


def checks(plan: applier_mod.Plan, env: str, resume: bool) -> list[Check]:
    """What a deploy says about partially applied migrations: resume them, or refuse with both ways out (pure)."""
    found: list[Check] = []
    for p in plan.partial:
        name = f"partial.{p.label}"
        details = {"category": CATEGORY, "env": env, "version": p.row.version, "statements_done": p.done,
                   "statements_total": p.total, "run_id": p.row.run_id or ""}
        if p.applied:
            found.append(Check(name, Status.WARNING, f"{p.label} is applied on {env}, but a partial row of it is "
                               f"left over; delete it: {delete_sql(p.row.version)}",
                               migration=p.label, details=details))
            continue
        progress_ = _progress(p)
        if resume and p.resumable:
            by = f"run {p.row.run_id}" if p.row.run_id else "an earlier deploy"
            where = (f"at statement {p.done + 1} of {p.total} ({progress_.next()})" if progress_.next_line
                     else "by writing its history row: every statement committed")
            found.append(Check(name, Status.PASSED, f"resuming {p.label} on {env} {where}; {p.done} statement(s) "
                               f"committed by {by} stay as they are", migration=p.label, details=details))
            continue
        found.append(Check(name, Status.BLOCKER, refusal(progress_, p, env), migration=p.label, details=details))
    return found


def refusal(progress_: Progress, p: Partial, env: str) -> str:
    """The BLOCKER sentence: what committed, and both ways out (pure)."""
    undo = (f"or undo what committed by hand and delete its partial row ({progress_.delete_sql()}) so that the next "
            "deploy runs the file whole")
    head = f"{p.label} was interrupted on {env} after {progress_.committed()} had committed"
    if not progress_.has_file:
        return (f"version {p.row.version} ({p.row.name}) was interrupted on {env} after {p.done} of its "
                f"{p.row.statements_total} statements had committed, and there is no file for it here: restore the "
                f"file and resume ({RESUME_HOW}), {undo}")
    if not progress_.checksum_matches:
        return (f"{p.label} was interrupted on {env} after {p.done} of its {p.row.statements_total} statements had "
                f"committed, and {progress_.path} has changed since (checksum then {p.row.checksum[:12]}, now "
                f"{p.migration.checksum[:12] if p.migration else '?'}), so it cannot resume: restore the file as it "
                f"was and resume ({RESUME_HOW}), {undo}")
    return f"{head}; {progress_.next()}. Resume it from there ({RESUME_HOW}), {undo}"


def remaining(migrations: list[Migration], history: dict[str, applier_mod.HistoryRow], run_id: str,
              approved: str) -> str | None:
    """The fingerprint a re-deploy of run ``run_id`` must find pending on prod; None when prod moved on (pure).

    The approval bound the set ``approved`` (its fingerprint). What is still
    pending plus what this very run applied must be exactly that set: then
    nobody else changed prod's history meanwhile, and the rest can go without
    a new validation or approval.
    """
    pending = [m for m in migrations if m.version not in history]
    ours = [m for m in migrations if m.version not in history or history[m.version].run_id == run_id]
    return set_fingerprint(pending) if set_fingerprint(ours) == approved else None


def interrupted(settings: Settings, migrations: list[Migration], run_id: str = "", approved: str = "") -> Report:
    """What an interrupted deploy of ``migrations`` left on prod, for the run's thread (step "deploy").

    With the run's id and approved fingerprint, ``facts["expect_pending"]`` is what a re-deploy must find
    pending ("" when prod no longer matches the approval; see ``remaining``).
    """
    return run_step("deploy", lambda report: _interrupted(settings, migrations, report, run_id, approved))


def _interrupted(settings: Settings, migrations: list[Migration], report: Report, run_id: str, approved: str) -> None:
    with connection(database_url(settings, "prod"), env="prod") as prod:
        history = applier_mod.read_history(prod)
        plan = applier_mod.plan(migrations, history, applier_mod.read_partial(prod))
    partial = {p.row.version: p for p in plan.partial if not p.applied}
    expect = remaining(migrations, history, run_id, approved) or ""
    if run_id:  # this run's set only: a long history's older migrations are not news
        migrations = [m for m in migrations if m.version not in history or history[m.version].run_id == run_id]
    report.facts.update(applied=[m.label for m in migrations if m.version in history],
                        partial=[_progress(p).to_dict() for p in partial.values()],
                        pending=[m.label for m in plan.pending if m.version not in partial],
                        expect_pending=expect)
    for m in migrations:
        name = f"interrupted.{m.label}"
        if m.version in history:
            report.passed(name, f"applied on prod at {history[m.version].applied_at:%Y-%m-%d %H:%M:%S %Z}",
                          migration=m.label)
        elif m.version in partial:
            p = partial[m.version]
            report.failed(name, refusal(_progress(p), p, "prod"), migration=m.label,
                          details={"category": CATEGORY, "statements_done": p.done, "statements_total": p.total})
        elif m.no_transaction:
            report.held(name, "not on prod: none of its statements committed (prod records each one that does), "
                        "so it can be re-deployed as is", migration=m.label)
        elif m.own_transaction:
            report.held(name, "no history row on prod; it carries its own BEGIN … COMMIT, so a block that was "
                        "running rolled back, but statements and blocks before it may have committed: check "
                        f"{m.path} against prod before deploying it again", migration=m.label)
        else:
            report.held(name, "not on prod: it runs in one transaction, which rolls back entirely when a deploy is "
                        "interrupted, so it can be re-deployed as is", migration=m.label)
