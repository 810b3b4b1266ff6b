"""How a streaming call's messages ended, on a grpcio server: the client's half-close or its death.

grpcio ends a request iterator (StopIteration) the same way in both cases: a dead client's
connection cancels the call, and the cancellation first completes the pending receive with no
message, then, from the same cancellation, reports the call's termination. The two reports are
queued one after the other on the server's completion queue, which one grpcio thread handles in
order.

`half_closed` therefore queues one more operation on the call (sending the response's initial
metadata, which the call sends anyway before its status) and waits until grpcio has handled its
completion. Every report queued before it has then been handled too: when the client is gone,
the call's termination has been seen and the call is no longer active. No timer takes part in
the decision; the wait lasts one pass of the completion queue.

This reads grpcio's call state (`grpc._server`), which is not a public API; `tests/
test_flight_server.py` kills a client process mid-stream and half-closes another to hold the
behaviour to account when grpcio changes. A call context that is not grpcio's (a test double)
is answered from `is_active()` alone.
"""

from __future__ import annotations

import threading
from typing import Any

import grpc

__all__ = ["half_closed"]

SAFETY_WAIT = 30.0
"""Seconds `half_closed` waits for the completion at most; gRPC completes every operation it
accepted (with a failure when the call or the server ends), so this bounds only a bug. A call
whose completion never came is taken as ended by a dead client."""


def _grpc_internals() -> Any:
    """grpcio's server module, when it has what `half_closed` uses."""
    from grpc import _server

    needed = (
        "_CANCELLED",
        "_SEND_INITIAL_METADATA_TOKEN",
        "_get_initial_metadata_operation",
        "_send_initial_metadata",
    )
    return _server if all(hasattr(_server, n) for n in needed) else None


_INTERNALS = _grpc_internals()


def half_closed(context: grpc.ServicerContext) -> bool:
    """After a streaming call's request iterator ended: True when the client half-closed the
    call (and is still waiting for its status), False when the client is gone."""
    state = getattr(context, "_state", None)
    rpc_event = getattr(context, "_rpc_event", None)
    if _INTERNALS is None or state is None or rpc_event is None:
        return bool(context.is_active())
    server = _INTERNALS
    handled = threading.Event()
    finish = server._send_initial_metadata(state)

    def completed(event: Any) -> Any:
        try:
            return finish(event)
        finally:
            handled.set()

    with state.condition:
        if state.client is server._CANCELLED or state.statused:
            return False
        queued = bool(state.initial_metadata_allowed)
        if queued:
            operation = server._get_initial_metadata_operation(state, None)
            rpc_event.call.start_server_batch((operation,), completed)
            state.initial_metadata_allowed = False
            state.due.add(server._SEND_INITIAL_METADATA_TOKEN)
    # When the metadata was already sent, nothing more can be queued without a visible effect:
    # the call's state is all there is to read.
    if queued and not handled.wait(SAFETY_WAIT):
        return False
    return bool(context.is_active())
