"""Which column is each ``$n`` compared with? The regression gate's statements, read with pglast.

pg_stat_statements keeps a hot statement as normalised text (``WHERE user_id =
$1``); to *run* it, each ``$n`` needs a concrete value that hits real rows.
This module reads the statement with PostgreSQL's own parser and says, for
every parameter, where its values come from:

- ``col = $1``, ``$1 = col``, ``col IN ($1, $2)``, ``col = ANY($1)``, ``col
  LIKE $1``, ``lower(u.email) = $1``: values of that expression, read from the
  table it belongs to (``eq``, ``any``);
- ``col < $1`` / ``col > $1`` / ``col BETWEEN $1 AND $2``: a bound from
  ``pg_stats``' histogram, so the range stays as selective as a hot query's
  (``lt``, ``gt``, ``between-lo``/``between-hi``);
- ``UPDATE … SET col = $1`` and ``INSERT … (col) VALUES ($1)``: values of that
  column (``set``, ``insert``), so writes fire the triggers and checks they
  would fire;
- ``LIMIT $n`` (10), ``OFFSET $n`` (0), ``$n::interval`` ('1 day'), a bare
  boolean ``$n`` (true): pg_stat_statements does not keep those constants, and
  they carry no data.

A parameter none of these explain is listed in ``Shape.missing``: the gate
says so (a WARNING naming the statement) instead of guessing. Columns are
resolved through the statement's scopes (aliases, joins, sub-selects); an
unqualified column in a multi-table scope is looked up in the catalog through
the ``columns_of`` callback. Pure functions: no database here.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Callable

import pglast
from pglast import ast
from pglast.enums import A_Expr_Kind, SetOperation
from pglast.stream import RawStream

from bot.migrations.sqlfile import SqlSyntaxError, parse_raw

ColumnsOf = Callable[[str | None, str], tuple[str, ...] | None]  # (schema, table) -> column names in order
FIXED_VALUES = {"limit": "10", "offset": "0", "interval": "1 day", "bool": "true"}
_LOWER_BOUND_OPS = {"<", "<="}  # col < $1: $1 bounds col from above
_UPPER_BOUND_OPS = {">", ">="}
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}
_BETWEEN = {A_Expr_Kind.AEXPR_BETWEEN, A_Expr_Kind.AEXPR_NOT_BETWEEN, A_Expr_Kind.AEXPR_BETWEEN_SYM,
            A_Expr_Kind.AEXPR_NOT_BETWEEN_SYM}
_BINARY = {A_Expr_Kind.AEXPR_OP, A_Expr_Kind.AEXPR_LIKE, A_Expr_Kind.AEXPR_ILIKE, A_Expr_Kind.AEXPR_SIMILAR,
           A_Expr_Kind.AEXPR_DISTINCT, A_Expr_Kind.AEXPR_NOT_DISTINCT, A_Expr_Kind.AEXPR_NULLIF}
_WEIGHT = re.compile(r"^\s*--\s*weight:\s*(\d+)\s*$", re.MULTILINE | re.IGNORECASE)
_SLUG = re.compile(r"[^a-z0-9]+")
NAME_MAX = 48  # characters of the readable part of a check name, before the fingerprint


@dataclass(frozen=True)
class Source:
    """Where a parameter's values come from: an expression over one table instance of the statement."""

    schema: str | None
    table: str
    alias: str  # the name the expression uses for the table (its alias, else the table name)
    instance: int  # which occurrence of the table in the statement (rows are sampled per occurrence)
    expr: str  # SQL over that table, e.g. "user_id" or "lower(u.email)"
    column: str | None  # the plain column, when the expression is one
    label: str = ""  # the column the expression reads (for readable names)


@dataclass(frozen=True)
class Target:
    number: int
    kind: str  # eq | any | lt | gt | between-lo | between-hi | set | insert | limit | offset | interval | bool
    source: Source | None = None
    partner: int | None = None  # the other end of a BETWEEN


@dataclass(frozen=True)
class Shape:
    """What the gate needs to know to run one statement with real values."""

    command: str  # select | insert | update | delete | other
    tables: tuple[tuple[str | None, str], ...]  # (schema, table) in order of appearance, unique
    compared: tuple[str, ...]  # columns compared with a parameter, in order, unique (for the readable name)
    targets: dict[int, Target]
    missing: tuple[int, ...]  # $n with no source of values
    params: int  # the highest $n
    fingerprint: str  # pglast's fingerprint of the statement (same for every value of the parameters)
    problem: str = ""  # why the statement could not be read, when it could not

    @property
    def writes(self) -> bool:
        return self.command in ("insert", "update", "delete")


