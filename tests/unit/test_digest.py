"""The digest's arithmetic on hand-built snapshots: deltas right across resets, evictions and server changes."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from bot.workflow import digest
from bot.workflow.digest import DeployMark
from bot.workflow.statements import Entry, Snapshot

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=timezone.utc)
RESET = T0 - timedelta(days=30)
DAY = timedelta(days=1)
ORDERS = "SELECT id, total FROM orders WHERE user_id = $1"
USERS = "SELECT email FROM users WHERE id = $1"
EVENTS = "INSERT INTO events (kind, at) VALUES ($1, $2)"


def entry(queryid: int, calls: int, total_ms: float, query: str = ORDERS, *, userid: int = 10, dbid: int = 5,
          **counters) -> Entry:
    """A statement's cumulative counters; shared_blks_hit defaults to 4 per call, rows to 1 per call."""
    counters.setdefault("rows", calls)
    counters.setdefault("shared_blks_hit", 4 * calls)
    return Entry(userid=userid, dbid=dbid, queryid=queryid, query=query, calls=calls, total_exec_ms=total_ms,
                 **counters)


def snap(*entries: Entry, at: datetime = T0, server: str = "7301234567890123456", dbid: int = 5,
         reset: datetime | None = RESET, dealloc: int | None = 0, max_entries: int | None = 5000,
         entries_total: int | None = None, hidden: int = 0, source: str = "prod") -> Snapshot:
    return Snapshot(source=source, taken_at=at, server_id=server, server_version=150004, database="app", dbid=dbid,
                    entries=tuple(entries), stats_reset=reset, dealloc=dealloc, max_entries=max_entries,
                    entries_total=len(entries) if entries_total is None else entries_total, hidden=hidden)


def rows_by_id(d: digest.Digest) -> dict[int, digest.StatementRow]:
    return {r.queryid: r for r in d.top}


# -- periods and deltas ----------------------------------------------------------------------------------------

def test_without_a_previous_snapshot_the_figures_are_cumulative_since_the_reset() -> None:
    d = digest.compute(None, snap(entry(1, 100, 500.0), entry(2, 10, 20.0, USERS)))
    assert (d.period.basis, d.period.start, d.period.cumulative, d.period.stats_reset) == ("first", RESET, True, False)
    assert rows_by_id(d)[1].calls == 100 and rows_by_id(d)[1].total_ms == 500.0
    assert d.new == () and d.regressions == () and d.regression_baseline == "none"


def test_deltas_between_two_snapshots() -> None:
    before = snap(entry(1, 100, 500.0), entry(2, 10, 20.0, USERS))
    after = snap(entry(1, 160, 800.0, shared_blks_read=40), entry(2, 30, 120.0, USERS), at=T0 + DAY)
    d = digest.compute(before, after)
    orders, users = rows_by_id(d)[1], rows_by_id(d)[2]
    assert (d.period.basis, d.period.start, d.period.end) == ("delta", T0, T0 + DAY)
    assert (orders.calls, orders.total_ms, orders.mean_ms) == (60, 300.0, 5.0)
    assert (users.calls, users.total_ms) == (20, 100.0)
    assert d.totals == digest.Totals(total_ms=400.0, calls=80, statements=2)
    assert orders.share == pytest.approx(0.75) and users.share == pytest.approx(0.25)
    assert orders.hit_ratio == pytest.approx(240 / 280) and orders.shared_blks_per_call == pytest.approx(280 / 60)
    assert orders.rows_per_call == 1.0
    assert [r.queryid for r in d.top] == [1, 2]


def test_statements_that_did_not_run_in_the_period_are_left_out() -> None:
    before = snap(entry(1, 100, 500.0), entry(2, 10, 20.0, USERS))
    d = digest.compute(before, snap(entry(1, 110, 550.0), entry(2, 10, 20.0, USERS), at=T0 + DAY))
    assert [r.queryid for r in d.top] == [1] and d.totals.statements == 1


