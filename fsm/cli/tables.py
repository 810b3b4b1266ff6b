"""`mosaico-fsm spec` and `mosaico-fsm diagram`: the tables as text and as diagrams."""

from __future__ import annotations

import argparse
from typing import TextIO

from fsm.cli.common import CliError, HelpFormatter, Parser, readable_file
from fsm.render import SPEC_SECTIONS, diagram, diagram_names, embed_diagrams, spec_text
from fsm.render_lines import diff_text, line_text
from fsm.spec import load_spec
from fsm.spec.lines import line_names, load_line
from fsm.spec.model import Spec

__all__ = ["add_parsers", "run_diagram", "run_spec"]


def add_parsers(sub: argparse._SubParsersAction[Parser]) -> None:
    p = sub.add_parser("spec", help="print the protocol tables", formatter_class=HelpFormatter)
    p.add_argument(
        "--section",
        action="append",
        choices=SPEC_SECTIONS,
        help="print only this section (repeatable; default: every section)",
    )
    _protocol_option(p)
    p.add_argument(
        "--diff",
        nargs=2,
        metavar=("A", "B"),
        choices=line_names(),
        help="print what protocol line B changes against line A (from specs/lines/)",
    )
    p = sub.add_parser("diagram", help="render lifecycle diagrams", formatter_class=HelpFormatter)
    p.add_argument("--format", choices=["mermaid", "dot"], default="mermaid", help="notation")
    _protocol_option(p)
    p.add_argument(
        "--update-readme",
        metavar="FILE",
        type=readable_file,
        help="rewrite the generated Mermaid diagrams embedded in FILE (README.md)",
    )
    p.add_argument(
        "name",
        nargs="*",
        help="session, topic_writer or resource:<sequence|session|topic|api_key> "
        "(default: the client machines)",
    )


def _protocol_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--protocol",
        choices=line_names(),
        help="the protocol line whose tables to use (default: 0.3, the tables of specs/*.toml)",
    )


def _tables(args: argparse.Namespace) -> Spec:
    """The tables of `--protocol`, or those of `specs/*.toml` without it."""
    return load_spec() if args.protocol is None else load_line(args.protocol).spec


def run_spec(args: argparse.Namespace, out: TextIO) -> int:
    if args.diff is not None:
        if args.protocol is not None or args.section:
            raise CliError("--diff compares two whole lines: not with --protocol or --section")
        out.write(diff_text(load_line(args.diff[0]), load_line(args.diff[1])))
        return 0
    if args.protocol is not None:
        out.write(line_text(load_line(args.protocol)) + "\n")
    out.write(spec_text(_tables(args), args.section or SPEC_SECTIONS))
    return 0


def run_diagram(args: argparse.Namespace, out: TextIO) -> int:
    spec = _tables(args)
    if args.update_readme is not None:
        if args.name or args.format != "mermaid" or args.protocol is not None:
            raise CliError(
                "--update-readme rewrites every generated Mermaid diagram of FILE; "
                "it takes no NAME and no --format, and no --protocol (README shows the "
                "default line)"
            )
        path = args.update_readme
        before = path.read_text(encoding="utf-8")
        after = embed_diagrams(before, spec)
        if after == before:
            out.write(f"the diagrams in {path} are up to date: nothing changed\n")
            return 0
        path.write_text(after, encoding="utf-8")
        out.write(f"updated the diagrams in {path}\n")
        return 0
    names = args.name or list(spec.machines)
    for name in names:
        if name not in diagram_names(spec):
            raise CliError(
                f"unknown lifecycle {name!r}", f"choose from {', '.join(diagram_names(spec))}"
            )
    for i, name in enumerate(names):
        if i:
            out.write("\n")
        out.write(f"%% {name}\n" if args.format == "mermaid" else f"// {name}\n")
        out.write(diagram(spec, name, args.format))
    return 0
