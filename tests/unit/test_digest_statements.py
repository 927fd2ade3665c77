"""Snapshots without a database: query normalisation, the column choice per PostgreSQL version, storing."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pglast import parse_sql
from pglast.visitors import Visitor

from bot.workflow import statements
from bot.workflow.statements import normalise
from tests.unit.test_digest import EVENTS, ORDERS, T0, entry, snap

# -- a literal never survives ----------------------------------------------------------------------------------

MARK = "Zq"  # every generated string value starts with it; nothing else in the templates contains it

TEMPLATES = [
    "SET application_name = {s}",
    "ALTER ROLE app PASSWORD {s}",
    "SELECT * FROM orders WHERE note = {s} AND total > {n}",
    "COPY orders FROM {s}",
    "INSERT INTO events (kind, payload) VALUES ({s}, {n})",
    "SELECT {n}, {s}::jsonb -> 'k' FROM orders /* caller={s} */ -- trailing {s}",
    "UPDATE orders SET total = -{n} WHERE id = $1 AND note LIKE {s}",
    "DO $$ BEGIN PERFORM {s}; END $$",
    "SELECT interval {s} + now(), {n}.5e3, .{n}",
]


def sql_string(value: str, style: int) -> str:
    if style == 0:
        return "'" + value.replace("'", "''") + "'"
    if style == 1:
        return "E'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return "$x$" + value.replace("$x$", "") + "$x$"


values = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)


@given(template=st.sampled_from(TEMPLATES), tail=values, number=st.integers(min_value=10**6, max_value=10**12),
       style=st.integers(min_value=0, max_value=2))
def test_a_literal_never_survives_normalisation(template: str, tail: str, number: int, style: int) -> None:
    secret = MARK + tail
    query = template.replace("{s}", sql_string(secret, style)).replace("{n}", str(number))
    out = normalise(query, limit=10_000)
    assert MARK not in out and str(number) not in out, (query, out)


@pytest.mark.parametrize(("query", "expected"), [
    ("SET work_mem = '64MB'", "SET work_mem = $1"),
    ("ALTER ROLE app PASSWORD 'hunter2'", "ALTER ROLE app PASSWORD $1"),
    ("SELECT a FROM t WHERE b = $1 AND c = 42", "SELECT a FROM t WHERE b = $1 AND c = $2"),
    ("SELECT  x\n  FROM t  -- by alice\n", "SELECT x FROM t"),
    ("SELECT B'101', X'1F', U&'d\\0061t'", "SELECT $1, $2, $3"),
    ('SELECT "col 1" FROM "T1"', 'SELECT "col 1" FROM "T1"'),
])
def test_normalise_replaces_literals_and_keeps_the_rest(query: str, expected: str) -> None:
    assert normalise(query) == expected


def test_text_the_scanner_refuses_loses_its_literals_too() -> None:
    assert normalise("SELECT 'unterminated secret 123") == "SELECT $1"
    assert normalise("SELECT 12, $q$ secret") == "SELECT $1, $2"


def test_normalised_text_is_shortened() -> None:
    out = normalise("SELECT " + ", ".join(f"col_{chr(97 + i % 26)}" for i in range(200)) + " FROM t")
    assert len(out) == statements.QUERY_MAX and out.endswith("…")


# -- the columns each PostgreSQL version has ------------------------------------------------------------------

PG12 = {"userid", "dbid", "queryid", "query", "calls", "total_time", "min_time", "max_time", "mean_time",
        "stddev_time", "rows", "shared_blks_hit", "shared_blks_read", "shared_blks_dirtied", "shared_blks_written",
        "local_blks_hit", "local_blks_read", "local_blks_dirtied", "local_blks_written", "temp_blks_read",
        "temp_blks_written", "blk_read_time", "blk_write_time"}
PG13 = (PG12 - {"total_time", "min_time", "max_time", "mean_time", "stddev_time"}) | {
    "plans", "total_plan_time", "min_plan_time", "max_plan_time", "mean_plan_time", "stddev_plan_time",
    "total_exec_time", "min_exec_time", "max_exec_time", "mean_exec_time", "stddev_exec_time",
    "wal_records", "wal_fpi", "wal_bytes"}
PG14 = PG13 | {"toplevel"}
PG15 = PG14 | {"temp_blk_read_time", "temp_blk_write_time", "jit_functions", "jit_generation_time",
               "jit_inlining_count", "jit_inlining_time", "jit_optimization_count", "jit_optimization_time",
               "jit_emission_count", "jit_emission_time"}
PG17 = (PG15 - {"blk_read_time", "blk_write_time"}) | {
    "shared_blk_read_time", "shared_blk_write_time", "local_blk_read_time", "local_blk_write_time",
    "jit_deform_count", "jit_deform_time", "stats_since", "minmax_stats_since"}


class _Columns(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def visit_ColumnRef(self, ancestors, node) -> None:  # noqa: N802 - pglast's visitor naming
        self.names.add(node.fields[-1].sval)


def referenced(columns: set[str]) -> tuple[set[str], str]:
    text = statements.statements_query("public", columns).as_string(None)
    visitor = _Columns()
    visitor(parse_sql(text))
    return visitor.names - {"oid", "datname"}, text


@pytest.mark.parametrize("columns", [PG12, PG13, PG14, PG15, PG17], ids=["12", "13", "14", "15-16", "17"])
def test_the_snapshot_query_reads_only_columns_that_exist(columns: set[str]) -> None:
    used, _ = referenced(columns)
    assert used <= columns, used - columns


@pytest.mark.parametrize(("columns", "total", "read_time", "toplevel"), [
    (PG12, '"total_time" AS "total_exec_ms"', '(coalesce("blk_read_time", 0))', False),
    (PG13, '"total_exec_time" AS "total_exec_ms"', '(coalesce("blk_read_time", 0))', False),
    (PG14, '"total_exec_time" AS "total_exec_ms"', '(coalesce("blk_read_time", 0))', True),
    (PG17, '"total_exec_time" AS "total_exec_ms"',
     '(coalesce("shared_blk_read_time", 0) + coalesce("local_blk_read_time", 0))', True),
], ids=["12", "13", "14", "17"])
def test_renamed_columns_are_read_under_their_names(columns, total: str, read_time: str, toplevel: bool) -> None:
    _, text = referenced(columns)
    assert total in text and read_time in text and text.endswith("AND toplevel") is toplevel
    assert ('"stats_since" AS stats_since' in text) is ("stats_since" in columns)


# -- storing -------------------------------------------------------------------------------------------------

def sample_snapshot():
    return snap(entry(-9_000_000_000_000_000_001, 12, 3.25, ORDERS, stats_since=T0 - timedelta(days=2)),
                entry(42, 3, 0.5, EVENTS, temp_blks_written=7, wal_bytes=123456, jit_ms=1.5), dealloc=3,
                max_entries=5000, entries_total=77, hidden=2)


@pytest.mark.parametrize("compress", [True, False])
def test_a_snapshot_survives_the_state_store(compress: bool) -> None:
    original = sample_snapshot()
    stored = json.loads(json.dumps(statements.to_dict(original, compress=compress)))
    assert statements.from_dict(stored) == original


def test_the_stored_form_is_compact() -> None:
    many = snap(*(entry(i, i, i * 1.5, f"SELECT a, b, c FROM table_{i % 50} WHERE id = $1") for i in range(5000)))
    plain = len(json.dumps(statements.to_dict(many, compress=False)))
    packed = len(json.dumps(statements.to_dict(many)))
    assert packed * 4 < plain


def test_fields_a_later_version_adds_are_ignored_by_this_one() -> None:
    data = statements.to_dict(sample_snapshot(), compress=False)
    data["fields"].append("future_counter")
    for row in data["rows"]:
        row.append(1)
    assert statements.from_dict(data) == sample_snapshot()


# -- the server's identity -----------------------------------------------------------------------------------

class _Info:
    host, port = "db.internal", 5433


class _Conn:
    info = _Info()


@pytest.mark.parametrize(("system_identifier", "identity"), [
    ("7301234567890123456", "7301234567890123456"),
    (None, "db.internal:5433/15"),  # pg_control_system() not executable by the bot's role
])
def test_the_server_identity_falls_back_to_host_port_and_major(system_identifier, identity: str) -> None:
    server = {"system_identifier": system_identifier, "version": 150004}
    assert statements._identity(_Conn(), server) == identity
