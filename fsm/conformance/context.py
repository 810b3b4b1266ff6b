"""What a conformance case works with: a target server reached through any transport,
names under a unique prefix, and a log of every request (the steps that reproduce a failure).

Every transport a case gets from its `Context` (the main one, one per key it creates, one
without a key) writes each request and its answer to the case's `steps`, and notes the
fingerprint of every API key it saw created, so the suite can revoke them at the end.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pyarrow as pa

from fsm.conformance.requests import outcome_text, put_batches, short, topic_body
from fsm.enums import APIKeyPermissionEnum, FlightAction
from fsm.errors import ConformanceError
from fsm.outcome import ErrorKind, Outcome, OutcomeStatus
from fsm.spec.lines import DEFAULT_LINE, Line, load_line
from fsm.transport import (
    Descriptor,
    SequenceInfo,
    TopicData,
    TopicInfo,
    TopicStream,
    Transport,
    encode_body,
)

__all__ = ["Context", "Fail", "KeySource", "NotApplicable", "TransportFactory", "Unknown"]

TransportFactory = Callable[[str | None], Transport]
"""Opens a transport to the target with an API key (None: no key)."""

KeySource = Callable[[tuple[str, ...], int | None], str | None]
"""A token of a key holding exactly the given permission bits, expiring at the given time
(None: never), or None when no such key can be had. How the suite gets keys of each
permission on a line without API-key actions, whose server makes its keys itself."""

_KEY_CREATE = FlightAction.API_KEY_CREATE.value


class Fail(ConformanceError):
    """The target does not meet the requirement. `check` names the check that failed, when
    the case named it (a recorded deviation labels only the failure of its own check)."""

    def __init__(self, message: str, check: str | None = None) -> None:
        super().__init__(message)
        self.check = check


class Unknown(ConformanceError):
    """The outcome could not be observed (for example, no key able to make the request)."""


class NotApplicable(ConformanceError):
    """The requirement is not one of the target's protocol line: its tables lack an operation
    the case needs. Reported apart, never as a pass."""


_RANGE = ("timestamp_ns_start", "timestamp_ns_end")


def _descriptor_text(descriptor: Descriptor) -> tuple[str, str]:
    """A descriptor in a log line, whole and as a short name (its locator, when it has one)."""
    if descriptor.kind == "path":
        text = "path " + "/".join(descriptor.path)
        return text, text
    try:
        payload = json.loads(descriptor.command)
    except ValueError:
        text = repr(descriptor.command[:80])
        return text, text
    if not isinstance(payload, dict) or not isinstance(payload.get("resource_locator"), str):
        return short(payload), short(payload)
    locator = payload["resource_locator"]
    rest = {k: v for k, v in payload.items() if k != "resource_locator" and k not in _RANGE}
    text = locator
    if any(k in payload for k in _RANGE):
        text += f" [{payload.get(_RANGE[0])}, {payload.get(_RANGE[1])})"
    if rest:
        text += " " + " ".join(f"{k}={v}" for k, v in rest.items())
    return text, locator


def _ticket_text(ticket: bytes) -> str:
    try:
        return ticket.decode("utf-8")[:120]
    except UnicodeDecodeError:
        return repr(ticket[:80])


class _Log:
    """The steps of one case and the keys its requests created."""

    def __init__(self) -> None:
        self.steps: list[str] = []
        self.keys: list[str] = []

    def note(self, who: str, request: str, outcome: Outcome) -> None:
        self.steps.append(f"{who}{request} -> {outcome_text(outcome, detail=True)}")

    def key_created(self, action_type: str, outcome: Outcome) -> None:
        if action_type != _KEY_CREATE or not outcome.is_ok:
            return
        token = (
            (outcome.value or {}).get("api_key_token") if isinstance(outcome.value, dict) else None
        )
        if isinstance(token, str) and "_" in token:
            self.keys.append(token.rsplit("_", 1)[1])


class _LoggedStream:
    def __init__(self, inner: TopicStream, log: _Log, who: str, what: str) -> None:
        self._inner = inner
        self._log = log
        self._who = who
        self._what = what

    @property
    def failure(self) -> Outcome | None:
        return self._inner.failure

    def write(self, batch: pa.RecordBatch) -> Outcome:
        outcome = self._inner.write(batch)
        self._log.note(self._who, f"DoPut {self._what} write {batch.num_rows} row(s)", outcome)
        return outcome

    def close(self) -> Outcome:
        outcome = self._inner.close()
        self._log.note(self._who, f"DoPut {self._what} close", outcome)
        return outcome

    def abort(self) -> Outcome:
        outcome = self._inner.abort()
        self._log.note(self._who, f"DoPut {self._what} abort", outcome)
        return outcome


class _LoggedTransport:
    """A transport that logs every request it passes on (`who` tells which key sent it)."""

    def __init__(self, inner: Transport, log: _Log, who: str) -> None:
        self._inner = inner
        self._log = log
        self._who = who

    def action_raw(self, action_type: str, body: bytes) -> Outcome:
        outcome = self._inner.action_raw(action_type, body)
        self._log.note(self._who, f"DoAction {action_type} {body[:120]!r}", outcome)
        self._log.key_created(action_type, outcome)
        return outcome

    def action(self, action: FlightAction, body: Mapping[str, Any]) -> Outcome:
        outcome = self._inner.action(action, body)
        self._log.note(self._who, f"DoAction {action.value} {short(body)}", outcome)
        self._log.key_created(action.value, outcome)
        return outcome

    def open_stream(self, descriptor: Descriptor, schema: pa.Schema) -> Outcome:
        text, name = _descriptor_text(descriptor)
        outcome = self._inner.open_stream(descriptor, schema)
        self._log.note(self._who, f"DoPut {text} open", outcome)
        if outcome.is_ok:
            return Outcome.ok(_LoggedStream(outcome.value, self._log, self._who, name))
        return outcome

    def flight_info(self, descriptor: Descriptor) -> Outcome:
        outcome = self._inner.flight_info(descriptor)
        self._log.note(self._who, f"GetFlightInfo {_descriptor_text(descriptor)[0]}", outcome)
        return outcome

    def read(self, ticket: bytes) -> Outcome:
        outcome = self._inner.read(ticket)
        self._log.note(self._who, f"DoGet {_ticket_text(ticket)}", outcome)
        return outcome

    def read_stream(self, ticket: bytes) -> Outcome:
        outcome = self._inner.read_stream(ticket)
        self._log.note(self._who, f"DoGet (streamed) {_ticket_text(ticket)}", outcome)
        return outcome

    def list_sequences(self, criteria: bytes = b"") -> Outcome:
        outcome = self._inner.list_sequences(criteria)
        self._log.note(self._who, f"ListFlights {criteria!r}", outcome)
        return outcome

    def close(self) -> None:
        self._inner.close()


class Context:
    """Helpers for one case. Every request goes through a transport this context handed
    out (`transport`, `connect`, `key_transport`, `anonymous`) and is logged in `steps`."""

    def __init__(
        self,
        connect: TransportFactory,
        api_key: str | None,
        prefix: str,
        line: Line | None = None,
        keys: KeySource | None = None,
    ) -> None:
        self._connect = connect
        self._log = _Log()
        self._opened: list[Transport] = []
        self._counter = 0
        self._session_locators: dict[str, str] = {}
        self._keys = keys
        self.api_key = api_key
        self.prefix = prefix
        self.line = line or load_line(DEFAULT_LINE)
        self.spec = self.line.spec
        self.transport = self.connect(api_key, "")

    @property
    def steps(self) -> list[str]:
        return self._log.steps

    @property
    def keys(self) -> list[str]:
        """Fingerprints of the API keys created through this context's transports."""
        return self._log.keys

    def close(self) -> None:
        for transport in self._opened:
            transport.close()

    # -- the target's protocol line ---------------------------------------------------------------

    def needs(self, *operations: str) -> None:
        """NotApplicable unless the line's tables have every one of `operations`."""
        missing = [op for op in operations if op not in self.spec.operations]
        if missing:
            raise NotApplicable(f"line {self.line.name} has no {', '.join(missing)}")

    def wire(self, operation: str) -> str:
        """The wire name of one of the line's operations (NotApplicable when it has none)."""
        self.needs(operation)
        return self.spec.operations[operation].wire

    def permission(self, operation: str) -> str:
        """The permission the line's tables give `operation`."""
        self.needs(operation)
        return self.spec.operations[operation].permission

    def name_field(self, section: str = "sequence") -> str:
        """The field that names a sequence (or a topic) in the line's query table."""
        fields = self.spec.query.sections[section].fields
        for name in ("locator", "name"):
            if name in fields:
                return name
        raise NotApplicable(f"line {self.line.name}'s query names no {section} by name")

    def named(self, name: str, section: str = "sequence") -> dict[str, Any]:
        """A query condition: the sequence (or topic) `name`, in the line's query keys."""
        return {self.name_field(section): {"$eq": name}}

    @property
    def ranges(self) -> bool:
        """Whether the line's query answers the time range of matching rows when asked."""
        return "include_timestamp_range" in self.spec.query.sections["ontology"].options

    def ranged(self, ontology: Mapping[str, Any]) -> dict[str, Any]:
        """An ontology section asking for time ranges where the line's query has the option."""
        return {**ontology, "include_timestamp_range": True} if self.ranges else dict(ontology)

    def needs_ranges(self) -> None:
        """NotApplicable unless the line's query answers time ranges."""
        if not self.ranges:
            raise NotApplicable(f"line {self.line.name}'s query has no include_timestamp_range")

    def listed(self, session_uuid: str) -> str:
        """What a sequence's description names the session by: its UUID, or the locator its
        session_create answered where the line's sequences list sessions by locator."""
        if self.line.wire["sequence_app_metadata"].startswith("sessions_locator"):
            return self._session_locators.get(session_uuid, session_uuid)
        return session_uuid

    def learn_session(self, session_uuid: str, locator: str | None) -> None:
        """Note the locator of a session opened outside `session` (by the engine)."""
        if locator:
            self._session_locators[session_uuid] = locator

    def session_delete_body(self, session_uuid: str) -> dict[str, Any]:
        """The body of the line's session_delete of a session."""
        shape = self.line.wire["session_delete_body"]
        if shape == "locator":
            return {"locator": self._session_locators.get(session_uuid, session_uuid)}
        if shape == "session_uuid":
            return {"session_uuid": session_uuid}
        raise ConformanceError(f"no session_delete body of shape {shape!r}")

    # -- names, logging and transports -------------------------------------------------------

    def name(self, tag: str) -> str:
        self._counter += 1
        return f"{self.prefix}_{tag}_{self._counter}"

    def log(self, line: str) -> None:
        """A line of narrative between requests (requests log themselves)."""
        self.steps.append(line)

    def connect(self, api_key: str | None, who: str | None = None) -> Transport:
        """A logged transport to the target with `api_key`; `who` prefixes its log lines."""
        if who is None:
            who = "[no key] " if api_key is None else "[another key] "
        transport = _LoggedTransport(self._connect(api_key), self._log, who)
        self._opened.append(transport)
        return transport

    def anonymous(self) -> Transport:
        return self.connect(None)

    def unknown_key(self) -> str:
        """A well-formed token of no key the target issued."""
        tail = self.api_key.rsplit("_", 1)[-1][::-1] if self.api_key else "0a0a0a0a"
        return f"msco_{'a1' * 16}_{tail}"

    # -- requests ---------------------------------------------------------------------------

    def act(
        self, action: FlightAction | str, body: Mapping[str, Any], via: Transport | None = None
    ) -> Outcome:
        transport = via or self.transport
        if isinstance(action, FlightAction):
            return transport.action(action, body)
        return transport.action_raw(action, encode_body(body))

    def raw(self, action_type: str, body: bytes) -> Outcome:
        return self.transport.action_raw(action_type, body)

    def ok(self, outcome: Outcome, what: str, check: str | None = None) -> Any:
        if outcome.status is OutcomeStatus.UNKNOWN:
            raise Unknown(f"{what}: the reply was lost ({outcome.detail[:120]})")
        if outcome.status is not OutcomeStatus.OK:
            raise Fail(
                f"{what} was refused with {outcome_text(outcome)}: {outcome.detail[:200]}", check
            )
        return outcome.value

    def refused(
        self, outcome: Outcome, kind: ErrorKind, what: str, check: str | None = None
    ) -> None:
        if outcome.status is OutcomeStatus.UNKNOWN:
            raise Unknown(f"{what}: the reply was lost")
        if outcome.status is OutcomeStatus.OK:
            raise Fail(f"{what} was accepted; it must be refused with {kind.value}", check)
        if outcome.kind is not kind:
            raise Fail(f"{what} was refused with {outcome_text(outcome)}, not {kind.value}", check)

    def check(self, condition: bool, message: str, check: str | None = None) -> None:
        if not condition:
            raise Fail(message, check)

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
        return name

    def session(self, sequence: str) -> str:
        value = self.ok(
            self.act(FlightAction.SESSION_CREATE, {"locator": sequence}), "session_create"
        )
        answer = self.spec.operations["SESSION_CREATE"].response
        keys = sorted(answer) if isinstance(answer, Mapping) else ["uuid"]
        if not isinstance(value, dict) or not all(isinstance(value.get(k), str) for k in keys):
            raise Fail(
                f"session_create answered {value!r}, not {{{', '.join(keys)}}}", "session-answer"
            )
        uuid = str(value["uuid"])
        self.learn_session(uuid, value.get("locator") if "locator" in keys else None)
        return uuid

    def topic(
        self,
        session: str,
        sequence: str,
        path: str = "t",
        fmt: str = "default",
        metadata: Mapping[str, Any] | None = None,
    ) -> tuple[str, str]:
        locator = f"{sequence}/{path}"
        body = topic_body(session, locator, fmt, metadata=metadata)
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
        """A DoPut (see `put_batches`) of `batches` to the topic."""
        descriptor = descriptor or Descriptor.for_topic(locator, topic_uuid)
        return put_batches(self.transport, descriptor, schema, batches, end)

    def sequence_info(self, sequence: str) -> SequenceInfo:
        outcome = self.transport.flight_info(Descriptor.for_resource(sequence))
        value = self.ok(outcome, f"GetFlightInfo {sequence}")
        if not isinstance(value, SequenceInfo):
            raise Fail(f"GetFlightInfo {sequence} did not describe a sequence")
        return value

    def topic_info(
        self, locator: str, start: int | None = None, end: int | None = None
    ) -> TopicInfo:
        outcome = self.transport.flight_info(Descriptor.for_resource(locator, start, end))
        value = self.ok(outcome, f"GetFlightInfo {locator}")
        if not isinstance(value, TopicInfo):
            raise Fail(f"GetFlightInfo {locator} did not describe a topic")
        return value

    def read(self, ticket: bytes, what: str, via: Transport | None = None) -> TopicData:
        value = self.ok((via or self.transport).read(ticket), f"DoGet {what}")
        if not isinstance(value, TopicData):
            raise Fail(f"DoGet {what} answered no data")
        return value

    def exists(self, sequence: str) -> bool:
        outcome = self.transport.flight_info(Descriptor.for_resource(sequence))
        if outcome.is_ok:
            return True
        if outcome.kind is ErrorKind.NOT_FOUND:
            return False
        raise Unknown(f"could not tell whether {sequence} exists ({outcome_text(outcome)})")

    # -- keys and authentication ----------------------------------------------------------------

    def key_transport(
        self, permission: APIKeyPermissionEnum, *, expires_at_ns: int | None = None
    ) -> Transport:
        """A transport with a new key of `permission`: made with api_key_create where the line
        has it (needs a manage key on an authenticating target; Unknown otherwise), or taken
        from the key source the suite was given (the line's permission bits: a manage key
        holds every bit). A created key is revoked when the suite ends."""
        expired = " expired" if expires_at_ns is not None else ""
        who = f"[{permission.value}{expired} key] "
        if "API_KEY_CREATE" not in self.spec.operations:
            return self.connect(self._sourced_key(permission, expires_at_ns), who)
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
        return self.connect(str(token), who)

    def bits(self, permission: APIKeyPermissionEnum) -> tuple[str, ...]:
        """The line's permission values a key of `permission` holds."""
        perms = self.line.permissions
        if permission.value in perms.values:
            return (permission.value,)
        if permission is APIKeyPermissionEnum.Manage:
            return perms.values
        raise NotApplicable(f"line {self.line.name} has no {permission.value} permission")

    def _sourced_key(self, permission: APIKeyPermissionEnum, expires_at_ns: int | None) -> str:
        bits = self.bits(permission)
        token = self._keys(bits, expires_at_ns) if self._keys is not None else None
        if token is None:
            expiring = " expired" if expires_at_ns is not None else ""
            raise Unknown(
                f"line {self.line.name} makes keys on the server only and no{expiring} key "
                f"with {'+'.join(bits)} was given"
            )
        return token

    def authenticating(self, *, without: str = "") -> None:
        """Go on only when the target is seen to authenticate: a request without a key, or
        with an unknown key, is refused, or a read key is refused a delete. `without`
        ("no key" or "unknown key") leaves out the evidence a case itself is about.
        Unknown when none of them shows it (authentication may be off)."""
        refusals = (ErrorKind.UNAUTHENTICATED, ErrorKind.PERMISSION_DENIED)
        probes: list[Callable[[], Outcome]] = []
        if without != "no key":
            probes.append(lambda: self.anonymous().list_sequences())
        if without != "unknown key":
            probes.append(
                lambda: self.connect(self.unknown_key(), "[unknown key] ").list_sequences()
            )
        for probe in probes:
            outcome = probe()
            if outcome.status is OutcomeStatus.FAILED and outcome.kind in refusals:
                return
        if self.api_key is not None:
            try:
                reader = self.key_transport(APIKeyPermissionEnum.Read)
            except (Unknown, Fail):
                pass
            else:
                ghost = {"locator": self.name("ghost")}
                outcome = self.act(FlightAction.SEQUENCE_DELETE, ghost, via=reader)
                if outcome.kind is ErrorKind.PERMISSION_DENIED:
                    return
        raise Unknown(
            "the target was not seen to authenticate (it accepted requests a key-checking "
            "server refuses): authentication may be off"
        )
