"""The engine against the real SDK: records/s of the same IMU records written to the same server.

The SDK (mosaicolabs 0.3.2) writes IMU records one `TopicWriter.push(Message)` at a time. The
engine writes the same records, in the schema the SDK puts on the wire (the envelope columns
plus the `acceleration`, `angular_velocity` and `orientation` structs, read back from the
server after a first SDK session), two ways:

  row API    `TopicWriter.push_row` of one dict per record, the dict the SDK's Message encodes to;
  batch API  `TopicWriter.push` of Arrow batches (`--batch-rows` records each).

Record i is the same on every side: timestamp_ns = i ms, acceleration (a, a+1, a+2) and angular
velocity (a+3, a+4, a+5) with a = i / 1000, no covariance, no orientation. The Messages, dicts
and batches are built before timing. "push" is the loop of push calls alone; "session" is the
whole session: sequence_create, topic_create, the pushes and the finalize (connecting is not
included). All sides use one reference server process, in interleaved rounds (median
reported). At the end every topic is read back from the server to check its record count, and
the SDK's records are compared with the engine's, value by value.

Targets: row API >= 50x the SDK's records/s; batch API >= 500x.

    python tests/benchmarks/bench_sdk.py [--sdk-records N] [--rows N] [--batches N] [--rounds N]
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.compute as pc
from _common import ServerProcess, header, median, stopwatch

from fsm.engine import Client
from fsm.enums import SerializationFormat
from transport.flight.client import FlightTransport

try:
    from mosaicolabs import IMU, Message, MosaicoClient, Vector3d
except ImportError as missing:
    raise SystemExit(
        "bench_sdk.py needs the Mosaico SDK: pip install mosaicolabs==0.3.2"
    ) from missing

STEP_NS = 1_000_000  # 1 kHz
ROW_TARGET = 50.0
BATCH_TARGET = 500.0


# -----------------------------------------------------------------------------------------------
# The records, three ways


def sdk_message(i: int) -> Message:
    a = 0.001 * i
    return Message(
        timestamp_ns=i * STEP_NS,
        data=IMU(
            acceleration=Vector3d(x=a, y=a + 1, z=a + 2),
            angular_velocity=Vector3d(x=a + 3, y=a + 4, z=a + 5),
        ),
    )


def _vector(x: float, y: float, z: float) -> dict[str, Any]:
    return {"x": x, "y": y, "z": z, "covariance": None, "covariance_type": None}


def row_record(i: int) -> dict[str, Any]:
    """Record i as the dict the SDK's Message encodes to."""
    a = 0.001 * i
    return {
        "timestamp_ns": i * STEP_NS,
        "recording_timestamp_ns": None,
        "frame_id": None,
        "sequence_id": None,
        "acceleration": _vector(a, a + 1, a + 2),
        "angular_velocity": _vector(a + 3, a + 4, a + 5),
        "orientation": None,
    }


def _vector_array(schema: pa.Schema, name: str, a: pa.Array, offset: float) -> pa.StructArray:
    fields = list(schema.field(name).type)
    n = len(a)
    values = {
        "x": pc.add(a, offset),
        "y": pc.add(a, offset + 1),
        "z": pc.add(a, offset + 2),
    }
    arrays = [values.get(f.name, pa.nulls(n, type=f.type)) for f in fields]
    return pa.StructArray.from_arrays(arrays, fields=fields)


def imu_batch(schema: pa.Schema, start: int, rows: int) -> pa.RecordBatch:
    """Records start .. start + rows - 1 as one batch of `schema`."""
    index = pa.array(range(start, start + rows), type=pa.int64())
    a = pc.multiply(pc.cast(index, pa.float64()), 0.001)
    columns = {
        "timestamp_ns": pc.multiply(index, STEP_NS),
        "acceleration": _vector_array(schema, "acceleration", a, 0.0),
        "angular_velocity": _vector_array(schema, "angular_velocity", a, 3.0),
    }
    arrays = [columns.get(f.name, pa.nulls(rows, type=f.type)) for f in schema]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


# -----------------------------------------------------------------------------------------------
# One session per side: (seconds of the push loop, seconds of the whole session)


def sdk_session(sdk: MosaicoClient, name: str, messages: list[Message]) -> tuple[float, float]:
    with stopwatch() as session, sdk.sequence_create(name, {}) as seq:
        topic = seq.topic_create("imu", {}, IMU)
        if topic is None:
            raise RuntimeError(f"the SDK could not create topic imu in {name}")
        with stopwatch() as push:
            for message in messages:
                topic.push(message)
    return push[0], session[0]


def engine_session(
    client: Client, name: str, schema: pa.Schema, method: str, items: list[Any]
) -> tuple[float, float]:
    """`method` is "push_row" (items are dicts) or "push" (items are batches)."""
    with stopwatch() as session, client.sequence_create(name, {}) as seq:
        # the engine takes list columns (the covariances) in Ragged topics only
        topic = seq.topic_create(
            "imu",
            schema=schema,
            ontology_tag="imu",
            serialization_format=SerializationFormat.Ragged,
        )
        push = getattr(topic, method)
        with stopwatch() as pushing:
            for item in items:
                push(item)
    return pushing[0], session[0]


