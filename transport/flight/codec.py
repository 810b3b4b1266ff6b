"""The Mosaico wire format over Arrow Flight (PROTOCOL.md §4 to §7), both directions.

Action envelopes, FlightInfo for sequences and topics (schema metadata, app_metadata,
endpoints with `mosaico:` locations) and how a pyarrow client's exception reads as an error kind.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import pyarrow as pa
from pyarrow import flight

from fsm.errors import TransportError
from fsm.outcome import ErrorKind, Outcome
from fsm.spec.lines import Line
from fsm.transport import DataInfo, SequenceInfo, SessionInfo, TopicInfo
from transport.server.wire import pick

__all__ = [
    "ABORT_MESSAGE",
    "EnvelopeError",
    "FlightShapes",
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
    """The app_metadata of a topic's endpoint (and of a topic's FlightInfo), shape `info`."""
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


def _interval(start: int | None, end: int | None) -> dict[str, int] | None:
    return None if start is None or end is None else {"start_ns": start, "end_ns": end}


def topic_endpoint_data_info(topic: TopicInfo) -> bytes:
    """The app_metadata of a topic's endpoint, shape `data_info` (counts are 0 before the
    topic holds data; `time_window_info` only when the request named a time range)."""
    info = topic.info
    window = topic.window
    return json.dumps(
        {
            "created_at_ns": topic.created_at_ns,
            "completed_at_ns": topic.completed_at_ns,
            "locked": topic.locked,
            "resource_locator": topic.locator,
            "ontology_tag": topic.ontology_tag,
            "serialization_format": topic.serialization_format,
            "user_metadata": dict(topic.user_metadata or {}),
            "data_info": {
                "interval": _interval(info.start_ns, info.end_ns) if info else None,
                "total_row_count": (info.rows or 0) if info else 0,
                "total_bytes": info.total_bytes if info else 0,
                "total_chunks_count": info.chunks_number if info else 0,
            },
            "time_window_info": None
            if window is None
            else {
                "interval": _interval(window.start_ns, window.end_ns),
                "row_count": window.rows or 0,
            },
        }
    ).encode()


TOPIC_ENDPOINT_APP_METADATA: Mapping[str, Callable[[TopicInfo], bytes]] = {
    "info": topic_endpoint_metadata,
    "data_info": topic_endpoint_data_info,
}

DETAILED_ENDPOINTS: Mapping[str, bool] = {"info": False, "data_info": True}
"""Whether a topic endpoint shape carries the topic's properties (so a sequence's FlightInfo
must describe its topics in full)."""


def _session_uuid(session: SessionInfo) -> dict[str, Any]:
    return {"uuid": session.uuid}


def _session_locator(session: SessionInfo) -> dict[str, Any]:
    return {"locator": session.locator}


def _sequence_app_metadata(
    name: Callable[[SessionInfo], dict[str, Any]], user_metadata: bool
) -> Callable[[SequenceInfo], dict[str, Any]]:
    def encode(view: SequenceInfo) -> dict[str, Any]:
        app: dict[str, Any] = {
            "created_at_ns": view.created_at_ns,
            "resource_locator": view.locator,
        }
        if user_metadata:
            app["user_metadata"] = dict(view.user_metadata)
        app["sessions"] = [
            {
                **name(s),
                "created_at_ns": s.created_at_ns,
                "completed_at_ns": s.completed_at_ns,
                "topics": list(s.topics),
                "locked": s.locked,
            }
            for s in view.sessions
        ]
        return app

    return encode


SEQUENCE_APP_METADATA: Mapping[str, Callable[[SequenceInfo], dict[str, Any]]] = {
    "sessions_uuid": _sequence_app_metadata(_session_uuid, user_metadata=False),
    "sessions_locator": _sequence_app_metadata(_session_locator, user_metadata=False),
    "sessions_locator_user_metadata": _sequence_app_metadata(_session_locator, user_metadata=True),
}


def _sequence_schema_context(view: SequenceInfo) -> dict[str, str]:
    return {
        "mosaico:context": "sequence",
        "mosaico:user_metadata": json.dumps(view.user_metadata),
    }


def _no_sequence_keys(view: SequenceInfo) -> dict[str, str]:
    return {}


SEQUENCE_SCHEMA_METADATA: Mapping[str, Callable[[SequenceInfo], dict[str, str]]] = {
    "context_properties": _sequence_schema_context,
    "context_properties_counts": _sequence_schema_context,
    "none": _no_sequence_keys,
}


ENDPOINT_LOCATIONS: Mapping[str, Callable[[TopicInfo], list[str]]] = {
    "mosaico_uri": lambda topic: [f"mosaico:/{topic.locator}"],
    "none": lambda topic: [],
}


def _one_result(action_type: str, response: Any) -> list[bytes]:
    return [encode_envelope(action_type, response)]


def _result_per_item(action_type: str, response: Any) -> list[bytes]:
    if not isinstance(response, list):
        return _one_result(action_type, response)
    return [encode_envelope(action_type, item) + b"\n" for item in response]


FILTER_ANSWER: Mapping[str, Callable[[str, Any], list[bytes]]] = {
    "none": _one_result,
    "result_per_cluster": _result_per_item,
}
"""The Result bodies of a DoAction answer: one envelope, or (a streaming filter action) one
envelope per item."""


@attrs.frozen
class FlightShapes:
    """The Flight framing of one protocol line, chosen by its wire shape names."""

    topic_endpoint: Callable[[TopicInfo], bytes] = topic_endpoint_metadata
    detailed_endpoints: bool = False
    sequence_app_metadata: Callable[[SequenceInfo], dict[str, Any]] = SEQUENCE_APP_METADATA[
        "sessions_uuid"
    ]
    sequence_schema: Callable[[SequenceInfo], dict[str, str]] = _sequence_schema_context
    locations: Callable[[TopicInfo], list[str]] = ENDPOINT_LOCATIONS["mosaico_uri"]
    results: Callable[[str, Any], list[bytes]] = _one_result

    @classmethod
    def of(cls, line: Line) -> FlightShapes:
        return cls(
            topic_endpoint=pick(TOPIC_ENDPOINT_APP_METADATA, line, "topic_endpoint_app_metadata"),
            detailed_endpoints=pick(DETAILED_ENDPOINTS, line, "topic_endpoint_app_metadata"),
            sequence_app_metadata=pick(SEQUENCE_APP_METADATA, line, "sequence_app_metadata"),
            sequence_schema=pick(SEQUENCE_SCHEMA_METADATA, line, "schema_metadata"),
            locations=pick(ENDPOINT_LOCATIONS, line, "endpoint_location"),
            results=pick(FILTER_ANSWER, line, "filter_answer"),
        )


def flight_info_parts(
    view: SequenceInfo | TopicInfo, shapes: FlightShapes | None = None
) -> tuple[pa.Schema, bytes, tuple[TopicInfo, ...]]:
    """What the FlightInfo of a sequence or a topic holds: its schema, its app_metadata and
    the topics that get an endpoint (PROTOCOL.md §7.1), in a line's `shapes` (default 0.3)."""
    shapes = shapes or FlightShapes()
    if isinstance(view, SequenceInfo):
        keys = shapes.sequence_schema(view)
        schema = pa.schema([], metadata=keys or None)
        app_metadata = shapes.sequence_app_metadata(view)
        return schema, json.dumps(app_metadata).encode(), view.topics
    schema = view.schema if view.schema is not None else pa.schema([])
    return schema, shapes.topic_endpoint(view), (view,)


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