@dataclass
class _Instance:
    schema: str | None
    table: str
    alias: str
    number: int


@dataclass
class _Scope:
    parent: "_Scope | None"
    tables: list[_Instance] = field(default_factory=list)
    opaque: set[str] = field(default_factory=set)  # sub-selects, CTEs, functions: no table behind them
    ctes: set[str] = field(default_factory=set)

    def chain(self) -> list["_Scope"]:
        scope, found = self, []
        while scope is not None:
            found.append(scope)
            scope = scope.parent
        return found

    def is_cte(self, name: str) -> bool:
        return any(name in s.ctes for s in self.chain())


class _Reader:
    """Walks one statement's AST with its scopes, collecting parameter targets."""

    def __init__(self, columns_of: ColumnsOf) -> None:
        self.columns_of = columns_of
        self.targets: dict[int, Target] = {}
        self.seen: set[int] = set()
        self.tables: list[tuple[str | None, str]] = []
        self.compared: list[str] = []
        self._instances = 0
        self._naming = True  # False while walking SET values: `total + $1` names no lookup

    # -- statements ------------------------------------------------------------------------------

    def statement(self, node: ast.Node | None, parent: _Scope | None) -> None:
        if isinstance(node, ast.SelectStmt):
            self.select(node, parent)
        elif isinstance(node, ast.InsertStmt):
            self.insert(node, parent)
        elif isinstance(node, ast.UpdateStmt):
            self.update(node, parent)
        elif isinstance(node, ast.DeleteStmt):
            self.delete(node, parent)
        elif node is not None:
            self.expr(node, parent or _Scope(None))

    def _with(self, clause: ast.WithClause | None, parent: _Scope | None) -> _Scope:
        scope = _Scope(parent)
        for cte in (clause.ctes if clause else None) or ():
            self.statement(cte.ctequery, parent)
            scope.ctes.add(cte.ctename)
        return scope

    def select(self, node: ast.SelectStmt, parent: _Scope | None) -> None:
        outer = self._with(node.withClause, parent)
        if node.op is not None and node.op != SetOperation.SETOP_NONE:
            self.statement(node.larg, outer)
            self.statement(node.rarg, outer)
        else:
            scope = _Scope(outer)
            for item in node.fromClause or ():
                self.from_item(item, scope)
            for row in node.valuesLists or ():
                self.expr(row, scope)
            for part in (node.targetList, node.whereClause, node.groupClause, node.havingClause, node.sortClause,
                         node.windowClause, node.distinctClause):
                self.expr(part, scope, boolean=part is not None and part in (node.whereClause, node.havingClause))
        self.fixed(node.limitCount, "limit", outer)
        self.fixed(node.limitOffset, "offset", outer)

    def insert(self, node: ast.InsertStmt, parent: _Scope | None) -> None:
        ctes = self._with(node.withClause, parent)
        scope = _Scope(ctes)  # the target table: visible to ON CONFLICT, not to the SELECT feeding the rows
        target = self.add_table(node.relation, scope)
        names = [c.name for c in node.cols or ()] or list(self.columns_of(target.schema, target.table) or ())
        query = node.selectStmt
        if isinstance(query, ast.SelectStmt) and query.valuesLists:
            for row in query.valuesLists:
                for i, item in enumerate(row):
                    number = _param_number(item)
                    if number is not None and i < len(names):
                        self.add(Target(number, "insert", self.source_for_column(target, names[i])))
                    else:
                        self.expr(item, scope)
        else:
            self.statement(query, ctes)
        conflict = node.onConflictClause
        if conflict is not None:
            self.set_list(conflict.targetList, target, scope)
            self.expr(conflict.whereClause, scope, boolean=True)

    def update(self, node: ast.UpdateStmt, parent: _Scope | None) -> None:
        scope = _Scope(self._with(node.withClause, parent))
        target = self.add_table(node.relation, scope)
        for item in node.fromClause or ():
            self.from_item(item, scope)
        self.set_list(node.targetList, target, scope)
        self.expr(node.whereClause, scope, boolean=True)

    def delete(self, node: ast.DeleteStmt, parent: _Scope | None) -> None:
        scope = _Scope(self._with(node.withClause, parent))
        self.add_table(node.relation, scope)
        for item in node.usingClause or ():
            self.from_item(item, scope)
        self.expr(node.whereClause, scope, boolean=True)

    def set_list(self, targets: tuple | None, table: _Instance, scope: _Scope) -> None:
        for res in targets or ():
            number = _param_number(res.val)
            if number is not None and res.name and not res.indirection:
                self.add(Target(number, "set", self.source_for_column(table, res.name)))
            else:
                self._naming = False
                try:
                    self.expr(res.val, scope)
                finally:
                    self._naming = True

    # -- FROM ------------------------------------------------------------------------------------

    def add_table(self, rel: ast.RangeVar, scope: _Scope) -> _Instance:
        self._instances += 1
        alias = rel.alias.aliasname if rel.alias else rel.relname
        found = _Instance(rel.schemaname, rel.relname, alias, self._instances)
        scope.tables.append(found)
        if (rel.schemaname, rel.relname) not in self.tables:
            self.tables.append((rel.schemaname, rel.relname))
        return found

    def from_item(self, item: ast.Node, scope: _Scope) -> None:
        if isinstance(item, ast.RangeVar):
            if not item.schemaname and scope.is_cte(item.relname):
                scope.opaque.add(item.alias.aliasname if item.alias else item.relname)
            else:
                self.add_table(item, scope)
        elif isinstance(item, ast.JoinExpr):
            self.from_item(item.larg, scope)
            self.from_item(item.rarg, scope)
            self.expr(item.quals, scope, boolean=True)
        elif isinstance(item, ast.RangeSubselect):
            self.statement(item.subquery, scope if item.lateral else scope.parent)
            if item.alias:
                scope.opaque.add(item.alias.aliasname)
        else:  # functions, VALUES, table samples …: walk their expressions, they name no table
            alias = getattr(item, "alias", None)
            if alias is not None:
                scope.opaque.add(alias.aliasname)
            self.expr(item, scope)

    # -- expressions -----------------------------------------------------------------------------

    def expr(self, node: object, scope: _Scope, boolean: bool = False) -> None:
        if node is None:
            return
        if isinstance(node, (list, tuple)):
            for item in node:
                self.expr(item, scope)
            return
        if not isinstance(node, ast.Node):
            return
        if isinstance(node, ast.ParamRef):
            self.seen.add(node.number)
            if boolean:
                self.add(Target(node.number, "bool"))
            return
        if isinstance(node, (ast.SelectStmt, ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt)):
            self.statement(node, scope)
            return
        if isinstance(node, ast.SubLink):
            self.expr(node.testexpr, scope)
            self.statement(node.subselect, scope)
            return
        if isinstance(node, ast.BoolExpr):  # AND / OR / NOT: a bare parameter among the args is a boolean
            for arg in node.args or ():
                self.expr(arg, scope, boolean=True)
            return
        if isinstance(node, ast.A_Expr):
            self.compare(node, scope)
        if isinstance(node, ast.TypeCast) and isinstance(node.arg, ast.ParamRef) and _type_name(node) == "interval":
            self.add(Target(node.arg.number, "interval"))
        for name in type(node).__slots__:
            self.expr(getattr(node, name), scope)

    def fixed(self, node: object, kind: str, scope: _Scope) -> None:
        number = _param_number(node)
        if number is not None:
            self.add(Target(number, kind))
        else:
            self.expr(node, scope)

    def compare(self, node: ast.A_Expr, scope: _Scope) -> None:
        op = node.name[-1].sval if node.name else ""
        left, right = node.lexpr, node.rexpr
        if node.kind in _BINARY:
            number, other = _param_number(right), left
            if number is None:
                number, other, op = _param_number(left), right, _FLIP.get(op, op)
            if number is not None:
                kind = "lt" if op in _LOWER_BOUND_OPS else "gt" if op in _UPPER_BOUND_OPS else "eq"
                self.add(Target(number, kind, self.source_for(other, scope)))
        elif node.kind == A_Expr_Kind.AEXPR_IN and isinstance(right, (list, tuple)):
            source = self.source_for(left, scope)
            for item in right:
                number = _param_number(item)
                if number is not None:
                    self.add(Target(number, "eq", source))
        elif node.kind in (A_Expr_Kind.AEXPR_OP_ANY, A_Expr_Kind.AEXPR_OP_ALL):
            number = _param_number(right)
            if number is not None:
                self.add(Target(number, "any", self.source_for(left, scope)))
        elif node.kind in _BETWEEN and isinstance(right, (list, tuple)) and len(right) == 2:
            low, high = _param_number(right[0]), _param_number(right[1])
            source = self.source_for(left, scope)
            if low is not None:
                self.add(Target(low, "between-lo", source, partner=high))
            if high is not None:
                self.add(Target(high, "between-hi", source, partner=low))

    def add(self, target: Target) -> None:
        if target.kind not in FIXED_VALUES and target.source is None:
            return  # no source: the number stays in `seen` and is reported missing
        self.targets.setdefault(target.number, target)
        self.seen.add(target.number)
        label = target.source.label if target.source else ""
        if label and self._naming and target.kind not in ("set", "insert") and label not in self.compared:
            self.compared.append(label)

    # -- resolving columns -----------------------------------------------------------------------

    def source_for(self, node: object, scope: _Scope) -> Source | None:
        """The table instance and SQL of an expression over exactly one table, else None."""
        refs: list[ast.ColumnRef] = []
        if not _collect_refs(node, refs) or not refs:
            return None
        owners = [self.resolve(ref, scope) for ref in refs]
        owner = owners[0]
        if owner is None or any(other is not owner for other in owners):
            return None
        if isinstance(node, ast.ColumnRef):
            return self.source_for_column(owner, node.fields[-1].sval)
        label = refs[0].fields[-1].sval
        return Source(owner.schema, owner.table, owner.alias, owner.number, RawStream()(node), None, label)

    @staticmethod
    def source_for_column(owner: _Instance, column: str) -> Source:
        return Source(owner.schema, owner.table, owner.alias, owner.number, _quote(column), column, column)

    def resolve(self, ref: ast.ColumnRef, scope: _Scope) -> _Instance | None:
        names = [f.sval for f in ref.fields if isinstance(f, ast.String)]
        if len(names) != len(ref.fields) or not names:
            return None  # t.* and friends
        column, qualifier = names[-1], names[:-1]
        for level in scope.chain():
            if qualifier:
                found = [t for t in level.tables if t.alias == qualifier[-1] and
                         (len(qualifier) == 1 or t.table == qualifier[-1])]
                if found:
                    return found[0]
                if qualifier[-1] in level.opaque:
                    return None
                continue
            having = [t for t in level.tables if column in (self.columns_of(t.schema, t.table) or ())]
            if len(having) == 1:
                return having[0]
            if len(having) > 1:
                return None  # ambiguous: PostgreSQL would refuse it too
            if len(level.tables) == 1 and not level.opaque and self.columns_of(level.tables[0].schema,
                                                                              level.tables[0].table) is None:
                return level.tables[0]  # unknown columns, one table: it must be that one
        return None


