"""Schemas: what each serialization format allows, and batches and rows checked against a
topic's schema. Every error names the column."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import pyarrow as pa

from fsm.enums import SerializationFormat
from fsm.errors import ArgumentError

__all__ = ["RowBuffer", "check_format_schema", "conform_batch", "lost_row"]


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
        except _CONVERSION_ERRORS:
            return False
        return True

    return check


# What converting user values may raise. A value that makes pyarrow raise anything else does
# not convert either, so the row API catches `Exception` where it converts rows in bulk.
_CONVERSION_ERRORS = (pa.ArrowException, TypeError, ValueError, OverflowError)


def _int_check(low: int, high: int) -> Callable[[Any], bool]:
    def check(v: Any) -> bool:
        if type(v) is int:
            return low <= v <= high
        return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high

    return check


def _float_check(exact_ints: int) -> Callable[[Any], bool]:
    """Floats, and the integers a float of this width holds exactly (Arrow refuses others)."""

    def check(v: Any) -> bool:
        if isinstance(v, bool):
            return False
        if isinstance(v, int):
            return -exact_ints <= v <= exact_ints
        return isinstance(v, float)

    return check


_MANTISSA = {16: 11, 32: 24, 64: 53}


# Sizers: the bytes a value adds to a row beyond its column's fixed width. They accept any
# value (a value of the wrong kind counts 0, and is refused when the rows convert) and raise
# only UnicodeEncodeError, for text Arrow cannot store either.


def _blob_size(v: Any) -> int:
    if isinstance(v, (bytes, bytearray)):
        return len(v)
    if isinstance(v, memoryview):
        return v.nbytes
    return 0


def _text_size(v: Any) -> int:
    if isinstance(v, str):
        return len(v) if v.isascii() else len(v.encode())
    return _blob_size(v)


def _sizer(t: pa.DataType) -> Callable[[Any], int] | None:
    """How many bytes a value of `t` adds beyond `_fixed_width(t)`; None when nothing."""
    if pa.types.is_primitive(t):
        return None
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return _text_size
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return _blob_size
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        width, inner = _fixed_width(t.value_type), _sizer(t.value_type)

        def list_size(v: Any) -> int:
            if not isinstance(v, (list, tuple)):
                return 0
            if inner is None:
                return width * len(v)
            return width * len(v) + sum(inner(x) for x in v)

        return list_size
    if pa.types.is_fixed_size_list(t):
        element = _sizer(t.value_type)
        if element is None:
            return None
        return lambda v: sum(element(x) for x in v) if isinstance(v, (list, tuple)) else 0
    if pa.types.is_struct(t):
        parts = [(f.name, s) for f in t if (s := _sizer(f.type)) is not None]
        if not parts:
            return None

        def struct_size(v: Any) -> int:
            if not isinstance(v, Mapping):
                return 0
            size = 0
            for name, sizer in parts:
                value = v.get(name)
                if value is not None:
                    size += sizer(value)
            return size

        return struct_size
    return None


@attrs.frozen
class _Column:
    """How one column's values are checked: Python types accepted as they are, a slower test
    for anything else, the one type that needs no test but `bounds` (None when every value
    needs the test), and the bytes a value adds beyond the fixed width (None: nothing)."""

    name: str
    type: pa.DataType
    nullable: bool
    exact: frozenset[type]
    check: Callable[[Any], bool]
    usual: type | None
    bounds: tuple[int, int] | None
    sizer: Callable[[Any], int] | None


def _column(field: pa.Field) -> _Column:
    t = field.type
    exact: frozenset[type] = frozenset()
    check: Callable[[Any], bool] = _converts(t)
    usual: type | None = None
    bounds: tuple[int, int] | None = None
    if pa.types.is_boolean(t):
        exact, check, usual = frozenset({bool}), lambda v: isinstance(v, bool), bool
    elif pa.types.is_integer(t):
        # No int is taken as it is: its range must be the column's, or Arrow refuses it.
        bits = t.bit_width
        signed = pa.types.is_signed_integer(t)
        bounds = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        check, usual = _int_check(*bounds), int
    elif pa.types.is_floating(t):
        exact, check = frozenset({float}), _float_check(2 ** _MANTISSA[t.bit_width])
        usual = float
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        exact, check, usual = frozenset({str}), lambda v: isinstance(v, str), str
    elif pa.types.is_binary(t) or pa.types.is_large_binary(t):
        exact, usual = frozenset({bytes}), bytes
        check = lambda v: isinstance(v, (bytes, bytearray, memoryview))  # noqa: E731
    elif pa.types.is_fixed_size_list(t):
        size = t.list_size
        check = lambda v: isinstance(v, (list, tuple)) and len(v) == size  # noqa: E731
    elif pa.types.is_list(t) or pa.types.is_large_list(t):
        # The values inside are checked when the rows are converted, in bulk.
        exact, check = frozenset({list, tuple}), lambda v: isinstance(v, (list, tuple))
        usual = list
    elif pa.types.is_struct(t):
        exact, check, usual = frozenset({dict}), lambda v: isinstance(v, Mapping), dict
    return _Column(field.name, t, field.nullable, exact, check, usual, bounds, _sizer(t))


def lost_row(number: int, timestamp: Any, problem: object) -> tuple[int, str]:
    """A row of the row API that was not written: its number, and a text naming it (number
    and timestamp) with its problem."""
    return number, f"#{number} (timestamp_ns={timestamp}): {problem}"


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


class RowTooLarge(ArgumentError):
    """A row larger than one message may be: it was not written."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"a row of about {size} bytes is larger than one message may be ({limit} bytes); "
            "it was not written"
        )


