"""What a migration is: discovery, ordering, statements, directives, fingerprints.

Layouts understood (auto-detected, or forced with ``migrations.format``):

    plain           0001_name.sql, 20240101120000_name.sql
    prisma          <ts>_<name>/migration.sql
    flyway          V<ver>__<desc>.sql          (V1, V1.2, V1_2)
    golang-migrate  <ver>_<name>.up.sql        (.down.sql skipped)
    dbmate          <ver>_<name>.sql with `-- migrate:up` / `-- migrate:down` sections (down skipped)
    flyway          also skips U… undo, R__ repeatable and before…/after… callback files

The layout decides what a forward migration is for every caller (the gate,
deploy and ``migrate-bot lint DIR``). A folder that yields no migration, or
that holds ``.sql`` files its layout does not recognise, is a
``MigrationSourceError`` (exit 2) saying what was found and which layouts were
tried — never a green gate over nothing.

Each file is parsed once, on its own, into the statement model
(``bot.migrations.sqlfile``): PostgreSQL's own parser splits statements, so
semicolons in strings, dollar quotes and comments are safe. A file that does
not parse is still returned, with ``parse_error`` set: the gate reports it as a
syntax failure rather than refusing to run.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from bot.errors import MigrationSourceError
from bot.migrations.sqlfile import ParsedFile, Statement, parse_file

__all__ = ["Migration", "Statement", "build", "detect_format", "discover", "set_fingerprint", "version_key"]

_PLAIN = re.compile(r"^(?P<ver>\d+)[_-](?P<name>.+)\.sql$")
_FLYWAY = re.compile(r"^V(?P<ver>\d+(?:[._]\d+)*)__(?P<name>.+)\.sql$")
_GOLANG = re.compile(r"^(?P<ver>\d+)_(?P<name>.+)\.up\.sql$")


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: str
    sql: str
    checksum: str
    statements: tuple[Statement, ...]
    no_transaction: bool
    cleanup: bool
    own_transaction: bool  # the file carries its own BEGIN … COMMIT
    parse_error: str | None = None
    parse_error_line: int | None = None
    parsed: ParsedFile = field(default_factory=ParsedFile, compare=False, repr=False)

    @property
    def label(self) -> str:
        return f"{self.version}_{self.name}"

    @property
    def sort_key(self) -> tuple[int, ...]:
        return version_key(self.version)


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.split(r"[._]", version) if p.isdigit())


def checksum(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def set_fingerprint(migrations: list[Migration]) -> str:
    """sha256 over the ordered (version, checksum) pairs: what a deploy is bound to."""
    digest = hashlib.sha256()
    for m in migrations:
        digest.update(f"{m.version}:{m.checksum}\n".encode())
    return digest.hexdigest()


def build(version: str, name: str, path: str, text: str) -> Migration:
    """A Migration from its text, parsed once: statements, directives, transactions, checksum."""
    parsed = parse_file(text)
    return Migration(
        version=version,
        name=name,
        path=path,
        sql=text,
        checksum=checksum(text),
        statements=parsed.statements,
        no_transaction=parsed.no_transaction,
        cleanup=parsed.cleanup,
        own_transaction=parsed.own_transaction,
        parse_error=parsed.error,
        parse_error_line=parsed.error_line,
        parsed=parsed,
    )


def dbmate_up(text: str) -> str:
    """The `-- migrate:up` section of a dbmate file (up to `-- migrate:down`); the whole text without one."""
    up = re.search(r"^\s*--\s*migrate:up\b.*$", text, re.MULTILINE)
    if not up:
        return text
    down = re.search(r"^\s*--\s*migrate:down\b.*$", text[up.start():], re.MULTILINE)
    return text[up.start(): up.start() + down.start()] if down else text[up.start():]


# -- layouts: which files are forward migrations --------------------------------------------------

LAYOUTS = {  # what each layout calls a forward migration (for messages)
    "prisma": "<timestamp>_<name>/migration.sql",
    "flyway": "V<version>__<description>.sql",
    "golang-migrate": "<version>_<name>.up.sql",
    "dbmate": "<version>_<name>.sql with a `-- migrate:up` section",
    "plain": "<version>_<name>.sql",
}
FORMATS = ("auto", "plain", "prisma", "flyway", "golang-migrate", "dbmate")  # migrations.format and --layout
_PRISMA_DIR = re.compile(r"^(?P<ver>\d+)_(?P<name>.+)$")
_FLYWAY_SKIPPED = re.compile(r"^(U\d+(?:[._]\d+)*__.+|R__.+|(before|after)[A-Za-z]*(__.+)?)\.sql$")
_DBMATE_UP = re.compile(r"^\s*--\s*migrate:up", re.MULTILINE)


@dataclass(frozen=True)
class Layout:
    """One directory read with one layout: its forward migrations, what it skips, what it does not know."""

    name: str
    entries: list[tuple[str, str, Path]]  # (version, name, file) of each forward migration
    skipped: list[Path]  # known but not forward: .down.sql, Flyway undo/repeatable/callbacks
    unknown: list[Path]  # .sql files the layout does not recognise


def detect_format(root: Path) -> str:
    files = list(root.iterdir())
    if any(p.is_dir() and (p / "migration.sql").is_file() for p in files):
        return "prisma"
    names = [p.name for p in files if p.is_file()]
    if any(_FLYWAY.match(n) for n in names):
        return "flyway"
    if any(n.endswith(".up.sql") for n in names):
        return "golang-migrate"
    sql_files = [p for p in files if p.is_file() and p.suffix == ".sql"]
    if any(_DBMATE_UP.search(p.read_text(encoding="utf-8", errors="replace")) for p in sql_files):
        return "dbmate"
    return "plain"


def read_layout(root: Path, fmt: str) -> Layout:
    """Every top-level file (and Prisma's migration folders) of ``root`` sorted into entries, skipped, unknown."""
    entries: list[tuple[str, str, Path]] = []
    skipped: list[Path] = []
    unknown: list[Path] = []
    for path in sorted(root.iterdir()):
        if path.is_dir():
            m = _PRISMA_DIR.match(path.name)
            if fmt == "prisma" and m and (path / "migration.sql").is_file():
                entries.append((m.group("ver"), m.group("name"), path / "migration.sql"))
                skipped += sorted(p for p in path.glob("*.sql") if p.name != "migration.sql")
            continue
        if path.suffix != ".sql":
            continue
        kind, match = _classify(path.name, fmt)
        if kind == "entry":
            entries.append((match.group("ver").replace("_", "."), match.group("name"), path))
        else:
            (skipped if kind == "skipped" else unknown).append(path)
    return Layout(fmt, entries, skipped, unknown)


def _classify(name: str, fmt: str) -> tuple[str, re.Match | None]:
    """("entry", match) | ("skipped", None) | ("unknown", None) for one top-level .sql file."""
    if fmt == "prisma":
        return "unknown", None
    if name.endswith(".down.sql") and fmt in ("golang-migrate", "plain", "dbmate"):
        return "skipped", None
    if fmt == "flyway" and _FLYWAY_SKIPPED.match(name):
        return "skipped", None
    match = {"flyway": _FLYWAY, "golang-migrate": _GOLANG}.get(fmt, _PLAIN).match(name)
    return ("entry", match) if match else ("unknown", None)


def _names(paths: list[Path], root: Path, limit: int = 8) -> str:
    shown = [str(p.relative_to(root)) for p in paths[:limit]]
    return ", ".join(shown) + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _tried(fmt: str, auto: bool) -> str:
    if not auto:
        return f"the {fmt} layout ({LAYOUTS[fmt]}, set by migrations.format)"
    return "every layout (" + "; ".join(f"{k}: {v}" for k, v in LAYOUTS.items()) + ")"


def _migrations_below(root: Path, depth: int = 2) -> tuple[Path, str, int] | None:
    """The first folder below ``root`` (breadth first, ``depth`` levels) that holds migrations of some layout."""
    level = [root]
    for _ in range(depth):
        level = [d for parent in level for d in sorted(parent.iterdir())
                 if d.is_dir() and not d.name.startswith(".") and d.name != "node_modules"]
        for folder in level:
            try:
                found = read_layout(folder, detect_format(folder))
            except OSError:
                continue
            if found.entries:
                return folder, found.name, len(found.entries)
    return None


def _no_migrations(root: Path, found: Layout, auto: bool) -> MigrationSourceError:
    if found.unknown:
        return MigrationSourceError(
            f"No migrations found in {root}: its .sql files ({_names(found.unknown, root)}) match none of "
            f"{_tried(found.name, auto)}.",
            "Pass the folder that holds the migration files (--migrations DIR), rename them to a layout, "
            "or set migrations.format.",
        )
    below = _migrations_below(root)
    if below:
        folder, layout, count = below
        return MigrationSourceError(
            f"No migrations found in {root} itself, but its folder {folder.relative_to(root)} holds {count} "
            f"{layout} migration(s).",
            f"Pass --migrations {folder} (or set migrations.dir / migrations.path to it).",
        )
    return MigrationSourceError(
        f"No migrations found in {root}: it has no .sql files and no Prisma migration folders "
        f"(tried {_tried(found.name, auto)}).",
        "Check that --migrations (migrations.dir) names the folder that holds the migration files.",
    )


def forward_files(directory: str | Path, fmt: str = "auto") -> Layout:
    """The layout's forward migration files of ``directory``; MigrationSourceError when there are none
    or when some .sql file is not one the layout knows (every caller — the gate, deploy, lint — agrees)."""
    root = Path(directory)
    if not root.is_dir():
        raise MigrationSourceError(
            f"The migrations directory {root} does not exist.",
            "Pass --migrations DIR or set migrations.dir in the config.",
        )
    auto = fmt == "auto"
    if not auto and fmt not in LAYOUTS:
        raise MigrationSourceError(f"Unknown migrations.format {fmt!r}.",
                                   f"Use auto or one of: {', '.join(LAYOUTS)}.")
    found = read_layout(root, detect_format(root) if auto else fmt)
    if not found.entries:
        raise _no_migrations(root, found, auto)
    if found.unknown:
        raise MigrationSourceError(
            f"{root} holds {found.name} migrations ({LAYOUTS[found.name]}), but {len(found.unknown)} .sql "
            f"file(s) there are not: {_names(found.unknown, root)}.",
            "Move them out of the migrations folder, rename them to the layout, or set migrations.format if "
            f"{found.name} was guessed wrong.",
        )
    return found


def read_migration(version: str, name: str, path: Path, layout: str) -> Migration:
    """One forward migration file, read and parsed (dbmate: its `-- migrate:up` section only)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MigrationSourceError(f"Could not read migration {path}: {exc}.", "Check the file.") from None
    if layout == "dbmate":
        text = dbmate_up(text)
    return build(version, name, str(path), text)


def discover(directory: str | Path, fmt: str = "auto") -> list[Migration]:
    """All forward migrations in ``directory``, in version order (see ``forward_files`` for the errors)."""
    found = forward_files(directory, fmt)
    migrations = []
    seen: dict[tuple[int, ...], str] = {}
    for version, name, path in found.entries:
        key = version_key(version)
        if key in seen:
            raise MigrationSourceError(
                f"Two migrations share version {version}: {seen[key]} and {path.name}.",
                "Rename one so every version is unique.",
            )
        seen[key] = path.name
        migrations.append(read_migration(version, name, path, found.name))
    return sorted(migrations, key=lambda m: m.sort_key)
