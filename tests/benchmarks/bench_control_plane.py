"""Control plane of a 10-topic session: calls, connections and time against the protocol's minimum.

A writer session with 10 topics and a few rows per topic, left cleanly. The protocol needs at
least sequence_create, session_create, 10 x topic_create, 10 DoPut streams and session_finalize
(13 actions + 10 DoPut) over one gRPC channel.

1. Counts: a reference server in this process records every RPC it receives (with the action
   type and the peer address, one address per TCP connection); pyarrow.flight.FlightClient is
   wrapped to count the clients the engine builds.
2. Time: the median session time against a reference server in its own process, compared with
   the sum of its round trips: the median round trip of an empty `version` action times the
   number of round trips the session cannot avoid in sequence. The same session written by hand
   with pyarrow.flight is timed too, doing the same work inside its timer: it builds each
   topic's row dicts and converts them (`RecordBatch.from_pylist`) as the engine does. A third
   session, the engine given each topic's rows converted by hand into one batch (`push`),
   shows what the row API's conversion adds to the rest.

    python tests/benchmarks/bench_control_plane.py [--sessions N]
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pyarrow as pa
from _common import IMU_SCHEMA, ServerProcess, header, imu_row, median
from pyarrow import flight

from fsm.engine import Client
from transport.flight.client import FlightTransport
from transport.flight.protocol import flight_pb2 as pb
from transport.flight.server import ReferenceServer, start_server
from transport.server.model import ServerModel

TOPICS = 10
ROWS_PER_TOPIC = 5
MIN_ACTIONS = 3 + TOPICS  # sequence_create, session_create, finalize, topic_create each
MIN_DOPUT = TOPICS
MIN_CHANNELS = 1
# Round trips that must follow one another: sequence_create, session_create, one topic_create
# per topic (each needs the previous reply's session uuid and is a separate user call), the
# closing of the streams (one round trip when they close in parallel), session_finalize.
# Opening a DoPut and writing to it do not wait for the server.
MIN_ROUND_TRIPS = 2 + TOPICS + 1 + 1

_names = itertools.count()


class RecordingServer(ReferenceServer):
    """A reference server that records each RPC: (rpc, detail, peer)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[str, str, str]] = []
        self._calls_lock = threading.Lock()

    def _note(self, context: grpc.ServicerContext, rpc: str, detail: str = "") -> None:
        with self._calls_lock:
            self.calls.append((rpc, detail, context.peer()))

    def do_action(self, raw: bytes, context: grpc.ServicerContext) -> Any:
        self._note(context, "DoAction", pb.Action.FromString(raw).type)
        return super().do_action(raw, context)

    def do_put(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Any:
        self._note(context, "DoPut")
        return super().do_put(requests, context)

    def get_flight_info(self, raw: bytes, context: grpc.ServicerContext) -> Any:
        self._note(context, "GetFlightInfo")
        return super().get_flight_info(raw, context)

    def list_flights(self, raw: bytes, context: grpc.ServicerContext) -> Any:
        self._note(context, "ListFlights")
        return super().list_flights(raw, context)

    def do_get(self, raw: bytes, context: grpc.ServicerContext) -> Any:
        self._note(context, "DoGet")
        return super().do_get(raw, context)


class CountingFlightClient(flight.FlightClient):  # type: ignore[misc]
    """A FlightClient that counts how many are built."""

    created = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        type(self).created += 1
        super().__init__(*args, **kwargs)


PHASES = {
    # phase: the round trips it needs in sequence
    "enter (sequence + session)": 2,
    f"{TOPICS} topics (create, open, rows)": TOPICS,
    "exit (close streams, finalize)": 2,
}


def engine_session(client: Client) -> list[float]:
    """Seconds spent entering, creating and filling the topics, and leaving."""
    marks = [time.perf_counter()]
    with client.sequence_create(f"cp_engine_{next(_names)}", {"bench": "control"}) as seq:
        marks.append(time.perf_counter())
        for t in range(TOPICS):
            topic = seq.topic_create(f"topic_{t}", schema=IMU_SCHEMA, ontology_tag="imu")
            for i in range(ROWS_PER_TOPIC):
                topic.push_row(imu_row(i))
        marks.append(time.perf_counter())
    marks.append(time.perf_counter())
    return [b - a for a, b in itertools.pairwise(marks)]


def engine_batch_session(client: Client) -> list[float]:
    """The engine session with each topic's rows converted by hand and sent with `push`."""
    marks = [time.perf_counter()]
    with client.sequence_create(f"cp_batch_{next(_names)}", {"bench": "control"}) as seq:
        marks.append(time.perf_counter())
        for t in range(TOPICS):
            topic = seq.topic_create(f"topic_{t}", schema=IMU_SCHEMA, ontology_tag="imu")
            rows = [imu_row(i) for i in range(ROWS_PER_TOPIC)]
            topic.push(pa.RecordBatch.from_pylist(rows, schema=IMU_SCHEMA))
        marks.append(time.perf_counter())
    marks.append(time.perf_counter())
    return [b - a for a, b in itertools.pairwise(marks)]


def raw_session(raw: flight.FlightClient) -> list[float]:
    """The same session by hand: every stream opened in turn and its rows converted and
    written, then every stream closed in turn."""
    marks = [time.perf_counter()]

    def action(name: str, body: dict[str, Any]) -> Any:
        results = list(raw.do_action(flight.Action(name, json.dumps(body).encode())))
        return json.loads(b"".join(r.body.to_pybytes() for r in results))["response"]

    sequence = f"cp_raw_{next(_names)}"
    action("sequence_create", {"locator": sequence, "user_metadata": {"bench": "control"}})
    session = action("session_create", {"locator": sequence})["uuid"]
    marks.append(time.perf_counter())
    writers = []
    for t in range(TOPICS):
        locator = f"{sequence}/topic_{t}"
        topic_uuid = action(
            "topic_create",
            {
                "session_uuid": session,
                "locator": locator,
                "serialization_format": "default",
                "ontology_tag": "imu",
                "user_metadata": {},
            },
        )["uuid"]
        command = json.dumps({"resource_locator": locator, "topic_uuid": topic_uuid})
        writer, _ = raw.do_put(flight.FlightDescriptor.for_command(command), IMU_SCHEMA)
        rows = [imu_row(i) for i in range(ROWS_PER_TOPIC)]
        writer.write_batch(pa.RecordBatch.from_pylist(rows, schema=IMU_SCHEMA))
        writers.append(writer)
    marks.append(time.perf_counter())
    for writer in writers:
        writer.done_writing()
        writer.close()
    action("session_finalize", {"session_uuid": session})
    marks.append(time.perf_counter())
    return [b - a for a, b in itertools.pairwise(marks)]


def count_calls() -> tuple[list[tuple[str, str, str]], int]:
    """Run one engine session against a recording server; its calls and FlightClients built."""
    server = RecordingServer(ServerModel())
    running = start_server(service=server)
    real = flight.FlightClient
    flight.FlightClient = CountingFlightClient
    try:
        client = Client(FlightTransport(running.location))
        engine_session(client)
        client.close()
    finally:
        flight.FlightClient = real
        running.stop()
    return server.calls, CountingFlightClient.created


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=30)
    parser.add_argument("--pings", type=int, default=300)
    args = parser.parse_args()
    header(
        f"Control plane: one writer session with {TOPICS} topics, {ROWS_PER_TOPIC} rows each",
        [
            f"Protocol minimum: {MIN_ACTIONS} actions + {MIN_DOPUT} DoPut over {MIN_CHANNELS} "
            f"gRPC channel; {MIN_ROUND_TRIPS} sequential round trips.",
            f"load average before: {os.getloadavg()[0]:.2f}",
        ],
    )

    # 1. Counts
    calls, clients = count_calls()
    actions = [detail for rpc, detail, _ in calls if rpc == "DoAction"]
    by_rpc = collections.Counter(rpc for rpc, _, _ in calls)
    by_action = collections.Counter(actions)
    peers = {peer for _, _, peer in calls}
    print("Counts (one session, recorded by the server)")
    print(
        f"  actions:      {len(actions):3}   minimum {MIN_ACTIONS}   ratio {len(actions) / MIN_ACTIONS:.2f}x"
    )
    for name, n in sorted(by_action.items()):
        print(f"    {name:20} {n}")
    print(f"  DoPut:        {by_rpc['DoPut']:3}   minimum {MIN_DOPUT}")
    others = {k: v for k, v in by_rpc.items() if k not in ("DoAction", "DoPut")}
    print(f"  other RPCs:   {sum(others.values()):3}   {dict(others) if others else '(none)'}")
    print(f"  connections:  {len(peers):3}   minimum {MIN_CHANNELS}   (distinct client peers)")
    print(f"  FlightClients built by the engine: {clients}")
    print()

    # 2. Time, against a server in its own process
    with ServerProcess() as server:
        client = Client(FlightTransport(server.location))
        raw = flight.FlightClient(server.location)
        ping = flight.Action("version", b"{}")
        for _ in range(20):  # warm up
            list(raw.do_action(ping))
        engine_session(client)
        engine_batch_session(client)
        raw_session(raw)

        rtts = []
        for _ in range(args.pings):
            start = time.perf_counter()
            list(raw.do_action(ping))
            rtts.append(time.perf_counter() - start)
        engine_version = []
        for _ in range(args.pings):
            start = time.perf_counter()
            client.version()
            engine_version.append(time.perf_counter() - start)
        engine_phases, batch_phases, raw_phases = [], [], []
        for _ in range(args.sessions):
            engine_phases.append(engine_session(client))
            batch_phases.append(engine_batch_session(client))
            raw_phases.append(raw_session(raw))
        client.close()
        raw.close()

    rtt = median(rtts)
    floor = MIN_ROUND_TRIPS * rtt
    eng = median(sum(p) for p in engine_phases)
    raw_t = median(sum(p) for p in raw_phases)
    batch_t = median(sum(p) for p in batch_phases)
    print(f"Time (median of {args.sessions} sessions; server in its own process)")
    lines = [
        ("round trip of an empty `version` action, raw pyarrow", f"{rtt * 1e3:7.3f} ms", ""),
        ("the same through Client.version()", f"{median(engine_version) * 1e3:7.3f} ms", ""),
        (f"sum of round trips: {MIN_ROUND_TRIPS} x RTT", f"{floor * 1e3:7.2f} ms", ""),
        ("engine session (push_row)", f"{eng * 1e3:7.2f} ms", f"{eng / floor:.2f}x the sum"),
        (
            "engine session (rows converted by hand, push)",
            f"{batch_t * 1e3:7.2f} ms",
            f"{batch_t / floor:.2f}x the sum",
        ),
        (
            "raw pyarrow session (streams closed one by one)",
            f"{raw_t * 1e3:7.2f} ms",
            f"{raw_t / floor:.2f}x the sum",
        ),
        ("engine / raw session time", f"{eng / raw_t:7.2f}x", "(target <= 1.15x)"),
        ("engine with push / raw session time", f"{batch_t / raw_t:7.2f}x", ""),
    ]
    for label, value, note in lines:
        print(f"  {label:54}{value:>11}   {note}".rstrip())
    print()
    print(
        f"  {'phase (median ms)':36}{'round trips':>12}{'x RTT':>8}{'engine':>9}{'push':>9}"
        f"{'raw':>9}"
    )
    for i, (phase, trips) in enumerate(PHASES.items()):
        e = median(p[i] for p in engine_phases) * 1e3
        b = median(p[i] for p in batch_phases) * 1e3
        r = median(p[i] for p in raw_phases) * 1e3
        print(f"  {phase:36}{trips:12}{trips * rtt * 1e3:8.2f}{e:9.2f}{b:9.2f}{r:9.2f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
