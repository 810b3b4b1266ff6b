"""The real SDK 0.3.2 checked against the tables from what the server saw it do.

Each scenario runs the SDK against the reference server with a server trace; pushes the SDK
accepted are added to the trace as client annotations (the server cannot see a record the
SDK kept in its buffer). The clean scenarios conform; the known SDK deviations are named.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest

mosaicolabs = pytest.importorskip("mosaicolabs", reason="the interop extra installs the SDK")

from mosaicolabs import (  # noqa: E402
    GPS,
    IMU,
    CompressedImage,
    Message,
    MosaicoClient,
    SessionLevelErrorPolicy,
    TopicLevelErrorPolicy,
    Vector3d,
)
from mosaicolabs.handlers.topic_writer import TopicWriter  # noqa: E402

from fsm.conformance.clients import ClientReport, check_client_trace, group_by_sequence  # noqa: E402
from fsm.faults import Fault, FaultEffect, FaultPlan, FaultSchedule  # noqa: E402
from fsm.outcome import ErrorKind  # noqa: E402
from fsm.spec import load_spec  # noqa: E402
from transport.flight.server import RunningServer, start_server  # noqa: E402
from transport.server.model import ServerModel  # noqa: E402
from transport.server.trace import ServerTrace  # noqa: E402

pytestmark = pytest.mark.interop
SPEC = load_spec()
REPORT, DELETE = SessionLevelErrorPolicy.Report, SessionLevelErrorPolicy.Delete


class Boom(Exception):
    pass


@pytest.fixture(autouse=True)
def quiet_sdk() -> Iterator[None]:
    """The SDK logs every failure it handles; the tests look at what it did instead."""
    logging.disable(logging.CRITICAL)
    yield
    logging.disable(logging.NOTSET)


def _record_pushes(trace: ServerTrace, monkeypatch: pytest.MonkeyPatch) -> None:
    """Add a PUSH annotation to the trace for every push the SDK accepts."""
    original = TopicWriter.push

    def push(self: Any, message: Message) -> None:
        original(self, message)
        encoded = message._encode()
        batch = pa.RecordBatch.from_pylist(
            [encoded], schema=Message._get_schema(type(message.data))
        )
        trace.observe(
            {
                "source": "client",
                "op": "PUSH",
                "sequence": self._sequence_name.strip("/"),
                "topic": f"{self._sequence_name.strip('/')}/{self._name.strip('/')}",
                "rows": 1,
                "bytes": pa.ipc.get_record_batch_size(batch),
                "outcome": "ok",
            }
        )

    monkeypatch.setattr(TopicWriter, "push", push)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningServer]:
    running = start_server(ServerModel(seed=0))
    running.model.trace = ServerTrace()
    _record_pushes(running.model.trace, monkeypatch)
    yield running
    running.stop()


def _client(server: RunningServer) -> MosaicoClient:
    return MosaicoClient.connect(host=server.host, port=server.port)


def _report(server: RunningServer, sequence: str) -> ClientReport:
    assert server.model.trace is not None
    events = group_by_sequence(server.model.trace.events)[sequence]
    return check_client_trace(events, SPEC, sequence=sequence)


def _imu(i: int) -> Message:
    vec = Vector3d(x=1.0 + i, y=2.0, z=3.0)
    return Message(timestamp_ns=1_000 + i, data=IMU(acceleration=vec, angular_velocity=vec))


def _write(
    client: MosaicoClient, name: str, n: int, *, policy: Any = REPORT, fail: bool = False
) -> None:
    with client.sequence_create(name, {"robot": "r1"}, on_error=policy) as seq:
        imu = seq.topic_create("imu/front", {}, IMU)
        for i in range(n):
            imu.push(_imu(i))
        if fail:
            raise Boom("failure in the session block")


# -----------------------------------------------------------------------------------------------
# Clean scenarios conform


def test_a_clean_writer_with_several_types_conforms(server: RunningServer) -> None:
    with _client(server) as client, client.sequence_create("clean", {}) as seq:
        imu = seq.topic_create("imu", {}, IMU)
        gps = seq.topic_create("gps", {}, GPS)
        cam = seq.topic_create("cam", {}, CompressedImage)
        for i in range(5):
            imu.push(_imu(i))
            gps.push(
                Message(timestamp_ns=i, data=GPS(position=mosaicolabs.Point3d(x=1.0, y=2.0, z=3.0)))
            )
            cam.push(
                Message(
                    timestamp_ns=i,
                    data=CompressedImage(data=b"\xff\xd8" + bytes(100), format="jpeg"),
                )
            )
    report = _report(server, "clean")
    assert report.conforms, [str(f) for f in report.findings]
    assert report.role == "writer"
    assert sum("exit-ok" in line for line in report.accepted) == 1


def test_an_update_conforms(server: RunningServer) -> None:
    with _client(server) as client:
        _write(client, "upd", 3)
        handler = client.sequence_handler("upd")
        assert handler is not None
        with handler.update(on_error=REPORT) as upd:
            upd.topic_create("imu/back", {}, IMU).push(_imu(9))
    report = _report(server, "upd")
    assert report.conforms, [str(f) for f in report.findings]
    assert report.role == "writer, updater"


def test_topic_policy_ignore_conforms(server: RunningServer) -> None:
    with _client(server) as client, client.sequence_create("ignore", {}) as seq:
        imu = seq.topic_create("imu", {}, IMU, on_error=TopicLevelErrorPolicy.Ignore)
        imu.push(_imu(0))
        with imu:
            raise Boom("ignored")
        imu.push(_imu(1))
    report = _report(server, "ignore")
    assert report.conforms, [str(f) for f in report.findings]


# -----------------------------------------------------------------------------------------------
# Known SDK deviations, named


def test_delete_sends_sequence_delete_twice(server: RunningServer) -> None:
    with _client(server) as client, pytest.raises(Exception, match="Error sending 'delete'"):
        _write(client, "purged", 3, policy=DELETE, fail=True)
    report = _report(server, "purged")
    assert "SDK-DOUBLE-SEQUENCE-DELETE" in report.deviations
    assert report.violation is None


def test_a_failed_session_create_leaves_an_orphan_sequence(server: RunningServer) -> None:
    server.server.faults = FaultSchedule(
        FaultPlan((Fault("SESSION_CREATE", 1, FaultEffect.FAIL, ErrorKind.INTERNAL),))
    )
    with (
        _client(server) as client,
        pytest.raises(
            Exception,
            match="Flight returned internal error, with message: injected fault SESSION_CREATE",
        ),
    ):
        _write(client, "orphan", 1)
    assert "orphan" in server.model.snapshot()["sequences"], "the SDK left the sequence behind"
    report = _report(server, "orphan")
    assert report.deviations == ("SDK-ORPHAN-SEQUENCE",)


def test_report_drops_the_buffered_records(server: RunningServer) -> None:
    with _client(server) as client, pytest.raises(Boom):
        _write(client, "dropped", 10, policy=REPORT, fail=True)
    assert server.model.snapshot()["topics"]["dropped/imu/front"]["rows"] == 0
    report = _report(server, "dropped")
    assert report.deviations == ("SDK-REPORT-DROPS-BUFFER",), [str(f) for f in report.findings]


def test_an_unfinalizable_session_under_report_is_not_reported(server: RunningServer) -> None:
    with (
        _client(server) as client,
        contextlib.suppress(Exception),
        client.sequence_create("empty", {}, on_error=REPORT),
    ):
        pass
    report = _report(server, "empty")
    assert report.deviations == ("SDK-FINALIZE-REFUSED-UNREPORTED",), [
        str(f) for f in report.findings
    ]


def test_a_record_over_16_mib_is_dropped_silently(server: RunningServer) -> None:
    with _client(server) as client, client.sequence_create("large", {}) as seq:
        cam = seq.topic_create("cam", {}, CompressedImage)
        cam.push(
            Message(
                timestamp_ns=1, data=CompressedImage(data=bytes(17 * 1024 * 1024), format="raw")
            )
        )
        cam.push(Message(timestamp_ns=2, data=CompressedImage(data=bytes(10), format="raw")))
    assert server.model.snapshot()["topics"]["large/cam"]["rows"] == 1
    report = _report(server, "large")
    assert report.deviations == ("SDK-SILENT-DROP-LARGE",), [str(f) for f in report.findings]
