"""The engine's behaviour end to end, including where it does better than SDK 0.3.2
(DESIGN.md §3): one purge on Delete, no orphan sequence, nothing pushed before an error lost
under Report, no record dropped silently, background failures surfaced at the next push or
close. Run over both transports."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest

from fsm import (
    ActionFailed,
    ArgumentError,
    ErrorKind,
    FlightAction,
    InvalidTrigger,
    OnErrorPolicy,
    SerializationFormat,
    SessionLevelErrorPolicy,
    SessionStatus,
    TopicLevelErrorPolicy,
    TopicWriterStatus,
)
from fsm.engine import BatchPolicy, Client
from fsm.faults import Fault, FaultEffect, FaultPlan
from fsm.outcome import Outcome
from fsm.transport import Descriptor, Transport
from tests.harness import KIND_PARAMS, Harness, harness, wait_until

SCHEMA = pa.schema(
    [pa.field("timestamp_ns", pa.int64(), nullable=False), pa.field("x", pa.float64())]
)
REPORT, DELETE = SessionLevelErrorPolicy.Report, SessionLevelErrorPolicy.Delete


class Recording(Transport):
    """Forwards to a transport and records the name of every action and stream step sent."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.sent: list[str] = []

    def action_raw(self, action_type: str, body: bytes) -> Outcome:
        self.sent.append(action_type)
        return self.inner.action_raw(action_type, body)

    def open_stream(self, descriptor: Descriptor, schema: pa.Schema) -> Outcome:
        self.sent.append("do_put")
        return self.inner.open_stream(descriptor, schema)

    def flight_info(self, descriptor: Descriptor) -> Outcome:
        self.sent.append("get_flight_info")
        return self.inner.flight_info(descriptor)

    def read(self, ticket: bytes) -> Outcome:
        return self.inner.read(ticket)

    def list_sequences(self, criteria: bytes = b"") -> Outcome:
        return self.inner.list_sequences(criteria)

    def close(self) -> None:
        self.inner.close()


class Boom(Exception):
    pass


@pytest.fixture(params=KIND_PARAMS)
def h(request: pytest.FixtureRequest) -> Iterator[Harness]:
    with harness(request.param) as hh:
        yield hh


def _client(h: Harness, faults: FaultPlan | None = None, **policy: Any) -> tuple[Client, Recording]:
    if faults is not None:
        from fsm.faults import FaultSchedule

        h.schedule = FaultSchedule(faults)
        if h.server is not None:
            h.server.server.faults = h.schedule
    rec = Recording(h.transport())
    return Client(rec, batch_policy=BatchPolicy(**policy) if policy else None), rec


def _batch(start: int, n: int) -> pa.RecordBatch:
    ts = list(range(start, start + n))
    return pa.record_batch(
        [pa.array(ts, pa.int64()), pa.array([t / 10 for t in ts])], schema=SCHEMA
    )


def _rows(client: Client, sequence: str, topic: str) -> list[int]:
    return client.read_topic(sequence, topic).column("timestamp_ns").to_pylist()


# -----------------------------------------------------------------------------------------------
# Lifecycles


def test_clean_writer_run_finalizes_and_locks(h: Harness) -> None:
    client, rec = _client(h)
    with client.sequence_create("run", {"robot": "r1"}) as seq:
        assert seq.session_status is SessionStatus.Pending
        with seq.topic_create("imu", schema=SCHEMA, ontology_tag="imu") as imu:
            imu.push(_batch(0, 5))
            imu.push_row({"timestamp_ns": 5, "x": 0.5})
    assert seq.session_status is SessionStatus.Finalized
    assert imu.status is TopicWriterStatus.Finalized and not imu.is_active
    assert rec.sent == [
        "sequence_create",
        "session_create",
        "topic_create",
        "do_put",
        "session_finalize",
    ]
    info = client.sequence_info("run")
    assert [s.locked for s in info.sessions] == [True]
    assert info.user_metadata == {"robot": "r1"}
    assert _rows(client, "run", "imu") == list(range(6))


