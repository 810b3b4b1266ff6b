"""Bad input gets the right error kind and changes nothing.

Malformed bodies, unknown names, missing or mistyped fields, bad UUIDs and locators, unknown
enum values, bad DoPut streams, garbage tickets and criteria: each is refused with the kind
the catalogue names (never INTERNAL), and the server state is exactly what it was. A
Hypothesis test then throws generated garbage at every DoAction of the catalogue. Everything
runs over both transports, with authentication on and a manage key.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Any

import attrs
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsm.outcome import ErrorKind, Outcome, OutcomeStatus
from fsm.spec import load_spec
from fsm.spec.model import Field, Operation
from fsm.transport import Descriptor, Transport, encode_body
from tests.harness import KIND_PARAMS, Harness, harness, profile_examples
from tests.harness import expect_ok as ok
from tests.harness import put_batches as put

SPEC = load_spec()
ACTIONS = tuple(
    name for name, op in SPEC.operations.items() if op.kind == "action" and op.wire != "*"
)
INVALID = ErrorKind.INVALID_ARGUMENT
STRING_TYPES = frozenset(
    {
        "string",
        "sequence_locator",
        "topic_locator",
        "locator",
        "uuid",
        "notification_type",
        "permission",
        "serialization_format",
        "fingerprint",
    }
)
OBJECT_TYPES = frozenset({"object", "filter"})

SCHEMA = pa.schema(
    [pa.field("timestamp_ns", pa.int64(), nullable=False), pa.field("value", pa.float64())]
)
BATCH = pa.record_batch(
    [pa.array([10, 20, 30], pa.int64()), pa.array([1.0, 2.0, 3.0])], schema=SCHEMA
)

BAD_SEQUENCE_LOCATORS = ["", " ", "-x", "_x", "a b", "seq//", "/", "//seq", "se.q", "séq", "s/t"]
BAD_TOPIC_LOCATORS = ["", "-x/t", "a b/t", "seq//", "/", "seq", "seq/", "seq/-t", "seq/t t", "s/é"]
BAD_RESOURCE_LOCATORS = ["", "-x", "a b", "seq//", "/", "seq/-t"]
# Strings that are not a UUID in its canonical text form, nor a near miss a parser forgives.
BAD_UUIDS = [
    "",
    "not-a-uuid",
    "1234",
    "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz",
    "00000000-0000-0000-0000-0000000000000",
    "0000000_0000000_0000000_00000000",
    "\u0660" * 32,  # Arabic-Indic zeros
    " " + "0" * 31,
]
BAD_CHOICES = {
    "notification_type": ["warning", "ERROR", "", " error"],
    "permission": ["admin", "READ", "", "read,write", "none"],
    "serialization_format": ["json", "DEFAULT", "", "image "],
    "fingerprint": ["", "ABCDEFGH", "abc", "abcdefghi", "abcd-fgh", "abcdefg\u00e9"],
}


@attrs.frozen
class World:
    """What the manage key made: sequence `seq` with an open session holding topic `seq/t`
    (never streamed) and a second open session holding `seq/done` (locked, with data, so the
    session can be finalized); a second key to inspect."""

    session: str
    done_session: str
    topic_uuid: str
    done_uuid: str
    ticket: bytes
    other_fingerprint: str


@attrs.define
class Env:
    """A server, a manage transport, its world, and the problems found so far by `refused`."""

    h: Harness
    t: Transport
    world: World
    problems: list[str] = attrs.field(factory=list)

    def verdict(self) -> None:
        """Fail with every problem found, one a line."""
        assert not self.problems, f"{len(self.problems)} wrong answers:\n" + "\n".join(
            self.problems
        )


def wire(name: str) -> str:
    return SPEC.operations[name].wire


def topic_body(session: str, locator: str) -> dict[str, Any]:
    return {
        "session_uuid": session,
        "locator": locator,
        "serialization_format": "default",
        "ontology_tag": "imu",
        "user_metadata": {"unit": "m/s2"},
    }


def make_world(h: Harness, t: Transport) -> World:
    ok(t.action_raw(wire("SEQUENCE_CREATE"), b'{"locator":"seq","user_metadata":{}}'), "seq")
    session = ok(t.action_raw(wire("SESSION_CREATE"), b'{"locator":"seq"}'), "session")["uuid"]
    topic = ok(t.action_raw(wire("TOPIC_CREATE"), encode_body(topic_body(session, "seq/t"))), "t")
    done_session = ok(t.action_raw(wire("SESSION_CREATE"), b'{"locator":"seq"}'), "s2")["uuid"]
    done = ok(
        t.action_raw(wire("TOPIC_CREATE"), encode_body(topic_body(done_session, "seq/done"))),
        "done",
    )
    ok(put(t, Descriptor.for_topic("seq/done", done["uuid"]), SCHEMA, [BATCH]), "put")
    ticket = ok(t.flight_info(Descriptor.for_resource("seq/done", 0, 100)), "info").ticket
    other = h.model.bootstrap_key(description="other")
    return World(
        session, done_session, topic["uuid"], done["uuid"], ticket, other.rsplit("_", 1)[1]
    )


def valid_body(name: str, w: World) -> dict[str, Any]:
    """A body of `name` that the server accepts in the world `w`."""
    bodies: dict[str, dict[str, Any]] = {
        "SEQUENCE_CREATE": {"locator": "fresh", "user_metadata": {"k": [1, 2]}},
        "SESSION_CREATE": {"locator": "seq"},
        "SESSION_FINALIZE": {"session_uuid": w.done_session},
        "SESSION_DELETE": {"session_uuid": w.session},
        "SEQUENCE_DELETE": {"locator": "seq"},
        "SEQUENCE_NOTIFICATION_CREATE": {
            "locator": "seq",
            "notification_type": "error",
            "msg": "boom",
        },
        "SEQUENCE_NOTIFICATION_LIST": {"locator": "seq"},
        "SEQUENCE_NOTIFICATION_PURGE": {"locator": "seq"},
        "TOPIC_CREATE": topic_body(w.session, "seq/new"),
        "TOPIC_DELETE": {"locator": "seq/t"},
        "TOPIC_NOTIFICATION_CREATE": {
            "locator": "seq/t",
            "notification_type": "info",
            "msg": "note",
        },
        "TOPIC_NOTIFICATION_LIST": {"locator": "seq/t"},
        "TOPIC_NOTIFICATION_PURGE": {"locator": "seq/t"},
        "QUERY": {"sequence": {"locator": {"$eq": "seq"}}},
        "API_KEY_CREATE": {"permissions": "read", "description": "d", "expires_at_ns": 5},
        "API_KEY_STATUS": {"api_key_fingerprint": w.other_fingerprint},
        "API_KEY_REVOKE": {"api_key_fingerprint": w.other_fingerprint},
        "VERSION": {},
    }
    return bodies[name]


@pytest.fixture(params=KIND_PARAMS)
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    """A fresh server with authentication on, a manage transport, and its world."""
    with harness(str(request.param), auth=True) as h:
        t = h.transport(h.model.bootstrap_key())
        yield Env(h, t, make_world(h, t))


def refused(env: Env, call: Callable[[], Outcome], kind: ErrorKind, what: str) -> None:
    """Check that `call` is refused with `kind` and leaves the state unchanged; a wrong answer
    is noted in `env.problems` (so one test reports every case) and `env.verdict()` fails."""
    before = env.h.model.snapshot()
    try:
        outcome = call()
    except Exception as exc:  # a crash of the in-process server
        env.problems.append(f"{what}: raised {type(exc).__name__}: {exc}")
        return
    if outcome.status is not OutcomeStatus.FAILED or outcome.kind is not kind:
        got = outcome.kind.value if outcome.kind else outcome.status.value
        env.problems.append(f"{what}: expected {kind.value}, got {got} ({outcome.detail[:150]})")
    elif env.h.model.snapshot() != before:
        env.problems.append(f"{what}: refused, but the state changed")


def refused_action(env: Env, name: str, body: bytes, kind: ErrorKind = INVALID) -> None:
    refused(env, lambda: env.t.action_raw(wire(name), body), kind, f"{name} {body[:80]!r}")


def fields(kinds: frozenset[str] | None = None, *, required: bool = False) -> list[Any]:
    """(action, field) of every request field of the catalogue, optionally filtered."""
    return [
        pytest.param(name, f, id=f"{name}.{f.name}")
        for name in ACTIONS
        for f in SPEC.operations[name].request
        if (kinds is None or f.type in kinds) and (f.required or not required)
    ]


def with_field(name: str, w: World, field: str, value: Any) -> bytes:
    return encode_body({**valid_body(name, w), field: value})


# ---------------------------------------------------------------------------------------------
# Sanity: the valid bodies really are valid, so every refusal below comes from the mutation.


@pytest.mark.parametrize("name", ACTIONS)
def test_the_valid_bodies_are_accepted(env: Env, name: str) -> None:
    """Each base body used below succeeds as it is."""
    ok(env.t.action_raw(wire(name), encode_body(valid_body(name, env.world))), name)


# ---------------------------------------------------------------------------------------------
# Bodies


def malformed_bodies(valid: Mapping[str, Any]) -> dict[str, bytes]:
    text = encode_body(valid)
    extra = text[:-1] + (b"," if valid else b"")
    return {
        "empty": b"",
        "open brace": b"{",
        "truncated": text[:-1],
        "words": b"not json",
        "single quotes": b"{'locator': 'seq'}",
        "trailing comma": extra + b'"x":1,}',
        "not utf-8": b'{"msg": "\xff\xfe"}',
        "utf-16": json.dumps(valid).encode("utf-16"),
        "NaN": extra + b'"x":NaN}',
        "Infinity": extra + b'"x":-Infinity}',
        "5000-digit number": extra + b'"x":' + b"9" * 5000 + b"}",
        "nested 100000 deep": extra + b'"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "two objects": text + text,
    }


@pytest.mark.parametrize("label", list(malformed_bodies({"locator": "seq"})))
def test_a_malformed_json_body_is_invalid(env: Env, label: str) -> None:
    """A body that is not valid JSON (as RFC 8259 defines it) is INVALID_ARGUMENT, for every
    action of the catalogue."""
    for name in ACTIONS:
        refused_action(env, name, malformed_bodies(valid_body(name, env.world))[label])
    env.verdict()


@pytest.mark.parametrize("name", ACTIONS)
def test_a_body_that_is_not_an_object_is_invalid(env: Env, name: str) -> None:
    """The body must be a JSON object: arrays, strings, numbers, null and booleans are not."""
    valid = encode_body(valid_body(name, env.world))
    for body in [b"[]", b'"seq"', b"1", b"-2.5", b"null", b"true", b"[" + valid + b"]"]:
        refused_action(env, name, body)
    env.verdict()


def test_an_unknown_action_name_is_invalid(env: Env) -> None:
    """Names outside the catalogue, including near misses and the catalogue's wildcard."""
    names = [
        "nope",
        "",
        "*",
        "SEQUENCE_CREATE",
        "sequence_create ",
        "sequence-create",
        "session_abort",
        "info",
        "x" * 5000,
    ]
    for action_type in names:
        refused(
            env,
            partial(env.t.action_raw, action_type, b'{"locator": "seq"}'),
            INVALID,
            f"action {action_type[:20]!r}",
        )
    env.verdict()


