"""Fault plans, applied by the in-memory transport and, over real Flight, by the reference
server: each effect, call counting, and seeded random faults that replay identically."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pytest

from fsm.enums import FlightAction
from fsm.errors import ArgumentError
from fsm.faults import Fault, FaultEffect, FaultPlan, FaultSchedule, fault_operations
from fsm.outcome import ErrorKind, Outcome, OutcomeStatus
from fsm.transport import Descriptor, Transport
from tests.harness import (
    KIND_PARAMS,
    KINDS,
    SCHEMA,
    Harness,
    batch,
    create_sequence,
    create_topic,
    failed_with,
    harness,
    ok,
    topic_args,
)
from transport.server.trace import ServerTrace


def unknown(outcome: Outcome) -> None:
    assert outcome.status is OutcomeStatus.UNKNOWN, outcome


@pytest.fixture(params=KIND_PARAMS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def stream_verdict(
    t: Transport, locator: str, topic_uuid: str, batches: list[pa.RecordBatch]
) -> Outcome:
    """Open, write `batches`, close: the first outcome that is not ok, or the close's.

    Over Flight a refusal reaches the client at the next write or at the close, not always at
    the call the server refused, so a stream is judged by its first non-ok outcome.
    """
    opened = t.open_stream(Descriptor.for_topic(locator, topic_uuid), SCHEMA)
    if not opened.is_ok:
        return opened
    stream = opened.value
    for b in batches:
        written = stream.write(b)
        if not written.is_ok:
            return written
    return stream.close()


def topic_view(h: Harness, locator: str) -> dict[str, Any]:
    return dict(h.model.snapshot()["topics"][locator])


def injected(outcome: Outcome, operation: str) -> None:
    """The outcome carries the server's (or transport's) fault message."""
    assert f"injected fault {operation}#" in outcome.detail, outcome


# ---------------------------------------------------------------------------------------------
# Plans as JSON


def test_plan_json_round_trip(kind: str) -> None:
    """to_json/from_json and dumps/loads give back an equal plan, which then acts the same."""
    plan = FaultPlan(
        faults=(
            Fault("SEQUENCE_CREATE", 2, FaultEffect.FAIL, ErrorKind.ALREADY_EXISTS),
            Fault("SESSION_CREATE", 1, FaultEffect.LOSE_REPLY),
            Fault("STREAM_WRITE", 3, FaultEffect.DROP_STREAM, ErrorKind.CANCELLED),
        ),
        seed=42,
        rate=0.25,
        random_operations=("LIST_FLIGHTS", "STREAM_CLOSE"),
        random_effects=(FaultEffect.FAIL, FaultEffect.DROP_STREAM),
        random_kinds=(ErrorKind.INTERNAL, ErrorKind.NOT_FOUND),
    )
    raw = plan.to_json()
    assert json.loads(json.dumps(raw)) == raw
    assert raw["faults"][0] == {
        "operation": "SEQUENCE_CREATE",
        "nth": 2,
        "effect": "fail",
        "kind": "already_exists",
    }
    assert raw["random_effects"] == ["fail", "drop_stream"]
    assert FaultPlan.from_json(raw) == plan
    text = plan.dumps()
    assert json.loads(text) == raw
    assert list(json.loads(text)) == sorted(raw)
    reloaded = FaultPlan.loads(text)
    assert reloaded == plan
    assert reloaded.dumps() == text

    with harness(kind, faults=reloaded) as h:
        t = h.transport()
        ok(t.action(FlightAction.SEQUENCE_CREATE, {"locator": "a", "user_metadata": {}}))
        refused = t.action(FlightAction.SEQUENCE_CREATE, {"locator": "b", "user_metadata": {}})
        failed_with(refused, ErrorKind.ALREADY_EXISTS)
        assert sorted(h.model.sequences) == ["a"]


def test_plan_json_defaults() -> None:
    """Missing keys take the documented defaults: nth 1, fail, internal, no random faults."""
    plan = FaultPlan.loads('{"faults": [{"operation": "VERSION"}]}')
    assert plan == FaultPlan((Fault("VERSION", 1, FaultEffect.FAIL, ErrorKind.INTERNAL),))
    assert plan.rate == 0.0
    assert plan.random_fault("VERSION", 1) is None
    assert FaultPlan.loads("{}") == FaultPlan()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Fault("VERSION", 0), "nth must be an integer >= 1"),
        (lambda: Fault("SEQUENCE_CREATE", 1, FaultEffect.DROP_STREAM), "drop_stream applies"),
        (lambda: FaultPlan(rate=1.5), "rate must be within"),
        (lambda: FaultPlan(rate=-0.1), "rate must be within"),
        (
            lambda: FaultPlan.loads('{"faults": [{"operation": "VERSION", "effect": "explode"}]}'),
            "'explode' is not one of fail, lose_reply, lose_request, drop_stream",
        ),
        (
            lambda: FaultPlan.loads('{"faults": [{"operation": "VERSION", "kind": "oops"}]}'),
            "'oops' is not one of",
        ),
        (lambda: Fault("SESSION_FINISH"), "no such operation in the catalogue: 'SESSION_FINISH'"),
        (lambda: Fault("stream_write"), "no such operation in the catalogue: 'stream_write'"),
        (lambda: Fault("DO_PUT"), "DO_PUT cannot be faulted"),
        (lambda: Fault("STREAM_ABORT", 1, FaultEffect.DROP_STREAM), "cannot be faulted"),
        (
            lambda: FaultPlan(rate=0.5, random_operations=("VERSION", "VERSOIN")),
            "random_operations: no such operation in the catalogue: 'VERSOIN'",
        ),
        (
            lambda: FaultPlan(rate=0.5, random_operations=("VERSION",), random_kinds=()),
            "need at least one random kind",
        ),
        (
            lambda: FaultPlan(rate=0.5, random_operations=("VERSION",), random_effects=()),
            "need at least one random effect",
        ),
        (lambda: FaultPlan(rate=0.5), "need random_operations"),
        (
            lambda: FaultPlan.loads('{"rate": 0.5, "random_operations": ["SEQUENCE_CREAT"]}'),
            "no such operation in the catalogue: 'SEQUENCE_CREAT'",
        ),
        (
            lambda: FaultPlan.loads('{"random_operations": "VERSION"}'),
            "random_operations must be a list",
        ),
        (lambda: FaultPlan.loads('{"faults": [{"nth": 2}]}'), "a fault needs an operation"),
        (
            lambda: FaultPlan.loads('{"faults": [{"operation": "VERSION", "nth": "2"}]}'),
            "nth must be an integer",
        ),
        (lambda: FaultPlan.loads("{not json"), "a fault plan must be JSON"),
        (lambda: FaultPlan.loads("[]"), "a fault plan must be a JSON object"),
    ],
    ids=[
        "nth-0",
        "drop-on-action",
        "rate-high",
        "rate-negative",
        "bad-effect",
        "bad-kind",
        "unknown-operation",
        "lowercase-operation",
        "do-put",
        "stream-abort",
        "unknown-random-operation",
        "no-random-kinds",
        "no-random-effects",
        "rate-without-operations",
        "unknown-random-operation-json",
        "random-operations-not-a-list",
        "no-operation-json",
        "nth-not-an-integer",
        "not-json",
        "not-an-object",
    ],
)
def test_bad_plans_are_refused(make: Callable[[], object], message: str) -> None:
    """A fault that cannot happen (or would never fire) is refused when the plan is built or
    loaded, with an ArgumentError that says why."""
    with pytest.raises(ArgumentError) as caught:
        make()
    assert message in str(caught.value)


def test_every_operation_the_transports_count_can_be_faulted() -> None:
    """The operations a fault may name are those of the catalogue the transports count."""
    operations = fault_operations()
    assert {"SEQUENCE_CREATE", "GET_FLIGHT_INFO", "DO_GET", "LIST_FLIGHTS"} <= operations
    assert {"STREAM_OPEN", "STREAM_WRITE", "STREAM_CLOSE", "UNKNOWN_ACTION"} <= operations
    assert not {"DO_PUT", "STREAM_ABORT", "UNSUPPORTED_RPC"} & operations
    for operation in operations:
        Fault(operation)


def test_a_schedule_counts_calls_without_faults() -> None:
    """A schedule counts calls as documented, also when its plan has no fault."""
    schedule = FaultSchedule()
    assert schedule.next("VERSION") is None
    assert schedule.next("VERSION") is None
    assert schedule.next("LIST_FLIGHTS") is None
    assert schedule.counts() == {"VERSION": 2, "LIST_FLIGHTS": 1}


# ---------------------------------------------------------------------------------------------
# fail and lose_reply on actions


def _setup(t: Transport) -> dict[str, str]:
    """A sequence 's' with an open session holding one locked topic 's/a'."""
    session = create_sequence(t, "s")
    topic_uuid = create_topic(t, session, "s/a")
    ok(stream_verdict(t, "s/a", topic_uuid, [batch(0)]))
    return {"session": session}


SETUP_CALLS = {"SEQUENCE_CREATE": 1, "SESSION_CREATE": 1, "TOPIC_CREATE": 1}
"""Calls `_setup` makes of each operation: a planned fault targets the call after them."""


ACTIONS: dict[str, Callable[[Transport, dict[str, str]], Outcome]] = {
    "SEQUENCE_CREATE": lambda t, c: t.action(
        FlightAction.SEQUENCE_CREATE, {"locator": "s2", "user_metadata": {}}
    ),
    "SESSION_CREATE": lambda t, c: t.action(FlightAction.SESSION_CREATE, {"locator": "s"}),
    "TOPIC_CREATE": lambda t, c: t.action(
        FlightAction.TOPIC_CREATE,
        {
            "session_uuid": c["session"],
            "locator": "s/b",
            "serialization_format": "default",
            "ontology_tag": "gps",
            "user_metadata": {},
        },
    ),
    "SESSION_FINALIZE": lambda t, c: t.action(
        FlightAction.SESSION_FINALIZE, {"session_uuid": c["session"]}
    ),
    "SESSION_DELETE": lambda t, c: t.action(
        FlightAction.SESSION_DELETE, {"session_uuid": c["session"]}
    ),
    "SEQUENCE_DELETE": lambda t, c: t.action(FlightAction.SEQUENCE_DELETE, {"locator": "s"}),
    "TOPIC_DELETE": lambda t, c: t.action(FlightAction.TOPIC_DELETE, {"locator": "s/a"}),
    "SEQUENCE_NOTIFICATION_CREATE": lambda t, c: t.action(
        FlightAction.SEQUENCE_NOTIFICATION_CREATE,
        {"locator": "s", "notification_type": "error", "msg": "boom"},
    ),
    "TOPIC_NOTIFICATION_CREATE": lambda t, c: t.action(
        FlightAction.TOPIC_NOTIFICATION_CREATE,
        {"locator": "s/a", "notification_type": "error", "msg": "boom"},
    ),
    "API_KEY_CREATE": lambda t, c: t.action(
        FlightAction.API_KEY_CREATE, {"permissions": "read", "description": "k"}
    ),
}
FAIL_KINDS = [
    ErrorKind.INTERNAL,
    ErrorKind.NOT_FOUND,
    ErrorKind.ALREADY_EXISTS,
    ErrorKind.FAILED_PRECONDITION,
    ErrorKind.PERMISSION_DENIED,
    ErrorKind.INVALID_ARGUMENT,
    ErrorKind.UNAUTHENTICATED,
    ErrorKind.CANCELLED,
    ErrorKind.ABORTED,
    ErrorKind.UNIMPLEMENTED,
]


@pytest.mark.parametrize(
    ("operation", "error"),
    [(op, FAIL_KINDS[i % len(FAIL_KINDS)]) for i, op in enumerate(ACTIONS)],
    ids=list(ACTIONS),
)
def test_fail_is_not_applied(kind: str, operation: str, error: ErrorKind) -> None:
    """`fail`: the call is refused with the plan's kind and the server state is unchanged."""
    nth = SETUP_CALLS.get(operation, 0) + 1
    with harness(kind, faults=FaultPlan((Fault(operation, nth, FaultEffect.FAIL, error),))) as h:
        t = h.transport()
        context = _setup(t)
        before = h.model.snapshot()
        outcome = ACTIONS[operation](t, context)
        failed_with(outcome, error)
        injected(outcome, operation)
        assert h.model.snapshot() == before
        # Only the first call was planned: the same call now goes through.
        ok(ACTIONS[operation](t, context))
        assert h.model.snapshot() != before


