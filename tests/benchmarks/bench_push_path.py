"""The engine's own cost per push_row: the table walk and commit around each record.

Every push_row is a `push` trigger: the row is looked up, its STREAM_WRITE step runs through
the topic writer's executor, and the machine commits it (a repeated self-loop once per
`LOOP_BATCH` pushes, with its count). This script measures what that costs on top of handing
the same row to the topic's stream writer directly, which is the STREAM_WRITE step alone.
To leave out the row checks and the Arrow conversion (the same on both sides), both sides
hand the rows to a stream writer whose `submit_row` only answers OK; `--real` keeps the real
one, and the figures then include the conversion and the in-memory transport.

Times are CPU seconds of the pushing thread (`time.thread_time`), so other work on the
machine moves them less; the median of interleaved rounds is reported.

    python tests/benchmarks/bench_push_path.py [--rows N] [--rounds N] [--real]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

from _common import IMU_SCHEMA, header, imu_row, median

from fsm.engine import BatchPolicy, Client, Tracer
from fsm.engine.stream import _OK, StreamWriter
from fsm.outcome import Outcome
from transport.memory import MemoryTransport


def _timed(push: Callable[[Any], None], rows: list[dict[str, Any]]) -> float:
    start = time.thread_time()
    for row in rows:
        push(row)
    return time.thread_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--real", action="store_true", help="keep the real submit_row")
    args = parser.parse_args()
    header(
        "push_row: the engine's cost per record on top of the stream writer",
        [
            f"{args.rows:,} IMU dict rows per round; median of {args.rounds} interleaved rounds;",
            "CPU time of the pushing thread; "
            + (
                "real submit_row (checks, conversion, memory transport)."
                if args.real
                else "submit_row answering OK (the engine's cost alone)."
            ),
            f"load average before: {os.getloadavg()[0]:.2f}",
        ],
    )
    if not args.real:

        def answer_ok(self: StreamWriter, row: Any) -> Outcome:
            return _OK  # the stream writer's own success

        StreamWriter.submit_row = answer_ok  # type: ignore[method-assign]
    rows = [imu_row(i) for i in range(args.rows)]
    policy = BatchPolicy(background=False)
    times: dict[str, list[float]] = {"direct": [], "push_row": [], "push_row traced": []}
    for r in range(args.rounds):
        for name, tracer in (("push_row", None), ("push_row traced", Tracer())):
            client = Client(MemoryTransport(), tracer=tracer, batch_policy=policy)
            with client.sequence_create(f"path_{r}_{len(times[name])}") as seq:
                topic = seq.topic_create("imu", schema=IMU_SCHEMA, ontology_tag="imu")
                times[name].append(_timed(topic.push_row, rows))
                if name == "push_row":
                    # The same rows handed to this topic's stream writer directly.
                    times["direct"].append(_timed(topic._writer.submit_row, rows))
            client.close()
    n = len(rows)
    direct = median(times["direct"])
    print(f"{'':28}{'ns/record':>12}{'x direct':>10}")
    for name, values in times.items():
        t = median(values)
        print(f"{name:28}{t / n * 1e9:12.0f}{t / direct:10.2f}")
    print()
    engine = median(times["push_row"]) - direct
    print(f"engine cost per push_row (push_row - direct): {engine / n * 1e9:.0f} ns")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