# ---------------------------------------------------------------------------------------------
# Fields


@pytest.mark.parametrize(("name", "field"), fields(required=True))
def test_a_missing_required_field_is_invalid(env: Env, name: str, field: Field) -> None:
    """Leaving out a required field, or sending it as null, is INVALID_ARGUMENT."""
    body = valid_body(name, env.world)
    without = {k: v for k, v in body.items() if k != field.name}
    refused_action(env, name, encode_body(without))
    refused_action(env, name, encode_body({**body, field.name: None}))
    env.verdict()


def wrong_values(field_type: str) -> list[Any]:
    if field_type in STRING_TYPES:
        return [1, -7, 2**70, 1.5, True, {}, {"a": "b"}, [], ["seq"]]
    if field_type in OBJECT_TYPES:
        return ["x", "{}", 1, 1.5, False, [], [{"a": 1}]]
    assert field_type == "integer", field_type
    return ["1", 1.5, 1e3, True, {}, [], [1]]


@pytest.mark.parametrize(("name", "field"), fields())
def test_a_field_of_the_wrong_type_is_invalid(env: Env, name: str, field: Field) -> None:
    """A string where an object or integer belongs (and every other mix) is INVALID_ARGUMENT."""
    for value in wrong_values(field.type):
        refused_action(env, name, with_field(name, env.world, field.name, value))
    env.verdict()