@pytest.mark.parametrize("operation", list(ACTIONS))
def test_lose_reply_is_applied(kind: str, operation: str) -> None:
    """`lose_reply`: the server applies the call, the client sees unknown."""
    nth = SETUP_CALLS.get(operation, 0) + 1
    with harness(kind, faults=FaultPlan((Fault(operation, nth, FaultEffect.LOSE_REPLY),))) as h:
        t = h.transport()
        context = _setup(t)
        before = h.model.snapshot()
        outcome = ACTIONS[operation](t, context)
        unknown(outcome)
        injected(outcome, operation)
        after = h.model.snapshot()
        assert after != before
    # The change is the one the call makes when its reply arrives.
    with harness(kind) as h2:
        t2 = h2.transport()
        context2 = _setup(t2)
        ok(ACTIONS[operation](t2, context2))
        assert h2.model.snapshot() == after


@pytest.mark.parametrize("operation", list(ACTIONS))
def test_lose_request_is_not_applied(kind: str, operation: str) -> None:
    """`lose_request`: the client sees unknown, the server applied nothing and saw nothing."""
    nth = SETUP_CALLS.get(operation, 0) + 1
    plan = FaultPlan((Fault(operation, nth, FaultEffect.LOSE_REQUEST),))
    with harness(kind, faults=plan) as h:
        h.model.trace = ServerTrace()
        t = h.transport()
        context = _setup(t)
        before, seen = h.model.snapshot(), len(h.model.trace.events)
        outcome = ACTIONS[operation](t, context)
        unknown(outcome)
        injected(outcome, operation)
        assert h.model.snapshot() == before
        assert len(h.model.trace.events) == seen, "the server saw the lost request"
        ok(ACTIONS[operation](t, context))
        assert h.model.snapshot() != before