def test_top_keeps_the_n_biggest_by_total_time() -> None:
    current = snap(*(entry(i, 10, float(i), f"SELECT * FROM t{i}") for i in range(1, 21)))
    d = digest.compute(None, current, top=5)
    assert [r.queryid for r in d.top] == [20, 19, 18, 17, 16]
    assert d.totals.statements == 20


def test_a_full_reset_makes_the_period_start_at_the_reset() -> None:
    reset_at = T0 + timedelta(hours=6)
    before = snap(entry(1, 1000, 5000.0), entry(2, 500, 900.0, USERS))
    after = snap(entry(1, 40, 200.0), at=T0 + DAY, reset=reset_at)
    d = digest.compute(before, after)
    assert (d.period.basis, d.period.stats_reset, d.period.reset_at, d.period.start) == (
        "reset", True, reset_at, reset_at)
    assert rows_by_id(d)[1].calls == 40 and rows_by_id(d)[1].total_ms == 200.0
    assert d.gone == 1 and d.restarted == 0


def test_a_single_entry_reset_counts_that_entry_from_its_restart() -> None:
    before = snap(entry(1, 1000, 5000.0), entry(2, 500, 900.0, USERS))
    after = snap(entry(1, 30, 90.0), entry(2, 700, 1300.0, USERS), at=T0 + DAY)  # pg_stat_statements_reset(u, d, 1)
    d = digest.compute(before, after)
    assert d.period.basis == "delta" and d.restarted == 1
    assert (rows_by_id(d)[1].calls, rows_by_id(d)[1].total_ms, rows_by_id(d)[1].restarted) == (30, 90.0, True)
    assert (rows_by_id(d)[2].calls, rows_by_id(d)[2].total_ms, rows_by_id(d)[2].restarted) == (200, 400.0, False)


def test_pg17_stats_since_moving_marks_a_restart_even_when_calls_grew() -> None:
    since = T0 - timedelta(days=3)
    before = snap(entry(1, 100, 500.0, stats_since=since))
    after = snap(entry(1, 150, 900.0, stats_since=T0 + timedelta(hours=2)), at=T0 + DAY)
    d = digest.compute(before, after)
    assert (rows_by_id(d)[1].calls, rows_by_id(d)[1].total_ms, d.restarted) == (150, 900.0, 1)


@pytest.mark.parametrize("counter", ["total_exec_ms", "rows", "shared_blks_hit", "temp_blks_written"])
def test_any_counter_going_down_takes_the_current_counters_never_a_negative_delta(counter: str) -> None:
    old = entry(1, 100, 500.0, temp_blks_written=50)
    new = entry(1, 120, 600.0, temp_blks_written=60)
    lowered = {"total_exec_ms": 10.0, "rows": 1, "shared_blks_hit": 1, "temp_blks_written": 1}[counter]
    d = digest.compute(snap(old), snap(replace(new, **{counter: lowered}), at=T0 + DAY))
    row = rows_by_id(d)[1]
    assert row.calls == 120 and row.restarted and d.restarted == 1
    assert min(row.total_ms, row.rows, row.shared_blks_hit, row.temp_blks) >= 0


def test_a_previous_snapshot_from_another_server_is_no_previous() -> None:
    before = snap(entry(1, 100, 500.0), server="7301234567890123456")
    after = snap(entry(1, 30, 90.0), server="7399999999999999999", at=T0 + DAY)
    d = digest.compute(before, after)
    assert (d.period.basis, d.period.cumulative, d.period.previous_at) == ("other-server", True, None)
    assert rows_by_id(d)[1].calls == 30 and d.new == () and d.regressions == ()


def test_a_previous_snapshot_of_another_database_is_no_previous() -> None:
    d = digest.compute(snap(entry(1, 100, 500.0), dbid=5), snap(entry(1, 130, 600.0, dbid=6), dbid=6, at=T0 + DAY))
    assert d.period.basis == "other-server" and rows_by_id(d)[1].calls == 130


