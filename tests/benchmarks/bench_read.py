"""Streaming a large topic: `Client.stream_topic` against raw pyarrow.flight `do_get` of the
same ticket, for throughput and for the client's peak memory.

One reference server in its own process (`python -m fsm.cli serve --port 0`) holds one topic of
--gb GiB of IMU batches (--chunk-rows rows each, stored as one chunk each), written with raw
pyarrow.flight. Then:

  throughput  MB/s of reading the whole topic, the engine (`stream_topic`, GetFlightInfo
              included) and the baseline (`FlightClient.do_get(ticket)` and `read_chunk` until
              the end) in interleaved rounds, median reported; target ratio >= 0.95x.
  memory      each side once more in a fresh child process: peak RSS (VmHWM) during the read
              minus RSS just before it, and the highest bytes live in Arrow's pool, against the
              bound the engine states: a TopicReader keeps no batch, so the caller's batch and
              the one being received, 2 x the largest chunk, plus what gRPC buffers (which the
              raw do_get line shows, as it has the same share).

    python tests/benchmarks/bench_read.py [--gb 2] [--chunk-rows 100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

import pyarrow as pa
from _common import (
    IMU_SCHEMA,
    MB,
    MiB,
    RawClient,
    ServerProcess,
    header,
    imu_batch,
    median,
    peak_rss,
    reset_peak_rss,
    rss_of,
    stopwatch,
)
from pyarrow import flight

from fsm.engine import Client
from transport.flight.client import FlightTransport

GiB = 1024 * MiB
SEQUENCE, TOPIC = "big", "imu"
TARGET = 0.95


def read_raw(location: str, ticket: bytes) -> tuple[int, int]:
    """(rows, bytes) of the topic read with raw pyarrow.flight."""
    client = flight.FlightClient(location)
    reader = client.do_get(flight.Ticket(ticket))
    rows = size = 0
    while True:
        try:
            batch = reader.read_chunk().data
        except StopIteration:
            break
        rows += batch.num_rows
        size += batch.nbytes
    client.close()
    return rows, size


def read_engine(client: Client) -> tuple[int, int]:
    """(rows, bytes) of the topic read with Client.stream_topic."""
    rows = size = 0
    with client.stream_topic(SEQUENCE, TOPIC) as batches:
        for batch in batches:
            rows += batch.num_rows
            size += batch.nbytes
    return rows, size


class ArrowPeak:
    """The highest bytes live in Arrow's pool above the level at start, sampled every ms."""

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


def child(side: str, location: str, ticket: bytes) -> dict[str, Any]:
    """One read in this fresh process, with its memory figures."""
    client = Client(FlightTransport(location))
    client.version()  # connect first
    sampler = ArrowPeak()
    before = rss_of()
    reset_peak_rss()
    start = time.perf_counter()
    rows, size = read_raw(location, ticket) if side == "raw" else read_engine(client)
    seconds = time.perf_counter() - start
    result = {
        "rows": rows,
        "bytes": size,
        "seconds": seconds,
        "growth": peak_rss() - before,
        "arrow": sampler.stop(),
    }
    client.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=2.0, help="GiB in the topic (default 2)")
    parser.add_argument("--chunk-rows", type=int, default=100_000, help="rows per stored chunk")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--location", help=argparse.SUPPRESS)
    parser.add_argument("--ticket", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.location, bytes.fromhex(args.ticket))))
        return
    if not reset_peak_rss():
        raise SystemExit("this benchmark needs /proc/self/clear_refs (Linux) to reset VmHWM")

    chunk = imu_batch(args.chunk_rows, 0)
    chunks = max(1, round(args.gb * GiB / chunk.nbytes))
    header(
        "Reading one large topic: Client.stream_topic against raw pyarrow.flight do_get",
        [
            f"topic: {chunks} chunks of {args.chunk_rows:,} IMU rows ({chunk.nbytes / MB:.1f} MB "
            f"each), {chunks * chunk.nbytes / GiB:.2f} GiB in all",
            f"{args.rounds} interleaved rounds, median; one reference server process",
            f"load average before: {os.getloadavg()[0]:.2f}",
        ],
    )
    with ServerProcess() as server:
        raw = RawClient(server.location)
        with stopwatch() as wrote:
            raw.write_sequence(
                SEQUENCE,
                TOPIC,
                IMU_SCHEMA,
                "default",
                "imu",
                (imu_batch(args.chunk_rows, k * args.chunk_rows) for k in range(chunks)),
            )
        raw.close()
        client = Client(FlightTransport(server.location))
        info = client.topic_info(SEQUENCE, TOPIC)
        assert info.info is not None and info.info.chunks_number == chunks
        print(f"written with raw pyarrow.flight in {wrote[0]:.1f} s")
        expected = chunks * args.chunk_rows

        times: dict[str, list[float]] = {"raw do_get": [], "stream_topic": []}
        for _ in range(args.rounds):
            for label, read in (
                ("raw do_get", lambda: read_raw(server.location, info.ticket)),
                ("stream_topic", lambda: read_engine(client)),
            ):
                with stopwatch() as took:
                    rows, size = read()
                assert rows == expected, (label, rows, expected)
                times[label].append(took[0])
        client.close()

        memory = {}
        for side in ("raw", "engine"):
            run = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    side,
                    "--location",
                    server.location,
                    "--ticket",
                    info.ticket.hex(),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            memory[side] = json.loads(run.stdout.strip().splitlines()[-1])
            assert memory[side]["rows"] == expected, memory[side]

    print()
    print(f"{'':16}{'median s':>10}{'MB/s':>9}")
    rate = {}
    for label, values in times.items():
        rate[label] = size / MB / median(values)
        print(f"{label:16}{median(values):10.3f}{rate[label]:9.0f}")
    ratio = rate["stream_topic"] / rate["raw do_get"]
    verdict = "met" if ratio >= TARGET else "NOT met"
    print(f"stream_topic / raw do_get: {ratio:.3f}x   target >= {TARGET}x: {verdict}")

    bound = 2 * chunk.nbytes
    print()
    print(
        f"memory, one read in a fresh process; bound stated for stream_topic: 2 x the largest "
        f"chunk = {bound / MiB:.1f} MiB, plus gRPC's buffers"
    )
    print(f"{'':16}{'RSS growth':>12}{'/bound':>8}{'Arrow peak':>12}{'/bound':>8}{'MB/s':>8}")
    for side, label in (("raw", "raw do_get"), ("engine", "stream_topic")):
        m = memory[side]
        print(
            f"{label:16}{m['growth'] / MiB:8.1f} MiB{m['growth'] / bound:7.2f}x"
            f"{m['arrow'] / MiB:8.1f} MiB{m['arrow'] / bound:7.2f}x"
            f"{m['bytes'] / MB / m['seconds']:8.0f}"
        )
    print(
        f"stream_topic's growth beyond raw do_get's: "
        f"{(memory['engine']['growth'] - memory['raw']['growth']) / MiB:.1f} MiB"
    )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
