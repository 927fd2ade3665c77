"""What the lint knows about columns: their types and the facts a migration establishes.

Two halves of one question, "is this ALTER dangerous given what we know?":

* the type-change table: which ``ALTER COLUMN ... TYPE`` changes PostgreSQL
  does without rewriting the table (binary-coercible casts and typmod
  widenings of built-in types, mirroring its support functions);
* ``Ctx``: what is known before the current statement (tables and objects the
  migration — or, in the gate, the pending set — created, column types, NOT
  NULL columns, validated CHECKs, indexes), learned statement by statement
  with ``learn`` and from DDL that describes the existing database with
  ``schema_context``. One ``Ctx`` is carried from file to file, so a history
  is linted in one pass: nothing is re-parsed.

"New" means invisible to running code: a table created earlier in the same
file — or, in the gate's pending set, earlier in the set — does not exist on
prod, so no query waits for its locks and it has no rows there. A file linted
as the next deploy after a history (``migrate-bot lint DIR``) sees the earlier
files' objects as existing ones (they are on prod, with data).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from pglast import ast, enums

from bot.migrations.lint_ast import AT, CT, OT, RelKey, column_constraints, index_columns, obj_key, rel_key
from bot.migrations.lint_parse import parse
from bot.migrations.sqlfile import Statement


# --------------------------------------------------------------------------
# Column types and which changes PostgreSQL can do without a rewrite
# --------------------------------------------------------------------------

_ALIASES = {
    "int": "int4", "integer": "int4", "bigint": "int8", "smallint": "int2", "decimal": "numeric",
    "boolean": "bool", "real": "float4", "float": "float8", "char": "bpchar", "character": "bpchar",
    "serial4": "serial", "serial8": "bigserial", "serial2": "smallserial",
}
_BUILTIN = frozenset(
    "int2 int4 int8 float4 float8 numeric bool text varchar bpchar date time timetz timestamp timestamptz "
    "interval uuid json jsonb bytea inet cidr macaddr macaddr8 bit varbit money xml tsvector oid "
    "serial bigserial smallserial point line box polygon circle".split()
)
# Targets some other type can reach without a rewrite (binary-coercible or typmod-widening).
_MAYBE_NO_REWRITE = frozenset("text varchar numeric inet varbit timestamp timestamptz time timetz interval".split())
_PRECISION_TYPES = frozenset("timestamp timestamptz time timetz".split())


@dataclass(frozen=True)
class ColType:
    """A normalized column type: canonical name, integer typmods, array flag."""

    name: str
    mods: tuple[int | None, ...] = ()
    array: bool = False
    builtin: bool = True

    @property
    def display(self) -> str:
        """`varchar(100)`-style text for messages."""
        mods = f"({','.join(str(m) for m in self.mods)})" if self.mods else ""
        return f"{self.name}{mods}{'[]' if self.array else ''}"


def coltype(tn: ast.TypeName) -> ColType:
    """Normalize a TypeName: `character varying(20)`, `pg_catalog.varchar(20)` and `varchar(20)` are equal."""
    names = [n.sval for n in tn.names]
    last = names[-1].lower()
    builtin = (len(names) == 2 and names[0] == "pg_catalog") or (len(names) == 1 and (last in _BUILTIN or last in _ALIASES))
    name = _ALIASES.get(last, last) if builtin else ".".join(names)
    mods = tuple(
        m.val.ival if isinstance(m, ast.A_Const) and isinstance(m.val, ast.Integer) else None for m in tn.typmods or ()
    )
    return ColType(name, mods, bool(tn.arrayBounds), builtin and not tn.pct_type)


def type_change_verdict(old: ColType | None, new: ColType, server_version_num: int) -> str:
    """'safe' | 'rewrite' | 'timezone' (UTC-dependent) | 'unknown' (needs the live schema)."""
    if old is None:
        maybe = new.name in _MAYBE_NO_REWRITE or not new.builtin
        return "unknown" if maybe and not new.array else "rewrite"
    if (old.name, old.mods, old.array) == (new.name, new.mods, new.array):
        return "safe"
    if old.array != new.array:
        return "rewrite"
    if not (old.builtin and new.builtin):
        return "unknown"
    return _builtin_change(old, new, server_version_num)


def _builtin_change(old: ColType, new: ColType, server_version_num: int) -> str:
    """Mirror of PostgreSQL's binary-coercion and typmod support functions for built-in types."""
    pair = (old.name, new.name)
    if pair == ("varchar", "text") or (pair == ("text", "varchar") and not new.mods) or pair == ("cidr", "inet"):
        return "safe"
    if old.name == new.name == "numeric":
        return "safe" if _numeric_widens(old.mods, new.mods) else "rewrite"
    if old.name == new.name and old.name in ("varchar", "varbit") or pair == ("bit", "varbit"):
        return "safe" if _widens(old.mods, new.mods) else "rewrite"
    if old.name == new.name and old.name in _PRECISION_TYPES | {"interval"}:
        return "safe" if _widens(old.mods, new.mods, unconstrained=6) else "rewrite"
    if set(pair) == {"timestamp", "timestamptz"}:
        if server_version_num < 120000 or not _widens(old.mods, new.mods, unconstrained=6):
            return "rewrite"
        return "timezone"
    return "rewrite"


def _widens(old: tuple, new: tuple, unconstrained: int | None = None) -> bool:
    """True when the new length/precision limit admits every old value."""
    if not new or new[0] is None:
        return True
    if not old or old[0] is None:
        return unconstrained is not None and new[0] >= unconstrained
    return new[0] >= old[0]


