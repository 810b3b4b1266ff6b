"""The QUERY action: sequence and topic filters on names, tags, times and user metadata.

A filter is the JSON the SDK's query builders produce: `{"<field>": {"$op": value}, ...}` with
`user_metadata` nesting `{"<dotted.path>": {"$op": value}}`. Everything not listed here is
refused with INVALID_ARGUMENT naming it, so an unsupported filter never yields a wrong answer.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fsm.outcome import ErrorKind
from transport.server.errors import ServerError

__all__ = ["Candidate", "compile_filter", "run_query"]

_MISSING = object()
Predicate = Callable[[Mapping[str, Any]], bool]


def _bad(message: str) -> ServerError:
    return ServerError(ErrorKind.INVALID_ARGUMENT, f"query: {message}")


def _comparable(a: Any, b: Any) -> bool:
    numbers = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    return (isinstance(a, numbers) and isinstance(b, numbers)) or (
        isinstance(a, str) and isinstance(b, str)
    )


def _op(name: str, operand: Any, where: str) -> Callable[[Any], bool]:
    if name == "$eq":
        return lambda v: v is not _MISSING and _comparable(v, operand) and v == operand
    if name == "$neq":
        return lambda v: v is not _MISSING and not (_comparable(v, operand) and v == operand)
    if name in ("$lt", "$leq", "$gt", "$geq"):
        if not isinstance(operand, (int, float, str)) or isinstance(operand, bool):
            raise _bad(f"{where}: {name} needs a number or a string")
        compare: Callable[[Any, Any], bool] = {
            "$lt": operator.lt,
            "$leq": operator.le,
            "$gt": operator.gt,
            "$geq": operator.ge,
        }[name]
        return lambda v: v is not _MISSING and _comparable(v, operand) and bool(compare(v, operand))
    if name == "$in":
        if not isinstance(operand, list):
            raise _bad(f"{where}: $in needs a list")
        return lambda v: v is not _MISSING and any(_comparable(v, o) and v == o for o in operand)
    if name == "$between":
        if not isinstance(operand, list) or len(operand) != 2:
            raise _bad(f"{where}: $between needs [low, high]")
        low, high = operand

        def between(v: Any) -> bool:
            if v is _MISSING:
                return False
            if low is not None and not (_comparable(v, low) and v >= low):
                return False
            return high is None or (_comparable(v, high) and v <= high)

        return between
    if name == "$match":
        if not isinstance(operand, str):
            raise _bad(f"{where}: $match needs a string")
        return lambda v: isinstance(v, str) and operand in v
    if name in ("$ex", "$nex"):
        want = operand if isinstance(operand, bool) else True
        present = name == "$ex"
        return lambda v: (v is not _MISSING) == (want if present else not want)
    raise _bad(f"{where}: operator {name!r} is not supported")


def _conditions(spec: Any, where: str) -> list[Callable[[Any], bool]]:
    if not isinstance(spec, dict) or not spec:
        raise _bad(f"{where}: expected {{'$op': value}}")
    return [_op(name, operand, where) for name, operand in spec.items()]


def _lookup(metadata: Mapping[str, Any], path: str) -> Any:
    value: Any = metadata
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _metadata_check(path: str, tests: list[Callable[[Any], bool]]) -> Predicate:
    return lambda c: all(t(_lookup(c["user_metadata"], path)) for t in tests)


def _field_check(field: str, tests: list[Callable[[Any], bool]]) -> Predicate:
    return lambda c: all(t(c.get(field, _MISSING)) for t in tests)


def _topic_name_check(tests: list[Callable[[Any], bool]]) -> Predicate:
    """A topic's name is its full locator ('seq/topic') or its path in its sequence
    ('topic' or '/topic', as clients write it): the filter holds if it holds for one of them."""

    def check(c: Mapping[str, Any]) -> bool:
        locator = str(c.get("locator", ""))
        path = locator.partition("/")[2]
        return any(all(t(name) for t in tests) for name in (locator, path, f"/{path}"))

    return check


FIELDS = {
    "sequence": ("locator", "created_at_ns"),
    "topic": ("locator", "ontology_tag", "serialization_format", "created_at_ns"),
}


def compile_filter(kind: str, raw: Any) -> Predicate:
    """A predicate over a candidate's fields (a dict with the names in FIELDS and
    `user_metadata`)."""
    if not isinstance(raw, dict):
        raise _bad(f"the {kind} filter must be an object")
    checks: list[Predicate] = []
    for field, spec in raw.items():
        where = f"{kind}.{field}"
        if field == "user_metadata":
            if not isinstance(spec, dict):
                raise _bad(f"{where}: expected {{'<key>': {{'$op': value}}}}")
            for path, conditions in spec.items():
                checks.append(_metadata_check(path, _conditions(conditions, f"{where}.{path}")))
        elif kind == "topic" and field == "locator":
            checks.append(_topic_name_check(_conditions(spec, where)))
        elif field in FIELDS[kind]:
            checks.append(_field_check(field, _conditions(spec, where)))
        else:
            raise _bad(f"filter field {where!r} is not supported")
    return lambda candidate: all(check(candidate) for check in checks)


Candidate = tuple[Mapping[str, Any], list[Mapping[str, Any]]]
"""A sequence's fields and its topics' fields."""


def run_query(body: Mapping[str, Any], candidates: Iterable[Candidate]) -> list[dict[str, Any]]:
    """The `items` of the answer: each matching sequence with its matching topics (all of its
    topics when there is no topic filter; sequences without a matching topic are left out when
    there is one)."""
    for key in body:
        if key == "ontology":
            raise _bad("ontology (data-level) filters are not supported by this server")
        if key not in FIELDS:
            raise _bad(f"unknown filter {key!r}")
    sequence_pred = compile_filter("sequence", body["sequence"]) if "sequence" in body else None
    topic_pred = compile_filter("topic", body["topic"]) if "topic" in body else None
    items = []
    for sequence, topics in candidates:
        if sequence_pred is not None and not sequence_pred(sequence):
            continue
        matching = [t for t in topics if topic_pred is None or topic_pred(t)]
        if topic_pred is not None and not matching:
            continue
        items.append(
            {
                "sequence": sequence["locator"],
                "topics": [{"locator": t["locator"]} for t in matching],
            }
        )
    return items
