"""Conformance runs against reference servers started here: the embedded target of
`mosaico-fsm conformance`, the oracle of its exploration, the measure of the suite's
power (every single emulated deviation and every broken variant must be caught), and the
in-memory world of `mosaico-fsm simulate`."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial

import attrs

from fsm.conformance.suite import SuiteResult, run_suite
from fsm.faults import FaultSchedule
from fsm.simulate import World
from fsm.spec import load_spec
from fsm.transport import Transport
from transport.flight.client import FlightTransport
from transport.flight.server import start_server
from transport.memory import MemoryTransport
from transport.server.model import ServerModel
from transport.server.trace import ServerTrace
from transport.server.variants import VARIANTS

__all__ = [
    "PowerRow",
    "deviation_oracles",
    "embedded_target",
    "measure_power",
    "memory_world",
    "oracle",
    "power_runs",
    "power_subjects",
]


def oracle() -> Transport:
    """A transport to a fresh reference model of the specification (the exploration's oracle)."""
    return MemoryTransport(ServerModel(profile="spec"))


def deviation_oracles() -> dict[str, Callable[[], Transport]]:
    """Per recorded server deviation, a factory of fresh models that emulate it alone (they
    name the deviation an exploration's disagreement matches)."""
    spec = load_spec()
    return {
        did: partial(_deviant, did)
        for did, deviation in spec.deviations.items()
        if deviation.who == "mosaicod-0.3"
    }


def _deviant(did: str) -> Transport:
    return MemoryTransport(ServerModel(deviations=[did]))


def memory_world(
    schedule: FaultSchedule, seed: int, model_class: type[ServerModel] = ServerModel
) -> World:
    """A fresh reference server model reached in memory, with a deterministic clock and its
    trace recorded: the simulator's world. `model_class` swaps in a broken server."""
    ticks = itertools.count(1_700_000_000_000_000_000, 1_000_000)
    model = model_class(seed=seed, clock=lambda: next(ticks))
    trace = ServerTrace()
    model.trace = trace
    return World(
        MemoryTransport(model, faults=schedule), MemoryTransport(model), lambda: trace.events
    )


@attrs.frozen
class EmbeddedTarget:
    location: str
    api_key: str
    connect: Callable[[str | None], Transport]


@contextmanager
def embedded_target(model: ServerModel) -> Iterator[EmbeddedTarget]:
    """A reference server on 127.0.0.1 with authentication on and a manage key."""
    model.auth = True
    running = start_server(model)
    try:
        location = running.location
        yield EmbeddedTarget(
            location, running.api_keys["manage"], lambda key: FlightTransport(location, api_key=key)
        )
    finally:
        running.stop()


@attrs.frozen
class PowerRow:
    """One broken server: what it is, whether the suite caught it, and by which requirements."""

    subject: str
    kind: str  # "deviation" or "variant"
    mistake: str
    caught_by: tuple[str, ...]
    labelled: bool  # named right: a deviation by its own id alone, a variant by no deviation

    @property
    def detected(self) -> bool:
        return bool(self.caught_by)


def _run(model: ServerModel, seed: int, budget: float) -> SuiteResult:
    with embedded_target(model) as target:
        return run_suite(
            target.connect,
            target=target.location,
            api_key=target.api_key,
            seed=seed,
            budget=budget,
            oracle=oracle if budget > 0 else None,
            deviation_oracles=deviation_oracles(),
        )


def power_subjects() -> int:
    """How many suite runs `power_runs` makes: the baseline and one per broken server."""
    spec = load_spec()
    deviations = sum(d.who == "mosaicod-0.3" for d in spec.deviations.values())
    return 1 + deviations + len(VARIANTS)


def power_runs(seed: int = 0, budget: float = 0.0) -> Iterator[SuiteResult | PowerRow]:
    """The suite against the spec profile (the baseline, yielded first as its result) and
    against each broken server (a row each), as they end. A run stopped by Ctrl-C raises
    KeyboardInterrupt here, so no half-measured row is ever yielded."""
    spec = load_spec()
    baseline = _run(ServerModel(profile="spec"), seed, budget)
    if baseline.interrupted:
        raise KeyboardInterrupt
    yield baseline
    for did, deviation in spec.deviations.items():
        if deviation.who != "mosaicod-0.3":
            continue
        result = _run(ServerModel(deviations=[did]), seed, budget)
        if result.interrupted:
            raise KeyboardInterrupt
        labels = _labels(result)
        labelled = did in labels and labels <= {did}
        yield PowerRow(did, "deviation", deviation.summary, tuple(result.failing_ids()), labelled)
    for variant in VARIANTS:
        result = _run(variant.make(profile="spec"), seed, budget)
        if result.interrupted:
            raise KeyboardInterrupt
        yield PowerRow(
            variant.name,
            "variant",
            variant.mistake,
            tuple(result.failing_ids()),
            not _labels(result),
        )


def measure_power(seed: int = 0, budget: float = 0.0) -> tuple[SuiteResult, list[PowerRow]]:
    """The suite against the spec profile (the baseline, which must pass) and against each
    broken server; returns the baseline result and one row per broken server."""
    runs = power_runs(seed, budget)
    baseline = next(runs)
    assert isinstance(baseline, SuiteResult)
    rows = [row for row in runs if isinstance(row, PowerRow)]
    return baseline, rows


def _labels(result: SuiteResult) -> set[str]:
    """Every deviation id the result's failures were labelled with."""
    labels = {d for v in result.verdicts if v.status == "fail" for d in v.deviations}
    if result.exploration is not None:
        labels |= set(result.exploration.deviations)
    return labels
