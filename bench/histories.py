"""Synthetic migration histories shaped like real projects' — our own statements, never copied from one.

Two layouts, each the shape of a kind of project issue 10 was tried on:

* ``prisma``: an application's history, ``<timestamp>_<name>/migration.sql``,
  written the way Prisma writes it — quoted PascalCase tables, ``-- CreateTable``
  headers, enums, ``ADD COLUMN`` then a separate ``ADD CONSTRAINT … FOREIGN
  KEY`` for a relation, non-concurrent indexes on the tables a file creates,
  ``DROP VIEW`` + ``CREATE VIEW`` when a view changes, and some files that end
  without a ``;``;
* ``golang-migrate``: a platform's history, ``NNNNNN_name.up.sql`` +
  ``.down.sql`` pairs, snake_case, ``CREATE TABLE IF NOT EXISTS`` with inline
  ``REFERENCES`` and ``CHECK``, functions and triggers, ``CREATE INDEX
  CONCURRENTLY`` alone in its file, files with their own ``BEGIN``/``COMMIT``
  (``NOT VALID`` in one block, ``VALIDATE`` in the next).

``dangerous`` plants a few genuinely dangerous statements on old tables (a
non-concurrent index, ``SET NOT NULL``, a type change, a backfill under the
``ADD COLUMN``'s lock, a rename, a drop); each is listed in ``History.planted``
with its file so a bench can tell signal from noise. Every statement runs on
PostgreSQL 15 against an empty database and against one filled by a generic
filler (all columns filled, ids 1..N, foreign keys valid), so a history can be
applied in full. Deterministic for a seed; the first N files of a longer
history are the history of N files.

Run: .venv/bin/python bench/histories.py prisma 160 /tmp/h   (writes the files, prints the planted list)
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

NOUNS = ("account", "member", "workspace", "folder", "document", "page", "field", "signer", "template", "envelope",
         "webhook", "delivery", "token", "invite", "plan", "invoice", "payment", "coupon", "note", "tag", "label",
         "comment", "attachment", "reminder", "branding", "domain", "audit_event", "export", "import_job", "quota",
         "meter", "reading", "rate", "tariff", "site", "device", "channel", "alert", "report", "schedule")
START = datetime(2022, 3, 1, 9, 0, 0)
QUALIFIERS = ("", "archive", "setting", "version", "link", "snapshot", "share", "draft", "log", "rule")


@dataclass
class Column:
    name: str
    type: str  # SQL type as written
    nullable: bool = True
    default: str = ""
    references: str = ""  # table name of an FK (to its "id")


@dataclass
class Table:
    name: str
    created: int  # file index
    columns: list[Column] = field(default_factory=list)

    def col(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


@dataclass
class History:
    """Files (relative path -> text), in order, and the dangerous statements planted in them."""

    layout: str
    files: dict[str, str] = field(default_factory=dict)
    planted: list[tuple[str, str]] = field(default_factory=list)  # (file, what)
    forward: list[str] = field(default_factory=list)  # forward migration files, in order
    kinds: dict[str, str] = field(default_factory=dict)  # file -> what kind of change it makes (for a bench)

    def write(self, root: Path, count: int | None = None) -> Path:
        """The first ``count`` migrations (all by default) under ``root``."""
        keep = set(self.forward[:count] if count is not None else self.forward)
        for rel, text in self.files.items():
            if rel in keep or _up_of(rel) in keep:
                path = root / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
        return root


def _up_of(rel: str) -> str:
    return rel.replace(".down.sql", ".up.sql")


class _Generator:
    """The schema as it evolves, and a random source that spends the same draws per file whatever the length."""

    def __init__(self, seed: int, dangerous: bool, quote: bool) -> None:
        self.seed, self.dangerous, self.quote = seed, dangerous, quote
        self.tables: list[Table] = []
        self.enums: dict[str, list[str]] = {}
        self.views: dict[str, str] = {}  # view -> table
        self.used: set[str] = set()

    def q(self, name: str) -> str:
        return f'"{name}"' if self.quote else name

    def table_name(self, rng: random.Random) -> str:
        for _ in range(100):
            noun, qual = rng.choice(NOUNS), rng.choice(QUALIFIERS)
            name = f"{noun}_{qual}" if qual else noun
            if self.quote:
                name = "".join(p.capitalize() for p in name.split("_"))
            if name not in self.used:
                self.used.add(name)
                return name
        name = f"t{len(self.used)}"
        self.used.add(name)
        return name

    def old(self, i: int, rng: random.Random, age: int = 15) -> Table | None:
        """A table created at least ``age`` files ago: on prod, with rows, when file ``i`` deploys."""
        candidates = [t for t in self.tables if t.created <= i - age]
        return rng.choice(candidates) if candidates else None

    def recent(self, i: int, rng: random.Random) -> Table | None:
        candidates = [t for t in self.tables if i - 3 <= t.created < i]
        return rng.choice(candidates) if candidates else None


# -- Prisma ---------------------------------------------------------------------------------------------------


def prisma(files: int = 160, *, seed: int = 7, dangerous: bool = True) -> History:
    """``files`` Prisma migrations: ``<timestamp>_<name>/migration.sql``."""
    g = _Generator(seed, dangerous, quote=True)
    h = History("prisma")
    for i in range(files):
        rng = random.Random(seed * 100_003 + i)
        name, parts, planted = _prisma_file(g, i, rng)
        kind = "planted: " + planted[0] if planted else _KIND.get(name.split("_")[0], name.split("_")[0])
        text = "\n\n".join(f"{a}\n{b}" if a.startswith("-- ") else a for a, b in _pairs(parts))
        if rng.random() < 0.12:
            text = text.rstrip().rstrip(";")  # Prisma files edited by hand often lose the last `;`
        stamp = (START + timedelta(hours=7 * i, minutes=i % 53)).strftime("%Y%m%d%H%M%S")
        rel = f"{stamp}_{name}/migration.sql"
        h.files[rel] = text + "\n"
        h.forward.append(rel)
        h.kinds[rel] = kind
        h.planted += [(rel, what) for what in planted]
    return h


def _pairs(parts: list[str]) -> list[tuple[str, str]]:
    """Prisma's `-- Header` comment lines, each with the statement it heads (one block per statement)."""
    out, i = [], 0
    while i < len(parts):
        if parts[i].startswith("-- ") and i + 1 < len(parts):
            out.append((parts[i], parts[i + 1]))
            i += 2
        else:
            out.append((parts[i], ""))
            i += 1
    return out