@pytest.mark.parametrize(("name", "field"), fields(frozenset({"uuid"})))
def test_a_bad_uuid_is_invalid(env: Env, name: str, field: Field) -> None:
    """A session UUID that is not a UUID is INVALID_ARGUMENT, not NOT_FOUND."""
    session = env.world.session
    for value in [*BAD_UUIDS, session + "0", session[:-1], session.replace("-", "_")]:
        refused_action(env, name, with_field(name, env.world, field.name, value))
    env.verdict()


@pytest.mark.parametrize(
    ("name", "field"), fields(frozenset({"sequence_locator", "topic_locator"}))
)
def test_a_bad_locator_is_invalid(env: Env, name: str, field: Field) -> None:
    """A sequence or topic locator with characters outside the grammar is INVALID_ARGUMENT."""
    bad = BAD_SEQUENCE_LOCATORS if field.type == "sequence_locator" else BAD_TOPIC_LOCATORS
    for value in bad:
        refused_action(env, name, with_field(name, env.world, field.name, value))
    env.verdict()


@pytest.mark.parametrize(("name", "field"), fields(frozenset(BAD_CHOICES)))
def test_an_unknown_choice_is_invalid(env: Env, name: str, field: Field) -> None:
    """An unknown notification type, permission, serialization format, or a fingerprint that
    is not 8 lowercase alphanumerics, is INVALID_ARGUMENT."""
    for value in BAD_CHOICES[field.type]:
        refused_action(env, name, with_field(name, env.world, field.name, value))
    env.verdict()


