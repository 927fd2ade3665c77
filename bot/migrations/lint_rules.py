"""The hazards themselves: one function per rule, reading pglast AST nodes.

``lint.py`` drives a file through them; this module answers "is this
statement dangerous, given what the migration has done so far?" and says how
to do it safely. Rules yield ``Hit``s (rule id, message, fix); the driver adds
line numbers, statement text and directives. Here: the registry of rules by
statement type (``check_statement``), index and CONCURRENTLY rules,
whole-statement rules (renames, drops, VACUUM FULL, CLUSTER, TRUNCATE, FK
indexes) and the file-level rule about ACCESS EXCLUSIVE held while more
statements run. ALTER TABLE subcommand rules live in ``lint_alter``.

Everything is decided on PostgreSQL's own parse tree (pglast), never on the
SQL text, so quoting, ``IF EXISTS``, ``ONLY``, schema-qualified names and
comments inside statements cannot fool a rule. Fixes are deparsed from the
statement's own nodes so they carry its real (correctly quoted) names.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

from pglast import ast, enums

from bot.migrations.lint_alter import (
    check_add_column,
    check_add_constraint,
    check_alter_type,
    check_drop_column,
    check_set_not_null,
    check_table_copy,
    check_validate,
    jsonb_type,
)
from bot.migrations.lint_ast import (
    AT,
    CT,
    OT,
    Hit,
    alter,
    cleanup_fix,
    col_list,
    column_constraints,
    fk_columns,
    join_lines,
    literal,
    obj_key,
    q,
    rel,
    rel_key,
    sql,
)
from bot.migrations.lint_parse import Stmt
from bot.migrations.lint_types import Ctx, coltype

Check = Callable[[ast.Node, Stmt, Ctx], Iterator[Hit]]
CmdCheck = Callable[[ast.AlterTableStmt, ast.AlterTableCmd, Stmt, Ctx], Iterator[Hit]]


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


def check_detach(stmt: ast.AlterTableStmt, cmd: ast.AlterTableCmd, st: Stmt, ctx: Ctx) -> Iterator[Hit]:
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


def check_attach(stmt: ast.AlterTableStmt, cmd: ast.AlterTableCmd, st: Stmt, ctx: Ctx) -> Iterator[Hit]:
    """ATTACH PARTITION proves the new partition's rows fit its bounds by scanning it under ACCESS EXCLUSIVE,
    unless a validated CHECK already implies them; a table created in this migration is empty, and a CHECK
    validated here is taken as that proof."""
    part = cmd.def_
    key = rel_key(part.name)
    if ctx.is_new(part.name) or any(table == key for table, _ in ctx.valid_checks):
        return
    name, con = rel(part.name), q(f"{part.name.relname}_bounds")
    yield Hit(
        "attach-partition-scan",
        f"ATTACH PARTITION {name} to {rel(stmt.relation)} scans {name} under ACCESS EXCLUSIVE to prove its rows fit "
        f"the bounds (and the parent's DEFAULT partition too, if there is one)",
        join_lines(
            "-- prove the bounds first with a CHECK validated without blocking writes:",
            f"ALTER TABLE {name} ADD CONSTRAINT {con} CHECK ({_bounds_check(part.bound)}) NOT VALID;",
            f"ALTER TABLE {name} VALIDATE CONSTRAINT {con};",
            "-- then, in the next migration (the attach skips the scan):",
            alter(stmt, cmd),
            f"ALTER TABLE {name} DROP CONSTRAINT {con};",
        ),
    )


def _bounds_check(bound: ast.PartitionBoundSpec) -> str:
    """The CHECK a single-column range or list bound implies; the key's name is in the parent, not here."""
    key = "<partition key>"
    lower, upper = [sql(d) for d in bound.lowerdatums or ()], [sql(d) for d in bound.upperdatums or ()]
    if bound.strategy == "r" and len(lower) == len(upper) == 1 and not {*lower, *upper} & {"minvalue", "maxvalue"}:
        return f"{key} IS NOT NULL AND {key} >= {lower[0]} AND {key} < {upper[0]}"
    if bound.strategy == "l" and bound.listdatums:
        return f"{key} IS NOT NULL AND {key} IN ({', '.join(sql(d) for d in bound.listdatums)})"
    return f"<the partition constraint of {sql(bound)}>"


def _concurrently_in_tx(st: Stmt, what: str) -> Iterator[Hit]:
    if st.explicit_tx:
        yield Hit(
            "concurrently-in-transaction",
            f"{what} inside an explicit BEGIN ... COMMIT block fails (it cannot run in a transaction)",
            "-- remove the BEGIN/COMMIT around it; the applier runs files with CONCURRENTLY outside a transaction\n"
            + st.text.rstrip(";") + ";",
        )


