"""Triage: failed checks -> the runbook's categories, each with its typical fix.

Pure functions over Checks. Categories key on SQLSTATE and diag fields
(table, column, constraint), never on message wording; fixes are written
out with the real names, so the SQL can be pasted after review. Works from a
JSON report (full data) or from a gate log (the ``[key=value]`` facts and the
``> statement`` continuation lines that ``Check.line`` writes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pglast
from pglast import ast
from pglast.enums import ConstrType
from pglast.stream import RawStream

from bot.workflow.report import Check, Status

SQLSTATE_CATEGORIES = {
    "23503": "invalid-fk",
    "23502": "not-null",
    "23505": "invalid-index",
    "23514": "check-violation",
    "23P01": "check-violation",
    "55P03": "lock",
    "40P01": "lock",
    "57014": "lock",
    "55006": "lock",
    "42601": "syntax",
    "42704": "undefined-object",
    "42883": "undefined-object",
    "53300": "pool",
}

TITLES = {
    "invalid-fk": "Invalid foreign key (orphaned rows)",
    "not-null": "SET NOT NULL failing (NULLs present)",
    "invalid-index": "Invalid index (duplicates or failed build)",
    "invalid-constraint": "Constraints left NOT VALID",
    "check-violation": "CHECK constraint violated by existing rows",
    "perf-regression": "Query performance regression (> threshold)",
    "lock": "Locks, timeouts and blockers",
    "missing-extension": "Missing extension",
    "pool": "Connection pool headroom",
    "syntax": "Syntax error",
    "checksum-drift": "Checksum drift (applied migration changed)",
    "unsafe-migration": "Unsafe migration (static rule)",
    "undefined-object": "Missing type, function or object",
    "staging-stale": "Staging is not a fresh copy of prod",
    "other": "Other failure",
}

EXTENSION_OBJECTS = {
    "citext": "citext",
    "similarity": "pg_trgm",
    "gin_trgm_ops": "pg_trgm",
    "gist_trgm_ops": "pg_trgm",
    "word_similarity": "pg_trgm",
    "uuid_generate_v4": "uuid-ossp",
    "uuid_generate_v1": "uuid-ossp",
}

_FACTS = re.compile(r"\[((?:[a-z_]+=[^\]\s]*\s?)+)\]\s*$")
_LINE = re.compile(r"^(PASSED|FAILED|BLOCKER|WARNING|HELD) ([^:\s]+): (.*)$")


@dataclass(frozen=True)
class Finding:
    category: str
    title: str
    checks: tuple[str, ...]  # the failed checks this cause explains
    why: str
    fix: str


def category_for_sqlstate(sqlstate: str | None) -> str:
    return SQLSTATE_CATEGORIES.get(sqlstate or "", "other")


def checks_from_log(text: str) -> list[Check]:
    """Rebuild checks from gate log lines (and their `> statement` continuations)."""
    checks: list[Check] = []
    for raw in text.splitlines():
        if raw.startswith("    > ") and checks:
            last = checks[-1]
            checks[-1] = Check(last.name, last.status, last.message, last.migration, dict(last.details, statement=raw[6:]))
            continue
        m = _LINE.match(raw.strip())
        if not m:
            continue
        status, name, message = m.groups()
        details: dict[str, object] = {}
        facts = _FACTS.search(message)
        if facts:
            message = message[: facts.start()].rstrip()
            details = dict(pair.split("=", 1) for pair in facts.group(1).split())
        checks.append(Check(name, Status(status), message, details=details))
    return checks


def _names(node_list: list | tuple | None) -> list[str]:
    return [getattr(n, "sval", None) or getattr(n, "name", None) or RawStream()(n) for n in node_list or ()]


def _qualified(rel: ast.RangeVar) -> str:
    return RawStream()(rel)


def _first(statement: str, kind: type) -> ast.Node | None:
    """The first statement of that AST node type in ``statement``, if it parses."""
    try:
        return next((raw.stmt for raw in pglast.parse_sql(statement) if isinstance(raw.stmt, kind)), None)
    except pglast.parser.ParseError:
        return None


def _parse_fk(statement: str) -> tuple[str, str, list[str], str, list[str]] | None:
    """(table, constraint, columns, parent table, parent columns) of the FK a statement adds."""
    node = _first(statement, ast.AlterTableStmt)
    for cmd in (node.cmds or ()) if node else ():
        con = getattr(cmd, "def_", None)
        if isinstance(con, ast.Constraint) and con.contype == ConstrType.CONSTR_FOREIGN:
            return (_qualified(node.relation), con.conname or "", _names(con.fk_attrs), _qualified(con.pktable),
                    _names(con.pk_attrs) or ["id"])
    return None


def _fix_fk(check: Check) -> str:
    d = check.details
    parsed = _parse_fk(str(d.get("statement", "")))
    if not parsed:
        table, constraint = d.get("table", "<child>"), d.get("constraint", "<fk_name>")
        return (f"-- Add the FK as NOT VALID, fix the orphans, then validate:\n"
                f"ALTER TABLE {table} VALIDATE CONSTRAINT {constraint};")
    table, constraint, cols, parent, pcols = parsed
    constraint = constraint or str(d.get("constraint") or f"{table}_{cols[0]}_fkey")
    join = " AND ".join(f"p.{pc} = c.{cc}" for cc, pc in zip(cols, pcols))
    present = " AND ".join(f"c.{cc} IS NOT NULL" for cc in cols)
    return (
        f"-- 1. Find the orphaned rows in {table}:\n"
        f"SELECT {', '.join('c.' + c for c in cols)} FROM {table} c\n"
        f"WHERE {present} AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE {join}) LIMIT 100;\n"
        f"-- 2. Fix them (re-point, or delete after review):\n"
        f"-- DELETE FROM {table} c WHERE {present} AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE {join});\n"
        f"-- 3. Add the constraint without scanning, then validate in a separate migration:\n"
        f"ALTER TABLE {table} ADD CONSTRAINT {constraint} FOREIGN KEY ({', '.join(cols)}) "
        f"REFERENCES {parent} ({', '.join(pcols)}) NOT VALID;\n"
        f"ALTER TABLE {table} VALIDATE CONSTRAINT {constraint};"
    )


def _fix_not_null(check: Check) -> str:
    table, column = check.details.get("table", "<table>"), check.details.get("column", "<column>")
    return (
        f"-- Backfill the NULLs first (in batches on big tables):\n"
        f"UPDATE {table} SET {column} = <default_value> WHERE {column} IS NULL;\n"
        f"-- Then set NOT NULL without a long scan under ACCESS EXCLUSIVE:\n"
        f"ALTER TABLE {table} ADD CONSTRAINT {table}_{column}_not_null CHECK ({column} IS NOT NULL) NOT VALID;\n"
        f"ALTER TABLE {table} VALIDATE CONSTRAINT {table}_{column}_not_null;\n"
        f"ALTER TABLE {table} ALTER COLUMN {column} SET NOT NULL;\n"
        f"ALTER TABLE {table} DROP CONSTRAINT {table}_{column}_not_null;"
    )


def _index_columns(statement: str) -> tuple[str, str, list[str]] | None:
    node = _first(statement, ast.IndexStmt)
    if node is None:
        return None
    cols = [p.name or RawStream()(p.expr) for p in node.indexParams or ()]
    return _qualified(node.relation), node.idxname or "", cols


def _fix_index(check: Check) -> str:
    d = check.details
    if d.get("indexes"):  # post-check: invalid indexes left behind
        drops = "\n".join(f"DROP INDEX CONCURRENTLY IF EXISTS {i['schema']}.{i['index']};" for i in d["indexes"])
        return f"-- Drop the invalid indexes, fix the cause, rebuild with CREATE INDEX CONCURRENTLY:\n{drops}"
    parsed = _index_columns(str(d.get("statement", "")))
    table = parsed[0] if parsed else d.get("table", "<table>")
    name = (parsed[1] if parsed else "") or d.get("constraint", "<index_name>")
    cols = ", ".join(parsed[2]) if parsed else "<columns>"
    return (
        f"-- 1. Find the duplicates:\n"
        f"SELECT {cols}, count(*) FROM {table} GROUP BY {cols} HAVING count(*) > 1 LIMIT 100;\n"
        f"-- 2. Resolve them, drop any INVALID leftover, and build concurrently:\n"
        f"DROP INDEX CONCURRENTLY IF EXISTS {name};\n"
        f"CREATE UNIQUE INDEX CONCURRENTLY {name} ON {table} ({cols});"
    )


def _fix_check_violation(check: Check) -> str:
    table, constraint = check.details.get("table", "<table>"), check.details.get("constraint", "<constraint>")
    return (
        f"-- Add the CHECK as NOT VALID (new rows are checked at once), fix the existing rows, then validate:\n"
        f"ALTER TABLE {table} ADD CONSTRAINT {constraint} CHECK (<condition>) NOT VALID;\n"
        f"SELECT ctid FROM {table} WHERE NOT (<condition>) LIMIT 100;\n"
        f"ALTER TABLE {table} VALIDATE CONSTRAINT {constraint};"
    )


def _fix_constraints(check: Check) -> str:
    items = check.details.get("constraints") or []
    lines = [f"ALTER TABLE {c['schema']}.{c['table']} VALIDATE CONSTRAINT {c['constraint']};" for c in items]
    return "-- Validate each (takes only SHARE UPDATE EXCLUSIVE):\n" + ("\n".join(lines) or "ALTER TABLE <table> VALIDATE CONSTRAINT <name>;")


LOCK_FIX = (
    "-- Kill idle-in-transaction sessions (after checking who they are):\n"
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity\n"
    "WHERE state = 'idle in transaction' AND now() - state_change > interval '5 minutes';\n"
    "-- Split the migration and validate in smaller batches; deploy in a low-traffic window.\n"
    "-- In Slack: /migrate unblock (an approver must approve the termination)."
)


def _needed_extensions(check: Check) -> list[str]:
    missing = check.details.get("missing") or []
    if isinstance(missing, str):  # from a log line: "pg_trgm,citext"
        missing = [m for m in re.split(r"[,\s]+", missing) if m]
    if missing:
        return list(missing)
    text = f"{check.message} {check.details.get('statement', '')}"
    return sorted({ext for obj, ext in EXTENSION_OBJECTS.items() if re.search(rf"\b{obj}\b", text)})


def _fix_extension(check: Check) -> str:
    needed = _needed_extensions(check) or ["pg_trgm", "citext", "uuid-ossp"]
    return "\n".join(f'CREATE EXTENSION IF NOT EXISTS "{e}";' for e in needed) + "\n-- on staging AND prod, before deploying"


def _fix_pool(check: Check) -> str:
    d = check.details
    return (
        f"-- {d.get('free', '?')} free of max_connections {d.get('max_connections', '?')}; the run needs {d.get('needed', '?')}.\n"
        "SHOW max_connections; SELECT count(*) FROM pg_stat_activity;\n"
        "-- Lower the application pool during VALIDATE, close idle sessions, or raise max_connections (restart)."
    )


def _fix_syntax(check: Check) -> str:
    line = check.details.get("line")
    where = f" at line {line}" if line else ""
    return f"-- Fix the SQL{where} of {check.details.get('path', check.migration or 'the migration')}; `migrate-bot lint` checks it offline."


PERF_GENERIC = ("-- Add the missing index (see the plans in perf_report.md), rewrite the slow query,\n"
                "-- or split the migration into smaller chunks.")


def _concurrently(indexdef: str) -> str:
    """pg_get_indexdef's statement, built without blocking writes."""
    return re.sub(r"^CREATE (UNIQUE )?INDEX ", lambda m: f"CREATE {m.group(1) or ''}INDEX CONCURRENTLY IF NOT EXISTS ",
                  indexdef.strip().rstrip(";")) + ";"