def test_updater_adds_a_session(h: Harness) -> None:
    client, rec = _client(h)
    with client.sequence_create("run") as seq:
        seq.topic_create("a", schema=SCHEMA, ontology_tag="imu").push(_batch(0, 2))
    rec.sent.clear()
    with client.sequence_update("run") as upd:
        upd.topic_create("b", schema=SCHEMA, ontology_tag="imu").push(_batch(10, 2))
    assert rec.sent == [
        "get_flight_info",
        "session_create",
        "topic_create",
        "do_put",
        "session_finalize",
    ]
    sessions = client.sequence_info("run").sessions
    assert len(sessions) == 2 and all(s.locked for s in sessions)
    assert upd.session_uuid == sessions[1].uuid


def test_delete_writer_purges_once_and_the_user_exception_propagates(h: Harness) -> None:
    client, rec = _client(h)
    with pytest.raises(Boom) as info, client.sequence_create("run", on_error=DELETE) as seq:
        seq.topic_create("imu", schema=SCHEMA, ontology_tag="imu").push(_batch(0, 3))
        raise Boom("user failure")
    assert str(info.value) == "user failure", "the user's exception is not replaced"
    assert rec.sent.count("sequence_delete") == 1, "one purge (SDK 0.3.2 sends two)"
    assert seq.session_status is SessionStatus.Error
    assert "run" not in h.model.snapshot()["sequences"]


def test_delete_updater_purges_only_its_session(h: Harness) -> None:
    client, rec = _client(h)
    with client.sequence_create("run") as seq:
        seq.topic_create("a", schema=SCHEMA, ontology_tag="imu").push(_batch(0, 2))
    with pytest.raises(Boom), client.sequence_update("run", on_error=DELETE) as upd:
        upd.topic_create("b", schema=SCHEMA, ontology_tag="imu").push(_batch(10, 2))
        raise Boom
    assert rec.sent.count("session_delete") == 1 and "sequence_delete" not in rec.sent
    snap = h.model.snapshot()
    assert list(snap["topics"]) == ["run/a"] and len(snap["sessions"]) == 1
    assert _rows(client, "run", "a") == [0, 1]


def test_no_orphan_sequence_when_session_create_fails(h: Harness) -> None:
    client, rec = _client(h, FaultPlan((Fault("SESSION_CREATE", kind=ErrorKind.INTERNAL),)))
    writer = client.sequence_create("run")
    with pytest.raises(ActionFailed) as info:
        writer.__enter__()
    assert info.value.operation == "SESSION_CREATE" and info.value.kind is ErrorKind.INTERNAL
    assert info.value.transition == "enter-undo"
    assert rec.sent == ["sequence_create", "session_create", "sequence_delete"]
    assert writer.session_status is SessionStatus.Null
    assert h.model.snapshot()["sequences"] == {}, "SDK 0.3.2 leaves the sequence behind"


def test_report_keeps_every_record_pushed_before_the_error(h: Harness) -> None:
    client, _ = _client(h, batch_rows=1000)  # rows stay buffered until the topic closes
    with pytest.raises(Boom), client.sequence_create("run", on_error=REPORT) as seq:
        imu = seq.topic_create("imu", schema=SCHEMA, ontology_tag="imu")
        for i in range(10):
            imu.push_row({"timestamp_ns": i, "x": float(i)})
        assert imu._writer.buffered_rows == 10
        raise Boom("late failure")
    assert seq.session_status is SessionStatus.Error
    assert imu.status is TopicWriterStatus.FinalizedWithError
    assert _rows(client, "run", "imu") == list(range(10)), "SDK 0.3.2 drops these buffered records"
    info = client.sequence_info("run")
    assert info.sessions[0].completed_at_ns is not None and not info.sessions[0].locked
    assert any("late failure" in n.msg for n in client.sequence_notifications("run"))
    assert any("late failure" in n.msg for n in client.topic_notifications("run", "imu"))


def test_report_with_a_failed_finalize_is_reported(h: Harness) -> None:
    """An empty session cannot be finalized: under Report the refusal is notified and raised."""
    client, rec = _client(h)
    with pytest.raises(ActionFailed) as info, client.sequence_create("run", on_error=REPORT):
        pass
    assert (
        info.value.operation == "SESSION_FINALIZE"
        and info.value.kind is ErrorKind.FAILED_PRECONDITION
    )
    assert rec.sent[-2:] == ["session_finalize", "sequence_notification_create"]
    assert client.sequence_notifications("run")


