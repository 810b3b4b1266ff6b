"""The reference server itself: DoPut ingest speed, and memory over rejected requests.

1. Ingest: one 160 MB IMU stream (int64 timestamp + 9 float64, in 10 MiB batches) sent with
   pyarrow.flight to `mosaico-fsm serve` (every batch decoded, fully validated and stored) and,
   in the same run, to a bare pyarrow `FlightServerBase` that validates each batch in full and
   discards it; both servers in their own processes, interleaved rounds, medians. Target:
   the reference server at >= 0.5x of the bare one. A third server, the same bare one keeping
   every batch in memory as the reference server does, shows what keeping costs here. For
   each server, the page faults and the CPU time (user, system) its process spends per DoPut
   (Linux /proc).

   Every round starts from the same memory: the reference server deletes the round's
   sequence after it, the keeping server drops the previous round's batches, so from the
   second round on both store into memory the previous round freed, as a server does whose
   topics come and go. On a virtual machine, memory the guest has not used before costs
   several times more to fault in than memory it used and freed (measured here: a server
   keeping every round fell from about 900 to about 250 MB/s once the servers held some 2 GB),
   so servers that kept every round would measure how much memory the machine had touched,
   not the server. The first round, into memory nothing freed before, is printed apart.
2. Rejected requests: the server's RSS after a warm-up, then after N/2 and N more rejected
   requests of every kind (bad JSON, unknown action, not found, already exists, failed
   precondition, a bad key, no key, a bad ticket, a forged DoPut batch of 1,000 and of
   1,000,000 rows, 100,000 nested brackets, an oversized name), sent with a raw grpcio
   client. Flat means no growth beyond allocator noise.

    python tests/benchmarks/bench_server.py [--mb 160] [--rounds 3] [--requests 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pyarrow as pa
from _common import MB, ROOT, MiB, ServerProcess, header, imu_batch, median, rss_of
from pyarrow import flight

from transport.flight import frames
from transport.flight.protocol import flight_pb2 as pb

_BARE = """
import sys
import pyarrow as pa
from pyarrow import flight

class Bare(flight.FlightServerBase):
    kept = []

    def do_put(self, context, descriptor, reader, writer):
        self.kept.clear()  # each round starts from the same memory
        for chunk in reader:
            chunk.data.validate(full=True)
            if sys.argv[1] == "keep":
                self.kept.append(chunk.data)

server = Bare("grpc://127.0.0.1:0")
print(f"grpc://127.0.0.1:{server.port}", flush=True)
sys.stdin.read()
server.shutdown()
"""


class BareServer:
    """A pyarrow FlightServerBase that validates every batch in full and discards it (or,
    with `keep`, keeps it in memory as the reference server does)."""

    def __init__(self, keep: bool = False) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BARE, "keep" if keep else "discard"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.location = self.proc.stdout.readline().strip()

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _usage(pid: int) -> tuple[int, float, float]:
    """A process's minor page faults, user and system CPU seconds so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[7]), int(fields[11]) / tick, int(fields[12]) / tick


def _batches(total_mb: int) -> list[pa.RecordBatch]:
    rows = (10 * MiB) // 80
    out, start = [], 0
    while sum(b.nbytes for b in out) < total_mb * MB:
        out.append(imu_batch(rows, start))
        start += rows
    return out


def _put(
    location: str, descriptor: flight.FlightDescriptor, batches: list[pa.RecordBatch]
) -> float:
    client = flight.FlightClient(location)
    try:
        started = time.perf_counter()
        writer, _ = client.do_put(descriptor, batches[0].schema)
        for b in batches:
            writer.write_batch(b)
        writer.close()
        return time.perf_counter() - started
    finally:
        client.close()


def _act(location: str, action: str, body: dict[str, object], token: str | None = None) -> object:
    """One action's response, with an API key when `token` is given."""
    headers = [] if token is None else [(b"mosaico-api-key-token", token.encode())]
    client = flight.FlightClient(location)
    try:
        action_ = flight.Action(action, json.dumps(body).encode())
        result = list(client.do_action(action_, flight.FlightCallOptions(headers=headers)))
        return json.loads(result[0].body.to_pybytes())["response"] if result else None
    finally:
        client.close()


def _open_topic(location: str, name: str, token: str | None = None) -> tuple[str, str]:
    """A new sequence `name` with an open session and the topic `name/imu`: the session's and
    the topic's UUIDs."""
    _act(location, "sequence_create", {"locator": name, "user_metadata": {}}, token)
    session = _act(location, "session_create", {"locator": name}, token)["uuid"]  # type: ignore[index]
    topic = _act(
        location,
        "topic_create",
        {
            "session_uuid": session,
            "locator": f"{name}/imu",
            "serialization_format": "default",
            "ontology_tag": "imu",
            "user_metadata": {},
        },
        token,
    )["uuid"]  # type: ignore[index]
    return session, topic


