"""Raw Flight frames for the tests: a grpcio client that sends what pyarrow's client never
would (forged batches, empty or extra messages, garbage), and what the server answers."""

from __future__ import annotations

import json
from collections.abc import Iterable

import attrs
import grpc
import pyarrow as pa
from pyarrow import flight

from fsm.outcome import ErrorKind
from transport.flight import frames
from transport.flight.protocol import flight_pb2 as pb

SERVICE = "/arrow.flight.protocol.FlightService/"
TIMEOUT = 20.0


@attrs.frozen
class Answer:
    """How a raw call ended: its gRPC status code and details, and the messages received."""

    code: grpc.StatusCode
    details: str
    messages: tuple[bytes, ...] = ()


def descriptor(locator: str, topic_uuid: str) -> bytes:
    """A DoPut CMD descriptor, serialised."""
    command = json.dumps({"resource_locator": locator, "topic_uuid": topic_uuid}).encode()
    return bytes(pb.FlightDescriptor(type=pb.FlightDescriptor.CMD, cmd=command).SerializeToString())


def with_descriptor(frame: bytes, serialized_descriptor: bytes) -> bytes:
    """`frame` with a FlightDescriptor (field 1) in front."""
    return (
        bytes(
            pb.FlightData(
                flight_descriptor=pb.FlightDescriptor.FromString(serialized_descriptor)
            ).SerializeToString()
        )
        + frame
    )


def header_frame(locator: str, topic_uuid: str, schema: pa.Schema) -> bytes:
    """The first message of a DoPut: descriptor and schema."""
    return with_descriptor(frames.schema_frame(schema), descriptor(locator, topic_uuid))


def forged_batch(schema_of_buffers: pa.Schema, rows: int) -> bytes:
    """A batch message whose buffers were encoded for `schema_of_buffers` (all integer
    columns, `rows` rows), to be sent on a stream of another schema."""
    columns = [pa.array([1] * rows, f.type) for f in schema_of_buffers]
    return frames.batch_frame(pa.record_batch(columns, schema=schema_of_buffers))


def empty_frame(app_metadata: bytes = b"") -> bytes:
    """A FlightData without an IPC message (only, perhaps, application metadata)."""
    return bytes(pb.FlightData(app_metadata=app_metadata).SerializeToString())


def _ended(call: grpc.RpcError) -> Answer:
    return Answer(call.code(), call.details() or "")  # type: ignore[attr-defined]


def do_put(
    port: int, messages: Iterable[bytes], metadata: tuple[tuple[str, str], ...] = ()
) -> Answer:
    """Send `messages` as one DoPut and half-close; how the call ended."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.stream_stream(SERVICE + "DoPut")
        try:
            received = tuple(call(iter(list(messages)), timeout=TIMEOUT, metadata=metadata))
        except grpc.RpcError as exc:
            return _ended(exc)
        return Answer(grpc.StatusCode.OK, "", received)


def unary_stream(
    port: int, method: str, request: bytes, metadata: tuple[tuple[str, str], ...] = ()
) -> Answer:
    """One call of a unary-request RPC (DoAction, DoGet, ListFlights) with a raw request."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_stream(SERVICE + method)
        try:
            received = tuple(call(request, timeout=TIMEOUT, metadata=metadata))
        except grpc.RpcError as exc:
            return _ended(exc)
        return Answer(grpc.StatusCode.OK, "", received)


def unary_unary(port: int, method: str, request: bytes) -> Answer:
    """One call of GetFlightInfo (or another unary RPC) with a raw request."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(SERVICE + method)
        try:
            return Answer(grpc.StatusCode.OK, "", (call(request, timeout=TIMEOUT),))
        except grpc.RpcError as exc:
            return _ended(exc)


def action(port: int, name: str, body: bytes) -> Answer:
    """A DoAction with a raw body."""
    return unary_stream(port, "DoAction", pb.Action(type=name, body=body).SerializeToString())


# ---------------------------------------------------------------------------------------------
# What a pyarrow client sees, per error kind: the phrases pyarrow gives each plain gRPC status,
# the same against mosaicod (measured with pyarrow 26)

SEEN_AS: dict[ErrorKind, tuple[type[Exception], str]] = {
    ErrorKind.NOT_FOUND: (pa.ArrowKeyError, "Flight returned not found error"),
    ErrorKind.ALREADY_EXISTS: (pa.ArrowException, "Unknown: Flight returned already exists error"),
    ErrorKind.FAILED_PRECONDITION: (pa.ArrowInvalid, "gRPC returned precondition failed error"),
    ErrorKind.INVALID_ARGUMENT: (pa.ArrowInvalid, "Flight returned invalid argument error"),
    ErrorKind.PERMISSION_DENIED: (
        flight.FlightUnauthorizedError,
        "Flight returned unauthorized error",
    ),
    ErrorKind.UNAUTHENTICATED: (
        flight.FlightUnauthenticatedError,
        "Flight returned unauthenticated error",
    ),
    ErrorKind.INTERNAL: (flight.FlightInternalError, "Flight returned internal error"),
    ErrorKind.CANCELLED: (flight.FlightCancelledError, "Flight cancelled call"),
    ErrorKind.ABORTED: (flight.FlightInternalError, "gRPC returned aborted error"),
    ErrorKind.UNIMPLEMENTED: (pa.ArrowNotImplementedError, "Flight returned unimplemented error"),
    ErrorKind.RESOURCE_EXHAUSTED: (pa.ArrowInvalid, "gRPC returned resource exhausted error"),
}
