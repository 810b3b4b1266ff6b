"""The one error hierarchy of mosaico-fsm.

Every error the library raises on purpose is a `MosaicoProtocolError`. Subclasses carry the
protocol context that explains them (machine, state, trigger, operation, error kind) as
attributes, so callers can branch on data rather than parse messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fsm.outcome import ErrorKind

__all__ = [
    "ActionFailed",
    "ArgumentError",
    "InvalidTrigger",
    "MosaicoProtocolError",
    "OutcomeUnknown",
    "SpecError",
]


class MosaicoProtocolError(Exception):
    """Base class of every error mosaico-fsm raises deliberately."""


class SpecError(MosaicoProtocolError):
    """A file of `specs/` is malformed or unsound.

    `file` is the TOML file, `table` the table inside it, `entry` the entry that is wrong
    (for example ``transitions[3] (exit-ok)``) and `problem` what is wrong with it.
    """

    def __init__(self, file: str, table: str, entry: str, problem: str) -> None:
        self.file = file
        self.table = table
        self.entry = entry
        self.problem = problem
        super().__init__(f"{file}: [{table}] {entry}: {problem}")


class InvalidTrigger(MosaicoProtocolError):
    """A trigger that the table does not allow in the current state.

    The machine's state is left exactly as it was. `allowed` lists the triggers that the state
    does accept (for the same context), to make the mistake easy to see.
    """

    def __init__(
        self,
        machine: str,
        state: str,
        trigger: str,
        allowed: Sequence[str],
        context: dict[str, str] | None = None,
        *,
        terminal: bool = False,
    ) -> None:
        self.machine = machine
        self.state = state
        self.trigger = trigger
        self.allowed = tuple(allowed)
        self.context = dict(context or {})
        where = f" with {self.context}" if self.context else ""
        nothing = "none (terminal state)" if terminal else "none"
        allowed_text = ", ".join(self.allowed) if self.allowed else nothing
        super().__init__(
            f"{machine}: trigger {trigger!r} is not allowed in state {state!r}{where}; "
            f"allowed there: {allowed_text}"
        )


class ActionFailed(MosaicoProtocolError):
    """An operation of the protocol failed: the server (or the stream) refused it.

    `operation` is the catalogue name (for example ``SESSION_FINALIZE``), `kind` the error
    family, `detail` the server's or transport's message. When the failure led the engine
    through a route of the table, `transition` names the row that was taken.
    """

    def __init__(
        self,
        operation: str,
        kind: ErrorKind,
        detail: str,
        transition: str | None = None,
    ) -> None:
        self.operation = operation
        self.kind = kind
        self.detail = detail
        self.transition = transition
        super().__init__(f"{operation} failed ({kind.value}): {detail}")


class OutcomeUnknown(ActionFailed):
    """An operation whose reply was lost after the server may have applied it, and whose
    effect could not be settled by asking the server."""


class ArgumentError(MosaicoProtocolError, ValueError):
    """Bad input from the caller, found before any I/O: nothing was sent and nothing changed."""
