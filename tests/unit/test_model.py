"""The run lifecycle's table, as DESIGN.md draws it."""

from __future__ import annotations

from bot.runs.model import Kind, State, can_move


def test_the_terminal_states_are_the_ends_of_the_lifecycle() -> None:
    assert {s for s in State if s.terminal} == {State.PASSED, State.FAILED, State.ERROR, State.DEPLOYED,
                                                State.INTERRUPTED, State.CANCELLED, State.REJECTED}


def test_only_an_interrupted_deploy_can_be_taken_up_again() -> None:
    assert can_move(State.INTERRUPTED, State.SCHEDULED, Kind.DEPLOY)
    assert not can_move(State.INTERRUPTED, State.SCHEDULED, Kind.VALIDATE)
    assert not can_move(State.INTERRUPTED, State.RUNNING, Kind.DEPLOY)  # through scheduled: approvals re-checked
