"""Exhaustive exploration: every scenario under every single (and double) fault.

Runs are pure functions of (scenario, plan, seed), so they can be spread over worker
processes; results come back in the order the plans were enumerated, whatever the number
of workers, and the same seed always gives the same results.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import attrs

from fsm.engine import Machines
from fsm.faults import Fault
from fsm.simulate.judge import Judge
from fsm.simulate.plans import Plan, canonical, faults_at
from fsm.simulate.run import RunResult, run_scenario
from fsm.simulate.scenarios import SCENARIOS, Scenario
from fsm.simulate.world import WorldFactory
from fsm.spec import load_spec

__all__ = ["Exploration", "explore", "replay"]

CHUNK = 200
"""Runs per task handed to a worker."""

Task = tuple[WorldFactory, int, tuple[tuple[str, Plan], ...]]


@attrs.frozen
class Exploration:
    """Every run of an exploration, in enumeration order."""

    seed: int
    faults: int
    scenarios: tuple[str, ...]
    runs: tuple[RunResult, ...]
    replay: bool = False

    @property
    def violations(self) -> int:
        """Runs with at least one violated invariant."""
        return sum(1 for r in self.runs if r.violations)

    @property
    def unknown(self) -> int:
        """Runs with an unknown verdict and no violation."""
        return sum(1 for r in self.runs if r.unknown and not r.violations)


@contextmanager
def _quiet_engine() -> Iterator[None]:
    """The engine logs every failure it keeps while going on: thousands of expected ones
    here, which the report describes instead."""
    logger = logging.getLogger("mosaico_fsm.engine")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _run_chunk(task: Task) -> list[RunResult]:
    make_world, seed, jobs = task
    spec = load_spec()
    machines = Machines.from_spec(spec)
    judge = Judge(spec)
    with _quiet_engine():
        return [
            run_scenario(SCENARIOS[name], plan, seed, make_world, machines, judge)
            for name, plan in jobs
        ]


class _Runner:
    """Runs batches of (scenario, plan) jobs, in this process or in a pool of workers."""

    def __init__(self, make_world: WorldFactory, seed: int, workers: int) -> None:
        self.make_world = make_world
        self.seed = seed
        self.workers = workers

    def run(self, jobs: Sequence[tuple[str, Plan]]) -> list[RunResult]:
        tasks: list[Task] = [
            (self.make_world, self.seed, tuple(jobs[i : i + CHUNK]))
            for i in range(0, len(jobs), CHUNK)
        ]
        if self.workers <= 1 or len(tasks) <= 1:
            chunks = [_run_chunk(t) for t in tasks]
        else:
            with multiprocessing.Pool(min(self.workers, len(tasks))) as pool:
                chunks = pool.map(_run_chunk, tasks, chunksize=1)
        return [r for chunk in chunks for r in chunk]


def _after_first_fault(result: RunResult) -> list[tuple[str, int]]:
    """The calls a run made after its first fault fired."""
    if not result.fired:
        return []
    first = result.fired[0]
    index = result.calls.index((first.operation, first.nth))
    return list(result.calls[index + 1 :])


def _unique(plans: Iterable[Plan]) -> list[Plan]:
    seen: set[Plan] = set()
    out: list[Plan] = []
    for plan in plans:
        key = canonical(plan)
        if key not in seen:
            seen.add(key)
            out.append(plan)
    return out


def explore(
    scenarios: Sequence[Scenario],
    make_world: WorldFactory,
    *,
    faults: int = 1,
    seed: int = 0,
    workers: int = 1,
) -> Exploration:
    """Run each scenario without faults, then under every single fault at every call it
    made, then (faults=2) under every second fault at every call after the first."""
    if faults not in (0, 1, 2):
        raise ValueError(f"faults must be 0, 1 or 2, got {faults}")
    spec = load_spec()
    runner = _Runner(make_world, seed, workers)
    names = [s.name for s in scenarios]
    runs = runner.run([(name, ()) for name in names])
    baseline = dict(zip(names, runs, strict=True))
    if faults >= 1:
        singles = runner.run(
            [(name, (fault,)) for name in names for fault in faults_at(spec, baseline[name].calls)]
        )
        runs += singles
    if faults >= 2:
        jobs: list[tuple[str, Plan]] = []
        for name in names:
            plans = (
                (single.faults[0], second)
                for single in singles
                if single.scenario == name
                for second in faults_at(spec, _after_first_fault(single))
            )
            jobs.extend((name, plan) for plan in _unique(plans))
        runs += runner.run(jobs)
    return Exploration(seed, faults, tuple(names), tuple(runs))


def replay(
    scenarios: Sequence[Scenario],
    plan: Sequence[Fault],
    make_world: WorldFactory,
    *,
    seed: int = 0,
) -> Exploration:
    """Run each scenario once under exactly `plan` (ValueError for an operation that is not
    in the catalogue)."""
    unknown = sorted({f.operation for f in plan} - set(load_spec().operations))
    if unknown:
        raise ValueError(f"no such operation in the catalogue: {', '.join(unknown)}")
    runner = _Runner(make_world, seed, 1)
    runs = runner.run([(s.name, tuple(plan)) for s in scenarios])
    return Exploration(seed, len(plan), tuple(s.name for s in scenarios), tuple(runs), True)