def test_topic_policies(h: Harness) -> None:
    client, _ = _client(h)
    with client.sequence_create("run", on_error=REPORT) as seq:
        fin = seq.topic_create(
            "fin", schema=SCHEMA, ontology_tag="imu", on_error=TopicLevelErrorPolicy.Finalize
        )
        ign = seq.topic_create(
            "ign", schema=SCHEMA, ontology_tag="imu", on_error=TopicLevelErrorPolicy.Ignore
        )
        rai = seq.topic_create(
            "rai", schema=SCHEMA, ontology_tag="imu", on_error=TopicLevelErrorPolicy.Raise
        )
        with fin:
            fin.push(_batch(0, 2))
            raise Boom("fin failed")
        assert fin.status is TopicWriterStatus.FinalizedWithError and "fin failed" in (
            fin.last_error or ""
        )
        with pytest.raises(InvalidTrigger):
            fin.push(_batch(5, 1))
        with ign:
            ign.push(_batch(0, 2))
            raise Boom("ign failed")
        assert ign.status is TopicWriterStatus.IgnoredLastError and ign.is_active
        ign.push(_batch(2, 1))
        assert ign.status is TopicWriterStatus.Active and ign.last_error is None
        with pytest.raises(Boom), rai:
            raise Boom("rai failed")
        assert rai.status is TopicWriterStatus.RaisedException
        rai.push(_batch(0, 1))
    assert seq.session_status is SessionStatus.Finalized
    assert (fin.status, ign.status, rai.status) == (
        TopicWriterStatus.FinalizedWithError,
        TopicWriterStatus.Finalized,
        TopicWriterStatus.Finalized,
    )
    assert _rows(client, "run", "fin") == [0, 1]
    assert _rows(client, "run", "ign") == [0, 1, 2]
    assert [n.msg for n in client.topic_notifications("run", "ign")] == ["ign failed"]


def test_deprecated_on_error_policy_is_accepted_with_a_warning(h: Harness) -> None:
    client, _ = _client(h)
    with pytest.warns(DeprecationWarning):
        writer = client.sequence_create("run", on_error=OnErrorPolicy.Delete)
    assert writer.policy is DELETE


# -----------------------------------------------------------------------------------------------
# No record dropped silently; background failures surface


def test_a_record_larger_than_a_message_is_refused_and_nothing_is_sent(h: Harness) -> None:
    schema = pa.schema(
        [pa.field("timestamp_ns", pa.int64(), nullable=False), pa.field("payload", pa.binary())]
    )
    policy = {"batch_bytes": 1 << 16, "max_message_bytes": 1 << 18}
    client, _ = _client(h, **policy)
    with client.sequence_create("run") as seq:
        img = seq.topic_create(
            "cam",
            schema=schema,
            ontology_tag="image",
            serialization_format=SerializationFormat.Image,
        )
        small = pa.record_batch([pa.array([1], pa.int64()), pa.array([b"x" * 100])], schema=schema)
        huge = pa.record_batch(
            [pa.array([2, 3], pa.int64()), pa.array([b"y" * 10, b"z" * (1 << 19)])], schema=schema
        )
        img.push(small)
        with pytest.raises(ArgumentError, match="larger than one message"):
            img.push(huge)
        assert img.status is TopicWriterStatus.Active
    assert _rows(client, "run", "cam") == [1], (
        "the refused batch sent nothing, the earlier one arrived"
    )


def test_a_large_batch_is_split_and_read_back_whole(h: Harness) -> None:
    client, _ = _client(h, batch_bytes=4096, batch_rows=100_000)
    with client.sequence_create("run") as seq:
        imu = seq.topic_create("imu", schema=SCHEMA, ontology_tag="imu")
        imu.push(_batch(0, 5000))
    assert _rows(client, "run", "imu") == list(range(5000))
    assert client.topic_info("run", "imu").info.chunks_number > 5


def _wait_until_known(topic: Any) -> None:
    """Wait until the refusal has reached the client (sent in the background, and over Flight
    a network round trip away); bounded, so a missing refusal fails the test."""
    writer = topic._writer
    wait_until(
        lambda: writer._failure is not None or writer.stream.failure is not None,
        "the refusal reaches the client",
    )


