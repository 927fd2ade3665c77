"""The regression gate's numbers and verdict: paired A/B runs -> "measurably slower" or not.

Each statement runs in pairs (before, after) with the same parameter values,
alternating which side goes first. Two signals:

- **blocks**: the ratio of the median shared + local + temp blocks, after /
  before. Blocks do not care how busy the machine is, so they are the signal
  to trust when the plan reads more pages (a lost index, bloat).
- **time**: the median of the paired ratios after_i / before_i, with a 95%
  bootstrap confidence interval (percentile method over the log ratios, stdlib
  ``random`` with a fixed seed, 2,000 resamples). Pairing cancels most of what
  a noisy neighbour does to both sides; the interval says how sure we are.

FAILED ("slower") needs blocks up more than the threshold *and* the
interval's lower bound above 1.0, or the lower bound alone above 1 +
threshold ("slower-timing": the caller re-measures once with twice the pairs
before it counts). A statement that fails after the migrations but not before
("fails-after") or is cut off by the statement timeout only after them
("cut-off-after") fails too. Pure functions: no database, no clock.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter
from dataclasses import dataclass

CONFIDENCE = 0.95
RESAMPLES = 2000
MIN_PAIRS = 3  # fewer complete pairs than this: not measured
MIN_BLOCKS_DELTA = 4  # blocks up by fewer than this many (32 kB) is not "more blocks", whatever the ratio
TIMEOUT = "57014"  # query_canceled: the statement timeout cut it off
FLOOR_MS = 0.001  # EXPLAIN reports 3 decimals: a 0.000 ms run counts as 1 µs


@dataclass(frozen=True)
class Run:
    """One execution on one side."""

    ms: float | None  # Execution Time; None when it did not finish
    blocks: int = 0
    error: str = ""  # SQLSTATE when it failed (57014: cut off by the statement timeout)


@dataclass(frozen=True)
class Pair:
    before: Run
    after: Run
    before_first: bool


@dataclass(frozen=True)
class Numbers:
    pairs: int  # complete pairs (both sides finished)
    blocks_before: float
    blocks_after: float
    ms_before: float
    ms_after: float
    ratio: float  # median paired time ratio
    low: float  # its confidence interval
    high: float
    errors_after: int = 0  # pairs where only the after side failed (not counting timeouts)
    errors_before: int = 0
    timeouts_after: int = 0
    timeouts_before: int = 0
    after_error: str = ""  # the most frequent SQLSTATE of after-only failures

    @property
    def blocks_ratio(self) -> float:
        if self.blocks_before <= 0:
            return 1.0 if self.blocks_after <= 0 else float(self.blocks_after)
        return self.blocks_after / self.blocks_before


def bootstrap_ci(values: list[float], seed: int, resamples: int = RESAMPLES,
                 confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of the median of ``values``."""
    if not values:
        return (math.nan, math.nan)
    rng = random.Random(seed)
    n = len(values)
    medians = sorted(statistics.median(rng.choices(values, k=n)) for _ in range(resamples))
    tail = (1 - confidence) / 2
    return medians[int(tail * resamples)], medians[min(resamples - 1, int((1 - tail) * resamples))]


def summarise(pairs: list[Pair], seed: int) -> Numbers:
    complete = [p for p in pairs if p.before.ms is not None and p.after.ms is not None]
    after_only = [p.after.error for p in pairs if p.after.error and p.after.error != TIMEOUT and not p.before.error]
    counts = dict(
        errors_after=len(after_only),
        errors_before=sum(1 for p in pairs if p.before.error and p.before.error != TIMEOUT and not p.after.error),
        timeouts_after=sum(1 for p in pairs if p.after.error == TIMEOUT),
        timeouts_before=sum(1 for p in pairs if p.before.error == TIMEOUT),
        after_error=Counter(after_only).most_common(1)[0][0] if after_only else "",
    )
    if not complete:
        return Numbers(0, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, **counts)
    logs = [math.log(max(p.after.ms or 0.0, FLOOR_MS) / max(p.before.ms or 0.0, FLOOR_MS)) for p in complete]
    low, high = bootstrap_ci(logs, seed)
    return Numbers(
        pairs=len(complete),
        blocks_before=statistics.median(p.before.blocks for p in complete),
        blocks_after=statistics.median(p.after.blocks for p in complete),
        ms_before=statistics.median(p.before.ms for p in complete),  # type: ignore[type-var]
        ms_after=statistics.median(p.after.ms for p in complete),  # type: ignore[type-var]
        ratio=math.exp(statistics.median(logs)), low=math.exp(low), high=math.exp(high), **counts)


def verdict(n: Numbers, threshold_pct: float) -> str:
    """slower | slower-timing | fails-after | cut-off-after | unmeasured | same."""
    limit = 1 + threshold_pct / 100
    if n.errors_after and n.errors_after >= max(1, (n.pairs + n.errors_after) // 2):
        return "fails-after"
    if n.timeouts_after >= 2 and not n.timeouts_before:
        return "cut-off-after"
    if n.pairs < MIN_PAIRS:
        return "unmeasured"
    more_blocks = n.blocks_ratio > limit and n.blocks_after - n.blocks_before >= MIN_BLOCKS_DELTA
    if more_blocks and n.low > 1.0:
        return "slower"
    if n.low > limit:
        return "slower-timing"
    return "same"


def faster(n: Numbers) -> bool:
    """Measurably faster: the whole interval of the paired time ratio is below 1.0."""
    return n.pairs >= MIN_PAIRS and n.high < 1.0


def describe(n: Numbers, remeasured: bool = False) -> str:
    """The numbers in one clause: "blocks 12 -> 148 (12.33x), time 0.026 -> 0.819 ms (paired ratio 31.50x, …)"."""
    if not n.pairs:
        return "no complete pair of runs"
    again = ", re-measured" if remeasured else ""
    return (f"blocks {n.blocks_before:g} -> {n.blocks_after:g} ({n.blocks_ratio:.2f}x), "
            f"time {_ms(n.ms_before)} -> {_ms(n.ms_after)} ms "
            f"(paired ratio {n.ratio:.2f}x, {CONFIDENCE:.0%} CI {n.low:.2f}-{n.high:.2f}x, {n.pairs} pairs{again})")


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"
