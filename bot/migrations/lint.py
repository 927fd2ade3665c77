"""Static migration safety lint, decided on PostgreSQL's own parser (pglast).

Why a static lint at all: the deploy gate should refuse a migration that would
lock a hot table for minutes *before* anyone runs it against a database. Every
decision here is taken on the parse tree PostgreSQL itself produces (pglast
wraps the PostgreSQL 17 parser), never by matching regular expressions over SQL
text, so quoting, comments, ``IF EXISTS``/``ONLY`` and schema-qualified names
cannot fool a rule.

This module is the driver: it parses, finds comments (pglast drops them, so
they are located with the scanner and each statement's location), reads the
``-- migrate:`` directives, models transaction boundaries the way the applier
runs files, tracks what the migration has created so far, and turns rule hits
(``lint_rules``) into ``Finding``s.

Directives (comments):

* ``-- migrate:allow <rule-id>[,<rule-id>] <reason>`` just before or inside a
  statement suppresses those rules for it; the finding is still returned, with
  ``allowed_reason`` set, and no longer counts as a blocker.
* ``-- migrate:cleanup`` on a line of its own, anywhere: a cleanup migration,
  run after the code stopped using what it renames or drops; renames and drops
  become warnings.
* ``-- migrate:no-transaction`` (or dbmate's ``-- migrate:up transaction:false``)
  on a line of its own: the applier runs each statement on its own. Files with
  a statement PostgreSQL refuses in a transaction block (CONCURRENTLY, VACUUM)
  or with their own BEGIN/COMMIT run that way too.

File-level directives are read exactly where the applier reads them (``--``
comments starting a line), so lint and applier always agree on them.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pglast import ast, enums
from pglast.parser import ParseError, parse_sql, scan

from bot.migrations import lint_rules as R
from bot.migrations.lint_rules import ColType, Hit, RelKey, coltype, rel_key

AT = enums.AlterTableType
CT = enums.ConstrType
OT = enums.ObjectType

_RENAME_WHY = "renaming breaks running code that still uses the old name (warning in -- migrate:cleanup migrations)"
_DROP_WHY = "breaks running code that still uses it (warning in -- migrate:cleanup migrations)"

RULES: dict[str, tuple[str, str]] = {
    "create-index-non-concurrent": ("blocker", "CREATE INDEX without CONCURRENTLY blocks writes to an existing table for the whole build"),
    "drop-index-non-concurrent": ("blocker", "DROP INDEX without CONCURRENTLY takes ACCESS EXCLUSIVE on the table"),
    "reindex-non-concurrent": ("blocker", "REINDEX without CONCURRENTLY blocks writes (and reads through the index) during the rebuild"),
    "detach-partition-non-concurrent": ("blocker", "DETACH PARTITION without CONCURRENTLY takes ACCESS EXCLUSIVE on the parent"),
    "concurrently-in-transaction": ("blocker", "CONCURRENTLY fails inside an explicit BEGIN ... COMMIT block"),
    "add-foreign-key-without-not-valid": ("blocker", "a validated FOREIGN KEY scans the table while blocking writes on both tables"),
    "add-check-without-not-valid": ("blocker", "a validated CHECK scans the whole table under ACCESS EXCLUSIVE"),
    "validate-constraint-same-migration": ("blocker", "VALIDATE in the migration that added the constraint NOT VALID keeps the lock NOT VALID avoids"),
    "set-not-null-without-check": ("blocker", "SET NOT NULL scans the table under ACCESS EXCLUSIVE unless a validated CHECK (col IS NOT NULL) exists"),
    "add-column-not-null-without-default": ("blocker", "ADD COLUMN ... NOT NULL without a DEFAULT fails on any non-empty table"),
    "add-column-volatile-default": ("blocker", "ADD COLUMN with a volatile DEFAULT rewrites the whole table under ACCESS EXCLUSIVE"),
    "add-column-serial-or-identity": ("blocker", "ADD COLUMN serial/bigserial/IDENTITY rewrites the table to number existing rows"),
    "add-column-generated-stored": ("blocker", "ADD COLUMN ... GENERATED ALWAYS AS (...) STORED rewrites the whole table"),
    "alter-column-type-rewrite": ("blocker", "ALTER COLUMN ... TYPE rewrites the table and its indexes under ACCESS EXCLUSIVE"),
    "alter-column-type-timezone": ("warning", "timestamp <-> timestamptz skips the rewrite only when the session TimeZone is UTC (PG 12+)"),
    "alter-column-type-unverified": ("warning", "the column's current type is not in the migration; whether the change rewrites needs the live schema"),
    "add-unique-constraint-in-place": ("blocker", "UNIQUE / PRIMARY KEY / EXCLUDE added in place builds its index under ACCESS EXCLUSIVE"),
    "add-primary-key-nullable-columns": ("warning", "ADD PRIMARY KEY USING INDEX scans for NULLs under ACCESS EXCLUSIVE unless the columns are NOT NULL"),
    "prefer-jsonb": ("warning", "json keeps the raw text and has no equality or index support; use jsonb"),
    "vacuum-full": ("blocker", "VACUUM FULL rewrites the table under ACCESS EXCLUSIVE"),
    "cluster": ("blocker", "CLUSTER rewrites the table under ACCESS EXCLUSIVE"),
    "truncate-cascade": ("blocker", "TRUNCATE ... CASCADE also empties every table that references these"),
    "rename-column": ("blocker", _RENAME_WHY),
    "rename-table": ("blocker", _RENAME_WHY),
    "rename-schema": ("blocker", _RENAME_WHY),
    "rename-enum-value": ("blocker", _RENAME_WHY),
    "drop-column": ("blocker", "dropping a column " + _DROP_WHY),
    "drop-table": ("blocker", "dropping a table " + _DROP_WHY),
    "drop-schema": ("blocker", "dropping a schema " + _DROP_WHY),
    "drop-type": ("blocker", "dropping a type " + _DROP_WHY),
    "drop-function": ("blocker", "dropping a function " + _DROP_WHY),
    "drop-view": ("blocker", "dropping a view " + _DROP_WHY),
    "drop-sequence": ("blocker", "dropping a sequence " + _DROP_WHY),
    "drop-trigger": ("blocker", "dropping a trigger " + _DROP_WHY),
    "enum-add-value-in-transaction": ("blocker", "ALTER TYPE ... ADD VALUE cannot run inside a transaction before PostgreSQL 12"),
    "statements-after-access-exclusive": ("warning", "statements after an ACCESS EXCLUSIVE lock in one transaction keep all traffic on that table waiting"),
    "foreign-key-without-index": ("warning", "FK columns without a leading index make deletes/updates on the referenced table scan this one"),
    "directive-invalid": ("warning", "a -- migrate:allow directive is malformed (unknown rule id or missing reason) and was ignored"),
}

# Rules about breaking running code rather than about locks: a cleanup
# migration (run once the code stopped using the object) makes them warnings.
CLEANUP_RELAXED = frozenset(r for r in RULES if r.startswith(("rename-", "drop-")) and r != "drop-index-non-concurrent")

STATEMENT_MAX = 200


class LintSyntaxError(ValueError):
    """The SQL does not parse; ``line`` is 1-based, ``path`` set when known."""

    def __init__(self, message: str, line: int, path: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.path = path


@dataclass(frozen=True)
class Finding:
    """One rule firing on one statement, with the safe rewrite in ``fix``."""

    rule: str
    severity: str
    message: str
    fix: str
    line: int
    statement: str
    path: str = ""
    allowed_reason: str | None = None

    def to_dict(self) -> dict:
        """Plain dict for JSON reports and chat messages."""
        return {
            "file": self.path,
            "line": self.line,
            "statement": self.statement,
            "rule": self.rule,
            "severity": self.severity,
            "message": self.message,
            "fix": self.fix,
            "allowed_reason": self.allowed_reason,
        }


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


@dataclass
class Ctx:
    """What is known before the current statement: created objects, column facts, indexes."""

    server_version_num: int = 150000
    cleanup: bool = False
    created: set[RelKey] = field(default_factory=set)
    created_objects: set[tuple[str, RelKey]] = field(default_factory=set)
    new_indexes: set[str] = field(default_factory=set)
    indexes: dict[str, tuple[RelKey, tuple[str | None, ...]]] = field(default_factory=dict)
    col_types: dict[tuple[RelKey, str], ColType] = field(default_factory=dict)
    not_null: set[tuple[RelKey, str]] = field(default_factory=set)
    checks: dict[tuple[RelKey, str], ast.Node] = field(default_factory=dict)
    valid_checks: set[tuple[RelKey, str]] = field(default_factory=set)
    not_valid_here: set[tuple[RelKey, str]] = field(default_factory=set)
    added_cols: set[tuple[RelKey, str]] = field(default_factory=set)

    def is_new(self, rv: ast.RangeVar) -> bool:
        """Created earlier in this migration: empty, so lock rules do not apply."""
        return rel_key(rv) in self.created

    def index_is_new(self, name: str) -> bool:
        """The index was created earlier in this migration."""
        return name in self.new_indexes

    def index_columns(self, name: str) -> tuple[str | None, ...] | None:
        """Key columns of a known index, None when the index is not known."""
        entry = self.indexes.get(name)
        return entry[1] if entry else None

    def is_not_null(self, key: RelKey, col: str) -> bool:
        """The column is known NOT NULL (declared, SET NOT NULL, or primary key)."""
        return (key, col) in self.not_null

    def has_not_null_check(self, key: RelKey, col: str) -> bool:
        """A validated CHECK proving `col IS NOT NULL`.

        A constraint added by an earlier migration has no definition here; it is
        trusted when its name mentions the column (users_email_not_null), so a
        VALIDATE of some unrelated constraint does not count.
        """
        for table, con in self.valid_checks:
            if table != key:
                continue
            expr = self.checks.get((table, con))
            if _is_not_null_test(expr, col) or (expr is None and col.lower() in con.lower()):
                return True
        return False

    def has_leading_index(self, key: RelKey, cols: list[str]) -> bool:
        """Some known index on the table starts with exactly these columns (any order)."""
        return any(
            table == key and set(idx_cols[: len(cols)]) == set(cols) for table, idx_cols in self.indexes.values()
        )


def _is_not_null_test(expr: ast.Node | None, col: str) -> bool:
    return (
        isinstance(expr, ast.NullTest)
        and expr.nulltesttype == enums.NullTestType.IS_NOT_NULL
        and isinstance(expr.arg, ast.ColumnRef)
        and expr.arg.fields[-1].sval == col
    )


# --------------------------------------------------------------------------
# Learning facts from statements (after each statement's rules ran)
# --------------------------------------------------------------------------


def learn(node: ast.Node, ctx: Ctx) -> None:
    """Record what a statement creates or establishes, for the statements after it."""
    if isinstance(node, ast.CreateStmt):
        _learn_create_table(node, ctx)
    elif isinstance(node, ast.CreateTableAsStmt):
        key = rel_key(node.into.rel)
        ctx.created.add(key)
        ctx.created_objects.add(("view" if node.objtype == OT.OBJECT_MATVIEW else "table", key))
    elif isinstance(node, ast.IndexStmt) and node.idxname:
        ctx.new_indexes.add(node.idxname)
    elif isinstance(node, ast.AlterTableStmt) and node.objtype == OT.OBJECT_TABLE:
        for cmd in node.cmds or ():
            _learn_alter_cmd(rel_key(node.relation), cmd, ctx)
    else:
        created = _created_object(node)
        if created:
            ctx.created_objects.add(created)


def _created_object(node: ast.Node) -> tuple[str, RelKey] | None:
    """(kind, key) of views, sequences, functions, types, triggers and schemas a statement creates."""
    if isinstance(node, ast.ViewStmt):
        return "view", rel_key(node.view)
    if isinstance(node, ast.CreateSeqStmt):
        return "sequence", rel_key(node.sequence)
    if isinstance(node, ast.CreateFunctionStmt):
        return "function", R.obj_key([n.sval for n in node.funcname])
    if isinstance(node, (ast.CreateEnumStmt, ast.CreateDomainStmt)):
        names = node.typeName if isinstance(node, ast.CreateEnumStmt) else node.domainname
        return "type", R.obj_key([n.sval for n in names])
    if isinstance(node, ast.CompositeTypeStmt):
        return "type", rel_key(node.typevar)
    if isinstance(node, ast.CreateTrigStmt):
        return "trigger", (node.relation.relname, node.trigname)
    if isinstance(node, ast.CreateSchemaStmt) and node.schemaname:
        return "schema", ("", node.schemaname)
    return None


def _learn_create_table(node: ast.CreateStmt, ctx: Ctx) -> None:
    key = rel_key(node.relation)
    ctx.created.add(key)
    ctx.created_objects.add(("table", key))
    for elt in node.tableElts or ():
        if isinstance(elt, ast.ColumnDef):
            _learn_column(key, elt, ctx)
        elif isinstance(elt, ast.Constraint):
            _learn_constraint(key, elt, ctx)


def _learn_column(key: RelKey, col: ast.ColumnDef, ctx: Ctx) -> None:
    ctx.col_types[(key, col.colname)] = coltype(col.typeName)
    parts = R.column_constraints(col)
    if col.is_not_null or CT.CONSTR_NOTNULL in parts or CT.CONSTR_PRIMARY in parts:
        ctx.not_null.add((key, col.colname))
    if CT.CONSTR_CHECK in parts and parts[CT.CONSTR_CHECK].conname:
        _learn_constraint(key, parts[CT.CONSTR_CHECK], ctx)


def _learn_constraint(key: RelKey, con: ast.Constraint, ctx: Ctx) -> None:
    if con.contype == CT.CONSTR_PRIMARY:
        cols = [k.sval for k in con.keys or ()] or list(ctx.index_columns(con.indexname or "") or ())
        ctx.not_null.update((key, c) for c in cols if c)
    elif con.contype in (CT.CONSTR_CHECK, CT.CONSTR_FOREIGN) and con.conname:
        if con.contype == CT.CONSTR_CHECK:
            ctx.checks[(key, con.conname)] = con.raw_expr
        if con.skip_validation:
            ctx.not_valid_here.add((key, con.conname))
        elif con.contype == CT.CONSTR_CHECK:
            ctx.valid_checks.add((key, con.conname))


def _learn_alter_cmd(key: RelKey, cmd: ast.AlterTableCmd, ctx: Ctx) -> None:
    col = (key, cmd.name)
    if cmd.subtype == AT.AT_AddColumn:
        ctx.added_cols.add((key, cmd.def_.colname))
        _learn_column(key, cmd.def_, ctx)
    elif cmd.subtype == AT.AT_AddConstraint:
        _learn_constraint(key, cmd.def_, ctx)
    elif cmd.subtype == AT.AT_ValidateConstraint:
        ctx.valid_checks.add(col)
    elif cmd.subtype == AT.AT_SetNotNull:
        ctx.not_null.add(col)
    elif cmd.subtype == AT.AT_DropNotNull:
        ctx.not_null.discard(col)
    elif cmd.subtype == AT.AT_AlterColumnType:
        ctx.col_types[col] = coltype(cmd.def_.typeName)
    elif cmd.subtype == AT.AT_DropColumn:
        ctx.col_types.pop(col, None)
        ctx.not_null.discard(col)


def collect_indexes(nodes: Iterable[ast.Node]) -> dict[str, tuple[RelKey, tuple[str | None, ...]]]:
    """Every index the statements create (CREATE INDEX, PRIMARY KEY, UNIQUE), by name."""
    found: dict[str, tuple[RelKey, tuple[str | None, ...]]] = {}
    for node in nodes:
        if isinstance(node, ast.IndexStmt):
            cols = R.index_columns(node)
            found[node.idxname or f"<{node.relation.relname}:{cols}>"] = (rel_key(node.relation), cols)
        for key, con in _key_constraints(node):
            cols = tuple(k.sval for k in con.keys or ())
            found[con.conname or f"<{key}:{cols}>"] = (key, cols)
    return found


def _key_constraints(node: ast.Node) -> Iterator[tuple[RelKey, ast.Constraint]]:
    """PRIMARY KEY / UNIQUE constraints (table or column level) that build an index."""
    if isinstance(node, ast.CreateStmt):
        key, elts = rel_key(node.relation), node.tableElts or ()
    elif isinstance(node, ast.AlterTableStmt):
        key = rel_key(node.relation)
        elts = [c.def_ for c in node.cmds or () if c.subtype in (AT.AT_AddColumn, AT.AT_AddConstraint)]
    else:
        return
    for elt in elts:
        if isinstance(elt, ast.Constraint) and elt.contype in (CT.CONSTR_PRIMARY, CT.CONSTR_UNIQUE) and not elt.indexname:
            yield key, elt
        elif isinstance(elt, ast.ColumnDef):
            for con in elt.constraints or ():
                if con.contype in (CT.CONSTR_PRIMARY, CT.CONSTR_UNIQUE):
                    yield key, ast.Constraint(contype=con.contype, conname=con.conname, keys=(ast.String(sval=elt.colname),))


def schema_context(schema_sql: str, ctx: Ctx) -> None:
    """Learn existing tables' facts from DDL (e.g. a schema dump) without treating them as new."""
    nodes = [raw.stmt for raw in _parse(schema_sql)]
    ctx.indexes.update(collect_indexes(nodes))
    for node in nodes:
        learn(node, ctx)
    for known in (ctx.created, ctx.created_objects, ctx.new_indexes, ctx.not_valid_here, ctx.added_cols):
        known.clear()


