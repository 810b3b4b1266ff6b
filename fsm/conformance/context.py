"""What a conformance case works with: a target server reached through any transport,
names under a unique prefix, and a log of every step (the steps that reproduce a failure)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pyarrow as pa

from fsm.enums import APIKeyPermissionEnum, FlightAction
from fsm.outcome import ErrorKind, Outcome, OutcomeStatus
from fsm.transport import Descriptor, SequenceInfo, TopicData, TopicInfo, TopicStream, Transport

__all__ = ["Context", "Fail", "TransportFactory", "Unknown"]

TransportFactory = Callable[[str | None], Transport]
"""Opens a transport to the target with an API key (None: no key)."""


class Fail(Exception):
    """The target does not meet the requirement."""


class Unknown(Exception):
    """The outcome could not be observed (for example, no key able to make the request)."""


def _short(value: Any) -> str:
    text = json.dumps(value, default=str, separators=(",", ":"))
    return text if len(text) <= 160 else text[:157] + "..."


def _outcome_text(outcome: Outcome) -> str:
    if outcome.status is OutcomeStatus.OK:
        return "ok"
    if outcome.status is OutcomeStatus.UNKNOWN:
        return f"unknown ({outcome.detail[:80]})"
    return outcome.kind.value if outcome.kind else "failed"


class Context:
    """Helpers for one case. Every request goes through `transport` (or a key's transport)
    and is logged in `steps`."""

    def __init__(self, connect: TransportFactory, api_key: str | None, prefix: str) -> None:
        self._connect = connect
        self.api_key = api_key
        self.prefix = prefix
        self.transport = connect(api_key)
        self.steps: list[str] = []
        self.created: list[str] = []
        self._opened: list[Transport] = [self.transport]
        self._counter = 0

    def close(self) -> None:
        for transport in self._opened:
            transport.close()

    # -- names and logging ------------------------------------------------------------------

    def name(self, tag: str) -> str:
        self._counter += 1
        return f"{self.prefix}_{tag}_{self._counter}"

    def log(self, line: str) -> None:
        self.steps.append(line)

    # -- requests ---------------------------------------------------------------------------

    def act(
        self, action: FlightAction | str, body: Mapping[str, Any], via: Transport | None = None
    ) -> Outcome:
        transport = via or self.transport
        if isinstance(action, FlightAction):
            outcome = transport.action(action, body)
            wire = action.value
        else:
            outcome = transport.action_raw(action, json.dumps(body).encode())
            wire = action
        self.log(f"DoAction {wire} {_short(body)} -> {_outcome_text(outcome)}")
        return outcome

    def raw(self, action_type: str, body: bytes) -> Outcome:
        outcome = self.transport.action_raw(action_type, body)
        self.log(f"DoAction {action_type} {body[:80]!r} -> {_outcome_text(outcome)}")
        return outcome

    def ok(self, outcome: Outcome, what: str) -> Any:
        if outcome.status is OutcomeStatus.UNKNOWN:
            raise Unknown(f"{what}: the reply was lost ({outcome.detail[:120]})")
        if outcome.status is not OutcomeStatus.OK:
            raise Fail(f"{what} was refused with {_outcome_text(outcome)}: {outcome.detail[:200]}")
        return outcome.value

    def refused(self, outcome: Outcome, kind: ErrorKind, what: str) -> None:
        if outcome.status is OutcomeStatus.UNKNOWN:
            raise Unknown(f"{what}: the reply was lost")
        if outcome.status is OutcomeStatus.OK:
            raise Fail(f"{what} was accepted; it must be refused with {kind.value}")
        if outcome.kind is not kind:
            raise Fail(f"{what} was refused with {_outcome_text(outcome)}, not {kind.value}")

    def check(self, condition: bool, message: str) -> None:
        if not condition:
            raise Fail(message)

    # -- building blocks ---------------------------------------------------------------------

    def sequence(self, tag: str, metadata: Mapping[str, Any] | None = None) -> str:
        name = self.name(tag)
        self.ok(
            self.act(
                FlightAction.SEQUENCE_CREATE,
                {"locator": name, "user_metadata": dict(metadata or {})},
            ),
            "sequence_create",
        )
        self.created.append(name)
        return name

    def session(self, sequence: str) -> str:
        value = self.ok(
            self.act(FlightAction.SESSION_CREATE, {"locator": sequence}), "session_create"
        )
        if not isinstance(value, dict) or not isinstance(value.get("uuid"), str):
            raise Fail(f"session_create answered {value!r}, not {{'uuid': ...}}")
        return str(value["uuid"])

    def topic(
        self,
        session: str,
        sequence: str,
        path: str = "t",
        fmt: str = "default",
        metadata: Mapping[str, Any] | None = None,
    ) -> tuple[str, str]:
        locator = f"{sequence}/{path}"
        body = {
            "session_uuid": session,
            "locator": locator,
            "serialization_format": fmt,
            "ontology_tag": "conformance",
            "user_metadata": dict(metadata or {}),
        }
        value = self.ok(self.act(FlightAction.TOPIC_CREATE, body), "topic_create")
        if not isinstance(value, dict) or not isinstance(value.get("uuid"), str):
            raise Fail(f"topic_create answered {value!r}, not {{'uuid': ...}}")
        return locator, str(value["uuid"])

    def put(
        self,
        locator: str,
        topic_uuid: str,
        batches: Iterable[pa.RecordBatch],
        schema: pa.Schema,
        *,
        end: str = "close",
        descriptor: Descriptor | None = None,
    ) -> Outcome:
        """A DoPut: open, write every batch, then end it cleanly ("close") or "abort". The
        outcome is the first failure, or the server's verdict at the end."""
        descriptor = descriptor or Descriptor.for_topic(locator, topic_uuid)
        opened = self.transport.open_stream(descriptor, schema)
        if not opened.is_ok:
            self.log(f"DoPut {locator} open -> {_outcome_text(opened)}")
            return opened
        stream: TopicStream = opened.value
        count = 0
        for batch in batches:
            written = stream.write(batch)
            count += 1
            if not written.is_ok:
                self.log(f"DoPut {locator} batch {count} -> {_outcome_text(written)}")
                stream.abort()
                return written
        final = stream.abort() if end == "abort" else stream.close()
        self.log(f"DoPut {locator} {count} batch(es), {end} -> {_outcome_text(final)}")
        return final

    def sequence_info(self, sequence: str) -> SequenceInfo:
        outcome = self.transport.flight_info(Descriptor.for_resource(sequence))
        self.log(f"GetFlightInfo {sequence} -> {_outcome_text(outcome)}")
        value = self.ok(outcome, f"GetFlightInfo {sequence}")
        if not isinstance(value, SequenceInfo):
            raise Fail(f"GetFlightInfo {sequence} did not describe a sequence")
        return value

    def topic_info(
        self, locator: str, start: int | None = None, end: int | None = None
    ) -> TopicInfo:
        outcome = self.transport.flight_info(Descriptor.for_resource(locator, start, end))
        self.log(f"GetFlightInfo {locator} -> {_outcome_text(outcome)}")
        value = self.ok(outcome, f"GetFlightInfo {locator}")
        if not isinstance(value, TopicInfo):
            raise Fail(f"GetFlightInfo {locator} did not describe a topic")
        return value

    def read(self, ticket: bytes, what: str) -> TopicData:
        outcome = self.transport.read(ticket)
        self.log(f"DoGet {what} -> {_outcome_text(outcome)}")
        value = self.ok(outcome, f"DoGet {what}")
        assert isinstance(value, TopicData)
        return value

    def exists(self, sequence: str) -> bool:
        outcome = self.transport.flight_info(Descriptor.for_resource(sequence))
        self.log(f"GetFlightInfo {sequence} -> {_outcome_text(outcome)}")
        if outcome.is_ok:
            return True
        if outcome.kind is ErrorKind.NOT_FOUND:
            return False
        raise Unknown(f"could not tell whether {sequence} exists ({_outcome_text(outcome)})")

    # -- keys -------------------------------------------------------------------------------

    def key_transport(
        self, permission: APIKeyPermissionEnum, *, expires_at_ns: int | None = None
    ) -> Transport:
        """A transport with a new key of `permission` (needs a manage key on an authenticating
        target; Unknown otherwise)."""
        if self.api_key is None:
            raise Unknown("the target was given no API key to create keys with")
        body: dict[str, Any] = {
            "permissions": permission.value,
            "description": f"{self.prefix} conformance",
        }
        if expires_at_ns is not None:
            body["expires_at_ns"] = expires_at_ns
        outcome = self.act(FlightAction.API_KEY_CREATE, body)
        if outcome.kind is ErrorKind.PERMISSION_DENIED:
            raise Unknown("the given API key cannot create keys (it is not a manage key)")
        token = self.ok(outcome, "api_key_create").get("api_key_token")
        transport = self._connect(str(token))
        self._opened.append(transport)
        return transport

    def anonymous(self) -> Transport:
        transport = self._connect(None)
        self._opened.append(transport)
        return transport
