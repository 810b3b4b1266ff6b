"""Request validation driven by the catalogue's field types (specs/actions.toml)."""

from __future__ import annotations

import json
import math
import re
import sys
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from fsm.enums import APIKeyPermissionEnum, SerializationFormat
from fsm.outcome import ErrorKind
from fsm.spec.model import Limit, Operation
from transport.server.errors import ServerError

__all__ = [
    "INT64",
    "check_size",
    "limit_of",
    "normalize_sequence_locator",
    "normalize_topic_locator",
    "parse_json_object",
    "split_topic_locator",
    "validate_request",
]

_SEQUENCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_TOPIC_PATH = re.compile(r"[A-Za-z0-9][A-Za-z0-9_/-]*")
_FINGERPRINT = re.compile(r"[a-z0-9]{8}")
NOTIFICATION_TYPES = ("error", "info")


def _bad(message: str) -> ServerError:
    return ServerError(ErrorKind.INVALID_ARGUMENT, message)


def limit_of(limits: Mapping[str, Limit], name: str) -> int:
    """The value of limit `name` of `specs/actions.toml` (no bound when a spec lacks it)."""
    entry = limits.get(name)
    return entry.value if entry is not None else sys.maxsize


def check_size(size: int, limits: Mapping[str, Limit], name: str, what: str) -> None:
    """Refuse `what` when its `size` in bytes is beyond limit `name`."""
    bound = limit_of(limits, name)
    if size > bound:
        raise _bad(f"{what} is {size} bytes, more than the {bound} allowed ({name})")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


_DOUBLE_RANGE = 2**1024


