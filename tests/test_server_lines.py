"""The reference server speaks each protocol line as that line's data says (no SDK needed).

Each wire aspect is checked against `specs/lines/wire.toml` and the line's choice of shape;
what a line changes in its catalogue (actions added and removed, the permission model, GetSchema)
is checked on the model and over Flight with a plain pyarrow client.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest
from pyarrow import flight

from fsm.enums import APIKeyPermissionEnum
from fsm.errors import ArgumentError
from fsm.outcome import ErrorKind
from fsm.spec.lines import line_names, load_line, load_wire
from transport.flight.server import RunningServer, start_server
from transport.server.actions import SERVER_VERSION
from transport.server.auth import Principal
from transport.server.errors import ServerError
from transport.server.filters import clusterize, intersect
from transport.server.model import ServerModel

LINES = line_names()
REFUSED = (flight.FlightError, pa.ArrowException)
"""What a pyarrow client raises for a refusal (ArrowInvalid for invalid_argument, ...)."""
WIRE = load_wire()
IMU_SCHEMA = pa.schema(
    [
        ("timestamp_ns", pa.int64()),
        ("acceleration", pa.struct([("x", pa.float64()), ("y", pa.float64())])),
    ]
)


def field_names(aspect: str, line: str) -> list[str]:
    """The JSON keys the line's shape of `aspect` lists, in order."""
    shape = load_line(line).wire[aspect]
    return [f.split(":")[0].strip() for f in WIRE[aspect].fields[shape]]


def everyone(model: ServerModel) -> Principal:
    return model.authenticate(None)


def act(model: ServerModel, wire: str, **body: Any) -> Any:
    return model.handle_action(everyone(model), wire, json.dumps(body).encode())


def kind_of(call: Any) -> ErrorKind | None:
    try:
        call()
    except ServerError as exc:
        return exc.kind
    return None


def imu_batch(stamps: list[int], xs: list[float]) -> pa.RecordBatch:
    accel = pa.array([{"x": x, "y": 0.0} for x in xs], IMU_SCHEMA.field("acceleration").type)
    return pa.record_batch([pa.array(stamps, pa.int64()), accel], schema=IMU_SCHEMA)


def write_topic(
    model: ServerModel, locator: str, batch: pa.RecordBatch, tag: str = "IMU"
) -> dict[str, Any]:
    """A sequence (if new) with one session and one topic holding `batch`; the session's
    create answer."""
    sequence = locator.split("/", maxsplit=1)[0]
    if sequence not in model.sequences:
        act(model, "sequence_create", locator=sequence, user_metadata={"k": "v"})
    answer: dict[str, Any] = act(model, "session_create", locator=sequence)
    topic_uuid = act(
        model,
        "topic_create",
        session_uuid=answer["uuid"],
        locator=locator,
        serialization_format="default",
        ontology_tag=tag,
        user_metadata={},
    )["uuid"]
    command = json.dumps({"resource_locator": locator, "topic_uuid": topic_uuid}).encode()
    handle = model.put_open(everyone(model), "cmd", command, batch.schema)
    model.put_write(handle, batch)
    model.put_end(handle)
    act(model, "session_finalize", session_uuid=answer["uuid"])
    return answer


# ---------------------------------------------------------------------------------------------
# Sessions


@pytest.mark.parametrize("line", LINES)
def test_session_create_answers_the_lines_shape(line: str) -> None:
    model = ServerModel(protocol=line, seed=1)
    act(model, "sequence_create", locator="run", user_metadata={})
    answer = act(model, "session_create", locator="run")
    assert list(answer) == field_names("session_create_answer", line)
    session = model.sessions[answer["uuid"]]
    if "locator" in answer:
        assert answer["locator"] == session.locator
        assert re.fullmatch(r"run:[0-9A-HJKMNP-TV-Z]{26}", answer["locator"])
    else:
        assert session.locator is None