# --------------------------------------------------------------------------
# Parsing: statements, their lines and their comments
# --------------------------------------------------------------------------


def _parse(sql: str) -> tuple:
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
    raws = _parse(sql)
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
# Transactions and ACCESS EXCLUSIVE locks
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


# ALTER TABLE subcommands documented to take less than ACCESS EXCLUSIVE.
_WEAK_SUBCOMMANDS = frozenset(
    {
        AT.AT_ValidateConstraint, AT.AT_SetStatistics, AT.AT_SetOptions, AT.AT_ResetOptions,
        AT.AT_ClusterOn, AT.AT_DropCluster, AT.AT_AttachPartition, AT.AT_EnableTrig, AT.AT_DisableTrig,
        AT.AT_EnableAlwaysTrig, AT.AT_EnableReplicaTrig, AT.AT_EnableTrigAll, AT.AT_DisableTrigAll,
        AT.AT_EnableTrigUser, AT.AT_DisableTrigUser,
    }
)


def access_exclusive_target(node: ast.Node, ctx: Ctx) -> str | None:
    """Name of the existing table this statement takes ACCESS EXCLUSIVE on, if any."""
    targets: list[ast.RangeVar] = []
    if isinstance(node, ast.AlterTableStmt) and node.objtype == OT.OBJECT_TABLE:
        if any(not _weak_cmd(c) for c in node.cmds or ()):
            targets = [node.relation]
    elif isinstance(node, ast.RenameStmt) and node.relation is not None:
        targets = [node.relation]
    elif isinstance(node, (ast.TruncateStmt, ast.LockStmt)):
        if not isinstance(node, ast.LockStmt) or node.mode == enums.AccessExclusiveLock:
            targets = list(node.relations)
    elif isinstance(node, ast.DropStmt) and node.removeType == OT.OBJECT_TABLE:
        targets = [ast.RangeVar(relname=o[-1].sval, schemaname=o[0].sval if len(o) > 1 else None) for o in node.objects]
    elif isinstance(node, ast.ClusterStmt) and node.relation is not None:
        targets = [node.relation]
    elif isinstance(node, ast.VacuumStmt) and any(o.defname == "full" for o in node.options or ()):
        targets = [v.relation for v in node.rels or () if v.relation is not None]
    existing = [t for t in targets if not ctx.is_new(t)]
    return R.rel(existing[0]) if existing else None


