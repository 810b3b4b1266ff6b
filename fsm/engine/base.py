"""What session and topic writers share: firing a trigger through a machine.

`Lifecycle.fire` looks the trigger up, walks the row's steps through the writer's executor,
commits the row finally taken, records the trace, and turns the row's `error` mode into what
the caller sees. The status of a writer is never stored anywhere but in its machine.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Mapping

from fsm.engine.trace import Tracer
from fsm.errors import ActionFailed, InvalidTrigger, OutcomeUnknown
from fsm.machines import Executor, ProtocolMachine, StateHolder, StepRecord, Walk, walk
from fsm.outcome import ErrorKind, OutcomeStatus, ProbeVerdict

__all__ = ["Fired", "Lifecycle", "failure_error"]

log = logging.getLogger("mosaico_fsm.engine")


def failure_error(record: StepRecord, row: str) -> ActionFailed:
    """The exception that reports a step's failure (or unsettled lost reply)."""
    outcome = record.outcome
    kind = outcome.kind or ErrorKind.INTERNAL
    if outcome.status is OutcomeStatus.UNKNOWN:
        verdict = record.verdict.value if record.verdict else "not probed"
        detail = f"the reply was lost ({outcome.detail}); asking the server gave: {verdict}"
        if record.verdict is ProbeVerdict.APPLIED:
            return ActionFailed(
                record.step.name, kind, detail + "; it took effect, then was undone", row
            )
        return OutcomeUnknown(record.step.name, kind, detail, row)
    return ActionFailed(record.step.name, kind, outcome.detail, row)


class Fired:
    """The result of a trigger: the walk, and the exceptions the caller must see."""

    def __init__(self, result: Walk) -> None:
        self.walk = result
        self.kept = [failure_error(r, r.row) for r in result.kept]

    @property
    def mode(self) -> str:
        return self.walk.taken.error

    def cause(self) -> ActionFailed:
        """The failure that routed to the row taken (its error mode is 'cause')."""
        assert self.walk.cause is not None
        error = failure_error(self.walk.cause, self.walk.taken.id)
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

    @property
    def state(self) -> str:
        return self._holder.state

    def fire(self, trigger: str, executor: Executor) -> Fired:
        """Handle `trigger`: look up, act, then commit. Raises InvalidTrigger (nothing changed)
        when the table refuses it."""
        state = self._holder.state
        try:
            result = walk(self._machine.spec, state, trigger, self._context, executor)
        except InvalidTrigger:
            if self._tracer is not None:
                self._tracer.refused(
                    self._machine.name, self._instance, state, trigger, self._context
                )
            raise
        self._machine.commit(self._holder, result.taken, self._context)
        if self._tracer is not None:
            self._tracer.record(
                self._machine.name, self._instance, state, trigger, self._context, result
            )
        fired = Fired(result)
        for kept in fired.kept:
            log.warning("%s %s: %s (kept while going on)", self._machine.name, self._instance, kept)
        return fired
