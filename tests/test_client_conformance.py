"""Client conformance from server traces: what our engine does always conforms; crafted
traces of misbehaving clients are caught, known SDK deviations by their id."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from fsm import ErrorKind, MosaicoProtocolError, SessionLevelErrorPolicy, TopicLevelErrorPolicy
from fsm.cli import main
from fsm.conformance.clients import ClientReport, check_client_trace, group_by_sequence
from fsm.engine import BatchPolicy, Client
from fsm.faults import Fault, FaultEffect, FaultPlan, FaultSchedule
from fsm.spec import load_spec
from tests.harness import KIND_PARAMS, Harness, harness
from transport.server.trace import ServerTrace

SPEC = load_spec()
SCHEMA = pa.schema(
    [pa.field("timestamp_ns", pa.int64(), nullable=False), pa.field("x", pa.float64())]
)
REPORT, DELETE = SessionLevelErrorPolicy.Report, SessionLevelErrorPolicy.Delete


class Boom(Exception):
    pass


def _batch(start: int, n: int) -> pa.RecordBatch:
    return pa.record_batch(
        [pa.array(range(start, start + n), pa.int64()), pa.array([0.5] * n)], schema=SCHEMA
    )


@pytest.fixture(params=KIND_PARAMS)
def h(request: pytest.FixtureRequest) -> Iterator[Harness]:
    with harness(request.param) as hh:
        hh.model.trace = ServerTrace()
        yield hh


def _faults(h: Harness, *faults: Fault) -> None:
    h.schedule = FaultSchedule(FaultPlan(faults))
    if h.server is not None:
        h.server.server.faults = h.schedule


def _reports(h: Harness) -> dict[str, ClientReport]:
    assert h.model.trace is not None
    return {
        name: check_client_trace(events, SPEC, sequence=name)
        for name, events in group_by_sequence(h.model.trace.events).items()
    }


def _run_quietly(body: Callable[[], None]) -> None:
    """Run a scenario whose failure is expected: its trace is what the test checks."""
    with contextlib.suppress(Boom, MosaicoProtocolError):
        body()


# -----------------------------------------------------------------------------------------------
# The engine conforms, whatever happens


def _clean(client: Client) -> None:
    with client.sequence_create("clean") as seq:
        for name in ("a", "b", "c"):
            seq.topic_create(name, schema=SCHEMA, ontology_tag="imu").push(_batch(0, 5))
    with client.sequence_update("clean", on_error=DELETE) as upd:
        upd.topic_create("d", schema=SCHEMA, ontology_tag="imu").push(_batch(0, 5))


def _errors(client: Client) -> None:
    for policy, name in ((REPORT, "report"), (DELETE, "delete")):

        def body(policy: SessionLevelErrorPolicy = policy, name: str = name) -> None:
            with client.sequence_create(name, on_error=policy) as seq:
                for topic in ("a", "b"):
                    seq.topic_create(topic, schema=SCHEMA, ontology_tag="imu").push(_batch(0, 3))
                raise Boom

        _run_quietly(body)


def _topic_policies(client: Client) -> None:
    with client.sequence_create("policies") as seq:
        for name, policy in (
            ("fin", TopicLevelErrorPolicy.Finalize),
            ("ign", TopicLevelErrorPolicy.Ignore),
        ):
            topic = seq.topic_create(name, schema=SCHEMA, ontology_tag="imu", on_error=policy)
            topic.push(_batch(0, 2))
            with topic:
                raise Boom
        seq.topic_create("plain", schema=SCHEMA, ontology_tag="imu").push(_batch(0, 2))


def _updater_delete(client: Client) -> None:
    with client.sequence_create("upd") as seq:
        seq.topic_create("a", schema=SCHEMA, ontology_tag="imu").push(_batch(0, 2))

    def body() -> None:
        with client.sequence_update("upd", on_error=DELETE) as upd:
            upd.topic_create("b", schema=SCHEMA, ontology_tag="imu").push(_batch(0, 2))
            raise Boom

    _run_quietly(body)


@pytest.mark.parametrize(
    "scenario", [_clean, _errors, _topic_policies, _updater_delete], ids=lambda f: f.__name__
)
def test_engine_traces_conform(h: Harness, scenario: Callable[[Client], None]) -> None:
    with Client(h.transport(), batch_policy=BatchPolicy(batch_rows=2)) as client:
        scenario(client)
    reports = _reports(h)
    assert reports, "the server recorded the sequences"
    for name, report in reports.items():
        assert report.conforms, f"{name}: {[str(f) for f in report.findings]}"
        assert report.accepted


FAULTS = [
    Fault("SESSION_CREATE", 1, FaultEffect.FAIL, ErrorKind.INTERNAL),
    Fault("SESSION_FINALIZE", 1, FaultEffect.FAIL, ErrorKind.FAILED_PRECONDITION),
    Fault("TOPIC_CREATE", 2, FaultEffect.FAIL, ErrorKind.ALREADY_EXISTS),
    Fault("STREAM_CLOSE", 1, FaultEffect.FAIL, ErrorKind.INTERNAL),
    Fault("STREAM_WRITE", 1, FaultEffect.DROP_STREAM),
    Fault("SEQUENCE_NOTIFICATION_CREATE", 1, FaultEffect.FAIL, ErrorKind.PERMISSION_DENIED),
    Fault("SEQUENCE_CREATE", 1, FaultEffect.LOSE_REPLY),
    Fault("SESSION_FINALIZE", 1, FaultEffect.LOSE_REPLY),
]


@pytest.mark.parametrize("policy", [REPORT, DELETE], ids=lambda p: p.name)
@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.describe())
def test_engine_traces_conform_under_faults(
    h: Harness, fault: Fault, policy: SessionLevelErrorPolicy
) -> None:
    _faults(h, fault)

    def body() -> None:
        with (
            Client(h.transport(), batch_policy=BatchPolicy(batch_rows=2)) as client,
            client.sequence_create("run", on_error=policy) as seq,
        ):
            for name in ("a", "b"):
                seq.topic_create(name, schema=SCHEMA, ontology_tag="imu").push(_batch(0, 3))

    _run_quietly(body)
    report = _reports(h)["run"]
    assert report.conforms, [str(f) for f in report.findings]


# -----------------------------------------------------------------------------------------------
# Crafted traces of other clients


def _ev(op: str, outcome: str = "ok", topic: str | None = None, **extra: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"op": op, "outcome": outcome, "sequence": "s", **extra}
    if topic:
        event["topic"] = f"s/{topic}"
    return event


CLEAN = [
    _ev("SEQUENCE_CREATE"),
    _ev("SESSION_CREATE"),
    _ev("TOPIC_CREATE", topic="t"),
    _ev("DO_PUT_OPEN", topic="t"),
    _ev("DO_PUT_WRITE", topic="t", rows=3),
    _ev("DO_PUT_END", topic="t"),
    _ev("SESSION_FINALIZE"),
]


def test_a_clean_trace_conforms_and_lists_its_steps() -> None:
    report = check_client_trace(CLEAN, SPEC, sequence="s")
    assert report.conforms and report.role == "writer" and report.policy == "either"
    assert report.accepted[0] == "session: Null --enter--> Pending [enter-writer]"
    assert any("exit-ok" in line for line in report.accepted)


def _violations(events: list[dict[str, Any]]) -> ClientReport:
    report = check_client_trace(events, SPEC, sequence="s")
    assert not report.conforms
    return report


def test_finalize_before_the_stream_ended_is_a_violation() -> None:
    events = [*CLEAN[:5], CLEAN[6], CLEAN[5]]
    report = _violations(events)
    assert report.violation is not None and report.violation.kind == "violation"


def test_a_topic_before_the_session_is_a_violation() -> None:
    report = _violations([CLEAN[0], CLEAN[2], CLEAN[1]])
    assert report.violation is not None and report.violation.index == 1


def test_a_session_left_open_is_a_violation() -> None:
    report = _violations(CLEAN[:5])
    assert report.violation is not None and "still open" in report.violation.message


def test_data_after_the_end_of_a_stream_is_a_violation() -> None:
    report = _violations([*CLEAN[:6], _ev("DO_PUT_WRITE", topic="t", rows=1), CLEAN[6]])
    assert report.violation is not None and "after its stream ended" in report.violation.message


def test_a_repeated_sequence_delete_is_the_sdk_double_delete() -> None:
    events = [*CLEAN[:2], _ev("SEQUENCE_DELETE"), _ev("SEQUENCE_DELETE", "not_found")]
    report = _violations(events)
    assert report.deviations == ("SDK-DOUBLE-SEQUENCE-DELETE",) and report.violation is None
    assert report.policy == "Delete"


def test_a_sequence_left_behind_is_the_sdk_orphan() -> None:
    report = _violations([_ev("SEQUENCE_CREATE"), _ev("SESSION_CREATE", "internal")])
    assert report.deviations == ("SDK-ORPHAN-SEQUENCE",)
    fixed = check_client_trace(
        [_ev("SEQUENCE_CREATE"), _ev("SESSION_CREATE", "internal"), _ev("SEQUENCE_DELETE")], SPEC
    )
    assert fixed.conforms


def test_an_unreported_refused_finalize_is_named() -> None:
    events = [*CLEAN[:2], _ev("SESSION_FINALIZE", "failed_precondition")]
    report = _violations(events)
    assert report.deviations == ("SDK-FINALIZE-REFUSED-UNREPORTED",)


def test_records_lost_on_an_error_close_are_named() -> None:
    pushes = [
        {
            "op": "PUSH",
            "source": "client",
            "sequence": "s",
            "topic": "s/t",
            "rows": 1,
            "outcome": "ok",
        }
    ] * 4
    events = [
        *CLEAN[:4],
        *pushes,
        _ev("TOPIC_NOTIFICATION_CREATE", topic="t"),
        _ev("DO_PUT_END", topic="t"),
        _ev("SEQUENCE_NOTIFICATION_CREATE"),
        _ev("SESSION_FINALIZE"),
    ]
    report = _violations(events)
    assert report.deviations == ("SDK-REPORT-DROPS-BUFFER",)
    stored = [*events[:8], _ev("DO_PUT_WRITE", topic="t", rows=4), *events[8:]]
    assert check_client_trace(stored, SPEC).conforms, "the same records, stored, conform"


def test_records_lost_on_a_clean_close_are_a_violation() -> None:
    pushes = [
        {
            "op": "PUSH",
            "source": "client",
            "sequence": "s",
            "topic": "s/t",
            "rows": 5,
            "outcome": "ok",
        }
    ]
    report = _violations([*CLEAN[:4], *pushes, *CLEAN[4:]])
    assert report.violation is not None and report.violation.rule == "no record dropped silently"


def test_pushes_accepted_after_a_failed_stream_are_named() -> None:
    push = {
        "op": "PUSH",
        "source": "client",
        "sequence": "s",
        "topic": "s/t",
        "rows": 1,
        "outcome": "ok",
    }
    events = [
        *CLEAN[:4],
        push,
        _ev("DO_PUT_WRITE", "internal", topic="t", rows=1),
        _ev("DO_PUT_CANCEL", "internal", topic="t"),
        push,
        push,
        _ev("SEQUENCE_NOTIFICATION_CREATE"),
        _ev("SESSION_FINALIZE", "failed_precondition"),
    ]
    report = check_client_trace(events, SPEC, sequence="s")
    assert "SDK-HIDDEN-WRITE-ERROR" in report.deviations


def test_check_trace_command(tmp_path: Path) -> None:
    clean = tmp_path / "clean.jsonl"
    clean.write_text("\n".join(json.dumps(e) for e in CLEAN) + "\n")
    out = io.StringIO()
    assert main(["check-trace", str(clean)], out) == 0
    assert "conforms" in out.getvalue() and "enter-writer" in out.getvalue()
    double = tmp_path / "double.jsonl"
    events = [*CLEAN[:2], _ev("SEQUENCE_DELETE"), _ev("SEQUENCE_DELETE", "not_found")]
    double.write_text("\n".join(json.dumps(e) for e in events) + "\n")
    out = io.StringIO()
    assert main(["check-trace", str(double)], out) == 1
    assert "DEVIATION SDK-DOUBLE-SEQUENCE-DELETE" in out.getvalue()


def test_check_trace_command_reads_engine_traces(tmp_path: Path) -> None:
    from fsm.engine import Tracer
    from transport.memory import MemoryTransport

    path = tmp_path / "engine.jsonl"
    tracer = Tracer(path)
    with Client(MemoryTransport(), tracer=tracer) as client, client.sequence_create("run") as seq:
        seq.topic_create("t", schema=SCHEMA, ontology_tag="imu").push(_batch(0, 2))
    out = io.StringIO()
    assert main(["check-trace", str(path)], out) == 0
    assert "conforms" in out.getvalue()
    lines = path.read_text().splitlines()
    lines[0] = lines[0].replace('"dest":"Pending"', '"dest":"Finalized"')
    path.write_text("\n".join(lines) + "\n")
    out = io.StringIO()
    assert main(["check-trace", str(path)], out) == 1
    assert "VIOLATION" in out.getvalue()


# -----------------------------------------------------------------------------------------------
# Lost replies: the server saw a success, the client took the table's route for a lost reply

LOST_TOPIC = [
    _ev("SEQUENCE_CREATE"),
    _ev("SESSION_CREATE"),
    _ev("TOPIC_CREATE", topic="t"),
    _ev("GET_FLIGHT_INFO", topic="t"),  # the probe
    _ev("TOPIC_DELETE", topic="t"),  # the orphaned topic removed again
    _ev("SEQUENCE_NOTIFICATION_CREATE"),
    _ev("SESSION_FINALIZE"),
]


def test_a_route_taken_after_a_lost_reply_is_accepted_when_one_may_be_lost() -> None:
    assert not check_client_trace(LOST_TOPIC, SPEC, sequence="s").conforms
    report = check_client_trace(LOST_TOPIC, SPEC, sequence="s", lost_replies=1)
    assert report.conforms, [str(f) for f in report.findings]
    assert any(line.startswith("reply lost: TOPIC_CREATE on s/t") for line in report.accepted)


def test_a_lost_reply_excuses_nothing_else() -> None:
    finalize_early = [*CLEAN[:5], CLEAN[6], CLEAN[5]]
    assert not check_client_trace(finalize_early, SPEC, sequence="s", lost_replies=2).conforms
    unremoved = [*LOST_TOPIC[:3], *LOST_TOPIC[5:]]
    assert not check_client_trace(unremoved, SPEC, sequence="s", lost_replies=1).conforms, (
        "after a lost reply a probe that found the topic leads to its removal"
    )
    assert check_client_trace(unremoved, SPEC, sequence="s", lost_replies=2).conforms, (
        "unless the probe's own answer went wrong too"
    )


# -----------------------------------------------------------------------------------------------
# The checkers' memos of the tables answer what the tables answer


def test_the_client_checker_memo_answers_as_the_tables_in_any_order() -> None:
    """Row lookups and allowed triggers are kept per state, trigger and context: asked for
    every call, contexts interleaved (one table's rows differ only by policy or role), the
    memo gives what the table gives."""
    from fsm.conformance.clients import _Machines

    machines = _Machines.of(SPEC)
    calls = [
        (table, state, trigger, context)
        for table in (SPEC.session, SPEC.topic_writer)
        for trigger in table.triggers
        for state in table.states
        for context in table.contexts()
    ]
    for table, state, trigger, context in (*calls, *reversed(calls)):
        assert machines.lookup(table, state, trigger, context) == table.lookup(
            state, trigger, context
        ), (table.name, state, trigger, context)
        assert machines.allowed(table, state, context) == tuple(table.allowed(state, context))


def test_the_engine_trace_memo_answers_as_the_tables_in_any_order() -> None:
    from fsm.engine.trace import _plan, _plans

    plans = _plans(SPEC)
    for table in (SPEC.session, SPEC.topic_writer):
        calls = [
            (state, trigger, context)
            for trigger in table.triggers
            for state in table.states
            for context in table.contexts()
        ]
        for state, trigger, context in (*calls, *reversed(calls)):
            plan, _ = _plan(plans, table, state, trigger, context)
            row = table.lookup(state, trigger, context)
            assert (plan is None) == (row is None) and (plan is None or plan.row == row), (
                table.name,
                state,
                trigger,
                context,
            )
