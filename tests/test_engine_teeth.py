"""Failure paths the engine must get right where two clients meet or a stream already
failed: concurrent updaters never adopt each other's session, and a push after a known
stream failure raises that failure instead of queueing more data. Over both transports."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pytest

from fsm import ActionFailed, FlightAction, MosaicoProtocolError, SessionStatus
from fsm.engine import Client
from fsm.engine.session import SessionWriter
from fsm.faults import Fault, FaultEffect
from fsm.outcome import Outcome
from fsm.transport import Transport
from tests.harness import KIND_PARAMS, Forward, Harness, harness, inject_faults

SCHEMA = pa.schema(
    [pa.field("timestamp_ns", pa.int64(), nullable=False), pa.field("x", pa.float64())]
)


def _batch(start: int, n: int) -> pa.RecordBatch:
    ts = list(range(start, start + n))
    return pa.record_batch(
        [pa.array(ts, pa.int64()), pa.array([t / 10 for t in ts])], schema=SCHEMA
    )


@pytest.fixture(params=KIND_PARAMS)
def h(request: pytest.FixtureRequest) -> Iterator[Harness]:
    with harness(request.param) as hh:
        yield hh


class _Meanwhile(Forward):
    """Forwards to a transport; runs `meanwhile` once, just before the first session_create."""

    def __init__(self, inner: Transport, meanwhile: object) -> None:
        super().__init__(inner)
        self.meanwhile = meanwhile

    def action_raw(self, action_type: str, body: bytes) -> Outcome:
        if action_type == FlightAction.SESSION_CREATE.value and self.meanwhile is not None:
            run, self.meanwhile = self.meanwhile, None
            run()  # type: ignore[operator]
        return self.inner.action_raw(action_type, body)


def test_concurrent_updaters_never_adopt_each_others_session(h: Harness) -> None:
    """Updater A's session_create reply is lost while updater B opened a session of its own
    in between: A's probe sees two fresh sessions and must not take B's."""
    with Client(h.transport()).sequence_create("run") as seq:
        seq.topic_create("a", schema=SCHEMA, ontology_tag="imu").push(_batch(0, 2))
    inject_faults(h, Fault("SESSION_CREATE", 2, FaultEffect.LOSE_REPLY))
    other: list[SessionWriter] = []

    def b_enters() -> None:
        other.append(Client(h.transport()).sequence_update("run").__enter__())

    a = Client(_Meanwhile(h.transport(), b_enters)).sequence_update("run")
    with pytest.raises(MosaicoProtocolError):
        a.__enter__()
    (b,) = other
    assert h.schedule is not None
    assert [f.describe() for f in h.schedule.fired] == ["SESSION_CREATE#2:lose_reply"]
    assert b.session_uuid is not None
    assert a.session_uuid != b.session_uuid, "A adopted B's session"
    b.topic_create("b", schema=SCHEMA, ontology_tag="imu").push(_batch(10, 2))
    b.__exit__(None, None, None)
    assert b.session_status is SessionStatus.Finalized
    mine = h.model.snapshot()["sessions"][b.session_uuid]
    assert mine == {"sequence": "run", "state": "finalized", "topics": ["run/b"]}


def test_an_updater_adopts_its_own_session_beside_an_idle_one_it_saw(h: Harness) -> None:
    """An empty open session that A saw before creating its own does not stop A's probe from
    settling A's lost session_create: A adopts its own session and finishes."""
    with Client(h.transport()).sequence_create("run") as seq:
        seq.topic_create("a", schema=SCHEMA, ontology_tag="imu").push(_batch(0, 2))
    idle = Client(h.transport()).sequence_update("run").__enter__()
    inject_faults(h, Fault("SESSION_CREATE", 1, FaultEffect.LOSE_REPLY))
    with Client(h.transport()).sequence_update("run") as a:
        a.topic_create("b", schema=SCHEMA, ontology_tag="imu").push(_batch(10, 2))
    assert a.session_status is SessionStatus.Finalized
    assert a.session_uuid not in (None, idle.session_uuid)
    sessions = h.model.snapshot()["sessions"]
    assert sessions[idle.session_uuid]["topics"] == []
    assert sessions[str(a.session_uuid)]["topics"] == ["run/b"]


def test_a_push_after_a_known_stream_failure_raises_it(h: Harness) -> None:
    """Once a push reported the stream's failure (its second write was dropped), every later
    push raises too, and nothing more reaches the server."""
    inject_faults(h, Fault("STREAM_WRITE", 2, FaultEffect.DROP_STREAM))
    seq = Client(h.transport()).sequence_create("run").__enter__()
    imu = seq.topic_create("imu", schema=SCHEMA, ontology_tag="imu")
    first: MosaicoProtocolError | None = None
    for start in range(0, 100, 2):  # the failure surfaces at a push or flush, soon after
        try:
            imu.push(_batch(start, 2))
            imu.flush()
        except MosaicoProtocolError as exc:
            first = exc
            break
    assert isinstance(first, ActionFailed), "the dropped stream never surfaced"
    stored = h.model.snapshot()["topics"]["run/imu"]
    for start in (200, 202):
        with pytest.raises(MosaicoProtocolError):
            imu.push(_batch(start, 2))
    with pytest.raises(MosaicoProtocolError):
        imu.push_row({"timestamp_ns": 300, "x": 1.0})
    assert h.model.snapshot()["topics"]["run/imu"] == stored
    assert stored["state"] == "created", "a broken stream locks nothing"
