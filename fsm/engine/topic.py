"""Topic writers: one data stream of a session, driven by the topic-writer table."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from fsm.engine.base import Lifecycle, Notices, ask_server, log
from fsm.engine.executors import Registry
from fsm.engine.schema import RowTooLarge
from fsm.engine.stream import StreamWriter
from fsm.engine.trace import Tracer
from fsm.enums import SerializationFormat, TopicLevelErrorPolicy, TopicWriterStatus
from fsm.errors import ActionFailed, InvalidTrigger, MosaicoProtocolError
from fsm.machines import ProtocolMachine
from fsm.outcome import ErrorKind, Outcome, ProbeVerdict
from fsm.spec.model import Step, Transition
from fsm.transport import TopicInfo

if TYPE_CHECKING:
    from fsm.engine.session import SessionWriter

__all__ = ["TOPIC_STEPS", "TopicWriter"]


class _TopicSteps:
    """The executor of one trigger of a topic writer: its steps and probes run through
    `TOPIC_STEPS`. A push's STREAM_WRITE is `write(data)`; `message` is the text of a
    notification."""

    __slots__ = ("data", "message", "topic", "write")

    def __init__(
        self,
        topic: TopicWriter,
        write: Callable[[Any], Outcome] | None = None,
        data: Any = None,
        message: str = "",
    ) -> None:
        self.topic = topic
        self.write = write
        self.data = data
        self.message = message

    def perform(self, step: Step, row: Transition) -> Outcome:
        # The registry was checked against the table (Machines): every `do` has a handler.
        return TOPIC_STEPS.operations[step.do or ""](self)

    def probe(self, probe: str, step: Step, row: Transition, outcome: Outcome) -> ProbeVerdict:
        return TOPIC_STEPS.probe(self, probe)


def _stream_write(run: _TopicSteps) -> Outcome:
    if run.write is None:
        return Outcome.failed(ErrorKind.FAILED_PRECONDITION, "nothing to write")
    return run.write(run.data)


def _stream_close(run: _TopicSteps) -> Outcome:
    return run.topic._writer.close()


def _stream_abort(run: _TopicSteps) -> Outcome:
    return run.topic._writer.abort()


def _notify(run: _TopicSteps) -> Outcome:
    return run.topic._notices.create(run.message)


def _notified(run: _TopicSteps) -> ProbeVerdict:
    return run.topic._notices.probe()


def _topic_locked(run: _TopicSteps) -> ProbeVerdict:
    return ask_server(
        run.topic._transport,
        run.topic.locator,
        lambda info: info.locked if isinstance(info, TopicInfo) else None,
    )


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
        self._statuses: Any = session.client.enums["TopicWriterStatus"]
        # A line whose tables have push_too_large drops a record too large for any message,
        # counts it and reports it on the topic, instead of refusing it.
        self._drops_too_large = "push_too_large" in machine.spec.triggers
        self.records_too_large = 0
        # The executor of push_row, one push at a time (the row is its data). It refers to
        # this writer weakly: a cycle would leave the writer to the garbage collector.
        self._pushing_rows = _TopicSteps(weakref.proxy(self), writer.submit_row)

    @property
    def policy(self) -> TopicLevelErrorPolicy:
        return TopicLevelErrorPolicy[self._context["policy"]]

    @property
    def status(self) -> TopicWriterStatus:
        """The writer's status, a member of the line's TopicWriterStatus (the one of
        `fsm.enums` unless the line adds states, as 0.7 adds RecordTooLarge)."""
        status: TopicWriterStatus = self._statuses[self.state]
        return status

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
        self._push(lambda pushed: writer.submit_batches(writer.plan_batch(pushed)), data)

    def push_row(self, row: Mapping[str, Any]) -> None:
        """Send one record given as {column: value}; buffered, then converted in bulk."""
        steps = self._pushing_rows
        steps.data = row  # the row buffer holds it anyway
        try:
            self.fire("push", steps, True)
        except RowTooLarge as too_large:
            if not self._drops_too_large:
                raise
            self._drop(too_large)
            return
        except ActionFailed as error:
            self._last_error = str(error)
            raise
        self._last_error = None

    def _drop(self, too_large: RowTooLarge) -> None:
        """A record too large for any message, on a line that drops it: counted, logged,
        reported on the topic (push_too_large), never lost without a word."""
        self.records_too_large += 1
        message = f"topic {self.locator}: record {self.records_too_large} dropped: {too_large}"
        log.warning("%s", message)
        self._last_error = message
        self.fire("push_too_large", _TopicSteps(self, message=message), True)

    def flush(self) -> None:
        """Send every buffered record and wait until all of them are written to the stream;
        raises the failure of any earlier background send."""
        self._push(lambda _: self._writer.submit_flush(), None)

    def _push(self, write: Callable[[Any], Outcome], data: Any) -> None:
        """A push: `write(data)` runs once, as the STREAM_WRITE step. Bad input raises
        ArgumentError from `write` with nothing changed; a refused trigger raises
        InvalidTrigger (traced) before `write` runs."""
        try:
            self.fire("push", _TopicSteps(self, write, data), raising=True)
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


TOPIC_STEPS: Registry[_TopicSteps] = Registry(
    "topic writer",
    operations={
        "STREAM_WRITE": _stream_write,
        "STREAM_CLOSE": _stream_close,
        "STREAM_ABORT": _stream_abort,
        "TOPIC_NOTIFICATION_CREATE": _notify,
    },
    probes={
        "topic_notified": _notified,
        "topic_locked": _topic_locked,
    },
)
