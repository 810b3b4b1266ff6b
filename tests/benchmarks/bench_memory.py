"""Peak memory of a client streaming gigabytes through one topic, against the engine's bound.

The engine states that a topic holds at most BatchPolicy().memory_bound =
(max_in_flight + 2) * batch_bytes bytes of records. Here one topic streams data generated on the
fly (nothing is kept by the script) to a reference server in its own process
(`python -m fsm.cli serve --port 0`, which keeps the data in its RAM). Each case runs in a fresh
client process; its peak RSS (VmHWM) is compared with its RSS just before streaming. Two
references: "generator" makes the IMU batches without sending them (the script's own share),
"raw-imu-batches" sends them with raw pyarrow.flight DoPut (the transport's own share).

Cases:
  generator        the IMU batches of imu-batches, made and dropped, not sent
  raw-imu-batches  the same batches sent with raw pyarrow.flight DoPut, no engine
  imu-batches      10,000-row IMU batches (0.8 MB) with push, --gb of data (default 2 GiB)
  imu-batches-slow the same with the server throttled (stopped 3/4 of the time), so the send
                   queue stays full: the worst case the bound is about; --slow-gb of data
  image-batches    1 MB image records pushed one per batch (the engine merges them), --image-gb
  imu-rows         IMU dicts with push_row, --row-mb of Arrow data
  image-rows       1 MB image records with push_row, --image-row-mb
  raw-image-rows   the same records, converted 8 MiB at a time with RecordBatch.from_pylist
                   and sent with raw pyarrow.flight DoPut: the reference for image-rows

    python tests/benchmarks/bench_memory.py [--gb 2] [--image-gb 1] [--row-mb 100]
        [--image-row-mb 256] [--cases imu-batches,imu-rows,...]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
from _common import (
    IMAGE_SCHEMA,
    IMU_SCHEMA,
    MB,
    MiB,
    RawClient,
    ServerProcess,
    header,
    image_batch,
    imu_batch,
    imu_row,
    peak_rss,
    reset_peak_rss,
    rss_of,
)

from fsm.engine import BatchPolicy, Client
from fsm.enums import SerializationFormat
from transport.flight.client import FlightTransport

GiB = 1024 * MiB
IMU_ROWS = 10_000
IMU_ROW_BYTES = 80  # int64 + 9 float64
IMAGE_BYTES = 1_000_000
CASES = [
    "generator",
    "raw-imu-batches",
    "imu-batches",
    "imu-batches-slow",
    "image-batches",
    "imu-rows",
    "image-rows",
    "raw-image-rows",
]


def imu_batches(total: int) -> Iterator[pa.RecordBatch]:
    for i in range(-(-total // (IMU_ROWS * IMU_ROW_BYTES))):
        yield imu_batch(IMU_ROWS, i * IMU_ROWS)


def image_batches(total: int) -> Iterator[pa.RecordBatch]:
    for i in range(-(-total // IMAGE_BYTES)):
        yield image_batch(1, IMAGE_BYTES, i)


def imu_rows(total: int) -> Iterator[dict[str, Any]]:
    for i in range(total // IMU_ROW_BYTES):
        yield imu_row(i)


def image_rows(total: int) -> Iterator[dict[str, Any]]:
    for i in range(total // IMAGE_BYTES):
        yield {
            "timestamp_ns": i,
            "width": 1000,
            "height": 1000,
            "format": "raw",
            "data": os.urandom(IMAGE_BYTES),
        }


def image_row_batches(total: int, batch_bytes: int) -> Iterator[pa.RecordBatch]:
    """The rows of image_rows, converted by hand in groups of at most batch_bytes."""
    group: list[dict[str, Any]] = []
    for row in image_rows(total):
        if group and (len(group) + 1) * IMAGE_BYTES > batch_bytes:
            yield pa.RecordBatch.from_pylist(group, schema=IMAGE_SCHEMA)
            group = []
        group.append(row)
    if group:
        yield pa.RecordBatch.from_pylist(group, schema=IMAGE_SCHEMA)


class _Counted:
    """Passes batches through, counting them."""

    def __init__(self, batches: Iterator[pa.RecordBatch]) -> None:
        self.batches = batches
        self.bytes = 0
        self.rows = 0

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        for batch in self.batches:
            self.bytes += batch.nbytes
            self.rows += batch.num_rows
            yield batch


class _ArrowPeak:
    """Samples the bytes live in Arrow's memory pool every millisecond; `stop` answers the
    highest value seen above the level at start. Unlike RSS, this excludes what the allocator
    keeps after a free, and Python objects."""

    def __init__(self) -> None:
        self.base = pa.total_allocated_bytes()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, pa.total_allocated_bytes())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak - self.base


# -----------------------------------------------------------------------------------------------
# One case, in a child process


def run_case(case: str, location: str, volume: int) -> dict[str, Any]:
    client = Client(FlightTransport(location))
    image = "image" in case
    schema = IMAGE_SCHEMA if image else IMU_SCHEMA
    fmt = SerializationFormat.Image if image else SerializationFormat.Default
    # Warm up: connection, spec, threads, Arrow's allocator.
    with client.sequence_create(f"warm_{case}") as seq:
        topic = seq.topic_create("data", schema=schema, serialization_format=fmt, ontology_tag="x")
        topic.push(image_batch(2, IMAGE_BYTES, 0) if image else imu_batch(IMU_ROWS, 0))

    sent = 0
    rows = 0
    sampler = _ArrowPeak()
    before = rss_of()
    reset_peak_rss()
    start = time.perf_counter()
    if case == "generator":
        for batch in imu_batches(volume):
            sent += batch.nbytes
            rows += batch.num_rows
    elif case.startswith("raw-"):
        name = "mem_raw"
        counted = _Counted(
            image_row_batches(volume, BatchPolicy().batch_bytes) if image else imu_batches(volume)
        )
        raw = RawClient(location)
        raw.write_sequence(name, "data", schema, "image" if image else "default", "x", counted)
        raw.close()
        sent, rows = counted.bytes, counted.rows
    else:
        name = f"mem_{case.replace('-', '_')}"
        with client.sequence_create(name) as seq:
            topic = seq.topic_create(
                "data", schema=schema, serialization_format=fmt, ontology_tag="x"
            )
            if "batches" in case:
                source = image_batches(volume) if image else imu_batches(volume)
                for batch in source:
                    topic.push(batch)
                    sent += batch.nbytes
                    rows += batch.num_rows
            else:
                make: Callable[[int], Iterator[dict[str, Any]]] = image_rows if image else imu_rows
                for row in make(volume):
                    topic.push_row(row)
                    rows += 1
                sent = rows * (IMAGE_BYTES if image else IMU_ROW_BYTES)
    elapsed = time.perf_counter() - start
    peak = peak_rss()
    arrow_peak = sampler.stop()
    stored = None
    if case != "generator":
        info = client.topic_info(name, "data").info
        assert info is not None
        stored = {"chunks": info.chunks_number, "bytes": info.total_bytes}
    client.close()
    return {
        "case": case,
        "sent": sent,
        "rows": rows,
        "seconds": elapsed,
        "rss_before": before,
        "peak": peak,
        "arrow_peak": arrow_peak,
        "stored": stored,
    }


# -----------------------------------------------------------------------------------------------
# The driver


@contextmanager
def _throttled(pid: int, on: bool) -> Iterator[None]:
    """While the block runs, stop the process `pid` for 15 ms of every 20 ms (when `on`)."""
    done = threading.Event()

    def duty() -> None:
        while not done.is_set():
            os.kill(pid, signal.SIGSTOP)
            time.sleep(0.015)
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.005)

    thread = threading.Thread(target=duty, daemon=True)
    if on:
        thread.start()
    try:
        yield
    finally:
        done.set()
        if on:
            thread.join()
            os.kill(pid, signal.SIGCONT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=2.0, help="GiB of IMU batches")
    parser.add_argument("--slow-gb", type=float, default=0.5, help="GiB sent to a slow server")
    parser.add_argument("--image-gb", type=float, default=1.0, help="GiB of 1 MB image batches")
    parser.add_argument("--row-mb", type=float, default=100, help="MB of IMU rows (push_row)")
    parser.add_argument("--image-row-mb", type=float, default=256, help="MB of image push_row")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--location", help=argparse.SUPPRESS)
    parser.add_argument("--volume", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.case:  # a child: run one case and answer JSON on the last line
        print(json.dumps(run_case(args.case, args.location, args.volume)))
        return

    if not reset_peak_rss():
        raise SystemExit("this benchmark needs /proc/self/clear_refs (Linux) to reset VmHWM")
    volumes = {
        "generator": int(args.gb * GiB),
        "raw-imu-batches": int(args.gb * GiB),
        "imu-batches": int(args.gb * GiB),
        "imu-batches-slow": int(args.slow_gb * GiB),
        "image-batches": int(args.image_gb * GiB),
        "imu-rows": int(args.row_mb * MB),
        "image-rows": int(args.image_row_mb * MB),
        "raw-image-rows": int(args.image_row_mb * MB),
    }
    policy = BatchPolicy()
    bound = policy.memory_bound
    header(
        "Memory: client peak RSS while streaming through one topic",
        [
            "RSS growth = VmHWM during the stream - VmRSS just before it (client process only);",
            "Arrow peak = highest bytes live in Arrow's memory pool during it, sampled each ms.",
            f"Bound stated by the engine: BatchPolicy().memory_bound = (max_in_flight + 2) x "
            f"batch_bytes = ({policy.max_in_flight} + 2) x {policy.batch_bytes / MiB:g} MiB "
            f"= {bound / MiB:g} MiB.",
            "Server: python -m fsm.cli serve --port 0, a fresh one per case, in its own process.",
        ],
    )
    print(
        f"{'case':16}{'streamed':>10}{'rows':>12}{'MB/s':>6}{'RSS before':>12}"
        f"{'RSS growth':>12}{'/bound':>8}{'Arrow peak':>12}{'/bound':>8}{'server RSS':>12}"
    )
    for case in args.cases.split(","):
        with ServerProcess() as server, _throttled(server.pid, case.endswith("slow")):
            child = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--case",
                    case,
                    "--location",
                    server.location,
                    "--volume",
                    str(volumes[case]),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            server_rss = server.rss_bytes()
        if child.returncode != 0:
            print(f"{case:16}failed:\n{child.stderr}")
            continue
        r = json.loads(child.stdout.strip().splitlines()[-1])
        growth = r["peak"] - r["rss_before"]
        arrow = r["arrow_peak"]
        print(
            f"{case:16}{r['sent'] / MB:7.0f} MB{r['rows']:12,}{r['sent'] / MB / r['seconds']:6.0f}"
            f"{r['rss_before'] / MiB:8.0f} MiB{growth / MiB:8.1f} MiB{growth / bound:7.2f}x"
            f"{arrow / MiB:8.1f} MiB{arrow / bound:7.2f}x{server_rss / MiB:8.0f} MiB"
        )
        if r["stored"]:
            s = r["stored"]
            print(f"{'':16}server stored {s['bytes'] / MB:.0f} MB in {s['chunks']} chunks")


if __name__ == "__main__":
    main()
