"""One simulated run: a scenario under a fault plan, on a fresh server, then judged."""

from __future__ import annotations

import attrs

from fsm.engine import BatchPolicy, Client, Machines, Tracer
from fsm.errors import MosaicoError
from fsm.faults import Fault, FaultPlan
from fsm.simulate.facts import UNKNOWN, Facts, Verdict
from fsm.simulate.invariants import INVARIANTS, check_run, describe, describe_server
from fsm.simulate.judge import Judge
from fsm.simulate.scenarios import SCHEMA, SEQUENCE, Actor, Scenario
from fsm.simulate.view import ServerView, SimulationError
from fsm.simulate.world import CallLog, World, WorldFactory
from fsm.spec.lines import Line
from fsm.transport import Descriptor, SequenceInfo, Transport

__all__ = ["BATCHES", "RunResult", "run_scenario"]

BATCHES = BatchPolicy(batch_rows=2, batch_bytes=1 << 16, background=False)
"""Small messages, sent from the pushing thread: stream writes happen during pushes, and the
streams of a session end one after the other, in a reproducible order."""


@attrs.frozen
class RunResult:
    """What one run did and how it was judged."""

    scenario: str
    faults: tuple[Fault, ...]
    fired: tuple[Fault, ...]
    client: str
    server: str
    raised: str
    verdicts: tuple[Verdict, ...]
    calls: tuple[tuple[str, int], ...]

    @property
    def violations(self) -> tuple[Verdict, ...]:
        return tuple(v for v in self.verdicts if v.status == "violated")

    @property
    def unknown(self) -> tuple[Verdict, ...]:
        return tuple(v for v in self.verdicts if v.status == "unknown")

    @property
    def cell(self) -> str:
        return f"{self.client} | {self.server}"


def _prepare_updater(transport: Transport, machines: Machines, line: Line | None) -> frozenset[str]:
    """An existing sequence with one finalized session (and one topic) to update."""
    client = Client(transport, batch_policy=BATCHES, machines=machines, protocol=line)
    with client.sequence_create(SEQUENCE, {"prepared": True}) as seq:
        seq.topic_create("base", schema=SCHEMA, ontology_tag="imu").push_row(
            {"timestamp_ns": 0, "x": 0.0}
        )
    info = transport.flight_info(Descriptor.for_resource(SEQUENCE))
    if not info.is_ok or not isinstance(info.value, SequenceInfo):
        raise SimulationError(f"reading the prepared sequence failed: {info.detail}")
    return frozenset(s.uuid for s in info.value.sessions)


def run_scenario(
    scenario: Scenario,
    faults: tuple[Fault, ...],
    seed: int,
    make_world: WorldFactory,
    machines: Machines,
    judge: Judge,
    line: Line | None = None,
) -> RunResult:
    """Run `scenario` with `faults` on a fresh world and check every invariant (a read of
    the server that fails leaves the invariants that needed it unknown). The client speaks
    `line` (default 0.3), whose tables `machines` and `judge` hold."""
    schedule = CallLog(FaultPlan(faults, seed=seed))
    world = make_world(schedule, seed)
    client: Client | None = None
    try:
        setup: frozenset[str] = frozenset()
        if scenario.role == "updater":
            try:
                setup = _prepare_updater(world.checker, machines, line)
            except SimulationError as error:
                return _not_set_up(scenario, faults, str(error))
        tracer = Tracer()
        skip = len(world.server_events())
        try:
            # A line that connects with a handshake makes its first call here.
            client = Client(
                world.transport,
                tracer=tracer,
                batch_policy=BATCHES,
                machines=machines,
                protocol=line,
            )
        except MosaicoError as refused:  # the client could not connect: nothing ran
            return _run(
                scenario, faults, seed, world, None, tracer, schedule, setup, judge, skip, refused
            )
        return _run(scenario, faults, seed, world, client, tracer, schedule, setup, judge, skip)
    finally:
        if client is not None:
            client.close()
        else:
            world.transport.close()
        world.checker.close()


def _not_set_up(scenario: Scenario, faults: tuple[Fault, ...], why: str) -> RunResult:
    """A run whose preparation could not be read back: nothing about it can be judged."""
    verdicts = tuple(
        Verdict(name, UNKNOWN, f"the run could not be set up: {why}") for name in INVARIANTS
    )
    return RunResult(scenario.name, faults, (), "Null", "unreadable", "-", verdicts, ())


def _run(
    scenario: Scenario,
    faults: tuple[Fault, ...],
    seed: int,
    world: World,
    client: Client | None,
    tracer: Tracer,
    schedule: CallLog,
    setup: frozenset[str],
    judge: Judge,
    skip: int,
    raised: BaseException | None = None,
) -> RunResult:
    """The scenario's body on `client`, then the verdicts of what the actor did, what it
    raised, and what the server saw after the first `skip` events. Without a client (it
    could not connect: `raised` says why) the body does not run."""
    actor = None
    if client is not None:
        actor = Actor(client, scenario, seed)
        try:
            scenario.body(actor)
        except Exception as exc:  # whatever the user would see
            raised = exc
    events = list(world.server_events())[skip:]
    session = actor.session if actor is not None else None
    facts = Facts(
        scenario=scenario,
        status=session.state if session is not None else "Null",
        session_uuid=session.session_uuid if session is not None else None,
        topics={n: (t.locator, t.state) for n, t in actor.topics.items()} if actor else {},
        pushed={n: tuple(rows) for n, rows in actor.pushed.items()} if actor else {},
        attempted=tuple(actor.attempted) if actor else (),
        raised=raised,
        trace=tracer.records,
        events=events,
        setup_sessions=setup,
        fired=tuple(schedule.fired),
    )
    view = ServerView(world.checker)
    return RunResult(
        scenario=scenario.name,
        faults=faults,
        fired=facts.fired,
        client=facts.status,
        server=describe_server(facts, view),
        raised=describe(raised),
        verdicts=check_run(facts, view, judge),
        calls=tuple(schedule.calls),
    )
