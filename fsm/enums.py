"""The protocol's enumerations.

Member names and string values are exactly those the Mosaico Python SDK 0.3.x puts on the
wire or exposes to its users, so values can be exchanged with it unchanged. The lifecycle enums
(`SessionStatus`, `TopicWriterStatus`) are checked against the transition tables in `specs/` by
the spec loader: a state in a table that is not a member here, or a member no table uses, is a
spec error.
"""

from __future__ import annotations

import warnings
from enum import Enum
from functools import total_ordering

from fsm.errors import ArgumentTypeError

__all__ = [
    "APIKeyPermissionEnum",
    "FlightAction",
    "OnErrorPolicy",
    "SequenceStatus",
    "SerializationFormat",
    "SessionLevelErrorPolicy",
    "SessionStatus",
    "TopicLevelErrorPolicy",
    "TopicWriterStatus",
]


class SerializationFormat(Enum):
    """How a topic's records are laid out as Arrow data."""

    Default = "default"
    """Fixed-width tabular records: every column has a fixed size per row."""

    Ragged = "ragged"
    """Records with variable-length parts (list columns), such as point clouds or detections."""

    Image = "image"
    """Records whose payload is one binary blob (the picture) plus width, height and format."""


class SessionStatus(Enum):
    """Where a client-side session writer is in its lifecycle (the session table's states)."""

    Null = "null"
    """Created locally; the server does not know the session yet."""

    Pending = "pending"
    """Registered on the server and open: topics can be created and data streamed."""

    Finalized = "finalized"
    """Closed cleanly and acknowledged by the server; the data is immutable and locked."""

    Error = "error"
    """Ended by a failure; the session-level error policy decided what the server keeps."""


SequenceStatus = SessionStatus
"""The writer of a new sequence reports its status with the same values as a session."""


class TopicWriterStatus(Enum):
    """Where a client-side topic writer is in its lifecycle (the topic-writer table's states)."""

    Active = "active"
    """Registered with the server, stream open, accepting records."""

    Finalized = "finalized"
    """Stream ended cleanly and accepted by the server; the topic is locked."""

    FinalizedWithError = "finalized_with_error"
    """Stream ended after an error; no more records are accepted."""

    IgnoredLastError = "ignored_last_error"
    """The last topic block ended with an error that the Ignore policy reported and absorbed;
    the stream is still open."""

    RaisedException = "raised_exception"
    """The last topic block (or push) ended with an error that was passed up to the session."""


@total_ordering
class APIKeyPermissionEnum(Enum):
    """What an API key may do. Levels are ordered; each includes everything below it."""

    Read = "read"
    """List and read sequences, topics and their data; run queries."""

    Write = "write"
    """Everything `Read` allows, plus creating and updating sequences."""

    Delete = "delete"
    """Everything `Write` allows, plus deleting sequences, sessions and topics."""

    Manage = "manage"
    """Everything `Delete` allows, plus creating, inspecting and revoking API keys."""

    @property
    def rank(self) -> int:
        """Position in the hierarchy: 0 for `Read` up to 3 for `Manage`."""
        return _PERMISSION_ORDER.index(self)

    def covers(self, required: APIKeyPermissionEnum) -> bool:
        """True when a key holding this permission may do what `required` guards."""
        return self.rank >= required.rank

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, APIKeyPermissionEnum):
            return NotImplemented
        return self.rank < other.rank


_PERMISSION_ORDER: tuple[APIKeyPermissionEnum, ...] = tuple(APIKeyPermissionEnum)


class SessionLevelErrorPolicy(Enum):
    """What a session writer does with the server-side session when it ends in error."""

    Report = "report"
    """Keep what was written: report the error as notifications, then try to finalize.
    Per the specification the session is then left unlocked, so it can be inspected and later
    deleted."""

    Delete = "delete"
    """Purge what was written: a new sequence is deleted whole, an update deletes only its own
    session. Needs a key with the `delete` permission."""


