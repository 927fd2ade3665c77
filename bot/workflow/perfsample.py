"""Concrete parameter values for the regression gate, sampled from the data the statements touch.

Values are read on the *before* side (staging's copy, taken before the
migrations), inside read-only transactions that are rolled back:

- rows of each table occurrence the statement names, through ``TABLESAMPLE
  SYSTEM … REPEATABLE`` (random pages, a fixed seed) or, for small tables, an
  ``ORDER BY random()`` after ``setseed``: every expression a parameter is
  compared with is read from the *same* row, so ``user_id = $1 AND status =
  $2`` hits a row that exists;
- ``pg_stats``' histogram bounds for range comparisons (``col > $1`` gets a
  bound near the top, so it selects about a tenth of the table), and its most
  common values when a table has no rows to read.

The values exist only in memory, for execution: they are never logged,
reported or stored (module docstring of ``bot.workflow.perf``).
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

import psycopg
from psycopg import sql

from bot.pg import rows
from bot.workflow.perfparams import FIXED_VALUES, Shape, Source, Target

ROWS_PER_TABLE = 32  # rows sampled per table occurrence; parameter sets cycle through them
SMALL_TABLE_PAGES = 4 * ROWS_PER_TABLE  # up to this size the whole table is shuffled instead of page-sampled
ANY_VALUES = 3  # elements of the array given to `col = ANY($n)`

TABLE_SQL = """
SELECT c.oid::int AS oid, n.nspname AS schema, c.relname AS name, c.relkind::text AS kind,
       CASE WHEN c.relkind = 'p'
            THEN (SELECT coalesce(sum(greatest(p.relpages, 0)), 0) FROM pg_partition_tree(c.oid) t
                  JOIN pg_class p ON p.oid = t.relid WHERE t.isleaf)
            ELSE greatest(c.relpages, 0) END AS pages
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = to_regclass(%s)
"""
COLUMNS_SQL = """
SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type, t.typcategory::text AS category
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""
UNIQUE_SQL = """
SELECT a.attname AS name
FROM pg_index x JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = x.indkey[0]
WHERE x.indrelid = %s AND x.indisunique AND x.indnkeyatts = 1 AND x.indexprs IS NULL
"""
STATS_SQL = """
SELECT histogram_bounds::text::text[] AS bounds, most_common_vals::text::text[] AS common
FROM pg_stats WHERE schemaname = %s AND tablename = %s AND attname = %s
"""


@dataclass
class Table:
    """What the catalog says about one table the statements name."""

    oid: int
    schema: str
    name: str
    kind: str
    pages: int
    columns: tuple[str, ...]
    types: dict[str, tuple[str, str]]  # column -> (type, typcategory)
    unique: set[str] = field(default_factory=set)

    def ident(self) -> sql.Composable:
        return sql.Identifier(self.schema, self.name)


