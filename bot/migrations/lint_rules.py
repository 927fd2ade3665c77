"""The hazards themselves: one function per rule, reading pglast AST nodes.

``lint.py`` owns parsing, comments, directives and transaction boundaries; this
module only answers "is this statement dangerous, given what the migration has
done so far?" and says how to do it safely. Rules yield ``Hit``s (rule id,
message, fix); the driver adds line numbers, statement text and directives.

Everything is decided on PostgreSQL's own parse tree (pglast), never on the
SQL text, so quoting, ``IF EXISTS``, ``ONLY``, schema-qualified names and
comments inside statements cannot fool a rule. Fixes are deparsed from the
statement's own nodes so they carry its real (correctly quoted) names.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pglast import ast, enums
from pglast.stream import RawStream, maybe_double_quote_name

if TYPE_CHECKING:  # the driver owns these; imported for annotations only (no import cycle)
    from bot.migrations.lint import Ctx, Stmt

AT = enums.AlterTableType
CT = enums.ConstrType
OT = enums.ObjectType


@dataclass(frozen=True)
class Hit:
    """A rule firing on one statement; ``severity`` None means the RULES default."""

    rule: str
    message: str
    fix: str
    severity: str | None = None


Check = Callable[[ast.Node, "Stmt", "Ctx"], Iterator[Hit]]
CmdCheck = Callable[[ast.AlterTableStmt, ast.AlterTableCmd, "Stmt", "Ctx"], Iterator[Hit]]


# --------------------------------------------------------------------------
# AST helpers shared with the driver
# --------------------------------------------------------------------------

RelKey = tuple[str, str]


def obj_key(names: list[str]) -> RelKey:
    """(schema or "", name) for a dotted name; "public" and unqualified compare equal."""
    schema = names[-2] if len(names) >= 2 else ""
    return ("" if schema == "public" else schema, names[-1])


def rel_key(rv: ast.RangeVar) -> RelKey:
    """Comparable key of a RangeVar (quoted names keep their case, as PostgreSQL does)."""
    return obj_key([rv.schemaname, rv.relname] if rv.schemaname else [rv.relname])


def walk(node: object) -> Iterator[ast.Node]:
    """Every AST node below (and including) ``node``."""
    if isinstance(node, ast.Node):
        yield node
        for attr in node:
            yield from walk(getattr(node, attr))
    elif isinstance(node, (tuple, list)):
        for item in node:
            yield from walk(item)


def column_constraints(col: ast.ColumnDef) -> dict[CT, ast.Constraint]:
    """A column's inline constraints by kind (last one wins, as in PostgreSQL)."""
    return {c.contype: c for c in col.constraints or ()}


def fk_columns(con: ast.Constraint) -> list[str]:
    """Referencing columns of a table-level FOREIGN KEY constraint."""
    return [a.sval for a in con.fk_attrs or ()]


def index_columns(node: ast.IndexStmt) -> tuple[str | None, ...]:
    """Key columns of an index; expressions are None (they never lead an FK lookup)."""
    return tuple(e.name for e in node.indexParams or ())


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
# SQL rendering helpers: deparse the statement's own nodes so fixes carry
# its real, correctly quoted names. Fix builders copy a node shallowly and
# only ever *replace* its attributes, so the parsed statement stays intact.
# --------------------------------------------------------------------------


def sql(node: ast.Node) -> str:
    """Deparse an AST node back to SQL text."""
    return RawStream()(node)


def q(name: str) -> str:
    """Quote an identifier only when PostgreSQL needs it."""
    return maybe_double_quote_name(name)


def rel(rv: ast.RangeVar) -> str:
    """A relation's name as written (schema-qualified, quoted), without ONLY."""
    return ".".join(q(part) for part in (rv.catalogname, rv.schemaname, rv.relname) if part)


def alter(stmt: ast.AlterTableStmt, *cmds: ast.AlterTableCmd) -> str:
    """The statement's own ALTER TABLE header (IF EXISTS, ONLY, name) with other subcommands."""
    clone = copy.copy(stmt)
    clone.cmds = tuple(cmds)
    return sql(clone) + ";"


def _cmd(subtype: AT, **kw: object) -> ast.AlterTableCmd:
    return ast.AlterTableCmd(subtype=subtype, behavior=enums.DropBehavior.DROP_RESTRICT, **kw)


def _validate(stmt: ast.AlterTableStmt, conname: str) -> str:
    return alter(stmt, _cmd(AT.AT_ValidateConstraint, name=conname))


def _not_null_steps(stmt: ast.AlterTableStmt, col: str, value: str = "<value>") -> str:
    """The PG12+ online NOT NULL sequence for one column."""
    table = stmt.relation.relname
    con = f"{table}_{col}_not_null"
    check = ast.Constraint(
        contype=CT.CONSTR_CHECK,
        conname=con,
        raw_expr=ast.NullTest(arg=_colref(col), nulltesttype=enums.NullTestType.IS_NOT_NULL),
        skip_validation=True,
        initially_valid=False,
        is_enforced=True,
    )
    return _lines(
        alter(stmt, _cmd(AT.AT_AddConstraint, def_=check)),
        f"UPDATE {rel(stmt.relation)} SET {q(col)} = {value} WHERE {q(col)} IS NULL;  -- backfill, in batches",
        "-- then, in a separate migration:",
        _validate(stmt, con),
        alter(stmt, _cmd(AT.AT_SetNotNull, name=col)),
        alter(stmt, _cmd(AT.AT_DropConstraint, name=con)),
    )


def _colref(col: str) -> ast.ColumnRef:
    return ast.ColumnRef(fields=(ast.String(sval=col),))


def _cols(names: tuple[str, ...] | list[str]) -> str:
    return ", ".join(q(n) for n in names)


