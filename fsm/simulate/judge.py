"""Trace checks: the engine's own trace, and what the server saw, against the tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fsm.conformance.clients import WIRE_NAME, check_client_trace
from fsm.engine.trace import check_trace
from fsm.faults import Fault, FaultEffect
from fsm.simulate.facts import OK, PROBE_READS, UNKNOWN, VIOLATED, Facts, Verdict
from fsm.simulate.scenarios import SEQUENCE
from fsm.spec.model import Spec

__all__ = ["Judge"]


_WIRE = {**WIRE_NAME, "STREAM_OPEN": "DO_PUT_OPEN", "STREAM_WRITE": "DO_PUT_WRITE"}


def _lost_replies(facts: Facts) -> int:
    """How many lost-reply assumptions the checker may make: one per reply the client may
    have lost (the server applied the request, the client saw no answer), and, when there
    is one, one per failed read a probe after it may have made."""
    lost = sum(
        1
        for f in facts.fired
        if f.effect is FaultEffect.LOSE_REPLY
        or (f.operation == "STREAM_OPEN" and f.effect is FaultEffect.DROP_STREAM)
    )
    if not lost:
        return 0
    return lost + sum(1 for f in facts.fired if f.operation in PROBE_READS)


def _fault_index(events: Sequence[Mapping[str, Any]], fired: Sequence[Fault], fault: Fault) -> int:
    """Where a fault that reached the server shows in its trace: the event of the faulted
    call (calls refused before reaching the server are not counted); 0 when not found."""
    wire = _WIRE.get(fault.operation, fault.operation)
    earlier = sum(
        1
        for f in fired
        if f.operation == fault.operation
        and f.nth < fault.nth
        and f.effect in (FaultEffect.FAIL, FaultEffect.LOSE_REQUEST)
    )
    nth = fault.nth - earlier
    seen = 0
    for i, event in enumerate(events):
        if event.get("op") == wire and event.get("source", "server") == "server":
            seen += 1
            if seen == nth:
                return i
    return 0


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


def _hides(fault: Fault) -> bool:
    """A fault whose effect on the client the server's trace may not show."""
    return fault.effect is not FaultEffect.FAIL


def _kind_blind(spec: Spec) -> bool:
    """True when no row of the client tables routes a failure by its error kind: then which
    kind a step failed with cannot change whether a trace is accepted."""
    return not any(
        step.failed.by_kind
        for machine in spec.machines.values()
        for row in machine.transitions
        for step in row.steps
    )


ACCEPTED_KEPT = 50_000
"""How many accepted server traces a judge remembers (it forgets them all past that)."""


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
        """The server's trace against the tables. The checker may assume as many lost
        replies as the run's faults could hide; a finding that remains at or after the
        first fault the server's trace cannot show is unknown, one before it a violation."""
        name = "client-conformance"
        events = [e for e in facts.events if e.get("sequence") == SEQUENCE]
        lost = _lost_replies(facts)
        dropped = sum(1 for f in facts.fired if f.effect is FaultEffect.LOSE_REQUEST)
        key = (
            lost,
            dropped,
            *(
                (e.get("op"), self._outcome(e.get("outcome")), e.get("topic"), e.get("rows"))
                + ((e.get("source"),) if "source" in e else ())
                for e in events
            ),
        )
        if key in self._accepted:
            return Verdict(name, OK)
        report = check_client_trace(
            events,
            self.spec,
            sequence=SEQUENCE,
            client="mosaico-fsm",
            lost_replies=lost,
            lost_requests=dropped,
        )
        if not report.findings:
            if len(self._accepted) >= ACCEPTED_KEPT:
                self._accepted.clear()
            self._accepted.add(key)
            return Verdict(name, OK)
        hidden = _hidden_from_server(facts)
        if hidden:
            start = min(
                (_fault_index(events, facts.fired, f) for f in facts.fired if _hides(f)),
                default=0,
            )
            before = [f for f in report.findings if 0 <= f.index < start]
            if before:
                return Verdict(name, VIOLATED, str(before[0]))
            return Verdict(
                name,
                UNKNOWN,
                f"the server's trace cannot show what the client saw of {', '.join(hidden)}: "
                f"{report.findings[0]}",
            )
        return Verdict(name, VIOLATED, str(report.findings[0]))
