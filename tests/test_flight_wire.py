"""The reference server on the wire, as a pyarrow client and as an attacker see it.

- Every error kind of `specs/actions.toml`, produced by a real request: the exception class and
  text a pyarrow client sees are those a plain gRPC status gives (as from mosaicod).
- DoPut cannot be fooled: forged batches, messages without data, a second schema, garbage and
  dictionary columns end the stream with a refusal; what was stored before stays, unlocked.
- Limits: names, metadata, notifications, tags, bodies, tickets and descriptors beyond the
  limits of `specs/actions.toml` are refused (invalid_argument) and change nothing.
- Streams: an idle stream is cancelled, streams beyond the cap are refused.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pyarrow as pa
import pytest
from pyarrow import flight

import fsm
from fsm.enums import FlightAction
from fsm.faults import Fault, FaultEffect, FaultPlan
from fsm.outcome import ErrorKind
from tests import wire
from tests.harness import SCHEMA, batch, create_sequence, create_topic, ok, wait_until
from transport.flight import frames
from transport.flight.client import FlightTransport
from transport.flight.server import RunningServer, ServerLimits, start_server
from transport.server.auth import HEADER
from transport.server.model import ServerModel

pytestmark = pytest.mark.flight

TIMEOUT = 20.0


@pytest.fixture
def server() -> Iterator[RunningServer]:
    with start_server(ServerModel(seed=0)) as running:
        yield running


def open_topic(running: RunningServer, sequence: str, path: str = "imu") -> tuple[str, str]:
    """A new topic in an open session: its locator and UUID."""
    t = FlightTransport(running.location, timeout=TIMEOUT)
    try:
        locator = f"{sequence}/{path}"
        return locator, create_topic(t, create_sequence(t, sequence), locator)
    finally:
        t.close()


def topic_state(running: RunningServer, locator: str) -> tuple[str, int, int]:
    topic = running.model.snapshot()["topics"][locator]
    return topic["state"], topic["chunks"], topic["rows"]


def _action(client: flight.FlightClient, name: str, body: dict[str, Any], **kw: Any) -> None:
    list(client.do_action(flight.Action(name, json.dumps(body).encode()), **kw))


def _put_descriptor(locator: str, topic_uuid: str) -> flight.FlightDescriptor:
    command = json.dumps({"resource_locator": locator, "topic_uuid": topic_uuid})
    return flight.FlightDescriptor.for_command(command.encode())


def _not_found(running: RunningServer, c: flight.FlightClient) -> str:
    _action(c, "session_create", {"locator": "missing"})
    return ""


def _already_exists(running: RunningServer, c: flight.FlightClient) -> str:
    _action(c, "sequence_create", {"locator": "twice", "user_metadata": {}})
    _action(c, "sequence_create", {"locator": "twice", "user_metadata": {}})
    return ""


def _failed_precondition(running: RunningServer, c: flight.FlightClient) -> str:
    _action(c, "sequence_create", {"locator": "empty", "user_metadata": {}})
    session = json.loads(
        next(
            iter(c.do_action(flight.Action("session_create", b'{"locator": "empty"}')))
        ).body.to_pybytes()
    )["response"]["uuid"]
    _action(c, "session_finalize", {"session_uuid": session})
    return ""


def _invalid_argument(running: RunningServer, c: flight.FlightClient) -> str:
    _action(c, "sequence_create", {"locator": "a b", "user_metadata": {}})
    return ""


def _permission_denied(running: RunningServer, c: flight.FlightClient) -> str:
    running.model.auth = True
    token = running.model.bootstrap_key(fsm.enums.APIKeyPermissionEnum.Read)
    options = flight.FlightCallOptions(headers=[(HEADER.encode(), token.encode())])
    _action(c, "sequence_create", {"locator": "r", "user_metadata": {}}, options=options)
    return ""


def _unauthenticated(running: RunningServer, c: flight.FlightClient) -> str:
    running.model.auth = True
    _action(c, "version", {})
    return ""


def _internal(running: RunningServer, c: flight.FlightClient) -> str:
    def broken(*args: Any) -> Any:
        raise RuntimeError("a bug, not a refusal")

    running.model.handle_action = broken  # type: ignore[method-assign]
    _action(c, "version", {})
    return ""


def _cancelled(running: RunningServer, c: flight.FlightClient) -> str:
    from transport.server.trace import ServerTrace

    locator, topic_uuid = open_topic(running, "idle")
    trace = running.model.trace = ServerTrace()
    writer, _ = c.do_put(_put_descriptor(locator, topic_uuid), SCHEMA)
    wait_until(
        lambda: any(e["op"] == "DO_PUT_CANCEL" for e in trace.events), "the idle stream cancelled"
    )
    writer.close()
    return ""


def _aborted(running: RunningServer, c: flight.FlightClient) -> str:
    locator, topic_uuid = open_topic(running, "abort")
    writer, _ = c.do_put(_put_descriptor(locator, topic_uuid), SCHEMA)
    writer.write_batch(batch(0, 2))
    writer.write_metadata(b"not data")  # a message without data mid-stream
    writer.close()
    return ""


def _unimplemented(running: RunningServer, c: flight.FlightClient) -> str:
    list(c.list_actions())
    return ""


def _resource_exhausted(running: RunningServer, c: flight.FlightClient) -> str:
    locator, topic_uuid = open_topic(running, "cap")
    first, _ = c.do_put(_put_descriptor(locator, topic_uuid), SCHEMA)
    first.write_batch(batch(0, 1))
    wait_until(lambda: topic_state(running, locator)[1] == 1, "the first stream is open")
    second, _ = c.do_put(_put_descriptor(locator, topic_uuid), SCHEMA)
    try:
        second.close()
    finally:
        first.close()
    return ""


PRODUCE: dict[ErrorKind, tuple[Callable[[RunningServer, flight.FlightClient], str], str]] = {
    ErrorKind.NOT_FOUND: (_not_found, "session_create: sequence is absent"),
    ErrorKind.ALREADY_EXISTS: (_already_exists, "sequence_create: sequence is present"),
    ErrorKind.FAILED_PRECONDITION: (_failed_precondition, "session_finalize: session is open"),
    ErrorKind.INVALID_ARGUMENT: (_invalid_argument, "sequence_create: field 'locator'"),
    ErrorKind.PERMISSION_DENIED: (_permission_denied, "unauthorized: SEQUENCE_CREATE needs"),
    ErrorKind.UNAUTHENTICATED: (_unauthenticated, "missing API key in request header"),
    ErrorKind.INTERNAL: (_internal, "internal server error"),
    ErrorKind.CANCELLED: (_cancelled, ""),
    ErrorKind.ABORTED: (_aborted, "DoPut: unsupported stream message (a message without data)"),
    ErrorKind.UNIMPLEMENTED: (_unimplemented, "ListActions is not part of the protocol"),
    ErrorKind.RESOURCE_EXHAUSTED: (_resource_exhausted, "DoPut: 1 streams are open"),
}


def test_every_error_kind_of_the_spec_is_produced_here() -> None:
    """No error kind of specs/actions.toml goes without its over-the-wire case below."""
    assert {k.value for k in PRODUCE} == set(fsm.load_spec().error_kinds)


@pytest.mark.parametrize("kind", list(PRODUCE), ids=lambda k: k.value)
def test_a_pyarrow_client_sees_each_kind_as_from_mosaicod(kind: ErrorKind) -> None:
    """A real request of each kind: the pyarrow exception class, and its text is the status
    phrase followed by the bare message (no kind prefix, no 'Detail:', no traceback)."""
    idle = 0.5 if kind is ErrorKind.CANCELLED else 300.0
    limits = ServerLimits(stream_idle_timeout=idle, max_streams=1)
    with start_server(ServerModel(seed=0), limits=limits) as running:
        client = flight.FlightClient(running.location)
        produce, message = PRODUCE[kind]
        cls, phrase = wire.SEEN_AS[kind]
        try:
            with pytest.raises(cls) as caught:
                produce(running, client)
        finally:
            client.close()
    text = str(caught.value)
    assert text.startswith(f"{phrase}, with message: {message}"), text
    # Nothing of the server's own making beyond the message: no traceback, no Python detail
    # (pyarrow may add its client-side context after it, as it does against any server).
    assert "Traceback" not in text and "Python" not in text
    # The engine's transport reads the same kind back from that exception.
    from transport.flight.codec import flight_error_outcome

    assert flight_error_outcome(caught.value).kind is kind


# ---------------------------------------------------------------------------------------------
# DoPut that cannot be fooled


WIDE = pa.schema([("timestamp_ns", pa.int64()), ("x", pa.float64())])
NARROW = pa.schema([("timestamp_ns", pa.int8()), ("x", pa.int8())])


def _stream(running: RunningServer, name: str, schema: pa.Schema = WIDE) -> tuple[str, bytes]:
    locator, topic_uuid = open_topic(running, name)
    return locator, wire.header_frame(locator, topic_uuid, schema)


def short_body(start: int, rows: int) -> bytes:
    """A well-formed FlightData whose body is 8 bytes shorter than its IPC header declares."""
    stamps = list(range(start, start + rows))
    data = pa.record_batch([pa.array(stamps, pa.int64()), pa.array([0.5] * rows)], schema=WIDE)
    message = pa.ipc.read_message(data.serialize())
    return frames.encode_frame(message.metadata, message.body.to_pybytes()[:-8])


def wide(start: int, rows: int) -> bytes:
    stamps = list(range(start, start + rows))
    return frames.batch_frame(
        pa.record_batch([pa.array(stamps, pa.int64()), pa.array([0.5] * rows)], schema=WIDE)
    )


def _inside(buffer: pa.Buffer, raw: bytes) -> bool:
    start = pa.py_buffer(raw).address
    return start <= buffer.address < start + len(raw)


def test_a_received_body_is_read_in_place_unless_it_is_a_small_part_of_its_message() -> None:
    """A batch's body is read where gRPC received it (no copy); a body that is less than half
    of its message (here behind 1 MB of app_metadata) is copied, so a stored batch never holds
    a much larger message alive. Either way the batch reads back equal and valid."""
    data = pa.record_batch([pa.array(range(1000), pa.int64()), pa.array([0.5] * 1000)], schema=WIDE)
    plain = frames.batch_frame(data)
    message = pa.ipc.read_message(data.serialize())
    padded = (
        frames.encode_frame(message.metadata, message.body)
        + b"\x1a\x80\x80\x40"  # field 3 (app_metadata), 1 MiB
        + bytes(1 << 20)
    )
    for raw, in_place in ((plain, True), (padded, False)):
        frame = frames.decode_frame(raw)
        read = pa.ipc.read_record_batch(frames.ipc_message(frame.header, frame.body), WIDE)
        read.validate(full=True)
        assert read.equals(data)
        assert _inside(read.column(1).buffers()[1], raw) is in_place


def test_a_body_longer_or_shorter_than_declared_is_not_a_message() -> None:
    data = pa.record_batch([pa.array([1, 2], pa.int64()), pa.array([0.5, 1.5])], schema=WIDE)
    message = pa.ipc.read_message(data.serialize())
    body = message.body.to_pybytes()
    for wrong in (body + bytes(8), body[:-8]):
        frame = frames.decode_frame(frames.encode_frame(message.metadata, wrong))
        with pytest.raises(frames.FrameError):
            frames.ipc_message(frame.header, frame.body)


@pytest.mark.parametrize("rows", [1_000, 1_000_000])
def test_a_batch_forged_for_other_types_is_refused(server: RunningServer, rows: int) -> None:
    """Buffers encoded for (int8, int8) on an (int64, float64) stream: refused before use
    (invalid_argument), nothing stored, the topic not locked."""
    locator, header = _stream(server, f"forged{rows}")
    answer = wire.do_put(server.port, [header, wide(0, 5), wire.forged_batch(NARROW, rows)])
    assert answer.code is grpc.StatusCode.INVALID_ARGUMENT, answer
    assert "Buffer #1 too small" in answer.details
    assert topic_state(server, locator) == ("created", 1, 5)


def test_rows_after_an_empty_message_are_never_lost_behind_an_ok(server: RunningServer) -> None:
    """Schema, 100 rows, a message without data, 7 rows: the stream ends aborted; the 100 rows
    received before stay stored, the topic is not locked, and the 7 were never accepted."""
    locator, header = _stream(server, "gap")
    answer = wire.do_put(server.port, [header, wide(0, 100), wire.empty_frame(), wide(100, 7)])
    assert answer.code is grpc.StatusCode.ABORTED, answer
    assert topic_state(server, locator) == ("created", 1, 100)


def test_a_second_schema_mid_stream_is_aborted(server: RunningServer) -> None:
    locator, header = _stream(server, "schema2")
    answer = wire.do_put(server.port, [header, wide(0, 2), frames.schema_frame(WIDE), wide(2, 2)])
    assert answer.code is grpc.StatusCode.ABORTED, answer
    assert "a schema message" in answer.details
    assert topic_state(server, locator) == ("created", 1, 2)


@pytest.mark.parametrize(
    ("name", "messages", "code"),
    [
        ("nothing", [], grpc.StatusCode.INVALID_ARGUMENT),
        ("no_descriptor", [frames.schema_frame(WIDE)], grpc.StatusCode.INVALID_ARGUMENT),
        ("garbage_first", [b"\xff\xff\xff"], grpc.StatusCode.INVALID_ARGUMENT),
        ("garbage_later", ["HEADER", b"\x12\x05ab"], grpc.StatusCode.INVALID_ARGUMENT),
        ("not_ipc", ["HEADER", frames.encode_frame(b"12345678")], grpc.StatusCode.INVALID_ARGUMENT),
        ("cut_frame", ["HEADER", wide(0, 4)[:-8]], grpc.StatusCode.INVALID_ARGUMENT),
        ("short_body", ["HEADER", short_body(0, 4)], grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
def test_malformed_messages_are_refused_and_commit_nothing(
    server: RunningServer, name: str, messages: list[Any], code: grpc.StatusCode
) -> None:
    locator, header = _stream(server, name.replace("_", "-"))
    sent = [header if m == "HEADER" else m for m in messages]
    answer = wire.do_put(server.port, sent)
    assert answer.code is code, answer
    assert topic_state(server, locator) == ("created", 0, 0)


def test_a_dictionary_column_is_refused_naming_it(server: RunningServer) -> None:
    """Dictionary-encoded columns are refused when the stream opens, naming the column: never
    accepted and then unreadable."""
    nested = pa.schema(
        [
            ("timestamp_ns", pa.int64()),
            ("pose", pa.struct([("frame", pa.dictionary(pa.int32(), pa.string()))])),
        ]
    )
    locator, header = _stream(server, "dict", nested)
    answer = wire.do_put(server.port, [header])
    assert answer.code is grpc.StatusCode.INVALID_ARGUMENT, answer
    assert "column 'pose.frame' is dictionary-encoded" in answer.details
    assert topic_state(server, locator) == ("created", 0, 0)


_SURVIVOR = """
import sys
from transport.flight.server import start_server
running = start_server()
print(running.port, flush=True)
sys.stdin.read()
running.stop()
"""


def test_the_batch_that_crashed_pyarrows_server_leaves_this_one_running() -> None:
    """The forged 1,000,000-row batch, against a server in its own process: refused, and the
    process still answers afterwards."""
    child = subprocess.Popen(
        [sys.executable, "-c", _SURVIVOR],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": ":".join(sys.path)},
    )
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        t = FlightTransport(f"grpc://127.0.0.1:{port}", timeout=TIMEOUT)
        try:
            locator = "crash/imu"
            topic_uuid = create_topic(t, create_sequence(t, "crash"), locator)
            header = wire.header_frame(locator, topic_uuid, WIDE)
            answer = wire.do_put(port, [header, wire.forged_batch(NARROW, 1_000_000)])
            assert answer.code is grpc.StatusCode.INVALID_ARGUMENT, answer
            assert child.poll() is None, "the server process died"
            assert ok(t.action(FlightAction.VERSION, {}))["version"]
        finally:
            t.close()
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(TIMEOUT)
    assert child.returncode == 0


# ---------------------------------------------------------------------------------------------
# Strict input, stated limits


def _limit(name: str) -> int:
    return fsm.load_spec().limits[name].value


def _body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


BAD_BODIES: dict[str, tuple[str, bytes]] = {
    "long_name": ("sequence_create", _body(locator="n" * 257, user_metadata={})),
    "nbsp_name": ("sequence_create", _body(locator="ws\u00a0", user_metadata={})),
    "space_name": ("sequence_create", _body(locator=" ws", user_metadata={})),
    "huge_metadata": ("sequence_create", _body(locator="m", user_metadata={"k": "v" * 70_000})),
    "deep_metadata": (
        "sequence_create",
        b'{"locator": "d", "user_metadata": ' + b'{"a": ' * 40 + b"1" + b"}" * 40 + b"}",
    ),
    "infinite_number": ("sequence_create", b'{"locator": "i", "user_metadata": {"x": 1e400}}'),
    "nan": ("sequence_create", b'{"locator": "i", "user_metadata": {"x": NaN}}'),
    "huge_integer": (
        "sequence_create",
        b'{"locator": "i", "user_metadata": {"x": 1' + b"0" * 400 + b"}}",
    ),
    "lone_surrogate": ("sequence_create", b'{"locator": "i", "user_metadata": {"x": "\\ud800"}}'),
    "nested_brackets": ("sequence_create", b"[" * 100_000),
    "huge_body": ("sequence_create", b" " * (_limit("action_body_bytes") + 1)),
    "long_notification": (
        "sequence_notification_create",
        _body(locator="kept", notification_type="error", msg="e" * 16_385),
    ),
    "huge_query": ("query", _body(sequence={"locator": {"$eq": "x" * 70_000}})),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_input_beyond_the_limits_is_refused_and_changes_nothing(
    server: RunningServer, case: str
) -> None:
    t = FlightTransport(server.location, timeout=TIMEOUT)
    try:
        ok(t.action(FlightAction.SEQUENCE_CREATE, {"locator": "kept", "user_metadata": {}}))
    finally:
        t.close()
    before = server.model.snapshot()
    name, body = BAD_BODIES[case]
    answer = wire.action(server.port, name, body)
    assert answer.code is grpc.StatusCode.INVALID_ARGUMENT, answer
    assert len(answer.details) < 1000
    assert server.model.snapshot() == before


def test_limits_on_tags_tickets_and_descriptors(server: RunningServer) -> None:
    t = FlightTransport(server.location, timeout=TIMEOUT)
    try:
        session = create_sequence(t, "lim")
        too_long_tag = {
            "session_uuid": session,
            "locator": "lim/t",
            "serialization_format": "default",
            "ontology_tag": "t" * 257,
            "user_metadata": {},
        }
        before = server.model.snapshot()
        outcome = t.action(FlightAction.TOPIC_CREATE, too_long_tag)
        assert outcome.kind is ErrorKind.INVALID_ARGUMENT, outcome
        assert "ontology_tag_bytes" in str(outcome.detail)
        for ticket in (
            b"x" * (_limit("ticket_bytes") + 1),
            b"mosaico-fsm/ticket/v1:" + b"[" * 100_000,
        ):
            assert t.read(ticket).kind is ErrorKind.INVALID_ARGUMENT
        from fsm.transport import Descriptor

        huge = Descriptor("cmd", command=b"{" + b" " * _limit("descriptor_bytes") + b"}")
        assert t.flight_info(huge).kind is ErrorKind.INVALID_ARGUMENT
        assert t.flight_info(Descriptor("cmd", command=b"[" * 100_000)).kind is (
            ErrorKind.INVALID_ARGUMENT
        )
        assert server.model.snapshot() == before
    finally:
        t.close()


@pytest.mark.parametrize(
    ("locator", "stored"),
    [
        ("seq/x/y", "seq/x/y"),
        ("/seq/x/y", "seq/x/y"),  # the optional leading '/' of a locator
        ("seq/x//y", None),
        ("seq/x/y/", None),
        ("seq/ x", None),
        ("seq/x\u00a0", None),
        ("seq/x\t", None),
    ],
)
def test_topic_names_are_stored_exactly_or_refused(
    server: RunningServer, locator: str, stored: str | None
) -> None:
    t = FlightTransport(server.location, timeout=TIMEOUT)
    try:
        session = create_sequence(t, "seq")
        outcome = t.action(
            FlightAction.TOPIC_CREATE,
            {
                "session_uuid": session,
                "locator": locator,
                "serialization_format": "default",
                "ontology_tag": "imu",
                "user_metadata": {},
            },
        )
    finally:
        t.close()
    topics = set(server.model.snapshot()["topics"])
    if stored is None:
        assert outcome.kind is ErrorKind.INVALID_ARGUMENT, outcome
        assert topics == set()
    else:
        ok(outcome)
        assert topics == {stored}


# ---------------------------------------------------------------------------------------------
# Streams are bounded


def test_an_idle_stream_is_cancelled_and_releases_its_topic() -> None:
    limits = ServerLimits(stream_idle_timeout=0.3)
    with start_server(ServerModel(seed=0), limits=limits) as running:
        locator, topic_uuid = open_topic(running, "quiet")
        t = FlightTransport(running.location, timeout=TIMEOUT)
        try:
            stream = ok(t.open_stream(_descriptor(locator, topic_uuid), SCHEMA))
            ok(stream.write(batch(0, 2)))
            wait_until(lambda: topic_state(running, locator) == ("created", 1, 2), "cancelled")
            assert stream.close().kind is ErrorKind.CANCELLED
            # The topic takes a new stream, which locks it.
            again = ok(t.open_stream(_descriptor(locator, topic_uuid), SCHEMA))
            ok(again.write(batch(2, 1)))
            ok(again.close())
        finally:
            t.close()
        assert topic_state(running, locator) == ("locked", 2, 3)


def test_a_doget_reader_that_stops_reading_is_cancelled_and_frees_its_thread() -> None:
    """A client opens a DoGet on a 64 MB topic and never reads past the schema: gRPC's flow
    control stops the server's sends, and after the idle timeout the server cancels the call,
    so the thread it held is free again (counted by `open_reads`); the reader then gets an
    error, never a silently short read."""
    limits = ServerLimits(stream_idle_timeout=0.3)
    with start_server(ServerModel(seed=0), limits=limits) as running:
        locator, topic_uuid = open_topic(running, "unread")
        # Stored in process: a 16 MB DoPut message may well take longer than the idle timeout.
        principal = running.model.authenticate(None)
        command = json.dumps({"resource_locator": locator, "topic_uuid": topic_uuid}).encode()
        handle = running.server.gate.put_open(lambda: principal, "cmd", command, SCHEMA)
        for i in range(4):
            stamps = np.arange(i * 1_000_000, (i + 1) * 1_000_000, dtype=np.int64)
            running.server.gate.put_write(
                handle, pa.record_batch([stamps, stamps.astype(np.float64)], SCHEMA)
            )
        running.server.gate.put_end(handle)
        client = flight.FlightClient(running.location)
        try:
            command = json.dumps({"resource_locator": locator}).encode()
            info = client.get_flight_info(flight.FlightDescriptor.for_command(command))
            reader = client.do_get(info.endpoints[0].ticket)
            assert reader.schema.names == SCHEMA.names
            wait_until(lambda: running.server.open_reads == 1, "the DoGet started")
            wait_until(lambda: running.server.open_reads == 0, "the unread DoGet was cancelled")
            rows = 0
            with pytest.raises(flight.FlightCancelledError):
                for chunk in reader:
                    rows += chunk.data.num_rows
            assert rows < 4_000_000
        finally:
            client.close()
        assert topic_state(running, locator) == ("locked", 4, 4_000_000)


def _descriptor(locator: str, topic_uuid: str) -> Any:
    from fsm.transport import Descriptor

    return Descriptor.for_topic(locator, topic_uuid)


def test_streams_beyond_the_cap_are_refused_then_accepted_again() -> None:
    limits = ServerLimits(max_streams=2)
    with start_server(ServerModel(seed=0), limits=limits) as running:
        t = FlightTransport(running.location, timeout=TIMEOUT)
        try:
            topics = [open_topic(running, f"cap{i}") for i in range(3)]
            held = []
            for locator, topic_uuid in topics[:2]:
                stream = ok(t.open_stream(_descriptor(locator, topic_uuid), SCHEMA))
                ok(stream.write(batch(0, 1)))
                held.append(stream)
            wait_until(
                lambda: all(topic_state(running, loc)[1] == 1 for loc, _ in topics[:2]), "open"
            )
            outcome = t.open_stream(_descriptor(*topics[2]), SCHEMA)  # refused at once or later
            if outcome.is_ok:
                third = outcome.value
                written = third.write(batch(0, 1))
                outcome = third.close() if written.is_ok else written
            assert outcome.kind is ErrorKind.RESOURCE_EXHAUSTED, outcome
            assert running.server.open_streams == 2
            for stream in held:
                ok(stream.close())
            wait_until(lambda: running.server.open_streams == 0, "the streams' calls ended")
            stream = ok(t.open_stream(_descriptor(*topics[2]), SCHEMA))
            ok(stream.write(batch(0, 1)))
            ok(stream.close())
        finally:
            t.close()
        assert [topic_state(running, loc)[0] for loc, _ in topics] == ["locked"] * 3


def test_the_message_size_limit_is_configurable() -> None:
    limits = ServerLimits(max_message_bytes=64 * 1024)
    with start_server(ServerModel(seed=0), limits=limits) as running:
        assert running.limits.max_message_bytes == 64 * 1024
        locator, header = _stream(running, "big")
        answer = wire.do_put(running.port, [header, wide(0, 10_000)])
        assert answer.code is grpc.StatusCode.RESOURCE_EXHAUSTED, answer
        assert topic_state(running, locator) == ("created", 0, 0)
        time.sleep(0)  # the server still answers
        assert wire.action(running.port, "version", b"{}").code is grpc.StatusCode.OK


# ---------------------------------------------------------------------------------------------
# Deadlines: a client never waits forever on a server that does not answer


@pytest.fixture
def hung_port() -> Iterator[int]:
    """A gRPC server that accepts every Flight call and never answers it."""
    from concurrent.futures import ThreadPoolExecutor

    release = threading.Event()

    def hang(request: Any, context: grpc.ServicerContext) -> Any:
        release.wait(60)
        return iter(())

    methods = {
        "DoAction": grpc.unary_stream_rpc_method_handler(hang),
        "ListFlights": grpc.unary_stream_rpc_method_handler(hang),
        "DoGet": grpc.unary_stream_rpc_method_handler(hang),
        "GetFlightInfo": grpc.unary_unary_rpc_method_handler(hang),
        "DoPut": grpc.stream_stream_rpc_method_handler(hang),
    }
    hung = grpc.server(
        ThreadPoolExecutor(16),
        handlers=[
            grpc.method_handlers_generic_handler("arrow.flight.protocol.FlightService", methods)
        ],
    )
    port = hung.add_insecure_port("127.0.0.1:0")
    hung.start()
    yield port
    release.set()
    hung.stop(0)


def test_every_call_has_a_deadline_by_default() -> None:
    t = FlightTransport("grpc://127.0.0.1:1")
    try:
        assert t.timeout is not None and t.stream_timeout is not None
    finally:
        t.close()
    with pytest.raises(ValueError, match="timeout"):
        FlightTransport("grpc://127.0.0.1:1", timeout=0)


def test_a_hung_server_gives_unknown_within_the_deadline(hung_port: int) -> None:
    from fsm.outcome import OutcomeStatus
    from fsm.transport import Descriptor

    t = FlightTransport(f"grpc://127.0.0.1:{hung_port}", timeout=0.5, stream_timeout=0.5)
    try:
        calls: dict[str, Callable[[], Any]] = {
            "action": lambda: t.action(FlightAction.VERSION, {}),
            "flight_info": lambda: t.flight_info(Descriptor.for_resource("a")),
            "list_sequences": t.list_sequences,
            "read": lambda: t.read(b"ticket"),
        }
        for name, call in calls.items():
            started = time.monotonic()
            outcome = call()
            assert time.monotonic() - started < 5, name
            assert outcome.status is OutcomeStatus.UNKNOWN, (name, outcome)
            which = "stream_timeout" if name == "read" else "timeout"
            assert f"no answer within the {which} of 0.5 s" in str(outcome.detail), outcome
        started = time.monotonic()
        opened = t.open_stream(Descriptor.for_topic("a/b", "u"), SCHEMA)
        if opened.is_ok:
            written = opened.value.write(batch(0, 1))
            outcome = opened.value.close() if written.is_ok else written
        else:
            outcome = opened
        assert time.monotonic() - started < 5
        assert outcome.status is OutcomeStatus.UNKNOWN, outcome
        assert "stream_timeout of 0.5 s" in str(outcome.detail), outcome
    finally:
        t.close()


def test_the_engine_on_a_hung_server_ends_with_a_clear_error(hung_port: int) -> None:
    from fsm import SessionLevelErrorPolicy, SessionStatus
    from fsm.engine import Client
    from fsm.errors import OutcomeUnknown

    client = Client(FlightTransport(f"grpc://127.0.0.1:{hung_port}", timeout=0.5))
    started = time.monotonic()
    seq = client.sequence_create("hung", {}, on_error=SessionLevelErrorPolicy.Delete)
    with pytest.raises(OutcomeUnknown, match=r"no answer within the timeout of 0\.5 s"), seq:
        pytest.fail("the block must not run")
    assert time.monotonic() - started < 10
    assert seq.session_status is SessionStatus.Null


def test_push_row_after_a_known_stream_failure_raises_at_that_push() -> None:
    """The server refuses a batch sent in the background: once the failure is known, the very
    next push_row raises it, and the topic is not Active again."""
    from fsm import SessionLevelErrorPolicy, TopicLevelErrorPolicy, TopicWriterStatus
    from fsm.engine import BatchPolicy, Client
    from fsm.errors import ActionFailed

    plan = FaultPlan((Fault("STREAM_WRITE", 1, FaultEffect.FAIL, ErrorKind.INVALID_ARGUMENT),))
    seen: dict[str, Any] = {}
    with start_server(ServerModel(seed=0), faults=plan) as running:
        client = Client(FlightTransport(running.location, timeout=TIMEOUT))
        try:
            seq = client.sequence_create("rows", {}, on_error=SessionLevelErrorPolicy.Report)
            with contextlib.suppress(ActionFailed), seq:
                topic = seq.topic_create(
                    "imu",
                    schema=pa.schema(
                        [
                            pa.field("timestamp_ns", pa.int64(), nullable=False),
                            ("value", pa.float64()),
                        ]
                    ),
                    ontology_tag="imu",
                    on_error=TopicLevelErrorPolicy.Raise,
                    batch_policy=BatchPolicy(batch_bytes=64, buffer_rows=2),
                )
                for i in range(3):  # the third converts the first two, sent in the background
                    topic.push_row({"timestamp_ns": i, "value": 0.5})
                wait_until(lambda: not topic.is_active, "the refusal reaches the client")
                try:
                    topic.push_row({"timestamp_ns": 3, "value": 0.5})
                except ActionFailed as exc:
                    seen["raised"] = str(exc)
                seen["status"] = topic.status
        finally:
            client.close()
    # The push reports the server's own refusal: its kind and its message.
    raised = seen.get("raised", "")
    assert "STREAM_WRITE failed (invalid_argument)" in raised, seen
    assert "injected fault STREAM_WRITE#1:invalid_argument" in raised, seen
    assert "ended the stream early" not in raised, seen
    assert seen["status"] is not TopicWriterStatus.Active


def test_each_open_stream_is_watched_while_others_stay_open(server: RunningServer) -> None:
    """The threads that wait on DoPut calls are shared between streams: with three streams
    open, a refusal on the last one is still seen at once, and after they end the next
    streams reuse those threads."""
    t = FlightTransport(server.location, timeout=TIMEOUT)
    try:
        topics = [open_topic(server, f"watched{i}") for i in range(3)]
        streams = [ok(t.open_stream(_descriptor(loc, uuid), SCHEMA)) for loc, uuid in topics]
        for stream in streams:
            ok(stream.write(batch(0, 2)))
        last_locator = topics[-1][0]
        wait_until(lambda: topic_state(server, last_locator)[1] == 1, "the last batch stored")
        ok(t.action(FlightAction.TOPIC_DELETE, {"locator": last_locator}))
        ok(streams[-1].write(batch(2, 2)))
        wait_until(lambda: streams[-1].failure is not None, "the last stream's refusal seen")
        assert streams[0].failure is None and streams[1].failure is None
        for stream in streams[:2]:
            ok(stream.close())

        def watchers() -> int:
            return sum(th.name == "mosaico-fsm-doput-watch" for th in threading.enumerate())

        before = watchers()
        for i in range(3):
            locator, topic_uuid = open_topic(server, f"again{i}")
            stream = ok(t.open_stream(_descriptor(locator, topic_uuid), SCHEMA))
            ok(stream.write(batch(0, 1)))
            ok(stream.close())
        assert watchers() == before
    finally:
        t.close()


def test_a_stream_the_server_ended_reports_the_servers_refusal(server: RunningServer) -> None:
    """The server refuses a batch mid-stream (its topic was deleted meanwhile): once the call
    has ended, the stream's `failure` and its next write carry the refusal's kind and the
    server's message, not a bare "the server ended the stream"."""
    locator, topic_uuid = open_topic(server, "gone")
    t = FlightTransport(server.location, timeout=TIMEOUT)
    try:
        stream = ok(t.open_stream(_descriptor(locator, topic_uuid), SCHEMA))
        ok(stream.write(batch(0, 2)))
        wait_until(lambda: topic_state(server, locator)[1] == 1, "the first batch stored")
        ok(t.action(FlightAction.TOPIC_DELETE, {"locator": locator}))
        ok(stream.write(batch(2, 2)))  # sent before the server's refusal comes back
        wait_until(lambda: stream.failure is not None, "the refusal reaches the client")
        failure = stream.failure
        assert failure is not None
        assert failure.kind is ErrorKind.NOT_FOUND, failure
        assert f"topic '{locator}' no longer exists" in (failure.detail or ""), failure
        later = stream.write(batch(4, 2))
        assert (later.kind, later.detail) == (failure.kind, failure.detail)
    finally:
        t.close()


