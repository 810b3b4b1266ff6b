"""Running the conformance suite against a target, and reporting it (text, JSON, JUnit).

Before the cases run, the target must answer a `version` request (`Unreachable` otherwise).
Every case runs under a unique name prefix and only touches what it creates; at the end the
suite deletes the sequences under its prefix and revokes the API keys it created, and lists
what it could not remove, each with the target's reason (a sequence holding a locked session
cannot be deleted under the spec). A failure names the requirement, the steps that reproduce
it, the seed, and the recorded deviation it matches, if any.
"""

from __future__ import annotations

import json
import secrets
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from fsm.conformance.cases import CASES, Case
from fsm.conformance.context import Context, Fail, TransportFactory, Unknown
from fsm.conformance.explore import Exploration, explore
from fsm.conformance.requests import outcome_text
from fsm.enums import FlightAction
from fsm.errors import OutcomeUnknown
from fsm.outcome import ErrorKind, Outcome, OutcomeStatus
from fsm.spec import Spec, load_spec
from fsm.transport import Transport

__all__ = ["LeftBehind", "SuiteResult", "Unreachable", "Verdict", "render", "run_suite"]


class Unreachable(Exception):
    """The target did not answer a `version` request: nothing could be checked."""


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
class LeftBehind:
    """Something the suite made and could not remove: a sequence, an API key (by its
    fingerprint), or every sequence under the prefix when they could not be listed."""

    what: str
    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.what} {self.name}: {self.reason}"

    def to_json(self) -> dict[str, str]:
        return {"what": self.what, "name": self.name, "reason": self.reason}


@attrs.frozen
class SuiteResult:
    target: str
    seed: int
    prefix: str
    verdicts: tuple[Verdict, ...]
    exploration: Exploration | None
    left_behind: tuple[LeftBehind, ...]
    seconds: float

    def count(self, status: str) -> int:
        return sum(v.status == status for v in self.verdicts)

    @property
    def failed(self) -> bool:
        return bool(self.failing_ids())

    @property
    def observed_nothing(self) -> bool:
        """Every requirement ended unknown: the run showed neither conformance nor its lack."""
        return bool(self.verdicts) and self.count("unknown") == len(self.verdicts)

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
    deviation_oracles: Mapping[str, Callable[[], Transport]] | None = None,
    cases: Sequence[Case] = CASES,
    progress: Callable[[int, int, Verdict], None] | None = None,
    spec: Spec | None = None,
) -> SuiteResult:
    """Run every case against the target, then explore for at most `budget` seconds (when an
    oracle, a transport to a fresh reference model, is given; `deviation_oracles` name a
    disagreement that one of them reproduces). Unreachable when the target does not answer."""
    spec = spec or load_spec()
    started = time.monotonic()
    _reach(connect, api_key, target)
    prefix = f"mfsm{seed}x{secrets.token_hex(3)}"
    verdicts: list[Verdict] = []
    keys: list[str] = []
    for number, case in enumerate(cases, 1):
        ctx = Context(connect, api_key, f"{prefix}_{number}")
        t0 = time.monotonic()
        status, message = "pass", ""
        labels: tuple[str, ...] = ()
        try:
            case.run(ctx)
        except Fail as failure:
            status, message = "fail", str(failure)
            labels = tuple(d for d in case.labels(failure) if d in spec.deviations)
        except (Unknown, OutcomeUnknown) as unknown:
            status, message = "unknown", str(unknown)
        except Exception as error:  # a crash while checking is a failure of the target's answers
            status, message = (
                "fail",
                f"the check could not complete: {type(error).__name__}: {error}",
            )
        finally:
            keys.extend(ctx.keys)
            ctx.close()
        verdict = Verdict(case, status, message, tuple(ctx.steps), labels, time.monotonic() - t0)
        verdicts.append(verdict)
        if progress is not None:
            progress(number, len(cases), verdict)
    exploration = None
    if oracle is not None and budget > 0:
        transport = connect(api_key)
        try:
            exploration = explore(
                transport,
                oracle,
                prefix=f"{prefix}e",
                seed=seed,
                budget=budget,
                deviations=deviation_oracles,
            )
        finally:
            transport.close()
    left = _clean_up(connect, api_key, prefix, keys)
    return SuiteResult(
        target, seed, prefix, tuple(verdicts), exploration, left, time.monotonic() - started
    )


