"""What every command shares: the one-line error, argument types that refuse bad values at
parse time, output paths checked before any work, and the exit statuses."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import NoReturn, TextIO

from fsm.errors import MosaicoError

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_UNUSABLE",
    "CliError",
    "HelpFormatter",
    "Output",
    "Parser",
    "non_negative_float",
    "port_number",
    "positive_int",
    "readable_file",
    "writable_path",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNUSABLE = 2
"""Bad arguments, or a target that cannot be used (as argparse exits on a usage error)."""
EXIT_INTERRUPTED = 130
"""Ctrl-C: 128 + SIGINT, as shells report it."""


class CliError(MosaicoError):
    """A mistake the user can fix: said in one line on stderr, with a hint where one helps."""

    def __init__(self, message: str, hint: str | None = None, status: int = EXIT_UNUSABLE):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.status = status

    def line(self, command: str) -> str:
        hint = f" (hint: {self.hint})" if self.hint else ""
        return f"mosaico-fsm {command}: error: {self.message}{hint}\n"


class Parser(argparse.ArgumentParser):
    """argparse's parser, but a usage error is one line (with where to find the usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_UNUSABLE, f"{self.prog}: error: {message} (hint: see {self.prog} --help)\n")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help that shows each option's default (when it has one worth showing) and keeps the
    layout of descriptions and epilogs."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        shown = default not in (None, False, argparse.SUPPRESS) and default != []
        if shown and "%(default)" not in text and "default:" not in text:
            text += " (default: %(default)s)"
        return text


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_float(text: str) -> float:
    """An argparse type: a finite number of at least 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of at least 0, got {text}")
    return value


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0 to 65535 (0 picks a free one)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(
            f"a port is between 0 and 65535 (0 picks a free one), got {value}"
        )
    return value


def readable_file(text: str) -> Path:
    """An argparse type: a file that exists and can be read."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(
            f"{text}: {'is a directory' if path.is_dir() else 'no such file'}"
        )
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"{text}: not readable (permission denied)")
    return path


def writable_path(text: str) -> Path:
    """An argparse type: a file that can be created or replaced (its directory exists and is
    writable), checked before any work starts so no result is lost at the end."""
    path = Path(text)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory")
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {text}: no directory {parent}")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise argparse.ArgumentTypeError(f"cannot write {text}: permission denied")
    return path


class Output:
    """Where a command's report goes: stdout, or a file given by `--out` (then stdout gets
    the report's summary line and where the report was written)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def deliver(self, report: str, summary: str, out: TextIO) -> None:
        if self.path is None:
            out.write(report)
            return
        self.path.write_text(report, encoding="utf-8")
        out.write(f"{summary}\nreport written to {self.path}\n")
