"""The engine under bad rows, broken transports, lost replies and malformed traces.

Bad input gets a clear typed error at its own push and changes nothing; a row that only
fails when the buffer converts never takes a later push's records down with it, and the
error names it; a transport that raises never hangs a flush or lets a close pass; lost
notification replies are settled by what this session did, not by matching text; traces
name instances uniquely and `check_trace` reports malformed records as violations.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fsm import (
    ActionFailed,
    ArgumentError,
    ErrorKind,
    InvalidTrigger,
    SerializationFormat,
    SessionLevelErrorPolicy,
    SessionStatus,
    TopicLevelErrorPolicy,
    TopicWriterStatus,
    load_spec,
)
from fsm.engine import BatchPolicy, Client, Tracer, check_trace, read_trace
from fsm.engine.schema import RowBuffer
from fsm.engine.stream import StreamWriter
from fsm.faults import Fault, FaultEffect, FaultPlan, FaultSchedule
from fsm.outcome import Outcome
from fsm.transport import Descriptor, Transport
from tests.harness import KIND_PARAMS, Forward, Harness, harness, inject_faults
from transport.memory import MemoryTransport
from transport.server.model import ServerModel

SPEC = load_spec()
TS = pa.field("timestamp_ns", pa.int64(), nullable=False)
SCHEMA = pa.schema([TS, pa.field("x", pa.float64())])
REPORT, DELETE = SessionLevelErrorPolicy.Report, SessionLevelErrorPolicy.Delete


class Boom(Exception):
    pass


@pytest.fixture(params=KIND_PARAMS)
def h(request: pytest.FixtureRequest) -> Iterator[Harness]:
    with harness(request.param) as hh:
        yield hh


def _batch(start: int, n: int) -> pa.RecordBatch:
    ts = list(range(start, start + n))
    return pa.record_batch([pa.array(ts, pa.int64()), pa.array([t / 10 for t in ts])], SCHEMA)


def _stamps(client: Client, topic: str, sequence: str = "run") -> list[int]:
    return client.read_topic(sequence, topic).column("timestamp_ns").to_pylist()


class Recorder:
    """A TopicStream that keeps the row count of every message written."""

    failure = None

    def __init__(self) -> None:
        self.written: list[int] = []
        self.closed = self.aborted = False

    def write(self, batch: pa.RecordBatch) -> Outcome:
        self.written.append(batch.num_rows)
        return Outcome.ok()

    def close(self) -> Outcome:
        self.closed = True
        return Outcome.ok()

    def abort(self) -> Outcome:
        self.aborted = True
        return Outcome.ok()


class Raising(Recorder):
    """A TopicStream whose transport has a bug: write raises."""

    def write(self, batch: pa.RecordBatch) -> Outcome:
        raise RuntimeError("the wire is on fire")


# -----------------------------------------------------------------------------------------------
# 1. Bad rows are refused at their own push_row; nothing is dropped silently


@pytest.mark.parametrize(
    ("column", "value"),
    [
        (pa.int8(), 1000),
        (pa.uint8(), -1),
        (pa.int64(), 2**63),
        (pa.float64(), 2**53 + 1),
        (pa.float32(), 2**24 + 1),
        (pa.list_(pa.float32(), 2), [1.0, 2.0, 3.0]),
        (pa.string(), "\ud800"),
    ],
    ids=["int8", "uint8", "int64", "float64", "float32", "fixed-size-list", "surrogate"],
)
def test_push_row_refuses_what_arrow_would_refuse(column: pa.DataType, value: Any) -> None:
    with pytest.raises(Exception):  # noqa: B017 - the premise: Arrow refuses it
        pa.array([value], column)
    schema = pa.schema([TS, pa.field("v", column)])
    fmt = SerializationFormat.Default
    with Client(MemoryTransport()) as client, client.sequence_create("run") as seq:
        topic = seq.topic_create("t", schema=schema, ontology_tag="x", serialization_format=fmt)
        with pytest.raises(ArgumentError, match="'v'"):
            topic.push_row({"timestamp_ns": 1, "v": value})
        assert topic._writer.buffered_rows == 0 and topic.status is TopicWriterStatus.Active
        topic.push_row({"timestamp_ns": 2, "v": None})
    assert _stamps(client, "t") == [2]


def test_an_int_out_of_range_no_longer_takes_the_next_batch_down(h: Harness) -> None:
    """The reviewer's case: an int8 column given 1000, then a valid 2-row batch."""
    schema = pa.schema([TS, pa.field("v", pa.int8())])
    client = Client(h.transport())
    with client.sequence_create("run") as seq:
        topic = seq.topic_create("t", schema=schema, ontology_tag="x")
        with pytest.raises(ArgumentError, match=r"'v': 1000 is out of the range of int8"):
            topic.push_row({"timestamp_ns": 0, "v": 1000})
        topic.push(
            pa.record_batch([pa.array([1, 2], pa.int64()), pa.array([1, 2], pa.int8())], schema)
        )
    assert seq.session_status is SessionStatus.Finalized
    assert _stamps(client, "t") == [1, 2]


