"""Requests shared by the cases and the exploration: the body of a topic_create, one whole
DoPut, and how an outcome reads in a report."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

from fsm.outcome import Outcome, OutcomeStatus
from fsm.transport import Descriptor, TopicStream, Transport

__all__ = ["outcome_text", "put_batches", "short", "topic_body"]


def outcome_text(outcome: Outcome, *, detail: bool = False) -> str:
    """`ok`, the error kind of a failure, or `unknown` (with the transport's words when
    `detail`): what two servers' answers are compared by."""
    if outcome.status is OutcomeStatus.OK:
        return "ok"
    if outcome.status is OutcomeStatus.UNKNOWN:
        return f"unknown ({outcome.detail[:80]})" if detail else "unknown"
    return outcome.kind.value if outcome.kind else "failed"


def short(value: Any, limit: int = 240) -> str:
    """A value as compact JSON, cut at `limit` characters."""
    text = json.dumps(value, default=str, separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def topic_body(
    session_uuid: str,
    locator: str,
    fmt: str = "default",
    *,
    ontology_tag: str = "conformance",
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The body of a topic_create."""
    return {
        "session_uuid": session_uuid,
        "locator": locator,
        "serialization_format": fmt,
        "ontology_tag": ontology_tag,
        "user_metadata": dict(metadata or {}),
    }


def put_batches(
    transport: Transport,
    descriptor: Descriptor,
    schema: pa.Schema,
    batches: Iterable[pa.RecordBatch],
    end: str = "close",
) -> Outcome:
    """One DoPut: open, write every batch, then end it cleanly (`close`) or `abort`. The
    outcome is the first failure (the stream is then aborted), or the answer to its end."""
    opened = transport.open_stream(descriptor, schema)
    if not opened.is_ok:
        return opened
    stream: TopicStream = opened.value
    for batch in batches:
        written = stream.write(batch)
        if not written.is_ok:
            stream.abort()
            return written
    return stream.abort() if end == "abort" else stream.close()