def _weak_cmd(cmd: ast.AlterTableCmd) -> bool:
    if cmd.subtype == AT.AT_AddConstraint:
        return cmd.def_.contype == CT.CONSTR_FOREIGN
    if cmd.subtype == AT.AT_DetachPartition:
        return bool(cmd.def_.concurrent)
    return cmd.subtype in _WEAK_SUBCOMMANDS


def lock_held_hits(stmts: list[Stmt]) -> Iterator[tuple[Stmt, Hit]]:
    """First ACCESS EXCLUSIVE statement of each transaction that more statements follow."""
    groups: dict[int, list[Stmt]] = {}
    for st in stmts:
        if st.tx_group is not None and not isinstance(st.node, (ast.TransactionStmt, ast.VariableSetStmt)):
            groups.setdefault(st.tx_group, []).append(st)
    for members in groups.values():
        for i, st in enumerate(members):
            if st.locks is None:
                continue
            rest = len(members) - i - 1
            if rest:
                yield st, Hit(
                    "statements-after-access-exclusive",
                    f"ACCESS EXCLUSIVE on {st.locks} is held while {rest} more statement(s) run in the same transaction",
                    f"SET lock_timeout = '5s';\n{st.text};\n-- move the {rest} statement(s) after it to a separate migration",
                )
            break