def test_lose_request_on_open_opens_nothing(kind: str) -> None:
    """A lost STREAM_OPEN: unknown, no stream on the server; the next stream works."""
    plan = FaultPlan((Fault("STREAM_OPEN", 1, FaultEffect.LOSE_REQUEST),))
    with harness(kind, faults=plan) as h:
        t = h.transport()
        topic_uuid = _topic(t)
        unknown(stream_verdict(t, "st/imu", topic_uuid, [batch(0)]))
        assert topic_view(h, "st/imu")["state"] == "created"
        assert topic_view(h, "st/imu")["chunks"] == 0
        ok(stream_verdict(t, "st/imu", topic_uuid, [batch(0, 2)]))
        assert topic_view(h, "st/imu")["state"] == "locked"


@pytest.mark.parametrize("operation", ["STREAM_WRITE", "STREAM_CLOSE"])
def test_lose_request_on_a_stream_breaks_it_unapplied(kind: str, operation: str) -> None:
    """A lost write or close: unknown, the batch is not stored, nothing is locked."""
    plan = FaultPlan(
        (Fault(operation, 2 if operation == "STREAM_WRITE" else 1, FaultEffect.LOSE_REQUEST),)
    )
    with harness(kind, faults=plan) as h:
        t = h.transport()
        topic_uuid = _topic(t)
        unknown(stream_verdict(t, "st/imu", topic_uuid, [batch(0), batch(2)]))
        view = topic_view(h, "st/imu")
        assert view["state"] == "created"
        assert view["chunks"] == (1 if operation == "STREAM_WRITE" else 2)


