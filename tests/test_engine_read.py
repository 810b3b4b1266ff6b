"""Streaming reads over both transports: `stream_topic` hands batches over as DoGet delivers
them, `stream_sequence` merges topics in the order of a reference merge, windows cut at chunk
borders, empty and unfinished topics read as what the server holds, an abandoned reader leaves
no stream open, and a refused or dropped stream raises instead of ending short."""

from __future__ import annotations

import gc
import itertools
import threading
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fsm import ActionFailed, ArgumentError, ErrorKind
from fsm.engine import Client, SequenceReader
from fsm.errors import OutcomeUnknown
from fsm.faults import Fault, FaultEffect, FaultPlan, FaultSchedule
from fsm.transport import Descriptor, Transport
from tests.harness import (
    KIND_PARAMS,
    Harness,
    create_sequence,
    create_topic,
    harness,
    ok,
    profile_examples,
    put_batches,
    wait_until,
)
from transport.server.faults import FaultGate

SCHEMA = pa.schema([pa.field("timestamp_ns", pa.int64()), pa.field("row", pa.int64())])
_names = itertools.count()


def _batch(stamps: list[int | None], first_row: int = 0) -> pa.RecordBatch:
    rows = list(range(first_row, first_row + len(stamps)))
    return pa.record_batch([pa.array(stamps, pa.int64()), pa.array(rows, pa.int64())], SCHEMA)


def _write(t: Transport, topics: dict[str, list[Any]]) -> str:
    """A new sequence holding `topics` (name -> batches: lists of timestamps, with column
    `row` numbering each topic's rows, or record batches as they are); answers its name."""
    name = f"seq{next(_names)}"
    session = create_sequence(t, name)
    for topic, batches in topics.items():
        locator = f"{name}/{topic}"
        uuid = create_topic(t, session, locator)
        numbered, first = [], 0
        for stamps in batches:
            numbered.append(stamps if isinstance(stamps, pa.RecordBatch) else _batch(stamps, first))
            first += len(stamps)
        ok(put_batches(t, Descriptor.for_topic(locator, uuid), SCHEMA, numbered))
    return name


def _gate(h: Harness, t: Transport) -> FaultGate:
    """The fault gate every DoGet of `t` goes through (where open reads are counted)."""
    if h.server is not None:
        return h.server.server.gate
    gate: FaultGate = t.gate  # type: ignore[attr-defined]
    return gate


def _faulted(h: Harness, *faults: Fault) -> Transport:
    h.schedule = FaultSchedule(FaultPlan(faults))
    if h.server is not None:
        h.server.server.faults = h.schedule
    return h.transport()


def reference_merge(
    topics: list[list[int | None]], start: int | None = None, end: int | None = None
) -> list[tuple[int, int, int | None]]:
    """(topic index, row, timestamp) in merge order, one row at a time: among the next rows of
    the topics, the smallest timestamp first (a null before anything), the topic listed first
    on equal timestamps. With a window, only rows with start <= timestamp < end take part."""
    rows = []
    for stamps in topics:
        kept = [
            (r, ts)
            for r, ts in enumerate(stamps)
            if (start is None and end is None)
            or (ts is not None and (start is None or ts >= start) and (end is None or ts < end))
        ]
        rows.append(kept)
    position = [0] * len(rows)
    merged = []
    while True:
        heads = [
            (float("-inf") if rows[i][position[i]][1] is None else rows[i][position[i]][1], i)
            for i in range(len(rows))
            if position[i] < len(rows[i])
        ]
        if not heads:
            return merged
        _, i = min(heads)
        row, ts = rows[i][position[i]]
        merged.append((i, row, ts))
        position[i] += 1


def _merged(reader: SequenceReader) -> list[tuple[int, int, int | None]]:
    """(topic index, row, timestamp) of every merged row, checking each batch's layout."""
    merged = []
    with reader:
        for batch in reader:
            assert batch.schema.equals(reader.schema)
            topics = batch.column("topic").indices.to_pylist()
            records = batch.column("record")
            for i in range(len(reader.topics)):  # field(i): topic i's rows of the batch, in order
                part = records.field(i)
                assert part.to_pylist() == [
                    r for r, k in zip(records.to_pylist(), topics, strict=True) if k == i
                ]
            for k, record, ts in zip(
                topics, records.to_pylist(), batch.column("timestamp_ns").to_pylist(), strict=True
            ):
                assert record["timestamp_ns"] == ts
                merged.append((k, record["row"], ts))
    return merged


