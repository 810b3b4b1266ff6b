"""The Flight reference server on loopback: TLS, `mosaico-fsm serve`, the RPCs outside the
protocol, the wire shapes the real SDK reads (PROTOCOL.md §4, §7) and error codes."""

from __future__ import annotations

import json
import logging
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyarrow import flight

from fsm.enums import FlightAction
from fsm.faults import Fault, FaultEffect, FaultPlan
from fsm.outcome import ErrorKind, Outcome, OutcomeStatus
from fsm.transport import Descriptor, Transport
from tests import wire
from tests.harness import (
    SCHEMA,
    batch,
    create_sequence,
    create_topic,
    failed_with,
    ok,
    topic_args,
    wait_until,
)
from transport.flight.client import FlightTransport
from transport.flight.server import RunningServer, TlsFiles, start_server
from transport.pytest_plugin import self_signed_certificate
from transport.server.auth import HEADER
from transport.server.model import ServerModel
from transport.server.trace import ServerTrace

pytestmark = pytest.mark.flight

TIMEOUT = 20.0
"""Seconds before a Flight call or a read of the child's output is given up (no hangs)."""
STOP_TIMEOUT = 10.0
"""Seconds a stopping server or a cancelled stream may take before the test fails."""


def write_topic(
    t: Transport,
    sequence: str,
    topics: dict[str, list[pa.RecordBatch]],
    metadata: dict[str, Any] | None = None,
    *,
    finalize: bool = True,
) -> str:
    """Create `sequence` with one session holding `topics` (each streamed, then locked)."""
    ok(
        t.action(
            FlightAction.SEQUENCE_CREATE,
            {"locator": sequence, "user_metadata": metadata or {}},
        )
    )
    session = ok(t.action(FlightAction.SESSION_CREATE, {"locator": sequence}))["uuid"]
    for name, batches in topics.items():
        locator = f"{sequence}/{name}"
        topic_uuid = ok(
            t.action(
                FlightAction.TOPIC_CREATE,
                {
                    "session_uuid": session,
                    "locator": locator,
                    "serialization_format": "default",
                    "ontology_tag": "imu",
                    "user_metadata": {"topic": name},
                },
            )
        )["uuid"]
        stream = ok(t.open_stream(Descriptor.for_topic(locator, topic_uuid), SCHEMA))
        for b in batches:
            ok(stream.write(b))
        ok(stream.close())
    if finalize:
        ok(t.action(FlightAction.SESSION_FINALIZE, {"session_uuid": session}))
    return str(session)


@pytest.fixture
def server() -> Iterator[RunningServer]:
    with start_server(ServerModel(seed=0)) as running:
        yield running


@pytest.fixture
def client(server: RunningServer) -> Iterator[FlightTransport]:
    t = FlightTransport(server.location, timeout=TIMEOUT)
    yield t
    t.close()


# ---------------------------------------------------------------------------------------------
# TLS


def self_signed(tmp_path: Path) -> TlsFiles:
    """A certificate for 127.0.0.1 and localhost, signed by its own key, as PEM files."""
    return self_signed_certificate(tmp_path)


def test_tls_round_trip(tmp_path: Path) -> None:
    """Over grpc+tls with the certificate as root, a topic is written and read back."""
    tls = self_signed(tmp_path)
    with start_server(ServerModel(seed=0), tls=tls) as running:
        assert running.location == f"grpc+tls://127.0.0.1:{running.port}"
        t = FlightTransport(running.location, tls_root_certs=tls.cert.read_bytes(), timeout=TIMEOUT)
        try:
            write_topic(t, "tls_run", {"imu": [batch(0, 4), batch(4, 3)]})
            assert ok(t.list_sequences()) == ["tls_run"]
            topic = ok(t.flight_info(Descriptor.for_resource("tls_run/imu")))
            data = ok(t.read(topic.ticket))
            assert data.table().column("timestamp_ns").to_pylist() == list(range(7))
        finally:
            t.close()


def test_tls_client_without_root_certificate_fails(tmp_path: Path) -> None:
    """A client that does not trust the self-signed certificate gets no answer."""
    tls = self_signed(tmp_path)
    with start_server(ServerModel(seed=0), tls=tls) as running:
        t = FlightTransport(running.location, timeout=TIMEOUT)
        try:
            outcome = t.list_sequences()
            assert outcome.status is not OutcomeStatus.OK
            outcome = t.action(FlightAction.SEQUENCE_CREATE, {"locator": "x", "user_metadata": {}})
            assert outcome.status is not OutcomeStatus.OK
        finally:
            t.close()
        assert running.model.snapshot()["sequences"] == {}


def test_plain_client_cannot_talk_to_a_tls_server(tmp_path: Path) -> None:
    """A grpc:// client does not reach a TLS server."""
    tls = self_signed(tmp_path)
    with start_server(ServerModel(seed=0), tls=tls) as running:
        t = FlightTransport(f"grpc://127.0.0.1:{running.port}", timeout=TIMEOUT)
        try:
            assert t.list_sequences().status is not OutcomeStatus.OK
        finally:
            t.close()


# ---------------------------------------------------------------------------------------------
# `mosaico-fsm serve` as a process


