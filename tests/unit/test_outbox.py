"""The outbox's order and patience (pure): which stored messages may go now, and how long a failed one waits."""

from __future__ import annotations

import pytest

from bot.runs.outbox import MAX_WAIT_S, backoff_s, next_batch
from bot.runs.store import Delivery

NOW = "2026-12-05T10:00:00+00:00"
LATER = "2026-12-05T10:05:00+00:00"


def d(id_: int, kind: str = "reply", thread: str = "r-1", next_at: str = NOW) -> Delivery:
    return Delivery(id=id_, kind=kind, thread=thread, key="", payload={}, attempts=0, next_at=next_at,
                    created_at=NOW)


def threads(*posted: str):
    return lambda run_id: "1700.1" if run_id in posted else ""


def test_a_parent_goes_first_and_its_replies_wait_for_its_ts() -> None:
    pending = [d(1, "parent"), d(2), d(3)]
    assert [x.id for x in next_batch(pending, NOW, threads())] == [1]


def test_once_the_thread_exists_its_replies_go_one_at_a_time_in_order() -> None:
    assert [x.id for x in next_batch([d(2), d(3)], NOW, threads("r-1"))] == [2]


def test_a_reply_waiting_for_its_retry_holds_back_the_later_ones_of_its_thread() -> None:
    pending = [d(2, next_at=LATER), d(3)]
    assert next_batch(pending, NOW, threads("r-1")) == []


def test_other_threads_do_not_wait_for_a_stuck_one() -> None:
    pending = [d(1, "parent", next_at=LATER), d(2), d(3, thread="r-2"), d(4, "dm", thread="")]
    assert [x.id for x in next_batch(pending, NOW, threads("r-2"))] == [3, 4]


def test_messages_outside_a_thread_never_wait_for_each_other() -> None:
    pending = [d(1, "dm", thread="", next_at=LATER), d(2, "dm", thread=""), d(3, "post", thread="")]
    assert [x.id for x in next_batch(pending, NOW, threads())] == [2, 3]


@pytest.mark.parametrize(("attempts", "retry_after", "wait"), [
    (0, None, 1.0), (1, None, 2.0), (3, None, 8.0), (20, None, MAX_WAIT_S), (0, 30.0, 30.0), (5, 10.0, 32.0),
])
def test_backoff_doubles_to_five_minutes_and_honours_retry_after(attempts: int, retry_after: float | None,
                                                                  wait: float) -> None:
    assert backoff_s(attempts, retry_after) == wait
