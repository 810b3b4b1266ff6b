"""Topic writers: one data stream of a session, driven by the topic-writer table."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from fsm.engine.base import Lifecycle, Notices, ask_server
from fsm.engine.stream import _OK, StreamWriter
from fsm.engine.trace import Tracer
from fsm.enums import SerializationFormat, TopicLevelErrorPolicy, TopicWriterStatus
from fsm.errors import ActionFailed, InvalidTrigger, MosaicoProtocolError
from fsm.machines import ProtocolMachine
from fsm.outcome import ErrorKind, Outcome, ProbeVerdict
from fsm.spec.model import MachineSpec, Step, Transition
from fsm.transport import TopicInfo

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
            return topic._notices.create(self.message)
        raise MosaicoProtocolError(f"topic writer cannot run step {step.name}")

    def probe(self, probe: str, step: Step, row: Transition, outcome: Outcome) -> ProbeVerdict:
        topic = self.topic
        if probe == "topic_notified":
            return topic._notices.probe()
        if probe == "topic_locked":
            return ask_server(
                topic._transport,
                topic.locator,
                lambda info: info.locked if isinstance(info, TopicInfo) else None,
            )
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
        # Named under its session, so a retried session's topic of the same name is another
        # instance in the trace.
        super().__init__(machine, context, f"{session._instance}/{name}", tracer)
        self.name = name
        self.locator = locator
        self.schema = schema
        self.serialization_format = serialization_format
        self.ontology_tag = ontology_tag
        self._transport = session.transport
        self._writer = writer
        self._notices = Notices(session.transport, "topic", locator)
        self._last_error: str | None = None
        self._shortcuts = _push_shortcuts(machine.spec, context)

    @property
    def policy(self) -> TopicLevelErrorPolicy:
        return TopicLevelErrorPolicy[self._context["policy"]]

    @property
    def status(self) -> TopicWriterStatus:
        return TopicWriterStatus[self.state]

    @property
    def last_error(self) -> str | None:
        """The message of the last error this writer saw, or None after a successful push."""
        return self._last_error

    @property
    def is_active(self) -> bool:
        """True while the stream is open and can take records: the machine has not ended
        it, and no failure of the stream is known (a failed background send ends it)."""
        return not self.finished and self._writer.is_open

    @property
    def rows_sent(self) -> int:
        return self._writer.rows_sent

    # -------------------------------------------------------------------------------------------

    def push(self, data: pa.RecordBatch | pa.Table) -> None:
        """Send Arrow data; checked against the topic's schema before anything is queued."""
        writer = self._writer
        self._push(lambda: writer.submit_batches(writer.plan_batch(data)))

    def push_row(self, row: Mapping[str, Any]) -> None:
        """Send one record given as {column: value}; buffered, then converted in bulk."""
        if self._tracer is None and self._holder.state in self._shortcuts:
            outcome = self._writer.submit_row(row)  # the common case, kept short
            if outcome is _OK:
                self._last_error = None
                return
            self._settle(_Prefixed(outcome, _TopicSteps(self)))
        else:
            self._settle(_TopicSteps(self, lambda: self._writer.submit_row(row)))

    def flush(self) -> None:
        """Send every buffered record and wait until all of them are written to the stream;
        raises the failure of any earlier background send."""
        self._push(self._writer.submit_flush)

    def _push(self, write: Callable[[], Outcome]) -> None:
        """A push: `write` runs once, as the STREAM_WRITE step. Bad input raises
        ArgumentError from `write` with nothing changed; a refused trigger raises
        InvalidTrigger (traced) before `write` runs."""
        if self._tracer is None and self._holder.state in self._shortcuts:
            outcome = write()
            if outcome.is_ok:
                self._last_error = None
                return
            self._settle(_Prefixed(outcome, _TopicSteps(self)))
        else:
            self._settle(_TopicSteps(self, write))

    def _settle(self, steps: _TopicSteps | _Prefixed) -> None:
        try:
            self.fire_or_raise("push", steps)
        except ActionFailed as error:
            self._last_error = str(error)
            raise
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
            fired = self.fire_or_raise("exit_error", _TopicSteps(self, message=str(exc)))
        except InvalidTrigger as refused:
            exc.add_note(f"topic {self.locator}: {refused}")
            return False
        except ActionFailed as failure:
            raise failure from exc
        if fired.mode == "suppress":
            for kept in fired.kept:
                self._last_error += f"; {kept}"
            return True
        fired.annotate(exc)
        return False

    def close(self, trigger: str, message: str = "") -> MosaicoProtocolError | None:
        """End the stream at the end of the session (`finalize` or `close_error`); the failure
        that ended it badly, if any."""
        try:
            self.fire_or_raise(trigger, _TopicSteps(self, message=message))
        except ActionFailed as error:
            self._last_error = str(error)
            return error
        return None