# --------------------------------------------------------------------------
# Indexes, REINDEX, DETACH PARTITION, CONCURRENTLY
# --------------------------------------------------------------------------


def check_create_index(node: ast.IndexStmt, st: Stmt, ctx: Ctx) -> Iterator[Hit]:
    """Non-concurrent index builds hold a SHARE lock: every write waits for the build."""
    if node.concurrent:
        yield from _concurrently_in_tx(st, "CREATE INDEX CONCURRENTLY")
        return
    if ctx.is_new(node.relation):
        return
    fixed = copy.copy(node)
    fixed.concurrent = True
    kind = "UNIQUE INDEX" if node.unique else "INDEX"
    yield Hit(
        "create-index-non-concurrent",
        f"CREATE {kind} {node.idxname or '(unnamed)'} on existing table {rel(node.relation)} "
        "without CONCURRENTLY blocks all writes to it for the whole build",
        sql(fixed) + ";\n-- the applier runs files with CONCURRENTLY outside a transaction; do not add BEGIN/COMMIT",
    )


def check_reindex(node: ast.ReindexStmt, st: Stmt, ctx: Ctx) -> Iterator[Hit]:
    """REINDEX without CONCURRENTLY locks out writes and index reads during the rebuild."""
    if any(p.defname == "concurrently" for p in node.params or ()):
        yield from _concurrently_in_tx(st, "REINDEX CONCURRENTLY")
        return
    target = node.relation
    if target is not None and (ctx.is_new(target) or ctx.index_is_new(target.relname)):
        return
    name = rel(target) if target is not None else q(node.name or "")
    kind = enums.ReindexObjectType(node.kind).name.removeprefix("REINDEX_OBJECT_")
    fix = f"REINDEX {kind} CONCURRENTLY {name};"
    if ctx.server_version_num < 120000:
        fix = "-- REINDEX CONCURRENTLY needs PostgreSQL 12+: build a replacement with CREATE INDEX CONCURRENTLY,\n-- then DROP INDEX CONCURRENTLY the old one and rename the new one"
    yield Hit("reindex-non-concurrent", f"REINDEX {name} without CONCURRENTLY blocks writes while it rebuilds", fix)


def check_drop_index(node: ast.DropStmt, st: Stmt, ctx: Ctx) -> Iterator[Hit]:
    """DROP INDEX takes ACCESS EXCLUSIVE on the table: even reads queue behind it."""
    if node.concurrent:
        yield from _concurrently_in_tx(st, "DROP INDEX CONCURRENTLY")
        return
    names = [_dotted(o) for o in node.objects]
    existing = [o for o in node.objects if not ctx.index_is_new(o[-1].sval)]
    if not existing:
        return
    if_exists = "IF EXISTS " if node.missing_ok else ""
    fix = "\n".join(f"DROP INDEX CONCURRENTLY {if_exists}{_dotted(o)};" for o in existing)
    if node.behavior == enums.DropBehavior.DROP_CASCADE:
        fix += "\n-- CONCURRENTLY does not support CASCADE: drop the dependent objects first"
    yield Hit(
        "drop-index-non-concurrent",
        f"DROP INDEX {', '.join(names)} without CONCURRENTLY takes ACCESS EXCLUSIVE on its table",
        fix,
    )


def _check_detach(stmt: ast.AlterTableStmt, cmd: ast.AlterTableCmd, st: Stmt, ctx: Ctx) -> Iterator[Hit]:
    """DETACH PARTITION (non-concurrent) locks the whole partitioned table."""
    part = cmd.def_
    if part.concurrent:
        yield from _concurrently_in_tx(st, "DETACH PARTITION CONCURRENTLY")
        return
    if ctx.is_new(stmt.relation):
        return
    fixed = copy.copy(cmd)
    fixed.def_ = copy.copy(part)
    fixed.def_.concurrent = True
    yield Hit(
        "detach-partition-non-concurrent",
        f"DETACH PARTITION {rel(part.name)} from {rel(stmt.relation)} without CONCURRENTLY "
        f"takes ACCESS EXCLUSIVE on {rel(stmt.relation)}",
        alter(stmt, fixed) + "\n-- needs PostgreSQL 14+ and must run outside a transaction (the applier does this)",
    )


def _concurrently_in_tx(st: Stmt, what: str) -> Iterator[Hit]:
    if st.explicit_tx:
        yield Hit(
            "concurrently-in-transaction",
            f"{what} inside an explicit BEGIN ... COMMIT block fails (it cannot run in a transaction)",
            "-- remove the BEGIN/COMMIT around it; the applier runs files with CONCURRENTLY outside a transaction\n"
            + st.text.rstrip(";") + ";",
        )


# --------------------------------------------------------------------------
# ALTER TABLE subcommands
# --------------------------------------------------------------------------


def check_alter_table(node: ast.AlterTableStmt, st: Stmt, ctx: Ctx) -> Iterator[Hit]:
    """Dispatch each ALTER TABLE subcommand to its rules."""
    if node.objtype != OT.OBJECT_TABLE:  # views, indexes, foreign tables hold no local rows
        return
    for cmd in node.cmds or ():
        for check in CMD_CHECKS.get(cmd.subtype, ()):
            yield from check(node, cmd, st, ctx)


