"""Triage: failed checks -> causes, measured evidence first, each with its specific fix.

Pure functions over Checks. Categories key on SQLSTATE and diag fields
(table, column, constraint), never on message wording; fixes are written
out with the real names, so the SQL can be pasted after review.

Order: what the databases *measured* comes first — migration errors (with
their SQLSTATE) and the data pre-checks that predicted them, then rewrites
and full scans the staging trace saw (``trace.rewrite``, ``trace.scan``), long
lock holds and budgets, then regressions of prod's hot statements (with the
statement, its calls on prod, and both plan costs or what the planner said),
then the other measured checks (extensions, pool, staging freshness, drift,
adoption…). Static findings (``lint.*``: read from the SQL, not measured) come
last, one per rule with its count and migrations ("create-index-non-concurrent
×14: 0003_…, 0007_…"), each occurrence with its own fix.

Works from a JSON report (full data) or from a gate log: the ``[key=value]``
facts and the ``> statement`` continuation lines that ``Check.line`` writes.
From a log, the fixes the report carried are made again from the statement
(the static rules' rewrite of that statement, the trace's safe pattern).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from pglast import ast
from pglast.enums import ConstrType
from pglast.stream import RawStream

from bot.migrations.lint import RULES, LintSyntaxError, lint_sql
from bot.migrations.sqlfile import SqlSyntaxError, Statement, parse_file, parse_statements
from bot.workflow import resume
from bot.workflow.report import Check, Status
from bot.workflow.scans import scan_fix
from bot.workflow.tracefixes import lock_fix, rewrite_fix

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
    "unadopted-history": "Another tool's migration history is not adopted",
    "gate-settings": "Validated under looser gate settings than this config",
    "partial-migration": "Migration interrupted part-way (statements committed)",
    "window-closed": "The deploy window closed",
    "busy": "Prod is too busy to deploy now",
    "other": "Other failure",
}

TRACE_TITLES = {  # what the staging trace measured (its checks carry category unsafe-migration, like the rules')
    "rewrite": "Table rewrite under a blocking lock (measured on staging)",
    "scan": "Full-table scan or write under a blocking lock (measured on staging)",
    "lock-held": "Blocking lock held over the budget (measured on staging)",
    "transaction-time": "Transaction over its budget (measured on staging)",
    "migration-time": "Migration over its budget (measured on staging)",
    "concurrent-index": "Concurrent index left INVALID (measured on staging)",
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
# our own message shapes, for what a log line does not carry as a fact
_LABEL_IN_MESSAGE = re.compile(r"^(\d[^\s:]*)(?=: | line \d)")
_LABELLED_NAMES = ("migration.", "syntax.", "checksum-drift.", "hold-back.", "window-closed.", "window-cancel.",
                   "baseline.", "baseline-changed.")
_LOCK_MODE = re.compile(r"\b((?:Access|Row|ShareUpdate|ShareRow)?(?:Exclusive|Share)Lock)\b")
_CALLS = re.compile(r"\(([\d,]+) calls on prod|weight (\d+)")
_COSTS = re.compile(r"(?:plan cost|\() ?([\d.]+) -> ([\d.]+)")

MEASURED, STATIC = "measured", "static"
SHOWN_MIGRATIONS = 5  # in a static group's title
SHOWN_FIXES = 20  # distinct fixes of one static group written out


@dataclass(frozen=True)
class Finding:
    category: str
    title: str
    checks: tuple[str, ...]  # the failed checks this cause explains
    why: str
    fix: str
    kind: str = MEASURED  # MEASURED (the databases said so) | STATIC (a rule read it from the SQL)
    count: int = 1  # failed checks behind it (a static rule's occurrences)
    migrations: tuple[str, ...] = ()
    evidence: str = ""  # perf: the statement, its calls on prod, and both plan costs or what the planner said


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
        checks.append(Check(name, Status(status), message, migration=_label(name, message), details=details))
    return checks


def _label(name: str, message: str) -> str | None:
    """The migration a log line is about: in its check name (migration.<label>) or its message's start."""
    prefix = next((p for p in _LABELLED_NAMES if name.startswith(p)), None)
    if prefix and len(name) > len(prefix):
        return name[len(prefix):]
    found = _LABEL_IN_MESSAGE.match(message)
    return found.group(1) if found else None


