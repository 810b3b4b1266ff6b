"""The real mosaicolabs SDK (0.3.x) against the reference server, used as its users use it.

Every test runs under the profile "spec" (the specification) and "mosaicod-0.3" (the server
as PROTOCOL.md describes it). Each one checks two sides: what the SDK reports (statuses,
exceptions, records read back) and what the server holds (`model.snapshot()`).

Where the SDK itself departs from the specification, the test asserts what the SDK actually
does and names the deviation of specs/deviations.toml in a comment.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import require_sdk

require_sdk()

import pyarrow as pa  # noqa: E402
from mosaicolabs import (  # noqa: E402
    GPS,
    IMU,
    CompressedImage,
    GPSStatus,
    ImageFormat,
    Message,
    MosaicoClient,
    Point3d,
    QuerySequence,
    QueryTopic,
    SequenceStatus,
    SessionLevelErrorPolicy,
    SessionStatus,
    TopicLevelErrorPolicy,
    TopicWriterStatus,
    Vector3d,
)
from mosaicolabs.comm.notifications import NotificationType  # noqa: E402
from mosaicolabs.enum import APIKeyPermissionEnum as SdkPermission  # noqa: E402
from pyarrow import flight  # noqa: E402

from fsm.enums import APIKeyPermissionEnum as Permission  # noqa: E402
from transport.flight.server import RunningServer, TlsFiles, start_server  # noqa: E402
from transport.pytest_plugin import self_signed_certificate  # noqa: E402
from transport.server.model import ServerModel  # noqa: E402

pytestmark = pytest.mark.interop

PROFILES = ["spec", "mosaicod-0.3"]
BASE_NS = 1_700_000_000_000_000_000
STEP_NS = 10_000_000


# ---------------------------------------------------------------------------------------------
# Data


def imu(i: int) -> IMU:
    return IMU(
        acceleration=Vector3d(x=0.5 * i, y=-1.25, z=9.81),
        angular_velocity=Vector3d(x=0.01 * i, y=0.02, z=-0.03),
    )


def gps(i: int) -> GPS:
    return GPS(
        position=Point3d(x=45.0 + i * 1e-5, y=9.19, z=120.5 + i),
        status=GPSStatus(status=1, service=2, satellites=8 + i),
    )


def image(i: int) -> CompressedImage:
    return CompressedImage(data=bytes([i % 256]) * (16 + i), format=ImageFormat.JPEG)


def stamp(i: int, offset: int = 0) -> int:
    return BASE_NS + i * STEP_NS + offset


def read_topic(client: MosaicoClient, sequence: str, topic: str, **window: int) -> list[Any]:
    """(timestamp, frame_id, payload) of every record the SDK streams back from one topic."""
    handler = client.topic_handler(sequence, topic)
    assert handler is not None
    return [(m.timestamp_ns, m.frame_id, m.data) for m in handler.get_data_streamer(**window)]


def sessions_of(server: RunningServer, sequence: str) -> list[dict[str, Any]]:
    """The server's sessions of `sequence`, in creation order."""
    snap = server.model.snapshot()
    return [snap["sessions"][u] for u in snap["sequences"][sequence]["sessions"]]


