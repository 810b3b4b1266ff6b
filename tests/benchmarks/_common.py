"""Helpers shared by the benchmark scripts: workloads, a reference server in its own process,
a hand-written pyarrow.flight client as the baseline, and small measuring tools."""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import flight

ROOT = Path(__file__).resolve().parents[2]
MB = 1_000_000
MiB = 1024 * 1024

# -----------------------------------------------------------------------------------------------
# Workloads

IMU_COLUMNS = [f"{group}_{axis}" for group in ("acc", "gyro", "mag") for axis in "xyz"]

IMU_SCHEMA = pa.schema(
    [pa.field("timestamp_ns", pa.int64(), nullable=False)]
    + [pa.field(name, pa.float64()) for name in IMU_COLUMNS]
)

IMAGE_SCHEMA = pa.schema(
    [
        pa.field("timestamp_ns", pa.int64(), nullable=False),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("format", pa.string()),
        pa.field("data", pa.binary()),
    ]
)


def timestamps(start: int, rows: int) -> pa.Array:
    return pa.array(range(start, start + rows), type=pa.int64())


def imu_batch(rows: int, start: int) -> pa.RecordBatch:
    """`rows` IMU records (int64 timestamp + 9 random float64) from timestamp `start`."""
    arrays = [timestamps(start, rows)] + [pc.random(rows) for _ in IMU_COLUMNS]
    return pa.RecordBatch.from_arrays(arrays, schema=IMU_SCHEMA)


def imu_row(i: int) -> dict[str, Any]:
    """One IMU record as a dict, the shape the row API takes."""
    row: dict[str, Any] = {"timestamp_ns": i}
    for k, name in enumerate(IMU_COLUMNS):
        row[name] = 0.001 * i + k
    return row


def image_batch(rows: int, payload_bytes: int, start: int) -> pa.RecordBatch:
    """`rows` image records of `payload_bytes` each (one buffer, sliced per row)."""
    offsets = pa.array(range(0, (rows + 1) * payload_bytes, payload_bytes), type=pa.int32())
    blob = pa.py_buffer(os.urandom(rows * payload_bytes))
    data = pa.Array.from_buffers(pa.binary(), rows, [None, offsets.buffers()[1], blob])
    arrays = [
        timestamps(start, rows),
        pa.array([640] * rows, type=pa.int32()),
        pa.array([480] * rows, type=pa.int32()),
        pa.array(["jpeg"] * rows, type=pa.string()),
        data,
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=IMAGE_SCHEMA)


def total_bytes(batches: Iterable[pa.RecordBatch]) -> int:
    return sum(b.nbytes for b in batches)


# -----------------------------------------------------------------------------------------------
# A reference server in a separate process


class ServerProcess:
    """`python -m fsm.cli serve --port 0` as a child process; `location` is parsed from the
    first line it prints."""

    def __init__(self, *options: str) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fsm.cli",
                "serve",
                "--port",
                "0",
                "--log-level",
                "warning",
                *options,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()
        found = re.search(r"(grpc://\S+)", first)
        if found is None:
            self.stop()
            raise RuntimeError(f"the server did not print its location: {first!r}")
        self.location = found.group(1)
        self.pid = self.proc.pid

    def rss_bytes(self) -> int:
        return rss_of(self.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -----------------------------------------------------------------------------------------------
# The baseline: the protocol by hand with pyarrow.flight


class RawClient:
    """The ingestion protocol written directly against pyarrow.flight: the least a client
    has to do, with nothing around it."""

    def __init__(self, location: str) -> None:
        self.client = flight.FlightClient(location)

    def action(self, name: str, body: dict[str, Any]) -> Any:
        results = list(self.client.do_action(flight.Action(name, json.dumps(body).encode())))
        payload = b"".join(r.body.to_pybytes() for r in results)
        return json.loads(payload)["response"] if payload else None

    def write_sequence(
        self,
        sequence: str,
        topic: str,
        schema: pa.Schema,
        serialization_format: str,
        ontology_tag: str,
        batches: Iterable[pa.RecordBatch],
    ) -> None:
        """One session with one topic: create, DoPut every batch, close, finalize."""
        self.action("sequence_create", {"locator": sequence, "user_metadata": {}})
        session = self.action("session_create", {"locator": sequence})["uuid"]
        locator = f"{sequence}/{topic}"
        topic_uuid = self.action(
            "topic_create",
            {
                "session_uuid": session,
                "locator": locator,
                "serialization_format": serialization_format,
                "ontology_tag": ontology_tag,
                "user_metadata": {},
            },
        )["uuid"]
        descriptor = flight.FlightDescriptor.for_command(
            json.dumps({"resource_locator": locator, "topic_uuid": topic_uuid})
        )
        writer, _reader = self.client.do_put(descriptor, schema)
        for batch in batches:
            writer.write_batch(batch)
        writer.done_writing()
        writer.close()
        self.action("session_finalize", {"session_uuid": session})

    def close(self) -> None:
        self.client.close()


# -----------------------------------------------------------------------------------------------
# Measuring


def rss_of(pid: int | str = "self") -> int:
    """Current resident set size of a process, in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(found.group(1)) * 1024 if found else 0


def peak_rss() -> int:
    """Peak resident set size of this process since start (or the last reset), in bytes."""
    found = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
    return int(found.group(1)) * 1024 if found else 0


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux); False if not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@contextmanager
def stopwatch() -> Iterator[list[float]]:
    """Yields a list that holds the elapsed seconds once the block ends."""
    out: list[float] = []
    start = time.perf_counter()
    try:
        yield out
    finally:
        out.append(time.perf_counter() - start)


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def header(title: str, lines: Iterable[str]) -> None:
    print(title)
    print("=" * len(title))
    for line in lines:
        print(line)
    print(f"(python {sys.version.split()[0]}, pyarrow {pa.__version__}, {os.cpu_count()} CPUs)")
    print()