def test_lose_reply_on_session_create_leaves_an_unknown_session(kind: str) -> None:
    """A lost SESSION_CREATE reply: the session exists, the client never learned its UUID."""
    plan = FaultPlan((Fault("SESSION_CREATE", 1, FaultEffect.LOSE_REPLY),))
    with harness(kind, faults=plan) as h:
        t = h.transport()
        ok(t.action(FlightAction.SEQUENCE_CREATE, {"locator": "lr", "user_metadata": {}}))
        outcome = t.action(FlightAction.SESSION_CREATE, {"locator": "lr"})
        unknown(outcome)
        assert outcome.value is None
        info = ok(t.flight_info(Descriptor.for_resource("lr")))
        assert len(info.sessions) == 1
        assert info.sessions[0].locked is False


# ---------------------------------------------------------------------------------------------
# Stream faults


def _topic(t: Transport) -> str:
    session = create_sequence(t, "st")
    return create_topic(t, session, "st/imu")


def test_drop_stream_on_write_keeps_earlier_chunks(kind: str) -> None:
    """`drop_stream` on the 2nd write: the stream breaks (cancelled), the topic stays
    unlocked, the first chunk stays stored; a new stream can then finish the topic."""
    plan = FaultPlan((Fault("STREAM_WRITE", 2, FaultEffect.DROP_STREAM),))
    with harness(kind, faults=plan) as h:
        t = h.transport()
        topic_uuid = _topic(t)
        outcome = stream_verdict(t, "st/imu", topic_uuid, [batch(0, 3), batch(3, 4), batch(7)])
        failed_with(outcome, ErrorKind.CANCELLED)
        assert topic_view(h, "st/imu") == {
            "state": "created",
            "rows": 3,
            "chunks": 1,
            "notifications": [],
        }
        assert ok(t.flight_info(Descriptor.for_resource("st/imu"))).locked is False
        ok(stream_verdict(t, "st/imu", topic_uuid, [batch(10, 1)]))
        assert topic_view(h, "st/imu")["state"] == "locked"
        assert topic_view(h, "st/imu")["rows"] == 4
        assert h.schedule is not None
        assert [f.describe() for f in h.schedule.fired] == ["STREAM_WRITE#2:drop_stream"]


def test_broken_stream_stays_broken(kind: str) -> None:
    """After a dropped write, further writes and the close fail; nothing more is stored."""
    plan = FaultPlan((Fault("STREAM_WRITE", 1, FaultEffect.DROP_STREAM),))
    with harness(kind, faults=plan) as h:
        t = h.transport()
        topic_uuid = _topic(t)
        stream = ok(t.open_stream(Descriptor.for_topic("st/imu", topic_uuid), SCHEMA))
        outcomes = [stream.write(batch(0)), stream.write(batch(2)), stream.close()]
        assert outcomes[-1].status is OutcomeStatus.FAILED
        first_failure = next(o for o in outcomes if not o.is_ok)
        failed_with(first_failure, ErrorKind.CANCELLED)
        assert topic_view(h, "st/imu")["state"] == "created"
        assert topic_view(h, "st/imu")["chunks"] == 0