def _check_add_column(stmt: ast.AlterTableStmt, cmd: ast.AlterTableCmd, st: Stmt, ctx: Ctx) -> Iterator[Hit]:
    """ADD COLUMN is instant on PG11+ only with a constant, non-volatile default and no scans."""
    col: ast.ColumnDef = cmd.def_
    yield from _json_column(stmt, col, cmd)
    if ctx.is_new(stmt.relation):
        return
    parts = column_constraints(col)
    typ = coltype(col.typeName)
    if typ.name in ("serial", "bigserial", "smallserial") or CT.CONSTR_IDENTITY in parts:
        yield _serial_hit(stmt, col, typ)
    elif CT.CONSTR_GENERATED in parts:
        yield _generated_hit(stmt, col, parts[CT.CONSTR_GENERATED])
    else:
        default = parts.get(CT.CONSTR_DEFAULT)
        has_default = default is not None and not _is_null_const(default.raw_expr)
        if (col.is_not_null or CT.CONSTR_NOTNULL in parts or CT.CONSTR_PRIMARY in parts) and not has_default:
            yield _not_null_no_default_hit(stmt, col)
        if has_default:
            yield from _volatile_default(stmt, col, default.raw_expr, ctx)
    yield from _inline_constraints(stmt, col, parts)


def _serial_hit(stmt: ast.AlterTableStmt, col: ast.ColumnDef, typ: ColType) -> Hit:
    table, name = rel(stmt.relation), q(col.colname)
    seq = f"{stmt.relation.relname}_{col.colname}_seq"
    base = {"serial": "integer", "smallserial": "smallint"}.get(typ.name, "bigint")
    fix = _lines(
        f"CREATE SEQUENCE {q(seq)};",
        f"ALTER TABLE {table} ADD COLUMN {name} {base};",
        f"ALTER TABLE {table} ALTER COLUMN {name} SET DEFAULT nextval('{seq}');",
        f"ALTER SEQUENCE {q(seq)} OWNED BY {table}.{name};",
        "-- then number existing rows in batches (separate migration or job):",
        f"UPDATE {table} SET {name} = nextval('{seq}') WHERE {name} IS NULL;",
    )
    message = f"ADD COLUMN {col.colname} {sql(col.typeName)} on {table} fills every existing row, rewriting the table"
    return Hit("add-column-serial-or-identity", message, fix)


def _generated_hit(stmt: ast.AlterTableStmt, col: ast.ColumnDef, con: ast.Constraint) -> Hit:
    expr, name = sql(con.raw_expr), q(col.colname)
    fix = _lines(
        alter(stmt, _cmd(AT.AT_AddColumn, def_=_without(col, *CT))),
        f"-- keep it current with a BEFORE INSERT OR UPDATE trigger (NEW.{name} := {expr}), then backfill in batches:",
        f"UPDATE {rel(stmt.relation)} SET {name} = {expr} WHERE {name} IS NULL;",
    )
    message = f"ADD COLUMN {col.colname} GENERATED ALWAYS AS ({expr}) STORED computes every row of {rel(stmt.relation)}, rewriting it"
    return Hit("add-column-generated-stored", message, fix)


def _not_null_no_default_hit(stmt: ast.AlterTableStmt, col: ast.ColumnDef) -> Hit:
    placeholder = ast.Constraint(contype=CT.CONSTR_DEFAULT, raw_expr=_colref("<value>"))
    with_default = _without(col, CT.CONSTR_DEFAULT)
    with_default.constraints = (*(with_default.constraints or ()), placeholder)
    fix = _lines(
        alter(stmt, _cmd(AT.AT_AddColumn, def_=with_default)).replace('"<value>"', "<value>"),
        "-- or add it nullable, backfill, then enforce NOT NULL online:",
        alter(stmt, _cmd(AT.AT_AddColumn, def_=_without(col, CT.CONSTR_NOTNULL))),
        _not_null_steps(stmt, col.colname),
    )
    message = f"ADD COLUMN {col.colname} NOT NULL without a DEFAULT fails if {rel(stmt.relation)} has any rows"
    return Hit("add-column-not-null-without-default", message, fix)


def _volatile_default(stmt: ast.AlterTableStmt, col: ast.ColumnDef, expr: ast.Node, ctx: Ctx) -> Iterator[Hit]:
    """PG11+ stores a non-volatile default in the catalog; a volatile one is computed per row."""
    verdict, fname = default_volatility(expr)
    if ctx.server_version_num < 110000:
        verdict, why = "volatile", "every DEFAULT rewrites before PostgreSQL 11"
    else:
        why = f"{fname} is volatile"
    if verdict == "stable":
        return
    default, name = sql(expr), q(col.colname)
    not_null = col.is_not_null or CT.CONSTR_NOTNULL in column_constraints(col)
    fix = _lines(
        alter(stmt, _cmd(AT.AT_AddColumn, def_=_without(col, CT.CONSTR_DEFAULT, CT.CONSTR_NOTNULL))),
        alter(stmt, _cmd(AT.AT_ColumnDefault, name=col.colname, def_=expr)),
        "-- then backfill existing rows in batches (separate migration or job):",
        f"UPDATE {rel(stmt.relation)} SET {name} = {default} WHERE {name} IS NULL;",
        _not_null_steps(stmt, col.colname, default) if not_null else "",
    )
    if verdict == "volatile":
        message = f"ADD COLUMN {col.colname} DEFAULT {default} on {rel(stmt.relation)} rewrites the table ({why})"
        yield Hit("add-column-volatile-default", message, fix)
    else:
        message = (
            f"ADD COLUMN {col.colname} DEFAULT {default}: cannot tell statically whether {fname} is volatile "
            f"(a volatile default rewrites {rel(stmt.relation)})"
        )
        yield Hit("add-column-volatile-default", message, fix, severity="warning")


def _without(col: ast.ColumnDef, *kinds: CT) -> ast.ColumnDef:
    """A copy of the column definition without the given kinds of inline constraint."""
    plain = copy.copy(col)
    plain.constraints = tuple(c for c in col.constraints or () if c.contype not in kinds) or None
    if CT.CONSTR_NOTNULL in kinds:
        plain.is_not_null = False
    return plain


def _lines(*parts: str) -> str:
    """Fix text: the non-empty parts, one per line."""
    return "\n".join(p for p in parts if p)


