"""Traces: every transition and every step with its outcome, as JSON lines.

Tracing is off unless a `Tracer` is given; when off, the engine does one `is None` test per
transition. A trace can be checked against the tables: `check_trace` replays each record
(state continuity per instance, the row the table gives, the steps and routes that row takes
under the recorded outcomes) and reports the first violation with the row it breaks.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import attrs

from fsm.errors import ArgumentError, ProtocolError
from fsm.jsonlines import JsonLines
from fsm.machines import Plan, Walk
from fsm.outcome import ErrorKind, Outcome, OutcomeStatus, ProbeVerdict
from fsm.spec.model import MachineSpec, Spec, Step, Transition

__all__ = ["TraceReport", "TraceViolation", "Tracer", "check_trace", "read_trace"]

_E = TypeVar("_E", bound=Enum)


class Tracer(JsonLines):
    """Collects trace records in memory and, if given a file, writes them as JSON lines."""

    def record(
        self,
        machine: str,
        instance: str,
        state: str,
        trigger: str,
        context: Mapping[str, str],
        result: Walk,
    ) -> None:
        self.append(
            {
                "machine": machine,
                "instance": instance,
                "state": state,
                "trigger": trigger,
                "context": dict(context),
                "row": result.first.id,
                "taken": result.taken.id,
                "steps": [r.to_json() for r in result.records],
                "dest": result.taken.dest,
                "error": result.taken.error,
            }
        )

    def refused(
        self, machine: str, instance: str, state: str, trigger: str, context: Mapping[str, str]
    ) -> None:
        """Record a trigger the table refused (the state did not change)."""
        self.append(
            {
                "machine": machine,
                "instance": instance,
                "state": state,
                "trigger": trigger,
                "context": dict(context),
                "refused": True,
            }
        )


def read_trace(source: Path | str | Iterable[str]) -> list[dict[str, Any]]:
    """Records from a JSON-lines file or an iterable of lines. A line that is not a JSON
    object (a trace cut off while it was written, say) raises ArgumentError (a ValueError)
    naming its line number."""
    lines: Iterable[str] = (
        Path(source).read_text().splitlines() if isinstance(source, (str, Path)) else source
    )
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ArgumentError(
                f"trace line {number} is not JSON ({exc.msg}); is the trace cut short?"
            ) from None
        if not isinstance(record, dict):
            raise ArgumentError(f"trace line {number} is not a JSON object: {line[:80]!r}")
        records.append(record)
    return records


@attrs.frozen
class TraceViolation:
    """The first record that the tables do not allow (or that is not a trace record)."""

    index: int
    record: Any
    rule: str
    message: str

    def __str__(self) -> str:
        return f"record {self.index}: {self.message} (breaks {self.rule})"


@attrs.frozen
class TraceReport:
    accepted: tuple[str, ...]
    violation: TraceViolation | None

    @property
    def ok(self) -> bool:
        return self.violation is None


class _Stop(Exception):
    """The record breaks `rule`; the message says how. Private control flow, outside the
    error hierarchy: `check_trace` turns it into the report's violation and never raises it."""

    def __init__(self, message: str, rule: str = "") -> None:
        super().__init__(message)
        self.rule = rule


_FORMAT = "the trace format"


def _enum(cls: type[_E], value: object, step: Step, field: str) -> _E:
    try:
        return cls(value)
    except ValueError:
        choices = ", ".join(str(m.value) for m in cls)
        raise _Stop(f"{step.name}: {field} {value!r} is none of {choices}", _FORMAT) from None


def _is_object(value: object) -> bool:
    return type(value) is dict or isinstance(value, Mapping)


class _Replay:
    """Feeds a walk the outcomes and probe verdicts a trace recorded, and checks that the walk
    asks for the steps in the recorded order."""

    def __init__(self, steps: list[Mapping[str, Any]]) -> None:
        self.steps = steps
        self.i = 0

    def _current(self, step: Step) -> Mapping[str, Any]:
        if self.i >= len(self.steps):
            raise _Stop(f"the table runs {step.name} after the recorded steps end")
        recorded = self.steps[self.i]
        if recorded.get("step") != step.name:
            raise _Stop(f"the table runs {step.name} where the trace has {recorded.get('step')}")
        return recorded

    def perform(self, step: Step, row: Transition) -> Outcome:
        recorded = self._current(step)
        status = _enum(OutcomeStatus, recorded.get("outcome", "ok"), step, "outcome")
        kind = recorded.get("kind")
        kind = _enum(ErrorKind, kind, step, "kind") if kind is not None else None
        if status is OutcomeStatus.OK:
            self.i += 1
            return Outcome.ok()
        if status is OutcomeStatus.FAILED:
            self.i += 1
            return Outcome.failed(kind or ErrorKind.INTERNAL, "recorded")
        if "probe" not in recorded:
            self.i += 1
        return Outcome.unknown("recorded", kind or ErrorKind.CANCELLED)

    def probe(self, probe: str, step: Step, row: Transition, outcome: Outcome) -> ProbeVerdict:
        if self.i >= len(self.steps) or "probe" not in self.steps[self.i]:
            raise _Stop(f"the table asks the server ({probe}) where the trace records no probe")
        recorded = self.steps[self.i]
        self.i += 1
        return _enum(ProbeVerdict, recorded["probe"], step, "probe verdict")


def _text(record: Mapping[str, Any], key: str) -> str:
    value = record.get(key)
    if type(value) is not str:
        raise _Stop(f"its {key!r} is {value!r}, not a string", _FORMAT)
    return value


