"""EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, FORMAT JSON) -> blocks, likely cause, plans without values."""

from __future__ import annotations

from bot.workflow import perfplans as plans


def node(kind: str, blocks: int = 0, children: tuple = (), **extra) -> dict:
    found = {"Node Type": kind, "Shared Hit Blocks": blocks, "Plan Rows": extra.pop("est", 10),
             "Actual Rows": extra.pop("rows", 10), "Actual Loops": 1, **extra}
    if children:
        found["Plans"] = list(children)
    return found


def explain(plan: dict, ms: float = 0.05, triggers: tuple = ()) -> dict:
    return {"Plan": plan, "Execution Time": ms, "Triggers": list(triggers)}


BITMAP = explain(node("Bitmap Heap Scan", 12, (
    node("Bitmap Index Scan", 2, **{"Index Name": "orders_user_id_idx", "Index Cond": "(user_id = '1777'::bigint)"}),),
    **{"Relation Name": "orders", "Alias": "orders", "Recheck Cond": "(user_id = '1777'::bigint)"}))
SEQ = explain(node("Seq Scan", 148, **{"Relation Name": "orders", "Alias": "orders",
                                       "Filter": "(user_id = '1777'::bigint)"}), ms=0.8)
UPDATE = node("ModifyTable", 12, (node("Index Scan", 3, **{"Index Name": "orders_pkey", "Relation Name": "orders"}),),
              Operation="Update", **{"Relation Name": "orders"})


def test_blocks_are_shared_local_and_temp_of_the_top_node() -> None:
    plan = explain(node("Sort", 0, **{"Shared Hit Blocks": 5, "Shared Read Blocks": 2, "Local Hit Blocks": 1,
                                      "Temp Read Blocks": 3, "Temp Written Blocks": 4, "Shared Dirtied Blocks": 9}))
    assert plans.blocks(plan) == 15


def test_a_lost_bitmap_index_is_found_on_its_heap_scans_table() -> None:
    cause = plans.likely_cause(BITMAP, SEQ, 148 / 12, 20, {"orders_user_id_idx": ["user_id"]}, {"orders": ["user_id"]})
    assert (cause.rule, cause.table, cause.column, cause.index) == ("lost-index", "orders", "user_id",
                                                                    "orders_user_id_idx")
    assert cause.why == "orders_user_id_idx was used on orders before the migrations; after them orders is read by Seq Scan"


def test_a_trigger_now_in_the_path_is_the_cause() -> None:
    after = explain(UPDATE, 0.4, ({"Trigger Name": "orders_recount", "Relation": "orders", "Calls": 1},))
    cause = plans.likely_cause(explain(UPDATE), after, 1.0, 20, {}, {"orders": ["id"]})
    assert (cause.rule, cause.table, cause.triggers) == ("trigger", "orders", ("orders_recount",))
    assert cause.why == "trigger orders_recount on orders now runs in this statement's path (1 call per execution)"


def test_a_new_foreign_key_check_is_named_by_its_constraint() -> None:
    fk = {"Trigger Name": "RI_ConstraintTrigger_c_16406", "Constraint Name": "orders_user_id_fkey",
          "Relation": "orders", "Calls": 1}
    cause = plans.likely_cause(explain(UPDATE), explain(UPDATE, triggers=(fk,)), 1.0, 20, {}, {})
    assert cause.constraint == "orders_user_id_fkey" and cause.why.startswith("constraint check orders_user_id_fkey")


def test_the_same_plan_with_more_blocks_is_bloat() -> None:
    bigger = explain(node("Seq Scan", 400, **{"Relation Name": "orders"}))
    cause = plans.likely_cause(explain(node("Seq Scan", 148, **{"Relation Name": "orders"})), bigger, 400 / 148, 20,
                               {}, {"orders": ["status"]})
    assert (cause.rule, cause.table, cause.column) == ("bloat", "orders", "status")


def test_a_new_plan_built_on_a_bad_estimate_is_a_row_estimate_error() -> None:
    after = explain(node("Nested Loop", 900, (node("Seq Scan", 100, est=1, rows=5000, **{"Relation Name": "orders"}),
                                              node("Index Scan", 800, **{"Relation Name": "users"}))))
    cause = plans.likely_cause(BITMAP, after, 75.0, 20, {}, {"orders": ["status"]})
    assert cause.rule == "lost-index"  # the index is gone too: that comes first
    cause = plans.likely_cause(explain(node("Hash Join", 50, (node("Seq Scan", 20, **{"Relation Name": "orders"}),))),
                               after, 18.0, 20, {}, {"orders": ["status"]})
    assert (cause.rule, cause.table, cause.column) == ("row-estimate", "orders", "status")


def test_rendered_plans_show_no_condition_and_no_value() -> None:
    text = plans.side_by_side(BITMAP, SEQ)
    assert "1777" not in text and "Cond" not in text and "Filter" not in text
    lines = text.splitlines()
    assert lines[0].startswith("before") and lines[0].endswith("| after")
    assert lines[2].startswith("Bitmap Heap Scan on orders  [rows 10 (est 10), blocks 12]")
    assert lines[2].endswith("| Seq Scan on orders  [rows 10 (est 10), blocks 148]")
    assert "-> Bitmap Index Scan using orders_user_id_idx" in lines[3]


def test_a_plan_is_described_by_its_access_paths() -> None:
    assert plans.describe(BITMAP) == "Bitmap Heap Scan on orders; Bitmap Index Scan using orders_user_id_idx"
    assert plans.describe(explain(UPDATE)) == "Index Scan using orders_pkey on orders"