def _prisma_columns(g: _Generator, rng: random.Random) -> list[Column]:
    cols = [Column("id", "TEXT", nullable=False), Column("createdAt", "TIMESTAMP(3)", False, "CURRENT_TIMESTAMP"),
            Column("updatedAt", "TIMESTAMP(3)", nullable=False)]
    for k in range(rng.randint(1, 4)):
        kind = rng.choice(["TEXT", "INTEGER", "BOOLEAN", "JSONB", "TEXT", "DOUBLE PRECISION"])
        if kind == "BOOLEAN":
            cols.append(Column(f"is{rng.choice(['Public', 'Active', 'Pinned', 'Hidden'])}{k}", kind, False, "false"))
        else:
            cols.append(Column(f"{rng.choice(['title', 'label', 'count', 'meta', 'score', 'externalRef'])}{k}", kind,
                               rng.random() < 0.6))
    if g.enums and rng.random() < 0.4:
        enum = rng.choice(sorted(g.enums))
        cols.append(Column("status", f'"{enum}"', False, f"'{g.enums[enum][0]}'"))
    return cols


def _coldef(c: Column) -> str:
    return f'"{c.name}" {c.type}' + ("" if c.nullable else " NOT NULL") + (f" DEFAULT {c.default}" if c.default else "")


def _prisma_file(g: _Generator, i: int, rng: random.Random) -> tuple[str, list[str], list[str]]:
    roll = rng.random()
    old = g.old(i, rng)
    if g.dangerous and old is not None and rng.random() < 0.05:
        return _prisma_dangerous(g, i, rng, old)
    if len(g.tables) < 3 or 0.08 <= roll < 0.45:
        return _prisma_create(g, i, rng)
    if roll < 0.08:
        return _prisma_enum(g, rng)
    if roll < 0.60:
        t = rng.choice(g.tables)
        col = Column(f"{rng.choice(['note', 'color', 'locale', 'timezone', 'source'])}{i}", "TEXT")
        t.columns.append(col)
        return f"add_{col.name}", ["-- AlterTable", f'ALTER TABLE "{t.name}" ADD COLUMN {_coldef(col)};'], []
    if roll < 0.70:
        t = rng.choice(g.tables)
        col = Column(f"enabled{i}", "BOOLEAN", False, "true")
        t.columns.append(col)
        return f"add_{col.name}", ["-- AlterTable", f'ALTER TABLE "{t.name}" ADD COLUMN {_coldef(col)};'], []
    if roll < 0.82:
        return _prisma_relation(g, i, rng)
    if roll < 0.90:
        recent = g.recent(i, rng)
        if recent is not None:
            col = next((c for c in recent.columns if c.type == "TEXT" and c.name != "id" and not c.references),
                       recent.columns[1])
            idx = f"{recent.name}_{col.name}_idx"
            if idx not in g.used:
                g.used.add(idx)
                return f"index_{recent.name}", ["-- CreateIndex", f'CREATE INDEX "{idx}" ON "{recent.name}"("{col.name}");'], []
        return _prisma_create(g, i, rng)
    return _prisma_view(g, i, rng)


