"""Trace checks: the engine's own trace, and what the server saw, against the tables."""

from __future__ import annotations

from typing import Any

from fsm.conformance.clients import check_client_trace
from fsm.engine.trace import check_trace
from fsm.faults import FaultEffect
from fsm.simulate.facts import OK, UNKNOWN, VIOLATED, Facts, Verdict
from fsm.simulate.scenarios import SEQUENCE
from fsm.spec.model import Spec

__all__ = ["Judge"]


def _hidden_from_server(facts: Facts) -> list[str]:
    """Faults whose effect on the client the server's trace cannot show: a lost reply after
    which the client took another route than a success would have taken (the server saw a
    success), or a stream that opened on the server and broke before the client learnt it
    was open (the server sees it cancelled, as when a client gives up before its first
    batch)."""
    hidden = [
        f.describe()
        for f in facts.fired
        if f.operation == "STREAM_OPEN" and f.effect is not FaultEffect.FAIL
    ]
    hidden += [
        f"{step.get('step')} (reply lost, route {step.get('route')})"
        for record in facts.trace
        for step in record.get("steps", [])
        if step.get("outcome") == "unknown" and step.get("route") not in ("next", "continue")
    ]
    return hidden


def _kind_blind(spec: Spec) -> bool:
    """True when no row of the client tables routes a failure by its error kind: then which
    kind a step failed with cannot change whether a trace is accepted."""
    return not any(
        step.failed.by_kind
        for machine in spec.machines.values()
        for row in machine.transitions
        for step in row.steps
    )


class Judge:
    """Checks traces against the tables. Server traces that differ only in the error kinds
    of their failures are judged once when the tables cannot tell kinds apart (the fault
    plans of one position mostly differ only so); a refused trace is always judged again."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self._blind = _kind_blind(spec)
        self._accepted: set[tuple[Any, ...]] = set()

    def _outcome(self, value: Any) -> Any:
        return "failed" if self._blind and value not in (None, "ok") else value

    def engine_trace(self, facts: Facts) -> Verdict:
        report = check_trace(facts.trace, self.spec)
        if report.violation is not None:
            return Verdict("engine-trace", VIOLATED, str(report.violation))
        return Verdict("engine-trace", OK)

    def conformance(self, facts: Facts) -> Verdict:
        name = "client-conformance"
        events = [e for e in facts.events if e.get("sequence") == SEQUENCE]
        key = tuple(
            (e.get("op"), self._outcome(e.get("outcome")), e.get("topic"), e.get("rows"))
            + ((e.get("source"),) if "source" in e else ())
            for e in events
        )
        if key in self._accepted:
            return Verdict(name, OK)
        report = check_client_trace(events, self.spec, sequence=SEQUENCE, client="mosaico-fsm")
        if not report.findings:
            self._accepted.add(key)
            return Verdict(name, OK)
        hidden = _hidden_from_server(facts)
        if hidden:
            return Verdict(
                name,
                UNKNOWN,
                f"the server's trace cannot show what the client saw of {', '.join(hidden)}: "
                f"{report.findings[0]}",
            )
        return Verdict(name, VIOLATED, str(report.findings[0]))
