"""Typed calls for the actions a user runs outside of a writer: notifications, deletions, API
keys and the server's version.

Each call checks its arguments before any I/O (bad input raises `ArgumentError` and sends
nothing), sends one action of the catalogue, and answers an attrs value decoded from the reply.
A refusal raises `ActionFailed` with the server's error kind; a lost reply raises
`OutcomeUnknown`; a reply that does not have the catalogue's shape raises `ActionFailed` with
kind `internal`. `ActionCalls` holds the calls; `fsm.engine.Client` inherits them.

An API-key token is a secret: `APIKey` keeps it out of its repr, and no call logs or traces it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import attrs

from fsm.engine.base import outcome_error
from fsm.engine.validation import check_sequence_name, check_topic_name, topic_locator
from fsm.enums import APIKeyPermissionEnum, FlightAction
from fsm.errors import ActionFailed, ArgumentError
from fsm.outcome import ErrorKind
from fsm.transport import Transport

__all__ = [
    "APIKey",
    "APIKeyStatus",
    "ActionCalls",
    "Notification",
    "NotificationType",
    "ServerVersion",
]

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_FINGERPRINT = re.compile(r"[a-z0-9]{8}")
_TOKEN = re.compile(r"msco_[a-z0-9]{32}_([a-z0-9]{8})")
_INT64_MAX = 2**63 - 1


class NotificationType(Enum):
    """The kinds of notification the catalogue knows."""

    Error = "error"
    Info = "info"


@attrs.frozen
class Notification:
    """A notification attached to a sequence (`topic` None) or to one of its topics."""

    sequence: str
    topic: str | None
    notification_type: str
    msg: str
    created_at: datetime


@attrs.frozen
class APIKey:
    """A key just issued. `token` is the secret the server shows once: it is kept out of the
    repr; `fingerprint` names the key in `api_key_status` and `api_key_revoke`."""

    token: str = attrs.field(repr=False)
    permission: APIKeyPermissionEnum
    description: str
    expires_at_ns: int | None

    @property
    def fingerprint(self) -> str:
        return self.token.rsplit("_", 1)[-1]


@attrs.frozen
class APIKeyStatus:
    """What the server stores about a key."""

    fingerprint: str
    description: str
    created_at_ns: int
    expires_at_ns: int | None

    def is_expired(self, now_ns: int) -> bool:
        """True when the key has an expiry at or before `now_ns`."""
        return self.expires_at_ns is not None and self.expires_at_ns <= now_ns


@attrs.frozen
class ServerVersion:
    """The server's version: its text and its semantic parts."""

    version: str
    major: int
    minor: int
    patch: int
    pre: str | None


# -----------------------------------------------------------------------------------------------
# Argument checks (before any I/O)


def _check_uuid(value: object, what: str) -> str:
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        raise ArgumentError(
            f"{what} must be a UUID in its 8-4-4-4-12 hexadecimal form, got {value!r}"
        )
    return value


def _check_fingerprint(value: object) -> str:
    if not isinstance(value, str) or not _FINGERPRINT.fullmatch(value):
        # never echo a token passed by mistake
        shown = "a token" if isinstance(value, str) and value.startswith("msco_") else repr(value)
        raise ArgumentError(
            f"an API-key fingerprint is 8 lowercase letters or digits (APIKey.fingerprint), got {shown}"
        )
    return value


def _check_text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ArgumentError(f"{what} must be a string, got {type(value).__name__}")
    return value


