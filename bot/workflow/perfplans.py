"""Reading ``EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, FORMAT JSON)`` output: blocks, shapes, likely causes.

Pure functions over the JSON PostgreSQL returns (the first element of the
array: ``Plan``, ``Triggers``, ``Execution Time``). Mind what TIMING OFF
leaves: ``Execution Time`` is still measured, per-node times and trigger
``Time`` are not (a trigger shows its ``Calls``); a node's buffer counts
include its children, but not the AFTER triggers that fire once the plan has
run (foreign-key checks, most audit triggers) — their cost is in the
execution time only, and their names are in ``Triggers``.

Rendered plans never show conditions (``Index Cond``, ``Filter``, keys):
with real parameter values those would print them. Node types, relation and
index names, row counts and blocks are all a reader needs to compare.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

Explain = dict[str, Any]
BLOCK_KEYS = ("Shared Hit Blocks", "Shared Read Blocks", "Local Hit Blocks", "Local Read Blocks",
              "Temp Read Blocks", "Temp Written Blocks")
INDEX_NODES = ("Index Scan", "Index Only Scan", "Bitmap Index Scan")
SCAN_NODES = ("Seq Scan", "Index Scan", "Index Only Scan", "Bitmap Heap Scan", "Tid Scan", "Tid Range Scan",
              "Sample Scan")
ESTIMATE_FACTOR = 10.0  # an estimate this many times off (either way) is a row-estimate error
SIDE_WIDTH = 64  # characters of one side of a side-by-side plan


def node_blocks(node: dict[str, Any]) -> int:
    return int(sum(node.get(k, 0) or 0 for k in BLOCK_KEYS))


def blocks(explain: Explain) -> int:
    """Shared + local + temp blocks the plan touched (its top node counts its children)."""
    return node_blocks(explain.get("Plan", {}))


def execution_ms(explain: Explain) -> float:
    return float(explain.get("Execution Time", 0.0))


def nodes(explain: Explain) -> Iterator[tuple[int, dict[str, Any]]]:
    """(depth, node) in pre-order."""
    stack = [(0, explain.get("Plan", {}))]
    while stack:
        depth, node = stack.pop()
        yield depth, node
        stack.extend((depth + 1, child) for child in reversed(node.get("Plans", ()) or ()))


def shape(explain: Explain) -> tuple[tuple[Any, ...], ...]:
    """The plan without its numbers: what changes when PostgreSQL chooses another way."""
    return tuple((depth, n.get("Node Type"), n.get("Operation"), n.get("Join Type"), n.get("Relation Name"),
                  n.get("Index Name"), n.get("Parent Relationship")) for depth, n in nodes(explain))


def index_uses(explain: Explain) -> dict[str, str]:
    """index name -> the table it was used on (a Bitmap Index Scan's table is its Bitmap Heap Scan's)."""
    found: dict[str, str] = {}
    stack: list[tuple[dict[str, Any], str]] = [(explain.get("Plan", {}), "")]
    while stack:
        node, inherited = stack.pop()
        table = node.get("Relation Name") or (inherited if node.get("Node Type", "").startswith("Bitmap") else "")
        if node.get("Node Type") in INDEX_NODES and node.get("Index Name"):
            found.setdefault(node["Index Name"], table)
        stack.extend((child, table) for child in node.get("Plans", ()) or ())
    return found


def scanned(explain: Explain) -> dict[str, str]:
    """table -> how it is read (the first scan node naming it), e.g. {"orders": "Seq Scan"}."""
    found: dict[str, str] = {}
    for _, n in nodes(explain):
        if n.get("Node Type") in SCAN_NODES and n.get("Relation Name"):
            found.setdefault(n["Relation Name"], n["Node Type"])
    return found


@dataclass(frozen=True)
class Trigger:
    name: str
    table: str
    constraint: str
    calls: int
    ms: float | None  # only with TIMING ON


def triggers(explain: Explain) -> list[Trigger]:
    return [Trigger(t.get("Trigger Name", ""), t.get("Relation", ""), t.get("Constraint Name", ""),
                    int(t.get("Calls", 0) or 0), t.get("Time")) for t in explain.get("Triggers", ()) or ()]


def worst_estimate(explain: Explain) -> tuple[float, dict[str, Any] | None]:
    """The node whose row estimate is furthest off, as (factor, node)."""
    worst: tuple[float, dict[str, Any] | None] = (1.0, None)
    for _, n in nodes(explain):
        if "Actual Rows" not in n or not n.get("Actual Loops"):
            continue
        est, actual = max(float(n.get("Plan Rows", 0)), 1.0), max(float(n["Actual Rows"]), 1.0)
        factor = max(est / actual, actual / est)
        if factor > worst[0]:
            worst = (factor, n)
    return worst


def label(n: dict[str, Any]) -> str:
    """One node as EXPLAIN's text format names it, without conditions."""
    kind = n.get("Node Type", "?")
    if kind == "ModifyTable":
        kind = n.get("Operation", "Modify")
    elif n.get("Join Type") not in (None, "Inner"):
        kind = f"{kind} ({n['Join Type']})"
    text = kind
    if n.get("Index Name"):
        text += f" using {n['Index Name']}"
    if n.get("Relation Name"):
        alias = n.get("Alias")
        text += f" on {n['Relation Name']}" + (f" {alias}" if alias and alias != n["Relation Name"] else "")
    elif n.get("CTE Name"):
        text += f" on {n['CTE Name']}"
    elif n.get("Function Name"):
        text += f" on {n['Function Name']}"
    if n.get("Parent Relationship") in ("SubPlan", "InitPlan") and n.get("Subplan Name"):
        text = f"{n['Subplan Name']}: {text}"
    return text


