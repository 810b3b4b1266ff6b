"""The pytest plugin, used the way its users use it: in another project's test file."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

SDK_EXAMPLE = '''
import pytest
from mosaicolabs import IMU, Message, MosaicoClient, SessionLevelErrorPolicy, Vector3d


def ingest(client, name, n):
    """The code under test: writes n IMU records to a new sequence."""
    with client.sequence_create(name, {"robot": "r1"}, on_error=SessionLevelErrorPolicy.Delete) as seq:
        imu = seq.topic_create("imu", {}, IMU)
        for i in range(n):
            vec = Vector3d(x=1.0, y=2.0, z=3.0)
            imu.push(Message(timestamp_ns=i, data=IMU(acceleration=vec, angular_velocity=vec)))


def test_ingest_writes_one_locked_session(mosaico_server):
    with MosaicoClient.connect(host=mosaico_server.host, port=mosaico_server.port) as client:
        ingest(client, "run_1", 5)
    state = mosaico_server.model.snapshot()
    assert state["topics"]["run_1/imu"] == {"state": "locked", "rows": 5, "chunks": 1, "notifications": []}
    assert [s["state"] for s in state["sessions"].values()] == ["finalized"]


@pytest.mark.mosaico_server(auth=True, tls=True)
def test_with_a_key_over_tls(mosaico_server):
    key = mosaico_server.issue_key("write")
    with MosaicoClient.connect(
        host=mosaico_server.host, port=mosaico_server.port, api_key=key, tls_cert_path=mosaico_server.tls_cert_path
    ) as client:
        ingest(client, "run_2", 2)
    assert "run_2" in mosaico_server.model.snapshot()["sequences"]


@pytest.mark.mosaico_server(faults={"faults": [{"operation": "SESSION_CREATE", "kind": "internal"}]})
def test_a_refused_session(mosaico_server):
    with MosaicoClient.connect(host=mosaico_server.host, port=mosaico_server.port) as client:
        with pytest.raises(Exception):
            ingest(client, "run_3", 1)
    ops = [e["op"] for e in mosaico_server.trace.events if e.get("sequence") == "run_3"]
    assert ops == ["SEQUENCE_CREATE", "SESSION_CREATE"]


@pytest.mark.mosaico_server(profile="mosaicod-0.3")
def test_the_real_server_profile(mosaico_server):
    assert mosaico_server.model.profile == "mosaicod-0.3"


@pytest.mark.mosaico_server(profile="mosaicod-2026-03-31", auth=True)
def test_the_build_the_031_sdk_met(mosaico_server):
    key = mosaico_server.issue_key("write")
    with MosaicoClient.connect(host=mosaico_server.host, port=mosaico_server.port, api_key=key) as client:
        ingest(client, "run_4", 2)
    assert mosaico_server.model.snapshot()["topics"]["run_4/imu"]["rows"] == 2
    assert "MOSAICOD-MISSING-KEY-DENIED" in mosaico_server.model.deviations
'''

ENGINE_EXAMPLE = """
import pyarrow as pa
from fsm.engine import Client
from transport.flight.client import FlightTransport

SCHEMA = pa.schema([pa.field("timestamp_ns", pa.int64(), nullable=False), pa.field("x", pa.float64())])


def test_two_servers(mosaico_server_factory):
    a, b = mosaico_server_factory(), mosaico_server_factory(auth=True)
    assert a.port != b.port and a.api_key is None and b.api_key
    with Client(FlightTransport(b.location, api_key=b.api_key)) as client:
        with client.sequence_create("run") as seq:
            seq.topic_create("t", schema=SCHEMA, ontology_tag="x").push_row({"timestamp_ns": 1, "x": 1.0})
    assert "run" in b.model.snapshot()["sequences"] and not a.model.snapshot()["sequences"]


def test_unknown_option(mosaico_server_factory):
    import pytest
    with pytest.raises(TypeError, match="unknown mosaico_server option"):
        mosaico_server_factory(colour="blue")


def test_server_limits(mosaico_server_factory):
    s = mosaico_server_factory(max_streams=3, stream_idle_timeout=2.5, max_message_bytes=1 << 20)
    assert (s.running.limits.max_streams, s.running.limits.stream_idle_timeout) == (3, 2.5)
    assert s.running.limits.max_message_bytes == 1 << 20


def test_a_misspelt_fault_plan_is_refused(mosaico_server_factory):
    import pytest
    from fsm.errors import ArgumentError
    with pytest.raises(ArgumentError, match="no such operation in the catalogue: 'SESION_CREATE'"):
        mosaico_server_factory(faults={"faults": [{"operation": "SESION_CREATE"}]})


def test_trace_events_are_a_snapshot(mosaico_server):
    before = mosaico_server.trace.events
    transport = FlightTransport(mosaico_server.location)
    try:
        assert transport.list_sequences().is_ok
    finally:
        transport.close()
    assert before == ()
    assert [e["op"] for e in mosaico_server.trace.events] == ["LIST_FLIGHTS"]
"""


def test_plugin_serves_sdk_based_code(pytester: pytest.Pytester) -> None:
    pytest.importorskip(
        "mosaicolabs", reason="the interop extra installs the SDK this example uses"
    )
    pytester.makepyfile(test_sdk_example=SDK_EXAMPLE)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=5)


def test_plugin_factory_and_options(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_engine_example=ENGINE_EXAMPLE)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=5)


def test_plugin_marker_is_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--markers")
    result.stdout.fnmatch_lines(["*mosaico_server(profile=*"])
