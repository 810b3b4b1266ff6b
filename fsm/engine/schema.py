"""Schemas: what each serialization format allows, and batches and rows checked against a
topic's schema. Every error names the column."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs
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
        for i, field in enumerate(schema):
            if not field.nullable and batch.column(i).null_count:
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


_CONVERSION_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError)


@attrs.frozen
class _Column:
    """How one column's values are checked: Python types accepted as they are, a slower test
    for anything else, and whether the value's size varies (strings, bytes, lists)."""

    name: str
    type: pa.DataType
    nullable: bool
    exact: frozenset[type]
    check: Callable[[Any], bool]
    sized: bool


def _column(field: pa.Field) -> _Column:
    t = field.type
    exact: frozenset[type] = frozenset()
    check: Callable[[Any], bool] = _converts(t)
    sized = False
    if pa.types.is_boolean(t):
        exact, check = frozenset({bool}), lambda v: isinstance(v, bool)
    elif pa.types.is_integer(t):
        exact = frozenset({int})  # the range is checked when the rows are converted
        bits = t.bit_width
        signed = pa.types.is_signed_integer(t)
        low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        check = lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high  # noqa: E731
    elif pa.types.is_floating(t):
        exact = frozenset({float, int})
        check = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        exact, check, sized = frozenset({str}), lambda v: isinstance(v, str), True
    elif pa.types.is_binary(t) or pa.types.is_large_binary(t):
        exact = frozenset({bytes})
        check, sized = lambda v: isinstance(v, (bytes, bytearray, memoryview)), True
    elif pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        # The values inside are checked when the rows are converted, in bulk.
        exact, check, sized = frozenset({list, tuple}), lambda v: isinstance(v, (list, tuple)), True
    elif pa.types.is_struct(t):
        exact, check = frozenset({dict}), lambda v: isinstance(v, Mapping)
    return _Column(field.name, t, field.nullable, exact, check, sized)


def _refuse_none(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is not None and check(v)


def _fixed_width(t: pa.DataType) -> int:
    """Bytes one value takes in Arrow memory, roughly (variable parts are counted per row)."""
    if pa.types.is_struct(t):
        return sum(_fixed_width(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_fixed_size_list(t):
        return int(t.list_size) * _fixed_width(t.value_type)
    try:
        return max(1, int(t.bit_width) // 8)
    except ValueError:  # variable width: an offset here, the contents counted per row
        return 8


class RowBuffer:
    """Rows pushed one at a time, checked, kept until they become a batch.

    `bytes` estimates the Arrow size of the buffered rows: a fixed part from the schema plus
    the length of every string, bytes and list value, so large rows are cut into batches by
    size, not only by count.
    """

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.names = tuple(schema.names)
        self._name_set = frozenset(self.names)
        self._columns = tuple(_column(f) for f in schema)
        self._sized = tuple(c.name for c in self._columns if c.sized)
        self._width = len(self.names)
        # (name, Python types taken as they are, test for anything else): None is taken as it
        # is where the column is nullable, and refused by the test where it is not.
        self._plan = tuple(
            (c.name, c.exact | ({type(None)} if c.nullable else set()), _refuse_none(c.check))
            for c in self._columns
        )
        self.row_width = sum(_fixed_width(f.type) for f in schema)
        self._rows: list[Mapping[str, Any]] = []
        self.bytes = 0
        self.pushed = 0

    @property
    def rows(self) -> int:
        return len(self._rows)

    def measure(self, row: Mapping[str, Any]) -> int:
        """The estimated Arrow size of one row, or ArgumentError naming the column that is
        unknown, missing or of the wrong kind. Nothing changes either way."""
        if type(row) is not dict and not isinstance(row, Mapping):
            raise ArgumentError(
                f"a row is a mapping of column names to values, got {type(row).__name__}"
            )
        get = row.get
        for name, accepted, check in self._plan:
            value = get(name)
            if type(value) not in accepted and not check(value):
                raise self._refusal(name, value)
        if len(row) > self._width or not self._name_set.issuperset(row):
            unknown = next(k for k in row if k not in self._name_set)
            raise ArgumentError(f"column {unknown!r} is not in the topic's schema")
        size = self.row_width
        for name in self._sized:
            value = get(name)
            if value is not None:
                size += len(value)
        return size

    def add(self, row: Mapping[str, Any], size: int) -> None:
        """Keep a row `measure` accepted, with the size it answered."""
        self._rows.append(row)
        self.bytes += size
        self.pushed += 1

    def _refusal(self, name: str, value: Any) -> ArgumentError:
        column = next(c for c in self._columns if c.name == name)
        if value is None:
            return ArgumentError(f"column {name!r} is missing from the row (or None)")
        return ArgumentError(f"column {name!r}: {value!r} is not a {column.type} value")

    def take(self) -> tuple[pa.RecordBatch, ArgumentError | None]:
        """The buffered rows as one batch, and the buffer emptied.

        Plain values were checked when each row was appended; values nested in struct and
        list columns are checked here, in bulk. A row that does not convert is left out of
        the batch and reported in the returned error (naming its push and the column's
        problem); every other row is in the batch.
        """
        rows, first = self._rows, self.pushed - len(self._rows)
        self._rows = []
        self.bytes = 0
        try:
            return pa.RecordBatch.from_pylist(rows, schema=self.schema), None
        except _CONVERSION_ERRORS:
            pass
        good, problems = [], []
        for i, row in enumerate(rows):
            try:
                pa.RecordBatch.from_pylist([row], schema=self.schema)
            except _CONVERSION_ERRORS as exc:
                problems.append(f"row {first + i + 1} ({exc})")
            else:
                good.append(row)
        error = ArgumentError(
            f"{len(problems)} pushed row(s) do not convert to the topic's schema and were not written: "
            + "; ".join(problems[:5])
        )
        return pa.RecordBatch.from_pylist(good, schema=self.schema), error

    def clear(self) -> None:
        self._rows = []
        self.bytes = 0
