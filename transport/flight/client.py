"""The Arrow Flight client transport: the Mosaico wire format of PROTOCOL.md over pyarrow.flight.

One `FlightClient` (one gRPC channel) carries every call: control actions and any number of
concurrent DoPut streams are multiplexed over it (HTTP/2), so no pool of connections is opened.
Each call carries the `mosaico-api-key-token` header when a key is given. Flight errors become
`Outcome.failed` with their kind; UNAVAILABLE, a timeout or a broken connection become
`Outcome.unknown`, since the server may have applied the call.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
from pyarrow import flight

from fsm.errors import ArgumentError
from fsm.outcome import ErrorKind, Outcome
from fsm.spec.lines import Line, resolve_line
from fsm.transport import Descriptor, TopicData, Transport
from transport.flight.codec import (
    ABORT_MESSAGE,
    FlightReader,
    flight_error_outcome,
)
from transport.server.auth import HEADER

__all__ = ["FlightTransport"]


_FLIGHT_ERRORS = (flight.FlightError, pa.ArrowException, OSError)
"""What pyarrow raises when a Flight call fails: a gRPC status (a FlightError, or the Arrow
exception pyarrow maps the code to, such as ArrowKeyError for NOT_FOUND or ArrowInvalid for
INVALID_ARGUMENT), or an I/O failure of the connection (OSError, such as "Stream removed").
Anything else is a bug in the caller or here, and propagates."""


def _outcome(exc: BaseException, deadline: str) -> Outcome:
    """The outcome of a failed call; a passed deadline is named (`deadline` says which)."""
    outcome = flight_error_outcome(exc)
    if isinstance(exc, flight.FlightTimedOutError) or "Flight returned timeout error" in str(exc):
        return Outcome.unknown(f"no answer within {deadline}: {outcome.detail}")
    return outcome


def _seconds(value: float | None, name: str) -> str:
    return f"the {name} of {value:g} s" if value is not None else f"the {name}"


def _descriptor(d: Descriptor) -> flight.FlightDescriptor:
    if d.kind == "path":
        return flight.FlightDescriptor.for_path(*d.path)
    return flight.FlightDescriptor.for_command(d.command)


DEFAULT_TIMEOUT = 60.0
"""Seconds a call (an action, GetFlightInfo, ListFlights) may take by default."""
DEFAULT_STREAM_TIMEOUT = 3600.0
"""Seconds a whole DoPut or DoGet stream may last by default, from its start to its end."""


class FlightTransport(Transport):
    """A transport to any Mosaico server reachable at `location` (grpc:// or grpc+tls://).

    Every call has a deadline: `timeout` seconds for a call, `stream_timeout` for a whole DoPut
    or DoGet stream, `connect_timeout` for `wait_ready`. A server that does not answer in time gives
    an unknown outcome that says which deadline passed. None disables a deadline, and only
    when asked.

    `protocol` is the protocol line the server speaks (a name of `specs/lines/`, or a `Line`;
    default 0.3): FlightInfo and action answers are read in that line's wire shapes.
    """

    def __init__(
        self,
        location: str,
        *,
        api_key: str | None = None,
        tls_root_certs: bytes | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        stream_timeout: float | None = DEFAULT_STREAM_TIMEOUT,
        connect_timeout: float = 5.0,
        protocol: str | Line | None = None,
    ) -> None:
        self.speak(protocol)
        parsed = urlparse(location)
        if parsed.scheme not in ("grpc", "grpc+tcp", "grpc+tls") or not parsed.hostname:
            raise ArgumentError(
                f"expected grpc://host:port or grpc+tls://host:port, got {location!r}"
            )
        if tls_root_certs is not None and parsed.scheme != "grpc+tls":
            location = f"grpc+tls://{parsed.hostname}:{parsed.port}"
        self.location = location
        kwargs: dict[str, Any] = {}
        if tls_root_certs is not None:
            kwargs["tls_root_certs"] = tls_root_certs
        self._client = flight.FlightClient(location, **kwargs)
        headers = [(HEADER.encode(), api_key.encode())] if api_key else []
        for name, value in (
            ("timeout", timeout),
            ("stream_timeout", stream_timeout),
            ("connect_timeout", connect_timeout),
        ):
            if value is not None and not value > 0:
                raise ArgumentError(f"{name} must be a positive number of seconds (or None)")
        self.timeout, self.stream_timeout = timeout, stream_timeout
        self._deadline = _seconds(timeout, "timeout")
        self._stream_deadline = _seconds(stream_timeout, "stream_timeout")
        self._options = flight.FlightCallOptions(headers=headers, timeout=timeout)
        self._stream_options = flight.FlightCallOptions(headers=headers, timeout=stream_timeout)
        self._ready_options = flight.FlightCallOptions(headers=headers, timeout=connect_timeout)
        self._closed = threading.Event()
        self._streams_lock = threading.Lock()
        self._streams: set[_FlightStream] = set()
        self._readings: set[_FlightReading] = set()  # set.add/discard are atomic

    def speak(self, protocol: str | Line | None) -> None:
        """Read the server's answers in `protocol`'s wire shapes from now on (a client that
        learned its server's line from the handshake tells its transport)."""
        self.line = resolve_line(protocol)
        self._reader = FlightReader.of(self.line)

    def wait_ready(self) -> Outcome:
        """Check that the server answers (a ListFlights, as clients do on connect) within
        `connect_timeout` seconds; unknown when it does not."""
        return self._list(b"", self._ready_options)

    # -------------------------------------------------------------------------------------------

    def action_raw(self, action_type: str, body: bytes) -> Outcome:
        try:
            results = list(self._client.do_action(flight.Action(action_type, body), self._options))
        except _FLIGHT_ERRORS as exc:
            return _outcome(exc, self._deadline)
        bodies = [r.body.to_pybytes() for r in results]
        try:
            return Outcome.ok(self._reader.answer(action_type, bodies))
        except ValueError as exc:
            return Outcome.failed(ErrorKind.INTERNAL, f"malformed reply to {action_type}: {exc}")

    def open_stream(self, descriptor: Descriptor, schema: pa.Schema) -> Outcome:
        try:
            writer, reader = self._client.do_put(
                _descriptor(descriptor), schema, self._stream_options
            )
        except _FLIGHT_ERRORS as exc:
            return _outcome(exc, self._stream_deadline)
        stream = _FlightStream(writer, reader, schema, self._forget, self._stream_deadline)
        with self._streams_lock:
            self._streams.add(stream)
        return Outcome.ok(stream)

    def _forget(self, stream: _FlightStream) -> None:
        with self._streams_lock:
            self._streams.discard(stream)

    def flight_info(self, descriptor: Descriptor) -> Outcome:
        try:
            info = self._client.get_flight_info(_descriptor(descriptor), self._options)
        except _FLIGHT_ERRORS as exc:
            return _outcome(exc, self._deadline)
        try:
            return Outcome.ok(self._reader.flight_info(info))
        except (ValueError, KeyError, TypeError) as exc:
            return Outcome.failed(ErrorKind.INTERNAL, f"malformed FlightInfo: {exc}")

    def read(self, ticket: bytes) -> Outcome:
        try:
            reader = self._client.do_get(flight.Ticket(ticket), self._stream_options)
            batches = []
            while True:
                try:
                    chunk = reader.read_chunk()
                except StopIteration:
                    break
                if chunk.data is not None:
                    batches.append(chunk.data)
            schema = reader.schema
        except _FLIGHT_ERRORS as exc:
            return _outcome(exc, self._stream_deadline)
        return Outcome.ok(TopicData(schema, tuple(batches)))

    def read_stream(self, ticket: bytes) -> Outcome:
        try:
            reader = self._client.do_get(flight.Ticket(ticket), self._stream_options)
            schema = reader.schema
        except _FLIGHT_ERRORS as exc:
            return _outcome(exc, self._stream_deadline)
        reading = _FlightReading(reader, schema, self._readings.discard, self._stream_deadline)
        self._readings.add(reading)
        return Outcome.ok(reading)

    def list_sequences(self, criteria: bytes = b"") -> Outcome:
        return self._list(criteria, self._options)

    def _list(self, criteria: bytes, options: flight.FlightCallOptions) -> Outcome:
        try:
            infos = list(self._client.list_flights(criteria, options))
        except _FLIGHT_ERRORS as exc:
            ready = options is self._ready_options
            return _outcome(exc, "the connect_timeout" if ready else self._deadline)
        names = []
        for info in infos:
            path = info.descriptor.path or []
            if path:
                first = path[0]
                names.append(first.decode() if isinstance(first, bytes) else str(first))
        return Outcome.ok(names)

    def close(self) -> None:
        """Abort the streams still open (the server commits nothing of them), then close the
        connection."""
        if self._closed.is_set():
            return
        self._closed.set()
        with self._streams_lock:
            streams = list(self._streams)
        for stream in streams:
            stream.abort()
        for reading in list(self._readings):
            reading.close()
        self._client.close()


_CLOSED = Outcome.failed(ErrorKind.FAILED_PRECONDITION, "stream already closed")


class _FlightReading:
    """A DoGet in progress: one message per `next`, nothing read ahead (beyond what gRPC
    buffers), cancelled by `close` unless it has ended.

    Messages are taken with `read_chunk`, never `read_all`: on a reader whose call was
    cancelled, pyarrow 26's `read_all` hands the FlightCancelledError to its signal handler,
    which sends SIGINT to the main thread (a KeyboardInterrupt there, wherever it waits),
    against pyarrow's own FlightServerBase as against this project's server; `read_chunk`
    raises FlightCancelledError."""

    def __init__(
        self,
        reader: flight.FlightStreamReader,
        schema: pa.Schema,
        on_end: Callable[[_FlightReading], None],
        deadline: str,
    ) -> None:
        self.schema = schema
        self._deadline = deadline
        self._reader = reader
        self._on_end = on_end
        self._end: Outcome | None = None

    def _ended(self, outcome: Outcome) -> Outcome:
        self._end = outcome
        self._on_end(self)
        return outcome

    def next(self) -> Outcome:
        if self._end is not None:
            return self._end
        try:
            while True:
                batch = self._reader.read_chunk().data
                if batch is not None:
                    return Outcome.ok(batch)
        except StopIteration:
            return self._ended(Outcome.ok(None))
        except _FLIGHT_ERRORS as exc:
            return self._ended(_outcome(exc, self._deadline))

    def close(self) -> None:
        if self._end is None:
            self._ended(Outcome.failed(ErrorKind.CANCELLED, "the read was cancelled"))
            with contextlib.suppress(*_FLIGHT_ERRORS):
                self._reader.cancel()


class _Watchers:
    """Daemon threads that wait on DoPut calls, kept for the next stream once theirs ended:
    starting a thread for each stream cost about half a millisecond of each stream's opening.
    There are as many threads as streams were ever open at once; an idle one waits for work."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every thread (a forked child has none of its parent's: it starts its own)."""
        self._lock = threading.Lock()
        self._idle = 0
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()

    def run(self, job: Callable[[], None]) -> None:
        """Run `job` on an idle thread, or on a new one when none is idle."""
        with self._lock:
            spawn = self._idle == 0
            if not spawn:
                self._idle -= 1
        self._jobs.put(job)
        if spawn:
            threading.Thread(target=self._work, name="mosaico-fsm-doput-watch", daemon=True).start()

    def _work(self) -> None:
        while True:
            self._jobs.get()()
            with self._lock:
                self._idle += 1


_WATCHERS = _Watchers()
os.register_at_fork(after_in_child=_WATCHERS.reset)


class _FlightStream:
    """A DoPut in progress.

    The server's verdict on the whole stream arrives when it is closed, but a server may end
    the call early (a refused batch, a dropped stream). A watcher thread waits on the server's
    side of the call, so such a refusal is known as soon as it arrives and the next `write`
    reports it instead of succeeding into a dead stream. pyarrow hands the refusal's status
    over only when the writer is closed: the first `write` or `failure` after the call ended
    closes it, so both report the server's own refusal (its kind and message). Once the
    stream has ended (failed, aborted or closed) the watcher has returned and the transport no
    longer tracks it.
    """

    def __init__(
        self,
        writer: flight.FlightStreamWriter,
        reader: flight.FlightMetadataReader,
        schema: pa.Schema,
        on_end: Callable[[_FlightStream], None],
        deadline: str,
    ) -> None:
        self._deadline = deadline
        self._schema = schema
        self._writer = writer
        self._reader = reader
        self._on_end = on_end
        self._done: Outcome | None = None
        self._failure: Outcome | None = None
        self._closing = False
        self._early: Outcome | None = None
        # Serializes the calls that use the writer: `failure` may be read while a background
        # send is in `write`.
        self._lock = threading.RLock()
        self._watched = threading.Event()  # set once the watcher has returned
        _WATCHERS.run(self._watch)

    def _watch(self) -> None:
        try:
            while self._reader.read() is not None:
                pass
            if not self._closing:  # the server ended the call before the client did: a refusal
                self._early = Outcome.failed(
                    ErrorKind.CANCELLED, "the server ended the stream early"
                )
        except _FLIGHT_ERRORS as exc:
            if not self._closing:
                self._early = _outcome(exc, self._deadline)
        finally:
            self._watched.set()

    @property
    def failure(self) -> Outcome | None:
        if self._done is None and self._early is not None:
            # The server ended the call: close the writer to read the server's verdict.
            # (A write cannot be blocked then, so taking the lock does not wait on the network.)
            with self._lock:
                if self._done is None:
                    self._finish(None)
        return self._failure if self._done is not None else None

    def _end(self, answer: Outcome, failure: Outcome | None) -> None:
        """The stream has ended: later calls answer `answer`; `failure` (None after a clean
        close) is what `failure` reports."""
        self._done = answer
        self._failure = failure
        self._watched.wait(timeout=5)
        self._on_end(self)

    def write(self, batch: pa.RecordBatch) -> Outcome:
        with self._lock:
            return self._write(batch)

    def _write(self, batch: pa.RecordBatch) -> Outcome:
        if self._done is not None:
            return self._done
        if self._early is not None:
            return self._finish(None)
        if not batch.schema.equals(self._schema, check_metadata=False):
            # Refused here, before the wire; the stream ends as it would on a server refusal.
            self.abort()
            refusal = "the batch does not match the stream's schema"
            failed = Outcome.failed(ErrorKind.INVALID_ARGUMENT, f"stream already failed: {refusal}")
            self._done = self._failure = failed
            return Outcome.failed(ErrorKind.INVALID_ARGUMENT, refusal)
        try:
            self._writer.write_batch(batch)
        except _FLIGHT_ERRORS as exc:
            return self._finish(exc)
        return Outcome.ok()

    def _finish(self, exc: BaseException | None) -> Outcome:
        # The server already ended the stream: its verdict comes with close().
        self._closing = True
        with contextlib.suppress(Exception):
            self._writer.done_writing()
        try:
            self._writer.close()
        except _FLIGHT_ERRORS as verdict:  # the server's verdict on the call
            exc = verdict
        if exc is not None:
            outcome = _outcome(exc, self._deadline)
        else:
            outcome = self._early or Outcome.failed(
                ErrorKind.CANCELLED, "the server ended the stream"
            )
        failed = Outcome.failed(
            outcome.kind or ErrorKind.CANCELLED, f"stream already failed: {outcome.detail}"
        )
        self._end(failed, failed)
        return outcome

    def close(self) -> Outcome:
        with self._lock:
            return self._close()

    def _close(self) -> Outcome:
        if self._done is not None:
            return self._done
        self._closing = True
        try:
            self._writer.done_writing()
            self._writer.close()
        except _FLIGHT_ERRORS as exc:
            outcome = _outcome(exc, self._deadline)
            failed = Outcome.failed(
                outcome.kind or ErrorKind.CANCELLED, f"stream already closed: {outcome.detail}"
            )
            self._end(failed, failed)
            return outcome
        self._end(_CLOSED, None)
        return Outcome.ok()

    def abort(self) -> Outcome:
        """Cancel the stream: a message without data tells the server to drop it (a Mosaico
        server refuses an empty message mid-stream and ends the call without committing)."""
        with self._lock:
            self._abort()
        return Outcome.ok()

    def _abort(self) -> None:
        if self._done is None:
            self._closing = True
            # The server answers the abort by ending the call with an error: that error is the
            # expected answer, not a failure of the abort.
            with contextlib.suppress(Exception):
                self._writer.write_metadata(ABORT_MESSAGE)
            with contextlib.suppress(Exception):
                self._writer.close()
            aborted = Outcome.failed(ErrorKind.CANCELLED, "stream aborted")
            self._end(aborted, aborted)