def _names(node_list: list | tuple | None) -> list[str]:
    return [getattr(n, "sval", None) or getattr(n, "name", None) or RawStream()(n) for n in node_list or ()]


def _qualified(rel: ast.RangeVar) -> str:
    return RawStream()(rel)


def _first(statement: str, kind: type) -> ast.Node | None:
    """The first statement of that AST node type in ``statement``, if it parses."""
    try:
        return next((node for node in parse_statements(statement) if isinstance(node, kind)), None)
    except SqlSyntaxError:
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


def _statement(check: Check) -> Statement | None:
    """The check's statement, parsed (from a report or a log's `> ` line); None when it does not parse."""
    text = str(check.details.get("statement") or "").strip()
    if not text:
        return None
    try:
        parsed = parse_file(text)
    except Exception:  # noqa: BLE001 - a cut or odd statement: the fix falls back to the rule's words
        return None
    found = [st for st in parsed.statements if not st.transaction_control]
    return found[0] if found and not parsed.error else None


def rule_of(check: Check) -> str:
    """The static rule or the trace's measurement behind a check: the ``rule`` fact, else its name's suffix."""
    rule = str(check.details.get("rule") or "")
    if rule:
        return rule
    for prefix in ("lint.", "trace."):
        if check.name.startswith(prefix):
            return check.name[len(prefix):]
    return ""


def _lock_mode(check: Check) -> str:
    mode = str(check.details.get("lock_mode") or "")
    if mode:
        return mode
    found = _LOCK_MODE.search(check.message)
    return found.group(1) if found else ""


def _rule_fix(check: Check, rule: str) -> str:
    """A static rule's safe rewrite of the check's own statement (what the report's ``fix`` was)."""
    statement = str(check.details.get("statement") or "")
    try:
        hits = [f for f in lint_sql(statement) if f.rule == rule] if statement else []
    except LintSyntaxError:
        hits = []
    if hits:
        return hits[0].fix
    what = RULES.get(rule, ("", ""))[1]
    about = f"-- {rule}: {what}.\n" if what else ""
    return about + "-- `migrate-bot lint <file>` writes the safe rewrite with this statement's names."


def _fix_unsafe(check: Check) -> str:
    """The fix a static rule or the staging trace wrote; made again from the statement when only a log is left."""
    d = check.details
    if d.get("fix"):
        return str(d["fix"])
    rule, stmt, table = rule_of(check), _statement(check), str(d.get("table") or "<table>")
    if check.name.startswith("lint."):
        return _rule_fix(check, rule)
    if rule == "rewrite" and stmt is not None:
        return rewrite_fix(stmt, table, _lock_mode(check) or "AccessExclusiveLock", ())
    if rule == "scan" and stmt is not None:
        return scan_fix(stmt, table, "wrote every row" in check.message)
    if rule == "lock-held":
        return lock_fix(table, _lock_mode(check) or "lock")
    if rule in ("transaction-time", "migration-time"):
        return (f"-- Split {check.migration or 'the migration'}: keep lock-taking DDL in short transactions of its "
                "own; backfill and fix data in batches (one transaction per batch, or a `-- migrate:no-transaction` "
                "file); build indexes CONCURRENTLY in their own migration.")
    if rule == "concurrent-index" and stmt is not None and isinstance(stmt.node, ast.IndexStmt):
        return (f"DROP INDEX CONCURRENTLY IF EXISTS {stmt.node.idxname or '<index>'};\n"
                f"-- fix the cause, then build it again:\n{stmt.sql.rstrip(';')};")
    return "-- See the rule's safe rewrite: `migrate-bot lint <file>` writes it with this statement's names."


