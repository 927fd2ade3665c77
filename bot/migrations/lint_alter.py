"""Rules for ALTER TABLE subcommands on existing tables: columns, constraints, types.

These are most of the lint's hazards: a column added with a volatile default
or NOT NULL and no default, a constraint validated at once, SET NOT NULL
without a proving CHECK, a type change that is not binary-coercible, a
dropped column. Each function takes the statement, one of its subcommands,
the statement's place (``Stmt``) and what is known so far (``Ctx``), and
yields ``Hit``s with the safe rewrite; ``lint_rules`` dispatches to them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

from pglast import ast

from bot.migrations.lint_ast import (
    AT,
    CT,
    Hit,
    alter,
    alter_cmd,
    cleanup_fix,
    col_list,
    colref,
    column_constraints,
    fk_columns,
    join_lines,
    not_null_steps,
    q,
    rel,
    rel_key,
    sql,
    validate_constraint,
    walk,
)
from bot.migrations.lint_parse import Stmt
from bot.migrations.lint_types import ColType, Ctx, coltype, type_change_verdict


def check_add_column(stmt: ast.AlterTableStmt, cmd: ast.AlterTableCmd, st: Stmt, ctx: Ctx) -> Iterator[Hit]:
    """ADD COLUMN is instant on PG11+ only with a constant, non-volatile default and no scans."""
    col: ast.ColumnDef = cmd.def_
    yield from _json_column(stmt, col, cmd)
    if ctx.is_new(stmt.relation):
        return
    parts = column_constraints(col)
    typ = coltype(col.typeName)
    default = parts.get(CT.CONSTR_DEFAULT)
    has_default = default is not None and not _is_null_const(default.raw_expr)
    if typ.name in ("serial", "bigserial", "smallserial") or CT.CONSTR_IDENTITY in parts:
        yield _serial_hit(stmt, col, typ)
    elif CT.CONSTR_GENERATED in parts:
        yield _generated_hit(stmt, col, parts[CT.CONSTR_GENERATED])
    else:
        if (col.is_not_null or CT.CONSTR_NOTNULL in parts or CT.CONSTR_PRIMARY in parts) and not has_default:
            yield _not_null_no_default_hit(stmt, col)
        if has_default:
            yield from _volatile_default(stmt, col, default.raw_expr, ctx)
    filled = has_default or typ.name in ("serial", "bigserial", "smallserial") or bool(
        {CT.CONSTR_IDENTITY, CT.CONSTR_GENERATED} & parts.keys())
    yield from _inline_constraints(stmt, col, parts, filled=filled, alone=_only_column_adds(stmt))


def _only_column_adds(stmt: ast.AlterTableStmt) -> bool:
    """No subcommand but ADD COLUMN: PostgreSQL then skips validating inline REFERENCES of NULL columns
    (a separate ADD CONSTRAINT … FOREIGN KEY in the same ALTER makes it validate them all)."""
    return all(c.subtype == AT.AT_AddColumn for c in stmt.cmds or ())


def _serial_hit(stmt: ast.AlterTableStmt, col: ast.ColumnDef, typ: ColType) -> Hit:
    table, name = rel(stmt.relation), q(col.colname)
    seq = f"{stmt.relation.relname}_{col.colname}_seq"
    base = {"serial": "integer", "smallserial": "smallint"}.get(typ.name, "bigint")
    fix = join_lines(
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
    fix = join_lines(
        alter(stmt, alter_cmd(AT.AT_AddColumn, def_=_without(col, *CT))),
        f"-- keep it current with a BEFORE INSERT OR UPDATE trigger (NEW.{name} := {expr}), then backfill in batches:",
        f"UPDATE {rel(stmt.relation)} SET {name} = {expr} WHERE {name} IS NULL;",
    )
    message = f"ADD COLUMN {col.colname} GENERATED ALWAYS AS ({expr}) STORED computes every row of {rel(stmt.relation)}, rewriting it"
    return Hit("add-column-generated-stored", message, fix)


def _not_null_no_default_hit(stmt: ast.AlterTableStmt, col: ast.ColumnDef) -> Hit:
    placeholder = ast.Constraint(contype=CT.CONSTR_DEFAULT, raw_expr=colref("<value>"))
    with_default = _without(col, CT.CONSTR_DEFAULT)
    with_default.constraints = (*(with_default.constraints or ()), placeholder)
    fix = join_lines(
        alter(stmt, alter_cmd(AT.AT_AddColumn, def_=with_default)).replace('"<value>"', "<value>"),
        "-- or add it nullable, backfill, then enforce NOT NULL online:",
        alter(stmt, alter_cmd(AT.AT_AddColumn, def_=_without(col, CT.CONSTR_NOTNULL))),
        not_null_steps(stmt, col.colname),
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
    fix = join_lines(
        alter(stmt, alter_cmd(AT.AT_AddColumn, def_=_without(col, CT.CONSTR_DEFAULT, CT.CONSTR_NOTNULL))),
        alter(stmt, alter_cmd(AT.AT_ColumnDefault, name=col.colname, def_=expr)),
        "-- then backfill existing rows in batches (separate migration or job):",
        f"UPDATE {rel(stmt.relation)} SET {name} = {default} WHERE {name} IS NULL;",
        not_null_steps(stmt, col.colname, default) if not_null else "",
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


def _inline_constraints(stmt: ast.AlterTableStmt, col: ast.ColumnDef, parts: dict, *, filled: bool,
                        alone: bool) -> Iterator[Hit]:
    """Inline REFERENCES / CHECK / UNIQUE / PRIMARY KEY on ADD COLUMN cannot be NOT VALID or concurrent.

    One exception, measured on PostgreSQL 15 and written in its source
    (transformFKConstraints): inline REFERENCES on a column added without a
    default, in an ALTER that adds nothing but columns, is marked valid
    without any scan — the new column is NULL in every row. It is the zero-scan
    way to add a foreign key with a new column, so it is not a finding.
    """
    inline = (CT.CONSTR_FOREIGN, CT.CONSTR_CHECK, CT.CONSTR_UNIQUE, CT.CONSTR_PRIMARY)
    if not any(kind in parts for kind in inline):
        return
    table = stmt.relation.relname
    add_plain = alter(stmt, alter_cmd(AT.AT_AddColumn, def_=_without(col, *inline)))
    if CT.CONSTR_FOREIGN in parts and (filled or not alone):
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


def check_add_constraint(stmt: ast.AlterTableStmt, cmd: ast.AlterTableCmd, st: Stmt, ctx: Ctx) -> Iterator[Hit]:
    """Constraints on existing tables must be added NOT VALID or from a concurrently built index."""
    con: ast.Constraint = cmd.def_
    if ctx.is_new(stmt.relation):
        return
    if con.contype == CT.CONSTR_FOREIGN and not con.skip_validation:
        named = copy.copy(con)
        named.conname = con.conname or f"{stmt.relation.relname}_{'_'.join(fk_columns(con))}_fkey"
        new_cols = [c for c in fk_columns(con) if ctx.is_new_column(rel_key(stmt.relation), c)
                    or _added_here(stmt, c)]
        yield _fk_hit(stmt, named, new_columns=new_cols if len(new_cols) == len(fk_columns(con)) else None)
    elif con.contype == CT.CONSTR_CHECK and not con.skip_validation:
        named = copy.copy(con)
        named.conname = con.conname or f"{stmt.relation.relname}_check"
        yield _check_hit(stmt, named)
    elif con.contype in (CT.CONSTR_PRIMARY, CT.CONSTR_UNIQUE, CT.CONSTR_EXCLUSION) and not con.indexname:
        yield _unique_hit(stmt, con)
    elif con.contype == CT.CONSTR_PRIMARY:
        yield from _pk_using_index(stmt, con, ctx)


def _added_here(stmt: ast.AlterTableStmt, col: str) -> bool:
    """The same ALTER adds the column."""
    return any(c.subtype == AT.AT_AddColumn and c.def_.colname == col for c in stmt.cmds or ())


def _not_valid_fix(stmt: ast.AlterTableStmt, con: ast.Constraint, prefix: str) -> str:
    """The constraint added NOT VALID, then validated in a separate migration."""
    fixed = copy.copy(con)
    fixed.skip_validation, fixed.initially_valid = True, False
    fix = alter(stmt, alter_cmd(AT.AT_AddConstraint, def_=fixed)) + "\n-- then, in a separate migration:\n" + validate_constraint(stmt, fixed.conname)
    return (prefix + "\n" if prefix else "") + fix


def _fk_hit(stmt: ast.AlterTableStmt, con: ast.Constraint, prefix: str = "",
            new_columns: list[str] | None = None) -> Hit:
    cols = col_list(fk_columns(con))
    if new_columns:
        # Measured on PostgreSQL 15: a separate FOREIGN KEY on a just-added (all-NULL) column still reads every
        # row of the table to validate it — it finds nothing, under the lock, for the whole scan.
        plain = copy.copy(con)
        plain.fk_attrs, plain.conname = None, None
        return Hit(
            "add-foreign-key-without-not-valid",
            f"FOREIGN KEY {con.conname} on {rel(stmt.relation)} ({cols}) -> {rel(con.pktable)}: the column is new "
            "(NULL in every row), yet validating it reads every row of the table while writes to both tables "
            "are blocked",
            join_lines(
                "-- declare it inline when adding the column: PostgreSQL then marks it valid without a scan",
                f"-- ALTER TABLE {rel(stmt.relation)} ADD COLUMN {q(new_columns[0])} <type> {sql(plain)};",
                "-- or add it NOT VALID (nothing to validate: the column is NULL in every row):",
                _not_valid_fix(stmt, con, prefix),
            ),
        )
    return Hit(
        "add-foreign-key-without-not-valid",
        f"FOREIGN KEY {con.conname} on {rel(stmt.relation)} ({cols}) -> {rel(con.pktable)} "
        "is validated at once: a full scan while writes to both tables are blocked",
        _not_valid_fix(stmt, con, prefix),
    )


def _check_hit(stmt: ast.AlterTableStmt, con: ast.Constraint, prefix: str = "") -> Hit:
    return Hit(
        "add-check-without-not-valid",
        f"CHECK {con.conname} ({sql(con.raw_expr)}) on {rel(stmt.relation)} is validated at once: "
        "a full scan under ACCESS EXCLUSIVE",
        _not_valid_fix(stmt, con, prefix),
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
            f"-- migrate:allow add-unique-constraint-in-place <reason>\n{alter(stmt, alter_cmd(AT.AT_AddConstraint, def_=con))}"
        )
        return Hit("add-unique-constraint-in-place", message, fix)
    using = ast.Constraint(contype=con.contype, conname=name, indexname=name, is_enforced=True)
    lines = [prefix] if prefix else []
    if con.contype == CT.CONSTR_PRIMARY:
        lines.append(f"-- the key columns ({col_list(keys)}) must be NOT NULL first (see set-not-null-without-check)")
    lines += [
        f"CREATE UNIQUE INDEX CONCURRENTLY {q(name)} ON {rel(stmt.relation)} ({col_list(keys)});",
        "-- then, in the next migration:",
        alter(stmt, alter_cmd(AT.AT_AddConstraint, def_=using)),
    ]
    return Hit("add-unique-constraint-in-place", message, "\n".join(lines))


def _pk_using_index(stmt: ast.AlterTableStmt, con: ast.Constraint, ctx: Ctx) -> Iterator[Hit]:
    key = rel_key(stmt.relation)
    cols = ctx.index_columns(con.indexname)
    nullable = [c for c in cols or () if not ctx.is_not_null(key, c)] if cols else None
    if cols and not nullable:
        return
    what = f"columns ({col_list(nullable)}) are" if nullable else f"the columns of index {con.indexname} are"
    if nullable:
        steps = "\n".join(not_null_steps(stmt, c) for c in nullable)
    else:
        steps = f"-- for each key column of {con.indexname} not yet NOT NULL, first run the CHECK ... NOT VALID / VALIDATE / SET NOT NULL sequence"
    yield Hit(
        "add-primary-key-nullable-columns",
        f"ADD PRIMARY KEY USING INDEX {con.indexname} on {rel(stmt.relation)}: {what} not known NOT NULL, "
        "so it scans the table under ACCESS EXCLUSIVE",
        steps + "\n" + alter(stmt, alter_cmd(AT.AT_AddConstraint, def_=con)),
    )


def check_validate(stmt: ast.AlterTableStmt, cmd: ast.AlterTableCmd, st: Stmt, ctx: Ctx) -> Iterator[Hit]:
    """VALIDATE in the transaction that ran ADD ... NOT VALID keeps the ADD's lock during the scan.

    In its own transaction (the file's own BEGIN … COMMIT blocks, or a
    no-transaction file's autocommit) it only takes SHARE UPDATE EXCLUSIVE:
    that is the safe pattern, whatever file it is in.
    """
    if ctx.same_tx_as((rel_key(stmt.relation), cmd.name)) and not ctx.is_new(stmt.relation):
        yield Hit(
            "validate-constraint-same-migration",
            f"VALIDATE CONSTRAINT {cmd.name} on {rel(stmt.relation)} in the transaction that added it NOT VALID: "
            "the scan runs while the ADD's lock is still held",
            "-- move it to a separate, later migration (or after a COMMIT, in its own transaction):\n"
            + alter(stmt, cmd),
        )


def check_set_not_null(stmt: ast.AlterTableStmt, cmd: ast.AlterTableCmd, st: Stmt, ctx: Ctx) -> Iterator[Hit]:
    """SET NOT NULL scans the table under ACCESS EXCLUSIVE unless a validated CHECK proves it (PG12+)."""
    key = rel_key(stmt.relation)
    if ctx.is_new(stmt.relation) or ctx.is_not_null(key, cmd.name) or ctx.has_not_null_check(key, cmd.name):
        return
    fix = not_null_steps(stmt, cmd.name)
    if ctx.is_new_column(key, cmd.name) or _added_here(stmt, cmd.name):
        fix = join_lines(
            f"-- {q(cmd.name)} is new: add it NOT NULL with its DEFAULT in one step (instant on PG11+, no scan):",
            f"-- ALTER TABLE {rel(stmt.relation)} ADD COLUMN {q(cmd.name)} <type> NOT NULL DEFAULT <value>;",
            "-- or enforce it online:",
            fix,
        )
    yield Hit(
        "set-not-null-without-check",
        f"SET NOT NULL on {rel(stmt.relation)}.{q(cmd.name)} scans the whole table under ACCESS EXCLUSIVE "
        f"(no validated CHECK ({q(cmd.name)} IS NOT NULL) first)",
        fix,
    )


def check_alter_type(stmt: ast.AlterTableStmt, cmd: ast.AlterTableCmd, st: Stmt, ctx: Ctx) -> Iterator[Hit]:
    """Only binary-coercible type changes skip the rewrite; USING always rewrites."""
    coldef: ast.ColumnDef = cmd.def_
    new = coltype(coldef.typeName)
    if new.name == "json":
        yield _jsonb_hit(stmt, cmd, coldef.typeName)
    if ctx.is_new(stmt.relation):
        return
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
    return join_lines(
        f"ALTER TABLE {table} ADD COLUMN {q(new_col)} {sql(coldef.typeName)};",
        f"-- keep {q(new_col)} in sync (dual-write or trigger), then backfill in batches:",
        f"UPDATE {table} SET {q(new_col)} = {value} WHERE {q(new_col)} IS NULL;",
        "-- switch readers, then swap names in a -- migrate:cleanup migration:",
        f"ALTER TABLE {table} RENAME COLUMN {q(col)} TO {q(col + '_old')};",
        f"ALTER TABLE {table} RENAME COLUMN {q(new_col)} TO {q(col)};",
    )


def check_drop_column(stmt: ast.AlterTableStmt, cmd: ast.AlterTableCmd, st: Stmt, ctx: Ctx) -> Iterator[Hit]:
    """Running code that still selects/inserts the column errors as soon as it is gone."""
    key = rel_key(stmt.relation)
    if ctx.is_new(stmt.relation) or (key, cmd.name) in ctx.added_cols:
        return
    yield Hit(
        "drop-column",
        f"DROP COLUMN {rel(stmt.relation)}.{q(cmd.name)} breaks running code that still reads or writes it",
        cleanup_fix(f"{rel(stmt.relation)}.{q(cmd.name)}", alter(stmt, cmd)),
    )


_COPIES = {AT.AT_SetLogged: "SET LOGGED", AT.AT_SetUnLogged: "SET UNLOGGED", AT.AT_SetTableSpace: "SET TABLESPACE",
           AT.AT_SetAccessMethod: "SET ACCESS METHOD"}


def check_table_copy(stmt: ast.AlterTableStmt, cmd: ast.AlterTableCmd, st: Stmt, ctx: Ctx) -> Iterator[Hit]:
    """These write the whole table (and its indexes) anew while holding ACCESS EXCLUSIVE: like a type change,
    the cost grows with the table, so no size seen on staging makes them safe on prod."""
    if ctx.is_new(stmt.relation):
        return
    what = _COPIES[cmd.subtype] + (f" {q(cmd.name)}" if cmd.name else "")
    name = rel(stmt.relation)
    if cmd.subtype == AT.AT_SetTableSpace:
        fix = f"-- move it online instead (pg_repack extension):\n-- pg_repack --table={name} --tablespace={q(cmd.name)} --moveidx"
    else:
        fix = (f"-- no online form: copy into a new table in batches while writes are mirrored and swap the names\n"
               f"-- in a cleanup migration, or run it while traffic to {name} is stopped, saying why:\n"
               f"-- migrate:allow alter-table-rewrite <why {name} can be unavailable while it is copied>\n"
               f"{alter(stmt, cmd)}")
    yield Hit("alter-table-rewrite",
              f"ALTER TABLE {name} {what} copies the whole table and its indexes under ACCESS EXCLUSIVE: "
              "reads and writes wait until it finishes", fix)


def _json_column(stmt: ast.AlterTableStmt, col: ast.ColumnDef, cmd: ast.AlterTableCmd) -> Iterator[Hit]:
    if col.typeName is not None and coltype(col.typeName).name == "json":
        yield _jsonb_hit(stmt, cmd, col.typeName, col.colname)


def jsonb_type(typ: ast.TypeName) -> ast.TypeName:
    """The jsonb type replacing a json one (keeping array bounds)."""
    return ast.TypeName(names=(ast.String(sval="jsonb"),), arrayBounds=typ.arrayBounds, typemod=-1)


def _jsonb_hit(stmt: ast.AlterTableStmt, cmd: ast.AlterTableCmd, typ: ast.TypeName, colname: str | None = None) -> Hit:
    fixed = copy.copy(cmd)
    fixed.def_ = copy.copy(cmd.def_)
    fixed.def_.typeName = jsonb_type(typ)
    colname = colname or cmd.name
    return Hit("prefer-jsonb", f"column {colname} on {rel(stmt.relation)} uses json; use jsonb", alter(stmt, fixed))
