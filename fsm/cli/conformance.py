"""`mosaico-fsm conformance`: the suite against a target given by URL, or against an embedded
reference server; `--self-test` measures the suite against broken servers."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

from fsm.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    CliError,
    HelpFormatter,
    Output,
    Parser,
    non_negative_float,
    positive_int,
    readable_file,
    writable_path,
)
from fsm.cli.progress import Bar, add_progress_option, bar, wants_progress
from fsm.spec import load_spec
from fsm.transport import Transport

if TYPE_CHECKING:
    from fsm.conformance.suite import SuiteResult, Verdict

__all__ = ["add_parser", "run"]

BUDGET = 10.0
"""Seconds of model-based exploration a conformance run makes unless told otherwise."""

EPILOG = """\
exit status:
  0    every requirement that could be observed is met (some may be unknown)
  1    a requirement failed, or the exploration found a disagreement
  2    bad arguments, or a target that cannot be checked: unreachable, not a Mosaico
       server, TLS not trusted, or no usable key (the suite needs a manage key)
  3    nothing was observed: every requirement is unknown, so the run shows no conformance
  130  interrupted (Ctrl-C); the requirements checked until then are reported
"""


def add_parser(sub: argparse._SubParsersAction[Parser]) -> None:
    p = sub.add_parser(
        "conformance",
        help="check a Mosaico server against the spec, requirement by requirement",
        formatter_class=HelpFormatter,
        epilog=EPILOG,
    )
    p.add_argument(
        "url",
        nargs="?",
        help="grpc://host:port or grpc+tls://host:port (default: an embedded server)",
    )
    p.add_argument(
        "--api-key",
        help="a manage key for the target given by URL (the suite creates keys of each permission)",
    )
    p.add_argument(
        "--tls-root-cert",
        metavar="F",
        type=readable_file,
        help="PEM root certificate(s) of the target given by URL",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the exploration's random draws: the same seed draws the same request "
        "sequences as long as the target answers the same (names differ from run to run, and "
        "how many sequences fit in --budget depends on speed)",
    )
    p.add_argument(
        "--budget",
        type=non_negative_float,
        help="at most this many seconds of model-based exploration, shrinking included (0: none; "
        f"default: {BUDGET:g}, and 0 with --self-test, whose table then measures the fixed cases)",
    )
    p.add_argument(
        "--report",
        choices=["text", "json", "junit", "html"],
        help="report format; html is one self-contained file, best with --out (default: text)",
    )
    p.add_argument("--out", metavar="FILE", type=writable_path, help="write the report to FILE")
    p.add_argument(
        "--profile",
        choices=sorted(load_spec().profiles),
        help="profile of the embedded server (default: spec; not with a URL)",
    )
    from fsm.spec.lines import line_names

    p.add_argument(
        "--protocol",
        choices=line_names(),
        metavar="LINE",
        help="protocol line the target speaks, checked by that line's tables "
        f"({', '.join(line_names())}; default: 0.3): a requirement the line does not have is "
        "reported n/a; the embedded server and --self-test's servers speak it",
    )
    p.add_argument(
        "--key",
        action="append",
        metavar="BITS=TOKEN",
        help="with a URL of a line without API-key actions: a key the server issued, holding "
        "exactly BITS ('read', 'write', 'delete', joined by '+'); repeat per key. The "
        "permission cases use them (without them they end unknown)",
    )
    p.add_argument(
        "--self-test",
        action="store_true",
        help="measure the suite: run it against every emulated deviation and broken server",
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        help="with --self-test: worker processes measuring broken servers side by side "
        "(default: one per CPU)",
    )
    add_progress_option(p)


@contextmanager
def _private_hypothesis_home() -> Iterator[None]:
    """Hypothesis keeps files under `.hypothesis/` of the working directory: give it a
    temporary home instead, so the user's directory is left as it was."""
    from hypothesis.configuration import set_hypothesis_home_dir

    with tempfile.TemporaryDirectory(prefix="mosaico-fsm-") as home:
        set_hypothesis_home_dir(home)
        try:
            yield
        finally:
            set_hypothesis_home_dir(None)


