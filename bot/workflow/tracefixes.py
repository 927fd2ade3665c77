"""The safe patterns the staging trace gives with its blockers: for a lock held too long, for a rewrite.

Each uses the statement's own names (read from its parse tree), like the
static rules' fixes; kept apart from ``trace`` so the trace reads as what it
measures.
"""

from __future__ import annotations

from pglast import ast, enums
from pglast.stream import RawStream

from bot.migrations.source import Statement
from bot.workflow.precheck import q

AT = enums.AlterTableType


def lock_fix(table: str, mode: str) -> str:
    return "\n".join([
        f"-- Keep the {mode} on {table} short:",
        "-- * move slow work (backfills, data fixes, long scans, sleeps) out of the DDL's transaction,",
        "--   into its own migration, in batches;",
        "-- * prefer ADD CONSTRAINT … NOT VALID + VALIDATE CONSTRAINT, CREATE INDEX CONCURRENTLY,",
        "--   and a CHECK (col IS NOT NULL) NOT VALID + VALIDATE before SET NOT NULL;",
        "-- * one lock-taking DDL per transaction, committed at once, with a short lock_timeout.",
    ])


def rewrite_fix(stmt: Statement, table: str, mode: str, pk: tuple[str, ...]) -> str:
    """A safe alternative to a statement that rewrote a table, with its real names."""
    node = stmt.node
    key = q(pk[0]) if len(pk) == 1 else "<key>"
    for cmd in getattr(node, "cmds", None) or ():
        if cmd.subtype == AT.AT_AlterColumnType and isinstance(cmd.def_, ast.ColumnDef):
            col, new = q(cmd.name), q(f"{cmd.name}_new")
            return "\n".join([
                f"-- Expand/contract instead of rewriting {table} under {mode}:",
                f"ALTER TABLE {table} ADD COLUMN {new} {RawStream()(cmd.def_.typeName)};",
                f"-- keep {new} in sync for new writes (a trigger), then backfill in batches,"
                " one short transaction each:",
                f"UPDATE {table} SET {new} = {col} WHERE {key} BETWEEN <from> AND <to>;",
                f"-- switch the application to {new}; drop {col} later in a `-- migrate:cleanup` migration.",
            ])
        if cmd.subtype == AT.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef):
            default = next((c.raw_expr for c in cmd.def_.constraints or ()
                            if c.contype == enums.ConstrType.CONSTR_DEFAULT), None)
            if default is not None:
                col, expr = q(cmd.def_.colname), RawStream()(default)
                return "\n".join([
                    "-- Add the column without the volatile default (catalog-only), default new rows, then backfill:",
                    f"ALTER TABLE {table} ADD COLUMN {col} {RawStream()(cmd.def_.typeName)};",
                    f"ALTER TABLE {table} ALTER COLUMN {col} SET DEFAULT {expr};",
                    f"UPDATE {table} SET {col} = {expr} WHERE {col} IS NULL AND {key} BETWEEN <from> AND <to>;"
                    "  -- in batches, outside the DDL's transaction",
                ])
    if isinstance(node, (ast.IndexStmt, ast.ReindexStmt)):
        return f"-- Build or rebuild indexes of {table} CONCURRENTLY, each in its own no-transaction migration."
    if isinstance(node, ast.RefreshMatViewStmt):
        return (f"-- Refresh without blocking readers (needs a unique index on the view, built CONCURRENTLY once):\n"
                f"REFRESH MATERIALIZED VIEW CONCURRENTLY {table};")
    return (f"-- Avoid rewriting {table} in place under {mode}: build a new table (or column) alongside, copy in "
            "batches and swap, or use pg_repack for CLUSTER / VACUUM FULL / SET TABLESPACE style rewrites.")