def _collect_refs(node: object, refs: list[ast.ColumnRef]) -> bool:
    """Column references in an expression; False if it holds a parameter or a sub-select."""
    if isinstance(node, (list, tuple)):
        return all(_collect_refs(item, refs) for item in node)
    if not isinstance(node, ast.Node):
        return True
    if isinstance(node, (ast.ParamRef, ast.SubLink, ast.SelectStmt)):
        return False
    if isinstance(node, ast.ColumnRef):
        refs.append(node)
        return True
    return all(_collect_refs(getattr(node, name), refs) for name in type(node).__slots__)


def _param_number(node: object) -> int | None:
    while isinstance(node, ast.TypeCast):
        node = node.arg
    return node.number if isinstance(node, ast.ParamRef) else None


def _type_name(node: ast.TypeCast) -> str:
    names = node.typeName.names or ()
    return names[-1].sval if names else ""


def _quote(name: str) -> str:
    return name if re.fullmatch(r"[a-z_][a-z0-9_$]*", name) else '"' + name.replace('"', '""') + '"'


_PARAM = re.compile(r"\$(\d+)")


def fingerprint(query: str) -> str:
    try:
        return pglast.parser.fingerprint(query)
    except SqlSyntaxError:
        return hashlib.sha1(" ".join(query.split()).encode()).hexdigest()[:16]


