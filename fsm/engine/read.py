"""Streaming reads: a topic batch by batch as DoGet delivers it, and a sequence as one stream
of its topics merged by `timestamp_ns`.

Memory. A `TopicReader` keeps no batch: each one is handed over as it arrives, and the
transport holds at most the message being received (plus what gRPC buffers for the call). A
`SequenceReader` keeps, per topic, the unmerged rest of one received batch; each batch it
yields refers to slices of those batches (no copy) plus 13 bytes per row for its timestamp,
topic and offset columns. So a sequence read of k topics whose largest stored chunk is C bytes
holds about (k + 1) x C, beside what gRPC buffers for each of its k calls, whatever the size
of the topics.

Order of a merged sequence. Rows come out as if, again and again, the next row of each topic
were compared and the one with the smallest `timestamp_ns` taken, the topic listed first on
equal timestamps; each topic's rows keep their order. For topics whose timestamps never go
back this is a stable sort by timestamp. In general it is a stable sort by each row's running
maximum timestamp within its topic (a null timestamp counts as the row before it), which is
what the merge computes, a batch at a time, with Arrow sorts and takes.

Readers are iterators and context managers. Leaving the `with` block, `close()`, or dropping
the reader cancels the streams still open; a stream that breaks raises `ActionFailed` (or
`OutcomeUnknown`) naming the topic, never a silently short result.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any

import attrs
import pyarrow as pa
import pyarrow.compute as pc

from fsm.engine.base import outcome_error
from fsm.engine.validation import check_sequence_name, check_topic_name, topic_locator
from fsm.errors import ActionFailed, ArgumentError
from fsm.outcome import ErrorKind, Outcome
from fsm.transport import BatchStream, Descriptor, SequenceInfo, TopicInfo, Transport

__all__ = ["MAX_TOPICS", "SequenceReader", "TopicReader", "open_sequence", "open_topic"]

TIMESTAMP = "timestamp_ns"
MAX_TOPICS = 128
"""The most topics one `SequenceReader` merges (the record column's union has int8 codes)."""

_INT64 = (-(2**63), 2**63 - 1)


def _check_window(start_ns: object, end_ns: object) -> None:
    for name, bound in (("start_ns", start_ns), ("end_ns", end_ns)):
        if bound is not None and (
            isinstance(bound, bool)
            or not isinstance(bound, int)
            or not _INT64[0] <= bound <= _INT64[1]
        ):
            raise ArgumentError(f"{name} must be None or an int64, got {bound!r}")
    if start_ns is not None and end_ns is not None and start_ns > end_ns:  # type: ignore[operator]
        raise ArgumentError(f"start_ns {start_ns} is after end_ns {end_ns}")


def _raise(operation: str, outcome: Outcome, locator: str) -> ActionFailed:
    return outcome_error(operation, attrs.evolve(outcome, detail=f"{locator}: {outcome.detail}"))


class TopicReader(Iterator[pa.RecordBatch]):
    """A topic's record batches, as the server sends them (`schema` carries its metadata)."""

    def __init__(self, locator: str, schema: pa.Schema, stream: BatchStream | None) -> None:
        self.locator = locator
        self.schema = schema
        self._stream = stream
        # dropping the reader cancels its stream
        self._closer = weakref.finalize(self, stream.close) if stream is not None else None

    def __next__(self) -> pa.RecordBatch:
        if self._stream is None:
            raise StopIteration
        outcome = self._stream.next()
        if outcome.is_ok and outcome.value is not None:
            return outcome.value
        self.close()
        if outcome.is_ok:
            raise StopIteration
        raise _raise("DO_GET", outcome, self.locator)

    def close(self) -> None:
        """Cancel the stream if it is still open (idempotent)."""
        self._stream = None
        if self._closer is not None:
            self._closer()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def open_topic(
    transport: Transport,
    sequence: str,
    topic: str,
    start_ns: int | None = None,
    end_ns: int | None = None,
) -> TopicReader:
    """Start reading a topic (records with start_ns <= timestamp_ns < end_ns when given). A
    topic that never received a stream, or was finalized without data, reads as empty."""
    locator = topic_locator(check_sequence_name(sequence), check_topic_name(topic))
    _check_window(start_ns, end_ns)
    found = transport.flight_info(Descriptor.for_resource(locator, start_ns, end_ns))
    if not found.is_ok:
        raise _raise("GET_FLIGHT_INFO", found, locator)
    info = found.value
    if not isinstance(info, TopicInfo):
        raise ActionFailed("GET_FLIGHT_INFO", ErrorKind.INTERNAL, f"{locator}: not a topic")
    schema = info.schema if info.schema is not None else pa.schema([])
    if not schema.names or (info.info is not None and info.info.chunks_number == 0):
        return TopicReader(locator, schema, None)
    opened = transport.read_stream(info.ticket)
    if not opened.is_ok:
        raise _raise("DO_GET", opened, locator)
    stream: BatchStream = opened.value
    return TopicReader(locator, stream.schema, stream)


# -----------------------------------------------------------------------------------------------
# Merging


class _Head:
    """One topic of a merge: the unmerged rest of its current batch and the running maximum
    timestamp (`keys`) of each of its rows."""

    def __init__(self, index: int, reader: TopicReader) -> None:
        self.index = index
        self.reader = reader
        self.struct = pa.struct(list(reader.schema))
        self.column = reader.schema.get_field_index(TIMESTAMP)
        if reader.schema.names and (
            self.column < 0 or reader.schema.field(self.column).type != pa.int64()
        ):
            raise ActionFailed(
                "DO_GET", ErrorKind.INTERNAL, f"{reader.locator}: no int64 {TIMESTAMP} to merge by"
            )
        self.batch: pa.RecordBatch | None = None
        self.keys: pa.Array | None = None
        self.last = _INT64[0]  # the running maximum so far: the key of the batch's last row

    def fill(self) -> None:
        """Read the next batch that has rows (None at the end of the topic)."""
        self.batch = self.keys = None
        for batch in self.reader:
            if batch.num_rows:
                stamps = batch.column(self.column)
                if stamps.null_count:
                    stamps = pc.fill_null(stamps, _INT64[0])
                keys = pc.max_element_wise(
                    pc.cumulative_max(stamps), pa.scalar(self.last, pa.int64())
                )
                self.batch, self.keys, self.last = batch, keys, keys[-1].as_py()
                return

    def taken(self, rows: int) -> None:
        """Drop the first `rows` rows, merged; read on when none are left."""
        assert self.batch is not None and self.keys is not None
        if rows == self.batch.num_rows:
            self.fill()
        elif rows:
            self.batch, self.keys = self.batch.slice(rows), self.keys.slice(rows)


class SequenceReader(Iterator[pa.RecordBatch]):
    """A sequence's topics merged by timestamp, in record batches of three columns:

    - `timestamp_ns` (int64), the row's timestamp;
    - `topic` (dictionary of the topic names), the topic the row belongs to;
    - `record` (a dense union with one struct member per topic, in `topics` order), the row.

    `batch["record"].field(i)` is the rows of topic `topics[i]` in that batch, in order.
    """

    def __init__(self, topics: tuple[str, ...], readers: list[TopicReader]) -> None:
        self.topics = topics
        self._readers = readers
        self._heads = [_Head(i, r) for i, r in enumerate(readers)]
        self._names = pa.array(topics, pa.string())
        self._codes = list(range(len(topics)))
        self._empty = [pa.array([], type=h.struct) for h in self._heads]
        record = pa.dense_union(
            [pa.field(t, h.struct) for t, h in zip(topics, self._heads, strict=True)], self._codes
        )
        self.schema = pa.schema(
            [
                pa.field(TIMESTAMP, pa.int64()),
                pa.field("topic", pa.dictionary(pa.int8(), pa.string())),
                pa.field("record", record),
            ]
        )
        self._started = False

    def __next__(self) -> pa.RecordBatch:
        try:
            if not self._started:
                self._started = True
                for head in self._heads:
                    head.fill()
            merged = self._round()
        except BaseException:
            self.close()
            raise
        if merged is None:
            self.close()
            raise StopIteration
        return merged

    def _round(self) -> pa.RecordBatch | None:
        """Merge every buffered row that no row still to come can precede: all of the topic
        whose last buffered row is smallest (`first`), and what sorts before it elsewhere."""
        live = [h for h in self._heads if h.batch is not None]
        if not live:
            return None
        first = min(live, key=lambda h: (h.last, h.index))
        counts: list[tuple[_Head, int]] = []
        for head in live:
            assert head.batch is not None
            if head is first:
                rows = head.batch.num_rows
            else:
                before = pc.less_equal if head.index < first.index else pc.less
                rows = int(pc.sum(before(head.keys, first.last)).as_py() or 0)
            counts.append((head, rows))
        merged = self._assemble([(h, n) for h, n in counts if n])
        for head, rows in counts:
            head.taken(rows)
        return merged

    def _assemble(self, parts: list[tuple[_Head, int]]) -> pa.RecordBatch:
        stamps, keys, types, children = [], [], [], list(self._empty)
        starts = [0] * len(self._heads)
        offset = 0
        for head, rows in parts:
            assert head.batch is not None and head.keys is not None
            piece = head.batch.slice(0, rows)
            stamps.append(piece.column(head.column))
            keys.append(head.keys.slice(0, rows))
            types.append(pa.repeat(pa.scalar(head.index, pa.int8()), rows))
            children[head.index] = piece.to_struct_array()
            starts[head.index] = offset
            offset += rows
        order = pc.sort_indices(pa.concat_arrays(keys))  # stable: ties keep topic order
        topic = pa.concat_arrays(types).take(order)
        offsets = pc.subtract(pc.cast(order, pa.int32()), pa.array(starts, pa.int32()).take(topic))
        record = pa.UnionArray.from_dense(topic, offsets, children, list(self.topics), self._codes)
        return pa.RecordBatch.from_arrays(
            [
                pa.concat_arrays(stamps).take(order),
                pa.DictionaryArray.from_arrays(topic, self._names, safe=False),
                record,
            ],
            schema=self.schema,
        )

    def close(self) -> None:
        """Cancel every topic stream still open (idempotent)."""
        for reader in self._readers:
            reader.close()
        for head in self._heads:
            head.batch = head.keys = None

    def __enter__(self) -> SequenceReader:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _check_topics(topics: Iterable[str] | Any) -> list[str]:
    if isinstance(topics, (str, bytes)) or not isinstance(topics, Iterable):
        raise ArgumentError(f"topics must be a list of topic names, got {topics!r}")
    chosen = [check_topic_name(t) for t in topics]
    duplicates = sorted({t for t in chosen if chosen.count(t) > 1})
    if duplicates:
        raise ArgumentError(f"topics names {', '.join(duplicates)} more than once")
    return chosen


def open_sequence(
    transport: Transport,
    sequence: str,
    topics: Iterable[str] | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
) -> SequenceReader:
    """Start reading a sequence's topics (all of them, in the server's order, when `topics` is
    None) merged by timestamp; the window applies to every topic."""
    name = check_sequence_name(sequence)
    chosen = None if topics is None else _check_topics(topics)
    _check_window(start_ns, end_ns)
    if chosen is not None and len(chosen) > MAX_TOPICS:
        raise ArgumentError(
            f"a sequence read merges at most {MAX_TOPICS} topics, got {len(chosen)}"
        )
    if chosen is None:
        found = transport.flight_info(Descriptor.for_resource(name))
        if not found.is_ok:
            raise _raise("GET_FLIGHT_INFO", found, name)
        if not isinstance(found.value, SequenceInfo):
            raise ActionFailed("GET_FLIGHT_INFO", ErrorKind.INTERNAL, f"{name}: not a sequence")
        chosen = [t.locator.partition("/")[2] for t in found.value.topics]
        if len(chosen) > MAX_TOPICS:
            raise ArgumentError(
                f"{name} has {len(chosen)} topics; a sequence read merges at most "
                f"{MAX_TOPICS}: choose them with topics="
            )
    readers: list[TopicReader] = []
    try:
        for topic in chosen:
            readers.append(open_topic(transport, name, topic, start_ns, end_ns))
        return SequenceReader(tuple(chosen), readers)
    except BaseException:
        for reader in readers:
            reader.close()
        raise
