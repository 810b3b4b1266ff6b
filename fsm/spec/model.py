"""The protocol spec as typed, immutable values (what `load_spec` builds from `specs/`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Literal

import attrs

from fsm.errors import ArgumentError, InvalidTrigger
from fsm.spec.query import QueryGrammar

__all__ = [
    "CONTINUE",
    "STOP",
    "Cell",
    "ContextVar",
    "Deviation",
    "ErrorCase",
    "FailedRoute",
    "Field",
    "MachineSpec",
    "Operation",
    "Patch",
    "Probe",
    "ProbeRoute",
    "Profile",
    "ResourceRow",
    "ResourceSpec",
    "Spec",
    "Step",
    "Transition",
    "TriggerSpec",
]

CONTINUE = "continue"
"""Route: go on with the next step (a failure is kept and reported)."""
STOP = "stop"
"""Route: skip the remaining steps and take the row's own destination."""

ErrorMode = Literal["none", "cause", "propagate", "suppress"]
TriggerKind = Literal["user", "session", "route"]


@attrs.frozen
class ContextVar:
    """A variable the guards of a table read (for example the error policy)."""

    name: str
    values: tuple[str, ...]
    enum: str | None
    doc: str


@attrs.frozen
class TriggerSpec:
    """A trigger of a machine: `user` (API call), `session` (fired by a session's `topics`
    step) or `route` (taken when a step's outcome routes to it)."""

    name: str
    kind: TriggerKind
    doc: str


@attrs.frozen
class FailedRoute:
    """Where a failed step goes: per error kind where listed, else `any`."""

    any: str
    by_kind: Mapping[str, str] = attrs.field(factory=dict)

    def route_for(self, kind: str | None) -> str:
        if kind is not None and kind in self.by_kind:
            return self.by_kind[kind]
        return self.any

    def routes(self) -> Iterator[str]:
        yield self.any
        yield from self.by_kind.values()


@attrs.frozen
class ProbeRoute:
    """Where a step with an unknown outcome goes, after asking the server with `probe`."""

    probe: str
    applied: str
    not_applied: str
    unresolved: str

    def routes(self) -> Iterator[str]:
        yield from (self.applied, self.not_applied, self.unresolved)


@attrs.frozen
class Step:
    """One step of a transition: an operation (`do`) or a trigger fired on every open topic
    writer (`topics`), with the routes of its outcomes."""

    do: str | None
    topics: str | None
    failed: FailedRoute
    unknown: str | ProbeRoute | None
    optional: bool = False
    """A read a client may leave out (the engine makes it): the server's state does not
    depend on it, so a client check accepts the row with or without it."""

    @property
    def name(self) -> str:
        return self.do if self.do is not None else f"TOPICS:{self.topics}"

    def routes(self) -> Iterator[str]:
        yield from self.failed.routes()
        if isinstance(self.unknown, ProbeRoute):
            yield from self.unknown.routes()
        elif self.unknown is not None:
            yield self.unknown


@attrs.frozen
class Transition:
    """A row of a machine table: (source, trigger, when) -> dest, with its ordered steps.

    A row written with several sources is expanded into one `Transition` per source; they
    share the row's `id`. `dest` is already resolved (a reflexive ``"="`` becomes `source`).
    """

    id: str
    source: str
    trigger: str
    when: Mapping[str, str]
    dest: str
    error: ErrorMode
    steps: tuple[Step, ...]
    doc: str

    def matches(self, context: Mapping[str, str]) -> bool:
        """True when every guard of this row holds in `context`."""
        return all(context.get(name) == value for name, value in self.when.items())


@attrs.frozen
class MachineSpec:
    """One client-side lifecycle table (session or topic writer)."""

    name: str
    file: str
    enum: str
    doc: str
    states: tuple[str, ...]
    initial: str
    terminals: frozenset[str]
    context: Mapping[str, ContextVar]
    triggers: Mapping[str, TriggerSpec]
    transitions: tuple[Transition, ...]

    def rows(self, source: str, trigger: str) -> tuple[Transition, ...]:
        """The rows for `(source, trigger)`, whatever their guards."""
        return tuple(t for t in self.transitions if t.source == source and t.trigger == trigger)

    def check_call(self, state: str, trigger: str, context: Mapping[str, str]) -> None:
        """ArgumentError unless `state` and `trigger` are names of this table and `context`
        gives each of its variables one of that variable's values, and nothing else."""
        if state not in self.states:
            raise ArgumentError(f"{self.name}: {state!r} is not a state ({', '.join(self.states)})")
        if trigger not in self.triggers:
            raise ArgumentError(
                f"{self.name}: {trigger!r} is not a trigger ({', '.join(self.triggers)})"
            )
        for name in context:
            if name not in self.context:
                raise ArgumentError(
                    f"{self.name}: {name!r} is not a context variable ({', '.join(self.context)})"
                )
        for name, var in self.context.items():
            value = context.get(name)
            if value not in var.values:
                raise ArgumentError(
                    f"{self.name}: context {name!r} must be one of {', '.join(var.values)}, "
                    f"got {value!r}"
                )

    def row_for(self, state: str, trigger: str, context: Mapping[str, str]) -> Transition:
        """The row that applies; ArgumentError for names or values foreign to the table,
        InvalidTrigger when the table does not allow the trigger there."""
        self.check_call(state, trigger, context)
        row = self.lookup(state, trigger, context)
        if row is None:
            raise InvalidTrigger(
                self.name,
                state,
                trigger,
                self.allowed(state, context),
                dict(context),
                terminal=state in self.terminals,
            )
        return row

    def lookup(self, source: str, trigger: str, context: Mapping[str, str]) -> Transition | None:
        """The one row that applies, or None when the trigger is not allowed there."""
        for t in self.transitions:
            if t.source == source and t.trigger == trigger and t.matches(context):
                return t
        return None

    def allowed(self, source: str, context: Mapping[str, str], kind: str = "user") -> list[str]:
        """Triggers of `kind` that some row accepts in `source` under `context`."""
        names: list[str] = []
        for t in self.transitions:
            if (
                t.source == source
                and self.triggers[t.trigger].kind == kind
                and t.matches(context)
                and t.trigger not in names
            ):
                names.append(t.trigger)
        return names

    def contexts(self) -> Iterator[dict[str, str]]:
        """Every assignment of the context variables."""
        yield from _product(self.context)


