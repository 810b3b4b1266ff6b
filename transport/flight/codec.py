"""The Mosaico wire format over Arrow Flight (PROTOCOL.md §4 to §7), both directions.

Action envelopes, FlightInfo for sequences and topics (schema metadata, app_metadata,
endpoints with `mosaico:` locations) and how a pyarrow client's exception reads as an error kind.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
from pyarrow import flight

from fsm.errors import TransportError
from fsm.outcome import ErrorKind, Outcome
from fsm.transport import DataInfo, SequenceInfo, SessionInfo, TopicInfo

__all__ = [
    "ABORT_MESSAGE",
    "EnvelopeError",
    "decode_envelope",
    "encode_envelope",
    "flight_error_outcome",
    "flight_info_parts",
    "parse_flight_info",
    "topic_endpoint_metadata",
]

ABORT_MESSAGE = b"mosaico-fsm:abort"
"""The app_metadata of the data-less message a client sends to abort a DoPut stream."""

# -----------------------------------------------------------------------------------------------
# Action envelopes


class EnvelopeError(TransportError, ValueError):
    """A DoAction reply that is not the envelope of the action it answers."""


def encode_envelope(action_type: str, response: Any) -> bytes:
    """The single Result body of a DoAction: {"action": ..., "response": ...}."""
    return json.dumps({"action": action_type, "response": response}, separators=(",", ":")).encode()


def decode_envelope(action_type: str, body: bytes) -> Any:
    """The `response` of an envelope; EnvelopeError (a ValueError, as are JSON's own errors)
    when it is not one for `action_type`."""
    if not body:
        return None
    envelope = json.loads(body.decode("utf-8"))
    if not isinstance(envelope, dict):
        raise EnvelopeError(f"the reply to {action_type} is not an envelope object")
    tag = envelope.get("action")
    if tag in (None, "empty"):
        return None
    if tag != action_type:
        raise EnvelopeError(f"the reply to {action_type} is tagged {tag!r}")
    return envelope.get("response")


# -----------------------------------------------------------------------------------------------
# FlightInfo


def topic_endpoint_metadata(topic: TopicInfo) -> bytes:
    """The app_metadata of a topic's endpoint (and of a topic's FlightInfo)."""
    info: dict[str, Any] | None = None
    if topic.info is not None:
        timestamp = None
        if topic.info.start_ns is not None and topic.info.end_ns is not None:
            timestamp = {"start_ns": topic.info.start_ns, "end_ns": topic.info.end_ns}
        info = {
            "chunks_number": topic.info.chunks_number,
            "total_bytes": topic.info.total_bytes,
            "timestamp": timestamp,
        }
    return json.dumps(
        {
            "created_at_ns": topic.created_at_ns,
            "completed_at_ns": topic.completed_at_ns,
            "locked": topic.locked,
            "resource_locator": topic.locator,
            "info": info,
        }
    ).encode()


def flight_info_parts(
    view: SequenceInfo | TopicInfo,
) -> tuple[pa.Schema, bytes, tuple[TopicInfo, ...]]:
    """What the FlightInfo of a sequence or a topic holds: its schema, its app_metadata and
    the topics that get an endpoint (PROTOCOL.md §7.1)."""
    if isinstance(view, SequenceInfo):
        schema = pa.schema(
            [],
            metadata={
                "mosaico:context": "sequence",
                "mosaico:user_metadata": json.dumps(view.user_metadata),
            },
        )
        app_metadata = {
            "created_at_ns": view.created_at_ns,
            "resource_locator": view.locator,
            "sessions": [
                {
                    "uuid": s.uuid,
                    "created_at_ns": s.created_at_ns,
                    "completed_at_ns": s.completed_at_ns,
                    "topics": list(s.topics),
                    "locked": s.locked,
                }
                for s in view.sessions
            ],
        }
        return schema, json.dumps(app_metadata).encode(), view.topics
    schema = view.schema if view.schema is not None else pa.schema([])
    return schema, topic_endpoint_metadata(view), (view,)


def _json_meta(metadata: dict[bytes, bytes], key: str) -> Any:
    raw = metadata.get(key.encode())
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw.decode()


def _parse_topic(endpoint: flight.FlightEndpoint) -> TopicInfo:
    meta = json.loads(endpoint.app_metadata or b"{}")
    raw_info = meta.get("info")
    info = None
    if isinstance(raw_info, dict):
        ts = raw_info.get("timestamp") or {}
        info = DataInfo(
            int(raw_info.get("chunks_number", 0)),
            int(raw_info.get("total_bytes", 0)),
            ts.get("start_ns"),
            ts.get("end_ns"),
        )
    locator = meta.get("resource_locator")
    if locator is None and endpoint.locations:
        locator = str(endpoint.locations[0].uri.decode()).removeprefix("mosaico:/")
    return TopicInfo(
        locator=str(locator),
        created_at_ns=int(meta.get("created_at_ns", 0)),
        completed_at_ns=meta.get("completed_at_ns"),
        locked=bool(meta.get("locked", False)),
        info=info,
        ticket=endpoint.ticket.ticket,
    )


def parse_flight_info(fi: flight.FlightInfo) -> SequenceInfo | TopicInfo:
    """The transport-neutral view of a Mosaico FlightInfo."""
    metadata = fi.schema.metadata or {}
    context = metadata.get(b"mosaico:context", b"").decode()
    if context == "topic":
        (endpoint,) = fi.endpoints
        topic = _parse_topic(endpoint)
        properties = _json_meta(metadata, "mosaico:properties") or {}
        user_metadata = _json_meta(metadata, "mosaico:user_metadata") or {}
        data_schema = fi.schema.remove_metadata() if fi.schema.metadata else fi.schema
        return TopicInfo(
            locator=topic.locator,
            created_at_ns=topic.created_at_ns,
            completed_at_ns=topic.completed_at_ns,
            locked=topic.locked,
            info=topic.info,
            ticket=topic.ticket,
            serialization_format=properties.get("serialization_format"),
            ontology_tag=properties.get("ontology_tag"),
            user_metadata=user_metadata,
            schema=data_schema.with_metadata(metadata),
        )
    app = json.loads(fi.app_metadata or b"{}")
    sessions = tuple(
        SessionInfo(
            uuid=str(s["uuid"]),
            created_at_ns=int(s.get("created_at_ns", 0)),
            completed_at_ns=s.get("completed_at_ns"),
            locked=bool(s.get("locked", False)),
            topics=tuple(s.get("topics", [])),
        )
        for s in app.get("sessions", [])
    )
    return SequenceInfo(
        locator=str(app.get("resource_locator", "")),
        created_at_ns=int(app.get("created_at_ns", 0)),
        user_metadata=_json_meta(metadata, "mosaico:user_metadata") or {},
        sessions=sessions,
        topics=tuple(_parse_topic(e) for e in fi.endpoints),
    )


# -----------------------------------------------------------------------------------------------
# Errors
#
# A gRPC status reaches a pyarrow client as an exception whose text starts with a fixed phrase
# per code (PROTOCOL.md §2.3): the class alone does not tell the code (ArrowInvalid is raised for
# INVALID_ARGUMENT, FAILED_PRECONDITION and RESOURCE_EXHAUSTED), the phrase does. mosaicod and the
# reference server both send plain statuses, so one table reads both.

_PHRASES: tuple[tuple[str, ErrorKind | None], ...] = (
    ("Flight returned not found error", ErrorKind.NOT_FOUND),
    ("Flight returned already exists error", ErrorKind.ALREADY_EXISTS),
    ("gRPC returned precondition failed error", ErrorKind.FAILED_PRECONDITION),
    ("Flight returned invalid argument error", ErrorKind.INVALID_ARGUMENT),
    ("Flight returned unauthorized error", ErrorKind.PERMISSION_DENIED),
    ("Flight returned unauthenticated error", ErrorKind.UNAUTHENTICATED),
    ("Flight returned internal error", ErrorKind.INTERNAL),
    ("Flight cancelled call", ErrorKind.CANCELLED),
    ("gRPC returned aborted error", ErrorKind.ABORTED),
    ("Flight returned unimplemented error", ErrorKind.UNIMPLEMENTED),
    ("gRPC returned resource exhausted error", ErrorKind.RESOURCE_EXHAUSTED),
    ("Flight returned unavailable error", None),
    ("Flight returned timeout error", None),
)
"""The phrase each gRPC status starts with in pyarrow, and its kind (None: the server may have
applied the call, the outcome is unknown)."""

_BY_CLASS: tuple[tuple[type[BaseException], ErrorKind | None], ...] = (
    (flight.FlightUnavailableError, None),
    (flight.FlightTimedOutError, None),
    (ConnectionError, None),
    (flight.FlightUnauthorizedError, ErrorKind.PERMISSION_DENIED),
    (flight.FlightUnauthenticatedError, ErrorKind.UNAUTHENTICATED),
    (flight.FlightCancelledError, ErrorKind.CANCELLED),
    (pa.ArrowKeyError, ErrorKind.NOT_FOUND),
    (pa.ArrowInvalid, ErrorKind.INVALID_ARGUMENT),
    (pa.ArrowNotImplementedError, ErrorKind.UNIMPLEMENTED),
)
"""When no phrase matches (a failure of the connection rather than a status): the class."""


def flight_error_outcome(exc: BaseException) -> Outcome:
    """The outcome a client sees for a Flight call that raised `exc`."""
    text = str(exc)
    phrase_text = text.removeprefix("Unknown: ")
    for phrase, kind in _PHRASES:
        if phrase_text.startswith(phrase):
            return Outcome.unknown(text) if kind is None else Outcome.failed(kind, text)
    for cls, kind in _BY_CLASS:
        if isinstance(exc, cls):
            return Outcome.unknown(text) if kind is None else Outcome.failed(kind, text)
    return Outcome.failed(ErrorKind.INTERNAL, text)
