"""How the reference server has the C allocator (glibc) keep and give back memory.

A server that receives large messages meets three of glibc's habits:

- Freed memory at the top of a heap stays with the process up to a *trim threshold*. The
  pieces gRPC receives a message in (its socket reads and one Python bytes object per piece,
  about 10 MB in all for a 10 MB message, freed once the message is joined) are such memory:
  handed back after every message, they are faulted in again for the next one, and a DoPut of
  160 MB then spends most of its time in the kernel's page-fault handler.
- Kept above the trim threshold, the same pieces of a 10 MB request that was refused stay in
  the server's resident memory: `malloc_trim` hands back free memory inside every heap, but
  the top of a thread's own heap only when a later free there finds it above the threshold.
- A block from the *mmap threshold* on gets a mapping of its own, unmapped when freed, and
  glibc moves that threshold with the blocks freed. Each DoPut message the server keeps
  (its batches are read where gRPC received it) is one such block: in a mapping of its own it
  is fresh memory, every page faulted in, even when a deleted topic just freed as much.

So the mmap threshold is fixed at MMAP_THRESHOLD, above the usual DoPut message: messages
come from the heaps, and a new stream reuses what deleted topics freed
(`tests/benchmarks/bench_server.py`, whose rounds delete what they stored, printed 0.11 s of
server CPU per 168 MB DoPut against 0.17 s with a threshold of 1 MiB). The trim
threshold follows the DoPut streams open in the process (`StreamTrim`): STREAM_TRIM_THRESHOLD
while one is and shortly after, IDLE_TRIM_THRESHOLD (glibc's default) otherwise. A refused
request that received RELEASE_AFTER bytes or more is followed by a `release`, and the servers'
watchdogs `release` every few seconds: freed memory inside the heaps goes back to the system.

Everything here is a no-op where the C library has no mallopt or malloc_trim.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from collections.abc import Callable

__all__ = [
    "IDLE_GRACE",
    "IDLE_TRIM_THRESHOLD",
    "MMAP_THRESHOLD",
    "RELEASE_AFTER",
    "STREAM_TRIM_THRESHOLD",
    "StreamTrim",
    "release",
    "tune",
]

MMAP_THRESHOLD = 32 << 20
"""Bytes from which the C allocator serves a block with its own mapping (glibc's largest
setting on 64-bit systems: half of a thread heap's 64 MiB)."""

STREAM_TRIM_THRESHOLD = 32 << 20
"""Bytes freed at the top of a heap that stay there while a DoPut stream is open."""

IDLE_TRIM_THRESHOLD = 128 << 10
"""Bytes freed at the top of a heap that stay there while no DoPut stream is open (glibc's
default)."""

IDLE_GRACE = 2.0
"""Seconds the trim threshold stays raised after the last stream ended cleanly."""

RELEASE_AFTER = 1 << 20
"""Bytes a refused call must have received to be followed by a `release`."""

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def _load_libc() -> tuple[Callable[[int], int] | None, Callable[[int, int], int] | None]:
    """glibc's malloc_trim and mallopt (None where the C library has none of them)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
        mallopt: Callable[[int, int], int] = libc.mallopt
    except (OSError, AttributeError):  # not glibc: nothing to tune this way
        return None, None
    return trim, mallopt


_TRIM, _MALLOPT = _load_libc()


def _set_trim_threshold(size: int) -> None:
    if _MALLOPT is not None:
        _MALLOPT(_M_TRIM_THRESHOLD, size)


def tune() -> None:
    """Fix the mmap threshold, and the trim threshold for the streams open now."""
    if _MALLOPT is not None:
        _MALLOPT(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    STREAMS.apply()


def release() -> None:
    """Hand the free memory inside every heap, and the top of the main one, back to the
    system."""
    if _TRIM is not None:
        _TRIM(0)


class StreamTrim:
    """The trim threshold of the process, following the DoPut streams open in it (of every
    server in the process: the setting is the process's).

    STREAM_TRIM_THRESHOLD from the moment a stream opens. When the last one ends cleanly it
    stays for IDLE_GRACE seconds, so that the next stream of a client writing topic after topic
    reuses what this one freed; `settle` (the servers' watchdogs call it) then lowers it. When
    the last one was refused after receiving RELEASE_AFTER bytes or more, it is lowered at
    once and the memory handed back: what a refused request took never stays."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open = 0
        self._raised = False
        self._quiet_since = 0.0

    @property
    def open(self) -> int:
        with self._lock:
            return self._open

    def _set(self, raised: bool) -> None:
        self._raised = raised
        _set_trim_threshold(STREAM_TRIM_THRESHOLD if raised else IDLE_TRIM_THRESHOLD)

    def apply(self) -> None:
        """Set the threshold the streams open now call for."""
        with self._lock:
            self._set(self._open > 0)

    def opened(self) -> None:
        with self._lock:
            self._open += 1
            if not self._raised:
                self._set(True)

    def closed(self, refused: bool = False, now: float | None = None) -> None:
        """A stream ended; `refused`: it was refused after receiving RELEASE_AFTER bytes or
        more."""
        with self._lock:
            self._open -= 1
            if self._open:
                return
            self._quiet_since = time.monotonic() if now is None else now
            if not refused:
                return
            self._set(False)
        release()

    def settle(self, now: float | None = None) -> None:
        """Lower the threshold once no stream has been open for IDLE_GRACE seconds."""
        with self._lock:
            now = time.monotonic() if now is None else now
            if self._open or not self._raised or now - self._quiet_since < IDLE_GRACE:
                return
            self._set(False)
        release()


STREAMS = StreamTrim()
"""The process's trim threshold, as the DoPut streams of its servers open and end."""
