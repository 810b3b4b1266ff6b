"""Row API throughput: TopicWriter.push_row of IMU-like records, in records per second.

Each record is a dict {timestamp_ns: int, 9 x float}. The rows are built before timing, so the
figures are the cost of the engine (and transport), not of making the dicts. Measured over the
in-memory transport (no network) and over Flight to a reference server in its own process;
"push" is the loop of push_row calls alone, "session" adds opening and closing the session
(the last buffered rows are sent at close).

For scale, two baselines that do the same work without the engine:
  pyarrow         RecordBatch.from_pylist of the same dicts, 10,000 rows at a time;
  pyarrow+Flight  the same, then raw pyarrow.flight DoPut of those batches (one session).

    python tests/benchmarks/bench_rows.py [--rows N] [--rounds N]
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import pyarrow as pa
from _common import IMU_SCHEMA, RawClient, ServerProcess, header, imu_row, median, stopwatch

from fsm.engine import Client
from fsm.transport import Transport
from transport.flight.client import FlightTransport
from transport.memory import MemoryTransport

CHUNK = 10_000


def engine_rows(client: Client, name: str, rows: list[dict[str, Any]]) -> tuple[float, float]:
    """Seconds for the push_row loop, and for the whole session."""
    with stopwatch() as session, client.sequence_create(name) as seq:
        topic = seq.topic_create("imu", schema=IMU_SCHEMA, ontology_tag="imu")
        with stopwatch() as push:
            for row in rows:
                topic.push_row(row)
    return push[0], session[0]


def pyarrow_batches(rows: list[dict[str, Any]]) -> list[pa.RecordBatch]:
    return [
        pa.RecordBatch.from_pylist(rows[i : i + CHUNK], schema=IMU_SCHEMA)
        for i in range(0, len(rows), CHUNK)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    header(
        "Row API: TopicWriter.push_row throughput (IMU dict rows)",
        [
            f"{args.rows:,} rows of 1 int64 + 9 float64 per run; median of {args.rounds} runs.",
            f"load average before: {os.getloadavg()[0]:.2f}",
        ],
    )
    rows = [imu_row(i) for i in range(args.rows)]
    n = len(rows)

    with ServerProcess() as server:
        transports: dict[str, Transport] = {
            "memory": MemoryTransport(),
            "flight": FlightTransport(server.location),
        }
        clients = {name: Client(t) for name, t in transports.items()}
        raw = RawClient(server.location)
        for name, client in clients.items():
            engine_rows(client, f"warm_{name}", rows[:1000])

        push: dict[str, list[float]] = {name: [] for name in clients}
        session: dict[str, list[float]] = {name: [] for name in clients}
        base: dict[str, list[float]] = {"pyarrow": [], "pyarrow+Flight": []}
        for r in range(args.rounds):
            for name, client in clients.items():
                p, s = engine_rows(client, f"rows_{name}_{r}", rows)
                push[name].append(p)
                session[name].append(s)
            with stopwatch() as took:
                pyarrow_batches(rows)
            base["pyarrow"].append(took[0])
            with stopwatch() as took:
                raw.write_sequence(
                    f"rows_raw_{r}", "imu", IMU_SCHEMA, "default", "imu", pyarrow_batches(rows)
                )
            base["pyarrow+Flight"].append(took[0])
        stored = clients["flight"].read_topic(f"rows_flight_{args.rounds - 1}", "imu").num_rows
        assert stored == n, stored
        for client in clients.values():
            client.close()
        raw.close()

    print(f"{'':24}{'records/s':>14}{'us/record':>12}")
    for name in clients:
        for label, times in (("push", push[name]), ("session", session[name])):
            t = median(times)
            print(f"engine {name:7} {label:9}{n / t:14,.0f}{t / n * 1e6:12.2f}")
    for name, times in base.items():
        t = median(times)
        print(f"baseline {name:15}{n / t:14,.0f}{t / n * 1e6:12.2f}")
    print()
    mem = median(session["memory"])
    fl = median(session["flight"])
    print(f"engine memory / pyarrow from_pylist:   {median(base['pyarrow']) / mem:.3f}x")
    print(f"engine Flight / pyarrow + raw DoPut:   {median(base['pyarrow+Flight']) / fl:.3f}x")
    print(f"engine Flight / engine memory:         {mem / fl:.3f}x")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
