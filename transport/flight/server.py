"""The Flight reference server: a `ServerModel` behind the Arrow Flight gRPC service, moto-style.

The service is written on grpcio (the Flight protobuf service, Arrow IPC through pyarrow), so
every answer is a plain gRPC status with the bare message, as mosaicod sends it: a pyarrow
client raises the same exception class with the same text against either server. It answers
ListFlights, DoAction (every action of the catalogue), DoPut, GetFlightInfo and DoGet in the
shapes of PROTOCOL.md, or of the model's protocol line (its wire shapes, chosen by name in
`transport.flight.codec.FlightShapes`); GetSchema where the line's catalogue has it;
Handshake, PollFlightInfo, ListActions and DoExchange (and GetSchema elsewhere) answer
UNIMPLEMENTED. A `FaultPlan` makes chosen calls fail, lose their reply (the client sees
UNAVAILABLE after the server applied the call) or break a stream, exactly as in the in-memory
transport (both apply it through `transport.server.faults`).

Every DoPut message is decoded and validated before the model sees it (`transport.flight.
frames`, then the model's own checks): a message the server cannot use ends the stream with a
refusal, never with an OK that leaves rows out. Resources are bounded by `ServerLimits`: the
size of one gRPC message, the number of DoPut streams open at once and how long a stream may
stay silent.

`start_server()` runs it in-process (port 0 picks a free port) for tests; `serve_forever()`
is what `mosaico-fsm serve` runs, stopping cleanly on SIGINT or SIGTERM.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, NoReturn, TypeVar

import attrs
import grpc
import pyarrow as pa
from google.protobuf.message import DecodeError

from fsm.errors import ArgumentError, TransportError
from fsm.faults import FaultPlan, FaultSchedule
from fsm.outcome import ErrorKind
from fsm.transport import SequenceInfo, TopicInfo
from transport.flight import allocator, frames
from transport.flight.call_end import half_closed
from transport.flight.codec import FlightShapes
from transport.flight.limits import ServerLimits
from transport.flight.protocol import flight_pb2 as pb
from transport.server.auth import HEADER, Principal
from transport.server.errors import ServerError
from transport.server.faults import FaultGate, InjectedFault
from transport.server.model import PutHandle, ServerModel

__all__ = [
    "ListenError",
    "ReferenceServer",
    "RunningServer",
    "ServerLimits",
    "SignalStop",
    "TlsFiles",
    "serve_forever",
    "start_server",
]

log = logging.getLogger("mosaico_fsm.server")
T = TypeVar("T")

STOP_TIMEOUT = 5.0
"""Seconds `RunningServer.stop` lets running calls finish before cancelling them."""

SERVICE = "arrow.flight.protocol.FlightService"

STATUS: dict[ErrorKind, grpc.StatusCode] = {
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    ErrorKind.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorKind.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorKind.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorKind.INTERNAL: grpc.StatusCode.INTERNAL,
    ErrorKind.CANCELLED: grpc.StatusCode.CANCELLED,
    ErrorKind.ABORTED: grpc.StatusCode.ABORTED,
    ErrorKind.UNIMPLEMENTED: grpc.StatusCode.UNIMPLEMENTED,
    ErrorKind.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
}
"""The gRPC status each error kind is answered with (PROTOCOL.md §10)."""


@attrs.frozen
class TlsFiles:
    """A PEM certificate chain and its private key."""

    cert: Path
    key: Path

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials([(self.key.read_bytes(), self.cert.read_bytes())])


RELEASE_PERIOD = 5.0
"""Seconds between two hand-backs of freed memory to the system (`allocator.release`)."""


class ListenError(TransportError, OSError):
    """The server cannot listen on the address asked for (also an `OSError`)."""


class _Refusal(Exception):
    """Ends a call with `code` and the bare `message`. Private and outside the error
    hierarchy: `_guard` turns it into the call's gRPC status, so it never leaves the server."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _refuse(kind: ErrorKind, message: str) -> _Refusal:
    return _Refusal(STATUS[kind], message)