def test_an_unsupported_query_is_invalid(env: Env) -> None:
    """Filters, fields and operators the server does not support are refused, never answered."""
    bodies: list[dict[str, Any]] = [
        {"sequence": {"locator": {"$regex": "s.*"}}},
        {"sequence": {"colour": {"$eq": "red"}}},
        {"sequence": {"locator": {}}},
        {"sequence": {"locator": "seq"}},
        {"topic": {"user_metadata": {"unit": {"$between": [1]}}}},
        {"topic": {"user_metadata": "unit"}},
        {"sequence": {"user_metadata": {"k": {"$in": 1}}}},
        {"sequence": {"user_metadata": {"k": {"$lt": [1]}}}},
        {"ontology": {"imu.acceleration.x": {"$gt": None}}},
        {"ontology": {"imu.acceleration.x": {"$between": [2, 1]}}},
        {"ontology": {"include_timestamp_range": "yes"}},
    ]
    for body in bodies:
        refused_action(env, "QUERY", encode_body(body))
    env.verdict()


# ---------------------------------------------------------------------------------------------
# GetFlightInfo


def test_get_flight_info_refuses_bad_descriptors(env: Env) -> None:
    """A PATH descriptor, a command that is not a JSON object, a bad locator or a mistyped
    time bound is INVALID_ARGUMENT."""
    t = env.t
    commands = [
        b"",
        b"seq",
        b"[]",
        b'{"resource_locator": 5}',
        b'{"timestamp_ns_start": 0}',
        b'{"resource_locator": "seq", "timestamp_ns_start": "0"}',
        b'{"resource_locator": "seq", "timestamp_ns_end": 1.5}',
        b'{"resource_locator": "seq", "timestamp_ns_end": true}',
        *(encode_body({"resource_locator": loc}) for loc in BAD_RESOURCE_LOCATORS),
    ]
    for command in commands:
        descriptor = Descriptor("cmd", command=command)
        refused(env, partial(t.flight_info, descriptor), INVALID, f"GetFlightInfo {command!r}")
    for path in [("seq",), ("seq", "done"), ()]:
        descriptor = Descriptor("path", path=path)
        refused(env, partial(t.flight_info, descriptor), INVALID, f"GetFlightInfo path {path}")
    env.verdict()


