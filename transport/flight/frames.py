"""Flight data frames on the wire: the FlightData protobuf message and the Arrow IPC messages
it carries, in both directions, for a server written on grpcio.

A FlightData (Apache Arrow's format/Flight.proto) holds an optional descriptor (field 1), the
flatbuffer header of one IPC message (field 2), application metadata (field 3) and the IPC body
(field 1000). It is decoded here by hand rather than through the generated class: the body is
then a slice of the received bytes, and the IPC message rebuilt from it reads its buffers there,
without a copy (`ipc_message`). Anything that is not a well-formed FlightData raises
`FrameError`.
"""

from __future__ import annotations

import struct

import attrs
import pyarrow as pa

from fsm.errors import TransportError

__all__ = [
    "FlightFrame",
    "FrameError",
    "batch_frame",
    "decode_frame",
    "decompressed_size",
    "encode_frame",
    "ipc_message",
    "schema_bytes",
    "schema_frame",
]

_CONTINUATION = b"\xff\xff\xff\xff"
_DESCRIPTOR, _HEADER, _APP_METADATA, _BODY = 1, 2, 3, 1000
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


_POOL = pa.system_memory_pool()
"""Where a body that is copied is copied to: it is kept (the server stores its batches), and on
fresh memory the C library's allocator was measured several times faster than pyarrow's
default (mimalloc) for such large, long-lived blocks."""


class FrameError(TransportError, ValueError):
    """A message that is not a well-formed FlightData, or an IPC message that cannot be read."""


@attrs.frozen
class FlightFrame:
    """One decoded FlightData: each field as received (empty when absent)."""

    descriptor: bytes | None
    header: memoryview
    app_metadata: memoryview
    body: memoryview


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(data):
            raise FrameError("a protobuf varint runs past the end of the message")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise FrameError("a protobuf varint is longer than 10 bytes")


def decode_frame(raw: bytes) -> FlightFrame:
    """The fields of one FlightData message (unknown fields are skipped, as protobuf does)."""
    data = memoryview(raw)
    empty = data[0:0]
    fields: dict[int, memoryview] = {}
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise FrameError("a protobuf field has number 0")
        if wire == _VARINT:
            _, pos = _varint(data, pos)
        elif wire == _I64:
            pos += 8
        elif wire == _I32:
            pos += 4
        elif wire == _LEN:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise FrameError(f"field {number} is longer than the message")
            if number in (_DESCRIPTOR, _HEADER, _APP_METADATA, _BODY):
                fields[number] = data[pos : pos + size]
            pos += size
            continue
        else:
            raise FrameError(f"field {number} has the unsupported wire type {wire}")
        if number in (_DESCRIPTOR, _HEADER, _APP_METADATA, _BODY):
            raise FrameError(f"field {number} of FlightData must be length-delimited")
        if pos > len(data):
            raise FrameError(f"field {number} is longer than the message")
    descriptor = fields.get(_DESCRIPTOR)
    return FlightFrame(
        descriptor=bytes(descriptor) if descriptor is not None else None,
        header=fields.get(_HEADER, empty),
        app_metadata=fields.get(_APP_METADATA, empty),
        body=fields.get(_BODY, empty),
    )


def _length_delimited(number: int, size: int) -> bytes:
    out = bytearray()
    for value in (number << 3 | _LEN, size):
        while True:
            low, value = value & 0x7F, value >> 7
            out.append(low | (0x80 if value else 0))
            if not value:
                break
    return bytes(out)


def encode_frame(header: pa.Buffer | bytes, body: pa.Buffer | bytes | None = None) -> bytes:
    """One FlightData message holding an IPC header and its body."""
    parts: list[bytes | pa.Buffer] = [_length_delimited(_HEADER, len(header)), header]
    if body is not None and len(body):
        parts += [_length_delimited(_BODY, len(body)), body]
    return b"".join(parts)


class _Parts:
    """A read-only file over a few buffers, read in order. The IPC reader takes what each read
    answers as an Arrow buffer over the same memory (a Python buffer is not copied)."""

    mode = "rb"
    closed = False

    def __init__(self, *parts: bytes | memoryview) -> None:
        self._parts = [memoryview(p) for p in parts if len(p)]

    def read(self, size: int = -1) -> memoryview | bytes:
        if not self._parts:
            return b""
        part = self._parts[0]
        if 0 <= size < len(part):
            self._parts[0] = part[size:]
            return part[:size]
        del self._parts[0]
        return part

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True


def _kept_body(body: memoryview) -> memoryview | pa.Buffer:
    """The memory a message's body is read from: the received bytes themselves, unless the
    body is less than half of them (then a copy, so that a kept batch never holds a message
    much larger than itself alive)."""
    if 2 * len(body) >= memoryview(body.obj).nbytes:
        return body
    copy = pa.allocate_buffer(len(body), memory_pool=_POOL)
    pa.FixedSizeBufferWriter(copy).write(body)  # copies in C++, without the GIL
    return copy


