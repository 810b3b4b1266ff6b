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

from fsm.conformance.context import KeySource
from fsm.conformance.suite import SuiteResult, run_suite
from fsm.enums import APIKeyPermissionEnum
from fsm.faults import FaultSchedule
from fsm.simulate import World
from fsm.spec import load_spec
from fsm.spec.lines import DEFAULT_LINE, Line, load_line
from fsm.transport import Transport
from fsm.workers import worker_pool
from transport.flight.client import FlightTransport
from transport.flight.server import start_server
from transport.line_variants import LINE_VARIANTS
from transport.memory import MemoryTransport
from transport.server.model import ServerModel
from transport.server.trace import ServerTrace
from transport.server.variants import VARIANTS

__all__ = [
    "PowerRow",
    "deviation_oracles",
    "embedded_target",
    "memory_world",
    "oracle",
    "power_runs",
    "power_subjects",
]


def oracle(protocol: str | None = None) -> Transport:
    """A transport to a fresh reference model of the specification (the exploration's oracle),
    speaking protocol line `protocol` (default 0.3)."""
    return MemoryTransport(ServerModel(profile="spec", protocol=protocol))


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
    schedule: FaultSchedule,
    seed: int,
    model_class: type[ServerModel] = ServerModel,
    protocol: str | None = None,
) -> World:
    """A fresh reference server model reached in memory, with a deterministic clock and its
    trace recorded: the simulator's world. `model_class` swaps in a broken server;
    `protocol` names the protocol line the server speaks (default 0.3)."""
    ticks = itertools.count(1_700_000_000_000_000_000, 1_000_000)
    model = model_class(seed=seed, clock=lambda: next(ticks), protocol=protocol)
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
    line: Line
    keys: KeySource
    """Keys of any permission bits, made by the server itself (as a line without API-key
    actions makes them on its command line)."""


def model_keys(model: ServerModel) -> KeySource:
    """A key source of `model`: each key issued by the server itself (its bootstrap), with
    exactly the bits asked for (every bit: a manage key), expiring when asked."""

    def make(bits: tuple[str, ...], expires_at_ns: int | None) -> str | None:
        values = model.line.permissions.values
        if len(bits) == 1 and bits[0] in values:
            permission = APIKeyPermissionEnum(bits[0])
        elif set(bits) == set(values):
            permission = APIKeyPermissionEnum.Manage
        else:
            return None
        token = model.bootstrap_key(permission, "conformance")
        if expires_at_ns is not None:
            fingerprint = token.rsplit("_", 1)[1]
            model.keys[fingerprint] = attrs.evolve(
                model.keys[fingerprint], expires_at_ns=expires_at_ns
            )
        return token

    return make


@contextmanager
def embedded_target(model: ServerModel) -> Iterator[EmbeddedTarget]:
    """A reference server on 127.0.0.1 with authentication on and a manage key, spoken to
    in the model's protocol line."""
    model.auth = True
    running = start_server(model)
    line = model.line
    try:
        location = running.location
        yield EmbeddedTarget(
            location,
            running.api_keys["manage"],
            lambda key: FlightTransport(location, api_key=key, protocol=line),
            line,
            model_keys(model),
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
    applicable: bool = True
    """False for an uncaught deviation every requirement it contradicts (each case naming it)
    is n/a on the run's line: the line has nothing it could break."""

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
            oracle=partial(oracle, model.line.name) if budget > 0 else None,
            deviation_oracles=deviation_oracles(),
            line=target.line,
            keys=target.keys,
        )


def _broken_servers(protocol: str | None = None) -> list[tuple[str, str]]:
    """Every broken server the self-test measures on a protocol line, as (kind, name): each
    emulated deviation of mosaicod 0.3 that the line's tables still record (and do not leave
    unknown), then each deliberately broken variant, then each broken server of a later line
    whose data the line has."""
    line = load_line(protocol or DEFAULT_LINE)
    deviations = [
        ("deviation", did)
        for did, dev in line.spec.deviations.items()
        if dev.who == "mosaicod-0.3" and did not in line.unknown_deviations
    ]
    return (
        deviations
        + [("variant", variant.name) for variant in VARIANTS]
        + [("line variant", variant.name) for variant in LINE_VARIANTS if variant.applies(line)]
    )


def power_subjects(protocol: str | None = None) -> int:
    """How many suite runs `power_runs` makes: the baseline and one per broken server."""
    return 1 + len(_broken_servers(protocol))


def _power_row(task: tuple[str, str, int, float, str | None]) -> PowerRow | None:
    """The suite against one broken server: its row, or None when Ctrl-C stopped the run."""
    kind, name, seed, budget, protocol = task
    if kind == "deviation":
        model = ServerModel(deviations=[name], protocol=protocol)
        result = _run(model, seed, budget)
        if result.interrupted:
            return None
        labels = _labels(result)
        summary = model.spec.deviations[name].summary
        labelled = name in labels and labels <= {name}
        caught = tuple(result.failing_ids())
        naming = [v.status for v in result.verdicts if name in v.case.deviations]
        applicable = bool(caught) or not naming or any(status != "n/a" for status in naming)
        return PowerRow(name, kind, summary, caught, labelled, applicable)
    chosen = VARIANTS if kind == "variant" else LINE_VARIANTS
    variant = next(v for v in chosen if v.name == name)
    result = _run(variant.make(profile="spec", protocol=protocol), seed, budget)
    if result.interrupted:
        return None
    return PowerRow(name, kind, variant.mistake, tuple(result.failing_ids()), not _labels(result))


def power_runs(
    seed: int = 0, budget: float = 0.0, workers: int = 1, protocol: str | None = None
) -> Iterator[SuiteResult | PowerRow]:
    """The suite against the spec profile (the baseline, yielded first as its result) and
    against each broken server (a row each, in `_broken_servers` order). With more than one
    worker, the broken servers are measured in worker processes while this process runs the
    baseline. A run stopped by Ctrl-C raises KeyboardInterrupt here, so no half-measured row
    is ever yielded."""
    tasks = [(kind, name, seed, budget, protocol) for kind, name in _broken_servers(protocol)]
    # Each run serves and calls over gRPC: workers start afresh rather than forked.
    with worker_pool(workers if len(tasks) > 1 else 1, spawn=True) as pool:
        rows: Iterator[PowerRow | None] = (
            pool.imap(_power_row, tasks, chunksize=1)
            if pool is not None
            else (_power_row(task) for task in tasks)
        )
        baseline = _run(ServerModel(profile="spec", protocol=protocol), seed, budget)
        if baseline.interrupted:
            raise KeyboardInterrupt
        yield baseline
        for row in rows:
            if row is None:
                raise KeyboardInterrupt
            yield row


def _labels(result: SuiteResult) -> set[str]:
    """Every deviation id the result's failures were labelled with."""
    labels = {d for v in result.verdicts if v.status == "fail" for d in v.deviations}
    if result.exploration is not None:
        labels |= set(result.exploration.deviations)
    return labels
