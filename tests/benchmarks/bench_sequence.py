"""Reading a 10-topic sequence merged by timestamp: `Client.stream_sequence` against the real
SDK 0.3.2's sequence streamer, on the same data in the same server.

One reference server process holds one sequence of --topics IMU topics (the SDK's wire
schema: envelope columns plus the acceleration, angular_velocity and orientation structs)
with --records records each, written by the engine in batches of --batch-rows. Topic j's record
i has timestamp_ns = (i * topics + j) ms, so the topics interleave record by record.

  SDK      `MosaicoClient.sequence_handler(name).get_data_streamer()`, iterated to the end:
           one (topic, Message) per record.
  engine   `Client.stream_sequence(name)` iterated to the end: merged record batches.

Both read the whole sequence, in interleaved rounds (median reported), connection set-up
excluded. The merge orders are compared: the (topic, timestamp_ns) of every record must be the
same on both sides. Target: engine records/s >= 100x the SDK's.

    python tests/benchmarks/bench_sequence.py [--topics 10] [--records 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import logging
import os
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.compute as pc
from _common import ServerProcess, header, median, stopwatch

from fsm.engine import Client
from fsm.enums import SerializationFormat
from transport.flight.client import FlightTransport

try:
    from mosaicolabs import IMU, Message, MosaicoClient
except ImportError as missing:
    raise SystemExit(
        "bench_sequence.py needs the Mosaico SDK: pip install mosaicolabs==0.3.2"
    ) from missing

NAME = "merge"
STEP_NS = 1_000_000
TARGET = 100.0


def _vector(schema: pa.Schema, name: str, a: pa.Array, offset: float) -> pa.StructArray:
    fields = list(schema.field(name).type)
    values = {"x": pc.add(a, offset), "y": pc.add(a, offset + 1), "z": pc.add(a, offset + 2)}
    arrays = [values.get(f.name, pa.nulls(len(a), type=f.type)) for f in fields]
    return pa.StructArray.from_arrays(arrays, fields=fields)


def imu_batch(schema: pa.Schema, topic: int, topics: int, start: int, rows: int) -> pa.RecordBatch:
    """Records start .. start + rows - 1 of topic `topic`, in the SDK's IMU schema."""
    index = pa.array(range(start, start + rows), type=pa.int64())
    stamps = pc.multiply(pc.add(pc.multiply(index, topics), topic), STEP_NS)
    a = pc.multiply(pc.cast(index, pa.float64()), 0.001)
    columns = {
        "timestamp_ns": stamps,
        "acceleration": _vector(schema, "acceleration", a, 0.0),
        "angular_velocity": _vector(schema, "angular_velocity", a, 3.0),
    }
    return pa.RecordBatch.from_arrays(
        [columns.get(f.name, pa.nulls(rows, type=f.type)) for f in schema], schema=schema
    )


def read_sdk(sdk: MosaicoClient) -> list[tuple[str, int]]:
    """(topic, timestamp_ns) of every record, as the SDK's streamer yields them."""
    handler = sdk.sequence_handler(NAME)
    assert handler is not None
    order = []
    streamer = handler.get_data_streamer()
    for topic, message in streamer:
        order.append((topic.removeprefix("/"), message.timestamp_ns))
    streamer.close()
    return order


def read_engine(client: Client) -> tuple[int, list[pa.RecordBatch]]:
    rows = 0
    batches = []
    with client.stream_sequence(NAME) as merged:
        for batch in merged:
            rows += batch.num_rows
            batches.append(batch.select(["topic", "timestamp_ns"]))
    return rows, batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topics", type=int, default=10)
    parser.add_argument("--records", type=int, default=20_000, help="records per topic")
    parser.add_argument("--batch-rows", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    total = args.topics * args.records
    header(
        "Reading a sequence merged by timestamp: Client.stream_sequence against SDK 0.3.2",
        [
            f"{args.topics} IMU topics x {args.records:,} records = {total:,} records, written "
            f"in batches of {args.batch_rows:,}; topics interleave record by record",
            f"{args.rounds} interleaved rounds, median; one reference server process",
            f"load average before: {os.getloadavg()[0]:.2f}",
        ],
    )
    logging.getLogger("mosaicolabs").setLevel(logging.WARNING)
    schema = Message._get_schema(IMU)
    with ServerProcess() as server:
        client = Client(FlightTransport(server.location))
        with client.sequence_create(NAME, {}) as seq:
            for j in range(args.topics):
                topic = seq.topic_create(
                    f"imu_{j}",
                    schema=schema,
                    ontology_tag="imu",
                    serialization_format=SerializationFormat.Ragged,
                )
                for start in range(0, args.records, args.batch_rows):
                    rows = min(args.batch_rows, args.records - start)
                    topic.push(imu_batch(schema, j, args.topics, start, rows))
        url = urlparse(server.location)
        sdk = MosaicoClient.connect(url.hostname, url.port)

        sdk_times, engine_times = [], []
        for _ in range(args.rounds):
            with stopwatch() as took:
                sdk_order = read_sdk(sdk)
            sdk_times.append(took[0])
            with stopwatch() as took:
                rows, merged = read_engine(client)
            engine_times.append(took[0])
            assert len(sdk_order) == total and rows == total, (len(sdk_order), rows, total)
        engine_order = [
            (str(t), int(ts))
            for batch in merged
            for t, ts in zip(
                batch["topic"].to_pylist(), batch["timestamp_ns"].to_pylist(), strict=True
            )
        ]
        same = engine_order == sdk_order
        sdk.close()
        client.close()

    sdk_rate = total / median(sdk_times)
    engine_rate = total / median(engine_times)
    print(f"{'':30}{'median s':>10}{'records/s':>14}")
    print(f"{'SDK get_data_streamer':30}{median(sdk_times):10.3f}{sdk_rate:14,.0f}")
    print(f"{'engine stream_sequence':30}{median(engine_times):10.4f}{engine_rate:14,.0f}")
    print(
        f"merge order (topic, timestamp_ns) of all {total:,} records: "
        f"{'the same on both sides' if same else 'DIFFERENT'}"
    )
    ratio = engine_rate / sdk_rate
    verdict = "met" if ratio >= TARGET else "NOT met"
    print(f"stream_sequence / SDK streamer: {ratio:.0f}x   target >= {TARGET:.0f}x: {verdict}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if not same:
        raise SystemExit("the engine's merge order differs from the SDK's")


if __name__ == "__main__":
    main()