def test_a_row_larger_than_a_message_is_refused_at_its_own_push_row(h: Harness) -> None:
    schema = pa.schema([TS, pa.field("payload", pa.binary())])
    policy = BatchPolicy(batch_bytes=1 << 16, max_message_bytes=1 << 18)
    client = Client(h.transport(), batch_policy=policy)
    with client.sequence_create("run") as seq:
        cam = seq.topic_create(
            "cam",
            schema=schema,
            ontology_tag="image",
            serialization_format=SerializationFormat.Image,
        )
        cam.push_row({"timestamp_ns": 1, "payload": b"x" * 100})
        with pytest.raises(ArgumentError, match="larger than one message"):
            cam.push_row({"timestamp_ns": 2, "payload": b"y" * (1 << 19)})
        cam.push_row({"timestamp_ns": 3, "payload": b"z" * 100})
        assert cam.status is TopicWriterStatus.Active
    assert _stamps(client, "cam") == [1, 3]


RAGGED = pa.schema([TS, pa.field("v", pa.list_(pa.int8()))])


def _ragged(seq: Any, **policy: Any) -> Any:
    return seq.topic_create(
        "t",
        schema=RAGGED,
        ontology_tag="x",
        serialization_format=SerializationFormat.Ragged,
        batch_policy=BatchPolicy(**policy) if policy else None,
    )


def _ragged_batch(start: int, n: int) -> pa.RecordBatch:
    ts = pa.array(range(start, start + n), pa.int64())
    return pa.record_batch([ts, pa.array([[1]] * n, pa.list_(pa.int8()))], RAGGED)


def test_a_row_that_fails_to_convert_later_does_not_take_the_next_push_down(h: Harness) -> None:
    """A value nested in a list is checked when the rows convert, in bulk: the push that finds
    the bad row still queues its own batch, and its error names the row left out."""
    client = Client(h.transport())
    with client.sequence_create("run") as seq:
        topic = _ragged(seq)
        topic.push_row({"timestamp_ns": 0, "v": [1]})
        topic.push_row({"timestamp_ns": 1, "v": [1000]})  # int8 overflows inside the list
        with pytest.raises(ActionFailed) as info:
            topic.push(_ragged_batch(2, 2))
        assert info.value.operation == "STREAM_WRITE"
        assert info.value.kind is ErrorKind.INVALID_ARGUMENT
        assert "the records of this push were queued" in str(info.value)
        assert "1 row(s) accepted earlier by push_row were not written (#2" in str(info.value)
        assert "timestamp_ns=1" in str(info.value)
        assert topic.status is TopicWriterStatus.RaisedException
        assert topic.last_error == str(info.value)
        topic.push_row({"timestamp_ns": 4, "v": [4]})
        assert topic.status is TopicWriterStatus.Active and topic.last_error is None
    assert seq.session_status is SessionStatus.Finalized
    assert _stamps(client, "t") == [0, 2, 3, 4]