def _check_arguments(args: argparse.Namespace) -> None:
    given = {
        "a URL": args.url,
        "--api-key": args.api_key,
        "--tls-root-cert": args.tls_root_cert,
        "--profile": args.profile,
        "--key": args.key,
        "--report": args.report,
        "--out": args.out,
    }
    if args.self_test and any(v is not None for v in given.values()):
        named = ", ".join(k for k, v in given.items() if v is not None)
        raise CliError(
            f"--self-test runs its own embedded servers and prints its own table: {named} "
            "do not apply to it"
        )
    if args.workers is not None and not args.self_test:
        raise CliError("--workers spreads the --self-test runs over processes: only with it")
    if args.url is None and (args.api_key is not None or args.tls_root_cert is not None):
        raise CliError(
            "--api-key and --tls-root-cert are for a target given by URL; "
            "the embedded server makes its own key"
        )
    if args.url is None and args.key is not None:
        raise CliError(
            "--key gives the keys of a target given by URL; the embedded server makes its own"
        )
    if args.key is not None:
        from fsm.spec.lines import DEFAULT_LINE, load_line

        _given_keys(args.key, load_line(args.protocol or DEFAULT_LINE).permissions.values)
    if args.url is not None and args.profile is not None:
        raise CliError("--profile chooses the embedded server's behaviour: not with a URL")


def run(args: argparse.Namespace, out: TextIO) -> int:
    import logging

    _check_arguments(args)
    if args.budget is None:
        args.budget = 0.0 if args.self_test else BUDGET
    show = wants_progress(args.progress)
    logging.disable(logging.WARNING)  # the suite provokes refusals on purpose
    try:
        with _private_hypothesis_home():
            if args.self_test:
                return _self_test(args, out, show)
            roots = args.tls_root_cert.read_bytes() if args.tls_root_cert is not None else None
            if args.url is not None:
                from fsm.cli.target import check_target

                try:
                    check_target(args.url, roots)
                except CliError as error:
                    raise CliError(f"{error.message}; nothing was checked", error.hint) from None
            result = _run(args, roots, show)
    finally:
        logging.disable(logging.NOTSET)  # as it was for whoever called main() in process
    return _deliver(result, args, out)


class _Interrupt:
    """Ctrl-C during a run: while the exploration runs it only sets `pressed` (the exploration
    asks before each request and stops there, so no KeyboardInterrupt cuts through Hypothesis
    or a finalizer); elsewhere it also raises KeyboardInterrupt, as usual."""

    def __init__(self) -> None:
        self.pressed = threading.Event()
        self.exploring = False

    def handler(self, signum: int, frame: FrameType | None) -> None:
        self.pressed.set()
        if not self.exploring:
            raise KeyboardInterrupt


@contextmanager
def _interrupt_flag() -> Iterator[_Interrupt]:
    interrupt = _Interrupt()
    previous = signal.signal(signal.SIGINT, interrupt.handler)
    try:
        yield interrupt
    finally:
        signal.signal(signal.SIGINT, previous)


def _run(args: argparse.Namespace, roots: bytes | None, show: bool) -> SuiteResult:
    from fsm.conformance.cases import CASES
    from fsm.conformance.suite import Unreachable, run_suite
    from fsm.errors import ArgumentError
    from fsm.spec.lines import DEFAULT_LINE, load_line
    from transport.conformance_runs import deviation_oracles, embedded_target, oracle
    from transport.flight.client import FlightTransport
    from transport.server.model import ServerModel

    profile = args.profile or "spec"
    line = load_line(args.protocol or DEFAULT_LINE)
    try:
        model = None if args.url is not None else ServerModel(profile=profile, protocol=line.name)
    except ArgumentError as error:
        raise CliError(f"--profile {profile} --protocol {line.name}: {error}") from None
    with bar(show, "requirements", total=len(CASES)) as progress, _interrupt_flag() as interrupt:
        common: dict[str, Any] = {
            "stop": interrupt.pressed.is_set,
            "seed": args.seed,
            "budget": args.budget,
            "oracle": partial(oracle, line.name),
            "deviation_oracles": deviation_oracles(),
            "line": line,
            "progress": _on_verdict(progress),
            "phase": _on_phase(progress, args.budget, interrupt),
        }
        try:
            if args.url is not None:

                def connect(key: str | None) -> Transport:
                    return FlightTransport(
                        args.url, api_key=key, tls_root_certs=roots, protocol=line
                    )

                keys = _given_keys(args.key or [], line.permissions.values)
                return run_suite(
                    connect, target=args.url, api_key=args.api_key, keys=keys, **common
                )
            assert model is not None
            with embedded_target(model) as target:
                said = f"profile {profile}, protocol {line.name}"
                progress.say(f"embedded reference server on {target.location} ({said})")
                return run_suite(
                    target.connect,
                    target=f"{target.location} (embedded, {said})",
                    api_key=target.api_key,
                    throwaway=True,
                    keys=target.keys,
                    **common,
                )
        except Unreachable as unreachable:
            raise CliError(f"{unreachable}; nothing was checked", unreachable.hint) from None


