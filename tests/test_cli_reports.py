"""What the commands print when things go right: one summary line at the end of every text
report, narrow tables with a legend, HTML reports that stand alone, progress only where it
belongs, no clean-up noise from a throwaway server, --version and defaults in --help. Each
runs the real command in a subprocess."""

from __future__ import annotations

import argparse
import html
import json
import re
from pathlib import Path

import pytest

from fsm.cli import build_parser
from fsm.conformance.cases import CASES
from tests.test_cli_errors import ROOT, mosaico_fsm

CONFORMANCE_SUMMARY = re.compile(
    r"^\d+ passed, \d+ failed, \d+ unknown of \d+ requirements.* in \d+\.\d s$"
)
SIMULATE_SUMMARY = re.compile(
    r"^\d+ runs? of \d+ scenarios? \(up to \d faults? per run, seed \d+\)"
)


def test_version() -> None:
    result = mosaico_fsm("--version")
    assert result.returncode == 0
    assert re.fullmatch(r"mosaico-fsm \d+\.\d+\.\d+\S*\n", result.stdout), result.stdout


def test_every_help_shows_the_defaults() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert isinstance(sub, argparse._SubParsersAction)
    for name, parser in sub.choices.items():
        text = " ".join(parser.format_help().split())
        for action in parser._actions:
            if action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
                continue
            assert f"(default: {action.default})" in text, (name, action.dest)
    serve_help = mosaico_fsm("serve", "--help").stdout
    assert "(default: 6726)" in serve_help and "(default: 127.0.0.1)" in serve_help