@pytest.mark.parametrize("line", LINES)
def test_session_delete_takes_the_lines_body(line: str) -> None:
    model = ServerModel(protocol=line, seed=1)
    act(model, "sequence_create", locator="run", user_metadata={})
    answer = act(model, "session_create", locator="run")
    (key,) = field_names("session_delete_body", line)
    other = "locator" if key == "session_uuid" else "session_uuid"
    value = {"session_uuid": answer["uuid"], "locator": answer.get("locator")}
    # The other line's body is refused and changes nothing.
    before = model.snapshot()
    if value[other] is not None:
        assert kind_of(lambda: act(model, "session_delete", **{other: value[other]})) is (
            ErrorKind.INVALID_ARGUMENT
        )
    assert model.snapshot() == before
    act(model, "session_delete", **{key: value[key]})
    assert model.snapshot()["sequences"]["run"]["sessions"] == []
    assert kind_of(lambda: act(model, "session_delete", **{key: value[key]})) is (
        ErrorKind.NOT_FOUND
    )


@pytest.mark.parametrize("line", LINES)
def test_sequence_names_follow_the_lines_rule(line: str) -> None:
    model = ServerModel(protocol=line)
    rule = load_line(line).wire["sequence_locator_rule"]
    refused = kind_of(lambda: act(model, "sequence_create", locator="/run", user_metadata={}))
    if rule == "strict":
        assert refused is ErrorKind.INVALID_ARGUMENT and model.sequences == {}
    else:
        assert refused is None and list(model.sequences) == ["run"]
    assert kind_of(lambda: act(model, "sequence_create", locator="a.b", user_metadata={})) is (
        ErrorKind.INVALID_ARGUMENT
    )


# ---------------------------------------------------------------------------------------------
# Combinations and arguments


def test_a_build_profile_combines_only_with_a_line_it_speaks() -> None:
    assert ServerModel(protocol="0.3", profile="mosaicod-0.3").line.name == "0.3"
    for line in LINES:
        assert ServerModel(protocol=line, profile="spec").line.name == line
    for line in LINES[1:]:
        with pytest.raises(ArgumentError, match="does not speak protocol line"):
            ServerModel(protocol=line, profile="mosaicod-0.3")
    with pytest.raises(ArgumentError, match="unknown protocol line"):
        ServerModel(protocol="9.9")
    with pytest.raises(ArgumentError, match="not both"):
        start_server(ServerModel(), protocol="0.7")


def test_the_default_line_is_the_seed_tables() -> None:
    model = ServerModel()
    assert model.line.name == "0.3"
    assert set(model.spec.operations) == set(load_line("0.3").spec.operations)


# ---------------------------------------------------------------------------------------------
# Over Flight


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, RunningServer]]:
    running: dict[str, RunningServer] = {}
    for line in LINES:
        model = ServerModel(protocol=line, seed=3)
        write_topic(model, "run/imu", imu_batch([10, 20, 30, 40], [1.0, 6.0, 7.0, 2.0]))
        write_topic(model, "run/imu2", imu_batch([15, 25, 35], [9.0, 9.0, 0.0]))
        running[line] = start_server(model)
    yield running
    for server in running.values():
        server.stop()


def client_of(server: RunningServer) -> flight.FlightClient:
    return flight.FlightClient(server.location)


def results(server: RunningServer, action: str, body: dict[str, Any]) -> list[Any]:
    with client_of(server) as client:
        raw = [
            r.body.to_pybytes()
            for r in client.do_action(flight.Action(action, json.dumps(body).encode()))
        ]
    return [json.loads(b) for b in raw]


@pytest.mark.parametrize("line", LINES)
def test_handshake_answers_the_lines_version_and_limits(
    line: str, servers: dict[str, RunningServer]
) -> None:
    server = servers[line]
    data = load_line(line)
    wires = {op.wire for op in data.spec.operations.values() if op.kind == "action"}
    for action in ("version", "info"):
        if action not in wires:
            with pytest.raises(REFUSED, match="unknown action"):
                results(server, action, {})
            continue
        (envelope,) = results(server, action, {})
        answer = envelope["response"]
        assert envelope["action"] == action
        # A line whose server version is not known answers this project's own.
        own = ".".join(str(n) for n in SERVER_VERSION)
        assert answer["version"] == (data.handshake.version or own)
        if data.handshake.config:
            most = server.limits.max_message_bytes
            assert answer["config"] == {
                "grpc_max_decode_message_size": most,
                "grpc_max_encode_message_size": most,
                "grpc_target_encode_message_size": min(
                    data.handshake.config["grpc_target_encode_message_size"], most
                ),
            }
        else:
            assert "config" not in answer


