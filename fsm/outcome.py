"""What an operation can end with: ok, failed with an error kind, or unknown.

`ErrorKind` lists the error families of the catalogue (`specs/actions.toml`, section
`error_kinds`); the spec loader checks that the two agree.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import attrs

__all__ = ["OK", "ErrorKind", "Outcome", "OutcomeStatus", "ProbeVerdict"]


class ErrorKind(Enum):
    """The family of a failure, one per gRPC status the protocol uses."""

    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    FAILED_PRECONDITION = "failed_precondition"
    INVALID_ARGUMENT = "invalid_argument"
    PERMISSION_DENIED = "permission_denied"
    UNAUTHENTICATED = "unauthenticated"
    INTERNAL = "internal"
    CANCELLED = "cancelled"
    ABORTED = "aborted"
    UNIMPLEMENTED = "unimplemented"
    RESOURCE_EXHAUSTED = "resource_exhausted"


class OutcomeStatus(Enum):
    """The three ways an operation can end, as the tables route them."""

    OK = "ok"
    FAILED = "failed"
    UNKNOWN = "unknown"


class ProbeVerdict(Enum):
    """What a probe learned about an operation whose reply was lost."""

    APPLIED = "applied"
    NOT_APPLIED = "not_applied"
    UNRESOLVED = "unresolved"


@attrs.frozen
class Outcome:
    """The result of one operation.

    `value` is what a successful operation produced (its decoded response, or what the
    writer's handler took from it: a uuid, an open stream); `kind` and `detail` describe a
    failure (an unknown outcome carries the kind of the transport error that hid the reply).
    A success without a value is always the one shared `OK` instance, so a walk can tell a
    plain success by identity.
    """

    status: OutcomeStatus
    value: Any = None
    kind: ErrorKind | None = None
    detail: str = ""

    @classmethod
    def ok(cls, value: Any = None) -> Outcome:
        if value is None:
            return OK
        return cls(OutcomeStatus.OK, value=value)

    @classmethod
    def failed(cls, kind: ErrorKind, detail: str) -> Outcome:
        return cls(OutcomeStatus.FAILED, kind=kind, detail=detail)

    @classmethod
    def unknown(cls, detail: str, kind: ErrorKind = ErrorKind.CANCELLED) -> Outcome:
        return cls(OutcomeStatus.UNKNOWN, kind=kind, detail=detail)

    @property
    def is_ok(self) -> bool:
        return self.status is OutcomeStatus.OK


OK = Outcome(OutcomeStatus.OK)
"""The success that produced nothing: `Outcome.ok()` returns this instance."""
