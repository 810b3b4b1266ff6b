"""The engine speaks every protocol line: `Client(transport, protocol=X)` writes, reads,
updates and purges with line X's tables and wire shapes against a server of that line, with
the guarantees of 0.3 (one purge, no orphan, nothing dropped without a word), and can learn
the line from the server's handshake."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import attrs
import pyarrow as pa
import pytest

from fsm import ArgumentError, SerializationFormat, SessionLevelErrorPolicy, SessionStatus
from fsm.conformance.clients import check_client_trace, group_by_sequence
from fsm.engine import Client, Tracer, check_trace
from fsm.errors import ProtocolError, SpecError
from fsm.faults import Fault, FaultEffect, FaultPlan, FaultSchedule
from fsm.spec.lines import line_names, load_line
from transport.flight.client import FlightTransport
from transport.flight.server import RunningServer, start_server
from transport.memory import MemoryTransport
from transport.server.model import ServerModel
from transport.server.trace import ServerTrace

LINES = line_names()
SCHEMA = pa.schema(
    [pa.field("timestamp_ns", pa.int64(), nullable=False), pa.field("x", pa.float64())]
)
BLOB = pa.schema([pa.field("timestamp_ns", pa.int64(), nullable=False), pa.field("b", pa.binary())])
IMAGE = SerializationFormat.Image
DELETE, REPORT = SessionLevelErrorPolicy.Delete, SessionLevelErrorPolicy.Report


class Boom(Exception):
    """The user's own failure."""


