"""The server model: one implementation of the server semantics of `specs/`.

A request is authenticated (`auth`), decoded and checked (`validate`), compared with the
catalogue's permission, then handed to its handler: DoAction handlers (`actions`, `keys`,
and `reads.query`) are found by operation name in `handlers`; DoPut phases live in `put`;
reads in `reads`. Every handler moves resources only through the apply path of
`transport/server/state.py`, which reads the resource's state and facts, looks up the row of
`specs/resources.toml` and commits its destination. What a request is attributed to in the
server trace is worked out by `trace.attribute`.

The in-memory transport and the Flight reference server share this class. It is thread-safe:
one lock guards the state; record batches are stored as received (immutable, no copies).
"""

from __future__ import annotations

import functools
import itertools
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
import pyarrow as pa

from fsm.enums import APIKeyPermissionEnum
from fsm.errors import ArgumentError
from fsm.outcome import ErrorKind
from fsm.spec import Spec
from fsm.spec.lines import DEFAULT_LINE, Line, load_line, resolve_line
from fsm.spec.model import Limit
from fsm.spec.soundness import apply_deviations, apply_query_deviations
from fsm.transport import SequenceInfo, TopicData, TopicInfo
from transport.server import actions, auth, put, reads
from transport.server import query as query_mod
from transport.server.actions import ACTION_HANDLERS
from transport.server.auth import Principal
from transport.server.errors import ServerError
from transport.server.filters import FILTER_HANDLERS
from transport.server.keys import KEY_HANDLERS, issue_key
from transport.server.put import PutHandle
from transport.server.records import ApiKey, SequenceRecord, SessionRecord, TopicRecord
from transport.server.state import Handler, ServerState
from transport.server.trace import ServerTrace, attribute
from transport.server.validate import (
    INT64,
    check_size,
    normalize_topic_locator,
    parse_json_object,
    validate_request,
)
from transport.server.wire import WireShapes, session_locator

__all__ = ["HANDLERS", "PutHandle", "ServerModel", "ServerSettings"]

TICKET_PREFIX = reads.TICKET_PREFIX

HANDLERS: dict[str, Handler] = {**ACTION_HANDLERS, **KEY_HANDLERS, "QUERY": reads.query}


@attrs.frozen
class ServerSettings:
    """Behaviour switches a deviation may change (see `specs/deviations.toml`)."""

    enforce_key_expiry: bool = True
    missing_key_refusal: str = "unauthenticated"
    session_topics_listed: str = "always"
    query_empty_ontology: str = "no_condition"
    query_timestamp_range: str = "matching_rows"
    query_chunk_without_match: str = "skipped"
    query_without_conditions: str = "everything"


