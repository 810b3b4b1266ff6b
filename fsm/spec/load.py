"""Read `specs/*.toml` into a validated `Spec`.

Structural problems (a missing key, a wrong type, a reference to something that does not
exist) raise `SpecError` naming the file, the table and the entry. Graph properties
(determinism, reachability, complete routing) are checked by `fsm.spec.soundness`; `load_spec`
runs those too unless asked not to.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar, cast

import attrs

from fsm.errors import SpecError
from fsm.outcome import ErrorKind
from fsm.spec.model import (
    CONTINUE,
    STOP,
    ContextVar,
    Deviation,
    ErrorCase,
    ErrorMode,
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
MACHINE_FILES = ("session.toml", "topic_writer.toml")
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
SIGNATURE_KEYS = (
    "extra",
    "after",
    "missing",
    "failed",
    "policy",
    "records_lost",
    "bytes_over",
    "push_after_failed_stream",
    "api",
)

T = TypeVar("T")


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
    version = _versions(documents)
    actions = documents["actions.toml"]
    error_kinds = _error_kinds(actions)
    field_types = _str_map(_R("actions.toml", "field_types", "-"), actions.get("field_types"))
    limits = _limits(actions)
    operations = _operations(actions, error_kinds, field_types, v, limits)
    probes = _probes(actions, operations)
    operations = {
        name: attrs.evolve(op, probe=next((p for p in probes if probes[p].settles == name), None))
        for name, op in operations.items()
    }
    common = tuple(
        _error_case(_R("actions.toml", "common_errors", f"[{i}]"), raw, error_kinds)
        for i, raw in enumerate(
            _list(_R("actions.toml", "common_errors", "-"), actions.get("common_errors"))
        )
    )
    topic = _machine(documents, "topic_writer.toml", operations, error_kinds, None, v)
    session = _machine(documents, "session.toml", operations, error_kinds, topic, v)
    resources_ = _resources(documents["resources.toml"], operations, error_kinds, v)
    grammar = parse_query_grammar(documents["query.toml"], error_kinds)
    deviations, profiles = _deviations(
        documents["deviations.toml"], resources_, operations, error_kinds, grammar, v
    )
    spec = Spec(
        version=version,
        machines={session.name: session, topic.name: topic},
        operations=operations,
        error_kinds=error_kinds,
        field_types=field_types,
        common_errors=common,
        probes=probes,
        resources=resources_,
        deviations=deviations,
        profiles=profiles,
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
# A small reader that knows where it is, so every error names file, table and entry.


class _R:
    def __init__(self, file: str, table: str, entry: str) -> None:
        self.file, self.table, self.entry = file, table, entry

    def at(self, entry: str) -> _R:
        """A reader for a part of the current entry (its name is appended)."""
        return _R(self.file, self.table, entry if self.entry == "-" else f"{self.entry}.{entry}")

    def fail(self, problem: str) -> SpecError:
        return SpecError(self.file, self.table, self.entry, problem)


def _typed(r: _R, value: Any, kind: type[T], what: str) -> T:
    if not isinstance(value, kind) or (kind is str and not value):
        raise r.fail(f"{what} must be a non-empty {kind.__name__}, got {value!r}")
    return value


def _table(r: _R, value: Any, what: str = "a table") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise r.fail(f"expected {what}, got {value!r}")
    return value


def _key(r: _R, raw: Any, key: str, kind: type[T]) -> T:
    if key not in _table(r, raw):
        raise r.fail(f"missing key {key!r}")
    return _typed(r, raw[key], kind, repr(key))


def _list(r: _R, value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise r.fail(f"expected an array, got {value!r}")
    return value


def _names(r: _R, value: Any, what: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else _list(r, value)
    if not items or not all(isinstance(v, str) and v for v in items):
        raise r.fail(f"{what} must be a name or a non-empty array of names, got {value!r}")
    return tuple(items)


def _str_map(r: _R, value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise r.fail(f"expected a table of strings, got {value!r}")
    return dict(value)


def _unknown_keys(r: _R, raw: Mapping[str, Any], allowed: Iterable[str]) -> None:
    extra = sorted(set(raw) - set(allowed))
    if extra:
        raise r.fail(f"unknown key(s) {', '.join(extra)}")


def _versions(documents: Mapping[str, Mapping[str, Any]]) -> str:
    versions = {}
    for name in SPEC_FILES:
        versions[name] = _key(_R(name, "-", "spec_version"), documents[name], "spec_version", str)
    distinct = set(versions.values())
    if len(distinct) != 1:
        raise SpecError("deviations.toml", "-", "spec_version", f"files disagree: {versions}")
    return distinct.pop()


# ---------------------------------------------------------------------------------------------
# actions.toml


def _error_kinds(doc: Mapping[str, Any]) -> dict[str, str]:
    r = _R("actions.toml", "error_kinds", "-")
    raw = doc.get("error_kinds")
    if not isinstance(raw, dict):
        raise r.fail("missing table")
    kinds = {}
    for name, entry in raw.items():
        e = r.at(name)
        kinds[name] = _key(e, entry, "grpc", str)
        _unknown_keys(e, entry, ("grpc", "doc"))
        _key(e, entry, "doc", str)
    expected = {k.value for k in ErrorKind}
    if set(kinds) != expected:
        raise r.fail(f"kinds must be exactly those of fsm.ErrorKind: {sorted(expected)}")
    return kinds


def _error_case(r: _R, raw: Any, kinds: Mapping[str, str]) -> ErrorCase:
    if not isinstance(raw, dict):
        raise r.fail(f"an error case must be a table, got {raw!r}")
    kind = _key(r, raw, "kind", str)
    if kind not in kinds:
        raise r.fail(f"unknown error kind {kind!r}")
    return ErrorCase(kind=kind, when=_key(r, raw, "when", str))


def _limits(doc: Mapping[str, Any]) -> dict[str, Limit]:
    r = _R("actions.toml", "limits", "-")
    limits = {}
    for name, raw in _table(r, doc.get("limits", {})).items():
        e = r.at(name)
        entry = _table(e, raw)
        _unknown_keys(e, entry, ("value", "doc"))
        value = _key(e, entry, "value", int)
        if isinstance(value, bool) or value < 1:
            raise e.at("value").fail(f"must be a positive integer, got {value!r}")
        limits[name] = Limit(name, value, _key(e, entry, "doc", str))
    return limits


def _operations(
    doc: Mapping[str, Any],
    kinds: Mapping[str, str],
    field_types: Mapping[str, str],
    vocabulary: Vocabulary,
    limits: Mapping[str, Limit],
) -> dict[str, Operation]:
    table = doc.get("operations")
    if not isinstance(table, dict):
        raise SpecError("actions.toml", "operations", "-", "missing table")
    ops: dict[str, Operation] = {}
    for name, raw in table.items():
        r = _R("actions.toml", f"operations.{name}", "-")
        _unknown_keys(
            r,
            _table(r, raw),
            (
                "kind",
                "wire",
                "permission",
                "response",
                "outcomes",
                "doc",
                "request",
                "errors",
            ),
        )
        kind = _key(r, raw, "kind", str)
        if kind not in ("action", "rpc", "stream"):
            raise r.at("kind").fail(f"must be action, rpc or stream, got {kind!r}")
        permission = _key(r, raw, "permission", str)
        if permission not in (*vocabulary.permissions, "none"):
            raise r.at("permission").fail(f"unknown permission {permission!r}")
        outcomes = frozenset(_names(r.at("outcomes"), raw.get("outcomes"), "outcomes"))
        if not outcomes <= {"ok", "failed", "unknown"}:
            raise r.at("outcomes").fail(
                f"outcomes must be among ok, failed, unknown: {sorted(outcomes)}"
            )
        fields = []
        for i, f in enumerate(_list(r.at("request"), raw.get("request", []))):
            fr = r.at(f"request[{i}]")
            ftype = _key(fr, f, "type", str)
            _unknown_keys(fr, f, ("name", "type", "required", "limit"))
            if ftype not in field_types:
                raise fr.fail(f"unknown field type {ftype!r}")
            required = _typed(fr.at("required"), f.get("required", False), bool, "'required'")
            limit = _typed(fr.at("limit"), f["limit"], str, "'limit'") if "limit" in f else None
            if limit is not None and limit not in limits:
                raise fr.at("limit").fail(f"unknown limit {limit!r}")
            fields.append(Field(_key(fr, f, "name", str), ftype, required, limit))
        if "response" not in raw:
            raise r.fail("missing key 'response'")
        ops[name] = Operation(
            name=name,
            kind=cast(Any, kind),
            wire=_key(r, raw, "wire", str),
            permission=permission,
            request=tuple(fields),
            response=raw["response"],
            outcomes=outcomes,
            probe=None,
            errors=tuple(
                _error_case(r.at(f"errors[{i}]"), e, kinds)
                for i, e in enumerate(_list(r.at("errors"), raw.get("errors")))
            ),
            doc=_key(r, raw, "doc", str),
        )
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
    return ops


def _probes(doc: Mapping[str, Any], ops: Mapping[str, Operation]) -> dict[str, Probe]:
    """The probes, each the one read that settles the operation it names in `settles`."""
    table = doc.get("probes")
    if not isinstance(table, dict):
        raise SpecError("actions.toml", "probes", "-", "missing table")
    probes: dict[str, Probe] = {}
    for name, raw in table.items():
        r = _R("actions.toml", f"probes.{name}", "-")
        settles = _key(r, raw, "settles", str)
        _unknown_keys(r, raw, ("settles", "reads", "applied_when"))
        reads = _key(r, raw, "reads", str)
        for what, target in (("settles", settles), ("reads", reads)):
            if target not in ops:
                raise r.at(what).fail(f"unknown operation {target!r}")
        other = next((p.name for p in probes.values() if p.settles == settles), None)
        if other is not None:
            raise r.at("settles").fail(f"{settles} is settled by probe {other!r} already")
        if "unknown" not in ops[settles].outcomes:
            raise r.at("settles").fail(f"{settles} cannot end unknown per its 'outcomes'")
        probes[name] = Probe(name, settles, reads, _key(r, raw, "applied_when", str))
    return probes


# ---------------------------------------------------------------------------------------------
# session.toml, topic_writer.toml


def _context(r: _R, raw: Any, vocabulary: Vocabulary) -> dict[str, ContextVar]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise r.fail("must be a table of variables")
    out = {}
    for name, var in raw.items():
        vr = r.at(name)
        if not isinstance(var, dict):
            raise vr.fail("must be a table with 'values'")
        _unknown_keys(vr, var, ("values", "enum", "doc"))
        values = _names(vr, var.get("values"), "values")
        enum_name = var.get("enum")
        if enum_name is not None:
            members = _enum_members(vr, enum_name, vocabulary)
            if set(values) != set(members):
                raise vr.fail(f"values must be the members of {enum_name}: {members}")
        out[name] = ContextVar(name, values, enum_name, str(var.get("doc", "")))
    return out


def _enum_members(r: _R, enum_name: Any, vocabulary: Vocabulary) -> tuple[str, ...]:
    members = vocabulary.members(str(enum_name))
    if members is None:
        raise r.fail(f"unknown enum {enum_name!r}")
    return members


def _route(r: _R, value: Any, triggers: Mapping[str, TriggerSpec]) -> str:
    route = _typed(r, value, str, "a route")
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
    raw: Any,
    ops: Mapping[str, Operation],
    kinds: Mapping[str, str],
    triggers: Mapping[str, TriggerSpec],
    topic: MachineSpec | None,
) -> Step:
    if not isinstance(raw, dict):
        raise r.fail("a step must be a table")
    _unknown_keys(r, raw, ("do", "topics", "failed", "unknown"))
    do, topics = raw.get("do"), raw.get("topics")
    if (do is None) == (topics is None):
        raise r.fail("a step has exactly one of 'do' and 'topics'")
    outcomes: frozenset[str]
    if do is not None:
        if not isinstance(do, str) or do not in ops:
            raise r.at("do").fail(f"unknown operation {do!r}")
        outcomes = ops[do].outcomes
    else:
        if topic is None:
            raise r.at("topics").fail("only the session table can fan out to topic writers")
        if not isinstance(topics, str) or topic.triggers.get(topics) is None:
            raise r.at("topics").fail(f"{topics!r} is not a trigger of the topic-writer table")
        if topic.triggers[topics].kind != "session":
            raise r.at("topics").fail(
                f"{topics!r} is not a session-kind trigger of the topic-writer table"
            )
        outcomes = frozenset({"ok", "failed"})
    if "failed" not in outcomes:
        raise r.fail(f"{do or topics} cannot fail per the catalogue")
    failed = _failed_route(r, raw.get("failed"), kinds, triggers)
    raw_unknown = raw.get("unknown")
    unknown: str | ProbeRoute | None = None
    if "unknown" in outcomes:
        unknown = _unknown_route(r, raw_unknown, ops[do] if do is not None else None, triggers)
    elif raw_unknown is not None:
        raise r.fail(f"{do or topics} cannot end unknown, yet an 'unknown' route is given")
    return Step(do=do, topics=topics, failed=failed, unknown=unknown)


def _failed_route(
    r: _R, raw_failed: Any, kinds: Mapping[str, str], triggers: Mapping[str, TriggerSpec]
) -> FailedRoute:
    if isinstance(raw_failed, dict):
        if "any" not in raw_failed:
            raise r.at("failed").fail("a per-kind failed route needs an 'any' entry")
        by_kind = {}
        for kind, route in raw_failed.items():
            if kind != "any" and kind not in kinds:
                raise r.at("failed").fail(f"unknown error kind {kind!r}")
            if kind != "any":
                by_kind[kind] = _route(r.at(f"failed.{kind}"), route, triggers)
        return FailedRoute(_route(r.at("failed.any"), raw_failed["any"], triggers), by_kind)
    if raw_failed is None:
        raise r.fail("missing route 'failed': every failure must be routed explicitly")
    return FailedRoute(_route(r.at("failed"), raw_failed, triggers))


VERDICTS = ("applied", "not_applied", "unresolved")


def _unknown_route(
    r: _R,
    raw_unknown: Any,
    op: Operation | None,
    triggers: Mapping[str, TriggerSpec],
) -> str | ProbeRoute:
    """A lost reply: a route, or, for an operation a probe settles, the routes of the probe's
    verdicts (each "continue" unless the step names another)."""
    ur = r.at("unknown")
    if isinstance(raw_unknown, str):
        return _route(ur, raw_unknown, triggers)
    if op is None or op.probe is None:
        raise r.fail(
            "missing route 'unknown': a lost reply must be routed explicitly"
            if raw_unknown is None
            else f"no probe settles {op.name if op else 'a topics step'}: 'unknown' is a route"
        )
    verdicts = {} if raw_unknown is None else _table(ur, raw_unknown, "a table of verdict routes")
    if "probe" in verdicts:
        raise ur.at("probe").fail(
            f"the probe is not named in a row: {op.name} is settled by {op.probe!r} "
            "(actions.toml, [probes])"
        )
    _unknown_keys(ur, verdicts, VERDICTS)
    for verdict, route in verdicts.items():
        if route == CONTINUE:
            raise ur.at(verdict).fail("'continue' is what a verdict routes to unless told: drop it")
    return ProbeRoute(
        op.probe,
        *(_route(ur.at(k), verdicts.get(k, CONTINUE), triggers) for k in VERDICTS),
    )


def _triggers(file: str, raw_triggers: Any) -> dict[str, TriggerSpec]:
    if not isinstance(raw_triggers, dict) or not raw_triggers:
        raise SpecError(file, "triggers", "-", "missing table")
    triggers = {}
    for tname, traw in raw_triggers.items():
        tr = _R(file, "triggers", tname)
        kind = _key(tr, traw, "kind", str)
        _unknown_keys(tr, traw, ("kind", "doc"))
        if kind not in ("user", "session", "route"):
            raise tr.fail(f"kind must be user, session or route, got {kind!r}")
        triggers[tname] = TriggerSpec(tname, cast(Any, kind), _key(tr, traw, "doc", str))
    return triggers


def _guards(tr: _R, when: Any, context: Mapping[str, ContextVar]) -> dict[str, str]:
    if not isinstance(when, dict):
        raise tr.fail("'when' must be a table")
    for var, value in when.items():
        if var not in context:
            raise tr.fail(f"guard on unknown context variable {var!r}")
        if value not in context[var].values:
            raise tr.fail(f"guard {var} = {value!r} is not one of {list(context[var].values)}")
    return when


def _error_mode(tr: _R, raw: Mapping[str, Any], trigger: TriggerSpec) -> ErrorMode:
    error = _key(tr, raw, "error", str)
    if error not in ("none", "cause", "propagate", "suppress"):
        raise tr.fail(f"error must be none, cause, propagate or suppress, got {error!r}")
    if trigger.kind == "route" and error != "cause":
        raise tr.fail("a route row raises the failure that routed to it: error must be 'cause'")
    return cast(ErrorMode, error)


def _machine(
    documents: Mapping[str, Mapping[str, Any]],
    file: str,
    ops: Mapping[str, Operation],
    kinds: Mapping[str, str],
    topic: MachineSpec | None,
    vocabulary: Vocabulary,
) -> MachineSpec:
    doc = documents[file]
    r = _R(file, "machine", "-")
    head = doc.get("machine")
    if not isinstance(head, dict):
        raise r.fail("missing table")
    _unknown_keys(r, head, ("name", "enum", "doc", "states", "initial", "terminals"))
    name = _key(r, head, "name", str)
    if name != file.removesuffix(".toml"):
        raise r.at("name").fail(f"the machine of {file} is named {file.removesuffix('.toml')!r}")
    enum_name = _key(r, head, "enum", str)
    states = _names(r.at("states"), head.get("states"), "states")
    members = _enum_members(r.at("enum"), enum_name, vocabulary)
    if set(states) != set(members) or len(states) != len(members):
        raise r.at("states").fail(
            f"states must be exactly the members of {enum_name}: {list(members)}"
        )
    initial = _key(r, head, "initial", str)
    if initial not in states:
        raise r.at("initial").fail(f"{initial!r} is not a state")
    terminals = frozenset(_names(r.at("terminals"), head.get("terminals"), "terminals"))
    if not terminals <= set(states):
        raise r.at("terminals").fail(f"not states: {sorted(terminals - set(states))}")
    context = _context(_R(file, "context", "-"), doc.get("context"), vocabulary)
    triggers = _triggers(file, doc.get("triggers"))
    transitions: list[Transition] = []
    seen_ids: set[str] = set()
    for i, raw in enumerate(_list(_R(file, "transitions", "-"), doc.get("transitions"))):
        label = f"transitions[{i}]"
        if isinstance(raw, dict) and isinstance(raw.get("id"), str):
            label += f" ({raw['id']})"
        tr = _R(file, "transitions", label)
        if not isinstance(raw, dict):
            raise tr.fail("a transition must be a table")
        _unknown_keys(tr, raw, ("id", "source", "trigger", "when", "dest", "error", "doc", "steps"))
        tid = _key(tr, raw, "id", str)
        if tid in seen_ids:
            raise tr.fail(f"duplicate id {tid!r}")
        seen_ids.add(tid)
        sources = _names(tr.at("source"), raw.get("source"), "source")
        for s in sources:
            if s not in states:
                raise tr.fail(f"source {s!r} is not a state")
        trigger = _key(tr, raw, "trigger", str)
        if trigger not in triggers:
            raise tr.fail(f"trigger {trigger!r} is not declared under [triggers]")
        when = _guards(tr, raw.get("when", {}), context)
        dest = _key(tr, raw, "dest", str)
        if dest != "=" and dest not in states:
            raise tr.fail(f"dest {dest!r} is not a state")
        error = _error_mode(tr, raw, triggers[trigger])
        steps = tuple(
            _step(tr.at(f"steps[{j}]"), s, ops, kinds, triggers, topic)
            for j, s in enumerate(_list(tr, raw.get("steps")))
        )
        doc_ = _key(tr, raw, "doc", str)
        transitions += [
            Transition(tid, s, trigger, dict(when), s if dest == "=" else dest, error, steps, doc_)
            for s in sources
        ]
    return MachineSpec(
        name=name,
        file=file,
        enum=enum_name,
        doc=_key(r, head, "doc", str),
        states=states,
        initial=initial,
        terminals=terminals,
        context=context,
        triggers=triggers,
        transitions=tuple(transitions),
    )


# ---------------------------------------------------------------------------------------------
# resources.toml


def _resources(
    doc: Mapping[str, Any],
    ops: Mapping[str, Operation],
    kinds: Mapping[str, str],
    vocabulary: Vocabulary,
) -> dict[str, ResourceSpec]:
    table = doc.get("resources")
    if not isinstance(table, dict):
        raise SpecError("resources.toml", "resources", "-", "missing table")
    out = {}
    for name, raw in table.items():
        r = _R("resources.toml", f"resources.{name}", "-")
        _unknown_keys(
            r, _table(r, raw), ("doc", "states", "initial", "events", "locked", "facts", "rows")
        )
        states = _names(r.at("states"), raw.get("states"), "states")
        initial = _key(r, raw, "initial", str)
        if initial not in states:
            raise r.at("initial").fail(f"{initial!r} is not a state")
        events = _names(r.at("events"), raw.get("events"), "events")
        for e in events:
            if e not in ops and e not in SERVER_EVENTS:
                raise r.at("events").fail(f"{e!r} is neither an operation nor a server event")
        locked = (
            frozenset(_names(r.at("locked"), raw["locked"], "locked"))
            if "locked" in raw
            else frozenset()
        )
        if not locked <= set(states):
            raise r.at("locked").fail(f"not states: {sorted(locked - set(states))}")
        facts = _context(
            _R("resources.toml", f"resources.{name}.facts", "-"), raw.get("facts"), vocabulary
        )
        rows = [
            resource_row
            for i, row in enumerate(_list(r.at("rows"), raw.get("rows")))
            for resource_row in _resource_rows(
                _R("resources.toml", f"resources.{name}.rows", f"[{i}]"),
                row,
                states,
                events,
                facts,
                kinds,
            )
        ]
        out[name] = ResourceSpec(
            name=name,
            doc=_key(r, raw, "doc", str),
            states=states,
            initial=initial,
            events=events,
            locked=locked,
            facts=facts,
            rows=tuple(rows),
        )
    return out


def _resource_rows(
    rr: _R,
    row: Any,
    states: tuple[str, ...],
    events: tuple[str, ...],
    facts: Mapping[str, ContextVar],
    kinds: Mapping[str, str],
) -> list[ResourceRow]:
    """One written row, expanded to a `ResourceRow` per source and event."""
    _unknown_keys(rr, _table(rr, row), ("source", "event", "when", "dest", "error", "doc"))
    when = _table(rr.at("when"), row.get("when", {}))
    for var, value in when.items():
        if var not in facts or value not in facts[var].values:
            raise rr.fail(f"guard {var} = {value!r} is not a declared fact value")
    dest, error = row.get("dest"), row.get("error")
    if (dest is None) == (error is None):
        raise rr.fail("a row has exactly one of 'dest' and 'error'")
    if error is not None and error not in kinds:
        raise rr.fail(f"unknown error kind {error!r}")
    rows = []
    for source in _names(rr.at("source"), row.get("source"), "source"):
        if source not in states:
            raise rr.fail(f"source {source!r} is not a state")
        if dest is not None and dest != "=" and dest not in states:
            raise rr.fail(f"dest {dest!r} is not a state")
        for event in _names(rr.at("event"), row.get("event"), "event"):
            if event not in events:
                raise rr.fail(f"event {event!r} is not declared in 'events'")
            rows.append(
                ResourceRow(
                    source=source,
                    event=event,
                    when=dict(when),
                    dest=source if dest == "=" else dest,
                    error=error,
                    doc=str(row.get("doc", "")),
                )
            )
    return rows


# ---------------------------------------------------------------------------------------------
# deviations.toml


def _query_patch(
    r: _R, raw: Mapping[str, Any], grammar: QueryGrammar, kinds: Mapping[str, str]
) -> Patch:
    _unknown_keys(r, raw, ("query", "operator", "semantics", "error"))
    kind, operator = raw.get("query"), raw.get("operator")
    if kind not in grammar.kinds:
        raise r.fail(f"unknown query field kind {kind!r}")
    if operator not in grammar.operators:
        raise r.fail(f"unknown query operator {operator!r}")
    semantics, error = raw.get("semantics"), raw.get("error")
    if (semantics is None) == (error is None):
        raise r.fail("a query patch has exactly one of 'semantics' and 'error'")
    if semantics is not None and semantics not in SEMANTICS:
        raise r.fail(f"semantics must be one of {SEMANTICS}, got {semantics!r}")
    if error is not None and error not in kinds:
        raise r.fail(f"unknown error kind {error!r}")
    return Patch(query=kind, operator=operator, semantics=semantics, error=error)


def _patch(
    r: _R,
    raw: Any,
    resources_: Mapping[str, ResourceSpec],
    ops: Mapping[str, Operation],
    kinds: Mapping[str, str],
    grammar: QueryGrammar,
    vocabulary: Vocabulary,
) -> Patch:
    if not isinstance(raw, dict):
        raise r.fail("a patch must be a table")
    if "query" in raw:
        return _query_patch(r, raw, grammar, kinds)
    if "setting" in raw:
        return _setting_patch(r, raw)
    if "operation" in raw:
        _unknown_keys(r, raw, ("operation", "permission"))
        if raw["operation"] not in ops:
            raise r.fail(f"unknown operation {raw['operation']!r}")
        if raw.get("permission") not in (*vocabulary.permissions, "none"):
            raise r.fail(f"unknown permission {raw.get('permission')!r}")
        return Patch(operation=raw["operation"], permission=raw["permission"])
    return _resource_patch(r, raw, resources_, kinds)


def _setting_patch(r: _R, raw: Mapping[str, Any]) -> Patch:
    _unknown_keys(r, raw, ("setting", "value"))
    if raw["setting"] not in SERVER_SETTINGS:
        raise r.fail(f"unknown server setting {raw['setting']!r}")
    value = raw.get("value")
    allowed = SERVER_SETTINGS[raw["setting"]]
    if not any(type(value) is type(a) and value == a for a in allowed):
        raise r.at("value").fail(f"must be one of {allowed}, got {value!r}")
    return Patch(setting=raw["setting"], value=value)


def _resource_patch(
    r: _R, raw: Mapping[str, Any], resources_: Mapping[str, ResourceSpec], kinds: Mapping[str, str]
) -> Patch:
    _unknown_keys(r, raw, ("resource", "source", "event", "when", "dest", "error"))
    resource = raw.get("resource")
    if not isinstance(resource, str) or resource not in resources_:
        raise r.fail(f"unknown resource {resource!r}")
    spec = resources_[resource]
    when = dict(_table(r.at("when"), raw.get("when", {})))
    source, event = raw.get("source"), raw.get("event")
    cells = [
        row for row in spec.rows if row.source == source and row.event == event and row.when == when
    ] or [
        row
        for row in spec.rows
        if row.source == source and row.event == event and row.matches(when)
    ]
    if not cells:
        raise r.fail(f"no row of {resource} matches source={source!r} event={event!r} when={when}")
    dest, error = raw.get("dest"), raw.get("error")
    if (dest is None) == (error is None):
        raise r.fail("a patch has exactly one of 'dest' and 'error'")
    if dest is not None and dest not in spec.states:
        raise r.fail(f"dest {dest!r} is not a state of {resource}")
    if error is not None and error not in kinds:
        raise r.fail(f"unknown error kind {error!r}")
    return Patch(
        resource=resource,
        source=raw["source"],
        event=raw["event"],
        when=when,
        dest=dest,
        error=error,
    )


def _deviations(
    doc: Mapping[str, Any],
    resources_: Mapping[str, ResourceSpec],
    ops: Mapping[str, Operation],
    kinds: Mapping[str, str],
    grammar: QueryGrammar,
    vocabulary: Vocabulary,
) -> tuple[dict[str, Deviation], dict[str, Profile]]:
    out: dict[str, Deviation] = {}
    for i, raw in enumerate(_list(_R("deviations.toml", "deviations", "-"), doc.get("deviations"))):
        r = _R("deviations.toml", "deviations", f"[{i}]")
        _unknown_keys(
            r,
            _table(r, raw),
            ("id", "who", "summary", "spec", "actual", "sources", "patch", "signature"),
        )
        did = _key(r, raw, "id", str)
        r = _R("deviations.toml", "deviations", f"[{i}] ({did})")
        if did in out:
            raise r.fail(f"duplicate id {did!r}")
        who = _key(r, raw, "who", str)
        if who not in vocabulary.parties:
            raise r.fail(f"who must be one of {vocabulary.parties}, got {who!r}")
        patches = tuple(
            _patch(r.at(f"patch[{j}]"), p, resources_, ops, kinds, grammar, vocabulary)
            for j, p in enumerate(_list(r, raw.get("patch")))
        )
        signature = raw.get("signature", {})
        if who in vocabulary.client_parties and not signature:
            raise r.fail("a client deviation needs a signature")
        if not isinstance(signature, dict):
            raise r.fail("signature must be a table")
        _unknown_keys(r.at("signature"), signature, SIGNATURE_KEYS)
        for key in ("extra", "after", "missing", "failed"):
            if key in signature and (
                not isinstance(signature[key], str) or signature[key] not in ops
            ):
                raise r.at(f"signature.{key}").fail(f"unknown operation {signature[key]!r}")
        if who in vocabulary.server_parties and not patches:
            raise r.fail("a server deviation needs a patch")
        out[did] = Deviation(
            id=did,
            who=who,
            summary=_key(r, raw, "summary", str),
            spec=_key(r, raw, "spec", str),
            actual=_key(r, raw, "actual", str),
            sources=_names(r.at("sources"), raw.get("sources"), "sources"),
            patch=patches,
            signature=dict(signature),
        )
    profiles = {}
    raw_profiles = doc.get("profiles")
    if not isinstance(raw_profiles, dict) or "spec" not in raw_profiles:
        raise SpecError(
            "deviations.toml", "profiles", "-", "missing, or without the 'spec' profile"
        )
    for name, raw in raw_profiles.items():
        r = _R("deviations.toml", f"profiles.{name}", "-")
        _unknown_keys(r, _table(r, raw), ("doc", "deviations"))
        ids = tuple(_list(r, raw.get("deviations")))
        for did in ids:
            if did not in out:
                raise r.fail(f"unknown deviation {did!r}")
            if out[did].who not in vocabulary.server_parties:
                raise r.fail(f"{did} is a client deviation; a server profile cannot emulate it")
        profiles[name] = Profile(name, _key(r, raw, "doc", str), ids)
    return out, profiles
