"""The Mosaico wire format over Arrow Flight (PROTOCOL.md §4 to §7), both directions.

Action envelopes, FlightInfo for sequences and topics (schema metadata, app_metadata,
endpoints with `mosaico:` locations) and the mapping between error kinds and Flight errors.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pyarrow as pa
from pyarrow import flight

from fsm.outcome import ErrorKind, Outcome
from fsm.transport import DataInfo, SequenceInfo, SessionInfo, TopicInfo

__all__ = [
    "ABORT_MESSAGE",
    "decode_envelope",
    "encode_envelope",
    "error_to_flight",
    "flight_error_outcome",
    "lost_reply_error",
    "parse_flight_info",
    "render_flight_info",
]

ABORT_MESSAGE = b"mosaico-fsm:abort"
"""The app_metadata of the data-less message a client sends to abort a DoPut stream."""

# -----------------------------------------------------------------------------------------------
# Action envelopes


def encode_envelope(action_type: str, response: Any) -> bytes:
    """The single Result body of a DoAction: {"action": ..., "response": ...}."""
    return json.dumps({"action": action_type, "response": response}, separators=(",", ":")).encode()


def decode_envelope(action_type: str, body: bytes) -> Any:
    """The `response` of an envelope; ValueError when it is not one for `action_type`."""
    if not body:
        return None
    envelope = json.loads(body.decode("utf-8"))
    if not isinstance(envelope, dict):
        raise ValueError(f"the reply to {action_type} is not an envelope object")
    tag = envelope.get("action")
    if tag in (None, "empty"):
        return None
    if tag != action_type:
        raise ValueError(f"the reply to {action_type} is tagged {tag!r}")
    return envelope.get("response")


# -----------------------------------------------------------------------------------------------
# FlightInfo


def _topic_endpoint_metadata(topic: TopicInfo) -> bytes:
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


def _endpoint(topic: TopicInfo) -> flight.FlightEndpoint:
    return flight.FlightEndpoint(
        topic.ticket, [f"mosaico:/{topic.locator}"], app_metadata=_topic_endpoint_metadata(topic)
    )


def render_flight_info(
    view: SequenceInfo | TopicInfo, descriptor: flight.FlightDescriptor
) -> flight.FlightInfo:
    """The FlightInfo a Mosaico server answers for a sequence or a topic."""
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
        endpoints = [_endpoint(t) for t in view.topics]
        return flight.FlightInfo(
            schema, descriptor, endpoints, -1, -1, app_metadata=json.dumps(app_metadata).encode()
        )
    schema = view.schema if view.schema is not None else pa.schema([])
    return flight.FlightInfo(
        schema, descriptor, [_endpoint(view)], -1, -1, app_metadata=_topic_endpoint_metadata(view)
    )


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
# Arrow Flight's Python server can only produce some gRPC codes: NOT_FOUND (KeyError),
# INVALID_ARGUMENT (ValueError), UNIMPLEMENTED, PERMISSION_DENIED, UNAUTHENTICATED, CANCELLED,
# INTERNAL, UNAVAILABLE. ALREADY_EXISTS, FAILED_PRECONDITION and ABORTED have no Python
# spelling, so the reference server sends them as UNKNOWN; every message starts with the error
# kind ("failed_precondition: ..."), which the client reads first.

_KIND_PREFIX = re.compile(r"(?:^|message: )(" + "|".join(k.value for k in ErrorKind) + r"): ")


_RAISED_AS: dict[ErrorKind, Callable[[str], Exception]] = {
    ErrorKind.NOT_FOUND: pa.ArrowKeyError,
    ErrorKind.INVALID_ARGUMENT: pa.ArrowInvalid,
    ErrorKind.PERMISSION_DENIED: flight.FlightUnauthorizedError,
    ErrorKind.UNAUTHENTICATED: flight.FlightUnauthenticatedError,
    ErrorKind.CANCELLED: flight.FlightCancelledError,
    ErrorKind.INTERNAL: flight.FlightInternalError,
    ErrorKind.UNIMPLEMENTED: NotImplementedError,
}


def error_to_flight(kind: ErrorKind, message: str) -> Exception:
    """The exception a pyarrow Flight server raises to answer `kind` (FlightServerError, i.e.
    UNKNOWN on the wire, for the kinds Arrow cannot spell)."""
    make: Callable[[str], Exception] = _RAISED_AS.get(kind, flight.FlightServerError)
    return make(f"{kind.value}: {message}")


def lost_reply_error(message: str) -> Exception:
    """What the server raises when a fault loses the reply of an applied request
    (UNAVAILABLE: the client cannot tell whether the request was applied)."""
    make: Callable[[str], Exception] = flight.FlightUnavailableError
    return make(message)


def flight_error_outcome(exc: BaseException) -> Outcome:
    """The outcome a client sees for a Flight call that raised `exc`."""
    text = str(exc).split(". Detail: Python exception", 1)[0]
    if isinstance(
        exc, (flight.FlightUnavailableError, flight.FlightTimedOutError, ConnectionError)
    ):
        return Outcome.unknown(text)
    match = _KIND_PREFIX.search(text)
    if match is not None:
        return Outcome.failed(ErrorKind(match.group(1)), text)
    lowered = text.lower()
    kind = ErrorKind.INTERNAL
    if isinstance(exc, flight.FlightUnauthorizedError):
        kind = ErrorKind.PERMISSION_DENIED
    elif isinstance(exc, flight.FlightUnauthenticatedError):
        kind = ErrorKind.UNAUTHENTICATED
    elif isinstance(exc, flight.FlightCancelledError):
        kind = ErrorKind.CANCELLED
    elif isinstance(exc, flight.FlightInternalError):
        kind = ErrorKind.ABORTED if "aborted" in lowered else ErrorKind.INTERNAL
    elif isinstance(exc, pa.ArrowKeyError):
        kind = ErrorKind.NOT_FOUND
    elif isinstance(exc, pa.ArrowInvalid):
        kind = (
            ErrorKind.FAILED_PRECONDITION
            if "precondition" in lowered
            else ErrorKind.INVALID_ARGUMENT
        )
    elif isinstance(exc, pa.ArrowNotImplementedError):
        kind = ErrorKind.UNIMPLEMENTED
    elif "already exists" in lowered:
        kind = ErrorKind.ALREADY_EXISTS
    return Outcome.failed(kind, text)