def test_fail_on_write_cancels_the_stream(kind: str) -> None:
    """`fail` on a write: the write is refused with the kind, the stream breaks unlocked."""
    plan = FaultPlan((Fault("STREAM_WRITE", 2, FaultEffect.FAIL, ErrorKind.INTERNAL),))
    with harness(kind, faults=plan) as h:
        t = h.transport()
        topic_uuid = _topic(t)
        outcome = stream_verdict(t, "st/imu", topic_uuid, [batch(0), batch(2), batch(4)])
        failed_with(outcome, ErrorKind.INTERNAL)
        injected(outcome, "STREAM_WRITE")
        assert topic_view(h, "st/imu")["state"] == "created"
        assert topic_view(h, "st/imu")["chunks"] == 1


def test_lose_reply_on_write_stores_the_batch(kind: str) -> None:
    """`lose_reply` on a write: the batch is stored, the stream breaks, the client sees
    unknown."""
    plan = FaultPlan((Fault("STREAM_WRITE", 2, FaultEffect.LOSE_REPLY),))
    with harness(kind, faults=plan) as h:
        t = h.transport()
        topic_uuid = _topic(t)
        outcome = stream_verdict(t, "st/imu", topic_uuid, [batch(0), batch(2), batch(4)])
        unknown(outcome)
        assert topic_view(h, "st/imu")["state"] == "created"
        assert topic_view(h, "st/imu")["chunks"] == 2


@pytest.mark.parametrize("error", [ErrorKind.INTERNAL, ErrorKind.FAILED_PRECONDITION])
def test_fail_on_close_leaves_the_topic_unlocked(kind: str, error: ErrorKind) -> None:
    """`fail` on the close: refused with the kind, the topic stays unlocked with its chunks."""
    plan = FaultPlan((Fault("STREAM_CLOSE", 1, FaultEffect.FAIL, error),))
    with harness(kind, faults=plan) as h:
        t = h.transport()
        topic_uuid = _topic(t)
        outcome = stream_verdict(t, "st/imu", topic_uuid, [batch(0), batch(2)])
        failed_with(outcome, error)
        injected(outcome, "STREAM_CLOSE")
        assert topic_view(h, "st/imu") == {
            "state": "created",
            "rows": 4,
            "chunks": 2,
            "notifications": [],
        }
        assert ok(t.flight_info(Descriptor.for_resource("st/imu"))).locked is False


def test_drop_stream_on_close_leaves_the_topic_unlocked(kind: str) -> None:
    """`drop_stream` on the close: cancelled, nothing locked."""
    plan = FaultPlan((Fault("STREAM_CLOSE", 1, FaultEffect.DROP_STREAM),))
    with harness(kind, faults=plan) as h:
        t = h.transport()
        topic_uuid = _topic(t)
        outcome = stream_verdict(t, "st/imu", topic_uuid, [batch(0)])
        failed_with(outcome, ErrorKind.CANCELLED)
        assert topic_view(h, "st/imu")["state"] == "created"
        assert topic_view(h, "st/imu")["chunks"] == 1


def test_lose_reply_on_close_locks_the_topic(kind: str) -> None:
    """`lose_reply` on the close: the topic is locked, the client sees unknown."""
    plan = FaultPlan((Fault("STREAM_CLOSE", 1, FaultEffect.LOSE_REPLY),))
    with harness(kind, faults=plan) as h:
        t = h.transport()
        topic_uuid = _topic(t)
        outcome = stream_verdict(t, "st/imu", topic_uuid, [batch(0), batch(2)])
        unknown(outcome)
        assert topic_view(h, "st/imu")["state"] == "locked"
        assert topic_view(h, "st/imu")["chunks"] == 2
        info = ok(t.flight_info(Descriptor.for_resource("st/imu")))
        assert info.locked is True
        assert info.info is not None
        assert info.info.chunks_number == 2


@pytest.mark.parametrize(
    ("effect", "expect"),
    [
        (FaultEffect.FAIL, "failed:permission_denied"),
        (FaultEffect.LOSE_REPLY, "unknown"),
        (FaultEffect.DROP_STREAM, "failed:cancelled"),
    ],
)
def test_stream_open_faults(kind: str, effect: FaultEffect, expect: str) -> None:
    """A fault on STREAM_OPEN breaks the stream before any batch is stored; the topic stays
    unlocked and a later stream succeeds."""
    plan = FaultPlan((Fault("STREAM_OPEN", 1, effect, ErrorKind.PERMISSION_DENIED),))
    with harness(kind, faults=plan) as h:
        t = h.transport()
        topic_uuid = _topic(t)
        outcome = stream_verdict(t, "st/imu", topic_uuid, [batch(0), batch(2)])
        if expect == "unknown":
            unknown(outcome)
        else:
            failed_with(outcome, ErrorKind(expect.split(":")[1]))
        assert topic_view(h, "st/imu") == {
            "state": "created",
            "rows": 0,
            "chunks": 0,
            "notifications": [],
        }
        ok(stream_verdict(t, "st/imu", topic_uuid, [batch(0)]))
        assert topic_view(h, "st/imu")["state"] == "locked"
        assert h.schedule is not None
        assert h.schedule.counts()["STREAM_OPEN"] == 2