def _prisma_enum(g: _Generator, rng: random.Random) -> tuple[str, list[str], list[str]]:
    if g.enums and rng.random() < 0.5:
        enum = rng.choice(sorted(g.enums))
        value = f"STATE_{len(g.enums[enum])}"
        g.enums[enum].append(value)
        return f"enum_{enum.lower()}_value", ["-- AlterEnum", f"ALTER TYPE \"{enum}\" ADD VALUE '{value}';"], []
    enum = f"{rng.choice(['Role', 'Status', 'Kind', 'Visibility', 'Source'])}{len(g.enums)}"
    g.enums[enum] = ["DRAFT", "ACTIVE", "ARCHIVED"]
    return f"enum_{enum.lower()}", ["-- CreateEnum", f"CREATE TYPE \"{enum}\" AS ENUM ('DRAFT', 'ACTIVE', 'ARCHIVED');"], []


def _prisma_create(g: _Generator, i: int, rng: random.Random) -> tuple[str, list[str], list[str]]:
    t = Table(g.table_name(rng), i, _prisma_columns(g, rng))
    parents = rng.sample(g.tables, k=min(len(g.tables), rng.randint(0, 2)))
    for p in parents:
        t.columns.append(Column(f"{p.name[0].lower()}{p.name[1:]}Id", "TEXT", rng.random() < 0.5, references=p.name))
    body = ",\n".join(f"    {_coldef(c)}" for c in t.columns)
    parts = ["-- CreateTable", f'CREATE TABLE "{t.name}" (\n{body},\n\n    CONSTRAINT "{t.name}_pkey" PRIMARY KEY ("id")\n);']
    for c in t.columns:
        if c.references:
            g.used.add(f"{t.name}_{c.name}_idx")
            parts += ["-- CreateIndex", f'CREATE INDEX "{t.name}_{c.name}_idx" ON "{t.name}"("{c.name}");']
    text_col = next((c for c in t.columns if c.type == "TEXT" and c.name != "id" and not c.references), None)
    if text_col is not None and rng.random() < 0.4:
        g.used.add(f"{t.name}_{text_col.name}_idx")  # unique already: no plain index on it later
        parts += ["-- CreateIndex", f'CREATE UNIQUE INDEX "{t.name}_{text_col.name}_key" ON "{t.name}"("{text_col.name}");']
    for c in t.columns:
        if c.references:
            parts += ["-- AddForeignKey", f'ALTER TABLE "{t.name}" ADD CONSTRAINT "{t.name}_{c.name}_fkey" FOREIGN KEY '
                      f'("{c.name}") REFERENCES "{c.references}"("id") ON DELETE CASCADE ON UPDATE CASCADE;']
    g.tables.append(t)
    return f"create_{t.name.lower()}", parts, []


def _prisma_relation(g: _Generator, i: int, rng: random.Random) -> tuple[str, list[str], list[str]]:
    """A new optional relation on an existing table: Prisma's ADD COLUMN, index, then a separate FK."""
    t, p = rng.choice(g.tables), rng.choice(g.tables)
    col = Column(f"{p.name[0].lower()}{p.name[1:]}Ref{i}", "TEXT", references=p.name)
    t.columns.append(col)
    return f"relation_{t.name.lower()}_{p.name.lower()}", [
        "-- AlterTable", f'ALTER TABLE "{t.name}" ADD COLUMN {_coldef(col)};',
        "-- CreateIndex", f'CREATE INDEX "{t.name}_{col.name}_idx" ON "{t.name}"("{col.name}");',
        "-- AddForeignKey", f'ALTER TABLE "{t.name}" ADD CONSTRAINT "{t.name}_{col.name}_fkey" FOREIGN KEY ("{col.name}") '
        f'REFERENCES "{p.name}"("id") ON DELETE SET NULL ON UPDATE CASCADE;'], []