def _fix_adoption(check: Check) -> str:
    return str(check.details.get("fix") or "migrate-bot baseline        # shows what it would record\n"
                                           "migrate-bot baseline --yes")


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
    "unsafe-migration": _fix_unsafe,
    "staging-stale": lambda c: "-- Refresh staging from prod, then validate again:\nmigrate-bot refresh && migrate-bot validate",
    "unadopted-history": _fix_adoption,
    "gate-settings": lambda c: "-- Validate again under this deploy's config (then deploy what passed):\nmigrate-bot validate",
    "partial-migration": lambda c: resume.fix(c.details),
    "window-closed": lambda c: "-- Nothing to fix in the SQL: what was not started stays pending for the next window.",
    "busy": lambda c: ("-- Wait for a quieter moment (or the next window); see who is active:\n"
                       "SELECT pid, state, now() - xact_start AS in_tx, left(query, 60) FROM pg_stat_activity\n"
                       "WHERE datname = current_database() AND state <> 'idle' ORDER BY xact_start;"),
    "other": lambda c: "-- No typical fix known; read the message and the log.",
}


def category_of(check: Check) -> str:
    details = check.details
    category = str(details.get("category") or "") or category_for_sqlstate(str(details.get("sqlstate") or ""))
    if category == "undefined-object" and _needed_extensions(check):
        return "missing-extension"
    return category if category in TITLES else "other"


def is_static(check: Check) -> bool:
    """A static rule's finding (read from the SQL), as opposed to something a database measured or said."""
    return check.name.startswith("lint.")


def rank_of(check: Check) -> int:
    """Where a measured failure goes in the triage: migration errors, rewrites and scans, locks and budgets,
    hot-statement regressions, then the rest (preflight, post-checks, drift, adoption)."""
    name, rule = check.name, rule_of(check)
    if name.startswith(("migration.", "precheck.", "syntax.")) or (
            check.details.get("sqlstate") and not name.startswith("perf-regression")):
        return 0
    if name.startswith("trace.") and rule in ("rewrite", "scan"):
        return 1
    if name.startswith("trace."):
        return 2
    if category_of(check) == "perf-regression":
        return 3
    return 4


def triage(checks: list[Check]) -> list[Finding]:
    """Measured causes first (by ``rank_of``, then in the order they happened), then static rules by count.

    A pre-check and the statement it predicted often fail for the same reason
    with the same fix: they become one finding naming both checks.
    """
    failing = [c for c in checks if c.status.fails_gate]
    measured = _measured([c for c in failing if not is_static(c)])
    return measured + _static([c for c in failing if is_static(c)])


def _measured(checks: list[Check]) -> list[Finding]:
    found: list[tuple[int, int, Finding]] = []  # (rank, first position, finding)
    for position, check in enumerate(checks):
        category = category_of(check)
        fix = FIXES[category](check)
        label = check.migration or ""
        evidence = perf_evidence(check) if category == "perf-regression" else ""
        same = next((i for i, (_, _, f) in enumerate(found)
                     if f.category == category and f.fix == fix and f.evidence == evidence), None)
        if same is None:
            title = TRACE_TITLES.get(rule_of(check), TITLES[category]) if check.name.startswith("trace.") \
                else TITLES[category]
            finding = Finding(category, title, (check.name,), check.message, fix,
                              migrations=(label,) if label else (), evidence=evidence)
            found.append((rank_of(check), position, finding))
            continue
        rank, first, f = found[same]
        migrations = f.migrations + ((label,) if label and label not in f.migrations else ())
        found[same] = (min(rank, rank_of(check)), first,
                       replace(f, checks=f.checks + (check.name,), count=f.count + 1, migrations=migrations))
    return [f for _, _, f in sorted(found, key=lambda item: (item[0], item[1]))]


def _static(checks: list[Check]) -> list[Finding]:
    """One finding per rule: its count, the migrations it fired in, and each occurrence's own fix."""
    groups: dict[str, list[Check]] = {}
    for check in checks:
        groups.setdefault(rule_of(check) or check.name, []).append(check)
    out = []
    for rule, hits in sorted(groups.items(), key=lambda kv: -len(kv[1])):  # stable: ties keep their order
        labels = list(dict.fromkeys(c.migration or "?" for c in hits))
        shown = ", ".join(labels[:SHOWN_MIGRATIONS]) + (", …" if len(labels) > SHOWN_MIGRATIONS else "")
        title = f"{rule} ×{len(hits)}: {shown}"
        what = RULES.get(rule, ("", ""))[1]
        why = hits[0].message if len(hits) == 1 else (what or hits[0].message)
        out.append(Finding("unsafe-migration", title, tuple(dict.fromkeys(c.name for c in hits)), why,
                           _group_fix(hits), kind=STATIC, count=len(hits), migrations=tuple(labels)))
    return out


