"""The engine's entry point: write sequences to any Mosaico server through any transport."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import attrs
import pyarrow as pa

from fsm.engine.actions import ActionCalls
from fsm.engine.base import outcome_error
from fsm.engine.query import Condition, QueryResult, query_body
from fsm.engine.read import SequenceReader, TopicReader, open_sequence, open_topic
from fsm.engine.session import SESSION_STEPS, SessionWriter
from fsm.engine.stream import BatchPolicy
from fsm.engine.topic import TOPIC_STEPS
from fsm.engine.trace import Tracer
from fsm.engine.validation import (
    check_metadata,
    check_sequence_name,
    check_topic_name,
    topic_locator,
)
from fsm.engine.wire import ClientWire, ServerHello, handshake, learn_line
from fsm.enums import FlightAction, OnErrorPolicy, SessionLevelErrorPolicy
from fsm.errors import ArgumentError
from fsm.machines import ProtocolMachine
from fsm.outcome import Outcome
from fsm.spec import Spec, load_spec
from fsm.spec.line_enums import python_enums
from fsm.spec.lines import DEFAULT_LINE, Line, load_line, resolve_line
from fsm.transport import Descriptor, SequenceInfo, TopicInfo, Transport

__all__ = ["Client", "Machines"]


@attrs.frozen
class Machines:
    """The two machines the engine runs, built from one spec. Building them checks the
    writers' registries against the tables: a step with no handler is a SpecError here."""

    session: ProtocolMachine
    topic_writer: ProtocolMachine

    def __attrs_post_init__(self) -> None:
        SESSION_STEPS.check(self.session.spec)
        TOPIC_STEPS.check(self.topic_writer.spec)

    @classmethod
    def from_spec(cls, spec: Spec) -> Machines:
        return cls(ProtocolMachine(spec.session), ProtocolMachine(spec.topic_writer))


@functools.cache
def _default_machines() -> Machines:
    """The machines of the packaged spec, built once per process."""
    return Machines.from_spec(load_spec())


@functools.cache
def _line_machines(name: str) -> Machines:
    """The machines of a protocol line's tables, built once per process."""
    return Machines.from_spec(load_line(name).spec)


_LEARNED = {"auto": learn_line}
"""The `protocol` values that learn the line from the server."""


def _resolve(transport: Transport, protocol: str | Line | None) -> tuple[Line, ServerHello]:
    """The line a client speaks and what its handshake learned ("auto": the server's line).
    Without `protocol`, a transport that reads one line (FlightTransport) names it; with
    "auto", such a transport is told the line learned; a client and a transport of two
    different lines are refused."""
    spoken = getattr(transport, "line", None)
    line, hello = _chosen(transport, spoken if protocol is None else protocol)
    speak = getattr(transport, "speak", None)
    learned = _LEARNED.get(protocol) if isinstance(protocol, str) else None
    if learned is not None and callable(speak):
        speak(line)  # the line learned from the server is the transport's too
        spoken = line
    if isinstance(spoken, Line) and spoken is not line:
        raise ArgumentError(
            f"the transport reads protocol line {spoken.name} and the client speaks "
            f"{line.name}: give the transport the same protocol"
        )
    return line, hello


def _chosen(transport: Transport, protocol: object) -> tuple[Line, ServerHello]:
    learned = _LEARNED.get(protocol) if isinstance(protocol, str) else None
    if learned is not None:
        return learned(transport)
    if not (protocol is None or isinstance(protocol, str | Line)):
        raise ArgumentError(f"protocol must be a line name, a Line or 'auto', got {protocol!r}")
    line = resolve_line(protocol)
    return line, handshake(transport, line)


def _bounded(policy: BatchPolicy, limit: int | None) -> BatchPolicy:
    """`policy` within the record limit the server reported (unchanged without one)."""
    if limit is None or policy.max_message_bytes <= limit:
        return policy
    return attrs.evolve(policy, max_message_bytes=limit, batch_bytes=min(policy.batch_bytes, limit))


def _value(outcome: Outcome, operation: str) -> Any:
    if outcome.is_ok:
        return outcome.value
    raise outcome_error(operation, outcome)


