"""Adopting another tool's history: a prod migrated by Prisma, golang-migrate, Flyway or dbmate.

Such a prod has no ``migrate_bot.schema_migrations``, so without adoption its
whole history would count as pending. Each tool's own history table is read
with its real layout, its versions are mapped to the migrations here, and the
applied ones are recorded in our history (``record``), each with the checksum
of the file as it is now, ``applied_by`` "baseline from <tool>", no run id and
``applied_at`` from the tool's table where it keeps one:

=================  ======================================  =============================================
tool               table (any schema, search_path first)    what counts as applied
=================  ======================================  =============================================
prisma             ``_prisma_migrations`` (migration_name,  a row with ``finished_at`` and no
                   checksum = sha256, started/finished_at,  ``rolled_back_at``; a row neither finished nor
                   rolled_back_at, logs, …)                 rolled back is a failed migration
golang-migrate     ``schema_migrations`` (version bigint,   every version at or below the one row's
                   dirty boolean): one row                  ``version``; a dirty version failed partway
flyway             ``flyway_schema_history`` (installed_    ``success`` rows by ``installed_rank``: SQL
                   rank, version, type, script, checksum =  rows apply, UNDO and DELETE rows take back, a
                   CRC32, installed_on, success)            BASELINE row covers everything at or below it
dbmate             ``schema_migrations`` (version varchar)  every row
=================  ======================================  =============================================

A failed or dirty migration is never adopted: it is said, with the tool's own
way out. A file that changed since the tool applied it (Prisma's sha256,
Flyway's CRC32 differ) is adopted and said. Reading is pure SQL on the
catalog and those tables; ``match`` is pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import psycopg
from psycopg import sql

from bot.migrations import toolsums
from bot.migrations.apply import HISTORY, HistoryRow, ensure_history
from bot.migrations.source import Migration, version_key
from bot.pg import rows
from bot.workflow.report import Check, Status

TOOLS = ("prisma", "golang-migrate", "flyway", "dbmate")
TABLES = ("_prisma_migrations", "schema_migrations", "flyway_schema_history")
ADOPT_COMMAND = "migrate-bot baseline --yes"


@dataclass(frozen=True)
class Entry:
    """One migration a tool's history names."""

    key: str  # what the tool calls it: Prisma's migration_name, a version (golang-migrate, Flyway, dbmate)
    applied_at: datetime | None = None
    checksum: str | int | None = None  # Prisma: sha256 hex; Flyway: CRC32 (int)
    why: str = ""  # for a failed one: what the tool says about it and the way out


@dataclass(frozen=True)
class ToolHistory:
    """What one tool's history table says was applied to a database."""

    tool: str
    table: str  # schema-qualified
    applied: tuple[Entry, ...]
    failed: tuple[Entry, ...] = ()
    through: Entry | None = None  # everything at or below this version is applied (golang-migrate, Flyway baseline)
    inclusive: bool = True  # False: only what is below ``through`` (golang-migrate's dirty version)
    summary: str = ""  # one phrase: "version 20240103000000, clean", "12 applied, 1 failed"

    @property
    def empty(self) -> bool:
        return not (self.applied or self.failed or self.through)


@dataclass(frozen=True)
class Adopted:
    migration: Migration
    applied_at: datetime | None
    how: str  # "applied by prisma at 2024-01-02 10:00 UTC", "at or below golang-migrate's version 3"
    changed: str = ""  # a sentence when the file changed since the tool applied it