def _group_fix(hits: list[Check]) -> str:
    """Each occurrence's own fix, headed by where it is; the same fix twice is written once."""
    fixes: dict[str, list[str]] = {}
    for c in hits:
        line = c.details.get("line")
        where = f"{c.migration or '?'}" + (f" line {line}" if line not in (None, "") else "")
        fixes.setdefault(_fix_unsafe(c), []).append(where)
    if len(fixes) == 1 and len(hits) == 1:
        return next(iter(fixes))
    parts = [f"-- {', '.join(where)}:\n{fix}" for fix, where in list(fixes.items())[:SHOWN_FIXES]]
    if len(fixes) > SHOWN_FIXES:
        rest = sum(len(w) for w in list(fixes.values())[SHOWN_FIXES:])
        parts.append(f"-- … and {rest} more like these: `migrate-bot lint <dir>` writes each one's fix")
    return "\n\n".join(parts)


def perf_evidence(check: Check) -> str:
    """The hot statement, its calls on prod, and both plan costs — or what the planner said after the migrations."""
    d = check.details
    lines = []
    if d.get("statement"):
        lines.append(f"statement: {' '.join(str(d['statement']).split())}")
    calls = d.get("calls")
    found = _CALLS.search(check.message)
    if d.get("source") == "workload" or (found and found.group(2)):
        lines.append(f"pinned in the workload file, weight {calls or (found.group(2) if found else '?')}")
    elif calls not in (None, "") or (found and found.group(1)):
        lines.append(f"calls on prod: {calls if calls not in (None, '') else found.group(1)}")
    before, after = d.get("before"), d.get("after")
    costs = _COSTS.search(check.message)
    if before in (None, "") and costs:
        before, after = costs.group(1), costs.group(2)
    rule = rule_of(check)
    error = d.get("plan_error") or d.get("error")
    if rule == "no-plan" or (before not in (None, "") and after in (None, "") and not costs):
        lines.append("plan cost: " + (f"{_cost(before)} before; " if before not in (None, "") else "")
                     + "after the migrations the planner refuses it" + (f": {error}" if error else ""))
    elif before not in (None, ""):
        lines.append(f"plan cost: {_cost(before)} -> {_cost(after)}")
    if rule == "fails-after" and d.get("sqlstate"):
        lines.append(f"after the migrations it fails with SQLSTATE {d['sqlstate']}" + (f": {error}" if error else ""))
    if d.get("blocks_before") not in (None, "") and d.get("blocks_after") not in (None, ""):
        lines.append(f"blocks: {d['blocks_before']} -> {d['blocks_after']}"
                     + (f"; time ratio {d['ratio']}" if d.get("ratio") not in (None, "") else ""))
    return "\n".join(lines)


def _cost(value: object) -> str:
    try:
        return f"{float(value):.1f}"  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)


def render_text(findings: list[Finding]) -> str:
    if not findings:
        return "Nothing to triage: no FAILED or BLOCKER lines."
    out = [f"{len(findings)} failure(s) to fix before deploying:"]
    heading = ""
    for i, f in enumerate(findings, 1):
        section = ("Measured on the databases:" if f.kind == MEASURED
                   else "Static rules (read from the SQL, not measured):")
        if section != heading:
            out += ["", section]
            heading = section
        title = f.title if f.kind == STATIC else f"{f.title} — {', '.join(f.checks)}"
        out += ["", f"{i}. {title}", f"   {f.why}"]
        out += [f"   {line}" for line in f.evidence.splitlines()]
        out += ["   Fix:"] + [f"     {line}".rstrip() for line in f.fix.splitlines()]
    return "\n".join(out)
