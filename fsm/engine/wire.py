"""The engine's side of each wire shape of `specs/lines/wire.toml` that a writer sends or reads:
one entry per (aspect, shape), chosen by the shape NAME its protocol line gives (`Line.wire`),
never by the line's number.

`ClientWire.of(line)` picks every entry the engine needs; a line naming a shape the engine has
no entry for is a `SpecError` when the client is built. `handshake` runs the line's connect
(nothing, `version` or `info`), and `learn_line` finds the line of a server from its answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs

from fsm.engine.actions import ServerVersion, server_version
from fsm.engine.base import outcome_error
from fsm.errors import ArgumentError, ProtocolError
from fsm.outcome import ErrorKind, Outcome
from fsm.spec.lines import Line, load_lines
from fsm.transport import Transport

__all__ = ["ClientWire", "Created", "ServerHello", "created_session", "handshake", "learn_line"]

T = TypeVar("T")

BATCH_SHARE = 0.9
"""The share of the server's largest decodable message a client of an info line fills."""


def pick(table: Mapping[str, T], line: Line, aspect: str) -> T:
    """The entry of `table` for the shape `line` speaks for `aspect`."""
    return line.pick(table, aspect, "the engine")


# ---------------------------------------------------------------------------------------------
# Sessions


@attrs.frozen
class Created:
    """What a session_create answered: the session's uuid, and its locator
    ('<sequence>:<session>') on a line whose sessions have one."""

    uuid: str
    locator: str | None = None


def _uuid_only(value: Mapping[str, Any]) -> Created | None:
    uuid = value.get("uuid")
    return Created(uuid) if isinstance(uuid, str) and uuid else None


def _uuid_and_locator(value: Mapping[str, Any]) -> Created | None:
    uuid, locator = value.get("uuid"), value.get("locator")
    if isinstance(uuid, str) and uuid and isinstance(locator, str) and locator:
        return Created(uuid, locator)
    return None


SESSION_CREATE_ANSWER: Mapping[str, Callable[[Mapping[str, Any]], Created | None]] = {
    "uuid": _uuid_only,
    "uuid_locator": _uuid_and_locator,
}


def created_session(
    outcome: Outcome, parse: Callable[[Mapping[str, Any]], Created | None]
) -> Outcome:
    """The outcome of a session_create, to route: a success carries the `Created` its answer
    gives. A success whose answer lacks what the line's shape holds is routed as a lost reply:
    the server applied it, but the writer did not learn what it needs, so the table settles
    it by asking the server."""
    if not outcome.is_ok:
        return outcome
    value = outcome.value
    created = parse(value) if isinstance(value, Mapping) else None
    if created is None:
        return Outcome.unknown(
            f"SESSION_CREATE answered no uuid (or no locator where the line has them): {value!r}",
            ErrorKind.INTERNAL,
        )
    return Outcome.ok(created)


def _by_uuid(session: Created) -> dict[str, Any] | None:
    return {"session_uuid": session.uuid}


def _by_locator(session: Created) -> dict[str, Any] | None:
    return None if session.locator is None else {"locator": session.locator}


SESSION_DELETE_BODY: Mapping[str, Callable[[Created], dict[str, Any] | None]] = {
    "session_uuid": _by_uuid,
    "locator": _by_locator,
}


def _lenient(name: str) -> str:
    return name.removeprefix("/")


def _strict(name: str) -> str:
    if name.startswith("/"):
        raise ArgumentError(
            f"bad sequence name {name!r}: this protocol line takes no leading '/' (the server "
            "refuses it rather than strip it)"
        )
    return name


SEQUENCE_NAME_RULE: Mapping[str, Callable[[str], str]] = {"lenient": _lenient, "strict": _strict}


# ---------------------------------------------------------------------------------------------
# Connecting


@attrs.frozen
class ServerHello:
    """What the line's connect learned: the server's version (None when the line asks none)
    and the gRPC size limits it reported (empty when it reports none)."""

    version: ServerVersion | None = None
    limits: Mapping[str, int] = attrs.field(factory=dict)

    @property
    def record_limit(self) -> int | None:
        """The most bytes one message (and so one record) may take, when the server says."""
        decode = self.limits.get("grpc_max_decode_message_size")
        return None if decode is None else int(decode * BATCH_SHARE)


