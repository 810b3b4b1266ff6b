"""The `mosaico-fsm` command line: the composition root.

This is the one module of `fsm` that may reach into `transport/`; it does so lazily, inside
the commands that need a transport or a server, so `fsm` itself stays independent of it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from fsm.render import diagram, diagram_names, embed_diagrams, spec_text
from fsm.spec import load_spec

__all__ = ["main"]

Command = Callable[[argparse.Namespace, TextIO], int]
_COMMANDS: dict[str, Command] = {}


def _command(name: str) -> Callable[[Command], Command]:
    def register(fn: Command) -> Command:
        _COMMANDS[name] = fn
        return fn

    return register


@_command("spec")
def _spec(args: argparse.Namespace, out: TextIO) -> int:
    spec = load_spec()
    sections = args.section or ["machines", "resources", "operations", "deviations"]
    out.write(spec_text(spec, sections))
    return 0


@_command("diagram")
def _diagram(args: argparse.Namespace, out: TextIO) -> int:
    spec = load_spec()
    if args.update_readme is not None:
        path = Path(args.update_readme)
        path.write_text(embed_diagrams(path.read_text(encoding="utf-8"), spec), encoding="utf-8")
        out.write(f"updated the diagrams in {path}\n")
        return 0
    names = args.name or list(spec.machines)
    for name in names:
        if name not in diagram_names(spec):
            raise SystemExit(
                f"mosaico-fsm diagram: unknown lifecycle {name!r}; choose from {diagram_names(spec)}"
            )
    for i, name in enumerate(names):
        if i:
            out.write("\n")
        if args.format == "mermaid":
            out.write(f"%% {name}\n")
        else:
            out.write(f"// {name}\n")
        out.write(diagram(spec, name, args.format))
    return 0


@_command("serve")
def _serve(args: argparse.Namespace, out: TextIO) -> int:
    import logging

    from fsm.faults import FaultPlan
    from transport.flight.server import SignalStop, TlsFiles, serve_forever, start_server
    from transport.server.model import ServerModel

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    if (args.tls_cert is None) != (args.tls_key is None):
        raise SystemExit("mosaico-fsm serve: --tls-cert and --tls-key go together")
    tls = TlsFiles(Path(args.tls_cert), Path(args.tls_key)) if args.tls_cert else None
    faults = FaultPlan.loads(Path(args.fault_plan).read_text()) if args.fault_plan else None
    model = ServerModel(profile=args.profile, auth=args.api_key_auth)
    if args.trace:
        from transport.server.trace import ServerTrace

        model.trace = ServerTrace(Path(args.trace))
    with SignalStop() as signals:
        running = start_server(model, host=args.host, port=args.port, tls=tls, faults=faults)
        out.write(f"mosaico-fsm reference server on {running.location} (profile {args.profile})\n")
        if args.api_key_auth:
            token = running.api_keys["manage"]
            if args.bootstrap_key_file:
                Path(args.bootstrap_key_file).write_text(token + "\n")
                out.write(f"bootstrap manage key written to {args.bootstrap_key_file}\n")
            else:
                out.write(f"bootstrap manage key: {token}\n")
            if tls is None:
                out.write("warning: API keys travel in clear text without TLS\n")
        out.flush()

        def stopped(signum: int) -> None:
            out.write(f"stopped on signal {signum}\n")
            out.flush()

        serve_forever(running, signals, stopped)
    return 0


@_command("check-trace")
def _check_trace(args: argparse.Namespace, out: TextIO) -> int:
    from fsm.conformance.clients import check_client_trace, group_by_sequence
    from fsm.engine.trace import check_trace, read_trace

    spec = load_spec()
    records = read_trace(Path(args.file))
    failures = 0
    if records and all("machine" in r for r in records):  # an engine trace
        report = check_trace(records, spec)
        for line in report.accepted:
            out.write(f"  ok  {line}\n")
        if report.violation is not None:
            out.write(f"VIOLATION {report.violation}\n")
            return 1
        out.write(f"conforms: {len(report.accepted)} transitions accepted\n")
        return 0
    groups = group_by_sequence(records)
    if args.sequence:
        groups = {k: v for k, v in groups.items() if k in args.sequence}
    for name, events in groups.items():
        client_report = check_client_trace(events, spec, sequence=name)
        out.write(
            f"== sequence {name}: sessions {client_report.role} (policy {client_report.policy})\n"
        )
        for line in client_report.accepted:
            out.write(f"  ok  {line}\n")
        for finding in client_report.findings:
            out.write(f"  {finding}\n")
        out.write("  conforms\n" if client_report.conforms else "  does not conform\n")
        failures += not client_report.conforms
    if not groups:
        out.write("no sequence in the trace\n")
    return 1 if failures else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mosaico-fsm",
        description="The Mosaico ingestion protocol as transition tables.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("spec", help="print the protocol tables")
    p.add_argument(
        "--section",
        action="append",
        choices=["machines", "resources", "operations", "deviations"],
        help="print only this section (repeatable)",
    )

    p = sub.add_parser("diagram", help="render lifecycle diagrams")
    p.add_argument("--format", choices=["mermaid", "dot"], default="mermaid")
    p.add_argument(
        "--update-readme",
        metavar="FILE",
        help="rewrite the generated Mermaid diagrams embedded in FILE (README.md)",
    )
    p.add_argument(
        "name",
        nargs="*",
        help="session, topic_writer or resource:<sequence|session|topic|api_key> "
        "(default: the client machines)",
    )
    p = sub.add_parser("serve", help="run the Flight reference server")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=6726, help="0 picks a free port")
    p.add_argument("--profile", default="spec", choices=sorted(load_spec().profiles))
    p.add_argument(
        "--api-key-auth", action="store_true", help="require API keys (a manage key is issued)"
    )
    p.add_argument("--bootstrap-key-file", metavar="F", help="write the bootstrap manage key to F")
    p.add_argument("--tls-cert", metavar="F", help="PEM certificate chain")
    p.add_argument("--tls-key", metavar="F", help="PEM private key")
    p.add_argument("--fault-plan", metavar="F", help="JSON fault plan (see fsm.faults)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--trace", metavar="F", help="record every request and answer as JSON lines in F"
    )

    p = sub.add_parser(
        "check-trace",
        help="check a trace against the tables: an engine trace, or a server trace of any client",
    )
    p.add_argument("file", help="JSON lines (from Tracer, or from `serve --trace`)")
    p.add_argument("--sequence", action="append", help="check only this sequence (repeatable)")
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _COMMANDS[args.command](args, out if out is not None else sys.stdout)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
