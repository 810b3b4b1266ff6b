"""Checks on names and metadata, made before any I/O (bad input raises `ArgumentError`)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from fsm.errors import ArgumentError

__all__ = ["check_metadata", "check_sequence_name", "check_topic_name", "topic_locator"]

_SEQUENCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_TOPIC = re.compile(r"[A-Za-z0-9][A-Za-z0-9_/-]*")


def check_sequence_name(name: object) -> str:
    """The sequence name as the server stores it (no leading '/'), or ArgumentError."""
    if not isinstance(name, str):
        raise ArgumentError(f"a sequence name is a string, got {type(name).__name__}")
    stripped = name.removeprefix("/")
    if not _SEQUENCE.fullmatch(stripped):
        raise ArgumentError(
            f"bad sequence name {name!r}: it starts with a letter or digit, then letters, digits, '_' or '-'"
        )
    return stripped


def check_topic_name(name: object) -> str:
    """The topic path (no leading '/'), or ArgumentError."""
    if not isinstance(name, str):
        raise ArgumentError(f"a topic name is a string, got {type(name).__name__}")
    stripped = name.removeprefix("/")
    if not _TOPIC.fullmatch(stripped) or stripped.endswith("/") or "//" in stripped:
        raise ArgumentError(
            f"bad topic name {name!r}: it starts with a letter or digit, then letters, digits, '_', '-' or '/'"
        )
    return stripped


def topic_locator(sequence: str, topic: str) -> str:
    """'<sequence>/<topic path>', the topic's locator on the server."""
    return f"{sequence}/{topic}"


def check_metadata(metadata: object, what: str) -> dict[str, Any]:
    """A JSON-serialisable dict with string keys (a copy), or ArgumentError."""
    if not isinstance(metadata, Mapping):
        raise ArgumentError(f"{what} metadata must be a dict, got {type(metadata).__name__}")
    for key in metadata:
        if not isinstance(key, str):
            raise ArgumentError(f"{what} metadata keys must be strings, got {key!r}")
    try:
        return dict(json.loads(json.dumps(dict(metadata), allow_nan=False)))
    except (TypeError, ValueError) as exc:
        raise ArgumentError(f"{what} metadata must be JSON-serialisable: {exc}") from None
