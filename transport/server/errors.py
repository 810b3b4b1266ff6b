"""The one error a server model raises: a refusal with an error kind.

`ServerError` is the server branch of the library's error hierarchy (`fsm.errors`); it is
re-exported here, where the server modules have always imported it from."""

from __future__ import annotations

from fsm.errors import ServerError

__all__ = ["ServerError"]
