"""Exhaustive exploration: every scenario under every single (and double) fault.

Runs are pure functions of (scenario, plan, seed), so they can be spread over worker
processes; results come back in the order the plans were enumerated, whatever the number
of workers, and the same seed always gives the same results.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

import attrs

from fsm.engine import Machines
from fsm.errors import ArgumentError
from fsm.faults import Fault
from fsm.simulate.judge import Judge
from fsm.simulate.plans import Plan, canonical, faults_at
from fsm.simulate.run import RunResult, run_scenario
from fsm.simulate.scenarios import SCENARIOS, Scenario
from fsm.simulate.world import WorldFactory
from fsm.spec.lines import DEFAULT_LINE, Line, load_line
from fsm.spec.model import Spec
from fsm.workers import worker_pool

__all__ = ["Exploration", "explore", "replay"]

MAX_FAULTS = 3
"""The most faults per run an exploration tries."""

CHUNK = 200
"""Runs per task handed to a worker."""

Task = tuple[WorldFactory, int, tuple[tuple[str, Plan], ...], str]
"""A chunk of runs for a worker: the world factory, the seed, the jobs, the protocol line."""


@attrs.frozen
class Exploration:
    """Every run of an exploration, in enumeration order."""

    seed: int
    faults: int
    scenarios: tuple[str, ...]
    runs: tuple[RunResult, ...]
    replay: bool = False
    interrupted: bool = False
    """Stopped by Ctrl-C: `runs` holds the runs that ended before."""
    protocol: str = DEFAULT_LINE
    """The protocol line the client and the server spoke."""

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


Progress = Callable[[int, int], None]
"""Hears (runs done, runs known so far) as an exploration moves on."""


_TOOLS: list[tuple[Spec, Machines, Judge]] = []


def _tools(line: Line) -> tuple[Machines, Judge]:
    """The machines and the judge of a line's tables, built once per exploration: a worker
    keeps them from one chunk of runs to the next, and with them the judge's memory of the
    traces it accepted (`_fresh_tools` forgets them when an exploration starts)."""
    spec = line.spec
    if not _TOOLS or _TOOLS[0][0] is not spec:
        _TOOLS[:] = [(spec, Machines.from_spec(spec), Judge(spec))]
    _, machines, judge = _TOOLS[0]
    return machines, judge


def _fresh_tools() -> None:
    _TOOLS.clear()


def _run_chunk(task: Task) -> list[RunResult]:
    make_world, seed, jobs, protocol = task
    line = load_line(protocol)
    machines, judge = _tools(line)
    with _quiet_engine():
        return [
            run_scenario(SCENARIOS[name], plan, seed, make_world, machines, judge, line)
            for name, plan in jobs
        ]


class _Runner:
    """Runs batches of (scenario, plan) jobs, in this process or in a pool of workers, and
    keeps every result that ended, even when Ctrl-C stops it (KeyboardInterrupt goes on)."""

    def __init__(
        self,
        make_world: WorldFactory,
        seed: int,
        workers: int,
        progress: Progress | None,
        line: Line,
    ) -> None:
        self.line = line
        self.make_world = make_world
        self.seed = seed
        self.workers = workers
        self.progress = progress
        self.done: list[RunResult] = []
        self.known = 0

    def _kept(self, results: Sequence[RunResult]) -> None:
        self.done.extend(results)
        if self.progress is not None:
            self.progress(len(self.done), self.known)

    def run(self, jobs: Sequence[tuple[str, Plan]]) -> list[RunResult]:
        self.known += len(jobs)
        if self.progress is not None:
            self.progress(len(self.done), self.known)
        tasks: list[Task] = [
            (self.make_world, self.seed, tuple(jobs[i : i + CHUNK]), self.line.name)
            for i in range(0, len(jobs), CHUNK)
        ]
        start = len(self.done)
        if self.workers <= 1 or len(tasks) <= 1:
            machines, judge = _tools(self.line)
            world = self.make_world
            with _quiet_engine():
                for name, plan in jobs:  # kept one by one: an interruption keeps what ended
                    scenario = SCENARIOS[name]
                    self._kept(
                        [run_scenario(scenario, plan, self.seed, world, machines, judge, self.line)]
                    )
            return self.done[start:]
        with worker_pool(min(self.workers, len(tasks))) as pool:
            assert pool is not None  # more than one worker and more than one task
            for chunk in pool.imap(_run_chunk, tasks, chunksize=1):
                self._kept(chunk)
        return self.done[start:]


def _after_last_fault(result: RunResult) -> list[tuple[str, int]]:
    """The calls a run made after the last of its faults fired."""
    if not result.fired:
        return []
    last = result.fired[-1]
    index = result.calls.index((last.operation, last.nth))
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
    progress: Progress | None = None,
    protocol: str = DEFAULT_LINE,
) -> Exploration:
    """Run each scenario without faults, then under every single fault at every call it
    made, then (faults=2, 3) under every further fault at every call after the last one.
    `progress` hears how many runs ended of how many are known so far. `protocol` names
    the line the engine speaks and its tables judge (`make_world` must build a server of that
    line). Ctrl-C (KeyboardInterrupt) stops the exploration: it returns the runs that ended,
    marked `interrupted`."""
    if faults not in range(MAX_FAULTS + 1):
        raise ArgumentError(f"faults must be 0 to {MAX_FAULTS}, got {faults}")
    if workers < 1:
        raise ArgumentError(f"workers must be at least 1, got {workers}")
    line = load_line(protocol)
    _fresh_tools()
    runner = _Runner(make_world, seed, workers, progress, line)
    names = tuple(s.name for s in scenarios)
    try:
        _explore(runner, names, faults)
    except KeyboardInterrupt:
        return Exploration(
            seed, faults, names, tuple(runner.done), interrupted=True, protocol=line.name
        )
    return Exploration(seed, faults, names, tuple(runner.done), protocol=line.name)


def _explore(runner: _Runner, names: Sequence[str], faults: int) -> None:
    spec = runner.line.spec
    runs = runner.run([(name, ()) for name in names])
    for _ in range(faults):
        # A run with one more fault at each call after the last fault of a run of this level
        # (the calls before it are the same, so faults there give plans already run).
        jobs: list[tuple[str, Plan]] = []
        for name in names:
            plans = (
                (*run.faults, fault)
                for run in runs
                if run.scenario == name and len(run.fired) == len(run.faults)
                for fault in faults_at(spec, _after_last_fault(run) if run.faults else run.calls)
            )
            jobs.extend((name, plan) for plan in _unique(plans))
        runs = runner.run(jobs)


def replay(
    scenarios: Sequence[Scenario],
    plan: Sequence[Fault],
    make_world: WorldFactory,
    *,
    seed: int = 0,
    protocol: str = DEFAULT_LINE,
) -> Exploration:
    """Run each scenario once under exactly `plan` (ArgumentError for an operation that is
    not in the line's catalogue)."""
    line = load_line(protocol)
    unknown = sorted({f.operation for f in plan} - set(line.spec.operations))
    if unknown:
        raise ArgumentError(f"no such operation in the catalogue: {', '.join(unknown)}")
    _fresh_tools()
    runner = _Runner(make_world, seed, 1, None, line)
    names = tuple(s.name for s in scenarios)
    done = Exploration(seed, len(plan), names, (), True, protocol=line.name)
    try:
        runner.run([(name, tuple(plan)) for name in names])
    except KeyboardInterrupt:
        return attrs.evolve(done, runs=tuple(runner.done), interrupted=True)
    return attrs.evolve(done, runs=tuple(runner.done))
