"""The server as the invariants see it: read through a transport without faults.

A read the server refuses (other than a `not_found`, which answers the question) raises
`SimulationError`: the invariants that needed it are then unknown, never violated."""

from __future__ import annotations

from fsm.enums import FlightAction
from fsm.errors import SimulationError
from fsm.outcome import ErrorKind
from fsm.simulate.scenarios import SEQUENCE, Row
from fsm.transport import Descriptor, SequenceInfo, SessionInfo, TopicData, TopicInfo, Transport

__all__ = ["ServerView", "SimulationError"]


class ServerView:
    """Reads the server through a fault-free transport, once per question."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self._sequence: SequenceInfo | bool | None = False
        self._notified: bool | None = None

    def sequence(self) -> SequenceInfo | None:
        if self._sequence is False:
            outcome = self._transport.flight_info(Descriptor.for_resource(SEQUENCE))
            if outcome.is_ok and isinstance(outcome.value, SequenceInfo):
                self._sequence = outcome.value
            elif outcome.kind is ErrorKind.NOT_FOUND:
                self._sequence = None
            else:
                raise SimulationError(f"reading the sequence failed: {outcome.detail}")
        assert not isinstance(self._sequence, bool)
        return self._sequence

    def session(self, uuid: str | None) -> SessionInfo | None:
        sequence = self.sequence()
        return sequence.session(uuid) if sequence is not None and uuid else None

    def topic(self, locator: str) -> TopicInfo | None:
        sequence = self.sequence()
        return sequence.topic(locator) if sequence is not None else None

    def records(self, locator: str) -> list[Row]:
        """The records a topic holds (none when it is gone or never received a stream)."""
        info = self._transport.flight_info(Descriptor.for_resource(locator))
        if not info.is_ok and info.kind is ErrorKind.NOT_FOUND:
            return []
        if not info.is_ok or not isinstance(info.value, TopicInfo):
            raise SimulationError(f"reading topic {locator} failed: {info.detail}")
        data = self._transport.read(info.value.ticket)
        if not data.is_ok and data.kind in (ErrorKind.NOT_FOUND, ErrorKind.FAILED_PRECONDITION):
            return []  # gone meanwhile, or it never received a stream: it holds no data
        if not data.is_ok or not isinstance(data.value, TopicData):
            raise SimulationError(f"reading the records of {locator} failed: {data.detail}")
        table = data.value.table()
        return list(
            zip(
                table.column("timestamp_ns").to_pylist(),
                table.column("x").to_pylist(),
                strict=True,
            )
        )

    def notified(self) -> bool:
        """True when the sequence carries an error notification."""
        if self._notified is None:
            outcome = self._transport.action(
                FlightAction.SEQUENCE_NOTIFICATION_LIST, {"locator": SEQUENCE}
            )
            if outcome.is_ok:
                notes = (outcome.value or {}).get("notifications", [])
            elif outcome.kind is ErrorKind.NOT_FOUND:
                notes = []  # the sequence is gone, and its notifications with it
            else:
                raise SimulationError(f"reading the notifications failed: {outcome.detail}")
            self._notified = any(n.get("notification_type") == "error" for n in notes)
        return self._notified

    def new_sessions(self, setup: frozenset[str]) -> list[SessionInfo]:
        sequence = self.sequence()
        if sequence is None:
            return []
        return [s for s in sequence.sessions if s.uuid not in setup]
