"""Topic writers: one data stream of a session, driven by the topic-writer table."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from fsm.engine.base import Lifecycle
from fsm.engine.stream import _OK, StreamWriter
from fsm.engine.trace import Tracer
from fsm.enums import FlightAction, SerializationFormat, TopicLevelErrorPolicy, TopicWriterStatus
from fsm.errors import InvalidTrigger, MosaicoProtocolError
from fsm.machines import ProtocolMachine
from fsm.outcome import ErrorKind, Outcome, OutcomeStatus, ProbeVerdict
from fsm.spec.model import MachineSpec, Step, Transition
from fsm.transport import Descriptor, TopicInfo

if TYPE_CHECKING:
    from fsm.engine.session import SessionWriter

__all__ = ["TopicWriter"]


def _push_shortcuts(spec: MachineSpec, context: Mapping[str, str]) -> frozenset[str]:
    """The states whose push row is a self-loop with STREAM_WRITE as its only step: there a
    push whose write succeeds changes nothing in the machine, and the engine may skip the
    commit. Derived from the table, never assumed."""
    states = set()
    for state in spec.states:
        row = spec.lookup(state, "push", context)
        if (
            row is not None
            and row.dest == state
            and len(row.steps) == 1
            and row.steps[0].do == "STREAM_WRITE"
        ):
            states.add(state)
    return frozenset(states)


def _call(fn: Callable[[], Outcome]) -> Outcome:
    return fn()


class _TopicSteps:
    """The executor of a topic writer's steps."""

    def __init__(
        self, topic: TopicWriter, write: Callable[[], Outcome] | None = None, message: str = ""
    ) -> None:
        self.topic = topic
        self.write = write
        self.message = message

    def perform(self, step: Step, row: Transition) -> Outcome:
        topic = self.topic
        if step.do == "STREAM_WRITE":
            if self.write is None:
                return Outcome.failed(ErrorKind.FAILED_PRECONDITION, "nothing to write")
            return self.write()
        if step.do == "STREAM_CLOSE":
            return topic._writer.close()
        if step.do == "STREAM_ABORT":
            return topic._writer.abort()
        if step.do == "TOPIC_NOTIFICATION_CREATE":
            return topic._transport.action(
                FlightAction.TOPIC_NOTIFICATION_CREATE,
                {"locator": topic.locator, "notification_type": "error", "msg": self.message},
            )
        raise MosaicoProtocolError(f"topic writer cannot run step {step.name}")

    def probe(self, probe: str, step: Step, row: Transition, outcome: Outcome) -> ProbeVerdict:
        topic = self.topic
        if probe == "topic_notified":
            listed = topic._transport.action(
                FlightAction.TOPIC_NOTIFICATION_LIST, {"locator": topic.locator}
            )
            if not listed.is_ok:
                return ProbeVerdict.UNRESOLVED
            messages = [n.get("msg") for n in (listed.value or {}).get("notifications", [])]
            return ProbeVerdict.APPLIED if self.message in messages else ProbeVerdict.NOT_APPLIED
        if probe == "topic_locked":
            info = topic._transport.flight_info(Descriptor.for_resource(topic.locator))
            if not info.is_ok or not isinstance(info.value, TopicInfo):
                return ProbeVerdict.UNRESOLVED
            return ProbeVerdict.APPLIED if info.value.locked else ProbeVerdict.NOT_APPLIED
        raise MosaicoProtocolError(f"topic writer has no probe {probe}")


class _Prefixed:
    """Replays one outcome already obtained for the first step, then defers to `inner`."""

    def __init__(self, first: Outcome, inner: _TopicSteps) -> None:
        self.first: Outcome | None = first
        self.inner = inner

    def perform(self, step: Step, row: Transition) -> Outcome:
        if self.first is not None:
            first, self.first = self.first, None
            return first
        return self.inner.perform(step, row)

    def probe(self, probe: str, step: Step, row: Transition, outcome: Outcome) -> ProbeVerdict:
        return self.inner.probe(probe, step, row, outcome)


