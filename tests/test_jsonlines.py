"""The shared JSON-lines sink: numbered records, mirrored to a file, closed by `with`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fsm.errors import ArgumentError
from fsm.jsonlines import JsonLines


def test_records_are_numbered_kept_and_written(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    with JsonLines(path) as sink:
        assert sink.append({"event": "a"}) == {"n": 0, "event": "a"}
        sink.append({"event": "b", "when": Path("x")})
    sink.append({"event": "late"})  # after close: in memory only
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == [{"n": 0, "event": "a"}, {"n": 1, "event": "b", "when": "x"}]
    assert [r["n"] for r in sink.snapshot()] == [0, 1, 2]
    assert list(sink.lines())[2] == '{"n":2,"event":"late"}'


def test_a_record_carrying_its_own_number_is_refused() -> None:
    sink = JsonLines()
    with pytest.raises(ArgumentError, match="'n'"):
        sink.append({"n": 7, "event": "a"})
    assert sink.records == []