# ---------------------------------------------------------------------------------------------
# Stream faults are the same fault on both transports


def _settled(h: Harness, topic: str, open_number: int) -> bool:
    """The server has dealt with the stream's first batch: stored or refused it, or the stream
    had already ended (refused or broken), or its open (the `open_number`th) never reached the
    server. Over Flight the server counts an open only when its first message arrives, so the
    open is named by its number, not by the count so far."""
    assert h.model.trace is not None and h.schedule is not None
    if any(
        f.operation == "STREAM_OPEN"
        and f.effect is FaultEffect.LOSE_REQUEST
        and f.nth == open_number
        for f in h.schedule.fired
    ):
        return True
    return any(
        e.get("topic") == topic
        and (
            e["op"] in ("DO_PUT_WRITE", "DO_PUT_CANCEL")
            or (e["op"] == "DO_PUT_OPEN" and e["outcome"] != "ok")
        )
        for e in h.model.trace.events
    )


def stream_script(h: Harness) -> list[tuple[str, str | None]]:
    """Four streams, and the verdict of each: S1 locks sf/a; S2 finds it locked (a refused
    open); sf/b and sf/c are deleted mid-stream, so S3's next write and S4's end are
    refused."""
    t = h.transport()
    verdicts: list[tuple[str, str | None]] = []

    def record(outcome: Outcome) -> None:
        verdicts.append((outcome.status.value, outcome.kind.value if outcome.kind else None))

    session = create_sequence(t, "sf")
    topic_a = create_topic(t, session, "sf/a")
    record(stream_verdict(t, "sf/a", topic_a, [batch(0), batch(2)]))
    record(stream_verdict(t, "sf/a", topic_a, [batch(4)]))
    for locator, more in (("sf/b", [batch(2)]), ("sf/c", [])):
        topic_uuid = create_topic(t, session, locator)
        verdict: Outcome | None = None
        assert h.schedule is not None
        open_number = h.schedule.counts().get("STREAM_OPEN", 0) + 1
        opened = t.open_stream(Descriptor.for_topic(locator, topic_uuid), SCHEMA)
        if not opened.is_ok:
            verdict = opened
        else:
            written = opened.value.write(batch(0))
            verdict = None if written.is_ok else written
        deadline = time.monotonic() + 10
        while not _settled(h, locator, open_number):
            assert time.monotonic() < deadline, f"the server never handled {locator}"
            time.sleep(0.002)
        ok(t.action(FlightAction.TOPIC_DELETE, {"locator": locator}))
        if verdict is None:
            stream = opened.value
            for b in more:
                written = stream.write(b)
                if not written.is_ok:
                    verdict = written
                    break
            if verdict is None:
                verdict = stream.close()
        record(verdict)
    return verdicts


STREAM_CALLS = {"STREAM_OPEN": 4, "STREAM_WRITE": 5, "STREAM_CLOSE": 2}
"""How many calls of each stream operation `stream_script` makes without faults (S2's open,
S3's second write and S4's close are the refused ones)."""


def test_stream_script_calls() -> None:
    with harness("memory") as h:
        h.model.trace = ServerTrace()
        assert stream_script(h) == [
            ("ok", None),
            ("failed", "failed_precondition"),
            ("failed", "not_found"),
            ("failed", "not_found"),
        ]
        assert h.schedule is not None
        assert {op: h.schedule.counts()[op] for op in STREAM_CALLS} == STREAM_CALLS


@pytest.mark.parametrize(
    "fault",
    [
        Fault(operation, nth, effect, ErrorKind.PERMISSION_DENIED)
        for operation, calls in STREAM_CALLS.items()
        for nth in range(1, calls + 1)
        for effect in FaultEffect
    ],
    ids=lambda f: f.describe(),
)
def test_stream_faults_are_the_same_on_both_transports(fault: Fault) -> None:
    """One fault on a stream call, with each effect, on calls the server accepts and on calls
    it refuses: the client sees the same verdicts and the server records the same events,
    in memory and over Flight."""
    runs = {}
    for kind in KINDS:
        with harness(kind, faults=FaultPlan((fault,))) as h:
            h.model.trace = ServerTrace()
            verdicts = stream_script(h)
            assert h.schedule is not None
            assert h.schedule.fired == [fault]
            runs[kind] = (verdicts, list(h.model.trace.events))
    assert runs["flight"] == runs["memory"]


# ---------------------------------------------------------------------------------------------
# Read-side faults


