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
    "FlightInfoError",
    "FlightReader",
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


class FlightInfoError(TransportError, ValueError):
    """A FlightInfo that is not one in the shapes of the client's protocol line."""


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


def _decode_topic_info(meta: Mapping[str, Any], ticket: bytes, located: str | None) -> TopicInfo:
    """A topic endpoint's app_metadata in shape `info` (`located`: the topic its endpoint
    location names, where the line's endpoints have one)."""
    raw_info = meta.get("info")
    info = None
    if raw_info is not None:
        raw_info = _object(raw_info, "the endpoint's info")
        ts = _object(raw_info.get("timestamp") or {}, "the endpoint's timestamp")
        info = DataInfo(
            int(raw_info["chunks_number"]),
            int(raw_info["total_bytes"]),
            ts.get("start_ns"),
            ts.get("end_ns"),
        )
    return TopicInfo(
        locator=_endpoint_locator(meta, located),
        created_at_ns=int(meta.get("created_at_ns", 0)),
        completed_at_ns=meta.get("completed_at_ns"),
        locked=bool(meta.get("locked", False)),
        info=info,
        ticket=ticket,
    )


def _decode_data_info(meta: Mapping[str, Any], ticket: bytes, located: str | None) -> TopicInfo:
    """A topic endpoint's app_metadata in shape `data_info`. Its counts are zeros until the
    topic is finalized, so a topic not finalized has no data info; a time window tells its
    rows and interval only (its chunk and byte counts read 0)."""
    data = _object(meta["data_info"], "the endpoint's data_info")
    completed = meta.get("completed_at_ns")
    info = None
    if completed is not None:
        interval = _object(data.get("interval") or {}, "the data_info's interval")
        info = DataInfo(
            int(data["total_chunks_count"]),
            int(data["total_bytes"]),
            interval.get("start_ns"),
            interval.get("end_ns"),
            rows=int(data["total_row_count"]),
        )
    window = None
    raw_window = meta.get("time_window_info")
    if raw_window is not None:
        raw_window = _object(raw_window, "the endpoint's time_window_info")
        interval = _object(raw_window.get("interval") or {}, "the time window's interval")
        window = DataInfo(
            0,
            0,
            interval.get("start_ns"),
            interval.get("end_ns"),
            rows=int(raw_window["row_count"]),
        )
    return TopicInfo(
        locator=_endpoint_locator(meta, located),
        created_at_ns=int(meta.get("created_at_ns", 0)),
        completed_at_ns=completed,
        locked=bool(meta.get("locked", False)),
        info=info,
        ticket=ticket,
        serialization_format=meta.get("serialization_format"),
        ontology_tag=meta.get("ontology_tag"),
        user_metadata=dict(_object(meta.get("user_metadata") or {}, "the topic's user_metadata")),
        window=window,
    )


def _object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise FlightInfoError(f"{what} is not an object")
    return value


def _endpoint_locator(meta: Mapping[str, Any], located: str | None) -> str:
    locator = meta.get("resource_locator")
    if locator is None:
        locator = located
    if not isinstance(locator, str):
        raise FlightInfoError("a topic endpoint names no topic (no resource_locator, no location)")
    return locator


TOPIC_ENDPOINT_DECODERS: Mapping[
    str, Callable[[Mapping[str, Any], bytes, str | None], TopicInfo]
] = {
    "info": _decode_topic_info,
    "data_info": _decode_data_info,
}
"""A client's reading of each shape of TOPIC_ENDPOINT_APP_METADATA: the endpoint's
app_metadata, its ticket and the topic its location names give a `TopicInfo`."""


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


@attrs.frozen
class SequenceHead:
    """What a sequence's app_metadata tells: all of its `SequenceInfo` but the topics;
    `user_metadata` is None where the shape does not carry it."""

    locator: str
    created_at_ns: int
    user_metadata: Mapping[str, Any] | None
    sessions: tuple[SessionInfo, ...]


def _read_session_uuid(raw: Mapping[str, Any]) -> tuple[str, str | None]:
    return str(raw["uuid"]), None


def _read_session_locator(raw: Mapping[str, Any]) -> tuple[str, str | None]:
    # The wire names the session by its locator only: it is the session's identifier too.
    locator = str(raw["locator"])
    return locator, locator