def test_a_full_row_buffer_keeps_the_row_that_found_an_earlier_bad_one() -> None:
    client = Client(MemoryTransport())
    with client.sequence_create("run") as seq:
        topic = _ragged(seq, buffer_rows=2, background=False)
        topic.push_row({"timestamp_ns": 0, "v": [1]})
        topic.push_row({"timestamp_ns": 1, "v": [1000]})
        with pytest.raises(ActionFailed, match=r"this row was accepted, but 1 row.*#2 \(timestamp"):
            topic.push_row({"timestamp_ns": 2, "v": [2]})  # the buffer is full: it converts
        topic.push_row({"timestamp_ns": 3, "v": [1000]})
        with pytest.raises(ActionFailed, match=r"every other record was sent.*\(#4,"):
            topic.flush()
        assert topic.rows_sent == 2
    assert _stamps(client, "t") == [0, 2]


def test_a_bad_row_found_at_close_is_reported_and_the_others_are_kept() -> None:
    client = Client(MemoryTransport())
    with (
        pytest.raises(ActionFailed, match=r"were not written \(#1,"),
        client.sequence_create("run", on_error=REPORT) as seq,
    ):
        topic = _ragged(seq)
        topic.push_row({"timestamp_ns": 0, "v": [1000]})
        topic.push_row({"timestamp_ns": 1, "v": [1]})
    assert topic.status is TopicWriterStatus.FinalizedWithError
    assert _stamps(client, "t") == [1]


def test_converted_rows_merge_with_pending_batches_within_the_limits() -> None:
    writer = StreamWriter(stream := Recorder(), SCHEMA, BatchPolicy(batch_rows=4, background=False))
    assert writer.submit_batches(writer.plan_batch(_batch(0, 3))).is_ok  # small: kept pending
    for i in range(3, 6):
        assert writer.submit_row({"timestamp_ns": i, "x": 0.0}).is_ok
    assert writer.submit_flush().is_ok
    assert sum(stream.written) == 6 and max(stream.written) <= 4, stream.written


def test_the_row_size_estimate_counts_bytes() -> None:
    """Strings by their UTF-8 bytes, lists by their elements' bytes (not their count)."""
    schema = pa.schema(
        [
            TS,
            pa.field("s", pa.string()),
            pa.field("f", pa.list_(pa.float64())),
            pa.field("l", pa.list_(pa.string())),
            pa.field("st", pa.struct([("name", pa.string()), ("xs", pa.list_(pa.int32()))])),
        ]
    )
    rows = RowBuffer(schema, 1 << 30)
    row = {
        "timestamp_ns": 1,
        "s": "é" * 1000,
        "f": [0.5] * 1000,
        "l": ["abcd"] * 100,
        "st": {"name": "ü" * 50, "xs": list(range(200))},
    }
    actual = pa.RecordBatch.from_pylist([row], schema=schema).nbytes
    estimate = rows.measure(row)
    assert actual <= estimate <= actual * 1.2 + 64, (estimate, actual)


# -----------------------------------------------------------------------------------------------
# 2. A transport that raises: no hang, and close reports it


def test_a_raising_transport_neither_hangs_flush_nor_lets_close_pass() -> None:
    stream = Raising()
    writer = StreamWriter(stream, SCHEMA, BatchPolicy(batch_rows=2))
    assert writer.submit_batches(writer.plan_batch(_batch(0, 2))).is_ok  # sent in the background
    answers: list[Outcome] = []
    flusher = threading.Thread(target=lambda: answers.append(writer.submit_flush()), daemon=True)
    flusher.start()
    flusher.join(5)
    assert not flusher.is_alive(), "flush hangs: the sender thread died"
    assert not answers[0].is_ok and "RuntimeError: the wire is on fire" in answers[0].detail
    closed = writer.close()
    assert not closed.is_ok and "RuntimeError" in closed.detail
    assert stream.aborted and not stream.closed


