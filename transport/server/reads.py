"""What a server answers about what it holds: FlightInfo, DoGet, ListFlights, the QUERY
action's candidates, and a comparable snapshot for tests and tools.

Reads of a resource also go through the apply path (their rows keep the state: `dest = "="`),
so the table decides which reads are refused. The caller holds the model's lock.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import pyarrow as pa

from fsm.spec import load_spec
from fsm.spec.model import Operation
from fsm.spec.query import QueryGrammar
from fsm.transport import DataInfo, SequenceInfo, SessionInfo, TopicInfo
from transport.server import query as query_mod
from transport.server.records import SequenceRecord, SessionRecord, TopicRecord
from transport.server.state import ServerState

__all__ = [
    "TICKET_PREFIX",
    "flight_info",
    "query",
    "read_chunks",
    "read_schema",
    "snapshot",
    "topic_info",
    "with_keys",
]

TICKET_PREFIX = b"mosaico-fsm/ticket/v1:"


def flight_info(
    state: ServerState,
    op: Operation,
    locator: str,
    start: int | None,
    end: int | None,
    *,
    topics_listed: str = "always",
    metadata: SchemaMetadata | None = None,
    detailed_topics: bool = False,
) -> SequenceInfo | TopicInfo:
    """GetFlightInfo of a sequence or a topic. `topics_listed` is `when_finalized` on a server
    whose sessions list their topics only once finalized; `metadata` makes a topic schema's
    mosaico:* keys (default: context, properties and user metadata); `detailed_topics`
    describes a sequence's topics as fully as their own FlightInfo does, with row counts."""
    if "/" in locator:
        step = state.step("topic", locator, op.name, "GetFlightInfo")
        state.commit(step)
        assert isinstance(step.record, TopicRecord)
        return topic_info(
            state, step.record, start, end, detailed=True, metadata=metadata, counts=detailed_topics
        )
    step = state.step("sequence", locator, op.name, "GetFlightInfo")
    state.commit(step)
    sequence = step.record
    assert isinstance(sequence, SequenceRecord)
    sessions = tuple(
        session_info(state, state.sessions[s], topics_listed) for s in sequence.sessions
    )
    # A sequence's FlightInfo describes each topic by its endpoint only: no properties,
    # user metadata or schema, whatever the transport.
    topics = tuple(
        topic_info(
            state,
            state.topics[t],
            start,
            end,
            detailed=detailed_topics,
            metadata=metadata,
            counts=detailed_topics,
        )
        for s in sequence.sessions
        for t in state.sessions[s].topics
    )
    return SequenceInfo(
        sequence.name, sequence.created_ns, dict(sequence.user_metadata), sessions, topics
    )


def session_info(
    state: ServerState, session: SessionRecord, topics_listed: str = "always"
) -> SessionInfo:
    listed = topics_listed == "always" or session.completed_ns is not None
    return SessionInfo(
        uuid=session.uuid,
        created_at_ns=session.created_ns,
        completed_at_ns=session.completed_ns,
        locked=session.state in state.resources["session"].locked,
        topics=tuple(session.topics) if listed else (),
        locator=session.locator,
    )


def topic_info(
    state: ServerState,
    topic: TopicRecord,
    start: int | None,
    end: int | None,
    *,
    detailed: bool,
    metadata: SchemaMetadata | None = None,
    counts: bool = False,
) -> TopicInfo:
    """A topic's view; `detailed` (a topic's own FlightInfo) adds its properties, user
    metadata and schema; `counts` (a wire shape that tells them) adds its row count and, when
    a bound is given, what [start, end) holds (`window`)."""
    info = None
    if topic.completed_ns is not None:  # finalized once: its data info is known
        rows = sum(c.num_rows for c in topic.chunks) if counts else None
        info = DataInfo(
            len(topic.chunks), topic.total_bytes, topic.start_ns, topic.end_ns, rows=rows
        )
    window = None
    if counts and (start is not None or end is not None):
        window = _window(topic, start, end)
    ticket = (
        TICKET_PREFIX + json.dumps({"locator": topic.locator, "start": start, "end": end}).encode()
    )
    view = TopicInfo(
        locator=topic.locator,
        created_at_ns=topic.created_ns,
        completed_at_ns=topic.completed_ns,
        locked=topic.state in state.resources["topic"].locked,
        info=info,
        ticket=ticket,
        window=window,
    )
    if not detailed:
        return view
    return attrs.evolve(
        view,
        serialization_format=topic.serialization_format,
        ontology_tag=topic.ontology_tag,
        user_metadata=dict(topic.user_metadata),
        schema=read_schema(topic, metadata),
    )


