"""Fault injection at the front of a server: one implementation for every front end.

The in-memory transport and the Flight reference server reach their `ServerModel` through a
`FaultGate`. For each call the gate counts it in the `FaultSchedule`, decides whether a fault
applies, runs the call (or not), records in the model's trace what the server actually did,
and breaks the DoPut stream when the outcome breaks it. A front end only translates what the
gate raises into its own answers:

- `ServerError`: the server refused the call (the client sees failed with its kind);
- `InjectedFault`: a fault decided the answer (failed with `kind`, or unknown when the reply
  was lost, `kind` None).

The effects of a fault:

- `fail`: the call is not applied; the server answers the fault's kind.
- `lose_reply`: the call is applied (or refused) by the server, then the reply is lost: the
  client sees unknown. On a stream the connection is gone, so the stream is cancelled
  (a clean end that was applied stays locked).
- `lose_request`: the request never reaches the server: nothing is applied or observed, and
  the client sees unknown. On a stream the connection is gone, so the stream is cancelled;
  on STREAM_OPEN no stream was opened.
- `drop_stream`: the stream breaks (cancelled). On STREAM_OPEN the server had opened the stream
  when the connection died; on STREAM_WRITE and STREAM_CLOSE the call is not applied. On
  DO_GET the read stream breaks after half of its batches (rounded down) were sent.

A stream broken on the server is recorded as a DO_PUT_CANCEL event only when it actually
cancelled something (a refused clean end already released the topic).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Sequence
from typing import TypeVar

import attrs
import pyarrow as pa

from fsm.errors import TransportError
from fsm.faults import Fault, FaultEffect, FaultSchedule
from fsm.outcome import ErrorKind
from transport.server.auth import Principal
from transport.server.errors import ServerError
from transport.server.model import PutHandle, ServerModel

__all__ = ["FaultGate", "InjectedFault", "Reading"]

T = TypeVar("T")

_PHASES = {"STREAM_WRITE": "DO_PUT_WRITE", "STREAM_CLOSE": "DO_PUT_END"}


class InjectedFault(TransportError):
    """A fault decided the answer of a call: failed with `kind`, or, with `kind` None, the
    reply was lost (the client cannot know whether the call was applied)."""

    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        self.kind: ErrorKind | None
        if fault.effect is FaultEffect.FAIL:
            self.kind, suffix = fault.kind, ""
        elif fault.effect is FaultEffect.DROP_STREAM:
            self.kind, suffix = ErrorKind.CANCELLED, ": stream dropped"
        elif fault.effect is FaultEffect.LOSE_REQUEST:
            self.kind, suffix = None, ": request lost"
        else:
            self.kind, suffix = None, ": reply lost"
        self.message = f"injected fault {fault.describe()}{suffix}"
        super().__init__(self.message)

    @property
    def traced(self) -> str:
        """The outcome the server records for a fault that prevented the call."""
        return self.kind.value if self.kind is not None else "ok"


@attrs.frozen
class Reading:
    """A DoGet the server accepted: its schema, and its batches as the front end sends them
    (the iterator raises `InjectedFault` where a fault breaks the stream)."""

    schema: pa.Schema
    batches: Generator[pa.RecordBatch, None, None]


class FaultGate:
    """A `ServerModel` behind a `FaultSchedule`: every call of a front end goes through here."""

    def __init__(self, model: ServerModel, faults: FaultSchedule) -> None:
        self.model = model
        self.faults = faults
        self._reads_lock = threading.Lock()
        self._open_reads = 0

    @property
    def open_reads(self) -> int:
        """DoGet streams being sent right now (begun and neither finished nor cancelled)."""
        with self._reads_lock:
            return self._open_reads

    # -----------------------------------------------------------------------------------------
    # Calls that are not part of a stream: DoAction, GetFlightInfo, DoGet, ListFlights

    def call(self, operation: str, apply: Callable[[], T], body: bytes | None = None) -> T:
        """Run one request under the fault plan; the server's side of it is observed."""
        return self._run(
            operation,
            apply,
            lambda outcome: self.model.observe(operation, outcome, body=body),
            lambda outcome: None,
            self.faults.next(operation),
        )

    # -----------------------------------------------------------------------------------------
    # DoGet

    def read(self, principal: Callable[[], Principal], ticket: bytes) -> Reading:
        """Accept (or refuse) a DoGet (authenticating with `principal()`); a `drop_stream`
        fault lets half of the batches through, then breaks the stream."""
        fault = self.faults.next("DO_GET")
        drop = fault if fault is not None and fault.effect is FaultEffect.DROP_STREAM else None
        data = self._run(
            "DO_GET",
            lambda: self.model.read(principal(), ticket),
            lambda outcome: self.model.observe("DO_GET", outcome),
            lambda outcome: None,
            None if drop else fault,
        )
        return Reading(data.schema, self._send(data.batches, drop))

    def _send(
        self, batches: Sequence[pa.RecordBatch], drop: Fault | None
    ) -> Generator[pa.RecordBatch, None, None]:
        with self._reads_lock:
            self._open_reads += 1
        try:
            yield from batches[: len(batches) // 2] if drop is not None else batches
            if drop is not None:
                raise InjectedFault(drop)
        finally:
            with self._reads_lock:
                self._open_reads -= 1

    # -----------------------------------------------------------------------------------------
    # DoPut

    def put_open(
        self,
        principal: Callable[[], Principal],
        descriptor_kind: str,
        command: bytes,
        schema: pa.Schema,
    ) -> PutHandle:
        """Open a stream (authenticating with `principal()`): its handle, or a refusal."""
        fault = self.faults.next("STREAM_OPEN")
        if fault is not None and fault.effect is FaultEffect.LOSE_REQUEST:
            raise InjectedFault(fault)  # the server never saw the stream
        if fault is not None and fault.effect is FaultEffect.FAIL:
            injected = InjectedFault(fault)
            self.model.observe("DO_PUT_OPEN", injected.traced, body=command)
            raise injected
        try:
            handle = self.model.put_open(principal(), descriptor_kind, command, schema)
        except ServerError as exc:
            self.model.observe("DO_PUT_OPEN", exc.kind.value, body=command)
            if fault is not None:
                raise InjectedFault(fault) from None
            raise
        self.model.observe("DO_PUT_OPEN", "ok", locator=handle.locator)
        if fault is not None:  # the stream opened on the server, then the connection died
            self.put_cancel(handle, ErrorKind.CANCELLED.value)
            raise InjectedFault(fault)
        return handle

    def put_write(self, handle: PutHandle, batch: pa.RecordBatch) -> None:
        """Store one batch; any failure breaks the stream."""
        self._stream_call(
            handle, "STREAM_WRITE", lambda: self.model.put_write(handle, batch), batch.num_rows
        )

    def put_end(self, handle: PutHandle) -> None:
        """The clean end of a stream; any failure breaks it."""
        self._stream_call(handle, "STREAM_CLOSE", lambda: self.model.put_end(handle))

    def put_cancel(self, handle: PutHandle, outcome: str) -> bool:
        """Break the stream on the server (nothing locked; chunks kept), recorded with
        `outcome`. Idempotent: False, and nothing recorded, when the stream had already ended."""
        if not self.model.put_cancel(handle):
            return False
        self.model.observe("DO_PUT_CANCEL", outcome, locator=handle.locator)
        return True

    def put_abort(self, handle: PutHandle) -> bool:
        """The client aborted the stream (the empty message of PROTOCOL.md §6.2: aborted)."""
        return self.put_cancel(handle, ErrorKind.ABORTED.value)

    def _stream_call(
        self, handle: PutHandle, operation: str, apply: Callable[[], None], rows: int | None = None
    ) -> None:
        phase = _PHASES[operation]
        self._run(
            operation,
            apply,
            lambda outcome: self.model.observe(phase, outcome, locator=handle.locator, rows=rows),
            lambda outcome: self.put_cancel(handle, outcome),
            self.faults.next(operation),
        )

    # -----------------------------------------------------------------------------------------

    def _run(
        self,
        operation: str,
        apply: Callable[[], T],
        observe: Callable[[str], None],
        broken: Callable[[str], object],
        fault: Fault | None,
    ) -> T:
        """The one rule of every call: given its `fault`, apply (or not), observe what the
        server did, break the stream (`broken`) unless the call ended well, then answer."""
        if fault is not None and fault.effect is FaultEffect.LOSE_REQUEST:
            broken(ErrorKind.CANCELLED.value)  # the server saw only the connection die
            raise InjectedFault(fault)
        if fault is not None and fault.effect is not FaultEffect.LOSE_REPLY:
            injected = InjectedFault(fault)
            observe(injected.traced)
            broken(injected.traced)
            raise injected
        try:
            value = apply()
        except ServerError as exc:
            observe(exc.kind.value)
            broken(exc.kind.value)
            if fault is not None:
                raise InjectedFault(fault) from None
            raise
        observe("ok")
        if fault is not None:
            broken(ErrorKind.CANCELLED.value)
            raise InjectedFault(fault)
        return value