def _read_setup(t: Transport) -> bytes:
    session = create_sequence(t, "rd")
    topic_uuid = create_topic(t, session, "rd/imu")
    ok(stream_verdict(t, "rd/imu", topic_uuid, [batch(0, 3)]))
    return bytes(ok(t.flight_info(Descriptor.for_resource("rd/imu"))).ticket)


READS: dict[str, Callable[[Transport, bytes], Outcome]] = {
    "GET_FLIGHT_INFO": lambda t, ticket: t.flight_info(Descriptor.for_resource("rd")),
    "DO_GET": lambda t, ticket: t.read(ticket),
    "LIST_FLIGHTS": lambda t, ticket: t.list_sequences(),
}


@pytest.mark.parametrize("operation", list(READS))
@pytest.mark.parametrize(
    "effect", [FaultEffect.FAIL, FaultEffect.LOSE_REPLY, FaultEffect.LOSE_REQUEST]
)
def test_read_faults(kind: str, operation: str, effect: FaultEffect) -> None:
    """Faults on reads: the planned call fails (or is unknown), state is untouched, the
    next call answers normally."""
    # The setup itself reads the topic's FlightInfo once.
    nth = 2 if operation == "GET_FLIGHT_INFO" else 1
    plan = FaultPlan((Fault(operation, nth, effect, ErrorKind.NOT_FOUND),))
    with harness(kind, faults=plan) as h:
        t = h.transport()
        ticket = _read_setup(t)
        before = h.model.snapshot()
        outcome = READS[operation](t, ticket)
        if effect is FaultEffect.FAIL:
            failed_with(outcome, ErrorKind.NOT_FOUND)
        else:
            unknown(outcome)
        injected(outcome, operation)
        assert h.model.snapshot() == before
        value = ok(READS[operation](t, ticket))
        if operation == "DO_GET":
            assert value.table().column("timestamp_ns").to_pylist() == [0, 1, 2]
        elif operation == "LIST_FLIGHTS":
            assert value == ["rd"]
        else:
            assert value.locator == "rd"


# ---------------------------------------------------------------------------------------------
# Counting


def test_nth_counts_calls_per_operation(kind: str) -> None:
    """`nth` counts the calls of one operation only; calls of other operations in between do
    not move it."""
    plan = FaultPlan(
        (
            Fault("SEQUENCE_CREATE", 2, FaultEffect.FAIL, ErrorKind.INTERNAL),
            Fault("SEQUENCE_CREATE", 4, FaultEffect.FAIL, ErrorKind.ABORTED),
            Fault("LIST_FLIGHTS", 3, FaultEffect.FAIL, ErrorKind.INTERNAL),
        )
    )
    with harness(kind, faults=plan) as h:
        t = h.transport()
        created = []
        listed = []
        for name in ("n1", "n2", "n3", "n4", "n5"):
            listing = t.list_sequences()
            listed.append((listing.status.value, listing.kind.value if listing.kind else None))
            ok(t.action(FlightAction.VERSION, {}))
            outcome = t.action(FlightAction.SEQUENCE_CREATE, {"locator": name, "user_metadata": {}})
            created.append(
                (name, outcome.status.value, outcome.kind.value if outcome.kind else None)
            )
        assert created == [
            ("n1", "ok", None),
            ("n2", "failed", "internal"),
            ("n3", "ok", None),
            ("n4", "failed", "aborted"),
            ("n5", "ok", None),
        ]
        assert listed == [
            ("ok", None),
            ("ok", None),
            ("failed", "internal"),
            ("ok", None),
            ("ok", None),
        ]
        assert sorted(h.model.sequences) == ["n1", "n3", "n5"]
        assert h.schedule is not None
        assert h.schedule.counts() == {"LIST_FLIGHTS": 5, "VERSION": 5, "SEQUENCE_CREATE": 5}


# ---------------------------------------------------------------------------------------------
# Seeded random faults

RANDOM_OPERATIONS = (
    "SEQUENCE_CREATE",
    "SESSION_CREATE",
    "TOPIC_CREATE",
    "SESSION_FINALIZE",
    "SEQUENCE_NOTIFICATION_CREATE",
    "GET_FLIGHT_INFO",
    "LIST_FLIGHTS",
    "STREAM_OPEN",
    "STREAM_WRITE",
    "STREAM_CLOSE",
)
Trace = list[tuple[str, str, str | None]]