@attrs.define(eq=False)
class _OpenStream:
    """A DoPut call in progress (its topic, once accepted, and when it last received), or a
    DoGet call in progress (when gRPC last took one of its frames)."""

    context: grpc.ServicerContext
    handle: PutHandle | None = None
    last_seen: float = attrs.field(factory=time.monotonic)
    idle: bool = False
    received: int = 0  # bytes of DoPut messages received


def _token(context: grpc.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == HEADER:
            return value if isinstance(value, str) else bytes(value).decode("utf-8", "replace")
    return None


def _parse(message: type[T], raw: bytes, what: str) -> T:
    try:
        return message.FromString(raw)  # type: ignore[attr-defined, no-any-return]
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise _refuse(ErrorKind.INVALID_ARGUMENT, f"{what} is not a valid message: {exc}") from None


def _descriptor_parts(descriptor: pb.FlightDescriptor) -> tuple[str, bytes]:
    if descriptor.type == pb.FlightDescriptor.CMD:
        return "cmd", bytes(descriptor.cmd)
    if descriptor.type == pb.FlightDescriptor.PATH:
        return "path", b""
    raise _refuse(ErrorKind.INVALID_ARGUMENT, "the descriptor is neither CMD nor PATH")


class ReferenceServer:
    """The Flight service of a `ServerModel`; faults are applied by a `FaultGate`."""

    def __init__(
        self,
        model: ServerModel,
        *,
        faults: FaultPlan | FaultSchedule | None = None,
        limits: ServerLimits | None = None,
    ) -> None:
        self.model = model
        self.limits = limits or ServerLimits()
        self.shapes = FlightShapes.of(model.line)
        _report_limits(model, self.limits)
        schedule = faults if isinstance(faults, FaultSchedule) else FaultSchedule(faults)
        self.gate = FaultGate(model, schedule)
        self._stopping = threading.Event()
        self._streams_lock = threading.Lock()
        self._streams: set[_OpenStream] = set()
        self._reads: set[_OpenStream] = set()
        self._watchdog: threading.Thread | None = None

    @property
    def faults(self) -> FaultSchedule:
        """The fault schedule applied to every call (may be replaced between calls)."""
        return self.gate.faults

    @faults.setter
    def faults(self, schedule: FaultSchedule) -> None:
        self.gate.faults = schedule

    def handler(self) -> grpc.GenericRpcHandler:
        """The gRPC handler of the Flight service (requests and replies as raw bytes)."""
        unary_stream, unary_unary = (
            grpc.unary_stream_rpc_method_handler,
            grpc.unary_unary_rpc_method_handler,
        )
        stream_stream = grpc.stream_stream_rpc_method_handler
        methods = {
            "ListFlights": unary_stream(self._guard(self.list_flights)),
            "GetFlightInfo": unary_unary(self._guard(self.get_flight_info)),
            "DoGet": unary_stream(self._guard(self.do_get)),
            "DoPut": stream_stream(self._guard(self.do_put)),
            "DoAction": unary_stream(self._guard(self.do_action)),
        }
        if "GET_SCHEMA" in self.model.spec.operations:  # the line's catalogue serves it
            methods["GetSchema"] = unary_unary(self._guard(self.get_schema))
        for name, make in (
            ("Handshake", stream_stream),
            ("PollFlightInfo", unary_unary),
            ("GetSchema", unary_unary),
            ("DoExchange", stream_stream),
            ("ListActions", unary_stream),
        ):
            methods.setdefault(name, make(self._guard(self._unimplemented(name))))
        return grpc.method_handlers_generic_handler(SERVICE, methods)

    # -------------------------------------------------------------------------------------------
    # Stopping and watching streams

    @property
    def open_streams(self) -> int:
        """DoPut calls in progress (counted against `limits.max_streams`)."""
        with self._streams_lock:
            return len(self._streams)

    @property
    def open_reads(self) -> int:
        """DoGet calls in progress (each holds one of the server's threads)."""
        with self._streams_lock:
            return len(self._reads)

    def begin_stop(self) -> None:
        """From now on, a DoPut stream that sends anything (or ends) is cancelled instead of
        being applied: a stopping server commits nothing more."""
        self._stopping.set()

    def cancel_open_streams(self) -> list[str]:
        """Cancel, in the model, every DoPut stream still open; answers their topics."""
        with self._streams_lock:
            handles = [s.handle for s in self._streams if s.handle is not None]
        for handle in handles:
            self.gate.put_cancel(handle, ErrorKind.CANCELLED.value)
        return [h.locator for h in handles]

    def start_watchdog(self) -> None:
        """Start the server's housekeeping thread: it cancels DoPut streams silent for longer
        than the idle timeout and DoGet streams whose client has not taken a frame for as long
        (a reader that stopped reading would otherwise hold its thread forever), and hands
        memory the C allocator keeps after large requests back to the system
        (`allocator.release`)."""
        if self._watchdog is not None:
            return
        self._watchdog = threading.Thread(
            target=self._watch,
            args=(self.limits.stream_idle_timeout,),
            name="mosaico-fsm-server-watchdog",
            daemon=True,
        )
        self._watchdog.start()

    def _watch(self, idle: float | None) -> None:
        period = min(1.0, idle / 4) if idle is not None else 1.0
        last_release = time.monotonic()
        while not self._stopping.wait(period):
            now = time.monotonic()
            allocator.STREAMS.settle(now)
            if now - last_release >= RELEASE_PERIOD:
                last_release = now
                allocator.release()
            if idle is None:
                continue
            with self._streams_lock:
                silent = [
                    (s in self._reads, s)
                    for s in (*self._streams, *self._reads)
                    if not s.idle and now - s.last_seen > idle
                ]
                for _, stream in silent:
                    stream.idle = True
            for read, stream in silent:
                if read:
                    log.info("DoGet stream not read for more than %.3g s: cancelled", idle)
                else:
                    log.info("DoPut stream idle for more than %.3g s: cancelled", idle)
                stream.context.cancel()

    # -------------------------------------------------------------------------------------------
    # Answers

    def _guard(self, method: Callable[[Any, grpc.ServicerContext], T]) -> Callable[..., T]:
        """Run `method`; a refusal becomes its gRPC status with the bare message, anything
        unexpected an INTERNAL status (logged, its details never sent)."""

        def guarded(request: Any, context: grpc.ServicerContext) -> T:
            try:
                return method(request, context)
            except _Refusal as refusal:
                if isinstance(request, bytes) and len(request) >= allocator.RELEASE_AFTER:
                    allocator.release()  # the pieces gRPC received it in are free by now
                context.abort(refusal.code, refusal.message)
            except Exception:
                log.exception("%s failed", getattr(method, "__name__", "a call"))
                context.abort(grpc.StatusCode.INTERNAL, "internal server error")
            raise AssertionError("abort returned")  # pragma: no cover

        return guarded

    @staticmethod
    def _answer(what: str, call: Callable[[], T]) -> T:
        """Run `call` (through the gate); its refusal or injected fault becomes a _Refusal."""
        try:
            return call()
        except InjectedFault as exc:
            log.debug("%s: %s", what, exc.message)
            if exc.kind is None:
                raise _Refusal(grpc.StatusCode.UNAVAILABLE, exc.message) from None
            raise _refuse(exc.kind, exc.message) from None
        except ServerError as exc:
            log.debug("%s: refused %s", what, exc)
            raise _refuse(exc.kind, exc.message) from None

    def _guarded(
        self, operation: str, what: str, apply: Callable[[], T], body: bytes | None = None
    ) -> T:
        return self._answer(what, lambda: self.gate.call(operation, apply, body))

    def _principal(self, context: grpc.ServicerContext) -> Principal:
        return self.model.authenticate(_token(context))

    @staticmethod
    def _unimplemented(name: str) -> Callable[[Any, grpc.ServicerContext], Any]:
        def refuse(request: Any, context: grpc.ServicerContext) -> Any:
            raise _refuse(ErrorKind.UNIMPLEMENTED, f"{name} is not part of the protocol")

        refuse.__name__ = name
        return refuse

    # -------------------------------------------------------------------------------------------
    # RPCs

    def do_action(self, raw: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        action = _parse(pb.Action, raw, "the Action")
        action_type, body = action.type, bytes(action.body)
        log.debug("DoAction %s %r", action_type[:100], body[:200])
        op = self.model.spec.operation_for_wire(action_type)

        def apply() -> list[bytes]:
            response = self.model.handle_action(self._principal(context), action_type, body)
            return self.shapes.results(action_type, response)

        bodies = self._guarded(op.name if op else "UNKNOWN_ACTION", "DoAction", apply, body)
        return iter([pb.Result(body=b).SerializeToString() for b in bodies])

    def list_flights(self, raw: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        criteria = bytes(_parse(pb.Criteria, raw, "the Criteria").expression)
        log.debug("ListFlights %r", criteria[:200])
        names = self._guarded(
            "LIST_FLIGHTS",
            "ListFlights",
            lambda: self.model.list_sequences(self._principal(context), criteria),
        )
        empty = frames.schema_bytes(pa.schema([]))
        infos = [
            pb.FlightInfo(
                schema=empty,
                flight_descriptor=pb.FlightDescriptor(type=pb.FlightDescriptor.PATH, path=[name]),
                endpoint=[pb.FlightEndpoint(ticket=pb.Ticket(ticket=name.encode()))],
                total_records=-1,
                total_bytes=-1,
            ).SerializeToString()
            for name in names
        ]
        return iter(infos)

    def get_flight_info(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        descriptor = _parse(pb.FlightDescriptor, raw, "the FlightDescriptor")
        kind, command = _descriptor_parts(descriptor)
        log.debug("GetFlightInfo %s %r", kind, command[:200])
        detailed = self.shapes.detailed_endpoints
        view = self._guarded(
            "GET_FLIGHT_INFO",
            "GetFlightInfo",
            lambda: self.model.flight_info(
                self._principal(context), kind, command, detailed_topics=detailed
            ),
            command,
        )
        return render_flight_info(view, descriptor, self.shapes).SerializeToString()

    def get_schema(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        """GetSchema, where the line's catalogue has it: a topic's stored schema."""
        descriptor = _parse(pb.FlightDescriptor, raw, "the FlightDescriptor")
        kind, command = _descriptor_parts(descriptor)
        schema = self._guarded(
            "GET_SCHEMA",
            "GetSchema",
            lambda: self.model.stored_schema(self._principal(context), kind, command),
            command,
        )
        return pb.SchemaResult(schema=frames.schema_bytes(schema)).SerializeToString()

    def do_get(self, raw: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        ticket = bytes(_parse(pb.Ticket, raw, "the Ticket").ticket)
        log.debug("DoGet %r", ticket[:200])
        reading = self._answer(
            "DoGet", lambda: self.gate.read(lambda: self._principal(context), ticket)
        )
        return self._sent(context, reading.schema, reading.batches)

    def _sent(
        self, context: grpc.ServicerContext, schema: pa.Schema, batches: Iterator[pa.RecordBatch]
    ) -> Iterator[bytes]:
        """The frames of a DoGet; a fault that breaks the stream ends the call with its status
        after the batches already sent. gRPC asks for the next frame once it took the previous
        one: the time since is how long the client has not read (the watchdog's idle timeout)."""
        stream = _OpenStream(context)
        with self._streams_lock:
            self._reads.add(stream)
        try:
            yield frames.schema_frame(schema)
            stream.last_seen = time.monotonic()
            for batch in batches:
                yield frames.batch_frame(batch)
                stream.last_seen = time.monotonic()
        except InjectedFault as exc:
            log.debug("DoGet: %s", exc.message)
            kind = exc.kind or ErrorKind.CANCELLED
            context.abort(STATUS[kind], exc.message)
        finally:
            with self._streams_lock:
                self._reads.discard(stream)

    # -------------------------------------------------------------------------------------------
    # DoPut

    def do_put(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        """Accept the stream's header, store each validated batch, then end the stream cleanly
        (or refuse, or cancel it). The server sends no PutResult."""
        stream = _OpenStream(context)
        with self._streams_lock:
            if len(self._streams) >= self.limits.max_streams:
                raise _Refusal(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"DoPut: {self.limits.max_streams} streams are open, the most this server "
                    "accepts at once; retry when one has ended",
                )
            self._streams.add(stream)
        allocator.STREAMS.opened()
        refused = False
        try:
            self._put(stream, requests, context)
        except _Refusal:
            refused = stream.received >= allocator.RELEASE_AFTER
            raise
        finally:
            with self._streams_lock:
                self._streams.discard(stream)
            allocator.STREAMS.closed(refused)
            if stream.handle is not None:
                # Whatever ended the call, a stream that did not end cleanly leaves nothing
                # receiving (a no-op, not recorded, when it already ended).
                self.gate.put_cancel(stream.handle, ErrorKind.INTERNAL.value)
        return iter(())

    def _put(
        self, stream: _OpenStream, requests: Iterator[bytes], context: grpc.ServicerContext
    ) -> None:
        try:
            first = next(requests, None)
        except grpc.RpcError:
            return  # the client went away before sending anything
        if first is None:
            raise _refuse(ErrorKind.INVALID_ARGUMENT, "DoPut: the stream carried no message")
        stream.received += len(first)
        try:
            header = frames.decode_frame(first)
        except frames.FrameError as exc:
            raise _refuse(
                ErrorKind.INVALID_ARGUMENT, f"DoPut: not a FlightData message: {exc}"
            ) from None
        if header.descriptor is None:
            raise _refuse(ErrorKind.INVALID_ARGUMENT, "DoPut: the first message has no descriptor")
        kind, command = _descriptor_parts(
            _parse(pb.FlightDescriptor, header.descriptor, "the DoPut descriptor")
        )
        schema = _stream_schema(header)
        log.debug("DoPut %s %r", kind, command[:200])
        handle = self._answer(
            "DoPut",
            lambda: self.gate.put_open(lambda: self._principal(context), kind, command, schema),
        )
        stream.handle = handle
        self._receive(stream, handle, requests)

    def _receive(self, stream: _OpenStream, handle: PutHandle, requests: Iterator[bytes]) -> None:
        """Store the stream's batches, then end it cleanly (or refuse, or cancel it)."""
        what = f"DoPut {handle.locator}"
        while True:
            try:
                raw = next(requests, None)
            except grpc.RpcError:
                reason = "idle for too long" if stream.idle else "the client cancelled the stream"
                self._end_early(handle, ErrorKind.CANCELLED, reason)
            stream.last_seen = time.monotonic()
            if self._stopping.is_set():
                self._end_early(handle, ErrorKind.CANCELLED, "the server is stopping")
            if raw is None:
                # gRPC ends the messages of a dead client like a half-close: only a half-close
                # commits (a dead client's topic stays unlocked, PROTOCOL.md §6.2.7).
                if not half_closed(stream.context):
                    self._end_early(handle, ErrorKind.CANCELLED, "the client went away")
                break
            stream.received += len(raw)
            try:
                frame = frames.decode_frame(raw)
            except frames.FrameError as exc:
                self._end_early(
                    handle, ErrorKind.INVALID_ARGUMENT, f"DoPut: not a FlightData message: {exc}"
                )
            if not len(frame.header):
                # A message without data: an unsupported stream message (PROTOCOL.md §6.2), which
                # is also how a client aborts its stream.
                log.debug("%s: a message without data ends the stream", what)
                self.gate.put_abort(handle)
                raise _refuse(
                    ErrorKind.ABORTED,
                    "DoPut: unsupported stream message (a message without data); the stream is "
                    "aborted and not committed",
                )
            batch = self._batch(handle, frame)
            self._answer(what, partial(self.gate.put_write, handle, batch))
        self._answer(what, lambda: self.gate.put_end(handle))

    def _batch(self, handle: PutHandle, frame: frames.FlightFrame) -> pa.RecordBatch:
        """The record batch a stream message carries, decoded against the stream's schema."""
        try:
            message = frames.ipc_message(frame.header, frame.body)
        except frames.FrameError as exc:
            self._end_early(handle, ErrorKind.INVALID_ARGUMENT, f"DoPut: {exc}")
        if message.type != "record batch":
            self.gate.put_abort(handle)
            raise _refuse(
                ErrorKind.ABORTED,
                f"DoPut: unsupported stream message (a {message.type} message); the stream is "
                "aborted and not committed",
            )
        try:
            declared = frames.decompressed_size(frame.header, frame.body)
        except frames.FrameError as exc:
            self._end_early(handle, ErrorKind.INVALID_ARGUMENT, f"DoPut: {exc}")
        most = self.limits.max_decompressed_bytes
        if declared is not None and declared > most:
            self._end_early(
                handle,
                ErrorKind.INVALID_ARGUMENT,
                f"DoPut: a compressed batch declares {declared} bytes once decompressed, more "
                f"than the {most} this server accepts",
            )
        try:
            return pa.ipc.read_record_batch(message, handle.schema)
        except (pa.ArrowException, OSError, ValueError) as exc:
            self._end_early(
                handle,
                ErrorKind.INVALID_ARGUMENT,
                f"DoPut: a batch cannot be read with the stream's schema: {str(exc)[:300]}",
            )

    def _end_early(self, handle: PutHandle, kind: ErrorKind, message: str) -> NoReturn:
        log.debug("DoPut %s: %s", handle.locator, message)
        self.gate.put_cancel(handle, kind.value)
        raise _refuse(kind, f"{message}; the stream is not committed")


def _stream_schema(header: frames.FlightFrame) -> pa.Schema:
    """The schema the first DoPut message carries (MissingSchema when it carries none)."""
    if not len(header.header):
        raise _refuse(ErrorKind.INVALID_ARGUMENT, "DoPut: the first message has no schema")
    try:
        message = frames.ipc_message(header.header, header.body)
        if message.type != "schema":
            raise frames.FrameError(f"the first message is a {message.type} message")
        return pa.ipc.read_schema(message)
    except (frames.FrameError, pa.ArrowException, OSError, ValueError) as exc:
        raise _refuse(
            ErrorKind.INVALID_ARGUMENT, f"DoPut: the first message has no usable schema: {exc}"
        ) from None


# -----------------------------------------------------------------------------------------------
# FlightInfo


def _endpoint(topic: TopicInfo, shapes: FlightShapes) -> pb.FlightEndpoint:
    return pb.FlightEndpoint(
        ticket=pb.Ticket(ticket=topic.ticket),
        location=[pb.Location(uri=uri) for uri in shapes.locations(topic)],
        app_metadata=shapes.topic_endpoint(topic),
    )


def _report_limits(model: ServerModel, limits: ServerLimits) -> None:
    """An info handshake reports the server's real gRPC limits: what it receives and sends
    at most, and a target no larger."""
    reported = model.grpc_limits
    if not reported:
        return
    most = limits.max_message_bytes
    for key in ("grpc_max_decode_message_size", "grpc_max_encode_message_size"):
        if key in reported:
            reported[key] = most
    if "grpc_target_encode_message_size" in reported:
        reported["grpc_target_encode_message_size"] = min(
            reported["grpc_target_encode_message_size"], most
        )


def render_flight_info(
    view: SequenceInfo | TopicInfo,
    descriptor: pb.FlightDescriptor,
    shapes: FlightShapes | None = None,
) -> pb.FlightInfo:
    """The FlightInfo a Mosaico server answers for a sequence or a topic, in a protocol
    line's `shapes` (default: those of 0.3)."""
    from transport.flight.codec import flight_info_parts

    shapes = shapes or FlightShapes()
    schema, app_metadata, topics = flight_info_parts(view, shapes)
    return pb.FlightInfo(
        schema=frames.schema_bytes(schema),
        flight_descriptor=descriptor,
        endpoint=[_endpoint(t, shapes) for t in topics],
        total_records=-1,
        total_bytes=-1,
        app_metadata=app_metadata,
    )


# -----------------------------------------------------------------------------------------------
# Running it


@attrs.define
class RunningServer:
    """A reference server running in this process; a context manager that stops it."""

    server: ReferenceServer
    grpc_server: grpc.Server
    host: str
    port: int
    tls: bool
    api_keys: dict[str, str] = attrs.field(factory=dict)
    _done: threading.Event | None = None

    @property
    def model(self) -> ServerModel:
        return self.server.model

    @property
    def limits(self) -> ServerLimits:
        return self.server.limits

    @property
    def location(self) -> str:
        scheme = "grpc+tls" if self.tls else "grpc"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def stopped(self) -> bool:
        """True once the server has stopped: every call ended and the port is released."""
        return self._done is not None and self._done.is_set()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop accepting calls, let running calls finish for `timeout` seconds, then cancel
        the rest and release the port.

        A DoPut stream that sends anything more is cancelled at once. Streams still open after
        `timeout` (a client that stays silent) are cancelled: their topics are not locked and
        a warning names them.
        """
        if self._done is not None:
            return
        self.server.begin_stop()
        self._done = self.grpc_server.stop(timeout)
        if not self._done.wait(timeout):
            topics = self.server.cancel_open_streams()
            if topics:
                log.warning(
                    "the server on %s did not stop within %.3g s: %d DoPut stream(s) left open "
                    "by their client (%s) are cancelled",
                    self.location,
                    timeout,
                    len(topics),
                    ", ".join(topics),
                )
            self._done.wait(timeout)

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
    limits: ServerLimits | None = None,
    service: ReferenceServer | None = None,
    protocol: str | None = None,
) -> RunningServer:
    """Start a reference server in this process (port 0: a free port); gRPC's threads serve it
    until `stop()`. `protocol` names the protocol line a new model speaks (default 0.3). With
    `auth`, a manage key is issued into `api_keys['manage']`. `service`
    serves an already built service instead (a subclass, say, that records each call); its
    model, faults and limits are then its own."""
    if protocol is not None and (model is not None or service is not None):
        raise ArgumentError("give a protocol line or a model (which has its own), not both")
    if service is None:
        if model is None:
            model = ServerModel(profile=profile, auth=auth, protocol=protocol)
        service = ReferenceServer(model, faults=faults, limits=limits)
    model = service.model
    limits = service.limits
    workers = limits.max_streams + limits.control_workers
    grpc_server = grpc.server(
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mosaico-fsm-server"),
        handlers=[service.handler()],
        options=[
            ("grpc.max_receive_message_length", limits.max_message_bytes),
            ("grpc.max_send_message_length", limits.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ],
        # A call beyond the threads is refused (RESOURCE_EXHAUSTED), never queued unseen.
        maximum_concurrent_rpcs=workers,
    )
    address = f"{host}:{port}"
    try:
        bound = (
            grpc_server.add_secure_port(address, tls.credentials())
            if tls is not None
            else grpc_server.add_insecure_port(address)
        )
    except RuntimeError as exc:  # grpcio raises when it cannot bind (older releases answer 0)
        raise ListenError(f"cannot listen on {address}") from exc
    if not bound:
        raise ListenError(f"cannot listen on {address}")
    allocator.tune()
    grpc_server.start()
    service.start_watchdog()
    running = RunningServer(service, grpc_server, host, bound, tls is not None)
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
