"""Static migration safety lint, decided on PostgreSQL's own parser (pglast).

Why a static lint at all: the deploy gate should refuse a migration that would
lock a hot table for minutes *before* anyone runs it against a database. Every
decision here is taken on the parse tree PostgreSQL itself produces (pglast
wraps the PostgreSQL 17 parser), never by matching regular expressions over SQL
text, so quoting, comments, ``IF EXISTS``/``ONLY`` and schema-qualified names
cannot fool a rule.

This module is the public API and the driver: it runs each statement of a
file through the rules, in order, with what the migration — and the files
before it — have done so far (one context carried from file to file, so a
history of N files costs N, not N²), and turns rule hits into ``Finding``s with
their directives applied. The parts:

* ``sqlfile`` (through ``lint_parse``): the statement model every part of the
  bot shares — each file parsed once, its statements, comments, directives and
  transactions (the file's own BEGIN/COMMIT blocks, autocommit files);
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
from bot.migrations.lint_parse import Directive, LintSyntaxError, Stmt, directives, parsed_or_raise
from bot.migrations.lint_rules import access_exclusive_target, check_statement, lock_held_hits
from bot.migrations.lint_types import Ctx, collect_indexes, created_object, learn, schema_context
from bot.migrations.source import Migration, dbmate_up, discover
from bot.migrations.sqlfile import ParsedFile

__all__ = ["RULES", "Finding", "LintSyntaxError", "lint_file", "lint_migrations", "lint_paths", "lint_sql"]

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
    "validate-constraint-same-migration": ("blocker", "VALIDATE in the transaction that added the constraint NOT VALID keeps the lock NOT VALID avoids"),
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
    parsed = parsed_or_raise(sql)
    ctx = Ctx(server_version_num=server_version_num)
    if schema_sql:
        schema_context(schema_sql, ctx)
    return lint_file(parsed, ctx, path=path, cleanup=cleanup)


def lint_file(parsed: ParsedFile, ctx: Ctx, *, path: str = "", cleanup: bool | None = None,
              same_set: bool = False) -> list[Finding]:
    """Findings for one parsed file, knowing what ``ctx`` learned before it; ``ctx`` then knows this file too.

    ``same_set``: the file belongs to one pending set with the files ``ctx``
    saw before (the gate): what they created is still new (not on prod).
    Otherwise it is linted as the next deploy after them (a history).
    """
    stmts = parsed.statements
    ctx.begin_file(cleanup=parsed.cleanup if cleanup is None else cleanup, same_set=same_set)
    ctx.indexes.update(collect_indexes(st.node for st in stmts))  # an index later in the file counts for its FKs
    hits: list[tuple[Stmt, Hit]] = []
    locks: dict[int, str] = {}
    for st in stmts:
        ctx.at(st)
        ctx.recreated = _recreated_later(stmts, st) if st.kind == "DropStmt" else set()
        hits.extend((st, hit) for hit in check_statement(st, ctx))
        target = access_exclusive_target(st.node, ctx)
        if target is not None:
            locks[st.index] = target
        learn(st.node, ctx)
    hits.extend(lock_held_hits(stmts, locks))
    findings = [_finding(st, hit, ctx, path) for st, hit in hits]
    findings.extend(_invalid_directives(directives((line, text) for line, text, _ in parsed.comments), path))
    return sorted(findings, key=lambda f: f.line)


def _recreated_later(stmts: tuple[Stmt, ...], st: Stmt) -> set:
    """Objects created again by the statements after ``st`` in the same transaction (DROP VIEW, CREATE VIEW)."""
    if st.tx_group is None:
        return set()
    found = set()
    for later in stmts[st.index + 1 :]:
        if later.tx_group != st.tx_group:
            break
        made = created_object(later.node)
        if made:
            found.add(made)
    return found


def lint_migrations(migrations: list[Migration], ctx: Ctx, *, same_set: bool) -> Iterator[tuple[Migration, list[Finding]]]:
    """Each parsed migration's findings, in order, with one context carried through (linear in the history)."""
    for m in migrations:
        if m.parse_error is not None:
            line = m.parse_error_line or 1
            raise LintSyntaxError(f"{m.path}: line {line}: {m.parse_error}", line, m.path)
        yield m, lint_file(m.parsed, ctx, path=m.path, cleanup=m.cleanup, same_set=same_set)


def _finding(st: Stmt, hit: Hit, ctx: Ctx, path: str) -> Finding:
    severity = hit.severity or RULES[hit.rule][0]
    if ctx.cleanup and hit.rule in CLEANUP_RELAXED:
        severity = "warning"
    text = st.text if len(st.text) <= STATEMENT_MAX else st.text[: STATEMENT_MAX - 3].rstrip() + "..."
    return Finding(hit.rule, severity, hit.message, hit.fix, st.line, text, path, _allowed(st, hit.rule))


def _allowed(st: Stmt, rule: str) -> str | None:
    """The reason of a valid `migrate:allow` for this rule on this statement."""
    return st.allowed(rule, RULES)


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


def lint_paths(paths: list[str], *, fmt: str = "auto", same_set: bool = False) -> list[Finding]:
    """Lint files and migration directories, sorted by file, line, rule.

    A directory is read with its migration layout (``bot.migrations.source``),
    exactly as the gate reads it: only forward migrations (no golang-migrate
    ``.down.sql``, dbmate ``-- migrate:down`` sections or Flyway undo files), in
    version order, each knowing what the files before it created; a folder
    with no migration or with unrecognised ``.sql`` files is a
    MigrationSourceError. By default each file is linted as the next deploy
    after the ones before it; ``same_set`` lints the whole folder as one
    pending set (what the gate does on an empty database). A file named
    directly is linted on its own (a dbmate file: its up section).
    """
    findings: list[Finding] = []
    for p in map(Path, paths):
        if p.is_dir():
            ctx = Ctx()
            for _, found in lint_migrations(discover(p, fmt), ctx, same_set=same_set):
                findings.extend(found)
            continue
        text = p.read_text(encoding="utf-8")
        try:
            findings.extend(lint_sql(dbmate_up(text), path=str(p)))
        except LintSyntaxError as exc:
            raise LintSyntaxError(f"{p}: {exc.message}", exc.line, str(p)) from None
    return sorted(findings, key=lambda f: (f.path, f.line, f.rule))