class Client(ActionCalls):
    """Writes and reads Mosaico sequences over `transport` (in memory, Flight, ...).

    `tracer` records every transition and step (off by default); `batch_policy` sets how
    topics cut their records into messages. `protocol` names the protocol line the client
    speaks (`specs/lines/`; default 0.3), or is "auto" to learn it from the server's
    handshake; a line that connects with a handshake (version, info) runs it here, and an
    info handshake's limits bound the client's messages and records.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        tracer: Tracer | None = None,
        batch_policy: BatchPolicy | None = None,
        machines: Machines | None = None,
        protocol: str | Line | None = None,
    ) -> None:
        self.transport = transport
        self.tracer = tracer
        self.line, self.server = _resolve(transport, protocol)
        self.wire = ClientWire.of(self.line)
        self.enums = python_enums(self.line.enums)
        self.batch_policy = _bounded(batch_policy or BatchPolicy(), self.server.record_limit)
        if machines is not None:
            self.machines = machines
        elif self.line.name == DEFAULT_LINE and protocol is None:
            self.machines = _default_machines()
        else:
            self.machines = _line_machines(self.line.name)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def sequence_name(self, name: object) -> str:
        """`name` as the line's server stores it, or ArgumentError (before any I/O)."""
        checked = check_sequence_name(name)
        return self.wire.sequence_name(name) if isinstance(name, str) else checked

    def pool(self) -> ThreadPoolExecutor:
        """The client's worker threads, which end the streams of a session in parallel."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=8, thread_name_prefix="mosaico-fsm-close"
                )
            return self._pool

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Wait for the close workers, close the transport, then the tracer (even when
        closing the transport raises)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        try:
            if pool is not None:
                pool.shutdown(wait=True)
            self.transport.close()
        finally:
            if self.tracer is not None:
                self.tracer.close()

    # -------------------------------------------------------------------------------------------
    # Writing

    def sequence_create(
        self,
        name: str,
        metadata: Mapping[str, Any] | None = None,
        on_error: SessionLevelErrorPolicy | OnErrorPolicy = SessionLevelErrorPolicy.Report,
        *,
        batch_policy: BatchPolicy | None = None,
    ) -> SessionWriter:
        """A writer of the new sequence `name` (used as a context manager)."""
        sequence = self.sequence_name(name)
        meta = check_metadata(metadata if metadata is not None else {}, "sequence")
        policy = OnErrorPolicy.normalize(on_error)
        return SessionWriter(
            self, sequence, meta, "writer", policy, batch_policy or self.batch_policy
        )

    def sequence_update(
        self,
        name: str,
        on_error: SessionLevelErrorPolicy | OnErrorPolicy = SessionLevelErrorPolicy.Report,
        *,
        batch_policy: BatchPolicy | None = None,
    ) -> SessionWriter:
        """A writer of a new session on the existing sequence `name`."""
        sequence = self.sequence_name(name)
        policy = OnErrorPolicy.normalize(on_error)
        return SessionWriter(
            self, sequence, {}, "updater", policy, batch_policy or self.batch_policy
        )

    # -------------------------------------------------------------------------------------------
    # Reading (these raise ActionFailed / OutcomeUnknown on failure; the other actions are
    # typed calls of ActionCalls)

    def list_sequences(self) -> list[str]:
        return list(_value(self.transport.list_sequences(), "LIST_FLIGHTS"))

    def sequence_info(self, name: str) -> SequenceInfo:
        info = _value(
            self.transport.flight_info(Descriptor.for_resource(check_sequence_name(name))),
            "GET_FLIGHT_INFO",
        )
        assert isinstance(info, SequenceInfo)
        return info

    def topic_info(
        self, sequence: str, topic: str, start_ns: int | None = None, end_ns: int | None = None
    ) -> TopicInfo:
        locator = topic_locator(check_sequence_name(sequence), check_topic_name(topic))
        info = _value(
            self.transport.flight_info(Descriptor.for_resource(locator, start_ns, end_ns)),
            "GET_FLIGHT_INFO",
        )
        assert isinstance(info, TopicInfo)
        return info

    def read_topic(
        self, sequence: str, topic: str, start_ns: int | None = None, end_ns: int | None = None
    ) -> pa.Table:
        """A topic's records (optionally those with start_ns <= timestamp_ns < end_ns), all
        in one table: for small data. `stream_topic` reads any size in bounded memory."""
        info = self.topic_info(sequence, topic, start_ns, end_ns)
        data = _value(self.transport.read(info.ticket), "DO_GET")
        return data.table()

    def stream_topic(
        self, sequence: str, topic: str, start_ns: int | None = None, end_ns: int | None = None
    ) -> TopicReader:
        """A topic's record batches as DoGet delivers them, one at a time (see fsm.engine.read
        for the memory bound); use it as a context manager or iterate it to the end."""
        return open_topic(self.transport, sequence, topic, start_ns, end_ns)

    def stream_sequence(
        self,
        sequence: str,
        topics: Iterable[str] | None = None,
        start_ns: int | None = None,
        end_ns: int | None = None,
    ) -> SequenceReader:
        """A sequence's topics (all, or `topics` in that order) merged by timestamp_ns, in
        batches of (timestamp_ns, topic, record); see fsm.engine.read."""
        return open_sequence(self.transport, sequence, topics, start_ns, end_ns)

    def query(self, *conditions: Condition, include_timestamp_range: bool = False) -> QueryResult:
        """Sequences and topics meeting every condition (see fsm.engine.query); with
        `include_timestamp_range` each topic carries the time range of its matching rows."""
        body = query_body(conditions, include_timestamp_range=include_timestamp_range)
        answer = _value(self.transport.action(FlightAction.QUERY, body), "QUERY")
        return QueryResult.from_response(answer)
