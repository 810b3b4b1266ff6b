"""The enums carry exactly the names and values of mosaicolabs 0.3.x (PROTOCOL.md §8)."""

from __future__ import annotations

import warnings

import pytest

from fsm import enums
from fsm.enums import (
    APIKeyPermissionEnum,
    FlightAction,
    OnErrorPolicy,
    SequenceStatus,
    SerializationFormat,
    SessionLevelErrorPolicy,
    SessionStatus,
    TopicLevelErrorPolicy,
    TopicWriterStatus,
)

EXPECTED = {
    SerializationFormat: {"Default": "default", "Ragged": "ragged", "Image": "image"},
    SessionStatus: {
        "Null": "null",
        "Pending": "pending",
        "Finalized": "finalized",
        "Error": "error",
    },
    TopicWriterStatus: {
        "Active": "active",
        "Finalized": "finalized",
        "FinalizedWithError": "finalized_with_error",
        "IgnoredLastError": "ignored_last_error",
        "RaisedException": "raised_exception",
    },
    APIKeyPermissionEnum: {
        "Read": "read",
        "Write": "write",
        "Delete": "delete",
        "Manage": "manage",
    },
    SessionLevelErrorPolicy: {"Report": "report", "Delete": "delete"},
    OnErrorPolicy: {"Report": "report", "Delete": "delete"},
    TopicLevelErrorPolicy: {"Finalize": "finalize", "Ignore": "ignore", "Raise": "raise"},
}

SEED_ACTIONS = [
    "SEQUENCE_CREATE",
    "SESSION_CREATE",
    "SESSION_FINALIZE",
    "SEQUENCE_NOTIFICATION_CREATE",
    "SEQUENCE_NOTIFICATION_LIST",
    "SEQUENCE_NOTIFICATION_PURGE",
    "SESSION_DELETE",
    "SEQUENCE_DELETE",
    "TOPIC_CREATE",
    "TOPIC_NOTIFICATION_CREATE",
    "TOPIC_NOTIFICATION_LIST",
    "TOPIC_NOTIFICATION_PURGE",
    "TOPIC_DELETE",
    "QUERY",
    "API_KEY_CREATE",
    "API_KEY_REVOKE",
    "API_KEY_STATUS",
]


@pytest.mark.parametrize("enum", list(EXPECTED), ids=lambda e: e.__name__)
def test_members_and_values(enum: type) -> None:
    assert {m.name: m.value for m in enum} == EXPECTED[enum]  # type: ignore[attr-defined]


def test_every_enum_is_documented() -> None:
    for name in enums.__all__:
        cls = getattr(enums, name)
        assert cls.__doc__, name


def test_sequence_status_is_session_status() -> None:
    assert SequenceStatus is SessionStatus


def test_flight_actions_are_the_seed_list_plus_version() -> None:
    assert [a.name for a in FlightAction] == [*SEED_ACTIONS, "VERSION"]
    assert all(a.value == a.name.lower() for a in FlightAction)


def test_permission_order_and_coverage() -> None:
    read, write, delete, manage = APIKeyPermissionEnum
    assert read < write < delete < manage
    assert sorted([manage, read, delete, write]) == [read, write, delete, manage]
    assert manage.covers(read) and delete.covers(delete) and write.covers(read)
    assert not read.covers(write) and not delete.covers(manage)
    for held in APIKeyPermissionEnum:
        for needed in APIKeyPermissionEnum:
            assert held.covers(needed) == (held.rank >= needed.rank)


def test_on_error_policy_converts_by_value_with_a_warning() -> None:
    for old in OnErrorPolicy:
        with pytest.warns(DeprecationWarning):
            new = old.to_session_policy()
        assert new is SessionLevelErrorPolicy(old.value)
        with pytest.warns(DeprecationWarning):
            assert OnErrorPolicy.normalize(old) is new


def test_normalize_accepts_the_new_policy_silently_and_refuses_others() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert (
            OnErrorPolicy.normalize(SessionLevelErrorPolicy.Delete)
            is SessionLevelErrorPolicy.Delete
        )
    with pytest.raises(TypeError):
        OnErrorPolicy.normalize("report")  # type: ignore[arg-type]
