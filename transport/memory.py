"""The in-memory transport: a `ServerModel` in the same process, with fault injection.

Requests go through the same JSON bodies and the same model as over Flight, without a network.
Faults of a `FaultPlan` are applied at the transport boundary, as a network would show them:
a failed call is not applied; a lost reply is applied and answered `unknown`; a dropped stream
is cancelled on the server.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from fsm.faults import Fault, FaultEffect, FaultPlan, FaultSchedule
from fsm.outcome import ErrorKind, Outcome
from fsm.transport import Descriptor, Transport
from transport.server.errors import ServerError
from transport.server.model import PutHandle, ServerModel

__all__ = ["MemoryTransport"]


def _injected(fault: Fault) -> Outcome:
    if fault.effect is FaultEffect.FAIL:
        return Outcome.failed(fault.kind, f"injected fault {fault.describe()}")
    if fault.effect is FaultEffect.DROP_STREAM:
        return Outcome.failed(
            ErrorKind.CANCELLED, f"injected fault {fault.describe()}: stream dropped"
        )
    return Outcome.unknown(f"injected fault {fault.describe()}: reply lost")


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
        self.faults = faults if isinstance(faults, FaultSchedule) else FaultSchedule(faults)

    def _call(self, operation: str, apply: Callable[[], Any], body: bytes | None = None) -> Outcome:
        """Run one request under the fault plan; the server's side of it is observed."""
        fault = self.faults.next(operation)
        if fault is not None and fault.effect is not FaultEffect.LOSE_REPLY:
            self.model.observe(operation, fault.kind.value, body=body)
            return _injected(fault)
        try:
            value = apply()
        except ServerError as exc:
            self.model.observe(operation, exc.kind.value, body=body)
            return _injected(fault) if fault is not None else Outcome.failed(exc.kind, exc.message)
        self.model.observe(operation, "ok", body=body)
        return _injected(fault) if fault is not None else Outcome.ok(value)

    def action_raw(self, action_type: str, body: bytes) -> Outcome:
        op = self.model.spec.operation_for_wire(action_type)

        def apply() -> Any:
            principal = self.model.authenticate(self.api_key)
            value = self.model.handle_action(principal, action_type, body)
            return json.loads(json.dumps(value))  # what a wire would give: JSON, no aliasing

        return self._call(op.name if op else "UNKNOWN_ACTION", apply, body)

    def open_stream(self, descriptor: Descriptor, schema: pa.Schema) -> Outcome:
        fault = self.faults.next("STREAM_OPEN")
        observe = self.model.observe
        if fault is not None and fault.effect is FaultEffect.FAIL:
            observe("DO_PUT_OPEN", fault.kind.value, body=descriptor.command)
            return _injected(fault)
        try:
            principal = self.model.authenticate(self.api_key)
            handle = self.model.put_open(principal, descriptor.kind, descriptor.command, schema)
        except ServerError as exc:
            observe("DO_PUT_OPEN", exc.kind.value, body=descriptor.command)
            return _injected(fault) if fault is not None else Outcome.failed(exc.kind, exc.message)
        observe("DO_PUT_OPEN", "ok", locator=handle.locator)
        if fault is not None:  # the stream opened on the server, then the connection died
            self.model.put_cancel(handle)
            observe("DO_PUT_CANCEL", "cancelled", locator=handle.locator)
            return _injected(fault)
        return Outcome.ok(_MemoryStream(self, handle))

    def flight_info(self, descriptor: Descriptor) -> Outcome:
        return self._call(
            "GET_FLIGHT_INFO",
            lambda: self.model.flight_info(
                self.model.authenticate(self.api_key), descriptor.kind, descriptor.command
            ),
            descriptor.command,
        )

    def read(self, ticket: bytes) -> Outcome:
        return self._call(
            "DO_GET", lambda: self.model.read(self.model.authenticate(self.api_key), ticket)
        )

    def list_sequences(self, criteria: bytes = b"") -> Outcome:
        return self._call(
            "LIST_FLIGHTS",
            lambda: self.model.list_sequences(self.model.authenticate(self.api_key), criteria),
        )

    def close(self) -> None:
        return None


class _MemoryStream:
    """One DoPut stream into the model. After a failure the stream is dead, as on a wire."""

    def __init__(self, transport: MemoryTransport, handle: PutHandle) -> None:
        self._transport = transport
        self._model = transport.model
        self._handle = handle
        self._dead: Outcome | None = None

    @property
    def failure(self) -> Outcome | None:
        return self._dead

    def _observe(self, operation: str, outcome: str, rows: int | None = None) -> None:
        self._model.observe(operation, outcome, locator=self._handle.locator, rows=rows)

    def _break(self, outcome: Outcome) -> Outcome:
        self._model.put_cancel(self._handle)
        self._observe("DO_PUT_CANCEL", (outcome.kind or ErrorKind.CANCELLED).value)
        self._dead = Outcome.failed(
            outcome.kind or ErrorKind.CANCELLED, f"stream already failed: {outcome.detail}"
        )
        return outcome

    def write(self, batch: pa.RecordBatch) -> Outcome:
        if self._dead is not None:
            return self._dead
        fault = self._transport.faults.next("STREAM_WRITE")
        if fault is not None and fault.effect is not FaultEffect.LOSE_REPLY:
            self._observe("DO_PUT_WRITE", fault.kind.value, batch.num_rows)
            return self._break(_injected(fault))
        try:
            self._model.put_write(self._handle, batch)
        except ServerError as exc:
            self._observe("DO_PUT_WRITE", exc.kind.value, batch.num_rows)
            return self._break(Outcome.failed(exc.kind, exc.message))
        self._observe("DO_PUT_WRITE", "ok", batch.num_rows)
        if fault is not None:
            return self._break(_injected(fault))
        return Outcome.ok()

    def close(self) -> Outcome:
        if self._dead is not None:
            return self._dead
        fault = self._transport.faults.next("STREAM_CLOSE")
        if fault is not None and fault.effect is not FaultEffect.LOSE_REPLY:
            self._observe("DO_PUT_END", fault.kind.value)
            return self._break(_injected(fault))
        try:
            self._model.put_end(self._handle)
        except ServerError as exc:
            self._observe("DO_PUT_END", exc.kind.value)
            self._dead = Outcome.failed(exc.kind, f"stream already closed: {exc.message}")
            return Outcome.failed(exc.kind, exc.message)
        self._observe("DO_PUT_END", "ok")
        self._dead = Outcome.failed(ErrorKind.FAILED_PRECONDITION, "stream already closed")
        return _injected(fault) if fault is not None else Outcome.ok()

    def abort(self) -> Outcome:
        if self._dead is None:
            self._break(Outcome.failed(ErrorKind.CANCELLED, "aborted by the client"))
        return Outcome.ok()