def test_new_statements_are_the_ones_the_previous_snapshot_did_not_have() -> None:
    before = snap(entry(1, 100, 500.0))
    after = snap(entry(1, 150, 700.0), entry(2, 5, 50.0, USERS), entry(3, 7, 1.0, EVENTS), at=T0 + DAY)
    d = digest.compute(before, after)
    assert [r.queryid for r in d.new] == [2, 3] and d.new_count == 2
    assert rows_by_id(d)[2].new and not rows_by_id(d)[1].new


def test_statements_no_longer_tracked_are_counted_as_gone() -> None:
    d = digest.compute(snap(entry(1, 100, 500.0), entry(2, 5, 5.0, USERS)), snap(entry(1, 150, 700.0), at=T0 + DAY))
    assert d.gone == 1


# -- deallocation --------------------------------------------------------------------------------------------

def test_dealloc_growing_says_how_far_to_raise_the_max() -> None:
    before = snap(entry(1, 100, 500.0), dealloc=3, max_entries=100, entries_total=100)
    after = snap(entry(1, 150, 700.0), dealloc=5, max_entries=100, entries_total=100, at=T0 + DAY)
    d = digest.compute(before, after)
    assert d.dealloc == digest.Dealloc(deallocations=2, evicted=20, max_entries=100, statements_seen=120,
                                       suggested_max=200, since_reset=False)


def test_dealloc_on_a_large_max_evicts_five_percent_each_time() -> None:
    before = snap(entry(1, 100, 500.0), dealloc=0, max_entries=5000, entries_total=5000)
    after = snap(entry(1, 150, 700.0), dealloc=1, max_entries=5000, entries_total=4760, at=T0 + DAY)
    a = digest.compute(before, after).dealloc
    assert (a.evicted, a.statements_seen, a.suggested_max) == (250, 5010, 7000)


def test_no_dealloc_note_when_nothing_was_evicted() -> None:
    d = digest.compute(snap(entry(1, 1, 1.0), dealloc=4), snap(entry(1, 2, 2.0), dealloc=4, at=T0 + DAY))
    assert d.dealloc is None


def test_dealloc_after_a_full_reset_counts_since_the_reset() -> None:
    before = snap(entry(1, 100, 500.0), dealloc=9, max_entries=100)
    after = snap(entry(1, 10, 50.0), dealloc=1, max_entries=100, reset=T0 + timedelta(hours=1), at=T0 + DAY)
    a = digest.compute(before, after).dealloc
    assert (a.deallocations, a.since_reset) == (1, True)


def test_postgresql_13_has_no_dealloc_figures() -> None:
    d = digest.compute(None, snap(entry(1, 1, 1.0), reset=None, dealloc=None))
    assert d.dealloc is None and d.period.start is None and d.period.basis == "first"


# -- regressions ---------------------------------------------------------------------------------------------

def three_days(before_period: list[Entry], this_period: list[Entry]) -> tuple[Snapshot, Snapshot, Snapshot]:
    """earlier (cumulative 0), previous (= before_period), current (= before + this) as cumulative snapshots."""
    earlier = snap(*(replace(e, calls=0, total_exec_ms=0.0, rows=0, shared_blks_hit=0) for e in before_period),
                   at=T0 - DAY)
    previous = snap(*before_period, at=T0)
    old = {e.key: e for e in before_period}
    summed = []
    for e in this_period:
        o = old.get(e.key)
        summed.append(e if o is None else replace(
            e, calls=o.calls + e.calls, total_exec_ms=o.total_exec_ms + e.total_exec_ms, rows=o.rows + e.rows,
            shared_blks_hit=o.shared_blks_hit + e.shared_blks_hit))
    return earlier, previous, snap(*summed, at=T0 + DAY)


