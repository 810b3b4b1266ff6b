"""The writers' executors are registries checked against the tables, their handlers hand what
they produce back through the Outcome, and every trigger, traced or not, is committed by the
machine."""

from __future__ import annotations

import copy
import gc
from collections.abc import Mapping
from typing import Any

import attrs
import pyarrow as pa
import pytest

from fsm import SpecError, TopicLevelErrorPolicy, load_spec
from fsm.conformance.clients import check_client_trace, group_by_sequence
from fsm.engine import BatchPolicy, Client, Machines, Tracer
from fsm.engine.base import LOOP_BATCH
from fsm.engine.session import SESSION_STEPS, _NewTopic, _SessionSteps
from fsm.engine.topic import TOPIC_STEPS
from fsm.engine.wire import Created
from fsm.enums import SerializationFormat
from fsm.errors import ProtocolError
from fsm.machines import Move, ProtocolMachine
from fsm.outcome import OK, Outcome
from fsm.spec import load_documents, parse_spec
from fsm.spec.model import Transition
from fsm.transport import Descriptor, SequenceInfo
from tests.harness import Forward, harness
from transport.memory import MemoryTransport
from transport.server.trace import ServerTrace

SPEC = load_spec()
SCHEMA = pa.schema([pa.field("timestamp_ns", pa.int64(), nullable=False), ("value", pa.float64())])


def batch(start: int) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([{"timestamp_ns": start, "value": 0.5}], SCHEMA)


# -- registries --------------------------------------------------------------------------------


def test_every_step_and_probe_of_the_tables_has_a_handler() -> None:
    assert SESSION_STEPS.missing(SPEC.session) == []
    assert TOPIC_STEPS.missing(SPEC.topic_writer) == []
    named = {s.do for r in SPEC.session.transitions for s in r.steps if s.do is not None}
    assert named <= set(SESSION_STEPS.operations)
    assert "SESSION_CREATE" in named  # the tables do name the operations checked here


def _with_extra_step(operation: str) -> dict[str, Any]:
    docs = copy.deepcopy(load_documents())
    row = next(t for t in docs["session.toml"]["transitions"] if t["id"] == "exit-ok")
    row["steps"].append({"do": operation, "failed": "continue", "unknown": "continue"})
    return docs


def test_a_spec_naming_an_operation_without_handler_fails_when_the_engine_is_built() -> None:
    spec = parse_spec(_with_extra_step("SEQUENCE_NOTIFICATION_PURGE"))  # a catalogue operation
    with pytest.raises(SpecError, match="SEQUENCE_NOTIFICATION_PURGE") as caught:
        Machines.from_spec(spec)
    assert caught.value.file == "session.toml"
    assert "exit-ok" in caught.value.entry
    # Built by hand, the machines are checked just the same.
    with pytest.raises(SpecError, match="SEQUENCE_NOTIFICATION_PURGE"):
        Machines(ProtocolMachine(spec.session), ProtocolMachine(spec.topic_writer))


def test_a_registry_missing_a_handler_or_probe_is_refused_naming_it() -> None:
    ops = {k: v for k, v in TOPIC_STEPS.operations.items() if k != "STREAM_CLOSE"}
    with pytest.raises(SpecError, match="operation STREAM_CLOSE"):
        attrs.evolve(TOPIC_STEPS, operations=ops).check(SPEC.topic_writer)
    probes = {k: v for k, v in SESSION_STEPS.probes.items() if k != "session_adoptable"}
    with pytest.raises(SpecError, match="probe session_adoptable"):
        attrs.evolve(SESSION_STEPS, probes=probes).check(SPEC.session)
    with pytest.raises(SpecError, match="fan-out to topics"):
        attrs.evolve(SESSION_STEPS, fan_out=None).check(SPEC.session)


# -- what handlers produce ---------------------------------------------------------------------


