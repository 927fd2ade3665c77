"""What a migration is: discovery, ordering, statements, directives, fingerprints.

Layouts understood (auto-detected, or forced with ``migrations.format``):

    plain           0001_name.sql, 20240101120000_name.sql
    prisma          <ts>_<name>/migration.sql
    flyway          V<ver>__<desc>.sql          (V1, V1.2, V1_2)
    golang-migrate  <ver>_<name>.up.sql        (.down.sql ignored)
    dbmate          <ver>_<name>.sql with `-- migrate:up` / `-- migrate:down` sections

Statements are split by PostgreSQL's own parser (pglast), never by string
splitting, so semicolons in strings, dollar quotes and comments are safe. A
file that does not parse is still returned, with ``parse_error`` set: the gate
reports it as a syntax failure rather than refusing to run.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import pglast
from pglast import ast
from pglast.parser import ParseError

from bot.errors import MigrationSourceError

_DIRECTIVE = re.compile(r"^\s*--\s*migrate:([a-z-]+)\b(.*)$", re.MULTILINE)
_PLAIN = re.compile(r"^(?P<ver>\d+)[_-](?P<name>.+)\.sql$")
_FLYWAY = re.compile(r"^V(?P<ver>\d+(?:[._]\d+)*)__(?P<name>.+)\.sql$")
_GOLANG = re.compile(r"^(?P<ver>\d+)_(?P<name>.+)\.up\.sql$")


@dataclass(frozen=True)
class Statement:
    sql: str
    line: int  # 1-based line in the file where the statement starts
    kind: str  # the pglast node name, e.g. "IndexStmt"
    no_transaction: bool  # PostgreSQL refuses it inside a transaction block
    transaction_control: bool  # BEGIN / COMMIT / ROLLBACK …


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


def directives(text: str) -> dict[str, str]:
    return {m.group(1): m.group(2).strip() for m in _DIRECTIVE.finditer(text)}


def _needs_autocommit(node: ast.Node) -> bool:
    """Statements PostgreSQL refuses inside a transaction block."""
    if isinstance(node, ast.IndexStmt):
        return bool(node.concurrent)
    if isinstance(node, ast.DropStmt):
        return bool(node.concurrent)
    if isinstance(node, ast.ReindexStmt):
        return any(getattr(p, "defname", "") == "concurrently" for p in (node.params or ()))
    if isinstance(node, ast.VacuumStmt):
        return bool(node.is_vacuumcmd)
    if isinstance(node, ast.AlterTableStmt):
        return any(
            isinstance(getattr(cmd, "def_", None), ast.PartitionCmd) and cmd.def_.concurrent for cmd in node.cmds or ()
        )
    return isinstance(node, (ast.CreatedbStmt, ast.DropdbStmt, ast.AlterSystemStmt, ast.CreateTableSpaceStmt))


def split_statements(text: str) -> list[Statement]:
    """Split with pglast; raises pglast's ParseError on invalid SQL."""
    statements = []
    for stmt in pglast.parse_sql(text):  # pglast reports character (not byte) offsets
        start = stmt.stmt_location or 0
        end = start + stmt.stmt_len if stmt.stmt_len else len(text)
        chunk = text[start:end]
        lead = len(chunk) - len(chunk.lstrip())
        line = text.count("\n", 0, start + lead) + 1
        node = stmt.stmt
        statements.append(
            Statement(
                sql=chunk.strip(),
                line=line,
                kind=type(node).__name__,
                no_transaction=_needs_autocommit(node),
                transaction_control=isinstance(node, ast.TransactionStmt),
            )
        )
    return statements


def _error_line(text: str, exc: ParseError) -> int | None:
    location = exc.args[1] if len(exc.args) > 1 else None  # pglast: (message, character offset)
    if not isinstance(location, int):
        return None
    return text.count("\n", 0, int(location)) + 1


def build(version: str, name: str, path: str, text: str) -> Migration:
    """A Migration from its text: statements, directives, checksum."""
    found = directives(text)
    try:
        statements = tuple(split_statements(text))
        error, error_line = None, None
    except ParseError as exc:
        statements, error, error_line = (), str(exc.args[0]), _error_line(text, exc)
    own_tx = any(s.transaction_control for s in statements)
    no_tx = (
        "no-transaction" in found
        or "transaction:false" in found.get("up", "")
        or any(s.no_transaction for s in statements)
    )
    return Migration(
        version=version,
        name=name,
        path=path,
        sql=text,
        checksum=checksum(text),
        statements=statements,
        no_transaction=no_tx and not own_tx,
        cleanup="cleanup" in found,
        own_transaction=own_tx,
        parse_error=error,
        parse_error_line=error_line,
    )


def _dbmate_up(text: str) -> str:
    """The `-- migrate:up` section of a dbmate file (up to `-- migrate:down`)."""
    up = re.search(r"^\s*--\s*migrate:up\b.*$", text, re.MULTILINE)
    if not up:
        return text
    down = re.search(r"^\s*--\s*migrate:down\b.*$", text[up.start():], re.MULTILINE)
    return text[up.start(): up.start() + down.start()] if down else text[up.start():]


def detect_format(root: Path) -> str:
    files = [p for p in root.iterdir()]
    if any(p.is_dir() and (p / "migration.sql").is_file() for p in files):
        return "prisma"
    names = [p.name for p in files if p.is_file()]
    if any(_FLYWAY.match(n) for n in names):
        return "flyway"
    if any(n.endswith(".up.sql") for n in names):
        return "golang-migrate"
    sql_files = [p for p in files if p.is_file() and p.suffix == ".sql"]
    if any(re.search(r"^\s*--\s*migrate:up", p.read_text(encoding="utf-8", errors="replace"), re.M) for p in sql_files):
        return "dbmate"
    return "plain"


def _entries(root: Path, fmt: str) -> list[tuple[str, str, Path]]:
    """(version, name, file) for each migration file of the layout."""
    found = []
    if fmt == "prisma":
        for d in sorted(root.iterdir()):
            m = re.match(r"^(\d+)_(.+)$", d.name)
            if d.is_dir() and m and (d / "migration.sql").is_file():
                found.append((m.group(1), m.group(2), d / "migration.sql"))
        return found
    pattern = {"flyway": _FLYWAY, "golang-migrate": _GOLANG}.get(fmt, _PLAIN)
    for f in sorted(root.iterdir()):
        if not f.is_file() or f.name.endswith(".down.sql"):
            continue
        m = pattern.match(f.name)
        if m:
            found.append((m.group("ver").replace("_", "."), m.group("name"), f))
    return found


def discover(directory: str | Path, fmt: str = "auto") -> list[Migration]:
    """All migrations in ``directory``, in version order."""
    root = Path(directory)
    if not root.is_dir():
        raise MigrationSourceError(
            f"The migrations directory {root} does not exist.",
            "Pass --migrations DIR or set migrations.dir in the config.",
        )
    layout = detect_format(root) if fmt == "auto" else fmt
    migrations = []
    seen: dict[tuple[int, ...], str] = {}
    for version, name, path in _entries(root, layout):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise MigrationSourceError(f"Could not read migration {path}: {exc}.", "Check the file.") from None
        if layout == "dbmate":
            text = _dbmate_up(text)
        key = version_key(version)
        if key in seen:
            raise MigrationSourceError(
                f"Two migrations share version {version}: {seen[key]} and {path.name}.",
                "Rename one so every version is unique.",
            )
        seen[key] = path.name
        migrations.append(build(version, name, str(path), text))
    return sorted(migrations, key=lambda m: m.sort_key)