class TopicWriter(Lifecycle):
    """Writes one topic. Use `push` for Arrow batches or tables (sent without copying) and
    `push_row` for single records; use it as a context manager to apply its
    TopicLevelErrorPolicy to exceptions raised in the block."""

    def __init__(
        self,
        session: SessionWriter,
        name: str,
        locator: str,
        schema: pa.Schema,
        serialization_format: SerializationFormat,
        ontology_tag: str,
        policy: TopicLevelErrorPolicy,
        writer: StreamWriter,
        machine: ProtocolMachine,
        tracer: Tracer | None,
    ) -> None:
        context = {"policy": policy.name, "session_policy": session.policy.name}
        super().__init__(machine, context, locator, tracer)
        self.name = name
        self.locator = locator
        self.schema = schema
        self.serialization_format = serialization_format
        self.ontology_tag = ontology_tag
        self.policy = policy
        self._transport = session.transport
        self._writer = writer
        self._last_error: str | None = None
        self._shortcuts = _push_shortcuts(machine.spec, context)

    @property
    def status(self) -> TopicWriterStatus:
        return TopicWriterStatus[self.state]

    @property
    def last_error(self) -> str | None:
        """The message of the last error this writer saw, or None after a successful push."""
        return self._last_error

    @property
    def is_active(self) -> bool:
        """True while the stream is open."""
        return self.state not in self._machine.spec.terminals

    @property
    def rows_sent(self) -> int:
        return self._writer.rows_sent

    # -------------------------------------------------------------------------------------------

    def push(self, data: pa.RecordBatch | pa.Table) -> None:
        """Send Arrow data; checked against the topic's schema before anything is queued."""
        self._machine.lookup(self._holder, "push", self._context)
        pieces = self._writer.plan_batch(data)
        self._push(self._writer.submit_batches, pieces)

    def push_row(self, row: Mapping[str, Any]) -> None:
        """Send one record given as {column: value}; buffered, then converted in bulk."""
        if (
            self._tracer is None
            and self._holder.state in self._shortcuts
            and self._writer.submit_row(row) is _OK  # the common case, kept short
        ):
            self._last_error = None
            return
        self._push(self._writer.submit_row, row)

    def flush(self) -> None:
        """Send every buffered record and wait until all of them are written to the stream;
        raises the failure of any earlier background send."""
        self._push(_call, self._writer.submit_flush)

    def _push(self, write: Callable[[Any], Outcome], arg: Any) -> None:
        if self._tracer is None and self._holder.state in self._shortcuts:
            outcome = write(arg)
            if outcome.status is OutcomeStatus.OK:
                self._last_error = None
                return
            fired = self.fire("push", _Prefixed(outcome, _TopicSteps(self)))
        else:
            fired = self.fire("push", _TopicSteps(self, lambda: write(arg)))
        if fired.mode == "cause":
            error = fired.cause()
            self._last_error = str(error)
            raise error
        self._last_error = None

    # -------------------------------------------------------------------------------------------

    def __enter__(self) -> TopicWriter:
        self.fire("enter", _TopicSteps(self))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is None:
            return False
        self._last_error = f"{type(exc).__name__}: {exc}"
        try:
            fired = self.fire("exit_error", _TopicSteps(self, message=str(exc)))
        except InvalidTrigger as refused:
            exc.add_note(f"topic {self.locator}: {refused}")
            return False
        if fired.mode == "suppress":
            for kept in fired.kept:
                self._last_error += f"; {kept}"
            return True
        if fired.mode == "cause":
            raise fired.cause() from exc
        fired.annotate(exc)
        return False

    def close(self, trigger: str, message: str = "") -> MosaicoProtocolError | None:
        """End the stream at the end of the session (`finalize` or `close_error`); the failure
        that ended it badly, if any."""
        fired = self.fire(trigger, _TopicSteps(self, message=message))
        if fired.mode == "cause":
            error = fired.cause()
            self._last_error = str(error)
            return error
        return None
