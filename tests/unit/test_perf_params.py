"""Which column each $n is compared with, read by pglast; readable names; the pinned workload file."""

from __future__ import annotations

import re

import pytest

from bot.workflow import perfparams as pp

COLUMNS = {"orders": ("id", "user_id", "status", "total", "created_at"), "users": ("id", "email", "name")}


def columns_of(schema: str | None, table: str) -> tuple[str, ...] | None:
    return COLUMNS.get(table)


def targets(query: str) -> dict[int, tuple[str, str | None, str | None]]:
    shape = pp.analyse(query, columns_of)
    return {n: (t.kind, t.source.table if t.source else None, t.source.expr if t.source else None)
            for n, t in sorted(shape.targets.items())}


@pytest.mark.parametrize("query, expected", [
    ("SELECT id FROM orders WHERE user_id = $1", {1: ("eq", "orders", "user_id")}),
    ("SELECT id FROM orders WHERE $1 = user_id", {1: ("eq", "orders", "user_id")}),
    ("SELECT id FROM orders WHERE status IN ($1, $2)", {1: ("eq", "orders", "status"), 2: ("eq", "orders", "status")}),
    ("SELECT id FROM orders WHERE user_id = ANY($1)", {1: ("any", "orders", "user_id")}),
    ("SELECT id FROM orders WHERE created_at > $1", {1: ("gt", "orders", "created_at")}),
    ("SELECT id FROM orders WHERE $1 > created_at", {1: ("lt", "orders", "created_at")}),
    ("SELECT count(*) FROM orders WHERE total BETWEEN $1 AND $2",
     {1: ("between-lo", "orders", "total"), 2: ("between-hi", "orders", "total")}),
    ("SELECT id FROM users u WHERE lower(u.email) = $1", {1: ("eq", "users", "lower(u.email)")}),
    ("SELECT id FROM users WHERE email LIKE $1", {1: ("eq", "users", "email")}),
    ("SELECT id FROM orders WHERE user_id = $1::bigint", {1: ("eq", "orders", "user_id")}),
    ("UPDATE orders SET status = $1 WHERE id = $2", {1: ("set", "orders", "status"), 2: ("eq", "orders", "id")}),
    ("INSERT INTO orders (user_id, total) VALUES ($1, $2)",
     {1: ("insert", "orders", "user_id"), 2: ("insert", "orders", "total")}),
    ("INSERT INTO users VALUES ($1, $2, $3)",
     {1: ("insert", "users", "id"), 2: ("insert", "users", "email"), 3: ("insert", "users", "name")}),
    ("DELETE FROM orders WHERE created_at < $1", {1: ("lt", "orders", "created_at")}),
    ("SELECT id FROM orders ORDER BY id LIMIT $1 OFFSET $2", {1: ("limit", None, None), 2: ("offset", None, None)}),
    ("SELECT now() - $1::interval FROM orders WHERE id = $2", {1: ("interval", None, None), 2: ("eq", "orders", "id")}),
    ("SELECT id FROM orders WHERE status = 'x' AND $1", {1: ("bool", None, None)}),
])
def test_each_parameter_gets_its_source(query: str, expected: dict) -> None:
    assert targets(query) == expected


def test_an_unqualified_column_in_a_join_is_found_in_the_catalog() -> None:
    query = "SELECT o.id FROM orders o JOIN users u ON u.id = o.user_id WHERE email = $1 AND status = $2"
    found = targets(query)
    assert found == {1: ("eq", "users", "email"), 2: ("eq", "orders", "status")}


def test_sub_selects_have_their_own_scope() -> None:
    query = "SELECT id FROM users WHERE id IN (SELECT user_id FROM orders WHERE status = $1) AND name = $2"
    assert targets(query) == {1: ("eq", "orders", "status"), 2: ("eq", "users", "name")}


def test_each_occurrence_of_a_table_is_sampled_on_its_own() -> None:
    shape = pp.analyse("SELECT 1 FROM orders a JOIN orders b ON b.user_id = a.user_id WHERE a.id = $1 AND b.id = $2",
                       columns_of)
    assert shape.targets[1].source.instance != shape.targets[2].source.instance