def test_a_session_over_a_raising_stream_ends_in_error() -> None:
    class RaisingStreams(Forward):
        def open_stream(self, descriptor: Descriptor, schema: pa.Schema) -> Outcome:
            opened = self.inner.open_stream(descriptor, schema)
            return Outcome.ok(Raising()) if opened.is_ok else opened

    client = Client(RaisingStreams(MemoryTransport()))
    with (
        pytest.raises(ActionFailed, match="RuntimeError"),
        client.sequence_create("run", on_error=REPORT) as seq,
    ):
        topic = seq.topic_create("imu", schema=SCHEMA, ontology_tag="imu")
        topic.push(_batch(0, 2))
    assert seq.session_status is SessionStatus.Error
    assert topic.status is TopicWriterStatus.FinalizedWithError


# -----------------------------------------------------------------------------------------------
# 3. Notifications say what failed; lost replies are settled by this session's notices


class LoseRequests(Forward):
    """Loses the request of the nth call of `action` (the server never sees it)."""

    def __init__(self, inner: Transport, action: str, nth: int) -> None:
        super().__init__(inner)
        self.lost, self.left = action, nth

    def action_raw(self, action_type: str, body: bytes) -> Outcome:
        if action_type == self.lost:
            self.left -= 1
            if self.left == 0:
                return Outcome.unknown("the connection dropped before the request arrived")
        return self.inner.action_raw(action_type, body)


def _probes(tracer: Tracer, step: str) -> list[str]:
    return [
        s["probe"]
        for r in tracer.records
        for s in r.get("steps", [])
        if s["step"] == step and "probe" in s
    ]


def test_a_refused_finalize_is_notified_as_such() -> None:
    client = Client(MemoryTransport())
    writer = client.sequence_create("run", on_error=REPORT)
    with pytest.raises(ActionFailed, match="SESSION_FINALIZE"), writer:
        pass
    (note,) = client.sequence_notifications("run")
    assert "SESSION_FINALIZE failed (failed_precondition)" in note.msg, note
    assert f"session {writer.session_uuid}" in note.msg
    assert "topic" not in note.msg


def test_an_older_identical_sequence_notice_does_not_pass_for_a_lost_one() -> None:
    model = ServerModel(seed=0)
    tracer = Tracer()
    client = Client(
        LoseRequests(MemoryTransport(model), "sequence_notification_create", 2), tracer=tracer
    )
    for make in (client.sequence_create, client.sequence_update):
        with pytest.raises(ActionFailed), make("run", on_error=REPORT):  # type: ignore[operator]
            pass  # an empty session: the server refuses to finalize it
    assert _probes(tracer, "SEQUENCE_NOTIFICATION_CREATE") == ["not_applied"]
    assert len(client.sequence_notifications("run")) == 1


def test_an_earlier_identical_topic_notice_does_not_pass_for_a_lost_one() -> None:
    tracer = Tracer()
    client = Client(LoseRequests(MemoryTransport(), "topic_notification_create", 2), tracer=tracer)
    with client.sequence_create("run") as seq:
        topic = seq.topic_create(
            "imu", schema=SCHEMA, ontology_tag="imu", on_error=TopicLevelErrorPolicy.Ignore
        )
        for _ in range(2):
            with topic:
                raise Boom("the same failure")
        topic.push(_batch(0, 1))
    assert _probes(tracer, "TOPIC_NOTIFICATION_CREATE") == ["not_applied"]
    assert len(client.topic_notifications("run", "imu")) == 1


# -----------------------------------------------------------------------------------------------
# 4. Trace instances are unique across retried sessions


def test_a_retried_session_with_the_same_names_gives_a_valid_trace(h: Harness) -> None:
    tracer = Tracer()
    client = Client(h.transport(), tracer=tracer)
    with pytest.raises(Boom), client.sequence_create("run", on_error=DELETE) as seq:
        seq.topic_create("imu", schema=SCHEMA, ontology_tag="imu").push(_batch(0, 2))
        raise Boom("first attempt")
    with client.sequence_create("run", on_error=DELETE) as seq:
        seq.topic_create("imu", schema=SCHEMA, ontology_tag="imu").push(_batch(0, 2))
    report = check_trace(tracer.records, SPEC)
    assert report.ok, report.violation
    topics = {r["instance"] for r in tracer.records if r["machine"] == "topic_writer"}
    assert len(topics) == 2 and all(t.endswith("/imu") for t in topics)