VOLATILE_FUNCS = frozenset(
    "random random_normal clock_timestamp timeofday gen_random_uuid gen_random_bytes uuid_generate_v1 "
    "uuid_generate_v1mc uuid_generate_v4 uuid_generate_v7 uuidv4 uuidv7 nextval setval txid_current "
    "pg_current_xact_id gen_salt".split()
)
NON_VOLATILE_FUNCS = frozenset(
    "now transaction_timestamp statement_timestamp current_date lower upper btrim trim concat length md5 "
    "to_jsonb to_json jsonb_build_object jsonb_build_array json_build_object array_fill make_interval "
    "make_date make_timestamp make_timestamptz date_trunc timezone to_timestamp to_date to_char abs round "
    "uuid_nil int4 int8 numeric text jsonb array_to_json row_to_json replace substr substring format".split()
)


def default_volatility(expr: ast.Node) -> tuple[str, str]:
    """('volatile'|'unknown'|'stable', function name) for a DEFAULT expression."""
    unknown = ""
    for node in walk(expr):
        if isinstance(node, ast.FuncCall):
            name = node.funcname[-1].sval.lower()
            schema = node.funcname[0].sval.lower() if len(node.funcname) > 1 else "pg_catalog"
            if name in VOLATILE_FUNCS:
                return "volatile", f"{name}()"
            if name not in NON_VOLATILE_FUNCS or schema != "pg_catalog":
                unknown = unknown or ".".join(n.sval for n in node.funcname) + "()"
    return ("unknown", unknown) if unknown else ("stable", "")


def _is_null_const(expr: ast.Node | None) -> bool:
    return isinstance(expr, ast.A_Const) and bool(expr.isnull)


def _inline_constraints(stmt: ast.AlterTableStmt, col: ast.ColumnDef, parts: dict) -> Iterator[Hit]:
    """Inline REFERENCES / CHECK / UNIQUE / PRIMARY KEY on ADD COLUMN cannot be NOT VALID or concurrent."""
    inline = (CT.CONSTR_FOREIGN, CT.CONSTR_CHECK, CT.CONSTR_UNIQUE, CT.CONSTR_PRIMARY)
    if not any(kind in parts for kind in inline):
        return
    table = stmt.relation.relname
    add_plain = alter(stmt, _cmd(AT.AT_AddColumn, def_=_without(col, *inline)))
    if CT.CONSTR_FOREIGN in parts:
        con = copy.copy(parts[CT.CONSTR_FOREIGN])
        con.fk_attrs = (ast.String(sval=col.colname),)
        con.conname = con.conname or f"{table}_{col.colname}_fkey"
        yield _fk_hit(stmt, con, prefix=add_plain)
    if CT.CONSTR_CHECK in parts:
        con = copy.copy(parts[CT.CONSTR_CHECK])
        con.conname = con.conname or f"{table}_{col.colname}_check"
        yield _check_hit(stmt, con, prefix=add_plain)
    for kind in (CT.CONSTR_PRIMARY, CT.CONSTR_UNIQUE):
        if kind in parts:
            con = copy.copy(parts[kind])
            con.keys = (ast.String(sval=col.colname),)
            yield _unique_hit(stmt, con, prefix=add_plain)


def _check_add_constraint(stmt: ast.AlterTableStmt, cmd: ast.AlterTableCmd, st: Stmt, ctx: Ctx) -> Iterator[Hit]:
    """Constraints on existing tables must be added NOT VALID or from a concurrently built index."""
    con: ast.Constraint = cmd.def_
    if ctx.is_new(stmt.relation):
        return
    if con.contype == CT.CONSTR_FOREIGN and not con.skip_validation:
        named = copy.copy(con)
        named.conname = con.conname or f"{stmt.relation.relname}_{'_'.join(fk_columns(con))}_fkey"
        yield _fk_hit(stmt, named)
    elif con.contype == CT.CONSTR_CHECK and not con.skip_validation:
        named = copy.copy(con)
        named.conname = con.conname or f"{stmt.relation.relname}_check"
        yield _check_hit(stmt, named)
    elif con.contype in (CT.CONSTR_PRIMARY, CT.CONSTR_UNIQUE, CT.CONSTR_EXCLUSION) and not con.indexname:
        yield _unique_hit(stmt, con)
    elif con.contype == CT.CONSTR_PRIMARY:
        yield from _pk_using_index(stmt, con, ctx)


def _fk_hit(stmt: ast.AlterTableStmt, con: ast.Constraint, prefix: str = "") -> Hit:
    fixed = copy.copy(con)
    fixed.skip_validation, fixed.initially_valid = True, False
    fix = alter(stmt, _cmd(AT.AT_AddConstraint, def_=fixed)) + "\n-- then, in a separate migration:\n" + _validate(stmt, fixed.conname)
    return Hit(
        "add-foreign-key-without-not-valid",
        f"FOREIGN KEY {fixed.conname} on {rel(stmt.relation)} ({_cols(fk_columns(con))}) -> {rel(con.pktable)} "
        "is validated at once: a full scan while writes to both tables are blocked",
        (prefix + "\n" if prefix else "") + fix,
    )


def _check_hit(stmt: ast.AlterTableStmt, con: ast.Constraint, prefix: str = "") -> Hit:
    fixed = copy.copy(con)
    fixed.skip_validation, fixed.initially_valid = True, False
    fix = alter(stmt, _cmd(AT.AT_AddConstraint, def_=fixed)) + "\n-- then, in a separate migration:\n" + _validate(stmt, fixed.conname)
    return Hit(
        "add-check-without-not-valid",
        f"CHECK {fixed.conname} ({sql(con.raw_expr)}) on {rel(stmt.relation)} is validated at once: "
        "a full scan under ACCESS EXCLUSIVE",
        (prefix + "\n" if prefix else "") + fix,
    )


