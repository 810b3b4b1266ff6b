"""Fault plans: which calls of which operations go wrong, and how. Plain data, seeded.

A `FaultPlan` names operations of the catalogue (`SEQUENCE_CREATE`, `GET_FLIGHT_INFO`,
`STREAM_OPEN`, `STREAM_WRITE`, `STREAM_CLOSE`, ...) and what their n-th call does:

- `fail`: refused with an error kind, nothing applied;
- `lose_reply`: applied by the server, then the reply is lost (the client sees unknown);
- `drop_stream` (stream operations): the stream breaks at that point; the server keeps what it
  already stored and locks nothing.

Random faults can be added with a rate; whether the n-th call of an operation is hit is a pure
function of (seed, operation, n), so the same plan and seed give the same run whatever the
thread interleaving of different operations. Transports apply a plan through a
`FaultSchedule`, which counts calls.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping
from enum import Enum
from typing import Any

import attrs

from fsm.outcome import ErrorKind

__all__ = ["Fault", "FaultEffect", "FaultPlan", "FaultSchedule"]


class FaultEffect(Enum):
    FAIL = "fail"
    LOSE_REPLY = "lose_reply"
    DROP_STREAM = "drop_stream"


STREAM_OPERATIONS = frozenset({"STREAM_OPEN", "STREAM_WRITE", "STREAM_CLOSE"})


@attrs.frozen
class Fault:
    """The `nth` (1-based) call of `operation` ends with `effect` (and `kind`, for fail)."""

    operation: str
    nth: int = 1
    effect: FaultEffect = FaultEffect.FAIL
    kind: ErrorKind = ErrorKind.INTERNAL

    def __attrs_post_init__(self) -> None:
        if self.nth < 1:
            raise ValueError(f"fault on {self.operation}: nth must be >= 1, got {self.nth}")
        if self.effect is FaultEffect.DROP_STREAM and self.operation not in STREAM_OPERATIONS:
            raise ValueError(f"drop_stream applies to stream operations, not {self.operation}")

    def to_json(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "nth": self.nth,
            "effect": self.effect.value,
            "kind": self.kind.value,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Fault:
        return cls(
            operation=str(raw["operation"]),
            nth=int(raw.get("nth", 1)),
            effect=FaultEffect(raw.get("effect", "fail")),
            kind=ErrorKind(raw.get("kind", "internal")),
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
            raise ValueError(f"rate must be within [0, 1], got {self.rate}")

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
        return cls(
            faults=tuple(Fault.from_json(f) for f in raw.get("faults", [])),
            seed=int(raw.get("seed", 0)),
            rate=float(raw.get("rate", 0.0)),
            random_operations=tuple(raw.get("random_operations", ())),
            random_effects=tuple(
                FaultEffect(e) for e in raw.get("random_effects", ("fail", "lose_reply"))
            ),
            random_kinds=tuple(ErrorKind(k) for k in raw.get("random_kinds", ("internal",))),
        )

    @classmethod
    def loads(cls, text: str) -> FaultPlan:
        return cls.from_json(json.loads(text))

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
            if e is not FaultEffect.DROP_STREAM or operation in STREAM_OPERATIONS
        ]
        if not effects:
            return None
        effect = effects[digest[8] % len(effects)]
        kind = self.random_kinds[digest[9] % len(self.random_kinds)]
        return Fault(operation, n, effect, kind)


class FaultSchedule:
    """Counts calls per operation and answers the fault, if any, of each call. Thread-safe."""

    def __init__(self, plan: FaultPlan | None = None) -> None:
        self.plan = plan or FaultPlan()
        self._fixed = {(f.operation, f.nth): f for f in self.plan.faults}
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self.fired: list[Fault] = []

    @property
    def active(self) -> bool:
        return bool(self._fixed) or self.plan.rate > 0.0

    def next(self, operation: str) -> Fault | None:
        """Count one call of `operation` and return its fault, if the plan has one."""
        if not self.active:
            return None
        with self._lock:
            n = self._counts.get(operation, 0) + 1
            self._counts[operation] = n
            fault = self._fixed.get((operation, n)) or self.plan.random_fault(operation, n)
            if fault is not None:
                self.fired.append(fault)
            return fault

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)