# --------------------------------------------------------------------------
# ALTER TABLE: each subcommand to its rules (lint_alter)
# --------------------------------------------------------------------------


def check_alter_table(node: ast.AlterTableStmt, st: Stmt, ctx: Ctx) -> Iterator[Hit]:
    """Dispatch each ALTER TABLE subcommand to its rules."""
    if node.objtype != OT.OBJECT_TABLE:  # views, indexes, foreign tables hold no local rows
        return
    for cmd in node.cmds or ():
        for check in CMD_CHECKS.get(cmd.subtype, ()):
            yield from check(node, cmd, st, ctx)


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
        fixed.tableElts[i].typeName = jsonb_type(node.tableElts[i].typeName)
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
            cleanup_fix(f"schema {q(node.subname)}", sql(node) + ";"),
        )


def _rename_column(node: ast.RenameStmt, ctx: Ctx) -> Iterator[Hit]:
    key = rel_key(node.relation)
    if ctx.is_new(node.relation) or (key, node.subname) in ctx.added_cols:
        return
    table, old, new = rel(node.relation), q(node.subname), q(node.newname)
    known = ctx.col_types.get((key, node.subname))
    fix = join_lines(
        f"ALTER TABLE {table} ADD COLUMN {new} {known.display if known else f'<type of {old}>'};",
        "-- dual-write both columns (application or trigger), then backfill in batches:",
        f"UPDATE {table} SET {new} = {old} WHERE {new} IS NULL;",
        f"-- once no code reads {old}, in a -- migrate:cleanup migration:",
        f"ALTER TABLE {table} DROP COLUMN {old};",
    )
    yield Hit("rename-column", f"RENAME COLUMN {table}.{old} TO {new} breaks running code using {old}", fix)


