"""The engine's typed action calls (notifications, deletions, API keys, version) over both
transports: attrs values back, arguments checked before any I/O, the server's error kind on a
refusal, malformed replies refused, and key tokens kept out of logs, traces and reprs."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from fsm import ActionFailed, ArgumentError, ErrorKind
from fsm.engine import Client, Tracer
from fsm.engine.actions import (
    APIKey,
    APIKeyStatus,
    Notification,
    NotificationType,
    ServerVersion,
)
from fsm.enums import APIKeyPermissionEnum, FlightAction
from fsm.outcome import Outcome
from fsm.transport import Descriptor, Transport
from tests.harness import KIND_PARAMS, Harness, create_sequence, create_topic, harness
from transport.server.trace import ServerTrace

SCHEMA = pa.schema(
    [pa.field("timestamp_ns", pa.int64(), nullable=False), pa.field("x", pa.float64())]
)
Manage, Read = APIKeyPermissionEnum.Manage, APIKeyPermissionEnum.Read


@pytest.fixture(params=KIND_PARAMS)
def h(request: pytest.FixtureRequest) -> Iterator[Harness]:
    with harness(request.param) as hh:
        yield hh


@pytest.fixture(params=KIND_PARAMS)
def auth(request: pytest.FixtureRequest) -> Iterator[Harness]:
    with harness(request.param, auth=True) as hh:
        yield hh


def _write(client: Client, name: str, topics: tuple[str, ...] = ("imu",)) -> str:
    """A finalized sequence with one row per topic; answers its session's uuid."""
    with client.sequence_create(name, {}) as seq:
        for topic in topics:
            with seq.topic_create(topic, {}, schema=SCHEMA, ontology_tag="imu") as writer:
                writer.push_row({"timestamp_ns": 1, "x": 0.5})
    return seq.session_uuid


def _kind(call: Callable[[], object]) -> ErrorKind:
    with pytest.raises(ActionFailed) as caught:
        call()
    return caught.value.kind


# -----------------------------------------------------------------------------------------------
# Notifications


def test_notifications_are_listed_typed_and_purged(h: Harness) -> None:
    client = Client(h.transport())
    _write(client, "run", ("imu", "gps"))
    client.sequence_notification_create("run", "first")
    client.sequence_notification_create("run", "second", NotificationType.Info)
    client.topic_notification_create("run", "/imu", "topic note")

    notes = client.sequence_notifications("run")
    assert [(n.sequence, n.topic, n.notification_type, n.msg) for n in notes] == [
        ("run", None, "error", "first"),
        ("run", None, "info", "second"),
    ]
    assert all(isinstance(n, Notification) for n in notes)
    assert all(isinstance(n.created_at, datetime) and n.created_at.tzinfo for n in notes)
    (topic_note,) = client.topic_notifications("run", "imu")
    assert (topic_note.sequence, topic_note.topic, topic_note.msg) == ("run", "imu", "topic note")

    client.topic_notification_purge("run", "imu")
    assert client.topic_notifications("run", "imu") == []
    assert len(client.sequence_notifications("run")) == 2  # the purge was the topic's only
    client.sequence_notification_purge("run")
    assert client.sequence_notifications("run") == []


def test_notification_calls_raise_the_servers_kind(h: Harness) -> None:
    client = Client(h.transport())
    assert _kind(lambda: client.sequence_notifications("absent")) is ErrorKind.NOT_FOUND
    assert _kind(lambda: client.topic_notification_purge("absent", "t")) is ErrorKind.NOT_FOUND
    assert _kind(lambda: client.sequence_notification_create("absent", "m")) is ErrorKind.NOT_FOUND


# -----------------------------------------------------------------------------------------------
# Deletions


def test_topic_session_and_sequence_deletion(h: Harness) -> None:
    transport = h.transport()
    client = Client(transport)
    session = create_sequence(transport, "a")  # left open: its topics can be deleted
    for topic in ("imu", "gps"):
        create_topic(transport, session, f"a/{topic}")
    client.topic_delete("a", "gps")
    assert _kind(lambda: client.topic_info("a", "gps")) is ErrorKind.NOT_FOUND
    assert [t.locator for t in client.sequence_info("a").topics] == ["a/imu"]
    assert _kind(lambda: client.topic_delete("a", "gps")) is ErrorKind.NOT_FOUND

    client.session_delete(session)
    assert client.sequence_info("a").sessions == ()
    assert _kind(lambda: client.session_delete(session)) is ErrorKind.NOT_FOUND

    client.sequence_delete("a")
    assert "a" not in client.list_sequences()
    assert _kind(lambda: client.sequence_delete("a")) is ErrorKind.NOT_FOUND


def test_deleting_a_locked_topic_raises_the_servers_kind(h: Harness) -> None:
    client = Client(h.transport())
    _write(client, "locked")
    assert _kind(lambda: client.topic_delete("locked", "imu")) is ErrorKind.FAILED_PRECONDITION
    assert [t.locator for t in client.sequence_info("locked").topics] == ["locked/imu"]


