"""Progress of long runs, drawn by `rich` on stderr: on a terminal by default, elsewhere
only when asked (`--progress`), so logs and pipes get no control characters."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

__all__ = ["Bar", "add_progress_option", "bar", "wants_progress"]


def add_progress_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show progress on stderr (default: only when stderr is a terminal)",
    )


def wants_progress(asked: bool | None) -> bool:
    """`--progress` forces it, `--no-progress` turns it off, else: stderr is a terminal."""
    if asked is not None:
        return asked
    return sys.stderr.isatty()


class Bar:
    """One progress bar with a changing description; does nothing when progress is off."""

    def __init__(self, progress: Progress | None, label: str, total: int | None) -> None:
        self._progress = progress
        self._task: TaskID | None = None
        if progress is not None:
            self._task = progress.add_task(label, total=total, detail="")

    def advance(self, steps: int = 1, detail: str | None = None) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=steps, detail=detail or "")

    def update(
        self,
        *,
        completed: int | None = None,
        total: int | None = None,
        label: str | None = None,
        detail: str | None = None,
    ) -> None:
        if self._progress is None or self._task is None:
            return
        self._progress.update(
            self._task,
            completed=completed,
            total=total,
            description=label,
            detail=detail if detail is not None else "",
        )

    def say(self, line: str) -> None:
        """A line above the bar (on stderr), kept when the bar goes."""
        if self._progress is not None:
            self._progress.console.print(line, markup=False, highlight=False)

    def __enter__(self) -> Bar:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None


@contextmanager
def bar(enabled: bool, label: str, total: int | None = None) -> Iterator[Bar]:
    """A live progress bar on stderr for the duration of the block (removed at its end)."""
    if not enabled:
        yield Bar(None, label, total)
        return
    if sys.stderr.isatty():
        console = Console(stderr=True)
    else:  # asked for with --progress: redrawn in place, without colours
        console = Console(stderr=True, force_terminal=True, color_system=None)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[detail]}"),
        console=console,
        transient=True,
    )
    with progress, Bar(progress, label, total) as one:
        yield one
