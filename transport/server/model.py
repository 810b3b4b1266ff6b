"""The server model: one implementation of the server semantics of `specs/`.

Every request is decided by the resource tables of `specs/resources.toml` (with the chosen
profile's deviations applied) and the catalogue of `specs/actions.toml`: the request is
authenticated, decoded and checked, the permission compared with the catalogue's, then each
resource it touches is looked up in its table. Only when every table has accepted does the
model change anything, so a refused request leaves the state exactly as it was.

The in-memory transport and the Flight reference server share this class. It is thread-safe:
one lock guards the state; record batches are stored as received (immutable, no copies).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
import pyarrow as pa

from fsm.enums import APIKeyPermissionEnum
from fsm.outcome import ErrorKind
from fsm.spec import Spec, load_spec
from fsm.spec.model import Operation, ResourceRow, ResourceSpec
from fsm.spec.soundness import apply_deviations
from fsm.transport import DataInfo, SequenceInfo, SessionInfo, TopicData, TopicInfo
from transport.server import query as query_mod
from transport.server.auth import ApiKey, Principal, fingerprint_of, new_token, parse_token
from transport.server.errors import ServerError
from transport.server.trace import ServerTrace
from transport.server.validate import (
    INT64,
    normalize_topic_locator,
    parse_json_object,
    split_topic_locator,
    validate_request,
)

__all__ = ["PutHandle", "ServerModel", "ServerSettings"]

SERVER_VERSION = (0, 1, 0)
TICKET_PREFIX = b"mosaico-fsm/ticket/v1:"


@attrs.define
class _Notification:
    name: str
    notification_type: str
    msg: str
    created_ns: int

    def to_json(self) -> dict[str, Any]:
        stamp = dt.datetime.fromtimestamp(self.created_ns / 1e9, tz=dt.UTC).isoformat()
        return {
            "name": self.name,
            "notification_type": self.notification_type,
            "msg": self.msg,
            "created_datetime": stamp,
        }


@attrs.define
class _Sequence:
    name: str
    user_metadata: dict[str, Any]
    created_ns: int
    sessions: list[str] = attrs.field(factory=list)
    notifications: list[_Notification] = attrs.field(factory=list)


@attrs.define
class _Session:
    uuid: str
    sequence: str
    created_ns: int
    state: str = "open"
    completed_ns: int | None = None
    topics: list[str] = attrs.field(factory=list)


@attrs.define
class _Topic:
    locator: str
    sequence: str
    session: str
    uuid: str
    serialization_format: str
    ontology_tag: str
    user_metadata: dict[str, Any]
    created_ns: int
    state: str = "created"
    completed_ns: int | None = None
    schema: pa.Schema | None = None
    chunks: list[pa.RecordBatch] = attrs.field(factory=list)
    total_bytes: int = 0
    start_ns: int | None = None
    end_ns: int | None = None
    stream: int | None = None
    notifications: list[_Notification] = attrs.field(factory=list)


@attrs.frozen
class PutHandle:
    """An accepted DoPut stream: its topic and its identity."""

    locator: str
    stream: int
    schema: pa.Schema


@attrs.frozen
class ServerSettings:
    """Behaviour switches a deviation may change (see `specs/deviations.toml`)."""

    enforce_key_expiry: bool = True
    missing_key_refusal: str = "unauthenticated"
    session_topics_listed: str = "always"


class ServerModel:
    """A Mosaico server's state and semantics.

    `profile` is a profile of `specs/deviations.toml` (`spec` or `mosaicod-0.3`); `deviations`,
    when given, names the server deviations to emulate instead of the profile's. With `auth`
    on, requests need an API key; `bootstrap_key()` issues the first one. `clock` answers
    nanoseconds and `seed` drives UUIDs and tokens, so runs can be reproduced.
    """

    def __init__(
        self,
        spec: Spec | None = None,
        *,
        profile: str = "spec",
        deviations: Sequence[str] | None = None,
        auth: bool = False,
        clock: Callable[[], int] = time.time_ns,
        seed: int | None = None,
    ) -> None:
        self.spec = spec or load_spec()
        if profile not in self.spec.profiles:
            raise ValueError(
                f"unknown profile {profile!r}; choose from {sorted(self.spec.profiles)}"
            )
        self.profile = profile
        self.deviations = tuple(
            self.spec.profiles[profile].deviations if deviations is None else deviations
        )
        for did in self.deviations:
            if did not in self.spec.deviations or self.spec.deviations[did].who != "mosaicod-0.3":
                raise ValueError(f"{did!r} is not a server deviation the model can emulate")
        self.auth = auth
        self._clock = clock
        self._rng = random.Random(seed)
        # Tokens are secrets: drawn from the OS unless a seed asks for a reproducible run.
        self._token_rng: random.Random = random.SystemRandom() if seed is None else self._rng
        self._lock = threading.RLock()
        self._stream_ids = itertools.count(1)
        self.resources: dict[str, ResourceSpec] = apply_deviations(self.spec, self.deviations)
        self.permissions: dict[str, APIKeyPermissionEnum | None] = {
            name: _permission(op.permission) for name, op in self.spec.operations.items()
        }
        settings: dict[str, Any] = {}
        for did in self.deviations:
            for patch in self.spec.deviations[did].patch:
                if patch.operation is not None and patch.permission is not None:
                    self.permissions[patch.operation] = _permission(patch.permission)
                if patch.setting is not None:
                    settings[patch.setting] = patch.value
        self.settings = ServerSettings(**settings)
        self.sequences: dict[str, _Sequence] = {}
        self.sessions: dict[str, _Session] = {}
        self.topics: dict[str, _Topic] = {}
        self.keys: dict[str, ApiKey] = {}
        self.trace: ServerTrace | None = None
        # The sequence of each deleted session, kept while tracing only: a later request
        # naming the session is still attributed to its sequence in the trace.
        self._gone_sessions: dict[str, str] = {}

    # -----------------------------------------------------------------------------------------
    # Time, identity, authentication

    def now(self) -> int:
        return self._clock()

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def bootstrap_key(
        self,
        permission: APIKeyPermissionEnum = APIKeyPermissionEnum.Manage,
        description: str = "bootstrap",
    ) -> str:
        """Issue a key without a request (how the first manage key comes to exist)."""
        with self._lock:
            return self._issue_key(permission, description, None)

    def _issue_key(
        self, permission: APIKeyPermissionEnum, description: str, expires_at_ns: int | None
    ) -> str:
        token, payload, fingerprint = new_token(self._token_rng)
        while fingerprint in self.keys:
            token, payload, fingerprint = new_token(self._token_rng)
        self.keys[fingerprint] = ApiKey(
            fingerprint, payload, permission, description, self.now(), expires_at_ns
        )
        return token

    def authenticate(self, token: str | None) -> Principal:
        """The principal of a request carrying `token` (the mosaico-api-key-token header)."""
        if not self.auth:
            return Principal(APIKeyPermissionEnum.Manage)
        if not token:
            if self.settings.missing_key_refusal == "permission_denied":
                raise ServerError(ErrorKind.PERMISSION_DENIED, "missing api key token in request")
            raise ServerError(ErrorKind.UNAUTHENTICATED, "missing API key in request header")
        parsed = parse_token(token)
        if parsed is None:
            raise ServerError(ErrorKind.PERMISSION_DENIED, "unauthorized: malformed API key")
        payload, fingerprint = parsed
        with self._lock:
            key = self.keys.get(fingerprint)
            if key is None:
                raise ServerError(ErrorKind.PERMISSION_DENIED, "unauthorized: unknown API key")
            if key.payload != payload or fingerprint_of(payload) != fingerprint:
                raise ServerError(
                    ErrorKind.PERMISSION_DENIED, "unauthorized: API key does not match"
                )
            if (
                self.settings.enforce_key_expiry
                and key.expires_at_ns is not None
                and key.expires_at_ns <= self.now()
            ):
                raise ServerError(ErrorKind.PERMISSION_DENIED, "unauthorized: API key expired")
            return Principal(key.permission, fingerprint)

    def authorize(self, principal: Principal, operation: str) -> None:
        """Refuse with PERMISSION_DENIED when `principal` is below the operation's permission."""
        needed = self.permissions[operation]
        if needed is not None and not principal.permission.covers(needed):
            raise ServerError(
                ErrorKind.PERMISSION_DENIED,
                f"unauthorized: {operation} needs the {needed.value} permission, "
                f"the key has {principal.permission.value}",
            )

    # -----------------------------------------------------------------------------------------
    # What the server saw

    def observe(
        self,
        operation: str,
        outcome: str,
        *,
        body: bytes | None = None,
        locator: str | None = None,
        session: str | None = None,
        rows: int | None = None,
    ) -> None:
        """Record one request and its answer in `trace` (if tracing), attributed to its
        sequence, topic and session."""
        trace = self.trace
        if trace is None:
            return
        if body is not None:
            try:
                parsed = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                parsed = None
            if isinstance(parsed, dict):
                value = parsed.get("locator", parsed.get("resource_locator"))
                locator = locator or (value if isinstance(value, str) else None)
                value = parsed.get("session_uuid")
                session = session or (value if isinstance(value, str) else None)
        sequence, topic = None, None
        if locator:
            text = locator.strip().removeprefix("/")
            sequence, _, path = text.partition("/")
            topic = f"{sequence}/{path}" if path else None
        if session and not sequence:
            with self._lock:
                known = self.sessions.get(session)
                sequence = known.sequence if known else self._gone_sessions.get(session)
        event: dict[str, Any] = {"op": operation, "outcome": outcome}
        for key, value in (
            ("sequence", sequence),
            ("topic", topic),
            ("session", session),
            ("rows", rows),
        ):
            if value is not None:
                event[key] = value
        trace.observe(event)

    # -----------------------------------------------------------------------------------------
    # The tables

    def _decide(
        self, resource: str, state: str, event: str, facts: Mapping[str, str], what: str
    ) -> str:
        """The destination the resource table gives, or the refusal it gives (raised)."""
        row: ResourceRow | None = self.resources[resource].decide(state, event, facts)
        if row is None:  # excluded by the soundness checks
            raise ServerError(
                ErrorKind.INTERNAL, f"no {resource} row for {state} --{event}--> {dict(facts)}"
            )
        if row.error is not None:
            reason = f" ({row.doc})" if row.doc else ""
            raise ServerError(ErrorKind(row.error), f"{what}: {resource} is {state}{reason}")
        assert row.dest is not None
        return row.dest

    def _sequence_state(self, name: str) -> str:
        return "present" if name in self.sequences else "absent"

    def _session_facts(self, session: _Session) -> dict[str, str]:
        if not session.topics:
            return {"topics": "none"}
        locked = self.resources["topic"].locked
        all_locked = all(self.topics[t].state in locked for t in session.topics)
        return {"topics": "all_locked" if all_locked else "unlocked"}

    def _topic_facts(self, topic: _Topic) -> dict[str, str]:
        session = self.sessions[topic.session]
        return {
            "session_locked": "yes" if session.state in self.resources["session"].locked else "no",
            "schema": "yes" if topic.schema is not None else "no",
        }

    def _session(self, session_uuid: str, event: str, what: str) -> tuple[_Session | None, str]:
        session = self.sessions.get(session_uuid)
        state = session.state if session else "absent"
        facts = self._session_facts(session) if session else {"topics": "none"}
        return session, self._decide("session", state, event, facts, what)

    def _topic(self, locator: str, event: str, what: str) -> tuple[_Topic | None, str]:
        topic = self.topics.get(locator)
        state = topic.state if topic else "absent"
        facts = self._topic_facts(topic) if topic else {"session_locked": "no", "schema": "no"}
        return topic, self._decide("topic", state, event, facts, what)

    # -----------------------------------------------------------------------------------------
    # DoAction

    def handle_action(self, principal: Principal, action_type: str, body: bytes) -> Any:
        """Run one DoAction and answer the `response` payload (JSON-able)."""
        op = self.spec.operation_for_wire(action_type)
        if op is None:
            raise ServerError(ErrorKind.INVALID_ARGUMENT, f"unknown action {action_type!r}")
        raw = parse_json_object(body, f"{action_type} body")
        request = validate_request(op, raw)
        self.authorize(principal, op.name)
        if op.name == "QUERY":  # every key of a query is a filter: unknown ones are refused
            request = raw
        handler: Callable[[Operation, dict[str, Any], Principal], Any] = getattr(
            self, f"_do_{op.wire}"
        )
        with self._lock:
            return handler(op, request, principal)

    def _do_sequence_create(self, op: Operation, req: dict[str, Any], _: Principal) -> None:
        name = req["locator"]
        self._decide(
            "sequence", self._sequence_state(name), op.name, {"locked_session": "no"}, op.wire
        )
        self.sequences[name] = _Sequence(name, req["user_metadata"], self.now())

    def _locked_session_fact(self, sequence: _Sequence) -> dict[str, str]:
        locked = self.resources["session"].locked
        any_locked = any(self.sessions[s].state in locked for s in sequence.sessions)
        return {"locked_session": "yes" if any_locked else "no"}

    def _sequence(self, name: str, event: str, what: str) -> _Sequence:
        sequence = self.sequences.get(name)
        facts = self._locked_session_fact(sequence) if sequence else {"locked_session": "no"}
        self._decide("sequence", self._sequence_state(name), event, facts, what)
        assert sequence is not None
        return sequence

    def _do_session_create(
        self, op: Operation, req: dict[str, Any], _: Principal
    ) -> dict[str, str]:
        sequence = self._sequence(req["locator"], op.name, op.wire)
        session_uuid = self._uuid()
        dest = self._decide("session", "absent", op.name, {"topics": "none"}, op.wire)
        self.sessions[session_uuid] = _Session(session_uuid, sequence.name, self.now(), state=dest)
        sequence.sessions.append(session_uuid)
        return {"uuid": session_uuid}

    def _do_session_finalize(self, op: Operation, req: dict[str, Any], _: Principal) -> None:
        session, dest = self._session(req["session_uuid"], op.name, op.wire)
        assert session is not None
        session.state = dest
        session.completed_ns = self.now()

    def _do_session_delete(self, op: Operation, req: dict[str, Any], _: Principal) -> None:
        session, _dest = self._session(req["session_uuid"], op.name, op.wire)
        assert session is not None
        self._drop_session(session)

    def _drop_session(self, session: _Session) -> None:
        if self.trace is not None:
            self._gone_sessions[session.uuid] = session.sequence
        for locator in session.topics:
            self.topics.pop(locator, None)
        self.sessions.pop(session.uuid, None)
        sequence = self.sequences.get(session.sequence)
        if sequence is not None and session.uuid in sequence.sessions:
            sequence.sessions.remove(session.uuid)

    def _do_sequence_delete(self, op: Operation, req: dict[str, Any], _: Principal) -> None:
        name = req["locator"]
        if name not in self.sequences:  # the table refuses, or (a deviation) accepts: nothing to do
            self._decide("sequence", "absent", op.name, {"locked_session": "no"}, op.wire)
            return
        sequence = self._sequence(name, op.name, op.wire)
        for session_uuid in list(sequence.sessions):
            self._drop_session(self.sessions[session_uuid])
        del self.sequences[sequence.name]

    def _do_sequence_notification_create(
        self, op: Operation, req: dict[str, Any], _: Principal
    ) -> None:
        sequence = self._sequence(req["locator"], op.name, op.wire)
        moves: list[tuple[_Session, str]] = []
        if req["notification_type"] == "error":
            for session_uuid in sequence.sessions:
                session = self.sessions[session_uuid]
                dest = self._decide(
                    "session",
                    session.state,
                    "ERROR_REPORTED",
                    self._session_facts(session),
                    op.wire,
                )
                moves.append((session, dest))
        sequence.notifications.append(
            _Notification(sequence.name, req["notification_type"], req["msg"], self.now())
        )
        for session, dest in moves:
            session.state = dest

    def _do_sequence_notification_list(
        self, op: Operation, req: dict[str, Any], _: Principal
    ) -> dict[str, Any]:
        sequence = self._sequence(req["locator"], op.name, op.wire)
        return {"notifications": [n.to_json() for n in sequence.notifications]}

    def _do_sequence_notification_purge(
        self, op: Operation, req: dict[str, Any], _: Principal
    ) -> None:
        self._sequence(req["locator"], op.name, op.wire).notifications.clear()

    def _do_topic_create(self, op: Operation, req: dict[str, Any], _: Principal) -> dict[str, str]:
        session, _dest = self._session(req["session_uuid"], op.name, op.wire)
        assert session is not None
        locator = req["locator"]
        sequence_name, _path = split_topic_locator(locator)
        if sequence_name != session.sequence:
            raise ServerError(
                ErrorKind.PERMISSION_DENIED,
                f"unauthorized: topic {locator!r} is outside the session's sequence {session.sequence!r}",
            )
        self._topic(locator, op.name, op.wire)
        topic_uuid = self._uuid()
        self.topics[locator] = _Topic(
            locator=locator,
            sequence=session.sequence,
            session=session.uuid,
            uuid=topic_uuid,
            serialization_format=req["serialization_format"],
            ontology_tag=req["ontology_tag"],
            user_metadata=req["user_metadata"],
            created_ns=self.now(),
        )
        session.topics.append(locator)
        return {"uuid": topic_uuid}

    def _do_topic_delete(self, op: Operation, req: dict[str, Any], _: Principal) -> None:
        topic, _dest = self._topic(req["locator"], op.name, op.wire)
        assert topic is not None
        self.topics.pop(topic.locator)
        session = self.sessions.get(topic.session)
        if session is not None:
            session.topics.remove(topic.locator)

    def _do_topic_notification_create(
        self, op: Operation, req: dict[str, Any], _: Principal
    ) -> None:
        topic, _dest = self._topic(req["locator"], op.name, op.wire)
        assert topic is not None
        topic.notifications.append(
            _Notification(topic.locator, req["notification_type"], req["msg"], self.now())
        )

    def _do_topic_notification_list(
        self, op: Operation, req: dict[str, Any], _: Principal
    ) -> dict[str, Any]:
        topic, _dest = self._topic(req["locator"], op.name, op.wire)
        assert topic is not None
        return {"notifications": [n.to_json() for n in topic.notifications]}

    def _do_topic_notification_purge(
        self, op: Operation, req: dict[str, Any], _: Principal
    ) -> None:
        topic, _dest = self._topic(req["locator"], op.name, op.wire)
        assert topic is not None
        topic.notifications.clear()

    def _do_query(self, op: Operation, req: dict[str, Any], _: Principal) -> dict[str, Any]:
        body = {k: v for k, v in req.items() if v is not None}
        candidates: list[query_mod.Candidate] = []
        for sequence in self.sequences.values():
            fields: dict[str, Any] = {
                "locator": sequence.name,
                "created_at_ns": sequence.created_ns,
                "user_metadata": sequence.user_metadata,
            }
            topics: list[Mapping[str, Any]] = [
                {
                    "locator": t.locator,
                    "ontology_tag": t.ontology_tag,
                    "serialization_format": t.serialization_format,
                    "created_at_ns": t.created_ns,
                    "user_metadata": t.user_metadata,
                }
                for s in sequence.sessions
                for t in (self.topics[loc] for loc in self.sessions[s].topics)
            ]
            candidates.append((fields, topics))
        return {"items": query_mod.run_query(body, candidates)}

    def _do_api_key_create(
        self, op: Operation, req: dict[str, Any], _: Principal
    ) -> dict[str, str]:
        self._decide("api_key", "absent", op.name, {}, op.wire)
        permission = APIKeyPermissionEnum(req["permissions"])
        token = self._issue_key(permission, req["description"], req.get("expires_at_ns"))
        return {"api_key_token": token}

    def _key(self, fingerprint: str, event: str, what: str) -> ApiKey:
        key = self.keys.get(fingerprint)
        self._decide("api_key", "active" if key else "absent", event, {}, what)
        assert key is not None
        return key

    def _do_api_key_status(
        self, op: Operation, req: dict[str, Any], _: Principal
    ) -> dict[str, Any]:
        key = self._key(req["api_key_fingerprint"], op.name, op.wire)
        return {
            "api_key_fingerprint": key.fingerprint,
            "description": key.description,
            "created_at_ns": key.created_at_ns,
            "expires_at_ns": key.expires_at_ns,
        }

    def _do_api_key_revoke(self, op: Operation, req: dict[str, Any], _: Principal) -> None:
        key = self._key(req["api_key_fingerprint"], op.name, op.wire)
        del self.keys[key.fingerprint]

    def _do_version(self, op: Operation, req: dict[str, Any], _: Principal) -> dict[str, Any]:
        major, minor, patch = SERVER_VERSION
        return {
            "version": f"{major}.{minor}.{patch}",
            "semver": {"major": major, "minor": minor, "patch": patch, "pre": None},
        }

    # -----------------------------------------------------------------------------------------
    # DoPut

    def put_open(
        self, principal: Principal, descriptor_kind: str, command: bytes, schema: pa.Schema
    ) -> PutHandle:
        """Accept (or refuse) the start of a DoPut stream. Nothing is stored on a refusal."""
        if descriptor_kind != "cmd":
            raise ServerError(
                ErrorKind.INVALID_ARGUMENT, "DoPut needs a CMD descriptor, not a PATH"
            )
        op = self.spec.operations["DO_PUT"]
        request = validate_request(op, parse_json_object(command, "DoPut descriptor"))
        self.authorize(principal, "DO_PUT")
        _check_schema(schema)
        locator = request["resource_locator"]
        with self._lock:
            topic = self.topics.get(locator)
            if topic is not None and topic.uuid != request["topic_uuid"]:
                raise ServerError(
                    ErrorKind.PERMISSION_DENIED, f"unauthorized: wrong topic_uuid for {locator!r}"
                )
            topic, dest = self._topic(locator, "DO_PUT_OPEN", "DoPut")
            assert topic is not None
            if topic.schema is not None and not topic.schema.equals(schema, check_metadata=False):
                raise ServerError(
                    ErrorKind.INVALID_ARGUMENT,
                    f"DoPut: the schema differs from the one {locator!r} already stores",
                )
            stream = next(self._stream_ids)
            topic.state = dest
            topic.stream = stream
            if topic.schema is None:
                topic.schema = schema
            return PutHandle(locator, stream, schema)

    def _streaming_topic(self, handle: PutHandle, event: str) -> tuple[_Topic, str]:
        topic = self.topics.get(handle.locator)
        if topic is None:
            raise ServerError(
                ErrorKind.NOT_FOUND, f"DoPut: topic {handle.locator!r} no longer exists"
            )
        _, dest = self._topic(handle.locator, event, "DoPut")
        if topic.stream not in (handle.stream, None) and topic.state == "receiving":
            raise ServerError(ErrorKind.FAILED_PRECONDITION, "DoPut: another stream owns the topic")
        return topic, dest

    def put_write(self, handle: PutHandle, batch: pa.RecordBatch) -> None:
        """Store one received batch as one chunk."""
        if not batch.schema.equals(handle.schema, check_metadata=False):
            raise ServerError(
                ErrorKind.ABORTED, "DoPut: a batch does not match the stream's schema"
            )
        with self._lock:
            topic, dest = self._streaming_topic(handle, "DO_PUT_WRITE")
            topic.state = dest
            topic.chunks.append(batch)
            topic.total_bytes += batch.nbytes
            low, high = _min_max(batch.column("timestamp_ns"))
            if low is not None and high is not None:
                topic.start_ns = low if topic.start_ns is None else min(topic.start_ns, low)
                topic.end_ns = high if topic.end_ns is None else max(topic.end_ns, high)

    def put_end(self, handle: PutHandle) -> None:
        """A clean end of stream: the topic is locked (or the end is refused)."""
        with self._lock:
            try:
                topic, dest = self._streaming_topic(handle, "DO_PUT_END")
            except ServerError:
                stale = self.topics.get(handle.locator)
                if stale is not None and stale.stream == handle.stream:
                    stale.stream = None
                raise
            topic.state = dest
            topic.stream = None
            topic.completed_ns = self.now()

    def put_cancel(self, handle: PutHandle) -> bool:
        """The stream broke: nothing is locked; stored chunks stay. False (and nothing
        changed) when the stream had already ended."""
        with self._lock:
            topic = self.topics.get(handle.locator)
            if topic is None or topic.stream != handle.stream:
                return False
            facts = self._topic_facts(topic)
            topic.state = self._decide("topic", topic.state, "DO_PUT_CANCEL", facts, "DoPut")
            topic.stream = None
            return True

    # -----------------------------------------------------------------------------------------
    # Reading

    def flight_info(
        self, principal: Principal, descriptor_kind: str, command: bytes
    ) -> SequenceInfo | TopicInfo:
        if descriptor_kind != "cmd":
            raise ServerError(ErrorKind.INVALID_ARGUMENT, "GetFlightInfo needs a CMD descriptor")
        op = self.spec.operations["GET_FLIGHT_INFO"]
        request = validate_request(op, parse_json_object(command, "GetFlightInfo descriptor"))
        self.authorize(principal, op.name)
        locator = request["resource_locator"]
        start, end = request.get("timestamp_ns_start"), request.get("timestamp_ns_end")
        with self._lock:
            if "/" in locator:
                topic, _ = self._topic(locator, op.name, "GetFlightInfo")
                assert topic is not None
                return self._topic_info(topic, start, end, detailed=True)
            sequence = self._sequence(locator, op.name, "GetFlightInfo")
            sessions = tuple(self._session_info(self.sessions[s]) for s in sequence.sessions)
            # A sequence's FlightInfo describes each topic by its endpoint only (PROTOCOL.md
            # §7.1): no properties, user metadata or schema, whatever the transport.
            topics = tuple(
                self._topic_info(self.topics[t], start, end, detailed=False)
                for s in sequence.sessions
                for t in self.sessions[s].topics
            )
            return SequenceInfo(
                sequence.name, sequence.created_ns, dict(sequence.user_metadata), sessions, topics
            )

    def _session_info(self, session: _Session) -> SessionInfo:
        return SessionInfo(
            uuid=session.uuid,
            created_at_ns=session.created_ns,
            completed_at_ns=session.completed_ns,
            locked=session.state in self.resources["session"].locked,
            topics=(
                tuple(session.topics)
                if self.settings.session_topics_listed == "always"
                or session.completed_ns is not None
                else ()
            ),
        )

    def _topic_info(
        self, topic: _Topic, start: int | None, end: int | None, *, detailed: bool
    ) -> TopicInfo:
        """A topic's view; `detailed` (a topic's own FlightInfo) adds its properties, user
        metadata and schema."""
        info = None
        if topic.completed_ns is not None:  # finalized once: its data info is known
            info = DataInfo(len(topic.chunks), topic.total_bytes, topic.start_ns, topic.end_ns)
        ticket = (
            TICKET_PREFIX
            + json.dumps({"locator": topic.locator, "start": start, "end": end}).encode()
        )
        view = TopicInfo(
            locator=topic.locator,
            created_at_ns=topic.created_ns,
            completed_at_ns=topic.completed_ns,
            locked=topic.state in self.resources["topic"].locked,
            info=info,
            ticket=ticket,
        )
        if not detailed:
            return view
        return attrs.evolve(
            view,
            serialization_format=topic.serialization_format,
            ontology_tag=topic.ontology_tag,
            user_metadata=dict(topic.user_metadata),
            schema=self._read_schema(topic),
        )

    def _read_schema(self, topic: _Topic) -> pa.Schema:
        base = topic.schema if topic.schema is not None else pa.schema([])
        return base.with_metadata(
            {
                "mosaico:context": "topic",
                "mosaico:properties": json.dumps(
                    {
                        "serialization_format": topic.serialization_format,
                        "ontology_tag": topic.ontology_tag,
                    }
                ),
                "mosaico:user_metadata": json.dumps(topic.user_metadata),
            }
        )

    def read(self, principal: Principal, ticket: bytes) -> TopicData:
        """DoGet: the topic's chunks in write order, limited to the ticket's time range."""
        self.authorize(principal, "DO_GET")
        if not ticket.startswith(TICKET_PREFIX):
            raise ServerError(
                ErrorKind.INVALID_ARGUMENT, "DoGet: this ticket was not issued by this server"
            )
        try:
            raw = json.loads(ticket[len(TICKET_PREFIX) :])
            locator = normalize_topic_locator(raw["locator"])
            start, end = raw["start"], raw["end"]
            for bound in (start, end):
                if bound is not None and (
                    not isinstance(bound, int)
                    or isinstance(bound, bool)
                    or not INT64[0] <= bound <= INT64[1]
                ):
                    raise ValueError("bad time bound")
        except (ValueError, KeyError, TypeError, AttributeError, ServerError):
            raise ServerError(
                ErrorKind.INVALID_ARGUMENT, "DoGet: the ticket cannot be decoded"
            ) from None
        with self._lock:
            topic, _ = self._topic(locator, "DO_GET", "DoGet")
            assert topic is not None
            chunks = list(topic.chunks)
            schema = self._read_schema(topic)
        if start is not None or end is not None:
            chunks = [_time_slice(c, start, end) for c in chunks]
            chunks = [c for c in chunks if c.num_rows]
        return TopicData(schema, tuple(c.replace_schema_metadata(schema.metadata) for c in chunks))

    def list_sequences(self, principal: Principal, criteria: bytes) -> list[str]:
        self.authorize(principal, "LIST_FLIGHTS")
        if criteria not in (b"", b"/"):
            raise ServerError(
                ErrorKind.INVALID_ARGUMENT, "ListFlights: criteria must be empty or '/'"
            )
        with self._lock:
            return list(self.sequences)

    # -----------------------------------------------------------------------------------------
    # Inspection (tests, conformance, simulation)

    def snapshot(self) -> dict[str, Any]:
        """A plain, comparable picture of the whole state (data as row counts and digests)."""
        with self._lock:
            return {
                "sequences": {
                    name: {
                        "user_metadata": s.user_metadata,
                        "sessions": list(s.sessions),
                        "notifications": [(n.notification_type, n.msg) for n in s.notifications],
                    }
                    for name, s in self.sequences.items()
                },
                "sessions": {
                    u: {"sequence": s.sequence, "state": s.state, "topics": list(s.topics)}
                    for u, s in self.sessions.items()
                },
                "topics": {
                    loc: {
                        "state": t.state,
                        "rows": sum(c.num_rows for c in t.chunks),
                        "chunks": len(t.chunks),
                        "notifications": [(n.notification_type, n.msg) for n in t.notifications],
                    }
                    for loc, t in self.topics.items()
                },
                "keys": sorted(self.keys),
            }

    def resource_names(self) -> Iterable[str]:
        with self._lock:
            return [*self.sequences, *self.topics]


def _permission(value: str) -> APIKeyPermissionEnum | None:
    return None if value == "none" else APIKeyPermissionEnum(value)


def _check_schema(schema: pa.Schema) -> None:
    index = schema.get_field_index("timestamp_ns")
    if index < 0 or schema.field(index).type != pa.int64():
        raise ServerError(
            ErrorKind.INVALID_ARGUMENT, "DoPut: the schema needs an int64 field 'timestamp_ns'"
        )


def _min_max(column: pa.Array) -> tuple[int | None, int | None]:
    import pyarrow.compute as pc

    result = pc.min_max(column)
    return result["min"].as_py(), result["max"].as_py()


def _time_slice(batch: pa.RecordBatch, start: int | None, end: int | None) -> pa.RecordBatch:
    import pyarrow.compute as pc

    ts = batch.column("timestamp_ns")
    mask = None
    if start is not None:
        mask = pc.greater_equal(ts, start)
    if end is not None:
        upper = pc.less(ts, end)
        mask = upper if mask is None else pc.and_(mask, upper)
    return batch.filter(mask) if mask is not None else batch
