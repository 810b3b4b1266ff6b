"""`check-trace` per protocol line: the client's line is given or recognised from the
handshake in the trace, the line's tables judge the client, and a known SDK deviation is
named with the releases it is known in."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from fsm.cli import main
from fsm.conformance.clients import check_client_trace
from fsm.spec.lines import client_deviation_ranges, load_line


def _ev(op: str, outcome: str = "ok", topic: str | None = None, **extra: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"op": op, "outcome": outcome, "sequence": "s", **extra}
    if topic:
        event["topic"] = f"s/{topic}"
    return event


OPENED = [
    _ev("SEQUENCE_CREATE"),
    _ev("SESSION_CREATE"),
    _ev("TOPIC_CREATE", topic="t"),
    _ev("DO_PUT_OPEN", topic="t"),
    _ev("DO_PUT_WRITE", topic="t", rows=3),
]
# SDK 0.4.3 and later under Delete: streams cancelled, the session deleted, then the sequence.
SINGLE_PURGE = [
    *OPENED,
    _ev("DO_PUT_CANCEL", topic="t"),
    _ev("SESSION_DELETE"),
    _ev("SEQUENCE_DELETE"),
]
# SDK 0.3.2 under Delete: the sequence deleted twice.
DOUBLE_DELETE = [*OPENED[:2], _ev("SEQUENCE_DELETE"), _ev("SEQUENCE_DELETE", "not_found")]
HANDSHAKE = {"info": {"op": "INFO", "outcome": "ok"}, "version": {"op": "VERSION", "outcome": "ok"}}


def _check(tmp_path: Path, events: list[dict[str, Any]], *options: str) -> tuple[int, str]:
    trace = tmp_path / "trace.jsonl"
    trace.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    out = io.StringIO()
    return main(["check-trace", str(trace), *options], out), out.getvalue()


def test_the_single_purge_conforms_to_the_lines_that_have_it(tmp_path: Path) -> None:
    code, text = _check(tmp_path, SINGLE_PURGE)
    assert code == 1 and text.startswith("protocol line 0.3 (assumed:"), text
    for line in ("0.4", "0.5", "0.6", "0.7"):
        code, text = _check(tmp_path, SINGLE_PURGE, "--protocol", line)
        assert code == 0, text
        assert text.startswith(f"protocol line {line} (given)") and "policy Delete" in text


@pytest.mark.parametrize(("shape", "line"), [("info", "0.7"), ("version", "0.6")])
def test_the_line_is_recognised_from_the_handshake(tmp_path: Path, shape: str, line: str) -> None:
    assert load_line(line).wire["connect"] == shape
    code, text = _check(tmp_path, [HANDSHAKE[shape], *SINGLE_PURGE])
    assert code == 0, text
    assert text.startswith(f"protocol line {line} (recognised from its {shape.upper()} handshake)")


def test_a_deviation_is_named_with_the_releases_it_is_known_in(tmp_path: Path) -> None:
    code, text = _check(tmp_path, DOUBLE_DELETE, "--protocol", "0.3")
    assert code == 1
    assert "DEVIATION SDK-DOUBLE-SEQUENCE-DELETE" in text
    assert "known in SDK 0.3.0 to 0.3.2; fixed in line 0.4" in text
    # Line 0.4 fixed it: the same requests are no longer a known deviation, but a violation.
    code, text = _check(tmp_path, DOUBLE_DELETE, "--protocol", "0.4")
    assert code == 1 and "VIOLATION" in text and "DEVIATION" not in text, text


def test_a_deviation_no_line_fixed_is_named_for_later_sdks() -> None:
    """Records dropped under Report (stated for SDK 0.3.2) remain a known deviation of 0.7.0."""
    push = {"op": "PUSH", "source": "client", "sequence": "s", "topic": "s/t", "rows": 1}
    events = [
        *OPENED[:4],
        *[push | {"outcome": "ok"}] * 4,
        _ev("TOPIC_NOTIFICATION_CREATE", topic="t"),
        _ev("DO_PUT_END", topic="t"),
        _ev("SEQUENCE_NOTIFICATION_CREATE"),
        _ev("SESSION_FINALIZE"),
    ]
    seven = load_line("0.7")
    report = check_client_trace(events, seven.spec, sequence="s", client=seven.client_parties)
    assert report.deviations == ("SDK-REPORT-DROPS-BUFFER",), [str(f) for f in report.findings]
    only_own = check_client_trace(events, seven.spec, sequence="s", client="sdk-0.7")
    assert only_own.violation is not None, "the 0.3.2 deviation is named only for its parties"


def test_deviation_ranges_follow_the_lines() -> None:
    ranges = client_deviation_ranges()
    double = ranges["SDK-DOUBLE-SEQUENCE-DELETE"]
    assert (double.releases, double.fixed_in) == (("0.3.0", "0.3.1", "0.3.2"), "0.4")
    hidden = ranges["SDK-HIDDEN-WRITE-ERROR"]
    assert hidden.fixed_in == "0.4"
    dropped = ranges["SDK-REPORT-DROPS-BUFFER"]
    assert dropped.fixed_in is None and dropped.releases[-1] == "0.7.0"
    assert all(not d.startswith("MOSAICOD") for d in ranges), "server deviations are not listed"


def test_an_unknown_line_is_a_usage_error(tmp_path: Path) -> None:
    code, text = _check(tmp_path, SINGLE_PURGE, "--protocol", "9.9")
    assert code == 2, text


WRITTEN = [
    *OPENED[:5],
    _ev("DO_PUT_END", topic="t"),
    _ev("SESSION_FINALIZE"),
]
UPDATE = [
    _ev("SESSION_CREATE"),
    _ev("TOPIC_CREATE", topic="u"),
    _ev("DO_PUT_OPEN", topic="u"),
    _ev("DO_PUT_WRITE", topic="u", rows=1),
    _ev("DO_PUT_END", topic="u"),
    _ev("SESSION_FINALIZE"),
]


@pytest.mark.parametrize("line", ["0.3", "0.4", "0.5", "0.6", "0.7"])
def test_an_updater_may_skip_its_read_where_the_line_marks_it_optional(line: str) -> None:
    """From 0.6 an SDK opens a session with sequence_update, without reading the sequence
    first: the enter-updater row marks that read optional there, and only there."""
    spec = load_line(line)
    row = spec.spec.session.lookup("Null", "enter", {"role": "updater", "policy": "Report"})
    assert row is not None
    optional = row.steps[0].do == "GET_FLIGHT_INFO" and row.steps[0].optional
    read = [*WRITTEN, _ev("GET_FLIGHT_INFO"), *UPDATE]
    direct = [*WRITTEN, *UPDATE]
    for events, conforms in ((read, True), (direct, optional)):
        report = check_client_trace(events, spec.spec, sequence="s", client=spec.client_parties)
        assert report.conforms is conforms, (line, [str(f) for f in report.findings])
    assert optional is (line in ("0.6", "0.7"))


def test_only_a_read_can_be_optional(tmp_path: Path) -> None:
    from fsm.errors import SpecError
    from tests.test_lines import read_line, refused

    doc = read_line("0.6")
    doc["lifecycle"]["session"]["replace"][1]["steps"][1]["optional"] = True
    error = refused(tmp_path, "0.6", doc, "only a read can be optional")
    assert isinstance(error, SpecError)