def _reach(connect: TransportFactory, api_key: str | None, target: str) -> None:
    """Unreachable unless the target answers `version` (a refusal is an answer too)."""
    try:
        transport = connect(api_key)
    except Exception as error:
        raise Unreachable(f"cannot connect to {target}: {error}") from error
    try:
        outcome = transport.action(FlightAction.VERSION, {})
    finally:
        transport.close()
    if outcome.status is OutcomeStatus.UNKNOWN:
        raise Unreachable(f"{target} does not answer: {outcome.detail[:200]}")


def _undone(outcome: Outcome, request: str) -> str | None:
    """Why a clean-up request did not remove its resource (None: removed, or already gone)."""
    if outcome.status is OutcomeStatus.UNKNOWN:
        return f"the reply to {request} was lost ({outcome.detail[:120]})"
    if outcome.is_ok or outcome.kind is ErrorKind.NOT_FOUND:
        return None
    kind = outcome_text(outcome)
    detail = outcome.detail.removeprefix(f"{kind}: ")
    return f"{request} refused with {kind}: {detail[:160]}"


def _clean_up(
    connect: TransportFactory, api_key: str | None, prefix: str, keys: Sequence[str]
) -> tuple[LeftBehind, ...]:
    """Delete every sequence under the suite's prefix (nothing else is touched) and revoke
    every key the suite created; what remains, with the reason."""
    left: list[LeftBehind] = []
    transport = connect(api_key)
    try:
        listed = transport.list_sequences()
        if listed.is_ok:
            names = sorted(n for n in listed.value if str(n).startswith(prefix))
        else:
            names = []
            left.append(
                LeftBehind(
                    "sequences",
                    f"{prefix}*",
                    f"ListFlights {outcome_text(listed, detail=True)}: the suite's sequences "
                    "could not be found, so none was deleted",
                )
            )
        for name in names:
            outcome = transport.action(FlightAction.SEQUENCE_DELETE, {"locator": name})
            reason = _undone(outcome, "sequence_delete")
            if reason is not None:
                left.append(LeftBehind("sequence", name, reason))
        for fingerprint in dict.fromkeys(keys):
            outcome = transport.action(
                FlightAction.API_KEY_REVOKE, {"api_key_fingerprint": fingerprint}
            )
            reason = _undone(outcome, "api_key_revoke")
            if reason is not None:
                left.append(LeftBehind("API key", fingerprint, reason))
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
        "left_behind": [item.to_json() for item in result.left_behind],
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
            "deviations": list(e.deviations),
            "shrinking_cut_short": e.cut_short,
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
            if e.deviations:
                lines.append(f"{'':9}matches the recorded deviation {' or '.join(e.deviations)}")
            shrunk = (
                "shrinking was stopped at the budget, so they may not be the fewest"
                if e.cut_short
                else "shrunk"
            )
            lines.append(f"{'':9}steps ({shrunk}), reproduce with --seed {e.seed}:")
            lines += [f"{'':11}{step}" for step in e.minimal_steps]
    lines.append("")
    lines.append(
        f"{result.count('pass')} passed, {result.count('fail')} failed, {result.count('unknown')} unknown "
        f"of {len(result.verdicts)} requirements in {result.seconds:.1f} s"
    )
    if result.left_behind:
        lines.append(f"left behind: {len(result.left_behind)} item(s) the suite could not remove:")
        lines += [f"{'':2}{item}" for item in result.left_behind]
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
            labels = f"matches {' or '.join(e.deviations)}\n" if e.deviations else ""
            ET.SubElement(case, "failure", message=e.failure).text = labels + "\n".join(
                e.minimal_steps
            )
    return ET.tostring(suite, encoding="unicode") + "\n"
