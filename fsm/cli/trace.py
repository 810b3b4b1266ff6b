"""`mosaico-fsm check-trace`: an engine trace, or a server trace of any client, checked
against the tables, ending with one summary line."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any, TextIO

from fsm.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    CliError,
    HelpFormatter,
    Parser,
    readable_file,
)
from fsm.cli.progress import add_progress_option, bar, wants_progress
from fsm.errors import ArgumentError, SpecError
from fsm.spec.lines import DEFAULT_LINE, Line, client_deviation_ranges, load_line, load_lines

__all__ = ["add_parser", "run"]

SUITE_NAMES = re.compile(r"^mfsm\d+x[0-9a-f]{6}")
"""Names of the sequences `mosaico-fsm conformance` creates (its run's prefix)."""


def add_parser(sub: argparse._SubParsersAction[Parser]) -> None:
    p = sub.add_parser(
        "check-trace",
        help="check a trace against the tables: an engine trace, or a server trace of any client",
        formatter_class=HelpFormatter,
        epilog="exit status: 0 it conforms, 1 it does not (or nothing was checked), "
        "2 unreadable input, 130 interrupted",
    )
    p.add_argument(
        "file",
        type=readable_file,
        help="JSON lines (from fsm.engine.Tracer, or from `serve --trace`)",
    )
    p.add_argument("--sequence", action="append", help="check only this sequence (repeatable)")
    p.add_argument(
        "--protocol",
        metavar="LINE",
        help="the protocol line the client speaks (default: recognised from the handshake "
        "requests in the trace, else 0.3)",
    )
    add_progress_option(p)


def _records(path: Path) -> list[dict[str, Any]]:
    from fsm.engine.trace import read_trace

    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CliError(
            f"{path} is not a text file (byte 0x{data[exc.start]:02x} at offset {exc.start} "
            "is not UTF-8)",
            "give a trace of JSON lines: `serve --trace F` or fsm.engine.Tracer write one",
        ) from None
    try:
        return read_trace(text.splitlines())
    except ArgumentError as exc:
        raise CliError(f"{path}: {exc}") from None


# The request each connect shape of specs/lines/wire.toml shows in a server trace; the
# ListFlights connects of the early lines look alike.
_HANDSHAKE_OPS = {"info": "INFO", "version": "VERSION"}


def recognise_line(records: list[dict[str, Any]]) -> tuple[Line, str]:
    """The line whose handshake the trace shows, and how it was chosen (in words)."""
    ops = {str(r.get("op")) for r in records}
    lines = load_lines()
    for shape, op in _HANDSHAKE_OPS.items():
        if op not in ops:
            continue
        found = [line for line in lines.values() if line.wire["connect"] == shape]
        if len(found) != 1:
            names = ", ".join(line.name for line in found) or "none"
            raise CliError(
                f"the trace's {op} handshake is spoken by lines {names}",
                "give the client's line with --protocol",
            )
        return found[0], f"recognised from its {op} handshake"
    return (
        lines[DEFAULT_LINE],
        f"assumed: no INFO or VERSION handshake in the trace (ListFlights connects of lines "
        f"{', '.join(n for n, line in lines.items() if line.wire['connect'] not in _HANDSHAKE_OPS)}"
        " look alike; give --protocol)",
    )


def _line(args: argparse.Namespace, records: list[dict[str, Any]]) -> tuple[Line, str]:
    if args.protocol is None:
        return recognise_line(records)
    try:
        return load_line(args.protocol), "given"
    except SpecError as exc:
        raise CliError(f"--protocol {args.protocol}: {exc.problem}") from None


def run(args: argparse.Namespace, out: TextIO) -> int:
    records = _records(args.file)
    if not records:
        out.write(f"no record in {args.file}: nothing was checked\n")
        return EXIT_FAILED
    line, how = _line(args, records)
    out.write(f"protocol line {line.name} ({how})\n")
    if any("machine" in r for r in records):  # an engine trace (check_trace judges every record)
        return _engine_trace(args, records, line.spec, out)
    return _server_trace(args, records, line, out)


def _engine_trace(
    args: argparse.Namespace, records: list[dict[str, Any]], spec: Any, out: TextIO
) -> int:
    from fsm.engine.trace import check_trace

    if args.sequence:
        raise CliError(
            f"--sequence selects sequences of a server trace; {args.file} is an engine trace"
        )
    report = check_trace(records, spec)
    for line in report.accepted:
        out.write(f"  ok  {line}\n")
    if report.violation is not None:
        out.write(f"VIOLATION {report.violation}\n")
        out.write(
            f"does not conform: {len(report.accepted)} transitions accepted before the violation "
            f"(of {len(records)} records)\n"
        )
        return EXIT_FAILED
    out.write(f"conforms: {len(report.accepted)} transitions accepted\n")
    return EXIT_OK


def _server_trace(
    args: argparse.Namespace, records: list[dict[str, Any]], line: Line, out: TextIO
) -> int:
    from fsm.conformance.clients import check_client_trace, group_by_sequence

    known = client_deviation_ranges()

    groups = group_by_sequence(records)
    if args.sequence:
        missing = sorted(set(args.sequence) - set(groups))
        if missing:
            out.write(f"not in the trace: {', '.join(missing)} (it has: {', '.join(groups)})\n")
            return EXIT_FAILED
        groups = {k: v for k, v in groups.items() if k in args.sequence}
    if not groups:
        out.write("no sequence in the trace: nothing was checked\n")
        return EXIT_FAILED
    failing: list[str] = []
    checked = 0
    interrupted = False
    with bar(wants_progress(args.progress), "sequences", total=len(groups)) as progress:
        try:
            for name, events in groups.items():
                client_report = check_client_trace(
                    events, line.spec, sequence=name, client=line.client_parties
                )
                out.write(
                    f"== sequence {name}: sessions {client_report.role} "
                    f"(policy {client_report.policy})\n"
                )
                for accepted in client_report.accepted:
                    out.write(f"  ok  {accepted}\n")
                for finding in client_report.findings:
                    out.write(f"  {finding}\n")
                    if finding.kind == "deviation" and finding.rule in known:
                        out.write(f"    known in {known[finding.rule]}\n")
                out.write("  conforms\n" if client_report.conforms else "  does not conform\n")
                checked += 1
                if not client_report.conforms:
                    failing.append(name)
                progress.advance(detail=name)
        except KeyboardInterrupt:
            interrupted = True
    out.write(_summary(checked, len(groups), failing, interrupted))
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if failing else EXIT_OK


def _summary(checked: int, total: int, failing: list[str], interrupted: bool) -> str:
    lines = []
    by_suite = [name for name in failing if SUITE_NAMES.match(name)]
    if failing:
        lines.append(
            "A sequence does not conform when a client request is one the tables do not allow "
            "at that point (its VIOLATION line names the first)."
        )
    if by_suite:
        lines.append(
            f"{len(by_suite)} of them are named mfsm<seed>x<hex>...: `mosaico-fsm conformance` "
            "made them, and it sends requests out of order on purpose to test the server."
        )
    sequences = "sequence" if checked == 1 else "sequences"
    line = (
        f"{checked} {sequences} checked: {checked - len(failing)} conform, "
        f"{len(failing)} do not conform"
    )
    if interrupted:
        line = f"interrupted after {checked} of {total} sequences: " + line
    lines.append(line)
    return "\n".join(lines) + "\n"