def test_a_mean_up_more_than_the_threshold_is_a_regression() -> None:
    earlier, previous, current = three_days([entry(1, 100, 100.0), entry(2, 100, 100.0, USERS)],
                                            [entry(1, 100, 150.0), entry(2, 100, 110.0, USERS)])
    d = digest.compute(previous, current, earlier=earlier)
    assert d.regression_baseline == "period" and d.regressions_count == 1
    r = d.regressions[0]
    assert (r.row.queryid, r.reasons, r.before_mean_ms, r.row.mean_ms) == (1, ("mean",), 1.0, 1.5)
    assert r.mean_change_pct == pytest.approx(50.0) and r.extra_ms == pytest.approx(50.0)


@pytest.mark.parametrize(("before_calls", "after_calls"), [(49, 100), (100, 49)])
def test_a_regression_needs_min_calls_in_both_periods(before_calls: int, after_calls: int) -> None:
    earlier, previous, current = three_days([entry(1, before_calls, before_calls * 1.0)],
                                            [entry(1, after_calls, after_calls * 3.0)])
    assert digest.compute(previous, current, earlier=earlier, min_calls=50).regressions == ()


def test_more_shared_blocks_per_call_is_a_regression_even_at_the_same_speed() -> None:
    earlier, previous, current = three_days([entry(1, 100, 100.0, shared_blks_hit=400)],
                                            [entry(1, 100, 100.0, shared_blks_hit=4000)])
    r = digest.compute(previous, current, earlier=earlier).regressions[0]
    assert r.reasons == ("blocks",) and (r.before_blks_per_call, r.row.shared_blks_per_call) == (4.0, 40.0)
    assert r.blks_change_pct == pytest.approx(900.0)


def test_a_change_within_the_threshold_is_no_regression() -> None:
    earlier, previous, current = three_days([entry(1, 100, 100.0)], [entry(1, 100, 119.0)])
    assert digest.compute(previous, current, earlier=earlier, regression_pct=20.0).regressions == ()


def test_without_the_earlier_snapshot_the_baseline_is_everything_before_the_previous_one() -> None:
    _, previous, current = three_days([entry(1, 100, 100.0)], [entry(1, 100, 300.0)])
    d = digest.compute(previous, current)
    assert d.regression_baseline == "cumulative" and d.regressions[0].before_mean_ms == 1.0


def test_regressions_are_ordered_by_the_time_they_cost() -> None:
    earlier, previous, current = three_days(
        [entry(1, 100, 100.0), entry(2, 1000, 1000.0, USERS)],
        [entry(1, 100, 1000.0), entry(2, 1000, 2000.0, USERS)])  # 1: +900 ms (+900%), 2: +1000 ms (+100%)
    assert [r.row.queryid for r in digest.compute(previous, current, earlier=earlier).regressions] == [2, 1]


# -- since the deploy ----------------------------------------------------------------------------------------

MARK = DeployMark(run_id="r-42", deployed_at=T0 + timedelta(hours=1), migrations=["0007_drop_idx"],
                  thread_url="https://example.slack.com/archives/C1/p1")


def deploy_snapshots() -> tuple[Snapshot, Snapshot, Snapshot]:
    base = snap(entry(1, 1000, 1000.0), entry(2, 100, 100.0, USERS), at=T0 - DAY)
    before_deploy = snap(entry(1, 2000, 2000.0), entry(2, 200, 200.0, USERS), at=T0)  # 1 ms each that day
    current = snap(entry(1, 2500, 4000.0), entry(2, 260, 260.0, USERS), entry(3, 80, 40.0, EVENTS),
                   at=T0 + DAY)  # orders 4 ms after, users 1 ms, events new
    return base, before_deploy, current


