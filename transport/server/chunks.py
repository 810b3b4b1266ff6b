"""Per-chunk statistics of a topic's stored data, kept at ingest.

A chunk is one received DoPut record batch. For every leaf column of a numeric, boolean or
text type (struct fields flattened to dotted paths, list and binary columns left out) the
statistics hold the chunk's minimum and maximum non-null value (null when the chunk holds
none). Queries on data read them as Arrow arrays, one entry per chunk, to pick the chunks
worth a look at their rows. They are reduced when a query first needs them, not while the
chunk is received: DoPut ingest then only keeps each leaf column (a reference into the stored
batch, which is already fully validated), and a topic nobody queries costs no reduction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["CHUNK", "ChunkStats", "Leaf", "leaf_class", "min_max"]

Path = tuple[str, ...]
CHUNK = "__mosaico_fsm_chunk"
"""The column of `ChunkStats.rows` holding each row's chunk number."""


def leaf_class(data_type: pa.DataType) -> str | None:
    """'numeric', 'boolean' or 'text' for a queryable column type; None otherwise."""
    if pa.types.is_integer(data_type) or pa.types.is_floating(data_type):
        return "numeric"
    if pa.types.is_boolean(data_type):
        return "boolean"
    if pa.types.is_string(data_type) or pa.types.is_large_string(data_type):
        return "text"
    return None


class Leaf:
    """One leaf column's statistics: its class and its per-chunk minima and maxima (the
    columns added since the last `arrays` are reduced there)."""

    def __init__(self, path: Path, data_type: pa.DataType, cls: str) -> None:
        self.path = path
        self.type = data_type
        self.cls = cls
        self._mins: list[Any] = []
        self._maxs: list[Any] = []
        self._columns: list[pa.Array] = []  # added, not reduced yet
        self._arrays: tuple[pa.Array, pa.Array] | None = None

    def add(self, column: pa.Array) -> None:
        self._columns.append(column)
        self._arrays = None

    def arrays(self) -> tuple[pa.Array, pa.Array]:
        """(minima, maxima), one entry per chunk in write order."""
        if self._columns:
            for column in self._columns:
                low, high = min_max(column)
                self._mins.append(low)
                self._maxs.append(high)
            self._columns.clear()
        if self._arrays is None:
            self._arrays = (
                pa.array(self._mins, self.type),
                pa.array(self._maxs, self.type),
            )
        return self._arrays


class ChunkStats:
    """The statistics of every chunk of one topic (all chunks share the topic's schema)."""

    def __init__(self, schema: pa.Schema) -> None:
        self.leaves: dict[Path, Leaf] = {}
        self.count = 0
        self._rows: list[int] = []
        self._rows_array: pa.Array | None = None
        self._tables: dict[tuple[str, ...], pa.Table] = {}
        for field in schema:
            self._declare((field.name,), field.type)

    def _declare(self, path: Path, data_type: pa.DataType) -> None:
        if pa.types.is_struct(data_type):
            for i in range(data_type.num_fields):
                child = data_type.field(i)
                self._declare((*path, child.name), child.type)
            return
        cls = leaf_class(data_type)
        if cls is not None:
            self.leaves[path] = Leaf(path, data_type, cls)

    def add(self, batch: pa.RecordBatch) -> None:
        """Record the statistics of one more chunk."""
        for path, leaf in self.leaves.items():
            leaf.add(_column(batch, path))
        self._rows.append(batch.num_rows)
        self._rows_array = None
        self._tables.clear()
        self.count += 1

    def row_counts(self) -> pa.Array:
        """The number of rows of each chunk, in write order (int64)."""
        if self._rows_array is None:
            self._rows_array = pa.array(self._rows, pa.int64())
        return self._rows_array

    def rows(self, chunks: Sequence[pa.RecordBatch], columns: Sequence[str]) -> pa.Table:
        """Every row of the first `count` chunks, only `columns`, in one contiguous table with
        each row's chunk number in the column CHUNK. Kept until the next chunk arrives or
        other columns are asked for (one copy per topic at most)."""
        key = tuple(columns)
        table = self._tables.get(key)
        if table is None:
            self._tables.clear()
            batches = pa.Table.from_batches(chunks[: self.count]).select(list(columns))
            table = pa.Table.from_batches([pa.concat_batches(batches.to_batches())])
            sizes = self.row_counts()
            filled = pc.indices_nonzero(sizes)
            run_ends = pc.cumulative_sum(pc.take(sizes, filled))
            numbers = pc.run_end_decode(pa.RunEndEncodedArray.from_arrays(run_ends, filled))
            table = table.append_column(CHUNK, numbers.cast(pa.int64()))
            self._tables[key] = table
        return table


_FLOATS: dict[pa.DataType, np.dtype[Any]] = {
    pa.float32(): np.dtype(np.float32),
    pa.float64(): np.dtype(np.float64),
}


def min_max(column: pa.Array) -> tuple[Any, Any]:
    """The minimum and maximum non-null value of `column` (NaN ignored unless all values are
    NaN; None when there is no value), as `pyarrow.compute.min_max` answers them.

    Arrow's kernel compares floating-point values one at a time; NumPy's fmin/fmax, which
    ignore NaN the same way, reduce them several times faster, so a float column without
    nulls (the bulk of a sensor topic) is reduced by NumPy on its buffer, without a copy."""
    dtype = _FLOATS.get(column.type)
    if dtype is not None and column.null_count == 0 and len(column):
        # The values buffer itself (to_numpy would import pandas, when installed, on first use).
        values = np.frombuffer(
            memoryview(column.buffers()[1]),
            dtype,
            count=len(column),
            offset=column.offset * dtype.itemsize,
        )
        return np.fmin.reduce(values).item(), np.fmax.reduce(values).item()
    result = pc.min_max(column)
    return result["min"].as_py(), result["max"].as_py()


def _column(batch: pa.RecordBatch, path: Path) -> pa.Array:
    """The leaf at `path`, null wherever a parent struct is null."""
    column: pa.Array = batch.column(path[0])
    for name in path[1:]:
        assert isinstance(column, pa.StructArray)
        column = column.flatten()[column.type.get_field_index(name)]
    return column