def analyse(query: str, columns_of: ColumnsOf) -> Shape:
    """Read one normalised statement: its tables, and where each ``$n``'s values come from."""
    params = max((int(n) for n in _PARAM.findall(query)), default=0)
    try:
        parsed = parse_raw(query)
    except SqlSyntaxError as exc:
        return Shape("other", (), (), {}, tuple(range(1, params + 1)), params, fingerprint(query),
                     problem=f"it does not parse ({exc.args[0] if exc.args else 'syntax error'})")
    if len(parsed) != 1:
        return Shape("other", (), (), {}, tuple(range(1, params + 1)), params, fingerprint(query),
                     problem="it is not one statement")
    node = parsed[0].stmt
    reader = _Reader(columns_of)
    reader.statement(node, None)
    command = {ast.SelectStmt: "select", ast.InsertStmt: "insert", ast.UpdateStmt: "update",
               ast.DeleteStmt: "delete"}.get(type(node), "other")
    numbers = set(range(1, params + 1)) | reader.seen
    missing = tuple(sorted(n for n in numbers if n not in reader.targets))
    return Shape(command, tuple(reader.tables), tuple(reader.compared), dict(reader.targets), missing,
                 max(numbers, default=0), fingerprint(query))


def runnable(query: str) -> str:
    """The statement as PostgreSQL accepts it in PREPARE.

    pg_stat_statements writes a typed literal as ``interval $1`` (it replaced
    only the string), which PREPARE refuses; pglast's deparse writes ``CAST($1
    AS interval)``. Anything else is run exactly as recorded.
    """
    if not re.search(r"[a-z_]\s+\$\d+", query, re.IGNORECASE):
        return query
    try:
        return RawStream()(parse_raw(query))
    except SqlSyntaxError:
        return query


