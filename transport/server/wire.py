"""The server's side of each wire shape of `specs/lines/wire.toml`: one entry per (aspect,
shape), chosen by the shape NAME a protocol line gives (`Line.wire`), never by a line's number.

`WireShapes.of(line)` picks every entry a server of that line needs; an aspect whose shape has
no entry here is refused with a `SpecError` when the model is built, never guessed at run time.
The Flight framing of the same aspects (FlightInfo app_metadata, endpoint locations, the
answer of a streaming action) is in `transport/flight/codec.py`, built the same way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs
import pyarrow as pa

from fsm.outcome import ErrorKind
from fsm.spec.lines import Line
from transport.server.errors import ServerError
from transport.server.records import SessionRecord, TopicRecord
from transport.server.state import ServerState
from transport.server.validate import normalize_sequence_locator

__all__ = ["WireShapes", "pick", "session_locator", "strict_sequence_locator"]

T = TypeVar("T")

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_STRICT_FORBIDDEN = set("/: !\"'*£$%&.")
_SEQUENCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def pick(table: Mapping[str, T], line: Line, aspect: str) -> T:
    """The entry of `table` for the shape `line` speaks for `aspect`."""
    return line.pick(table, aspect, "the server")


# ---------------------------------------------------------------------------------------------
# Sessions


def _ulid(state: ServerState) -> str:
    """A ULID: 48 bits of milliseconds then 80 random bits, in Crockford's base 32."""
    value = ((state.now() // 1_000_000) & ((1 << 48) - 1)) << 80 | state.rng.getrandbits(80)
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def session_locator(state: ServerState, sequence: str) -> str:
    """A fresh session locator '<sequence>:<ULID>'."""
    return f"{sequence}:{_ulid(state)}"


def _answer_uuid(session: SessionRecord) -> dict[str, Any]:
    return {"uuid": session.uuid}


def _answer_uuid_locator(session: SessionRecord) -> dict[str, Any]:
    return {"uuid": session.uuid, "locator": session.locator}


SESSION_CREATE_ANSWER: Mapping[str, Callable[[SessionRecord], dict[str, Any]]] = {
    "uuid": _answer_uuid,
    "uuid_locator": _answer_uuid_locator,
}


def _delete_by_uuid(state: ServerState, req: Mapping[str, Any]) -> str:
    return str(req["session_uuid"])


def _delete_by_locator(state: ServerState, req: Mapping[str, Any]) -> str:
    locator = str(req["locator"])
    for key, session in state.sessions.items():
        if session.locator == locator:
            return key
    return locator  # no session has it: the table's row for an absent session answers


SESSION_DELETE_BODY: Mapping[str, Callable[[ServerState, Mapping[str, Any]], str]] = {
    "session_uuid": _delete_by_uuid,
    "locator": _delete_by_locator,
}
"""The key of the session a session_delete body names."""


def strict_sequence_locator(value: str) -> str:
    """A sequence name checked strictly: no '/', ':', space or any of ! " ' * £ $ % & ."""
    bad = sorted(set(value) & _STRICT_FORBIDDEN)
    if bad or not _SEQUENCE.fullmatch(value):
        raise ServerError(
            ErrorKind.INVALID_ARGUMENT,
            f"bad sequence locator {value[:300]!r}: expected an ASCII letter or digit, then "
            "[A-Za-z0-9_-]" + (f" (it holds {''.join(bad)!r})" if bad else ""),
        )
    return value


SEQUENCE_LOCATOR_RULE: Mapping[str, Callable[[str], str]] = {
    "lenient": normalize_sequence_locator,
    "strict": strict_sequence_locator,
}


def _session_locator_check(value: str) -> str:
    sequence, sep, session = value.partition(":")
    if not sep or ":" in session or "/" in value or not session.isalnum():
        raise ServerError(
            ErrorKind.INVALID_ARGUMENT,
            f"bad session locator {value[:300]!r}: expected '<sequence>:<session>'",
        )
    strict_sequence_locator(sequence)
    return value


# ---------------------------------------------------------------------------------------------
# Queries


QUERY_NAME_KEY: Mapping[str, str] = {
    "locator": "locator",
    "locator_exists": "locator",
    "name": "name",
}
"""The key a query's sequence and topic filters name resources by."""


def _answer_ranges(items: list[dict[str, Any]], tags: Mapping[str, str]) -> list[dict[str, Any]]:
    return items


def _answer_tags(items: list[dict[str, Any]], tags: Mapping[str, str]) -> list[dict[str, Any]]:
    return [
        {
            "sequence": item["sequence"],
            "topics": [
                {"locator": t["locator"], "ontology_tag": tags.get(t["locator"], "")}
                for t in item["topics"]
            ],
        }
        for item in items
    ]


QUERY_ANSWER: Mapping[
    str, Callable[[list[dict[str, Any]], Mapping[str, str]], list[dict[str, Any]]]
] = {
    "timestamp_range": _answer_ranges,
    "ontology_tag": _answer_tags,
}
"""The items of a query answer, from the grammar's items and each topic's ontology tag."""


# ---------------------------------------------------------------------------------------------
# Schemas


def _properties(topic: TopicRecord) -> dict[str, Any]:
    return {"serialization_format": topic.serialization_format, "ontology_tag": topic.ontology_tag}


def _context_properties(topic: TopicRecord, read: list[pa.RecordBatch] | None) -> dict[str, str]:
    return {
        "mosaico:context": "topic",
        "mosaico:properties": json.dumps(_properties(topic)),
        "mosaico:user_metadata": json.dumps(topic.user_metadata),
    }


def _context_properties_counts(
    topic: TopicRecord, read: list[pa.RecordBatch] | None
) -> dict[str, str]:
    meta = _context_properties(topic, read)
    if read is not None:
        stamps = [v for c in read for v in c.column("timestamp_ns").to_pylist() if v is not None]
        properties = {
            **_properties(topic),
            "message_count": sum(c.num_rows for c in read),
            "timestamp_ns_min": min(stamps) if stamps else None,
            "timestamp_ns_max": max(stamps) if stamps else None,
        }
        meta["mosaico:properties"] = json.dumps(properties)
    return meta


def _no_metadata(topic: TopicRecord, read: list[pa.RecordBatch] | None) -> dict[str, str]:
    return {}


SCHEMA_METADATA: Mapping[
    str, Callable[[TopicRecord, list[pa.RecordBatch] | None], dict[str, str]]
] = {
    "context_properties": _context_properties,
    "context_properties_counts": _context_properties_counts,
    "none": _no_metadata,
}
"""The mosaico:* keys of a topic's schema; `read` is the chunks a DoGet answers (None for a
FlightInfo)."""


@attrs.frozen
class WireShapes:
    """The entries a server of one line uses."""

    session_create_answer: Callable[[SessionRecord], dict[str, Any]]
    session_delete_key: Callable[[ServerState, Mapping[str, Any]], str]
    sequence_locator: Callable[[str], str]
    query_name_key: str
    query_answer: Callable[[list[dict[str, Any]], Mapping[str, str]], list[dict[str, Any]]]
    schema_metadata: Callable[[TopicRecord, list[pa.RecordBatch] | None], dict[str, str]]
    session_locators: bool

    @classmethod
    def of(cls, line: Line) -> WireShapes:
        answer = pick(SESSION_CREATE_ANSWER, line, "session_create_answer")
        return cls(
            session_create_answer=answer,
            session_delete_key=pick(SESSION_DELETE_BODY, line, "session_delete_body"),
            sequence_locator=pick(SEQUENCE_LOCATOR_RULE, line, "sequence_locator_rule"),
            query_name_key=pick(QUERY_NAME_KEY, line, "query_filter"),
            query_answer=pick(QUERY_ANSWER, line, "query_answer"),
            schema_metadata=pick(SCHEMA_METADATA, line, "schema_metadata"),
            session_locators=answer is _answer_uuid_locator,
        )

    def string_checks(self) -> dict[str, Callable[[str], str]]:
        """Field-type checks of `validate_request` this line's shapes replace or add."""
        return {
            "sequence_locator": self.sequence_locator,
            "session_locator": _session_locator_check,
        }
