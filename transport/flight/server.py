"""The Flight reference server: a `ServerModel` behind pyarrow.flight, moto-style.

Any Mosaico client, the real SDK included, can connect to it. It answers ListFlights,
DoAction (every action of the catalogue), DoPut, GetFlightInfo and DoGet in the shapes of
PROTOCOL.md; the other RPCs answer UNIMPLEMENTED. A `FaultPlan` makes chosen calls fail, lose
their reply (the client sees UNAVAILABLE after the server applied the call) or break a stream,
exactly as in the in-memory transport (both apply it through `transport.server.faults`).

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
from typing import Any, NoReturn, TypeVar

import attrs
import pyarrow as pa
from pyarrow import flight

from fsm.faults import FaultPlan, FaultSchedule
from fsm.outcome import ErrorKind
from transport.flight.codec import (
    encode_envelope,
    error_to_flight,
    lost_reply_error,
    render_flight_info,
)
from transport.server.auth import HEADER, Principal
from transport.server.errors import ServerError
from transport.server.faults import FaultGate, InjectedFault
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

STOP_TIMEOUT = 5.0
"""Seconds `RunningServer.stop` waits for running calls before giving up on them."""


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


class ReferenceServer(flight.FlightServerBase):  # type: ignore[misc]
    """The Flight front of a `ServerModel`; faults are applied by a `FaultGate`."""

    def __init__(
        self,
        model: ServerModel,
        location: str,
        *,
        faults: FaultPlan | FaultSchedule | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        self.model = model
        schedule = faults if isinstance(faults, FaultSchedule) else FaultSchedule(faults)
        self.gate = FaultGate(model, schedule)
        self._stopping = threading.Event()
        self._puts_lock = threading.Lock()
        self._puts: dict[int, PutHandle] = {}
        super().__init__(
            location,
            tls_certificates=[tls.pair()] if tls else None,
            middleware={"token": _TokenFactory()},
        )

    @property
    def faults(self) -> FaultSchedule:
        """The fault schedule applied to every call (may be replaced between calls)."""
        return self.gate.faults

    @faults.setter
    def faults(self, schedule: FaultSchedule) -> None:
        self.gate.faults = schedule

    # -------------------------------------------------------------------------------------------
    # Stopping

    def begin_stop(self) -> None:
        """From now on, a DoPut stream that sends anything (or ends) is cancelled instead of
        being applied: a stopping server commits nothing more."""
        self._stopping.set()

    def cancel_open_streams(self) -> list[str]:
        """Cancel, in the model, every DoPut stream still open (their calls end when their
        clients go away); answers their topics."""
        with self._puts_lock:
            handles = list(self._puts.values())
        for handle in handles:
            self.gate.put_cancel(handle, ErrorKind.CANCELLED.value)
        return [h.locator for h in handles]

    # -------------------------------------------------------------------------------------------

    def _principal(self, context: flight.ServerCallContext) -> Principal:
        middleware = context.get_middleware("token")
        token = middleware.token if middleware is not None else None
        return self.model.authenticate(token)

    @staticmethod
    def _answer(what: str, call: Callable[[], T]) -> T:
        """Run `call` (through the gate); its refusal or injected fault becomes the matching
        Flight error."""
        try:
            return call()
        except InjectedFault as exc:
            log.debug("%s: %s", what, exc.message)
            if exc.kind is None:
                raise lost_reply_error(exc.message) from None
            raise error_to_flight(exc.kind, exc.message) from None
        except ServerError as exc:
            log.debug("%s: refused %s", what, exc)
            raise error_to_flight(exc.kind, exc.message) from None

    def _guarded(
        self, operation: str, what: str, apply: Callable[[], T], body: bytes | None = None
    ) -> T:
        return self._answer(what, lambda: self.gate.call(operation, apply, body))

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
        reading = self._answer(
            "DoGet", lambda: self.gate.read(lambda: self._principal(context), ticket.ticket)
        )
        return flight.GeneratorStream(reading.schema, self._sent("DoGet", reading.batches))

    @staticmethod
    def _sent(what: str, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """The batches of a DoGet; a fault that breaks the stream ends the call with its
        Flight error after the batches already sent."""
        try:
            yield from batches
        except InjectedFault as exc:
            log.debug("%s: %s", what, exc.message)
            raise error_to_flight(exc.kind or ErrorKind.CANCELLED, exc.message) from None

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
        handle = self._answer(
            "DoPut",
            lambda: self.gate.put_open(
                lambda: self._principal(context), kind, command, reader.schema
            ),
        )
        with self._puts_lock:
            self._puts[handle.stream] = handle
        try:
            self._receive(context, handle, reader)
        finally:
            with self._puts_lock:
                self._puts.pop(handle.stream, None)
            # Whatever ended the call, a stream that did not end cleanly leaves nothing
            # receiving (a no-op, not recorded, when it already ended).
            self.gate.put_cancel(handle, ErrorKind.INTERNAL.value)

    def _receive(
        self,
        context: flight.ServerCallContext,
        handle: PutHandle,
        reader: flight.MetadataRecordBatchReader,
    ) -> None:
        """Store the stream's batches, then end it cleanly (or refuse, or cancel it)."""
        what = f"DoPut {handle.locator}"
        while True:
            try:
                chunk = reader.read_chunk()
            except StopIteration:
                break
            except (flight.FlightError, pa.ArrowException, OSError) as exc:
                if context.is_cancelled() or isinstance(exc, flight.FlightCancelledError):
                    self._end_early(handle, ErrorKind.CANCELLED, f"stream broken: {exc}")
                # A message that is not a record batch: a second schema (PROTOCOL.md §6.2).
                self._end_early(handle, ErrorKind.ABORTED, f"unsupported stream message: {exc}")
            self._check_going(context, handle)
            if chunk.data is None:  # a message without data: the client aborts the stream
                log.debug("%s: aborted by the client", what)
                self.gate.put_abort(handle)
                raise error_to_flight(
                    ErrorKind.ABORTED, "the client aborted the stream; nothing was committed"
                )
            self._answer(what, partial(self.gate.put_write, handle, chunk.data))
        self._check_going(context, handle)
        self._answer(what, lambda: self.gate.put_end(handle))

    def _check_going(self, context: flight.ServerCallContext, handle: PutHandle) -> None:
        """Cancel the stream when its client went away (the end of its messages is then no
        clean end) or the server is stopping."""
        if context.is_cancelled():
            self._end_early(handle, ErrorKind.CANCELLED, "the client cancelled the stream")
        if self._stopping.is_set():
            self._end_early(handle, ErrorKind.CANCELLED, "the server is stopping")

    def _end_early(self, handle: PutHandle, kind: ErrorKind, message: str) -> NoReturn:
        log.debug("DoPut %s: %s", handle.locator, message)
        self.gate.put_cancel(handle, kind.value)
        raise error_to_flight(kind, f"{message}; nothing was committed")

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
    _shutdown: threading.Thread | None = None

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

    @property
    def stopped(self) -> bool:
        """True once the server has stopped: every call ended and the port is released."""
        return self._shutdown is not None and not self._shutdown.is_alive()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop accepting calls, let running calls finish, release the port.

        A DoPut stream that sends anything more is cancelled. A stream its client left open
        without sending anything cannot be ended from the server: after `timeout` seconds
        such streams are cancelled in the model, a warning is logged and `stop` returns; the
        server finishes stopping (and releases the port) when their clients go away.
        """
        if self._shutdown is not None:
            return
        self.server.begin_stop()
        self._shutdown = threading.Thread(
            target=self.server.shutdown, name="mosaico-fsm-server-stop", daemon=True
        )
        self._shutdown.start()
        self._shutdown.join(timeout)
        if self._shutdown.is_alive():
            topics = self.server.cancel_open_streams()
            log.warning(
                "the server on %s did not stop within %.3g s: %d DoPut stream(s) left open by "
                "their client (%s) are cancelled; the port is released when they end",
                self.location,
                timeout,
                len(topics),
                ", ".join(topics) or "no stream: another call is still running",
            )

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
