"""Failures a table keeps while going on stay visible: a step that failed and was routed to
`continue` (or was overtaken by a later failure) is attached to the exception the user sees
and logged, never dropped."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pyarrow as pa
import pytest

from fsm import ActionFailed, SessionStatus
from fsm.engine import Client
from fsm.faults import Fault, FaultEffect
from fsm.outcome import ErrorKind
from tests.harness import KIND_PARAMS, Harness, harness, inject_faults

SCHEMA = pa.schema(
    [pa.field("timestamp_ns", pa.int64(), nullable=False), pa.field("x", pa.float64())]
)


class Boom(Exception):
    """The user's own exception."""


@pytest.fixture(params=KIND_PARAMS)
def h(request: pytest.FixtureRequest) -> Iterator[Harness]:
    with harness(request.param) as hh:
        yield hh


def test_a_close_failure_routed_to_continue_is_attached_to_the_users_exception(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """Report: the user's exception propagates; closing the topic failed on the way (a
    `continue` route), and that failure is a note of the user's exception and a log record."""
    inject_faults(h, Fault("STREAM_CLOSE", 1, FaultEffect.FAIL, kind=ErrorKind.INTERNAL))
    client = Client(h.transport())
    caplog.set_level(logging.WARNING)
    with pytest.raises(Boom) as raised, client.sequence_create("run") as seq:
        imu = seq.topic_create("imu", schema=SCHEMA, ontology_tag="imu")
        imu.push_row({"timestamp_ns": 1, "x": 1.0})
        raise Boom("the user's own failure")
    assert seq.session_status is SessionStatus.Error
    notes = getattr(raised.value, "__notes__", [])
    kept = [n for n in notes if n.startswith("while handling it:")]
    # The close failure, then the finalize the server refused because of it.
    assert len(kept) == 2, notes
    assert "TOPICS:close_error failed (internal)" in kept[0], kept
    assert "SESSION_FINALIZE failed (failed_precondition)" in kept[1], kept
    logged = [r.getMessage() for r in caplog.records if "kept while going on" in r.getMessage()]
    assert any("close_error" in m for m in logged), logged


def test_the_raised_failure_carries_what_failed_after_it_as_notes(h: Harness) -> None:
    """Report: the user's `with` block ends cleanly, the stream's end fails (the session then
    reports it), and the report fails too (a `stop` route): the error raised is the close
    failure, and the failed report is a note of it."""
    inject_faults(
        h,
        Fault("STREAM_CLOSE", 1, FaultEffect.FAIL, kind=ErrorKind.INTERNAL),
        Fault("SEQUENCE_NOTIFICATION_CREATE", 1, FaultEffect.FAIL, kind=ErrorKind.INTERNAL),
    )
    client = Client(h.transport())
    with pytest.raises(ActionFailed) as raised, client.sequence_create("run") as seq:
        imu = seq.topic_create("imu", schema=SCHEMA, ontology_tag="imu")
        imu.push_row({"timestamp_ns": 1, "x": 1.0})
    assert "STREAM_CLOSE failed (internal)" in str(raised.value)
    notes = getattr(raised.value, "__notes__", [])
    assert len(notes) == 1, notes
    assert notes[0].startswith("also: SEQUENCE_NOTIFICATION_CREATE failed (internal)"), notes
    assert seq.session_status is SessionStatus.Error