@pytest.mark.parametrize("line", LINES)
def test_flight_info_app_metadata_has_the_lines_shape(
    line: str, servers: dict[str, RunningServer]
) -> None:
    server = servers[line]
    data = load_line(line)
    with client_of(server) as client:
        command = json.dumps({"resource_locator": "run"}).encode()
        info = client.get_flight_info(flight.FlightDescriptor.for_command(command))
    app = json.loads(info.app_metadata)
    keys = [k.split(":")[0] for k in field_names("sequence_app_metadata", line)]
    assert list(app) == keys
    session_keys = list(app["sessions"][0])
    assert session_keys[0] == ("locator" if "locator" in session_keys else "uuid")
    assert len(info.endpoints) == 2
    endpoint = info.endpoints[0]
    assert bool(endpoint.locations) == (data.wire["endpoint_location"] == "mosaico_uri")
    meta = json.loads(endpoint.app_metadata)
    assert list(meta) == [k.split(":")[0] for k in field_names("topic_endpoint_app_metadata", line)]
    if "data_info" in meta:
        assert meta["data_info"] == {
            "interval": {"start_ns": 10, "end_ns": 40},
            "total_row_count": 4,
            "total_bytes": meta["data_info"]["total_bytes"],
            "total_chunks_count": 1,
        }
        assert meta["ontology_tag"] == "IMU" and meta["time_window_info"] is None
        assert app["user_metadata"] == {"k": "v"}


def test_a_time_window_is_counted_where_the_shape_tells_it(
    servers: dict[str, RunningServer],
) -> None:
    server = servers[LINES[-1]]
    assert load_line(LINES[-1]).wire["topic_endpoint_app_metadata"] == "data_info"
    with client_of(server) as client:
        command = json.dumps(
            {"resource_locator": "run/imu", "timestamp_ns_start": 15, "timestamp_ns_end": 40}
        ).encode()
        info = client.get_flight_info(flight.FlightDescriptor.for_command(command))
    meta = json.loads(info.endpoints[0].app_metadata)
    assert meta["time_window_info"] == {"interval": {"start_ns": 20, "end_ns": 30}, "row_count": 2}


@pytest.mark.parametrize("line", LINES)
def test_schema_metadata_and_get_schema(line: str, servers: dict[str, RunningServer]) -> None:
    server = servers[line]
    data = load_line(line)
    descriptor = flight.FlightDescriptor.for_command(
        json.dumps({"resource_locator": "run/imu"}).encode()
    )
    with client_of(server) as client:
        info = client.get_flight_info(descriptor)
        table = client.do_get(info.endpoints[0].ticket).read_all()
        keys = set((table.schema.metadata or {}).keys())
        if data.wire["get_schema"] == "stored_schema":
            schema = client.get_schema(descriptor).schema
            assert schema.remove_metadata() == IMU_SCHEMA
            with pytest.raises(REFUSED, match="invalid argument"):
                client.get_schema(
                    flight.FlightDescriptor.for_command(json.dumps({"resource_locator": "run"}))
                )
        else:
            with pytest.raises(REFUSED, match="unimplemented"):
                client.get_schema(descriptor)
    assert table.num_rows == 4
    shape = data.wire["schema_metadata"]
    if shape == "none":
        assert keys == set()
    else:
        assert b"mosaico:properties" in keys
        properties = json.loads(table.schema.metadata[b"mosaico:properties"])
        counted = {"message_count", "timestamp_ns_min", "timestamp_ns_max"} <= set(properties)
        assert counted == (shape == "context_properties_counts")
        if counted:
            assert (properties["message_count"], properties["timestamp_ns_min"]) == (4, 10)


