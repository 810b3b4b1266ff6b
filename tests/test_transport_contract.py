"""The transport contract: both transports behave as the catalogue and the resource tables say.

Every test runs once over the in-memory transport and once over Arrow Flight, against an
in-process reference server on 127.0.0.1. Both share one server model, whose snapshot shows
whether a refused request changed anything. The tables are those of the `spec` profile.
"""

from __future__ import annotations

import datetime as dt
import random
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import attrs
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsm.enums import FlightAction
from fsm.outcome import ErrorKind, Outcome, OutcomeStatus
from fsm.spec import load_spec
from fsm.transport import (
    Descriptor,
    SequenceInfo,
    SessionInfo,
    TopicData,
    TopicInfo,
    TopicStream,
    Transport,
    encode_body,
)
from tests.harness import (
    KIND_PARAMS,
    Harness,
    failed_with,
    harness,
    ok,
    profile_examples,
    put_batches,
    topic_args,
    wait_until,
)
from transport.memory import MemoryTransport
from transport.server.trace import ServerTrace

A = FlightAction
E = ErrorKind
TOKEN = re.compile(r"msco_[a-z0-9]{32}_[a-z0-9]{8}")
NO_SUCH_UUID = "00000000-0000-4000-8000-000000000000"

# ---------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(params=KIND_PARAMS)
def h(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """A fresh server model behind one transport kind."""
    with harness(request.param) as running:
        yield running


@pytest.fixture
def t(h: Harness) -> Iterator[Transport]:
    """A client transport. Streams a failing test leaves open are aborted at teardown, since
    an open Flight stream keeps the server from stopping."""
    transport = h.transport()
    streams: list[TopicStream] = []
    plain_open = transport.open_stream

    def open_stream(descriptor: Descriptor, schema: pa.Schema) -> Outcome:
        outcome = plain_open(descriptor, schema)
        if outcome.is_ok:
            streams.append(outcome.value)
        return outcome

    transport.open_stream = open_stream  # type: ignore[method-assign]
    yield transport
    for stream in streams:
        stream.abort()


def refused(h: Harness, kind: ErrorKind, call: Callable[[], Outcome]) -> Outcome:
    """Run `call`, check it failed with `kind` and that the server state did not change."""
    before = h.model.snapshot()
    outcome = call()
    failed_with(outcome, kind)
    assert h.model.snapshot() == before, "a refused request changed the server state"
    return outcome


def act(t: Transport, action: FlightAction, **body: Any) -> Outcome:
    return t.action(action, body)


def create_sequence(t: Transport, name: str, metadata: Mapping[str, Any] | None = None) -> None:
    assert ok(act(t, A.SEQUENCE_CREATE, locator=name, user_metadata=dict(metadata or {}))) is None


def open_session(t: Transport, sequence: str) -> str:
    return str(ok(act(t, A.SESSION_CREATE, locator=sequence))["uuid"])


def create_topic(
    t: Transport,
    session: str,
    locator: str,
    fmt: str = "default",
    tag: str = "imu",
    metadata: Mapping[str, Any] | None = None,
) -> str:
    value = ok(
        act(
            t,
            A.TOPIC_CREATE,
            session_uuid=session,
            locator=locator,
            serialization_format=fmt,
            ontology_tag=tag,
            user_metadata=dict(metadata or {}),
        )
    )
    return str(value["uuid"])


def finalize(t: Transport, session: str) -> Outcome:
    return act(t, A.SESSION_FINALIZE, session_uuid=session)


def open_put(t: Transport, locator: str, topic_uuid: str, schema: pa.Schema) -> TopicStream:
    stream: TopicStream = ok(t.open_stream(Descriptor.for_topic(locator, topic_uuid), schema))
    return stream


def put(
    t: Transport,
    locator: str,
    topic_uuid: str,
    batches: Sequence[pa.RecordBatch],
    schema: pa.Schema | None = None,
    descriptor: Descriptor | None = None,
) -> Outcome:
    """One whole DoPut (open, write each batch, clean end): the first failure, or the close."""
    return put_batches(
        t,
        descriptor or Descriptor.for_topic(locator, topic_uuid),
        batches[0].schema if schema is None else schema,
        list(batches),
    )


def put_topic(
    t: Transport,
    session: str,
    locator: str,
    batches: Sequence[pa.RecordBatch],
    fmt: str = "default",
    tag: str = "imu",
    metadata: Mapping[str, Any] | None = None,
) -> str:
    """Create a topic and stream `batches` into it with a clean end; answers its UUID."""
    topic_uuid = create_topic(t, session, locator, fmt, tag, metadata)
    assert ok(put(t, locator, topic_uuid, batches)) is None
    return topic_uuid


def sequence_info(t: Transport, name: str) -> SequenceInfo:
    info = ok(t.flight_info(Descriptor.for_resource(name)))
    assert isinstance(info, SequenceInfo), info
    return info


def topic_info(
    t: Transport, locator: str, start_ns: int | None = None, end_ns: int | None = None
) -> TopicInfo:
    info = ok(t.flight_info(Descriptor.for_resource(locator, start_ns, end_ns)))
    assert isinstance(info, TopicInfo), info
    return info


def session_of(t: Transport, sequence: str, session: str) -> SessionInfo:
    found = sequence_info(t, sequence).session(session)
    assert found is not None, f"session {session} is not listed on {sequence}"
    return found


def read_topic(
    t: Transport, locator: str, start_ns: int | None = None, end_ns: int | None = None
) -> pa.Table:
    """GetFlightInfo then DoGet of a topic, as a table."""
    data = ok(t.read(topic_info(t, locator, start_ns, end_ns).ticket))
    assert isinstance(data, TopicData), data
    return data.table()


def plain(table: pa.Table) -> pa.Table:
    return table.replace_schema_metadata(None)


def assert_same_data(got: pa.Table, batches: Sequence[pa.RecordBatch]) -> None:
    """The table read back equals the batches written, in order: same field types,
    nullability and field metadata, same values, float columns bit for bit."""
    want = pa.Table.from_batches(list(batches))
    got, want = plain(got), plain(want)
    assert got.schema.equals(want.schema, check_metadata=True), (got.schema, want.schema)
    assert got.num_rows == want.num_rows
    assert got.equals(want), "the data read back differs from the data written"
    for name in want.column_names:
        kind = want.schema.field(name).type
        if pa.types.is_floating(kind):
            width = {16: pa.int16(), 32: pa.int32(), 64: pa.int64()}[kind.bit_width]
            assert (
                got.column(name)
                .combine_chunks()
                .view(width)
                .equals(want.column(name).combine_chunks().view(width))
            ), f"column {name} differs bit for bit"


def model_topic(h: Harness, locator: str) -> dict[str, Any]:
    topic: dict[str, Any] = h.model.snapshot()["topics"][locator]
    return topic


def returns_within(
    seconds: float, call: Callable[[], Outcome], rescue: Callable[[], Any]
) -> Outcome:
    """Run `call` on a helper thread. If it has not returned after `seconds`, run `rescue`
    (which must unblock it, so the test can end) and fail: the call hung."""
    result: list[Outcome] = []
    worker = threading.Thread(target=lambda: result.append(call()), daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        rescue()
        worker.join(seconds)
        pytest.fail(f"the call did not return within {seconds} s (it hangs)")
    return result[0]


def notifications(t: Transport, action: FlightAction, locator: str) -> list[dict[str, Any]]:
    value = ok(act(t, action, locator=locator))
    assert set(value) == {"notifications"}, value
    items: list[dict[str, Any]] = value["notifications"]
    for item in items:
        assert set(item) == {"name", "notification_type", "msg", "created_datetime"}, item
        stamp = dt.datetime.fromisoformat(item["created_datetime"])
        assert stamp.tzinfo is not None, item
    return items


# ---------------------------------------------------------------------------------------------
# Data: the three serialization formats, with the SDK's envelope fields

ENVELOPE = [
    pa.field("timestamp_ns", pa.int64(), nullable=False),
    pa.field("recording_timestamp_ns", pa.int64()),
    pa.field("frame_id", pa.string()),
    pa.field("sequence_id", pa.uint32()),
]
DEFAULT_SCHEMA = pa.schema(
    [
        *ENVELOPE,
        pa.field("acceleration_x", pa.float64(), metadata={"description": "m/s^2"}),
        pa.field("acceleration_y", pa.float64()),
        pa.field("temperature", pa.float32()),
        pa.field("counter", pa.int32()),
        pa.field("status", pa.int16()),
        pa.field("flags", pa.uint8()),
        pa.field("valid", pa.bool_()),
    ]
)
POINT = pa.struct(
    [("x", pa.float32()), ("y", pa.float32()), ("z", pa.float32()), ("intensity", pa.uint16())]
)
RAGGED_SCHEMA = pa.schema(
    [*ENVELOPE, pa.field("ranges", pa.list_(pa.float64())), pa.field("points", pa.list_(POINT))]
)
IMAGE_SCHEMA = pa.schema(
    [
        *ENVELOPE,
        pa.field("data", pa.binary()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("format", pa.string()),
    ]
)
SPECIAL_FLOATS = [0.0, -0.0, float("inf"), float("-inf"), 5e-324, 1.7976931348623157e308]


def _envelope(rng: random.Random, stamps: Sequence[int]) -> dict[str, list[Any]]:
    return {
        "timestamp_ns": list(stamps),
        "recording_timestamp_ns": [None if i % 3 == 0 else s + 7 for i, s in enumerate(stamps)],
        "frame_id": [
            None if i % 4 == 1 else f"frame-{rng.randrange(100)}" for i in range(len(stamps))
        ],
        "sequence_id": [rng.randrange(2**32) for _ in stamps],
    }


def default_batch(rng: random.Random, stamps: Sequence[int]) -> pa.RecordBatch:
    n = len(stamps)
    columns = _envelope(rng, stamps)
    columns.update(
        acceleration_x=[
            rng.choice(SPECIAL_FLOATS) if i % 5 == 0 else rng.uniform(-1e3, 1e3) for i in range(n)
        ],
        acceleration_y=[None if i % 6 == 2 else rng.gauss(0, 1) for i in range(n)],
        temperature=[rng.uniform(-40, 85) for _ in range(n)],
        counter=[rng.randrange(-(2**31), 2**31) for _ in range(n)],
        status=[rng.randrange(-(2**15), 2**15) for _ in range(n)],
        flags=[rng.randrange(256) for _ in range(n)],
        valid=[None if i % 7 == 3 else rng.random() < 0.5 for i in range(n)],
    )
    return pa.RecordBatch.from_pydict(columns, schema=DEFAULT_SCHEMA)


def ragged_batch(rng: random.Random, stamps: Sequence[int]) -> pa.RecordBatch:
    n = len(stamps)

    def point() -> dict[str, Any]:
        return {
            "x": rng.uniform(-50, 50),
            "y": rng.uniform(-50, 50),
            "z": rng.uniform(-5, 5),
            "intensity": rng.randrange(2**16),
        }

    columns = _envelope(rng, stamps)
    columns.update(
        ranges=[
            None if i % 5 == 4 else [rng.uniform(0, 100) for _ in range(rng.randrange(6))]
            for i in range(n)
        ],
        points=[[point() for _ in range(rng.randrange(5))] for _ in range(n)],
    )
    return pa.RecordBatch.from_pydict(columns, schema=RAGGED_SCHEMA)


def image_batch(rng: random.Random, stamps: Sequence[int]) -> pa.RecordBatch:
    widths = [rng.choice([4, 16, 64, 320]) for _ in stamps]
    heights = [rng.choice([3, 9, 48, 240]) for _ in stamps]
    columns = _envelope(rng, stamps)
    columns.update(
        data=[rng.randbytes(w * h * 3) for w, h in zip(widths, heights, strict=True)],
        width=widths,
        height=heights,
        format=[rng.choice(["rgb8", "bgr8", "png"]) for _ in stamps],
    )
    return pa.RecordBatch.from_pydict(columns, schema=IMAGE_SCHEMA)


MAKERS: dict[str, Callable[[random.Random, Sequence[int]], pa.RecordBatch]] = {
    "default": default_batch,
    "ragged": ragged_batch,
    "image": image_batch,
}


def make_batches(
    fmt: str, sizes: Sequence[int] = (5, 1, 8), seed: int = 0, base: int = 10**18
) -> list[pa.RecordBatch]:
    """Batches of the given sizes. Later batches carry earlier timestamps and each batch is
    shuffled, so a server that sorts by time instead of keeping write order shows it."""
    rng = random.Random(seed)
    batches = []
    for index, size in enumerate(sizes):
        start = base + (len(sizes) - index) * 1_000
        stamps = [start + k * 10 for k in range(size)]
        rng.shuffle(stamps)
        batches.append(MAKERS[fmt](rng, stamps))
    return batches


def min_max_stamp(batches: Sequence[pa.RecordBatch]) -> tuple[int, int]:
    stamps = [s for b in batches for s in b.column("timestamp_ns").to_pylist()]
    return min(stamps), max(stamps)


# ---------------------------------------------------------------------------------------------
# 1. DoAction: the catalogue's actions, their success shapes and every error kind they list


@attrs.frozen
class World:
    """A server holding one resource in each interesting state."""

    open_session: str  # on alpha, holds alpha/open (created, never streamed)
    locked_session: str  # on beta, cleanly finalized: holds beta/imu (locked, with data)
    empty_session: str  # on gamma, no topic
    ready_session: str  # on epsilon, open, holds epsilon/gps (locked, with data)
    fingerprint: str  # an API key with the read permission


def build_world(t: Transport) -> World:
    create_sequence(t, "alpha", {"site": "lab", "run": 1})
    open_s = open_session(t, "alpha")
    create_topic(t, open_s, "alpha/open")
    create_sequence(t, "beta", {"site": "field", "run": 2})
    locked_s = open_session(t, "beta")
    put_topic(t, locked_s, "beta/imu", make_batches("default", (3, 2)))
    assert ok(finalize(t, locked_s)) is None
    for kind, msg in (("info", "first"), ("error", "second")):
        ok(act(t, A.SEQUENCE_NOTIFICATION_CREATE, locator="beta", notification_type=kind, msg=msg))
        ok(act(t, A.TOPIC_NOTIFICATION_CREATE, locator="beta/imu", notification_type=kind, msg=msg))
    create_sequence(t, "gamma", {"site": "lab", "run": 3})
    empty_s = open_session(t, "gamma")
    create_sequence(t, "epsilon", {"site": "sea"})
    ready_s = open_session(t, "epsilon")
    put_topic(t, ready_s, "epsilon/gps", make_batches("default", (2,)), tag="gps")
    token = ok(act(t, A.API_KEY_CREATE, permissions="read", description="world key"))
    return World(open_s, locked_s, empty_s, ready_s, token["api_key_token"][-8:])


Body = Callable[[World], dict[str, Any] | bytes]


@attrs.frozen
class ErrorCase:
    op: str  # the catalogue's operation name
    kind: ErrorKind
    label: str
    body: Body

    @property
    def id(self) -> str:
        return f"{self.op.lower()}-{self.kind.value}-{self.label}"


_err = ErrorCase


def _seq_body(locator: str) -> Body:
    return lambda w: {"locator": locator}


def _uuid_body(pick: Callable[[World], str]) -> Body:
    return lambda w: {"session_uuid": pick(w)}


def _note(locator: str, kind: Any = "error", msg: Any = "boom") -> Body:
    return lambda w: {"locator": locator, "notification_type": kind, "msg": msg}


def _topic_body(session: Callable[[World], str], locator: str, fmt: str = "default") -> Body:
    return lambda w: {
        "session_uuid": session(w),
        "locator": locator,
        "serialization_format": fmt,
        "ontology_tag": "imu",
        "user_metadata": {},
    }


def _open(w: World) -> str:
    return w.open_session


def _locked(w: World) -> str:
    return w.locked_session


def _empty(w: World) -> str:
    return w.empty_session


def _no_such(w: World) -> str:
    return NO_SUCH_UUID


def _bad_uuid(w: World) -> str:
    return "not-a-uuid"


IA, NF, AE, FP, PD = (
    E.INVALID_ARGUMENT,
    E.NOT_FOUND,
    E.ALREADY_EXISTS,
    E.FAILED_PRECONDITION,
    E.PERMISSION_DENIED,
)

ERROR_CASES: list[ErrorCase] = [
    # sequence_create
    _err("SEQUENCE_CREATE", IA, "bad-locator", lambda w: {"locator": "bad name!", "user_metadata": {}}),
    _err("SEQUENCE_CREATE", IA, "metadata-not-object", lambda w: {"locator": "new", "user_metadata": [1]}),
    _err("SEQUENCE_CREATE", IA, "missing-metadata", lambda w: {"locator": "new"}),
    _err("SEQUENCE_CREATE", IA, "locator-not-string", lambda w: {"locator": 7, "user_metadata": {}}),
    _err("SEQUENCE_CREATE", IA, "body-not-json", lambda w: b"{locator: new"),
    _err("SEQUENCE_CREATE", IA, "body-not-object", lambda w: b'["new", {}]'),
    _err("SEQUENCE_CREATE", AE, "exists", lambda w: {"locator": "alpha", "user_metadata": {}}),
    _err("SEQUENCE_CREATE", AE, "exists-leading-slash", lambda w: {"locator": "/beta", "user_metadata": {}}),
    # session_create
    _err("SESSION_CREATE", IA, "bad-locator", _seq_body("-alpha")),
    _err("SESSION_CREATE", IA, "missing-locator", lambda w: {}),
    _err("SESSION_CREATE", NF, "no-sequence", _seq_body("nosuch")),
    # session_finalize
    _err("SESSION_FINALIZE", IA, "bad-uuid", _uuid_body(_bad_uuid)),
    _err("SESSION_FINALIZE", NF, "no-session", _uuid_body(_no_such)),
    _err("SESSION_FINALIZE", FP, "no-topic", _uuid_body(_empty)),
    _err("SESSION_FINALIZE", FP, "unlocked-topic", _uuid_body(_open)),
    _err("SESSION_FINALIZE", FP, "finalized-already", _uuid_body(_locked)),
    # session_delete
    _err("SESSION_DELETE", IA, "bad-uuid", _uuid_body(_bad_uuid)),
    _err("SESSION_DELETE", NF, "no-session", _uuid_body(_no_such)),
    _err("SESSION_DELETE", FP, "locked", _uuid_body(_locked)),
    # sequence_delete
    _err("SEQUENCE_DELETE", IA, "bad-locator", _seq_body("a b")),
    _err("SEQUENCE_DELETE", NF, "no-sequence", _seq_body("nosuch")),
    _err("SEQUENCE_DELETE", FP, "locked-session", _seq_body("beta")),
    # sequence notifications
    _err("SEQUENCE_NOTIFICATION_CREATE", IA, "unknown-type", _note("alpha", kind="warning")),
    _err("SEQUENCE_NOTIFICATION_CREATE", IA, "bad-locator", _note("alpha!")),
    _err("SEQUENCE_NOTIFICATION_CREATE", IA, "msg-not-string", _note("alpha", msg=42)),
    _err("SEQUENCE_NOTIFICATION_CREATE", NF, "no-sequence", _note("nosuch")),
    _err("SEQUENCE_NOTIFICATION_LIST", IA, "bad-locator", _seq_body("al pha")),
    _err("SEQUENCE_NOTIFICATION_LIST", NF, "no-sequence", _seq_body("nosuch")),
    _err("SEQUENCE_NOTIFICATION_PURGE", IA, "bad-locator", _seq_body("_beta")),
    _err("SEQUENCE_NOTIFICATION_PURGE", NF, "no-sequence", _seq_body("nosuch")),
    # topic_create
    _err("TOPIC_CREATE", IA, "bad-uuid", _topic_body(_bad_uuid, "alpha/new")),
    _err("TOPIC_CREATE", IA, "bad-locator", _topic_body(_open, "alpha/new topic")),
    _err("TOPIC_CREATE", IA, "sequence-locator", _topic_body(_open, "alpha")),
    _err("TOPIC_CREATE", IA, "unknown-format", _topic_body(_open, "alpha/new", fmt="protobuf")),
    _err("TOPIC_CREATE", NF, "no-session", _topic_body(_no_such, "alpha/new")),
    _err("TOPIC_CREATE", PD, "other-sequence", _topic_body(_open, "beta/new")),
    _err("TOPIC_CREATE", PD, "name-prefix-only", _topic_body(_open, "alphabet/new")),
    _err("TOPIC_CREATE", FP, "finalized-session", _topic_body(_locked, "beta/new")),
    _err("TOPIC_CREATE", AE, "same-session", _topic_body(_open, "alpha/open")),
    _err("TOPIC_CREATE", AE, "leading-slash", _topic_body(_open, "/alpha/open")),
    # topic_delete
    _err("TOPIC_DELETE", IA, "bad-locator", _seq_body("alpha/open!")),
    _err("TOPIC_DELETE", NF, "no-topic", _seq_body("alpha/nosuch")),
    _err("TOPIC_DELETE", FP, "locked-session", _seq_body("beta/imu")),
    # topic notifications
    _err("TOPIC_NOTIFICATION_CREATE", IA, "unknown-type", _note("alpha/open", kind="fatal")),
    _err("TOPIC_NOTIFICATION_CREATE", IA, "sequence-locator", _note("alpha")),
    _err("TOPIC_NOTIFICATION_CREATE", NF, "no-topic", _note("alpha/nosuch")),
    _err("TOPIC_NOTIFICATION_LIST", IA, "bad-locator", _seq_body("alpha/")),
    _err("TOPIC_NOTIFICATION_LIST", NF, "no-topic", _seq_body("beta/nosuch")),
    _err("TOPIC_NOTIFICATION_PURGE", IA, "bad-locator", _seq_body("beta")),
    _err("TOPIC_NOTIFICATION_PURGE", NF, "no-topic", _seq_body("gamma/imu")),
    # query
    _err("QUERY", IA, "unknown-operator", lambda w: {"sequence": {"locator": {"$regex": "a.*"}}}),
    _err("QUERY", IA, "unknown-field", lambda w: {"topic": {"colour": {"$eq": "red"}}}),
    _err("QUERY", IA, "empty-range", lambda w: {"ontology": {"imu.acc.x": {"$between": [2, 1]}}}),
    _err("QUERY", IA, "filter-not-object", lambda w: {"sequence": "alpha"}),
    # API keys
    _err("API_KEY_CREATE", IA, "unknown-permission", lambda w: {"permissions": "admin", "description": "x"}),
    _err("API_KEY_CREATE", IA, "permission-list", lambda w: {"permissions": ["read"], "description": "x"}),
    _err("API_KEY_CREATE", IA, "missing-description", lambda w: {"permissions": "read"}),
    _err("API_KEY_CREATE", IA, "expiry-not-integer",
         lambda w: {"permissions": "read", "description": "x", "expires_at_ns": "soon"}),
    _err("API_KEY_STATUS", IA, "bad-fingerprint", lambda w: {"api_key_fingerprint": "ABCDEFGH"}),
    _err("API_KEY_STATUS", NF, "no-key", lambda w: {"api_key_fingerprint": "zzzzzzzz"}),
    _err("API_KEY_REVOKE", IA, "bad-fingerprint", lambda w: {"api_key_fingerprint": w.fingerprint + "0"}),
    _err("API_KEY_REVOKE", NF, "no-key", lambda w: {"api_key_fingerprint": "zzzzzzzz"}),
    # an action outside the catalogue
    _err("UNKNOWN_ACTION", IA, "unknown-name", lambda w: {}),
]  # fmt: skip


def _wire(op: str) -> str:
    return "frobnicate" if op == "UNKNOWN_ACTION" else load_spec().operations[op].wire


def test_error_cases_cover_every_listed_error_kind() -> None:
    """Each (action, error kind) pair the catalogue lists has at least one case below."""
    spec = load_spec()
    listed = {
        (name, error.kind)
        for name, op in spec.operations.items()
        if op.kind == "action"
        for error in op.errors
    }
    assert {(c.op, c.kind.value) for c in ERROR_CASES} == listed


@pytest.mark.parametrize("case", ERROR_CASES, ids=lambda c: c.id)
def test_action_refused(h: Harness, t: Transport, case: ErrorCase) -> None:
    """The action fails with the listed kind and the server state is unchanged."""
    world = build_world(t)
    body = case.body(world)
    raw = body if isinstance(body, bytes) else encode_body(body)
    outcome = refused(h, case.kind, lambda: t.action_raw(_wire(case.op), raw))
    assert outcome.detail, "a refusal should say why"


@attrs.frozen
class Ctx:
    h: Harness
    t: Transport
    w: World


Check = Callable[[Any, Ctx], None]


@attrs.frozen
class SuccessCase:
    op: str
    label: str
    body: Callable[[World], dict[str, Any]]
    check: Check

    @property
    def id(self) -> str:
        return f"{self.op.lower()}-{self.label}"


def _check_sequence_created(value: Any, c: Ctx) -> None:
    assert value is None
    info = sequence_info(c.t, "delta")
    assert info.locator == "delta"
    assert info.user_metadata == {"robot": {"name": "r2", "arms": [1, 2]}, "n": 3}
    assert info.sessions == () and info.topics == ()
    assert "delta" in ok(c.t.list_sequences())


def _check_slash_stripped(value: Any, c: Ctx) -> None:
    assert value is None
    assert sequence_info(c.t, "zeta").locator == "zeta"
    assert "zeta" in ok(c.t.list_sequences())


def _check_session_created(value: Any, c: Ctx) -> None:
    assert set(value) == {"uuid"}
    assert str(uuid.UUID(value["uuid"])) == value["uuid"]
    session = session_of(c.t, "gamma", value["uuid"])
    assert (session.locked, session.completed_at_ns, session.topics) == (False, None, ())
    assert {s.uuid for s in sequence_info(c.t, "gamma").sessions} == {
        c.w.empty_session,
        value["uuid"],
    }


def _check_finalized(value: Any, c: Ctx) -> None:
    assert value is None
    session = session_of(c.t, "epsilon", c.w.ready_session)
    assert session.locked is True
    assert isinstance(session.completed_at_ns, int) and session.completed_at_ns > 0


def _check_session_deleted(value: Any, c: Ctx) -> None:
    assert value is None
    info = sequence_info(c.t, "alpha")
    assert info.session(c.w.open_session) is None and info.topics == ()
    failed_with(c.t.flight_info(Descriptor.for_resource("alpha/open")), E.NOT_FOUND)
    snap = c.h.model.snapshot()
    assert c.w.open_session not in snap["sessions"] and "alpha/open" not in snap["topics"]


def _check_sequence_deleted(value: Any, c: Ctx) -> None:
    assert value is None
    assert "gamma" not in ok(c.t.list_sequences())
    failed_with(c.t.flight_info(Descriptor.for_resource("gamma")), E.NOT_FOUND)
    assert c.w.empty_session not in c.h.model.snapshot()["sessions"]


def _check_sequence_notified(value: Any, c: Ctx) -> None:
    assert value is None
    items = notifications(c.t, A.SEQUENCE_NOTIFICATION_LIST, "gamma")
    assert [(n["name"], n["notification_type"], n["msg"]) for n in items] == [
        ("gamma", "error", "disk full")
    ]


def _check_sequence_listed(value: Any, c: Ctx) -> None:
    assert set(value) == {"notifications"}
    assert [(n["name"], n["notification_type"], n["msg"]) for n in value["notifications"]] == [
        ("beta", "info", "first"),
        ("beta", "error", "second"),
    ]
    stamps = [dt.datetime.fromisoformat(n["created_datetime"]) for n in value["notifications"]]
    assert all(s.tzinfo is not None for s in stamps) and stamps == sorted(stamps)


def _check_sequence_purged(value: Any, c: Ctx) -> None:
    assert value is None
    assert notifications(c.t, A.SEQUENCE_NOTIFICATION_LIST, "beta") == []
    assert len(notifications(c.t, A.TOPIC_NOTIFICATION_LIST, "beta/imu")) == 2


def _check_topic_created(value: Any, c: Ctx) -> None:
    assert set(value) == {"uuid"}
    assert str(uuid.UUID(value["uuid"])) == value["uuid"]
    info = topic_info(c.t, "alpha/camera/front")
    assert (info.serialization_format, info.ontology_tag) == ("image", "camera")
    assert info.user_metadata == {"fps": 30, "lens": {"mm": 4.5}}
    assert (info.locked, info.completed_at_ns, info.info) == (False, None, None)
    assert session_of(c.t, "alpha", c.w.open_session).topics == ("alpha/open", "alpha/camera/front")


def _check_topic_deleted(value: Any, c: Ctx) -> None:
    assert value is None
    failed_with(c.t.flight_info(Descriptor.for_resource("alpha/open")), E.NOT_FOUND)
    assert session_of(c.t, "alpha", c.w.open_session).topics == ()


def _check_topic_notified(value: Any, c: Ctx) -> None:
    assert value is None
    items = notifications(c.t, A.TOPIC_NOTIFICATION_LIST, "alpha/open")
    assert [(n["name"], n["notification_type"], n["msg"]) for n in items] == [
        ("alpha/open", "info", "camera warm")
    ]
    assert notifications(c.t, A.SEQUENCE_NOTIFICATION_LIST, "alpha") == []


def _check_topic_listed(value: Any, c: Ctx) -> None:
    assert [(n["name"], n["notification_type"], n["msg"]) for n in value["notifications"]] == [
        ("beta/imu", "info", "first"),
        ("beta/imu", "error", "second"),
    ]


def _check_topic_purged(value: Any, c: Ctx) -> None:
    assert value is None
    assert notifications(c.t, A.TOPIC_NOTIFICATION_LIST, "beta/imu") == []
    assert len(notifications(c.t, A.SEQUENCE_NOTIFICATION_LIST, "beta")) == 2


def _items(value: Any) -> list[tuple[str, list[str]]]:
    assert set(value) == {"items"}
    return sorted(
        (item["sequence"], sorted(topic["locator"] for topic in item["topics"]))
        for item in value["items"]
    )


def _check_query_metadata(value: Any, c: Ctx) -> None:
    assert _items(value) == [("alpha", ["alpha/open"]), ("gamma", [])]


def _check_query_topic(value: Any, c: Ctx) -> None:
    assert _items(value) == [("epsilon", ["epsilon/gps"])]


def _check_query_all(value: Any, c: Ctx) -> None:
    assert _items(value) == [
        ("alpha", ["alpha/open"]),
        ("beta", ["beta/imu"]),
        ("epsilon", ["epsilon/gps"]),
        ("gamma", []),
    ]


def _status(c: Ctx, fingerprint: str) -> dict[str, Any]:
    value: dict[str, Any] = ok(act(c.t, A.API_KEY_STATUS, api_key_fingerprint=fingerprint))
    assert set(value) == {"api_key_fingerprint", "description", "created_at_ns", "expires_at_ns"}
    assert value["api_key_fingerprint"] == fingerprint
    assert isinstance(value["created_at_ns"], int) and value["created_at_ns"] > 0
    return value


def _check_key_created(value: Any, c: Ctx) -> None:
    assert set(value) == {"api_key_token"}
    token = value["api_key_token"]
    assert TOKEN.fullmatch(token), token
    payload = token.split("_")[1]
    assert any(ch.isdigit() for ch in payload) and any(ch.isalpha() for ch in payload)
    fingerprint = token[-8:]
    assert fingerprint != c.w.fingerprint
    assert sorted(c.h.model.snapshot()["keys"]) == sorted([c.w.fingerprint, fingerprint])
    status = _status(c, fingerprint)
    assert (status["description"], status["expires_at_ns"]) == ("uploader", 2**62)


def _check_key_status(value: Any, c: Ctx) -> None:
    assert value == _status(c, c.w.fingerprint)
    assert (value["description"], value["expires_at_ns"]) == ("world key", None)


def _check_key_revoked(value: Any, c: Ctx) -> None:
    assert value is None
    failed_with(act(c.t, A.API_KEY_STATUS, api_key_fingerprint=c.w.fingerprint), E.NOT_FOUND)
    assert c.h.model.snapshot()["keys"] == []


def _check_version(value: Any, c: Ctx) -> None:
    assert set(value) == {"version", "semver"}
    semver = value["semver"]
    assert set(semver) == {"major", "minor", "patch", "pre"}
    assert all(type(semver[k]) is int and semver[k] >= 0 for k in ("major", "minor", "patch"))
    assert semver["pre"] is None or isinstance(semver["pre"], str)
    text = f"{semver['major']}.{semver['minor']}.{semver['patch']}"
    assert value["version"] == (text if semver["pre"] is None else f"{text}-{semver['pre']}")


SUCCESS_CASES: list[SuccessCase] = [
    SuccessCase(
        "SEQUENCE_CREATE",
        "metadata-kept-unknown-field-ignored",
        lambda w: {
            "locator": "delta",
            "user_metadata": {"robot": {"name": "r2", "arms": [1, 2]}, "n": 3},
            "comment": "ignored",
        },
        _check_sequence_created,
    ),
    SuccessCase(
        "SEQUENCE_CREATE",
        "leading-slash-stripped",
        lambda w: {"locator": "/zeta", "user_metadata": {}},
        _check_slash_stripped,
    ),
    SuccessCase("SESSION_CREATE", "uuid", lambda w: {"locator": "gamma"}, _check_session_created),
    SuccessCase(
        "SESSION_FINALIZE", "locks", lambda w: {"session_uuid": w.ready_session}, _check_finalized
    ),
    SuccessCase(
        "SESSION_DELETE",
        "cascade-to-topics",
        lambda w: {"session_uuid": w.open_session},
        _check_session_deleted,
    ),
    SuccessCase("SEQUENCE_DELETE", "gone", lambda w: {"locator": "gamma"}, _check_sequence_deleted),
    SuccessCase(
        "SEQUENCE_NOTIFICATION_CREATE",
        "listed",
        lambda w: {"locator": "gamma", "notification_type": "error", "msg": "disk full"},
        _check_sequence_notified,
    ),
    SuccessCase(
        "SEQUENCE_NOTIFICATION_LIST",
        "oldest-first",
        lambda w: {"locator": "beta"},
        _check_sequence_listed,
    ),
    SuccessCase(
        "SEQUENCE_NOTIFICATION_PURGE",
        "empty",
        lambda w: {"locator": "beta"},
        _check_sequence_purged,
    ),
    SuccessCase(
        "TOPIC_CREATE",
        "uuid-and-properties",
        lambda w: {
            "session_uuid": w.open_session,
            "locator": "alpha/camera/front",
            "serialization_format": "image",
            "ontology_tag": "camera",
            "user_metadata": {"fps": 30, "lens": {"mm": 4.5}},
        },
        _check_topic_created,
    ),
    SuccessCase("TOPIC_DELETE", "gone", lambda w: {"locator": "alpha/open"}, _check_topic_deleted),
    SuccessCase(
        "TOPIC_NOTIFICATION_CREATE",
        "listed",
        lambda w: {"locator": "alpha/open", "notification_type": "info", "msg": "camera warm"},
        _check_topic_notified,
    ),
    SuccessCase(
        "TOPIC_NOTIFICATION_LIST",
        "oldest-first",
        lambda w: {"locator": "beta/imu"},
        _check_topic_listed,
    ),
    SuccessCase(
        "TOPIC_NOTIFICATION_PURGE", "empty", lambda w: {"locator": "beta/imu"}, _check_topic_purged
    ),
    SuccessCase(
        "QUERY",
        "sequence-metadata",
        lambda w: {"sequence": {"user_metadata": {"site": {"$eq": "lab"}}}},
        _check_query_metadata,
    ),
    SuccessCase(
        "QUERY",
        "topic-tag",
        lambda w: {"topic": {"ontology_tag": {"$eq": "gps"}}},
        _check_query_topic,
    ),
    SuccessCase("QUERY", "no-filter", lambda w: {}, _check_query_all),
    SuccessCase(
        "API_KEY_CREATE",
        "token",
        lambda w: {"permissions": "write", "description": "uploader", "expires_at_ns": 2**62},
        _check_key_created,
    ),
    SuccessCase(
        "API_KEY_STATUS",
        "fields",
        lambda w: {"api_key_fingerprint": w.fingerprint},
        _check_key_status,
    ),
    SuccessCase(
        "API_KEY_REVOKE",
        "gone",
        lambda w: {"api_key_fingerprint": w.fingerprint},
        _check_key_revoked,
    ),
    SuccessCase("VERSION", "semver", lambda w: {}, _check_version),
]


def test_success_cases_cover_every_action() -> None:
    spec = load_spec()
    actions = {
        name for name, op in spec.operations.items() if op.kind == "action" and "ok" in op.outcomes
    }
    assert {c.op for c in SUCCESS_CASES} == actions


@pytest.mark.parametrize("case", SUCCESS_CASES, ids=lambda c: c.id)
def test_action_succeeds(h: Harness, t: Transport, case: SuccessCase) -> None:
    """The action answers the catalogue's response shape and has its effect."""
    world = build_world(t)
    value = ok(t.action_raw(_wire(case.op), encode_body(case.body(world))))
    case.check(value, Ctx(h, t, world))


@pytest.mark.parametrize("kind", KIND_PARAMS)
def test_revoked_key_is_refused_on_its_next_call(kind: str) -> None:
    with harness(kind, auth=True) as h:
        admin = h.transport(api_key=h.model.bootstrap_key())
        token = ok(act(admin, A.API_KEY_CREATE, permissions="read", description="r"))
        reader = h.transport(api_key=token["api_key_token"])
        assert ok(reader.list_sequences()) == []
        ok(act(admin, A.API_KEY_REVOKE, api_key_fingerprint=token["api_key_token"][-8:]))
        failed_with(reader.list_sequences(), E.PERMISSION_DENIED)
        failed_with(act(reader, A.VERSION), E.PERMISSION_DENIED)


PERMISSIONS = ("read", "write", "delete", "manage")
GUARDED_ACTIONS = sorted(
    name
    for name, op in load_spec().operations.items()
    if op.kind == "action" and op.permission != "none"
)


@pytest.mark.parametrize("kind", KIND_PARAMS)
@pytest.mark.parametrize("op", GUARDED_ACTIONS)
def test_action_permission(kind: str, op: str) -> None:
    """Keys below the catalogue's permission are refused with permission_denied and change
    nothing; a key with exactly that permission runs the action."""
    needed = load_spec().operations[op].permission
    with harness(kind, auth=True) as h:
        admin = h.transport(api_key=h.model.bootstrap_key())
        world = build_world(admin)
        tokens = {
            level: ok(act(admin, A.API_KEY_CREATE, permissions=level, description=level))[
                "api_key_token"
            ]
            for level in PERMISSIONS
        }
        case = next(c for c in SUCCESS_CASES if c.op == op)
        body = encode_body(case.body(world))
        for level in PERMISSIONS[: PERMISSIONS.index(needed)]:
            client = h.transport(api_key=tokens[level])
            refused(h, PD, partial(client.action_raw, _wire(op), body))
        ok(h.transport(api_key=tokens[needed]).action_raw(_wire(op), body))


@pytest.mark.parametrize("kind", KIND_PARAMS)
def test_authentication(kind: str) -> None:
    """With authentication on: no key is unauthenticated; a malformed, unknown, forged or
    expired key is refused; a read key reads but cannot upload."""
    with harness(kind, auth=True) as h:
        admin = h.transport(api_key=h.model.bootstrap_key())
        create_sequence(admin, "run")
        session = open_session(admin, "run")
        batches = make_batches("default", (2,))
        put_topic(admin, session, "run/imu", batches)
        other = create_topic(admin, session, "run/gps")
        read = ok(act(admin, A.API_KEY_CREATE, permissions="read", description="r"))
        expired = ok(
            act(admin, A.API_KEY_CREATE, permissions="manage", description="old", expires_at_ns=1)
        )
        token = read["api_key_token"]
        forged = token[:5] + ("a" if token[5] != "a" else "b") + token[6:]
        cases = [
            (None, E.UNAUTHENTICATED),
            ("not-a-token", PD),
            ("msco_" + "a1" * 16 + "_zzzzzzzz", PD),
            (forged, PD),
            (expired["api_key_token"], PD),
        ]
        for key, kind_ in cases:
            client = h.transport(api_key=key)
            refused(h, kind_, client.list_sequences)
            refused(h, kind_, partial(act, client, A.VERSION))
            refused(h, kind_, partial(client.flight_info, Descriptor.for_resource("run")))
            refused(h, kind_, partial(act, client, A.SEQUENCE_DELETE, locator="run"))
        reader = h.transport(api_key=token)
        assert ok(reader.list_sequences()) == ["run"]
        assert_same_data(read_topic(reader, "run/imu"), batches)
        refused(h, PD, lambda: put(reader, "run/gps", other, batches))
        assert model_topic(h, "run/gps")["chunks"] == 0
        assert set(ok(act(reader, A.VERSION))) == {"version", "semver"}


# ---------------------------------------------------------------------------------------------
# 2. DoPut -> GetFlightInfo -> DoGet round trips


@pytest.mark.parametrize(
    ("fmt", "tag"), [("default", "imu"), ("ragged", "lidar"), ("image", "camera")]
)
def test_round_trip_is_exact(t: Transport, fmt: str, tag: str) -> None:
    create_sequence(t, "run")
    session = open_session(t, "run")
    batches = make_batches(fmt, (5, 1, 8, 3), seed=len(fmt))
    put_topic(t, session, f"run/{tag}", batches, fmt=fmt, tag=tag)
    assert_same_data(read_topic(t, f"run/{tag}"), batches)


def test_large_image_round_trip(t: Transport) -> None:
    """VGA frames in batches of up to 12 (about 11 MB, above the SDK's 10 MiB batch target)
    come back unchanged."""
    create_sequence(t, "run")
    session = open_session(t, "run")
    rng = random.Random(7)
    batches = []
    for index, size in enumerate((12, 2)):
        stamps = [index * 100 + k for k in range(size)]
        batch = image_batch(rng, stamps)
        frames = [rng.randbytes(640 * 480 * 3) for _ in stamps]
        batches.append(batch.set_column(4, "data", pa.array(frames, pa.binary())))
    put_topic(t, session, "run/cam", batches, fmt="image", tag="camera")
    assert_same_data(read_topic(t, "run/cam"), batches)


def test_nan_payloads_round_trip_bit_for_bit(t: Transport) -> None:
    create_sequence(t, "run")
    session = open_session(t, "run")
    bits = [0x7FF8000000000000, 0x7FF8000000000001, 0xFFF0000000000123, 0x8000000000000000]
    schema = pa.schema([pa.field("timestamp_ns", pa.int64(), nullable=False), ("v", pa.float64())])
    raw = pa.array([b - 2**64 if b >= 2**63 else b for b in bits], pa.int64())
    batch = pa.record_batch([pa.array([1, 2, 3, 4], pa.int64()), raw.view(pa.float64())], schema)
    put_topic(t, session, "run/nan", [batch])
    got = read_topic(t, "run/nan").column("v").combine_chunks().view(pa.int64())
    assert got.equals(raw)


def test_empty_stream_locks_topic_without_data(t: Transport) -> None:
    create_sequence(t, "run")
    session = open_session(t, "run")
    topic_uuid = create_topic(t, session, "run/imu")
    stream = open_put(t, "run/imu", topic_uuid, DEFAULT_SCHEMA)
    assert ok(stream.close()) is None
    info = topic_info(t, "run/imu")
    assert info.locked is True and info.info is not None
    assert (info.info.chunks_number, info.info.start_ns, info.info.end_ns) == (0, None, None)
    table = read_topic(t, "run/imu")
    assert table.num_rows == 0
    assert plain(table).schema.equals(DEFAULT_SCHEMA)


@pytest.mark.parametrize("kind", KIND_PARAMS)
@settings(max_examples=profile_examples(2 / 3))
@given(
    sizes=st.lists(st.integers(1, 12), min_size=1, max_size=4),
    seed=st.integers(0, 2**32),
    fmt=st.sampled_from(sorted(MAKERS)),
)
def test_round_trip_any_batches(kind: str, sizes: list[int], seed: int, fmt: str) -> None:
    """Whatever the batch sizes and values, the read-back equals the write, in write order."""
    with harness(kind) as h:
        t = h.transport()
        create_sequence(t, "prop")
        session = open_session(t, "prop")
        batches = make_batches(fmt, sizes, seed=seed, base=seed)
        put_topic(t, session, "prop/data", batches, fmt=fmt)
        assert_same_data(read_topic(t, "prop/data"), batches)
        assert model_topic(h, "prop/data")["chunks"] == len(batches)


stamp = st.integers(-50, 1_050)


@pytest.mark.parametrize("kind", KIND_PARAMS)
@settings(max_examples=profile_examples(5 / 6))
@given(
    chunks=st.lists(
        st.lists(st.integers(0, 1_000), min_size=1, max_size=8), min_size=1, max_size=4
    ),
    start=st.none() | stamp,
    end=st.none() | stamp,
)
def test_time_range_read(
    kind: str, chunks: list[list[int]], start: int | None, end: int | None
) -> None:
    """A ranged read answers exactly the rows with start <= timestamp_ns < end, in order."""
    with harness(kind) as h:
        t = h.transport()
        create_sequence(t, "range")
        session = open_session(t, "range")
        rng = random.Random(len(chunks))
        batches = [default_batch(rng, stamps) for stamps in chunks]
        put_topic(t, session, "range/imu", batches)
        table = plain(read_topic(t, "range/imu", start, end))
        whole = pa.Table.from_batches(batches)
        keep = [
            i
            for i, ts in enumerate(whole.column("timestamp_ns").to_pylist())
            if (start is None or start <= ts) and (end is None or ts < end)
        ]
        assert table.schema.equals(DEFAULT_SCHEMA, check_metadata=True)
        assert table.equals(plain(whole.take(pa.array(keep, pa.int64()))))


def test_ranged_sequence_info_gives_ranged_tickets(t: Transport) -> None:
    """A time range on the sequence descriptor limits what each topic's ticket reads."""
    create_sequence(t, "run")
    session = open_session(t, "/run")
    imu = make_batches("default", (3, 3), base=0)  # stamps 2000..2020, then 1000..1020
    gps = make_batches("default", (2,), base=0, seed=4)  # stamps 1000, 1010
    put_topic(t, session, "run/imu", imu)
    put_topic(t, session, "run/gps", gps)
    info = ok(t.flight_info(Descriptor.for_resource("run", 1_005, 2_015)))
    assert isinstance(info, SequenceInfo)
    stamps = {
        tp.locator: ok(t.read(tp.ticket)).table().column("timestamp_ns").to_pylist()
        for tp in info.topics
    }
    assert stamps == {"run/imu": [2000, 2010, 1020, 1010], "run/gps": [1010]}


def test_flight_info_views(t: Transport) -> None:
    """The sequence view lists its sessions and topics; the topic view carries the topic's
    properties and schema."""
    meta = {"robot": {"id": 7}, "tags": ["a", "b"]}
    create_sequence(t, "omega", meta)
    first = open_session(t, "omega")
    imu = make_batches("default", (4, 2), seed=1)
    lidar = make_batches("ragged", (3,), seed=2)
    put_topic(t, first, "omega/imu", imu, metadata={"rate_hz": 200})
    put_topic(t, first, "omega/lidar", lidar, fmt="ragged", tag="lidar")
    ok(finalize(t, first))
    second = open_session(t, "omega")
    create_topic(t, second, "omega/cam", fmt="image", tag="camera", metadata={"fps": 30})

    info = sequence_info(t, "omega")
    assert (info.locator, info.user_metadata) == ("omega", meta)
    assert info.created_at_ns > 0
    sessions = {s.uuid: s for s in info.sessions}
    assert set(sessions) == {first, second}
    done, live = sessions[first], sessions[second]
    assert done.locked is True and isinstance(done.completed_at_ns, int)
    assert done.topics == ("omega/imu", "omega/lidar")
    assert (live.locked, live.completed_at_ns, live.topics) == (False, None, ("omega/cam",))
    assert done.created_at_ns <= live.created_at_ns

    topics = {tp.locator: tp for tp in info.topics}
    assert set(topics) == {"omega/imu", "omega/lidar", "omega/cam"}
    for locator, batches in (("omega/imu", imu), ("omega/lidar", lidar)):
        topic = topics[locator]
        assert topic.locked is True and isinstance(topic.completed_at_ns, int)
        assert topic.info is not None
        assert topic.info.chunks_number == len(batches)
        assert topic.info.total_bytes > 0
        assert (topic.info.start_ns, topic.info.end_ns) == min_max_stamp(batches)
        # The sequence's endpoint ticket reads the topic.
        assert_same_data(ok(t.read(topic.ticket)).table(), batches)
    cam = topics["omega/cam"]
    assert (cam.locked, cam.completed_at_ns, cam.info) == (False, None, None)

    view = topic_info(t, "omega/imu")
    assert view.locator == "omega/imu"
    assert (view.serialization_format, view.ontology_tag) == ("default", "imu")
    assert view.user_metadata == {"rate_hz": 200}
    assert view.locked is True and view.info == topics["omega/imu"].info
    assert view.schema is not None
    assert view.schema.remove_metadata().equals(DEFAULT_SCHEMA, check_metadata=False)
    assert view.schema.metadata[b"mosaico:context"] == b"topic"
    assert topic_info(t, "/omega/imu").locator == "omega/imu"
    camera = topic_info(t, "omega/cam")
    assert (camera.serialization_format, camera.ontology_tag) == ("image", "camera")
    assert (camera.user_metadata, camera.locked, camera.info) == ({"fps": 30}, False, None)


def test_read_errors(h: Harness, t: Transport) -> None:
    """GetFlightInfo and DoGet refusals: unknown resources, bad locators and tickets, and a
    topic that never received a stream."""
    create_sequence(t, "run")
    session = open_session(t, "run")
    create_topic(t, session, "run/never")
    put_topic(t, session, "run/imu", make_batches("default", (2,)))
    ticket = topic_info(t, "run/imu").ticket
    for locator, kind in (("nosuch", NF), ("run/nosuch", NF), ("bad name", IA), ("run/a b", IA)):
        refused(h, kind, partial(t.flight_info, Descriptor.for_resource(locator)))
    refused(h, IA, lambda: t.flight_info(Descriptor("path", path=("run",))))
    refused(h, IA, lambda: t.read(b"not a ticket"))
    refused(h, FP, lambda: t.read(topic_info(t, "run/never").ticket))
    ok(act(t, A.TOPIC_DELETE, locator="run/imu"))
    refused(h, NF, lambda: t.read(ticket))


# ---------------------------------------------------------------------------------------------
# 3. Locking rules


def test_clean_end_locks_topic_and_abort_does_not(h: Harness, t: Transport) -> None:
    create_sequence(t, "run")
    session = open_session(t, "run")
    clean = create_topic(t, session, "run/clean")
    broken = create_topic(t, session, "run/broken")
    batches = make_batches("default", (3, 2))

    stream = open_put(t, "run/broken", broken, DEFAULT_SCHEMA)
    for batch in batches:
        ok(stream.write(batch))
    wait_until(lambda: model_topic(h, "run/broken")["chunks"] == 2, "two chunks stored")
    ok(stream.abort())
    wait_until(lambda: model_topic(h, "run/broken")["state"] != "receiving", "stream cancelled")
    assert model_topic(h, "run/broken") == {
        "state": "created",
        "rows": 5,
        "chunks": 2,
        "notifications": [],
    }
    info = topic_info(t, "run/broken")
    assert (info.locked, info.completed_at_ns) == (False, None)
    failed_with(finalize(t, session), FP)

    assert ok(put(t, "run/clean", clean, batches)) is None
    info = topic_info(t, "run/clean")
    assert info.locked is True and isinstance(info.completed_at_ns, int)

    # The aborted topic takes a new stream; what the first one stored stays, in order.
    more = make_batches("default", (4,), seed=3)
    assert ok(put(t, "run/broken", broken, more)) is None
    assert_same_data(read_topic(t, "run/broken"), [*batches, *more])
    assert topic_info(t, "run/broken").locked is True
    assert ok(finalize(t, session)) is None


def test_abort_before_any_batch_locks_nothing(h: Harness, t: Transport) -> None:
    create_sequence(t, "run")
    session = open_session(t, "run")
    topic_uuid = create_topic(t, session, "run/imu")
    stream = open_put(t, "run/imu", topic_uuid, DEFAULT_SCHEMA)
    ok(stream.abort())
    wait_until(lambda: model_topic(h, "run/imu")["state"] != "receiving", "stream cancelled")
    assert model_topic(h, "run/imu")["state"] == "created"
    assert topic_info(t, "run/imu").locked is False


def test_put_to_locked_topic_is_refused_and_stores_nothing(h: Harness, t: Transport) -> None:
    create_sequence(t, "run")
    session = open_session(t, "run")
    batches = make_batches("default", (3,))
    topic_uuid = put_topic(t, session, "run/imu", batches)
    assert model_topic(h, "run/imu")["chunks"] == 1
    again = make_batches("default", (2, 2), seed=9)
    refused(h, FP, lambda: put(t, "run/imu", topic_uuid, again))
    assert model_topic(h, "run/imu")["chunks"] == 1
    assert_same_data(read_topic(t, "run/imu"), batches)
    info = topic_info(t, "run/imu").info
    assert info is not None and info.chunks_number == 1


def test_one_stream_at_a_time(h: Harness, t: Transport) -> None:
    create_sequence(t, "run")
    session = open_session(t, "run")
    topic_uuid = create_topic(t, session, "run/imu")
    first, second = make_batches("default", (2,)), make_batches("default", (3,), seed=5)
    stream = open_put(t, "run/imu", topic_uuid, DEFAULT_SCHEMA)
    ok(stream.write(first[0]))
    wait_until(lambda: model_topic(h, "run/imu")["chunks"] == 1, "the first batch stored")
    refused(h, FP, lambda: put(t, "run/imu", topic_uuid, second))
    assert ok(stream.close()) is None
    assert_same_data(read_topic(t, "run/imu"), first)


def test_write_of_mismatched_batch_is_refused(h: Harness, t: Transport) -> None:
    """A batch whose schema is not the stream's is refused promptly: invalid_argument (the
    records do not match) or aborted (a second schema mid-stream). The batches before it stay
    stored, nothing is locked and a new stream can follow."""
    create_sequence(t, "run")
    session = open_session(t, "run")
    topic_uuid = create_topic(t, session, "run/imu")
    stream = open_put(t, "run/imu", topic_uuid, DEFAULT_SCHEMA)
    good = make_batches("default", (2,))
    ok(stream.write(good[0]))
    wrong = make_batches("ragged", (2,))[0]
    # If the write hangs, aborting from this thread is the only way to end the stream.
    outcome = returns_within(10, lambda: stream.write(wrong), stream.abort)
    if outcome.is_ok:  # a refusal may surface only when the stream ends
        outcome = returns_within(10, stream.close, stream.abort)
    assert outcome.status is OutcomeStatus.FAILED, outcome
    assert outcome.kind in (E.INVALID_ARGUMENT, E.ABORTED), outcome
    wait_until(lambda: model_topic(h, "run/imu")["state"] != "receiving", "the stream ended")
    assert model_topic(h, "run/imu") == {
        "state": "created",
        "rows": 2,
        "chunks": 1,
        "notifications": [],
    }
    more = make_batches("default", (3,), seed=2)
    assert ok(put(t, "run/imu", topic_uuid, more)) is None
    assert_same_data(read_topic(t, "run/imu"), [*good, *more])


def test_topic_deleted_mid_stream_stays_deleted(h: Harness, t: Transport) -> None:
    create_sequence(t, "run")
    session = open_session(t, "run")
    topic_uuid = create_topic(t, session, "run/imu")
    stream = open_put(t, "run/imu", topic_uuid, DEFAULT_SCHEMA)
    first, second = make_batches("default", (2, 3))
    ok(stream.write(first))
    wait_until(lambda: model_topic(h, "run/imu")["chunks"] == 1, "the first batch stored")
    assert ok(act(t, A.TOPIC_DELETE, locator="run/imu")) is None
    written = stream.write(second)
    outcome = stream.close() if written.is_ok else written
    failed_with(outcome, E.NOT_FOUND)
    assert "run/imu" not in h.model.snapshot()["topics"]
    assert session_of(t, "run", session).topics == ()
    failed_with(t.flight_info(Descriptor.for_resource("run/imu")), E.NOT_FOUND)


def _stream_refusals(topic_uuid: str) -> list[tuple[str, ErrorKind, Descriptor, pa.Schema]]:
    no_time = pa.schema([("t", pa.int64()), ("v", pa.float64())])
    int32_time = pa.schema([("timestamp_ns", pa.int32()), ("v", pa.float64())])
    return [
        ("path-descriptor", IA, Descriptor("path", path=("run", "imu")), DEFAULT_SCHEMA),
        ("no-timestamp", IA, Descriptor.for_topic("run/imu", topic_uuid), no_time),
        ("int32-timestamp", IA, Descriptor.for_topic("run/imu", topic_uuid), int32_time),
        ("bad-uuid", IA, Descriptor.for_topic("run/imu", "nope"), DEFAULT_SCHEMA),
        ("bad-json", IA, Descriptor("cmd", command=b"{resource_locator"), DEFAULT_SCHEMA),
        ("no-topic", NF, Descriptor.for_topic("run/nosuch", topic_uuid), DEFAULT_SCHEMA),
        ("wrong-uuid", PD, Descriptor.for_topic("run/imu", NO_SUCH_UUID), DEFAULT_SCHEMA),
    ]


def test_put_refusals_store_nothing(h: Harness, t: Transport) -> None:
    """Each DoPut refusal of the catalogue leaves the topic as it was."""
    create_sequence(t, "run")
    session = open_session(t, "run")
    topic_uuid = create_topic(t, session, "run/imu")
    for label, kind, descriptor, schema in _stream_refusals(topic_uuid):
        if "timestamp" in label:
            batch = pa.record_batch(
                [pa.array([1, 2]).cast(schema.field(0).type), pa.array([0.5, 1.5])], schema
            )
        else:
            batch = make_batches("default", (2,))[0]
        outcome = refused(h, kind, partial(put, t, "", "", [batch], schema, descriptor))
        assert outcome.detail, label
        assert model_topic(h, "run/imu") == {
            "state": "created",
            "rows": 0,
            "chunks": 0,
            "notifications": [],
        }, label


def test_finalize_needs_topics_all_locked(h: Harness, t: Transport) -> None:
    create_sequence(t, "run")
    session = open_session(t, "run")
    refused(h, FP, lambda: finalize(t, session))
    imu = create_topic(t, session, "run/imu")
    gps = create_topic(t, session, "run/gps")
    refused(h, FP, lambda: finalize(t, session))
    ok(put(t, "run/imu", imu, make_batches("default", (2,))))
    refused(h, FP, lambda: finalize(t, session))
    ok(put(t, "run/gps", gps, make_batches("default", (1,))))
    assert ok(finalize(t, session)) is None
    state = session_of(t, "run", session)
    assert state.locked is True and isinstance(state.completed_at_ns, int)
    refused(h, FP, lambda: finalize(t, session))
    refused(h, FP, lambda: act(t, A.TOPIC_CREATE, session_uuid=session, locator="run/late",
                                serialization_format="default", ontology_tag="imu",
                                user_metadata={}))  # fmt: skip


def test_locked_things_cannot_be_deleted(h: Harness, t: Transport) -> None:
    create_sequence(t, "run")
    locked = open_session(t, "run")
    put_topic(t, locked, "run/imu", make_batches("default", (2,)))
    ok(finalize(t, locked))
    live = open_session(t, "run")
    put_topic(t, live, "run/gps", make_batches("default", (1,)))
    refused(h, FP, lambda: act(t, A.SESSION_DELETE, session_uuid=locked))
    refused(h, FP, lambda: act(t, A.TOPIC_DELETE, locator="run/imu"))
    refused(h, FP, lambda: act(t, A.SEQUENCE_DELETE, locator="run"))
    # The unlocked session and its (locked) topic can go; the sequence still cannot.
    assert ok(act(t, A.TOPIC_DELETE, locator="run/gps")) is None
    assert ok(act(t, A.SESSION_DELETE, session_uuid=live)) is None
    refused(h, FP, lambda: act(t, A.SEQUENCE_DELETE, locator="run"))
    assert [s.uuid for s in sequence_info(t, "run").sessions] == [locked]
    assert_same_data(read_topic(t, "run/imu"), make_batches("default", (2,)))


def test_session_delete_cascades_to_its_topics_only(h: Harness, t: Transport) -> None:
    create_sequence(t, "run")
    keep = open_session(t, "run")
    drop = open_session(t, "run")
    kept = make_batches("default", (2,))
    put_topic(t, keep, "run/keep", kept)
    put_topic(t, drop, "run/drop", make_batches("default", (3,)))
    create_topic(t, drop, "run/drop2")
    ok(act(t, A.TOPIC_NOTIFICATION_CREATE, locator="run/drop", notification_type="error", msg="x"))
    assert ok(act(t, A.SESSION_DELETE, session_uuid=drop)) is None
    info = sequence_info(t, "run")
    assert [s.uuid for s in info.sessions] == [keep]
    assert [tp.locator for tp in info.topics] == ["run/keep"]
    assert set(h.model.snapshot()["topics"]) == {"run/keep"}
    assert_same_data(read_topic(t, "run/keep"), kept)
    # The locators are free again, with no leftover notifications.
    again = open_session(t, "run")
    create_topic(t, again, "run/drop")
    assert notifications(t, A.TOPIC_NOTIFICATION_LIST, "run/drop") == []


def test_sequence_delete_cascades(h: Harness, t: Transport) -> None:
    create_sequence(t, "run", {"v": 1})
    create_sequence(t, "other")
    first = open_session(t, "run")
    second = open_session(t, "run")
    put_topic(t, first, "run/imu", make_batches("default", (2,)))
    create_topic(t, second, "run/cam", fmt="image", tag="camera")
    other = open_session(t, "other")
    other_data = make_batches("default", (1,))
    put_topic(t, other, "other/imu", other_data)
    ok(act(t, A.SEQUENCE_NOTIFICATION_CREATE, locator="run", notification_type="info", msg="m"))
    ok(act(t, A.TOPIC_NOTIFICATION_CREATE, locator="run/imu", notification_type="error", msg="n"))
    ticket = topic_info(t, "run/imu").ticket

    assert ok(act(t, A.SEQUENCE_DELETE, locator="run")) is None
    snap = h.model.snapshot()
    assert set(snap["sequences"]) == {"other"}
    assert set(snap["sessions"]) == {other}
    assert set(snap["topics"]) == {"other/imu"}
    assert ok(t.list_sequences()) == ["other"]
    failed_with(t.read(ticket), E.NOT_FOUND)
    failed_with(t.flight_info(Descriptor.for_resource("run/cam")), E.NOT_FOUND)
    failed_with(act(t, A.SEQUENCE_NOTIFICATION_LIST, locator="run"), E.NOT_FOUND)
    assert_same_data(read_topic(t, "other/imu"), other_data)

    # The name and the topic locators can be used again, from a clean slate.
    create_sequence(t, "run", {"v": 2})
    assert notifications(t, A.SEQUENCE_NOTIFICATION_LIST, "run") == []
    fresh = open_session(t, "run")
    create_topic(t, fresh, "run/imu")
    assert notifications(t, A.TOPIC_NOTIFICATION_LIST, "run/imu") == []
    info = sequence_info(t, "run")
    assert (info.user_metadata, [s.uuid for s in info.sessions]) == ({"v": 2}, [fresh])


def test_topic_locators_are_unique_across_sessions(h: Harness, t: Transport) -> None:
    create_sequence(t, "run")
    first = open_session(t, "run")
    put_topic(t, first, "run/imu", make_batches("default", (1,)))
    ok(finalize(t, first))
    second = open_session(t, "run")
    body = topic_args(second, "run/imu")
    refused(h, AE, lambda: t.action(A.TOPIC_CREATE, body))


# ---------------------------------------------------------------------------------------------
# 4. The Report rule: an error reported while a session is open leaves it unlocked


def _session_with_data(t: Transport, sequence: str) -> str:
    session = open_session(t, sequence)
    put_topic(t, session, f"{sequence}/imu", make_batches("default", (2,)))
    return session


def _report(t: Transport, sequence: str, kind: str = "error") -> None:
    ok(act(t, A.SEQUENCE_NOTIFICATION_CREATE, locator=sequence, notification_type=kind, msg="x"))


def test_report_then_finalize_leaves_session_unlocked(h: Harness, t: Transport) -> None:
    create_sequence(t, "run")
    session = _session_with_data(t, "run")
    _report(t, "run")
    assert ok(finalize(t, session)) is None
    state = session_of(t, "run", session)
    assert isinstance(state.completed_at_ns, int) and state.completed_at_ns > 0
    assert state.locked is False
    refused(h, FP, lambda: finalize(t, session))
    refused(h, FP, lambda: act(t, A.TOPIC_CREATE, session_uuid=session, locator="run/late",
                                serialization_format="default", ontology_tag="imu",
                                user_metadata={}))  # fmt: skip
    assert ok(act(t, A.SESSION_DELETE, session_uuid=session)) is None
    assert sequence_info(t, "run").sessions == ()
    assert ok(act(t, A.SEQUENCE_DELETE, locator="run")) is None


def test_reported_finalized_sequence_can_be_deleted(t: Transport) -> None:
    create_sequence(t, "run")
    session = _session_with_data(t, "run")
    _report(t, "run")
    ok(finalize(t, session))
    assert ok(act(t, A.SEQUENCE_DELETE, locator="run")) is None
    assert ok(t.list_sequences()) == []


def test_clean_finalize_locks(h: Harness, t: Transport) -> None:
    create_sequence(t, "run")
    session = _session_with_data(t, "run")
    _report(t, "run", kind="info")  # an info notification is not an error report
    ok(finalize(t, session))
    state = session_of(t, "run", session)
    assert state.locked is True and isinstance(state.completed_at_ns, int)
    refused(h, FP, lambda: act(t, A.SESSION_DELETE, session_uuid=session))


def test_report_marks_only_sessions_open_at_that_time(h: Harness, t: Transport) -> None:
    create_sequence(t, "run")
    done = open_session(t, "run")
    put_topic(t, done, "run/a", make_batches("default", (1,)))
    ok(finalize(t, done))
    open_one = open_session(t, "run")
    put_topic(t, open_one, "run/b", make_batches("default", (1,)))
    open_two = open_session(t, "run")
    put_topic(t, open_two, "run/c", make_batches("default", (1,)))
    _report(t, "run")
    later = open_session(t, "run")
    put_topic(t, later, "run/d", make_batches("default", (1,)))
    for session in (open_one, open_two, later):
        ok(finalize(t, session))
    locked = {s.uuid: s.locked for s in sequence_info(t, "run").sessions}
    # A finalized session keeps its lock; both open ones were reported; the later one is clean.
    assert locked == {done: True, open_one: False, open_two: False, later: True}


def test_report_on_another_sequence_does_not_count(t: Transport) -> None:
    create_sequence(t, "run")
    create_sequence(t, "other")
    session = _session_with_data(t, "run")
    _report(t, "other")
    ok(finalize(t, session))
    assert session_of(t, "run", session).locked is True


# ---------------------------------------------------------------------------------------------
# 5. Concurrency


def test_concurrent_uploads(h: Harness, t: Transport) -> None:
    """Several threads each write their own sequence through one transport at the same time;
    every one succeeds and reads back exactly."""
    workers = 6
    barrier = threading.Barrier(workers)

    def upload(index: int) -> dict[str, list[pa.RecordBatch]]:
        name = f"par{index}"
        create_sequence(t, name, {"worker": index})
        session = open_session(t, name)
        written = {
            f"{name}/imu": make_batches("default", (4, 3, 5, 2), seed=index),
            f"{name}/scan": make_batches("ragged", (2, 6, 1, 3), seed=100 + index),
        }
        fmts = {f"{name}/imu": "default", f"{name}/scan": "ragged"}
        streams = {}
        for locator, batches in written.items():
            topic_uuid = create_topic(t, session, locator, fmt=fmts[locator])
            streams[locator] = open_put(t, locator, topic_uuid, batches[0].schema)
        barrier.wait(timeout=30)
        for step in range(4):  # interleave the two streams
            for locator, stream in streams.items():
                ok(stream.write(written[locator][step]))
        for stream in streams.values():
            assert ok(stream.close()) is None
        assert ok(finalize(t, session)) is None
        return written

    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(upload, range(workers)))

    assert sorted(ok(t.list_sequences())) == sorted(f"par{i}" for i in range(workers))
    for index, written in enumerate(results):
        info = sequence_info(t, f"par{index}")
        assert info.user_metadata == {"worker": index}
        assert [s.locked for s in info.sessions] == [True]
        for locator, batches in written.items():
            assert model_topic(h, locator)["chunks"] == len(batches)
            assert_same_data(read_topic(t, locator), batches)


def test_concurrent_creates_of_one_name_admit_one(t: Transport) -> None:
    """Racing creates of one sequence: exactly one wins, the others see already_exists."""
    barrier = threading.Barrier(8)

    def create(_: int) -> Outcome:
        barrier.wait(timeout=30)
        return act(t, A.SEQUENCE_CREATE, locator="race", user_metadata={})

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(create, range(8)))
    assert sum(o.is_ok for o in outcomes) == 1
    for outcome in outcomes:
        if not outcome.is_ok:
            failed_with(outcome, E.ALREADY_EXISTS)


# ---------------------------------------------------------------------------------------------
# 6. ListFlights


def test_list_sequences(h: Harness, t: Transport) -> None:
    assert ok(t.list_sequences()) == []
    for name in ("b", "a", "c1", "/slashed"):
        create_sequence(t, name)
    expected = ["a", "b", "c1", "slashed"]
    assert sorted(ok(t.list_sequences())) == expected
    assert sorted(ok(t.list_sequences(b"/"))) == expected
    for criteria in (b"a", b"*", b"//", b" ", b"{}"):
        refused(h, IA, partial(t.list_sequences, criteria))
    ok(act(t, A.SEQUENCE_DELETE, locator="b"))
    assert sorted(ok(t.list_sequences())) == ["a", "c1", "slashed"]


# ---------------------------------------------------------------------------------------------
# Views, streams and bookkeeping that must not depend on the transport


@pytest.mark.flight
def test_both_transports_give_equal_views_of_one_server() -> None:
    """One server model read in memory and over Flight: the sequence view, whose topic
    entries carry no properties or metadata on either transport, and each topic's own view
    (which does) are equal, with and without a time range."""
    with harness("flight") as h:
        assert h.server is not None
        memory = MemoryTransport(h.model)
        flight = h.transport()
        create_sequence(flight, "run", {"robot": "r1"})
        session = open_session(flight, "run")
        put_topic(flight, session, "run/imu", make_batches("default", (3, 2)), metadata={"k": 1})
        create_topic(flight, session, "run/gps", tag="gps", metadata={"k": 2})
        for start, end in ((None, None), (1, None), (None, 2)):
            descriptor = Descriptor.for_resource("run", start, end)
            seen = ok(memory.flight_info(descriptor))
            assert isinstance(seen, SequenceInfo)
            assert [t.locator for t in seen.topics] == ["run/imu", "run/gps"]
            for entry in seen.topics:
                assert (entry.ontology_tag, entry.serialization_format) == (None, None)
                assert (entry.user_metadata, entry.schema) == (None, None)
            assert ok(flight.flight_info(descriptor)) == seen
            for locator in ("run/imu", "run/gps"):
                descriptor = Descriptor.for_resource(locator, start, end)
                view = ok(memory.flight_info(descriptor))
                assert view.ontology_tag in ("imu", "gps")
                assert ok(flight.flight_info(descriptor)) == view


def test_a_cleanly_closed_stream_has_no_failure(h: Harness, t: Transport) -> None:
    """After a clean close `failure` stays None (the stream did not fail); a further write or
    close answers failed_precondition."""
    create_sequence(t, "run")
    session = open_session(t, "run")
    topic_uuid = create_topic(t, session, "run/imu")
    stream = open_put(t, "run/imu", topic_uuid, DEFAULT_SCHEMA)
    ok(stream.write(make_batches("default", (2,))[0]))
    assert stream.failure is None
    assert ok(stream.close()) is None
    assert stream.failure is None
    failed_with(stream.write(make_batches("default", (2,))[0]), E.FAILED_PRECONDITION)
    failed_with(stream.close(), E.FAILED_PRECONDITION)
    assert stream.failure is None
    ok(stream.abort())
    assert stream.failure is None
    assert model_topic(h, "run/imu")["state"] == "locked"


def test_a_refused_close_is_the_stream_failure(h: Harness, t: Transport) -> None:
    """A close the server refuses is a failure, which `failure` then reports."""
    create_sequence(t, "run")
    session = open_session(t, "run")
    topic_uuid = create_topic(t, session, "run/imu")
    stream = open_put(t, "run/imu", topic_uuid, DEFAULT_SCHEMA)
    ok(stream.write(make_batches("default", (2,))[0]))
    wait_until(lambda: model_topic(h, "run/imu")["chunks"] == 1, "the batch stored")
    ok(act(t, A.TOPIC_DELETE, locator="run/imu"))
    failed_with(stream.close(), E.NOT_FOUND)
    assert stream.failure is not None
    assert stream.failure.kind is E.NOT_FOUND


@pytest.mark.parametrize("tracing", [False, True], ids=["untraced", "traced"])
def test_deleted_sessions_are_remembered_only_while_tracing(h: Harness, tracing: bool) -> None:
    """A long-running server forgets deleted sessions; only a tracing one keeps, per deleted
    session, the name of its sequence, so later requests naming it are still attributed."""
    if tracing:
        h.model.trace = ServerTrace()
    t = h.transport()
    create_sequence(t, "run")
    gone = [open_session(t, "run") for _ in range(5)]
    for session in gone:
        ok(act(t, A.SESSION_DELETE, session_uuid=session))
    create_sequence(t, "other")
    doomed = open_session(t, "other")
    ok(act(t, A.SEQUENCE_DELETE, locator="other"))
    remembered = h.model.state.gone_sessions
    if not tracing:
        assert remembered == {}
        return
    assert remembered == {**dict.fromkeys(gone, "run"), doomed: "other"}
    failed_with(act(t, A.SESSION_FINALIZE, session_uuid=gone[0]), E.NOT_FOUND)
    assert h.model.trace is not None
    assert h.model.trace.events[-1]["sequence"] == "run"
