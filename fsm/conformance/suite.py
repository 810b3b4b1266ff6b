"""Running the conformance suite against a target, and reporting it (text, JSON, JUnit).

Every case runs under a unique name prefix and only touches what it creates; at the end the
suite deletes the sequences it made (a sequence holding a locked session cannot be deleted
under the spec: those are listed as left behind). A failure names the requirement, the steps
that reproduce it, the seed, and the recorded deviation it matches, if any.
"""

from __future__ import annotations

import json
import secrets
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from fsm.conformance.cases import CASES, Case
from fsm.conformance.context import Context, Fail, TransportFactory, Unknown
from fsm.conformance.explore import Exploration, explore
from fsm.enums import FlightAction
from fsm.spec import Spec, load_spec
from fsm.transport import Transport

__all__ = ["SuiteResult", "Verdict", "render", "run_suite"]


@attrs.frozen
class Verdict:
    case: Case
    status: str  # pass, fail or unknown
    message: str
    steps: tuple[str, ...]
    deviations: tuple[str, ...]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.case.id,
            "requirement": self.case.requirement,
            "source": self.case.source,
            "status": self.status,
            "message": self.message,
            "steps": list(self.steps),
            "deviations": list(self.deviations),
            "seconds": round(self.seconds, 4),
        }


@attrs.frozen
class SuiteResult:
    target: str
    seed: int
    prefix: str
    verdicts: tuple[Verdict, ...]
    exploration: Exploration | None
    left_behind: tuple[str, ...]
    seconds: float

    def count(self, status: str) -> int:
        return sum(v.status == status for v in self.verdicts)

    @property
    def failed(self) -> bool:
        return self.count("fail") > 0 or (
            self.exploration is not None and self.exploration.failure is not None
        )

    def failing_ids(self) -> list[str]:
        ids = [v.case.id for v in self.verdicts if v.status == "fail"]
        if self.exploration is not None and self.exploration.failure is not None:
            ids.append("EXPLORE")
        return ids


def run_suite(
    connect: TransportFactory,
    *,
    target: str,
    api_key: str | None = None,
    seed: int = 0,
    budget: float = 0.0,
    oracle: Callable[[], Transport] | None = None,
    cases: Sequence[Case] = CASES,
    progress: Callable[[int, int, Verdict], None] | None = None,
    spec: Spec | None = None,
) -> SuiteResult:
    """Run every case against the target, then explore for `budget` seconds (when an oracle,
    a transport to a fresh reference model, is given)."""
    spec = spec or load_spec()
    started = time.monotonic()
    prefix = f"mfsm{seed}x{secrets.token_hex(3)}"
    verdicts: list[Verdict] = []
    created: list[str] = []
    for number, case in enumerate(cases, 1):
        ctx = Context(connect, api_key, f"{prefix}_{number}")
        t0 = time.monotonic()
        status, message = "pass", ""
        try:
            case.run(ctx)
        except Fail as failure:
            status, message = "fail", str(failure)
        except Unknown as unknown:
            status, message = "unknown", str(unknown)
        except Exception as error:  # a crash while checking is a failure of the target's answers
            status, message = (
                "fail",
                f"the check could not complete: {type(error).__name__}: {error}",
            )
        finally:
            created.extend(ctx.created)
            ctx.close()
        labels = (
            tuple(d for d in case.deviations if d in spec.deviations) if status == "fail" else ()
        )
        verdict = Verdict(case, status, message, tuple(ctx.steps), labels, time.monotonic() - t0)
        verdicts.append(verdict)
        if progress is not None:
            progress(number, len(cases), verdict)
    exploration = None
    if oracle is not None and budget > 0:
        transport = connect(api_key)
        try:
            exploration = explore(transport, oracle, prefix=f"{prefix}e", seed=seed, budget=budget)
        finally:
            transport.close()
    left = _clean_up(connect, api_key, prefix, created)
    return SuiteResult(
        target, seed, prefix, tuple(verdicts), exploration, left, time.monotonic() - started
    )


def _clean_up(
    connect: TransportFactory, api_key: str | None, prefix: str, created: list[str]
) -> tuple[str, ...]:
    """Delete every sequence the suite created (its prefix: nothing else is touched)."""
    transport = connect(api_key)
    try:
        listed = transport.list_sequences()
        names = set(created)
        if listed.is_ok:
            names |= {n for n in listed.value if str(n).startswith(prefix)}
        left = []
        for name in sorted(names):
            outcome = transport.action(FlightAction.SEQUENCE_DELETE, {"locator": name})
            if not outcome.is_ok and outcome.kind is not None and outcome.kind.value != "not_found":
                left.append(name)
        return tuple(left)
    finally:
        transport.close()


