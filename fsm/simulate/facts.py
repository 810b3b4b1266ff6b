"""What a run leaves to be judged: the client's side of it, and the verdicts' vocabulary.

Each invariant answers `ok`, `violated`, `unknown` or `n/a` (it does not apply to this run,
or the step that would have kept it failed and the user was told).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from fsm.errors import OutcomeUnknown
from fsm.faults import Fault, FaultEffect
from fsm.simulate.scenarios import Row, Scenario

__all__ = ["NA", "OK", "UNKNOWN", "VIOLATED", "Facts", "Verdict"]

OK, VIOLATED, UNKNOWN, NA = "ok", "violated", "unknown", "n/a"


@attrs.frozen
class Verdict:
    """One invariant's answer for one run, with what was wrong (or why it does not apply)."""

    invariant: str
    status: str
    message: str = ""


PROBE_READS = frozenset(
    {"GET_FLIGHT_INFO", "SEQUENCE_NOTIFICATION_LIST", "TOPIC_NOTIFICATION_LIST"}
)
"""The reads a probe makes to settle an unknown outcome."""


@attrs.frozen
class Facts:
    """What a run left on the client side: statuses, what the user was promised and saw,
    the engine's trace, the server's trace of the run and the faults that fired."""

    scenario: Scenario
    status: str
    session_uuid: str | None
    topics: Mapping[str, tuple[str, str]]  # name -> (locator, status)
    pushed: Mapping[str, Sequence[Row]]
    attempted: tuple[str, ...]
    raised: BaseException | None
    trace: Sequence[Mapping[str, Any]]
    events: Sequence[Mapping[str, Any]]
    setup_sessions: frozenset[str]
    fired: tuple[Fault, ...] = ()

    def session_steps(self, operation: str) -> list[Mapping[str, Any]]:
        """Every `operation` step the session ran, in order."""
        return [
            step
            for record in self.trace
            if record.get("machine") == "session"
            for step in record.get("steps", [])
            if step.get("step") == operation
        ]

    def last_failed(self, operation: str) -> bool | None:
        """Whether the session's last `operation` step failed (None when it never ran)."""
        steps = self.session_steps(operation)
        return None if not steps else not succeeded(steps[-1])

    @property
    def unsettled(self) -> bool:
        """The user was told of a lost reply that could not be settled, or a request was
        lost and a read that may have settled it was itself faulted (its answer, such as a
        not_found, did not describe the server)."""
        if isinstance(self.raised, OutcomeUnknown):
            return True
        if any(f.effect is FaultEffect.LOSE_REQUEST for f in self.fired) and any(
            f.operation in PROBE_READS and f.effect is not FaultEffect.LOSE_REQUEST
            for f in self.fired
        ):
            return True
        return any(
            step.get("probe") == "unresolved"
            for record in self.trace
            for step in record.get("steps", [])
        )

    def undeletable_topics(self) -> set[str]:
        """Names of topics whose removal after a failed creation itself failed."""
        creations = [
            r
            for r in self.trace
            if r.get("machine") == "session" and r.get("trigger") == "topic_create"
        ]
        names: set[str] = set()
        for name, record in zip(self.attempted, creations, strict=False):
            deletes = [s for s in record.get("steps", []) if s.get("step") == "TOPIC_DELETE"]
            if deletes and not succeeded(deletes[-1]):
                names.add(name)
        return names


def succeeded(step: Mapping[str, Any]) -> bool:
    """A traced step took effect (directly, or as its probe established)."""
    return step.get("outcome") == "ok" or step.get("probe") == "applied"