def test_handlers_hand_the_uuid_and_stream_they_produce_through_the_outcome() -> None:
    client = Client(MemoryTransport())
    session = client.sequence_create("produced")  # not entered: nothing sent yet
    steps = _SessionSteps(session)
    assert SESSION_STEPS.operations["SEQUENCE_CREATE"](steps).is_ok
    created = SESSION_STEPS.operations["SESSION_CREATE"](steps)
    assert created.is_ok
    assert isinstance(created.value, Created) and created.value.uuid
    assert session.session_uuid is None  # the handler wrote nothing into the writer
    info = client.transport.flight_info(Descriptor.for_resource("produced")).value
    assert isinstance(info, SequenceInfo)
    assert [s.uuid for s in info.sessions] == [created.value.uuid]

    steps.produced["SESSION_CREATE"] = created.value  # as the executor keeps it
    new = _NewTopic("imu", "produced/imu", {}, SCHEMA, SerializationFormat.Default, "imu")
    topic_steps = _SessionSteps(session, new_topic=new)
    topic_steps.produced["SESSION_CREATE"] = created.value
    topic = SESSION_STEPS.operations["TOPIC_CREATE"](topic_steps)
    assert topic.is_ok and isinstance(topic.value, str)
    topic_steps.produced["TOPIC_CREATE"] = topic.value
    opened = SESSION_STEPS.operations["STREAM_OPEN"](topic_steps)
    assert opened.is_ok
    assert opened.value.write(batch(0)).is_ok  # the open stream itself
    opened.value.abort()


def test_the_writer_takes_the_uuid_from_what_its_steps_produced() -> None:
    client = Client(MemoryTransport())
    with client.sequence_create("taken") as seq:
        uuid = seq.session_uuid
        seq.topic_create("imu", schema=SCHEMA, ontology_tag="imu").push(batch(0))
    info = client.transport.flight_info(Descriptor.for_resource("taken")).value
    assert isinstance(info, SequenceInfo)
    assert uuid is not None and [s.uuid for s in info.sessions] == [uuid]


class _NoUuid(Forward):
    """Answers SESSION_CREATE with a success that carries no uuid."""

    def action_raw(self, action_type: str, body: bytes) -> Outcome:
        outcome = self.inner.action_raw(action_type, body)
        if action_type == "session_create" and outcome.is_ok:
            return Outcome.ok({})
        return outcome


def test_a_create_answering_no_uuid_is_routed_as_a_lost_reply() -> None:
    client = Client(_NoUuid(MemoryTransport()))
    steps = _SessionSteps(client.sequence_create("nouuid"))
    assert SESSION_STEPS.operations["SEQUENCE_CREATE"](steps).is_ok
    created = SESSION_STEPS.operations["SESSION_CREATE"](steps)
    assert created.status.value == "unknown"
    assert "answered no uuid" in created.detail


def test_a_success_without_value_is_the_shared_ok() -> None:
    assert Outcome.ok() is OK
    assert Outcome.ok("x") is not OK and Outcome.ok("x").value == "x"


# -- one commit path ---------------------------------------------------------------------------

ROWS = 2 * LOOP_BATCH + 5


def _moves(tracer: Tracer | None) -> list[tuple[str, str, str, str, int]]:
    """What both machines committed while a session pushes ROWS rows, has its topic take
    an error (Ignore), pushes a row and a batch, and ends."""
    machines = Machines.from_spec(SPEC)
    moves: list[Move] = []
    machines.session.listen(moves.append)
    machines.topic_writer.listen(moves.append)
    client = Client(
        MemoryTransport(),
        tracer=tracer,
        batch_policy=BatchPolicy(background=False),
        machines=machines,
    )
    with client.sequence_create("same") as seq:
        topic = seq.topic_create(
            "imu", schema=SCHEMA, ontology_tag="imu", on_error=TopicLevelErrorPolicy.Ignore
        )
        for i in range(ROWS):
            topic.push_row({"timestamp_ns": i, "value": 0.5})
        with topic:
            raise ValueError("boom")
        topic.push_row({"timestamp_ns": ROWS, "value": 1.0})
        topic.push(batch(ROWS + 1))
    return [(m.trigger, m.row, m.source, m.dest, m.repeats) for m in moves]


