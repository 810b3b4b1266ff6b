"""The Flight client reads each protocol line in that line's wire shapes.

Over a real Flight server of each line, `FlightTransport(protocol=line)` reads back what the
memory transport gives for the same model state (sequence info, topic info, data, streaming
filter answers). Each client decoder of `transport/flight/codec.py` reads back what the server's
encoder of the same (aspect, shape) wrote.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import attrs
import pyarrow as pa
import pytest
from pyarrow import flight

from fsm.errors import ArgumentError
from fsm.outcome import ErrorKind
from fsm.spec.lines import line_names, load_line, load_wire
from fsm.transport import DataInfo, Descriptor, SequenceInfo, SessionInfo, TopicData, TopicInfo
from tests.test_server_lines import act, imu_batch, write_topic
from transport.flight import codec
from transport.flight.client import FlightTransport
from transport.flight.protocol import flight_pb2 as pb
from transport.flight.server import RunningServer, render_flight_info, start_server
from transport.memory import MemoryTransport
from transport.server.model import ServerModel

LINES = line_names()
WIRE = load_wire()


def detailed(line: str) -> bool:
    """Whether the line's topic endpoints carry the topic's properties and row counts."""
    return codec.DETAILED_ENDPOINTS[load_line(line).wire["topic_endpoint_app_metadata"]]


def named_by_locator(line: str) -> bool:
    """Whether the line's sequence FlightInfo names sessions by locator (and not by UUID)."""
    shape = load_line(line).wire["sequence_app_metadata"]
    return "uuid" not in WIRE["sequence_app_metadata"].fields[shape][-1]


def model_of(line: str) -> ServerModel:
    """Two finalized topics in two sessions of 'run', and a sequence 'open' whose session
    and topic are not finalized."""
    model = ServerModel(seed=0, protocol=line)
    write_topic(model, "run/imu", imu_batch([10, 20, 30, 40], [1.0, 6.0, 7.0, 2.0]))
    write_topic(model, "run/imu2", imu_batch([15, 25, 35], [9.0, 9.0, 0.0]))
    act(model, "sequence_create", locator="open", user_metadata={"a": [1, 2]})
    session = act(model, "session_create", locator="open")
    act(
        model,
        "topic_create",
        session_uuid=session["uuid"],
        locator="open/cam",
        serialization_format="default",
        ontology_tag="IMU",
        user_metadata={"lens": "wide"},
    )
    return model


@pytest.fixture(scope="module")
def served() -> Iterator[dict[str, tuple[RunningServer, FlightTransport, MemoryTransport]]]:
    running = {}
    for line in LINES:
        server = start_server(model_of(line))
        flight_client = FlightTransport(server.location, protocol=line)
        running[line] = (server, flight_client, MemoryTransport(server.model))
    yield running
    for server, client, _ in running.values():
        client.close()
        server.stop()


def value(outcome: Any) -> Any:
    assert outcome.is_ok, outcome
    return outcome.value


def rows_of(memory: MemoryTransport, topic: TopicInfo) -> int:
    data: TopicData = value(memory.read(topic.ticket))
    return sum(b.num_rows for b in data.batches)


def as_the_line_tells(line: str, memory: MemoryTransport, topic: TopicInfo) -> TopicInfo:
    """Memory's view of a sequence's topic as far as the line's endpoint describes it: on a
    line whose endpoints are detailed, the topic's own properties and its row count too."""
    if not detailed(line):
        return topic
    own: TopicInfo = value(memory.flight_info(Descriptor.for_resource(topic.locator)))
    info = None if own.info is None else attrs.evolve(own.info, rows=rows_of(memory, own))
    return attrs.evolve(own, info=info, schema=None, ticket=topic.ticket)


def session_as_the_line_tells(line: str, session: SessionInfo) -> SessionInfo:
    if named_by_locator(line):
        assert session.locator is not None
        return attrs.evolve(session, uuid=session.locator)
    return attrs.evolve(session, locator=None)


