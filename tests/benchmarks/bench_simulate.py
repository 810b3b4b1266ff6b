"""The failure-path simulator: runs per second on one core, and the time of full explorations.

1. Runs per second, one process: every single-fault run of the `writer-3-topics` family
   (a new sequence, three topics, two batches each: 11 user actions, 18 protocol calls),
   each run on a fresh in-memory server and judged by every invariant. Target: 2,000/s.
2. Where the time of those runs goes (cProfile, cumulative time of the entry points): the
   scenario's own code, the engine, the server model behind the in-memory transport, the
   invariants' reads, the trace checks.
   Then the server-trace check of the same runs' traces, CPU time, with the search that
   stops at an unbeatable explanation against the search of every move (the baseline).
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
import resource
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


def _run_all(jobs: list[tuple[str, tuple]]) -> tuple[float, float]:  # type: ignore[type-arg]
    """The wall time and the CPU time of this process to run every job."""
    spec = load_spec()
    machines, judge = Machines.from_spec(spec), Judge(spec)
    scenarios = {s.name: s for s in select([FAMILY])}
    start, cpu = time.perf_counter(), time.process_time()
    for name, plan in jobs:
        run_scenario(scenarios[name], plan, 0, memory_world, machines, judge)
    return time.perf_counter() - start, time.process_time() - cpu


def runs_per_second(rounds: int) -> float:
    jobs = _plans()
    _run_all(jobs[:20])  # warm up
    times = [_run_all(jobs) for _ in range(rounds)]
    wall, cpu = median([w for w, _ in times]), median([c for _, c in times])
    rate = len(jobs) / wall
    print(f"1. {len(jobs)} single-fault runs of {FAMILY} (11 user actions, 18 calls each)")
    print(f"   median of {rounds}: {wall:.2f} s -> {rate:,.0f} runs/s on one core")
    print(
        f"   CPU time of the process {cpu:.2f} s -> {len(jobs) / cpu:,.0f} runs per CPU second "
        "(what a core of its own would give)"
    )
    print(
        f"   target {TARGET:,.0f}/s: ratio {rate / TARGET:.2f}x (CPU time: {len(jobs) / cpu / TARGET:.2f}x)"
    )
    print()
    return rate


def early_stop(rounds: int) -> None:
    """The server-trace check of the same runs with the search stopping at an unbeatable
    explanation (the default) and searching every move (the baseline), CPU time."""
    import fsm.simulate.judge as judge_module
    from fsm.conformance import clients

    jobs = _plans()
    spec = load_spec()
    machines = Machines.from_spec(spec)
    scenarios = {s.name: s for s in select([FAMILY])}
    checks: list[tuple[object, dict]] = []  # type: ignore[type-arg]
    real = judge_module.check_client_trace

    def record(events, spec, **kwargs):  # type: ignore[no-untyped-def]
        checks.append((list(events), kwargs))
        return real(events, spec, **kwargs)

    judge_module.check_client_trace = record  # type: ignore[assignment]
    try:
        for name, plan in jobs:
            run_scenario(scenarios[name], plan, 0, memory_world, machines, Judge(spec))
    finally:
        judge_module.check_client_trace = real

    def timed(stop: bool) -> float:
        clients.STOP_AT_UNBEATABLE = stop
        cpu = time.process_time()
        for events, kwargs in checks:
            real(events, spec, **kwargs)  # type: ignore[arg-type]
        return time.process_time() - cpu

    try:
        pairs = [(timed(False), timed(True)) for _ in range(rounds)]
    finally:
        clients.STOP_AT_UNBEATABLE = True
    whole, stopped = median([a for a, _ in pairs]), median([b for _, b in pairs])
    print(
        f"   server-trace check of the {len(checks)} traces of these runs, CPU time, median of {rounds}:"
    )
    print(
        f"   every move searched {whole * 1e3 / len(checks):.2f} ms/trace, stopping at an "
        f"unbeatable explanation {stopped * 1e3 / len(checks):.2f} ms/trace ({stopped / whole:.2f}x)"
    )
    print()


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


def _cpu() -> float:
    """CPU time of this process and of its ended children (the workers)."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def exploration(faults: int, workers: int) -> float:
    start, cpu = time.perf_counter(), _cpu()
    result = explore(select(["all"]), memory_world, faults=faults, workers=workers)
    elapsed, cpu = time.perf_counter() - start, _cpu() - cpu
    print(
        f"   faults={faults} workers={workers}: {len(result.runs):,} runs in {elapsed:.1f} s "
        f"({len(result.runs) / elapsed:,.0f} runs/s; {cpu:.1f} CPU s), "
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
    print(
        "   (the machine may be shared: the CPU times say what the code costs, whatever the load)"
    )
    runs_per_second(args.rounds)
    profile()
    early_stop(args.rounds)
    print("3. full explorations of every scenario")
    for faults in (1,) if args.no_double else (1, 2):
        for workers in sorted({1, args.workers}):
            exploration(faults, workers)
    print(f"\nload average {os.getloadavg()}")


if __name__ == "__main__":
    main()
