"""Worker processes for work that splits into independent runs (the simulator's
explorations, the conformance self-test): Ctrl-C is handled by the parent alone, and no
worker outlives the pool, whether the work ends, fails or is interrupted."""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.pool import Pool

__all__ = ["worker_pool"]


def _ignore_interrupts() -> None:
    """In a worker: Ctrl-C reaches the whole process group; the parent alone handles it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextmanager
def worker_pool(workers: int, *, spawn: bool = False) -> Iterator[Pool | None]:
    """A pool of `workers` processes, or None for one (the caller then works in-process).
    The pool is closed and joined when the block ends, terminated first when it raises
    (Ctrl-C included). Workers are forked, or started afresh with `spawn` (for work that
    uses gRPC, which a forked child cannot use once its parent has)."""
    if workers <= 1:
        yield None
        return
    # Ctrl-C waits until the pool exists, so no worker is ever left behind.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        context = multiprocessing.get_context("spawn" if spawn else "fork")
        pool = context.Pool(workers, initializer=_ignore_interrupts)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    try:
        yield pool
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()
