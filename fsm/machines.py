"""Machines built from the tables, and the walk that runs one transition's steps.

`ProtocolMachine` wraps one shared `transitions.Machine` per table; each session or topic
writer is a model of it (a `StateHolder`). Every row of the table becomes a `transitions`
transition guarded by the row's `when`, and nothing else does: no transition is written by hand.

A trigger is handled in three phases, as h11 and h2 do: look the row up (an invalid trigger
raises `InvalidTrigger` and changes nothing), run its steps through an `Executor` (`walk`,
which follows the table's routes for every failed or unknown outcome), then commit the row
that was finally taken. The state never changes half-way through.

A `Plan` is a row looked up once for a state, trigger and context, with the walk it gives
when every step succeeds. `commit` may take a self-loop row with a count of repeats (one
commit for a run of identical pushes); `listen` reports every commit as a `Move`; `follow`
moves a bare state name, for checkers that track many candidate runs of a table.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import attrs
from transitions import EventData, Machine

from fsm.errors import ProtocolError
from fsm.outcome import OK, Outcome, OutcomeStatus, ProbeVerdict
from fsm.spec.model import CONTINUE, STOP, MachineSpec, ProbeRoute, Step, Transition

__all__ = [
    "Executor",
    "Move",
    "Plan",
    "ProtocolMachine",
    "StateHolder",
    "StepRecord",
    "Walk",
    "walk",
]


class StateHolder:
    """The model `transitions` moves between states; `state` is a state name of the table."""

    state: str

    def __init__(self, label: str = "") -> None:
        self.label = label


@attrs.frozen
class _Guard:
    """A row's `when`, as a `transitions` condition reading the context passed with the event."""

    row: Transition

    def __call__(self, event: EventData) -> bool:
        return self.row.matches(event.kwargs["context"])


class _TableMachine(Machine):
    """A `transitions` machine whose models are plain state holders: it binds no trigger or
    state methods to them (triggers are fired through `ProtocolMachine.commit`), which keeps
    adding a model cheap."""

    def _checked_assignment(self, model: Any, name: str, func: Any) -> None:
        return None


@attrs.frozen
class Move:
    """A commit the machine made: model `label` went from `source` to `dest` along row `row`
    (fired by `trigger`), `repeats` times in a row (a self-loop repeated without anything
    else in between is committed once, with its count)."""

    label: str
    trigger: str
    row: str
    source: str
    dest: str
    repeats: int


