"""Executors as registries: for each writer, one mapping from the operations and probes its
table names to the functions that run them.

A handler takes the executor of one trigger (the writer's steps object) and answers an
`Outcome`; what it produced (a uuid, an open stream, the sequence's info) is the outcome's
value, which the writer takes from there. A probe handler answers a `ProbeVerdict`. A
registry is checked against its table when the engine is built from a spec
(`fsm.engine.Machines`): a `do` operation, a probe or a fan-out step the table names with no
handler is a `SpecError` then, naming the step, never a surprise when the step first runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

import attrs

from fsm.errors import ProtocolError, SpecError
from fsm.outcome import Outcome, ProbeVerdict
from fsm.spec.model import MachineSpec, ProbeRoute, Step

__all__ = ["Registry"]

R = TypeVar("R")


@attrs.frozen
class Registry(Generic[R]):
    """The handlers of one writer (`writer` names it in errors): `operations` by `do`
    name, `probes` by probe name, and `fan_out` for a `topics = X` step (given the trigger)."""

    writer: str
    operations: Mapping[str, Callable[[R], Outcome]]
    probes: Mapping[str, Callable[[R], ProbeVerdict]]
    fan_out: Callable[[R, str], Outcome] | None = None

    def missing(self, spec: MachineSpec) -> list[tuple[str, str]]:
        """(where, what) for every step of `spec` with no handler here, in table order."""
        found: list[tuple[str, str]] = []
        seen: set[tuple[str, str]] = set()
        for row in spec.transitions:
            for j, step in enumerate(row.steps):
                where = f"transitions ({row.id}) steps[{j}]"
                needs: list[str] = []
                if step.do is not None and step.do not in self.operations:
                    needs.append(f"operation {step.do}")
                if step.topics is not None and self.fan_out is None:
                    needs.append(f"fan-out to topics ({step.topics})")
                if isinstance(step.unknown, ProbeRoute) and step.unknown.probe not in self.probes:
                    needs.append(f"probe {step.unknown.probe}")
                for need in needs:
                    if (where, need) not in seen:
                        seen.add((where, need))
                        found.append((where, need))
        return found

    def check(self, spec: MachineSpec) -> None:
        """SpecError naming the first step of `spec` this registry has no handler for (and
        how many there are)."""
        missing = self.missing(spec)
        if missing:
            where, what = missing[0]
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise SpecError(
                spec.file,
                spec.name,
                where,
                f"the {self.writer} has no handler for {what}{more}",
            )

    def perform(self, run: R, step: Step) -> Outcome:
        """Run `step` with the handler registered for it."""
        if step.topics is not None:
            if self.fan_out is None:
                raise ProtocolError(f"the {self.writer} cannot fan out to topics")
            return self.fan_out(run, step.topics)
        handler = self.operations.get(step.do or "")
        if handler is None:
            raise ProtocolError(
                f"the {self.writer} has no handler for {step.name}", operation=step.name
            )
        return handler(run)

    def probe(self, run: R, probe: str) -> ProbeVerdict:
        """Run the handler registered for `probe`."""
        handler = self.probes.get(probe)
        if handler is None:
            raise ProtocolError(f"the {self.writer} has no probe {probe}")
        return handler(run)