def _prisma_view(g: _Generator, i: int, rng: random.Random) -> tuple[str, list[str], list[str]]:
    if g.views and rng.random() < 0.7:
        view = rng.choice(sorted(g.views))
        t = next(x for x in g.tables if x.name == g.views[view])
    else:
        t = rng.choice(g.tables)
        view = f"{t.name}Summary"
        if view in g.views:
            return _prisma_create(g, i, rng)
        g.views[view] = t.name
    cols = ", ".join(f'"{c.name}"' for c in t.columns[: 2 + i % 3])
    return f"view_{view.lower()}", ["-- DropView", f'DROP VIEW IF EXISTS "{view}";', "-- CreateView",
                                    f'CREATE VIEW "{view}" AS SELECT {cols} FROM "{t.name}";'], []


def _prisma_dangerous(g: _Generator, i: int, rng: random.Random, t: Table) -> tuple[str, list[str], list[str]]:
    kind = rng.choice(["index", "set-not-null", "backfill", "rename", "drop"])
    text = next((c for c in t.columns if c.type == "TEXT" and c.name != "id" and not c.references), None)
    if kind == "index" and text is not None:
        return f"{t.name.lower()}_lookup", ["-- CreateIndex",
                                            f'CREATE INDEX "{t.name}_{text.name}_{i}_idx" ON "{t.name}"("{text.name}");'], [
            "non-concurrent index on an old table"]
    if kind == "set-not-null" and text is not None and text.nullable:
        text.nullable = False
        return f"{t.name.lower()}_required", ["-- AlterTable", f'ALTER TABLE "{t.name}" ALTER COLUMN "{text.name}" SET NOT NULL;'], [
            "SET NOT NULL on an old table"]
    if kind == "rename" and text is not None:
        new = f"{text.name}Renamed{i}"
        parts = ["-- AlterTable", f'ALTER TABLE "{t.name}" RENAME COLUMN "{text.name}" TO "{new}";']
        g.views = {v: x for v, x in g.views.items() if x != t.name}
        text.name = new
        return f"{t.name.lower()}_rename", parts, ["rename of a column of an old table"]
    if kind == "drop":
        extra = next((c for c in t.columns if c.name.startswith(("note", "color", "locale", "timezone", "source"))), None)
        if extra is not None:
            t.columns.remove(extra)
            g.views = {v: x for v, x in g.views.items() if x != t.name}
            return f"{t.name.lower()}_drop", ["/*\n  Warnings:\n\n  - You are about to drop the column. All the data in "
                                              "the column will be lost.\n\n*/", "-- AlterTable",
                                              f'ALTER TABLE "{t.name}" DROP COLUMN "{extra.name}";'], [
                "drop of a column of an old table"]
    col = Column(f"rank{i}", "INTEGER", nullable=False)
    t.columns.append(col)
    return f"{t.name.lower()}_rank", ["-- AlterTable", f'ALTER TABLE "{t.name}" ADD COLUMN "{col.name}" INTEGER;',
                                      f'UPDATE "{t.name}" SET "{col.name}" = 0 WHERE "{col.name}" IS NULL;',
                                      f'ALTER TABLE "{t.name}" ALTER COLUMN "{col.name}" SET NOT NULL;'], [
        "backfill and SET NOT NULL under the ADD COLUMN's lock on an old table"]


# -- golang-migrate -------------------------------------------------------------------------------------------


def golang_migrate(pairs: int = 260, *, seed: int = 11, dangerous: bool = True) -> History:
    """``pairs`` golang-migrate migrations: ``NNNNNN_name.up.sql`` + ``NNNNNN_name.down.sql``."""
    g = _Generator(seed, dangerous, quote=False)
    h = History("golang-migrate")
    for i in range(pairs):
        rng = random.Random(seed * 100_003 + i)
        name, up, down, planted = _golang_file(g, i, rng)
        base = f"{i + 1:06d}_{name}"
        h.kinds[f"{base}.up.sql"] = "planted: " + planted[0] if planted else _KIND.get(name.split("_")[0],
                                                                                        name.split("_")[0])
        h.files[f"{base}.up.sql"] = up.rstrip() + "\n"
        h.files[f"{base}.down.sql"] = down.rstrip() + "\n"
        h.forward.append(f"{base}.up.sql")
        h.planted += [(f"{base}.up.sql", what) for what in planted]
    return h


