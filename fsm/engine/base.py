"""What session and topic writers share: firing a trigger through a machine, and the
helpers their steps and probes have in common.

`Lifecycle.fire` looks the trigger up, walks the row's steps through the writer's executor,
commits the row finally taken, records the trace (a refused trigger too), and turns the
row's `error` mode into what the caller sees. The status of a writer is never stored anywhere
but in its machine.

There is one way to handle a trigger, traced or not, and it is cheap enough for a push per
record: the row a trigger takes from a state is resolved once per writer (a `Plan`), a walk
whose steps all answer the shared `OK` is the plan's walk built in advance, and a self-loop
taken again and again (a push while Active) is committed to the machine once per
`LOOP_BATCH` repeats, with their count, and always before any other commit of the writer.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from fsm.engine.trace import Tracer
from fsm.enums import FlightAction
from fsm.errors import ActionFailed, InvalidTrigger, OutcomeUnknown
from fsm.machines import Executor, Plan, ProtocolMachine, StateHolder, StepRecord, Walk
from fsm.outcome import OK, ErrorKind, Outcome, OutcomeStatus, ProbeVerdict
from fsm.spec.model import Transition
from fsm.transport import Descriptor, Transport

__all__ = [
    "LOOP_BATCH",
    "Fired",
    "Lifecycle",
    "Notices",
    "ask_server",
    "created_uuid",
    "failure_error",
    "outcome_error",
]

log = logging.getLogger("mosaico_fsm.engine")

LOOP_BATCH = 1024
"""Most repeats of one self-loop row a writer holds before committing them to its machine."""


def outcome_error(
    operation: str,
    outcome: Outcome,
    transition: str | None = None,
    verdict: ProbeVerdict | None = None,
    *,
    machine: str | None = None,
    state: str | None = None,
    trigger: str | None = None,
) -> ActionFailed:
    """The exception that reports a failed or unknown outcome of `operation` (for an unknown
    one, with what asking the server gave, if it was asked); `machine`, `state` and `trigger`
    name the trigger that ran it, when a machine did."""
    kind = outcome.kind or ErrorKind.INTERNAL
    where = {"machine": machine, "state": state, "trigger": trigger}
    if outcome.status is not OutcomeStatus.UNKNOWN:
        return ActionFailed(operation, kind, outcome.detail, transition, **where)
    detail = f"the reply was lost ({outcome.detail})"
    if verdict is not None:
        detail += f"; asking the server gave: {verdict.value}"
    if verdict is ProbeVerdict.APPLIED:
        return ActionFailed(
            operation, kind, detail + "; it took effect, then was undone", transition, **where
        )
    return OutcomeUnknown(operation, kind, detail, transition, **where)


def failure_error(
    record: StepRecord, row: str, machine: str | None = None, first: Transition | None = None
) -> ActionFailed:
    """The exception that reports a step's failure (or unsettled lost reply); `first` is the
    row the trigger looked up, whose state and trigger the exception names."""
    return outcome_error(
        record.step.name,
        record.outcome,
        row,
        record.verdict,
        machine=machine,
        state=first.source if first is not None else None,
        trigger=first.trigger if first is not None else None,
    )


def created_uuid(outcome: Outcome, operation: str) -> Outcome:
    """The outcome of a create, to route: a success carries the uuid the server answered as
    its value. A success without a uuid is routed as a lost reply: the server applied it,
    but the answer the writer needs did not arrive, so the table settles it by asking the
    server."""
    if not outcome.is_ok:
        return outcome
    value = outcome.value
    uuid = value.get("uuid") if isinstance(value, Mapping) else None
    if isinstance(uuid, str) and uuid:
        return Outcome.ok(uuid)
    return Outcome.unknown(f"{operation} answered no uuid ({value!r})", ErrorKind.INTERNAL)


def ask_server(
    transport: Transport, locator: str, took_effect: Callable[[Any], bool | None]
) -> ProbeVerdict:
    """Settle a lost reply by asking the server about `locator` (GetFlightInfo).
    `took_effect` gets the resource's info, or None when the server has no such resource,
    and answers whether the step took effect (None: it cannot tell)."""
    info = transport.flight_info(Descriptor.for_resource(locator))
    if info.is_ok:
        found = info.value
    elif info.kind is ErrorKind.NOT_FOUND:
        found = None
    else:
        return ProbeVerdict.UNRESOLVED
    answer = took_effect(found)
    if answer is None:
        return ProbeVerdict.UNRESOLVED
    return ProbeVerdict.APPLIED if answer else ProbeVerdict.NOT_APPLIED


_NOTIFY = {
    "sequence": (
        FlightAction.SEQUENCE_NOTIFICATION_CREATE,
        FlightAction.SEQUENCE_NOTIFICATION_LIST,
    ),
    "topic": (FlightAction.TOPIC_NOTIFICATION_CREATE, FlightAction.TOPIC_NOTIFICATION_LIST),
}


class Notices:
    """The error notifications a writer puts on its sequence or topic, and the probe that
    settles a lost reply to one of them.

    The probe counts: it lists the resource's notifications whose text holds `marker` (a
    session's uuid, say) and answers applied when there are more than the writer knows it
    created. Matching the text alone would take an identical notice of another session, or
    an earlier one of the same writer, for the one whose reply was lost.
    """

    def __init__(self, transport: Transport, resource: str, locator: str) -> None:
        self._transport = transport
        self._create, self._list = _NOTIFY[resource]
        self.locator = locator
        self._known: dict[str, int] = {}

    def create(self, message: str, marker: str = "") -> Outcome:
        outcome = self._transport.action(
            self._create, {"locator": self.locator, "notification_type": "error", "msg": message}
        )
        if outcome.is_ok:
            self._known[marker] = self._known.get(marker, 0) + 1
        return outcome

    def probe(self, marker: str = "") -> ProbeVerdict:
        listed = self._transport.action(self._list, {"locator": self.locator})
        if not listed.is_ok or not isinstance(listed.value, Mapping):
            return ProbeVerdict.UNRESOLVED
        notes = listed.value.get("notifications")
        if not isinstance(notes, list):
            return ProbeVerdict.UNRESOLVED
        count = sum(1 for n in notes if isinstance(n, Mapping) and marker in str(n.get("msg", "")))
        if count > self._known.get(marker, 0):
            self._known[marker] = count
            return ProbeVerdict.APPLIED
        return ProbeVerdict.NOT_APPLIED


class Fired:
    """The result of a trigger: the walk, and the exceptions the caller must see."""

    __slots__ = ("kept", "machine", "walk")

    def __init__(self, result: Walk, machine: str | None = None) -> None:
        self.walk = result
        self.machine = machine
        self.kept = (
            [failure_error(r, r.row, machine, result.first) for r in result.kept]
            if result.kept
            else []
        )

    @property
    def mode(self) -> str:
        return self.walk.taken.error

    def cause(self) -> ActionFailed:
        """The failure that routed to the row taken (its error mode is 'cause')."""
        assert self.walk.cause is not None
        error = failure_error(self.walk.cause, self.walk.taken.id, self.machine, self.walk.first)
        for kept in self.kept:
            error.add_note(f"also: {kept}")
        return error

    def annotate(self, exc: BaseException) -> None:
        """Attach the failures that were kept while going on to `exc`."""
        for kept in self.kept:
            exc.add_note(f"while handling it: {kept}")


class Lifecycle:
    """A writer whose status lives in a `ProtocolMachine`."""

    def __init__(
        self,
        machine: ProtocolMachine,
        context: Mapping[str, str],
        instance: str,
        tracer: Tracer | None,
    ) -> None:
        self._machine = machine
        self._context = dict(context)
        self._holder: StateHolder = machine.new(instance)
        # A writer dropped before reaching a terminal state (a refused enter, say) must not
        # leave its model in the shared machine.
        weakref.finalize(self, machine.release, self._holder)
        self._instance = instance
        self._tracer = tracer
        # (state, trigger) -> the plan, and what firing it answers when every step succeeds
        self._spec = machine.spec
        self._plans: dict[tuple[str, str], tuple[Plan, Fired, Transition | None]] = {}
        self._loop: Transition | None = None  # the self-loop row taken since the last commit
        self._loops = 0  # how many times

    @property
    def state(self) -> str:
        return self._holder.state

    @property
    def finished(self) -> bool:
        """True once the machine is in a terminal state."""
        return self._holder.state in self._machine.spec.terminals

    def _plan(self, state: str, trigger: str) -> tuple[Plan, Fired, Transition | None]:
        """The plan for `trigger` in `state`, what firing it answers when every step
        succeeds, and its row when that is a self-loop; InvalidTrigger (traced) when the
        table refuses."""
        try:
            plan = self._machine.plan(state, trigger, self._context)
        except InvalidTrigger:
            if self._tracer is not None:
                self._tracer.refused(
                    self._machine.name, self._instance, state, trigger, self._context
                )
            raise
        planned = (plan, Fired(plan.ok, self._machine.name), plan.row if plan.loop else None)
        self._plans[state, trigger] = planned
        return planned

    def fire(self, trigger: str, executor: Executor, raising: bool = False) -> Fired:
        """Handle `trigger`: look up, act, then commit. Raises InvalidTrigger (nothing changed,
        the refusal traced) when the table refuses it; with `raising`, raises the failure
        that routed to the row taken when its error mode is 'cause' (once committed)."""
        state = self._holder.state
        planned = self._plans.get((state, trigger))
        plan, ok, loop = planned if planned is not None else self._plan(state, trigger)
        # The walk (`Plan.walk`), its all-OK start written out: the common case is one
        # step that succeeds.
        row = plan.row
        for step in row.steps:
            outcome = executor.perform(step, row)
            if outcome is not OK:
                result = plan.resume(self._spec, self._context, executor, step, outcome)
                return self._fired(state, trigger, result, raising)
        result = ok.walk
        if loop is None:
            self._commit_loops()
            self._machine.commit(self._holder, plan.row, self._context)
        elif self._loop is loop:
            self._loops += 1
            if self._loops >= LOOP_BATCH:
                self._commit_loops()
        else:
            self._commit_loops()
            self._loop, self._loops = loop, 1
        if self._tracer is not None:
            self._tracer.record(
                self._machine.name, self._instance, state, trigger, self._context, result
            )
        return ok

    def _fired(self, state: str, trigger: str, result: Walk, raising: bool) -> Fired:
        """Commit and trace a walk that did not only succeed, and report it."""
        self._commit_loops()
        self._machine.commit(self._holder, result.taken, self._context)
        if self._tracer is not None:
            self._tracer.record(
                self._machine.name, self._instance, state, trigger, self._context, result
            )
        fired = Fired(result, self._machine.name)
        for kept in fired.kept:
            log.warning("%s %s: %s (kept while going on)", self._machine.name, self._instance, kept)
        if raising and result.taken.error == "cause":
            raise fired.cause()
        return fired

    def _commit_loops(self) -> None:
        """Commit the self-loops taken since the last commit, with their count."""
        if self._loops:
            row, repeats = self._loop, self._loops
            self._loops = 0
            assert row is not None
            self._machine.commit(self._holder, row, self._context, repeats)

    def fire_or_raise(self, trigger: str, executor: Executor) -> Fired:
        """`fire`, then raise the failure that routed to the row taken when its error mode
        is 'cause' (the state is committed first)."""
        return self.fire(trigger, executor, raising=True)