def _sequence_head(
    name: Callable[[Mapping[str, Any]], tuple[str, str | None]], user_metadata: bool
) -> Callable[[Mapping[str, Any]], SequenceHead]:
    def decode(app: Mapping[str, Any]) -> SequenceHead:
        sessions = []
        for item in app.get("sessions", []):
            raw = _object(item, "a session")
            uuid, locator = name(raw)
            sessions.append(
                SessionInfo(
                    uuid=uuid,
                    created_at_ns=int(raw.get("created_at_ns", 0)),
                    completed_at_ns=raw.get("completed_at_ns"),
                    locked=bool(raw.get("locked", False)),
                    topics=tuple(raw.get("topics", [])),
                    locator=locator,
                )
            )
        meta = (
            _object(app["user_metadata"], "the sequence's user_metadata") if user_metadata else None
        )
        return SequenceHead(
            locator=str(app.get("resource_locator", "")),
            created_at_ns=int(app.get("created_at_ns", 0)),
            user_metadata=meta,
            sessions=tuple(sessions),
        )

    return decode


SEQUENCE_APP_METADATA_DECODERS: Mapping[str, Callable[[Mapping[str, Any]], SequenceHead]] = {
    "sessions_uuid": _sequence_head(_read_session_uuid, user_metadata=False),
    "sessions_locator": _sequence_head(_read_session_locator, user_metadata=False),
    "sessions_locator_user_metadata": _sequence_head(_read_session_locator, user_metadata=True),
}
"""A client's reading of each shape of SEQUENCE_APP_METADATA. Where sessions are named by
locator only, a `SessionInfo` carries the locator as its `uuid` too (the wire has no UUID)."""


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


@attrs.frozen
class SchemaKeys:
    """What the mosaico:* keys of a FlightInfo's schema tell (None: the shape has no key)."""

    context: str | None = None
    properties: Mapping[str, Any] | None = None
    user_metadata: Mapping[str, Any] | None = None


def _read_schema_context(metadata: Mapping[bytes, bytes]) -> SchemaKeys:
    context = metadata.get(b"mosaico:context")
    properties = _json_meta(metadata, "mosaico:properties")
    user_metadata = _json_meta(metadata, "mosaico:user_metadata")
    return SchemaKeys(
        context=None if context is None else context.decode(),
        properties=properties if isinstance(properties, dict) else None,
        user_metadata=user_metadata if isinstance(user_metadata, dict) else None,
    )


def _read_no_keys(metadata: Mapping[bytes, bytes]) -> SchemaKeys:
    return SchemaKeys()


SCHEMA_METADATA_DECODERS: Mapping[str, Callable[[Mapping[bytes, bytes]], SchemaKeys]] = {
    "context_properties": _read_schema_context,
    "context_properties_counts": _read_schema_context,
    "none": _read_no_keys,
}
"""A client's reading of each schema_metadata shape of a FlightInfo's schema (the shapes
differ only in a DoGet schema's counts, which a read hands over as they come)."""


ENDPOINT_LOCATIONS: Mapping[str, Callable[[TopicInfo], list[str]]] = {
    "mosaico_uri": lambda topic: [f"mosaico:/{topic.locator}"],
    "none": lambda topic: [],
}


def _located_topic(uris: list[str]) -> str | None:
    for uri in uris:
        if uri.startswith("mosaico:/"):
            return uri.removeprefix("mosaico:/")
    return None


ENDPOINT_LOCATION_DECODERS: Mapping[str, Callable[[list[str]], str | None]] = {
    "mosaico_uri": _located_topic,
    "none": lambda uris: None,
}
"""A client's reading of each ENDPOINT_LOCATIONS shape: the topic an endpoint's location
URIs name, where the shape has one."""


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


def _read_one_result(action_type: str, bodies: list[bytes], streaming: bool) -> Any:
    return decode_envelope(action_type, b"".join(bodies))


def _read_result_per_item(action_type: str, bodies: list[bytes], streaming: bool) -> Any:
    if not streaming:
        return _read_one_result(action_type, bodies, streaming)
    items = []
    for body in bodies:
        if not body.strip():
            raise EnvelopeError(f"an item of the {action_type} stream is empty")
        items.append(decode_envelope(action_type, body))
    return items


FILTER_ANSWER_DECODERS: Mapping[str, Callable[[str, list[bytes], bool], Any]] = {
    "none": _read_one_result,
    "result_per_cluster": _read_result_per_item,
}
"""A client's reading of each FILTER_ANSWER shape: the Result bodies of an action (`streaming`:
one the catalogue answers with a stream) give its response, a list of items for a stream."""


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