def topic_state(server: RunningServer, locator: str) -> dict[str, Any]:
    return dict(server.model.snapshot()["topics"][locator])


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(params=PROFILES)
def profile(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server(profile: str) -> Iterator[RunningServer]:
    with start_server(profile=profile) as running:
        yield running


@pytest.fixture
def client(server: RunningServer) -> Iterator[MosaicoClient]:
    with MosaicoClient.connect(host=server.host, port=server.port) as sdk:
        yield sdk


@pytest.fixture
def auth_server(profile: str) -> Iterator[tuple[RunningServer, dict[Permission, str]]]:
    """A server with API keys on, and one key of each permission."""
    model = ServerModel(profile=profile, auth=True)
    with start_server(model) as running:
        keys = {p: model.bootstrap_key(p, description=f"{p.value} key") for p in Permission}
        yield running, keys


def connect(server: RunningServer, key: str | None = None, **kw: Any) -> MosaicoClient:
    return MosaicoClient.connect(host=server.host, port=server.port, api_key=key, **kw)


def self_signed(tmp_path: Path) -> TlsFiles:
    """A certificate for 127.0.0.1 and localhost, signed by its own key, as PEM files."""
    return self_signed_certificate(tmp_path)


def write_imu_run(client: MosaicoClient, name: str, count: int = 4) -> str:
    """A sequence with one IMU topic written cleanly; answers the session UUID."""
    with client.sequence_create(name, {"kind": "imu"}) as writer:
        topic = writer.topic_create("imu", {}, IMU)
        assert topic is not None
        for i in range(count):
            topic.push(Message(timestamp_ns=stamp(i), data=imu(i)))
    assert writer.status is SequenceStatus.Finalized
    return str(writer.session_uuid)


# ---------------------------------------------------------------------------------------------
# Connection and authentication


def fail_under_delete(
    sdk: MosaicoClient, name: str
) -> tuple[BaseException, RuntimeError, Any, Any]:
    """Write one IMU record in a Delete-policy sequence, then raise in its block. The SDK
    deletes the sequence twice (SDK-DOUBLE-SEQUENCE-DELETE, PROTOCOL §11.8): the second
    delete raises, replacing the user's exception. Answers that error, the user's exception,
    the sequence writer and the topic writer."""
    boom = RuntimeError("boom")
    with (
        pytest.raises(Exception, match=f"Error sending 'delete' for sequence '{name}'") as exc,
        sdk.sequence_create(name, {}, on_error=SessionLevelErrorPolicy.Delete) as sw,
    ):
        topic = sw.topic_create("imu", {}, IMU)
        assert topic is not None
        topic.push(Message(timestamp_ns=stamp(0), data=imu(0)))
        raise boom
    return exc.value, boom, sw, topic


def test_connect_without_a_key_when_auth_is_off(client: MosaicoClient) -> None:
    """With auth off any client connects; version() answers a dict (PROTOCOL §11.6)."""
    assert client.list_sequences() == []
    version = client.version()
    assert isinstance(version, dict)
    semver = version["semver"]
    assert version["version"] == f"{semver['major']}.{semver['minor']}.{semver['patch']}"


def test_connect_with_auth_on_needs_a_valid_key(
    auth_server: tuple[RunningServer, dict[Permission, str]],
) -> None:
    """A missing key and an unknown key fail at connect; a malformed one before any I/O."""
    server, keys = auth_server
    with pytest.raises(ConnectionError, match="failed on startup") as missing:
        connect(server)
    assert isinstance(missing.value.__context__, flight.FlightUnauthenticatedError)

    unknown_token = "msco_s3l8gcdwuadege3pkhou0k0n2t5omfij_f9010b9e"
    with pytest.raises(ConnectionError, match="failed on startup") as unknown:
        connect(server, unknown_token)
    assert isinstance(unknown.value.__context__, flight.FlightUnauthorizedError)

    with pytest.raises(ValueError, match="Invalid format for API Key"):
        connect(server, "not-a-key")

    for key in keys.values():
        with connect(server, key) as sdk:
            assert sdk.list_sequences() == []
            assert sdk.version()["version"]


def test_read_key_reads_but_cannot_write(
    auth_server: tuple[RunningServer, dict[Permission, str]],
) -> None:
    """A read key lists and streams; sequence_create and update fail in __enter__ (§9.1 S4)."""
    server, keys = auth_server
    with connect(server, keys[Permission.Write]) as writer_client:
        write_imu_run(writer_client, "shared", count=3)
    before = server.model.snapshot()

    with connect(server, keys[Permission.Read]) as sdk:
        assert sdk.list_sequences() == ["shared"]
        assert [r[0] for r in read_topic(sdk, "shared", "imu")] == [stamp(i) for i in range(3)]

        writer = sdk.sequence_create("refused", {"by": "reader"})
        with pytest.raises(flight.FlightUnauthorizedError), writer:
            pytest.fail("the block must not run")
        assert writer.status is SequenceStatus.Null

        handler = sdk.sequence_handler("shared")
        assert handler is not None
        updater = handler.update()
        with pytest.raises(flight.FlightUnauthorizedError), updater:
            pytest.fail("the block must not run")

        with pytest.raises(flight.FlightUnauthorizedError):
            sdk.clear_sequence_notifications("shared")
        with pytest.raises(flight.FlightUnauthorizedError):
            sdk.sequence_delete("shared")

    assert server.model.snapshot() == before


def test_write_key_writes_but_delete_policy_cannot_purge(
    auth_server: tuple[RunningServer, dict[Permission, str]],
) -> None:
    """A write key writes; under Delete the purge is refused and everything stays (§3.3)."""
    server, keys = auth_server
    with connect(server, keys[Permission.Write]) as sdk:
        write_imu_run(sdk, "written", count=2)
        assert topic_state(server, "written/imu")["rows"] == 2

        exc, boom, sw, topic = fail_under_delete(sdk, "kept")
        # SDK-DOUBLE-SEQUENCE-DELETE: the first refused delete is only logged; the second
        # one raises, chained from the user's exception, which it replaces.
        assert exc.__cause__ is boom
        assert "Flight returned unauthorized error, with message: unauthorized:" in str(exc)
        assert sw.status is SequenceStatus.Error
        assert topic.status is TopicWriterStatus.FinalizedWithError

        with pytest.raises(flight.FlightUnauthorizedError):
            sdk.api_key_create(SdkPermission.Read, "not allowed")

    # The sequence keeps its unlocked session; the error close ended the stream cleanly, so
    # the topic is locked, empty (SDK-REPORT-DROPS-BUFFER) and carries the notification.
    assert [s["state"] for s in sessions_of(server, "kept")] == ["open"]
    assert topic_state(server, "kept/imu") == {
        "state": "locked",
        "rows": 0,
        "chunks": 0,
        "notifications": [("error", "boom")],
    }


def test_delete_key_purges_under_delete_policy(
    auth_server: tuple[RunningServer, dict[Permission, str]],
) -> None:
    """A delete key purges the sequence; the SDK's second delete meets NOT_FOUND (§9.1 S12)."""
    server, keys = auth_server
    with connect(server, keys[Permission.Delete]) as sdk:
        exc, boom, sw, _ = fail_under_delete(sdk, "purged")
        # SDK-DOUBLE-SEQUENCE-DELETE: the first delete purged everything, the second one
        # finds nothing and its error replaces the user's exception (PROTOCOL §11.8).
        assert exc.__cause__ is boom
        assert "Flight returned not found error, with message:" in str(exc)
        assert sw.status is SequenceStatus.Error
        assert sdk.list_sequences() == []

    snap = server.model.snapshot()
    assert snap["sequences"] == {} and snap["sessions"] == {} and snap["topics"] == {}


def test_api_key_calls(auth_server: tuple[RunningServer, dict[Permission, str]]) -> None:
    """A manage key creates, inspects and revokes keys; each new key has its permission."""
    server, keys = auth_server
    with connect(server, keys[Permission.Manage]) as admin:
        own = admin.api_key_status()
        assert own is not None and own.description == "manage key"

        created: dict[SdkPermission, str] = {}
        for permission in SdkPermission:
            token = admin.api_key_create(permission, f"made for {permission.value}")
            assert token is not None
            prefix, payload, fingerprint = token.split("_")
            assert prefix == "msco" and len(payload) == 32 and len(fingerprint) == 8
            status = admin.api_key_status(fingerprint)
            assert status is not None
            assert status.description == f"made for {permission.value}"
            assert status.expires_at_ns is None and not status.is_expired
            assert isinstance(status.created_at_ns, int) and status.created_at_ns > 0
            created[permission] = token
        assert set(server.model.snapshot()["keys"]) >= {t[-8:] for t in created.values()}

        with connect(server, created[SdkPermission.Write]) as sdk:
            write_imu_run(sdk, "by_new_key", count=1)
        with connect(server, created[SdkPermission.Read]) as sdk:
            assert sdk.list_sequences() == ["by_new_key"]
            with pytest.raises(flight.FlightUnauthorizedError):
                sdk.api_key_status()

        revoked = created[SdkPermission.Read][-8:]
        assert admin.api_key_revoke(revoked) is None
        assert revoked not in server.model.snapshot()["keys"]
        with pytest.raises(KeyError, match="Flight returned not found error"):
            admin.api_key_status(revoked)
        with pytest.raises(ConnectionError, match="failed on startup") as exc:
            connect(server, created[SdkPermission.Read])
        assert isinstance(exc.value.__context__, flight.FlightUnauthorizedError)


def test_expired_key(
    profile: str, auth_server: tuple[RunningServer, dict[Permission, str]]
) -> None:
    """An expired key is refused by the spec; mosaicod 0.3 still accepts it."""
    server, keys = auth_server
    with connect(server, keys[Permission.Manage]) as admin:
        token = admin.api_key_create(
            SdkPermission.Read, "already expired", expires_at_ns=time.time_ns() - 10**9
        )
        assert token is not None
        status = admin.api_key_status(token[-8:])
        assert status is not None and status.is_expired
    if profile == "spec":
        with pytest.raises(ConnectionError, match="expired") as exc:
            connect(server, token)
        assert isinstance(exc.value.__context__, flight.FlightUnauthorizedError)
    else:  # MOSAICOD-NO-KEY-EXPIRY
        with connect(server, token) as sdk:
            assert sdk.list_sequences() == []


def test_tls_with_api_key(tmp_path: Path, profile: str) -> None:
    """Over grpc+tls, with the certificate passed as tls_cert_path, a run is written and read."""
    tls = self_signed(tmp_path)
    model = ServerModel(profile=profile, auth=True)
    with start_server(model, tls=tls) as server:
        key = server.api_keys["manage"]
        with connect(server, key, tls_cert_path=str(tls.cert)) as sdk:
            write_imu_run(sdk, "secure", count=3)
            assert read_topic(sdk, "secure", "imu") == [(stamp(i), None, imu(i)) for i in range(3)]
        assert [s["state"] for s in sessions_of(server, "secure")] == ["finalized"]
        with pytest.raises(ConnectionError):  # a plain-text client does not reach a TLS server
            connect(server, key, timeout=1)


# ---------------------------------------------------------------------------------------------
# Writing


@pytest.mark.parametrize("policy", list(SessionLevelErrorPolicy), ids=lambda p: p.value)
def test_normal_exit_writes_every_record(
    server: RunningServer, client: MosaicoClient, policy: SessionLevelErrorPolicy
) -> None:
    """IMU, GPS and CompressedImage topics written cleanly are read back record for record."""
    name = f"normal_{policy.value}"
    metadata = {"robot": "r1", "site": {"city": "Milan", "lap": 3}}
    with client.sequence_create(name, metadata, on_error=policy) as writer:
        assert writer.session_status is SessionStatus.Pending
        writers = {
            "imu/front": writer.topic_create("imu/front", {"vendor": "ixd"}, IMU),
            "gps": writer.topic_create("gps", {"role": "primary"}, GPS),
            "camera/front": writer.topic_create("camera/front", {"fps": 10}, CompressedImage),
        }
        assert all(w is not None and w.status is TopicWriterStatus.Active for w in writers.values())
        for i in range(6):
            writers["imu/front"].push(Message(timestamp_ns=stamp(i), data=imu(i), frame_id="base"))
            writers["gps"].push(Message(timestamp_ns=stamp(i, 1), data=gps(i)))
            writers["camera/front"].push(Message(timestamp_ns=stamp(i, 2), data=image(i)))
        assert writer.list_topic_writers() == list(writers)

    assert writer.status is SequenceStatus.Finalized
    assert writer.session_status is SessionStatus.Finalized
    for w in writers.values():
        assert w.status is TopicWriterStatus.Finalized and not w.is_active and w.last_error is None

    snap = server.model.snapshot()
    assert snap["sequences"][name]["user_metadata"] == metadata
    assert snap["sequences"][name]["notifications"] == []
    assert sessions_of(server, name) == [
        {"sequence": name, "state": "finalized", "topics": [f"{name}/{t}" for t in writers]}
    ]
    for topic in writers:
        assert topic_state(server, f"{name}/{topic}") == {
            "state": "locked",
            "rows": 6,
            "chunks": 1,
            "notifications": [],
        }

    assert client.list_sequences() == [name]
    assert read_topic(client, name, "imu/front") == [(stamp(i), "base", imu(i)) for i in range(6)]
    assert read_topic(client, name, "gps") == [(stamp(i, 1), None, gps(i)) for i in range(6)]
    assert read_topic(client, name, "camera/front") == [
        (stamp(i, 2), None, image(i)) for i in range(6)
    ]

    topic = client.topic_handler(name, "imu/front")
    assert topic is not None
    assert (topic.name, topic.ontology_tag, topic.user_metadata) == (
        "/imu/front",
        "imu",
        {"vendor": "ixd"},
    )
    assert topic.locked and topic.chunks_number == 1
    assert (topic.timestamp_ns_min, topic.timestamp_ns_max) == (stamp(0), stamp(5))

    handler = client.sequence_handler(name)
    assert handler is not None
    assert handler.user_metadata == metadata
    assert handler.topics == ["/imu/front", "/gps", "/camera/front"]
    [session] = handler.sessions
    assert session.uuid == writer.session_uuid and session.locked
    assert session.completed_timestamp is not None
    merged = [(t, m.timestamp_ns) for t, m in handler.get_data_streamer()]
    expected = sorted(
        [(stamp(i), "/imu/front") for i in range(6)]
        + [(stamp(i, 1), "/gps") for i in range(6)]
        + [(stamp(i, 2), "/camera/front") for i in range(6)]
    )
    assert merged == [(t, ts) for ts, t in expected]


def test_sequence_name_already_taken(server: RunningServer, client: MosaicoClient) -> None:
    """A second sequence_create of a name fails in __enter__ and changes nothing (§9.1 S4)."""
    write_imu_run(client, "taken", count=1)
    before = server.model.snapshot()
    writer = client.sequence_create("taken", {"second": True})
    # ALREADY_EXISTS reaches pyarrow as a plain ArrowException (as from mosaicod).
    with (
        pytest.raises(pa.ArrowException, match=r"^Unknown: Flight returned already exists error"),
        writer,
    ):
        pytest.fail("the block must not run")
    assert writer.status is SequenceStatus.Null
    assert server.model.snapshot() == before


def test_read_back_a_time_window(server: RunningServer, client: MosaicoClient) -> None:
    """A topic streamer with a window yields start <= t < end; missing names give None."""
    write_imu_run(client, "windowed", count=10)
    window = read_topic(
        client, "windowed", "imu", start_timestamp_ns=stamp(3), end_timestamp_ns=stamp(7)
    )
    assert window == [(stamp(i), None, imu(i)) for i in range(3, 7)]
    assert client.sequence_handler("no_such_sequence") is None
    assert client.topic_handler("windowed", "no_such_topic") is None


def test_exception_in_session_block_under_report(
    profile: str, server: RunningServer, client: MosaicoClient
) -> None:
    """Report: the exception propagates unchanged, topics and sequence get notifications and
    the session is finalized: locked on mosaicod 0.3, unlocked under the spec."""
    name = "reported"
    boom = RuntimeError("boom")
    with (
        pytest.raises(RuntimeError) as exc,
        client.sequence_create(name, {}, on_error=SessionLevelErrorPolicy.Report) as sw,
    ):
        imu_writer = sw.topic_create("imu/front", {}, IMU)
        gps_writer = sw.topic_create("gps", {}, GPS)
        assert imu_writer is not None and gps_writer is not None
        for i in range(3):
            imu_writer.push(Message(timestamp_ns=stamp(i), data=imu(i)))
            gps_writer.push(Message(timestamp_ns=stamp(i), data=gps(i)))
        raise boom
    assert exc.value is boom
    assert sw.status is SequenceStatus.Error
    assert imu_writer.status is TopicWriterStatus.FinalizedWithError
    assert gps_writer.status is TopicWriterStatus.FinalizedWithError

    [session] = sessions_of(server, name)
    if profile == "spec":
        assert session["state"] == "finalized_reported"
    else:  # MOSAICOD-REPORT-LOCKS
        assert session["state"] == "finalized"
    for topic in ("imu/front", "gps"):
        # SDK-REPORT-DROPS-BUFFER: the three pushed records were still buffered and are lost;
        # the stream still ended cleanly, so the empty topic is locked.
        assert topic_state(server, f"{name}/{topic}") == {
            "state": "locked",
            "rows": 0,
            "chunks": 0,
            "notifications": [("error", "boom")],
        }

    handler = client.sequence_handler(name)
    assert handler is not None
    [seen] = handler.sessions
    assert seen.locked is (profile != "spec")
    assert seen.completed_timestamp is not None
    empty = client.topic_handler(name, "gps")
    assert empty is not None and empty.locked and empty.chunks_number == 0

    [note] = client.list_sequence_notifications(name)
    assert (note.sequence_name, note.topic_name, note.type) == (name, None, NotificationType.ERROR)
    assert sw.session_uuid in note.message and "Inner err: 'boom'" in note.message
    [topic_note] = client.list_topic_notifications(name, "imu/front")
    assert (topic_note.sequence_name, topic_note.topic_name) == (name, "/imu/front")
    assert (topic_note.type, topic_note.message) == (NotificationType.ERROR, "boom")

    client.clear_sequence_notifications(name)
    client.clear_topic_notifications(name, "imu/front")
    assert client.list_sequence_notifications(name) == []
    assert client.list_topic_notifications(name, "imu/front") == []
    assert len(client.list_topic_notifications(name, "gps")) == 1
    snap = server.model.snapshot()
    assert snap["sequences"][name]["notifications"] == []
    assert snap["topics"][f"{name}/imu/front"]["notifications"] == []

    # Unlocked under the spec, so it can be deleted; mosaicod 0.3 deletes it although it is
    # locked (MOSAICOD-DELETE-LOCKED-SEQUENCE).
    client.sequence_delete(name)
    assert name not in server.model.snapshot()["sequences"]
    assert client.list_sequences() == []


def test_exception_in_session_block_under_delete(
    server: RunningServer, client: MosaicoClient
) -> None:
    """Delete: the sequence is purged, then the SDK deletes it again and raises (§9.1 S12)."""
    write_imu_run(client, "survivor", count=2)
    exc, boom, sw, topic = fail_under_delete(client, "doomed")
    # SDK-DOUBLE-SEQUENCE-DELETE: the second sequence_delete meets a sequence already gone;
    # its NOT_FOUND replaces the user's exception, which becomes the cause (PROTOCOL §11.8).
    assert exc.__cause__ is boom
    assert "Flight returned not found error, with message:" in str(exc)
    assert sw.status is SequenceStatus.Error
    assert topic.status is TopicWriterStatus.FinalizedWithError

    snap = server.model.snapshot()
    assert list(snap["sequences"]) == ["survivor"]
    assert list(snap["topics"]) == ["survivor/imu"]
    assert [s["sequence"] for s in snap["sessions"].values()] == ["survivor"]
    assert client.list_sequences() == ["survivor"]


def test_topic_policy_finalize(server: RunningServer, client: MosaicoClient) -> None:
    """Finalize: the topic reports, closes and absorbs the exception; the session goes on."""
    name = "topic_finalize"
    with client.sequence_create(name, {}) as sw:
        failing = sw.topic_create("imu", {}, IMU, on_error=TopicLevelErrorPolicy.Finalize)
        healthy = sw.topic_create("gps", {}, GPS)
        assert failing is not None and healthy is not None
        with failing:
            failing.push(Message(timestamp_ns=stamp(0), data=imu(0)))
            failing.push(Message(timestamp_ns=stamp(1), data=imu(1)))
            raise ValueError("bad record")
        assert failing.status is TopicWriterStatus.FinalizedWithError
        assert not failing.is_active and failing.last_error == "bad record"
        with pytest.raises(ValueError, match="uninitialized"):
            failing.push(Message(timestamp_ns=stamp(2), data=imu(2)))
        assert failing.status is TopicWriterStatus.RaisedException
        healthy.push(Message(timestamp_ns=stamp(0), data=gps(0)))

    assert sw.status is SequenceStatus.Finalized
    assert healthy.status is TopicWriterStatus.Finalized
    assert [s["state"] for s in sessions_of(server, name)] == ["finalized"]
    # SDK-REPORT-DROPS-BUFFER (row exit-error-finalize): the two records pushed before the
    # error were still buffered and are not sent.
    assert topic_state(server, f"{name}/imu") == {
        "state": "locked",
        "rows": 0,
        "chunks": 0,
        "notifications": [("error", "bad record")],
    }
    assert topic_state(server, f"{name}/gps")["rows"] == 1
    assert read_topic(client, name, "gps") == [(stamp(0), None, gps(0))]
    assert server.model.snapshot()["sequences"][name]["notifications"] == []


def test_topic_policy_ignore(server: RunningServer, client: MosaicoClient) -> None:
    """Ignore: the topic reports and absorbs the exception, keeps its stream and its buffer."""
    name = "topic_ignore"
    with client.sequence_create(name, {}) as sw:
        topic = sw.topic_create("imu", {}, IMU, on_error=TopicLevelErrorPolicy.Ignore)
        assert topic is not None
        with topic:
            topic.push(Message(timestamp_ns=stamp(0), data=imu(0)))
            topic.push(Message(timestamp_ns=stamp(1), data=imu(1)))
            raise ValueError("bad record")
        assert topic.status is TopicWriterStatus.IgnoredLastError
        assert topic.is_active and topic.last_error == "bad record"
        topic.push(Message(timestamp_ns=stamp(2), data=imu(2)))
        assert topic.status is TopicWriterStatus.Active and topic.last_error is None

    assert sw.status is SequenceStatus.Finalized
    assert topic.status is TopicWriterStatus.Finalized
    assert [s["state"] for s in sessions_of(server, name)] == ["finalized"]
    assert topic_state(server, f"{name}/imu") == {
        "state": "locked",
        "rows": 3,
        "chunks": 1,
        "notifications": [("error", "bad record")],
    }
    assert read_topic(client, name, "imu") == [(stamp(i), None, imu(i)) for i in range(3)]


def test_topic_policy_raise(profile: str, server: RunningServer, client: MosaicoClient) -> None:
    """Raise: the exception leaves the topic block and the session's Report handling runs."""
    name = "topic_raise"
    bad = ValueError("bad record")
    with pytest.raises(ValueError) as exc, client.sequence_create(name, {}) as sw:
        failing = sw.topic_create("imu", {}, IMU, on_error=TopicLevelErrorPolicy.Raise)
        other = sw.topic_create("gps", {}, GPS)
        assert failing is not None and other is not None
        other.push(Message(timestamp_ns=stamp(0), data=gps(0)))
        try:
            with failing:
                failing.push(Message(timestamp_ns=stamp(0), data=imu(0)))
                raise bad
        finally:
            assert failing.status is TopicWriterStatus.RaisedException
            assert failing.is_active
    assert exc.value is bad
    assert sw.status is SequenceStatus.Error
    assert failing.status is TopicWriterStatus.FinalizedWithError
    assert other.status is TopicWriterStatus.FinalizedWithError

    [session] = sessions_of(server, name)
    assert session["state"] == ("finalized_reported" if profile == "spec" else "finalized")
    for topic in ("imu", "gps"):
        state = topic_state(server, f"{name}/{topic}")
        assert state["state"] == "locked" and state["rows"] == 0  # SDK-REPORT-DROPS-BUFFER
        assert state["notifications"] == [("error", "bad record")]
    [(kind, message)] = server.model.snapshot()["sequences"][name]["notifications"]
    assert kind == "error" and "Inner err: 'bad record'" in message


@pytest.mark.parametrize("policy", list(SessionLevelErrorPolicy), ids=lambda p: p.value)
def test_update_adds_a_second_session(
    server: RunningServer, client: MosaicoClient, policy: SessionLevelErrorPolicy
) -> None:
    """sequence_handler(name).update() opens a second session on the same sequence."""
    name = f"updated_{policy.value}"
    first = write_imu_run(client, name, count=2)
    handler = client.sequence_handler(name)
    assert handler is not None
    with handler.update(on_error=policy) as updater:
        # Topic locators are unique across the server: the SDK answers None and logs
        # (SDK-TOPIC-CREATE-NONE).
        assert updater.topic_create("imu", {}, IMU) is None
        topic = updater.topic_create("gps", {"late": True}, GPS)
        assert topic is not None
        for i in range(3):
            topic.push(Message(timestamp_ns=stamp(i, 5), data=gps(i)))
    second = updater.session_uuid
    assert updater.session_status is SessionStatus.Finalized
    assert topic.status is TopicWriterStatus.Finalized

    assert sessions_of(server, name) == [
        {"sequence": name, "state": "finalized", "topics": [f"{name}/imu"]},
        {"sequence": name, "state": "finalized", "topics": [f"{name}/gps"]},
    ]
    assert handler.reload()
    assert [(s.uuid, s.locked) for s in handler.sessions] == [(first, True), (second, True)]
    assert handler.topics == ["/imu", "/gps"]
    assert read_topic(client, name, "gps") == [(stamp(i, 5), None, gps(i)) for i in range(3)]
    merged = [(t, m.timestamp_ns) for t, m in handler.get_data_streamer()]
    assert merged == [
        ("/imu", stamp(0)),
        ("/gps", stamp(0, 5)),
        ("/imu", stamp(1)),
        ("/gps", stamp(1, 5)),
        ("/gps", stamp(2, 5)),
    ]


def test_update_with_exception_under_delete_drops_only_its_session(
    server: RunningServer, client: MosaicoClient
) -> None:
    """An updater under Delete sends one session_delete; the user's exception propagates."""
    name = "update_purged"
    first = write_imu_run(client, name, count=2)
    handler = client.sequence_handler(name)
    assert handler is not None
    boom = RuntimeError("boom")
    with (
        pytest.raises(RuntimeError) as exc,
        handler.update(on_error=SessionLevelErrorPolicy.Delete) as updater,
    ):
        topic = updater.topic_create("gps", {}, GPS)
        assert topic is not None
        topic.push(Message(timestamp_ns=stamp(0), data=gps(0)))
        raise boom
    assert exc.value is boom
    assert updater.session_status is SessionStatus.Error
    assert topic.status is TopicWriterStatus.FinalizedWithError

    snap = server.model.snapshot()
    assert snap["sequences"][name]["sessions"] == [first]
    assert list(snap["topics"]) == [f"{name}/imu"]
    assert handler.reload()
    assert [s.uuid for s in handler.sessions] == [first]
    assert read_topic(client, name, "imu") == [(stamp(i), None, imu(i)) for i in range(2)]


def test_update_with_exception_under_report(
    profile: str, server: RunningServer, client: MosaicoClient
) -> None:
    """An updater under Report leaves the first session alone and finalizes its own."""
    name = "update_reported"
    write_imu_run(client, name, count=1)
    handler = client.sequence_handler(name)
    assert handler is not None
    with (
        pytest.raises(RuntimeError, match="boom"),
        handler.update(on_error=SessionLevelErrorPolicy.Report) as updater,
    ):
        topic = updater.topic_create("gps", {}, GPS)
        assert topic is not None
        raise RuntimeError("boom")
    assert updater.session_status is SessionStatus.Error
    second = "finalized_reported" if profile == "spec" else "finalized"  # MOSAICOD-REPORT-LOCKS
    assert [s["state"] for s in sessions_of(server, name)] == ["finalized", second]
    assert handler.reload()
    assert [s.locked for s in handler.sessions] == [True, profile != "spec"]
    assert len(client.list_sequence_notifications(name)) == 1
    assert [n.message for n in client.list_topic_notifications(name, "gps")] == ["boom"]


def test_deleting_locked_data(profile: str, server: RunningServer, client: MosaicoClient) -> None:
    """A cleanly finalized session is locked: the spec refuses to delete it or its sequence;
    mosaicod 0.3 deletes both."""
    first = write_imu_run(client, "locked_a", count=1)
    write_imu_run(client, "locked_b", count=1)
    before = server.model.snapshot()
    if profile == "spec":
        # FAILED_PRECONDITION reaches pyarrow as ArrowInvalid (as from mosaicod).
        precondition = r"^gRPC returned precondition failed error"
        with pytest.raises(pa.ArrowInvalid, match=precondition):
            client.session_delete(first)
        with pytest.raises(pa.ArrowInvalid, match=precondition):
            client.sequence_delete("locked_b")
        assert server.model.snapshot() == before
        assert sorted(client.list_sequences()) == ["locked_a", "locked_b"]
    else:  # MOSAICOD-DELETE-LOCKED-SESSION, MOSAICOD-DELETE-LOCKED-SEQUENCE
        client.session_delete(first)
        client.sequence_delete("locked_b")
        snap = server.model.snapshot()
        assert snap["sequences"] == {
            "locked_a": {"user_metadata": {"kind": "imu"}, "sessions": [], "notifications": []}
        }
        assert snap["sessions"] == {} and snap["topics"] == {}
        assert client.list_sequences() == ["locked_a"]


# ---------------------------------------------------------------------------------------------
# Catalogue


def test_query_by_name(server: RunningServer, client: MosaicoClient) -> None:
    """Sequence and topic filters select the runs and topics they name."""
    for name in ("query_alpha", "query_beta"):
        with client.sequence_create(name, {"name": name}) as sw:
            imu_writer = sw.topic_create("imu/front", {}, IMU)
            gps_writer = sw.topic_create("gps", {}, GPS)
            assert imu_writer is not None and gps_writer is not None
            imu_writer.push(Message(timestamp_ns=stamp(0), data=imu(0)))
            gps_writer.push(Message(timestamp_ns=stamp(0), data=gps(0)))

    response = client.query(QuerySequence().with_name("query_alpha"))
    assert response is not None
    [item] = list(response)
    assert item.sequence.name == "query_alpha"
    assert [t.name for t in item.topics] == ["/imu/front", "/gps"]

    response = client.query(QueryTopic().with_name_match("imu"))
    assert response is not None
    assert sorted((i.sequence.name, [t.name for t in i.topics]) for i in response) == [
        ("query_alpha", ["/imu/front"]),
        ("query_beta", ["/imu/front"]),
    ]

    response = client.query(
        QuerySequence().with_name("query_beta"), QueryTopic().with_ontology_tag("gps")
    )
    assert response is not None
    assert [(i.sequence.name, [t.name for t in i.topics]) for i in response] == [
        ("query_beta", ["/gps"])
    ]

    response = client.query(QuerySequence().with_name("query_gamma"))
    assert response is not None and response.is_empty()