@pytest.mark.parametrize("query, missing", [
    ("SELECT $1::int + count(*) FROM orders", (1,)),
    ("WITH x AS (SELECT user_id FROM orders) SELECT * FROM x WHERE user_id = $1", (1,)),
    ("SELECT id FROM orders o JOIN users u ON u.id = o.user_id WHERE id = $1", (1,)),  # ambiguous, as in PostgreSQL
    ("SELECT coalesce($1, 0) FROM orders WHERE user_id = $2", (1,)),
])
def test_a_parameter_without_a_column_is_missing(query: str, missing: tuple[int, ...]) -> None:
    shape = pp.analyse(query, columns_of)
    assert shape.missing == missing
    assert pp.describe_missing(shape).startswith(f"${missing[0]} is not compared with a column")


def test_an_unparsable_statement_says_why() -> None:
    shape = pp.analyse("SELECT id FROM orders WHERE user_id = $1 AND (", columns_of)
    assert shape.problem.startswith("it does not parse") and shape.missing == (1,)


@pytest.mark.parametrize("query, name", [
    ("SELECT id, total FROM orders WHERE user_id = $1", "orders-by-user-id"),
    ("UPDATE orders SET total = total + $1 WHERE id = $2", "update-orders-by-id"),
    ("INSERT INTO orders (user_id, total) VALUES ($1, $2)", "insert-orders"),
    ("DELETE FROM orders WHERE created_at < $1", "delete-orders-by-created-at"),
    ("SELECT o.id FROM orders o JOIN users u ON u.id = o.user_id WHERE u.email = $1 AND o.status = $2",
     "orders-users-by-email-and-status"),
    ("SELECT count(*) FROM orders", "orders"),
])
def test_readable_names_come_from_tables_and_compared_columns(query: str, name: str) -> None:
    found = pp.readable_name(pp.analyse(query, columns_of))
    assert re.fullmatch(rf"{name}-[0-9a-f]{{6}}", found), found


def test_a_pinned_statement_is_named_like_its_normalised_text() -> None:
    literal = pp.readable_name(pp.analyse(pp.normalise("SELECT id FROM orders WHERE user_id = 42"), columns_of))
    normalised = pp.readable_name(pp.analyse("SELECT id FROM orders WHERE user_id = $1", columns_of))
    assert literal == normalised


def test_a_typed_literal_parameter_is_made_runnable() -> None:
    assert pp.runnable("SELECT now() - interval $1 FROM orders WHERE id = $2 LIMIT $3") == \
        "SELECT now() - CAST($1 AS interval) FROM orders WHERE id = $2 LIMIT $3"
    assert pp.runnable("SELECT id FROM orders WHERE id = $1 LIMIT $2") == "SELECT id FROM orders WHERE id = $1 LIMIT $2"


def test_the_workload_file_keeps_weights_and_shows_only_normalised_text() -> None:
    pinned, problem = pp.parse_workload(
        "-- the account page\n-- weight: 30\nSELECT id FROM orders WHERE user_id = 1777;\n\n"
        "UPDATE orders SET status = 'paid' WHERE id = 5;  -- weight is 1 by default\n")
    assert problem == ""
    assert [(p.weight, p.line, p.display) for p in pinned] == [
        (30, 3, "SELECT id FROM orders WHERE user_id = $1"),
        (1, 5, "UPDATE orders SET status = $1 WHERE id = $2"),
    ]
    assert pinned[0].text == "SELECT id FROM orders WHERE user_id = 1777"


@pytest.mark.parametrize("text, problem", [
    ("SELECT 1;\nCREATE INDEX i ON orders (id);", "line 2: only SELECT, INSERT, UPDATE and DELETE belong in it, not IndexStmt"),
    ("SELECT FROM WHERE;", "it does not parse"),
])
def test_a_workload_file_that_cannot_be_used_says_why(text: str, problem: str) -> None:
    pinned, found = pp.parse_workload(text)
    assert pinned == [] and found.startswith(problem)