class Catalog:
    """The before side's catalog, looked up once per table (pglast's ``columns_of`` reads it)."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self._tables: dict[tuple[str | None, str], Table | None] = {}

    def table(self, schema: str | None, name: str) -> Table | None:
        key = (schema, name)
        if key not in self._tables:
            self._tables[key] = self._lookup(schema, name)
        return self._tables[key]

    def columns_of(self, schema: str | None, name: str) -> tuple[str, ...] | None:
        found = self.table(schema, name)
        return found.columns if found else None

    def _lookup(self, schema: str | None, name: str) -> Table | None:
        qualified = sql.Identifier(schema, name) if schema else sql.Identifier(name)
        try:
            with self.conn.transaction():
                found = rows(self.conn, TABLE_SQL, (qualified.as_string(self.conn),))
                if not found:
                    return None
                t = found[0]
                cols = rows(self.conn, COLUMNS_SQL, (t["oid"],))
                unique = {r["name"] for r in rows(self.conn, UNIQUE_SQL, (t["oid"],))}
        except psycopg.Error:
            return None
        return Table(t["oid"], t["schema"], t["name"], t["kind"], int(t["pages"]), tuple(c["name"] for c in cols),
                     {c["name"]: (c["type"], c["category"]) for c in cols}, unique)


@dataclass
class _Occurrence:
    """Sampled rows of one table occurrence: one dict per row, expression SQL -> text value."""

    table: Table
    rows: list[dict[str, str | None]]
    stats: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)  # column -> (bounds, common)
    maxima: dict[str, str] = field(default_factory=dict)  # unique numeric column -> max value


def parameter_sets(catalog: Catalog, shape: Shape, count: int, seed: int) -> tuple[list[list[str | None]], str]:
    """``count`` argument lists for the statement's ``$1…$n``, or ([], why not)."""
    if shape.problem or shape.missing:
        return [], "missing"
    occurrences: dict[int, _Occurrence] = {}
    for target in shape.targets.values():
        source = target.source
        if source is None or source.instance in occurrences:
            continue
        table = catalog.table(source.schema, source.table)
        if table is None:
            return [], f"table {source.table} was not found on staging"
        wanted = [t for t in shape.targets.values() if t.source and t.source.instance == source.instance]
        occurrence = _sample(catalog.conn, table, source.alias, wanted, seed)
        if occurrence is None:
            return [], f"rows of {table.name} could not be read to sample values from"
        occurrences[source.instance] = occurrence
    for target in shape.targets.values():
        if target.source and not occurrences[target.source.instance].rows and not _fallback(occurrences, target):
            return [], f"table {target.source.table} has no rows to sample values from"
    rng = random.Random(seed)
    return [_one_set(shape, occurrences, s, rng) for s in range(count)], ""


def _sample(conn: psycopg.Connection, table: Table, alias: str, targets: list[Target],
            seed: int) -> _Occurrence | None:
    exprs = list(dict.fromkeys(t.source.expr for t in targets if t.source))
    not_null = sql.SQL(" AND ").join(sql.SQL("({}) IS NOT NULL").format(sql.SQL(e)) for e in exprs)
    relation = sql.SQL("{} AS {}").format(table.ident(), sql.Identifier(alias))
    pct = min(100.0, 100.0 * 3 * ROWS_PER_TABLE / max(table.pages, 1))
    sampled = sql.SQL("{} TABLESAMPLE SYSTEM ({}) REPEATABLE ({})").format(relation, sql.Literal(pct),
                                                                          sql.Literal(seed % 2**31))
    attempts = [(relation, not_null), (relation, sql.SQL("true"))]  # whole table: small, or pages had no hit
    if table.pages > SMALL_TABLE_PAGES and table.kind in ("r", "p", "m"):
        attempts.insert(0, (sampled, not_null))
    found: list[tuple] = []
    for source, where in attempts:
        query = sql.SQL("SELECT {} FROM (SELECT {} FROM {} WHERE {}) s ORDER BY random() LIMIT {}").format(
            sql.SQL(", ").join(sql.Identifier(f"v{i}") for i in range(len(exprs))),
            sql.SQL(", ").join(sql.SQL("({})::text AS {}").format(sql.SQL(e), sql.Identifier(f"v{i}"))
                               for i, e in enumerate(exprs)),
            source, where, sql.Literal(ROWS_PER_TABLE))
        try:
            with conn.transaction(force_rollback=True):
                conn.execute("SET TRANSACTION READ ONLY")
                conn.execute("SELECT setseed(%s)", ((seed % 1000) / 1000.0,))
                found = conn.execute(query).fetchall()
        except psycopg.Error:
            return None
        if len(found) >= 4 or (found and source is relation):
            break
    occurrence = _Occurrence(table, [dict(zip(exprs, r)) for r in found or []])
    _add_stats(conn, occurrence, targets)
    return occurrence


