"""Paired A/B runs -> numbers and a verdict (pure): blocks, bootstrap interval, timing-only, failures after."""

from __future__ import annotations

import pytest

from bot.workflow.perfstats import TIMEOUT, Pair, Run, bootstrap_ci, describe, faster, summarise, verdict


def pairs(before_ms: list[float], after_ms: list[float], before_blocks: int = 10, after_blocks: int = 10) -> list[Pair]:
    return [Pair(Run(b, before_blocks), Run(a, after_blocks), i % 2 == 0)
            for i, (b, a) in enumerate(zip(before_ms, after_ms))]


STEADY = [1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 1.0]


def test_the_interval_is_reproducible_with_its_seed() -> None:
    values = [0.1, -0.2, 0.05, 0.3, 0.0, 0.15, -0.1]
    assert bootstrap_ci(values, seed=7) == bootstrap_ci(values, seed=7)
    low, high = bootstrap_ci(values, seed=7)
    assert low <= sorted(values)[3] <= high


def test_more_blocks_and_a_slower_lower_bound_is_slower() -> None:
    n = summarise(pairs(STEADY, [x * 3 for x in STEADY], 12, 148), seed=1)
    assert n.blocks_ratio == pytest.approx(148 / 12) and n.low > 1.0
    assert verdict(n, 20) == "slower"


def test_time_alone_beyond_the_limit_is_a_timing_only_suspect() -> None:
    n = summarise(pairs(STEADY, [x * 3 for x in STEADY]), seed=1)
    assert n.blocks_ratio == 1.0 and n.low > 1.2
    assert verdict(n, 20) == "slower-timing"


def test_a_little_slower_within_the_limit_is_the_same() -> None:
    n = summarise(pairs(STEADY, [x * 1.1 for x in STEADY]), seed=1)
    assert verdict(n, 20) == "same"


def test_one_noisy_pair_does_not_make_a_regression() -> None:
    after = list(STEADY)
    after[3] = 25.0  # the neighbour's burst hit one run
    assert verdict(summarise(pairs(STEADY, after), seed=1), 20) == "same"


def test_a_few_more_blocks_of_a_tiny_statement_are_not_more_blocks() -> None:
    n = summarise(pairs(STEADY, [x * 1.1 for x in STEADY], 3, 5), seed=1)
    assert n.blocks_ratio > 1.2 and verdict(n, 20) == "same"


def test_failing_only_after_the_migrations_fails() -> None:
    runs = [Pair(Run(1.0, 10), Run(None, 0, "23514"), True) for _ in range(7)]
    n = summarise(runs, seed=1)
    assert (n.errors_after, n.after_error, n.pairs) == (7, "23514", 0)
    assert verdict(n, 20) == "fails-after"


def test_cut_off_only_after_the_migrations_fails() -> None:
    runs = [Pair(Run(1.0, 10), Run(None, 0, TIMEOUT), True) for _ in range(2)]
    assert verdict(summarise(runs, seed=1), 20) == "cut-off-after"


def test_too_few_complete_pairs_is_not_measured() -> None:
    runs = [Pair(Run(None, 0, "40001"), Run(None, 0, "40001"), True)] * 5 + pairs([1.0, 1.0], [1.0, 1.0])
    assert verdict(summarise(runs, seed=1), 20) == "unmeasured"


def test_the_numbers_read_as_one_clause() -> None:
    n = summarise(pairs(STEADY, [x * 3 for x in STEADY], 12, 148), seed=1)
    text = describe(n, remeasured=True)
    assert text.startswith("blocks 12 -> 148 (12.33x), time 1.000 -> 3.000 ms (paired ratio 3.00x, 95% CI ")
    assert text.endswith(", 7 pairs, re-measured)")


def test_faster_means_the_whole_interval_is_below_one() -> None:
    assert faster(summarise(pairs(STEADY, [x / 20 for x in STEADY], 148, 12), seed=1))
    noisy = [x * f for x, f in zip(STEADY, [1.05, 0.9, 1.1, 0.95, 1.0, 0.92, 1.08])]
    assert not faster(summarise(pairs(STEADY, noisy), seed=1))