# -----------------------------------------------------------------------------------------------
# 5. check_trace reports malformed and truncated traces as violations


@pytest.fixture(scope="module")
def trace() -> list[dict[str, Any]]:
    """A trace with lost replies settled by probes, failures, a refusal and two machines."""
    tracer = Tracer()
    with harness("memory") as hh:
        hh.schedule = FaultSchedule(
            FaultPlan(
                (
                    Fault("TOPIC_NOTIFICATION_CREATE", 1, FaultEffect.LOSE_REPLY),
                    Fault("SEQUENCE_NOTIFICATION_CREATE", 1, FaultEffect.LOSE_REPLY),
                )
            )
        )
        client = Client(hh.transport(), tracer=tracer, batch_policy=BatchPolicy(background=False))
        with pytest.raises(Boom), client.sequence_create("run", on_error=REPORT) as seq:
            topic = seq.topic_create("imu", schema=SCHEMA, ontology_tag="imu")
            topic.push(_batch(0, 2))
            raise Boom("late")
        with pytest.raises(InvalidTrigger):
            topic.push(_batch(2, 1))
    records = json.loads(json.dumps(tracer.records))
    assert check_trace(records, SPEC).ok
    assert any(s.get("probe") for r in records for s in r.get("steps", []))
    return list(records)


def _violation(records: list[Any]) -> str:
    report = check_trace(records, SPEC)
    assert report.violation is not None, "the edited trace was accepted"
    return str(report.violation)


def test_a_trace_cut_at_a_record_boundary_is_still_valid(trace: list[dict[str, Any]]) -> None:
    for end in range(len(trace) + 1):
        assert check_trace(trace[:end], SPEC).ok


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda r: None, "is not a trace record"),
        (lambda r: [1, 2], "is not a trace record"),
        (lambda r: {k: v for k, v in r.items() if k != "instance"}, "'instance' is None"),
        (lambda r: {**r, "state": 5}, "'state' is 5, not a string"),
        (lambda r: {**r, "trigger": None}, "'trigger' is None"),
        (lambda r: {**r, "context": "x"}, "'context' is 'x', not an object"),
        (lambda r: {**r, "steps": "x"}, "'steps' is 'x', not a list"),
        (lambda r: {**r, "steps": [3]}, "step 0 is 3, not an object"),
        (lambda r: {**r, "steps": r["steps"][:-1]}, "after the recorded steps end"),
        (lambda r: {**r, "steps": [{**r["steps"][0], "outcome": "maybe"}]}, "outcome 'maybe'"),
        (lambda r: {**r, "steps": [{**r["steps"][0], "kind": 7, "outcome": "failed"}]}, "kind 7"),
    ],
)
def test_an_edited_record_is_a_violation_naming_it(
    trace: list[dict[str, Any]], edit: Any, expected: str
) -> None:
    i = next(i for i, r in enumerate(trace) if r.get("steps"))
    edited = [*trace[:i], edit(trace[i]), *trace[i + 1 :]]
    message = _violation(edited)
    assert message.startswith(f"record {i}: ") and expected in message, message


def test_a_context_foreign_to_the_table_is_a_violation_every_time(
    trace: list[dict[str, Any]],
) -> None:
    """A variable the table does not have leaves the row lookup unchanged (guards read only
    their own variables); the table still objects to the call, on every check of it (the
    checker keeps the tables' answers per state, trigger and context)."""
    i = next(i for i, r in enumerate(trace) if r.get("steps"))
    edited = {**trace[i], "context": {**trace[i]["context"], "colour": "red"}}
    for _ in range(2):
        message = _violation([*trace[:i], edited, *trace[i + 1 :]])
        assert message.startswith(f"record {i}: ") and "'colour' is not a context" in message, (
            message
        )
    assert check_trace(trace, SPEC).ok