def _add_stats(conn: psycopg.Connection, occurrence: _Occurrence, targets: list[Target]) -> None:
    table = occurrence.table
    for target in targets:
        column = target.source.column if target.source else None
        if not column or column in occurrence.stats:
            continue
        try:
            with conn.transaction():
                found = rows(conn, STATS_SQL, (table.schema, table.name, column))
        except psycopg.Error:
            found = []
        bounds = (found[0]["bounds"] or []) if found else []
        common = (found[0]["common"] or []) if found else []
        occurrence.stats[column] = (list(bounds), list(common))
        if target.kind == "insert" and column in table.unique and table.types.get(column, ("", ""))[1] == "N":
            query = sql.SQL("SELECT max({})::text FROM {}").format(sql.Identifier(column), table.ident())
            try:
                with conn.transaction(force_rollback=True):
                    top = conn.execute(query).fetchone()[0]
            except psycopg.Error:
                top = None
            if top is not None:
                occurrence.maxima[column] = top


def _fallback(occurrences: dict[int, _Occurrence], target: Target) -> bool:
    """Whether an empty table still gives this target values (pg_stats)."""
    source = target.source
    if source is None or source.column is None:
        return False
    bounds, common = occurrences[source.instance].stats.get(source.column, ([], []))
    return bool(bounds or common)


def _one_set(shape: Shape, occurrences: dict[int, _Occurrence], s: int, rng: random.Random) -> list[str | None]:
    values: list[str | None] = [None] * shape.params
    between: dict[int, int] = {}
    for number, target in sorted(shape.targets.items()):
        values[number - 1] = _value(target, occurrences, s, rng, between)
    return values


def _value(target: Target, occurrences: dict[int, _Occurrence], s: int, rng: random.Random,
           between: dict[int, int]) -> str | None:
    if target.kind in FIXED_VALUES:
        return FIXED_VALUES[target.kind]
    source: Source = target.source  # type: ignore[assignment]
    occ = occurrences[source.instance]
    bounds, common = occ.stats.get(source.column or "", ([], []))
    row = occ.rows[s % len(occ.rows)] if occ.rows else None
    own = row.get(source.expr) if row else None
    if target.kind in ("lt", "gt") and len(bounds) >= 2:
        tenth = max(1, len(bounds) // 10)
        pick = rng.randrange(tenth)
        return bounds[pick] if target.kind == "lt" else bounds[len(bounds) - 1 - pick]
    if target.kind in ("between-lo", "between-hi") and len(bounds) >= 2:
        key = min(target.number, target.partner or target.number)
        i = between.setdefault(key, rng.randrange(len(bounds) - 1))
        return bounds[i] if target.kind == "between-lo" else bounds[i + 1]
    if target.kind == "any":
        picked = [occ.rows[(s + k) % len(occ.rows)].get(source.expr) for k in range(ANY_VALUES)] if occ.rows \
            else common[:ANY_VALUES]
        return _array([v for v in picked if v is not None])
    if target.kind == "set" and occ.rows and source.column not in occ.table.unique:
        return occ.rows[(s + 1) % len(occ.rows)].get(source.expr)  # another row's value: the write changes it
    if target.kind == "insert" and source.column in occ.table.unique:
        return _fresh(occ, source.column, own, s, rng)
    if row is None:
        return (common or bounds or [None])[s % max(1, len(common or bounds))]
    return own


def _fresh(occ: _Occurrence, column: str, own: str | None, s: int, rng: random.Random) -> str | None:
    """A value a unique column does not hold yet, so the INSERT does what a new row's INSERT does."""
    kind, category = occ.table.types.get(column, ("", ""))
    if column in occ.maxima:
        try:
            return str(int(Decimal(occ.maxima[column])) + 1 + s)
        except (InvalidOperation, ValueError):
            return own
    if kind == "uuid":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    if category == "S" and own is not None:
        return f"{own}~{s}"
    return own


def _array(values: list[str]) -> str:
    quoted = ('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return "{" + ",".join(quoted) + "}"