def _no_handshake(transport: Transport) -> ServerHello:
    return ServerHello()


def _ask(transport: Transport, action: str) -> Any:
    outcome: Outcome = transport.action_raw(action, b"{}")
    if not outcome.is_ok:
        raise outcome_error(action.upper(), outcome)
    return outcome.value


def _version(transport: Transport) -> ServerHello:
    return ServerHello(server_version(_ask(transport, "version"), "VERSION"))


_LIMITS = (
    "grpc_max_decode_message_size",
    "grpc_max_encode_message_size",
    "grpc_target_encode_message_size",
)


def _info(transport: Transport) -> ServerHello:
    reply = _ask(transport, "info")
    version = server_version(reply, "INFO")
    config = reply.get("config")
    limits: dict[str, int] = {}
    for key in _LIMITS:
        value = config.get(key) if isinstance(config, Mapping) else None
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ProtocolError(
                f"INFO answered no usable {key}: config is {config!r}", operation="INFO"
            )
        limits[key] = value
    return ServerHello(version, limits)


CONNECT: Mapping[str, Callable[[Transport], ServerHello]] = {
    "list_flights_pool": _no_handshake,
    "list_flights": _no_handshake,
    "version": _version,
    "info": _info,
}


def handshake(transport: Transport, line: Line) -> ServerHello:
    """Run `line`'s connect on `transport`: ActionFailed when the server refuses it."""
    return pick(CONNECT, line, "connect")(transport)


def learn_line(transport: Transport) -> tuple[Line, ServerHello]:
    """The line of the server behind `transport`, from the handshakes the lines speak: the
    newest line whose handshake the server answers, with the version it reports when the
    line's data names one. A server that answers none (the ListFlights connects of the
    early lines look alike) cannot be told: ProtocolError asks for the line by name."""
    lines = list(load_lines().values())
    tried: list[str] = []
    for line in reversed(lines):
        shape = line.wire["connect"]
        if shape in tried or CONNECT.get(shape) in (None, _no_handshake):
            continue
        tried.append(shape)
        try:
            hello = CONNECT[shape](transport)
        except ProtocolError as exc:
            if getattr(exc, "kind", None) in (ErrorKind.INVALID_ARGUMENT, ErrorKind.UNIMPLEMENTED):
                continue  # the server does not know this handshake's action
            raise
        found = [
            candidate
            for candidate in lines
            if candidate.wire["connect"] == shape and _speaks(candidate, hello.version)
        ]
        if len(found) == 1:
            return found[0], hello
        if found:
            names = ", ".join(c.name for c in found)
            raise ProtocolError(
                f"the server answered the {shape} handshake ({hello.version}), which lines "
                f"{names} share: name the line with protocol="
            )
        # Answered, but as no line whose connect this is: an earlier server knowing the action.
    alike = ", ".join(c.name for c in lines if CONNECT.get(c.wire["connect"]) is _no_handshake)
    raise ProtocolError(
        "the server's handshake answers match no line that connects with one, so its line "
        f"cannot be learned (lines {alike} connect alike): name the line with protocol="
    )


def _speaks(line: Line, version: ServerVersion | None) -> bool:
    """True when `line` may be the line of a server reporting `version`: its handshake data
    names no version, or one of the same major and minor release."""
    known = line.handshake.version
    if known is None or version is None:
        return True
    major, minor, *_ = known.split(".")
    return (int(major), int(minor)) == (version.major, version.minor)


# ---------------------------------------------------------------------------------------------


@attrs.frozen
class ClientWire:
    """The entries of one line the engine writes with."""

    line: Line
    session_create_answer: Callable[[Mapping[str, Any]], Created | None]
    session_delete_body: Callable[[Created], dict[str, Any] | None]
    sequence_name: Callable[[str], str]

    @classmethod
    def of(cls, line: Line) -> ClientWire:
        pick(CONNECT, line, "connect")  # a connect the engine cannot make fails here
        return cls(
            line=line,
            session_create_answer=pick(SESSION_CREATE_ANSWER, line, "session_create_answer"),
            session_delete_body=pick(SESSION_DELETE_BODY, line, "session_delete_body"),
            sequence_name=pick(SEQUENCE_NAME_RULE, line, "sequence_locator_rule"),
        )