# -----------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdk-records", type=int, default=30_000)
    parser.add_argument("--rows", type=int, default=300_000, help="records for the row API")
    parser.add_argument("--batches", type=int, default=100, help="batches for the batch API")
    parser.add_argument("--batch-rows", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n_sdk, n_rows, n_batch = args.sdk_records, args.rows, args.batches * args.batch_rows
    header(
        "The engine against the Mosaico SDK 0.3.2: the same IMU records, records/s",
        [
            f"SDK TopicWriter.push(Message): {n_sdk:,} records per session",
            f"engine push_row(dict):         {n_rows:,} records per session",
            f"engine push(RecordBatch):      {n_batch:,} records per session "
            f"({args.batches} batches of {args.batch_rows:,})",
            f"{args.rounds} interleaved rounds, median; one reference server process",
            f"load average before: {os.getloadavg()[0]:.2f}",
        ],
    )
    # keep the SDK's own log to warnings and errors
    logging.getLogger("mosaicolabs").setLevel(logging.WARNING)

    assert sdk_message(7)._encode() == row_record(7), "the row dict differs from the SDK's"
    with stopwatch() as built:
        messages = [sdk_message(i) for i in range(n_sdk)]
    rows = [row_record(i) for i in range(n_rows)]

    with ServerProcess() as server:
        url = urlparse(server.location)
        sdk = MosaicoClient.connect(url.hostname, url.port)
        client = Client(FlightTransport(server.location))

        # warm up both clients; the SDK's topic gives the schema it sends
        sdk_session(sdk, "warm_sdk", messages[:1000])
        sdk_topic = client.topic_info("warm_sdk", "imu")
        sdk_format = sdk_topic.serialization_format
        assert sdk_topic.schema is not None
        schema = sdk_topic.schema.remove_metadata()
        assert schema.equals(Message._get_schema(IMU), check_metadata=False)
        batches = [
            imu_batch(schema, k * args.batch_rows, args.batch_rows) for k in range(args.batches)
        ]
        engine_session(client, "warm_rows", schema, "push_row", rows[:1000])
        engine_session(client, "warm_batches", schema, "push", batches[:2])

        # (label, sequence prefix, records, one session)
        sides: list[tuple[str, str, int, Callable[[str], tuple[float, float]]]] = [
            ("SDK push(Message)", "sdk", n_sdk, lambda name: sdk_session(sdk, name, messages)),
            (
                "engine push_row",
                "rows",
                n_rows,
                lambda name: engine_session(client, name, schema, "push_row", rows),
            ),
            (
                "engine push(batch)",
                "batch",
                n_batch,
                lambda name: engine_session(client, name, schema, "push", batches),
            ),
        ]
        push: dict[str, list[float]] = {label: [] for label, *_ in sides}
        session: dict[str, list[float]] = {label: [] for label, *_ in sides}
        for r in range(args.rounds):
            for label, prefix, _n, run in sides:
                push_s, session_s = run(f"{prefix}_{r}")
                push[label].append(push_s)
                session[label].append(session_s)

        # every topic holds its records; the SDK's records equal the engine's, value by value
        tables = {
            label: client.read_topic(f"{prefix}_{args.rounds - 1}", "imu")
            for label, prefix, _n, _run in sides
        }
        for label, _prefix, n, _run in sides:
            assert tables[label].num_rows == n, (label, tables[label].num_rows, n)
        sdk_table = tables["SDK push(Message)"].sort_by("timestamp_ns").select(schema.names)
        for label in ("engine push_row", "engine push(batch)"):
            ours = tables[label].sort_by("timestamp_ns").select(schema.names).slice(0, n_sdk)
            assert ours.equals(sdk_table), f"{label}: records differ from the SDK's"
        sdk.close()
        client.close()

    rate = {
        label: {"push": n / median(push[label]), "session": n / median(session[label])}
        for label, _prefix, n, _run in sides
    }
    print(f"{'':22}{'records':>10}{'push s':>9}{'records/s':>13}{'session s':>11}{'records/s':>13}")
    for label, _prefix, n, _run in sides:
        print(
            f"{label:22}{n:10,}{median(push[label]):9.3f}{rate[label]['push']:13,.0f}"
            f"{median(session[label]):11.3f}{rate[label]['session']:13,.0f}"
        )
    print()
    print(
        f"read back from the server: {', '.join(f'{t.num_rows:,}' for t in tables.values())} "
        "records (counts right; the SDK's records equal the engine's)"
    )
    print(f"building the SDK Messages (not timed above): {n_sdk / built[0]:,.0f} records/s")
    print(
        f"topic format: the SDK registers {sdk_format!r}; the engine's topics are 'ragged' "
        "(its 'default' refuses list columns)"
    )
    print()
    sdk_rate = rate["SDK push(Message)"]
    for side, target in (("engine push_row", ROW_TARGET), ("engine push(batch)", BATCH_TARGET)):
        for label in ("push", "session"):
            ratio = rate[side][label] / sdk_rate[label]
            verdict = "met" if ratio >= target else "NOT met"
            print(f"{side:20} / SDK, {label:8}{ratio:9.1f}x   target >= {target:.0f}x: {verdict}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