def test_session_delete_removes_an_open_session(h: Harness) -> None:
    transport = h.transport()
    client = Client(transport)
    _write(client, "b")
    opened = transport.action(FlightAction.SESSION_CREATE, {"locator": "b"})
    session = opened.value["uuid"]
    assert len(client.sequence_info("b").sessions) == 2
    client.session_delete(session)
    assert [s.uuid for s in client.sequence_info("b").sessions] != [session]
    assert len(client.sequence_info("b").sessions) == 1
    assert _kind(lambda: client.session_delete(session)) is ErrorKind.NOT_FOUND


# -----------------------------------------------------------------------------------------------
# API keys


def test_api_keys_created_inspected_and_revoked(auth: Harness) -> None:
    admin = Client(auth.transport(auth.model.bootstrap_key()))
    key = admin.api_key_create(Read, "for the dashboard", expires_at_ns=2**62)
    assert isinstance(key, APIKey)
    assert (key.permission, key.description, key.expires_at_ns) == (
        Read,
        "for the dashboard",
        2**62,
    )
    assert key.token.startswith("msco_") and key.token.endswith("_" + key.fingerprint)

    status = admin.api_key_status(key.fingerprint)
    assert isinstance(status, APIKeyStatus)
    assert (status.fingerprint, status.description, status.expires_at_ns) == (
        key.fingerprint,
        "for the dashboard",
        2**62,
    )
    assert status.created_at_ns > 0 and not status.is_expired(status.created_at_ns)
    assert status.is_expired(2**62)

    reader = Client(auth.transport(key.token))
    assert isinstance(reader.version(), ServerVersion)
    assert reader.list_sequences() == []
    # the reader may not manage keys: the server's kind comes through
    assert _kind(lambda: reader.api_key_create(Read, "no")) is ErrorKind.PERMISSION_DENIED
    assert _kind(lambda: reader.sequence_delete("x")) is ErrorKind.PERMISSION_DENIED

    admin.api_key_revoke(key.fingerprint)
    assert _kind(lambda: admin.api_key_status(key.fingerprint)) is ErrorKind.NOT_FOUND
    assert _kind(lambda: admin.api_key_revoke(key.fingerprint)) is ErrorKind.NOT_FOUND
    assert _kind(reader.list_sequences) is ErrorKind.PERMISSION_DENIED

    unlimited = admin.api_key_create(APIKeyPermissionEnum.Write, "")
    assert admin.api_key_status(unlimited.fingerprint).expires_at_ns is None


def test_version_is_typed(h: Harness) -> None:
    version = Client(h.transport()).version()
    assert version.version == f"{version.major}.{version.minor}.{version.patch}"
    assert version.pre is None