class RowBuffer:
    """Rows pushed one at a time, checked, held (as tuples of their values in the schema's
    order) until they become a batch, converted in one pass of Arrow's own converter.

    `bytes` estimates the Arrow size of the held rows, in bytes: a fixed part from the schema
    plus, per row, the UTF-8 length of its text, the length of its binary values and the
    bytes of its list values (elements times their width, and their own variable parts), so
    rows are cut into batches by size, not only by count. A row estimated above
    `max_row_bytes` is refused by `size`. When every column is of a fixed width (`fixed`),
    every row has the same size, `row_width`, and a holder counts rows instead.
    """

    def __init__(self, schema: pa.Schema, max_row_bytes: int) -> None:
        self.schema = schema
        self.max_row_bytes = max_row_bytes
        self.names = tuple(schema.names)
        self._name_set = frozenset(self.names)
        columns = [_column(f) for f in schema]
        self._columns = {c.name: c for c in columns}
        self._width = len(self.names)
        # The usual row, checked in bulk: every column present, no other, and each value of
        # its column's usual type (then only integer bounds remain to check).
        first = self.names[0]
        self._values: Callable[[Any], tuple[Any, ...]] = (
            operator.itemgetter(*self.names) if self._width > 1 else lambda r: (r[first],)
        )
        usual = tuple(c.usual for c in columns)
        self._usual = usual if None not in usual else None
        self._bounds = tuple(
            (i, c.name, *c.bounds) for i, c in enumerate(columns) if c.bounds is not None
        )
        # Any other row, column by column: (name, Python types taken as they are, test for
        # anything else). None is taken where the column is nullable, refused where it is not.
        self._plan = tuple(
            (c.name, c.exact | ({type(None)} if c.nullable else set()), _refuse_none(c.check))
            for c in columns
        )
        self._sizers = tuple(
            (i, c.name, c.sizer) for i, c in enumerate(columns) if c.sizer is not None
        )
        self.row_width = sum(_fixed_width(f.type) for f in schema)
        # The Python types a plain row may hold, column by column, taken without a closer
        # look (integers but for their bounds; None where the column is nullable), and the
        # tuples of types seen to be made of them.
        self._takes = tuple(
            c.exact
            | ({int} if c.bounds is not None else set())
            | ({type(None)} if c.nullable else set())
            for c in columns
        )
        self._plain: set[tuple[type, ...]] = set()
        self._last: tuple[type, ...] = ()  # the tuple of types learned last (compared first)
        # Every column fixed width: every row has the same size, so rows are counted, not
        # measured.
        self.fixed = not self._sizers and self.row_width <= max_row_bytes
        self._struct = pa.struct(list(schema))
        self._timestamp = schema.get_field_index("timestamp_ns")
        self._not_null = tuple(i for i, f in enumerate(schema) if not f.nullable)
        self.held: list[tuple[Any, ...]] = []
        self.bytes = 0
        self.pushed = 0

    def measure(self, row: Mapping[str, Any]) -> int:
        """The estimated Arrow size of one row (`size` of its `values`); nothing changes."""
        return self.size(self.values(row))

    def values(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        """The row's values in the schema's order, or ArgumentError naming the column that is
        unknown, missing, of the wrong kind or out of range. Nothing changes either way.

        A row whose values are all of the Python types a column takes as they are is checked
        in one look at its tuple of types (then only integer bounds remain); any other row is
        checked column by column. Values nested in struct and list columns are checked when
        the rows are converted, in bulk (`take`)."""
        try:
            values = self._values(row)
            types = tuple(map(type, values))
            plain = (types == self._last or types in self._plain) and len(row) == self._width
        except Exception:  # a column is missing, or the row is no mapping: checked below
            plain = False
        if plain:
            for i, name, low, high in self._bounds:
                value = values[i]
                if value is not None and not low <= value <= high:
                    raise self._refusal(name, value)
            return values
        values = self._check(row)
        types = tuple(map(type, values))
        if len(self._plain) < 64 and all(map(operator.contains, self._takes, types)):
            self._plain.add(types)
            self._last = types
        return values

    def size(self, values: tuple[Any, ...]) -> int:
        """The estimated Arrow size of a row of `values`, or ArgumentError saying it is
        larger than one message may be (or holds text Arrow cannot store)."""
        size = self.row_width
        for i, name, sizer in self._sizers:
            value = values[i]
            if value is not None:
                try:
                    size += sizer(value)
                except UnicodeEncodeError as exc:
                    raise ArgumentError(
                        f"column {name!r}: the text is not valid Unicode ({exc.reason})"
                    ) from None
        if size > self.max_row_bytes:
            raise RowTooLarge(size, self.max_row_bytes)
        return size

    def _check(self, row: Any) -> tuple[Any, ...]:
        """The values of a row that is not a usual one, checked column by column."""
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
        return tuple(get(name) for name in self.names)

    def add(self, values: tuple[Any, ...], size: int) -> None:
        """Hold the values of a row `values` accepted, with the size `size` answered."""
        self.held.append(values)
        self.bytes += size
        self.pushed += 1

    def _refusal(self, name: str, value: Any) -> ArgumentError:
        t = self._columns[name].type
        if value is None:
            return ArgumentError(f"column {name!r} is missing from the row (or None)")
        if pa.types.is_integer(t) and isinstance(value, int) and not isinstance(value, bool):
            return ArgumentError(f"column {name!r}: {value!r} is out of the range of {t}")
        if pa.types.is_floating(t) and isinstance(value, int) and not isinstance(value, bool):
            return ArgumentError(f"column {name!r}: {value!r} is not exactly a {t} value")
        if pa.types.is_fixed_size_list(t) and isinstance(value, (list, tuple)):
            return ArgumentError(
                f"column {name!r}: a list of {len(value)} values, the column holds {t.list_size}"
            )
        return ArgumentError(f"column {name!r}: {value!r} is not a {t} value")

    def _convert(self, rows: list[tuple[Any, ...]]) -> pa.RecordBatch:
        """Rows of values as one batch of the schema, in one pass of Arrow's converter; it
        raises for any value that does not convert, and for a null in a column that takes
        none."""
        struct = pa.array(rows, type=self._struct)
        batch = pa.RecordBatch.from_arrays(struct.flatten(), schema=self.schema)
        for i in self._not_null:
            if batch.column(i).null_count:
                raise ArgumentError(f"column {self.names[i]!r} has null values")
        return batch

    def take(self) -> tuple[pa.RecordBatch, Sequence[int], list[tuple[int, str]]]:
        """The held rows as one batch, the number of each of its rows (the nth row pushed),
        and a description of every row left out because it does not convert; the buffer is
        emptied.

        The plain values of each row were checked when it was pushed; values nested in struct
        and list columns are checked here, by converting all the rows in bulk; when that
        fails, row by row, to name each row that does not convert. Every row that converts
        is in the batch.
        """
        rows, first = self.held, self.pushed - len(self.held) + 1
        self.held = []
        self.bytes = 0
        try:
            batch = self._convert(rows)
        except Exception:  # any failure: find the rows that do not convert
            pass
        else:
            return batch, range(first, first + len(rows)), []
        good: list[tuple[Any, ...]] = []
        numbers: list[int] = []
        lost: list[tuple[int, str]] = []
        for number, row in enumerate(rows, first):
            try:
                self._convert([row])
            except Exception as exc:  # whatever pyarrow raises, it does not convert
                lost.append(lost_row(number, row[self._timestamp], exc))
            else:
                good.append(row)
                numbers.append(number)
        return self._convert(good), numbers, lost

    def timestamp(self, batch: pa.RecordBatch, index: int) -> Any:
        """The timestamp of a row of a batch `take` made (for naming it)."""
        return batch.column(self._timestamp)[index].as_py()

    def clear(self) -> None:
        self.held = []
        self.bytes = 0