def describe(explain: Explain) -> str:
    """The plan's access paths in one line, e.g. "Index Scan using orders_user_id_idx on orders"."""
    scans = [label(n) for _, n in nodes(explain) if n.get("Node Type") in SCAN_NODES + ("Bitmap Index Scan",)]
    return "; ".join(dict.fromkeys(scans)) or label(explain.get("Plan", {}))


def render(explain: Explain | None) -> list[str]:
    """A compact plan tree: node, rows (estimated), loops, blocks; then the triggers that fired."""
    if not explain:
        return ["(no plan)"]
    out = []
    for depth, n in nodes(explain):
        facts = []
        if "Actual Rows" in n:
            facts.append(f"rows {n['Actual Rows']:g} (est {n.get('Plan Rows', 0):g})")
        if (n.get("Actual Loops") or 1) > 1:
            facts.append(f"loops {n['Actual Loops']}")
        facts.append(f"blocks {node_blocks(n)}")
        out.append(("  " * depth + ("-> " if depth else "")) + f"{label(n)}  [{', '.join(facts)}]")
    for t in triggers(explain):
        what = f"constraint {t.constraint}" if t.constraint else f"trigger {t.name}"
        timing = f", {t.ms:.3f} ms" if t.ms is not None else ""
        out.append(f"{what} on {t.table}: {t.calls} call{'s' if t.calls != 1 else ''}{timing}")
    out.append(f"execution {execution_ms(explain):.3f} ms")
    return out


def side_by_side(before: Explain | None, after: Explain | None, width: int = SIDE_WIDTH) -> str:
    left, right = render(before), render(after)
    cut = [line if len(line) <= width else line[: width - 1] + "…" for line in left]
    size = max([len("before")] + [len(line) for line in cut])
    lines = [f"{'before'.ljust(size)} | after", f"{'-' * size}-+-{'-' * 5}"]
    for i in range(max(len(cut), len(right))):
        a = cut[i] if i < len(cut) else ""
        b = right[i] if i < len(right) else ""
        lines.append(f"{a.ljust(size)} | {b}".rstrip())
    return "\n".join(lines)


