"""QUERY latency on stored data as the number of stored chunks grows (1k, 10k, 100k).

One reference server model per size, in this process, reached through the in-memory
transport (the whole action path: JSON body, grammar check, evaluation, answer). Its data: 10
topics tagged `imu` in 10 sequences, each chunk one DoPut batch of 10 rows (timestamp_ns and
an `acceleration` struct of x, y). Three data queries, each timed as the median of several runs:

  selective  acceleration.x > 999.05 with include_timestamp_range: the per-chunk statistics
             leave one chunk in a thousand to read
  broad      acceleration.x >= 0 with include_timestamp_range: every chunk is read
  no-stats   acceleration.y != 0.5: $neq has no statistics test, every chunk is read

Printed per size: the first query's time, the latency of the next ones, its growth since the
smallest size and that growth divided by the growth of the chunk count (1.0 = linear, below 1
= better than linear). Side by side, the baseline: the same condition as one pyarrow filter
over all the rows already concatenated in one table (what a scan of the data costs without
any query machinery), and our ratio to it.

    python tests/benchmarks/bench_query.py [--sizes 1000 10000 100000] [--runs N]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from _common import header, median

from fsm.enums import FlightAction
from fsm.transport import Descriptor
from transport.memory import MemoryTransport
from transport.server.model import ServerModel

ROWS = 10
TOPICS = 10
ACCEL = pa.struct([("x", pa.float64()), ("y", pa.float64())])
SCHEMA = pa.schema([pa.field("timestamp_ns", pa.int64(), nullable=False), ("acceleration", ACCEL)])

QUERIES: dict[str, tuple[dict[str, Any], pc.Expression]] = {
    "selective": (
        {"imu.acceleration.x": {"$gt": 999.05}, "include_timestamp_range": True},
        pc.field("acceleration", "x") > 999.05,
    ),
    "broad": (
        {"imu.acceleration.x": {"$geq": 0.0}, "include_timestamp_range": True},
        pc.field("acceleration", "x") >= 0.0,
    ),
    "no-stats": (
        {"imu.acceleration.y": {"$neq": 0.5}},
        pc.field("acceleration", "y") != 0.5,
    ),
}


def chunk(number: int) -> pa.RecordBatch:
    """Chunk `number`: x = (number mod 1000) + row / 100, so x > 999.05 only in one chunk of
    each thousand."""
    base = number * ROWS
    xs = [(number % 1000) + r / 100 for r in range(ROWS)]
    return pa.record_batch(
        [
            pa.array(range(base, base + ROWS), pa.int64()),
            pa.StructArray.from_arrays(
                [pa.array(xs), pa.array([float(r % 3) for r in range(ROWS)])], fields=list(ACCEL)
            ),
        ],
        schema=SCHEMA,
    )


def build(chunks: int) -> tuple[MemoryTransport, pa.Table]:
    """A server holding `chunks` chunks over TOPICS topics, and the same rows as one table."""
    t = MemoryTransport(ServerModel())
    written = []
    for k in range(TOPICS):
        name = f"run_{k}"
        t.action(FlightAction.SEQUENCE_CREATE, {"locator": name, "user_metadata": {}})
        session = t.action(FlightAction.SESSION_CREATE, {"locator": name}).value["uuid"]
        locator = f"{name}/imu"
        body = {
            "session_uuid": session,
            "locator": locator,
            "serialization_format": "default",
            "ontology_tag": "imu",
            "user_metadata": {},
        }
        uuid = t.action(FlightAction.TOPIC_CREATE, body).value["uuid"]
        stream = t.open_stream(Descriptor.for_topic(locator, uuid), SCHEMA).value
        for number in range(k, chunks, TOPICS):
            batch = chunk(number)
            stream.write(batch)
            written.append(batch)
        assert stream.close().is_ok
    return t, pa.Table.from_batches(written).combine_chunks()


def timed(fn: Callable[[], Any], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    header(
        "QUERY on stored data: latency as the stored chunks grow",
        [f"{TOPICS} topics, {ROWS} rows per chunk, median of {args.runs} runs per figure"],
    )
    first: dict[str, float] = {}
    print(
        f"{'chunks':>8} {'query':10} {'first':>10} {'latency':>10} {'growth':>8} "
        f"{'vs linear':>10} {'baseline':>10} {'ratio':>7} {'topics found':>12}"
    )
    for size in args.sizes:
        t, table = build(size)
        for name, (ontology, expression) in QUERIES.items():
            start = time.perf_counter()
            answer = t.action(FlightAction.QUERY, {"ontology": ontology})
            cold = time.perf_counter() - start
            assert answer.is_ok, answer
            found = sum(len(item["topics"]) for item in answer.value["items"])
            latency = timed(
                lambda o=ontology, t=t: t.action(FlightAction.QUERY, {"ontology": o}), args.runs
            )
            baseline = timed(lambda e=expression, table=table: table.filter(e), args.runs)
            first.setdefault(name, latency)
            growth = latency / first[name]
            linear = size / args.sizes[0]
            print(
                f"{size:>8} {name:10} {cold * 1e3:>8.2f}ms {latency * 1e3:>8.2f}ms "
                f"{growth:>7.1f}x {growth / linear:>9.2f} {baseline * 1e3:>8.2f}ms "
                f"{latency / baseline:>6.1f}x {found:>12}"
            )
    print()
    print("first = the first query after the data arrived (it also copies the columns it reads")
    print("into one contiguous table per topic, kept until the next chunk); latency = the median")
    print("of the following runs")
    print("growth = latency / latency at the smallest size; vs linear = growth / chunk growth")
    print("(1.0: linear in the chunks stored; below 1.0: better than linear)")
    print("baseline = one pyarrow filter of the same condition over every row, pre-concatenated")


if __name__ == "__main__":
    main()
