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
import re
import secrets
import textwrap
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from fsm.conformance.cases import CASES, Case
from fsm.conformance.context import (
    Context,
    Fail,
    KeySource,
    NotApplicable,
    TransportFactory,
    Unknown,
)
from fsm.conformance.explore import Exploration, explore
from fsm.conformance.requests import outcome_text
from fsm.enums import FlightAction
from fsm.errors import ConformanceError, OutcomeUnknown
from fsm.outcome import ErrorKind, Outcome, OutcomeStatus
from fsm.spec import Spec
from fsm.spec.lines import DEFAULT_LINE, Line, load_line, load_lines
from fsm.transport import Transport

__all__ = [
    "LeftBehind",
    "SuiteResult",
    "Unreachable",
    "Verdict",
    "render",
    "run_suite",
    "summary_line",
]


STATUSES = ("pass", "fail", "unknown", "n/a")
"""A verdict's status: n/a is a requirement the target's protocol line does not have."""


class Unreachable(ConformanceError):
    """The target cannot be checked, so nothing was: it does not answer a `version` request,
    answers it as no Mosaico server does, or refuses the key (`hint` says what to do)."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


@attrs.frozen
class Verdict:
    case: Case
    status: str  # pass, fail, unknown, or n/a (not a requirement of the target's line)
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
    interrupted: bool = False
    """The run was stopped (Ctrl-C): `verdicts` holds the requirements checked until then."""
    throwaway: bool = False
    """The target is discarded after the run (an embedded server): what the suite left on
    it is not worth reporting."""
    total: int | None = None
    """How many requirements the run was to check (None: as many as `verdicts`)."""

    def count(self, status: str) -> int:
        return sum(v.status == status for v in self.verdicts)

    @property
    def failed(self) -> bool:
        return bool(self.failing_ids())

    @property
    def observed_nothing(self) -> bool:
        """Every requirement of the target's line ended unknown: the run showed neither
        conformance nor its lack."""
        return bool(self.count("unknown")) and self.count("unknown") + self.count("n/a") == len(
            self.verdicts
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
    deviation_oracles: Mapping[str, Callable[[], Transport]] | None = None,
    cases: Sequence[Case] = CASES,
    progress: Callable[[int, int, Verdict], None] | None = None,
    spec: Spec | None = None,
    phase: Callable[[str], None] | None = None,
    throwaway: bool = False,
    stop: Callable[[], bool] | None = None,
    line: Line | None = None,
    keys: KeySource | None = None,
) -> SuiteResult:
    """Run every case against the target, then explore for at most `budget` seconds (when an
    oracle, a transport to a fresh reference model, is given; `deviation_oracles` name a
    disagreement that one of them reproduces). Unreachable when the target does not answer,
    is not a Mosaico server, or refuses the key. `phase` hears "cases", "exploring" and
    "cleaning up" as the run moves on. A KeyboardInterrupt, or `stop()` turning True, stops
    the run: the suite cleans up and returns what it checked, marked `interrupted`.

    `line` is the protocol line the target speaks (default: the line whose tables are `spec`,
    or 0.3): a case needing an operation the line lacks is `n/a`, and requests that differ
    per line are built from its data. `keys` gives keys of each permission on a line whose
    server makes its keys itself (no API-key actions)."""
    line = _line_of(line, spec)
    spec = line.spec
    started = time.monotonic()
    _reach(connect, api_key, target, spec)
    prefix = f"mfsm{seed}x{secrets.token_hex(3)}"
    verdicts: list[Verdict] = []
    made: list[str] = []
    interrupted = False
    exploration = None
    try:
        if phase is not None:
            phase("cases")
        _run_cases(connect, api_key, prefix, cases, line, keys, verdicts, made, progress)
        if oracle is not None and budget > 0:
            if phase is not None:
                phase("exploring")
            transport = connect(api_key)
            try:
                exploration = explore(
                    transport,
                    oracle,
                    prefix=f"{prefix}e",
                    seed=seed,
                    budget=budget,
                    deviations=deviation_oracles,
                    stop=stop,
                )
            finally:
                transport.close()
    except KeyboardInterrupt:
        interrupted = True
    if stop is not None and stop():  # Ctrl-C that a library caught on its way
        interrupted = True
    if phase is not None:
        phase("cleaning up")
    try:
        left = _clean_up(connect, api_key, prefix, made)
    except KeyboardInterrupt:
        interrupted = True
        left = (LeftBehind("sequences", f"{prefix}*", "the clean-up was interrupted"),)
    return SuiteResult(
        target,
        seed,
        prefix,
        tuple(verdicts),
        exploration,
        left,
        time.monotonic() - started,
        interrupted=interrupted,
        throwaway=throwaway,
        total=len(cases),
    )


def _line_of(line: Line | None, spec: Spec | None) -> Line:
    """The line to check a target as: `line`, or the line whose tables are `spec`."""
    if line is not None:
        if spec is not None and spec is not line.spec:
            raise ConformanceError(f"give a line or a spec, not both (line {line.name})")
        return line
    if spec is None:
        return load_line(DEFAULT_LINE)
    for known in load_lines().values():
        if known.spec is spec:
            return known
    return attrs.evolve(load_line(DEFAULT_LINE), spec=spec)


def _run_cases(
    connect: TransportFactory,
    api_key: str | None,
    prefix: str,
    cases: Sequence[Case],
    line: Line,
    keys: KeySource | None,
    verdicts: list[Verdict],
    made: list[str],
    progress: Callable[[int, int, Verdict], None] | None,
) -> None:
    """Run the cases in order, appending each verdict (and the keys a case made) as it ends."""
    spec = line.spec
    for number, case in enumerate(cases, 1):
        ctx = Context(connect, api_key, f"{prefix}_{number}", line, keys)
        t0 = time.monotonic()
        status, message = "pass", ""
        labels: tuple[str, ...] = ()
        try:
            case.run(ctx)
        except Fail as failure:
            status, message = "fail", str(failure)
            labels = tuple(d for d in case.labels(failure) if d in spec.deviations)
        except NotApplicable as not_applicable:
            status, message = "n/a", str(not_applicable)
        except (Unknown, OutcomeUnknown) as unknown:
            status, message = "unknown", str(unknown)
        except Exception as error:  # a crash while checking is a failure of the target's answers
            status, message = (
                "fail",
                f"the check could not complete: {type(error).__name__}: {error}",
            )
        finally:
            made.extend(ctx.keys)
            ctx.close()
        verdict = Verdict(case, status, message, tuple(ctx.steps), labels, time.monotonic() - t0)
        verdicts.append(verdict)
        if progress is not None:
            progress(number, len(cases), verdict)


_KEY_HINT = "pass --api-key with a manage key, such as the one `serve --api-key-auth` prints"


def _hello(spec: Spec) -> str:
    """The action a server of `spec` answers with its version: version, or (where the
    tables replace it) info."""
    for name in ("VERSION", "INFO"):
        if name in spec.operations:
            return spec.operations[name].wire
    raise ConformanceError("the tables have neither a version nor an info action")


def _reach(connect: TransportFactory, api_key: str | None, target: str, spec: Spec) -> None:
    """Unreachable unless the target answers `version` as a Mosaico server does and lets the
    key manage keys (the suite creates keys of each permission): without that every case
    would fail for a reason that is not the target's conformance."""
    try:
        transport = connect(api_key)
    except Exception as error:
        raise Unreachable(f"cannot connect to {target}: {error}") from error
    hello = _hello(spec)
    manage = Outcome.ok()
    try:
        version = transport.action_raw(hello, b"{}")
        if version.is_ok and "API_KEY_STATUS" in spec.operations:
            manage = transport.action(
                FlightAction.API_KEY_STATUS, {"api_key_fingerprint": "00000000"}
            )
    finally:
        transport.close()
    if version.status is OutcomeStatus.UNKNOWN:
        raise Unreachable(f"{target} does not answer: {_first_line(version.detail)}")
    if not version.is_ok:
        _refused_key(version, api_key, target)
        raise Unreachable(
            f"{target} is not a Mosaico server: it refused the {hello} action with "
            f"{outcome_text(version)}",
            "check the URL's host and port",
        )
    if not isinstance(version.value, Mapping) or "version" not in version.value:
        raise Unreachable(
            f"{target} is not a Mosaico server: its answer to the {hello} action has no "
            f"version ({str(version.value)[:80]!r})",
            "check the URL's host and port",
        )
    if manage.status is OutcomeStatus.UNKNOWN:
        raise Unreachable(f"{target} does not answer: {_first_line(manage.detail)}")
    if not manage.is_ok and manage.kind is not ErrorKind.NOT_FOUND:
        if manage.kind is ErrorKind.PERMISSION_DENIED:
            raise Unreachable(
                f"the key given to {target} may not manage keys ({_said(manage)}), and the "
                "suite creates keys of each permission",
                _KEY_HINT,
            )
        _refused_key(manage, api_key, target)