def _context(record: Mapping[str, Any]) -> dict[str, str]:
    context = record.get("context", {})
    if not _is_object(context):
        raise _Stop(f"its 'context' is {context!r}, not an object", _FORMAT)
    return {str(k): str(v) for k, v in context.items()}


def _steps(record: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    steps = record.get("steps", [])
    if not isinstance(steps, list):
        raise _Stop(f"its 'steps' is {steps!r}, not a list", _FORMAT)
    for i, step in enumerate(steps):
        if type(step) is not dict and not isinstance(step, Mapping):
            raise _Stop(f"its step {i} is {step!r}, not an object", _FORMAT)
    return steps


def check_trace(records: Iterable[Any], spec: Spec) -> TraceReport:
    """Replay `records` against the tables: every record accepted, or the first violation.
    A malformed record (not an object, a field missing or of the wrong type, a value no
    enum has) is a violation too, never an exception."""
    accepted: list[str] = []
    states: dict[tuple[str, str], str] = {}
    plans = _plans(spec)
    for index, record in enumerate(records):
        try:
            accepted.append(_check_record(record, spec, states, plans))
        except _Stop as stop:
            rule = stop.rule or "the tables"
            return TraceReport(tuple(accepted), TraceViolation(index, record, rule, str(stop)))
    return TraceReport(tuple(accepted), None)


_PlanKey = tuple[str, str, str, tuple[tuple[str, str], ...]]
# The plan of the row that applies (None when no row does), and why the call is foreign to
# the table (a trigger or context value it does not have), or None.
_Planned = tuple[Plan | None, str | None]
_PLANS: dict[int, tuple[Spec, dict[_PlanKey, _Planned]]] = {}


def _plans(spec: Spec) -> dict[_PlanKey, _Planned]:
    """What `spec`'s tables answer, filled as records ask: (table, state, trigger, context)
    -> the plan of the row that applies and the table's objection to the call. One per spec
    object (a few are kept); the tables are immutable, so are the answers."""
    kept = _PLANS.get(id(spec))
    if kept is not None and kept[0] is spec:
        return kept[1]
    if len(_PLANS) >= 8:
        _PLANS.clear()
    plans: dict[_PlanKey, _Planned] = {}
    _PLANS[id(spec)] = (spec, plans)
    return plans


def _plan(
    plans: dict[_PlanKey, _Planned],
    machine: MachineSpec,
    state: str,
    trigger: str,
    context: Mapping[str, str],
) -> _Planned:
    key = (machine.name, state, trigger, tuple(sorted(context.items())))
    try:
        return plans[key]
    except KeyError:
        row = machine.lookup(state, trigger, context)
        foreign: str | None = None
        try:
            machine.check_call(state, trigger, context)
        except ArgumentError as exc:
            foreign = str(exc)
        planned = plans[key] = (None if row is None else Plan.of(row), foreign)
        return planned


def _check_record(
    record: Any,
    spec: Spec,
    states: dict[tuple[str, str], str],
    plans: dict[_PlanKey, _Planned],
) -> str:
    """What the record did, in words, once the tables accept it; `states` moves on."""
    if not _is_object(record):
        raise _Stop(f"{record!r} is not a trace record (a JSON object)", _FORMAT)
    machine = spec.machines.get(str(record.get("machine")))
    if machine is None:
        raise _Stop(f"unknown machine {record.get('machine')!r}", "the tables")
    key = (machine.name, _text(record, "instance"))
    state = _text(record, "state")
    expected = states.get(key, machine.initial)
    if state != expected:
        raise _Stop(
            f"{key[1]} is in {expected}, but the record starts from {state}",
            f"{machine.name} lifecycle",
        )
    trigger = _text(record, "trigger")
    context = _context(record)
    plan, foreign = _plan(plans, machine, state, trigger, context)
    row = None if plan is None else plan.row
    if record.get("refused"):
        if row is not None:
            raise _Stop(
                f"{trigger} in {state} was refused, but row {row.id} allows it", f"row {row.id}"
            )
        return f"{machine.name} {key[1]}: {trigger} refused in {state}"
    if plan is None or row is None:
        allowed = machine.allowed(state, context) + machine.allowed(state, context, "session")
        raise _Stop(
            f"no row allows {trigger} in {state} with {context}; allowed: {allowed}",
            f"{machine.name} table",
        )
    if record.get("row") != row.id:
        raise _Stop(
            f"the trace took row {record.get('row')}, the table gives {row.id}", f"row {row.id}"
        )
    replay = _Replay(_steps(record))
    if foreign is not None:  # as the table answers a walk of a call foreign to it
        raise _Stop(foreign, f"row {row.id}")
    try:
        result = plan.walk(machine, context, replay)
    except _Stop as stop:
        raise _Stop(str(stop), stop.rule or f"row {row.id}") from None
    except ProtocolError as exc:  # an outcome the table has no route for
        raise _Stop(str(exc), f"row {row.id}") from None
    if replay.i != len(replay.steps):
        extra = replay.steps[replay.i].get("step")
        raise _Stop(f"the trace runs {extra} after the table's last step", f"row {result.taken.id}")
    if record.get("taken") != result.taken.id or record.get("dest") != result.taken.dest:
        raise _Stop(
            f"the trace ends in row {record.get('taken')} / {record.get('dest')}, "
            f"the table in row {result.taken.id} / {result.taken.dest}",
            f"row {result.taken.id}",
        )
    states[key] = result.taken.dest
    steps = ", ".join(str(s.get("step", "?")) for s in replay.steps) or "no steps"
    return (
        f"{machine.name} {key[1]}: {state} --{trigger}--> {result.taken.dest} "
        f"[{result.taken.id}] ({steps})"
    )
