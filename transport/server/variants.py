"""Deliberately broken servers, to measure what the conformance suite catches.

Each variant is the reference model with one realistic mistake. `mosaico-fsm conformance
--self-test` runs the suite against every one of them (and against every single emulated
deviation) and reports which requirement catches it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from fsm.outcome import ErrorKind
from fsm.spec.model import Operation, ResourceRow
from transport.server import actions
from transport.server.auth import Principal
from transport.server.errors import ServerError
from transport.server.model import ServerModel
from transport.server.records import Notification, SessionRecord, TopicRecord
from transport.server.state import ServerState

__all__ = ["VARIANTS", "Variant"]


@attrs.frozen
class Variant:
    name: str
    mistake: str
    make: Callable[..., ServerModel]


def _topics_present(state: ServerState, session: SessionRecord | None) -> dict[str, str]:
    return {"topics": "all_locked" if session is not None and session.topics else "none"}


class _FinalizeIgnoresTopicLocks(ServerModel):
    """session_finalize does not look at the topics' locks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.state.facts["session"] = _topics_present


class _DeleteIgnoresPermissions(ServerModel):
    """The delete actions skip the permission check."""

    def authorize(self, principal: Principal, operation: str) -> None:
        if operation.endswith("_DELETE"):
            return
        super().authorize(principal, operation)


class _PutAcceptsLockedTopic(ServerModel):
    """A DoPut to a locked topic is accepted and stored."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        topic = self.resources["topic"]
        rows = []
        for row in topic.rows:
            if row.source == "locked" and row.event in (
                "DO_PUT_OPEN",
                "DO_PUT_WRITE",
                "DO_PUT_END",
            ):
                row = ResourceRow(
                    row.source, row.event, row.when, "locked", None, "broken: accepted"
                )
            rows.append(row)
        self.resources["topic"] = attrs.evolve(topic, rows=tuple(rows))


def _note_on_sequence(state: ServerState, op: Operation, req: dict[str, Any]) -> None:
    step = state.step("topic", req["locator"], op.name, op.wire)
    state.commit(step)
    assert isinstance(step.record, TopicRecord)
    sequence = state.sequences[step.record.sequence]
    sequence.notifications.append(
        Notification(sequence.name, req["notification_type"], req["msg"], state.now())
    )


class _NotificationOnWrongResource(ServerModel):
    """A topic notification is stored on the topic's sequence."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handlers["TOPIC_NOTIFICATION_CREATE"] = _note_on_sequence


def _create_overwriting(state: ServerState, op: Operation, req: dict[str, Any]) -> None:
    try:
        actions.sequence_create(state, op, req)
    except ServerError as refusal:
        if refusal.kind is ErrorKind.ALREADY_EXISTS:
            state.sequences[req["locator"]].user_metadata = req["user_metadata"]
        raise


class _RefusalChangesState(ServerModel):
    """A refused sequence_create (the name exists) still overwrites the metadata."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handlers["SEQUENCE_CREATE"] = _create_overwriting


class _DataLtAsLeq(ServerModel):
    """$lt on a data field is evaluated as $leq (a row equal to the bound matches)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        evaluate = self.handlers["QUERY"]

        def query(state: ServerState, op: Operation, req: dict[str, Any]) -> Any:
            ontology = req.get("ontology")
            if isinstance(ontology, dict):
                ontology = {
                    key: {"$leq": cond["$lt"]}
                    if isinstance(cond, dict) and list(cond) == ["$lt"]
                    else cond
                    for key, cond in ontology.items()
                }
                req = {**req, "ontology": ontology}
            return evaluate(state, op, req)

        self.handlers["QUERY"] = query


VARIANTS: tuple[Variant, ...] = (
    Variant(
        "finalize-ignores-topic-locks",
        "session_finalize does not check that every topic is locked",
        _FinalizeIgnoresTopicLocks,
    ),
    Variant(
        "delete-ignores-permissions",
        "the delete actions run whatever the key's permission",
        _DeleteIgnoresPermissions,
    ),
    Variant(
        "put-accepts-locked-topic",
        "a DoPut to a locked topic is stored and accepted",
        _PutAcceptsLockedTopic,
    ),
    Variant(
        "notification-on-wrong-resource",
        "a topic notification is stored on its sequence",
        _NotificationOnWrongResource,
    ),
    Variant(
        "refusal-changes-state",
        "a refused sequence_create still overwrites the metadata",
        _RefusalChangesState,
    ),
    Variant(
        "query-data-lt-as-leq",
        "$lt on a data field matches rows equal to the bound",
        _DataLtAsLeq,
    ),
)
