"""The data path of one topic: batching, splitting, and ordered background sending.

Records reach a `StreamWriter` as Arrow batches (kept as they are, zero-copy) or as rows
(buffered per column). Batches are cut by bytes and by rows; a batch larger than the target is
sliced (zero-copy); a single record larger than one message may be is refused with a clear
error, never dropped. One sender thread per topic writes the batches in order, so topics stream
in parallel without blocking each other.

Memory is bounded: a topic holds at most its pending buffer (under `batch_bytes`) plus
`max_in_flight` queued batches plus the one being sent, each at most `batch_bytes`:
(max_in_flight + 2) x batch_bytes in all. A push blocks while the queue is full.

A failure of a background send is kept and answered to the next `submit_*` or `close`, so it
surfaces no later than the next push or close.
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


@attrs.frozen
class BatchPolicy:
    """How a topic cuts its records into messages.

    `batch_bytes`: target size of one message (default 8 MiB, well under the 50 MB a Mosaico
    server accepts by default); `batch_rows`: most rows in one message; `max_message_bytes`:
    a single record above this is refused; `max_in_flight`: batches queued for sending;
    `background`: send from one thread per topic (False: send in the pushing thread, which
    makes runs fully deterministic, as simulations need).
    """

    batch_bytes: int = 8 * MiB
    batch_rows: int = 131_072
    max_message_bytes: int = 48 * MiB
    max_in_flight: int = 3
    background: bool = True

    def __attrs_post_init__(self) -> None:
        if not 0 < self.batch_bytes <= self.max_message_bytes:
            raise ArgumentError("batch_bytes must be positive and at most max_message_bytes")
        if self.batch_rows < 1 or self.max_in_flight < 1:
            raise ArgumentError("batch_rows and max_in_flight must be at least 1")

    @property
    def memory_bound(self) -> int:
        """Most bytes of records one topic holds at any time."""
        return (self.max_in_flight + 2) * self.batch_bytes


_CLOSE = object()


class StreamWriter:
    """Batches and sends the records of one topic over one `TopicStream`."""

    def __init__(self, stream: TopicStream, schema: pa.Schema, policy: BatchPolicy) -> None:
        self.stream = stream
        self.schema = schema
        self.policy = policy
        self._rows = RowBuffer(schema)
        self._row_target = policy.batch_rows
        self._pending: list[pa.RecordBatch] = []
        self._pending_bytes = 0
        self._pending_rows = 0
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=policy.max_in_flight)
        self._failure: Outcome | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._finished = False
        self.batches_sent = 0
        self.rows_sent = 0

    # -------------------------------------------------------------------------------------------
    # Checks made before a push changes anything

    def plan_batch(self, data: pa.RecordBatch | pa.Table) -> list[pa.RecordBatch]:
        """The slices `data` will be sent as; ArgumentError (nothing changed) when it does not
        match the schema or holds a record larger than one message may be."""
        if isinstance(data, pa.Table):
            batches = data.to_batches()
        elif isinstance(data, pa.RecordBatch):
            batches = [data]
        else:
            raise ArgumentError(
                f"push takes a pyarrow RecordBatch or Table, got {type(data).__name__}"
            )
        out: list[pa.RecordBatch] = []
        for batch in batches:
            out.extend(self._split(conform_batch(batch, self.schema)))
        return out

    def _split(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        policy = self.policy
        if batch.num_rows == 0:
            return []
        if batch.nbytes <= policy.batch_bytes and batch.num_rows <= policy.batch_rows:
            return [batch]
        if batch.num_rows == 1:
            if batch.nbytes > policy.max_message_bytes:
                raise ArgumentError(
                    f"a record of {batch.nbytes} bytes is larger than one message may be "
                    f"({policy.max_message_bytes} bytes); it was not written"
                )
            return [batch]
        half = batch.num_rows // 2
        return self._split(batch.slice(0, half)) + self._split(batch.slice(half))

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

    def submit_batches(self, slices: list[pa.RecordBatch]) -> Outcome:
        """Queue planned slices in order (blocking while the queue is full)."""
        if self._known_failure() is not None:
            return self._failure  # type: ignore[return-value]
        for piece in slices:
            if (
                piece.nbytes * 2 >= self.policy.batch_bytes
                or piece.num_rows * 2 >= self.policy.batch_rows
            ):
                self._flush_rows()
                self._flush_pending()
                self._enqueue(piece)
            else:
                self._flush_rows()
                self._pending.append(piece)
                self._pending_bytes += piece.nbytes
                self._pending_rows += piece.num_rows
                if (
                    self._pending_bytes >= self.policy.batch_bytes
                    or self._pending_rows >= self.policy.batch_rows
                ):
                    self._flush_pending()
        return self._failure or Outcome.ok()

    def submit_row(self, row: Mapping[str, Any]) -> Outcome:
        """Buffer one row (ArgumentError, nothing changed, if it does not fit the schema)."""
        if self._known_failure() is not None:
            return self._failure  # type: ignore[return-value]
        self._rows.append(row)
        if self._rows.rows >= self._row_target:
            self._flush_rows()
        return self._failure or Outcome.ok()

    def _flush_rows(self) -> None:
        if not self._rows.rows:
            return
        batch = self._rows.take()
        if batch.num_rows and self._row_target == self.policy.batch_rows:
            per_row = max(1, batch.nbytes // batch.num_rows)
            self._row_target = max(
                1, min(self.policy.batch_rows, self.policy.batch_bytes // per_row)
            )
        self._pending.append(batch)
        self._pending_bytes += batch.nbytes
        self._pending_rows += batch.num_rows
        self._flush_pending()

    def _flush_pending(self) -> None:
        if not self._pending:
            return
        pieces = self._pending
        self._pending, self._pending_bytes, self._pending_rows = [], 0, 0
        merged = pieces[0] if len(pieces) == 1 else pa.concat_batches(pieces)
        self._enqueue(merged)

    def _enqueue(self, batch: pa.RecordBatch) -> None:
        if not self.policy.background:
            self._send(batch)
            return
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._send_loop, name="mosaico-fsm-topic-sender", daemon=True
            )
            self._thread.start()
        self._queue.put(batch)

    def _send_loop(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _CLOSE:
                    return
                self._send(item)
            finally:
                self._queue.task_done()

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
        """Send everything buffered and wait until every queued batch has been written."""
        if self._known_failure() is not None:
            return self._failure  # type: ignore[return-value]
        self._flush_rows()
        self._flush_pending()
        if self._thread is not None:
            self._queue.join()
        return self._failure or Outcome.ok()

    def _drain(self) -> None:
        if self._thread is not None:
            self._queue.put(_CLOSE)
            self._thread.join()
            self._thread = None

    # -------------------------------------------------------------------------------------------
    # The STREAM_CLOSE and STREAM_ABORT steps

    def close(self) -> Outcome:
        """Send everything buffered, wait for the sends, end the stream cleanly and answer the
        server's verdict."""
        if self._finished:
            return Outcome.failed(ErrorKind.FAILED_PRECONDITION, "the stream is already closed")
        try:
            self._flush_rows()
        except ArgumentError as exc:
            self._drain()
            self._finished = True
            self.stream.abort()
            return Outcome.failed(ErrorKind.INVALID_ARGUMENT, str(exc))
        self._flush_pending()
        self._drain()
        self._finished = True
        if self._failure is not None:
            self.stream.abort()
            return self._failure
        return self.stream.close()

    def abort(self) -> Outcome:
        """Cancel the stream; buffered records are discarded on purpose."""
        if self._finished:
            return Outcome.ok()
        self._failure = self._failure or Outcome.failed(
            ErrorKind.CANCELLED, "the stream was aborted"
        )
        self._rows = RowBuffer(self.schema)
        self._pending, self._pending_bytes, self._pending_rows = [], 0, 0
        self._drain()
        self._finished = True
        return self.stream.abort()

    @property
    def buffered_rows(self) -> int:
        return self._rows.rows + self._pending_rows