def _given_keys(given: list[str], values: tuple[str, ...]) -> Any:
    """The key source of `--key BITS=TOKEN` options: each token by its set of bits."""
    tokens: dict[frozenset[str], str] = {}
    for item in given:
        bits, sep, token = item.partition("=")
        held = frozenset(bits.split("+"))
        unknown = sorted(held - set(values))
        if not sep or not token or unknown:
            raise CliError(
                f"--key {item!r}: expected BITS=TOKEN with BITS among {', '.join(values)} "
                "joined by '+'"
            )
        tokens[held] = token

    def source(bits: tuple[str, ...], expires_at_ns: int | None) -> str | None:
        return tokens.get(frozenset(bits)) if expires_at_ns is None else None

    return source


def _on_verdict(progress: Bar) -> Any:
    def seen(number: int, total: int, verdict: Verdict) -> None:
        progress.advance(detail=verdict.case.id)
        if verdict.status == "fail":
            progress.say(f"FAIL {verdict.case.id}: {verdict.message[:160]}")

    return seen


def _on_phase(progress: Bar, budget: float, interrupt: _Interrupt) -> Any:
    def moved(phase: str) -> None:
        interrupt.exploring = phase == "exploring"
        if phase == "exploring":
            progress.update(label=f"exploring (up to {budget:g} s)")
        elif phase == "cleaning up":
            progress.update(label="cleaning up")

    return moved


def _deliver(result: SuiteResult, args: argparse.Namespace, out: TextIO) -> int:
    from fsm.conformance.suite import render, summary_line

    Output(args.out).deliver(render(result, args.report or "text"), summary_line(result), out)
    if result.interrupted:
        return EXIT_INTERRUPTED
    if result.failed:
        return EXIT_FAILED
    if result.observed_nothing:
        sys.stderr.write(
            "mosaico-fsm conformance: every requirement is unknown: the run observed nothing, "
            "so it shows no conformance (exit status 3)\n"
        )
        return 3
    return EXIT_OK


def _self_test(args: argparse.Namespace, out: TextIO, show: bool) -> int:
    from fsm.conformance.suite import SuiteResult
    from transport.conformance_runs import PowerRow, power_runs, power_subjects

    baseline: SuiteResult | None = None
    rows: list[PowerRow] = []
    interrupted = False
    with bar(show, "servers measured", total=power_subjects(args.protocol)) as progress:
        try:
            workers = args.workers if args.workers is not None else os.cpu_count() or 1
            for item in power_runs(args.seed, args.budget, workers, args.protocol):
                if isinstance(item, SuiteResult):
                    baseline = item
                    progress.advance(detail="the specification's own server")
                else:
                    rows.append(item)
                    progress.advance(detail=item.subject)
        except KeyboardInterrupt:
            interrupted = True
    return _self_test_report(baseline, rows, interrupted, out)


def _self_test_report(
    baseline: SuiteResult | None, rows: list[Any], interrupted: bool, out: TextIO
) -> int:
    out.write("The conformance suite against broken reference servers (each must be caught)\n\n")
    out.write(f"{'broken server':34} {'kind':10} {'caught by':40} named\n")
    for row in rows:
        caught = ", ".join(row.caught_by) or "NOT CAUGHT"
        named = "yes" if row.labelled else "no"
        if not row.applicable:
            caught, named = "n/a: every requirement it contradicts is n/a on the line", "-"
        out.write(f"{row.subject:34} {row.kind:10} {caught:40} {named}\n")
    not_applicable = sum(not row.applicable for row in rows)
    rows = [row for row in rows if row.applicable]
    detected = sum(row.detected for row in rows)
    named = sum(row.detected and row.labelled for row in rows)
    if baseline is not None:
        out.write(
            f"\nthe specification's own server: {baseline.count('pass')} passed, "
            f"{baseline.count('fail')} failed, {baseline.count('unknown')} unknown, "
            f"{baseline.count('n/a')} n/a\n"
        )
    summary = (
        f"self-test: {detected} of {len(rows)} broken servers caught, {named} named right "
        "(a deviation by its own id alone, a variant by no deviation)"
    )
    if not_applicable:
        summary += f"; {not_applicable} n/a on the line"
    if interrupted:
        out.write(f"\ninterrupted after {len(rows)} broken servers: {summary}\n")
        return EXIT_INTERRUPTED
    out.write(f"\n{summary}\n")
    ok = baseline is not None and detected == len(rows) == named and not baseline.failed
    return EXIT_OK if ok else EXIT_FAILED
