"""The transport interface: how the engine reaches a Mosaico server.

`fsm` defines what a transport must do; `transport/` implements it (an in-memory server model,
an Arrow Flight client). Every call answers an `Outcome`: ok with a decoded value, failed with
an `ErrorKind`, or unknown when the call died after the server may have applied it. Protocol
failures are values, never exceptions, so the tables can route them.

The read side answers transport-neutral views (`SequenceInfo`, `TopicInfo`, `TopicData`), which
each transport builds from its own representation (server objects, or FlightInfo on the wire).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal, Protocol

import attrs
import pyarrow as pa

from fsm.enums import FlightAction
from fsm.outcome import Outcome

__all__ = [
    "BatchStream",
    "DataInfo",
    "Descriptor",
    "SequenceInfo",
    "SessionInfo",
    "TopicData",
    "TopicInfo",
    "TopicStream",
    "Transport",
    "encode_body",
]


def encode_body(body: Mapping[str, Any]) -> bytes:
    """The JSON bytes of an action body, exactly as the wire carries them."""
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


@attrs.frozen
class Descriptor:
    """A Flight descriptor: a CMD holding bytes (the protocol's form) or a PATH."""

    kind: Literal["cmd", "path"]
    command: bytes = b""
    path: tuple[str, ...] = ()

    @classmethod
    def cmd(cls, payload: Mapping[str, Any]) -> Descriptor:
        return cls("cmd", command=encode_body(payload))

    @classmethod
    def for_topic(cls, locator: str, topic_uuid: str) -> Descriptor:
        """The DoPut descriptor of a topic: its locator and the UUID from TOPIC_CREATE."""
        return cls.cmd({"resource_locator": locator, "topic_uuid": topic_uuid})

    @classmethod
    def for_resource(
        cls, locator: str, start_ns: int | None = None, end_ns: int | None = None
    ) -> Descriptor:
        """The GetFlightInfo descriptor of a sequence or topic, with an optional time range."""
        payload: dict[str, Any] = {"resource_locator": locator}
        if start_ns is not None:
            payload["timestamp_ns_start"] = start_ns
        if end_ns is not None:
            payload["timestamp_ns_end"] = end_ns
        return cls.cmd(payload)


@attrs.frozen
class DataInfo:
    """What a finalized topic holds: chunk count, bytes and timestamp range."""

    chunks_number: int
    total_bytes: int
    start_ns: int | None
    end_ns: int | None
    rows: int | None = None
    """The row count, where the server tells it."""


@attrs.frozen
class TopicInfo:
    """A topic as the server describes it (an endpoint of a FlightInfo).

    `serialization_format`, `ontology_tag`, `user_metadata` and `schema` come with a topic's own
    FlightInfo only; the topics of a `SequenceInfo` leave them None (the wire carries no more
    for them, see specs/actions.toml: operations.GET_FLIGHT_INFO), whatever the transport.
    """

    locator: str
    created_at_ns: int
    completed_at_ns: int | None
    locked: bool
    info: DataInfo | None
    ticket: bytes
    serialization_format: str | None = None
    ontology_tag: str | None = None
    user_metadata: Mapping[str, Any] | None = None
    schema: pa.Schema | None = None
    window: DataInfo | None = None
    """The rows in the time range the request named, where it named one and the server
    tells them."""


@attrs.frozen
class SessionInfo:
    uuid: str
    created_at_ns: int
    completed_at_ns: int | None
    locked: bool
    topics: tuple[str, ...]
    locator: str | None = None
    """'<sequence>:<session>', on a protocol line whose sessions have locators."""


@attrs.frozen
class SequenceInfo:
    """A sequence as the server describes it: metadata, sessions and one entry per topic."""

    locator: str
    created_at_ns: int
    user_metadata: Mapping[str, Any]
    sessions: tuple[SessionInfo, ...]
    topics: tuple[TopicInfo, ...]

    def session(self, uuid: str) -> SessionInfo | None:
        return next((s for s in self.sessions if s.uuid == uuid), None)

    def topic(self, locator: str) -> TopicInfo | None:
        return next((t for t in self.topics if t.locator == locator), None)


@attrs.frozen
class TopicData:
    """A topic read back: its schema (with the server's metadata) and record batches."""

    schema: pa.Schema
    batches: tuple[pa.RecordBatch, ...]

    def table(self) -> pa.Table:
        return pa.Table.from_batches(list(self.batches), schema=self.schema)


class BatchStream(Protocol):
    """One open DoGet stream, read one batch at a time. Used by one thread at a time."""

    @property
    def schema(self) -> pa.Schema:
        """The stream's schema (with the server's metadata)."""

    def next(self) -> Outcome:
        """The next batch as the server sent it (ok with a RecordBatch), ok with None at the
        clean end of the stream, or how the stream broke (failed or unknown). Once the stream
        has ended, the same answer again."""

    def close(self) -> None:
        """Cancel the call if it has not ended (idempotent): nothing stays open."""


class _Collected:
    """The batches of a whole DoGet as a `BatchStream` (the fallback of `read_stream`)."""

    def __init__(self, data: TopicData) -> None:
        self.schema = data.schema
        self._batches = list(data.batches)
        self._next = 0

    def next(self) -> Outcome:
        if self._next >= len(self._batches):
            return Outcome.ok(None)
        self._next += 1
        return Outcome.ok(self._batches[self._next - 1])

    def close(self) -> None:
        self._batches = []


class TopicStream(Protocol):
    """One open DoPut stream. Used by one thread at a time."""

    @property
    def failure(self) -> Outcome | None:
        """How the stream failed (a refused batch, a dropped stream, a refused or lost close,
        an abort), or None while no failure is known: still None after a clean close."""

    def write(self, batch: pa.RecordBatch) -> Outcome:
        """Send one batch (stored by the server as one chunk). Once the stream has ended, the
        failure, or failed_precondition after a clean close."""

    def close(self) -> Outcome:
        """End the stream cleanly and wait for the server's verdict. Once the stream has
        ended, the failure, or failed_precondition after a clean close."""

    def abort(self) -> Outcome:
        """Cancel the stream: the server commits nothing of its end."""


class Transport(Protocol):
    """Everything the engine, the conformance suite and the simulator need from a server.

    Implementations must be safe to call from several threads at once (one stream per thread).
    """

    def action_raw(self, action_type: str, body: bytes) -> Outcome:
        """Send one DoAction with any type and body bytes; the value is the decoded
        `response` of the envelope."""

    def action(self, action: FlightAction, body: Mapping[str, Any]) -> Outcome:
        """Send one DoAction of the catalogue with a JSON body."""
        return self.action_raw(action.value, encode_body(body))

    def open_stream(self, descriptor: Descriptor, schema: pa.Schema) -> Outcome:
        """Start a DoPut; the value is a `TopicStream`."""

    def flight_info(self, descriptor: Descriptor) -> Outcome:
        """GetFlightInfo; the value is a `SequenceInfo` or a `TopicInfo`."""

    def read(self, ticket: bytes) -> Outcome:
        """DoGet; the value is a `TopicData`."""

    def read_stream(self, ticket: bytes) -> Outcome:
        """DoGet, batch by batch; the value is a `BatchStream` holding one message at a time.
        (This fallback reads the whole topic first: a transport overrides it to stream.)"""
        outcome = self.read(ticket)
        return Outcome.ok(_Collected(outcome.value)) if outcome.is_ok else outcome

    def list_sequences(self, criteria: bytes = b"") -> Outcome:
        """ListFlights; the value is the list of sequence names."""

    def close(self) -> None:
        """Release connections; the transport is not used afterwards."""
