"""Random trigger sequences with random step outcomes, against a plain reading of the tables.

After every step the machine's state equals the reference interpretation; a refused trigger
leaves it unchanged; every run closed by its final trigger ends in a terminal state.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from fsm import InvalidTrigger, ProtocolMachine, walk
from fsm.outcome import ErrorKind, Outcome, ProbeVerdict
from fsm.spec import load_spec
from fsm.spec.model import MachineSpec, Step, Transition
from tests import reference

SPEC = load_spec()
DOCS = {m.name: reference.raw_doc(m.file) for m in SPEC.machines.values()}
OUTCOMES = st.sampled_from(
    [
        "ok",
        "ok",
        "ok",
        "failed:internal",
        "failed:not_found",
        "failed:permission_denied",
        "unknown:applied",
        "unknown:not_applied",
        "unknown:unresolved",
    ]
)
# The trigger that closes a run from an open state, per machine.
FINAL = {"session": ("exit_ok", "exit_error"), "topic_writer": ("finalize", "close_error")}


class _Drawn:
    """Outcomes drawn by Hypothesis, the same sequence for the walker and the reference."""

    def __init__(self, draws: list[str]) -> None:
        self.draws = draws
        self.i = 0
        self.ref_i = 0

    def _take(self, step: Step) -> str:
        choice = self.draws[self.i % len(self.draws)] if self.draws else "ok"
        self.i += 1
        if choice.startswith("unknown") and step.unknown is None:
            choice = "failed:internal"  # that step cannot end unknown
        self.last = choice
        return choice

    def perform(self, step: Step, row: Transition) -> Outcome:
        choice = self._take(step)
        self.taken.append(choice)
        status, _, detail = choice.partition(":")
        if status == "ok":
            return Outcome.ok()
        if status == "failed":
            return Outcome.failed(ErrorKind(detail), "drawn")
        return Outcome.unknown("drawn")

    def probe(self, probe: str, step: Step, row: Transition, outcome: Outcome) -> ProbeVerdict:
        return ProbeVerdict(self.last.partition(":")[2])

    def start(self) -> None:
        self.taken: list[str] = []

    def replay(self) -> reference.OutcomeFn:
        it = iter(self.taken)
        return lambda name: next(it)


def _drive(machine: MachineSpec, ctx: dict[str, str], triggers: list[str], draws: list[str]) -> Any:
    pm = ProtocolMachine(machine)
    holder = pm.new()
    doc = DOCS[machine.name]
    ref_state = machine.initial
    oracle = _Drawn(draws)
    for trigger in triggers:
        oracle.start()
        before = holder.state
        try:
            result = walk(machine, holder.state, trigger, ctx, oracle)
        except InvalidTrigger:
            assert reference.lookup(doc, ref_state, trigger, ctx) is None
            assert holder.state == before
            continue
        pm.commit(holder, result.taken, ctx)
        _, ref_row = reference.interpret(doc, ref_state, trigger, ctx, oracle.replay())
        ref_state = ref_row["dest"]
        assert holder.state == ref_state
        assert holder.state in machine.states
    return pm, holder, oracle


@given(
    data=st.data(),
    machine=st.sampled_from(list(SPEC.machines.values())),
)
def test_random_runs_follow_the_table_and_end_terminal(
    data: st.DataObject, machine: MachineSpec
) -> None:
    ctx = {
        name: data.draw(st.sampled_from(var.values), label=name)
        for name, var in machine.context.items()
    }
    user = [t for t, spec in machine.triggers.items() if spec.kind != "route"]
    triggers = data.draw(st.lists(st.sampled_from(user), max_size=25), label="triggers")
    draws = data.draw(st.lists(OUTCOMES, max_size=40), label="outcomes")
    pm, holder, oracle = _drive(machine, ctx, triggers, draws)

    # Close the run: reach an open state if needed, then fire a final trigger.
    if machine.name == "session" and holder.state == "Null":
        oracle.draws = []  # enter with every step succeeding
        oracle.start()
        pm.commit(holder, walk(machine, "Null", "enter", ctx, oracle).taken, ctx)
        assert holder.state == "Pending"
    if holder.state not in machine.terminals:
        final = data.draw(st.sampled_from(FINAL[machine.name]), label="final")
        oracle.draws = data.draw(st.lists(OUTCOMES, max_size=6), label="final outcomes")
        oracle.start()
        pm.commit(holder, walk(machine, holder.state, final, ctx, oracle).taken, ctx)
    assert holder.state in machine.terminals
