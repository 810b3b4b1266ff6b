"""What one reference server lets its clients hold (no gRPC import: the CLI reads the defaults)."""

from __future__ import annotations

import attrs

from fsm.errors import ArgumentError

__all__ = ["DECOMPRESSION_RATIO", "ServerLimits"]

DECOMPRESSION_RATIO = 8
"""How much larger than the largest message a compressed batch may be once decompressed."""


@attrs.frozen
class ServerLimits:
    """What one server lets its clients hold.

    - `max_message_bytes`: the largest gRPC message received or sent (a larger one ends its
      call with RESOURCE_EXHAUSTED, from gRPC itself). mosaicod's default is 50 MB. A batch
      sent with IPC compression (LZ4 or ZSTD) may declare at most `max_decompressed_bytes`
      (DECOMPRESSION_RATIO times this) once decompressed; more is refused (INVALID_ARGUMENT)
      before anything is decompressed.
    - `max_streams`: DoPut streams open at once; one more is refused (RESOURCE_EXHAUSTED).
    - `stream_idle_timeout`: seconds a DoPut stream may stay without a message before the server
      cancels it (the topic is not locked, the batches it stored stay), and a DoGet stream may
      wait for its client to take the next frame (a reader that stopped reading frees its
      thread); None: no limit.
    - `control_workers`: threads for the calls that are not DoPut streams (a DoGet holds one
      until its reader is done); a call beyond every thread is refused (RESOURCE_EXHAUSTED)
      rather than queued.
    """

    max_message_bytes: int = 50 * 1024 * 1024
    max_streams: int = 64
    stream_idle_timeout: float | None = 300.0
    control_workers: int = 64

    @property
    def max_decompressed_bytes(self) -> int:
        """The most a compressed batch may declare once decompressed."""
        return DECOMPRESSION_RATIO * self.max_message_bytes

    def __attrs_post_init__(self) -> None:
        if self.max_message_bytes < 1024:
            raise ArgumentError("max_message_bytes must be at least 1024")
        if self.max_streams < 1 or self.control_workers < 1:
            raise ArgumentError("max_streams and control_workers must be at least 1")
        if self.stream_idle_timeout is not None and self.stream_idle_timeout <= 0:
            raise ArgumentError("stream_idle_timeout must be positive (None: no limit)")