@pytest.mark.parametrize("background", [False, True])
def test_a_background_write_failure_surfaces_at_the_next_push(h: Harness, background: bool) -> None:
    plan = FaultPlan((Fault("STREAM_WRITE", 1, FaultEffect.FAIL, ErrorKind.INTERNAL),))
    client, _ = _client(h, plan, batch_rows=2, background=background)
    with pytest.raises(ActionFailed), client.sequence_create("run", on_error=REPORT) as seq:
        imu = seq.topic_create("imu", schema=SCHEMA, ontology_tag="imu")
        imu.push(_batch(0, 2))  # fills one batch: it is sent, and refused by the server
        _wait_until_known(imu)
        with pytest.raises(ActionFailed) as info:
            imu.push(_batch(2, 1))  # the next push reports it
        assert info.value.operation == "STREAM_WRITE"
        assert imu.status is TopicWriterStatus.RaisedException and imu.last_error
    assert seq.session_status is SessionStatus.Error


def test_flush_raises_an_earlier_background_failure(h: Harness) -> None:
    """flush() sends what is buffered and reports a failure already known (the protocol has no
    per-batch acknowledgement, so a refusal still on the wire shows at the next call)."""
    plan = FaultPlan((Fault("STREAM_WRITE", 1, FaultEffect.DROP_STREAM),))
    client, _ = _client(h, plan, batch_rows=1)
    with pytest.raises(ActionFailed), client.sequence_create("run", on_error=DELETE) as seq:
        imu = seq.topic_create("imu", schema=SCHEMA, ontology_tag="imu")
        imu.push(_batch(0, 1))
        _wait_until_known(imu)
        with pytest.raises(ActionFailed):
            imu.flush()
    assert "run" not in h.model.snapshot()["sequences"]


def test_topics_stream_in_parallel_and_keep_their_order(h: Harness) -> None:
    import threading

    client, _ = _client(h, batch_rows=7)
    with client.sequence_create("run") as seq:
        topics = [seq.topic_create(f"t{i}", schema=SCHEMA, ontology_tag="imu") for i in range(4)]

        def feed(topic: Any) -> None:
            for start in range(0, 300, 3):
                topic.push(_batch(start, 3))

        threads = [threading.Thread(target=feed, args=(t,)) for t in topics]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for i in range(4):
        assert _rows(client, "run", f"t{i}") == list(range(300))


def test_a_slow_stream_bounds_the_batches_in_flight() -> None:
    """The pusher blocks once max_in_flight batches wait: memory stays bounded."""
    import threading

    from fsm.engine.stream import StreamWriter

    gate = threading.Event()
    written: list[int] = []

    class SlowStream:
        failure = None

        def write(self, batch: pa.RecordBatch) -> Outcome:
            gate.wait()
            written.append(batch.num_rows)
            return Outcome.ok()

        def close(self) -> Outcome:
            return Outcome.ok()

        def abort(self) -> Outcome:
            return Outcome.ok()

    policy = BatchPolicy(batch_rows=1, max_in_flight=2)
    writer = StreamWriter(SlowStream(), SCHEMA, policy)
    pushed: list[int] = []

    def push_many() -> None:
        for i in range(10):
            writer.submit_batches(writer.plan_batch(_batch(i, 1)))
            pushed.append(i)

    pusher = threading.Thread(target=push_many, daemon=True)
    pusher.start()
    # With the stream stuck, exactly max_in_flight pushes go through, then the pusher blocks.
    wait_until(lambda: len(pushed) == policy.max_in_flight, "max_in_flight pushes are accepted")
    time.sleep(0.1)  # room for a push that should not happen
    assert len(pushed) == policy.max_in_flight and pusher.is_alive(), "the pusher waits"
    assert written == []
    gate.set()
    pusher.join(10)
    assert not pusher.is_alive() and len(pushed) == 10
    assert writer.close().is_ok
    assert written == [1] * 10