def _check_expiry(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _INT64_MAX:
        raise ArgumentError(f"expires_at_ns must be None or an int64 >= 0, got {value!r}")
    return value


def _check_member(enum: type[Enum], value: object, what: str) -> Any:
    if not isinstance(value, enum):
        choices = ", ".join(f"{enum.__name__}.{m.name}" for m in enum)
        raise ArgumentError(f"{what} must be one of {choices}, got {value!r}")
    return value


# -----------------------------------------------------------------------------------------------
# Reply decoding (a reply without the catalogue's shape is the server's fault: internal)


def _malformed(operation: str, problem: str) -> ActionFailed:
    return ActionFailed(operation, ErrorKind.INTERNAL, f"malformed reply: {problem}")


def _field(
    reply: Mapping[str, Any], name: str, kind: type | tuple[type, ...], operation: str
) -> Any:
    value = reply.get(name)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise _malformed(operation, f"{name!r} is {value!r}")
    return value


def _optional_int(reply: Mapping[str, Any], name: str, operation: str) -> int | None:
    return None if reply.get(name) is None else int(_field(reply, name, int, operation))


def _datetime(text: str, operation: str) -> datetime:
    """An ISO-8601 time; ' UTC' suffixes and naive values are read as UTC."""
    try:
        parsed = datetime.fromisoformat(text.removesuffix(" UTC").replace("Z", "+00:00"))
    except ValueError:
        raise _malformed(operation, f"created_datetime {text!r} is not ISO-8601") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _notification(raw: object, operation: str) -> Notification:
    if not isinstance(raw, Mapping):
        raise _malformed(operation, f"a notification is {raw!r}")
    name = _field(raw, "name", str, operation)
    sequence, _, topic = name.removeprefix("/").partition("/")
    return Notification(
        sequence=sequence,
        topic=topic or None,
        notification_type=_field(raw, "notification_type", str, operation),
        msg=_field(raw, "msg", str, operation),
        created_at=_datetime(_field(raw, "created_datetime", str, operation), operation),
    )


def server_version(reply: object, operation: str) -> ServerVersion:
    """The {version, semver} part of a version or info answer, or ActionFailed."""
    reply = _reply(reply, operation)
    semver = _reply(reply.get("semver"), operation)
    pre = semver.get("pre")
    if pre is not None and not isinstance(pre, str):
        raise _malformed(operation, f"semver.pre is {pre!r}")
    return ServerVersion(
        version=_field(reply, "version", str, operation),
        major=_field(semver, "major", int, operation),
        minor=_field(semver, "minor", int, operation),
        patch=_field(semver, "patch", int, operation),
        pre=pre,
    )


def _reply(reply: object, operation: str) -> Mapping[str, Any]:
    if not isinstance(reply, Mapping):
        raise _malformed(operation, f"expected an object, got {reply!r}")
    return reply


# -----------------------------------------------------------------------------------------------


class ActionCalls:
    """The typed action calls of a client (mixed into `fsm.engine.Client`)."""

    transport: Transport

    def _act(self, action: FlightAction, body: Mapping[str, Any]) -> Any:
        outcome = self.transport.action(action, body)
        if not outcome.is_ok:
            raise outcome_error(action.name, outcome)
        return outcome.value

    # Notifications --------------------------------------------------------------------------

    def sequence_notifications(self, name: str) -> list[Notification]:
        """The notifications of sequence `name`, oldest first."""
        locator = check_sequence_name(name)
        return self._notifications(FlightAction.SEQUENCE_NOTIFICATION_LIST, locator)

    def topic_notifications(self, sequence: str, topic: str) -> list[Notification]:
        """The notifications of a topic, oldest first."""
        locator = topic_locator(check_sequence_name(sequence), check_topic_name(topic))
        return self._notifications(FlightAction.TOPIC_NOTIFICATION_LIST, locator)

    def _notifications(self, action: FlightAction, locator: str) -> list[Notification]:
        reply = _reply(self._act(action, {"locator": locator}), action.name)
        notes = _field(reply, "notifications", list, action.name)
        return [_notification(n, action.name) for n in notes]

    def sequence_notification_create(
        self, name: str, msg: str, notification_type: NotificationType = NotificationType.Error
    ) -> None:
        """Attach a notification to sequence `name`."""
        body = {
            "locator": check_sequence_name(name),
            "notification_type": _check_member(
                NotificationType, notification_type, "notification_type"
            ).value,
            "msg": _check_text(msg, "msg"),
        }
        self._act(FlightAction.SEQUENCE_NOTIFICATION_CREATE, body)

    def topic_notification_create(
        self,
        sequence: str,
        topic: str,
        msg: str,
        notification_type: NotificationType = NotificationType.Error,
    ) -> None:
        """Attach a notification to a topic."""
        body = {
            "locator": topic_locator(check_sequence_name(sequence), check_topic_name(topic)),
            "notification_type": _check_member(
                NotificationType, notification_type, "notification_type"
            ).value,
            "msg": _check_text(msg, "msg"),
        }
        self._act(FlightAction.TOPIC_NOTIFICATION_CREATE, body)

    def sequence_notification_purge(self, name: str) -> None:
        """Remove every notification of sequence `name` (needs the delete permission)."""
        self._act(FlightAction.SEQUENCE_NOTIFICATION_PURGE, {"locator": check_sequence_name(name)})

    def topic_notification_purge(self, sequence: str, topic: str) -> None:
        """Remove every notification of a topic (needs the delete permission)."""
        locator = topic_locator(check_sequence_name(sequence), check_topic_name(topic))
        self._act(FlightAction.TOPIC_NOTIFICATION_PURGE, {"locator": locator})

    # Deletions ------------------------------------------------------------------------------

    def sequence_delete(self, name: str) -> None:
        """Delete sequence `name` with every session and topic in it."""
        self._act(FlightAction.SEQUENCE_DELETE, {"locator": check_sequence_name(name)})

    def session_delete(self, session_uuid: str) -> None:
        """Delete one session and its topics."""
        body = {"session_uuid": _check_uuid(session_uuid, "session_uuid")}
        self._act(FlightAction.SESSION_DELETE, body)

    def topic_delete(self, sequence: str, topic: str) -> None:
        """Delete one topic and its data."""
        locator = topic_locator(check_sequence_name(sequence), check_topic_name(topic))
        self._act(FlightAction.TOPIC_DELETE, {"locator": locator})

    # API keys -------------------------------------------------------------------------------

    def api_key_create(
        self,
        permission: APIKeyPermissionEnum,
        description: str,
        expires_at_ns: int | None = None,
    ) -> APIKey:
        """Issue a new key (needs the manage permission); its token is in the answer only."""
        body: dict[str, Any] = {
            "permissions": _check_member(APIKeyPermissionEnum, permission, "permission").value,
            "description": _check_text(description, "description"),
        }
        expiry = _check_expiry(expires_at_ns)
        if expiry is not None:
            body["expires_at_ns"] = expiry
        operation = FlightAction.API_KEY_CREATE.name
        reply = _reply(self._act(FlightAction.API_KEY_CREATE, body), operation)
        token = reply.get("api_key_token")
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            raise _malformed(operation, "api_key_token is not a key token")  # never echo it
        return APIKey(token, permission, description, expiry)

    def api_key_status(self, fingerprint: str) -> APIKeyStatus:
        """What the server stores about the key with `fingerprint`."""
        body = {"api_key_fingerprint": _check_fingerprint(fingerprint)}
        operation = FlightAction.API_KEY_STATUS.name
        reply = _reply(self._act(FlightAction.API_KEY_STATUS, body), operation)
        return APIKeyStatus(
            fingerprint=_field(reply, "api_key_fingerprint", str, operation),
            description=_field(reply, "description", str, operation),
            created_at_ns=_field(reply, "created_at_ns", int, operation),
            expires_at_ns=_optional_int(reply, "expires_at_ns", operation),
        )

    def api_key_revoke(self, fingerprint: str) -> None:
        """Withdraw the key with `fingerprint`: its next call is refused."""
        body = {"api_key_fingerprint": _check_fingerprint(fingerprint)}
        self._act(FlightAction.API_KEY_REVOKE, body)

    # Version --------------------------------------------------------------------------------

    def version(self) -> ServerVersion:
        """The server's version."""
        operation = FlightAction.VERSION.name
        return server_version(self._act(FlightAction.VERSION, {}), operation)