def _fix_perf(check: Check) -> str:
    """The regression gate's likely cause (the ``rule`` fact) -> its fix, with the real table/column names."""
    d = check.details
    rule = str(d.get("rule") or "")
    table, column = str(d.get("table") or "<table>"), str(d.get("column") or "<column>").replace(",", ", ")
    if rule == "lost-index":
        index = str(d.get("index") or "")
        create = (_concurrently(str(d["indexdef"])) if d.get("indexdef")
                  else f"CREATE INDEX CONCURRENTLY IF NOT EXISTS ON {table} ({column});")
        return (f"-- The statement used the index {index or 'on ' + table + ' (' + column + ')'} before the migrations and "
                f"reads {table} without it after them.\n"
                f"-- Keep the index (drop it in a later cleanup migration once no hot statement needs it), or recreate it:\n"
                f"{create}")
    if rule == "trigger":
        names = [str(n) for n in d.get("triggers") or []]
        constraint = str(d.get("constraint") or "")
        if constraint and not [n for n in names if not n.startswith("RI_ConstraintTrigger")]:
            return (f"-- The foreign key {constraint} now checks every row this statement writes to {table}.\n"
                    f"-- That is the price of the constraint; make sure the referenced key is indexed, and if the\n"
                    f"-- write path cannot afford it, reconsider the constraint:\n"
                    f"SELECT conname, confrelid::regclass FROM pg_constraint WHERE conname = '{constraint}';")
        listed = ", ".join(names) or "the new triggers"
        return (f"-- {listed} on {table} now run for every row this hot statement writes.\n"
                f"-- Make the trigger cheaper (a WHEN (…) condition, a FOR EACH STATEMENT trigger with transition tables),\n"
                f"-- or move its work off the hot path (a queue table processed in batches). The triggers on {table}:\n"
                f"SELECT tgname, tgfoid::regprocedure FROM pg_trigger WHERE tgrelid = '{table}'::regclass AND NOT tgisinternal;")
    if rule == "row-estimate":
        return (f"-- The planner's row estimate on {table} is far off after the migrations, so it picks another plan.\n"
                f"ANALYZE {table};\n"
                f"-- If it stays off, give {column} a finer histogram, or teach the planner correlated columns:\n"
                f"ALTER TABLE {table} ALTER COLUMN {column} SET STATISTICS 1000;\n"
                f"ANALYZE {table};\n"
                f"-- CREATE STATISTICS {table}_stats (dependencies, mcv) ON {column}, <other column> FROM {table};")
    if rule == "bloat":
        return (f"-- Same plan, more blocks: {table} is bloated after the migration's backfill or rewrite.\n"
                f"VACUUM (ANALYZE) {table};\n"
                f"-- Backfill in batches (e.g. 10,000 rows per transaction) with VACUUM between them, so the deploy\n"
                f"-- does not leave prod's {table} twice its size.")
    if rule == "fails-after":
        return (f"-- The statement now fails after the migrations (SQLSTATE {d.get('sqlstate', '?')}): the migration changed "
                f"what this hot statement may do\n"
                f"-- (a new constraint, a NOT NULL column without a default, a dropped column). Deploy the application\n"
                f"-- change first, or give the new column a default / the constraint NOT VALID until the data is fixed.")
    if rule == "no-plan":
        return ("-- The statement no longer plans: a column or table it uses is gone or renamed.\n"
                "-- Ship the application change first and drop the old column in a later cleanup migration (expand/contract).")
    return PERF_GENERIC