def workload(t: Transport) -> Trace:
    """A fixed client script that carries on past failures; what the client saw, in order.

    A stream is recorded once, by its verdict (see `stream_verdict`).
    """
    trace: Trace = []

    def record(operation: str, outcome: Outcome) -> Outcome:
        trace.append(
            (operation, outcome.status.value, outcome.kind.value if outcome.kind else None)
        )
        return outcome

    for i in range(6):
        name = f"w{i}"
        record(
            "SEQUENCE_CREATE",
            t.action(FlightAction.SEQUENCE_CREATE, {"locator": name, "user_metadata": {"i": i}}),
        )
        created = record("SESSION_CREATE", t.action(FlightAction.SESSION_CREATE, {"locator": name}))
        if not created.is_ok:
            continue
        session = created.value["uuid"]
        for j in range(2):
            locator = f"{name}/t{j}"
            topic = record(
                "TOPIC_CREATE",
                t.action(
                    FlightAction.TOPIC_CREATE,
                    topic_args(session, locator),
                ),
            )
            if topic.is_ok:
                record(
                    "STREAM",
                    stream_verdict(t, locator, topic.value["uuid"], [batch(0), batch(2)]),
                )
        if i % 2:
            record(
                "SEQUENCE_NOTIFICATION_CREATE",
                t.action(
                    FlightAction.SEQUENCE_NOTIFICATION_CREATE,
                    {"locator": name, "notification_type": "error", "msg": f"e{i}"},
                ),
            )
        record(
            "SESSION_FINALIZE",
            t.action(FlightAction.SESSION_FINALIZE, {"session_uuid": session}),
        )
        record("GET_FLIGHT_INFO", t.flight_info(Descriptor.for_resource(name)))
    record("LIST_FLIGHTS", t.list_sequences())
    return trace


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def normalised(snapshot: dict[str, Any]) -> str:
    """The snapshot as JSON with each UUID replaced by its order of first appearance."""
    text = json.dumps(snapshot, sort_keys=True)
    names: dict[str, str] = {}
    return _UUID.sub(lambda m: names.setdefault(m.group(0), f"uuid-{len(names)}"), text)


def random_run(kind: str, seed: int, rate: float) -> tuple[Trace, str, list[str]]:
    plan = FaultPlan(
        seed=seed,
        rate=rate,
        random_operations=RANDOM_OPERATIONS,
        random_effects=(FaultEffect.FAIL, FaultEffect.LOSE_REPLY, FaultEffect.DROP_STREAM),
        random_kinds=(ErrorKind.INTERNAL, ErrorKind.FAILED_PRECONDITION, ErrorKind.NOT_FOUND),
    )
    with harness(kind, faults=plan) as h:
        trace = workload(h.transport())
        assert h.schedule is not None
        return trace, normalised(h.model.snapshot()), [f.describe() for f in h.schedule.fired]


def test_random_faults_replay_identically(kind: str) -> None:
    """The same plan and seed give the same trace, the same faults and the same final
    state."""
    first = random_run(kind, seed=5, rate=0.2)
    second = random_run(kind, seed=5, rate=0.2)
    trace, _, fired = first
    hit = {f.split("#")[0] for f in fired}
    assert {"STREAM_OPEN", "STREAM_WRITE", "STREAM_CLOSE"} <= hit
    assert any(status != "ok" for _, status, _ in trace)
    assert any(status == "ok" for _, status, _ in trace)
    assert second == first


def test_both_transports_see_the_same_run() -> None:
    """One plan gives the same trace and final state in memory and over Flight."""
    assert random_run("memory", seed=11, rate=0.3) == random_run("flight", seed=11, rate=0.3)


def test_another_seed_gives_another_run(kind: str) -> None:
    """A different seed, at a high rate, hits different calls."""
    a = random_run(kind, seed=1, rate=0.5)
    b = random_run(kind, seed=2, rate=0.5)
    assert a[2] != b[2]
    assert a[0] != b[0]


def test_random_faults_depend_only_on_seed_operation_and_call() -> None:
    """Whether the n-th call of an operation is hit does not depend on other operations."""
    plan = FaultPlan(seed=3, rate=0.5, random_operations=("VERSION", "LIST_FLIGHTS"))
    alone = FaultSchedule(plan)
    mixed = FaultSchedule(plan)
    hits_alone = [alone.next("VERSION") for _ in range(30)]
    hits_mixed = []
    for _ in range(30):
        mixed.next("LIST_FLIGHTS")
        hits_mixed.append(mixed.next("VERSION"))
    assert hits_alone == hits_mixed
    assert any(h is not None for h in hits_alone)
    assert any(h is None for h in hits_alone)
    assert all(alone.next("SEQUENCE_CREATE") is None for _ in range(20))


def test_rate_zero_and_one() -> None:
    """Rate 0 never hits; rate 1 hits every call of the listed operations."""
    never = FaultPlan(seed=5, rate=0.0, random_operations=("VERSION",))
    always = FaultPlan(seed=5, rate=1.0, random_operations=("VERSION",))
    assert all(never.random_fault("VERSION", n) is None for n in range(1, 50))
    assert all(always.random_fault("VERSION", n) is not None for n in range(1, 50))
    assert all(always.random_fault("LIST_FLIGHTS", n) is None for n in range(1, 50))