def ipc_message(header: memoryview, body: memoryview) -> pa.ipc.Message:
    """The IPC message made of a FlightData's header and body.

    Only the header is copied; the message's body is the received body itself, as pyarrow's
    own Flight server keeps it: its buffers are therefore not always 8-byte aligned (Arrow reads
    them all the same; whatever is sent on is serialized again). Raises FrameError when the
    header is not an IPC message or the body's length is not the one the header declares."""
    if not len(header):
        raise FrameError("the message has no IPC header")
    pad = -len(header) % 8
    prefix = b"".join((_CONTINUATION, struct.pack("<i", len(header) + pad), header, bytes(pad)))
    try:
        message = pa.ipc.read_message(_Parts(prefix, _kept_body(body)))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise FrameError(f"not an Arrow IPC message: {exc}") from None
    declared = message.body.size if message.body is not None else 0
    if declared != len(body):
        raise FrameError(
            f"the IPC header declares a body of {declared} bytes, the message carries {len(body)}"
        )
    return message


# The IPC header is a flatbuffer (Arrow's format/Message.fbs): Message {version, header_type,
# header, bodyLength, ...}, whose RecordBatch header is {length, nodes, buffers, compression,
# ...}; a Buffer is a struct {offset: int64, length: int64}. Only what `decompressed_size` needs
# is read, every offset checked against the header's size.
_RECORD_BATCH = 3  # MessageHeader union: Schema 1, DictionaryBatch 2, RecordBatch 3
_MESSAGE_HEADER_TYPE, _MESSAGE_HEADER = 1, 2
_BATCH_BUFFERS, _BATCH_COMPRESSION = 2, 3


def _unpack(fmt: str, data: memoryview, pos: int) -> int:
    if pos < 0 or pos + struct.calcsize(fmt) > len(data):
        raise FrameError("the IPC header is not a well-formed flatbuffer")
    value: int = struct.unpack_from(fmt, data, pos)[0]
    return value


def _field(data: memoryview, table: int, index: int) -> int | None:
    """Where field `index` of the flatbuffer table at `table` is (None: absent)."""
    vtable = table - _unpack("<i", data, table)
    size = _unpack("<H", data, vtable)
    if 4 + 2 * index + 2 > size:
        return None
    offset = _unpack("<H", data, vtable + 4 + 2 * index)
    return table + offset if offset else None


def _indirect(data: memoryview, pos: int) -> int:
    return pos + _unpack("<I", data, pos)


def decompressed_size(header: memoryview, body: memoryview) -> int | None:
    """The size a compressed record batch's buffers declare once decompressed (the int64 that
    leads each compressed buffer; -1 marks a buffer sent uncompressed), or None when the
    message is not a compressed record batch. Read before Arrow decompresses anything, so that
    a small body declaring a huge size can be refused before any memory is taken.

    Raises FrameError when the header or a buffer's place in the body is out of bounds."""
    root = _indirect(header, 0)
    kind = _field(header, root, _MESSAGE_HEADER_TYPE)
    if kind is None or _unpack("<B", header, kind) != _RECORD_BATCH:
        return None
    place = _field(header, root, _MESSAGE_HEADER)
    if place is None:
        return None
    batch = _indirect(header, place)
    if _field(header, batch, _BATCH_COMPRESSION) is None:
        return None
    buffers = _field(header, batch, _BATCH_BUFFERS)
    if buffers is None:
        return 0
    vector = _indirect(header, buffers)
    count = _unpack("<I", header, vector)
    if vector + 4 + 16 * count > len(header):
        raise FrameError("the IPC header is not a well-formed flatbuffer")
    total = 0
    for i in range(count):
        offset = _unpack("<q", header, vector + 4 + 16 * i)
        length = _unpack("<q", header, vector + 12 + 16 * i)
        if length == 0:
            continue
        if offset < 0 or length < 8 or offset + length > len(body):
            raise FrameError(f"compressed buffer {i} does not lie within the message's body")
        declared = _unpack("<q", body, offset)
        if declared == -1:
            declared = length - 8
        elif declared < 0:
            raise FrameError(f"compressed buffer {i} declares a negative size")
        total += declared
    return total


def schema_bytes(schema: pa.Schema) -> bytes:
    """A schema in its encapsulated IPC form, as FlightInfo and SchemaResult carry it."""
    return bytes(schema.serialize().to_pybytes())


def schema_frame(schema: pa.Schema) -> bytes:
    """The first FlightData of a DoGet: the schema message."""
    message = pa.ipc.read_message(schema.serialize())
    return encode_frame(message.metadata)


def batch_frame(batch: pa.RecordBatch) -> bytes:
    """One FlightData holding a record batch."""
    message = pa.ipc.read_message(batch.serialize())
    return encode_frame(message.metadata, message.body)
