"""DoAction handlers for sequences, sessions, topics and their notifications.

Each handler takes every step its request needs through the apply path of
`transport/server/state.py`, then commits them; it never assigns a state itself. The model
finds a handler by the catalogue's operation name (`ACTION_HANDLERS`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fsm.outcome import ErrorKind
from fsm.spec.model import Operation
from transport.server.errors import ServerError
from transport.server.records import Notification, SequenceRecord, SessionRecord, TopicRecord
from transport.server.state import Handler, ServerState, Step
from transport.server.validate import split_topic_locator

__all__ = ["ACTION_HANDLERS", "SERVER_VERSION"]

SERVER_VERSION = (0, 1, 0)


def _commit_all(state: ServerState, *steps: Step) -> None:
    for step in steps:
        state.commit(step)


def sequence_create(state: ServerState, op: Operation, req: dict[str, Any]) -> None:
    name = req["locator"]
    step = state.step("sequence", name, op.name, op.wire)
    state.commit(step, SequenceRecord(name, req["user_metadata"], state.now()))


def sequence_delete(state: ServerState, op: Operation, req: dict[str, Any]) -> None:
    state.commit(state.step("sequence", req["locator"], op.name, op.wire))


def session_create(
    state: ServerState,
    op: Operation,
    req: dict[str, Any],
    *,
    answer: Callable[[SessionRecord], dict[str, Any]] | None = None,
    locator: Callable[[ServerState, str], str] | None = None,
) -> dict[str, Any]:
    """Open a session; `answer` shapes the response from the new record (default: its UUID)
    and `locator`, on a line whose sessions have one, names it."""
    sequence = state.step("sequence", req["locator"], op.name, op.wire)
    session_uuid = state.new_uuid()
    session = state.step("session", session_uuid, op.name, op.wire)
    record = SessionRecord(session_uuid, sequence.key, state.now())
    if locator is not None:
        record.locator = locator(state, sequence.key)
    state.commit(sequence)
    state.commit(session, record)
    return answer(record) if answer is not None else {"uuid": session_uuid}


def session_finalize(state: ServerState, op: Operation, req: dict[str, Any]) -> None:
    step = state.step("session", req["session_uuid"], op.name, op.wire)
    state.commit(step)
    if isinstance(step.record, SessionRecord) and step.dest != "absent":
        step.record.completed_ns = state.now()


def session_delete(
    state: ServerState,
    op: Operation,
    req: dict[str, Any],
    *,
    key: Callable[[ServerState, Mapping[str, Any]], str] | None = None,
) -> None:
    """Delete the session the body names (`key`: how; default its session_uuid)."""
    session = key(state, req) if key is not None else req["session_uuid"]
    state.commit(state.step("session", session, op.name, op.wire))


def _sequence(state: ServerState, op: Operation, req: dict[str, Any]) -> SequenceRecord:
    step = state.step("sequence", req["locator"], op.name, op.wire)
    state.commit(step)
    assert isinstance(step.record, SequenceRecord)  # every accepting row needs one
    return step.record


def sequence_notification_create(state: ServerState, op: Operation, req: dict[str, Any]) -> None:
    sequence = state.step("sequence", req["locator"], op.name, op.wire)
    assert isinstance(sequence.record, SequenceRecord)
    reported: list[Step] = []
    if req["notification_type"] == "error":
        reported = [
            state.step("session", s, "ERROR_REPORTED", op.wire) for s in sequence.record.sessions
        ]
    sequence.record.notifications.append(
        Notification(sequence.key, req["notification_type"], req["msg"], state.now())
    )
    _commit_all(state, sequence, *reported)


def sequence_notification_list(
    state: ServerState, op: Operation, req: dict[str, Any]
) -> dict[str, Any]:
    return {"notifications": [n.to_json() for n in _sequence(state, op, req).notifications]}


def sequence_notification_purge(state: ServerState, op: Operation, req: dict[str, Any]) -> None:
    _sequence(state, op, req).notifications.clear()


def topic_create(state: ServerState, op: Operation, req: dict[str, Any]) -> dict[str, str]:
    session = state.step("session", req["session_uuid"], op.name, op.wire)
    assert isinstance(session.record, SessionRecord)
    locator = req["locator"]
    sequence_name, _path = split_topic_locator(locator)
    if sequence_name != session.record.sequence:
        raise ServerError(
            ErrorKind.PERMISSION_DENIED,
            f"unauthorized: topic {locator!r} is outside the session's sequence "
            f"{session.record.sequence!r}",
        )
    topic = state.step("topic", locator, op.name, op.wire)
    topic_uuid = state.new_uuid()
    record = TopicRecord(
        locator=locator,
        sequence=session.record.sequence,
        session=session.key,
        uuid=topic_uuid,
        serialization_format=req["serialization_format"],
        ontology_tag=req["ontology_tag"],
        user_metadata=req["user_metadata"],
        created_ns=state.now(),
    )
    state.commit(session)
    state.commit(topic, record)
    return {"uuid": topic_uuid}


def _topic(state: ServerState, op: Operation, req: dict[str, Any]) -> TopicRecord:
    step = state.step("topic", req["locator"], op.name, op.wire)
    state.commit(step)
    assert isinstance(step.record, TopicRecord)  # every accepting row needs one
    return step.record


def topic_delete(state: ServerState, op: Operation, req: dict[str, Any]) -> None:
    state.commit(state.step("topic", req["locator"], op.name, op.wire))


def topic_notification_create(state: ServerState, op: Operation, req: dict[str, Any]) -> None:
    topic = _topic(state, op, req)
    topic.notifications.append(
        Notification(topic.locator, req["notification_type"], req["msg"], state.now())
    )


def topic_notification_list(
    state: ServerState, op: Operation, req: dict[str, Any]
) -> dict[str, Any]:
    return {"notifications": [n.to_json() for n in _topic(state, op, req).notifications]}


def topic_notification_purge(state: ServerState, op: Operation, req: dict[str, Any]) -> None:
    _topic(state, op, req).notifications.clear()


def version(
    state: ServerState,
    op: Operation,
    req: dict[str, Any],
    *,
    release: str | None = None,
    config: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The server's version: `release` (a protocol line's handshake version; default this
    project's own) and, for a handshake that reports them, the server's gRPC limits."""
    pre: str | None = None
    if release is None:
        major, minor, patch = SERVER_VERSION
    else:
        core, _, suffix = release.partition("-")
        major, minor, patch = (int(part) for part in core.split("."))
        pre = suffix or None
    answer: dict[str, Any] = {
        "version": f"{major}.{minor}.{patch}" + (f"-{pre}" if pre else ""),
        "semver": {"major": major, "minor": minor, "patch": patch, "pre": pre},
    }
    if config:
        answer["config"] = dict(config)
    return answer


ACTION_HANDLERS: Mapping[str, Handler] = {
    "SEQUENCE_CREATE": sequence_create,
    "SEQUENCE_DELETE": sequence_delete,
    "SESSION_CREATE": session_create,
    "SESSION_FINALIZE": session_finalize,
    "SESSION_DELETE": session_delete,
    "SEQUENCE_NOTIFICATION_CREATE": sequence_notification_create,
    "SEQUENCE_NOTIFICATION_LIST": sequence_notification_list,
    "SEQUENCE_NOTIFICATION_PURGE": sequence_notification_purge,
    "TOPIC_CREATE": topic_create,
    "TOPIC_DELETE": topic_delete,
    "TOPIC_NOTIFICATION_CREATE": topic_notification_create,
    "TOPIC_NOTIFICATION_LIST": topic_notification_list,
    "TOPIC_NOTIFICATION_PURGE": topic_notification_purge,
    "VERSION": version,
    "INFO": version,
}