def test_a_time_bound_outside_int64_is_refused_or_harmless(env: Env) -> None:
    """A time bound no int64 can hold is refused as INVALID_ARGUMENT, or else the ticket it
    yields still reads without error (the wire's timestamps are int64)."""
    for bound in [2**63, 2**70, -(2**63) - 1, -(2**70)]:
        for start, end in [(bound, None), (None, bound)]:
            what = f"GetFlightInfo seq/done from {start} to {end}"
            try:
                info = env.t.flight_info(Descriptor.for_resource("seq/done", start, end))
                if info.status is OutcomeStatus.FAILED:
                    if info.kind is not INVALID:
                        env.problems.append(f"{what}: {info.kind} {info.detail[:100]}")
                    continue
                data = env.t.read(ok(info, what).ticket)
            except Exception as exc:  # a crash of the in-process server
                env.problems.append(f"{what}, then DoGet: raised {type(exc).__name__}: {exc}")
                continue
            if data.status is not OutcomeStatus.OK:
                env.problems.append(f"{what}, then DoGet: {data.kind} {data.detail[:100]}")
    env.verdict()


# ---------------------------------------------------------------------------------------------
# DoPut


def test_do_put_needs_an_int64_timestamp_ns(env: Env) -> None:
    """A schema without `timestamp_ns`, or with it in another type, is INVALID_ARGUMENT."""
    descriptor = Descriptor.for_topic("seq/t", env.world.topic_uuid)
    for ts_type in [None, pa.int32(), pa.uint64(), pa.float64(), pa.string(), pa.timestamp("ns")]:
        columns = [pa.field("value", pa.float64())]
        arrays = [pa.array([1.0, 2.0])]
        if ts_type is not None:
            columns.insert(0, pa.field("timestamp_ns", ts_type))
            arrays.insert(0, pa.array([1, 2]).cast(ts_type))
        schema = pa.schema(columns)
        batch = pa.record_batch(arrays, schema=schema)
        refused(
            env,
            partial(put, env.t, descriptor, schema, [batch]),
            INVALID,
            f"DoPut with timestamp_ns as {ts_type}",
        )
    env.verdict()
    assert env.h.model.snapshot()["topics"]["seq/t"]["state"] == "created"


def test_do_put_refuses_a_path_descriptor(env: Env) -> None:
    """DoPut needs a CMD descriptor: a PATH naming the topic is INVALID_ARGUMENT."""
    for path in [("seq", "t"), ("seq/t",), ()]:
        descriptor = Descriptor("path", path=path)
        refused(env, partial(put, env.t, descriptor, SCHEMA, [BATCH]), INVALID, f"{path}")
    env.verdict()