@pytest.mark.parametrize("line", LINES)
@pytest.mark.parametrize("sequence", ["run", "open"])
def test_sequence_info_reads_as_over_memory(
    line: str, sequence: str, served: dict[str, tuple[RunningServer, FlightTransport, Any]]
) -> None:
    _, client, memory = served[line]
    got = value(client.flight_info(Descriptor.for_resource(sequence)))
    want: SequenceInfo = value(memory.flight_info(Descriptor.for_resource(sequence)))
    assert isinstance(got, SequenceInfo)
    assert want.sessions and all(s.locator for s in want.sessions) == named_by_locator(line)
    assert got == attrs.evolve(
        want,
        sessions=tuple(session_as_the_line_tells(line, s) for s in want.sessions),
        topics=tuple(as_the_line_tells(line, memory, t) for t in want.topics),
    )
    assert got.user_metadata == ({"k": "v"} if sequence == "run" else {"a": [1, 2]})


@pytest.mark.parametrize("line", LINES)
@pytest.mark.parametrize("locator", ["run/imu", "open/cam"])
def test_topic_info_and_data_read_as_over_memory(
    line: str, locator: str, served: dict[str, tuple[RunningServer, FlightTransport, Any]]
) -> None:
    _, client, memory = served[line]
    got = value(client.flight_info(Descriptor.for_resource(locator)))
    want: TopicInfo = value(memory.flight_info(Descriptor.for_resource(locator)))
    assert isinstance(got, TopicInfo)
    if detailed(line) and want.info is not None:
        want = attrs.evolve(want, info=attrs.evolve(want.info, rows=rows_of(memory, want)))
    assert got == want
    assert (got.ontology_tag, got.serialization_format) == ("IMU", "default")
    if locator == "open/cam":
        assert got.info is None and got.user_metadata == {"lens": "wide"}
        return
    data: TopicData = value(client.read(got.ticket))
    expected: TopicData = value(memory.read(want.ticket))
    assert data.schema.equals(expected.schema, check_metadata=True)
    assert data.table().equals(expected.table()) and data.table().num_rows == 4


@pytest.mark.parametrize("line", LINES)
def test_a_time_window_reads_where_the_line_tells_it(
    line: str, served: dict[str, tuple[RunningServer, FlightTransport, Any]]
) -> None:
    _, client, memory = served[line]
    descriptor = Descriptor.for_resource("run/imu", 15, 40)
    got: TopicInfo = value(client.flight_info(descriptor))
    want: TopicInfo = value(memory.flight_info(descriptor))
    assert got.ticket == want.ticket
    window = DataInfo(0, 0, 20, 30, rows=2) if detailed(line) else None
    assert got.window == window
    data: TopicData = value(client.read(got.ticket))
    assert data.table().column("timestamp_ns").to_pylist() == [20, 30]


@pytest.mark.parametrize("line", LINES)
def test_listing_and_ordinary_actions_read_as_over_memory(
    line: str, served: dict[str, tuple[RunningServer, FlightTransport, Any]]
) -> None:
    _, client, memory = served[line]
    assert value(client.list_sequences()) == value(memory.list_sequences()) == ["run", "open"]
    key = load_line(line).wire["query_filter"]
    body = json.dumps({"topic": {codec_key(key): {"$eq": "run/imu2"}}}).encode()
    answer = value(client.action_raw("query", body))
    assert isinstance(answer, dict)
    assert answer == value(memory.action_raw("query", body))


def codec_key(query_filter_shape: str) -> str:
    return "name" if query_filter_shape == "name" else "locator"


def filtering_lines() -> list[str]:
    return [n for n in LINES if load_line(n).wire["filter_answer"] != "none"]


def test_some_line_streams_its_filter_answers() -> None:
    assert filtering_lines()