class Served:
    """A `mosaico-fsm serve` child process whose stdout lines are read on a thread."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fsm.cli", "serve", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr_text = ""
        self._out = threading.Thread(target=self._pump_stdout, daemon=True)
        self._err = threading.Thread(target=self._pump_stderr, daemon=True)
        self._out.start()
        self._err.start()

    def _pump_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        self.stderr_text = self.proc.stderr.read()

    def line(self) -> str:
        item = self.lines.get(timeout=TIMEOUT)
        assert item is not None, f"serve exited early: {self.proc.poll()} {self.stderr_text}"
        return item

    def location(self) -> str:
        first = self.line()
        prefix = "mosaico-fsm reference server on "
        assert first.startswith(prefix), first
        return first[len(prefix) :].split(" ")[0]

    def stop(self, sig: signal.Signals) -> tuple[int, list[str]]:
        """Send `sig`, wait for the exit; (exit code, remaining stdout lines)."""
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"serve did not stop within {STOP_TIMEOUT} s of {sig.name}")
        self._out.join(timeout=TIMEOUT)
        self._err.join(timeout=TIMEOUT)
        rest = []
        while True:
            item = self.lines.get(timeout=TIMEOUT)
            if item is None:
                break
            rest.append(item)
        return code, rest

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=TIMEOUT)


@pytest.fixture
def served() -> Iterator[list[Served]]:
    started: list[Served] = []
    yield started
    for s in started:
        s.kill()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_answers_and_stops_cleanly(served: list[Served], sig: signal.Signals) -> None:
    """The served server answers calls; each signal stops it with exit code 0."""
    s = Served("--log-level", "debug")
    served.append(s)
    location = s.location()
    assert location.startswith("grpc://127.0.0.1:")
    t = FlightTransport(location, timeout=TIMEOUT)
    try:
        assert ok(t.list_sequences()) == []
        ok(t.action(FlightAction.SEQUENCE_CREATE, {"locator": "served", "user_metadata": {}}))
        assert ok(t.list_sequences()) == ["served"]
    finally:
        t.close()
    code, rest = s.stop(sig)
    assert code == 0, s.stderr_text[-2000:]
    assert f"stopped on signal {int(sig)}" in rest
    # --log-level debug logs each request.
    assert "DoAction sequence_create" in s.stderr_text
    assert "ListFlights" in s.stderr_text


def test_serve_exits_although_a_client_holds_a_stream_open(served: list[Served]) -> None:
    """A client that opened a DoPut and went quiet does not keep `serve` from exiting."""
    s = Served()
    served.append(s)
    t = FlightTransport(s.location(), timeout=TIMEOUT)
    try:
        topic = create_topic(t, create_sequence(t, "held"), "held/t")
        ok(t.open_stream(Descriptor.for_topic("held/t", topic), SCHEMA))  # and then silence
        code, rest = s.stop(signal.SIGTERM)  # fails the test if serve hangs
        assert code == 0, s.stderr_text[-2000:]
        assert rest == ["stopped on signal 15"]
        # A silent stream the server had opened was cancelled at stop, named in a warning.
        if "left open by their client" in s.stderr_text:
            assert "DoPut stream(s) left open by their client (held/t)" in s.stderr_text
    finally:
        t.close()


def test_serve_info_level_does_not_log_requests(served: list[Served]) -> None:
    """At the default level, requests are not logged."""
    s = Served()
    served.append(s)
    t = FlightTransport(s.location(), timeout=TIMEOUT)
    try:
        ok(t.action(FlightAction.SEQUENCE_CREATE, {"locator": "quiet", "user_metadata": {}}))
    finally:
        t.close()
    code, _ = s.stop(signal.SIGTERM)
    assert code == 0, s.stderr_text[-2000:]
    assert "DoAction" not in s.stderr_text


def test_serve_with_api_key_auth_prints_the_bootstrap_key(served: list[Served]) -> None:
    """With --api-key-auth a call without key is unauthenticated; the printed key works."""
    s = Served("--api-key-auth")
    served.append(s)
    location = s.location()
    key_line = s.line()
    prefix = "bootstrap manage key: "
    assert key_line.startswith(prefix), key_line
    token = key_line[len(prefix) :]
    anonymous = FlightTransport(location, timeout=TIMEOUT)
    keyed = FlightTransport(location, api_key=token, timeout=TIMEOUT)
    try:
        refused = anonymous.list_sequences()
        assert refused.status is OutcomeStatus.FAILED
        assert refused.kind is ErrorKind.UNAUTHENTICATED
        refused = anonymous.action(
            FlightAction.SEQUENCE_CREATE, {"locator": "nokey", "user_metadata": {}}
        )
        assert refused.kind is ErrorKind.UNAUTHENTICATED
        ok(keyed.action(FlightAction.SEQUENCE_CREATE, {"locator": "keyed", "user_metadata": {}}))
        assert ok(keyed.list_sequences()) == ["keyed"]
    finally:
        anonymous.close()
        keyed.close()
    code, rest = s.stop(signal.SIGINT)
    assert code == 0, s.stderr_text[-2000:]
    assert f"stopped on signal {int(signal.SIGINT)}" in rest


def test_serve_writes_the_bootstrap_key_to_a_file(served: list[Served], tmp_path: Path) -> None:
    """--bootstrap-key-file receives the key instead of stdout."""
    key_file = tmp_path / "key.txt"
    s = Served("--api-key-auth", "--bootstrap-key-file", str(key_file))
    served.append(s)
    location = s.location()
    assert s.line() == f"bootstrap manage key written to {key_file}"
    token = key_file.read_text().strip()
    assert token.startswith("msco_")
    t = FlightTransport(location, api_key=token, timeout=TIMEOUT)
    try:
        assert ok(t.action(FlightAction.VERSION, {}))["version"]
    finally:
        t.close()
    code, rest = s.stop(signal.SIGTERM)
    assert code == 0, s.stderr_text[-2000:]
    assert not any(token in line for line in rest)


def test_serve_applies_a_fault_plan(served: list[Served], tmp_path: Path) -> None:
    """--fault-plan makes the named call fail over the wire."""
    plan = FaultPlan((Fault("SEQUENCE_CREATE", 2, FaultEffect.FAIL, ErrorKind.INTERNAL),))
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(plan.dumps())
    s = Served("--fault-plan", str(plan_file), "--profile", "mosaicod-0.3")
    served.append(s)
    first = s.line()
    assert "(profile mosaicod-0.3;" in first
    location = first.split(" on ", 1)[1].split(" ")[0]
    t = FlightTransport(location, timeout=TIMEOUT)
    try:
        ok(t.action(FlightAction.SEQUENCE_CREATE, {"locator": "f1", "user_metadata": {}}))
        failed = t.action(FlightAction.SEQUENCE_CREATE, {"locator": "f2", "user_metadata": {}})
        assert failed.status is OutcomeStatus.FAILED
        assert failed.kind is ErrorKind.INTERNAL
        ok(t.action(FlightAction.SEQUENCE_CREATE, {"locator": "f3", "user_metadata": {}}))
        assert sorted(ok(t.list_sequences())) == ["f1", "f3"]
    finally:
        t.close()
    code, _ = s.stop(signal.SIGTERM)
    assert code == 0, s.stderr_text[-2000:]


# ---------------------------------------------------------------------------------------------
# RPCs outside the protocol


def test_list_actions_is_unimplemented(server: RunningServer) -> None:
    """ListActions answers UNIMPLEMENTED."""
    raw = flight.FlightClient(server.location)
    try:
        with pytest.raises(pa.ArrowNotImplementedError):
            list(raw.list_actions())
    finally:
        raw.close()


def test_get_schema_is_unimplemented(server: RunningServer) -> None:
    """GetSchema answers UNIMPLEMENTED, for any descriptor."""
    raw = flight.FlightClient(server.location)
    try:
        with pytest.raises(pa.ArrowNotImplementedError):
            raw.get_schema(flight.FlightDescriptor.for_path("anything"))
        with pytest.raises(pa.ArrowNotImplementedError):
            raw.get_schema(flight.FlightDescriptor.for_command(b'{"resource_locator":"a"}'))
    finally:
        raw.close()


def test_do_exchange_is_unimplemented(server: RunningServer) -> None:
    """DoExchange answers UNIMPLEMENTED: raised by the call itself when the answer has already
    arrived, otherwise when the exchange is read, and again when it is closed."""
    raw = flight.FlightClient(server.location)
    try:
        try:
            writer, reader = raw.do_exchange(flight.FlightDescriptor.for_path("anything"))
        except pa.ArrowNotImplementedError:
            return
        with pytest.raises(pa.ArrowNotImplementedError):
            writer.done_writing()
            reader.read_all()
        with pytest.raises(pa.ArrowNotImplementedError):
            writer.close()
    finally:
        raw.close()


def test_handshake_is_unimplemented(server: RunningServer) -> None:
    """Handshake (pyarrow's authenticate) answers UNIMPLEMENTED: keys travel in a header."""
    raw = flight.FlightClient(server.location)
    try:
        with pytest.raises(pa.ArrowNotImplementedError):
            raw.authenticate_basic_token("user", "password")

        class Handler(flight.ClientAuthHandler):  # type: ignore[misc]
            def authenticate(self, outgoing: Any, incoming: Any) -> None:
                outgoing.write(b"hello")
                incoming.read()

            def get_token(self) -> bytes:
                return b""

        with pytest.raises(pa.ArrowNotImplementedError):
            raw.authenticate(Handler())
    finally:
        raw.close()
    assert server.model.snapshot()["sequences"] == {}


# ---------------------------------------------------------------------------------------------
# Wire shapes the real SDK reads


def raw_action(raw: flight.FlightClient, name: str, body: Any, **kw: Any) -> Any:
    """One DoAction over a bare pyarrow client; the decoded JSON of its single Result."""
    results = list(raw.do_action(flight.Action(name, json.dumps(body).encode()), **kw))
    assert len(results) == 1
    return json.loads(results[0].body.to_pybytes())


def test_do_action_envelope(server: RunningServer) -> None:
    """Every DoAction answers one Result {"action": <name>, "response": ...}."""
    raw = flight.FlightClient(server.location)
    try:
        assert raw_action(raw, "sequence_create", {"locator": "env", "user_metadata": {}}) == {
            "action": "sequence_create",
            "response": None,
        }
        reply = raw_action(raw, "session_create", {"locator": "env"})
        assert set(reply) == {"action", "response"}
        assert reply["action"] == "session_create"
        assert set(reply["response"]) == {"uuid"}
        session = reply["response"]["uuid"]
        reply = raw_action(
            raw,
            "topic_create",
            topic_args(session, "env/imu"),
        )
        assert reply["action"] == "topic_create"
        assert set(reply["response"]) == {"uuid"}
        assert reply["response"]["uuid"] != session
        reply = raw_action(raw, "version", {})
        assert reply["action"] == "version"
        assert set(reply["response"]) == {"version", "semver"}
        assert set(reply["response"]["semver"]) == {"major", "minor", "patch", "pre"}
        reply = raw_action(raw, "query", {"sequence": {"locator": {"$eq": "env"}}})
        assert reply == {
            "action": "query",
            "response": {"items": [{"sequence": "env", "topics": [{"locator": "env/imu"}]}]},
        }
        reply = raw_action(raw, "sequence_notification_list", {"locator": "env"})
        assert reply == {
            "action": "sequence_notification_list",
            "response": {"notifications": []},
        }
    finally:
        raw.close()


def test_sequence_flight_info_shape(server: RunningServer, client: FlightTransport) -> None:
    """A sequence's FlightInfo: schema metadata, app_metadata with sessions, one endpoint per
    topic of every session with a mosaico:/seq/topic location."""
    first = write_topic(
        client, "shape", {"imu/front": [batch(10, 3), batch(13, 2)]}, {"project": "apollo"}
    )
    second = ok(client.action(FlightAction.SESSION_CREATE, {"locator": "shape"}))["uuid"]
    ok(
        client.action(
            FlightAction.TOPIC_CREATE,
            {
                "session_uuid": second,
                "locator": "shape/gps",
                "serialization_format": "ragged",
                "ontology_tag": "gps",
                "user_metadata": {},
            },
        )
    )
    raw = flight.FlightClient(server.location)
    try:
        descriptor = flight.FlightDescriptor.for_command(
            json.dumps({"resource_locator": "shape"}).encode()
        )
        info = raw.get_flight_info(descriptor)
    finally:
        raw.close()
    assert list(info.schema.names) == []
    assert info.schema.metadata == {
        b"mosaico:context": b"sequence",
        b"mosaico:user_metadata": json.dumps({"project": "apollo"}).encode(),
    }
    app = json.loads(info.app_metadata)
    assert set(app) == {"created_at_ns", "resource_locator", "sessions"}
    assert app["resource_locator"] == "shape"
    assert isinstance(app["created_at_ns"], int)
    sessions = {s["uuid"]: s for s in app["sessions"]}
    assert list(sessions) == [first, second]
    for s in app["sessions"]:
        assert set(s) == {"uuid", "created_at_ns", "completed_at_ns", "topics", "locked"}
    assert sessions[first]["locked"] is True
    assert isinstance(sessions[first]["completed_at_ns"], int)
    assert sessions[first]["topics"] == ["shape/imu/front"]
    assert sessions[second]["locked"] is False
    assert sessions[second]["completed_at_ns"] is None
    assert sessions[second]["topics"] == ["shape/gps"]

    assert len(info.endpoints) == 2
    by_locator = {}
    for endpoint in info.endpoints:
        assert [loc.uri.decode() for loc in endpoint.locations] in (
            ["mosaico:/shape/imu/front"],
            ["mosaico:/shape/gps"],
        )
        assert endpoint.ticket.ticket
        meta = json.loads(endpoint.app_metadata)
        assert set(meta) == {
            "created_at_ns",
            "completed_at_ns",
            "locked",
            "resource_locator",
            "info",
        }
        assert endpoint.locations[0].uri.decode() == f"mosaico:/{meta['resource_locator']}"
        by_locator[meta["resource_locator"]] = meta
    imu = by_locator["shape/imu/front"]
    assert imu["locked"] is True
    assert isinstance(imu["completed_at_ns"], int)
    assert imu["info"]["chunks_number"] == 2
    assert imu["info"]["total_bytes"] > 0
    assert imu["info"]["timestamp"] == {"start_ns": 10, "end_ns": 14}
    assert set(imu["info"]) == {"chunks_number", "total_bytes", "timestamp"}
    gps = by_locator["shape/gps"]
    assert gps["locked"] is False
    assert gps["completed_at_ns"] is None
    assert gps["info"] is None


def test_empty_stream_locks_a_topic_without_time_range(
    server: RunningServer, client: FlightTransport
) -> None:
    """A stream with no batch locks the topic: info has 0 chunks and a null timestamp."""
    write_topic(client, "empty", {"imu": []}, finalize=False)
    raw = flight.FlightClient(server.location)
    try:
        descriptor = flight.FlightDescriptor.for_command(
            json.dumps({"resource_locator": "empty"}).encode()
        )
        (endpoint,) = raw.get_flight_info(descriptor).endpoints
    finally:
        raw.close()
    meta = json.loads(endpoint.app_metadata)
    assert meta["locked"] is True
    assert meta["info"] == {"chunks_number": 0, "total_bytes": 0, "timestamp": None}


def test_time_range_descriptor_limits_the_read(client: FlightTransport) -> None:
    """A GetFlightInfo time range travels in the ticket: DoGet answers only rows inside it."""
    write_topic(client, "range", {"imu": [batch(0, 5), batch(5, 5)]})
    topic = ok(client.flight_info(Descriptor.for_resource("range/imu", start_ns=3, end_ns=6)))
    stamps = set(ok(client.read(topic.ticket)).table().column("timestamp_ns").to_pylist())
    assert {3, 4, 5} <= stamps <= {3, 4, 5, 6}
    full = ok(client.flight_info(Descriptor.for_resource("range/imu")))
    assert len(ok(client.read(full.ticket)).table()) == 10


def test_topic_flight_info_shape(server: RunningServer, client: FlightTransport) -> None:
    """A topic's FlightInfo: the data schema with mosaico:context/properties/user_metadata,
    one endpoint whose ticket DoGet accepts."""
    write_topic(client, "tshape", {"imu": [batch(0, 5)]})
    raw = flight.FlightClient(server.location)
    try:
        descriptor = flight.FlightDescriptor.for_command(
            json.dumps({"resource_locator": "tshape/imu"}).encode()
        )
        info = raw.get_flight_info(descriptor)
        assert info.schema.names == ["timestamp_ns", "value"]
        meta = info.schema.metadata
        assert meta[b"mosaico:context"] == b"topic"
        assert json.loads(meta[b"mosaico:properties"]) == {
            "serialization_format": "default",
            "ontology_tag": "imu",
        }
        assert json.loads(meta[b"mosaico:user_metadata"]) == {"topic": "imu"}
        (endpoint,) = info.endpoints
        assert [loc.uri.decode() for loc in endpoint.locations] == ["mosaico:/tshape/imu"]
        endpoint_meta = json.loads(endpoint.app_metadata)
        assert endpoint_meta["resource_locator"] == "tshape/imu"
        assert endpoint_meta["info"]["chunks_number"] == 1
        table = raw.do_get(endpoint.ticket).read_all()
        assert table.column("timestamp_ns").to_pylist() == [0, 1, 2, 3, 4]
        assert table.schema.metadata[b"mosaico:context"] == b"topic"
    finally:
        raw.close()


def test_list_flights_gives_path_descriptors(
    server: RunningServer, client: FlightTransport
) -> None:
    """ListFlights: one FlightInfo per sequence with a PATH descriptor [name]."""
    for name in ("lf_a", "lf_b"):
        ok(client.action(FlightAction.SEQUENCE_CREATE, {"locator": name, "user_metadata": {}}))
    raw = flight.FlightClient(server.location)
    try:
        infos = list(raw.list_flights())
        assert len(infos) == 2
        for info in infos:
            assert info.descriptor.descriptor_type == flight.DescriptorType.PATH
        assert sorted(info.descriptor.path[0].decode() for info in infos) == ["lf_a", "lf_b"]
        assert [len(info.descriptor.path) for info in infos] == [1, 1]
        for info in infos:
            (endpoint,) = info.endpoints
            assert endpoint.ticket.ticket == info.descriptor.path[0]
        assert len(list(raw.list_flights(b"/"))) == 2
        with pytest.raises(pa.ArrowInvalid):
            list(raw.list_flights(b"lf_a"))
    finally:
        raw.close()


def test_do_put_answers_no_put_results(server: RunningServer, client: FlightTransport) -> None:
    """A DoPut with the CMD descriptor is accepted; the server sends no PutResult."""
    ok(client.action(FlightAction.SEQUENCE_CREATE, {"locator": "put", "user_metadata": {}}))
    session = ok(client.action(FlightAction.SESSION_CREATE, {"locator": "put"}))["uuid"]
    topic_uuid = ok(
        client.action(
            FlightAction.TOPIC_CREATE,
            topic_args(session, "put/imu"),
        )
    )["uuid"]
    raw = flight.FlightClient(server.location)
    try:
        descriptor = flight.FlightDescriptor.for_command(
            json.dumps({"resource_locator": "put/imu", "topic_uuid": topic_uuid}).encode()
        )
        writer, reader = raw.do_put(descriptor, SCHEMA)
        writer.write_batch(batch(0, 2))
        writer.done_writing()
        assert reader.read() is None
        writer.close()
    finally:
        raw.close()
    topic = server.model.snapshot()["topics"]["put/imu"]
    assert topic["state"] == "locked"
    assert topic["rows"] == 2


def test_api_key_header_is_required() -> None:
    """With auth on, calls need the mosaico-api-key-token header; another header name does
    not count."""
    with start_server(ServerModel(seed=0, auth=True)) as running:
        token = running.api_keys["manage"]
        raw = flight.FlightClient(running.location)
        try:
            with pytest.raises(flight.FlightUnauthenticatedError):
                list(raw.list_flights())
            with pytest.raises(flight.FlightUnauthenticatedError):
                raw_action(raw, "version", {})
            wrong = flight.FlightCallOptions(headers=[(b"authorization", token.encode())])
            with pytest.raises(flight.FlightUnauthenticatedError):
                raw_action(raw, "version", {}, options=wrong)
            bad = flight.FlightCallOptions(headers=[(HEADER.encode(), b"msco_nope")])
            with pytest.raises(flight.FlightUnauthorizedError):
                raw_action(raw, "version", {}, options=bad)
            good = flight.FlightCallOptions(headers=[(HEADER.encode(), token.encode())])
            assert HEADER == "mosaico-api-key-token"
            assert raw_action(raw, "version", {}, options=good)["action"] == "version"
            reply = raw_action(
                raw, "sequence_create", {"locator": "auth", "user_metadata": {}}, options=good
            )
            assert reply == {"action": "sequence_create", "response": None}
            assert [i.descriptor.path[0] for i in raw.list_flights(options=good)] == [b"auth"]
        finally:
            raw.close()


# ---------------------------------------------------------------------------------------------
# Error codes over the wire
#


def test_refusals_keep_their_kind_over_the_wire() -> None:
    """Each refusal the server makes reaches the Flight client with the same kind."""
    with start_server(ServerModel(seed=0, auth=True)) as running:
        manage = FlightTransport(
            running.location, api_key=running.api_keys["manage"], timeout=TIMEOUT
        )
        anonymous = FlightTransport(running.location, timeout=TIMEOUT)
        try:
            read_token = ok(
                manage.action(
                    FlightAction.API_KEY_CREATE, {"permissions": "read", "description": "r"}
                )
            )["api_key_token"]
            reader = FlightTransport(running.location, api_key=read_token, timeout=TIMEOUT)
            ok(manage.action(FlightAction.SEQUENCE_CREATE, {"locator": "k", "user_metadata": {}}))
            session = ok(manage.action(FlightAction.SESSION_CREATE, {"locator": "k"}))["uuid"]
            before = running.model.snapshot()

            failed_with(
                manage.action(FlightAction.SESSION_CREATE, {"locator": "missing"}),
                ErrorKind.NOT_FOUND,
            )
            failed_with(
                manage.action(FlightAction.SEQUENCE_CREATE, {"locator": "k", "user_metadata": {}}),
                ErrorKind.ALREADY_EXISTS,
            )
            failed_with(
                manage.action(FlightAction.SESSION_FINALIZE, {"session_uuid": session}),
                ErrorKind.FAILED_PRECONDITION,
            )
            failed_with(
                manage.action(FlightAction.SESSION_FINALIZE, {"session_uuid": "not-a-uuid"}),
                ErrorKind.INVALID_ARGUMENT,
            )
            failed_with(manage.action_raw("no_such_action", b"{}"), ErrorKind.INVALID_ARGUMENT)
            failed_with(
                manage.action_raw("sequence_create", b"{not json"), ErrorKind.INVALID_ARGUMENT
            )
            failed_with(
                reader.action(FlightAction.SEQUENCE_CREATE, {"locator": "r", "user_metadata": {}}),
                ErrorKind.PERMISSION_DENIED,
            )
            failed_with(
                anonymous.action(
                    FlightAction.SEQUENCE_CREATE, {"locator": "a", "user_metadata": {}}
                ),
                ErrorKind.UNAUTHENTICATED,
            )
            failed_with(manage.flight_info(Descriptor.for_resource("missing")), ErrorKind.NOT_FOUND)
            failed_with(manage.read(b"not a ticket"), ErrorKind.INVALID_ARGUMENT)
            reader.close()
            assert running.model.snapshot() == before
        finally:
            manage.close()
            anonymous.close()


def test_refused_stream_kinds_over_the_wire(client: FlightTransport) -> None:
    """DoPut refusals: a wrong topic UUID, a schema without timestamp_ns, a PATH descriptor,
    an unknown topic."""
    write_topic(client, "st", {"imu": [batch(0, 1)]}, finalize=False)
    info = ok(client.flight_info(Descriptor.for_resource("st")))
    session = info.sessions[0].uuid
    topic_uuid = ok(
        client.action(
            FlightAction.TOPIC_CREATE,
            {
                "session_uuid": session,
                "locator": "st/gps",
                "serialization_format": "default",
                "ontology_tag": "gps",
                "user_metadata": {},
            },
        )
    )["uuid"]

    def verdict(descriptor: Descriptor, schema: pa.Schema, b: pa.RecordBatch) -> Outcome:
        opened = client.open_stream(descriptor, schema)
        if not opened.is_ok:
            return opened
        written = opened.value.write(b)
        return written if not written.is_ok else opened.value.close()

    wrong = Descriptor.for_topic("st/gps", "00000000-0000-4000-8000-000000000000")
    failed_with(verdict(wrong, SCHEMA, batch(0, 1)), ErrorKind.PERMISSION_DENIED)
    no_time = pa.schema([("t", pa.int32())])
    failed_with(
        verdict(
            Descriptor.for_topic("st/gps", topic_uuid),
            no_time,
            pa.record_batch([pa.array([1], pa.int32())], schema=no_time),
        ),
        ErrorKind.INVALID_ARGUMENT,
    )
    path = Descriptor("path", path=("st", "gps"))
    failed_with(verdict(path, SCHEMA, batch(0, 1)), ErrorKind.INVALID_ARGUMENT)
    missing = Descriptor.for_topic("st/none", topic_uuid)
    failed_with(verdict(missing, SCHEMA, batch(0, 1)), ErrorKind.NOT_FOUND)


def test_locked_topic_stream_is_refused_over_the_wire(
    server: RunningServer, client: FlightTransport
) -> None:
    """A second DoPut on a locked topic is refused with failed_precondition; nothing is
    stored."""
    write_topic(client, "lk", {"imu": [batch(0, 2)]}, finalize=False)
    topic_uuid = server.model.topics["lk/imu"].uuid
    opened = client.open_stream(Descriptor.for_topic("lk/imu", topic_uuid), SCHEMA)
    outcome = opened
    if opened.is_ok:
        outcome = opened.value.write(batch(2, 2))
        if outcome.is_ok:
            outcome = opened.value.close()
    failed_with(outcome, ErrorKind.FAILED_PRECONDITION)
    assert server.model.snapshot()["topics"]["lk/imu"] == {
        "state": "locked",
        "rows": 2,
        "chunks": 1,
        "notifications": [],
    }


def test_aborted_stream_is_cancelled_on_the_server(
    server: RunningServer, client: FlightTransport
) -> None:
    """A stream the client aborts is cancelled: the topic stays unlocked, batches the server
    already received stay, and the stream reports cancelled afterwards."""
    write_topic(client, "ab", {}, finalize=False)
    session = next(iter(server.model.sessions))
    topic_uuid = ok(
        client.action(
            FlightAction.TOPIC_CREATE,
            topic_args(session, "ab/imu"),
        )
    )["uuid"]
    stream = ok(client.open_stream(Descriptor.for_topic("ab/imu", topic_uuid), SCHEMA))
    ok(stream.write(batch(0, 3)))
    wait_until(
        lambda: server.model.snapshot()["topics"]["ab/imu"]["chunks"] >= 1,
        "the server stores the first batch",
    )
    ok(stream.abort())
    failed_with(stream.write(batch(3, 1)), ErrorKind.CANCELLED)
    failed_with(stream.close(), ErrorKind.CANCELLED)
    wait_until(lambda: server.model.topics["ab/imu"].stream is None, "the server sees the cancel")
    topic = server.model.snapshot()["topics"]["ab/imu"]
    assert topic["state"] == "created"
    assert topic["chunks"] == 1
    info = ok(client.flight_info(Descriptor.for_resource("ab/imu")))
    assert info.locked is False
    # The topic accepts a new stream, which locks it.
    again = ok(client.open_stream(Descriptor.for_topic("ab/imu", topic_uuid), SCHEMA))
    ok(again.write(batch(3, 1)))
    ok(again.close())
    assert server.model.snapshot()["topics"]["ab/imu"]["state"] == "locked"


def test_dropped_stream_reports_cancelled() -> None:
    """A stream the server drops mid-way reaches the client as cancelled."""
    plan = FaultPlan((Fault("STREAM_WRITE", 2, FaultEffect.DROP_STREAM),))
    with start_server(ServerModel(seed=0), faults=plan) as running:
        t = FlightTransport(running.location, timeout=TIMEOUT)
        try:
            write_topic(t, "dr", {}, finalize=False)
            session = next(iter(running.model.sessions))
            topic_uuid = ok(
                t.action(
                    FlightAction.TOPIC_CREATE,
                    topic_args(session, "dr/imu"),
                )
            )["uuid"]
            stream = ok(t.open_stream(Descriptor.for_topic("dr/imu", topic_uuid), SCHEMA))
            outcome = stream.write(batch(0, 1))
            ok(outcome)
            outcome = stream.write(batch(1, 1))
            if outcome.is_ok:
                outcome = stream.close()
            failed_with(outcome, ErrorKind.CANCELLED)
        finally:
            t.close()


def test_internal_fault_reaches_the_client_as_internal() -> None:
    """A fault plan's internal error arrives as internal, with the server's message."""
    plan = FaultPlan((Fault("SESSION_CREATE", 1, FaultEffect.FAIL, ErrorKind.INTERNAL),))
    with start_server(ServerModel(seed=0), faults=plan) as running:
        t = FlightTransport(running.location, timeout=TIMEOUT)
        try:
            ok(t.action(FlightAction.SEQUENCE_CREATE, {"locator": "in", "user_metadata": {}}))
            outcome = t.action(FlightAction.SESSION_CREATE, {"locator": "in"})
            failed_with(outcome, ErrorKind.INTERNAL)
            assert "injected fault SESSION_CREATE#1:internal" in outcome.detail
        finally:
            t.close()
        assert running.model.snapshot()["sessions"] == {}


@pytest.mark.parametrize("kind", list(ErrorKind), ids=lambda k: k.value)
def test_every_kind_round_trips(kind: ErrorKind) -> None:
    """Any kind the server answers reaches the Flight client unchanged; a bare pyarrow
    client sees the exception and text listed in wire.SEEN_AS."""
    plan = FaultPlan(
        (
            Fault("VERSION", 1, FaultEffect.FAIL, kind),
            Fault("VERSION", 2, FaultEffect.FAIL, kind),
        )
    )
    with start_server(ServerModel(seed=0), faults=plan) as running:
        t = FlightTransport(running.location, timeout=TIMEOUT)
        raw = flight.FlightClient(running.location)
        try:
            failed_with(t.action(FlightAction.VERSION, {}), kind)
            cls, phrase = wire.SEEN_AS[kind]
            with pytest.raises(cls) as caught:
                raw_action(raw, "version", {})
            # The bare message, nothing before or after it (no kind prefix, no traceback).
            assert str(caught.value) == (
                f"{phrase}, with message: injected fault VERSION#2:{kind.value}"
            )
            ok(t.action(FlightAction.VERSION, {}))
        finally:
            t.close()
            raw.close()


# ---------------------------------------------------------------------------------------------
# Streams that do not end cleanly, and stopping


def _in_thread(call: Callable[[], object], seconds: float) -> bool:
    """Run `call` on a daemon thread; whether it returned within `seconds` (a hang guard)."""
    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(seconds)
    return not worker.is_alive()


def _traced_topic(running: RunningServer, t: Transport, name: str) -> str:
    """A topic `name/imu` in an open session, on a server that records its trace; its UUID."""
    running.model.trace = ServerTrace()
    ok(t.action(FlightAction.SEQUENCE_CREATE, {"locator": name, "user_metadata": {}}))
    session = ok(t.action(FlightAction.SESSION_CREATE, {"locator": name}))["uuid"]
    return str(ok(t.action(FlightAction.TOPIC_CREATE, topic_args(session, f"{name}/imu")))["uuid"])


def _stream_events(running: RunningServer) -> list[tuple[str, str]]:
    assert running.model.trace is not None
    return [
        (e["op"], e["outcome"])
        for e in running.model.trace.events
        if str(e["op"]).startswith("DO_PUT")
    ]


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_stop_returns_although_a_client_left_a_stream_open() -> None:
    """A client that opens a stream, writes and then goes silent cannot hold `stop`: after its
    timeout the stream is cancelled (nothing is locked, the stored batch stays), a warning names
    its topic, the server has stopped, and the client's stream ends (unknown: the server went
    away)."""
    running = start_server(ServerModel(seed=0))
    t = FlightTransport(running.location, timeout=TIMEOUT)
    warnings = _Warnings()
    logger = logging.getLogger("mosaico_fsm.server")
    logger.addHandler(warnings)
    try:
        topic_uuid = _traced_topic(running, t, "ab")
        stream = ok(t.open_stream(Descriptor.for_topic("ab/imu", topic_uuid), SCHEMA))
        ok(stream.write(batch(0, 3)))
        wait_until(lambda: running.model.snapshot()["topics"]["ab/imu"]["chunks"] == 1, "stored")
        assert _in_thread(lambda: running.stop(timeout=1.0), 20.0), "stop hung"
        assert running.stopped
        assert any("ab/imu" in m for m in warnings.messages), warnings.messages
        topic = running.model.snapshot()["topics"]["ab/imu"]
        assert (topic["state"], topic["chunks"]) == ("created", 1)
        # The server went away: the client cannot know more than that (unknown, unavailable).
        assert stream.close().status is OutcomeStatus.UNKNOWN
        assert _stream_events(running) == [
            ("DO_PUT_OPEN", "ok"),
            ("DO_PUT_WRITE", "ok"),
            ("DO_PUT_CANCEL", "cancelled"),
        ]
    finally:
        logger.removeHandler(warnings)
        t.close()
        running.stop()


def test_closing_the_transport_aborts_its_open_streams() -> None:
    """`FlightTransport.close()` aborts the streams still open: the server cancels them at
    once (aborted) and stops without waiting."""
    running = start_server(ServerModel(seed=0))
    t = FlightTransport(running.location, timeout=TIMEOUT)
    try:
        topic_uuid = _traced_topic(running, t, "cl")
        stream = ok(t.open_stream(Descriptor.for_topic("cl/imu", topic_uuid), SCHEMA))
        ok(stream.write(batch(0, 2)))
        wait_until(lambda: running.model.snapshot()["topics"]["cl/imu"]["chunks"] == 1, "stored")
        t.close()
        wait_until(
            lambda: running.model.snapshot()["topics"]["cl/imu"]["state"] != "receiving",
            "the stream cancelled",
        )
        failed_with(stream.write(batch(2, 1)), ErrorKind.CANCELLED)
        assert stream.failure is not None
        assert _stream_events(running)[-1] == ("DO_PUT_CANCEL", "aborted")
        assert _in_thread(running.stop, 20.0), "stop hung"
        assert running.stopped
    finally:
        t.close()
        running.stop()


_WRITER = """
import json, sys, time
import pyarrow as pa
from pyarrow import flight
location, ending, topics = sys.argv[1], sys.argv[2], sys.argv[3:]
schema = pa.schema([("timestamp_ns", pa.int64()), ("value", pa.float64())])
client = flight.FlightClient(location)
writers = []
for topic in topics:
    locator, topic_uuid = topic.split("=")
    descriptor = flight.FlightDescriptor.for_command(
        json.dumps({"resource_locator": locator, "topic_uuid": topic_uuid}).encode()
    )
    writer, _ = client.do_put(descriptor, schema)
    writer.write_batch(pa.record_batch([pa.array([0, 1]), pa.array([0.0, 1.0])], schema=schema))
    writers.append(writer)
if ending == "close":
    for writer in writers:
        writer.close()
    print("closed", flush=True)
else:
    print("written", flush=True)
    time.sleep(60)
"""

DEAD_STREAMS = 16
"""Streams a killed client process leaves at once: gRPC reports each one's end of messages
like a half-close an instant before its termination, so a server that decides on the first
report alone commits some of them."""


def _writer_topics(running: RunningServer, t: Transport, name: str) -> list[str]:
    """DEAD_STREAMS topics `name/t<i>` in one open session, as `locator=uuid` arguments."""
    running.model.trace = ServerTrace()
    ok(t.action(FlightAction.SEQUENCE_CREATE, {"locator": name, "user_metadata": {}}))
    session = ok(t.action(FlightAction.SESSION_CREATE, {"locator": name}))["uuid"]
    arguments = []
    for i in range(DEAD_STREAMS):
        locator = f"{name}/t{i}"
        created = ok(t.action(FlightAction.TOPIC_CREATE, topic_args(session, locator)))
        arguments.append(f"{locator}={created['uuid']}")
    return arguments


def _topics_of(running: RunningServer, name: str) -> list[tuple[str, int]]:
    topics = running.model.snapshot()["topics"]
    return [
        (topics[f"{name}/t{i}"]["state"], topics[f"{name}/t{i}"]["rows"])
        for i in range(DEAD_STREAMS)
    ]


def test_a_client_that_dies_mid_stream_locks_nothing() -> None:
    """A client process killed mid-stream ends its calls as cancelled (PROTOCOL.md §6.2.7):
    the end of its messages is not a clean end, so no topic is locked and the rows it stored
    stay."""
    with start_server(ServerModel(seed=0)) as running:
        t = FlightTransport(running.location, timeout=TIMEOUT)
        try:
            topics = _writer_topics(running, t, "gone")
            child = subprocess.Popen(
                [sys.executable, "-c", _WRITER, running.location, "kill", *topics],
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                assert child.stdout is not None
                assert child.stdout.readline().strip() == "written"
                wait_until(
                    lambda: all(rows == 2 for _, rows in _topics_of(running, "gone")),
                    "the batches stored",
                )
            finally:
                child.kill()
                child.wait(TIMEOUT)
            wait_until(
                lambda: all(state != "receiving" for state, _ in _topics_of(running, "gone")),
                "the streams ended",
            )
            assert _topics_of(running, "gone") == [("created", 2)] * DEAD_STREAMS
            assert _stream_events(running).count(("DO_PUT_CANCEL", "cancelled")) == DEAD_STREAMS
            assert running.server.open_streams == 0
        finally:
            t.close()


def test_a_client_that_half_closes_commits_its_rows() -> None:
    """The same streams ended by the client's half-close (`writer.close()`): each is a clean
    end, so every topic is locked with its rows."""
    with start_server(ServerModel(seed=0)) as running:
        t = FlightTransport(running.location, timeout=TIMEOUT)
        try:
            topics = _writer_topics(running, t, "kept")
            done = subprocess.run(
                [sys.executable, "-c", _WRITER, running.location, "close", *topics],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert done.stdout.strip() == "closed", done.stderr
            assert _topics_of(running, "kept") == [("locked", 2)] * DEAD_STREAMS
            assert _stream_events(running).count(("DO_PUT_END", "ok")) == DEAD_STREAMS
        finally:
            t.close()


def test_an_unexpected_server_error_leaves_no_stream_receiving(
    server: RunningServer, client: FlightTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error the model did not mean (a bug, not a refusal) still ends the stream on the
    server: the topic is not left receiving, and the cancel is traced as internal."""
    topic_uuid = _traced_topic(server, client, "bug")

    def broken(handle: Any, data: pa.RecordBatch) -> None:
        raise RuntimeError("a bug in the model")

    monkeypatch.setattr(server.model, "put_write", broken)
    stream = ok(client.open_stream(Descriptor.for_topic("bug/imu", topic_uuid), SCHEMA))
    written = stream.write(batch(0, 2))
    outcome = stream.close() if written.is_ok else written
    assert outcome.status is OutcomeStatus.FAILED, outcome
    wait_until(
        lambda: server.model.snapshot()["topics"]["bug/imu"]["state"] != "receiving",
        "the stream ended",
    )
    assert server.model.snapshot()["topics"]["bug/imu"]["state"] == "created"
    assert _stream_events(server)[-1] == ("DO_PUT_CANCEL", "internal")
    monkeypatch.undo()
    ok(stream_put(client, "bug/imu", topic_uuid))
    assert server.model.snapshot()["topics"]["bug/imu"]["state"] == "locked"


def stream_put(t: Transport, locator: str, topic_uuid: str) -> Outcome:
    stream = ok(t.open_stream(Descriptor.for_topic(locator, topic_uuid), SCHEMA))
    ok(stream.write(batch(10, 1)))
    return stream.close()


# A DoPut written by hand over HTTP/2, to send what pyarrow's client never sends: a second
# schema message mid-stream (PROTOCOL.md §6.2.4).


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _flight_data(ipc: pa.Buffer, command: bytes | None = None) -> bytes:
    """One gRPC message holding a FlightData (descriptor, IPC header, body)."""
    message = pa.ipc.read_message(ipc)
    data = b""
    if command is not None:  # FlightDescriptor {type: CMD (2), cmd}
        data += _field(1, _varint(1 << 3) + _varint(2) + _field(2, command))
    data += _field(2, message.metadata.to_pybytes())
    if message.body is not None and message.body.size:
        data += _field(1000, message.body.to_pybytes())
    return b"\x00" + struct.pack(">I", len(data)) + data


def _h2_frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    header = struct.pack(">I", len(payload))[1:] + bytes([kind, flags])
    return header + struct.pack(">I", stream) + payload


def _raw_do_put(port: int, messages: list[bytes]) -> None:
    """Send one DoPut of `messages` and half-close it; read until the server ends the call
    (the socket's timeout guards against a hang)."""

    def literal(name: str, value: str) -> bytes:  # HPACK, without indexing or Huffman
        return bytes([0, len(name)]) + name.encode() + bytes([len(value)]) + value.encode()

    headers = b"".join(
        literal(n, v)
        for n, v in [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/arrow.flight.protocol.FlightService/DoPut"),
            (":authority", f"127.0.0.1:{port}"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
    )
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _h2_frame(4, 0, 0, b""))
        sock.sendall(_h2_frame(1, 0x4, 1, headers))
        for i, message in enumerate(messages):
            end = 0x1 if i == len(messages) - 1 else 0
            sock.sendall(_h2_frame(0, end, 1, message))
        sock.sendall(_h2_frame(4, 0x1, 0, b""))  # acknowledge the server's settings
        received = b""
        while True:  # frames until the call ends: trailers (HEADERS with END_STREAM) or reset
            while len(received) < 9:
                chunk = sock.recv(65536)
                assert chunk, "the server closed the connection"
                received += chunk
            length = int.from_bytes(received[:3], "big")
            kind, flags = received[3], received[4]
            stream = int.from_bytes(received[5:9], "big") & 0x7FFFFFFF
            while len(received) < 9 + length:
                chunk = sock.recv(65536)
                assert chunk, "the server closed the connection"
                received += chunk
            received = received[9 + length :]
            if stream == 1 and (kind == 3 or (kind == 1 and flags & 0x1)):
                return


def test_a_second_schema_mid_stream_is_aborted(server: RunningServer) -> None:
    """A second schema message mid-stream is an unsupported stream message: the stream ends
    aborted (not cancelled), the batch before it stays, nothing is locked."""
    t = FlightTransport(server.location, timeout=TIMEOUT)
    try:
        topic_uuid = _traced_topic(server, t, "two")
    finally:
        t.close()
    other = pa.schema([("timestamp_ns", pa.int64()), ("extra", pa.int32())])
    command = json.dumps({"resource_locator": "two/imu", "topic_uuid": topic_uuid}).encode()
    _raw_do_put(
        server.port,
        [
            _flight_data(SCHEMA.serialize(), command),
            _flight_data(batch(0, 2).serialize()),
            _flight_data(other.serialize()),
            _flight_data(batch(2, 2).serialize()),
        ],
    )
    wait_until(
        lambda: server.model.snapshot()["topics"]["two/imu"]["state"] != "receiving",
        "the stream ended",
    )
    topic = server.model.snapshot()["topics"]["two/imu"]
    assert (topic["state"], topic["chunks"]) == ("created", 1)
    assert _stream_events(server) == [
        ("DO_PUT_OPEN", "ok"),
        ("DO_PUT_WRITE", "ok"),
        ("DO_PUT_CANCEL", "aborted"),
    ]


# ---------------------------------------------------------------------------------------------
# The client: failures of the network are outcomes, bugs are not


class _BuggyClient:
    """Stands in for pyarrow's FlightClient: every call hits a programming error."""

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            if name == "close":
                return None
            raise TypeError(f"{name}() got an unexpected argument")

        return call


CALLS: dict[str, Callable[[FlightTransport], Outcome]] = {
    "action": lambda t: t.action(FlightAction.VERSION, {}),
    "open_stream": lambda t: t.open_stream(Descriptor.for_topic("a/b", "u"), SCHEMA),
    "flight_info": lambda t: t.flight_info(Descriptor.for_resource("a")),
    "read": lambda t: t.read(b"ticket"),
    "list_sequences": lambda t: t.list_sequences(),
}


@pytest.mark.parametrize("call", list(CALLS))
def test_a_programming_error_is_raised_not_an_outcome(call: str) -> None:
    """A TypeError inside a call is a bug: it propagates instead of becoming failed(internal)."""
    t = FlightTransport("grpc://127.0.0.1:1", timeout=TIMEOUT)
    t._client = _BuggyClient()
    with pytest.raises(TypeError, match="unexpected argument"):
        CALLS[call](t)
    t.close()


@pytest.mark.parametrize("call", list(CALLS))
def test_an_unreachable_server_is_an_outcome(call: str) -> None:
    """A server that cannot be reached gives an outcome (unknown), not an exception."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    t = FlightTransport(f"grpc://127.0.0.1:{port}", timeout=TIMEOUT)
    try:
        outcome = CALLS[call](t)
        if call == "open_stream" and outcome.is_ok:  # the DoPut fails when it is used
            stream = outcome.value
            written = stream.write(batch(0, 1))
            outcome = stream.close() if written.is_ok else written
        assert outcome.status is OutcomeStatus.UNKNOWN, outcome
    finally:
        t.close()


def test_connect_timeout_bounds_wait_ready() -> None:
    """`wait_ready` answers unknown within `connect_timeout` when the peer accepts the
    connection but never speaks gRPC."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        port = silent.getsockname()[1]
        t = FlightTransport(f"grpc://127.0.0.1:{port}", connect_timeout=0.5)
        answers: list[Outcome] = []
        try:
            assert _in_thread(lambda: answers.append(t.wait_ready()), STOP_TIMEOUT), "hung"
        finally:
            t.close()
    assert answers[0].status is OutcomeStatus.UNKNOWN, answers