def test_do_put_refuses_a_bad_command(env: Env) -> None:
    """A command that is not the JSON object of the protocol, or names a bad locator or UUID,
    is INVALID_ARGUMENT."""
    topic_uuid = env.world.topic_uuid
    commands = [
        b"",
        b"garbage",
        b"[]",
        b'{"resource_locator": "seq/t"}',
        encode_body({"topic_uuid": topic_uuid}),
        encode_body({"resource_locator": 5, "topic_uuid": topic_uuid}),
        encode_body({"resource_locator": "seq/t", "topic_uuid": 5}),
        *(encode_body({"resource_locator": "seq/t", "topic_uuid": u}) for u in BAD_UUIDS),
        *(
            encode_body({"resource_locator": loc, "topic_uuid": topic_uuid})
            for loc in BAD_TOPIC_LOCATORS
        ),
    ]
    for command in commands:
        descriptor = Descriptor("cmd", command=command)
        refused(
            env, partial(put, env.t, descriptor, SCHEMA, [BATCH]), INVALID, f"DoPut {command!r}"
        )
    env.verdict()


def test_do_put_with_another_topics_uuid_is_permission_denied(env: Env) -> None:
    """The topic UUID is the write credential: any other UUID is PERMISSION_DENIED."""
    for other in [env.world.done_uuid, env.world.session, str(uuid.UUID(int=1))]:
        descriptor = Descriptor.for_topic("seq/t", other)
        refused(
            env,
            partial(put, env.t, descriptor, SCHEMA, [BATCH]),
            ErrorKind.PERMISSION_DENIED,
            f"DoPut seq/t with {other}",
        )
    env.verdict()


def test_do_put_to_an_unknown_topic_is_not_found(env: Env) -> None:
    """A topic nobody created is NOT_FOUND, whichever UUID comes with it."""
    for locator in ["seq/ghost", "nosuch/t"]:
        descriptor = Descriptor.for_topic(locator, env.world.topic_uuid)
        refused(
            env,
            partial(put, env.t, descriptor, SCHEMA, [BATCH]),
            ErrorKind.NOT_FOUND,
            f"DoPut {locator}",
        )
    env.verdict()


# ---------------------------------------------------------------------------------------------
# DoGet and ListFlights


def forged_tickets(real: bytes) -> list[bytes]:
    """The server's own ticket with each of its JSON fields replaced by a value of another
    type (tickets are opaque to clients, but a client can send any bytes)."""
    cut = real.index(b"{")
    prefix, payload = real[:cut], json.loads(real[cut:])
    forged = [prefix + b"{", prefix + b"[]", prefix + b'"seq/done"', prefix + b"{}"]
    for key in payload:
        for value in ["x", True, [], {"a": 1}]:
            forged.append(prefix + json.dumps({**payload, key: value}).encode())
    locator = next(key for key, value in payload.items() if value == "seq/done")
    for value in [5, None, "-x/t"]:
        forged.append(prefix + json.dumps({**payload, locator: value}).encode())
    return forged


def test_do_get_with_a_garbage_ticket_is_invalid(env: Env) -> None:
    """A ticket the server did not issue, or one whose content was altered, is
    INVALID_ARGUMENT."""
    assert ok(env.t.read(env.world.ticket), "the real ticket").table().num_rows == 3
    tickets = [
        b"",
        b"garbage",
        b"\x00\xff\xfe",
        b"seq",
        b"seq/done",
        *forged_tickets(env.world.ticket),
    ]
    for ticket in tickets:
        refused(env, partial(env.t.read, ticket), INVALID, f"DoGet {ticket!r}")
    env.verdict()


def test_list_flights_with_garbage_criteria_is_invalid(env: Env) -> None:
    """ListFlights criteria must be empty or '/'."""
    assert ok(env.t.list_sequences(b"/"), "criteria '/'") == ["seq"]
    for criteria in [b"x", b"//", b" ", b"\xff\xfe", b"seq", b'{"locator": "seq"}', b"\x00"]:
        refused(env, partial(env.t.list_sequences, criteria), INVALID, f"criteria {criteria!r}")
    env.verdict()


# ---------------------------------------------------------------------------------------------
# Generated garbage for every DoAction

