"""Fault plans: which calls of which operations go wrong, and how. Plain data, seeded.

A `FaultPlan` names operations of the catalogue (`SEQUENCE_CREATE`, `GET_FLIGHT_INFO`,
`STREAM_OPEN`, `STREAM_WRITE`, `STREAM_CLOSE`, ...) and what their n-th call does:

- `fail`: refused with an error kind, nothing applied;
- `lose_reply`: applied by the server, then the reply is lost (the client sees unknown);
- `lose_request`: the request is lost before the server applies it: nothing is applied, and
  the client sees unknown (on a stream, the connection dies with it: the stream breaks);
- `drop_stream` (stream operations): the stream breaks at that point; the server keeps what it
  already stored and locks nothing. On DO_GET the read stream breaks after half of its
  batches (rounded down) were sent.

Random faults can be added with a rate; whether the n-th call of an operation is hit is a pure
function of (seed, operation, n), so the same plan and seed give the same run whatever the
thread interleaving of different operations. Transports apply a plan through a
`FaultSchedule`, which counts calls.

A plan is checked when it is built or loaded: an operation no transport counts (a typo would
never fire), an unknown effect or kind, or random faults that cannot be drawn raise
`ArgumentError`.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable, Mapping
from enum import Enum
from functools import cache
from typing import Any, TypeVar

import attrs

from fsm.errors import ArgumentError
from fsm.outcome import ErrorKind

__all__ = ["Fault", "FaultEffect", "FaultPlan", "FaultSchedule", "fault_operations"]

E = TypeVar("E", bound=Enum)


class FaultEffect(Enum):
    FAIL = "fail"
    LOSE_REPLY = "lose_reply"
    LOSE_REQUEST = "lose_request"
    DROP_STREAM = "drop_stream"


STREAM_OPERATIONS = frozenset({"STREAM_OPEN", "STREAM_WRITE", "STREAM_CLOSE"})
DROPPABLE = STREAM_OPERATIONS | {"DO_GET"}
"""The operations a `drop_stream` fault can break: the phases of a DoPut, and a DoGet."""

NOT_COUNTED = {
    "DO_PUT": "faults on a DoPut target STREAM_OPEN, STREAM_WRITE or STREAM_CLOSE",
    "STREAM_ABORT": "an abort is local to the client and is never refused",
    "UNSUPPORTED_RPC": "unsupported RPCs are refused before any fault applies",
}
"""Operations of the catalogue that no transport counts, with the reason."""


@cache
def fault_operations() -> frozenset[str]:
    """The operations a fault can target: those of the catalogue of any protocol line
    (`specs/actions.toml` and what `specs/lines/` add) that the transports count, one call
    at a time."""
    from fsm.spec.lines import load_lines  # imported late, as fsm.spec is heavier

    every = {op for line in load_lines().values() for op in line.spec.operations}
    return frozenset(every) - frozenset(NOT_COUNTED)


def _check_operation(operation: object, what: str) -> None:
    if not isinstance(operation, str):
        raise ArgumentError(f"{what}: an operation name must be a string, got {operation!r}")
    if operation in fault_operations():
        return
    reason = NOT_COUNTED.get(operation)
    if reason is not None:
        raise ArgumentError(f"{what}: {operation} cannot be faulted ({reason})")
    raise ArgumentError(
        f"{what}: no such operation in the catalogue: {operation!r}; "
        f"choose from {', '.join(sorted(fault_operations()))}"
    )


def _member(enum: type[E], value: object, what: str) -> E:
    try:
        return enum(value)
    except ValueError:
        choices = ", ".join(str(m.value) for m in enum)
        raise ArgumentError(f"{what}: {value!r} is not one of {choices}") from None


def _instance(enum: type[Enum], value: object, what: str) -> None:
    if not isinstance(value, enum):
        raise ArgumentError(f"{what} must be a {enum.__name__}, got {value!r}")


def _members(enum: type[E], values: object, what: str) -> tuple[E, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ArgumentError(f"{what} must be a list, got {values!r}")
    return tuple(_member(enum, v, what) for v in values)


def _integer(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentError(f"{what} must be an integer, got {value!r}")
    return value


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentError(f"{what} must be a number, got {value!r}")
    return float(value)


def _object(raw: object, what: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise ArgumentError(f"{what} must be a JSON object, got {raw!r}")
    return raw


@attrs.frozen
class Fault:
    """The `nth` (1-based) call of `operation` ends with `effect` (and `kind`, for fail)."""

    operation: str
    nth: int = 1
    effect: FaultEffect = FaultEffect.FAIL
    kind: ErrorKind = ErrorKind.INTERNAL

    def __attrs_post_init__(self) -> None:
        _check_operation(self.operation, "fault")
        if isinstance(self.nth, bool) or not isinstance(self.nth, int) or self.nth < 1:
            raise ArgumentError(
                f"fault on {self.operation}: nth must be an integer >= 1, got {self.nth!r}"
            )
        _instance(FaultEffect, self.effect, f"fault on {self.operation}: effect")
        _instance(ErrorKind, self.kind, f"fault on {self.operation}: kind")
        if self.effect is FaultEffect.DROP_STREAM and self.operation not in DROPPABLE:
            raise ArgumentError(
                f"drop_stream applies to {', '.join(sorted(DROPPABLE))}, not {self.operation}"
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "nth": self.nth,
            "effect": self.effect.value,
            "kind": self.kind.value,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Fault:
        raw = _object(raw, "a fault")
        if "operation" not in raw:
            raise ArgumentError(f"a fault needs an operation, got {dict(raw)!r}")
        operation = raw["operation"]
        return cls(
            operation=operation,
            nth=_integer(raw.get("nth", 1), f"fault on {operation}: nth"),
            effect=_member(FaultEffect, raw.get("effect", "fail"), f"fault on {operation}: effect"),
            kind=_member(ErrorKind, raw.get("kind", "internal"), f"fault on {operation}: kind"),
        )

    def describe(self) -> str:
        what = self.kind.value if self.effect is FaultEffect.FAIL else self.effect.value
        return f"{self.operation}#{self.nth}:{what}"


@attrs.frozen
class FaultPlan:
    """Faults at fixed positions, plus optional random faults at `rate` on `random_operations`."""

    faults: tuple[Fault, ...] = ()
    seed: int = 0
    rate: float = 0.0
    random_operations: tuple[str, ...] = ()
    random_effects: tuple[FaultEffect, ...] = (FaultEffect.FAIL, FaultEffect.LOSE_REPLY)
    random_kinds: tuple[ErrorKind, ...] = (ErrorKind.INTERNAL,)

    def __attrs_post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ArgumentError(f"rate must be within [0, 1], got {self.rate}")
        for operation in self.random_operations:
            _check_operation(operation, "random_operations")
        for effect in self.random_effects:
            _instance(FaultEffect, effect, "random_effects")
        for kind in self.random_kinds:
            _instance(ErrorKind, kind, "random_kinds")
        if self.rate > 0.0:
            if not self.random_operations:
                raise ArgumentError("random faults (rate > 0) need random_operations")
            if not self.random_effects:
                raise ArgumentError("random faults (rate > 0) need at least one random effect")
            if not self.random_kinds:
                raise ArgumentError("random faults (rate > 0) need at least one random kind")

    def to_json(self) -> dict[str, Any]:
        return {
            "faults": [f.to_json() for f in self.faults],
            "seed": self.seed,
            "rate": self.rate,
            "random_operations": list(self.random_operations),
            "random_effects": [e.value for e in self.random_effects],
            "random_kinds": [k.value for k in self.random_kinds],
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> FaultPlan:
        raw = _object(raw, "a fault plan")
        faults = raw.get("faults", [])
        if not isinstance(faults, list):
            raise ArgumentError(f"faults must be a list, got {faults!r}")
        operations = raw.get("random_operations", [])
        if isinstance(operations, (str, bytes)) or not isinstance(operations, list):
            raise ArgumentError(f"random_operations must be a list, got {operations!r}")
        return cls(
            faults=tuple(Fault.from_json(f) for f in faults),
            seed=_integer(raw.get("seed", 0), "seed"),
            rate=_number(raw.get("rate", 0.0), "rate"),
            random_operations=tuple(operations),
            random_effects=_members(
                FaultEffect, raw.get("random_effects", ["fail", "lose_reply"]), "random_effects"
            ),
            random_kinds=_members(ErrorKind, raw.get("random_kinds", ["internal"]), "random_kinds"),
        )

    @classmethod
    def loads(cls, text: str) -> FaultPlan:
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise ArgumentError(f"a fault plan must be JSON: {exc}") from None
        return cls.from_json(raw)

    def random_fault(self, operation: str, n: int) -> Fault | None:
        """The random fault of the `n`-th call of `operation`, decided by hashing only."""
        if self.rate <= 0.0 or operation not in self.random_operations:
            return None
        digest = hashlib.blake2b(f"{self.seed}/{operation}/{n}".encode(), digest_size=16).digest()
        draw = int.from_bytes(digest[:8], "big") / 2**64
        if draw >= self.rate:
            return None
        effects = [
            e
            for e in self.random_effects
            if e is not FaultEffect.DROP_STREAM or operation in DROPPABLE
        ]
        if not effects:
            return None
        effect = effects[digest[8] % len(effects)]
        kind = self.random_kinds[digest[9] % len(self.random_kinds)]
        return Fault(operation, n, effect, kind)


class FaultSchedule:
    """Counts calls per operation (whether or not the plan has faults) and answers the fault,
    if any, of each call. Thread-safe."""

    def __init__(self, plan: FaultPlan | None = None) -> None:
        self.plan = plan or FaultPlan()
        self._fixed = {(f.operation, f.nth): f for f in self.plan.faults}
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self.fired: list[Fault] = []

    @property
    def active(self) -> bool:
        """Whether the plan can make any call fail."""
        return bool(self._fixed) or self.plan.rate > 0.0

    def next(self, operation: str) -> Fault | None:
        """Count one call of `operation` and return its fault, if the plan has one."""
        with self._lock:
            n = self._counts.get(operation, 0) + 1
            self._counts[operation] = n
            if not self.active:
                return None
            fault = self._fixed.get((operation, n)) or self.plan.random_fault(operation, n)
            if fault is not None:
                self.fired.append(fault)
            return fault

    def counts(self) -> dict[str, int]:
        """The number of calls of each operation so far."""
        with self._lock:
            return dict(self._counts)