class ProtocolMachine:
    """The executable form of one lifecycle table, shared by all of its models."""

    def __init__(self, spec: MachineSpec) -> None:
        self.spec = spec
        self._lock = threading.Lock()
        self._plans: dict[tuple[str, str, tuple[tuple[str, str], ...]], Plan] = {}
        self._followed: dict[tuple[str, str, tuple[tuple[str, str], ...]], str] = {}
        self._machine = _TableMachine(
            model=None,
            states=list(spec.states),
            initial=spec.initial,
            auto_transitions=False,
            send_event=True,
            ignore_invalid_triggers=False,
            name=spec.name,
        )
        for row in spec.transitions:
            self._machine.add_transition(
                row.trigger,
                row.source,
                row.dest,
                conditions=[_Guard(row)],
            )

    @property
    def name(self) -> str:
        return self.spec.name

    def new(self, label: str = "") -> StateHolder:
        """A fresh model in the table's initial state."""
        holder = StateHolder(label)
        with self._lock:
            self._machine.add_model(holder)
        return holder

    def release(self, holder: StateHolder) -> None:
        """Forget a model that will not move again (its writer is gone). Called from garbage
        collection, which may run while this thread holds the lock: so it takes no lock, and
        relies on list removal being atomic."""
        with contextlib.suppress(ValueError):
            self._machine.models.remove(holder)

    @property
    def models(self) -> int:
        """How many models the machine tracks now."""
        return len(self._machine.models)

    def lookup(self, holder: StateHolder, trigger: str, context: Mapping[str, str]) -> Transition:
        """The row that applies now; `InvalidTrigger` (state unchanged) when there is none,
        `ArgumentError` for a trigger or context foreign to the table."""
        return self.spec.row_for(holder.state, trigger, context)

    def plan(self, state: str, trigger: str, context: Mapping[str, str]) -> Plan:
        """The plan of the row that applies in `state` (built once per state, trigger and
        context); `InvalidTrigger` when there is none, `ArgumentError` for a trigger or
        context foreign to the table."""
        key = (state, trigger, tuple(sorted(context.items())))
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = Plan.of(self.spec.row_for(state, trigger, context))
        return plan

    def listen(self, callback: Callable[[Move], None]) -> None:
        """Call `callback` with every commit this machine makes, once it is made."""

        def after(event: EventData) -> None:
            kwargs = event.kwargs
            transition = event.transition
            assert transition is not None
            callback(
                Move(
                    getattr(event.model, "label", ""),
                    event.event.name if event.event is not None else "",
                    kwargs["row"],
                    transition.source,
                    transition.dest or transition.source,
                    kwargs["repeats"],
                )
            )

        self._machine.after_state_change.append(after)

    def commit(
        self,
        holder: StateHolder,
        row: Transition,
        context: Mapping[str, str],
        repeats: int = 1,
    ) -> None:
        """Move `holder` along `row` (which must have been looked up from its current state);
        `repeats` > 1 commits a self-loop row taken that many times in a row."""
        self._move(holder, row, context, repeats)
        if row.dest in self.spec.terminals:
            with self._lock:
                self._machine.remove_model(holder)

    def follow(self, state: str, row: Transition, context: Mapping[str, str]) -> str:
        """The state a model in `state` reaches along `row`, moved by the machine as `commit`
        moves a writer's model: for checkers that follow many candidate runs of a table
        without keeping models in the machine. The machine makes each distinct move (state,
        row, context) once; a repeat answers the state that move reached."""
        key = (state, row.id, tuple(sorted(context.items())))
        dest = self._followed.get(key)
        if dest is None:
            holder = StateHolder()
            holder.state = state
            self._move(holder, row, context, 1)
            dest = self._followed[key] = holder.state
        return dest

    def _move(
        self, holder: StateHolder, row: Transition, context: Mapping[str, str], repeats: int
    ) -> None:
        if holder.state != row.source:
            raise ProtocolError(
                f"{self.spec.name}: row {row.id} starts in {row.source}, the model is in {holder.state}",
                machine=self.spec.name,
                state=holder.state,
                trigger=row.trigger,
            )
        if repeats != 1 and row.dest != row.source:
            raise ProtocolError(
                f"{self.spec.name}: row {row.id} leaves {row.source}; it cannot repeat",
                machine=self.spec.name,
                state=holder.state,
                trigger=row.trigger,
            )
        fired = self._machine.events[row.trigger].trigger(
            holder, context=context, row=row.id, repeats=repeats
        )
        if not fired or holder.state != row.dest:
            raise ProtocolError(
                f"{self.spec.name}: the machine did not follow row {row.id} "
                f"({row.source} -> {row.dest}); it is in {holder.state}",
                machine=self.spec.name,
                state=row.source,
                trigger=row.trigger,
            )


class Executor(Protocol):
    """Runs the steps of a walk. The only place where I/O happens."""

    def perform(self, step: Step, row: Transition) -> Outcome:
        """Run one step and report its outcome (never raise for a protocol failure)."""

    def probe(self, probe: str, step: Step, row: Transition, outcome: Outcome) -> ProbeVerdict:
        """Ask the server whether the step whose reply was lost took effect."""


@attrs.frozen
class StepRecord:
    """One step as it ran: its row, its outcome, the probe's verdict and the route taken."""

    row: str
    step: Step
    outcome: Outcome
    verdict: ProbeVerdict | None
    route: str

    @property
    def succeeded(self) -> bool:
        """The step took effect (directly, or as the probe established)."""
        return self.outcome.is_ok or self.verdict is ProbeVerdict.APPLIED

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "row": self.row,
            "step": self.step.name,
            "outcome": self.outcome.status.value,
            "route": self.route,
        }
        if self.outcome.kind is not None:
            out["kind"] = self.outcome.kind.value
        if self.verdict is not None:
            out["probe"] = self.verdict.value
        return out


