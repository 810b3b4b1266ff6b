"""Traces: every transition and every step with its outcome, as JSON lines.

Tracing is off unless a `Tracer` is given; when off, the engine does one `is None` test per
transition. A trace can be checked against the tables: `check_trace` replays each record
(state continuity per instance, the row the table gives, the steps and routes that row takes
under the recorded outcomes) and reports the first violation with the row it breaks.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from fsm.errors import InvalidTrigger
from fsm.jsonlines import JsonLines
from fsm.machines import Walk, walk
from fsm.outcome import ErrorKind, Outcome, OutcomeStatus, ProbeVerdict
from fsm.spec.model import Spec, Step, Transition

__all__ = ["TraceReport", "TraceViolation", "Tracer", "check_trace", "read_trace"]


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
    """Records from a JSON-lines file or an iterable of lines."""
    lines: Iterable[str] = (
        Path(source).read_text().splitlines() if isinstance(source, (str, Path)) else source
    )
    return [json.loads(line) for line in lines if line.strip()]


@attrs.frozen
class TraceViolation:
    """The first record that the tables do not allow."""

    index: int
    record: Mapping[str, Any]
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


class _Replay:
    """Feeds a walk the outcomes and probe verdicts a trace recorded, and checks that the walk
    asks for the steps in the recorded order."""

    def __init__(self, steps: list[Mapping[str, Any]]) -> None:
        self.steps = steps
        self.i = 0
        self.mismatch: str | None = None

    def _current(self, step: Step) -> Mapping[str, Any]:
        if self.i >= len(self.steps):
            raise _Stop(f"the table runs {step.name} after the recorded steps end")
        recorded = self.steps[self.i]
        if recorded.get("step") != step.name:
            raise _Stop(f"the table runs {step.name} where the trace has {recorded.get('step')}")
        return recorded

    def perform(self, step: Step, row: Transition) -> Outcome:
        recorded = self._current(step)
        status = OutcomeStatus(recorded.get("outcome", "ok"))
        kind = ErrorKind(recorded["kind"]) if recorded.get("kind") else None
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
        recorded = self.steps[self.i]
        self.i += 1
        return ProbeVerdict(recorded["probe"])


class _Stop(Exception):
    pass


def check_trace(records: Iterable[Mapping[str, Any]], spec: Spec) -> TraceReport:
    """Replay `records` against the tables: every record accepted, or the first violation."""
    accepted: list[str] = []
    states: dict[tuple[str, str], str] = {}
    for index, record in enumerate(records):

        def violation(
            rule: str, message: str, index: int = index, record: Mapping[str, Any] = record
        ) -> TraceReport:
            return TraceReport(tuple(accepted), TraceViolation(index, record, rule, message))

        machine = spec.machines.get(str(record.get("machine")))
        if machine is None:
            return violation("the tables", f"unknown machine {record.get('machine')!r}")
        key = (machine.name, str(record.get("instance")))
        state = str(record.get("state"))
        expected = states.get(key, machine.initial)
        if state != expected:
            return violation(
                f"{machine.name} lifecycle",
                f"{key[1]} is in {expected}, but the record starts from {state}",
            )
        trigger = str(record.get("trigger"))
        context = {str(k): str(v) for k, v in dict(record.get("context", {})).items()}
        row = machine.lookup(state, trigger, context)
        if record.get("refused"):
            if row is not None:
                return violation(
                    f"row {row.id}", f"{trigger} in {state} was refused, but row {row.id} allows it"
                )
            accepted.append(f"{machine.name} {key[1]}: {trigger} refused in {state}")
            continue
        if row is None:
            allowed = machine.allowed(state, context) + machine.allowed(state, context, "session")
            return violation(
                f"{machine.name} table",
                f"no row allows {trigger} in {state} with {context}; allowed: {allowed}",
            )
        if record.get("row") != row.id:
            return violation(
                f"row {row.id}", f"the trace took row {record.get('row')}, the table gives {row.id}"
            )
        replay = _Replay(list(record.get("steps", [])))
        try:
            result = walk(machine, state, trigger, context, replay)
        except _Stop as stop:
            return violation(f"row {row.id}", str(stop))
        except InvalidTrigger as exc:  # pragma: no cover - looked up above
            return violation(f"row {row.id}", str(exc))
        if replay.i != len(replay.steps):
            extra = replay.steps[replay.i].get("step")
            return violation(
                f"row {result.taken.id}", f"the trace runs {extra} after the table's last step"
            )
        if record.get("taken") != result.taken.id or record.get("dest") != result.taken.dest:
            return violation(
                f"row {result.taken.id}",
                f"the trace ends in row {record.get('taken')} / {record.get('dest')}, "
                f"the table in row {result.taken.id} / {result.taken.dest}",
            )
        states[key] = result.taken.dest
        steps = ", ".join(s.get("step", "?") for s in replay.steps) or "no steps"
        accepted.append(
            f"{machine.name} {key[1]}: {state} --{trigger}--> {result.taken.dest} [{result.taken.id}] ({steps})"
        )
    return TraceReport(tuple(accepted), None)