@pytest.mark.parametrize("line", LINES)
def test_query_answer_and_filter_keys(line: str, servers: dict[str, RunningServer]) -> None:
    server = servers[line]
    data = load_line(line)
    key = "name" if data.wire["query_filter"] == "name" else "locator"
    (envelope,) = results(server, "query", {"topic": {key: {"$eq": "run/imu2"}}})
    (item,) = envelope["response"]["items"]
    topics = item["topics"]
    assert [t["locator"] for t in topics] == ["run/imu2"]
    assert ("ontology_tag" in topics[0]) == (data.wire["query_answer"] == "ontology_tag")
    if "ontology_tag" in topics[0]:
        assert topics[0]["ontology_tag"] == "IMU"


# ---------------------------------------------------------------------------------------------
# Streaming filter actions


def filtering_lines() -> list[str]:
    return [n for n in LINES if "TOPIC_FILTER_CLUSTERIZE" in load_line(n).spec.operations]


def test_some_line_has_the_filter_actions() -> None:
    assert filtering_lines()


@pytest.mark.parametrize("line", filtering_lines())
def test_clusterize_answers_one_result_per_cluster(
    line: str, servers: dict[str, RunningServer]
) -> None:
    server = servers[line]
    body = {"locator": "run/imu", "ontology": {"IMU.acceleration.x": {"$gt": 5.0}}}
    one = results(server, "topic_filter_clusterize", {**body, "clustering_dt_ns": 0})
    assert one == [
        {
            "action": "topic_filter_clusterize",
            "response": {"ts": {"start_ns": 20, "end_ns": 30}, "id": 0},
        }
    ]
    low = {"locator": "run/imu", "ontology": {"IMU.acceleration.x": {"$gt": 0.5}}}
    split = results(server, "topic_filter_clusterize", {**low, "clustering_dt_ns": 5})
    assert [r["response"] for r in split] == [
        {"ts": {"start_ns": t, "end_ns": t}, "id": i} for i, t in enumerate([10, 20, 30, 40])
    ]
    none = {"locator": "run/imu", "ontology": {"IMU.acceleration.x": {"$gt": 50.0}}}
    assert results(server, "topic_filter_clusterize", {**none, "clustering_dt_ns": 0}) == []


@pytest.mark.parametrize("line", filtering_lines())
def test_clusterize_refuses_what_it_cannot_answer(
    line: str, servers: dict[str, RunningServer]
) -> None:
    server = servers[line]
    base = {"locator": "run/imu", "clustering_dt_ns": 0}
    before = server.model.snapshot()
    with pytest.raises(REFUSED, match="invalid argument"):
        results(server, "topic_filter_clusterize", {**base, "ontology": {}})
    with pytest.raises(REFUSED, match="invalid argument"):
        results(
            server,
            "topic_filter_clusterize",
            {**base, "ontology": {"GPS.acceleration.x": {"$gt": 1.0}}},
        )
    with pytest.raises(REFUSED, match="unimplemented"):
        results(
            server,
            "topic_filter_clusterize",
            {
                **base,
                "ontology": {"IMU.acceleration.x": {"$gt": 1.0}},
                "timestamp_range": {"start_ns": 0, "end_ns": 30},
            },
        )
    assert server.model.snapshot() == before


@pytest.mark.parametrize("line", filtering_lines())
def test_intersect_over_flight(line: str, servers: dict[str, RunningServer]) -> None:
    server = servers[line]
    high = {"IMU.acceleration.x": {"$gt": 5.0}}
    body = {
        "topics": [
            {"locator": "run/imu", "clustering_dt_ns": 0, "ontology": high},
            {"locator": "run/imu2", "clustering_dt_ns": 0, "ontology": high},
        ],
        "intersect_dt_ns": 0,
    }
    answer = results(server, "topic_filter_intersect", body)
    # run/imu matches [20, 30]; run/imu2 matches [15, 25]: they meet on [20, 25].
    assert answer == [
        {
            "action": "topic_filter_intersect",
            "response": {"ts": {"start_ns": 20, "end_ns": 25}, "id": 0},
        }
    ]
    with pytest.raises(REFUSED, match="at least two topics"):
        results(server, "topic_filter_intersect", {**body, "topics": body["topics"][:1]})