# -----------------------------------------------------------------------------------------------
# Reports


def render(result: SuiteResult, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(_as_json(result), indent=2) + "\n"
    if fmt == "junit":
        return _as_junit(result)
    return _as_text(result)


def _as_json(result: SuiteResult) -> dict[str, Any]:
    out: dict[str, Any] = {
        "target": result.target,
        "seed": result.seed,
        "prefix": result.prefix,
        "summary": {s: result.count(s) for s in ("pass", "fail", "unknown")},
        "cases": [v.to_json() for v in result.verdicts],
        "left_behind": list(result.left_behind),
        "seconds": round(result.seconds, 3),
    }
    if result.exploration is not None:
        e = result.exploration
        out["exploration"] = {
            "runs": e.runs,
            "requests": e.steps,
            "seconds": round(e.seconds, 3),
            "seed": e.seed,
            "failure": e.failure,
            "minimal_steps": list(e.minimal_steps),
        }
    return out


def _as_text(result: SuiteResult) -> str:
    lines = [
        f"mosaico-fsm conformance of {result.target} (seed {result.seed}, names under {result.prefix})",
        "",
    ]
    for v in result.verdicts:
        lines.append(f"{v.status.upper():8} {v.case.id:22} {v.case.requirement}")
        if v.status != "pass":
            lines.append(f"{'':9}{v.message}")
        if v.status == "fail":
            if v.deviations:
                lines.append(f"{'':9}matches the recorded deviation {' or '.join(v.deviations)}")
            lines.append(f"{'':9}source: {v.case.source}; reproduce with --seed {result.seed}:")
            lines += [f"{'':11}{step}" for step in v.steps]
    e = result.exploration
    if e is not None:
        lines.append("")
        verdict = "FAIL" if e.failure else "PASS"
        lines.append(
            f"{verdict:8} {'EXPLORE':22} random request sequences agree with the specification's model"
        )
        lines.append(
            f"{'':9}{e.runs} runs, {e.steps} requests compared in {e.seconds:.1f} s (seed {e.seed})"
        )
        if e.failure:
            lines.append(f"{'':9}{e.failure}")
            lines += [f"{'':11}{step}" for step in e.minimal_steps]
    lines.append("")
    lines.append(
        f"{result.count('pass')} passed, {result.count('fail')} failed, {result.count('unknown')} unknown "
        f"of {len(result.verdicts)} requirements in {result.seconds:.1f} s"
    )
    if result.left_behind:
        lines.append(
            f"left behind: {len(result.left_behind)} sequence(s) the target refused to delete "
            f"(locked sessions cannot be deleted under the spec): {', '.join(result.left_behind[:5])}"
        )
    return "\n".join(lines) + "\n"


def _as_junit(result: SuiteResult) -> str:
    suite = ET.Element(
        "testsuite",
        name="mosaico-fsm conformance",
        tests=str(len(result.verdicts) + (1 if result.exploration else 0)),
        failures=str(len(result.failing_ids())),
        skipped=str(result.count("unknown")),
        time=f"{result.seconds:.3f}",
    )
    properties = ET.SubElement(suite, "properties")
    for key, value in (
        ("target", result.target),
        ("seed", str(result.seed)),
        ("prefix", result.prefix),
    ):
        ET.SubElement(properties, "property", name=key, value=value)
    for v in result.verdicts:
        case = ET.SubElement(
            suite, "testcase", classname=v.case.group, name=v.case.id, time=f"{v.seconds:.4f}"
        )
        if v.status == "fail":
            failure = ET.SubElement(case, "failure", message=v.message)
            labels = f"matches {' or '.join(v.deviations)}\n" if v.deviations else ""
            failure.text = f"{v.case.requirement}\nsource: {v.case.source}\n{labels}" + "\n".join(
                v.steps
            )
        elif v.status == "unknown":
            ET.SubElement(case, "skipped", message=v.message)
        ET.SubElement(case, "system-out").text = v.case.requirement
    if result.exploration is not None:
        e = result.exploration
        case = ET.SubElement(
            suite, "testcase", classname="EXPLORE", name="EXPLORE", time=f"{e.seconds:.3f}"
        )
        if e.failure:
            ET.SubElement(case, "failure", message=e.failure).text = "\n".join(e.minimal_steps)
    return ET.tostring(suite, encoding="unicode") + "\n"
