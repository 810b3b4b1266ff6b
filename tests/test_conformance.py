"""The server conformance suite: clean on the specification's own server, every broken
server caught and named, reports well formed, other data on the target untouched."""

from __future__ import annotations

import io
import json
import logging
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsm import FlightAction
from fsm.cli import main
from fsm.conformance.cases import CASES
from fsm.conformance.explore import explore
from fsm.conformance.suite import SuiteResult, render, run_suite
from fsm.spec import load_spec
from transport.conformance_runs import deviation_oracles, embedded_target, oracle
from transport.memory import MemoryTransport
from transport.server.model import ServerModel

SPEC = load_spec()


@pytest.fixture(autouse=True)
def quiet() -> Iterator[None]:
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


def _run(model: ServerModel, *, budget: float = 0.0, with_key: bool = True) -> SuiteResult:
    with embedded_target(model) as target:
        if not with_key:
            model.auth = False
        return run_suite(
            target.connect,
            target=target.location,
            api_key=target.api_key if with_key else None,
            seed=3,
            budget=budget,
            oracle=oracle,
        )


def test_the_specifications_server_meets_every_requirement() -> None:
    result = _run(ServerModel(profile="spec"), budget=2.0)
    assert [v.case.id for v in result.verdicts if v.status != "pass"] == []
    assert result.exploration is not None and result.exploration.failure is None
    assert result.exploration.runs > 0 and result.exploration.steps > 0
    assert not result.failed


def test_every_requirement_has_an_id_a_text_and_a_source() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) >= 50
    for case in CASES:
        assert case.requirement.endswith(".") and case.source
        for did in case.deviations:
            assert SPEC.deviations[did].who == "mosaicod-0.3"


def test_a_deviating_server_fails_with_steps_and_labels() -> None:
    result = _run(ServerModel(profile="mosaicod-0.3"))
    failing = {v.case.id: v for v in result.verdicts if v.status == "fail"}
    assert "SES-FINALIZE-ONCE" in failing and failing["SES-FINALIZE-ONCE"].deviations == (
        "MOSAICOD-REFINALIZE",
    )
    verdict = failing["SES-FINALIZE-ONCE"]
    assert any("session_finalize" in step and "-> ok" in step for step in verdict.steps)
    text = render(result, "text")
    assert (
        "matches the recorded deviation MOSAICOD-REFINALIZE" in text
        and "reproduce with --seed 3" in text
    )
    report = json.loads(render(result, "json"))
    assert report["summary"]["fail"] == len(failing) and report["seed"] == 3
    suite = ET.fromstring(render(result, "junit"))
    assert suite.get("failures") == str(len(failing))
    assert len(suite.findall("testcase")) == len(CASES)
    assert len(suite.findall("testcase/failure")) == len(failing)


def test_without_a_key_the_key_requirements_are_unknown_not_failed() -> None:
    result = _run(ServerModel(profile="spec"), with_key=False)
    unknown = {v.case.id for v in result.verdicts if v.status == "unknown"}
    assert {"KEY-LIFECYCLE", "AUTH-MISSING", "PERM-READ"} <= unknown
    assert not result.failed


def test_the_suite_touches_only_what_it_created() -> None:
    model = ServerModel(profile="spec")
    bystander = MemoryTransport(model)
    assert bystander.action(
        FlightAction.SEQUENCE_CREATE, {"locator": "keep_me", "user_metadata": {"a": 1}}
    ).is_ok
    result = _run(model)
    assert "keep_me" in model.snapshot()["sequences"]
    left = [name for name in model.snapshot()["sequences"] if name != "keep_me"]
    assert sorted(left) == sorted(item.name for item in result.left_behind)
    assert {item.what for item in result.left_behind} == {"sequence"}
    assert all(
        "sequence_delete refused with failed_precondition" in item.reason
        for item in result.left_behind
    )
    assert all(name.startswith(result.prefix) for name in left)
    for name in left:  # only sequences whose locked sessions the spec forbids deleting
        assert any(
            s["state"] == "finalized"
            for s in model.snapshot()["sessions"].values()
            if s["sequence"] == name
        )


def test_exploration_finds_and_shrinks_a_disagreement() -> None:
    target = MemoryTransport(ServerModel(profile="mosaicod-0.3"))
    # The budget only bounds a slow machine: the search stops when it has found and shrunk
    # the disagreement (not cut short), in a few seconds on an idle one.
    found = explore(target, oracle, prefix="xq", seed=0, budget=300, deviations=deviation_oracles())
    assert found.failure is not None and "the target answered" in found.failure
    assert not found.cut_short, "found and shrunk within the budget"
    # Whole requests with the target's answers, names relative to the run's prefix.
    assert found.minimal_steps and all(" -> " in step for step in found.minimal_steps)
    assert not any("xq" in step for step in found.minimal_steps)
    assert len(found.deviations) == 1 and found.deviations[0].startswith("MOSAICOD-")


def test_exploration_is_clean_against_the_specification() -> None:
    found = explore(
        MemoryTransport(ServerModel(profile="spec")), oracle, prefix="x", seed=5, budget=1
    )
    assert found.failure is None and found.runs >= 10


def test_conformance_command(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    out = io.StringIO()
    assert (
        main(["conformance", "--budget", "0", "--report", "json", "--out", str(report)], out) == 0
    )
    assert json.loads(report.read_text())["summary"]["fail"] == 0
    out = io.StringIO()
    assert main(["conformance", "--budget", "0", "--profile", "mosaicod-0.3"], out) == 1
    assert "MOSAICOD-REPORT-LOCKS" in out.getvalue()
    junit = tmp_path / "report.xml"
    assert (
        main(
            ["conformance", "--budget", "0", "--report", "junit", "--out", str(junit)],
            io.StringIO(),
        )
        == 0
    )
    assert ET.parse(junit).getroot().get("failures") == "0"


def test_the_self_test_catches_every_broken_server_and_names_deviations() -> None:
    """The self-test command, in worker processes: every emulated deviation and every broken
    variant is measured, caught, and named right (a deviation by its own id alone)."""
    from transport.server.variants import VARIANTS

    out = io.StringIO()
    assert main(["conformance", "--self-test", "--workers", "2"], out) == 0
    lines = out.getvalue().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("broken server"))
    table = lines[header + 1 : lines.index("", header)]
    rows = {line.split()[0]: line for line in table}
    server_deviations = {d for d, dev in SPEC.deviations.items() if dev.who == "mosaicod-0.3"}
    variants = {v.name for v in VARIANTS}
    assert len(variants) >= 5
    assert sorted(rows) == sorted(server_deviations | variants)
    missed = [name for name, line in rows.items() if "NOT CAUGHT" in line]
    assert missed == [], f"not caught: {missed}"
    unnamed = [name for name, line in rows.items() if not line.endswith(" yes")]
    assert unnamed == [], f"caught but not named: {unnamed}"
    baseline = next(line for line in lines if line.startswith("the specification's own server:"))
    assert " 0 failed" in baseline, baseline
    broken = len(rows)
    assert lines[-1].startswith(f"self-test: {broken} of {broken} broken servers caught")