def test_key_tokens_never_appear_in_logs_traces_or_reprs(
    auth: Harness, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server_trace = ServerTrace()
    auth.model.trace = server_trace
    bootstrap = auth.model.bootstrap_key()
    admin = Client(auth.transport(bootstrap), tracer=Tracer(tmp_path / "admin.jsonl"))
    key = admin.api_key_create(APIKeyPermissionEnum.Write, "writer")
    transport = auth.transport(key.token)
    writer = Client(transport, tracer=Tracer(tmp_path / "writer.jsonl"))
    _write(writer, "secret_run")
    with pytest.raises(ActionFailed):
        writer.api_key_status(key.fingerprint)  # refused: the message must not hold the token
    with pytest.raises(ArgumentError) as wrong:
        admin.api_key_revoke(key.token)  # a token where a fingerprint goes
    admin.api_key_status(key.fingerprint)
    admin.api_key_revoke(key.fingerprint)
    writer.close()
    admin.close()

    texts = {
        "repr(key)": repr(key),
        "str(key)": str(key),
        "repr(transport)": repr(transport),
        "repr(client)": repr(writer),
        "the ArgumentError": str(wrong.value),
        "the log": caplog.text,
        "the server trace": json.dumps(server_trace.events),
        "the engine traces": (tmp_path / "admin.jsonl").read_text()
        + (tmp_path / "writer.jsonl").read_text(),
    }
    assert "secret_run" in texts["the engine traces"]  # the traces did record the run
    assert server_trace.events
    for token in (key.token, bootstrap):
        payload = token.split("_")[1]
        for where, text in texts.items():
            assert payload not in text, f"a key token appears in {where}"


# -----------------------------------------------------------------------------------------------
# Bad arguments: refused before any I/O


class NoIO(Transport):
    """A transport that fails the test on any call."""

    def action_raw(self, action_type: str, body: bytes) -> Outcome:
        raise AssertionError(f"sent {action_type} {body!r}")

    def open_stream(self, descriptor: Descriptor, schema: pa.Schema) -> Outcome:
        raise AssertionError("opened a stream")

    def flight_info(self, descriptor: Descriptor) -> Outcome:
        raise AssertionError("asked for flight info")

    def read(self, ticket: bytes) -> Outcome:
        raise AssertionError("read")

    def list_sequences(self, criteria: bytes = b"") -> Outcome:
        raise AssertionError("listed")

    def close(self) -> None:
        return None


BAD_CALLS: dict[str, Callable[[Client], object]] = {
    "sequence_notifications bad name": lambda c: c.sequence_notifications("bad name"),
    "sequence_notifications not a str": lambda c: c.sequence_notifications(3),  # type: ignore[arg-type]
    "topic_notifications bad topic": lambda c: c.topic_notifications("s", "/"),
    "topic_notifications bad sequence": lambda c: c.topic_notifications("-s", "t"),
    "sequence_notification_create bad type": lambda c: c.sequence_notification_create(
        "s",
        "m",
        "error",  # type: ignore[arg-type]
    ),
    "sequence_notification_create msg": lambda c: c.sequence_notification_create("s", None),  # type: ignore[arg-type]
    "topic_notification_create bad topic": lambda c: c.topic_notification_create("s", "a//b", "m"),
    "sequence_notification_purge": lambda c: c.sequence_notification_purge(""),
    "topic_notification_purge": lambda c: c.topic_notification_purge("s", "t?"),
    "sequence_delete": lambda c: c.sequence_delete("s/t"),
    "session_delete not a uuid": lambda c: c.session_delete("not-a-uuid"),
    "session_delete None": lambda c: c.session_delete(None),  # type: ignore[arg-type]
    "topic_delete": lambda c: c.topic_delete("s", ""),
    "api_key_create permission as text": lambda c: c.api_key_create("read", "d"),  # type: ignore[arg-type]
    "api_key_create description": lambda c: c.api_key_create(Read, 5),  # type: ignore[arg-type]
    "api_key_create negative expiry": lambda c: c.api_key_create(Read, "d", -1),
    "api_key_create bool expiry": lambda c: c.api_key_create(Read, "d", True),
    "api_key_create huge expiry": lambda c: c.api_key_create(Read, "d", 2**63),
    "api_key_status short": lambda c: c.api_key_status("abc"),
    "api_key_status upper": lambda c: c.api_key_status("ABCDEFGH"),
    "api_key_revoke None": lambda c: c.api_key_revoke(None),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_bad_arguments_are_refused_before_any_io(case: str) -> None:
    with pytest.raises(ArgumentError):
        BAD_CALLS[case](Client(NoIO()))


# -----------------------------------------------------------------------------------------------
# Malformed replies: the server's fault, reported as internal, never passed on as a value


class Answering(NoIO):
    """Answers every action with `reply`."""

    def __init__(self, reply: Any) -> None:
        self.reply = reply

    def action_raw(self, action_type: str, body: bytes) -> Outcome:
        return Outcome.ok(self.reply)


MALFORMED: dict[str, tuple[Any, Callable[[Client], object]]] = {
    "notifications not a list": (
        {"notifications": {}},
        lambda c: c.sequence_notifications("s"),
    ),
    "notification without msg": (
        {"notifications": [{"name": "s", "notification_type": "error", "created_datetime": "x"}]},
        lambda c: c.sequence_notifications("s"),
    ),
    "notification with a bad time": (
        {
            "notifications": [
                {"name": "s", "notification_type": "error", "msg": "m", "created_datetime": "x"}
            ]
        },
        lambda c: c.sequence_notifications("s"),
    ),
    "no token": ({"api_key_token": None}, lambda c: c.api_key_create(Read, "d")),
    "not a token": ({"api_key_token": "abc"}, lambda c: c.api_key_create(Read, "d")),
    "status without created_at_ns": (
        {"api_key_fingerprint": "abcdefgh", "description": "d"},
        lambda c: c.api_key_status("abcdefgh"),
    ),
    "status with a text expiry": (
        {
            "api_key_fingerprint": "abcdefgh",
            "description": "d",
            "created_at_ns": 1,
            "expires_at_ns": "soon",
        },
        lambda c: c.api_key_status("abcdefgh"),
    ),
    "version without semver": ({"version": "1.0.0"}, lambda c: c.version()),
    "version null": (None, lambda c: c.version()),
    "version with a bool major": (
        {"version": "1", "semver": {"major": True, "minor": 0, "patch": 0, "pre": None}},
        lambda c: c.version(),
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_replies_are_refused(case: str) -> None:
    reply, call = MALFORMED[case]
    with pytest.raises(ActionFailed) as caught:
        call(Client(Answering(reply)))
    assert caught.value.kind is ErrorKind.INTERNAL
    assert "malformed reply" in str(caught.value)


def test_notification_times_are_read_as_the_sdk_reads_them() -> None:
    def one(created: str) -> Notification:
        reply = {
            "notifications": [
                {
                    "name": "s/a/b",
                    "notification_type": "info",
                    "msg": "m",
                    "created_datetime": created,
                }
            ]
        }
        (note,) = Client(Answering(reply)).sequence_notifications("s")
        return note

    utc = one("2026-01-02 03:04:05 UTC")
    assert (utc.sequence, utc.topic) == ("s", "a/b")
    assert utc.created_at == one("2026-01-02T03:04:05+00:00").created_at
    assert utc.created_at == one("2026-01-02T03:04:05").created_at  # naive: UTC
    assert utc.created_at == one("2026-01-02T03:04:05Z").created_at
