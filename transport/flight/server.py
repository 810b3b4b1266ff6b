"""The Flight reference server: a `ServerModel` behind pyarrow.flight, moto-style.

Any Mosaico client, the real SDK included, can connect to it. It answers ListFlights,
DoAction (every action of the catalogue), DoPut, GetFlightInfo and DoGet in the shapes of
PROTOCOL.md; the other RPCs answer UNIMPLEMENTED. A `FaultPlan` makes chosen calls fail, lose
their reply (the client sees UNAVAILABLE after the server applied the call) or break a stream.

`start_server()` runs it in-process (port 0 picks a free port) for tests; `serve_forever()`
is what `mosaico-fsm serve` runs, stopping cleanly on SIGINT or SIGTERM.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, TypeVar

import attrs
import pyarrow as pa
from pyarrow import flight

from fsm.faults import Fault, FaultEffect, FaultPlan, FaultSchedule
from fsm.outcome import ErrorKind
from transport.flight.codec import (
    encode_envelope,
    error_to_flight,
    lost_reply_error,
    render_flight_info,
)
from transport.server.auth import HEADER, Principal
from transport.server.errors import ServerError
from transport.server.model import PutHandle, ServerModel

__all__ = [
    "ReferenceServer",
    "RunningServer",
    "SignalStop",
    "TlsFiles",
    "serve_forever",
    "start_server",
]

log = logging.getLogger("mosaico_fsm.server")
T = TypeVar("T")


@attrs.frozen
class TlsFiles:
    """A PEM certificate chain and its private key."""

    cert: Path
    key: Path

    def pair(self) -> flight.CertKeyPair:
        return flight.CertKeyPair(self.cert.read_bytes(), self.key.read_bytes())


class _Token(flight.ServerMiddleware):  # type: ignore[misc]
    def __init__(self, token: str | None) -> None:
        self.token = token


class _TokenFactory(flight.ServerMiddlewareFactory):  # type: ignore[misc]
    """Keeps the mosaico-api-key-token header of each call for the handlers."""

    def start_call(self, info: flight.CallInfo, headers: dict[str, list[Any]]) -> _Token:
        values = headers.get(HEADER) or []
        token = values[0] if values else None
        if isinstance(token, bytes):
            token = token.decode("utf-8", "replace")
        return _Token(token)


def _fault_error(fault: Fault, what: str) -> Exception:
    if fault.effect is FaultEffect.FAIL:
        return error_to_flight(fault.kind, f"injected fault {fault.describe()} on {what}")
    if fault.effect is FaultEffect.DROP_STREAM:
        return error_to_flight(
            ErrorKind.CANCELLED, f"injected fault {fault.describe()}: stream dropped"
        )
    return lost_reply_error(f"injected fault {fault.describe()} on {what}")


class ReferenceServer(flight.FlightServerBase):  # type: ignore[misc]
    """The Flight front of a `ServerModel`."""

    def __init__(
        self,
        model: ServerModel,
        location: str,
        *,
        faults: FaultPlan | FaultSchedule | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        self.model = model
        self.faults = faults if isinstance(faults, FaultSchedule) else FaultSchedule(faults)
        super().__init__(
            location,
            tls_certificates=[tls.pair()] if tls else None,
            middleware={"token": _TokenFactory()},
        )

    # -------------------------------------------------------------------------------------------

    def _principal(self, context: flight.ServerCallContext) -> Principal:
        middleware = context.get_middleware("token")
        token = middleware.token if middleware is not None else None
        return self.model.authenticate(token)

    def _guarded(
        self, operation: str, what: str, apply: Callable[[], T], body: bytes | None = None
    ) -> T:
        """Run `apply` under the fault plan; ServerError becomes the matching Flight error.
        The server's side of the call is observed (see ServerModel.observe)."""
        fault = self.faults.next(operation)
        if fault is not None and fault.effect is not FaultEffect.LOSE_REPLY:
            log.debug("%s: injected %s", what, fault.describe())
            self.model.observe(operation, fault.kind.value, body=body)
            raise _fault_error(fault, what)
        try:
            result = apply()
        except ServerError as exc:
            log.debug("%s: refused %s", what, exc)
            self.model.observe(operation, exc.kind.value, body=body)
            if fault is not None:
                raise _fault_error(fault, what) from None
            raise error_to_flight(exc.kind, exc.message) from None
        self.model.observe(operation, "ok", body=body)
        if fault is not None:
            log.debug("%s: applied, reply lost by %s", what, fault.describe())
            raise _fault_error(fault, what)
        return result

    # -------------------------------------------------------------------------------------------
    # RPCs

    def do_action(
        self, context: flight.ServerCallContext, action: flight.Action
    ) -> Iterator[bytes]:
        action_type = action.type
        body = action.body.to_pybytes() if action.body is not None else b""
        log.debug("DoAction %s %s", action_type, body[:200])
        op = self.model.spec.operation_for_wire(action_type)

        def apply() -> bytes:
            response = self.model.handle_action(self._principal(context), action_type, body)
            return encode_envelope(action_type, response)

        envelope = self._guarded(
            op.name if op else "UNKNOWN_ACTION", f"DoAction {action_type}", apply, body
        )
        return iter([envelope])

    def list_flights(
        self, context: flight.ServerCallContext, criteria: bytes
    ) -> Iterator[flight.FlightInfo]:
        log.debug("ListFlights %r", criteria)
        names = self._guarded(
            "LIST_FLIGHTS",
            "ListFlights",
            lambda: self.model.list_sequences(self._principal(context), bytes(criteria or b"")),
        )
        empty = pa.schema([])
        for name in names:
            descriptor = flight.FlightDescriptor.for_path(name)
            yield flight.FlightInfo(
                empty, descriptor, [flight.FlightEndpoint(name.encode(), [])], -1, -1
            )

    def get_flight_info(
        self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor
    ) -> flight.FlightInfo:
        kind = "cmd" if descriptor.descriptor_type == flight.DescriptorType.CMD else "path"
        command = bytes(descriptor.command or b"") if kind == "cmd" else b""
        log.debug("GetFlightInfo %s %r", kind, command[:200])
        view = self._guarded(
            "GET_FLIGHT_INFO",
            "GetFlightInfo",
            lambda: self.model.flight_info(self._principal(context), kind, command),
            command,
        )
        return render_flight_info(view, descriptor)

    def do_get(
        self, context: flight.ServerCallContext, ticket: flight.Ticket
    ) -> flight.FlightDataStream:
        log.debug("DoGet %r", ticket.ticket[:200])
        data = self._guarded(
            "DO_GET", "DoGet", lambda: self.model.read(self._principal(context), ticket.ticket)
        )
        return flight.GeneratorStream(data.schema, iter(data.batches))

    def do_put(
        self,
        context: flight.ServerCallContext,
        descriptor: flight.FlightDescriptor,
        reader: flight.MetadataRecordBatchReader,
        writer: flight.FlightMetadataWriter,
    ) -> None:
        kind = "cmd" if descriptor.descriptor_type == flight.DescriptorType.CMD else "path"
        command = bytes(descriptor.command or b"") if kind == "cmd" else b""
        log.debug("DoPut %s %r", kind, command[:200])
        handle: PutHandle = self._guarded_open(context, kind, command, reader.schema)
        while True:
            try:
                chunk = reader.read_chunk()
            except StopIteration:
                break
            except Exception as exc:  # the client went away or cancelled: nothing is locked
                log.debug("DoPut %s: stream broken: %s", handle.locator, exc)
                self.model.put_cancel(handle)
                self.model.observe("DO_PUT_CANCEL", "cancelled", locator=handle.locator)
                raise error_to_flight(ErrorKind.CANCELLED, f"stream broken: {exc}") from None
            if chunk.data is None:  # a message without data: the client aborts the stream
                log.debug("DoPut %s: aborted by the client", handle.locator)
                self.model.put_cancel(handle)
                self.model.observe("DO_PUT_CANCEL", "aborted", locator=handle.locator)
                raise error_to_flight(
                    ErrorKind.ABORTED, "the client aborted the stream; nothing was committed"
                )
            self._guarded_stream(
                handle,
                "STREAM_WRITE",
                partial(self.model.put_write, handle, chunk.data),
                chunk.data.num_rows,
            )
        self._guarded_stream(handle, "STREAM_CLOSE", lambda: self.model.put_end(handle))

    def _guarded_open(
        self, context: flight.ServerCallContext, kind: str, command: bytes, schema: pa.Schema
    ) -> PutHandle:
        fault = self.faults.next("STREAM_OPEN")
        if fault is not None and fault.effect is FaultEffect.FAIL:
            self.model.observe("DO_PUT_OPEN", fault.kind.value, body=command)
            raise _fault_error(fault, "DoPut")
        try:
            handle = self.model.put_open(self._principal(context), kind, command, schema)
        except ServerError as exc:
            self.model.observe("DO_PUT_OPEN", exc.kind.value, body=command)
            raise error_to_flight(exc.kind, exc.message) from None
        self.model.observe("DO_PUT_OPEN", "ok", locator=handle.locator)
        if fault is not None:
            self.model.put_cancel(handle)
            self.model.observe("DO_PUT_CANCEL", "cancelled", locator=handle.locator)
            raise _fault_error(fault, "DoPut")
        return handle

    def _guarded_stream(
        self, handle: PutHandle, operation: str, apply: Callable[[], None], rows: int | None = None
    ) -> None:
        phase = "DO_PUT_WRITE" if operation == "STREAM_WRITE" else "DO_PUT_END"

        def observe(outcome: str) -> None:
            self.model.observe(phase, outcome, locator=handle.locator, rows=rows)

        def cancel(outcome: str) -> None:
            self.model.put_cancel(handle)
            self.model.observe("DO_PUT_CANCEL", outcome, locator=handle.locator)

        fault = self.faults.next(operation)
        if fault is not None and fault.effect is not FaultEffect.LOSE_REPLY:
            observe(fault.kind.value)
            cancel(fault.kind.value)
            raise _fault_error(fault, f"DoPut {handle.locator}")
        try:
            apply()
        except ServerError as exc:
            observe(exc.kind.value)
            cancel(exc.kind.value)
            raise error_to_flight(exc.kind, exc.message) from None
        observe("ok")
        if fault is not None:
            if operation != "STREAM_CLOSE":
                cancel("cancelled")
            raise _fault_error(fault, f"DoPut {handle.locator}")

    def list_actions(self, context: flight.ServerCallContext) -> Any:
        raise error_to_flight(ErrorKind.UNIMPLEMENTED, "ListActions is not part of the protocol")

    def get_schema(
        self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor
    ) -> Any:
        raise error_to_flight(ErrorKind.UNIMPLEMENTED, "GetSchema is not part of the protocol")

    def do_exchange(self, context: flight.ServerCallContext, *args: Any) -> Any:
        raise error_to_flight(ErrorKind.UNIMPLEMENTED, "DoExchange is not part of the protocol")