@attrs.frozen
class Field:
    name: str
    type: str
    required: bool = False
    limit: str | None = None
    """The entry of `Spec.limits` bounding the field's size, if any."""


@attrs.frozen
class Limit:
    """A bound on what a request may carry; beyond it the server answers invalid_argument."""

    name: str
    value: int
    doc: str


@attrs.frozen
class ErrorCase:
    kind: str
    when: str


@attrs.frozen
class Operation:
    """An entry of the catalogue: a DoAction command, another RPC or a DoPut stream phase."""

    name: str
    kind: Literal["action", "rpc", "stream"]
    wire: str
    permission: str
    request: tuple[Field, ...]
    response: Any
    outcomes: frozenset[str]
    probe: str | None
    errors: tuple[ErrorCase, ...]
    doc: str


@attrs.frozen
class Probe:
    """A read that settles an operation whose reply was lost."""

    name: str
    settles: str
    reads: str
    applied_when: str


@attrs.frozen
class Cell:
    """One fully expanded entry of a resource table: a single state, event and fact values."""

    resource: str
    source: str
    event: str
    when: tuple[tuple[str, str], ...]


@attrs.frozen
class ResourceRow:
    """A row of a server resource table: -> `dest` or refused with `error`."""

    source: str
    event: str
    when: Mapping[str, str]
    dest: str | None
    error: str | None
    doc: str

    def matches(self, facts: Mapping[str, str]) -> bool:
        return all(facts.get(name) == value for name, value in self.when.items())


@attrs.frozen
class ResourceSpec:
    """The server-side lifecycle of one kind of resource."""

    name: str
    doc: str
    states: tuple[str, ...]
    initial: str
    events: tuple[str, ...]
    locked: frozenset[str]
    facts: Mapping[str, ContextVar]
    rows: tuple[ResourceRow, ...]

    def decide(self, source: str, event: str, facts: Mapping[str, str]) -> ResourceRow | None:
        for row in self.rows:
            if row.source == source and row.event == event and row.matches(facts):
                return row
        return None

    def fact_assignments(self) -> Iterator[dict[str, str]]:
        yield from _product(self.facts)


@attrs.frozen
class Patch:
    """One change a deviation makes: a resource cell's outcome, an operation's permission, a
    server behaviour setting, or a query grammar cell (`query` names a field kind of
    query.toml, `operator` one of its operators; `semantics` or `error` its new outcome)."""

    resource: str | None = None
    source: str | None = None
    event: str | None = None
    when: Mapping[str, str] = attrs.field(factory=dict)
    dest: str | None = None
    error: str | None = None
    operation: str | None = None
    permission: str | None = None
    setting: str | None = None
    value: Any = None
    query: str | None = None
    operator: str | None = None
    semantics: str | None = None


@attrs.frozen
class Deviation:
    """A known way in which a real server or client differs from this spec."""

    id: str
    who: str
    summary: str
    spec: str
    actual: str
    sources: tuple[str, ...]
    patch: tuple[Patch, ...]
    signature: Mapping[str, Any]


@attrs.frozen
class Profile:
    """A named set of server deviations the reference server can emulate."""

    name: str
    doc: str
    deviations: tuple[str, ...]


@attrs.frozen
class Spec:
    """The whole protocol spec."""

    version: str
    machines: Mapping[str, MachineSpec]
    operations: Mapping[str, Operation]
    error_kinds: Mapping[str, str]
    field_types: Mapping[str, str]
    common_errors: tuple[ErrorCase, ...]
    probes: Mapping[str, Probe]
    resources: Mapping[str, ResourceSpec]
    deviations: Mapping[str, Deviation]
    profiles: Mapping[str, Profile]
    query: QueryGrammar
    limits: Mapping[str, Limit] = attrs.field(factory=dict)

    @property
    def session(self) -> MachineSpec:
        return self.machines["session"]

    @property
    def topic_writer(self) -> MachineSpec:
        return self.machines["topic_writer"]

    def operation_for_wire(self, wire: str) -> Operation | None:
        """The DoAction operation whose Action.type is `wire`."""
        for op in self.operations.values():
            if op.kind == "action" and op.wire == wire and "*" not in op.wire:
                return op
        return None


def _product(variables: Mapping[str, ContextVar]) -> Iterator[dict[str, str]]:
    names = list(variables)

    def rec(i: int, acc: dict[str, str]) -> Iterator[dict[str, str]]:
        if i == len(names):
            yield dict(acc)
            return
        for value in variables[names[i]].values:
            acc[names[i]] = value
            yield from rec(i + 1, acc)
        del acc[names[i]]

    yield from rec(0, {})
