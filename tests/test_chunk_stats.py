"""Per-chunk statistics: the fast float path answers what Arrow's own kernel answers."""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import given, settings
from hypothesis import strategies as st

from transport.server.chunks import ChunkStats, min_max

FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=32)


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return bool(a == b)  # -0.0 == 0.0: either is the extreme of such a chunk


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(FLOATS, max_size=40) | st.lists(st.one_of(FLOATS, st.none()), max_size=40),
    width=st.sampled_from([pa.float32(), pa.float64()]),
    cut=st.integers(0, 5),
)
def test_min_max_is_arrows(values: list[float | None], width: pa.DataType, cut: int) -> None:
    """NaN ignored unless every value is NaN, nulls ignored, None for no value, on sliced
    arrays too: the same extremes as pyarrow.compute.min_max."""
    column = pa.array(values, width).slice(min(cut, len(values)))
    expected = pc.min_max(column)
    low, high = min_max(column)
    assert _same(low, expected["min"].as_py()), (column, low)
    assert _same(high, expected["max"].as_py()), (column, high)


def test_min_max_of_other_types_and_edge_cases() -> None:
    assert min_max(pa.array([3, -1, 2])) == (-1, 3)
    assert min_max(pa.array(["b", "a"])) == ("a", "b")
    assert min_max(pa.array([], pa.float64())) == (None, None)
    low, high = min_max(pa.array([math.nan, 1.5, -2.0]))
    assert (low, high) == (-2.0, 1.5)
    low, high = min_max(pa.array([math.nan, math.nan]))
    assert math.isnan(low) and math.isnan(high)
    assert min_max(pa.array([math.inf, -math.inf])) == (-math.inf, math.inf)


def test_statistics_reduced_at_the_first_query_cover_every_chunk_once() -> None:
    """Chunks are reduced when their statistics are first asked for: one entry per chunk in
    write order, chunks added after a query included at the next one, none counted twice,
    struct leaves under their dotted path."""
    schema = pa.schema(
        [
            ("timestamp_ns", pa.int64()),
            ("pos", pa.struct([("x", pa.float64())])),
            ("b", pa.binary()),
        ]
    )

    def chunk(stamps: list[int], xs: list[float | None]) -> pa.RecordBatch:
        pos = pa.StructArray.from_arrays([pa.array(xs, pa.float64())], names=["x"])
        return pa.record_batch([pa.array(stamps), pos, pa.array([b""] * len(stamps))], schema)

    stats = ChunkStats(schema)
    assert set(stats.leaves) == {("timestamp_ns",), ("pos", "x")}
    stats.add(chunk([5, 1], [0.5, -1.0]))
    stats.add(chunk([9], [None]))
    stamps = stats.leaves[("timestamp_ns",)]
    xs = stats.leaves[("pos", "x")]
    assert [a.to_pylist() for a in stamps.arrays()] == [[1, 9], [5, 9]]
    assert [a.to_pylist() for a in xs.arrays()] == [[-1.0, None], [0.5, None]]
    stats.add(chunk([20, 30], [7.0, 2.0]))
    assert [a.to_pylist() for a in stamps.arrays()] == [[1, 9, 20], [5, 9, 30]]
    assert [a.to_pylist() for a in stamps.arrays()] == [[1, 9, 20], [5, 9, 30]]
    assert [a.to_pylist() for a in xs.arrays()] == [[-1.0, None, 2.0], [0.5, None, 7.0]]
    assert stats.count == 3
    assert stats.row_counts().to_pylist() == [2, 1, 2]
