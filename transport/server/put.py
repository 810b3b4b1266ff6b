"""DoPut: a stream of record batches into one topic, in four phases.

Each phase is an event of the topic table (`DO_PUT_OPEN`, `DO_PUT_WRITE`, `DO_PUT_END`,
`DO_PUT_CANCEL`) taken through the apply path; the functions here only add what a stream
carries (its identity, schema, chunks and time range). The caller holds the model's lock.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs
import pyarrow as pa

from fsm.outcome import ErrorKind
from transport.server.chunks import ChunkStats
from transport.server.errors import ServerError
from transport.server.records import TopicRecord
from transport.server.state import ServerState, Step

__all__ = ["PutHandle", "cancel", "check_batch", "check_schema", "end", "open_stream", "write"]


@attrs.frozen
class PutHandle:
    """An accepted DoPut stream: its topic and its identity."""

    locator: str
    stream: int
    schema: pa.Schema


def _dictionary_paths(field: pa.Field, path: str) -> Iterator[str]:
    """The dotted names of the dictionary-encoded fields at or under `field`."""
    kind = field.type
    if pa.types.is_dictionary(kind):
        yield path
        return
    children: list[pa.Field] = []
    if pa.types.is_struct(kind) or pa.types.is_union(kind):
        children = [kind.field(i) for i in range(kind.num_fields)]
    elif (
        pa.types.is_list(kind)
        or pa.types.is_large_list(kind)
        or pa.types.is_fixed_size_list(kind)
        or pa.types.is_list_view(kind)
        or pa.types.is_large_list_view(kind)
    ):
        children = [kind.value_field]
    elif pa.types.is_map(kind):
        children = [kind.key_field, kind.item_field]
    elif pa.types.is_run_end_encoded(kind):
        children = [pa.field("values", kind.value_type)]
    for child in children:
        yield from _dictionary_paths(child, f"{path}.{child.name}")


def check_schema(schema: pa.Schema) -> None:
    """Refuse (INVALID_ARGUMENT) a DoPut schema the server cannot store and serve back: no
    int64 `timestamp_ns` field (PROTOCOL.md §6.2), or a dictionary-encoded field at any depth
    (the server stores no dictionaries and could not serve them back), named."""
    index = schema.get_field_index("timestamp_ns")
    if index < 0 or schema.field(index).type != pa.int64():
        raise ServerError(
            ErrorKind.INVALID_ARGUMENT, "DoPut: the schema needs an int64 field 'timestamp_ns'"
        )
    for field in schema:
        for path in _dictionary_paths(field, field.name):
            raise ServerError(
                ErrorKind.INVALID_ARGUMENT,
                f"DoPut: column {path!r} is dictionary-encoded; this server stores plain "
                "columns only (decode it before sending)",
            )


def check_batch(batch: pa.RecordBatch, schema: pa.Schema) -> None:
    """Refuse a batch that is not exactly of the stream's schema (ABORTED) or whose buffers do
    not hold what the schema says (INVALID_ARGUMENT): Arrow's full validation checks every
    buffer's size and every offset against the schema, so a forged message can neither crash
    the server nor store data that cannot be read back."""
    if not batch.schema.equals(schema, check_metadata=False):
        raise ServerError(ErrorKind.ABORTED, "DoPut: a batch does not match the stream's schema")
    try:
        batch.validate(full=True)
    except (pa.ArrowException, ValueError) as exc:
        raise ServerError(
            ErrorKind.INVALID_ARGUMENT,
            f"DoPut: a batch of {batch.num_rows} rows is not valid for the stream's schema: "
            f"{str(exc)[:300]}",
        ) from None


def open_stream(
    state: ServerState,
    locator: str,
    topic_uuid: str,
    schema: pa.Schema,
    stream_ids: Iterator[int],
) -> PutHandle:
    """Accept (or refuse) the start of a stream. Nothing is stored on a refusal."""
    known = state.topics.get(locator)
    if known is not None and known.uuid != topic_uuid:
        raise ServerError(
            ErrorKind.PERMISSION_DENIED, f"unauthorized: wrong topic_uuid for {locator!r}"
        )
    step = state.step("topic", locator, "DO_PUT_OPEN", "DoPut")
    topic = step.record
    assert isinstance(topic, TopicRecord)  # an absent topic is refused by its row
    if topic.schema is not None and not topic.schema.equals(schema, check_metadata=False):
        raise ServerError(
            ErrorKind.INVALID_ARGUMENT,
            f"DoPut: the schema differs from the one {locator!r} already stores",
        )
    stream = next(stream_ids)
    state.commit(step)
    topic.stream = stream
    if topic.schema is None:
        topic.schema = schema
    return PutHandle(locator, stream, schema)


def _streaming_step(state: ServerState, handle: PutHandle, event: str) -> tuple[TopicRecord, Step]:
    topic = state.topics.get(handle.locator)
    if topic is None:
        raise ServerError(ErrorKind.NOT_FOUND, f"DoPut: topic {handle.locator!r} no longer exists")
    step = state.step("topic", handle.locator, event, "DoPut")
    if topic.stream not in (handle.stream, None) and topic.state == "receiving":
        raise ServerError(ErrorKind.FAILED_PRECONDITION, "DoPut: another stream owns the topic")
    return topic, step


def write(state: ServerState, handle: PutHandle, batch: pa.RecordBatch) -> None:
    """Store one received batch as one chunk."""
    topic, step = _streaming_step(state, handle, "DO_PUT_WRITE")
    state.commit(step)
    topic.chunks.append(batch)
    if topic.stats is None:  # the statistics a query on data reads, kept chunk by chunk
        topic.stats = ChunkStats(handle.schema)
    topic.stats.add(batch)
    topic.total_bytes += batch.nbytes
    low, high = _min_max(batch.column("timestamp_ns"))
    if low is not None and high is not None:
        topic.start_ns = low if topic.start_ns is None else min(topic.start_ns, low)
        topic.end_ns = high if topic.end_ns is None else max(topic.end_ns, high)


def end(state: ServerState, handle: PutHandle) -> None:
    """A clean end of stream: the topic is locked (or the end is refused)."""
    try:
        topic, step = _streaming_step(state, handle, "DO_PUT_END")
    except ServerError:
        stale = state.topics.get(handle.locator)
        if stale is not None and stale.stream == handle.stream:
            stale.stream = None
        raise
    state.commit(step)
    topic.stream = None
    topic.completed_ns = state.now()


def cancel(state: ServerState, handle: PutHandle) -> bool:
    """The stream broke: nothing is locked; stored chunks stay. False (and nothing changed)
    when the stream had already ended."""
    topic = state.topics.get(handle.locator)
    if topic is None or topic.stream != handle.stream:
        return False
    state.commit(state.step("topic", handle.locator, "DO_PUT_CANCEL", "DoPut"))
    topic.stream = None
    return True


def _min_max(column: pa.Array) -> tuple[int | None, int | None]:
    import pyarrow.compute as pc

    result = pc.min_max(column)
    return result["min"].as_py(), result["max"].as_py()