def _nesting_or_number_problem(value: Any, limit: int) -> str | None:
    """What makes `value` unacceptable: nesting deeper than `limit`, or a number beyond a
    double's range (a float that parsed as infinity, an integer of 2**1024 or more); None when
    it is fine. Checked in one pass, without recursion."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return f"nests deeper than {limit} levels (json_depth)"
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
        elif (isinstance(item, float) and not math.isfinite(item)) or (
            isinstance(item, int) and not isinstance(item, bool) and abs(item) >= _DOUBLE_RANGE
        ):
            return "holds a number beyond the range of a double"
    return None


def parse_json_object(
    raw: bytes, what: str, limits: Mapping[str, Limit], size_limit: str = "action_body_bytes"
) -> dict[str, Any]:
    """Decode `raw` as a UTF-8 JSON object, or refuse with INVALID_ARGUMENT.

    Strict: at most `size_limit` bytes, no NaN or Infinity, no number beyond a double's range,
    no lone surrogate in a string, at most json_depth levels of nesting."""
    check_size(len(raw), limits, size_limit, what)
    depth = limit_of(limits, "json_depth")
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
        if b"\\u" in raw:  # only an escape makes a lone surrogate ("\ud800"), not text
            json.dumps(value, ensure_ascii=False).encode("utf-8")
    except RecursionError:
        raise _bad(f"{what} nests deeper than {depth} levels (json_depth)") from None
    except (UnicodeError, ValueError) as exc:
        raise _bad(f"{what} is not valid JSON: {str(exc)[:200]}") from None
    problem = _nesting_or_number_problem(value, depth)
    if problem is not None:
        raise _bad(f"{what} {problem}")
    if not isinstance(value, dict):
        raise _bad(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def normalize_sequence_locator(value: str) -> str:
    """A sequence name without its optional leading '/', checked; never otherwise altered."""
    name = value.removeprefix("/")
    if not _SEQUENCE.fullmatch(name):
        raise _bad(
            f"bad sequence locator {value[:300]!r}: expected an ASCII letter or digit, then "
            "[A-Za-z0-9_-]"
        )
    return name


def split_topic_locator(value: str) -> tuple[str, str]:
    """('<sequence>', '<topic path>') of a topic locator, checked."""
    text = value.removeprefix("/")
    sequence, sep, path = text.partition("/")
    if not sep or not path:
        raise _bad(f"bad topic locator {value[:300]!r}: expected '<sequence>/<topic path>'")
    sequence = normalize_sequence_locator(sequence)
    if not _TOPIC_PATH.fullmatch(path) or any(not part for part in path.split("/")):
        raise _bad(
            f"bad topic locator {value[:300]!r}: the topic path needs an ASCII letter or digit "
            "first, then [A-Za-z0-9_-] in segments separated by single '/'"
        )
    return sequence, path


def normalize_topic_locator(value: str) -> str:
    sequence, path = split_topic_locator(value)
    return f"{sequence}/{path}"


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
INT64 = (-(2**63), 2**63 - 1)


def _uuid(value: str) -> str:
    if not _UUID.fullmatch(value):
        raise _bad(f"bad UUID {value!r}: expected the canonical 8-4-4-4-12 hexadecimal form")
    return str(uuid.UUID(value))


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in options:
            raise _bad(f"{value!r} is not one of {', '.join(options)}")
        return value

    return check


def _fingerprint(value: str) -> str:
    if not _FINGERPRINT.fullmatch(value):
        raise _bad(f"bad API-key fingerprint {value!r}: expected 8 lowercase alphanumerics")
    return value


def _locator(value: str) -> str:
    return (
        normalize_topic_locator(value)
        if "/" in value.removeprefix("/")
        else normalize_sequence_locator(value)
    )


_STRING_CHECKS: dict[str, Callable[[str], str]] = {
    "string": lambda v: v,
    "sequence_locator": normalize_sequence_locator,
    "topic_locator": normalize_topic_locator,
    "locator": _locator,
    "uuid": _uuid,
    "notification_type": _choice(NOTIFICATION_TYPES),
    "permission": _choice(tuple(p.value for p in APIKeyPermissionEnum)),
    "serialization_format": _choice(tuple(f.value for f in SerializationFormat)),
    "fingerprint": _fingerprint,
}


_LOCATOR_LIMITS = {
    "sequence_locator": "sequence_name_bytes",
    "topic_locator": "topic_locator_bytes",
    "locator": "topic_locator_bytes",
}


def _field_size(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def validate_request(
    op: Operation,
    body: Mapping[str, Any],
    limits: Mapping[str, Limit],
    checks: Mapping[str, Callable[[str], str]] | None = None,
) -> dict[str, Any]:
    """The request's fields, checked against the catalogue and its limits, and normalised
    (locators without a leading '/', UUIDs in canonical form). Unknown fields are ignored.
    `checks` replaces or adds string checks by field type (a protocol line's own rules)."""
    strings = {**_STRING_CHECKS, **checks} if checks else _STRING_CHECKS
    out: dict[str, Any] = {}
    for field in op.request:
        if field.name not in body or (body[field.name] is None and not field.required):
            if field.required:
                raise _bad(f"{op.wire}: missing field {field.name!r}")
            continue
        value = body[field.name]
        where = f"{op.wire}: field {field.name!r}"
        size_limit = field.limit or _LOCATOR_LIMITS.get(field.type)
        if size_limit is not None and isinstance(value, (str, dict, list)):
            check_size(_field_size(value), limits, size_limit, where)
        out[field.name] = _checked(field.type, value, where, strings)
    return out


def _checked(kind: str, value: Any, where: str, strings: Mapping[str, Callable[[str], str]]) -> Any:
    """`value`, checked (and normalised) as a field of type `kind`."""
    if kind in strings:
        if not isinstance(value, str):
            raise _bad(f"{where} must be a string, got {type(value).__name__}")
        try:
            return strings[kind](value)
        except ServerError as exc:
            raise _bad(f"{where}: {exc.message}") from None
    if kind in ("object", "filter", "timestamp_range"):
        if not isinstance(value, dict):
            raise _bad(f"{where} must be a JSON object, got {type(value).__name__}")
        return value
    if kind == "cluster_filters":
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise _bad(f"{where} must be a list of JSON objects")
        return value
    if kind == "integer":
        if not isinstance(value, int) or isinstance(value, bool):
            raise _bad(f"{where} must be an integer, got {type(value).__name__}")
        if not INT64[0] <= value <= INT64[1]:
            raise _bad(f"{where} is outside the int64 range")
        return value
    # pragma: no cover - the loader only admits declared field types
    raise ServerError(ErrorKind.INTERNAL, f"{where}: no check for type {kind}")
