"""How the reference server has the C allocator (glibc) keep and give back memory.

A server that receives large messages meets two of glibc's habits:

- Freed memory at the top of a heap stays with the process up to a *trim threshold*. The
  pieces gRPC receives a message in (its socket reads and one Python bytes object per piece,
  about 10 MB in all for a 10 MB message, freed once the message is joined) are such memory:
  handed back after every message, they are faulted in again for the next one, and a DoPut of
  160 MB then spends most of its time in the kernel's page-fault handler. Kept, a 10 MB
  request that was refused stays in the server's resident memory: `malloc_trim` hands back
  free memory inside every heap, but the top of a thread's own heap only when a later free
  there finds it above the threshold.
- glibc raises its mmap threshold to the size of each large block freed, after which 10 MB
  bodies come from the heaps too.

So the mmap threshold is fixed at MMAP_THRESHOLD (a larger block gets its own mapping,
unmapped when freed), and the trim threshold follows the DoPut streams open in the process
(`StreamTrim`): STREAM_TRIM_THRESHOLD while one is, IDLE_TRIM_THRESHOLD (glibc's default)
otherwise, with a `release` when the last one ends. A refused request that received
RELEASE_AFTER bytes or more is followed by a `release` too.

Everything here is a no-op where the C library has no mallopt or malloc_trim.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections.abc import Callable

__all__ = [
    "IDLE_TRIM_THRESHOLD",
    "MMAP_THRESHOLD",
    "RELEASE_AFTER",
    "STREAM_TRIM_THRESHOLD",
    "StreamTrim",
    "release",
    "tune",
]

MMAP_THRESHOLD = 1 << 20
"""Bytes from which the C allocator serves a block with its own mapping."""

STREAM_TRIM_THRESHOLD = 32 << 20
"""Bytes freed at the top of a heap that stay there while a DoPut stream is open."""

IDLE_TRIM_THRESHOLD = 128 << 10
"""Bytes freed at the top of a heap that stay there while no DoPut stream is open (glibc's
default)."""

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
    server in the process: the setting is the process's)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open = 0

    @property
    def open(self) -> int:
        with self._lock:
            return self._open

    def apply(self) -> None:
        with self._lock:
            _set_trim_threshold(STREAM_TRIM_THRESHOLD if self._open else IDLE_TRIM_THRESHOLD)

    def opened(self) -> None:
        with self._lock:
            self._open += 1
            if self._open == 1:
                _set_trim_threshold(STREAM_TRIM_THRESHOLD)

    def closed(self, refused: bool = False) -> None:
        """A stream ended; `refused`: it was refused after receiving RELEASE_AFTER bytes or
        more, which are handed back at once when no other stream is open (a stream that
        ended cleanly leaves what it freed for the next one, until the periodic release)."""
        with self._lock:
            self._open -= 1
            last = self._open == 0
            if last:
                _set_trim_threshold(IDLE_TRIM_THRESHOLD)
        if last and refused:
            release()


STREAMS = StreamTrim()
"""The process's trim threshold, as the DoPut streams of its servers open and end."""
