"""The in-memory transport: a `ServerModel` in the same process, with fault injection.

Requests go through the same JSON bodies and the same model as over Flight, without a network.
Faults of a `FaultPlan` are applied by the same `FaultGate` as the Flight reference server's,
as a network would show them: a failed call is not applied; a lost reply is applied and
answered `unknown`; a dropped stream is cancelled on the server.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from fsm.faults import FaultPlan, FaultSchedule
from fsm.outcome import ErrorKind, Outcome
from fsm.transport import Descriptor, TopicData, Transport
from transport.server.errors import ServerError
from transport.server.faults import FaultGate, InjectedFault, Reading
from transport.server.model import PutHandle, ServerModel

__all__ = ["MemoryTransport"]


def _injected(exc: InjectedFault) -> Outcome:
    if exc.kind is None:
        return Outcome.unknown(exc.message)
    return Outcome.failed(exc.kind, exc.message)


def _answer(call: Callable[[], Any]) -> Outcome:
    """The outcome of one call through the gate, as a client would see it."""
    try:
        return Outcome.ok(call())
    except InjectedFault as exc:
        return _injected(exc)
    except ServerError as exc:
        return Outcome.failed(exc.kind, exc.message)


class MemoryTransport(Transport):
    """A transport to a `ServerModel` held in memory (a new empty one by default)."""

    def __init__(
        self,
        model: ServerModel | None = None,
        *,
        api_key: str | None = None,
        faults: FaultPlan | FaultSchedule | None = None,
    ) -> None:
        self.model = model if model is not None else ServerModel()
        self.api_key = api_key
        schedule = faults if isinstance(faults, FaultSchedule) else FaultSchedule(faults)
        self.gate = FaultGate(self.model, schedule)

    @property
    def faults(self) -> FaultSchedule:
        """The fault schedule applied to every call (may be replaced between calls)."""
        return self.gate.faults

    @faults.setter
    def faults(self, schedule: FaultSchedule) -> None:
        self.gate.faults = schedule

    def _call(self, operation: str, apply: Callable[[], Any], body: bytes | None = None) -> Outcome:
        return _answer(lambda: self.gate.call(operation, apply, body))

    def action_raw(self, action_type: str, body: bytes) -> Outcome:
        op = self.model.spec.operation_for_wire(action_type)

        def apply() -> Any:
            principal = self.model.authenticate(self.api_key)
            value = self.model.handle_action(principal, action_type, body)
            return json.loads(json.dumps(value))  # what a wire would give: JSON, no aliasing

        return self._call(op.name if op else "UNKNOWN_ACTION", apply, body)

    def open_stream(self, descriptor: Descriptor, schema: pa.Schema) -> Outcome:
        opened = _answer(
            lambda: self.gate.put_open(
                lambda: self.model.authenticate(self.api_key),
                descriptor.kind,
                descriptor.command,
                schema,
            )
        )
        if not opened.is_ok:
            return opened
        return Outcome.ok(_MemoryStream(self.gate, opened.value))

    def flight_info(self, descriptor: Descriptor) -> Outcome:
        return self._call(
            "GET_FLIGHT_INFO",
            lambda: self.model.flight_info(
                self.model.authenticate(self.api_key), descriptor.kind, descriptor.command
            ),
            descriptor.command,
        )

    def read(self, ticket: bytes) -> Outcome:
        opened = self.read_stream(ticket)
        if not opened.is_ok:
            return opened
        stream: _MemoryReading = opened.value
        batches = []
        while (outcome := stream.next()).is_ok and outcome.value is not None:
            batches.append(outcome.value)
        return (
            outcome if not outcome.is_ok else Outcome.ok(TopicData(stream.schema, tuple(batches)))
        )

    def read_stream(self, ticket: bytes) -> Outcome:
        opened = _answer(
            lambda: self.gate.read(lambda: self.model.authenticate(self.api_key), ticket)
        )
        return Outcome.ok(_MemoryReading(opened.value)) if opened.is_ok else opened

    def list_sequences(self, criteria: bytes = b"") -> Outcome:
        return self._call(
            "LIST_FLIGHTS",
            lambda: self.model.list_sequences(self.model.authenticate(self.api_key), criteria),
        )

    def close(self) -> None:
        return None


_CLOSED = Outcome.failed(ErrorKind.FAILED_PRECONDITION, "stream already closed")


class _MemoryReading:
    """One DoGet from the model, one batch per `next`, as a wire would deliver them."""

    def __init__(self, reading: Reading) -> None:
        self.schema = reading.schema
        self._batches = reading.batches
        self._end: Outcome | None = None

    def next(self) -> Outcome:
        if self._end is not None:
            return self._end
        try:
            return Outcome.ok(next(self._batches))
        except StopIteration:
            self._end = Outcome.ok(None)
        except InjectedFault as exc:
            self._end = _injected(exc)
        return self._end

    def close(self) -> None:
        if self._end is None:
            self._end = Outcome.failed(ErrorKind.CANCELLED, "the read was cancelled")
        self._batches.close()


class _MemoryStream:
    """One DoPut stream into the model. After a failure the stream is dead, as on a wire;
    after a clean close it answers `stream already closed` without being a failure."""

    def __init__(self, gate: FaultGate, handle: PutHandle) -> None:
        self._gate = gate
        self._handle = handle
        self._failure: Outcome | None = None
        self._closed = False

    @property
    def failure(self) -> Outcome | None:
        return self._failure

    def _ended(self) -> Outcome | None:
        """The answer of any call once the stream has ended (failed or closed), else None."""
        if self._failure is not None:
            return self._failure
        return _CLOSED if self._closed else None

    def _fail(self, outcome: Outcome, what: str) -> Outcome:
        self._failure = Outcome.failed(
            outcome.kind or ErrorKind.CANCELLED, f"stream already {what}: {outcome.detail}"
        )
        return outcome

    def write(self, batch: pa.RecordBatch) -> Outcome:
        ended = self._ended()
        if ended is not None:
            return ended
        outcome = _answer(lambda: self._gate.put_write(self._handle, batch))
        return outcome if outcome.is_ok else self._fail(outcome, "failed")

    def close(self) -> Outcome:
        ended = self._ended()
        if ended is not None:
            return ended
        self._closed = True
        outcome = _answer(lambda: self._gate.put_end(self._handle))
        return outcome if outcome.is_ok else self._fail(outcome, "closed")

    def abort(self) -> Outcome:
        if self._ended() is None:
            self._gate.put_abort(self._handle)
            self._failure = Outcome.failed(ErrorKind.CANCELLED, "stream aborted")
        return Outcome.ok()