# Stand-ins for the names that exist on the server, filled in at call time.
SEQ, SESSION, TOPIC, FINGERPRINT = "@seq", "@session", "@topic", "@fingerprint"

huge_ints = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, 10**100]),
)
any_text = st.text(st.characters(exclude_categories=()), max_size=20)
scalars = st.one_of(st.none(), st.booleans(), huge_ints, st.floats(), any_text)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(any_text, inner, max_size=4)
    ),
    max_leaves=12,
)

INTERESTING: dict[str, st.SearchStrategy[Any]] = {
    "sequence_locator": st.sampled_from([SEQ, "/" + SEQ, "fresh", " " + SEQ]),
    "topic_locator": st.sampled_from([TOPIC, SEQ + "/new", "/" + TOPIC, SEQ + "/a/b"]),
    "uuid": st.sampled_from([SESSION, str(uuid.UUID(int=0))]),
    "notification_type": st.sampled_from(["error", "info"]),
    "permission": st.sampled_from(["read", "write", "delete", "manage"]),
    "serialization_format": st.sampled_from(["default", "ragged", "image"]),
    "fingerprint": st.sampled_from([FINGERPRINT, "abcd1234"]),
    "object": st.dictionaries(any_text, json_values, max_size=3),
    "filter": st.sampled_from(
        [{"locator": {"$eq": SEQ}}, {"user_metadata": {"k": {"$ex": True}}}, {}]
    ),
    "integer": huge_ints,
    "string": any_text,
}


def field_values(f: Field) -> st.SearchStrategy[Any]:
    """Mostly a plausible value for the field's type, sometimes any JSON value."""
    plausible = INTERESTING[f.type]
    return st.one_of(plausible, plausible, json_values)


def objects_for(op: Operation) -> st.SearchStrategy[dict[str, Any]]:
    """JSON objects with the operation's fields (some dropped, any value) and unknown keys."""
    names = [f.name for f in op.request]
    values = st.fixed_dictionaries({f.name: field_values(f) for f in op.request})
    dropped: st.SearchStrategy[frozenset[str]] = st.one_of(
        st.just(frozenset()), st.frozensets(st.sampled_from(names or [""]))
    )
    unknown = st.dictionaries(any_text, json_values, max_size=2)

    def build(v: dict[str, Any], d: frozenset[str], u: dict[str, Any]) -> dict[str, Any]:
        return {**u, **{k: x for k, x in v.items() if k not in d}}

    return st.builds(build, values, dropped, unknown)