class ServerModel:
    """A Mosaico server's state and semantics.

    `protocol` is a protocol line of `specs/lines/` (a name such as the default `0.3`, or a
    loaded `Line`): its tables, permission model, handshake and wire shapes are the server's.
    `profile` is a profile of `specs/deviations.toml` (`spec` or a mosaicod build); a build's
    profile combines with a line only where that line knows every deviation of the build
    (else `ArgumentError`). `deviations`, when given, names the server deviations to emulate
    instead of the profile's. With `auth` on, requests need an API key; `bootstrap_key()`
    issues the first one. `clock` answers nanoseconds and `seed` drives UUIDs and tokens, so
    runs can be reproduced.
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
        protocol: str | Line | None = None,
    ) -> None:
        if spec is not None and protocol is not None:
            raise ArgumentError("give a spec or a protocol line, not both")
        self.line = resolve_line(protocol)
        self.spec = spec or self.line.spec
        if profile not in self.spec.profiles:
            raise ArgumentError(
                f"unknown profile {profile!r}; choose from {sorted(self.spec.profiles)}"
            )
        _check_profile(self.line, profile)
        self.shapes = WireShapes.of(self.line)
        self.string_checks = self.shapes.string_checks()
        self.grpc_limits: dict[str, int] = dict(self.line.handshake.config)
        """The gRPC limits an info handshake reports (the Flight service sets its own)."""
        self.profile = profile
        self.deviations = tuple(
            self.spec.profiles[profile].deviations if deviations is None else deviations
        )
        for did in self.deviations:
            if did not in self.spec.deviations or self.spec.deviations[did].who != "mosaicod-0.3":
                raise ArgumentError(f"{did!r} is not a server deviation the model can emulate")
        self.auth = auth
        rng = random.Random(seed)
        # Tokens are secrets: drawn from the OS unless a seed asks for a reproducible run.
        token_rng: random.Random = random.SystemRandom() if seed is None else rng
        self._lock = threading.RLock()
        self._stream_ids = itertools.count(1)
        self.permissions, self.settings = self._patched()
        kinds = {case.kind for case in self.spec.common_errors}
        if ErrorKind.UNAUTHENTICATED.value not in kinds and "missing_key_refusal" not in (
            self._patched_settings
        ):
            # The line's catalogue refuses a missing key like any other bad key.
            self.settings = attrs.evolve(
                self.settings, missing_key_refusal=ErrorKind.PERMISSION_DENIED.value
            )
        self.state = ServerState(
            apply_deviations(self.spec, self.deviations),
            clock=clock,
            rng=rng,
            token_rng=token_rng,
        )
        self.query_grammar = apply_query_deviations(self.spec, self.deviations)
        self.handlers = self._handlers()
        missing = sorted(
            op.name
            for op in self.spec.operations.values()
            if op.kind == "action" and "*" not in op.wire and op.name not in self.handlers
        )
        if missing:
            raise ServerError(ErrorKind.INTERNAL, f"no handler for the actions {missing}")
        self._trace: ServerTrace | None = None

    def _handlers(self) -> dict[str, Handler]:
        """Every DoAction handler, bound to this server's line shapes, grammar and settings."""
        handlers: dict[str, Handler] = dict(HANDLERS)
        handlers["SESSION_CREATE"] = functools.partial(
            actions.session_create,
            answer=self.shapes.session_create_answer,
            locator=session_locator if self.shapes.session_locators else None,
        )
        handlers["SESSION_DELETE"] = functools.partial(
            actions.session_delete, key=self.shapes.session_delete_key
        )
        for name in ("VERSION", "INFO"):
            handlers[name] = functools.partial(
                actions.version, release=self.line.handshake.version, config=self.grpc_limits
            )
        handlers["QUERY"] = functools.partial(
            reads.query,
            grammar=self.query_grammar,
            settings=query_mod.QuerySettings(
                empty_ontology=self.settings.query_empty_ontology,
                timestamp_range=self.settings.query_timestamp_range,
                chunk_without_match=self.settings.query_chunk_without_match,
                without_conditions=self.settings.query_without_conditions,
            ),
            name_key=self.shapes.query_name_key,
            answer=self.shapes.query_answer,
        )
        for name, handler in FILTER_HANDLERS.items():
            handlers[name] = functools.partial(handler, grammar=self.query_grammar)
        return handlers

    def _patched(self) -> tuple[dict[str, APIKeyPermissionEnum | None], ServerSettings]:
        """The permission of each operation and the behaviour switches, as the emulated
        deviations patch them."""
        permissions: dict[str, APIKeyPermissionEnum | None] = {
            name: _permission(op.permission) for name, op in self.spec.operations.items()
        }
        settings: dict[str, Any] = {}
        for did in self.deviations:
            for patch in self.spec.deviations[did].patch:
                if patch.operation is not None and patch.permission is not None:
                    permissions[patch.operation] = _permission(patch.permission)
                if patch.setting is not None:
                    settings[patch.setting] = patch.value
        self._patched_settings = frozenset(settings)
        return permissions, ServerSettings(**settings)

    # -----------------------------------------------------------------------------------------
    # What the model holds (views of `state`)

    @property
    def resources(self) -> dict[str, Any]:
        return self.state.resources

    @property
    def sequences(self) -> dict[str, SequenceRecord]:
        return self.state.sequences

    @property
    def sessions(self) -> dict[str, SessionRecord]:
        return self.state.sessions

    @property
    def topics(self) -> dict[str, TopicRecord]:
        return self.state.topics

    @property
    def keys(self) -> dict[str, ApiKey]:
        return self.state.keys

    @property
    def trace(self) -> ServerTrace | None:
        """Where every request is recorded, when set."""
        return self._trace

    @trace.setter
    def trace(self, value: ServerTrace | None) -> None:
        self._trace = value
        self.state.remember_gone = value is not None

    def now(self) -> int:
        return self.state.now()

    # -----------------------------------------------------------------------------------------
    # Authentication

    def bootstrap_key(
        self,
        permission: APIKeyPermissionEnum = APIKeyPermissionEnum.Manage,
        description: str = "bootstrap",
    ) -> str:
        """Issue a key without a request (how the first manage key comes to exist). On a
        line with granular permissions, a Manage key holds every bit and any other key the
        bit it names."""
        perms = self.line.permissions
        bits = None
        if perms.model == "granular":
            bits = (
                perms.values if permission is APIKeyPermissionEnum.Manage else (permission.value,)
            )
        with self._lock:
            return issue_key(self.state, permission, description, None, what="bootstrap", bits=bits)

    def authenticate(self, token: str | None) -> Principal:
        """The principal of a request carrying `token` (the mosaico-api-key-token header)."""
        if not self.auth:
            return Principal(APIKeyPermissionEnum.Manage, bits=self.line.permissions.values)
        with self._lock:
            return auth.authenticate(
                self.state.keys,
                token,
                self.now(),
                enforce_expiry=self.settings.enforce_key_expiry,
                missing_key=ErrorKind(self.settings.missing_key_refusal),
            )

    def authorize(self, principal: Principal, operation: str) -> None:
        """Refuse with PERMISSION_DENIED when `principal` is below the operation's permission
        (in the line's permission model)."""
        auth.authorize(self.permissions, principal, operation, self.line.permissions)

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
        trace = self._trace
        if trace is None:
            return
        event = attribute(
            operation,
            outcome,
            body=body,
            locator=locator,
            session=session,
            rows=rows,
            sequence_of=self._sequence_of_session,
        )
        trace.observe(event)

    def _sequence_of_session(self, session: str) -> str | None:
        with self._lock:
            known = self.state.sessions.get(session)
            return known.sequence if known else self.state.gone_sessions.get(session)

    # -----------------------------------------------------------------------------------------
    # DoAction

    def handle_action(self, principal: Principal, action_type: str, body: bytes) -> Any:
        """Run one DoAction and answer the `response` payload (JSON-able)."""
        op = self.spec.operation_for_wire(action_type)
        if op is None:
            raise ServerError(ErrorKind.INVALID_ARGUMENT, f"unknown action {action_type!r}")
        try:
            limits = self.spec.limits
            size_limit = "query_body_bytes" if op.name == "QUERY" else "action_body_bytes"
            raw = parse_json_object(body, f"{action_type} body", limits, size_limit)
            request = validate_request(op, raw, limits, self.string_checks)
            self.authorize(principal, op.name)
            if op.name == "QUERY":  # every key of a query is a filter: unknown ones are refused
                request = raw
            handler = self.handlers[op.name]
            with self._lock:
                return handler(self.state, op, request)
        except ServerError as refusal:
            _name(refusal, op.name)
            raise

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
        limits = self.spec.limits
        try:
            raw = parse_json_object(command, "DoPut descriptor", limits, "descriptor_bytes")
            request = validate_request(op, raw, limits, self.string_checks)
            self.authorize(principal, "DO_PUT")
            put.check_schema(schema)
            with self._lock:
                return put.open_stream(
                    self.state,
                    request["resource_locator"],
                    request["topic_uuid"],
                    schema,
                    self._stream_ids,
                )
        except ServerError as refusal:
            _name(refusal, op.name)
            raise

    def put_write(self, handle: PutHandle, batch: pa.RecordBatch) -> None:
        """Store one received batch as one chunk (checked in full first: nothing invalid is
        stored or read)."""
        put.check_batch(batch, handle.schema)
        with self._lock:
            put.write(self.state, handle, batch)

    def put_end(self, handle: PutHandle) -> None:
        """A clean end of stream: the topic is locked (or the end is refused)."""
        with self._lock:
            put.end(self.state, handle)

    def put_cancel(self, handle: PutHandle) -> bool:
        """The stream broke: nothing is locked; stored chunks stay. False (and nothing
        changed) when the stream had already ended."""
        with self._lock:
            return put.cancel(self.state, handle)

    # -----------------------------------------------------------------------------------------
    # Reading

    def flight_info(
        self,
        principal: Principal,
        descriptor_kind: str,
        command: bytes,
        *,
        detailed_topics: bool = False,
    ) -> SequenceInfo | TopicInfo:
        """GetFlightInfo; `detailed_topics` describes a sequence's topics as fully as a
        topic's own FlightInfo (a wire shape whose endpoints carry the topic's properties)."""
        if descriptor_kind != "cmd":
            raise ServerError(ErrorKind.INVALID_ARGUMENT, "GetFlightInfo needs a CMD descriptor")
        op = self.spec.operations["GET_FLIGHT_INFO"]
        limits = self.spec.limits
        try:
            raw = parse_json_object(command, "GetFlightInfo descriptor", limits, "descriptor_bytes")
            request = validate_request(op, raw, limits, self.string_checks)
            self.authorize(principal, op.name)
            start, end = request.get("timestamp_ns_start"), request.get("timestamp_ns_end")
            with self._lock:
                return reads.flight_info(
                    self.state,
                    op,
                    request["resource_locator"],
                    start,
                    end,
                    topics_listed=self.settings.session_topics_listed,
                    metadata=self.shapes.schema_metadata,
                    detailed_topics=detailed_topics,
                )
        except ServerError as refusal:
            _name(refusal, op.name)
            raise

    def read(self, principal: Principal, ticket: bytes) -> TopicData:
        """DoGet: the topic's chunks in write order, limited to the ticket's time range."""
        try:
            self.authorize(principal, "DO_GET")
            locator, start, end = _decode_ticket(ticket, self.spec.limits)
            with self._lock:
                chunks, schema, record = reads.read_chunks(
                    self.state, locator, self.shapes.schema_metadata
                )
        except ServerError as refusal:
            _name(refusal, "DO_GET")
            raise
        if start is not None or end is not None:
            chunks = [_time_slice(c, start, end) for c in chunks]
            chunks = [c for c in chunks if c.num_rows]
        schema = reads.with_keys(schema, self.shapes.schema_metadata(record, chunks))
        return TopicData(schema, tuple(c.replace_schema_metadata(schema.metadata) for c in chunks))

    def stored_schema(
        self, principal: Principal, descriptor_kind: str, command: bytes
    ) -> pa.Schema:
        """GetSchema: a topic's stored Arrow schema, with the line's schema metadata."""
        if descriptor_kind != "cmd":
            raise ServerError(ErrorKind.INVALID_ARGUMENT, "GetSchema needs a CMD descriptor")
        op = self.spec.operations["GET_SCHEMA"]
        limits = self.spec.limits
        try:
            raw = parse_json_object(command, "GetSchema descriptor", limits, "descriptor_bytes")
            request = validate_request(op, raw, limits, self.string_checks)
            self.authorize(principal, op.name)
            with self._lock:
                step = self.state.step("topic", request["resource_locator"], "DO_GET", "GetSchema")
                self.state.commit(step)
                record = step.record
                assert isinstance(record, TopicRecord)
                return reads.read_schema(record, self.shapes.schema_metadata)
        except ServerError as refusal:
            _name(refusal, op.name)
            raise

    def list_sequences(self, principal: Principal, criteria: bytes) -> list[str]:
        self.authorize(principal, "LIST_FLIGHTS")
        if criteria not in (b"", b"/"):
            raise ServerError(
                ErrorKind.INVALID_ARGUMENT, "ListFlights: criteria must be empty or '/'"
            )
        with self._lock:
            return list(self.state.sequences)

    # -----------------------------------------------------------------------------------------
    # Inspection (tests, conformance, simulation)

    def snapshot(self) -> dict[str, Any]:
        """A plain, comparable picture of the whole state (data as row counts and digests)."""
        with self._lock:
            return reads.snapshot(self.state)

    def resource_names(self) -> Iterable[str]:
        with self._lock:
            return [*self.state.sequences, *self.state.topics]