FIXES = {
    "invalid-fk": _fix_fk,
    "not-null": _fix_not_null,
    "invalid-index": _fix_index,
    "check-violation": _fix_check_violation,
    "invalid-constraint": _fix_constraints,
    "lock": lambda c: LOCK_FIX,
    "missing-extension": _fix_extension,
    "undefined-object": lambda c: "-- Create the missing object in an earlier migration, or fix the name.",
    "pool": _fix_pool,
    "syntax": _fix_syntax,
    "checksum-drift": lambda c: "-- Restore the applied file exactly (git checkout it) and put the change in a new migration.",
    "perf-regression": lambda c: _fix_perf(c),
    "unsafe-migration": lambda c: str(c.details.get("fix") or "-- See the rule's safe rewrite."),
    "staging-stale": lambda c: "-- Refresh staging from prod, then validate again:\nmigrate-bot refresh && migrate-bot validate",
    "other": lambda c: "-- No typical fix known; read the message and the log.",
}


def category_of(check: Check) -> str:
    details = check.details
    category = str(details.get("category") or "") or category_for_sqlstate(str(details.get("sqlstate") or ""))
    if category == "undefined-object" and _needed_extensions(check):
        return "missing-extension"
    return category if category in TITLES else "other"


def triage(checks: list[Check]) -> list[Finding]:
    """One finding per distinct cause, in the order they happened.

    A pre-check and the statement it predicted often fail for the same reason
    with the same fix: they become one finding naming both checks.
    """
    findings: list[Finding] = []
    for check in checks:
        if not check.status.fails_gate:
            continue
        category = category_of(check)
        fix = FIXES[category](check)
        same = next((i for i, f in enumerate(findings) if f.category == category and f.fix == fix), None)
        if same is None:
            findings.append(Finding(category, TITLES[category], (check.name,), check.message, fix))
        else:
            found = findings[same]
            findings[same] = Finding(category, found.title, found.checks + (check.name,), found.why, fix)
    return findings


def render_text(findings: list[Finding]) -> str:
    if not findings:
        return "Nothing to triage: no FAILED or BLOCKER lines."
    out = [f"{len(findings)} failure(s) to fix before deploying:"]
    for i, f in enumerate(findings, 1):
        out += ["", f"{i}. {f.title} — {', '.join(f.checks)}", f"   {f.why}", "   Fix:"]
        out += [f"     {line}" for line in f.fix.splitlines()]
    return "\n".join(out)