def _unique_hit(stmt: ast.AlterTableStmt, con: ast.Constraint, prefix: str = "") -> Hit:
    table = stmt.relation.relname
    keys = [k.sval for k in con.keys or ()]
    kind = {CT.CONSTR_PRIMARY: "PRIMARY KEY", CT.CONSTR_UNIQUE: "UNIQUE", CT.CONSTR_EXCLUSION: "EXCLUDE"}[con.contype]
    name = con.conname or (f"{table}_pkey" if con.contype == CT.CONSTR_PRIMARY else f"{table}_{'_'.join(keys)}_key")
    message = f"{kind} {name} on {rel(stmt.relation)} builds its index in place under ACCESS EXCLUSIVE"
    if con.contype == CT.CONSTR_EXCLUSION:
        fix = (
            "-- EXCLUDE constraints cannot be attached from a concurrently built index:\n"
            "-- run this in a maintenance window and mark it with\n"
            f"-- migrate:allow add-unique-constraint-in-place <reason>\n{alter(stmt, _cmd(AT.AT_AddConstraint, def_=con))}"
        )
        return Hit("add-unique-constraint-in-place", message, fix)
    using = ast.Constraint(contype=con.contype, conname=name, indexname=name, is_enforced=True)
    lines = [prefix] if prefix else []
    if con.contype == CT.CONSTR_PRIMARY:
        lines.append(f"-- the key columns ({_cols(keys)}) must be NOT NULL first (see set-not-null-without-check)")
    lines += [
        f"CREATE UNIQUE INDEX CONCURRENTLY {q(name)} ON {rel(stmt.relation)} ({_cols(keys)});",
        "-- then, in the next migration:",
        alter(stmt, _cmd(AT.AT_AddConstraint, def_=using)),
    ]
    return Hit("add-unique-constraint-in-place", message, "\n".join(lines))


def _pk_using_index(stmt: ast.AlterTableStmt, con: ast.Constraint, ctx: Ctx) -> Iterator[Hit]:
    key = rel_key(stmt.relation)
    cols = ctx.index_columns(con.indexname)
    nullable = [c for c in cols or () if not ctx.is_not_null(key, c)] if cols else None
    if cols and not nullable:
        return
    what = f"columns ({_cols(nullable)}) are" if nullable else f"the columns of index {con.indexname} are"
    if nullable:
        steps = "\n".join(_not_null_steps(stmt, c) for c in nullable)
    else:
        steps = f"-- for each key column of {con.indexname} not yet NOT NULL, first run the CHECK ... NOT VALID / VALIDATE / SET NOT NULL sequence"
    yield Hit(
        "add-primary-key-nullable-columns",
        f"ADD PRIMARY KEY USING INDEX {con.indexname} on {rel(stmt.relation)}: {what} not known NOT NULL, "
        "so it scans the table under ACCESS EXCLUSIVE",
        steps + "\n" + alter(stmt, _cmd(AT.AT_AddConstraint, def_=con)),
    )


def _check_validate(stmt: ast.AlterTableStmt, cmd: ast.AlterTableCmd, st: Stmt, ctx: Ctx) -> Iterator[Hit]:
    """VALIDATE right after ADD ... NOT VALID keeps the ADD's lock during the scan."""
    if (rel_key(stmt.relation), cmd.name) in ctx.not_valid_here and not ctx.is_new(stmt.relation):
        yield Hit(
            "validate-constraint-same-migration",
            f"VALIDATE CONSTRAINT {cmd.name} on {rel(stmt.relation)} in the migration that added it NOT VALID: "
            "the scan runs while the ADD's lock is still held",
            "-- move it to a separate, later migration:\n" + alter(stmt, cmd),
        )


def _check_set_not_null(stmt: ast.AlterTableStmt, cmd: ast.AlterTableCmd, st: Stmt, ctx: Ctx) -> Iterator[Hit]:
    """SET NOT NULL scans the table under ACCESS EXCLUSIVE unless a validated CHECK proves it (PG12+)."""
    key = rel_key(stmt.relation)
    if ctx.is_new(stmt.relation) or ctx.is_not_null(key, cmd.name) or ctx.has_not_null_check(key, cmd.name):
        return
    yield Hit(
        "set-not-null-without-check",
        f"SET NOT NULL on {rel(stmt.relation)}.{q(cmd.name)} scans the whole table under ACCESS EXCLUSIVE "
        f"(no validated CHECK ({q(cmd.name)} IS NOT NULL) first)",
        _not_null_steps(stmt, cmd.name),
    )


def _check_alter_type(stmt: ast.AlterTableStmt, cmd: ast.AlterTableCmd, st: Stmt, ctx: Ctx) -> Iterator[Hit]:
    """Only binary-coercible type changes skip the rewrite; USING always rewrites."""
    coldef: ast.ColumnDef = cmd.def_
    if coltype(coldef.typeName).name == "json":
        yield _jsonb_hit(stmt, cmd, coldef.typeName)
    if ctx.is_new(stmt.relation):
        return
    new = coltype(coldef.typeName)
    old = ctx.col_types.get((rel_key(stmt.relation), cmd.name))
    verdict = "rewrite" if coldef.raw_default is not None else type_change_verdict(old, new, ctx.server_version_num)
    if verdict == "safe":
        return
    target = f"{rel(stmt.relation)}.{q(cmd.name)}"
    source = f" from {old.display}" if old else ""
    if verdict == "timezone":
        yield Hit(
            "alter-column-type-timezone",
            f"{target}{source} TYPE {sql(coldef.typeName)} skips the rewrite only if the session TimeZone is UTC",
            f"SET TimeZone = 'UTC';\n{alter(stmt, cmd)}",
        )
    elif verdict == "unknown":
        yield Hit(
            "alter-column-type-unverified",
            f"{target} TYPE {sql(coldef.typeName)}: current type unknown here; it rewrites unless the change is binary-coercible",
            _type_check_fix(stmt, cmd.name) + "\n" + alter(stmt, cmd),
        )
    else:
        why = "USING always rewrites" if coldef.raw_default is not None else "not binary-coercible"
        yield Hit(
            "alter-column-type-rewrite",
            f"{target}{source} TYPE {sql(coldef.typeName)} rewrites the table and its indexes under ACCESS EXCLUSIVE ({why})",
            _expand_contract_fix(stmt, cmd),
        )


