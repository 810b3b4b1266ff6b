"""Behaviour scenarios from the seed and PROTOCOL.md §9, replayed on the shipped tables."""

from __future__ import annotations

import pytest

from fsm.spec import load_spec
from tests.scenarios import ALL_SCENARIOS, Scenario, run_scenario


@pytest.mark.parametrize("scenario", ALL_SCENARIOS, ids=lambda s: s.name)
def test_scenario(scenario: Scenario) -> None:
    run_scenario(load_spec(), scenario)


def test_scenarios_exercise_every_row() -> None:
    """Each row of both tables is taken by at least one scenario (so the mutation tests can
    see every row)."""
    from fsm.errors import InvalidTrigger
    from fsm.machines import ProtocolMachine, walk
    from tests.scenarios import ScriptedExecutor

    spec = load_spec()
    taken: set[tuple[str, str]] = set()
    for scenario in ALL_SCENARIOS:
        machine = ProtocolMachine(spec.machines[scenario.machine])
        holder = machine.new()
        for move in scenario.moves:
            try:
                result = walk(
                    machine.spec,
                    holder.state,
                    move.trigger,
                    scenario.context,
                    ScriptedExecutor(move.script),
                )
            except InvalidTrigger:
                continue
            taken.add((scenario.machine, result.first.id))
            taken.add((scenario.machine, result.taken.id))
            machine.commit(holder, result.taken, scenario.context)
    every = {(m.name, t.id) for m in spec.machines.values() for t in m.transitions}
    assert every - taken == set()


def test_route_laws_hold() -> None:
    from tests.scenarios import route_law_violations

    assert route_law_violations(load_spec()) == []
