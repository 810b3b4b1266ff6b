"""The data path of one topic: batching, splitting, and ordered background sending.

Records reach a `StreamWriter` as Arrow batches or tables (sent as they are, zero-copy) or
as rows (checked, buffered, converted in bulk). A batch larger than `batch_bytes` or
`batch_rows` is sliced (zero-copy); small batches are merged until a message is full, so the
server does not store a chunk per tiny push; a single record larger than `max_message_bytes`
is refused with a clear error, never dropped. One sender thread per topic writes the
messages in order, so topics stream in parallel without blocking each other.

Memory is bounded. A topic holds at most: `max_in_flight` messages queued or being sent,
the pending small batches and, while they are merged, their merged copy. A message is at most
`batch_bytes`, except one that holds a single larger record: such a record may be as large as
`max_message_bytes`. So the bound is (max_in_flight + 2) x batch_bytes of Arrow data, or, with
records above batch_bytes, up to max_in_flight x max_message_bytes + 2 x batch_bytes; plus,
for the row API, the rows not yet converted, as Python objects: at most `buffer_rows` of them
and at most `batch_bytes` of estimated data (or a single row of up to `max_message_bytes`).
A push blocks while max_in_flight messages wait.

A failure of a background send (a refusal, or an exception raised by the transport), or a
refusal the server sent early, is kept and answered to the next push, flush or close: it
surfaces no later than the next push or close. Rows the row API accepted but could not convert
are never dropped silently: the push that finds them still takes its own records, and its
error names each row left out.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from typing import Any

import attrs
import pyarrow as pa

from fsm.engine.schema import RowBuffer, conform_batch, lost_row
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
    a single record above this is refused (one up to this size is sent alone);
    `max_in_flight`: messages queued or being sent; `buffer_rows`: most rows the row API holds
    before converting them; `background`: send from one thread per topic (False: send in the
    pushing thread, which makes runs fully deterministic, as simulations need).
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
        """Most bytes of Arrow data one topic holds at any time, with records of at most
        batch_bytes (a larger record, up to max_message_bytes, travels alone)."""
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
    """A slice to send, with its size measured once and its first row's place in the batch
    it was cut from."""

    batch: pa.RecordBatch
    nbytes: int
    offset: int = 0


def _lost_text(lost: Sequence[tuple[int, str]]) -> str:
    """Names every row of the row API that was not written, with the first few problems."""
    numbers = ", ".join(f"#{number}" for number, _ in lost)
    shown = "; ".join(text for _, text in lost[:5])
    shown += f"; and {len(lost) - 5} more" if len(lost) > 5 else ""
    return (
        f"{len(lost)} row(s) accepted earlier by push_row were not written ({numbers}, "
        f"counting the rows push_row accepted on this topic): {shown}"
    )


class StreamWriter:
    """Batches and sends the records of one topic over one `TopicStream`."""

    def __init__(self, stream: TopicStream, schema: pa.Schema, policy: BatchPolicy) -> None:
        self.stream = stream
        self.schema = schema
        self.policy = policy
        self._rows = RowBuffer(schema, policy.max_message_bytes)
        # Rows of a fixed size: how many the buffer holds before converting them (0: rows are
        # measured one by one).
        self._per_batch = (
            min(policy.buffer_rows, max(1, policy.batch_bytes // self._rows.row_width))
            if self._rows.fixed
            else 0
        )
        self._pending: list[pa.RecordBatch] = []
        self._pending_bytes = 0
        self._pending_rows = 0
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._slots = threading.BoundedSemaphore(policy.max_in_flight)
        self._failure: Outcome | None = None  # the first failure; set only through _fail
        self._lock = threading.Lock()  # guards _failure
        self._thread: threading.Thread | None = None
        self._inline = False  # closing without a sender thread: send from the closing thread
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
        limit = self.policy.max_message_bytes
        for batch in batches:
            if batch.num_rows:
                conformed = conform_batch(batch, self.schema)
                for piece in self._split(conformed, _size(conformed)):
                    if piece.nbytes > limit:
                        raise ArgumentError(
                            f"a record of {piece.nbytes} bytes is larger than one message may "
                            f"be ({limit} bytes); it was not written"
                        )
                    out.append(piece)
        return out

    def _split(self, batch: pa.RecordBatch, nbytes: int, offset: int = 0) -> list[Piece]:
        """`batch` cut into pieces of at most batch_bytes and batch_rows; a single record
        larger than batch_bytes is a piece of its own (the callers refuse one too large)."""
        policy = self.policy
        if (
            nbytes <= policy.batch_bytes and batch.num_rows <= policy.batch_rows
        ) or batch.num_rows == 1:
            return [Piece(batch, nbytes, offset)]
        half = batch.num_rows // 2
        left, right = batch.slice(0, half), batch.slice(half)
        return self._split(left, left.nbytes, offset) + self._split(
            right, right.nbytes, offset + half
        )

    # -------------------------------------------------------------------------------------------
    # The STREAM_WRITE step

    def _fail(self, failure: Outcome) -> Outcome:
        """Keep `failure` unless one is kept already; the failure kept."""
        with self._lock:
            if self._failure is None:
                self._failure = failure
            return self._failure

    def _known_failure(self) -> Outcome | None:
        """A failure of an earlier send, or one the server already reported on the stream."""
        failure = self._failure
        if failure is None:
            early = self.stream.failure
            if early is not None:
                failure = self._fail(
                    Outcome.failed(
                        early.kind or ErrorKind.CANCELLED, f"the stream failed: {early.detail}"
                    )
                )
        return failure

    @property
    def is_open(self) -> bool:
        """True while records can still reach the server: not closed, no failure known."""
        return not self._finished and self._known_failure() is None

    def submit_batches(self, pieces: list[Piece]) -> Outcome:
        """Queue planned slices in order (blocking while the queue is full)."""
        failure = self._known_failure()
        if failure is not None:
            return failure
        lost = self._flush_rows()
        for piece in pieces:
            self._place(piece)
        return self._answer(lost, "the records of this push were queued")

    def submit_row(self, row: Any) -> Outcome:
        """Buffer one row (ArgumentError, nothing changed, if it does not fit the schema or is
        larger than one message may be)."""
        if self._failure is not None or self.stream.failure is not None:
            return self._known_failure() or _OK
        rows = self._rows
        values = rows.values(row)
        held = rows.held
        if self._per_batch:
            # Every row has the same size: the buffer holds a number of rows.
            if len(held) < self._per_batch:
                held.append(values)
                rows.pushed += 1
                return _OK
            size = rows.row_width
        else:
            size = rows.size(values)
            if rows.bytes + size <= self.policy.batch_bytes and len(held) < self.policy.buffer_rows:
                rows.add(values, size)
                return _OK
        # The buffer is full with this row: convert what came before it, so a message stays
        # within batch_bytes. This row is kept whatever that conversion finds.
        lost = self._flush_rows()
        rows.add(values, size)
        return self._answer(lost, "this row was accepted")

    def _flush_rows(self) -> list[tuple[int, str]]:
        """Convert the held rows and place them behind what was pushed before. Rows that do
        not convert, or turn out larger than one message may be, are left out; the answer
        names each of them (empty when every row was placed)."""
        rows = self._rows
        if not rows.held:
            return []
        batch, numbers, lost = rows.take()
        if not batch.num_rows:
            return lost
        limit = self.policy.max_message_bytes
        for piece in self._split(batch, _size(batch)):
            if piece.nbytes > limit:
                number = numbers[piece.offset]
                lost.append(
                    lost_row(
                        number,
                        rows.timestamp(batch, piece.offset),
                        f"{piece.nbytes} bytes, larger than one message may be ({limit})",
                    )
                )
                continue
            self._place(piece)
        self._flush_pending()  # the converted rows leave now, with what was pending
        return sorted(lost)

    def _answer(self, lost: list[tuple[int, str]], accepted: str) -> Outcome:
        """What a push answers once its own records are placed: the kept failure, or the rows
        of earlier pushes that were left out, or ok."""
        failure = self._failure
        if not lost:
            return failure or _OK
        text = f"{accepted}, but {_lost_text(lost)}"
        if failure is not None:
            return Outcome.failed(failure.kind or ErrorKind.CANCELLED, f"{failure.detail}; {text}")
        return Outcome.failed(ErrorKind.INVALID_ARGUMENT, text)

    def _place(self, piece: Piece) -> None:
        """Send a large piece as its own message; merge a small one with the pending ones,
        sending them first when it would overfill their message."""
        policy = self.policy
        if piece.nbytes >= policy.merge_below:
            self._flush_pending()
            self._enqueue(piece.batch)
            return
        if (
            self._pending_bytes + piece.nbytes > policy.batch_bytes
            or self._pending_rows + piece.batch.num_rows > policy.batch_rows
        ):
            self._flush_pending()
        self._pending.append(piece.batch)
        self._pending_bytes += piece.nbytes
        self._pending_rows += piece.batch.num_rows
        if self._pending_bytes >= policy.batch_bytes or self._pending_rows >= policy.batch_rows:
            self._flush_pending()

    def _flush_pending(self) -> None:
        if not self._pending:
            return
        pieces = self._pending
        self._pending, self._pending_bytes, self._pending_rows = [], 0, 0
        self._enqueue(pieces[0] if len(pieces) == 1 else pa.concat_batches(pieces))

    def _enqueue(self, batch: pa.RecordBatch) -> None:
        if self._inline or not self.policy.background:
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
        """The sender thread: it never dies before _CLOSE, so flush markers are always set
        and slots always released (a send that raises is kept as the stream's failure)."""
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
        try:
            outcome = self.stream.write(batch)
        except Exception as exc:  # a transport bug must not kill the sender
            outcome = Outcome.failed(
                ErrorKind.INTERNAL, f"the transport raised {type(exc).__name__}: {exc}"
            )
        if outcome.is_ok:
            self.batches_sent += 1
            self.rows_sent += batch.num_rows
        else:
            self._fail(
                Outcome.failed(
                    outcome.kind or ErrorKind.CANCELLED,
                    f"sending a batch of {batch.num_rows} rows failed: {outcome.detail}",
                )
            )

    def submit_flush(self) -> Outcome:
        """Send everything buffered and wait until every queued message has been written."""
        failure = self._known_failure()
        if failure is not None:
            return failure
        lost = self._flush_rows()
        self._flush_pending()
        if self._thread is not None:
            marker = threading.Event()
            self._queue.put(marker)
            marker.wait()
        self._known_failure()
        return self._answer(lost, "every other record was sent")

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
            self._inline = True
        lost = self._flush_rows()  # the other rows are sent; the stream still ends
        self._flush_pending()
        self._drain()
        self._finished = True
        if self._known_failure() is not None:
            self.stream.abort()
            return self._answer(lost, "the stream was cancelled")
        verdict = self.stream.close()
        if not lost:
            return verdict
        if verdict.is_ok:
            return Outcome.failed(
                ErrorKind.INVALID_ARGUMENT,
                f"the stream ended with every other record, but {_lost_text(lost)}",
            )
        return attrs.evolve(verdict, detail=f"{verdict.detail}; also, {_lost_text(lost)}")

    def abort(self) -> Outcome:
        """Cancel the stream; buffered records are discarded on purpose."""
        if self._finished:
            return _OK
        self._fail(Outcome.failed(ErrorKind.CANCELLED, "the stream was aborted"))
        self._rows.clear()
        self._pending, self._pending_bytes, self._pending_rows = [], 0, 0
        self._drain()
        self._finished = True
        return self.stream.abort()

    @property
    def buffered_rows(self) -> int:
        return len(self._rows.held) + self._pending_rows
