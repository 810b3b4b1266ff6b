"""Graph properties every table of the spec must have.

`check_spec` returns the problems it finds (empty for a sound spec). Machines: deterministic,
every state reachable, a terminal reachable from every state, terminals without exits, every
trigger total over its contexts, every route landing on exactly one row, no route loops, every
`topics` fan-out accepted by every open topic writer. Resources: every (state, event, facts)
decided by exactly one row, every state reachable, also after each profile's patches.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import TypeVar

import attrs

from fsm.errors import SpecError
from fsm.spec.model import (
    CONTINUE,
    STOP,
    MachineSpec,
    ResourceRow,
    ResourceSpec,
    Spec,
    Transition,
)
from fsm.spec.query import QueryGrammar

__all__ = [
    "Problem",
    "apply_deviations",
    "apply_profile",
    "check_machine",
    "check_resource",
    "check_spec",
]

N = TypeVar("N", bound=Hashable)


@attrs.frozen
class Problem:
    file: str
    table: str
    entry: str
    problem: str

    def as_error(self) -> SpecError:
        return SpecError(self.file, self.table, self.entry, self.problem)

    def __str__(self) -> str:
        return str(self.as_error())


def check_spec(spec: Spec) -> list[Problem]:
    problems: list[Problem] = []
    for machine in spec.machines.values():
        problems += check_machine(machine)
    problems += _check_fanout(spec)
    for resource in spec.resources.values():
        problems += check_resource(resource)
    for profile in spec.profiles.values():
        patched = apply_profile(spec, profile.name)
        for resource in patched.values():
            for p in check_resource(resource, reachability=False):
                problems.append(attrs.evolve(p, entry=f"{p.entry} (profile {profile.name})"))
    server_devs = {d.id for d in spec.deviations.values() if d.who == "mosaicod-0.3"}
    emulated = {did for name, p in spec.profiles.items() if name != "spec" for did in p.deviations}
    for missing in sorted(server_devs - emulated):
        problems.append(
            Problem(
                "deviations.toml",
                "profiles",
                missing,
                "server deviation emulated by no profile",
            )
        )
    return problems


# ---------------------------------------------------------------------------------------------
# Machines


def check_machine(m: MachineSpec) -> list[Problem]:
    contexts = list(m.contexts())
    by_pair: dict[tuple[str, str], list[Transition]] = {}
    for t in m.transitions:
        by_pair.setdefault((t.source, t.trigger), []).append(t)
    return [
        *_determinism(m, contexts, by_pair),
        *_totality(m, contexts, by_pair),
        *(
            Problem(m.file, "transitions", t.id, f"leaves terminal state {t.source}")
            for t in m.transitions
            if t.source in m.terminals
        ),
        *_reachability(m),
        *_route_targets(m, contexts, by_pair),
        *_dead_route_rows(m, contexts),
        *_route_loops(m),
    ]


_Pairs = Mapping[tuple[str, str], list[Transition]]


def _determinism(m: MachineSpec, contexts: list[dict[str, str]], by_pair: _Pairs) -> list[Problem]:
    """No context satisfies two rows of one (source, trigger)."""
    problems = []
    for (source, trigger), rows in by_pair.items():
        for ctx in contexts:
            hits = [t.id for t in rows if t.matches(ctx)]
            if len(hits) > 1:
                problems.append(
                    Problem(
                        m.file,
                        "transitions",
                        f"{source} --{trigger}-->",
                        f"rows {hits} overlap for context {ctx}",
                    )
                )
                break
    return problems


def _totality(m: MachineSpec, contexts: list[dict[str, str]], by_pair: _Pairs) -> list[Problem]:
    """A user or session trigger accepted in a state under some context is accepted under
    every context (the engine cannot choose a context)."""
    problems = []
    for (source, trigger), rows in by_pair.items():
        if m.triggers[trigger].kind == "route":
            continue
        missing = next((c for c in contexts if not any(t.matches(c) for t in rows)), None)
        if missing is not None:
            problems.append(
                Problem(
                    m.file,
                    "transitions",
                    f"{source} --{trigger}-->",
                    f"no row for context {missing}",
                )
            )
    return problems


def _reachability(m: MachineSpec) -> list[Problem]:
    """Every declared trigger is used, every state is reachable and can reach a terminal."""
    problems = []
    used = {t.trigger for t in m.transitions}
    for name in m.triggers:
        if name not in used:
            problems.append(Problem(m.file, "triggers", name, "declared but no row uses it"))
    edges: dict[str, set[str]] = {s: set() for s in m.states}
    for t in m.transitions:
        edges[t.source].add(t.dest)
    reach = _closure([m.initial], edges)
    for s in m.states:
        if s not in reach:
            problems.append(Problem(m.file, "machine", s, f"not reachable from {m.initial}"))
        if s not in m.terminals and not (_closure([s], edges) & m.terminals):
            problems.append(Problem(m.file, "machine", s, "no terminal state is reachable from it"))
    return problems


def _route_targets(
    m: MachineSpec, contexts: list[dict[str, str]], by_pair: _Pairs
) -> list[Problem]:
    """Routes land on exactly one row, for every context the routing row can run in."""
    problems = []
    for t in m.transitions:
        for step in t.steps:
            for route in step.routes():
                if route in (CONTINUE, STOP):
                    continue
                for ctx in (c for c in contexts if t.matches(c)):
                    targets = [r for r in by_pair.get((t.source, route), []) if r.matches(ctx)]
                    if len(targets) != 1:
                        problems.append(
                            Problem(
                                m.file,
                                "transitions",
                                t.id,
                                f"step {step.name} routes to {route!r}, which has "
                                f"{len(targets)} rows in {t.source} for context {ctx}",
                            )
                        )
                        break
    return problems


def _dead_route_rows(m: MachineSpec, contexts: list[dict[str, str]]) -> list[Problem]:
    """No dead rows: a route row is reached by some route in every context it is written for."""
    problems = []
    for t in m.transitions:
        if m.triggers[t.trigger].kind != "route":
            continue
        for ctx in (c for c in contexts if t.matches(c)):
            if not any(
                r.source == t.source and r.matches(ctx) and t.trigger in set(_step_routes(r))
                for r in m.transitions
            ):
                problems.append(
                    Problem(
                        m.file,
                        "transitions",
                        t.id,
                        f"no route reaches it in {t.source} for context {ctx}",
                    )
                )
                break
    return problems


def _route_loops(m: MachineSpec) -> list[Problem]:
    """Following routes never comes back to the row it started from."""
    route_graph: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for t in m.transitions:
        node = (t.source, t.trigger)
        route_graph.setdefault(node, set())
        for route in _step_routes(t):
            if route not in (CONTINUE, STOP):
                route_graph[node].add((t.source, route))
    return [
        Problem(
            m.file,
            "transitions",
            f"{node[0]} --{node[1]}-->",
            "following its routes can come back to it (a loop)",
        )
        for node in route_graph
        if node in _closure(route_graph.get(node, ()), route_graph)
    ]


def _step_routes(row: Transition) -> Iterable[str]:
    for step in row.steps:
        yield from step.routes()


def _check_fanout(spec: Spec) -> list[Problem]:
    """A `topics = X` step fires X on every open topic writer: each open topic state must accept
    it under every topic context."""
    problems = []
    topic = spec.topic_writer
    open_states = [s for s in topic.states if s not in topic.terminals]
    for machine in spec.machines.values():
        for t in machine.transitions:
            for step in t.steps:
                if step.topics is None:
                    continue
                for state in open_states:
                    for ctx in topic.contexts():
                        if topic.lookup(state, step.topics, ctx) is None:
                            problems.append(
                                Problem(
                                    machine.file,
                                    "transitions",
                                    t.id,
                                    f"topics step {step.topics!r} is not accepted by a topic writer "
                                    f"in {state} with {ctx}",
                                )
                            )
    return problems


def _closure(starts: Iterable[N], edges: Mapping[N, Iterable[N]]) -> set[N]:
    """The nodes reachable from `starts` along `edges`, the starts included."""
    seen = set(starts)
    todo = list(seen)
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


# ---------------------------------------------------------------------------------------------
# Resources


def check_resource(res: ResourceSpec, *, reachability: bool = True) -> list[Problem]:
    """Problems of one resource table; a patched table may leave states unreachable, so
    profiles are checked with `reachability=False`."""
    problems = []
    table = f"resources.{res.name}"
    for state in res.states:
        for event in res.events:
            for facts in res.fact_assignments():
                hits = [
                    r
                    for r in res.rows
                    if r.source == state and r.event == event and r.matches(facts)
                ]
                if len(hits) != 1:
                    where = (
                        f"{state} --{event}--> with {facts}" if facts else f"{state} --{event}-->"
                    )
                    problems.append(
                        Problem(
                            "resources.toml",
                            table,
                            where,
                            f"decided by {len(hits)} rows, not exactly 1",
                        )
                    )
    edges: dict[str, set[str]] = {s: set() for s in res.states}
    for r in res.rows:
        if r.dest is not None:
            edges[r.source].add(r.dest)
    reach = _closure([res.initial], edges)
    for s in res.states:
        if reachability and s not in reach:
            problems.append(
                Problem("resources.toml", table, s, f"not reachable from {res.initial}")
            )
    return problems


def apply_profile(spec: Spec, profile: str) -> dict[str, ResourceSpec]:
    """The resource tables with the row patches of `profile`'s deviations applied."""
    return apply_deviations(spec, spec.profiles[profile].deviations)


