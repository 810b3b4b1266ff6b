"""Schemas: what each serialization format allows, and batches and rows checked against a
topic's schema. Every error names the column."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pyarrow as pa

from fsm.enums import SerializationFormat
from fsm.errors import ArgumentError

__all__ = ["RowBuffer", "check_format_schema", "conform_batch"]


def _fixed_or_scalar(t: pa.DataType) -> bool:
    """One value per row of a fixed width, or a plain string (Default's columns)."""
    if pa.types.is_struct(t):
        return all(_fixed_or_scalar(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_fixed_size_list(t):
        return _fixed_or_scalar(t.value_type)
    return bool(
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_boolean(t)
        or pa.types.is_temporal(t)
        or pa.types.is_decimal(t)
        or pa.types.is_fixed_size_binary(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
    )


def _ragged_ok(t: pa.DataType) -> bool:
    """Default's columns, plus variable-length lists (of anything Ragged allows)."""
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _ragged_ok(t.value_type)
    if pa.types.is_struct(t):
        return all(_ragged_ok(t.field(i).type) for i in range(t.num_fields))
    return _fixed_or_scalar(t)


def _binary(t: pa.DataType) -> bool:
    return bool(pa.types.is_binary(t) or pa.types.is_large_binary(t))


def check_format_schema(schema: pa.Schema, fmt: SerializationFormat) -> None:
    """Refuse a schema the format does not allow, naming the offending column.

    Every format needs a non-nullable int64 `timestamp_ns`. Default: fixed-width columns
    (numbers, booleans, times, fixed-size lists and structs of those) and plain strings.
    Ragged: also variable-length lists. Image: Default's columns plus at least one binary
    payload column.
    """
    if not isinstance(schema, pa.Schema):
        raise ArgumentError(f"a topic schema is a pyarrow.Schema, got {type(schema).__name__}")
    if len(set(schema.names)) != len(schema.names):
        raise ArgumentError(f"the schema repeats a column name: {schema.names}")
    index = schema.get_field_index("timestamp_ns")
    if index < 0:
        raise ArgumentError("the schema needs a column 'timestamp_ns' (int64)")
    ts = schema.field(index)
    if ts.type != pa.int64():
        raise ArgumentError(f"column 'timestamp_ns' must be int64, got {ts.type}")
    if ts.nullable:
        raise ArgumentError("column 'timestamp_ns' must not be nullable")
    for field in schema:
        if fmt is SerializationFormat.Default and not _fixed_or_scalar(field.type):
            raise ArgumentError(
                f"column {field.name!r} ({field.type}) is not fixed-width: use SerializationFormat.Ragged "
                "for list columns or Image for a binary payload"
            )
        if fmt is SerializationFormat.Ragged and not _ragged_ok(field.type):
            raise ArgumentError(
                f"column {field.name!r} ({field.type}) is not allowed in a Ragged topic"
            )
        if fmt is SerializationFormat.Image and not (
            _fixed_or_scalar(field.type) or _binary(field.type)
        ):
            raise ArgumentError(
                f"column {field.name!r} ({field.type}) is not allowed in an Image topic"
            )
    if fmt is SerializationFormat.Image and not any(_binary(f.type) for f in schema):
        raise ArgumentError("an Image topic needs a binary payload column")


def conform_batch(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """`batch` with the topic's schema, or ArgumentError naming the first column that differs.

    Columns are matched by name (any order); types must be equal; a column the topic declares
    non-nullable must hold no nulls. The result shares the batch's buffers (no copy).
    """
    if batch.schema.equals(schema, check_metadata=False):
        for field, column in zip(schema, batch.columns, strict=True):
            if not field.nullable and column.null_count:
                raise ArgumentError(f"column {field.name!r} has null values")
        return batch
    got = {f.name: i for i, f in enumerate(batch.schema)}
    columns = []
    for field in schema:
        index = got.pop(field.name, None)
        if index is None:
            raise ArgumentError(f"column {field.name!r} is missing from the batch")
        column = batch.column(index)
        if column.type != field.type:
            raise ArgumentError(f"column {field.name!r}: expected {field.type}, got {column.type}")
        if not field.nullable and column.null_count:
            raise ArgumentError(f"column {field.name!r} has null values")
        columns.append(column)
    if got:
        raise ArgumentError(f"column {next(iter(got))!r} is not in the topic's schema")
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _converts(t: pa.DataType) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        try:
            pa.scalar(value, type=t)
        except (
            pa.ArrowInvalid,
            pa.ArrowTypeError,
            pa.ArrowNotImplementedError,
            TypeError,
            ValueError,
            OverflowError,
        ):
            return False
        return True

    return check


def _checker(t: pa.DataType) -> Callable[[Any], bool]:
    """A test that a Python value becomes a value of type `t` (None is handled by the caller):
    direct type and range tests for plain columns, a trial conversion for nested ones."""
    if pa.types.is_boolean(t):
        return lambda v: isinstance(v, bool)
    if pa.types.is_integer(t):
        bits = t.bit_width
        low, high = (
            (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
            if pa.types.is_signed_integer(t)
            else (0, 2**bits - 1)
        )
        return lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high
    if pa.types.is_floating(t):
        return lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return lambda v: isinstance(v, str)
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return lambda v: isinstance(v, (bytes, bytearray, memoryview))
    return _converts(t)


class RowBuffer:
    """Rows pushed one at a time, kept as per-column lists until they become a batch."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.names = tuple(schema.names)
        self._name_set = frozenset(self.names)
        self._fields = tuple(schema)
        self._checks = tuple(_checker(f.type) for f in schema)
        self._columns: list[list[Any]] = [[] for _ in self.names]
        self.rows = 0

    def append(self, row: Mapping[str, Any]) -> None:
        """Add one row, or refuse it (changing nothing) naming the column that is unknown,
        missing or of the wrong kind."""
        if not isinstance(row, Mapping):
            raise ArgumentError(
                f"a row is a mapping of column names to values, got {type(row).__name__}"
            )
        values = []
        for field, check in zip(self._fields, self._checks, strict=True):
            value = row.get(field.name)
            if value is None:
                if not field.nullable:
                    raise ArgumentError(f"column {field.name!r} is missing from the row (or None)")
            elif not check(value):
                raise ArgumentError(f"column {field.name!r}: {value!r} is not a {field.type} value")
            values.append(value)
        if not self._name_set.issuperset(row):
            unknown = next(k for k in row if k not in self._name_set)
            raise ArgumentError(f"column {unknown!r} is not in the topic's schema")
        for column, value in zip(self._columns, values, strict=True):
            column.append(value)
        self.rows += 1

    def take(self) -> pa.RecordBatch:
        """The buffered rows as one batch; the buffer is emptied. (Rows were checked value by
        value when appended; should a conversion still fail, the offending row is removed and
        reported with `ArgumentError` naming the column, the others stay buffered.)"""
        try:
            arrays = [
                pa.array(column, type=field.type)
                for column, field in zip(self._columns, self._fields, strict=True)
            ]
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
            raise self._drop_unconvertible() from None
        batch = pa.RecordBatch.from_arrays(arrays, schema=self.schema)
        self._columns = [[] for _ in self.names]
        self.rows = 0
        return batch

    def _drop_unconvertible(self) -> ArgumentError:
        for i in range(self.rows):
            for column, field in zip(self._columns, self._fields, strict=True):
                try:
                    pa.array([column[i]], type=field.type)
                except (
                    pa.ArrowInvalid,
                    pa.ArrowTypeError,
                    TypeError,
                    ValueError,
                    OverflowError,
                ) as exc:
                    value = column[i]
                    for col in self._columns:
                        del col[i]
                    self.rows -= 1
                    return ArgumentError(
                        f"column {field.name!r}: {value!r} does not convert to {field.type} ({exc}); "
                        "that row was not written"
                    )
        return ArgumentError("the buffered rows do not convert to the topic's schema")
