"""The failure-path simulator: runs per second on one core, and the time of full explorations.

1. Runs per second, one process: every single-fault run of the `writer-3-topics` family
   (a new sequence, three topics, two batches each: 11 user actions, 18 protocol calls),
   each run on a fresh in-memory server and judged by every invariant. Target: 2,000/s.
2. Where the time of those runs goes (cProfile, cumulative time of the entry points): the
   scenario's own code, the engine, the server model behind the in-memory transport, the
   invariants' reads, the trace checks.
3. The full single-fault exploration of every scenario (the `simulate` command's default),
   and the double-fault one, with one worker and with one worker per CPU.

    python tests/benchmarks/bench_simulate.py [--rounds N] [--no-double] [--workers N]
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import os
import pstats
import time

from _common import header, median

from fsm.engine import Machines
from fsm.simulate import explore, faults_at, run_scenario, select
from fsm.simulate.judge import Judge
from fsm.spec import load_spec
from transport.conformance_runs import memory_world

TARGET = 2000.0
FAMILY = "writer-3-topics"

# Where a run's time goes: the cumulative time of these functions (file suffix, name), less
# that of the functions after the "-" (the part of it spent elsewhere).
Entry = tuple[str, str]
PARTS: list[tuple[str, list[Entry], list[Entry]]] = [
    (
        "world: a fresh server model and transports",
        [("transport/conformance_runs.py", "memory_world")],
        [],
    ),
    ("scenario body (engine + server + data)", [("scenarios.py", "_three_topics")], []),
    (
        "  server model + memory transport (actions, reads)",
        [("transport/memory.py", "_call")],
        [("view.py", n) for n in ("sequence", "records", "notified")],
    ),
    (
        "  server model + memory transport (DoPut)",
        [("transport/memory.py", n) for n in ("open_stream", "write", "close")],
        [],
    ),
    ("  engine: transitions commit (transitions lib)", [("fsm/machines.py", "commit")], []),
    ("  engine: a model per writer (transitions add_model)", [("fsm/machines.py", "new")], []),
    ("  engine: trace records", [("fsm/engine/trace.py", "record")], []),
    (
        "  scenario data (Arrow batches built by the scenario)",
        [("scenarios.py", "push")],
        [("fsm/engine/topic.py", "push")],
    ),
    (
        "invariants: reading the server back",
        [("invariants.py", n) for n in ("_finalized_kept", "_report_kept", "_delete_purged")],
        [],
    ),
    ("invariants: server description", [("invariants.py", "describe_server")], []),
    ("trace check: engine trace", [("judge.py", "engine_trace")], []),
    ("trace check: server trace (client conformance)", [("judge.py", "conformance")], []),
]


def _plans() -> list[tuple[str, tuple]]:  # type: ignore[type-arg]
    spec = load_spec()
    machines, judge = Machines.from_spec(spec), Judge(spec)
    jobs = []
    for scenario in select([FAMILY]):
        base = run_scenario(scenario, (), 0, memory_world, machines, judge)
        jobs += [(scenario.name, (f,)) for f in faults_at(spec, base.calls)]
    return jobs


def _run_all(jobs: list[tuple[str, tuple]]) -> float:  # type: ignore[type-arg]
    spec = load_spec()
    machines, judge = Machines.from_spec(spec), Judge(spec)
    scenarios = {s.name: s for s in select([FAMILY])}
    start = time.perf_counter()
    for name, plan in jobs:
        run_scenario(scenarios[name], plan, 0, memory_world, machines, judge)
    return time.perf_counter() - start


def runs_per_second(rounds: int) -> float:
    jobs = _plans()
    _run_all(jobs[:20])  # warm up
    times = [_run_all(jobs) for _ in range(rounds)]
    rate = len(jobs) / median(times)
    print(f"1. {len(jobs)} single-fault runs of {FAMILY} (11 user actions, 18 calls each)")
    print(f"   median of {rounds}: {median(times):.2f} s -> {rate:,.0f} runs/s on one core")
    print(f"   target {TARGET:,.0f}/s: ratio {rate / TARGET:.2f}x")
    print()
    return rate


def profile() -> None:
    jobs = _plans()
    profiler = cProfile.Profile()
    profiler.enable()
    _run_all(jobs)
    profiler.disable()
    stats = pstats.Stats(profiler)
    entries = stats.stats  # type: ignore[attr-defined]
    total = max(ct for (_, _, _, ct, _) in entries.values())
    print(f"2. where the time goes (cProfile, {total:.2f} s for {len(jobs)} runs, under profiling)")

    def cumulative(entries_wanted: list[Entry]) -> float:
        return sum(
            ct
            for (file, _, name), (_, _, _, ct, _) in entries.items()
            if any(file.endswith(suffix) and name == fn for suffix, fn in entries_wanted)
        )

    for label, plus, minus in PARTS:
        cum = cumulative(plus) - cumulative(minus)
        print(f"   {cum / total:6.1%}  {cum / len(jobs) * 1e3:6.2f} ms/run  {label}")
    print()


def exploration(faults: int, workers: int) -> float:
    start = time.perf_counter()
    result = explore(select(["all"]), memory_world, faults=faults, workers=workers)
    elapsed = time.perf_counter() - start
    print(
        f"   faults={faults} workers={workers}: {len(result.runs):,} runs in {elapsed:.1f} s "
        f"({len(result.runs) / elapsed:,.0f} runs/s), "
        f"{result.violations} with violations, "
        f"{sum(1 for r in result.runs if r.unknown and not r.violations)} unknown"
    )
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-double", action="store_true", help="skip the double faults")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    logging.getLogger("mosaico_fsm.engine").setLevel(logging.ERROR)
    header("Failure-path simulator", [f"load average {os.getloadavg()}"])
    runs_per_second(args.rounds)
    profile()
    print("3. full explorations of every scenario")
    for faults in (1,) if args.no_double else (1, 2):
        for workers in sorted({1, args.workers}):
            exploration(faults, workers)
    print(f"\nload average {os.getloadavg()}")


if __name__ == "__main__":
    main()