def test_cluster_and_intersect_walks() -> None:
    assert clusterize([1, 2, 10, 11, 30], 3) == [(1, 2), (10, 11), (30, 30)]
    assert clusterize([1, 2, 10, 11, 30], 0) == [(1, 30)]
    assert clusterize([], 0) == []
    # Overlaps answer [latest start, earliest end]; the stream that ends first advances.
    assert intersect([[(0, 10), (20, 30)], [(5, 25)]], 0) == [(5, 10), (20, 25)]
    # Disjoint clusters within the gap: the window is widened by floor(dt/2) and the rest.
    assert intersect([[(0, 10)], [(14, 20)]], 5) == [(12, 13)]
    assert intersect([[(0, 10)], [(16, 20)]], 5) == []
    # A stream that ends stops the walk.
    assert intersect([[(0, 1)], [(0, 1), (5, 6)]], 0) == [(0, 1)]


# ---------------------------------------------------------------------------------------------
# Permissions


@pytest.mark.parametrize("line", LINES)
def test_permission_model_of_the_line(line: str) -> None:
    data = load_line(line)
    model = ServerModel(protocol=line, auth=True)
    write_key = model.bootstrap_key(APIKeyPermissionEnum.Write, "writer")
    writer = model.authenticate(write_key)
    act_as = lambda wire, **body: model.handle_action(writer, wire, json.dumps(body).encode())  # noqa: E731
    act_as("sequence_create", locator="run", user_metadata={})
    reading = kind_of(lambda: model.list_sequences(writer, b""))
    if data.permissions.model == "granular":
        # Independent bits: writing does not give reading.
        assert reading is ErrorKind.PERMISSION_DENIED
    else:
        assert reading is None
    assert kind_of(lambda: act_as("sequence_delete", locator="run")) is (
        ErrorKind.PERMISSION_DENIED
    )
    assert list(model.sequences) == ["run"]


@pytest.mark.parametrize("line", LINES)
def test_a_missing_key_is_refused_as_the_lines_catalogue_says(line: str) -> None:
    model = ServerModel(protocol=line, auth=True)
    (case,) = [c for c in load_line(line).spec.common_errors if "header is missing" in c.when]
    assert kind_of(lambda: model.authenticate(None)) is ErrorKind(case.kind)
    assert kind_of(lambda: model.authenticate("msco_" + "a1" * 16 + "_abcdefgh")) is (
        ErrorKind.PERMISSION_DENIED
    )


# ---------------------------------------------------------------------------------------------
# serve --protocol and the pytest plugin


def test_serve_speaks_the_line_it_is_given() -> None:
    from tests.test_flight_server import Served

    served = Served("--protocol", "0.7")
    try:
        first = served.line()
        assert "(profile spec; protocol 0.7;" in first
        location = first.removeprefix("mosaico-fsm reference server on ").split(" ")[0]
        with flight.FlightClient(location) as client:
            (result,) = client.do_action(flight.Action("info", b"{}"))
            answer = json.loads(result.body.to_pybytes())["response"]
            with pytest.raises(REFUSED, match="unknown action 'version'"):
                list(client.do_action(flight.Action("version", b"{}")))
        assert answer["version"] == "0.7.0" and set(answer["config"]) == set(
            load_line("0.7").handshake.config
        )
    finally:
        served.kill()


def test_serve_refuses_a_profile_the_line_does_not_know() -> None:
    import subprocess
    import sys

    command = [sys.executable, "-m", "fsm.cli", "serve", "--port", "0"]
    done = subprocess.run(
        [*command, "--protocol", "0.7", "--profile", "mosaicod-0.3"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0 and done.stdout == ""
    assert "profile 'mosaicod-0.3' emulates a server build that does not speak" in done.stderr


@pytest.mark.mosaico_server(protocol="0.6")
def test_the_plugin_marker_takes_a_protocol(mosaico_server: Any) -> None:
    assert mosaico_server.model.line.name == "0.6"
    (envelope,) = results(mosaico_server.running, "version", {})
    assert envelope["response"]["version"] == load_line("0.6").handshake.version
    with pytest.raises(REFUSED, match="unknown action"):
        results(mosaico_server.running, "api_key_status", {})
