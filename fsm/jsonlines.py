"""A thread-safe list of JSON records, optionally mirrored to a JSON-lines file."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from fsm.errors import ArgumentError

__all__ = ["JsonLines"]


def _dump(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"), default=str)


class JsonLines:
    """Records kept in memory (`records`) and, given a path or an open text file, written one
    JSON object a line as they come. A path is opened here and closed by `close()` (or by
    leaving a `with` block); records appended after that are kept in memory only."""

    def __init__(self, sink: TextIO | Path | str | None = None) -> None:
        self.records: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._file: TextIO | None = None
        self._owned = False
        if isinstance(sink, (str, Path)):
            self._file = Path(sink).open("w", encoding="utf-8")  # noqa: SIM115 - closed by close()
            self._owned = True
        elif sink is not None:
            self._file = sink

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        """Number the record ("n"), keep it and write it; answers the numbered record."""
        if "n" in record:
            raise ArgumentError(f"a record is numbered here; it may not carry 'n': {record!r}")
        with self._lock:
            numbered = {"n": len(self.records), **record}
            self.records.append(numbered)
            if self._file is not None:
                self._file.write(_dump(numbered) + "\n")
                self._file.flush()
            return numbered

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.records)

    def lines(self) -> Iterator[str]:
        for record in self.snapshot():
            yield _dump(record)

    def __enter__(self) -> JsonLines:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.flush()
            if self._owned:
                self._file.close()
            self._file = None