def _reference_descriptor(location: str, name: str) -> flight.FlightDescriptor:
    _, topic = _open_topic(location, name)
    command = json.dumps({"resource_locator": f"{name}/imu", "topic_uuid": topic})
    return flight.FlightDescriptor.for_command(command.encode())


def ingest(total_mb: int, rounds: int) -> None:
    batches = _batches(total_mb)
    size = sum(b.nbytes for b in batches)
    bare, keeping, reference = BareServer(), BareServer(keep=True), ServerProcess()
    times: dict[str, list[float]] = {"bare": [], "keeping": [], "reference": []}
    usage: dict[str, list[tuple[int, float, float]]] = {name: [] for name in times}
    pids = {"bare": bare.proc.pid, "keeping": keeping.proc.pid, "reference": reference.pid}

    def timed(name: str, location: str, descriptor: flight.FlightDescriptor) -> None:
        before = _usage(pids[name])
        times[name].append(_put(location, descriptor, batches))
        after = _usage(pids[name])
        usage[name].append(tuple(a - b for a, b in zip(after, before, strict=True)))  # type: ignore[arg-type]

    try:
        for r in range(rounds):
            for name, server in (("bare", bare), ("keeping", keeping)):
                timed(name, server.location, flight.FlightDescriptor.for_command(b"x"))
            descriptor = _reference_descriptor(reference.location, f"ingest{r}")
            timed("reference", reference.location, descriptor)
            # Each round starts from the same memory: the round's data is deleted.
            _act(reference.location, "sequence_delete", {"locator": f"ingest{r}"})
    finally:
        bare.stop()
        keeping.stop()
        reference.stop()
    bare_rate = size / MB / median(times["bare"])
    keep_rate = size / MB / median(times["keeping"])
    ref_rate = size / MB / median(times["reference"])
    print(f"Ingest: one DoPut of {size / MB:.0f} MB ({len(batches)} batches), median of {rounds}")
    print(f"  bare pyarrow FlightServerBase (validate, discard)  {bare_rate:8.0f} MB/s")
    print(f"  bare pyarrow FlightServerBase (validate, keep)    {keep_rate:8.0f} MB/s")
    print(f"  reference server (decode, validate, store)        {ref_rate:8.0f} MB/s")
    print(
        f"  reference / bare (discarding)                     {ref_rate / bare_rate:8.2f}x  (target >= 0.5x)"
    )
    print(f"  reference / bare (keeping)                        {ref_rate / keep_rate:8.2f}x")
    first = {name: size / MB / t[0] for name, t in times.items()}
    print(
        f"  first round only (no memory freed before): bare {first['bare']:.0f}, keeping "
        f"{first['keeping']:.0f}, reference {first['reference']:.0f} MB/s "
        f"({first['reference'] / first['bare']:.2f}x)"
    )
    print("  per DoPut, medians: page faults, user and system CPU seconds of the server process")
    for name, label in (
        ("bare", "bare (discard)"),
        ("keeping", "bare (keep)"),
        ("reference", "reference"),
    ):
        faults = median(u[0] for u in usage[name])
        user = median(u[1] for u in usage[name])
        system = median(u[2] for u in usage[name])
        print(f"    {label:16} {faults:9.0f} faults  user {user:5.2f} s  system {system:5.2f} s")
    print()