def _refused_key(outcome: Outcome, api_key: str | None, target: str) -> None:
    """Unreachable when `outcome` says the target wants a key, or another key."""
    if outcome.kind not in (ErrorKind.UNAUTHENTICATED, ErrorKind.PERMISSION_DENIED):
        return
    if api_key is None:  # some builds answer a missing key with permission_denied
        raise Unreachable(
            f"{target} requires an API key and none was given ({_said(outcome)})", _KEY_HINT
        )
    raise Unreachable(f"{target} refuses the key given ({_said(outcome)})", _KEY_HINT)


def _said(outcome: Outcome) -> str:
    """A refusal in a few words: its kind and the first line of its message."""
    kind = outcome_text(outcome)
    said = _first_line(outcome.detail).removeprefix(f"{kind}: ").split(". Detail:")[0]
    said = re.sub(r"^Flight returned \w+ error, with message: ", "", said)
    return f"{kind}: {said}"


def _first_line(text: str, limit: int = 300) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "no detail"
    return line if len(line) <= limit else line[: limit - 3] + "..."


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
    if fmt == "html":
        from fsm.html_report import conformance_html

        return conformance_html(result)
    return _as_text(result)


def _as_json(result: SuiteResult) -> dict[str, Any]:
    out: dict[str, Any] = {
        "target": result.target,
        "seed": result.seed,
        "prefix": result.prefix,
        "summary": {s: result.count(s) for s in STATUSES},
        "cases": [v.to_json() for v in result.verdicts],
        "left_behind": [item.to_json() for item in result.left_behind],
        "seconds": round(result.seconds, 3),
        "interrupted": result.interrupted,
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


WIDTH = 100
"""Width of the text report's lines (identifiers and replayed requests may run longer)."""


def summary_line(result: SuiteResult) -> str:
    """The one line that sums a run up: the text report's last line."""
    checked = len(result.verdicts)
    total = result.total if result.total is not None else checked
    parts = [
        f"{result.count('pass')} passed, {result.count('fail')} failed, "
        f"{result.count('unknown')} unknown of {checked} requirements"
    ]
    if result.count("n/a"):
        parts[0] += f" ({result.count('n/a')} n/a: not requirements of the target's line)"
    e = result.exploration
    if e is not None:
        parts.append(f"exploration {'failed' if e.failure else 'passed'} ({e.runs} runs)")
    if result.left_behind and not result.throwaway:
        parts.append(f"{len(result.left_behind)} left behind on the target")
    line = ", ".join(parts) + f" in {result.seconds:.1f} s"
    if result.interrupted:
        when = (
            "during the exploration"
            if checked == total
            else f"after {checked} of {total} requirements"
        )
        line = f"interrupted {when}: " + line
    return line


def _wrapped(text: str, indent: int, first: str = "") -> list[str]:
    return textwrap.wrap(
        text,
        WIDTH,
        initial_indent=first.ljust(indent),
        subsequent_indent=" " * indent,
        break_on_hyphens=False,
    ) or [first]


def _left_behind_lines(result: SuiteResult) -> list[str]:
    """What the suite could not remove from a target that stays, grouped by kind and reason."""
    groups: dict[tuple[str, str], list[str]] = {}
    for item in result.left_behind:
        groups.setdefault((item.what, item.reason), []).append(item.name)
    lines = ["", "Left on the target (the suite removes what it made; these it could not):"]
    for (what, reason), names in groups.items():
        lines += _wrapped(f"{len(names)} x {what}: {reason}", 4, "  ")
        lines += _wrapped(", ".join(names), 4)
    return lines


def _as_text(result: SuiteResult) -> str:
    lines = _wrapped(
        f"mosaico-fsm conformance of {result.target} (seed {result.seed}, names under "
        f"{result.prefix})",
        2,
        "",
    )
    lines[0] = lines[0].lstrip()
    lines.append("")
    for v in result.verdicts:
        lines += _wrapped(v.case.requirement, 31, f"{v.status.upper():8} {v.case.id}")
        if v.status != "pass":
            lines += _wrapped(v.message, 9)
        if v.status == "fail":
            if v.deviations:
                lines += _wrapped(f"matches the recorded deviation {' or '.join(v.deviations)}", 9)
            lines += _wrapped(f"source: {v.case.source}; reproduce with --seed {result.seed}:", 9)
            lines += [f"{'':11}{step}" for step in v.steps]
    e = result.exploration
    if e is not None:
        lines.append("")
        verdict = "FAIL" if e.failure else "PASS"
        lines += _wrapped(
            "random request sequences agree with the specification's model",
            31,
            f"{verdict:8} EXPLORE",
        )
        lines.append(
            f"{'':9}{e.runs} runs, {e.steps} requests compared in {e.seconds:.1f} s (seed {e.seed})"
        )
        if e.failure:
            lines += _wrapped(e.failure, 9)
            if e.deviations:
                lines += _wrapped(f"matches the recorded deviation {' or '.join(e.deviations)}", 9)
            shrunk = (
                "shrinking was stopped at the budget, so they may not be the fewest"
                if e.cut_short
                else "shrunk"
            )
            lines += _wrapped(f"steps ({shrunk}), reproduce with --seed {e.seed}:", 9)
            lines += [f"{'':11}{step}" for step in e.minimal_steps]
    if result.left_behind and not result.throwaway:
        lines += _left_behind_lines(result)
    if result.interrupted:
        lines.append("")
        lines.append("The run was interrupted: the requirements above are all that was checked.")
    lines.append("")
    lines.append(summary_line(result))
    return "\n".join(lines) + "\n"


def _as_junit(result: SuiteResult) -> str:
    suite = ET.Element(
        "testsuite",
        name="mosaico-fsm conformance",
        tests=str(len(result.verdicts) + (1 if result.exploration else 0)),
        failures=str(len(result.failing_ids())),
        skipped=str(result.count("unknown") + result.count("n/a")),
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
        elif v.status in ("unknown", "n/a"):
            ET.SubElement(case, "skipped", message=f"{v.status}: {v.message}")
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