@pytest.fixture(params=KIND_PARAMS)
def h(request: pytest.FixtureRequest) -> Iterator[Harness]:
    with harness(request.param) as hh:
        yield hh


@pytest.fixture(scope="module", params=KIND_PARAMS)
def shared(request: pytest.FixtureRequest) -> Iterator[Transport]:
    """One transport for a module's worth of sequences (each test writes its own)."""
    with harness(request.param) as hh:
        yield hh.transport()


# -----------------------------------------------------------------------------------------------
# Merge order


stamps = st.integers(0, 12) | st.none()
topic_batches = st.lists(st.lists(stamps, min_size=0, max_size=6), min_size=0, max_size=4)
bounds = st.one_of(st.none(), st.integers(-1, 14))


@settings(
    max_examples=profile_examples(0.5), suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(topics=st.lists(topic_batches, min_size=1, max_size=4), start=bounds, end=bounds)
def test_merge_order_matches_a_reference_merge(
    shared: Transport,
    topics: list[list[list[int | None]]],
    start: int | None,
    end: int | None,
) -> None:
    if start is not None and end is not None and start > end:
        start, end = end, start
    t = shared
    names = [f"t{i}" for i in range(len(topics))]
    name = _write(t, dict(zip(names, topics, strict=True)))
    flat = [[ts for b in batches for ts in b] for batches in topics]
    client = Client(t)
    got = _merged(client.stream_sequence(name, start_ns=start, end_ns=end))
    assert got == reference_merge(flat, start, end)
    # a chosen order of topics is the tie order
    backwards = _merged(client.stream_sequence(name, names[::-1], start, end))
    assert backwards == reference_merge(flat[::-1], start, end)  # indices into names[::-1]


def test_merged_batches_refer_to_topic_rows_in_order(h: Harness) -> None:
    t = h.transport()
    name = _write(t, {"a": [[1, 2, 3], [7, 8]], "b/c": [[2, 2], [5, 9, 9]], "d": [[0]]})
    reader = Client(t).stream_sequence(name)
    assert reader.topics == ("a", "b/c", "d")
    assert _merged(reader) == [
        (2, 0, 0),
        (0, 0, 1),
        (0, 1, 2),
        (1, 0, 2),
        (1, 1, 2),
        (0, 2, 3),
        (1, 2, 5),
        (0, 3, 7),
        (0, 4, 8),
        (1, 3, 9),
        (1, 4, 9),
    ]


# -----------------------------------------------------------------------------------------------
# Topics: batches as delivered, windows at chunk borders


def test_stream_topic_yields_each_batch_as_delivered(h: Harness) -> None:
    t = h.transport()
    chunks = [list(range(0, 10)), list(range(10, 20)), list(range(20, 30))]
    name = _write(t, {"imu": chunks})
    with Client(t).stream_topic(name, "/imu") as reader:
        assert reader.schema.metadata[b"mosaico:context"] == b"topic"
        got = [b.column("timestamp_ns").to_pylist() for b in reader]
    assert got == chunks
    assert Client(t).read_topic(name, "imu").column("timestamp_ns").to_pylist() == list(range(30))


WINDOWS = [
    (10, 20),
    (9, 10),
    (10, 11),
    (19, 21),
    (10, 10),
    (0, 30),
    (20, None),
    (None, 10),
    (30, None),
    (None, None),
]


@pytest.mark.parametrize(("start", "end"), WINDOWS)
def test_windows_at_chunk_borders(shared: Transport, start: int | None, end: int | None) -> None:
    t = shared
    chunks = [list(range(0, 10)), list(range(10, 20)), list(range(20, 30))]
    name = _write(t, {"a": chunks, "b": [list(range(5, 25))]})
    expected = [
        ts for ts in range(30) if (start is None or ts >= start) and (end is None or ts < end)
    ]
    client = Client(t)
    topic = [
        ts
        for b in client.stream_topic(name, "a", start, end)
        for ts in b["timestamp_ns"].to_pylist()
    ]
    assert topic == expected
    merged = _merged(client.stream_sequence(name, start_ns=start, end_ns=end))
    flat = [list(range(30)), list(range(5, 25))]
    assert merged == reference_merge(flat, start, end)


# -----------------------------------------------------------------------------------------------
# Empty and unfinished topics


def test_empty_and_unfinished_topics(h: Harness) -> None:
    t = h.transport()
    name = f"seq{next(_names)}"
    session = create_sequence(t, name)
    create_topic(t, session, f"{name}/never")  # no stream ever opened
    empty = create_topic(t, session, f"{name}/empty")  # a clean stream without batches
    ok(put_batches(t, Descriptor.for_topic(f"{name}/empty", empty), SCHEMA, []))
    open_uuid = create_topic(t, session, f"{name}/open")  # a stream still open
    stream = ok(t.open_stream(Descriptor.for_topic(f"{name}/open", open_uuid), SCHEMA))
    ok(stream.write(_batch([4, 6])))
    ok(stream.write(_batch([8], 2)))
    full = create_topic(t, session, f"{name}/full")
    ok(put_batches(t, Descriptor.for_topic(f"{name}/full", full), SCHEMA, [_batch([5, 7])]))

    client = Client(t)
    assert list(client.stream_topic(name, "never")) == []
    assert list(client.stream_topic(name, "empty")) == []
    unfinished = [b["timestamp_ns"].to_pylist() for b in client.stream_topic(name, "open")]
    assert unfinished == [[4, 6], [8]]  # what the server holds so far
    reader = client.stream_sequence(name)
    assert reader.topics == ("never", "empty", "open", "full")
    assert _merged(reader) == [(2, 0, 4), (3, 0, 5), (2, 1, 6), (3, 1, 7), (2, 2, 8)]
    ok(stream.close())
    assert [
        ts for b in client.stream_topic(name, "open") for ts in b["timestamp_ns"].to_pylist()
    ] == [4, 6, 8]


# -----------------------------------------------------------------------------------------------
# Abandoned readers leave nothing open


_SERVER_WORKER = "mosaico-fsm-server_"


def _python_threads() -> set[str]:
    """The process's threads but the reference server's workers: its pool starts one more when
    two calls first run at once, and keeps it (bounded by the server's limits) for later
    calls; what is checked here is that a reader leaves nothing behind."""
    return {th.name for th in threading.enumerate() if not th.name.startswith(_SERVER_WORKER)}


@pytest.mark.parametrize("how", ["close", "with", "drop"])
def test_a_reader_abandoned_half_way_leaves_no_stream_or_thread(h: Harness, how: str) -> None:
    t = h.transport()
    # 20 batches of 2 MB per topic: more than gRPC buffers, so a server is still sending when
    # the reader stops
    rows = 131_072
    base = pa.array(range(rows), pa.int64())

    def chunk(k: int) -> pa.RecordBatch:
        return pa.record_batch([pc.add(base, k * rows), pc.add(base, k * rows)], SCHEMA)

    name = _write(
        t, {"a": [chunk(k) for k in range(0, 40, 2)], "b": [chunk(k) for k in range(1, 40, 2)]}
    )
    gate = _gate(h, t)
    client = Client(t)
    threads = _python_threads()
    opens = (lambda: client.stream_topic(name, "a"), lambda: client.stream_sequence(name))
    for open_reader in opens:
        reader = open_reader()
        if how == "with":
            with reader:
                next(reader)
                next(reader)
                assert gate.open_reads >= 1
        else:
            next(reader)
            next(reader)
            assert gate.open_reads >= 1
            if how == "close":
                reader.close()
                with pytest.raises(StopIteration):
                    next(reader)
        if how == "drop":
            del reader
            gc.collect()
        # closed or left: its streams end while the reader itself may still be referenced
        wait_until(lambda: gate.open_reads == 0, "every DoGet stream of the abandoned reader ended")
        reader = None
    assert _python_threads() <= threads
    # the transport is still usable
    assert len(list(client.stream_topic(name, "b"))) == 20


def test_closing_a_read_stream_ends_it_on_the_server(h: Harness) -> None:
    t = h.transport()
    rows = 131_072
    base = pa.array(range(rows), pa.int64())
    name = _write(t, {"a": [pa.record_batch([base, base], SCHEMA)] * 20})
    gate = _gate(h, t)
    stream = ok(t.read_stream(Client(t).topic_info(name, "a").ticket))
    assert ok(stream.next()).num_rows == rows
    assert gate.open_reads == 1
    stream.close()  # the stream object stays referenced: close alone must end the call
    wait_until(lambda: gate.open_reads == 0, "the server stopped sending the closed stream")
    after = stream.next()
    assert not after.is_ok and after.kind is ErrorKind.CANCELLED
    stream.close()  # idempotent


# -----------------------------------------------------------------------------------------------
# Refused and dropped streams: an error, never a short result


def test_refused_reads_raise_the_servers_kind(h: Harness) -> None:
    t = _faulted(h, Fault("DO_GET", 1, FaultEffect.FAIL, ErrorKind.INTERNAL))
    name = _write(t, {"a": [[1, 2]]})
    client = Client(t)
    with pytest.raises(ActionFailed) as refused:
        client.stream_topic(name, "a")
    assert refused.value.kind is ErrorKind.INTERNAL
    assert f"{name}/a" in str(refused.value)
    with pytest.raises(ActionFailed) as missing:
        client.stream_topic(name, "absent")
    assert missing.value.kind is ErrorKind.NOT_FOUND
    with pytest.raises(ActionFailed) as gone:
        client.stream_sequence("absent")
    assert gone.value.kind is ErrorKind.NOT_FOUND
    assert len(list(client.stream_topic(name, "a"))) == 1  # the next DoGet is served


def test_a_dropped_topic_stream_raises_after_what_arrived(h: Harness) -> None:
    t = _faulted(h, Fault("DO_GET", 1, FaultEffect.DROP_STREAM))
    name = _write(t, {"a": [[i] for i in range(10)]})
    received: list[int] = []
    with pytest.raises(ActionFailed) as dropped:
        for batch in Client(t).stream_topic(name, "a"):
            received += batch["timestamp_ns"].to_pylist()
    assert dropped.value.kind is ErrorKind.CANCELLED
    assert f"{name}/a" in str(dropped.value)
    assert received == [0, 1, 2, 3, 4]  # half of the batches, then the error
    wait_until(lambda: _gate(h, t).open_reads == 0, "the dropped stream ended")


def test_a_dropped_read_topic_raises(h: Harness) -> None:
    t = _faulted(h, Fault("DO_GET", 1, FaultEffect.DROP_STREAM))
    name = _write(t, {"a": [[i] for i in range(4)]})
    with pytest.raises(ActionFailed) as dropped:
        Client(t).read_topic(name, "a")
    assert dropped.value.kind is ErrorKind.CANCELLED


def test_a_dropped_topic_fails_the_whole_sequence_read(h: Harness) -> None:
    t = _faulted(h, Fault("DO_GET", 2, FaultEffect.DROP_STREAM))
    name = _write(t, {"a": [[i] for i in range(0, 20, 2)], "b": [[i] for i in range(1, 20, 2)]})
    reader = Client(t).stream_sequence(name)
    merged: list[Any] = []
    with pytest.raises(ActionFailed) as dropped:
        for batch in reader:
            merged += batch["timestamp_ns"].to_pylist()
    assert dropped.value.kind is ErrorKind.CANCELLED
    assert f"{name}/b" in str(dropped.value)
    assert len(merged) < 20
    wait_until(lambda: _gate(h, t).open_reads == 0, "both DoGet streams ended")


def test_a_lost_reply_to_a_read_is_unknown(h: Harness) -> None:
    t = _faulted(h, Fault("DO_GET", 1, FaultEffect.LOSE_REPLY))
    name = _write(t, {"a": [[1]]})
    with pytest.raises(OutcomeUnknown):
        list(Client(t).stream_topic(name, "a"))


# -----------------------------------------------------------------------------------------------
# Bad arguments: refused before any I/O


class NoIO(Transport):
    def action_raw(self, action_type: str, body: bytes) -> Any:
        raise AssertionError("sent an action")

    def open_stream(self, descriptor: Descriptor, schema: pa.Schema) -> Any:
        raise AssertionError("opened a stream")

    def flight_info(self, descriptor: Descriptor) -> Any:
        raise AssertionError("asked for flight info")

    def read(self, ticket: bytes) -> Any:
        raise AssertionError("read")

    def list_sequences(self, criteria: bytes = b"") -> Any:
        raise AssertionError("listed")

    def close(self) -> None:
        return None


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.stream_topic("bad name", "a"),
        lambda c: c.stream_topic("s", "a//b"),
        lambda c: c.stream_topic("s", "a", start_ns=True),
        lambda c: c.stream_topic("s", "a", start_ns=1.5),
        lambda c: c.stream_topic("s", "a", end_ns=2**63),
        lambda c: c.stream_topic("s", "a", 5, 4),
        lambda c: c.stream_sequence("s/x"),
        lambda c: c.stream_sequence("s", "a"),
        lambda c: c.stream_sequence("s", ["a", "/a"]),
        lambda c: c.stream_sequence("s", [f"t{i}" for i in range(129)]),
        lambda c: c.stream_sequence("s", None, 3, 2),
    ],
)
def test_bad_read_arguments_are_refused_before_any_io(call: Any) -> None:
    with pytest.raises(ArgumentError):
        call(Client(NoIO()))