@attrs.frozen
class Walk:
    """What happened when a trigger was handled: the row looked up first, the row finally
    taken (after routes), every step, the failure that routed (`cause`) and the failures that
    were kept while going on (`kept`)."""

    first: Transition
    taken: Transition
    records: tuple[StepRecord, ...]
    cause: StepRecord | None
    kept: tuple[StepRecord, ...]


_NEXT = "next"


@attrs.frozen
class Plan:
    """The row a trigger takes from one state under one context, resolved once, with the
    walk that row gives when every step answers the shared `OK` (built once, then returned
    as it is: a walk of plain successes allocates nothing)."""

    row: Transition
    ok: Walk
    loop: bool  # the row leads back to its own state

    @classmethod
    def of(cls, row: Transition) -> Plan:
        records = tuple(StepRecord(row.id, step, OK, None, _NEXT) for step in row.steps)
        return cls(row, Walk(row, row, records, None, ()), row.dest == row.source)

    def walk(self, spec: MachineSpec, context: Mapping[str, str], executor: Executor) -> Walk:
        """Run the row's steps, and every row its routes lead to (see `walk`)."""
        row = self.row
        for step in row.steps:
            outcome = executor.perform(step, row)
            if outcome is not OK:
                return self.resume(spec, context, executor, step, outcome)
        return self.ok

    def resume(
        self,
        spec: MachineSpec,
        context: Mapping[str, str],
        executor: Executor,
        step: Step,
        outcome: Outcome,
    ) -> Walk:
        """The rest of the walk once the row's steps before `step` answered `OK` and `step`
        answered `outcome`."""
        done = next(i for i, s in enumerate(self.row.steps) if s is step)
        return _walk_on(spec, context, executor, self.row, self.ok.records[:done], outcome)


def walk(
    spec: MachineSpec,
    state: str,
    trigger: str,
    context: Mapping[str, str],
    executor: Executor,
) -> Walk:
    """Run the row for `(state, trigger, context)` and every row its routes lead to.

    Pure apart from the executor: it reads the table, asks the executor to perform steps and
    probes, and returns what happened. It changes no state; the caller commits `taken`.
    """
    return Plan.of(spec.row_for(state, trigger, context)).walk(spec, context, executor)


def _walk_on(
    spec: MachineSpec,
    context: Mapping[str, str],
    executor: Executor,
    first: Transition,
    done: tuple[StepRecord, ...],
    pending: Outcome | None,
) -> Walk:
    """The rest of a walk of `first`: its steps before `done` succeeded, the next one
    answered `pending`."""
    row = first
    records: list[StepRecord] = list(done)
    kept: list[StepRecord] = []
    cause: StepRecord | None = None
    start = len(done)
    while True:
        diverted_to: str | None = None
        for step in row.steps[start:]:
            if pending is None:
                outcome = executor.perform(step, row)
            else:
                outcome, pending = pending, None
            verdict: ProbeVerdict | None = None
            if outcome.status is OutcomeStatus.OK:
                route = _NEXT
            elif outcome.status is OutcomeStatus.FAILED:
                route = step.failed.route_for(outcome.kind.value if outcome.kind else None)
            elif isinstance(step.unknown, ProbeRoute):
                verdict = executor.probe(step.unknown.probe, step, row, outcome)
                route = getattr(step.unknown, verdict.value)
            elif step.unknown is not None:
                route = step.unknown
            else:
                raise ProtocolError(
                    f"{spec.name}: {step.name} ended unknown but row {row.id} has no route for it",
                    machine=spec.name,
                    state=first.source,
                    trigger=first.trigger,
                    operation=step.name,
                )
            record = StepRecord(row.id, step, outcome, verdict, route)
            records.append(record)
            if route in (_NEXT, CONTINUE, STOP):
                if not record.succeeded:
                    kept.append(record)
                if route == STOP:
                    break
                continue
            diverted_to = route
            if cause is not None:
                kept.append(cause)
            cause = record
            break
        if diverted_to is None:
            return Walk(first, row, tuple(records), cause, tuple(kept))
        nxt = spec.lookup(row.source, diverted_to, context)
        if nxt is None:  # excluded by the soundness checks; kept as a hard stop
            raise ProtocolError(
                f"{spec.name}: route {diverted_to!r} has no row in {row.source}",
                machine=spec.name,
                state=first.source,
                trigger=first.trigger,
            )
        row = nxt
        start = 0