# --------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------


def lint_sql(
    sql: str,
    *,
    path: str = "",
    cleanup: bool | None = None,
    server_version_num: int = 150000,
    schema_sql: str = "",
) -> list[Finding]:
    """Findings for one migration's SQL, in file order.

    ``cleanup=None`` reads the ``-- migrate:cleanup`` directive from the text.
    ``schema_sql`` optionally describes existing tables (e.g. a schema dump) so
    type changes, NOT NULL and index facts can be decided without a database.
    Raises LintSyntaxError (with ``.line``) when the SQL does not parse.
    """
    stmts, comments = split_statements(sql)
    # File-level directives count only as `--` comments starting a line, as the applier reads them.
    file_level = list(directives((line, text) for line, text, own in comments if own and text.startswith("--")))
    if cleanup is None:
        cleanup = any(d.kind == "cleanup" for d in file_level)
    ctx = Ctx(server_version_num=server_version_num, cleanup=cleanup)
    if schema_sql:
        schema_context(schema_sql, ctx)
    ctx.indexes.update(collect_indexes(st.node for st in stmts))
    assign_transactions(stmts, runs_in_autocommit(stmts, file_level))
    hits: list[tuple[Stmt, Hit]] = []
    for st in stmts:
        hits.extend((st, hit) for hit in R.check_statement(st, ctx))
        st.locks = access_exclusive_target(st.node, ctx)
        learn(st.node, ctx)
    hits.extend(lock_held_hits(stmts))
    findings = [_finding(st, hit, ctx, path) for st, hit in hits]
    findings.extend(_invalid_directives(directives((line, text) for line, text, _ in comments), path))
    return sorted(findings, key=lambda f: f.line)


