"""The run lifecycle's table, as DESIGN.md draws it."""

from __future__ import annotations

from bot.runs.model import State


def test_the_terminal_states_are_the_ends_of_the_lifecycle() -> None:
    assert {s for s in State if s.terminal} == {State.PASSED, State.FAILED, State.ERROR, State.DEPLOYED,
                                                State.INTERRUPTED, State.CANCELLED, State.REJECTED}