def test_large_rows_fill_messages_up_to_batch_bytes_and_never_past_it() -> None:
    """The row buffer converts before the row that would overfill a message, so rows of a
    few hundred KB make whole messages of at most batch_bytes, none of them split in two."""
    from fsm.engine.stream import StreamWriter

    schema = pa.schema(
        [pa.field("timestamp_ns", pa.int64(), nullable=False), pa.field("data", pa.binary())]
    )
    sizes: list[tuple[int, int]] = []

    class Recorder:
        failure = None

        def write(self, batch: pa.RecordBatch) -> Outcome:
            sizes.append((batch.num_rows, batch.nbytes))
            return Outcome.ok()

        def close(self) -> Outcome:
            return Outcome.ok()

        def abort(self) -> Outcome:
            return Outcome.ok()

    policy = BatchPolicy(batch_bytes=1_000_000, background=False)
    writer = StreamWriter(Recorder(), schema, policy)
    payload = 300_000  # three rows fit in one message, the fourth does not
    for i in range(10):
        assert writer.submit_row({"timestamp_ns": i, "data": bytes(payload)}).is_ok
    assert writer.close().is_ok
    assert [rows for rows, _ in sizes] == [3, 3, 3, 1]
    assert all(nbytes <= policy.batch_bytes for _, nbytes in sizes)


class _Recorder:
    """A stream that keeps the row count and size of every batch written to it."""

    failure = None

    def __init__(self) -> None:
        self.sizes: list[tuple[int, int]] = []

    def write(self, batch: pa.RecordBatch) -> Outcome:
        self.sizes.append((batch.num_rows, batch.nbytes))
        return Outcome.ok()

    def close(self) -> Outcome:
        return Outcome.ok()

    def abort(self) -> Outcome:
        return Outcome.ok()


def test_fixed_width_rows_are_counted_into_messages_of_at_most_batch_bytes() -> None:
    """Rows of a schema of fixed-width columns all have one size: the buffer converts every
    batch_bytes // row size rows (fewer than buffer_rows here), never more."""
    from fsm.engine.stream import StreamWriter

    schema = pa.schema(
        [pa.field("timestamp_ns", pa.int64(), nullable=False)]
        + [pa.field(f"v{i}", pa.float64()) for i in range(7)]
    )  # 64 bytes a row
    stream = _Recorder()
    policy = BatchPolicy(batch_bytes=6400, buffer_rows=8192, background=False)
    writer = StreamWriter(stream, schema, policy)
    for i in range(250):
        assert writer.submit_row({"timestamp_ns": i, **{f"v{k}": 0.5 for k in range(7)}}).is_ok
    assert writer.close().is_ok
    assert [rows for rows, _ in stream.sizes] == [100, 100, 50]
    assert all(nbytes <= policy.batch_bytes for _, nbytes in stream.sizes)


def test_a_row_like_earlier_good_ones_is_still_checked_at_its_push() -> None:
    """Rows of the same Python types as accepted ones skip the column-by-column check, but
    not the checks of their values: an int out of the column's range, or one a float column
    cannot hold exactly, is refused at its push, with nothing held."""
    from fsm.engine.stream import StreamWriter

    schema = pa.schema(
        [pa.field("timestamp_ns", pa.int64(), nullable=False), pa.field("x", pa.float64())]
    )
    writer = StreamWriter(_Recorder(), schema, BatchPolicy(background=False))
    assert writer.submit_row({"timestamp_ns": 1, "x": 3}).is_ok  # an int a float holds
    assert writer.submit_row({"timestamp_ns": 2, "x": 0.5}).is_ok
    with pytest.raises(ArgumentError, match=r"'timestamp_ns'.*out of the range"):
        writer.submit_row({"timestamp_ns": 1 << 63, "x": 0.5})
    with pytest.raises(ArgumentError, match=r"'x'.*not exactly"):
        writer.submit_row({"timestamp_ns": 3, "x": (1 << 60) + 1})
    assert writer.buffered_rows == 2


# -----------------------------------------------------------------------------------------------
# Bad arguments: a clear typed error before any I/O


