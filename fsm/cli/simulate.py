"""`mosaico-fsm simulate`: every failure path of the scenarios, each run checked against the
invariants; or one run replayed under exactly the faults given."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, TextIO

from fsm.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    CliError,
    HelpFormatter,
    Output,
    Parser,
    positive_int,
    writable_path,
)
from fsm.cli.progress import add_progress_option, bar, wants_progress

if TYPE_CHECKING:
    from fsm.simulate import Exploration

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[Parser]) -> None:
    p = sub.add_parser(
        "simulate",
        help="run every failure path of the scenarios and check what each leaves behind",
        formatter_class=HelpFormatter,
        epilog="exit status: 0 no invariant violated, 1 a violation, 2 bad arguments, "
        "130 interrupted (the runs that ended are reported)",
    )
    p.add_argument(
        "--scenario",
        action="append",
        metavar="NAME",
        help="a scenario, a family of scenarios, or all (repeatable; default: all)",
    )
    p.add_argument(
        "--faults",
        type=int,
        choices=[1, 2, 3],
        help="faults per run (default: 1; not with --fault)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seeds the server's identifiers and the data"
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        help="worker processes (default: 1; not with --fault)",
    )
    p.add_argument("--report", choices=["text", "json", "html"], default="text", help="format")
    p.add_argument("--out", metavar="FILE", type=writable_path, help="write the report to FILE")
    p.add_argument(
        "--fault",
        action="append",
        metavar="OP#N:EFFECT",
        help="replay one run under exactly these faults (repeatable), e.g. "
        "SESSION_FINALIZE#1:failed_precondition, STREAM_WRITE#2:drop_stream",
    )
    p.add_argument(
        "--protocol",
        metavar="LINE",
        default=None,
        help="the protocol line the engine and the server speak (default 0.3; specs/lines/)",
    )
    add_progress_option(p)


def run(args: argparse.Namespace, out: TextIO) -> int:
    import functools

    from fsm import simulate
    from fsm.errors import SpecError
    from fsm.spec.lines import DEFAULT_LINE, line_names, load_line
    from transport.conformance_runs import memory_world

    try:
        protocol = load_line(DEFAULT_LINE if args.protocol is None else args.protocol).name
    except SpecError:
        raise CliError(
            f"unknown protocol line {args.protocol!r}", f"choose one of {', '.join(line_names())}"
        ) from None
    world = functools.partial(memory_world, protocol=protocol)

    if args.fault and (args.faults is not None or args.workers is not None):
        raise CliError(
            "--fault replays one run under exactly the faults given: "
            "--faults and --workers do not apply to it"
        )
    try:
        scenarios = simulate.select(args.scenario)
    except KeyError as exc:
        choices = [f.name for f in simulate.FAMILIES] + list(simulate.SCENARIOS)
        raise CliError(
            f"unknown scenario {exc}",
            "choose all, a family (" + ", ".join(f.name for f in simulate.FAMILIES) + ") or one of "
            f"the {len(choices) - len(simulate.FAMILIES)} scenarios `simulate --report json` lists",
        ) from None
    try:
        plan = [simulate.parse_fault(text) for text in args.fault or []]
    except ValueError as exc:
        raise CliError(str(exc)) from None
    show = wants_progress(args.progress)
    if plan:
        try:
            result = simulate.replay(scenarios, plan, world, seed=args.seed, protocol=protocol)
        except ValueError as exc:
            raise CliError(str(exc)) from None
    else:
        with bar(show, "runs") as progress:
            result = simulate.explore(
                scenarios,
                world,
                protocol=protocol,
                faults=1 if args.faults is None else args.faults,
                seed=args.seed,
                workers=1 if args.workers is None else args.workers,
                progress=lambda done, known: progress.update(completed=done, total=known),
            )
    report = _render(result, args.report)
    Output(args.out).deliver(report, simulate.summary_line(result), out)
    if result.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if result.violations else EXIT_OK


def _render(result: Exploration, fmt: str) -> str:
    from fsm import simulate

    if fmt == "json":
        return simulate.to_json(result)
    if fmt == "html":
        from fsm.html_report import simulate_html

        return simulate_html(result)
    return simulate.to_text(result)