def _type_check_fix(stmt: ast.AlterTableStmt, col: str) -> str:
    regclass = rel(stmt.relation).replace("'", "''")
    return (
        "-- no rewrite only for binary-coercible changes: varchar(n)->text/varchar(m>=n), numeric(p,s)->numeric(p2>=p,s),\n"
        "-- text->varchar, cidr->inet, varbit(n)->varbit(m>=n); check the current type first:\n"
        f"SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = '{regclass}'::regclass AND attname = '{col}';"
    )


def _expand_contract_fix(stmt: ast.AlterTableStmt, cmd: ast.AlterTableCmd) -> str:
    col, coldef = cmd.name, cmd.def_
    new_col = f"{col}_new"
    value = sql(coldef.raw_default) if coldef.raw_default is not None else f"{q(col)}::{sql(coldef.typeName)}"
    table = rel(stmt.relation)
    return _lines(
        f"ALTER TABLE {table} ADD COLUMN {q(new_col)} {sql(coldef.typeName)};",
        f"-- keep {q(new_col)} in sync (dual-write or trigger), then backfill in batches:",
        f"UPDATE {table} SET {q(new_col)} = {value} WHERE {q(new_col)} IS NULL;",
        "-- switch readers, then swap names in a -- migrate:cleanup migration:",
        f"ALTER TABLE {table} RENAME COLUMN {q(col)} TO {q(col + '_old')};",
        f"ALTER TABLE {table} RENAME COLUMN {q(new_col)} TO {q(col)};",
    )


def _check_drop_column(stmt: ast.AlterTableStmt, cmd: ast.AlterTableCmd, st: Stmt, ctx: Ctx) -> Iterator[Hit]:
    """Running code that still selects/inserts the column errors as soon as it is gone."""
    key = rel_key(stmt.relation)
    if ctx.is_new(stmt.relation) or (key, cmd.name) in ctx.added_cols:
        return
    yield Hit(
        "drop-column",
        f"DROP COLUMN {rel(stmt.relation)}.{q(cmd.name)} breaks running code that still reads or writes it",
        _cleanup_fix(f"{rel(stmt.relation)}.{q(cmd.name)}", alter(stmt, cmd)),
    )


def _cleanup_fix(what: str, statement: str) -> str:
    return f"-- first deploy code that no longer uses {what}, then run this in its own migration:\n-- migrate:cleanup\n{statement}"


def _json_column(stmt: ast.AlterTableStmt, col: ast.ColumnDef, cmd: ast.AlterTableCmd) -> Iterator[Hit]:
    if col.typeName is not None and coltype(col.typeName).name == "json":
        yield _jsonb_hit(stmt, cmd, col.typeName, col.colname)


def _jsonb_type(typ: ast.TypeName) -> ast.TypeName:
    return ast.TypeName(names=(ast.String(sval="jsonb"),), arrayBounds=typ.arrayBounds, typemod=-1)


def _jsonb_hit(stmt: ast.AlterTableStmt, cmd: ast.AlterTableCmd, typ: ast.TypeName, colname: str | None = None) -> Hit:
    fixed = copy.copy(cmd)
    fixed.def_ = copy.copy(cmd.def_)
    fixed.def_.typeName = _jsonb_type(typ)
    colname = colname or cmd.name
    return Hit("prefer-jsonb", f"column {colname} on {rel(stmt.relation)} uses json; use jsonb", alter(stmt, fixed))


# --------------------------------------------------------------------------
# Whole-statement rules
# --------------------------------------------------------------------------


def check_create_table(node: ast.CreateStmt, st: Stmt, ctx: Ctx) -> Iterator[Hit]:
    """New tables only get the json advice: no lock hazards on an empty table."""
    json_cols = [
        i for i, elt in enumerate(node.tableElts or ())
        if isinstance(elt, ast.ColumnDef) and elt.typeName is not None and coltype(elt.typeName).name == "json"
    ]
    if not json_cols:
        return
    fixed = copy.copy(node)
    fixed.tableElts = tuple(copy.copy(elt) for elt in node.tableElts)
    for i in json_cols:
        fixed.tableElts[i].typeName = _jsonb_type(node.tableElts[i].typeName)
    for i in json_cols:
        col = node.tableElts[i].colname
        yield Hit("prefer-jsonb", f"column {col} on {rel(node.relation)} uses json; use jsonb", sql(fixed) + ";")


def check_rename(node: ast.RenameStmt, st: Stmt, ctx: Ctx) -> Iterator[Hit]:
    """Renames break every running query that uses the old name."""
    kind = node.renameType
    if kind == OT.OBJECT_COLUMN:
        yield from _rename_column(node, ctx)
    elif kind in (OT.OBJECT_TABLE, OT.OBJECT_VIEW, OT.OBJECT_MATVIEW, OT.OBJECT_FOREIGN_TABLE):
        if ctx.is_new(node.relation):
            return
        old, new = rel(node.relation), q(node.newname)
        schema = f"{q(node.relation.schemaname)}." if node.relation.schemaname else ""
        yield Hit(
            "rename-table",
            f"RENAME {old} TO {new} breaks running code that still uses {old}",
            f"{sql(node)};\nCREATE VIEW {old} AS SELECT * FROM {schema}{new};  -- old name keeps working (auto-updatable)\n"
            f"-- drop the view in a -- migrate:cleanup migration once no code uses {old}",
        )
    elif kind == OT.OBJECT_SCHEMA and ("schema", ("", node.subname)) not in ctx.created_objects:
        yield Hit(
            "rename-schema",
            f"RENAME SCHEMA {q(node.subname)} TO {q(node.newname)} breaks every query qualified with {q(node.subname)}",
            _cleanup_fix(f"schema {q(node.subname)}", sql(node) + ";"),
        )