def _check_profile(line: Line, profile: str) -> None:
    """Refuse a mosaicod build's profile on a line that does not know every deviation of that
    build: the line leaves it unknown, or fixed one of them."""
    root = load_line(DEFAULT_LINE).spec.profiles
    emulated = set(root[profile].deviations) if profile in root else set()
    unknown = sorted(emulated & line.unknown_deviations)
    lost = sorted(emulated - set(line.spec.profiles[profile].deviations))
    if unknown or lost:
        why = (
            f"the line leaves {', '.join(unknown)} unknown"
            if unknown
            else f"the line fixed {', '.join(lost)}"
        )
        raise ArgumentError(
            f"profile {profile!r} emulates a server build that does not speak protocol line "
            f"{line.name} ({why}); use profile 'spec' with this line"
        )


def _permission(value: str) -> APIKeyPermissionEnum | None:
    return None if value == "none" else APIKeyPermissionEnum(value)


def _name(refusal: ServerError, operation: str) -> None:
    """Name the operation a refusal belongs to, unless its raiser already did."""
    if refusal.operation is None:
        refusal.operation = operation


def _decode_ticket(
    ticket: bytes, limits: Mapping[str, Limit]
) -> tuple[str, int | None, int | None]:
    check_size(len(ticket), limits, "ticket_bytes", "DoGet: the ticket")
    if not ticket.startswith(TICKET_PREFIX):
        raise ServerError(
            ErrorKind.INVALID_ARGUMENT, "DoGet: this ticket was not issued by this server"
        )
    try:
        raw = parse_json_object(ticket[len(TICKET_PREFIX) :], "the ticket", limits)
        locator = normalize_topic_locator(raw["locator"])
        start, end = raw["start"], raw["end"]
        for bound in (start, end):
            if bound is not None and (
                not isinstance(bound, int)
                or isinstance(bound, bool)
                or not INT64[0] <= bound <= INT64[1]
            ):
                raise ServerError(ErrorKind.INVALID_ARGUMENT, "bad time bound")
    except (ValueError, KeyError, TypeError, AttributeError, ServerError):
        raise ServerError(
            ErrorKind.INVALID_ARGUMENT, "DoGet: the ticket cannot be decoded"
        ) from None
    return locator, start, end


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