class OnErrorPolicy(Enum):
    """Deprecated spelling of `SessionLevelErrorPolicy`; convert with `to_session_policy`."""

    Report = "report"
    """Same as `SessionLevelErrorPolicy.Report`."""

    Delete = "delete"
    """Same as `SessionLevelErrorPolicy.Delete`."""

    def to_session_policy(self, *, _stacklevel: int = 2) -> SessionLevelErrorPolicy:
        """The equivalent `SessionLevelErrorPolicy` (matched by value), with a DeprecationWarning."""
        warnings.warn(
            "OnErrorPolicy is deprecated; use SessionLevelErrorPolicy",
            DeprecationWarning,
            stacklevel=_stacklevel,
        )
        return SessionLevelErrorPolicy(self.value)

    @staticmethod
    def normalize(policy: SessionLevelErrorPolicy | OnErrorPolicy) -> SessionLevelErrorPolicy:
        """Accept either spelling and return a `SessionLevelErrorPolicy`."""
        if isinstance(policy, OnErrorPolicy):
            return policy.to_session_policy(_stacklevel=3)  # the warning names our caller
        if isinstance(policy, SessionLevelErrorPolicy):
            return policy
        raise ArgumentTypeError(
            f"expected a SessionLevelErrorPolicy or OnErrorPolicy, got {type(policy).__name__}"
        )


class TopicLevelErrorPolicy(Enum):
    """What a topic writer does when an exception leaves its `with` block."""

    Finalize = "finalize"
    """Report the error on the topic, end its stream (keeping what was pushed) and absorb the
    exception."""

    Ignore = "ignore"
    """Report the error on the topic, keep the stream open and absorb the exception."""

    Raise = "raise"
    """Pass the exception up to the session, whose own error policy then applies."""


class FlightAction(Enum):
    """Names of the Arrow Flight DoAction commands a Mosaico server understands."""

    SEQUENCE_CREATE = "sequence_create"
    """Register a new sequence with its user metadata."""

    SESSION_CREATE = "session_create"
    """Open a new upload session on an existing sequence; answers the session's UUID."""

    SESSION_FINALIZE = "session_finalize"
    """Close a session once all of its topics are complete, making its data immutable."""

    SEQUENCE_NOTIFICATION_CREATE = "sequence_notification_create"
    """Attach an error or status notification to a sequence."""

    SEQUENCE_NOTIFICATION_LIST = "sequence_notification_list"
    """List the notifications attached to a sequence."""

    SEQUENCE_NOTIFICATION_PURGE = "sequence_notification_purge"
    """Remove every notification attached to a sequence."""

    SESSION_DELETE = "session_delete"
    """Remove a session and all of its topics."""

    SEQUENCE_DELETE = "sequence_delete"
    """Remove a sequence with every session and topic in it."""

    TOPIC_CREATE = "topic_create"
    """Register a topic inside an open session; answers the UUID that authorises its upload."""

    TOPIC_NOTIFICATION_CREATE = "topic_notification_create"
    """Attach an error or status notification to a topic."""

    TOPIC_NOTIFICATION_LIST = "topic_notification_list"
    """List the notifications attached to a topic."""

    TOPIC_NOTIFICATION_PURGE = "topic_notification_purge"
    """Remove every notification attached to a topic."""

    TOPIC_DELETE = "topic_delete"
    """Remove one topic and its data."""

    QUERY = "query"
    """Search sequences and topics by name and metadata."""

    API_KEY_CREATE = "api_key_create"
    """Issue a new API key with one permission level; answers the token once."""

    API_KEY_REVOKE = "api_key_revoke"
    """Withdraw an API key, identified by its fingerprint."""

    API_KEY_STATUS = "api_key_status"
    """Describe an API key, identified by its fingerprint."""

    VERSION = "version"
    """Report the server's version."""