def _rename_column(node: ast.RenameStmt, ctx: Ctx) -> Iterator[Hit]:
    key = rel_key(node.relation)
    if ctx.is_new(node.relation) or (key, node.subname) in ctx.added_cols:
        return
    table, old, new = rel(node.relation), q(node.subname), q(node.newname)
    known = ctx.col_types.get((key, node.subname))
    fix = _lines(
        f"ALTER TABLE {table} ADD COLUMN {new} {known.display if known else f'<type of {old}>'};",
        "-- dual-write both columns (application or trigger), then backfill in batches:",
        f"UPDATE {table} SET {new} = {old} WHERE {new} IS NULL;",
        f"-- once no code reads {old}, in a -- migrate:cleanup migration:",
        f"ALTER TABLE {table} DROP COLUMN {old};",
    )
    yield Hit("rename-column", f"RENAME COLUMN {table}.{old} TO {new} breaks running code using {old}", fix)


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def check_alter_enum(node: ast.AlterEnumStmt, st: Stmt, ctx: Ctx) -> Iterator[Hit]:
    """Enum value renames break code using the old label; ADD VALUE cannot run in a transaction before PG12."""
    typename = ".".join(q(n.sval) for n in node.typeName)
    if node.oldVal is not None:
        if ("type", obj_key([n.sval for n in node.typeName])) in ctx.created_objects:
            return
        old, new = _literal(node.oldVal), _literal(node.newVal)
        fix = _lines(
            f"ALTER TYPE {typename} ADD VALUE IF NOT EXISTS {new};",
            f"UPDATE <table> SET <column> = {new} WHERE <column> = {old};  -- in batches",
            f"-- enum values cannot be dropped: leave {old} unused, or rename it in a -- migrate:cleanup migration",
        )
        yield Hit("rename-enum-value", f"RENAME VALUE {old} TO {new} on {typename} breaks code that still writes {old}", fix)
    elif st.in_tx and ctx.server_version_num < 120000:
        yield Hit(
            "enum-add-value-in-transaction",
            f"ALTER TYPE {typename} ADD VALUE {_literal(node.newVal)} inside a transaction fails before PostgreSQL 12",
            f"-- put it in its own migration, run outside a transaction:\n-- migrate:no-transaction\n{sql(node)};",
        )


DROP_RULES: dict[OT, tuple[str, str]] = {
    OT.OBJECT_TABLE: ("drop-table", "table"),
    OT.OBJECT_FOREIGN_TABLE: ("drop-table", "table"),
    OT.OBJECT_SCHEMA: ("drop-schema", "schema"),
    OT.OBJECT_TYPE: ("drop-type", "type"),
    OT.OBJECT_DOMAIN: ("drop-type", "type"),
    OT.OBJECT_FUNCTION: ("drop-function", "function"),
    OT.OBJECT_PROCEDURE: ("drop-function", "function"),
    OT.OBJECT_ROUTINE: ("drop-function", "function"),
    OT.OBJECT_AGGREGATE: ("drop-function", "function"),
    OT.OBJECT_VIEW: ("drop-view", "view"),
    OT.OBJECT_MATVIEW: ("drop-view", "view"),
    OT.OBJECT_SEQUENCE: ("drop-sequence", "sequence"),
    OT.OBJECT_TRIGGER: ("drop-trigger", "trigger"),
}


def check_drop(node: ast.DropStmt, st: Stmt, ctx: Ctx) -> Iterator[Hit]:
    """Drops of objects running code may use; objects created by this migration are exempt."""
    if node.removeType == OT.OBJECT_INDEX:
        yield from check_drop_index(node, st, ctx)
        return
    if node.removeType not in DROP_RULES:
        return
    rule, kind = DROP_RULES[node.removeType]
    existing = [o for o in node.objects if (kind, obj_key(_names(o))) not in ctx.created_objects]
    if not existing:
        return
    names = ", ".join(_trigger_name(o) if kind == "trigger" else _dotted(o) for o in existing)
    yield Hit(rule, f"DROP {kind.upper()} {names} breaks running code that still uses it", _cleanup_fix(f"{kind} {names}", sql(node) + ";"))


def check_vacuum(node: ast.VacuumStmt, st: Stmt, ctx: Ctx) -> Iterator[Hit]:
    """VACUUM FULL rewrites the table and blocks reads and writes until done."""
    full = [o for o in node.options or () if o.defname == "full" and _truthy(o.arg)]
    if not node.is_vacuumcmd or not full:
        return
    rels = [v.relation for v in node.rels or () if v.relation is not None]
    if rels and all(ctx.is_new(r) for r in rels):
        return
    names = ", ".join(rel(r) for r in rels) or "(every table)"
    yield Hit(
        "vacuum-full",
        f"VACUUM FULL {names} rewrites under ACCESS EXCLUSIVE: reads and writes wait until it finishes",
        "\n".join(f"-- repack online instead (pg_repack extension):\n-- pg_repack --table={rel(r)}" for r in rels)
        or "-- repack online with pg_repack, table by table",
    )


def _truthy(arg: ast.Node | None) -> bool:
    if arg is None:
        return True
    value = getattr(arg, "sval", None) or getattr(arg, "ival", None) or getattr(arg, "boolval", None)
    return str(value).lower() not in ("false", "off", "0", "none")