def _golang_columns(g: _Generator, rng: random.Random) -> list[Column]:
    cols = [Column("id", "bigserial PRIMARY KEY", nullable=False),
            Column("created_at", "timestamptz", False, "now()")]
    for k in range(rng.randint(1, 4)):
        name = f"{rng.choice(['name', 'value', 'unit', 'period', 'amount', 'quantity', 'region'])}_{k}"
        kind = rng.choice(["text", "numeric(18, 6)", "integer", "jsonb", "text", "boolean"])
        cols.append(Column(name, kind, rng.random() < 0.5, "false" if kind == "boolean" else ""))
    return cols


def _gcoldef(c: Column) -> str:
    text = f"{c.name} {c.type}" + ("" if c.nullable or "PRIMARY KEY" in c.type else " NOT NULL")
    text += f" DEFAULT {c.default}" if c.default else ""
    text += f" REFERENCES {c.references} (id)" if c.references else ""
    if c.type.startswith("numeric") and c.name.startswith("amount"):
        text += f" CHECK ({c.name} >= 0)"
    return text


def _golang_file(g: _Generator, i: int, rng: random.Random) -> tuple[str, str, str, list[str]]:
    roll = rng.random()
    old = g.old(i, rng, age=25)
    if g.dangerous and old is not None and rng.random() < 0.05:
        return _golang_dangerous(g, i, rng, old)
    if roll < 0.38 or len(g.tables) < 3:
        return _golang_create(g, i, rng)
    if roll < 0.52:
        t = rng.choice(g.tables)
        col = Column(f"{rng.choice(['label', 'origin', 'currency', 'external_id'])}_{i}", "text")
        if rng.random() < 0.3:
            col = Column(f"enabled_{i}", "boolean", False, "true")
        t.columns.append(col)
        return (f"add_{col.name}_to_{t.name}", f"ALTER TABLE {t.name} ADD COLUMN IF NOT EXISTS {_gcoldef(col)};",
                f"ALTER TABLE {t.name} DROP COLUMN IF EXISTS {col.name};", [])
    if roll < 0.62:
        t, p = rng.choice(g.tables), rng.choice(g.tables)
        col = Column(f"{p.name}_ref_{i}", "bigint", references=p.name)
        t.columns.append(col)
        return (f"link_{t.name}_{p.name}", f"ALTER TABLE {t.name} ADD COLUMN {_gcoldef(col)};",
                f"ALTER TABLE {t.name} DROP COLUMN IF EXISTS {col.name};", [])
    if roll < 0.72:
        old = g.old(i, rng, age=5) or rng.choice(g.tables)
        col = next((c for c in old.columns if c.name != "id" and c.type != "jsonb"), old.columns[0])
        idx = f"{old.name}_{col.name}_{i}_idx"
        return (f"cic_{old.name}_{col.name}", f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {idx} ON {old.name} ({col.name});",
                f"DROP INDEX CONCURRENTLY IF EXISTS {idx};", [])
    if roll < 0.82:
        t = rng.choice(g.tables)
        col = next((c for c in t.columns if c.type in ("integer", "numeric(18, 6)")), None)
        if col is None:
            return _golang_create(g, i, rng)
        con = f"{t.name}_{col.name}_{i}_check"
        return (f"check_{t.name}_{col.name}",
                f"BEGIN;\nALTER TABLE {t.name} ADD CONSTRAINT {con} CHECK ({col.name} IS NULL OR {col.name} >= 0) NOT VALID;\n"
                f"COMMIT;\n\nBEGIN;\nALTER TABLE {t.name} VALIDATE CONSTRAINT {con};\nCOMMIT;",
                f"ALTER TABLE {t.name} DROP CONSTRAINT IF EXISTS {con};", [])
    if roll < 0.90:
        t = rng.choice(g.tables)
        fn = f"{t.name}_touch_{i}"
        return (f"trigger_{t.name}",
                f"CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n"
                f"    NEW.created_at := coalesce(NEW.created_at, now());  -- keep; callers may omit it\n"
                f"    RETURN NEW;\nEND;\n$$;\n\nDROP TRIGGER IF EXISTS {fn} ON {t.name};\n"
                f"CREATE TRIGGER {fn} BEFORE INSERT ON {t.name} FOR EACH ROW EXECUTE FUNCTION {fn}();",
                f"DROP TRIGGER IF EXISTS {fn} ON {t.name};\nDROP FUNCTION IF EXISTS {fn}();", [])
    t = rng.choice(g.tables)
    view = f"{t.name}_summary"
    cols = ", ".join(c.name for c in t.columns[: 2 + i % 3])
    g.views[view] = t.name
    return (f"view_{view}", f"DROP VIEW IF EXISTS {view};\nCREATE VIEW {view} AS SELECT {cols} FROM {t.name};",
            f"DROP VIEW IF EXISTS {view};", [])


