"""The `mosaico-fsm` command line: the composition root.

This is the one package of `fsm` that may reach into `transport/`; it does so lazily, inside
the commands that need a transport or a server, so `fsm` itself stays independent of it.

Every mistake is one line on stderr (`mosaico-fsm COMMAND: error: ...`, with a hint where one
helps) and exit status 2, checked before any work starts; Ctrl-C exits 130 after reporting
what had finished.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import TextIO

from fsm.cli import conformance, serve, simulate, tables, trace
from fsm.cli.common import EXIT_INTERRUPTED, EXIT_UNUSABLE, CliError, Parser
from fsm.errors import MosaicoError

__all__ = ["build_parser", "main"]

Command = Callable[[argparse.Namespace, TextIO], int]
_COMMANDS: dict[str, Command] = {
    "spec": tables.run_spec,
    "diagram": tables.run_diagram,
    "serve": serve.run,
    "check-trace": trace.run,
    "simulate": simulate.run,
    "conformance": conformance.run,
}


def _version() -> str:
    try:
        return metadata.version("mosaico-fsm")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="mosaico-fsm",
        description="The Mosaico ingestion protocol as transition tables.",
    )
    parser.add_argument("--version", action="version", version=f"mosaico-fsm {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    tables.add_parsers(sub)
    serve.add_parser(sub)
    trace.add_parser(sub)
    simulate.add_parser(sub)
    conformance.add_parser(sub)
    return parser


def _quiet_grpc() -> None:
    """gRPC's C core logs to stderr on its own (`E0000 ...` lines, an absl warning): the
    commands say what went wrong themselves, so silence it unless the user asked for it."""
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    os.environ.setdefault("GRPC_TRACE", "")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run one command. A mistake (bad arguments, unusable input or target) is one line on
    stderr and exit 2; Ctrl-C before a command could report anything is one line and 130."""
    _quiet_grpc()
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, --version, or a usage error argparse has said
        return done.code if isinstance(done.code, int) else EXIT_UNUSABLE
    try:
        return _COMMANDS[args.command](args, out if out is not None else sys.stdout)
    except CliError as error:
        sys.stderr.write(error.line(args.command))
        return error.status
    except (OSError, json.JSONDecodeError, MosaicoError) as exc:
        sys.stderr.write(f"mosaico-fsm {args.command}: error: {exc}\n")
        return EXIT_UNUSABLE
    except KeyboardInterrupt:
        sys.stderr.write(f"mosaico-fsm {args.command}: interrupted\n")
        return EXIT_INTERRUPTED
    except BaseExceptionGroup as group:  # Ctrl-C inside a library that groups what it raised
        if group.subgroup(KeyboardInterrupt) is None:
            raise
        sys.stderr.write(f"mosaico-fsm {args.command}: interrupted\n")
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
