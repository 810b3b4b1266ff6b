"""Server behaviours written from the protocol's text, checked on the model's own API.

They cover what the conformance suite cannot reach over a transport (a stale DoPut handle) or
does not ask (a report between two topics, reads that must change nothing). Each check takes
a fresh `ServerModel` and fails with an AssertionError; `first_failure` runs them all.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from fsm.enums import APIKeyPermissionEnum
from fsm.outcome import ErrorKind
from fsm.transport import SequenceInfo
from transport.server.auth import Principal
from transport.server.errors import ServerError
from transport.server.model import ServerModel
from transport.server.put import PutHandle

MANAGE = Principal(APIKeyPermissionEnum.Manage)
SCHEMA = pa.schema([("timestamp_ns", pa.int64()), ("x", pa.float64())])
BATCH = pa.record_batch([pa.array([1, 2], pa.int64()), pa.array([0.5, 1.5])], schema=SCHEMA)


def act(model: ServerModel, wire: str, **body: Any) -> Any:
    return model.handle_action(MANAGE, wire, json.dumps(body).encode())


def refusal(call: Callable[[], object]) -> ErrorKind | None:
    try:
        call()
    except ServerError as exc:
        return exc.kind
    return None


def session(model: ServerModel, sequence: str) -> str:
    if sequence not in model.list_sequences(MANAGE, b""):
        act(model, "sequence_create", locator=sequence, user_metadata={})
    uuid: str = act(model, "session_create", locator=sequence)["uuid"]
    return uuid


def topic(model: ServerModel, session_uuid: str, locator: str) -> str:
    uuid: str = act(
        model,
        "topic_create",
        session_uuid=session_uuid,
        locator=locator,
        serialization_format="default",
        ontology_tag="imu",
        user_metadata={},
    )["uuid"]
    return uuid


def put_open(model: ServerModel, locator: str, topic_uuid: str) -> PutHandle:
    command = json.dumps({"resource_locator": locator, "topic_uuid": topic_uuid}).encode()
    return model.put_open(MANAGE, "cmd", command, SCHEMA)


def put_all(model: ServerModel, locator: str, topic_uuid: str) -> None:
    handle = put_open(model, locator, topic_uuid)
    model.put_write(handle, BATCH)
    model.put_end(handle)


def session_view(model: ServerModel, sequence: str, session_uuid: str) -> Any:
    info = model.flight_info(MANAGE, "cmd", json.dumps({"resource_locator": sequence}).encode())
    assert isinstance(info, SequenceInfo)
    return next(s for s in info.sessions if s.uuid == session_uuid)


def error_report(model: ServerModel, sequence: str) -> None:
    act(model, "sequence_notification_create", locator=sequence, notification_type="error", msg="x")


def reported_session_stays_unlocked_after_a_new_topic(model: ServerModel) -> None:
    s = session(model, "rep")
    put_all(model, "rep/a", topic(model, s, "rep/a"))
    error_report(model, "rep")
    put_all(model, "rep/b", topic(model, s, "rep/b"))
    act(model, "session_finalize", session_uuid=s)
    assert not session_view(model, "rep", s).locked, "finalized after a report: unlocked"
    act(model, "session_delete", session_uuid=s)


def an_error_report_keeps_a_finalized_lock(model: ServerModel) -> None:
    clean = session(model, "fin")
    put_all(model, "fin/a", topic(model, clean, "fin/a"))
    act(model, "session_finalize", session_uuid=clean)
    error_report(model, "fin")
    assert session_view(model, "fin", clean).locked
    assert refusal(lambda: act(model, "session_delete", session_uuid=clean)) is (
        ErrorKind.FAILED_PRECONDITION
    )
    reported = session(model, "rf")
    put_all(model, "rf/a", topic(model, reported, "rf/a"))
    error_report(model, "rf")
    act(model, "session_finalize", session_uuid=reported)
    error_report(model, "rf")
    assert not session_view(model, "rf", reported).locked
    act(model, "session_delete", session_uuid=reported)


def one_stream_at_a_time_and_a_broken_one_frees_its_topic(model: ServerModel) -> None:
    s = session(model, "one")
    uuid = topic(model, s, "one/a")
    first = put_open(model, "one/a", uuid)
    assert refusal(lambda: put_open(model, "one/a", uuid)) is ErrorKind.FAILED_PRECONDITION
    assert model.put_cancel(first)
    again = put_open(model, "one/a", uuid)
    model.put_write(again, BATCH)
    model.put_end(again)
    assert refusal(lambda: put_open(model, "one/a", uuid)) is ErrorKind.FAILED_PRECONDITION


def a_stale_stream_handle_is_refused(model: ServerModel) -> None:
    s = session(model, "stale")
    uuid = topic(model, s, "stale/a")
    broken = put_open(model, "stale/a", uuid)
    assert model.put_cancel(broken)
    assert refusal(lambda: model.put_write(broken, BATCH)) is ErrorKind.FAILED_PRECONDITION
    assert refusal(lambda: model.put_end(broken)) is ErrorKind.FAILED_PRECONDITION
    ended = put_open(model, "stale/a", uuid)
    model.put_end(ended)
    assert refusal(lambda: model.put_write(ended, BATCH)) is ErrorKind.FAILED_PRECONDITION
    assert refusal(lambda: model.put_end(ended)) is ErrorKind.FAILED_PRECONDITION
    assert model.snapshot()["topics"]["stale/a"]["rows"] == 0


def reads_change_nothing(model: ServerModel) -> None:
    s = session(model, "rd")
    put_all(model, "rd/a", topic(model, s, "rd/a"))
    streaming = put_open(model, "rd/b", topic(model, s, "rd/b"))
    model.put_write(streaming, BATCH)
    before = model.snapshot()
    for locator in ("rd/a", "rd/b"):
        info = model.flight_info(MANAGE, "cmd", json.dumps({"resource_locator": locator}).encode())
        assert info.ticket is not None
        assert model.read(MANAGE, info.ticket).batches
        assert model.read(MANAGE, info.ticket).batches
    assert model.snapshot() == before
    model.put_end(streaming)


CHECKS: tuple[Callable[[ServerModel], None], ...] = (
    reported_session_stays_unlocked_after_a_new_topic,
    an_error_report_keeps_a_finalized_lock,
    one_stream_at_a_time_and_a_broken_one_frees_its_topic,
    a_stale_stream_handle_is_refused,
    reads_change_nothing,
)


def first_failure(make: Callable[[], ServerModel]) -> str | None:
    """The name of the first check a fresh model from `make` fails, or None."""
    for check in CHECKS:
        try:
            check(make())
        except Exception as exc:  # a refusal, a wrong answer or a crash: all are caught
            return f"{check.__name__}: {type(exc).__name__}: {exc}"
    return None
