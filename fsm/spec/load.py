"""Read `specs/*.toml` into a validated `Spec`.

The shape of each file (its tables, keys and value types) is declared once, in
`fsm.spec.schema`, and enforced while structuring; what is checked here by hand is only what
refers to something else: a route to a trigger, a step to an operation, a guard to a context
value, a patch to a resource cell. Every problem raises `SpecError` naming the file, the
table and the entry. Graph properties (determinism, reachability, complete routing) are
checked by `fsm.spec.soundness`; `load_spec` runs those too unless asked not to.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from fsm.errors import SpecError
from fsm.outcome import ErrorKind
from fsm.spec import schema
from fsm.spec.model import (
    CONTINUE,
    STOP,
    ContextVar,
    Deviation,
    ErrorCase,
    FailedRoute,
    Field,
    Limit,
    MachineSpec,
    Operation,
    Patch,
    Probe,
    ProbeRoute,
    Profile,
    ResourceRow,
    ResourceSpec,
    Spec,
    Step,
    Transition,
    TriggerSpec,
)
from fsm.spec.query import SEMANTICS, QueryGrammar, parse_query_grammar
from fsm.spec.vocabulary import SEED_VOCABULARY, Vocabulary

__all__ = ["SPEC_FILES", "load_documents", "load_spec", "parse_spec"]

SPEC_FILES = (
    "session.toml",
    "topic_writer.toml",
    "actions.toml",
    "resources.toml",
    "deviations.toml",
    "query.toml",
)
SERVER_EVENTS = ("ERROR_REPORTED", "DO_PUT_OPEN", "DO_PUT_WRITE", "DO_PUT_END", "DO_PUT_CANCEL")
SERVER_SETTINGS: Mapping[str, tuple[Any, ...]] = {
    # setting: the values it may take, the specification's first
    "enforce_key_expiry": (True, False),
    "missing_key_refusal": ("unauthenticated", "permission_denied"),
    "session_topics_listed": ("always", "when_finalized"),
    "query_empty_ontology": ("no_condition", "matches_nothing"),
    "query_timestamp_range": ("matching_rows", "last_matching_chunk"),
    "query_chunk_without_match": ("skipped", "internal"),
    "query_without_conditions": ("everything", "nothing"),
}
VERDICTS = ("applied", "not_applied", "unresolved")
"""A probe's verdicts, in the order of `ProbeRoute`'s fields."""


def load_documents(directory: Path | None = None) -> dict[str, dict[str, Any]]:
    """Parse every spec file; from the installed `specs` package unless `directory` is given."""
    documents: dict[str, dict[str, Any]] = {}
    for name in SPEC_FILES:
        try:
            if directory is None:
                text = resources.files("specs").joinpath(name).read_text(encoding="utf-8")
            else:
                text = (directory / name).read_text(encoding="utf-8")
        except OSError as exc:
            raise SpecError(name, "-", "file", f"cannot be read: {exc}") from exc
        try:
            documents[name] = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SpecError(name, "-", "file", f"not valid TOML: {exc}") from exc
    return documents


_CACHE: dict[str, Spec] = {}


def load_spec(directory: Path | None = None, *, check: bool = True) -> Spec:
    """Load and validate the spec. The packaged spec is parsed once per process."""
    key = "" if directory is None else str(directory.resolve())
    if check and key in _CACHE:
        return _CACHE[key]
    spec = parse_spec(load_documents(directory), check=check)
    if check:
        _CACHE[key] = spec
    return spec


def parse_spec(
    documents: Mapping[str, Mapping[str, Any]],
    *,
    check: bool = True,
    vocabulary: Vocabulary = SEED_VOCABULARY,
) -> Spec:
    """Build a `Spec` from parsed TOML documents keyed by file name, checking enum,
    permission and party names against `vocabulary` (that of fsm.enums by default)."""
    v = vocabulary
    for name in SPEC_FILES:
        if name not in documents:
            raise SpecError(name, "-", "file", "missing")
    actions = schema.structure("actions.toml", documents["actions.toml"], schema.ActionsFile)
    topic_file = schema.structure(
        "topic_writer.toml", documents["topic_writer.toml"], schema.MachineFile
    )
    session_file = schema.structure("session.toml", documents["session.toml"], schema.MachineFile)
    resources_file = schema.structure(
        "resources.toml", documents["resources.toml"], schema.ResourcesFile
    )
    deviations_file = schema.structure(
        "deviations.toml", documents["deviations.toml"], schema.DeviationsFile
    )
    version = _version(
        {
            "session.toml": session_file.spec_version,
            "topic_writer.toml": topic_file.spec_version,
            "actions.toml": actions.spec_version,
            "resources.toml": resources_file.spec_version,
            "deviations.toml": deviations_file.spec_version,
            "query.toml": documents["query.toml"].get("spec_version"),
        }
    )
    error_kinds = _error_kinds(actions)
    limits = _limits(actions)
    probes = _probes(actions)
    operations = _operations(actions, error_kinds, v, limits, probes)
    common = tuple(
        _error_case(_R("actions.toml", "common_errors", f"[{i}]"), case, error_kinds)
        for i, case in enumerate(actions.common_errors)
    )
    topic = _machine("topic_writer.toml", topic_file, operations, error_kinds, None, v)
    session = _machine("session.toml", session_file, operations, error_kinds, topic, v)
    resources_ = _resources(resources_file, operations, error_kinds, v)
    grammar = parse_query_grammar(documents["query.toml"], error_kinds)
    deviations = _deviations(deviations_file, resources_, operations, error_kinds, grammar, v)
    spec = Spec(
        version=version,
        machines={session.name: session, topic.name: topic},
        operations=operations,
        error_kinds=error_kinds,
        field_types=dict(actions.field_types),
        common_errors=common,
        probes=probes,
        resources=resources_,
        deviations=deviations,
        profiles=_profiles(deviations_file, deviations, v),
        query=grammar,
        limits=limits,
    )
    if check:
        from fsm.spec.soundness import check_spec

        problems = check_spec(spec)
        if problems:
            raise problems[0].as_error()
    return spec


# ---------------------------------------------------------------------------------------------
# Where a cross-reference fails: file, table and entry.


class _R:
    def __init__(self, file: str, table: str, entry: str) -> None:
        self.file, self.table, self.entry = file, table, entry

    def at(self, entry: str) -> _R:
        """A reader for a part of the current entry (its name is appended)."""
        return _R(self.file, self.table, entry if self.entry == "-" else f"{self.entry}.{entry}")

    def fail(self, problem: str) -> SpecError:
        return SpecError(self.file, self.table, self.entry, problem)


def _version(versions: Mapping[str, Any]) -> str:
    query = versions["query.toml"]
    if not isinstance(query, str) or not query:
        raise SpecError("query.toml", "-", "spec_version", f"must be a non-empty string: {query!r}")
    distinct = set(versions.values())
    if len(distinct) != 1:
        raise SpecError("deviations.toml", "-", "spec_version", f"files disagree: {versions}")
    return str(distinct.pop())


# ---------------------------------------------------------------------------------------------
# actions.toml


def _error_kinds(actions: schema.ActionsFile) -> dict[str, str]:
    kinds: dict[str, str] = {name: entry.grpc for name, entry in actions.error_kinds.items()}
    expected = {k.value for k in ErrorKind}
    if set(kinds) != expected:
        raise SpecError(
            "actions.toml",
            "error_kinds",
            "-",
            f"kinds must be exactly those of fsm.ErrorKind: {sorted(expected)}",
        )
    return kinds


def _error_case(r: _R, case: ErrorCase, kinds: Mapping[str, str]) -> ErrorCase:
    if case.kind not in kinds:
        raise r.fail(f"unknown error kind {case.kind!r}")
    return case


def _limits(actions: schema.ActionsFile) -> dict[str, Limit]:
    limits = {}
    for name, entry in actions.limits.items():
        if entry.value < 1:
            raise SpecError("actions.toml", "limits", f"{name}.value", "must be positive")
        limits[name] = Limit(name, entry.value, entry.doc)
    return limits


def _probes(actions: schema.ActionsFile) -> dict[str, Probe]:
    """The probes, each the one read that settles the operation it names in `settles`."""
    ops = actions.operations
    probes: dict[str, Probe] = {}
    for name, entry in actions.probes.items():
        r = _R("actions.toml", f"probes.{name}", "-")
        for what, target in (("settles", entry.settles), ("reads", entry.reads)):
            if target not in ops:
                raise r.at(what).fail(f"unknown operation {target!r}")
        other = next((p.name for p in probes.values() if p.settles == entry.settles), None)
        if other is not None:
            raise r.at("settles").fail(f"{entry.settles} is settled by probe {other!r} already")
        if "unknown" not in ops[entry.settles].outcomes:
            raise r.at("settles").fail(f"{entry.settles} cannot end unknown per its 'outcomes'")
        probes[name] = Probe(name, entry.settles, entry.reads, entry.applied_when)
    return probes


def _operations(
    actions: schema.ActionsFile,
    kinds: Mapping[str, str],
    vocabulary: Vocabulary,
    limits: Mapping[str, Limit],
    probes: Mapping[str, Probe],
) -> dict[str, Operation]:
    ops = {}
    for name, entry in actions.operations.items():
        r = _R("actions.toml", f"operations.{name}", "-")
        if entry.permission not in (*vocabulary.permissions, "none"):
            raise r.at("permission").fail(f"unknown permission {entry.permission!r}")
        if not set(entry.outcomes) <= {"ok", "failed", "unknown"}:
            raise r.at("outcomes").fail(
                f"outcomes must be among ok, failed, unknown: {sorted(entry.outcomes)}"
            )
        ops[name] = Operation(
            name=name,
            kind=entry.kind,
            wire=entry.wire,
            permission=entry.permission,
            request=tuple(
                _field(r.at(f"request[{i}]"), f, actions.field_types, limits)
                for i, f in enumerate(entry.request)
            ),
            response=entry.response,
            outcomes=frozenset(entry.outcomes),
            probe=next((p.name for p in probes.values() if p.settles == name), None),
            errors=tuple(
                _error_case(r.at(f"errors[{i}]"), e, kinds) for i, e in enumerate(entry.errors)
            ),
            doc=entry.doc,
        )
    _check_flight_actions(ops, vocabulary)
    return ops


def _field(r: _R, f: Field, types: Mapping[str, str], limits: Mapping[str, Limit]) -> Field:
    if f.type not in types:
        raise r.fail(f"unknown field type {f.type!r}")
    if f.limit is not None and f.limit not in limits:
        raise r.at("limit").fail(f"unknown limit {f.limit!r}")
    return f


def _check_flight_actions(ops: Mapping[str, Operation], vocabulary: Vocabulary) -> None:
    wires = {op.wire for op in ops.values() if op.kind == "action"}
    for action in vocabulary.enums["FlightAction"]:
        if action.value not in wires:
            raise SpecError(
                "actions.toml", "operations", action.name, "FlightAction has no catalogue entry"
            )
        if action.name not in ops or ops[action.name].wire != action.value:
            raise SpecError(
                "actions.toml",
                "operations",
                action.name,
                f"must be named after FlightAction.{action.name}",
            )


# ---------------------------------------------------------------------------------------------
# session.toml, topic_writer.toml


def _variables(
    r: _R, raw: Mapping[str, schema.VariableEntry], vocabulary: Vocabulary
) -> dict[str, ContextVar]:
    out = {}
    for name, var in raw.items():
        if var.enum is not None:
            members = _enum_members(r.at(name), var.enum, vocabulary)
            if set(var.values) != set(members):
                raise r.at(name).fail(f"values must be the members of {var.enum}: {members}")
        out[name] = ContextVar(name, var.values, var.enum, var.doc)
    return out


def _enum_members(r: _R, enum_name: str, vocabulary: Vocabulary) -> tuple[str, ...]:
    members = vocabulary.members(enum_name)
    if members is None:
        raise r.fail(f"unknown enum {enum_name!r}")
    return members


def _route(r: _R, route: str, triggers: Mapping[str, TriggerSpec]) -> str:
    if route in (CONTINUE, STOP):
        return route
    if route not in triggers:
        raise r.fail(f"route {route!r} is neither continue, stop nor a trigger")
    if triggers[route].kind != "route":
        raise r.fail(
            f"route {route!r} names a {triggers[route].kind} trigger; routes go to route triggers"
        )
    return route


def _step(
    r: _R,
    raw: schema.StepEntry,
    ops: Mapping[str, Operation],
    kinds: Mapping[str, str],
    triggers: Mapping[str, TriggerSpec],
    topic: MachineSpec | None,
) -> Step:
    do, topics = raw.do, raw.topics
    if (do is None) == (topics is None):
        raise r.fail("a step has exactly one of 'do' and 'topics'")
    op: Operation | None = None
    if do is not None:
        if do not in ops:
            raise r.at("do").fail(f"unknown operation {do!r}")
        op = ops[do]
        outcomes = op.outcomes
    else:
        _check_fan_out(r, topics, topic)
        outcomes = frozenset({"ok", "failed"})
    if "failed" not in outcomes:
        raise r.fail(f"{do or topics} cannot fail per the catalogue")
    failed = _failed_route(r, raw.failed, kinds, triggers)
    unknown: str | ProbeRoute | None = None
    if "unknown" in outcomes:
        unknown = _unknown_route(r, raw.unknown, op, triggers)
    elif raw.unknown is not None:
        raise r.fail(f"{do or topics} cannot end unknown, yet an 'unknown' route is given")
    if raw.optional and (
        op is None or op.permission not in ("none", "read") or op.kind == "stream"
    ):
        raise r.fail(f"only a read can be optional; {do or topics} is not one")
    return Step(do=do, topics=topics, failed=failed, unknown=unknown, optional=raw.optional)


def _check_fan_out(r: _R, topics: str | None, topic: MachineSpec | None) -> None:
    assert topics is not None  # a step without `do` has `topics`
    if topic is None:
        raise r.at("topics").fail("only the session table can fan out to topic writers")
    if topics not in topic.triggers:
        raise r.at("topics").fail(f"{topics!r} is not a trigger of the topic-writer table")
    if topic.triggers[topics].kind != "session":
        raise r.at("topics").fail(
            f"{topics!r} is not a session-kind trigger of the topic-writer table"
        )


def _failed_route(
    r: _R,
    raw: str | Mapping[str, str] | None,
    kinds: Mapping[str, str],
    triggers: Mapping[str, TriggerSpec],
) -> FailedRoute:
    if raw is None:
        raise r.fail("missing route 'failed': every failure must be routed explicitly")
    if isinstance(raw, str):
        return FailedRoute(_route(r.at("failed"), raw, triggers))
    if "any" not in raw:
        raise r.at("failed").fail("a per-kind failed route needs an 'any' entry")
    for kind in raw:
        if kind != "any" and kind not in kinds:
            raise r.at("failed").fail(f"unknown error kind {kind!r}")
    by_kind = {
        kind: _route(r.at(f"failed.{kind}"), route, triggers)
        for kind, route in raw.items()
        if kind != "any"
    }
    return FailedRoute(_route(r.at("failed.any"), raw["any"], triggers), by_kind)


def _unknown_route(
    r: _R,
    raw: str | schema.VerdictRoutes | None,
    op: Operation | None,
    triggers: Mapping[str, TriggerSpec],
) -> str | ProbeRoute:
    """A lost reply: a route, or, for an operation a probe settles, the routes of the probe's
    verdicts (each "continue" unless the step names another)."""
    ur = r.at("unknown")
    if isinstance(raw, str):
        return _route(ur, raw, triggers)
    if op is None or op.probe is None:
        raise r.fail(
            "missing route 'unknown': a lost reply must be routed explicitly"
            if raw is None
            else f"no probe settles {op.name if op else 'a topics step'}: 'unknown' is a route"
        )
    verdicts = schema.VerdictRoutes() if raw is None else raw
    routes = []
    for verdict in VERDICTS:
        route = getattr(verdicts, verdict)
        if route == CONTINUE:
            raise ur.at(verdict).fail("'continue' is what a verdict routes to unless told: drop it")
        routes.append(_route(ur.at(verdict), route or CONTINUE, triggers))
    return ProbeRoute(op.probe, *routes)


def _triggers(file: str, raw: Mapping[str, schema.TriggerEntry]) -> dict[str, TriggerSpec]:
    if not raw:
        raise SpecError(file, "triggers", "-", "no trigger declared")
    return {name: TriggerSpec(name, t.kind, t.doc) for name, t in raw.items()}


def _row_label(i: int, row: schema.RowEntry) -> str:
    return f"transitions[{i}] ({row.id})"


def _transitions(
    file: str,
    raw: schema.MachineFile,
    states: tuple[str, ...],
    context: Mapping[str, ContextVar],
    triggers: Mapping[str, TriggerSpec],
    steps_of: Any,
) -> list[Transition]:
    transitions: list[Transition] = []
    seen_ids: set[str] = set()
    for i, row in enumerate(raw.transitions):
        tr = _R(file, "transitions", _row_label(i, row))
        if row.id in seen_ids:
            raise tr.fail(f"duplicate id {row.id!r}")
        seen_ids.add(row.id)
        for s in row.source:
            if s not in states:
                raise tr.fail(f"source {s!r} is not a state")
        if row.trigger not in triggers:
            raise tr.fail(f"trigger {row.trigger!r} is not declared under [triggers]")
        _check_guards(tr, row.when, context)
        if row.dest != "=" and row.dest not in states:
            raise tr.fail(f"dest {row.dest!r} is not a state")
        if triggers[row.trigger].kind == "route" and row.error != "cause":
            raise tr.fail("a route row raises the failure that routed to it: error must be 'cause'")
        steps = tuple(steps_of(tr, row))
        transitions += [
            Transition(
                row.id,
                s,
                row.trigger,
                dict(row.when),
                s if row.dest == "=" else row.dest,
                row.error,
                steps,
                row.doc,
            )
            for s in row.source
        ]
    return transitions


def _check_guards(tr: _R, when: Mapping[str, str], context: Mapping[str, ContextVar]) -> None:
    for var, value in when.items():
        if var not in context:
            raise tr.fail(f"guard on unknown context variable {var!r}")
        if value not in context[var].values:
            raise tr.fail(f"guard {var} = {value!r} is not one of {list(context[var].values)}")


def _machine(
    file: str,
    raw: schema.MachineFile,
    ops: Mapping[str, Operation],
    kinds: Mapping[str, str],
    topic: MachineSpec | None,
    vocabulary: Vocabulary,
) -> MachineSpec:
    head = raw.machine
    r = _R(file, "machine", "-")
    if head.name != file.removesuffix(".toml"):
        raise r.at("name").fail(f"the machine of {file} is named {file.removesuffix('.toml')!r}")
    members = _enum_members(r.at("enum"), head.enum, vocabulary)
    if set(head.states) != set(members) or len(head.states) != len(members):
        raise r.at("states").fail(
            f"states must be exactly the members of {head.enum}: {list(members)}"
        )
    if head.initial not in head.states:
        raise r.at("initial").fail(f"{head.initial!r} is not a state")
    terminals = frozenset(head.terminals)
    if not terminals <= set(head.states):
        raise r.at("terminals").fail(f"not states: {sorted(terminals - set(head.states))}")
    context = _variables(_R(file, "context", "-"), raw.context, vocabulary)
    triggers = _triggers(file, raw.triggers)

    def steps_of(tr: _R, row: schema.RowEntry) -> list[Step]:
        return [
            _step(tr.at(f"steps[{j}]"), s, ops, kinds, triggers, topic)
            for j, s in enumerate(row.steps)
        ]

    return MachineSpec(
        name=head.name,
        file=file,
        enum=head.enum,
        doc=head.doc,
        states=head.states,
        initial=head.initial,
        terminals=terminals,
        context=context,
        triggers=triggers,
        transitions=tuple(_transitions(file, raw, head.states, context, triggers, steps_of)),
    )


# ---------------------------------------------------------------------------------------------
# resources.toml


def _resources(
    raw: schema.ResourcesFile,
    ops: Mapping[str, Operation],
    kinds: Mapping[str, str],
    vocabulary: Vocabulary,
) -> dict[str, ResourceSpec]:
    out = {}
    for name, entry in raw.resources.items():
        r = _R("resources.toml", f"resources.{name}", "-")
        if entry.initial not in entry.states:
            raise r.at("initial").fail(f"{entry.initial!r} is not a state")
        for e in entry.events:
            if e not in ops and e not in SERVER_EVENTS:
                raise r.at("events").fail(f"{e!r} is neither an operation nor a server event")
        locked = frozenset(entry.locked)
        if not locked <= set(entry.states):
            raise r.at("locked").fail(f"not states: {sorted(locked - set(entry.states))}")
        facts = _variables(
            _R("resources.toml", f"resources.{name}.facts", "-"), entry.facts, vocabulary
        )
        rows = [
            resource_row
            for i, row in enumerate(entry.rows)
            for resource_row in _resource_rows(
                _R("resources.toml", f"resources.{name}.rows", f"[{i}]"), row, entry, facts, kinds
            )
        ]
        out[name] = ResourceSpec(
            name=name,
            doc=entry.doc,
            states=entry.states,
            initial=entry.initial,
            events=entry.events,
            locked=locked,
            facts=facts,
            rows=tuple(rows),
        )
    return out


def _resource_rows(
    rr: _R,
    row: schema.ResourceRowEntry,
    resource: schema.ResourceEntry,
    facts: Mapping[str, ContextVar],
    kinds: Mapping[str, str],
) -> list[ResourceRow]:
    """One written row, expanded to a `ResourceRow` per source and event."""
    for var, value in row.when.items():
        if var not in facts or value not in facts[var].values:
            raise rr.fail(f"guard {var} = {value!r} is not a declared fact value")
    if (row.dest is None) == (row.error is None):
        raise rr.fail("a row has exactly one of 'dest' and 'error'")
    if row.error is not None and row.error not in kinds:
        raise rr.fail(f"unknown error kind {row.error!r}")
    if row.dest is not None and row.dest != "=" and row.dest not in resource.states:
        raise rr.fail(f"dest {row.dest!r} is not a state")
    for source in row.source:
        if source not in resource.states:
            raise rr.fail(f"source {source!r} is not a state")
    for event in row.event:
        if event not in resource.events:
            raise rr.fail(f"event {event!r} is not declared in 'events'")
    return [
        ResourceRow(
            source=source,
            event=event,
            when=dict(row.when),
            dest=source if row.dest == "=" else row.dest,
            error=row.error,
            doc=row.doc,
        )
        for source in row.source
        for event in row.event
    ]


# ---------------------------------------------------------------------------------------------
# deviations.toml


def _query_patch(
    r: _R, raw: schema.QueryPatch, grammar: QueryGrammar, kinds: Mapping[str, str]
) -> Patch:
    if raw.query not in grammar.kinds:
        raise r.fail(f"unknown query field kind {raw.query!r}")
    if raw.operator not in grammar.operators:
        raise r.fail(f"unknown query operator {raw.operator!r}")
    if (raw.semantics is None) == (raw.error is None):
        raise r.fail("a query patch has exactly one of 'semantics' and 'error'")
    if raw.semantics is not None and raw.semantics not in SEMANTICS:
        raise r.fail(f"semantics must be one of {SEMANTICS}, got {raw.semantics!r}")
    if raw.error is not None and raw.error not in kinds:
        raise r.fail(f"unknown error kind {raw.error!r}")
    return Patch(query=raw.query, operator=raw.operator, semantics=raw.semantics, error=raw.error)


def _patch(
    r: _R,
    raw: schema.PatchEntry,
    resources_: Mapping[str, ResourceSpec],
    ops: Mapping[str, Operation],
    kinds: Mapping[str, str],
    grammar: QueryGrammar,
    vocabulary: Vocabulary,
) -> Patch:
    if isinstance(raw, schema.QueryPatch):
        return _query_patch(r, raw, grammar, kinds)
    if isinstance(raw, schema.SettingPatch):
        return _setting_patch(r, raw)
    if isinstance(raw, schema.PermissionPatch):
        if raw.operation not in ops:
            raise r.fail(f"unknown operation {raw.operation!r}")
        if raw.permission not in (*vocabulary.permissions, "none"):
            raise r.fail(f"unknown permission {raw.permission!r}")
        return Patch(operation=raw.operation, permission=raw.permission)
    return _cell_patch(r, raw, resources_, kinds)


def _setting_patch(r: _R, raw: schema.SettingPatch) -> Patch:
    if raw.setting not in SERVER_SETTINGS:
        raise r.fail(f"unknown server setting {raw.setting!r}")
    allowed = SERVER_SETTINGS[raw.setting]
    if not any(type(raw.value) is type(a) and raw.value == a for a in allowed):
        raise r.at("value").fail(f"must be one of {allowed}, got {raw.value!r}")
    return Patch(setting=raw.setting, value=raw.value)


def _cell_patch(
    r: _R,
    raw: schema.CellPatch,
    resources_: Mapping[str, ResourceSpec],
    kinds: Mapping[str, str],
) -> Patch:
    if raw.resource not in resources_:
        raise r.fail(f"unknown resource {raw.resource!r}")
    spec = resources_[raw.resource]
    when = dict(raw.when)
    here = [row for row in spec.rows if row.source == raw.source and row.event == raw.event]
    if not [row for row in here if row.when == when or row.matches(when)]:
        raise r.fail(
            f"no row of {raw.resource} matches source={raw.source!r} event={raw.event!r} "
            f"when={when}"
        )
    if (raw.dest is None) == (raw.error is None):
        raise r.fail("a patch has exactly one of 'dest' and 'error'")
    if raw.dest is not None and raw.dest not in spec.states:
        raise r.fail(f"dest {raw.dest!r} is not a state of {raw.resource}")
    if raw.error is not None and raw.error not in kinds:
        raise r.fail(f"unknown error kind {raw.error!r}")
    return Patch(
        resource=raw.resource,
        source=raw.source,
        event=raw.event,
        when=when,
        dest=raw.dest,
        error=raw.error,
    )


def _deviations(
    raw: schema.DeviationsFile,
    resources_: Mapping[str, ResourceSpec],
    ops: Mapping[str, Operation],
    kinds: Mapping[str, str],
    grammar: QueryGrammar,
    vocabulary: Vocabulary,
) -> dict[str, Deviation]:
    out: dict[str, Deviation] = {}
    for i, entry in enumerate(raw.deviations):
        r = _R("deviations.toml", "deviations", f"[{i}] ({entry.id})")
        if entry.id in out:
            raise r.fail(f"duplicate id {entry.id!r}")
        if entry.who not in vocabulary.parties:
            raise r.fail(f"who must be one of {vocabulary.parties}, got {entry.who!r}")
        patches = tuple(
            _patch(r.at(f"patch[{j}]"), p, resources_, ops, kinds, grammar, vocabulary)
            for j, p in enumerate(entry.patch)
        )
        signature = entry.signature.written()
        if entry.who in vocabulary.client_parties and not signature:
            raise r.fail("a client deviation needs a signature")
        for key in ("extra", "after", "missing", "failed"):
            if key in signature and signature[key] not in ops:
                raise r.at(f"signature.{key}").fail(f"unknown operation {signature[key]!r}")
        if entry.who in vocabulary.server_parties and not patches:
            raise r.fail("a server deviation needs a patch")
        out[entry.id] = Deviation(
            id=entry.id,
            who=entry.who,
            summary=entry.summary,
            spec=entry.spec,
            actual=entry.actual,
            sources=entry.sources,
            patch=patches,
            signature=signature,
        )
    return out


def _profiles(
    raw: schema.DeviationsFile, deviations: Mapping[str, Deviation], vocabulary: Vocabulary
) -> dict[str, Profile]:
    if "spec" not in raw.profiles:
        raise SpecError("deviations.toml", "profiles", "-", "without the 'spec' profile")
    profiles = {}
    for name, entry in raw.profiles.items():
        r = _R("deviations.toml", f"profiles.{name}", "-")
        for did in entry.deviations:
            if did not in deviations:
                raise r.fail(f"unknown deviation {did!r}")
            if deviations[did].who not in vocabulary.server_parties:
                raise r.fail(f"{did} is a client deviation; a server profile cannot emulate it")
        profiles[name] = Profile(name, entry.doc, entry.deviations)
    return profiles
