"""`migrate-bot baseline`: adopt prod's history from the tool that migrated it until now.

Read prod's Prisma, golang-migrate, Flyway or dbmate history (``bot.migrations.adopt``),
map it onto the migrations here and say, one line each, what would be recorded
in ``migrate_bot.schema_migrations`` — a dry run, the default. With ``yes`` the
rows are written, in one transaction, under the deploy's advisory lock (a
deploy and a baseline never interleave). With ``baseline`` (``--baseline
VERSION``) a history no tool recorded — a plain folder applied by hand or by
scripts — is adopted up to and including that version.

Lines: ``PASSED baseline.<migration>`` for each one recorded (or that would be),
``WARNING`` for a file changed since the tool applied it (adopted all the
same) and for the tool's entries with no file here, ``FAILED`` for a migration
the tool failed (dirty in golang-migrate, unfinished in Prisma, failed in
Flyway): it is not adopted, and the line says the tool's own way out.
"""

from __future__ import annotations

from dataclasses import dataclass
import psycopg

from bot.config import Settings
from bot.errors import ConfigError
from bot.migrations import adopt
from bot.migrations import apply as applier_mod
from bot.migrations.source import Migration, discover, version_key
from bot.pg import connection
from bot.workflow.report import Report, run_step
from bot.workflow.targets import database_url

SHOWN = 10  # names listed in one line before "and N more"


@dataclass
class BaselineOptions:
    yes: bool = False  # write; otherwise a dry run
    baseline: str | None = None  # --baseline VERSION: everything up to it, for a history no tool recorded
    tool: str | None = None  # --from TOOL: which tool's history, when prod has several
    migrations: list[Migration] | None = None  # None = discover settings.migrations.dir


def run(settings: Settings, options: BaselineOptions | None = None) -> Report:
    options = options or BaselineOptions()
    return run_step("baseline", lambda report: _baseline(settings, options, report))


def _baseline(settings: Settings, options: BaselineOptions, report: Report) -> None:
    migrations = options.migrations if options.migrations is not None else discover(
        settings.migrations.dir, settings.migrations.format)
    with connection(database_url(settings, "prod"), env="prod") as prod:
        adoption = _adoption(prod, migrations, applier_mod.read_history(prod), options)
        if adoption is None:
            report.failed("baseline", _nothing_to_read(), details={"category": "unadopted-history"})
            return
        _explain(adoption, report, options)
        if not options.yes or not adoption.adopt:
            _close(adoption, report, options, written=None)
            return
        with applier_mod.environment_lock(prod, "prod"):  # read again under the lock, then write
            adoption = _adoption(prod, migrations, applier_mod.read_history(prod), options)
            assert adoption is not None
            written = adopt.record(prod, adoption)
        _close(adoption, report, options, written=written)


def _adoption(prod: psycopg.Connection, migrations: list[Migration], ours: dict[str, applier_mod.HistoryRow],
              options: BaselineOptions) -> adopt.Adoption | None:
    """The adoption to show or record; None when prod has no tool history and no --baseline was given."""
    try:
        found = adopt.find(prod)
    except psycopg.errors.InsufficientPrivilege as exc:
        raise ConfigError(f"The prod user may not read another tool's history table ({exc.diag.message_primary}).",
                          "Grant it SELECT on that table, or run migrate-bot baseline as a user who may.") from None
    if options.tool:
        if options.tool not in adopt.TOOLS:
            raise ConfigError(f"--from {options.tool} is not a tool migrate-bot reads.",
                              f"Use one of: {', '.join(adopt.TOOLS)}.")
        found = [h for h in found if h.tool == options.tool]
        if not found:
            raise ConfigError(f"prod has no {options.tool} history with anything in it.",
                              "Leave --from out to see which history prod has.")
    if options.baseline is not None:
        if found:
            h = found[0]
            raise ConfigError(
                f"prod has {h.tool}'s own history ({h.table}: {h.summary}), so --baseline is not needed: "
                "`migrate-bot baseline` reads it.",
                "--baseline VERSION is for a history no tool recorded; leave it out.")
        return _up_to(migrations, ours, options.baseline)
    if len(found) > 1:
        names = "; ".join(f"{h.tool} ({h.table}: {h.summary})" for h in found)
        raise ConfigError(f"prod has the histories of several tools: {names}.",
                          f"Say which one to adopt: migrate-bot baseline --from {found[0].tool}")
    return adopt.match(found[0], migrations, ours) if found else None


