"""The engine under random operations and random fault plans (Hypothesis stateful testing).

One session per run: a writer of a new sequence, or an updater of an existing one, with a
random error policy and key permission. Rules create topics, push batches and rows, raise in
topic blocks; a bounded final step leaves the session block cleanly or with an exception.

After every step: every status is a state of its table, every transition recorded so far is
an edge of the tables (the trace checks), and client and server agree. At the end the run is
terminal and: Finalized => the server session is locked and every pushed record reads back;
Error + Delete with a delete-capable key => nothing of the session is left; Error + Report =>
the session is unlocked, carries the error notification, and every record pushed before the
error reads back. Checks that a fault can legitimately break are skipped only when the trace
shows that fault (a failed or unsettled step) on the path.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from fsm import (
    APIKeyPermissionEnum,
    MosaicoProtocolError,
    SessionLevelErrorPolicy,
    SessionStatus,
    TopicLevelErrorPolicy,
    TopicWriterStatus,
    load_spec,
)
from fsm.engine import BatchPolicy, Client, SessionWriter, TopicWriter, Tracer, check_trace
from fsm.faults import Fault, FaultEffect, FaultPlan
from fsm.outcome import ErrorKind
from tests.harness import Harness, harness, profile_examples

SPEC = load_spec()
SCHEMA = pa.schema(
    [pa.field("timestamp_ns", pa.int64(), nullable=False), pa.field("x", pa.float64())]
)
OPERATIONS = [
    "SEQUENCE_CREATE",
    "SESSION_CREATE",
    "GET_FLIGHT_INFO",
    "TOPIC_CREATE",
    "STREAM_OPEN",
    "STREAM_WRITE",
    "STREAM_CLOSE",
    "TOPIC_NOTIFICATION_CREATE",
    "SEQUENCE_NOTIFICATION_CREATE",
    "SESSION_FINALIZE",
    "SEQUENCE_DELETE",
    "SESSION_DELETE",
    "TOPIC_DELETE",
]


@st.composite
def fault_plans(draw: st.DrawFn) -> FaultPlan:
    faults = []
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2, 2]))):
        operation = draw(st.sampled_from(OPERATIONS))
        effects = [FaultEffect.FAIL, FaultEffect.LOSE_REPLY]
        if operation.startswith("STREAM_"):
            effects.append(FaultEffect.DROP_STREAM)
        faults.append(
            Fault(
                operation,
                draw(st.sampled_from([1, 1, 1, 2, 3])),
                draw(st.sampled_from(effects)),
                draw(
                    st.sampled_from(
                        [ErrorKind.INTERNAL, ErrorKind.FAILED_PRECONDITION, ErrorKind.CANCELLED]
                    )
                ),
            )
        )
    unique = {(f.operation, f.nth): f for f in faults}
    return FaultPlan(tuple(unique.values()))


class Boom(Exception):
    """The user's exception raised in a block."""