def readable_name(shape: Shape) -> str:
    """``orders-by-user-id-3fa9c1``: the statement's tables and compared columns, plus a short fingerprint."""
    parts = [shape.command] if shape.writes else []
    parts += [table for _, table in shape.tables[:2]] or ["statement"]
    if shape.compared:
        parts += ["by", *" and ".join(shape.compared[:2]).split()]
    body = _SLUG.sub("-", "-".join(parts).lower()).strip("-")[:NAME_MAX].rstrip("-")
    return f"{body}-{shape.fingerprint[:6]}"


def describe_missing(shape: Shape) -> str:
    """Why a statement cannot be given values, in one clause."""
    if shape.problem:
        return shape.problem
    numbers = ", ".join(f"${n}" for n in shape.missing)
    verb = "is" if len(shape.missing) == 1 else "are"
    return f"{numbers} {verb} not compared with a column of one table (nothing to sample values from)"


# -- the pinned workload ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Pinned:
    """One statement of ``perf/workload.sql``: run exactly as written, reported normalised."""

    text: str
    display: str
    weight: int
    line: int


def normalise(text: str) -> str:
    """Every literal replaced by ``$n`` (PostgreSQL's own normalisation, as pg_stat_statements does)."""
    try:
        return " ".join(pglast.parser.normalize(text).split())
    except SqlSyntaxError:
        return " ".join(_PARAM.sub("$?", text).split())


def parse_workload(text: str) -> tuple[list[Pinned], str]:
    """The pinned statements with their ``-- weight: N`` (default 1); ([], error sentence) if it does not parse.

    A statement's weight is the last ``-- weight:`` comment between the
    previous statement and this one.
    """
    try:
        parsed = parse_raw(text)  # character offsets, like migration files
    except SqlSyntaxError as exc:
        return [], f"it does not parse ({exc.args[0] if exc.args else 'syntax error'})"
    pinned, previous_end = [], 0
    for raw in parsed:
        start = raw.stmt_location or 0
        end = start + raw.stmt_len if raw.stmt_len else len(text)
        body = text[start:end].strip().rstrip(";").strip()
        weights = _WEIGHT.findall(text[previous_end:start] + "\n" + "\n".join(
            line for line in body.splitlines() if line.strip().startswith("--")))
        previous_end = end
        line = text.count("\n", 0, start + len(text[start:end]) - len(text[start:end].lstrip())) + 1
        kind = type(raw.stmt).__name__
        if kind not in ("SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt"):
            return [], f"line {line}: only SELECT, INSERT, UPDATE and DELETE belong in it, not {kind}"
        pinned.append(Pinned(body, normalise(body), int(weights[-1]) if weights else 1, line))
    return pinned, ""
