"""What a server saw: every request of its clients and its answer, as JSON lines.

Each event names the operation (a catalogue name, or a DoPut phase: DO_PUT_OPEN,
DO_PUT_WRITE, DO_PUT_END, DO_PUT_CANCEL), the sequence, topic and session it concerns, and
the outcome from the server's side ("ok", or the error kind it answered). Grouped by sequence,
these events are what `fsm.conformance.clients` checks a client against.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, TextIO

__all__ = ["ServerTrace"]


class ServerTrace:
    """A thread-safe list of server events, optionally mirrored to a JSON-lines file."""

    def __init__(self, sink: TextIO | Path | str | None = None) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._file: TextIO | None = None
        self._owned = False
        if isinstance(sink, (str, Path)):
            self._file = Path(sink).open("w", encoding="utf-8")  # noqa: SIM115 - closed by close()
            self._owned = True
        elif sink is not None:
            self._file = sink

    def observe(self, event: dict[str, Any]) -> None:
        with self._lock:
            event = {"n": len(self.events), **event}
            self.events.append(event)
            if self._file is not None:
                self._file.write(json.dumps(event, separators=(",", ":"), default=str) + "\n")
                self._file.flush()

    def for_sequence(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if e.get("sequence") == name]

    def sequences(self) -> list[str]:
        with self._lock:
            seen: dict[str, None] = {}
            for e in self.events:
                if e.get("sequence"):
                    seen.setdefault(str(e["sequence"]), None)
            return list(seen)

    def close(self) -> None:
        if self._file is not None and self._owned:
            self._file.close()
        self._file = None