@pytest.fixture(params=LINES)
def line(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def model(line: str) -> Iterator[ServerModel]:
    m = ServerModel(seed=0, protocol=line)
    m.trace = ServerTrace()
    yield m


@pytest.fixture(params=["memory", "flight"])
def connect(request: pytest.FixtureRequest) -> Iterator[Callable[..., Client]]:
    """Clients of a line over memory, or over Flight to a server of that line (stopped at the
    end of the test)."""
    servers: list[RunningServer] = []

    def make(model: ServerModel, line: str, tracer: Tracer | None = None) -> Client:
        if request.param == "memory":
            return Client(MemoryTransport(model), protocol=line, tracer=tracer)
        servers.append(server := start_server(model))
        # The transport reads the line's shapes; the client takes the line from it.
        return Client(FlightTransport(server.location, protocol=line), tracer=tracer)

    yield make
    for server in servers:
        server.stop()


def _client(model: ServerModel, line: str, tracer: Tracer | None = None) -> Client:
    return Client(MemoryTransport(model), protocol=line, tracer=tracer)


def _rows(n: int, start: int = 0) -> list[dict[str, object]]:
    return [{"timestamp_ns": start + i, "x": i / 2} for i in range(n)]


def _conforms(model: ServerModel, line: str) -> None:
    """Every sequence of the server's trace conforms to the line's tables."""
    assert model.trace is not None
    spec = load_line(line)
    for name, events in group_by_sequence(model.trace.events).items():
        report = check_client_trace(events, spec.spec, sequence=name, client=spec.client_parties)
        assert report.conforms, (name, [str(f) for f in report.findings])


def test_write_read_and_update(
    model: ServerModel, line: str, connect: Callable[..., Client]
) -> None:
    tracer = Tracer()
    client = connect(model, line, tracer)
    assert client.line.name == line
    with client.sequence_create("run") as seq:
        for topic in ("imu", "gps"):
            writer = seq.topic_create(topic, schema=SCHEMA, ontology_tag="imu")
            for row in _rows(5):
                writer.push_row(row)
    assert seq.session_status is SessionStatus.Finalized
    for topic in ("imu", "gps"):
        assert client.read_topic("run", topic).to_pylist() == _rows(5)
    with client.sequence_update("run") as upd:
        upd.topic_create("odom", schema=SCHEMA, ontology_tag="imu").push_row(_rows(1)[0])
    assert sorted(model.snapshot()["topics"]) == ["run/gps", "run/imu", "run/odom"]
    sessions = client.sequence_info("run").sessions
    assert len(sessions) == 2 and all(s.locked for s in sessions)
    assert check_trace(tracer.records, load_line(line).spec).ok
    _conforms(model, line)


def test_a_delete_purge_leaves_nothing(
    model: ServerModel, line: str, connect: Callable[..., Client]
) -> None:
    client = connect(model, line)
    with pytest.raises(Boom), client.sequence_create("gone", on_error=DELETE) as seq:
        seq.topic_create("imu", schema=SCHEMA, ontology_tag="imu").push_row(_rows(1)[0])
        raise Boom
    row = load_line(line).spec.session.lookup(
        "Pending", "exit_error", {"role": "writer", "policy": "Delete"}
    )
    assert row is not None and seq.session_status.name == row.dest
    snapshot = model.snapshot()
    assert "gone" not in snapshot["sequences"] and not snapshot["topics"]
    _conforms(model, line)


def test_an_updater_purge_deletes_its_own_session_by_the_lines_body(
    model: ServerModel, line: str, connect: Callable[..., Client]
) -> None:
    """An updater under Delete removes only its session: with its uuid, or (from 0.5) with
    the locator session_create answered."""
    client = connect(model, line)
    with client.sequence_create("kept") as seq:
        seq.topic_create("imu", schema=SCHEMA, ontology_tag="imu").push_row(_rows(1)[0])
    with pytest.raises(Boom), client.sequence_update("kept", on_error=DELETE) as upd:
        upd.topic_create("extra", schema=SCHEMA, ontology_tag="imu").push_row(_rows(1)[0])
        raise Boom
    has_locators = load_line(line).wire["session_create_answer"] == "uuid_locator"
    assert (upd.session_locator is not None) == has_locators
    if has_locators:
        assert upd.session_locator == f"kept:{upd.session_locator.partition(':')[2]}"
    (left,) = model.snapshot()["sequences"]["kept"]["sessions"]
    assert left == seq.session_uuid, "only the updater's session is gone"
    assert sorted(model.snapshot()["topics"]) == ["kept/imu"]
    _conforms(model, line)


def test_a_report_keeps_the_sequence_and_says_why(model: ServerModel, line: str) -> None:
    client = _client(model, line)
    with pytest.raises(Boom), client.sequence_create("told", on_error=REPORT) as seq:
        seq.topic_create("imu", schema=SCHEMA, ontology_tag="imu").push_row(_rows(1)[0])
        raise Boom
    assert "told" in model.snapshot()["sequences"]
    assert any("Boom" in n.msg for n in client.sequence_notifications("told"))
    _conforms(model, line)


def test_sequence_names_follow_the_lines_rule(line: str) -> None:
    client = Client(MemoryTransport(ServerModel(seed=0, protocol=line)), protocol=line)
    if load_line(line).wire["sequence_locator_rule"] == "strict":
        with pytest.raises(ArgumentError, match="no leading '/'"):
            client.sequence_create("/run")
    else:
        with client.sequence_create("/run") as seq:
            seq.topic_create("imu", schema=SCHEMA, ontology_tag="imu").push_row(_rows(1)[0])
        assert client.sequence_info("run").locator == "run"


@pytest.mark.parametrize("line", [n for n in LINES if load_line(n).wire["connect"] == "info"])
def test_a_record_too_large_is_dropped_counted_and_reported(
    line: str, caplog: pytest.LogCaptureFixture
) -> None:
    model = ServerModel(seed=0, protocol=line)
    model.grpc_limits["grpc_max_decode_message_size"] = 1 << 20
    client = Client(MemoryTransport(model), protocol=line)
    limit = int(0.9 * (1 << 20))
    assert client.server.record_limit == limit
    assert client.batch_policy.max_message_bytes == limit
    statuses = client.enums["TopicWriterStatus"]
    caplog.set_level(logging.WARNING, "mosaico_fsm.engine")
    with client.sequence_create("big") as seq:
        topic = seq.topic_create(
            "cam", schema=BLOB, ontology_tag="image", serialization_format=IMAGE
        )
        topic.push_row({"timestamp_ns": 1, "b": b"x" * 10})
        topic.push_row({"timestamp_ns": 2, "b": b"x" * (limit + 1)})
        assert topic.status is statuses["RecordTooLarge"] and topic.records_too_large == 1
        assert "record 1 dropped" in caplog.text
        topic.push_row({"timestamp_ns": 3, "b": b"y"})
        assert topic.status is statuses["Active"]
    assert client.read_topic("big", "cam").column("timestamp_ns").to_pylist() == [1, 3]
    notes = client.topic_notifications("big", "cam")
    assert len(notes) == 1 and "dropped" in notes[0].msg


def test_a_line_without_the_record_limit_refuses_a_record_too_large() -> None:
    client = Client(MemoryTransport(ServerModel(seed=0, protocol="0.6")), protocol="0.6")
    assert client.server.record_limit is None
    with client.sequence_create("big") as seq:
        topic = seq.topic_create(
            "cam", schema=BLOB, ontology_tag="image", serialization_format=IMAGE
        )
        limit = client.batch_policy.max_message_bytes
        with pytest.raises(ArgumentError, match="larger than one message"):
            topic.push_row({"timestamp_ns": 2, "b": b"x" * (limit + 1)})


@pytest.mark.parametrize(
    "line",
    [
        n
        for n in LINES
        if load_line(n).wire["connect"] != "list_flights_pool"
        and load_line(n).wire["connect"] != "list_flights"
    ],
)
def test_the_line_is_learned_from_the_handshake(line: str) -> None:
    client = Client(MemoryTransport(ServerModel(seed=0, protocol=line)), protocol="auto")
    assert client.line.name == line
    assert client.server.version is not None
    with client.sequence_create("run") as seq:
        seq.topic_create("imu", schema=SCHEMA, ontology_tag="imu").push_row(_rows(1)[0])


@pytest.mark.parametrize(
    "line",
    [n for n in LINES if load_line(n).wire["connect"] in ("list_flights_pool", "list_flights")],
)
def test_a_server_without_a_telling_handshake_asks_for_the_line(line: str) -> None:
    with pytest.raises(ProtocolError, match="name the line with protocol="):
        Client(MemoryTransport(ServerModel(seed=0, protocol=line)), protocol="auto")


def test_a_handshake_the_server_refuses_fails_the_client() -> None:
    """A 0.7 client cannot connect to a server of an earlier line (it answers no info)."""
    with pytest.raises(ProtocolError, match="INFO failed"):
        Client(MemoryTransport(ServerModel(seed=0, protocol="0.6")), protocol="0.7")


def test_an_unknown_line_is_an_argument_error() -> None:
    with pytest.raises(ArgumentError, match=r"unknown protocol line '9\.9'"):
        Client(MemoryTransport(), protocol="9.9")


def test_a_client_and_a_transport_of_two_lines_are_refused() -> None:
    model = ServerModel(seed=0, protocol="0.5")
    server = start_server(model)
    try:
        transport = FlightTransport(server.location, protocol="0.5")
        assert Client(transport).line.name == "0.5"
        with pytest.raises(ArgumentError, match=r"reads protocol line 0\.5"):
            Client(transport, protocol="0.4")
    finally:
        server.stop()


@pytest.mark.parametrize("kind", ["memory", "flight"])
def test_lost_replies_are_settled_by_the_lines_session_names(line: str, kind: str) -> None:
    """A lost finalize reply and a lost session_delete reply are settled by reading the
    sequence: from 0.5 a FlightInfo names sessions by locator alone, and the probes find the
    writer's session by it."""
    model = ServerModel(seed=0, protocol=line)
    schedule = FaultSchedule(
        FaultPlan(
            (
                Fault("SESSION_FINALIZE", 1, FaultEffect.LOSE_REPLY),
                Fault("SESSION_DELETE", 1, FaultEffect.LOSE_REPLY),
            )
        )
    )
    server = start_server(model) if kind == "flight" else None
    tracer = Tracer()
    try:
        if server is None:
            client = Client(MemoryTransport(model, faults=schedule), protocol=line, tracer=tracer)
        else:
            server.server.faults = schedule
            client = Client(FlightTransport(server.location, protocol=line), tracer=tracer)
        with client.sequence_create("lost") as seq:
            seq.topic_create("imu", schema=SCHEMA, ontology_tag="imu").push_row(_rows(1)[0])
        assert seq.session_status is SessionStatus.Finalized, "the lost reply was settled"
        with pytest.raises(Boom), client.sequence_update("lost", on_error=DELETE) as upd:
            upd.topic_create("more", schema=SCHEMA, ontology_tag="imu").push_row(_rows(1)[0])
            raise Boom
        assert [f.operation for f in schedule.fired] == ["SESSION_FINALIZE", "SESSION_DELETE"]
        assert upd.session_status is not SessionStatus.Pending
        (left,) = model.snapshot()["sequences"]["lost"]["sessions"]
        assert left == seq.session_uuid, "only the updater's session is gone"
        probes = [
            (step["step"], step.get("probe"))
            for record in tracer.records
            for step in record.get("steps", ())
            if step["step"] in ("SESSION_FINALIZE", "SESSION_DELETE")
        ]
        assert probes == [("SESSION_FINALIZE", "applied"), ("SESSION_DELETE", "applied")], probes
    finally:
        if server is not None:
            server.stop()


@pytest.mark.parametrize(
    "line", [n for n in LINES if load_line(n).wire["session_create_answer"] == "uuid_locator"]
)
def test_a_session_listed_without_its_uuid_is_not_adopted(line: str) -> None:
    """A lost session_create reply over Flight, from 0.5: the sequence lists the new session
    by its locator alone, so the writer cannot learn the uuid it must finalize with; it does
    not adopt the session but undoes its sequence, and raises."""
    model = ServerModel(seed=0, protocol=line)
    server = start_server(model)
    try:
        server.server.faults = FaultSchedule(
            FaultPlan((Fault("SESSION_CREATE", 1, FaultEffect.LOSE_REPLY),))
        )
        client = Client(FlightTransport(server.location, protocol=line))
        with pytest.raises(ProtocolError), client.sequence_create("orphan") as seq:
            seq.topic_create("imu", schema=SCHEMA, ontology_tag="imu")
        assert "orphan" not in model.snapshot()["sequences"], "the sequence was left behind"
    finally:
        server.stop()


@pytest.mark.parametrize("line", ["0.6", "0.7"])
def test_auto_over_flight_tells_the_transport_the_line_learned(line: str) -> None:
    model = ServerModel(seed=0, protocol=line)
    server = start_server(model)
    try:
        transport = FlightTransport(server.location)  # reads 0.3 until told otherwise
        client = Client(transport, protocol="auto")
        assert client.line.name == line and transport.line is client.line
        with client.sequence_create("auto") as seq:
            seq.topic_create("imu", schema=SCHEMA, ontology_tag="imu").push_row(_rows(1)[0])
        (session,) = client.sequence_info("auto").sessions
        assert session.locator is not None and session.locator.startswith("auto:")
        assert client.read_topic("auto", "imu").to_pylist() == _rows(1)
    finally:
        server.stop()


def test_a_shape_without_an_entry_is_a_spec_error_naming_who_lacks_it() -> None:
    """Every codec (server, Flight client, engine) picks its entry by the line's shape name;
    one that has no entry for that shape fails when it is built, saying whose it is."""
    from fsm.engine import wire

    seven = load_line("0.7")
    assert seven.pick({"uuid_locator": 1}, "session_create_answer", "the engine") == 1
    with pytest.raises(SpecError, match="the engine has no entry for the shape 'uuid_locator'"):
        seven.pick({"uuid": 1}, "session_create_answer", "the engine")
    with pytest.raises(SpecError, match="session_create_answer"):
        wire.pick(
            wire.SESSION_CREATE_ANSWER,
            attrs.evolve(seven, wire={**seven.wire, "session_create_answer": "nope"}),
            "session_create_answer",
        )
