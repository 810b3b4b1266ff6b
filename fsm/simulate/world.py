"""What one simulated run talks to: a server reached through two transports.

The simulator does not know which transport or server it runs against: the caller passes a
`WorldFactory`, which builds a fresh server for every run and answers a `World`. The client
of the run uses `transport`, which applies the run's `FaultSchedule`; the invariants read the
server through `checker`, which goes to the same server without faults; `server_events`
answers what the server saw so far (its trace, as JSON-able events).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs

from fsm.faults import Fault, FaultPlan, FaultSchedule
from fsm.transport import Transport

__all__ = ["CallLog", "World", "WorldFactory"]


@attrs.frozen
class World:
    """One server and the ways to reach it during one run."""

    transport: Transport
    checker: Transport
    server_events: Callable[[], Sequence[Mapping[str, Any]]]


class WorldFactory(Protocol):
    """Builds a fresh world for one run; `seed` makes the server's identifiers reproducible.
    Must be picklable (a module-level function) to be used with several worker processes."""

    def __call__(self, schedule: FaultSchedule, seed: int) -> World: ...


class CallLog(FaultSchedule):
    """A fault schedule that also notes every call, in order, as (operation, nth).

    It counts even when its plan has no fault, so a fault-free run tells where faults can go.
    """

    def __init__(self, plan: FaultPlan | None = None) -> None:
        super().__init__(plan)
        self.calls: list[tuple[str, int]] = []
        self._seen: dict[str, int] = {}
        self._log_lock = threading.Lock()

    @property
    def active(self) -> bool:
        return True

    def next(self, operation: str) -> Fault | None:
        fault = super().next(operation)
        with self._log_lock:
            n = self._seen.get(operation, 0) + 1
            self._seen[operation] = n
            self.calls.append((operation, n))
        return fault
