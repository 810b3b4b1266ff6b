"""Deliberately broken servers of the later protocol lines, to measure what the conformance
suite catches on them (`mosaico-fsm conformance --self-test --protocol X`).

Each is the reference model of a line with one mistake a server of that line could make.
A variant applies to a line whose data has what it breaks: the answer field it drops, the
action it mangles, the permission bits it ignores.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from fsm.spec.lines import Line
from transport.server.auth import Principal
from transport.server.model import ServerModel

__all__ = ["LINE_VARIANTS", "LineVariant"]


@attrs.frozen
class LineVariant:
    name: str
    mistake: str
    make: Callable[..., ServerModel]
    applies: Callable[[Line], bool]


def _answer_has(operation: str, field: str) -> Callable[[Line], bool]:
    def applies(line: Line) -> bool:
        op = line.spec.operations.get(operation)
        return op is not None and isinstance(op.response, Mapping) and field in op.response

    return applies


class _DropsAnswerField(ServerModel):
    """Answers one action without one field its line's tables promise."""

    operation = ""
    field = ""

    def handle_action(self, principal: Principal, action_type: str, body: bytes) -> Any:
        value = super().handle_action(principal, action_type, body)
        op = self.spec.operation_for_wire(action_type)
        if op is not None and op.name == self.operation and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k != self.field}
        return value


class _SessionCreateWithoutLocator(_DropsAnswerField):
    operation = "SESSION_CREATE"
    field = "locator"


class _InfoWithoutLimits(_DropsAnswerField):
    operation = "INFO"
    field = "config"


class _ReadBitWrites(ServerModel):
    """A key holding the read bit alone may create sequences (granular bits mixed up)."""

    def authorize(self, principal: Principal, operation: str) -> None:
        if operation == "SEQUENCE_CREATE" and "read" in principal.held:
            return
        super().authorize(principal, operation)


def _granular(line: Line) -> bool:
    return line.permissions.model == "granular"


LINE_VARIANTS: tuple[LineVariant, ...] = (
    LineVariant(
        "session-create-without-locator",
        "session_create answers the session's UUID without its locator",
        _SessionCreateWithoutLocator,
        _answer_has("SESSION_CREATE", "locator"),
    ),
    LineVariant(
        "read-bit-writes",
        "a key of the read bit alone may create a sequence",
        _ReadBitWrites,
        _granular,
    ),
    LineVariant(
        "info-without-limits",
        "info answers the version without the server's gRPC limits (config)",
        _InfoWithoutLimits,
        _answer_has("INFO", "config"),
    ),
)