def _window(topic: TopicRecord, start: int | None, end: int | None) -> DataInfo:
    """The rows of `topic` in [start, end): their count, chunks, bytes and time range."""
    rows, chunks, size, low, high = 0, 0, 0, None, None
    for chunk in topic.chunks:
        stamps = [
            t
            for t in chunk.column("timestamp_ns").to_pylist()
            if t is not None and (start is None or t >= start) and (end is None or t < end)
        ]
        if not stamps:
            continue
        rows, chunks, size = rows + len(stamps), chunks + 1, size + chunk.nbytes
        low = min(stamps) if low is None else min(low, *stamps)
        high = max(stamps) if high is None else max(high, *stamps)
    return DataInfo(chunks, size, low, high, rows=rows)


SchemaMetadata = Callable[[TopicRecord, "list[pa.RecordBatch] | None"], dict[str, str]]
"""The mosaico:* keys of a topic's schema, for a FlightInfo (None) or a DoGet's chunks."""


def _default_metadata(topic: TopicRecord, read: list[pa.RecordBatch] | None) -> dict[str, str]:
    return {
        "mosaico:context": "topic",
        "mosaico:properties": json.dumps(
            {
                "serialization_format": topic.serialization_format,
                "ontology_tag": topic.ontology_tag,
            }
        ),
        "mosaico:user_metadata": json.dumps(topic.user_metadata),
    }


def read_schema(
    topic: TopicRecord,
    metadata: SchemaMetadata | None = None,
    read: list[pa.RecordBatch] | None = None,
) -> pa.Schema:
    base = topic.schema if topic.schema is not None else pa.schema([])
    return with_keys(base, (metadata or _default_metadata)(topic, read))


def with_keys(schema: pa.Schema, keys: Mapping[str, str]) -> pa.Schema:
    """`schema` with exactly `keys` as its metadata (none when empty)."""
    return schema.with_metadata(dict(keys)) if keys else schema.remove_metadata()


def read_chunks(
    state: ServerState, locator: str, metadata: SchemaMetadata | None = None
) -> tuple[list[pa.RecordBatch], pa.Schema, TopicRecord]:
    """DoGet's table step: the topic's chunks in write order, its read schema and record."""
    step = state.step("topic", locator, "DO_GET", "DoGet")
    state.commit(step)
    assert isinstance(step.record, TopicRecord)
    chunks = list(step.record.chunks)
    return chunks, read_schema(step.record, metadata, chunks), step.record


def query(
    state: ServerState,
    op: Operation,
    req: dict[str, Any],
    *,
    grammar: QueryGrammar | None = None,
    settings: query_mod.QuerySettings | None = None,
    name_key: str = "locator",
    answer: QueryAnswer | None = None,
) -> dict[str, Any]:
    """The QUERY action over every sequence and its topics (catalogue fields, stored chunks
    and their statistics), with the server's `grammar` and query `settings`. Filters name
    sequences and topics by `name_key`; `answer` shapes the items (a line's wire shape)."""
    candidates = [
        query_mod.SequenceCandidate(
            {
                name_key: sequence.name,
                "locator": sequence.name,
                "created_at_ns": sequence.created_ns,
                "user_metadata": sequence.user_metadata,
            },
            [
                query_mod.TopicCandidate(
                    {
                        name_key: t.locator,
                        "locator": t.locator,
                        "ontology_tag": t.ontology_tag,
                        "serialization_format": t.serialization_format,
                        "created_at_ns": t.created_ns,
                        "user_metadata": t.user_metadata,
                    },
                    t.chunks,
                    t.stats,
                )
                for s in sequence.sessions
                for t in (state.topics[loc] for loc in state.sessions[s].topics)
            ],
        )
        for sequence in state.sequences.values()
    ]
    items = query_mod.run_query(
        req, grammar or load_spec().query, candidates, settings or query_mod.QuerySettings()
    )
    if answer is not None:
        tags = {t: record.ontology_tag for t, record in state.topics.items()}
        items = answer(items, tags)
    return {"items": items}


QueryAnswer = Callable[[list[dict[str, Any]], Mapping[str, str]], list[dict[str, Any]]]


def snapshot(state: ServerState) -> dict[str, Any]:
    """A plain, comparable picture of the whole state (data as row counts and digests)."""
    return {
        "sequences": {
            name: {
                "user_metadata": s.user_metadata,
                "sessions": list(s.sessions),
                "notifications": [(n.notification_type, n.msg) for n in s.notifications],
            }
            for name, s in state.sequences.items()
        },
        "sessions": {
            u: {"sequence": s.sequence, "state": s.state, "topics": list(s.topics)}
            for u, s in state.sessions.items()
        },
        "topics": {
            loc: {
                "state": t.state,
                "rows": sum(c.num_rows for c in t.chunks),
                "chunks": len(t.chunks),
                "notifications": [(n.notification_type, n.msg) for n in t.notifications],
            }
            for loc, t in state.topics.items()
        },
        "keys": sorted(state.keys),
    }
