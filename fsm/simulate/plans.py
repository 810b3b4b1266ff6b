"""Where faults go: every call of a run, times every way that call can go wrong.

A position is one call of one operation, `(operation, nth)`, taken from the calls a run
made. The effects of an operation are: refused with each error kind the catalogue lists for
it, and `internal`; its reply lost after the server applied it; its request lost before
the server saw it; and, for the stream
operations, the stream dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from fsm.errors import ArgumentError
from fsm.faults import STREAM_OPERATIONS, Fault, FaultEffect
from fsm.outcome import ErrorKind
from fsm.spec.model import Spec

__all__ = ["Plan", "canonical", "describe_plan", "effects", "faults_at", "parse_fault"]

Plan = tuple[Fault, ...]


def effects(spec: Spec, operation: str) -> list[tuple[FaultEffect, ErrorKind]]:
    """Every way a call of `operation` can go wrong, in a fixed order."""
    op = spec.operations.get(operation)
    kinds = [ErrorKind(e.kind) for e in op.errors] if op is not None else []
    if ErrorKind.INTERNAL not in kinds:
        kinds.append(ErrorKind.INTERNAL)
    out = [(FaultEffect.FAIL, k) for k in dict.fromkeys(kinds)]
    out.append((FaultEffect.LOSE_REPLY, ErrorKind.INTERNAL))
    out.append((FaultEffect.LOSE_REQUEST, ErrorKind.INTERNAL))
    if operation in STREAM_OPERATIONS:
        out.append((FaultEffect.DROP_STREAM, ErrorKind.INTERNAL))
    return out


def faults_at(spec: Spec, calls: Iterable[tuple[str, int]]) -> list[Fault]:
    """Every fault at every one of `calls`, in call order."""
    return [
        Fault(operation, nth, effect, kind)
        for operation, nth in calls
        for effect, kind in effects(spec, operation)
    ]


def canonical(plan: Sequence[Fault]) -> Plan:
    """The plan's faults in a fixed order, so that equal plans compare equal."""
    return tuple(sorted(plan, key=lambda f: (f.operation, f.nth, f.effect.value, f.kind.value)))


def describe_plan(plan: Sequence[Fault]) -> str:
    return " + ".join(f.describe() for f in plan) if plan else "(none)"


_FAULT = re.compile(r"^(?P<op>[A-Z_]+)#(?P<nth>\d+):(?P<what>[a-z_]+)$")


def parse_fault(text: str) -> Fault:
    """A fault written as `OPERATION#N:EFFECT`, EFFECT an error kind, `lose_reply`,
    `lose_request` or `drop_stream` (the form `Fault.describe` prints). ArgumentError (a ValueError) when malformed."""
    found = _FAULT.match(text.strip())
    if found is None:
        raise ArgumentError(
            f"a fault reads OPERATION#N:EFFECT, e.g. SESSION_FINALIZE#1:internal; got {text!r}"
        )
    op, nth, what = found["op"], int(found["nth"]), found["what"]
    if what in (
        FaultEffect.LOSE_REPLY.value,
        FaultEffect.LOSE_REQUEST.value,
        FaultEffect.DROP_STREAM.value,
    ):
        return Fault(op, nth, FaultEffect(what))
    try:
        kind = ErrorKind(what)
    except ValueError:
        choices = ", ".join(k.value for k in ErrorKind)
        raise ArgumentError(
            f"unknown effect {what!r}: lose_reply, lose_request, drop_stream or one of {choices}"
        ) from None
    return Fault(op, nth, FaultEffect.FAIL, kind)
