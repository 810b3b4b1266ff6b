"""The one error a server model raises: a refusal with an error kind."""

from __future__ import annotations

from fsm.outcome import ErrorKind


class ServerError(Exception):
    """A request the server refuses. `kind` picks the gRPC status; nothing was changed."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        self.kind = kind
        self.message = message
        super().__init__(f"{kind.value}: {message}")
