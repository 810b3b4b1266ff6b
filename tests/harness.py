"""Test harness: the same server model behind either transport.

`Harness.transport()` gives a new client transport to the harness's server: in memory, or
over Arrow Flight to an in-process reference server on 127.0.0.1 (port 0). Faults are applied
where each transport applies them (the memory transport, or the Flight server).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any, NoReturn

import attrs
import pyarrow as pa
import pytest
from hypothesis import settings

from fsm.enums import FlightAction
from fsm.faults import Fault, FaultPlan, FaultSchedule
from fsm.outcome import ErrorKind, Outcome, OutcomeStatus
from fsm.transport import Descriptor, TopicStream, Transport
from transport.flight.client import FlightTransport
from transport.flight.server import RunningServer, start_server
from transport.memory import MemoryTransport
from transport.server.model import ServerModel

KINDS = ("memory", "flight")
KIND_PARAMS = [pytest.param(k, marks=pytest.mark.flight) if k == "flight" else k for k in KINDS]
"""KINDS as test parameters: the Flight one carries the `flight` mark (`-m "not flight"`)."""


def wait_until(check: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    """Poll `check` until it holds (work done on other threads or in a server catching up);
    fail the test, naming `what`, if it never does within `seconds` (a hang guard)."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.002)


def profile_examples(share: float = 1.0, minimum: int = 10) -> int:
    """`share` of the active Hypothesis profile's example count (at least `minimum`), so a
    costly property test scales with the profile (quick locally, thorough under `ci`)."""
    return max(minimum, math.ceil(settings().max_examples * share))


def require_sdk() -> ModuleType:
    """The mosaicolabs SDK, or a skip when the interop extra is not installed. CI sets
    MOSAICO_FSM_REQUIRE_SDK=1, which turns a missing SDK into an error instead of a skip, so
    the interop tests cannot silently drop out of a run that should have them."""
    if os.environ.get("MOSAICO_FSM_REQUIRE_SDK") == "1":
        import mosaicolabs

        return mosaicolabs
    return pytest.importorskip("mosaicolabs", reason="the interop extra installs the SDK")


def sdk_missing(message: str) -> NoReturn:
    """An SDK release the test needs is not installed: a skip here, a failure where CI sets
    MOSAICO_FSM_REQUIRE_SDK=1 (there every release is installed, or the run is wrong)."""
    if os.environ.get("MOSAICO_FSM_REQUIRE_SDK") == "1":
        pytest.fail(message)
    pytest.skip(message)


SCHEMA = pa.schema([("timestamp_ns", pa.int64()), ("value", pa.float64())])
"""A small two-column schema the transport tests write."""


def batch(start: int, rows: int = 2) -> pa.RecordBatch:
    """`rows` rows of SCHEMA stamped start, start + 1, ..."""
    stamps = list(range(start, start + rows))
    return pa.record_batch(
        [pa.array(stamps, pa.int64()), pa.array([float(s) for s in stamps])], schema=SCHEMA
    )


def ok(outcome: Outcome) -> Any:
    """The value of an outcome that must be ok."""
    assert outcome.status is OutcomeStatus.OK, f"expected ok, got {outcome}"
    return outcome.value


def failed_with(outcome: Outcome, kind: ErrorKind) -> None:
    """Fails the test unless the outcome failed with exactly `kind`."""
    assert outcome.status is OutcomeStatus.FAILED, f"expected failed {kind.value}, got {outcome}"
    assert outcome.kind is kind, f"expected {kind.value}, got {outcome}"


@attrs.define
class Harness:
    kind: str
    model: ServerModel
    server: RunningServer | None = None
    schedule: FaultSchedule | None = None
    opened: list[Transport] = attrs.field(factory=list)

    def transport(self, api_key: str | None = None) -> Transport:
        t: Transport
        if self.kind == "memory":
            t = MemoryTransport(self.model, api_key=api_key, faults=self.schedule)
        else:
            assert self.server is not None
            t = FlightTransport(self.server.location, api_key=api_key)
        self.opened.append(t)
        return t

    def close(self) -> None:
        for t in self.opened:
            t.close()
        if self.server is not None:
            self.server.stop()


@contextmanager
def harness(
    kind: str,
    *,
    profile: str = "spec",
    auth: bool = False,
    faults: FaultPlan | None = None,
    seed: int | None = 0,
) -> Iterator[Harness]:
    model = ServerModel(profile=profile, auth=auth, seed=seed)
    schedule = FaultSchedule(faults)
    h = Harness(kind, model, schedule=schedule)
    if kind == "flight":
        h.server = start_server(model, faults=schedule)
    try:
        yield h
    finally:
        h.close()


def expect_ok(outcome: Outcome, what: str) -> Any:
    """The value of a successful outcome; fails the test, naming `what`, otherwise."""
    assert outcome.status is OutcomeStatus.OK, f"{what}: {outcome.kind} {outcome.detail}"
    return outcome.value


def topic_args(session: str, locator: str) -> dict[str, Any]:
    """TOPIC_CREATE arguments for a Default-format IMU topic without user metadata."""
    return {
        "session_uuid": session,
        "locator": locator,
        "serialization_format": "default",
        "ontology_tag": "imu",
        "user_metadata": {},
    }


def create_sequence(t: Transport, name: str) -> str:
    """A new sequence `name` with an open session; answers the session's uuid."""
    ok(t.action(FlightAction.SEQUENCE_CREATE, {"locator": name, "user_metadata": {"n": name}}))
    return str(ok(t.action(FlightAction.SESSION_CREATE, {"locator": name}))["uuid"])


def create_topic(t: Transport, session: str, locator: str) -> str:
    """A Default-format topic in `session`; answers its uuid."""
    return str(ok(t.action(FlightAction.TOPIC_CREATE, topic_args(session, locator)))["uuid"])


def put_batches(
    t: Transport, descriptor: Descriptor, schema: pa.Schema, batches: list[Any]
) -> Outcome:
    """A whole DoPut: open, write each batch, close. The first failure is the answer."""
    opened = t.open_stream(descriptor, schema)
    if not opened.is_ok:
        return opened
    stream: TopicStream = opened.value
    for batch in batches:
        written = stream.write(batch)
        if not written.is_ok:
            return written
    return stream.close()


class Forward(Transport):
    """Forwards every call to `inner`; tests override the calls they break."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner

    def action_raw(self, action_type: str, body: bytes) -> Outcome:
        return self.inner.action_raw(action_type, body)

    def open_stream(self, descriptor: Descriptor, schema: pa.Schema) -> Outcome:
        return self.inner.open_stream(descriptor, schema)

    def flight_info(self, descriptor: Descriptor) -> Outcome:
        return self.inner.flight_info(descriptor)

    def read(self, ticket: bytes) -> Outcome:
        return self.inner.read(ticket)

    def list_sequences(self, criteria: bytes = b"") -> Outcome:
        return self.inner.list_sequences(criteria)

    def close(self) -> None:
        self.inner.close()


def inject_faults(h: Harness, *faults: Fault) -> None:
    """Make the harness's transports, and its Flight server when there is one, run `faults`."""
    h.schedule = FaultSchedule(FaultPlan(faults))
    if h.server is not None:
        h.server.server.faults = h.schedule
