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
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _COMMANDS[args.command](args, out if out is not None else sys.stdout)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