def apply_query_deviations(spec: Spec, deviations: Iterable[str]) -> QueryGrammar:
    """The query grammar with the cell patches of the given deviations applied."""
    changes: dict[tuple[str, str], str] = {}
    for did in deviations:
        for patch in spec.deviations[did].patch:
            if patch.query is not None and patch.operator is not None:
                outcome = patch.semantics if patch.semantics is not None else patch.error
                assert outcome is not None
                changes[(patch.query, patch.operator)] = outcome
    return spec.query.with_cells(changes)


def apply_deviations(spec: Spec, deviations: Iterable[str]) -> dict[str, ResourceSpec]:
    """The resource tables with the row patches of the given deviations applied.

    A patch replaces the outcome of the rows it names (a row whose guard covers the patch's
    `when` is split so that only the named cell changes).
    """
    resources = dict(spec.resources)
    for did in deviations:
        for patch in spec.deviations[did].patch:
            if patch.resource is None:
                continue
            res = resources[patch.resource]
            rows: list[ResourceRow] = []
            for row in res.rows:
                if (
                    row.source != patch.source
                    or row.event != patch.event
                    or not row.matches(patch.when)
                ):
                    rows.append(row)
                    continue
                for facts in res.fact_assignments():
                    if not row.matches(facts):
                        continue
                    exact = {k: facts[k] for k in res.facts}
                    patched = all(exact[k] == v for k, v in patch.when.items())
                    rows.append(
                        ResourceRow(
                            source=row.source,
                            event=row.event,
                            when=exact,
                            dest=patch.dest if patched else row.dest,
                            error=patch.error if patched else row.error,
                            doc=f"{did}: {spec.deviations[did].actual}" if patched else row.doc,
                        )
                    )
            resources[patch.resource] = attrs.evolve(res, rows=tuple(rows))
    return resources