@pytest.mark.parametrize("line", filtering_lines())
@pytest.mark.parametrize(("threshold", "dt", "clusters"), [(5.0, 0, 1), (0.5, 5, 4), (50.0, 0, 0)])
def test_filter_answers_read_as_over_memory(
    line: str,
    threshold: float,
    dt: int,
    clusters: int,
    served: dict[str, tuple[RunningServer, FlightTransport, Any]],
) -> None:
    _, client, memory = served[line]
    body = json.dumps(
        {
            "locator": "run/imu",
            "ontology": {"IMU.acceleration.x": {"$gt": threshold}},
            "clustering_dt_ns": dt,
        }
    ).encode()
    got = value(client.action_raw("topic_filter_clusterize", body))
    assert got == value(memory.action_raw("topic_filter_clusterize", body))
    assert isinstance(got, list) and len(got) == clusters
    high = {"IMU.acceleration.x": {"$gt": 5.0}}
    both = json.dumps(
        {
            "topics": [
                {"locator": t, "clustering_dt_ns": 0, "ontology": high}
                for t in ("run/imu", "run/imu2")
            ],
            "intersect_dt_ns": 0,
        }
    ).encode()
    meet = value(client.action_raw("topic_filter_intersect", both))
    assert meet == value(memory.action_raw("topic_filter_intersect", both))
    assert meet == [{"ts": {"start_ns": 20, "end_ns": 25}, "id": 0}]


@pytest.mark.parametrize("line", filtering_lines())
def test_a_refused_filter_reads_as_the_refusal(
    line: str, served: dict[str, tuple[RunningServer, FlightTransport, Any]]
) -> None:
    _, client, _ = served[line]
    body = json.dumps({"locator": "run/imu", "ontology": {}, "clustering_dt_ns": 0}).encode()
    outcome = client.action_raw("topic_filter_clusterize", body)
    assert outcome.kind is ErrorKind.INVALID_ARGUMENT


def test_a_client_of_another_line_reports_the_framing_it_cannot_read(
    served: dict[str, tuple[RunningServer, FlightTransport, Any]],
) -> None:
    oldest, newest = LINES[0], LINES[-1]
    server, _, _ = served[newest]
    mismatched = FlightTransport(server.location, protocol=oldest)
    try:
        outcome = mismatched.flight_info(Descriptor.for_resource("run"))
    finally:
        mismatched.close()
    assert outcome.kind is ErrorKind.INTERNAL
    assert "malformed FlightInfo" in (outcome.detail or "")


def test_an_unknown_line_is_refused() -> None:
    with pytest.raises(ArgumentError, match="unknown protocol line"):
        FlightTransport("grpc://127.0.0.1:1", protocol="9.9")
    assert FlightTransport("grpc://127.0.0.1:1").line == load_line()
    line = load_line(LINES[-1])
    assert FlightTransport("grpc://127.0.0.1:1", protocol=line).line is line


# ---------------------------------------------------------------------------------------------
# Each decoder reads back its encoder, shape by shape


ASPECT_TABLES: dict[str, tuple[Any, Any]] = {
    "topic_endpoint_app_metadata": (
        codec.TOPIC_ENDPOINT_APP_METADATA,
        codec.TOPIC_ENDPOINT_DECODERS,
    ),
    "sequence_app_metadata": (codec.SEQUENCE_APP_METADATA, codec.SEQUENCE_APP_METADATA_DECODERS),
    "schema_metadata": (codec.SEQUENCE_SCHEMA_METADATA, codec.SCHEMA_METADATA_DECODERS),
    "endpoint_location": (codec.ENDPOINT_LOCATIONS, codec.ENDPOINT_LOCATION_DECODERS),
    "filter_answer": (codec.FILTER_ANSWER, codec.FILTER_ANSWER_DECODERS),
}


@pytest.mark.parametrize("aspect", sorted(ASPECT_TABLES))
def test_every_shape_has_an_encoder_and_a_decoder(aspect: str) -> None:
    encoders, decoders = ASPECT_TABLES[aspect]
    assert set(encoders) == set(decoders) == set(WIRE[aspect].shapes)


