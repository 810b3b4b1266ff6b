"""What a server saw: every request of its clients and its answer, as JSON lines.

Each event names the operation (a catalogue name, or a DoPut phase: DO_PUT_OPEN,
DO_PUT_WRITE, DO_PUT_END, DO_PUT_CANCEL), the sequence, topic and session it concerns, and
the outcome from the server's side ("ok", or the error kind it answered). Grouped by sequence,
these events are what `fsm.conformance.clients` checks a client against.
"""

from __future__ import annotations

from typing import Any

from fsm.jsonlines import JsonLines

__all__ = ["ServerTrace"]


class ServerTrace(JsonLines):
    """Server events in the order the server saw them, optionally mirrored to a file."""

    @property
    def events(self) -> tuple[dict[str, Any], ...]:
        """The events so far: a snapshot, which later requests do not change."""
        return tuple(self.snapshot())

    def observe(self, event: dict[str, Any]) -> None:
        self.append(event)

    def for_sequence(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.snapshot() if e.get("sequence") == name]

    def sequences(self) -> list[str]:
        seen: dict[str, None] = {}
        for e in self.snapshot():
            if e.get("sequence"):
                seen.setdefault(str(e["sequence"]), None)
        return list(seen)