# -- the likely cause ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cause:
    """Why a statement got slower, with the real names triage writes its fix with."""

    rule: str  # lost-index | trigger | row-estimate | bloat | slower
    why: str
    table: str = ""
    column: str = ""
    index: str = ""
    triggers: tuple[str, ...] = ()
    constraint: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def likely_cause(before: Explain, after: Explain, blocks_ratio: float, threshold_pct: float,
                 index_columns: dict[str, list[str]], compared: dict[str, list[str]]) -> Cause:
    """Lost index use, a trigger now in the path, a row-estimate error, bloat — else "slower".

    ``index_columns``: index -> its columns (from the before side's catalog);
    ``compared``: table -> the columns the statement compares with parameters.
    """
    found = _lost_index(before, after, index_columns, compared)
    if found:
        return found
    found = _new_trigger(before, after)
    if found:
        return found
    same_shape = shape(before) == shape(after)
    factor, node = worst_estimate(after)
    factor_before, _ = worst_estimate(before)
    if not same_shape and node is not None and factor >= ESTIMATE_FACTOR and factor > 2 * factor_before:
        table = node.get("Relation Name") or _first_table(after)
        return Cause("row-estimate", f"after the migrations the planner expects {node.get('Plan Rows', 0):g} rows "
                     f"from {label(node)} but gets {node.get('Actual Rows', 0):g} ({factor:.0f}x off) and chooses "
                     f"another plan", table=table, column=_first(compared.get(table)))
    if same_shape and blocks_ratio > 1 + threshold_pct / 100:
        table = _most_grown(before, after) or _first_table(after)
        return Cause("bloat", f"the same plan reads {blocks_ratio:.1f}x the blocks: {table} is larger or "
                     f"bloated after the migrations (a backfill or rewrite leaves dead rows)", table=table,
                     column=_first(compared.get(table)))
    table = _first_table(after)
    why = ("the plan changed" if not same_shape else
           "the same plan with the same blocks takes longer: work outside the plan (a function in a default or "
           "an expression, a CHECK, row-level security) now runs for each row")
    return Cause("slower", why, table=table, column=_first(compared.get(table)))


def _lost_index(before: Explain, after: Explain, index_columns: dict[str, list[str]],
                compared: dict[str, list[str]]) -> Cause | None:
    used_after = index_uses(after)
    reads_after = scanned(after)
    for index, table in index_uses(before).items():
        if index in used_after or table not in reads_after:
            continue
        columns = index_columns.get(index) or compared.get(table) or []
        return Cause("lost-index", f"{index} was used on {table} before the migrations; after them {table} is "
                     f"read by {reads_after[table]}", table=table, column=",".join(columns), index=index)
    return None


def _new_trigger(before: Explain, after: Explain) -> Cause | None:
    had = {t.name: t.calls for t in triggers(before)}
    new = [t for t in triggers(after) if t.calls > had.get(t.name, 0)]
    if not new:
        return None
    names = tuple(t.constraint or t.name for t in new)
    table = new[0].table
    calls = sum(t.calls for t in new)
    kinds = "constraint check" if all(t.constraint for t in new) else "trigger"
    return Cause("trigger", f"{kinds} {', '.join(names)} on {table} now runs in this statement's path "
                 f"({calls} call{'s' if calls != 1 else ''} per execution)", table=table,
                 triggers=tuple(t.name for t in new), constraint=next((t.constraint for t in new if t.constraint), ""))


def _most_grown(before: Explain, after: Explain) -> str:
    def per_table(explain: Explain) -> dict[str, int]:
        found: dict[str, int] = {}
        for _, n in nodes(explain):
            if n.get("Node Type") in SCAN_NODES and n.get("Relation Name"):
                found[n["Relation Name"]] = found.get(n["Relation Name"], 0) + node_blocks(n)
        return found

    old, new = per_table(before), per_table(after)
    grown = sorted(((new[t] - old.get(t, 0), t) for t in new), reverse=True)
    return grown[0][1] if grown and grown[0][0] > 0 else ""


def _first_table(explain: Explain) -> str:
    return next((n["Relation Name"] for _, n in nodes(explain) if n.get("Relation Name")), "")


def _first(values: list[str] | None) -> str:
    return values[0] if values else ""
