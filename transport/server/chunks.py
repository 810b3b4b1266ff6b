"""Per-chunk statistics of a topic's stored data, kept at ingest.

A chunk is one received DoPut record batch. For every leaf column of a numeric, boolean or
text type (struct fields flattened to dotted paths, list and binary columns left out) the
statistics hold the chunk's minimum and maximum non-null value (null when the chunk holds
none). Queries on data read them as Arrow arrays, one entry per chunk, to pick the chunks
worth a look at their rows.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["ChunkStats", "Leaf", "leaf_class"]

Path = tuple[str, ...]


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
    """One leaf column's statistics: its class and its per-chunk minima and maxima."""

    def __init__(self, path: Path, data_type: pa.DataType, cls: str) -> None:
        self.path = path
        self.type = data_type
        self.cls = cls
        self._mins: list[Any] = []
        self._maxs: list[Any] = []
        self._arrays: tuple[pa.Array, pa.Array] | None = None

    def add(self, column: pa.Array) -> None:
        result = pc.min_max(column)
        self._mins.append(result["min"].as_py())
        self._maxs.append(result["max"].as_py())
        self._arrays = None

    def arrays(self) -> tuple[pa.Array, pa.Array]:
        """(minima, maxima), one entry per chunk in write order."""
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
        self.count += 1


def _column(batch: pa.RecordBatch, path: Path) -> pa.Array:
    """The leaf at `path`, null wherever a parent struct is null."""
    column: pa.Array = batch.column(path[0])
    for name in path[1:]:
        assert isinstance(column, pa.StructArray)
        column = column.flatten()[column.type.get_field_index(name)]
    return column