def test_traced_and_untraced_runs_commit_the_same_moves_through_the_machine() -> None:
    tracer = Tracer()
    traced = _moves(tracer)
    untraced = _moves(None)
    assert traced == untraced
    pushes = [m for m in untraced if m[0] == "push"]
    # Every push went through the machine: the self-loops with their counts, and the push
    # that left IgnoredLastError.
    assert sum(m[4] for m in pushes if m[2] == m[3] == "Active") == ROWS + 1
    assert ("push", "push", "IgnoredLastError", "Active", 1) in pushes
    assert max(m[4] for m in pushes) == LOOP_BATCH
    traced_pushes = [r for r in tracer.records if r.get("trigger") == "push"]
    assert len(traced_pushes) == ROWS + 2
    # The order of commits follows the order of the triggers.
    triggers = [m[0] for m in untraced]
    assert triggers.index("exit_error") < triggers.index("finalize")
    assert triggers[-1] == "exit_ok"


def test_a_repeated_commit_must_be_a_self_loop() -> None:
    machine = ProtocolMachine(SPEC.topic_writer)
    holder = machine.new("t")
    context = {"policy": "Raise", "session_policy": "Report"}
    leaving = SPEC.topic_writer.row_for("Active", "finalize", context)
    with pytest.raises(ProtocolError, match="cannot repeat"):
        machine.commit(holder, leaving, context, repeats=3)
    assert holder.state == "Active"


def test_follow_moves_a_state_through_the_machine_without_keeping_a_model() -> None:
    machine = ProtocolMachine(SPEC.topic_writer)
    moves: list[Move] = []
    machine.listen(moves.append)
    context = {"policy": "Raise", "session_policy": "Report"}
    finalize = SPEC.topic_writer.row_for("Active", "finalize", context)
    assert machine.follow("Active", finalize, context) == "Finalized"
    assert [(m.source, m.dest, m.row) for m in moves] == [("Active", "Finalized", "finalize")]
    assert machine.models == 0
    with pytest.raises(ProtocolError, match="starts in Active"):
        machine.follow("Finalized", finalize, context)


def test_the_client_checker_moves_its_runs_through_the_machines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    followed: list[tuple[str, str]] = []
    real = ProtocolMachine.follow

    def spy(self: ProtocolMachine, state: str, row: Transition, context: Mapping[str, str]) -> str:
        followed.append((self.name, row.id))
        return real(self, state, row, context)

    monkeypatch.setattr(ProtocolMachine, "follow", spy)
    with harness("memory") as h:
        h.model.trace = ServerTrace()
        client = Client(h.transport(), batch_policy=BatchPolicy(background=False))
        with client.sequence_create("checked") as seq:
            seq.topic_create("imu", schema=SCHEMA, ontology_tag="imu").push(batch(0))
        events = group_by_sequence(h.model.trace.events)["checked"]
    report = check_client_trace(events, SPEC)
    assert report.conforms, report.findings
    assert ("session", "exit-ok") in followed
    assert ("topic_writer", "finalize") in followed


def test_writers_dropped_open_leave_no_model_without_the_garbage_collector() -> None:
    machines = Machines.from_spec(SPEC)
    client = Client(
        MemoryTransport(), batch_policy=BatchPolicy(background=False), machines=machines
    )
    gc.disable()
    try:
        seq = client.sequence_create("dropped").__enter__()
        topic = seq.topic_create("imu", schema=SCHEMA, ontology_tag="imu")
        topic.push_row({"timestamp_ns": 1, "value": 0.5})
        assert (machines.session.models, machines.topic_writer.models) == (1, 1)
        del seq, topic  # no cycle keeps them: reference counting alone frees them
        assert (machines.session.models, machines.topic_writer.models) == (0, 0)
    finally:
        gc.enable()
