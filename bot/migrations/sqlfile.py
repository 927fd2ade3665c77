"""One migration file, parsed once: statements, comments, directives and transactions.

This is the statement model every other part reads — discovery (``source``),
the static rules (``lint*``), the data pre-checks, the staging trace and the
applier. A file is parsed by PostgreSQL's own parser (pglast) exactly once, on
its own (never joined with other files), and each ``Statement`` carries:

* its parse tree (``node``) and its text, from its first token to its last
  (surrounding comments and the ``;`` excluded), with the 1-based line it
  starts on;
* the comments inside, trailing or preceding it, so ``-- migrate:allow`` can
  be read per statement;
* its transaction: ``tx_group`` (statements sharing a number run in one
  transaction; ``None`` runs on its own, in autocommit) and ``explicit_tx``
  (inside the file's own ``BEGIN … COMMIT``);
* ``no_transaction``: PostgreSQL refuses it inside a transaction block, decided
  by ``refused_in_transaction`` — the one place that knows.

How a file runs (``mode``) is decided once, here, the way the applier runs it:

* ``own``: the file has its own ``BEGIN``/``COMMIT``; its blocks are its
  transactions and statements outside them autocommit;
* ``autocommit``: ``-- migrate:no-transaction`` (or dbmate's ``-- migrate:up
  transaction:false``), or a statement PostgreSQL refuses in a transaction
  block: every statement runs on its own;
* ``transaction``: the whole file is one transaction.

File-level directives (``-- migrate:no-transaction``, ``-- migrate:cleanup``)
count only as ``--`` comments starting a line; ``-- migrate:allow`` may sit in
any comment attached to its statement.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from pglast import ast, enums
from pglast.parser import ParseError, parse_sql, scan

AT = enums.AlterTableType
TX = enums.TransactionStmtKind
_BEGINS = (TX.TRANS_STMT_BEGIN, TX.TRANS_STMT_START)
_ENDS = (TX.TRANS_STMT_COMMIT, TX.TRANS_STMT_ROLLBACK)
_REFUSED_ALWAYS = (ast.CreatedbStmt, ast.DropdbStmt, ast.AlterSystemStmt, ast.CreateTableSpaceStmt,
                   ast.DropTableSpaceStmt, ast.DropSubscriptionStmt)


# --------------------------------------------------------------------------
# Transactions: the one decision about what PostgreSQL refuses in a block
# --------------------------------------------------------------------------


def _option(options: Iterable[ast.DefElem] | None, name: str) -> ast.DefElem | None:
    return next((o for o in options or () if getattr(o, "defname", None) == name), None)


def _false(option: ast.DefElem | None) -> bool:
    """The option is given and switched off (`create_slot = false`)."""
    if option is None or option.arg is None:
        return False
    arg = option.arg
    value = arg.boolval if isinstance(arg, ast.Boolean) else getattr(arg, "sval", getattr(arg, "ival", None))
    return str(value).lower() in ("false", "off", "0")


def refused_in_transaction(node: ast.Node | None) -> bool:
    """PostgreSQL refuses this statement inside a transaction block (PreventInTransactionBlock).

    The applier runs such a statement (and its file) in autocommit, the lint
    models it that way, and the trace samples its locks from outside.
    """
    if isinstance(node, (ast.IndexStmt, ast.DropStmt)):
        return bool(node.concurrent)
    if isinstance(node, ast.ReindexStmt):
        system = node.kind in (enums.ReindexObjectType.REINDEX_OBJECT_SYSTEM,
                               enums.ReindexObjectType.REINDEX_OBJECT_DATABASE)
        return system or _option(node.params, "concurrently") is not None
    if isinstance(node, ast.VacuumStmt):
        return bool(node.is_vacuumcmd)
    if isinstance(node, ast.AlterTableStmt):
        return any(c.subtype == AT.AT_DetachPartition and c.def_.concurrent for c in node.cmds or ())
    if isinstance(node, ast.ClusterStmt):
        return node.relation is None  # CLUSTER of every clustered table
    if isinstance(node, ast.AlterDatabaseStmt):
        return _option(node.options, "tablespace") is not None
    if isinstance(node, ast.CreateSubscriptionStmt):
        return not (_false(_option(node.options, "create_slot")) or _false(_option(node.options, "connect")))
    if isinstance(node, ast.AlterSubscriptionStmt):
        return node.kind == enums.AlterSubscriptionType.ALTER_SUBSCRIPTION_REFRESH
    if isinstance(node, ast.DiscardStmt):
        return node.target == enums.DiscardMode.DISCARD_ALL
    if isinstance(node, ast.TransactionStmt):
        return node.kind in (TX.TRANS_STMT_COMMIT_PREPARED, TX.TRANS_STMT_ROLLBACK_PREPARED)
    return isinstance(node, _REFUSED_ALWAYS)


def is_concurrent(node: ast.Node | None) -> bool:
    """CONCURRENTLY: the statement works under SHARE UPDATE EXCLUSIVE instead of a blocking lock."""
    if isinstance(node, ast.ReindexStmt):
        return _option(node.params, "concurrently") is not None
    if isinstance(node, ast.AlterTableStmt):
        return any(c.subtype == AT.AT_DetachPartition and c.def_.concurrent for c in node.cmds or ())
    return bool(getattr(node, "concurrent", False))


# --------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Directive:
    """One `migrate:` directive found in a comment."""

    kind: str
    line: int
    rules: tuple[str, ...] = ()
    reason: str = ""
    text: str = ""


@dataclass(frozen=True)
class Statement:
    """One statement of a migration file, as everything downstream sees it."""

    sql: str  # first token to last token: no surrounding comments, no `;`
    line: int  # 1-based line in the file where the statement starts
    kind: str  # the pglast node name, e.g. "IndexStmt"
    no_transaction: bool  # PostgreSQL refuses it inside a transaction block
    transaction_control: bool  # BEGIN / COMMIT / ROLLBACK …
    node: ast.Node | None = field(default=None, compare=False, repr=False)
    comments: tuple[tuple[int, str], ...] = field(default=(), compare=False, repr=False)
    tx_group: int | None = field(default=0, compare=False)  # same number: one transaction; None: on its own
    explicit_tx: bool = field(default=False, compare=False)  # inside the file's own BEGIN … COMMIT
    index: int = 0  # position in the file
    directives: tuple["Directive", ...] = field(default=(), compare=False, repr=False)  # in its comments

    def allowed(self, rule: str, known: Iterable[str]) -> str | None:
        """The reason of a valid ``-- migrate:allow`` of ``rule`` on this statement (every rule it names in
        ``known``, a reason given), else None."""
        for d in self.directives:
            if d.kind == "allow" and rule in d.rules and d.reason and all(r in known for r in d.rules):
                return d.reason
        return None

    @property
    def text(self) -> str:
        return self.sql

    @property
    def in_tx(self) -> bool:
        """It runs inside a transaction with other statements (the file's, or its own BEGIN … COMMIT)."""
        return self.tx_group is not None

    @property
    def tx_kind(self) -> str | None:
        """"begin", "commit" (COMMIT/END), "rollback", other transaction control, or None."""
        if not isinstance(self.node, ast.TransactionStmt):
            return None
        return {TX.TRANS_STMT_BEGIN: "begin", TX.TRANS_STMT_START: "begin", TX.TRANS_STMT_COMMIT: "commit",
                TX.TRANS_STMT_ROLLBACK: "rollback"}.get(self.node.kind, "other")


@dataclass(frozen=True)
class ParsedFile:
    """A migration file's statements, comments, file-level directives and how it runs."""

    statements: tuple[Statement, ...] = ()
    comments: tuple[tuple[int, str, bool], ...] = ()  # (line, text, on a line of its own), every comment
    directives: tuple[Directive, ...] = ()  # file-level: `--` comments starting a line
    mode: str = "transaction"  # "transaction" | "autocommit" | "own"
    error: str | None = None  # the parser's message when the file does not parse
    error_line: int | None = None

    @property
    def cleanup(self) -> bool:
        return any(d.kind == "cleanup" for d in self.directives)

    @property
    def no_transaction(self) -> bool:
        return self.mode == "autocommit"

    @property
    def own_transaction(self) -> bool:
        return self.mode == "own"


# --------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------


SqlSyntaxError = ParseError  # what ``parse_raw`` raises: callers catch it by this name, not pglast's


def parse_raw(text: str) -> tuple[ast.RawStmt, ...]:
    """pglast's raw statements (node, character offset, length): the one place SQL text meets the parser.

    Migration files go through ``parse_file``; other SQL (a failed statement
    quoted in a log, a pg_stat_statements query, the pinned perf workload)
    through this, so every caller agrees on what parses and where it starts.
    """
    return parse_sql(text)  # a tuple; pglast reports character (not byte) offsets, as the scanner does


def parse_file(text: str) -> ParsedFile:
    """Parse one file, once. A file that does not parse comes back with ``error`` and ``error_line`` set."""
    try:
        raws = parse_raw(text)
    except ParseError as exc:
        message, index = (exc.args + (0,))[:2]
        offset = max(0, min(int(index or 0), len(text)))
        return ParsedFile(error=str(message), error_line=text.count("\n", 0, offset) + 1)
    tokens = scan(text) if raws else []
    line_of = _line_index(text)
    is_comment = [t.name in ("SQL_COMMENT", "C_COMMENT") for t in tokens]
    code = [t for t, c in zip(tokens, is_comment) if not c]
    starts = [t.start for t in code]
    spans: list[tuple[int, int]] = []
    for raw in raws:
        stop = raw.stmt_location + raw.stmt_len if raw.stmt_len else len(text)
        first = bisect.bisect_left(starts, raw.stmt_location)
        last = bisect.bisect_left(starts, stop) - 1
        spans.append((code[first].start, code[last].end + 1))
    comments = [t for t, c in zip(tokens, is_comment) if c]
    attached = _attach_comments(text, spans, comments, line_of)
    every = tuple((line_of(t.start), text[t.start : t.end + 1], _own_line(text, t.start)) for t in comments)
    file_level = tuple(directives((line, body) for line, body, own in every if own and body.startswith("--")))
    nodes = [raw.stmt for raw in raws]
    mode = transaction_mode(nodes, file_level)
    groups = _transactions(nodes, autocommit=mode != "transaction")
    statements = tuple(
        Statement(text[b:e], line_of(b), type(node).__name__, refused_in_transaction(node),
                  isinstance(node, ast.TransactionStmt), node, tuple(attached[i]), group, explicit, i,
                  tuple(directives(attached[i])))
        for i, ((b, e), node, (group, explicit)) in enumerate(zip(spans, nodes, groups))
    )
    return ParsedFile(statements, every, file_level, mode)


def transaction_mode(nodes: list[ast.Node], file_level: Iterable[Directive]) -> str:
    """How the applier runs the file: "own", "autocommit" or "transaction" (see the module docstring)."""
    if any(isinstance(n, ast.TransactionStmt) for n in nodes):
        return "own"
    if any(d.kind == "no-transaction" or (d.kind == "up" and "transaction:false" in d.rules) for d in file_level):
        return "autocommit"
    return "autocommit" if any(refused_in_transaction(n) for n in nodes) else "transaction"


def _transactions(nodes: list[ast.Node], autocommit: bool) -> list[tuple[int | None, bool]]:
    """(tx_group, explicit_tx) per statement: one group for a transactional file; each BEGIN … COMMIT its own."""
    out: list[tuple[int | None, bool]] = []
    group: int | None = None if autocommit else 0
    explicit, counter = False, 0
    for node in nodes:
        kind = node.kind if isinstance(node, ast.TransactionStmt) else None
        if kind in _BEGINS:
            counter += 1
            group, explicit = counter, True
        out.append((group, explicit))
        if kind in _ENDS:
            counter += 1
            group, explicit = (None if autocommit else counter), False
    return out


def _own_line(text: str, offset: int) -> bool:
    return not text[text.rfind("\n", 0, offset) + 1 : offset].strip()


def _line_index(text: str) -> Callable[[int], int]:
    """1-based line of a character offset, in O(log n) (files can hold thousands of statements)."""
    newlines = [i for i, ch in enumerate(text) if ch == "\n"]
    return lambda offset: bisect.bisect_right(newlines, offset - 1) + 1


def _attach_comments(text: str, spans: list[tuple[int, int]], comments: list,
                     line_of: Callable[[int], int]) -> list[list[tuple[int, str]]]:
    """A comment belongs to the statement it is inside, trails on the same line, or precedes."""
    attached: list[list[tuple[int, str]]] = [[] for _ in spans]
    begins = [b for b, _ in spans]
    for tok in comments:
        body = text[tok.start : tok.end + 1]
        line = line_of(tok.start)
        i = bisect.bisect_right(begins, tok.start) - 1  # last statement starting before the comment
        if i >= 0 and (tok.start < spans[i][1] or "\n" not in text[spans[i][1] : tok.start]):
            attached[i].append((line, body))
        elif i + 1 < len(spans):
            attached[i + 1].append((line, body))
    return attached


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


def parse_statements(text: str) -> list[ast.Node]:
    """Parse trees of DDL that is not a migration (e.g. a schema description); raises pglast's ParseError."""
    return [raw.stmt for raw in parse_raw(text)]