def test_progress_only_on_a_terminal_unless_asked(tmp_path: Path) -> None:
    quiet = mosaico_fsm("simulate", "--scenario", "writer-report-1-topic", cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == ""
    shown = mosaico_fsm(
        "simulate", "--scenario", "writer-report-1-topic", "--progress", cwd=tmp_path
    )
    assert shown.returncode == 0 and "runs" in shown.stderr
    assert shown.stdout == quiet.stdout  # progress never reaches the report


def test_conformance_on_a_throwaway_server_is_quiet_and_ends_with_a_summary(
    tmp_path: Path,
) -> None:
    result = mosaico_fsm("conformance", "--budget", "1", cwd=tmp_path)  # Hypothesis runs too
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert CONFORMANCE_SUMMARY.match(lines[-1]), lines[-1]
    assert "Left on the target" not in result.stdout  # leftovers of a discarded server
    assert "left behind" not in result.stdout and "refused with" not in result.stdout
    wide = [line for line in lines if len(line) > 100 and not line.startswith(" " * 11)]
    assert not wide
    assert not (tmp_path / ".hypothesis").exists()


def test_out_writes_the_report_and_says_the_summary(tmp_path: Path) -> None:
    report = tmp_path / "r.txt"
    result = mosaico_fsm("conformance", "--budget", "0", "--out", str(report), cwd=tmp_path)
    assert result.returncode == 0
    summary, written = result.stdout.splitlines()
    assert CONFORMANCE_SUMMARY.match(summary) and written == f"report written to {report}"
    assert report.read_text().splitlines()[-1] == summary


@pytest.mark.flight
def test_leftovers_on_a_real_target_are_one_summary_part_and_listed(tmp_path: Path) -> None:
    from transport.flight.server import start_server

    with start_server() as running:
        result = mosaico_fsm("conformance", running.location, "--budget", "0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.search(r", (\d+) left behind on the target in ", lines[-1]), lines[-1]
    count = int(re.search(r", (\d+) left behind", lines[-1]).group(1))  # type: ignore[union-attr]
    section = result.stdout.split("Left on the target", 1)[1]
    assert len(re.findall(r"mfsm0x\w+", section)) == count
    assert result.stderr == ""


def test_simulate_report_is_narrow_has_a_legend_and_a_summary(tmp_path: Path) -> None:
    result = mosaico_fsm("simulate", "--scenario", "writer-topic-error", cwd=tmp_path)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert SIMULATE_SUMMARY.match(lines[-1]), lines[-1]
    assert max(len(line) for line in lines) <= 120
    assert any(line.startswith("Cells: CLIENT | SERVER") for line in lines)
    for mark in ("!", "?", "seq gone", "locked N/M topics"):
        assert any(line.strip().startswith(mark) for line in lines), mark


def test_replay_plural_and_labels_say_what_fired(tmp_path: Path) -> None:
    one = mosaico_fsm(
        "simulate",
        "--scenario",
        "writer-report-1-topic",
        "--fault",
        "SESSION_FINALIZE#1:internal",
        cwd=tmp_path,
    )
    assert one.stdout.splitlines()[-1].startswith("1 run of 1 scenario (up to 1 fault per run")
    # After an exception in the block, Report finalizes but Delete never sends a finalize:
    # the planned fault fires only under Report, and the Delete row says so.
    result = mosaico_fsm(
        "simulate",
        "--scenario",
        "writer-session-error",
        "--fault",
        "SESSION_FINALIZE#1:failed_precondition",
        cwd=tmp_path,
    )
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    rows = [line.split("  ")[0] for line in lines if line.startswith("SESSION_FINALIZE#1")]
    assert rows == [
        "SESSION_FINALIZE#1:failed_precondition",
        "SESSION_FINALIZE#1:failed_precondition (fired: nothing)",
    ]
    assert "writer-delete-session-error: faults fired: none; raised Boom" in lines


def test_update_readme_says_when_nothing_changed(tmp_path: Path) -> None:
    copy = tmp_path / "README.md"
    copy.write_text((ROOT / "README.md").read_text(encoding="utf-8"), encoding="utf-8")
    result = mosaico_fsm("diagram", "--update-readme", str(copy))
    assert result.returncode == 0 and "nothing changed" in result.stdout
    copy.write_text(copy.read_text().replace("SESSION_FINALIZE", "SESSION_FINISH"))
    result = mosaico_fsm("diagram", "--update-readme", str(copy))
    assert result.returncode == 0 and result.stdout.startswith("updated the diagrams")


def test_check_trace_of_a_conformance_run_explains_its_summary(tmp_path: Path) -> None:
    from fsm.conformance.suite import run_suite
    from transport.conformance_runs import embedded_target
    from transport.server.model import ServerModel
    from transport.server.trace import ServerTrace

    path = tmp_path / "server.jsonl"
    model = ServerModel(profile="spec")
    model.trace = ServerTrace(path)
    with embedded_target(model) as target:
        run_suite(target.connect, target=target.location, api_key=target.api_key)
    model.trace.close()
    result = mosaico_fsm("check-trace", str(path))
    assert result.returncode == 1
    *_, explained, suite, last = result.stdout.splitlines()
    match = re.fullmatch(r"(\d+) sequences checked: (\d+) conform, (\d+) do not conform", last)
    assert match, last
    assert int(match[1]) == int(match[2]) + int(match[3]) and int(match[3]) > 0
    assert explained.startswith("A sequence does not conform when")
    assert "`mosaico-fsm conformance` made them" in suite


def _standalone(page: str) -> None:
    """An HTML page that needs nothing else: no script, no stylesheet or image fetched."""
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<script" not in page and "<link" not in page
    assert not re.search(r"(src|href)=\"?(https?:)?//", page)
    assert "url(" not in page


def test_conformance_html_report(tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    result = mosaico_fsm(
        "conformance",
        "--budget",
        "0",
        "--profile",
        "mosaicod-0.3",
        "--report",
        "html",
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert result.returncode == 1  # the profile's deviations fail, each named
    page = out.read_text(encoding="utf-8")
    _standalone(page)
    for case in CASES:
        assert f'<td class="id">{html.escape(case.id)}</td>' in page, case.id
        assert html.escape(case.requirement) in page
        for part in case.source.split("; "):
            assert html.escape(part) in page
    assert "MOSAICOD-REPORT-LOCKS" in page and "reproduce (seed 0)" in page
    assert "DoAction sequence_create" in page
    assert html.escape(result.stdout.splitlines()[0]) in page  # the summary line


def test_simulate_html_report_has_a_replay_command_in_every_cell(tmp_path: Path) -> None:
    out = tmp_path / "sim.html"
    result = mosaico_fsm(
        "simulate",
        "--scenario",
        "writer-1-topic",
        "--report",
        "html",
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert result.returncode == 0
    page = out.read_text(encoding="utf-8")
    _standalone(page)
    data = json.loads(
        mosaico_fsm("simulate", "--scenario", "writer-1-topic", "--report", "json").stdout
    )
    cells = page.count('<td class="c-')
    commands = re.findall(r"<code>(mosaico-fsm simulate --scenario [^<]+)</code>", page)
    assert cells - page.count('class="c-empty"') == len(commands) == data["runs"]
    assert 'class="legend"' in page and "the session never opened" in page
