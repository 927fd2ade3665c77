"""A migration file as the applier sees it: statements, comments, directives, transactions.

pglast drops comments, so they are located with PostgreSQL's scanner and each
statement's location, then attached to the statement they are inside, trail
or precede. ``-- migrate:`` directives are read from those comments.
Transaction boundaries are modelled the way the applier runs files: one
transaction per file, unless the file is autocommit (its own BEGIN/COMMIT,
``-- migrate:no-transaction``, or a statement PostgreSQL refuses inside a
transaction block).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from pglast import ast, enums
from pglast.parser import ParseError, parse_sql, scan

from bot.migrations.lint_ast import AT


class LintSyntaxError(ValueError):
    """The SQL does not parse; ``line`` is 1-based, ``path`` set when known."""

    def __init__(self, message: str, line: int, path: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.path = path


@dataclass
class Stmt:
    """A parsed statement with its place in the file and its transaction."""

    node: ast.Node
    line: int
    text: str
    comments: list[tuple[int, str]] = field(default_factory=list)  # (line, comment text)
    tx_group: int | None = None  # None: runs on its own (autocommit)
    explicit_tx: bool = False  # inside an explicit BEGIN ... COMMIT
    locks: str | None = None  # existing table it takes ACCESS EXCLUSIVE on

    @property
    def in_tx(self) -> bool:
        """True when the statement runs inside a (file or explicit) transaction."""
        return self.tx_group is not None


# --------------------------------------------------------------------------
# Parsing: statements, their lines and their comments
# --------------------------------------------------------------------------


def parse(sql: str) -> tuple:
    """pglast RawStmts, or LintSyntaxError with the 1-based line of the error."""
    try:
        return parse_sql(sql)
    except ParseError as exc:
        message, index = (exc.args + (0,))[:2]
        line = sql.count("\n", 0, max(0, min(int(index or 0), len(sql)))) + 1
        raise LintSyntaxError(f"line {line}: {message}", line) from None


def split_statements(sql: str) -> tuple[list[Stmt], list[tuple[int, str, bool]]]:
    """Statements (start line, trimmed text, attached comments) and every comment of the file.

    Each file comment is (line, text, own_line): own_line when only blanks precede
    it on its line, which is where file-level directives must be written.

    pglast reports locations as character offsets into the Python string (it
    converts libpg_query's UTF-8 byte offsets), and the scanner's tokens use the
    same unit, so non-ASCII text before a statement cannot shift its line.
    """
    raws = parse(sql)
    tokens = scan(sql) if raws else []
    line_of = _line_index(sql)
    is_comment = [t.name in ("SQL_COMMENT", "C_COMMENT") for t in tokens]
    code = [t for t, c in zip(tokens, is_comment) if not c]
    starts = [t.start for t in code]
    stmts: list[Stmt] = []
    spans: list[tuple[int, int]] = []
    for raw in raws:
        stop = raw.stmt_location + raw.stmt_len if raw.stmt_len else len(sql)
        first = bisect.bisect_left(starts, raw.stmt_location)
        last = bisect.bisect_left(starts, stop) - 1
        begin, end = code[first].start, code[last].end + 1
        spans.append((begin, end))
        stmts.append(Stmt(raw.stmt, line_of(begin), sql[begin:end]))
    comments = [t for t, c in zip(tokens, is_comment) if c]
    _attach_comments(sql, stmts, spans, comments, line_of)
    return stmts, [(line_of(t.start), sql[t.start : t.end + 1], _own_line(sql, t.start)) for t in comments]


def _own_line(sql: str, offset: int) -> bool:
    return not sql[sql.rfind("\n", 0, offset) + 1 : offset].strip()


def _line_index(sql: str) -> Callable[[int], int]:
    """1-based line of a character offset, in O(log n) (files can hold thousands of statements)."""
    newlines = [i for i, ch in enumerate(sql) if ch == "\n"]
    return lambda offset: bisect.bisect_right(newlines, offset - 1) + 1


def _attach_comments(
    sql: str, stmts: list[Stmt], spans: list[tuple[int, int]], comments: list, line_of: Callable[[int], int]
) -> None:
    """A comment belongs to the statement it is inside, trails on the same line, or precedes."""
    begins = [b for b, _ in spans]
    for tok in comments:
        text = sql[tok.start : tok.end + 1]
        line = line_of(tok.start)
        i = bisect.bisect_right(begins, tok.start) - 1  # last statement starting before the comment
        if i >= 0 and (tok.start < spans[i][1] or "\n" not in sql[spans[i][1] : tok.start]):
            stmts[i].comments.append((line, text))
        elif i + 1 < len(stmts):
            stmts[i + 1].comments.append((line, text))


@dataclass(frozen=True)
class Directive:
    """One `migrate:` directive found in a comment."""

    kind: str
    line: int
    rules: tuple[str, ...] = ()
    reason: str = ""
    text: str = ""


def directives(comments: Iterable[tuple[int, str]]) -> Iterator[Directive]:
    """Directives in comments: a line of the comment starting with `migrate:`."""
    for line, text in comments:
        body = text[2:] if text.startswith("--") else text[2:-2]
        for offset, raw in enumerate(body.splitlines()):
            words = raw.strip().lstrip("*").split(None, 2)
            if not words or not words[0].lower().startswith("migrate:"):
                continue
            kind = words[0].lower()[len("migrate:") :]
            rules = tuple(r for r in words[1].split(",") if r) if len(words) > 1 else ()
            reason = words[2].strip() if len(words) > 2 else ""
            yield Directive(kind, line + offset, rules, reason, raw.strip())


# --------------------------------------------------------------------------
# Transactions: how the applier will run each statement
# --------------------------------------------------------------------------


def needs_autocommit(node: ast.Node) -> bool:
    """Statements PostgreSQL refuses in a transaction block: the applier runs their file in autocommit."""
    if isinstance(node, (ast.IndexStmt, ast.DropStmt)):
        return bool(node.concurrent)
    if isinstance(node, ast.ReindexStmt):
        return any(p.defname == "concurrently" for p in node.params or ())
    if isinstance(node, ast.VacuumStmt):
        return bool(node.is_vacuumcmd)
    if isinstance(node, ast.AlterTableStmt):
        return any(c.subtype == AT.AT_DetachPartition and c.def_.concurrent for c in node.cmds or ())
    return isinstance(node, (ast.CreatedbStmt, ast.DropdbStmt, ast.AlterSystemStmt, ast.CreateTableSpaceStmt))


def runs_in_autocommit(stmts: list[Stmt], found: list[Directive]) -> bool:
    """How the applier runs the file: one transaction, unless one of these holds.

    The file controls its own transactions (BEGIN/COMMIT: statements outside the
    block autocommit), says ``-- migrate:no-transaction`` (or dbmate's
    ``-- migrate:up transaction:false``), or has a statement that cannot run in a
    transaction block (CONCURRENTLY, VACUUM, ...).
    """
    return (
        any(d.kind == "no-transaction" or (d.kind == "up" and "transaction:false" in d.rules) for d in found)
        or any(isinstance(st.node, ast.TransactionStmt) or needs_autocommit(st.node) for st in stmts)
    )


def assign_transactions(stmts: list[Stmt], autocommit: bool) -> None:
    """Mark each statement's transaction the way the applier will run the file.

    Transactional files run as one transaction; autocommit files run each
    statement alone unless it sits inside the file's own BEGIN ... COMMIT.
    """
    group: int | None = None if autocommit else 0
    explicit = False
    counter = 0
    for st in stmts:
        kind = st.node.kind if isinstance(st.node, ast.TransactionStmt) else None
        if kind in (enums.TransactionStmtKind.TRANS_STMT_BEGIN, enums.TransactionStmtKind.TRANS_STMT_START):
            counter += 1
            group, explicit = counter, True
        st.tx_group, st.explicit_tx = group, explicit
        if kind in (enums.TransactionStmtKind.TRANS_STMT_COMMIT, enums.TransactionStmtKind.TRANS_STMT_ROLLBACK):
            counter += 1
            group, explicit = (None if autocommit else counter), False
