"""Static migration safety lint, decided on PostgreSQL's own parser (pglast).

Why a static lint at all: the deploy gate should refuse a migration that would
lock a hot table for minutes *before* anyone runs it against a database. Every
decision here is taken on the parse tree PostgreSQL itself produces (pglast
wraps the PostgreSQL 17 parser), never by matching regular expressions over SQL
text, so quoting, comments, ``IF EXISTS``/``ONLY`` and schema-qualified names
cannot fool a rule.

This module is the public API and the driver: it runs each statement of a
file through the rules, in order, with what the migration has done so far, and
turns rule hits into ``Finding``s with their directives applied. The parts:

* ``lint_parse``: statements, comments, directives, transaction boundaries;
* ``lint_types``: column types (which type changes rewrite) and the facts
  known before each statement (``Ctx``);
* ``lint_rules`` (whole statements) and ``lint_alter`` (ALTER TABLE
  subcommands): the rules, each with its safe rewrite;
* ``lint_ast``: name keys, node accessors and SQL rendering they share.

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

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bot.migrations.lint_ast import Hit
from bot.migrations.lint_parse import (
    Directive,
    LintSyntaxError,
    Stmt,
    assign_transactions,
    directives,
    runs_in_autocommit,
    split_statements,
)
from bot.migrations.lint_rules import access_exclusive_target, check_statement, lock_held_hits
from bot.migrations.lint_types import Ctx, collect_indexes, learn, schema_context

__all__ = ["RULES", "Finding", "LintSyntaxError", "lint_paths", "lint_sql"]

_RENAME_WHY = "renaming breaks running code that still uses the old name (warning in -- migrate:cleanup migrations)"
_DROP_WHY = "breaks running code that still uses it (warning in -- migrate:cleanup migrations)"

RULES: dict[str, tuple[str, str]] = {
    "create-index-non-concurrent": ("blocker", "CREATE INDEX without CONCURRENTLY blocks writes to an existing table for the whole build"),
    "drop-index-non-concurrent": ("blocker", "DROP INDEX without CONCURRENTLY takes ACCESS EXCLUSIVE on the table"),
    "reindex-non-concurrent": ("blocker", "REINDEX without CONCURRENTLY blocks writes (and reads through the index) during the rebuild"),
    "detach-partition-non-concurrent": ("blocker", "DETACH PARTITION without CONCURRENTLY takes ACCESS EXCLUSIVE on the parent"),
    "attach-partition-scan": ("warning", "ATTACH PARTITION scans the new partition under ACCESS EXCLUSIVE unless a validated CHECK proves its bounds"),
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
    "alter-table-rewrite": ("blocker", "SET LOGGED/UNLOGGED, SET TABLESPACE and SET ACCESS METHOD copy the whole table under ACCESS EXCLUSIVE"),
    "refresh-matview-non-concurrent": ("blocker", "REFRESH MATERIALIZED VIEW without CONCURRENTLY blocks every read of the view until it is rebuilt"),
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
        hits.extend((st, hit) for hit in check_statement(st, ctx))
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