TOPICS = (
    TopicInfo(
        locator="run/imu",
        created_at_ns=5,
        completed_at_ns=9,
        locked=True,
        info=DataInfo(2, 896, 10, 40, rows=4),
        ticket=b"t1",
        serialization_format="default",
        ontology_tag="IMU",
        user_metadata={"k": [1]},
        window=DataInfo(1, 100, 20, 30, rows=2),
    ),
    TopicInfo(
        locator="run/cam",
        created_at_ns=6,
        completed_at_ns=None,
        locked=False,
        info=None,
        ticket=b"t2",
        serialization_format="ros",
        ontology_tag="Image",
        user_metadata={},
    ),
    TopicInfo(
        locator="run/empty",
        created_at_ns=7,
        completed_at_ns=8,
        locked=True,
        info=DataInfo(0, 0, None, None, rows=0),
        ticket=b"t3",
        serialization_format="default",
        ontology_tag="IMU",
        user_metadata={},
    ),
)


def what_the_endpoint_tells(shape: str, topic: TopicInfo) -> TopicInfo:
    if codec.DETAILED_ENDPOINTS[shape]:
        window = topic.window
        if window is not None:  # a window's interval and rows only
            window = DataInfo(0, 0, window.start_ns, window.end_ns, rows=window.rows)
        return attrs.evolve(topic, window=window)
    info = None if topic.info is None else attrs.evolve(topic.info, rows=None)
    return TopicInfo(
        topic.locator, topic.created_at_ns, topic.completed_at_ns, topic.locked, info, topic.ticket
    )


@pytest.mark.parametrize("shape", sorted(WIRE["topic_endpoint_app_metadata"].shapes))
@pytest.mark.parametrize("topic", TOPICS, ids=lambda t: t.locator)
def test_topic_endpoint_round_trip(shape: str, topic: TopicInfo) -> None:
    encoded = codec.TOPIC_ENDPOINT_APP_METADATA[shape](topic)
    decoded = codec.TOPIC_ENDPOINT_DECODERS[shape](json.loads(encoded), topic.ticket, None)
    assert decoded == what_the_endpoint_tells(shape, topic)


SEQUENCE = SequenceInfo(
    locator="run",
    created_at_ns=3,
    user_metadata={"robot": "r2", "n": 1},
    sessions=(
        SessionInfo("u-1", 4, 9, True, ("run/imu",), locator="run:01AAA"),
        SessionInfo("u-2", 6, None, False, (), locator="run:01BBB"),
    ),
    topics=TOPICS,
)


@pytest.mark.parametrize("shape", sorted(WIRE["sequence_app_metadata"].shapes))
def test_sequence_app_metadata_round_trip(shape: str) -> None:
    encoded = json.loads(json.dumps(codec.SEQUENCE_APP_METADATA[shape](SEQUENCE)))
    head = codec.SEQUENCE_APP_METADATA_DECODERS[shape](encoded)
    by_locator = "uuid" not in encoded["sessions"][0]
    assert head.sessions == tuple(
        attrs.evolve(s, uuid=s.locator) if by_locator else attrs.evolve(s, locator=None)
        for s in SEQUENCE.sessions
    )
    assert (head.locator, head.created_at_ns) == ("run", 3)
    carried = "user_metadata" in encoded
    assert head.user_metadata == (SEQUENCE.user_metadata if carried else None)


@pytest.mark.parametrize("shape", sorted(WIRE["schema_metadata"].shapes))
def test_sequence_schema_metadata_round_trip(shape: str) -> None:
    keys = codec.SEQUENCE_SCHEMA_METADATA[shape](SEQUENCE)
    schema = pa.schema([], metadata=keys or None)
    read = codec.SCHEMA_METADATA_DECODERS[shape](schema.metadata or {})
    if keys:
        assert read == codec.SchemaKeys("sequence", None, SEQUENCE.user_metadata)
    else:
        assert read == codec.SchemaKeys()