def test_during_the_hold_back_each_hot_statement_gets_its_mean_before_and_after() -> None:
    base, before_deploy, current = deploy_snapshots()
    d = digest.compute(before_deploy, current, deploy=MARK, before_deploy=before_deploy, before_deploy_base=base)
    s = d.since_deploy
    assert (s.run_id, s.migrations, s.thread_url, s.day, s.missing) == (
        "r-42", ("0007_drop_idx",), MARK.thread_url, 1, "")
    assert (s.before_start, s.before_end, s.after_start, s.after_end) == (T0 - DAY, T0, T0, T0 + DAY)
    rows = {r.queryid: r for r in s.rows}
    assert [r.queryid for r in s.rows] == [1, 2, 3]
    assert (rows[1].before_mean_ms, rows[1].after_mean_ms, rows[1].change_pct, rows[1].regressed) == (
        1.0, 4.0, 300.0, True)
    assert (rows[2].change_pct, rows[2].regressed) == (0.0, False)
    assert (rows[3].before_mean_ms, rows[3].change_pct, rows[3].before_calls, rows[3].regressed) == (
        None, None, 0, False)


def test_without_the_snapshot_before_it_the_before_means_are_cumulative() -> None:
    _, before_deploy, current = deploy_snapshots()
    d = digest.compute(before_deploy, current, deploy=MARK, before_deploy=before_deploy)
    s = d.since_deploy
    assert s.before_start == RESET and s.rows[0].before_calls == 2000


def test_after_the_hold_back_there_is_no_since_deploy_section() -> None:
    _, before_deploy, current = deploy_snapshots()
    late = MARK.deployed_at - timedelta(days=7, hours=1)
    mark = DeployMark(MARK.run_id, late, MARK.migrations, MARK.thread_url)
    assert digest.compute(before_deploy, current, deploy=mark, before_deploy=before_deploy).since_deploy is None


def test_the_hold_back_length_is_configurable() -> None:
    _, before_deploy, current = deploy_snapshots()
    mark = DeployMark(MARK.run_id, T0 - timedelta(days=8), MARK.migrations, MARK.thread_url)
    section = digest.compute(before_deploy, current, deploy=mark, before_deploy=before_deploy, hold_days=14)
    assert section.since_deploy.day == 10


def test_a_deploy_without_a_snapshot_before_it_says_so() -> None:
    _, before_deploy, current = deploy_snapshots()
    s = digest.compute(before_deploy, current, deploy=MARK).since_deploy
    assert (s.missing, s.rows) == ("no-snapshot-before", ())


def test_a_full_reset_after_the_deploy_counts_after_from_the_reset() -> None:
    base, before_deploy, _ = deploy_snapshots()
    reset_at = T0 + timedelta(hours=3)
    current = snap(entry(1, 100, 400.0), at=T0 + DAY, reset=reset_at)
    s = digest.compute(before_deploy, current, deploy=MARK, before_deploy=before_deploy,
                       before_deploy_base=base).since_deploy
    assert s.after_start == reset_at and (s.rows[0].after_calls, s.rows[0].after_mean_ms) == (100, 4.0)


# -- names ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("query", "name"), [
    (ORDERS, "SELECT orders"),
    ("WITH x AS (SELECT 1 FROM a) UPDATE public.orders SET n = $1", "UPDATE public.orders"),
    ('INSERT INTO "Users" (a) VALUES ($1)', "INSERT Users"),
    ("DELETE FROM ONLY carts WHERE id = $1", "DELETE carts"),
    ("CREATE INDEX CONCURRENTLY orders_user_idx ON orders (user_id)", "CREATE orders_user_idx"),
    ("SET work_mem = $1", "SET work_mem"),
    ("SELECT $1", "SELECT"),
    ("SELECT 'never", "statement"),
])
def test_statement_names_are_verb_table_and_a_fingerprint(query: str, name: str) -> None:
    assert digest.statement_name(query, 0x1234ABCD) == f"{name} #abcd"


def test_statement_names_of_negative_queryids_are_hex_too() -> None:
    assert digest.statement_name(ORDERS, -1) == "SELECT orders #ffff"
