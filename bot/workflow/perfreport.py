"""``perf_report.md``: the regression gate's evidence, per statement, for people.

Plain markdown (a Slack file upload renders it; a terminal reads it): a
summary table, then per statement the normalised text, calls on prod, the
numbers, the likely cause and the before/after plans side by side. The plans
are rendered without conditions (``bot.workflow.perfplans.render``) and the
statements are the normalised ``$1`` texts, so no parameter value or row data
can appear here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.workflow.perfparams import Shape
from bot.workflow.perfplans import Cause, Explain, side_by_side
from bot.workflow.perfstats import CONFIDENCE, Numbers

VERDICTS = {
    "slower": "FAILED: measurably slower",
    "fails-after": "FAILED: fails after the migrations",
    "cut-off-after": "FAILED: cut off by the statement timeout after the migrations",
    "no-plan": "FAILED: no longer plans",
    "cost": "FAILED: plan cost grew (not measured)",
    "plan-changed": "WARNING: plan changed, not measurably slower",
    "not-measured": "WARNING: not measured",
    "same": "passed",
    "faster": "passed: measurably faster with a new plan",
    "planned": "passed (plan cost only)",
}


@dataclass
class Outcome:
    """Everything the gate learnt about one statement."""

    key: str  # prod's queryid, or "workload:<line>"
    query: str  # the normalised text ($1 …): the only form of the statement that is ever shown
    run_text: str  # what is executed: prod's normalised text, or the workload's statement
    calls: int  # calls on prod, or the workload's weight
    source: str  # "prod" | "workload"
    name: str = ""
    mean_ms: float | None = None
    cost_before: float | None = None
    cost_after: float | None = None
    shape: Shape | None = None
    numbers: Numbers | None = None
    first: Numbers | None = None  # the first measurement, when a timing-only failure was measured again
    verdict: str = ""  # a key of VERDICTS
    plans: tuple[Explain | None, Explain | None] = (None, None)
    cause: Cause | None = None
    index_ddl: str = ""
    note: str = ""  # why it was not measured
    details: dict = field(default_factory=dict)

    @property
    def calls_text(self) -> str:
        if self.source == "workload":
            return f"pinned in the workload file, weight {self.calls}"
        mean = f", mean {self.mean_ms:.2f} ms" if self.mean_ms is not None else ""
        return f"{self.calls:,} calls on prod{mean}"


def _cost(before: float | None, after: float | None) -> str:
    if before is None:
        return "—"
    if after is None:
        return f"{before:.1f} → (does not plan)"
    growth = (after - before) / before * 100 if before > 0 else 0.0
    return f"{before:.1f} → {after:.1f} ({growth:+.0f}%)"


def _numbers_cells(n: Numbers | None) -> tuple[str, str, str]:
    if n is None or not n.pairs:
        return "—", "—", "—"
    return (f"{n.blocks_before:g} → {n.blocks_after:g} ({n.blocks_ratio:.2f}x)",
            f"{n.ms_before:.3f} → {n.ms_after:.3f}",
            f"{n.ratio:.2f}x ({n.low:.2f}–{n.high:.2f})")


def markdown(outcomes: list[Outcome], threshold_pct: float, method: str) -> str:
    failed = [o for o in outcomes if VERDICTS.get(o.verdict, "").startswith("FAILED")]
    lines = [
        "# Regression gate: prod's hot statements before and after the migrations",
        "",
        method,
        "",
        f"Limit: +{threshold_pct:g}%. {len(outcomes)} statement(s), {len(failed)} failed.",
        "",
        f"| check | verdict | calls on prod | blocks before → after | ms before → after (median) "
        f"| paired time ratio ({CONFIDENCE:.0%} CI) | plan cost before → after |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for o in outcomes:
        blocks, ms, ratio = _numbers_cells(o.numbers)
        calls = f"{o.calls:,}" if o.source == "prod" else f"weight {o.calls}"
        lines.append(f"| `perf-regression.{o.name}` | {VERDICTS.get(o.verdict, o.verdict)} | {calls} | {blocks} "
                     f"| {ms} | {ratio} | {_cost(o.cost_before, o.cost_after)} |")
    for o in outcomes:
        lines += ["", f"## perf-regression.{o.name} — {VERDICTS.get(o.verdict, o.verdict)}", "", "```sql", o.query,
                  "```", "", f"- {o.calls_text}"]
        n = o.numbers
        if n is not None and n.pairs:
            lines.append(f"- blocks (median of {n.pairs} runs per side): {n.blocks_before:g} → {n.blocks_after:g} "
                         f"({n.blocks_ratio:.2f}x)")
            lines.append(f"- time (median): {n.ms_before:.3f} → {n.ms_after:.3f} ms; paired ratio {n.ratio:.2f}x, "
                         f"{CONFIDENCE:.0%} CI {n.low:.2f}–{n.high:.2f}x")
        if o.first is not None and o.first.pairs:
            lines.append(f"- first measurement (slower on timing alone, so measured again: twice the pairs, each on "
                         f"new sessions): ratio "
                         f"{o.first.ratio:.2f}x, CI {o.first.low:.2f}–{o.first.high:.2f}x over {o.first.pairs} pairs")
        if n is not None and (n.errors_after or n.timeouts_after or n.errors_before or n.timeouts_before):
            lines.append(f"- runs that did not finish: after {n.errors_after} failed, {n.timeouts_after} cut off; "
                         f"before {n.errors_before} failed, {n.timeouts_before} cut off")
        lines.append(f"- plan cost (generic plan): {_cost(o.cost_before, o.cost_after)}")
        if o.note:
            lines.append(f"- not measured: {o.note}")
        if o.cause is not None:
            lines.append(f"- likely cause ({o.cause.rule}): {o.cause.why}")
        if o.index_ddl:
            lines.append(f"- the index before the migrations: `{o.index_ddl}`")
        if o.plans != (None, None):
            lines += ["", "```", side_by_side(*o.plans), "```"]
    return "\n".join(lines) + "\n"