def _finding(st: Stmt, hit: Hit, ctx: Ctx, path: str) -> Finding:
    severity = hit.severity or RULES[hit.rule][0]
    if ctx.cleanup and hit.rule in CLEANUP_RELAXED:
        severity = "warning"
    text = st.text if len(st.text) <= STATEMENT_MAX else st.text[: STATEMENT_MAX - 3].rstrip() + "..."
    return Finding(hit.rule, severity, hit.message, hit.fix, st.line, text, path, _allowed(st, hit.rule))


def _allowed(st: Stmt, rule: str) -> str | None:
    """The reason of a valid `migrate:allow` for this rule on this statement."""
    for d in directives(st.comments):
        if d.kind == "allow" and rule in d.rules and d.reason and all(r in RULES for r in d.rules):
            return d.reason
    return None


def _invalid_directives(found: Iterable[Directive], path: str) -> Iterator[Finding]:
    for d in found:
        if d.kind != "allow":
            continue
        unknown = [r for r in d.rules if r not in RULES]
        if d.rules and d.reason and not unknown:
            continue
        problem = f"unknown rule id {', '.join(unknown)}" if unknown else "missing rule id or reason"
        yield Finding(
            "directive-invalid",
            RULES["directive-invalid"][0],
            f"ignored `{d.text}`: {problem}",
            "-- migrate:allow <rule-id> <why this is safe here>   (rule ids: see RULES)",
            d.line,
            d.text,
            path,
        )


def lint_paths(paths: list[str]) -> list[Finding]:
    """Lint files and directories (recursively, *.sql), sorted by file, line, rule."""
    files: set[Path] = set()
    for p in map(Path, paths):
        files.update(p.rglob("*.sql") if p.is_dir() else [p])
    findings: list[Finding] = []
    for file in sorted(files):
        try:
            findings.extend(lint_sql(file.read_text(encoding="utf-8"), path=str(file)))
        except LintSyntaxError as exc:
            raise LintSyntaxError(f"{file}: {exc.message}", exc.line, str(file)) from None
    return sorted(findings, key=lambda f: (f.path, f.line, f.rule))
