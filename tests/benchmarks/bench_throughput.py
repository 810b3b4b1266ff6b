"""Throughput of the engine over Flight against raw pyarrow.flight DoPut of the same batches.

Both sides write one sequence with one topic to the same reference server: sequence_create,
session_create, topic_create, one DoPut carrying every batch, session_finalize. The engine does it
through Client / SessionWriter / TopicWriter.push; the baseline does it by hand with
pyarrow.flight (do_action, then do_put and write_batch of each batch). The time of the whole
session is measured; each side runs several times, interleaved, and the median is reported.

    python tests/benchmarks/bench_throughput.py [--rounds N] [--in-process]

By default the server runs in its own process (`python -m fsm.cli serve --port 0`), as a real
server would; --in-process starts it in this process with start_server() instead.
"""

from __future__ import annotations

import argparse
import itertools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import pyarrow as pa
from _common import (
    IMAGE_SCHEMA,
    IMU_SCHEMA,
    MB,
    RawClient,
    ServerProcess,
    header,
    image_batch,
    imu_batch,
    median,
    stopwatch,
    total_bytes,
)

from fsm.engine import Client
from fsm.enums import SerializationFormat
from transport.flight.client import FlightTransport
from transport.flight.server import start_server

TARGET = 0.9
_names = itertools.count()


class Workload:
    def __init__(
        self,
        name: str,
        schema: pa.Schema,
        fmt: SerializationFormat,
        tag: str,
        batches: list[pa.RecordBatch],
    ) -> None:
        self.name = name
        self.schema = schema
        self.fmt = fmt
        self.tag = tag
        self.batches = batches
        self.rows = sum(b.num_rows for b in batches)
        self.bytes = total_bytes(batches)


def engine_run(client: Client, w: Workload, batches: list[pa.RecordBatch]) -> str:
    name = f"engine_{w.name}_{next(_names)}"
    with client.sequence_create(name, {"bench": "throughput"}) as seq:
        topic = seq.topic_create(
            "data", schema=w.schema, serialization_format=w.fmt, ontology_tag=w.tag
        )
        for batch in batches:
            topic.push(batch)
    return name


def raw_run(raw: RawClient, w: Workload, batches: list[pa.RecordBatch]) -> str:
    name = f"raw_{w.name}_{next(_names)}"
    raw.write_sequence(name, "data", w.schema, w.fmt.value, w.tag, batches)
    return name


@contextmanager
def server(in_process: bool) -> Iterator[str]:
    """A fresh reference server; its location."""
    if in_process:
        with start_server() as running:
            yield running.location
    else:
        with ServerProcess() as process:
            yield process.location


def measure(w: Workload, rounds: int, in_process: bool) -> dict[str, Any]:
    times: dict[str, list[float]] = {"engine": [], "raw": []}
    chunks: dict[str, int] = {}
    for r in range(rounds):
        # A fresh server each round: it keeps every batch in memory, and a server holding
        # gigabytes from earlier rounds would slow later ones down.
        with server(in_process) as location:
            client = Client(FlightTransport(location))
            raw = RawClient(location)
            sides: dict[str, Callable[[list[pa.RecordBatch]], str]] = {
                "engine": partial(engine_run, client, w),
                "raw": partial(raw_run, raw, w),
            }
            # Warm up both paths (first calls, spec loading) on a couple of batches.
            for run in sides.values():
                run(w.batches[:2])
            order = ["engine", "raw"] if r % 2 == 0 else ["raw", "engine"]
            last = {}
            for side in order:
                with stopwatch() as took:
                    last[side] = sides[side](w.batches)
                times[side].append(took[0])
            # Both sides stored the same rows (chunking may differ: the engine re-batches).
            for side, name in last.items():
                info = client.topic_info(name, "data")
                assert info.info is not None
                chunks[side] = info.info.chunks_number
                assert client.read_topic(name, "data").num_rows == w.rows, side
            client.close()
            raw.close()
    return {"times": times, "chunks": chunks}


def report(w: Workload, result: dict[str, Any]) -> float:
    times = result["times"]
    print(
        f"{w.name}: {len(w.batches)} batches, {w.rows} rows, {w.bytes / MB:.1f} MB "
        f"({w.bytes / len(w.batches) / MB:.2f} MB per batch)"
    )
    med = {side: median(t) for side, t in times.items()}
    for side in ("engine", "raw"):
        runs = " ".join(f"{t * 1000:.0f}" for t in times[side])
        print(
            f"  {side:6}  median {med[side] * 1000:7.1f} ms  "
            f"{w.bytes / MB / med[side]:8.1f} MB/s  {w.rows / med[side]:12,.0f} rows/s  "
            f"(runs, ms: {runs}; chunks stored: {result['chunks'][side]})"
        )
    ratio = med["raw"] / med["engine"]
    best = min(times["raw"]) / min(times["engine"])
    verdict = "meets" if ratio >= TARGET else "BELOW"
    print(
        f"  engine/raw throughput ratio: {ratio:.3f}x of medians ({verdict} the {TARGET}x "
        f"target); {best:.3f}x of best runs"
    )
    print()
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--in-process", action="store_true")
    parser.add_argument("--imu-batches", type=int, default=200)
    parser.add_argument("--image-rows", type=int, default=2000)
    args = parser.parse_args()

    header(
        "Throughput: engine + FlightTransport vs raw pyarrow.flight DoPut",
        [
            "Whole session (create, one topic, DoPut of every batch, finalize), same batches,",
            f"same server ({'in this process' if args.in_process else 'separate process'}); "
            f"median of {args.rounds} interleaved runs per side.",
            "MB = 10^6 bytes of Arrow buffers (RecordBatch.nbytes). A fresh server each round.",
            f"load average before: {os.getloadavg()[0]:.2f} (other work on the machine adds noise)",
        ],
    )
    workloads = [
        Workload(
            "imu",
            IMU_SCHEMA,
            SerializationFormat.Default,
            "imu",
            [imu_batch(10_000, i * 10_000) for i in range(args.imu_batches)],
        ),
        Workload(
            "image",
            IMAGE_SCHEMA,
            SerializationFormat.Image,
            "image",
            [image_batch(50, 100_000, i * 50) for i in range(args.image_rows // 50)],
        ),
    ]
    ratios = {}
    for w in workloads:
        ratios[w.name] = report(w, measure(w, args.rounds, args.in_process))
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print("summary: " + ", ".join(f"{name} {r:.3f}x" for name, r in ratios.items()))


if __name__ == "__main__":
    main()
