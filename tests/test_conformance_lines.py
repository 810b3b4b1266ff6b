"""`conformance --protocol X`: the suite checks a server of each protocol line by that line's
tables. A reference server of each line passes every requirement of its line; a requirement
the line does not have is n/a (never a pass); the broken servers of the later lines are
caught."""

from __future__ import annotations

import io
import json

import pytest

from fsm.cli import main
from fsm.spec.lines import line_names, load_line
from transport.conformance_runs import _broken_servers, _power_row
from transport.line_variants import LINE_VARIANTS

KEY_ACTIONS = ("API_KEY_CREATE", "API_KEY_STATUS", "API_KEY_REVOKE")


@pytest.mark.parametrize("protocol", line_names())
def test_the_reference_server_of_each_line_passes_every_requirement_of_its_line(
    protocol: str,
) -> None:
    out = io.StringIO()
    code = main(["conformance", "--protocol", protocol, "--budget", "0", "--report", "json"], out)
    report = json.loads(out.getvalue())
    verdicts = {case["id"]: case for case in report["cases"]}
    not_passed = {
        i: (c["status"], c["message"]) for i, c in verdicts.items() if c["status"] != "pass"
    }
    assert code == 0, not_passed
    assert report["summary"]["fail"] == 0 and report["summary"]["unknown"] == 0, not_passed
    assert report["summary"]["pass"] + report["summary"]["n/a"] == len(verdicts)
    assert set(not_passed) == {i for i, c in verdicts.items() if c["status"] == "n/a"}
    for _, message in not_passed.values():
        assert f"line {protocol}" in message, message
    spec = load_line(protocol).spec
    # The key lifecycle is a requirement exactly where the line's tables have key actions.
    has_keys = all(op in spec.operations for op in KEY_ACTIONS)
    assert verdicts["KEY-LIFECYCLE"]["status"] == ("pass" if has_keys else "n/a")
    ranges = "include_timestamp_range" in spec.query.sections["ontology"].options
    assert verdicts["QRY-DATA-RANGE"]["status"] == ("pass" if ranges else "n/a")
    # The permission cases run on every line: with created keys, or the server's own.
    for case in ("PERM-READ", "PERM-WRITE", "PERM-DELETE", "PERM-REPORT-READ", "AUTH-EXPIRED"):
        assert verdicts[case]["status"] == "pass", verdicts[case]


def test_the_text_report_counts_n_a_apart() -> None:
    out = io.StringIO()
    assert main(["conformance", "--protocol", "0.7", "--budget", "0"], out) == 0
    last = out.getvalue().strip().splitlines()[-1]
    assert "0 failed, 0 unknown of 81 requirements (2 n/a: not requirements" in last
    assert "N/A      KEY-LIFECYCLE" in out.getvalue()


# Each broken server of a later line, on the first line whose data it breaks, with the
# requirement that must catch it.
EXPECTED = {
    "session-create-without-locator": ("0.5", {"SES-CREATE"}),
    "read-bit-writes": ("0.6", {"PERM-READ"}),
    "info-without-limits": ("0.7", {"ACT-VERSION"}),
}


@pytest.mark.parametrize("variant", [v.name for v in LINE_VARIANTS])
def test_each_broken_server_of_a_later_line_is_caught(variant: str) -> None:
    protocol, catchers = EXPECTED[variant]
    line = load_line(protocol)
    chosen = next(v for v in LINE_VARIANTS if v.name == variant)
    assert chosen.applies(line)
    row = _power_row(("line variant", variant, 0, 0.0, protocol))
    assert row is not None and row.detected and row.labelled, row
    assert catchers <= set(row.caught_by), row.caught_by


def test_the_self_test_of_a_line_measures_the_broken_servers_its_data_has() -> None:
    on_03 = {name for kind, name in _broken_servers("0.3") if kind == "line variant"}
    on_05 = {name for kind, name in _broken_servers("0.5") if kind == "line variant"}
    on_07 = {name for kind, name in _broken_servers("0.7") if kind == "line variant"}
    assert on_03 == set()
    assert on_05 == {"session-create-without-locator"}
    assert on_07 == set(EXPECTED)
    # Deviations a line fixed or leaves unknown are not measured on it.
    line = load_line("0.7")
    measured = {name for kind, name in _broken_servers("0.7") if kind == "deviation"}
    assert measured.isdisjoint(line.unknown_deviations)
    assert measured <= set(line.spec.deviations)


def test_an_unknown_line_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    assert main(["conformance", "--protocol", "9.9", "--budget", "0"], out) == 2
    assert out.getvalue() == ""
    assert "argument --protocol: invalid choice: '9.9'" in capsys.readouterr().err


def test_a_deviation_whose_requirements_a_line_lacks_is_n_a_on_it_not_missed() -> None:
    # Only QRY-DATA-RANGE names it, and line 0.7's query answers no time ranges.
    did = "MOSAICOD-QUERY-RANGE-ONE-CHUNK"
    on_07 = _power_row(("deviation", did, 0, 0.0, "0.7"))
    assert on_07 is not None and not on_07.applicable and not on_07.detected
    on_03 = _power_row(("deviation", did, 0, 0.0, "0.3"))
    assert on_03 is not None and on_03.applicable and on_03.caught_by == ("QRY-DATA-RANGE",)


def test_a_url_target_of_a_line_without_key_actions_is_checked_with_the_keys_given() -> None:
    from fsm.enums import APIKeyPermissionEnum
    from transport.flight.server import start_server
    from transport.server.model import ServerModel

    model = ServerModel(protocol="0.6", auth=True)
    running = start_server(model)
    try:
        url = running.location
        given = [
            f"{p.value}={model.bootstrap_key(p)}"
            for p in (
                APIKeyPermissionEnum.Read,
                APIKeyPermissionEnum.Write,
                APIKeyPermissionEnum.Delete,
            )
        ]
        base = ["conformance", url, "--api-key", running.api_keys["manage"], "--protocol", "0.6"]
        base += ["--budget", "0", "--report", "json"]
        out = io.StringIO()
        assert main([*base, *(a for k in given for a in ("--key", k))], out) == 0
        verdicts = {c["id"]: c["status"] for c in json.loads(out.getvalue())["cases"]}
        for case in ("PERM-READ", "PERM-WRITE", "PERM-DELETE", "PERM-REPORT-READ"):
            assert verdicts[case] == "pass", case
        assert verdicts["AUTH-EXPIRED"] == "unknown"  # no expired key can be given
        out = io.StringIO()
        assert main(base, out) == 0
        verdicts = {c["id"]: c["status"] for c in json.loads(out.getvalue())["cases"]}
        assert verdicts["PERM-READ"] == "unknown"
        assert main([*base, "--key", "manage=x"], io.StringIO()) == 2
    finally:
        running.stop()