def check_alter_enum(node: ast.AlterEnumStmt, st: Stmt, ctx: Ctx) -> Iterator[Hit]:
    """Enum value renames break code using the old label; ADD VALUE cannot run in a transaction before PG12."""
    typename = ".".join(q(n.sval) for n in node.typeName)
    if node.oldVal is not None:
        if ("type", obj_key([n.sval for n in node.typeName])) in ctx.created_objects:
            return
        old, new = literal(node.oldVal), literal(node.newVal)
        fix = join_lines(
            f"ALTER TYPE {typename} ADD VALUE IF NOT EXISTS {new};",
            f"UPDATE <table> SET <column> = {new} WHERE <column> = {old};  -- in batches",
            f"-- enum values cannot be dropped: leave {old} unused, or rename it in a -- migrate:cleanup migration",
        )
        yield Hit("rename-enum-value", f"RENAME VALUE {old} TO {new} on {typename} breaks code that still writes {old}", fix)
    elif st.in_tx and ctx.server_version_num < 120000:
        yield Hit(
            "enum-add-value-in-transaction",
            f"ALTER TYPE {typename} ADD VALUE {literal(node.newVal)} inside a transaction fails before PostgreSQL 12",
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


RECREATABLE = frozenset({"view", "function", "trigger"})  # dropped and created again: same name, same users


def check_drop(node: ast.DropStmt, st: Stmt, ctx: Ctx) -> Iterator[Hit]:
    """Drops of objects running code may use; objects created by this migration (or pending set) are exempt,
    and so are views, functions and triggers created again later in the same transaction (DROP VIEW v;
    CREATE VIEW v …: running code never sees it missing)."""
    if node.removeType == OT.OBJECT_INDEX:
        yield from check_drop_index(node, st, ctx)
        return
    if node.removeType not in DROP_RULES:
        return
    rule, kind = DROP_RULES[node.removeType]
    existing = [o for o in node.objects if (kind, obj_key(_names(o))) not in ctx.created_objects]
    again = [o for o in existing if kind in RECREATABLE and (kind, obj_key(_names(o))) in ctx.recreated]
    existing = [o for o in existing if all(o is not a for a in again)]
    show = _trigger_name if kind == "trigger" else _dotted
    if existing:
        names = ", ".join(show(o) for o in existing)
        yield Hit(rule, f"DROP {kind.upper()} {names} breaks running code that still uses it",
                  cleanup_fix(f"{kind} {names}", sql(node) + ";"))
    elif again and node.behavior == enums.DropBehavior.DROP_CASCADE:
        names = ", ".join(show(o) for o in again)
        yield Hit(rule, f"DROP {kind.upper()} {names} CASCADE: re-created in the same transaction, but CASCADE "
                        "also drops whatever depends on it, which is not",
                  f"-- drop without CASCADE (it then fails if something depends on {names}), or re-create the "
                  "dependent objects in the same transaction too", severity="warning")


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


def check_refresh_matview(node: ast.RefreshMatViewStmt, st: Stmt, ctx: Ctx) -> Iterator[Hit]:
    """Without CONCURRENTLY the view is rebuilt under ACCESS EXCLUSIVE: every SELECT on it waits."""
    if node.concurrent or node.skipData or ctx.is_new(node.relation):
        return
    name = rel(node.relation)
    yield Hit(
        "refresh-matview-non-concurrent",
        f"REFRESH MATERIALIZED VIEW {name} rebuilds it under ACCESS EXCLUSIVE: every query on it waits until it finishes",
        f"-- CONCURRENTLY needs a unique index on the view (once, outside a transaction):\n"
        f"-- CREATE UNIQUE INDEX CONCURRENTLY {node.relation.relname}_refresh_key ON {name} (<columns unique per row>);\n"
        f"REFRESH MATERIALIZED VIEW CONCURRENTLY {name};",
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
            f"{label} on {rel(rv)} ({col_list(cols)}) has no index led by those columns: "
            "deletes/updates on the referenced table will scan it",
            f"CREATE INDEX {concurrently}{q(idx)} ON {rel(rv)} ({col_list(cols)});",
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
    """Display name of a DropStmt object, quoted (functions with their argument types)."""
    if isinstance(obj, ast.ObjectWithArgs):
        return sql(obj)
    parts = [q(p) for p in _names(obj)]
    return ".".join(parts)


# --------------------------------------------------------------------------
# ACCESS EXCLUSIVE held while more statements run (a rule over the whole file)
# --------------------------------------------------------------------------


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
    elif isinstance(node, ast.RefreshMatViewStmt) and not node.concurrent:
        targets = [node.relation]
    elif isinstance(node, ast.VacuumStmt) and any(o.defname == "full" for o in node.options or ()):
        targets = [v.relation for v in node.rels or () if v.relation is not None]
    existing = [t for t in targets if not ctx.is_new(t)]
    return rel(existing[0]) if existing else None


def _weak_cmd(cmd: ast.AlterTableCmd) -> bool:
    if cmd.subtype == AT.AT_AddConstraint:
        return cmd.def_.contype == CT.CONSTR_FOREIGN
    if cmd.subtype == AT.AT_DetachPartition:
        return bool(cmd.def_.concurrent)
    return cmd.subtype in _WEAK_SUBCOMMANDS


def lock_held_hits(stmts: tuple[Stmt, ...] | list[Stmt], locks: dict[int, str]) -> Iterator[tuple[Stmt, Hit]]:
    """First ACCESS EXCLUSIVE statement of each transaction that more statements follow.

    ``locks``: statement index -> the existing table it takes ACCESS EXCLUSIVE on.
    """
    groups: dict[int, list[Stmt]] = {}
    for st in stmts:
        if st.tx_group is not None and not isinstance(st.node, (ast.TransactionStmt, ast.VariableSetStmt)):
            groups.setdefault(st.tx_group, []).append(st)
    for members in groups.values():
        for i, st in enumerate(members):
            table = locks.get(st.index)
            if table is None:
                continue
            rest = len(members) - i - 1
            if rest:
                yield st, Hit(
                    "statements-after-access-exclusive",
                    f"ACCESS EXCLUSIVE on {table} is held while {rest} more statement(s) run in the same transaction",
                    f"SET lock_timeout = '5s';\n{st.text};\n-- move the {rest} statement(s) after it to a separate migration",
                )
            break


# --------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------


CMD_CHECKS: dict[AT, tuple[CmdCheck, ...]] = {
    AT.AT_AddColumn: (check_add_column,),
    AT.AT_AddConstraint: (check_add_constraint,),
    AT.AT_ValidateConstraint: (check_validate,),
    AT.AT_SetNotNull: (check_set_not_null,),
    AT.AT_AlterColumnType: (check_alter_type,),
    AT.AT_DropColumn: (check_drop_column,),
    AT.AT_DetachPartition: (check_detach,),
    AT.AT_AttachPartition: (check_attach,),
    AT.AT_SetLogged: (check_table_copy,),
    AT.AT_SetUnLogged: (check_table_copy,),
    AT.AT_SetTableSpace: (check_table_copy,),
    AT.AT_SetAccessMethod: (check_table_copy,),
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
    ast.RefreshMatViewStmt: (check_refresh_matview,),
}


def check_statement(st: Stmt, ctx: Ctx) -> Iterator[Hit]:
    """Run every rule registered for the statement's node type."""
    for check in STMT_CHECKS.get(type(st.node), ()):
        yield from check(st.node, st, ctx)