def to_bytes(value: Any, ascii_only: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


# A generated body: raw bytes, or a JSON value (with stand-ins) and whether to escape non-ASCII.
Body = tuple[bytes | None, Any, bool]


def bodies_for(op: Operation) -> st.SearchStrategy[Body]:
    """Raw bytes, any JSON value, or (most often) an object shaped like the request."""
    raw = st.binary(max_size=64).map(lambda b: (b, None, True))
    value = st.tuples(st.none(), json_values, st.booleans())
    shaped = st.tuples(st.none(), objects_for(op), st.booleans())
    return st.one_of(raw, value, shaped, shaped)


@attrs.define
class Live:
    """The names currently on the fuzzed server; remade when a generated call removed them."""

    session: str = ""
    topic: str = ""
    fingerprint: str = ""
    count: int = 0

    def refresh(self, h: Harness, t: Transport) -> None:
        state = h.model.snapshot()
        if "seq" not in state["sequences"]:
            ok(t.action_raw(wire("SEQUENCE_CREATE"), b'{"locator":"seq","user_metadata":{}}'), "s")
        session = state["sessions"].get(self.session)
        if session is None or session["state"] not in ("open", "reported"):
            body = b'{"locator":"seq"}'
            self.session = ok(t.action_raw(wire("SESSION_CREATE"), body), "session")["uuid"]
        if self.topic not in state["topics"]:
            self.count += 1
            self.topic = f"seq/t{self.count}"
            body = encode_body(topic_body(self.session, self.topic))
            ok(t.action_raw(wire("TOPIC_CREATE"), body), "topic")
        if self.fingerprint not in state["keys"]:
            self.fingerprint = h.model.bootstrap_key(description="victim").rsplit("_", 1)[1]

    def fill(self, value: Any) -> Any:
        if isinstance(value, str):
            return (
                value.replace(SESSION, self.session)
                .replace(TOPIC, self.topic)
                .replace(FINGERPRINT, self.fingerprint)
                .replace(SEQ, "seq")
            )
        if isinstance(value, list):
            return [self.fill(v) for v in value]
        if isinstance(value, dict):
            return {self.fill(k): self.fill(v) for k, v in value.items()}
        return value

    def encode(self, body: Body) -> bytes:
        raw, value, ascii_only = body
        return raw if raw is not None else to_bytes(self.fill(value), ascii_only)


@pytest.fixture(scope="module", params=KIND_PARAMS)
def fuzzed(request: pytest.FixtureRequest) -> Iterator[tuple[Harness, Transport, Live]]:
    """One server per transport for the whole module; the manage key is never a target."""
    with harness(str(request.param), auth=True) as h:
        t = h.transport(h.model.bootstrap_key())
        yield h, t, Live()


def allowed_kinds(op: Operation) -> set[ErrorKind]:
    """The error kinds the catalogue lists for `op` (its own and the common ones), and
    INVALID_ARGUMENT."""
    kinds = {ErrorKind(e.kind) for e in (*op.errors, *SPEC.common_errors)}
    # A body that is not a JSON object is a malformed request for every action (PROTOCOL.md §4).
    return (kinds | {INVALID}) - {ErrorKind.INTERNAL}


def examples(kind: str) -> int:
    """The profile's example count; half of it over Flight, where each call is a round trip."""
    return profile_examples(1.0 if kind == "memory" else 0.5)


@pytest.mark.parametrize("name", ACTIONS)
def test_garbage_bodies_never_break_the_server(
    fuzzed: tuple[Harness, Transport, Live], name: str
) -> None:
    """Any body for any action: never INTERNAL, never a crash, only the error kinds the
    catalogue lists for it, and no change unless the call succeeded."""
    h, t, live = fuzzed
    op = SPEC.operations[name]
    expected = allowed_kinds(op)

    @settings(max_examples=examples(h.kind))
    @given(generated=bodies_for(op))
    def check(generated: Body) -> None:
        live.refresh(h, t)
        body = live.encode(generated)
        before = h.model.snapshot()
        outcome = t.action_raw(op.wire, body)
        assert outcome.status is not OutcomeStatus.UNKNOWN, outcome
        if outcome.status is OutcomeStatus.FAILED:
            assert outcome.kind in expected, f"{op.wire} {body[:200]!r}: {outcome}"
            assert h.model.snapshot() == before, f"{op.wire} {body[:200]!r} changed the state"

    check()


WIRES = frozenset(SPEC.operations[name].wire for name in ACTIONS)


def test_garbage_action_names_are_invalid(fuzzed: tuple[Harness, Transport, Live]) -> None:
    """An action name outside the catalogue is INVALID_ARGUMENT and changes nothing."""
    h, t, live = fuzzed

    @settings(max_examples=examples(h.kind))
    @given(
        action_type=st.one_of(st.text(max_size=30), st.sampled_from(["*", "version "])).filter(
            lambda s: s not in WIRES
        ),
        generated=bodies_for(SPEC.operations["SEQUENCE_CREATE"]),
    )
    def check(action_type: str, generated: Body) -> None:
        live.refresh(h, t)
        before = h.model.snapshot()
        outcome = t.action_raw(action_type, live.encode(generated))
        assert outcome.kind is INVALID, f"{action_type!r}: {outcome}"
        assert h.model.snapshot() == before

    check()