@attrs.frozen
class FlightReader:
    """A client's reading of one protocol line's Flight framing, chosen by its wire shape
    names: the decoders of the entries `FlightShapes` encodes with (the default: 0.3's)."""

    topic_endpoint: Callable[[Mapping[str, Any], bytes, str | None], TopicInfo] = _decode_topic_info
    sequence_app_metadata: Callable[[Mapping[str, Any]], SequenceHead] = (
        SEQUENCE_APP_METADATA_DECODERS["sessions_uuid"]
    )
    schema_keys: Callable[[Mapping[bytes, bytes]], SchemaKeys] = _read_schema_context
    located: Callable[[list[str]], str | None] = _located_topic
    results: Callable[[str, list[bytes], bool], Any] = _read_one_result
    streaming: frozenset[str] = frozenset()
    """The actions the line's catalogue answers with a stream of Results."""

    @classmethod
    def of(cls, line: Line) -> FlightReader:
        return cls(
            topic_endpoint=pick(TOPIC_ENDPOINT_DECODERS, line, "topic_endpoint_app_metadata"),
            sequence_app_metadata=pick(
                SEQUENCE_APP_METADATA_DECODERS, line, "sequence_app_metadata"
            ),
            schema_keys=pick(SCHEMA_METADATA_DECODERS, line, "schema_metadata"),
            located=pick(ENDPOINT_LOCATION_DECODERS, line, "endpoint_location"),
            results=pick(FILTER_ANSWER_DECODERS, line, "filter_answer"),
            streaming=frozenset(
                op.wire
                for op in line.spec.operations.values()
                if op.kind == "action"
                and isinstance(op.response, str)
                and op.response.startswith("stream[")
            ),
        )

    def answer(self, action_type: str, bodies: list[bytes]) -> Any:
        """The response of a DoAction from its Result bodies (EnvelopeError, a ValueError,
        when they are not the line's framing of an answer to `action_type`)."""
        return self.results(action_type, bodies, action_type in self.streaming)

    def endpoint(self, endpoint: flight.FlightEndpoint) -> TopicInfo:
        """The topic a FlightInfo endpoint describes."""
        meta = _object(json.loads(endpoint.app_metadata or b"{}"), "an endpoint's app_metadata")
        uris = [_uri_text(location.uri) for location in endpoint.locations]
        return self.topic_endpoint(meta, endpoint.ticket.ticket, self.located(uris))

    def flight_info(self, fi: flight.FlightInfo) -> SequenceInfo | TopicInfo:
        """The transport-neutral view of a Mosaico FlightInfo (FlightInfoError, KeyError or
        TypeError when it is not one in this line's shapes)."""
        metadata = fi.schema.metadata or {}
        keys = self.schema_keys(metadata)
        app = _object(json.loads(fi.app_metadata or b"{}"), "the FlightInfo's app_metadata")
        # A schema that names its context tells; without one, only a sequence's app_metadata
        # lists sessions (in every shape).
        topic = keys.context == "topic" if keys.context is not None else "sessions" not in app
        if topic:
            return self._topic(fi, keys)
        head = self.sequence_app_metadata(app)
        user_metadata = head.user_metadata
        if user_metadata is None:
            user_metadata = keys.user_metadata or {}
        return SequenceInfo(
            locator=head.locator,
            created_at_ns=head.created_at_ns,
            user_metadata=user_metadata,
            sessions=head.sessions,
            topics=tuple(self.endpoint(e) for e in fi.endpoints),
        )

    def _topic(self, fi: flight.FlightInfo, keys: SchemaKeys) -> TopicInfo:
        if len(fi.endpoints) != 1:
            raise FlightInfoError(f"a topic's FlightInfo has {len(fi.endpoints)} endpoints, not 1")
        topic = self.endpoint(fi.endpoints[0])
        if keys.properties is not None:
            topic = attrs.evolve(
                topic,
                serialization_format=keys.properties.get("serialization_format"),
                ontology_tag=keys.properties.get("ontology_tag"),
            )
        user_metadata = keys.user_metadata
        if user_metadata is None:
            user_metadata = topic.user_metadata if topic.user_metadata is not None else {}
        return attrs.evolve(topic, user_metadata=user_metadata, schema=fi.schema)


def _uri_text(uri: bytes | str) -> str:
    return uri.decode() if isinstance(uri, bytes) else uri


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


def _json_meta(metadata: Mapping[bytes, bytes], key: str) -> Any:
    raw = metadata.get(key.encode())
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw.decode()


def parse_flight_info(
    fi: flight.FlightInfo, reader: FlightReader | None = None
) -> SequenceInfo | TopicInfo:
    """The transport-neutral view of a Mosaico FlightInfo, in a line's framing (`reader`,
    default 0.3's)."""
    return (reader or FlightReader()).flight_info(fi)


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