def _golang_create(g: _Generator, i: int, rng: random.Random) -> tuple[str, str, str, list[str]]:
    t = Table(g.table_name(rng), i, _golang_columns(g, rng))
    for p in rng.sample(g.tables, k=min(len(g.tables), rng.randint(0, 2))):
        t.columns.append(Column(f"{p.name}_id", "bigint", rng.random() < 0.4, references=p.name))
    body = ",\n".join(f"    {_gcoldef(c)}" for c in t.columns)
    up = [f"CREATE TABLE IF NOT EXISTS {t.name} (\n{body}\n);"]
    up += [f"CREATE INDEX IF NOT EXISTS {t.name}_{c.name}_idx ON {t.name} ({c.name});" for c in t.columns if c.references]
    if rng.random() < 0.3:
        up.append(f"COMMENT ON TABLE {t.name} IS 'one row per {t.name.replace('_', ' ')}';")
    g.tables.append(t)
    return f"create_{t.name}", "\n\n".join(up), f"DROP TABLE IF EXISTS {t.name} CASCADE;", []


def _golang_dangerous(g: _Generator, i: int, rng: random.Random, t: Table) -> tuple[str, str, str, list[str]]:
    kind = rng.choice(["index", "check", "type", "set-not-null"])
    col = next((c for c in t.columns if c.type in ("integer", "text") and not c.references), None)
    if kind == "index" and col is not None:
        idx = f"{t.name}_{col.name}_{i}_idx"
        return (f"index_{t.name}", f"CREATE INDEX {idx} ON {t.name} ({col.name});", f"DROP INDEX IF EXISTS {idx};",
                ["non-concurrent index on an old table"])
    if kind == "type" and col is not None and col.type == "integer":
        col.type = "bigint"
        return (f"widen_{t.name}_{col.name}", f"ALTER TABLE {t.name} ALTER COLUMN {col.name} TYPE bigint;",
                f"ALTER TABLE {t.name} ALTER COLUMN {col.name} TYPE integer;", ["int -> bigint rewrite of an old table"])
    if kind == "set-not-null" and col is not None and col.nullable:
        col.nullable = False
        return (f"require_{t.name}_{col.name}", f"ALTER TABLE {t.name} ALTER COLUMN {col.name} SET NOT NULL;",
                f"ALTER TABLE {t.name} ALTER COLUMN {col.name} DROP NOT NULL;", ["SET NOT NULL on an old table"])
    con = f"{t.name}_id_{i}_check"
    return (f"check_{t.name}", f"ALTER TABLE {t.name} ADD CONSTRAINT {con} CHECK (id > 0);",
            f"ALTER TABLE {t.name} DROP CONSTRAINT IF EXISTS {con};", ["validated CHECK on an old table"])


LAYOUTS = {"prisma": prisma, "golang-migrate": golang_migrate}
_KIND = {"create": "create table (+ its indexes and FKs)", "add": "add column", "index": "index on a recent table",
         "view": "DROP VIEW + CREATE VIEW", "link": "inline REFERENCES on a new column", "check":
         "CHECK NOT VALID, VALIDATE in the next block", "trigger": "function + trigger", "enum": "enum",
         "relation": "relation on an existing table (ADD COLUMN, CREATE INDEX, separate ADD FOREIGN KEY)",
         "cic": "CREATE INDEX CONCURRENTLY"}


def main(argv: list[str]) -> int:
    layout, count, target = argv[0], int(argv[1]), Path(argv[2])
    history = LAYOUTS[layout](count)
    history.write(target)
    for rel, what in history.planted:
        print(f"{rel}: {what}")
    print(f"{len(history.forward)} migrations in {target}, {len(history.planted)} planted")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