@dataclass(frozen=True)
class Adoption:
    """A tool's history mapped onto the migrations here (plain data)."""

    history: ToolHistory
    adopt: list[Adopted] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (label or the tool's key, sentence)
    already: list[Migration] = field(default_factory=list)  # in our history already: skipped
    unknown: list[str] = field(default_factory=list)  # the tool's keys with no file here
    pending: list[Migration] = field(default_factory=list)  # not applied by the tool: stay pending

    @property
    def applied_by(self) -> str:
        return f"baseline from {self.history.tool}"


def when(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return f"{moment.astimezone(timezone.utc) if moment.tzinfo else moment:%Y-%m-%d %H:%M} UTC"


# -- reading the tools' tables -------------------------------------------------------------------

_FIND = """
SELECT n.nspname AS schema, c.relname AS name,
       array_agg(a.attname::text ORDER BY a.attnum) AS columns,
       array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum) AS types
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'p') AND c.relname = ANY(%s)
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'migrate_bot')
  AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp%%'
GROUP BY n.nspname, c.relname
ORDER BY array_position(current_schemas(false), n.nspname::text) NULLS LAST, n.nspname
"""


def _tool_of(name: str, columns: dict[str, str]) -> str | None:
    """Which tool a table of that name and those columns (name -> type) belongs to; None: not one we know."""
    if name == "_prisma_migrations" and {"migration_name", "checksum", "finished_at", "rolled_back_at"} <= set(columns):
        return "prisma"
    if name == "flyway_schema_history" and {"installed_rank", "version", "type", "checksum", "success"} <= set(columns):
        return "flyway"
    if name == "schema_migrations" and "version" in columns:
        if "dirty" in columns and columns["version"] in ("bigint", "integer"):
            return "golang-migrate"
        if "dirty" not in columns and columns["version"].startswith(("character varying", "text", "character")):
            return "dbmate"
    return None


def find(conn: psycopg.Connection) -> list[ToolHistory]:
    """Every tool history on this database with something in it, first by search_path; one per tool."""
    found: dict[str, ToolHistory] = {}
    for t in rows(conn, _FIND, (list(TABLES),)):
        tool = _tool_of(t["name"], dict(zip(t["columns"], t["types"])))
        if tool is None or tool in found:
            continue
        history = READERS[tool](conn, sql.Identifier(t["schema"], t["name"]), f"{t['schema']}.{t['name']}")
        if not history.empty:
            found[tool] = history
    return [found[t] for t in TOOLS if t in found]


def _prisma(conn: psycopg.Connection, ident: sql.Composable, table: str) -> ToolHistory:
    return prisma_history(rows(conn, sql.SQL("SELECT migration_name, checksum, finished_at, rolled_back_at, "
                                             "started_at FROM {} ORDER BY started_at, migration_name").format(ident)),
                          table)


def prisma_history(found: list[dict[str, Any]], table: str) -> ToolHistory:
    """``_prisma_migrations`` rows (oldest first) -> what Prisma applied and what it failed (pure)."""
    applied: dict[str, Entry] = {}
    failed: dict[str, Entry] = {}
    for r in found:
        name = r["migration_name"]
        if r["rolled_back_at"] is not None:
            continue
        if r["finished_at"] is not None:
            applied[name] = Entry(name, r["finished_at"], r["checksum"])
            failed.pop(name, None)
        elif name not in applied:
            failed[name] = Entry(name, r["started_at"], why=(
                f"Prisma started {name} at {when(r['started_at'])} and it never finished: it failed, so what of it "
                f"is on prod is unknown. Not recorded (it stays pending). Finish or undo it by hand, then mark it "
                f"`npx prisma migrate resolve --applied {name}` (finished) or `--rolled-back {name}` (undone), "
                "and run migrate-bot baseline again"))
    summary = f"{len(applied)} applied" + (f", {len(failed)} failed" if failed else "")
    return ToolHistory("prisma", table, tuple(applied.values()), tuple(failed.values()), summary=summary)


def _golang(conn: psycopg.Connection, ident: sql.Composable, table: str) -> ToolHistory:
    found = rows(conn, sql.SQL("SELECT version, dirty FROM {} ORDER BY version DESC LIMIT 1").format(ident))
    if not found or found[0]["version"] is None or found[0]["version"] < 0:
        return ToolHistory("golang-migrate", table, ())
    version, dirty = int(found[0]["version"]), bool(found[0]["dirty"])
    if not dirty:
        return ToolHistory("golang-migrate", table, (), through=Entry(str(version)),
                           summary=f"version {version}, clean")
    why = (f"golang-migrate marks version {version} dirty: it failed partway, so what of it is on prod is unknown. "
           f"Not recorded (it stays pending). Check what it did on prod, finish or undo it by hand, then `migrate "
           f"-path <dir> -database <url> force {version}` (finished) or `force <the version before it>` (undone), "
           "and run migrate-bot baseline again")
    return ToolHistory("golang-migrate", table, (), failed=(Entry(str(version), why=why),),
                       through=Entry(str(version)), inclusive=False, summary=f"version {version}, dirty")


def _dbmate(conn: psycopg.Connection, ident: sql.Composable, table: str) -> ToolHistory:
    found = rows(conn, sql.SQL("SELECT version::text AS version FROM {} ORDER BY version").format(ident))
    applied = tuple(Entry(str(r["version"]).strip()) for r in found if r["version"])
    return ToolHistory("dbmate", table, applied, summary=f"{len(applied)} applied")


def _flyway(conn: psycopg.Connection, ident: sql.Composable, table: str) -> ToolHistory:
    return flyway_history(rows(conn, sql.SQL("SELECT installed_rank, version, type, script, checksum, "
                                             "installed_on::timestamptz AS installed_on, success FROM {} "
                                             "ORDER BY installed_rank").format(ident)), table)


def flyway_history(found: list[dict[str, Any]], table: str) -> ToolHistory:
    """``flyway_schema_history`` rows by installed_rank -> what Flyway applied, its baseline, what failed (pure)."""
    applied: dict[tuple[int, ...], Entry] = {}
    failed: dict[tuple[int, ...], Entry] = {}
    through: Entry | None = None
    for r in found:
        version, kind = r["version"], str(r["type"] or "").upper()
        if not version or kind == "SCHEMA":
            continue  # repeatable migrations and the schema-creation marker have no version
        key = flyway_key(version)
        if kind == "BASELINE":
            through = Entry(version, r["installed_on"])
        elif kind == "DELETE" or (kind.startswith("UNDO") and r["success"]):
            applied.pop(key, None)
            failed.pop(key, None)
        elif r["success"]:
            applied[key] = Entry(version, r["installed_on"], r["checksum"])
            failed.pop(key, None)
        else:
            failed[key] = Entry(version, r["installed_on"], why=(
                f"Flyway recorded version {version} ({r['script']}) as failed at {when(r['installed_on'])}: what of "
                "it is on prod is unknown. Not recorded (it stays pending). Finish or undo it by hand, run `flyway "
                "repair` (it removes the failed row), and run migrate-bot baseline again"))
    parts = [f"{len(applied)} applied"] + ([f"baseline at {through.key}"] if through else [])
    parts += [f"{len(failed)} failed"] if failed else []
    return ToolHistory("flyway", table, tuple(applied.values()), tuple(failed.values()), through,
                       summary=", ".join(parts))


READERS = {"prisma": _prisma, "golang-migrate": _golang, "flyway": _flyway, "dbmate": _dbmate}


def flyway_key(version: str) -> tuple[int, ...]:
    """Flyway compares versions numerically, trailing zeros aside: 1.0 is 1, 1.2.0 is 1.2."""
    key = list(version_key(version))
    while len(key) > 1 and key[-1] == 0:
        key.pop()
    return tuple(key)


# -- mapping a history onto the migrations here (pure) --------------------------------------------


def _key_of(tool: str, m: Migration) -> Any:
    """How ``tool`` names ``m``: Prisma by its folder name, the others by version."""
    if tool == "prisma":
        return m.label
    if tool == "flyway":
        return flyway_key(m.version)
    return int(m.version) if m.version.isdigit() else None


def _entry_key(tool: str, key: str) -> Any:
    if tool == "prisma":
        return key
    if tool == "flyway":
        return flyway_key(key)
    return int(key) if key.isdigit() else None


def match(history: ToolHistory, migrations: list[Migration], ours: dict[str, HistoryRow]) -> Adoption:
    """Which of ``migrations`` the tool applied (to adopt), failed, or did not apply; ``ours`` are skipped."""
    tool = history.tool
    adoption = Adoption(history)
    by_key = {_entry_key(tool, e.key): e for e in history.applied}
    failed = {_entry_key(tool, e.key): e for e in history.failed}
    limit = _entry_key(tool, history.through.key) if history.through else None
    seen: set[Any] = set()
    for m in migrations:
        key = _key_of(tool, m)
        if key is None:
            adoption.pending.append(m)
            continue
        seen.add(key)
        entry = by_key.get(key)
        if m.version in ours:
            adoption.already.append(m)
        elif key in failed:
            adoption.failed.append((m.label, failed[key].why))
        elif entry is not None:
            adoption.adopt.append(Adopted(m, entry.applied_at, _how(tool, entry), _changed(tool, m, entry)))
        elif limit is not None and (key < limit or (key == limit and history.inclusive)):
            base = history.through
            adoption.adopt.append(Adopted(m, base.applied_at if base else None, _below(tool, history)))
        else:
            adoption.pending.append(m)
    adoption.unknown.extend(e.key for k, e in by_key.items() if k not in seen)
    adoption.failed.extend((e.key, e.why) for k, e in failed.items() if k not in seen)
    if tool == "golang-migrate" and history.inclusive and history.through and limit not in seen:
        adoption.unknown.append(history.through.key)  # the version golang-migrate is at has no file here
    return adoption


def _how(tool: str, entry: Entry) -> str:
    at = f" at {when(entry.applied_at)}" if entry.applied_at else ""
    return f"applied by {tool}{at}"


def _below(tool: str, history: ToolHistory) -> str:
    assert history.through is not None
    if tool == "flyway":
        return f"at or below Flyway's baseline version {history.through.key}"
    if not history.inclusive:
        return f"below golang-migrate's dirty version {history.through.key}"
    return f"at or below golang-migrate's version {history.through.key}"


def _changed(tool: str, m: Migration, entry: Entry) -> str:
    """A sentence when the file is not what the tool applied (by the tool's own checksum); "" otherwise."""
    if entry.checksum is None:
        return ""
    try:
        if tool == "prisma":
            if toolsums.prisma_matches(m.path, str(entry.checksum)):
                return ""
            now: str | int = toolsums.prisma_checksum(m.path)[:12]
            was: str | int = str(entry.checksum)[:12]
        elif tool == "flyway":
            now, was = toolsums.flyway_checksum(m.path), int(entry.checksum)
            if now == was:
                return ""
        else:
            return ""
    except (OSError, ValueError):
        return ""
    return (f"{m.path} changed since {tool} applied it ({tool}'s checksum {was}, the file's now {now}): it is "
            "recorded with the file as it is now, but prod ran the earlier text — compare them (git log -p) and "
            "put any change prod still needs in a new migration")


# -- recording -----------------------------------------------------------------------------------


def record(conn: psycopg.Connection, adoption: Adoption) -> int:
    """Write the adopted migrations into our history in one transaction; returns how many rows were added.

    A version recorded meanwhile (a deploy, another baseline) is left as it is.
    """
    ensure_history(conn)
    added = 0
    with conn.transaction():
        for a in adoption.adopt:
            m = a.migration
            cur = conn.execute(
                f"INSERT INTO {HISTORY} (version, name, checksum, applied_at, duration_ms, run_id, applied_by, cleanup)"
                " VALUES (%s, %s, %s, coalesce(%s, now()), 0, NULL, %s, %s) ON CONFLICT (version) DO NOTHING",
                (m.version, m.name, m.checksum, a.applied_at, adoption.applied_by, m.cleanup))
            added += cur.rowcount
    return added


# -- the gate's and the deploy's question: is there a history to adopt first? ---------------------


def unadopted_check(conn: psycopg.Connection, migrations: list[Migration], ours: dict[str, HistoryRow],
                    env: str = "prod") -> Check | None:
    """A BLOCKER when ``env`` has no history of ours but another tool's history applied some of ``migrations``:
    without adopting it, the whole history would count as pending and run again. None otherwise."""
    if ours:
        return None
    try:
        found = [match(h, migrations, {}) for h in find(conn)]
    except psycopg.Error:
        return None  # a tool table we may not read: the gate goes on as before
    found = [a for a in found if a.adopt or a.failed]
    if not found:
        return None
    a = found[0]
    h = a.history
    others = f" (and {', '.join(x.history.tool + ' in ' + x.history.table for x in found[1:])})" if found[1:] else ""
    message = (f"{env} has no migrate_bot.schema_migrations, but {h.tool}'s own history ({h.table}: {h.summary})"
               f"{others} says {len(a.adopt)} of these {len(migrations)} migrations are applied there"
               + (f" and {len(a.failed)} failed" if a.failed else "")
               + f"; until it is adopted all {len(migrations)} count as pending on {env}, and those {len(a.adopt)} "
               f"would run again. Adopt it first: `migrate-bot baseline` shows what it records, `{ADOPT_COMMAND}` "
               "records it")
    return Check("history-adopt", Status.BLOCKER, message,
                 details={"category": "unadopted-history", "env": env, "tool": h.tool, "table": h.table,
                          "fix": f"migrate-bot baseline        # shows what it would record\n{ADOPT_COMMAND}"})
