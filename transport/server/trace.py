"""What a server saw: every request of its clients and its answer, as JSON lines.

Each event names the operation (a catalogue name, or a DoPut phase: DO_PUT_OPEN,
DO_PUT_WRITE, DO_PUT_END, DO_PUT_CANCEL), the sequence, topic and session it concerns, and
the outcome from the server's side ("ok", or the error kind it answered). Grouped by sequence,
these events are what `fsm.conformance.clients` checks a client against.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fsm.jsonlines import JsonLines

__all__ = ["ServerTrace", "attribute"]


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


_ATTRIBUTED = 1 << 20
"""Bodies up to this many bytes are read for attribution (a larger one is refused anyway, and
a deeply nested one must not cost the trace its event)."""


def attribute(
    operation: str,
    outcome: str,
    *,
    body: bytes | None,
    locator: str | None,
    session: str | None,
    rows: int | None,
    sequence_of: Callable[[str], str | None],
) -> dict[str, Any]:
    """The trace event of one request: its operation and outcome, attributed to the sequence,
    topic and session it names (read from its JSON `body` when given). `sequence_of` answers
    the sequence of a session UUID, when a request names only the session."""
    if body is not None:
        try:
            parsed = json.loads(body.decode("utf-8")) if len(body) <= _ATTRIBUTED else None
        except (UnicodeDecodeError, ValueError, RecursionError):
            parsed = None
        if isinstance(parsed, dict):
            value = parsed.get("locator", parsed.get("resource_locator"))
            locator = locator or (value if isinstance(value, str) else None)
            value = parsed.get("session_uuid")
            session = session or (value if isinstance(value, str) else None)
    sequence, topic = None, None
    if locator:
        text = locator.strip().removeprefix("/")
        sequence, _, path = text.partition("/")
        topic = f"{sequence}/{path}" if path else None
        # A session locator '<sequence>:<session>' (no sequence name holds a ':').
        sequence = sequence.partition(":")[0]
    if session and not sequence:
        sequence = sequence_of(session)
    event: dict[str, Any] = {"op": operation, "outcome": outcome}
    for key, value in (
        ("sequence", sequence),
        ("topic", topic),
        ("session", session),
        ("rows", rows),
    ):
        if value is not None:
            event[key] = value
    return event