def check_cluster(node: ast.ClusterStmt, st: Stmt, ctx: Ctx) -> Iterator[Hit]:
    """CLUSTER rewrites the table in index order under ACCESS EXCLUSIVE."""
    if node.relation is not None and ctx.is_new(node.relation):
        return
    name = rel(node.relation) if node.relation is not None else "(every clustered table)"
    order = f" --order-by=<columns of {node.indexname}>" if node.indexname else ""
    yield Hit(
        "cluster",
        f"CLUSTER {name} rewrites it under ACCESS EXCLUSIVE: reads and writes wait until it finishes",
        f"-- reorder online instead (pg_repack extension):\n-- pg_repack --table={name}{order}",
    )


def check_truncate(node: ast.TruncateStmt, st: Stmt, ctx: Ctx) -> Iterator[Hit]:
    """CASCADE empties tables the author did not name."""
    if node.behavior != enums.DropBehavior.DROP_CASCADE:
        return
    names = ", ".join(rel(r) for r in node.relations)
    yield Hit(
        "truncate-cascade",
        f"TRUNCATE {names} CASCADE also empties every table with a foreign key to {names}",
        f"-- name every table to empty explicitly (fails loudly if one is missed):\nTRUNCATE {names};",
    )


def check_foreign_key_index(node: ast.Node, st: Stmt, ctx: Ctx) -> Iterator[Hit]:
    """Every FK added here should have an index led by its columns (created in this file or known)."""
    for rv, cols, conname in _foreign_keys(node):
        if ctx.has_leading_index(rel_key(rv), cols):
            continue
        idx = f"{rv.relname}_{'_'.join(cols)}_idx"
        concurrently = "" if isinstance(node, ast.CreateStmt) or ctx.is_new(rv) else "CONCURRENTLY "
        label = f"foreign key {q(conname)}" if conname else "foreign key"
        yield Hit(
            "foreign-key-without-index",
            f"{label} on {rel(rv)} ({_cols(cols)}) has no index led by those columns: "
            "deletes/updates on the referenced table will scan it",
            f"CREATE INDEX {concurrently}{q(idx)} ON {rel(rv)} ({_cols(cols)});",
        )


def _foreign_keys(node: ast.Node) -> Iterator[tuple[ast.RangeVar, list[str], str | None]]:
    if isinstance(node, ast.CreateStmt):
        for elt in node.tableElts or ():
            if isinstance(elt, ast.Constraint) and elt.contype == CT.CONSTR_FOREIGN:
                yield node.relation, fk_columns(elt), elt.conname
            elif isinstance(elt, ast.ColumnDef) and CT.CONSTR_FOREIGN in column_constraints(elt):
                yield node.relation, [elt.colname], column_constraints(elt)[CT.CONSTR_FOREIGN].conname
    elif isinstance(node, ast.AlterTableStmt):
        for cmd in node.cmds or ():
            if cmd.subtype == AT.AT_AddConstraint and cmd.def_.contype == CT.CONSTR_FOREIGN:
                yield node.relation, fk_columns(cmd.def_), cmd.def_.conname
            elif cmd.subtype == AT.AT_AddColumn and CT.CONSTR_FOREIGN in column_constraints(cmd.def_):
                yield node.relation, [cmd.def_.colname], column_constraints(cmd.def_)[CT.CONSTR_FOREIGN].conname


def _names(obj: object) -> list[str]:
    """Dotted name parts of a DropStmt object (String tuple, TypeName, ObjectWithArgs)."""
    if isinstance(obj, ast.TypeName):
        return [n.sval for n in obj.names]
    if isinstance(obj, ast.ObjectWithArgs):
        return [n.sval for n in obj.objname]
    if isinstance(obj, ast.String):
        return [obj.sval]
    return [n.sval for n in obj]


def _trigger_name(obj: object) -> str:
    """`trg ON schema.table` for a DROP TRIGGER object."""
    parts = [q(p) for p in _names(obj)]
    return f"{parts[-1]} ON {'.'.join(parts[:-1])}"


def _dotted(obj: object) -> str:
    """Display name of a DropStmt object, quoted; triggers read `trg ON table`."""
    if isinstance(obj, ast.ObjectWithArgs):
        return sql(obj)
    parts = [q(p) for p in _names(obj)]
    return ".".join(parts)


CMD_CHECKS: dict[AT, tuple[CmdCheck, ...]] = {
    AT.AT_AddColumn: (_check_add_column,),
    AT.AT_AddConstraint: (_check_add_constraint,),
    AT.AT_ValidateConstraint: (_check_validate,),
    AT.AT_SetNotNull: (_check_set_not_null,),
    AT.AT_AlterColumnType: (_check_alter_type,),
    AT.AT_DropColumn: (_check_drop_column,),
    AT.AT_DetachPartition: (_check_detach,),
}

STMT_CHECKS: dict[type, tuple[Check, ...]] = {
    ast.IndexStmt: (check_create_index,),
    ast.ReindexStmt: (check_reindex,),
    ast.AlterTableStmt: (check_alter_table, check_foreign_key_index),
    ast.CreateStmt: (check_create_table, check_foreign_key_index),
    ast.RenameStmt: (check_rename,),
    ast.AlterEnumStmt: (check_alter_enum,),
    ast.DropStmt: (check_drop,),
    ast.VacuumStmt: (check_vacuum,),
    ast.ClusterStmt: (check_cluster,),
    ast.TruncateStmt: (check_truncate,),
}


def check_statement(st: Stmt, ctx: Ctx) -> Iterator[Hit]:
    """Run every rule registered for the statement's node type."""
    for check in STMT_CHECKS.get(type(st.node), ()):
        yield from check(st.node, st, ctx)