def test_a_probe_cut_from_a_record_is_a_violation(trace: list[dict[str, Any]]) -> None:
    for i, record in enumerate(trace):
        for j, step in enumerate(record.get("steps", [])):
            if "probe" in step:
                for changed in (
                    {k: v for k, v in step.items() if k != "probe"},
                    {**step, "probe": "perhaps"},
                ):
                    steps = [*record["steps"][:j], changed, *record["steps"][j + 1 :]]
                    message = _violation([*trace[:i], {**record, "steps": steps}, *trace[i + 1 :]])
                    assert message.startswith(f"record {i}: "), message


def test_a_trace_file_cut_mid_line_names_the_line(
    trace: list[dict[str, Any]], tmp_path: Path
) -> None:
    text = "".join(json.dumps(r) + "\n" for r in trace)
    path = tmp_path / "trace.jsonl"
    path.write_text(text[: len(text) - 20])
    with pytest.raises(ValueError, match=f"trace line {len(trace)} is not JSON"):
        read_trace(path)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@given(data=st.data())
def test_check_trace_never_raises_on_a_randomly_edited_trace(
    trace: list[dict[str, Any]], data: st.DataObject
) -> None:
    edited = json.loads(json.dumps(trace))
    for _ in range(data.draw(st.integers(1, 3))):
        record = data.draw(st.sampled_from(edited))
        target = record
        steps = record.get("steps")
        # an earlier edit may have put anything in the steps: only an object has keys to edit
        steps = [s for s in steps if isinstance(s, dict)] if isinstance(steps, list) else []
        if steps and data.draw(st.booleans()):
            target = data.draw(st.sampled_from(steps))
        key = data.draw(st.sampled_from([*sorted(target), "extra"]))
        if data.draw(st.booleans()):
            target.pop(key, None)
        else:
            target[key] = data.draw(_JSON)
    if data.draw(st.booleans()):
        edited[data.draw(st.integers(0, len(edited) - 1))] = data.draw(_JSON)
    report = check_trace(edited, SPEC)
    if report.violation is not None:
        assert str(report.violation).startswith(f"record {report.violation.index}: ")


# -----------------------------------------------------------------------------------------------
# 6. Replies without the uuid they must carry are settled, for sessions and topics alike


class NoUuid(Forward):
    """Answers `action` with an empty uuid after the server applied it."""

    def __init__(self, inner: Transport, action: str) -> None:
        super().__init__(inner)
        self.emptied = action

    def action_raw(self, action_type: str, body: bytes) -> Outcome:
        outcome = self.inner.action_raw(action_type, body)
        if action_type == self.emptied and outcome.is_ok:
            return Outcome.ok({"uuid": ""})
        return outcome


def test_a_topic_create_answered_without_uuid_is_removed_again() -> None:
    model = ServerModel(seed=0)
    client = Client(NoUuid(MemoryTransport(model), "topic_create"))
    with pytest.raises(ActionFailed) as info, client.sequence_create("run") as seq:
        seq.topic_create("imu", schema=SCHEMA, ontology_tag="imu")
    assert info.value.operation == "TOPIC_CREATE" and "no uuid" in str(info.value)
    assert info.value.transition == "topic-orphaned"
    assert "run/imu" not in model.snapshot()["topics"], "the topic was left on the server"


def test_a_session_create_answered_without_uuid_is_adopted_from_the_server() -> None:
    model = ServerModel(seed=0)
    client = Client(NoUuid(MemoryTransport(model), "session_create"))
    with client.sequence_create("run") as seq:
        seq.topic_create("imu", schema=SCHEMA, ontology_tag="imu").push(_batch(0, 1))
    assert seq.session_status is SessionStatus.Finalized
    assert seq.session_uuid == client.sequence_info("run").sessions[0].uuid