@pytest.mark.parametrize("shape", sorted(WIRE["endpoint_location"].shapes))
def test_endpoint_location_round_trip(shape: str) -> None:
    uris = codec.ENDPOINT_LOCATIONS[shape](TOPICS[0])
    located = codec.ENDPOINT_LOCATION_DECODERS[shape](uris)
    assert located == ("run/imu" if uris else None)
    # where app_metadata names no topic, the location does (and nothing else can)
    meta = json.loads(codec.topic_endpoint_metadata(TOPICS[0]))
    del meta["resource_locator"]
    if uris:
        assert codec.TOPIC_ENDPOINT_DECODERS["info"](meta, b"t", located).locator == "run/imu"
    else:
        with pytest.raises(codec.FlightInfoError, match="names no topic"):
            codec.TOPIC_ENDPOINT_DECODERS["info"](meta, b"t", located)


@pytest.mark.parametrize("shape", sorted(WIRE["filter_answer"].shapes))
@pytest.mark.parametrize("items", [0, 1, 3])
def test_filter_answer_round_trip(shape: str, items: int) -> None:
    clusters = [{"ts": {"start_ns": i, "end_ns": i + 1}, "id": i} for i in range(items)]
    encode, decode = codec.FILTER_ANSWER[shape], codec.FILTER_ANSWER_DECODERS[shape]
    streaming = shape != "none"
    assert (
        decode("topic_filter_clusterize", encode("topic_filter_clusterize", clusters), streaming)
        == clusters
    )
    ordinary = {"uuid": "u-1"}
    assert decode("session_create", encode("session_create", ordinary), False) == ordinary
    assert decode("sequence_delete", encode("sequence_delete", None), False) is None


def test_a_stream_item_that_is_not_an_envelope_is_malformed() -> None:
    decode = codec.FILTER_ANSWER_DECODERS["result_per_cluster"]
    with pytest.raises(codec.EnvelopeError, match="empty"):
        decode("topic_filter_clusterize", [b"\n"], True)
    with pytest.raises(codec.EnvelopeError, match="tagged"):
        decode("topic_filter_clusterize", [codec.encode_envelope("query", {})], True)


def flight_info_of(view: SequenceInfo | TopicInfo, line: str) -> flight.FlightInfo:
    locator = view.locator
    descriptor = flight.FlightDescriptor.for_command(json.dumps({"resource_locator": locator}))
    message = render_flight_info(
        view,
        pb.FlightDescriptor(type=pb.FlightDescriptor.CMD, cmd=descriptor.command),
        codec.FlightShapes.of(load_line(line)),
    )
    return flight.FlightInfo.deserialize(message.SerializeToString())


@pytest.mark.parametrize("line", LINES)
def test_a_lines_flight_info_reads_back_whole(line: str) -> None:
    """The server's FlightInfo of a sequence and of a topic, in the line's shapes, read back
    by the line's reader (no network)."""
    reader = codec.FlightReader.of(load_line(line))
    shape = load_line(line).wire["topic_endpoint_app_metadata"]
    sequence = reader.flight_info(flight_info_of(SEQUENCE, line))
    assert isinstance(sequence, SequenceInfo)
    assert sequence.topics == tuple(what_the_endpoint_tells(shape, t) for t in TOPICS)
    assert sequence.user_metadata == SEQUENCE.user_metadata
    assert [s.locator is not None for s in sequence.sessions] == [named_by_locator(line)] * 2
    schema = pa.schema([("timestamp_ns", pa.int64())])
    keys = {
        "mosaico:context": "topic",
        "mosaico:properties": json.dumps(
            {"serialization_format": "default", "ontology_tag": "IMU"}
        ),
        "mosaico:user_metadata": json.dumps({"k": [1]}),
    }
    has_keys = load_line(line).wire["schema_metadata"] != "none"
    own = attrs.evolve(TOPICS[0], schema=schema.with_metadata(keys) if has_keys else schema)
    topic = reader.flight_info(flight_info_of(own, line))
    assert isinstance(topic, TopicInfo)
    told = what_the_endpoint_tells(shape, TOPICS[0])
    assert topic == attrs.evolve(
        told,
        serialization_format="default",
        ontology_tag="IMU",
        user_metadata={"k": [1]},
        schema=own.schema,
    )


def test_the_default_reader_is_the_default_lines() -> None:
    assert codec.FlightReader() == codec.FlightReader.of(load_line())