@attrs.define
class RunningServer:
    """A reference server running in this process; a context manager that stops it."""

    server: ReferenceServer
    host: str
    tls: bool
    api_keys: dict[str, str] = attrs.field(factory=dict)
    _stopped: bool = False

    @property
    def port(self) -> int:
        return int(self.server.port)

    @property
    def model(self) -> ServerModel:
        return self.server.model

    @property
    def location(self) -> str:
        scheme = "grpc+tls" if self.tls else "grpc"
        return f"{scheme}://{self.host}:{self.port}"

    def stop(self) -> None:
        """Stop accepting calls, let running calls finish, release the port."""
        if not self._stopped:
            self._stopped = True
            self.server.shutdown()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_server(
    model: ServerModel | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    profile: str = "spec",
    auth: bool = False,
    tls: TlsFiles | None = None,
    faults: FaultPlan | FaultSchedule | None = None,
) -> RunningServer:
    """Start a reference server in this process (port 0: a free port); gRPC's own threads
    serve it until `stop()`. With `auth`, a manage key is issued into `api_keys['manage']`."""
    model = model if model is not None else ServerModel(profile=profile, auth=auth)
    scheme = "grpc+tls" if tls else "grpc"
    server = ReferenceServer(model, f"{scheme}://{host}:{port}", faults=faults, tls=tls)
    running = RunningServer(server, host, tls is not None)
    if model.auth:
        running.api_keys["manage"] = model.bootstrap_key()
    return running


class SignalStop:
    """Installs SIGINT/SIGTERM handlers that ask the server to stop; a context manager, so
    the handlers are in place before the server announces itself."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.received: list[int] = []
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)
        self.stop.set()

    def __enter__(self) -> SignalStop:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._previous.items():
            signal.signal(sig, old)


def serve_forever(
    running: RunningServer, signals: SignalStop, on_stop: Callable[[int], None] | None = None
) -> None:
    """Block until SIGINT or SIGTERM, then shut the server down cleanly.

    The wait wakes up regularly: a signal may be delivered while gRPC's threads run, and the
    main thread must get the chance to run its handler.
    """
    try:
        while not signals.stop.wait(0.2):
            pass
    finally:
        running.stop()
        if on_stop is not None and signals.received:
            on_stop(signals.received[0])