def test_bad_arguments_raise_before_any_io(h: Harness) -> None:
    client, rec = _client(h)
    for bad in ("", "-run", "a b", "x/y", 3):
        with pytest.raises(ArgumentError):
            client.sequence_create(bad)  # type: ignore[arg-type]
    with pytest.raises(ArgumentError):
        client.sequence_create("run", {"when": object()})
    with pytest.raises(TypeError):
        client.sequence_create("run", on_error="report")  # type: ignore[arg-type]
    assert rec.sent == []
    with client.sequence_create("run") as seq:
        sent = list(rec.sent)
        ragged = pa.schema(
            [
                pa.field("timestamp_ns", pa.int64(), nullable=False),
                pa.field("pts", pa.list_(pa.float32())),
            ]
        )
        with pytest.raises(ArgumentError, match="'pts'"):
            seq.topic_create("lidar", schema=ragged, ontology_tag="lidar")
        with pytest.raises(ArgumentError, match="binary payload"):
            seq.topic_create(
                "cam",
                schema=SCHEMA,
                ontology_tag="image",
                serialization_format=SerializationFormat.Image,
            )
        with pytest.raises(ArgumentError, match="timestamp_ns"):
            seq.topic_create("bad", schema=pa.schema([("x", pa.float64())]), ontology_tag="imu")
        with pytest.raises(ArgumentError):
            seq.topic_create("bad name!", schema=SCHEMA, ontology_tag="imu")
        assert rec.sent == sent, "nothing was sent for the refused topics"
        lidar = seq.topic_create(
            "lidar",
            schema=ragged,
            ontology_tag="lidar",
            serialization_format=SerializationFormat.Ragged,
        )
        lidar.push_row({"timestamp_ns": 1, "pts": [1.0, 2.0]})
        with pytest.raises(ArgumentError):
            seq.topic_create(
                "lidar",
                schema=ragged,
                ontology_tag="lidar",
                serialization_format=SerializationFormat.Ragged,
            )
        imu = seq.topic_create("imu", schema=SCHEMA, ontology_tag="imu")
        wrong = pa.record_batch(
            [pa.array([1], pa.int64()), pa.array([1], pa.int32())], names=["timestamp_ns", "x"]
        )
        with pytest.raises(ArgumentError, match="column 'x': expected double, got int32"):
            imu.push(wrong)
        with pytest.raises(ArgumentError, match="'y' is not in the topic's schema"):
            imu.push_row({"timestamp_ns": 1, "x": 1.0, "y": 2})
        with pytest.raises(ArgumentError, match="'timestamp_ns' is missing"):
            imu.push_row({"x": 1.0})
        with pytest.raises(ArgumentError, match="'x'"):
            imu.push_row({"timestamp_ns": 1, "x": "one"})
        assert imu.status is TopicWriterStatus.Active, "refused pushes change nothing"
    assert _rows(client, "run", "imu") == []
    assert _rows(client, "run", "lidar") == [1]


def test_invalid_triggers_raise_and_change_nothing(h: Harness) -> None:
    client, _ = _client(h)
    writer = client.sequence_create("run")
    with pytest.raises(InvalidTrigger, match="'topic_create' is not allowed in state 'Null'"):
        writer.topic_create("imu", schema=SCHEMA, ontology_tag="imu")
    assert writer.session_status is SessionStatus.Null
    with writer:
        with pytest.raises(InvalidTrigger) as info:
            writer.__enter__()
        assert info.value.state == "Pending" and "topic_create" in info.value.allowed
        writer.topic_create("imu", schema=SCHEMA, ontology_tag="imu").push(_batch(0, 1))
    with pytest.raises(InvalidTrigger):
        writer.topic_create("imu2", schema=SCHEMA, ontology_tag="imu")
    assert writer.session_status is SessionStatus.Finalized


def test_notification_actions_are_what_the_sdk_sends(h: Harness) -> None:
    """The error report uses the wire names of FlightAction, so any server understands it."""
    client, rec = _client(h)
    with (
        warnings.catch_warnings(),
        pytest.raises(Boom),
        client.sequence_create("run", on_error=REPORT) as seq,
    ):
        seq.topic_create("imu", schema=SCHEMA, ontology_tag="imu").push(_batch(0, 1))
        raise Boom
    tail = rec.sent[-3:]
    assert tail == [
        FlightAction.TOPIC_NOTIFICATION_CREATE.value,
        FlightAction.SEQUENCE_NOTIFICATION_CREATE.value,
        FlightAction.SESSION_FINALIZE.value,
    ]
