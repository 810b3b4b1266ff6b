"""Names and values foreign to a table are refused with ArgumentError before any row is
looked up; a trigger the table knows but does not allow is an InvalidTrigger."""

from __future__ import annotations

from typing import Any

import pytest

import fsm
from fsm.errors import ArgumentError, InvalidTrigger
from fsm.machines import walk
from fsm.outcome import Outcome, ProbeVerdict

SESSION = fsm.load_spec().machines["session"]
GOOD = {"role": "writer", "policy": "Report"}


class _NoSteps:
    def perform(self, step: Any, row: Any) -> Outcome:
        raise AssertionError("no step may run for a refused call")

    def probe(self, probe: str, step: Any, row: Any, outcome: Outcome) -> ProbeVerdict:
        raise AssertionError("no probe may run for a refused call")


@pytest.mark.parametrize(
    ("state", "trigger", "context", "names"),
    [
        ("Null", "enter", {"role": "writer", "policy": "delete"}, "'policy'"),
        ("Null", "enter", {"role": "writer"}, "'policy'"),
        ("Null", "enter", {**GOOD, "colour": "red"}, "'colour'"),
        ("Null", "entr", GOOD, "'entr'"),
        ("Nul", "enter", GOOD, "'Nul'"),
    ],
)
def test_foreign_names_and_values_are_argument_errors(
    state: str, trigger: str, context: dict[str, str], names: str
) -> None:
    machine = fsm.ProtocolMachine(SESSION)
    holder = machine.new()
    holder.state = state
    with pytest.raises(ArgumentError, match=names):
        machine.lookup(holder, trigger, context)
    with pytest.raises(ArgumentError, match=names):
        walk(SESSION, state, trigger, context, _NoSteps())
    assert holder.state == state


def test_a_known_trigger_not_allowed_names_what_is() -> None:
    with pytest.raises(InvalidTrigger) as err:
        walk(SESSION, "Pending", "enter", GOOD, _NoSteps())
    assert err.value.allowed and "terminal" not in str(err.value)
    with pytest.raises(InvalidTrigger, match="terminal state"):
        walk(SESSION, "Finalized", "enter", GOOD, _NoSteps())
