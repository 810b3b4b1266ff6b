"""The `mosaico-fsm` command line: the composition root.

This is the one module of `fsm` that may reach into `transport/`; it does so lazily, inside
the commands that need a transport or a server, so `fsm` itself stays independent of it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from fsm.errors import MosaicoProtocolError
from fsm.render import SPEC_SECTIONS, diagram, diagram_names, embed_diagrams, spec_text
from fsm.spec import load_spec
from fsm.transport import Transport

if TYPE_CHECKING:
    pass

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
    out.write(spec_text(spec, args.section or SPEC_SECTIONS))
    return 0


@_command("diagram")
def _diagram(args: argparse.Namespace, out: TextIO) -> int:
    spec = load_spec()
    if args.update_readme is not None:
        if args.name or args.format != "mermaid":
            raise SystemExit(
                "mosaico-fsm diagram: --update-readme rewrites every generated Mermaid diagram "
                "of FILE; it takes no NAME and no --format"
            )
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
    if model.trace is not None:
        model.trace.close()
    if not running.stopped:
        # A client still holds a DoPut stream open. pyarrow would wait for it, with no deadline,
        # when the interpreter exits; the model is already settled, so leave now.
        out.write("exiting with DoPut streams still held open by their clients\n")
        out.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


@_command("check-trace")
def _check_trace(args: argparse.Namespace, out: TextIO) -> int:
    from fsm.conformance.clients import check_client_trace, group_by_sequence
    from fsm.engine.trace import check_trace, read_trace

    spec = load_spec()
    records = read_trace(Path(args.file))
    if not records:
        out.write(f"no record in {args.file}: nothing was checked\n")
        return 1
    failures = 0
    if any("machine" in r for r in records):  # an engine trace (check_trace judges every record)
        if args.sequence:
            raise SystemExit(
                "mosaico-fsm check-trace: --sequence selects sequences of a server trace; "
                f"{args.file} is an engine trace"
            )
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
        missing = sorted(set(args.sequence) - set(groups))
        if missing:
            out.write(f"not in the trace: {', '.join(missing)} (it has: {', '.join(groups)})\n")
            return 1
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
        out.write("no sequence in the trace: nothing was checked\n")
        return 1
    return 1 if failures else 0


def _usage(command: str, message: str) -> int:
    """A refused combination of arguments: said on stderr, exit status 2 (as argparse does)."""
    sys.stderr.write(f"mosaico-fsm {command}: error: {message}\n")
    return 2


@_command("simulate")
def _simulate(args: argparse.Namespace, out: TextIO) -> int:
    from fsm import simulate
    from transport.conformance_runs import memory_world

    if args.fault and (args.faults is not None or args.workers is not None):
        return _usage(
            "simulate",
            "--fault replays one run under exactly the faults given: "
            "--faults and --workers do not apply to it",
        )
    try:
        scenarios = simulate.select(args.scenario)
        plan = [simulate.parse_fault(text) for text in args.fault or []]
    except KeyError as exc:
        raise SystemExit(
            f"mosaico-fsm simulate: unknown scenario {exc}; choose from all, "
            + ", ".join([f.name for f in simulate.FAMILIES] + list(simulate.SCENARIOS))
        ) from None
    except ValueError as exc:
        raise SystemExit(f"mosaico-fsm simulate: {exc}") from None
    if plan:
        try:
            result = simulate.replay(scenarios, plan, memory_world, seed=args.seed)
        except ValueError as exc:
            raise SystemExit(f"mosaico-fsm simulate: {exc}") from None
    else:
        result = simulate.explore(
            scenarios,
            memory_world,
            faults=1 if args.faults is None else args.faults,
            seed=args.seed,
            workers=1 if args.workers is None else args.workers,
        )
    out.write(simulate.to_json(result) if args.report == "json" else simulate.to_text(result))
    return 1 if result.violations else 0


@_command("conformance")
def _conformance(args: argparse.Namespace, out: TextIO) -> int:
    import logging

    from fsm.conformance.suite import SuiteResult, Unreachable, Verdict, render, run_suite
    from transport.conformance_runs import (
        deviation_oracles,
        embedded_target,
        measure_power,
        oracle,
    )
    from transport.flight.client import FlightTransport
    from transport.server.model import ServerModel

    given = {
        "a URL": args.url,
        "--api-key": args.api_key,
        "--tls-root-cert": args.tls_root_cert,
        "--profile": args.profile,
        "--report": args.report,
        "--out": args.out,
    }
    if args.self_test and any(v is not None for v in given.values()):
        named = ", ".join(k for k, v in given.items() if v is not None)
        return _usage(
            "conformance",
            f"--self-test runs its own embedded servers and prints its own table: {named} "
            "do not apply to it",
        )
    if args.url is None and (args.api_key is not None or args.tls_root_cert is not None):
        return _usage(
            "conformance",
            "--api-key and --tls-root-cert are for a target given by URL; "
            "the embedded server makes its own key",
        )
    if args.url is not None and args.profile is not None:
        return _usage(
            "conformance", "--profile chooses the embedded server's behaviour: not with a URL"
        )
    profile = args.profile or "spec"
    logging.disable(logging.WARNING)  # the suite provokes refusals on purpose
    if args.self_test:
        return _self_test(measure_power(args.seed, args.budget), out)

    def progress(number: int, total: int, verdict: Verdict) -> None:
        sys.stderr.write(f"[{number:>3}/{total}] {verdict.status:7} {verdict.case.id}\n")

    result: SuiteResult
    try:
        if args.url:
            roots = Path(args.tls_root_cert).read_bytes() if args.tls_root_cert else None

            def connect(key: str | None) -> Transport:
                return FlightTransport(args.url, api_key=key, tls_root_certs=roots)

            if args.budget > 0:
                sys.stderr.write(f"exploring for {args.budget:g} s after the cases\n")
            result = run_suite(
                connect,
                target=args.url,
                api_key=args.api_key,
                seed=args.seed,
                budget=args.budget,
                oracle=oracle,
                deviation_oracles=deviation_oracles(),
                progress=progress,
            )
        else:
            with embedded_target(ServerModel(profile=profile)) as target:
                sys.stderr.write(
                    f"embedded reference server on {target.location} (profile {profile})\n"
                )
                if args.budget > 0:
                    sys.stderr.write(f"exploring for {args.budget:g} s after the cases\n")
                result = run_suite(
                    target.connect,
                    target=f"{target.location} (embedded, profile {profile})",
                    api_key=target.api_key,
                    seed=args.seed,
                    budget=args.budget,
                    oracle=oracle,
                    deviation_oracles=deviation_oracles(),
                    progress=progress,
                )
    except Unreachable as unreachable:
        sys.stderr.write(f"mosaico-fsm conformance: {unreachable}; nothing was checked\n")
        return 2
    report = render(result, args.report or "text")
    if args.out:
        Path(args.out).write_text(report, encoding="utf-8")
        out.write(f"report written to {args.out}\n")
    else:
        out.write(report)
    if result.failed:
        return 1
    if result.observed_nothing:
        sys.stderr.write(
            "mosaico-fsm conformance: every requirement is unknown: the run observed nothing, "
            "so it shows no conformance (exit status 3)\n"
        )
        return 3
    return 0


def _self_test(measured: Any, out: TextIO) -> int:
    baseline, rows = measured
    out.write("The conformance suite against broken reference servers (each must be caught)\n\n")
    out.write(f"{'broken server':34} {'kind':10} {'caught by':40} named\n")
    for row in rows:
        caught = ", ".join(row.caught_by) or "NOT CAUGHT"
        named = "yes" if row.labelled else "no"
        out.write(f"{row.subject:34} {row.kind:10} {caught:40} {named}\n")
    detected = sum(row.detected for row in rows)
    named = sum(row.detected and row.labelled for row in rows)
    out.write(f"\ndetection: {detected}/{len(rows)} ({100 * detected / len(rows):.0f}%)")
    out.write(
        f", named right (a deviation by its own id alone, a variant by no deviation): "
        f"{named}/{len(rows)}\n"
    )
    out.write(
        f"the specification's own server: {baseline.count('pass')} passed, "
        f"{baseline.count('fail')} failed, {baseline.count('unknown')} unknown\n"
    )
    ok = detected == len(rows) and named == len(rows) and not baseline.failed
    return 0 if ok else 1


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
        choices=SPEC_SECTIONS,
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

    p = sub.add_parser(
        "simulate",
        help="run every failure path of the scenarios and check what each leaves behind",
    )
    p.add_argument(
        "--scenario",
        action="append",
        metavar="NAME",
        help="a scenario, a family of scenarios, or all (default; repeatable)",
    )
    p.add_argument(
        "--faults", type=int, choices=[1, 2], help="faults per run (default 1; not with --fault)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seeds the server's identifiers and the data"
    )
    p.add_argument("--workers", type=int, help="worker processes (default 1; not with --fault)")
    p.add_argument("--report", choices=["text", "json"], default="text")
    p.add_argument(
        "--fault",
        action="append",
        metavar="OP#N:EFFECT",
        help="replay one run under exactly these faults (repeatable), e.g. "
        "SESSION_FINALIZE#1:failed_precondition, STREAM_WRITE#2:drop_stream",
    )
    p = sub.add_parser(
        "conformance",
        help="check a Mosaico server against the spec, requirement by requirement",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit status:\n"
        "  0  every requirement that could be observed is met (some may be unknown)\n"
        "  1  a requirement failed, or the exploration found a disagreement\n"
        "  2  bad arguments, or the target did not answer a version request\n"
        "  3  nothing was observed: every requirement is unknown (for example, no usable key),\n"
        "     so the run shows no conformance",
    )
    p.add_argument(
        "url",
        nargs="?",
        help="grpc://host:port or grpc+tls://host:port (default: an embedded server)",
    )
    p.add_argument(
        "--api-key",
        help="a key for the target given by URL (a manage key lets every requirement be observed)",
    )
    p.add_argument(
        "--tls-root-cert", metavar="F", help="PEM root certificate(s) of the target given by URL"
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
        type=float,
        default=10.0,
        help="at most this many seconds of model-based exploration, shrinking included (0: none)",
    )
    p.add_argument("--report", choices=["text", "json", "junit"], help="default: text")
    p.add_argument("--out", metavar="FILE", help="write the report to FILE")
    p.add_argument(
        "--profile",
        choices=sorted(load_spec().profiles),
        help="profile of the embedded server (default: spec; not with a URL)",
    )
    p.add_argument(
        "--self-test",
        action="store_true",
        help="measure the suite: run it against every emulated deviation and broken server",
    )
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run one command; a file that cannot be read or parsed, or input the library refuses,
    is reported in one line on stderr with exit code 2 (no traceback)."""
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args, out if out is not None else sys.stdout)
    except (OSError, json.JSONDecodeError, MosaicoProtocolError) as exc:
        sys.stderr.write(f"mosaico-fsm {args.command}: {exc}\n")
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