class EngineMachine(RuleBasedStateMachine):
    kind = "memory"
    background = False

    def __init__(self) -> None:
        super().__init__()
        self.h: Harness | None = None
        self.ctx: Any = None
        self.session: SessionWriter | None = None
        self.topics: dict[str, TopicWriter] = {}
        self.pushed: dict[str, list[tuple[int, float]]] = {}
        self.next_ts = 1
        self.raised: BaseException | None = None
        self.ended = False
        self.enter_failed = False

    # ---------------------------------------------------------------------------------------

    @initialize(
        role=st.sampled_from(["writer", "updater"]),
        policy=st.sampled_from(list(SessionLevelErrorPolicy)),
        permission=st.sampled_from([APIKeyPermissionEnum.Delete, APIKeyPermissionEnum.Write]),
        plan=fault_plans(),
        exit_with_error=st.booleans(),
    )
    def start(
        self,
        role: str,
        policy: SessionLevelErrorPolicy,
        permission: APIKeyPermissionEnum,
        plan: FaultPlan,
        exit_with_error: bool,
    ) -> None:
        self.ctx = harness(self.kind, auth=True, faults=None)
        self.h = self.ctx.__enter__()
        manage = self.h.model.bootstrap_key()
        if role == "updater":  # an existing sequence with one finalized session
            with (
                Client(self.h.transport(manage)) as setup,
                setup.sequence_create("run", {"robot": "r1"}) as seq,
            ):
                t = seq.topic_create("base", schema=SCHEMA, ontology_tag="imu")
                t.push_row({"timestamp_ns": 0, "x": 0.0})
        self.h.schedule = None
        self.plan = plan
        self._install_faults(plan)
        self.key = self.h.model.bootstrap_key(permission)
        self.permission = permission
        self.tracer = Tracer()
        policy_rows = BatchPolicy(batch_rows=4, batch_bytes=1 << 16, background=self.background)
        self.client = Client(
            self.h.transport(self.key), tracer=self.tracer, batch_policy=policy_rows
        )
        self.role, self.policy, self.exit_with_error = role, policy, exit_with_error
        self.session = (
            self.client.sequence_create("run", {"robot": "r1"}, on_error=policy)
            if role == "writer"
            else self.client.sequence_update("run", on_error=policy)
        )
        try:
            self.session.__enter__()
        except MosaicoProtocolError as exc:
            event(f"enter failed: {exc}"[:60])
            self.enter_failed = True
            self.ended = True

    def _install_faults(self, plan: FaultPlan) -> None:
        from fsm.faults import FaultSchedule

        assert self.h is not None
        schedule = FaultSchedule(plan)
        self.h.schedule = schedule
        if self.h.server is not None:
            self.h.server.server.faults = schedule

    # ---------------------------------------------------------------------------------------

    @property
    def open(self) -> bool:
        return (
            not self.ended
            and self.session is not None
            and self.session.session_status is SessionStatus.Pending
        )

    @precondition(lambda self: self.open and len(self.topics) < 3)
    @rule(policy=st.sampled_from(list(TopicLevelErrorPolicy)))
    def create_topic(self, policy: TopicLevelErrorPolicy) -> None:
        assert self.session is not None
        name = f"t{len(self.topics) + len(self.pushed)}"
        try:
            topic = self.session.topic_create(
                name, {"n": 1}, schema=SCHEMA, ontology_tag="imu", on_error=policy
            )
        except MosaicoProtocolError:
            self.pushed[name] = []  # the name is used up; nothing to read back
            return
        self.topics[name] = topic
        self.pushed[name] = []

    def _rows(self, n: int) -> list[tuple[int, float]]:
        rows = [(self.next_ts + i, float(self.next_ts + i) / 2) for i in range(n)]
        self.next_ts += n
        return rows

    @precondition(lambda self: self.open and any(t.is_active for t in self.topics.values()))
    @rule(data=st.data(), n=st.integers(1, 9), as_rows=st.booleans())
    def push(self, data: st.DataObject, n: int, as_rows: bool) -> None:
        name = data.draw(st.sampled_from(sorted(k for k, t in self.topics.items() if t.is_active)))
        topic = self.topics[name]
        rows = self._rows(n)
        try:
            if as_rows:
                for i, (ts, x) in enumerate(rows):
                    topic.push_row({"timestamp_ns": ts, "x": x})
                    self.pushed[name].append(rows[i])
            else:
                batch = pa.record_batch(
                    [pa.array([r[0] for r in rows]), pa.array([r[1] for r in rows])], schema=SCHEMA
                )
                topic.push(batch)
                self.pushed[name].extend(rows)
        except MosaicoProtocolError:
            assert topic.status is TopicWriterStatus.RaisedException
            assert topic.last_error

    @precondition(lambda self: self.open and any(t.is_active for t in self.topics.values()))
    @rule(data=st.data())
    def raise_in_topic_block(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(k for k, t in self.topics.items() if t.is_active)))
        topic = self.topics[name]
        try:
            with topic:
                raise Boom(f"failure in {name}")
        except Boom as exc:
            assert topic.policy is TopicLevelErrorPolicy.Raise
            assert topic.status is TopicWriterStatus.RaisedException
            self._leave(exc)
            return
        except MosaicoProtocolError:
            assert topic.status is TopicWriterStatus.FinalizedWithError
            return
        assert topic.policy is not TopicLevelErrorPolicy.Raise
        expected = {
            TopicLevelErrorPolicy.Finalize: TopicWriterStatus.FinalizedWithError,
            TopicLevelErrorPolicy.Ignore: TopicWriterStatus.IgnoredLastError,
        }[topic.policy]
        assert topic.status is expected
        assert topic.last_error is not None and "Boom" in topic.last_error

    @rule()
    def read_back(self) -> None:
        """Reading never changes anything; sequences listed are those the server holds."""
        assert self.h is not None
        listed = self.client.transport.list_sequences()
        if listed.is_ok:
            assert sorted(listed.value) == sorted(self.h.model.snapshot()["sequences"])

    @precondition(lambda self: self.open)
    @rule()
    def leave_session(self) -> None:
        self._finish()

    def _leave(self, exc: BaseException | None) -> None:
        """Leave the session block, with `exc` (an exception passed up) or cleanly."""
        assert self.session is not None
        self.ended = True
        if exc is None:
            try:
                self.session.__exit__(None, None, None)
            except MosaicoProtocolError as err:
                self.raised = err
            return
        assert self.session.__exit__(type(exc), exc, None) is False
        self.raised = exc

    def _finish(self) -> None:
        self._leave(Boom("failure in the session block") if self.exit_with_error else None)

    def teardown(self) -> None:
        try:
            if self.open:
                self._finish()  # the bounded final step: every run ends its session
            if self.session is not None and not self.enter_failed:
                self._check_end()
            elif self.enter_failed:
                self._check_failed_enter()
        finally:
            if self.ctx is not None:
                self.ctx.__exit__(None, None, None)

    # ---------------------------------------------------------------------------------------
    # Invariants

    def _fired(self) -> list[str]:
        assert self.h is not None
        return [f.describe() for f in self.h.schedule.fired] if self.h.schedule else []

    def _faulted(self, *operations: str) -> bool:
        """True when a step of one of `operations` failed or was unsettled in this run."""
        for record in self.tracer.records:
            for step in record.get("steps", []):
                if step["step"] in operations and (
                    step["outcome"] == "failed"
                    or step.get("probe") in ("unresolved", "not_applied")
                ):
                    return True
        return False

    @invariant()
    def statuses_are_table_states(self) -> None:
        if self.session is None:
            return
        assert self.session.state in SPEC.session.states
        for topic in self.topics.values():
            assert topic.state in SPEC.topic_writer.states

    @invariant()
    def every_step_is_an_edge_of_the_tables(self) -> None:
        if self.session is None:
            return
        report = check_trace(self.tracer.records, SPEC)
        assert report.ok, str(report.violation)

    @invariant()
    def client_and_server_agree(self) -> None:
        if self.session is None or self.h is None or not self.open:
            return
        snap = self.h.model.snapshot()
        uuid = self.session.session_uuid
        assert uuid in snap["sessions"], "an open session is known to the server"
        assert snap["sessions"][uuid]["state"] in ("open", "reported")
        for topic in self.topics.values():
            server = snap["topics"].get(topic.locator)
            if topic.is_active:
                assert server is not None and server["state"] != "locked", topic.locator
            elif topic.status is TopicWriterStatus.Finalized:
                assert server is not None and server["state"] == "locked", topic.locator

    def _check_failed_enter(self) -> None:
        """A refused enter leaves nothing behind: no orphan sequence (writer) and no extra
        session (updater), unless the trace shows a lost reply that could not be settled."""
        assert self.session is not None and self.h is not None
        assert self.session.session_status is SessionStatus.Null
        snap = self.h.model.snapshot()
        unsettled = self._faulted("SEQUENCE_DELETE") or any(
            step.get("probe") == "unresolved"
            for r in self.tracer.records
            for step in r.get("steps", [])
        )
        if unsettled:
            return
        if self.role == "writer":
            assert "run" not in snap["sequences"], "no orphan sequence after a refused enter"
        else:
            assert len(snap["sequences"]["run"]["sessions"]) == 1, (
                "no extra session after a refused enter"
            )

    def _read(self, name: str) -> list[tuple[int, float]]:
        table = self.client.read_topic("run", name)
        return list(
            zip(
                table.column("timestamp_ns").to_pylist(), table.column("x").to_pylist(), strict=True
            )
        )

    def _check_end(self) -> None:
        assert self.session is not None and self.h is not None
        event(f"faults fired: {len(self._fired())}")
        self._install_faults(FaultPlan())  # the checks below read without faults
        if hasattr(self.client.transport, "faults"):
            self.client.transport.faults = self.h.schedule
        status = self.session.session_status
        event(f"end {status.name} {self.policy.name} {self.role}")
        assert status in (SessionStatus.Finalized, SessionStatus.Error), "the run ends terminal"
        for topic in self.topics.values():
            assert not topic.is_active, "every topic stream is ended"
        snap = self.h.model.snapshot()
        uuid = self.session.session_uuid
        if status is SessionStatus.Finalized:
            assert snap["sessions"][uuid]["state"] == "finalized"
            for name, topic in self.topics.items():
                assert (
                    topic.status is TopicWriterStatus.Finalized
                    or topic.policy is TopicLevelErrorPolicy.Finalize
                )
                assert self._read(name) == self.pushed[name], (
                    f"every record pushed to {name} reads back"
                )
            return
        if self.policy is SessionLevelErrorPolicy.Delete:
            purge = "SEQUENCE_DELETE" if self.role == "writer" else "SESSION_DELETE"
            if self.permission is APIKeyPermissionEnum.Delete and not self._faulted(purge):
                if self.role == "writer":
                    assert "run" not in snap["sequences"], "Delete purges the new sequence"
                else:
                    assert uuid not in snap["sessions"], "Delete purges the session"
                    assert not any(loc.startswith("run/t") for loc in snap["topics"]), (
                        "and its topics"
                    )
            return
        # Report
        session = snap["sessions"].get(uuid)
        assert session is not None and session["state"] in (
            "open",
            "reported",
            "finalized_reported",
        ), "Report leaves the session unlocked"
        if not self._faulted("SEQUENCE_NOTIFICATION_CREATE"):
            assert any(kind == "error" for kind, _ in snap["sequences"]["run"]["notifications"]), (
                "Report leaves an error notification on the sequence"
            )
        stream_faults = self._faulted("STREAM_OPEN", "STREAM_WRITE", "STREAM_CLOSE")
        for name, topic in self.topics.items():
            server = snap["topics"].get(topic.locator)
            if not stream_faults:
                assert server is not None and server["state"] == "locked", (
                    "Report ends every stream cleanly"
                )
            if server is not None and server["state"] == "locked":
                assert self._read(name) == self.pushed[name], (
                    f"every record pushed to {name} before the error reads back"
                )


def _run(kind: str, background: bool, share: float) -> None:
    """Run the machine for `share` of the profile's examples."""
    machine = type(
        f"Engine_{kind}_{background}", (EngineMachine,), {"kind": kind, "background": background}
    )
    options = settings(stateful_step_count=12, max_examples=profile_examples(share))
    run_state_machine_as_test(machine, settings=options)


def test_engine_over_memory_transport() -> None:
    _run("memory", background=False, share=1.0)


def test_engine_over_memory_transport_with_background_sends() -> None:
    _run("memory", background=True, share=0.5)


@pytest.mark.flight
def test_engine_over_flight_transport() -> None:
    _run("flight", background=True, share=0.25)