def _up_to(migrations: list[Migration], ours: dict[str, applier_mod.HistoryRow], version: str) -> adopt.Adoption:
    """--baseline VERSION: every migration up to and including VERSION, which must be one of them."""
    key = version_key(version)
    if not key or not any(m.sort_key == key for m in migrations):
        span = f"from {migrations[0].version} to {migrations[-1].version}" if migrations else "none"
        raise ConfigError(f"--baseline {version}: no migration here has that version (the versions run {span}).",
                          "Pass the version of the last migration prod already has.")
    history = adopt.ToolHistory("--baseline", f"--baseline {version}", (), summary=f"up to {version}")
    adoption = adopt.Adoption(history)
    for m in migrations:
        if m.version in ours:
            adoption.already.append(m)
        elif m.sort_key <= key:
            adoption.adopt.append(adopt.Adopted(m, None, f"at or below --baseline {version}"))
        else:
            adoption.pending.append(m)
    return adoption


def _nothing_to_read() -> str:
    return ("prod has no history of Prisma (_prisma_migrations), golang-migrate or dbmate (schema_migrations) or "
            "Flyway (flyway_schema_history) to adopt. If prod already has some of these migrations applied another "
            "way, record them up to the last one it has: migrate-bot baseline --baseline VERSION --yes")


def _explain(a: adopt.Adoption, report: Report, options: BaselineOptions) -> None:
    h = a.history
    source = (f"recording every migration up to {options.baseline} (prod has no other tool's history)"
              if options.baseline is not None else f"prod's {h.tool} history ({h.table}): {h.summary}")
    report.passed("baseline.source", source)
    verb = "recorded" if options.yes else "would be recorded"
    for x in a.adopt:
        report.passed(f"baseline.{x.migration.label}", f"{x.how} — {verb}", migration=x.migration.label)
        if x.changed:
            report.warning(f"baseline-changed.{x.migration.label}", x.changed, migration=x.migration.label)
    for label, why in a.failed:
        report.failed(f"baseline.{label}", why, details={"category": "unadopted-history", "tool": h.tool})
    if a.unknown:
        report.warning("baseline.unknown", f"{h.tool}'s history names {len(a.unknown)} migration(s) with no file "
                       f"here, not recorded: {_listed(a.unknown)} — check --migrations (migrations.dir) is the "
                       "folder prod was migrated from")
    if a.already:
        report.passed("baseline.already", f"{len(a.already)} already in migrate_bot.schema_migrations, left as "
                      f"they are: {_listed([m.label for m in a.already])}")
    if a.pending:
        report.passed("baseline.pending", f"{len(a.pending)} not applied on prod, left pending for the gate and the "
                      f"deploy: {_listed([m.label for m in a.pending])}")


def _close(a: adopt.Adoption, report: Report, options: BaselineOptions, written: int | None) -> None:
    n = len(a.adopt)
    if written is not None:
        report.passed("baseline", f"recorded {written} migration(s) in migrate_bot.schema_migrations on prod "
                      f"(applied_by \"{a.applied_by}\", duration 0, no run id)")
    elif not n:
        report.passed("baseline", "nothing to record: " + ("every migration prod's history has applied is already in "
                      "migrate_bot.schema_migrations" if a.already else "none of the migrations here is applied in "
                      "prod's history"))
    else:
        again = _command(options)
        report.passed("baseline", f"dry run — {n} migration(s) would be recorded in migrate_bot.schema_migrations on "
                      f"prod; nothing was written. Record them: {again}")


def _command(options: BaselineOptions) -> str:
    parts = ["migrate-bot baseline"]
    if options.baseline is not None:
        parts.append(f"--baseline {options.baseline}")
    if options.tool:
        parts.append(f"--from {options.tool}")
    return " ".join(parts + ["--yes"])


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")
