"""The one error hierarchy of mosaico-fsm.

Every error the library raises on purpose derives from `MosaicoError`, through one branch::

    MosaicoError
    ├── ProtocolError        the engine and the tables: a call the protocol does not allow
    │   ├── InvalidTrigger   a trigger the table refuses in the current state
    │   ├── ActionFailed     an operation the server (or the stream) refused
    │   │   └── OutcomeUnknown
    │   └── ArgumentError    bad input from the caller, found before any I/O (also a ValueError)
    ├── SpecError            a file of specs/ that is malformed or unsound
    ├── ServerError          a request the server model refuses, with an error kind
    ├── TransportError       a transport that cannot carry a call (malformed frames or replies)
    ├── SimulationError      a simulation that cannot judge what it needed to read
    ├── ConformanceError     a conformance run that cannot check its target
    └── CliError             a command-line mistake (fsm.cli.common)

Modules add leaves under these branches (`QueryBodyError` is an `ArgumentError`, `FrameError`
a `TransportError`, `Unreachable` a `ConformanceError`). A leaf that used to be a built-in
exception keeps it as a second base (`ArgumentError` is a `ValueError`), so an `except
ValueError` written against an older release still catches it.

Each error carries the protocol context it has as attributes: `machine`, `state`, `trigger`
and `operation` (None when the raiser does not know it), so callers can branch on data rather
than parse messages.

`MosaicoProtocolError` is the name of the base from before the branches existed. It stays an
alias of `MosaicoError`, so `except MosaicoProtocolError` still catches every error the library
raises; new code should name `MosaicoError` or a branch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fsm.outcome import ErrorKind

__all__ = [
    "ActionFailed",
    "ArgumentError",
    "ArgumentTypeError",
    "ConformanceError",
    "InvalidTrigger",
    "MosaicoError",
    "MosaicoProtocolError",
    "OutcomeUnknown",
    "ProtocolError",
    "ServerError",
    "SimulationError",
    "SpecError",
    "TransportError",
]


class MosaicoError(Exception):
    """Base class of every error mosaico-fsm raises deliberately.

    `machine`, `state`, `trigger` and `operation` say where the error arose, each None when
    the raiser does not know it.
    """

    machine: str | None
    state: str | None
    trigger: str | None
    operation: str | None

    def __init__(
        self,
        *args: object,
        machine: str | None = None,
        state: str | None = None,
        trigger: str | None = None,
        operation: str | None = None,
    ) -> None:
        super().__init__(*args)
        self.machine = machine
        self.state = state
        self.trigger = trigger
        self.operation = operation


MosaicoProtocolError = MosaicoError
"""The base's earlier name, kept so that code importing it keeps working."""


class ProtocolError(MosaicoError):
    """The engine or a table could not do what was asked: a trigger the table refuses, an
    operation that failed, bad arguments, or a machine that did not follow its table."""


class SpecError(MosaicoError):
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


class ServerError(MosaicoError):
    """A request the server refuses. `kind` picks the gRPC status; nothing was changed."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        self.kind = kind
        self.message = message
        super().__init__(f"{kind.value}: {message}")


class TransportError(MosaicoError):
    """A transport that cannot carry a call: a malformed frame or reply, a fault injected
    between client and server, or a transport that cannot be set up."""


class SimulationError(MosaicoError):
    """The fault-free checker could not read the server: what needed the read cannot be
    judged."""


class ConformanceError(MosaicoError):
    """A conformance run could not check (part of) its target, or found it wanting."""


class InvalidTrigger(ProtocolError):
    """A trigger that the table does not allow in the current state.

    The machine's state is left exactly as it was. `allowed` lists the triggers that the state
    does accept (for the same context), to make the mistake easy to see.
    """

    machine: str
    state: str
    trigger: str

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
        self.allowed = tuple(allowed)
        self.context = dict(context or {})
        where = f" with {self.context}" if self.context else ""
        nothing = "none (terminal state)" if terminal else "none"
        allowed_text = ", ".join(self.allowed) if self.allowed else nothing
        super().__init__(
            f"{machine}: trigger {trigger!r} is not allowed in state {state!r}{where}; "
            f"allowed there: {allowed_text}",
            machine=machine,
            state=state,
            trigger=trigger,
        )


class ActionFailed(ProtocolError):
    """An operation of the protocol failed: the server (or the stream) refused it.

    `operation` is the catalogue name (for example ``SESSION_FINALIZE``), `kind` the error
    family, `detail` the server's or transport's message. When the failure led the engine
    through a route of the table, `transition` names the row that was taken, and `machine`,
    `state` and `trigger` say which trigger of which machine, fired in which state, ran it.
    """

    operation: str

    def __init__(
        self,
        operation: str,
        kind: ErrorKind,
        detail: str,
        transition: str | None = None,
        *,
        machine: str | None = None,
        state: str | None = None,
        trigger: str | None = None,
    ) -> None:
        self.kind = kind
        self.detail = detail
        self.transition = transition
        super().__init__(
            f"{operation} failed ({kind.value}): {detail}",
            machine=machine,
            state=state,
            trigger=trigger,
            operation=operation,
        )


class OutcomeUnknown(ActionFailed):
    """An operation whose reply was lost after the server may have applied it, and whose
    effect could not be settled by asking the server."""


class ArgumentError(ProtocolError, ValueError):
    """Bad input from the caller, found before any I/O: nothing was sent and nothing changed."""


class ArgumentTypeError(ArgumentError, TypeError):
    """An argument of the wrong type (also a `TypeError`, as Python reports those)."""