def test_a_lost_topic_create_the_server_never_saw_is_settled_as_not_applied(h: Harness) -> None:
    """The probe's "not found" settles a lost TOPIC_CREATE as not applied: the topic failed,
    with nothing to remove; it is not taken for an orphan (a delete of a topic that was never
    created) nor left unresolved."""
    sent: list[str] = []

    class Sent(Forward):
        def action_raw(self, action_type: str, body: bytes) -> Outcome:
            sent.append(action_type)
            return self.inner.action_raw(action_type, body)

    inject_faults(h, Fault("TOPIC_CREATE", 1, FaultEffect.LOSE_REQUEST))
    client = Client(Sent(h.transport()))
    with pytest.raises(ActionFailed) as info, client.sequence_create("run", on_error=REPORT) as seq:
        seq.topic_create("imu", schema=SCHEMA, ontology_tag="imu")
    assert info.value.operation == "TOPIC_CREATE"
    assert info.value.transition == "topic-failed", info.value
    assert "topic_delete" not in sent, sent
    assert "run/imu" not in h.model.snapshot()["topics"]


# -----------------------------------------------------------------------------------------------
# 7. Refusals are traced on one path; closing does not rewrite the policy


def test_a_refused_push_is_traced_like_a_refused_push_row() -> None:
    tracer = Tracer()
    client = Client(MemoryTransport(), tracer=tracer)
    with client.sequence_create("run") as seq:
        topic = seq.topic_create("imu", schema=SCHEMA, ontology_tag="imu")
        topic.push(_batch(0, 1))
    for push in (lambda: topic.push(_batch(1, 1)), lambda: topic.push_row({"timestamp_ns": 2})):
        before = len(tracer.records)
        with pytest.raises(InvalidTrigger):
            push()
        (refused,) = tracer.records[before:]
        assert refused["refused"] and refused["trigger"] == "push"
    assert check_trace(tracer.records, SPEC).ok


def test_closing_does_not_rewrite_the_policy() -> None:
    policy = BatchPolicy()
    writer = StreamWriter(stream := Recorder(), SCHEMA, policy)
    assert writer.submit_row({"timestamp_ns": 1, "x": 1.0}).is_ok
    assert writer.close().is_ok
    assert writer.policy is policy and stream.written == [1] and stream.closed


# -----------------------------------------------------------------------------------------------
# 8. Derived state is derived


def test_session_role_and_policy_are_read_from_the_machine_context() -> None:
    client = Client(MemoryTransport())
    writer = client.sequence_create("run", on_error=DELETE)
    assert (writer.role, writer.policy) == ("writer", DELETE)
    with pytest.raises(AttributeError):
        writer.policy = REPORT  # type: ignore[misc]
    assert Client(MemoryTransport()).machines is client.machines


# -----------------------------------------------------------------------------------------------
# 9. Closing and failures across threads


def test_the_tracer_is_closed_even_when_closing_the_transport_raises(tmp_path: Path) -> None:
    class BadClose(Forward):
        def close(self) -> None:
            raise RuntimeError("close failed")

    tracer = Tracer(tmp_path / "trace.jsonl")
    client = Client(BadClose(MemoryTransport()), tracer=tracer)
    client.pool()
    with pytest.raises(RuntimeError):
        client.close()
    assert tracer._file is None and client._pool is None


def test_a_topic_is_not_active_once_its_stream_failed(h: Harness) -> None:
    h.schedule = FaultSchedule(FaultPlan((Fault("STREAM_WRITE", 1, FaultEffect.DROP_STREAM),)))
    if h.server is not None:
        h.server.server.faults = h.schedule
    client = Client(h.transport(), batch_policy=BatchPolicy(batch_rows=2))
    with pytest.raises(ActionFailed), client.sequence_create("run", on_error=REPORT) as seq:
        topic = seq.topic_create("imu", schema=SCHEMA, ontology_tag="imu")
        assert topic.is_active
        topic.push(_batch(0, 2))  # one message: sent, and the stream dropped
        deadline = time.monotonic() + 5
        while topic.is_active and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not topic.is_active, "the stream failed, yet the topic reads active"
        assert topic.status is TopicWriterStatus.Active  # the failure surfaces at the next call
    assert topic.status is TopicWriterStatus.FinalizedWithError