def _rejections(location: str, token: str) -> dict[str, Callable[[grpc.Channel], grpc.StatusCode]]:
    good = (("mosaico-api-key-token", token),)
    bad = (("mosaico-api-key-token", "msco_" + "a1" * 16 + "_00000000"),)
    schema = pa.schema([("timestamp_ns", pa.int64()), ("x", pa.float64())])
    forged_schema = pa.schema([("timestamp_ns", pa.int8()), ("x", pa.int8())])
    forged, large_forged = (
        frames.batch_frame(
            pa.record_batch([pa.array([1] * rows, pa.int8())] * 2, schema=forged_schema)
        )
        for rows in (1000, 1_000_000)
    )
    session, topic = _open_topic(location, "kept", token)
    command = json.dumps({"resource_locator": "kept/imu", "topic_uuid": topic}).encode()
    put_header = pb.FlightData(
        flight_descriptor=pb.FlightDescriptor(type=pb.FlightDescriptor.CMD, cmd=command)
    ).SerializeToString() + frames.schema_frame(schema)

    def action(
        name: str, body: bytes, metadata: tuple[tuple[str, str], ...] = good
    ) -> Callable[[grpc.Channel], grpc.StatusCode]:
        request = pb.Action(type=name, body=body).SerializeToString()

        def call(channel: grpc.Channel) -> grpc.StatusCode:
            try:
                list(
                    channel.unary_stream("/arrow.flight.protocol.FlightService/DoAction")(
                        request, metadata=metadata, timeout=10
                    )
                )
            except grpc.RpcError as exc:
                return exc.code()  # type: ignore[attr-defined, no-any-return]
            return grpc.StatusCode.OK

        return call

    def do_get(channel: grpc.Channel) -> grpc.StatusCode:
        try:
            list(
                channel.unary_stream("/arrow.flight.protocol.FlightService/DoGet")(
                    pb.Ticket(ticket=b"[" * 5000).SerializeToString(), metadata=good, timeout=10
                )
            )
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[attr-defined, no-any-return]
        return grpc.StatusCode.OK

    def do_put(batch: bytes) -> Callable[[grpc.Channel], grpc.StatusCode]:
        def call(channel: grpc.Channel) -> grpc.StatusCode:
            try:
                list(
                    channel.stream_stream("/arrow.flight.protocol.FlightService/DoPut")(
                        iter([put_header, batch]), metadata=good, timeout=10
                    )
                )
            except grpc.RpcError as exc:
                return exc.code()  # type: ignore[attr-defined, no-any-return]
            return grpc.StatusCode.OK

        return call

    finalize = json.dumps({"session_uuid": session}).encode()
    return {
        "bad JSON": action("sequence_create", b"{not json"),
        "unknown action": action("no_such_action", b"{}"),
        "not found": action("session_create", b'{"locator": "missing"}'),
        "already exists": action("sequence_create", b'{"locator": "kept", "user_metadata": {}}'),
        "failed precondition": action("session_finalize", finalize),
        "bad key": action("version", b"{}", bad),
        "no key": action("version", b"{}", ()),
        "bad ticket": do_get,
        "forged DoPut batch": do_put(forged),
        "forged, 1,000,000 rows": do_put(large_forged),
        "100,000 nested [": action("sequence_create", b"[" * 100_000),
        "oversized name": action(
            "sequence_create", json.dumps({"locator": "n" * 10 * MB, "user_metadata": {}}).encode()
        ),
    }


def _readings(
    channel: grpc.Channel,
    call: Callable[[grpc.Channel], grpc.StatusCode],
    counts: list[int],
    pid: int,
) -> tuple[list[float], grpc.StatusCode]:
    """Send `count` requests for each of `counts`, reading the server's RSS (MB) after each
    run; the readings and the answer to the last request."""
    readings, code = [], grpc.StatusCode.UNKNOWN
    for count in counts:
        for _ in range(count):
            code = call(channel)
        readings.append(rss_of(pid) / MiB)
    return readings, code


def rejected(requests: int, every: int | None = None, only: str | None = None) -> None:
    """RSS over rejected requests, per kind: after a warm-up, then after N/2 and N more (or,
    with `every`, every that many of N requests: a growth or a fluctuation)."""
    server = ServerProcess("--api-key-auth")
    try:
        assert server.proc.stdout is not None
        token = server.proc.stdout.readline().split(":", 1)[1].strip()
        kinds = _rejections(server.location, token)
        if only is not None:
            if only not in kinds:
                raise SystemExit(f"--kind: one of {', '.join(map(repr, kinds))}")
            kinds = {only: kinds[only]}
        if every is None:
            counts = [max(1, requests // 10), requests // 2, requests - requests // 2]
            print(
                f"Rejected requests: server RSS (MB) after a warm-up of {counts[0]}, then after "
                f"{counts[1]} and {requests} more, per kind; growth over the last {counts[2]}"
            )
            print(
                f"  {'kind':<22} {'answer':<20} {'warm':>7} {'half':>7} {'after':>7} {'growth':>9}"
            )
        else:
            counts = [every] * max(1, requests // every)
            print(
                f"Rejected requests: server RSS (MB) every {every} of {requests} requests, per kind"
            )
        host = server.location.removeprefix("grpc://")
        with grpc.insecure_channel(
            host, options=[("grpc.max_send_message_length", 64 * MB)]
        ) as channel:
            for name, call in kinds.items():
                readings, code = _readings(channel, call, counts, server.pid)
                if every is not None:
                    print(f"  {name}: {' '.join(f'{r:.1f}' for r in readings)}")
                    print(f"    min {min(readings):.1f}, max {max(readings):.1f}")
                    continue
                warm, half, after = readings
                growth = (after - half) * MiB / max(1, counts[2])
                print(
                    f"  {name:<22} {code.name:<20} {warm:7.1f} {half:7.1f} {after:7.1f} "
                    f"{growth:7.0f} B/request"
                )
    finally:
        server.stop()
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=160)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument(
        "--every",
        type=int,
        help="rejected requests only: read the RSS every N requests instead (no ingest)",
    )
    parser.add_argument("--kind", help="rejected requests of this kind only")
    args = parser.parse_args()
    header("bench_server", [f"load average before: {os.getloadavg()[0]:.2f}", f"root {ROOT}"])
    if args.every is None:
        ingest(args.mb, args.rounds)
    rejected(args.requests, args.every, args.kind)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
