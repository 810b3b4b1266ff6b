"""Exhaustive checks of the machines against a plain reading of the tables.

Every (state, trigger, context) is looked up in the real machine and in `tests.reference`;
every row is walked under every combination of step outcomes (ok, failed, each unknown
verdict) and compared with the reference interpreter.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fsm import InvalidTrigger, ProtocolMachine, walk
from fsm.outcome import ErrorKind, Outcome, ProbeVerdict
from fsm.spec import load_spec
from fsm.spec.model import MachineSpec, Step, Transition
from tests import reference

SPEC = load_spec()
MACHINES = list(SPEC.machines.values())
DOCS = {m.name: reference.raw_doc(m.file) for m in MACHINES}


def _cases() -> Iterator[tuple[MachineSpec, str, str, dict[str, str]]]:
    for m in MACHINES:
        for state in m.states:
            for trigger in m.triggers:
                for ctx in m.contexts():
                    yield m, state, trigger, ctx


class _AllOk:
    def perform(self, step: Step, row: Transition) -> Outcome:
        return Outcome.ok()

    def probe(self, probe: str, step: Step, row: Transition, outcome: Outcome) -> ProbeVerdict:
        raise AssertionError("no probe without an unknown outcome")


@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: m.name)
def test_every_state_trigger_context(machine: MachineSpec) -> None:
    pm = ProtocolMachine(machine)
    checked = 0
    for m, state, trigger, ctx in _cases():
        if m is not machine:
            continue
        expected = reference.lookup(DOCS[m.name], state, trigger, ctx)
        holder = pm.new()
        holder.state = state
        if expected is None:
            with pytest.raises(InvalidTrigger) as info:
                pm.lookup(holder, trigger, ctx)
            err = info.value
            assert (err.machine, err.state, err.trigger) == (m.name, state, trigger)
            assert trigger not in err.allowed
            assert all(reference.lookup(DOCS[m.name], state, t, ctx) for t in err.allowed)
            assert state in str(err) and trigger in str(err)
            with pytest.raises(InvalidTrigger):
                walk(m, state, trigger, ctx, _AllOk())
            assert holder.state == state, "a refused trigger changed the state"
        else:
            result = walk(m, state, trigger, ctx, _AllOk())
            assert result.first.id == expected["id"]
            assert result.taken.id == expected["id"], "all-ok outcomes must not route elsewhere"
            pm.commit(holder, result.taken, ctx)
            assert holder.state == expected["dest"]
        checked += 1
    assert checked == len(machine.states) * len(machine.triggers) * len(list(machine.contexts()))


class _Oracle:
    """Feeds outcomes from a fixed sequence of choices (by execution order) to both the real
    walker and the reference interpreter; records where the sequence must grow."""

    def __init__(self, choices: list[str]) -> None:
        self.choices = choices
        self.i = 0
        self.alphabets: list[list[str]] = []
        self.steps: list[str] = []

    def _next(self, step: Step) -> str:
        alphabet = ["ok", "failed:internal", "failed:not_found"]
        if step.unknown is not None:
            alphabet += ["unknown:applied", "unknown:not_applied", "unknown:unresolved"]
        if self.i == len(self.alphabets):
            self.alphabets.append(alphabet)
        choice = self.choices[self.i] if self.i < len(self.choices) else "ok"
        self.i += 1
        return choice

    def perform(self, step: Step, row: Transition) -> Outcome:
        self.steps.append(step.name)
        self.last = self._next(step)
        status, _, detail = self.last.partition(":")
        if status == "ok":
            return Outcome.ok()
        if status == "failed":
            return Outcome.failed(ErrorKind(detail), "oracle")
        return Outcome.unknown("oracle")

    def probe(self, probe: str, step: Step, row: Transition, outcome: Outcome) -> ProbeVerdict:
        self.steps.append("?" + probe)
        return ProbeVerdict(self.last.partition(":")[2])


def _reference_outcomes(choices: list[str]) -> reference.OutcomeFn:
    it = iter(choices)
    return lambda name: next(it, "ok")


@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: m.name)
def test_every_row_under_every_outcome_sequence(machine: MachineSpec) -> None:
    doc = DOCS[machine.name]
    runs = 0
    for row in machine.transitions:
        ctx = next(c for c in machine.contexts() if row.matches(c))
        todo: list[list[str]] = [[]]
        while todo:
            choices = todo.pop()
            oracle = _Oracle(choices)
            result = walk(machine, row.source, row.trigger, ctx, oracle)
            ref_steps, ref_row = reference.interpret(
                doc, row.source, row.trigger, ctx, _reference_outcomes(choices)
            )
            assert oracle.steps == ref_steps, (row.id, choices)
            assert result.taken.id == ref_row["id"], (row.id, choices)
            assert result.taken.dest == ref_row["dest"]
            runs += 1
            # Extend: every position past the given choices ran with "ok"; branch there.
            for pos in range(len(choices), len(oracle.alphabets)):
                for alt in oracle.alphabets[pos][1:]:
                    todo.append([*choices, *(["ok"] * (pos - len(choices))), alt])
    assert runs > len(machine.transitions)
