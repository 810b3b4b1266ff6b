"""The data path of one topic: batching, splitting, and ordered background sending.

Records reach a `StreamWriter` as Arrow batches or tables (sent as they are, zero-copy) or
as rows (checked, buffered, converted in bulk). A batch larger than `batch_bytes` or
`batch_rows` is sliced (zero-copy); small batches are merged until a message is full, so the
server does not store a chunk per tiny push; a single record larger than `max_message_bytes`
is refused with a clear error, never dropped. One sender thread per topic writes the
messages in order, so topics stream in parallel without blocking each other.

Memory is bounded. A topic holds at most: `max_in_flight` messages queued or being sent,
the pending small batches and, while they are merged, their merged copy (each at most
`batch_bytes`), so (max_in_flight + 2) x batch_bytes of Arrow data; plus, for the row API,
the rows not yet converted, as Python objects: at most `buffer_rows` of them and at most
`batch_bytes` of estimated data (a single larger row alone). A push blocks while
max_in_flight messages wait.

A failure of a background send, or a refusal the server sent early, is kept and answered to
the next push, flush or close: it surfaces no later than the next push or close.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Mapping
from typing import Any

import attrs
import pyarrow as pa

from fsm.engine.schema import RowBuffer, conform_batch
from fsm.errors import ArgumentError
from fsm.outcome import ErrorKind, Outcome
from fsm.transport import TopicStream

__all__ = ["BatchPolicy", "StreamWriter"]

MiB = 1024 * 1024
_OK = Outcome.ok()
_CLOSE = object()


@attrs.frozen
class BatchPolicy:
    """How a topic cuts its records into messages.

    `batch_bytes`: most bytes in one message (default 8 MiB, well under the 50 MB a Mosaico
    server accepts by default); `batch_rows`: most rows in one message; `max_message_bytes`:
    a single record above this is refused; `max_in_flight`: messages queued or being sent;
    `buffer_rows`: most rows the row API holds before converting them; `background`: send
    from one thread per topic (False: send in the pushing thread, which makes runs fully
    deterministic, as simulations need).
    """

    batch_bytes: int = 8 * MiB
    batch_rows: int = 131_072
    max_message_bytes: int = 48 * MiB
    max_in_flight: int = 3
    buffer_rows: int = 8192
    background: bool = True

    def __attrs_post_init__(self) -> None:
        if not 0 < self.batch_bytes <= self.max_message_bytes:
            raise ArgumentError("batch_bytes must be positive and at most max_message_bytes")
        if min(self.batch_rows, self.max_in_flight, self.buffer_rows) < 1:
            raise ArgumentError("batch_rows, max_in_flight and buffer_rows must be at least 1")

    @property
    def memory_bound(self) -> int:
        """Most bytes of Arrow data one topic holds at any time."""
        return (self.max_in_flight + 2) * self.batch_bytes

    @property
    def merge_below(self) -> int:
        """Batches smaller than this are merged with their neighbours before sending."""
        return max(1, self.batch_bytes // 16)


def _size(batch: pa.RecordBatch) -> int:
    """The batch's size in bytes: its buffers' total when that is small enough to decide
    nothing (cheap), otherwise the exact size of the rows it holds (which slices need)."""
    total = int(batch.get_total_buffer_size())
    return total if total <= 64 * 1024 * 1024 else int(batch.nbytes)


@attrs.frozen
class Piece:
    """A slice to send, with its size measured once."""

    batch: pa.RecordBatch
    nbytes: int


class StreamWriter:
    """Batches and sends the records of one topic over one `TopicStream`."""

    def __init__(self, stream: TopicStream, schema: pa.Schema, policy: BatchPolicy) -> None:
        self.stream = stream
        self.schema = schema
        self.policy = policy
        self._rows = RowBuffer(schema)
        self._flush_bytes = policy.batch_bytes
        self._flush_rows_at = policy.buffer_rows
        self._flushed = 0  # rows.pushed when the row buffer was last emptied
        self._pending: list[pa.RecordBatch] = []
        self._pending_bytes = 0
        self._pending_rows = 0
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._slots = threading.BoundedSemaphore(policy.max_in_flight)
        self._failure: Outcome | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._finished = False
        self.batches_sent = 0
        self.rows_sent = 0

    # -------------------------------------------------------------------------------------------
    # Checks made before a push changes anything

    def plan_batch(self, data: pa.RecordBatch | pa.Table) -> list[Piece]:
        """The slices `data` will be sent as; ArgumentError (nothing changed) when it does not
        match the schema or holds a record larger than one message may be."""
        if isinstance(data, pa.RecordBatch):
            batches = [data]
        elif isinstance(data, pa.Table):
            batches = data.to_batches()
        else:
            raise ArgumentError(
                f"push takes a pyarrow RecordBatch or Table, got {type(data).__name__}"
            )
        out: list[Piece] = []
        for batch in batches:
            if batch.num_rows:
                conformed = conform_batch(batch, self.schema)
                out.extend(self._split(conformed, _size(conformed)))
        return out

    def _split(self, batch: pa.RecordBatch, nbytes: int) -> list[Piece]:
        policy = self.policy
        if nbytes <= policy.batch_bytes and batch.num_rows <= policy.batch_rows:
            return [Piece(batch, nbytes)]
        if batch.num_rows == 1:
            if nbytes > policy.max_message_bytes:
                raise ArgumentError(
                    f"a record of {nbytes} bytes is larger than one message may be "
                    f"({policy.max_message_bytes} bytes); it was not written"
                )
            return [Piece(batch, nbytes)]
        half = batch.num_rows // 2
        left, right = batch.slice(0, half), batch.slice(half)
        return self._split(left, left.nbytes) + self._split(right, right.nbytes)

    # -------------------------------------------------------------------------------------------
    # The STREAM_WRITE step

    def _known_failure(self) -> Outcome | None:
        """A failure of an earlier send, or one the server already reported on the stream."""
        if self._failure is None:
            early = self.stream.failure
            if early is not None:
                self._failure = Outcome.failed(
                    early.kind or ErrorKind.CANCELLED, f"the stream failed: {early.detail}"
                )
        return self._failure

    def submit_batches(self, pieces: list[Piece]) -> Outcome:
        """Queue planned slices in order (blocking while the queue is full)."""
        failure = self._known_failure()
        if failure is not None:
            return failure
        if self._rows.rows:
            self._flush_rows()
        merge_below = self.policy.merge_below
        for piece in pieces:
            if piece.nbytes >= merge_below:
                self._flush_pending()
                self._enqueue(piece.batch)
                continue
            if (
                self._pending_bytes + piece.nbytes > self.policy.batch_bytes
                or self._pending_rows + piece.batch.num_rows > self.policy.batch_rows
            ):
                self._flush_pending()
            self._pending.append(piece.batch)
            self._pending_bytes += piece.nbytes
            self._pending_rows += piece.batch.num_rows
            if (
                self._pending_bytes >= self.policy.batch_bytes
                or self._pending_rows >= self.policy.batch_rows
            ):
                self._flush_pending()
        return self._failure or _OK

    def submit_row(self, row: Mapping[str, Any]) -> Outcome:
        """Buffer one row (ArgumentError, nothing changed, if it does not fit the schema)."""
        if self._failure is not None or self.stream.failure is not None:
            return self._known_failure() or _OK
        rows = self._rows
        size = rows.measure(row)
        if (
            rows.bytes + size > self._flush_bytes
            or rows.pushed - self._flushed >= self._flush_rows_at
        ):
            # The buffer is full with this row: convert what came before it, so a message
            # stays within batch_bytes (a conversion error then leaves this row out).
            self._flush_rows()
        rows.add(row, size)
        return _OK

    def _flush_rows(self) -> None:
        """Convert the buffered rows and queue them behind what was pushed before. Rows that
        do not convert are left out and reported (ArgumentError) after the others are queued."""
        if not self._rows.rows:
            return
        self._flushed = self._rows.pushed
        batch, error = self._rows.take()
        for piece in self._split(batch, batch.nbytes) if batch.num_rows else []:
            if piece.nbytes >= self.policy.merge_below:
                self._flush_pending()
                self._enqueue(piece.batch)
            else:
                self._pending.append(piece.batch)
                self._pending_bytes += piece.nbytes
                self._pending_rows += piece.batch.num_rows
                self._flush_pending()
        if error is not None:
            raise error

    def _flush_pending(self) -> None:
        if not self._pending:
            return
        pieces = self._pending
        self._pending, self._pending_bytes, self._pending_rows = [], 0, 0
        self._enqueue(pieces[0] if len(pieces) == 1 else pa.concat_batches(pieces))

    def _enqueue(self, batch: pa.RecordBatch) -> None:
        if not self.policy.background:
            self._send(batch)
            return
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._send_loop, name="mosaico-fsm-topic-sender", daemon=True
            )
            self._thread.start()
        self._slots.acquire()  # blocks while max_in_flight messages wait: the memory bound
        self._queue.put(batch)

    def _send_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _CLOSE:
                return
            if isinstance(item, threading.Event):  # a flush marker: everything before is sent
                item.set()
                continue
            try:
                self._send(item)
            finally:
                self._slots.release()

    def _send(self, batch: pa.RecordBatch) -> None:
        if self._failure is not None:
            return  # the stream is dead; the failure is reported at the next push or close
        outcome = self.stream.write(batch)
        if outcome.is_ok:
            self.batches_sent += 1
            self.rows_sent += batch.num_rows
        else:
            with self._lock:
                self._failure = Outcome.failed(
                    outcome.kind or ErrorKind.CANCELLED,
                    f"sending a batch of {batch.num_rows} rows failed: {outcome.detail}",
                )

    def submit_flush(self) -> Outcome:
        """Send everything buffered and wait until every queued message has been written."""
        failure = self._known_failure()
        if failure is not None:
            return failure
        try:
            self._flush_rows()
        except ArgumentError as exc:
            return Outcome.failed(ErrorKind.INVALID_ARGUMENT, str(exc))
        self._flush_pending()
        if self._thread is not None:
            marker = threading.Event()
            self._queue.put(marker)
            marker.wait()
        return self._known_failure() or _OK

    def _drain(self) -> None:
        if self._thread is not None:
            self._queue.put(_CLOSE)
            self._thread.join()
            self._thread = None

    # -------------------------------------------------------------------------------------------
    # The STREAM_CLOSE and STREAM_ABORT steps

    def close(self) -> Outcome:
        """Send everything buffered, wait for the sends, end the stream cleanly and answer the
        server's verdict. Without a sender thread running, the last messages go out from
        this thread (no thread is started just to close)."""
        if self._finished:
            return Outcome.failed(ErrorKind.FAILED_PRECONDITION, "the stream is already closed")
        if self._thread is None:
            self.policy = attrs.evolve(self.policy, background=False)
        rejected: ArgumentError | None = None
        try:
            self._flush_rows()
        except ArgumentError as exc:
            rejected = exc  # the other rows are sent; the stream still ends, then this is reported
        self._flush_pending()
        self._drain()
        self._finished = True
        if self._known_failure() is not None:
            self.stream.abort()
            return self._failure  # type: ignore[return-value]
        verdict = self.stream.close()
        if rejected is not None and verdict.is_ok:
            return Outcome.failed(ErrorKind.INVALID_ARGUMENT, f"the stream ended, but {rejected}")
        return verdict

    def abort(self) -> Outcome:
        """Cancel the stream; buffered records are discarded on purpose."""
        if self._finished:
            return _OK
        self._failure = self._failure or Outcome.failed(
            ErrorKind.CANCELLED, "the stream was aborted"
        )
        self._rows.clear()
        self._pending, self._pending_bytes, self._pending_rows = [], 0, 0
        self._drain()
        self._finished = True
        return self.stream.abort()

    @property
    def buffered_rows(self) -> int:
        return self._rows.rows + self._pending_rows