class _DeadCall:
    """A gRPC call context whose client went away: no longer active."""

    def is_active(self) -> bool:
        return False


def test_an_end_of_messages_from_a_dead_client_is_not_a_clean_end() -> None:
    """gRPC reports the end of a dead client's messages like a half-close; the server checks
    that the call is still alive before committing, so the topic is not locked."""
    from transport.flight.server import ReferenceServer, _OpenStream

    model = ServerModel(seed=0)
    service = ReferenceServer(model)
    principal = model.authenticate(None)
    model.handle_action(principal, "sequence_create", b'{"locator": "dead", "user_metadata": {}}')
    session = model.handle_action(principal, "session_create", b'{"locator": "dead"}')["uuid"]
    body = json.dumps(
        {
            "session_uuid": session,
            "locator": "dead/imu",
            "serialization_format": "default",
            "ontology_tag": "imu",
            "user_metadata": {},
        }
    ).encode()
    topic_uuid = model.handle_action(principal, "topic_create", body)["uuid"]
    command = json.dumps({"resource_locator": "dead/imu", "topic_uuid": topic_uuid}).encode()
    handle = service.gate.put_open(lambda: principal, "cmd", command, WIDE)
    stream = _OpenStream(_DeadCall())  # type: ignore[arg-type]
    with pytest.raises(Exception, match="the client went away"):
        service._receive(stream, handle, iter([wide(0, 3)]))
    assert model.snapshot()["topics"]["dead/imu"]["state"] == "created"
    assert model.snapshot()["topics"]["dead/imu"]["rows"] == 3


def test_a_traced_server_records_every_refused_request(server: RunningServer) -> None:
    """100,000 nested brackets or a 2 MB body: refused, and the trace still has the event."""
    from transport.server.trace import ServerTrace

    trace = server.model.trace = ServerTrace()
    for body in (b"[" * 100_000, b'{"locator": "' + b"x" * 2_000_000 + b'"}'):
        answer = wire.action(server.port, "sequence_create", body)
        assert answer.code is grpc.StatusCode.INVALID_ARGUMENT, answer
    assert [(e["op"], e["outcome"]) for e in trace.events] == [
        ("SEQUENCE_CREATE", "invalid_argument"),
        ("SEQUENCE_CREATE", "invalid_argument"),
    ]