def _numeric_widens(old: tuple, new: tuple) -> bool:
    """numeric(p,s) -> numeric(p2>=p, s) or unconstrained numeric keeps every value's bytes."""
    if not new:
        return True
    if not old or None in old or None in new:
        return False
    old_scale = old[1] if len(old) > 1 else 0
    new_scale = new[1] if len(new) > 1 else 0
    return new_scale == old_scale and new[0] >= old[0]


# --------------------------------------------------------------------------
# Facts known before each statement
# --------------------------------------------------------------------------


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
    not_valid_here: dict[tuple[RelKey, str], tuple[int, int] | None] = field(default_factory=dict)  # -> its transaction
    added_cols: set[tuple[RelKey, str]] = field(default_factory=set)
    known_tables: set[RelKey] = field(default_factory=set)  # exist before the file/set (schema, earlier history)
    file_no: int = 0
    tx: tuple[int, int] | None = None  # the current statement's transaction: (file, tx_group); None = on its own
    recreated: set[tuple[str, RelKey]] = field(default_factory=set)  # re-created later in the current transaction

    def begin_file(self, cleanup: bool, same_set: bool) -> None:
        """A new file. In a pending set (``same_set``) what earlier files created stays new; otherwise (a
        history, linted file by file as the next deploy) it becomes existing: deployed, used, with rows."""
        self.file_no += 1
        self.cleanup = cleanup
        self.not_valid_here.clear()
        if not same_set:
            self.forget_new()

    def forget_new(self) -> None:
        """What was new becomes existing (already deployed)."""
        self.known_tables |= self.created
        for known in (self.created, self.created_objects, self.new_indexes, self.added_cols):
            known.clear()

    def at(self, st: Statement) -> None:
        """Enter a statement: note its transaction."""
        self.tx = (self.file_no, st.tx_group) if st.tx_group is not None else None

    def same_tx_as(self, key: tuple[RelKey, str]) -> bool:
        """The constraint was added NOT VALID in the current statement's transaction."""
        return self.tx is not None and key in self.not_valid_here and self.not_valid_here[key] == self.tx

    def is_new(self, rv: ast.RangeVar) -> bool:
        """Created earlier in this migration (or pending set): not on prod, so lock rules do not apply."""
        return rel_key(rv) in self.created

    def is_new_column(self, key: RelKey, col: str) -> bool:
        """Added earlier in this migration (or pending set), or its table is new: all NULL or default."""
        return key in self.created or (key, col) in self.added_cols

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
    elif isinstance(node, ast.SelectStmt) and node.intoClause is not None:  # SELECT … INTO new_table
        key = rel_key(node.intoClause.rel)
        ctx.created.add(key)
        ctx.created_objects.add(("table", key))
    elif isinstance(node, ast.IndexStmt) and node.idxname:
        ctx.new_indexes.add(node.idxname)
    elif isinstance(node, ast.AlterTableStmt) and node.objtype == OT.OBJECT_TABLE:
        for cmd in node.cmds or ():
            _learn_alter_cmd(rel_key(node.relation), cmd, ctx)
    else:
        created = created_object(node)
        if created:
            ctx.created_objects.add(created)


def created_object(node: ast.Node) -> tuple[str, RelKey] | None:
    """(kind, key) of views, sequences, functions, types, triggers and schemas a statement creates."""
    if isinstance(node, ast.CreateTableAsStmt) and node.objtype == OT.OBJECT_MATVIEW:
        return "view", rel_key(node.into.rel)
    if isinstance(node, ast.ViewStmt):
        return "view", rel_key(node.view)
    if isinstance(node, ast.CreateSeqStmt):
        return "sequence", rel_key(node.sequence)
    if isinstance(node, ast.CreateFunctionStmt):
        return "function", obj_key([n.sval for n in node.funcname])
    if isinstance(node, (ast.CreateEnumStmt, ast.CreateDomainStmt)):
        names = node.typeName if isinstance(node, ast.CreateEnumStmt) else node.domainname
        return "type", obj_key([n.sval for n in names])
    if isinstance(node, ast.CompositeTypeStmt):
        return "type", rel_key(node.typevar)
    if isinstance(node, ast.CreateTrigStmt):
        return "trigger", (node.relation.relname, node.trigname)
    if isinstance(node, ast.CreateSchemaStmt) and node.schemaname:
        return "schema", ("", node.schemaname)
    return None


def _learn_create_table(node: ast.CreateStmt, ctx: Ctx) -> None:
    key = rel_key(node.relation)
    if node.if_not_exists and key in ctx.known_tables and key not in ctx.created:
        return  # CREATE TABLE IF NOT EXISTS of a table that is already there: a no-op
    ctx.created.add(key)
    ctx.created_objects.add(("table", key))
    for elt in node.tableElts or ():
        if isinstance(elt, ast.ColumnDef):
            _learn_column(key, elt, ctx)
        elif isinstance(elt, ast.Constraint):
            _learn_constraint(key, elt, ctx)


def _learn_column(key: RelKey, col: ast.ColumnDef, ctx: Ctx) -> None:
    ctx.col_types[(key, col.colname)] = coltype(col.typeName)
    parts = column_constraints(col)
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
            ctx.not_valid_here[(key, con.conname)] = ctx.tx
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
            cols = index_columns(node)
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
    nodes = parse(schema_sql)
    ctx.indexes.update(collect_indexes(nodes))
    for node in nodes:
        learn(node, ctx)
    ctx.forget_new()
    ctx.not_valid_here.clear()
