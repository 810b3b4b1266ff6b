"""Typed QUERY building and answers for the engine (`Client.query`).

Conditions are made from fields: ``sequence.locator.eq("run_42")``,
``sequence.user_metadata("robot.arm").geq(2)``, ``topic.ontology_tag.eq("imu")``,
``data("imu", "acceleration.x").between(-1.0, 2.5)``. `query_body` turns them into the JSON
body of the QUERY action and checks it against the grammar of `specs/query.toml` (the one the
reference server reads), so a malformed query fails here with ArgumentError before any I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import attrs

from fsm.errors import ActionFailed, ArgumentError
from fsm.outcome import ErrorKind
from fsm.spec import load_spec
from fsm.spec.query import QueryBodyError, QueryGrammar, parse_query

__all__ = [
    "Condition",
    "Field",
    "QueryItem",
    "QueryResult",
    "QueryTopic",
    "data",
    "query_body",
    "sequence",
    "topic",
]

Scalar = int | float | bool | str


@attrs.frozen
class Condition:
    """One condition of a query: `operator` applied to the field `key` of `section`
    (`path` is the key inside user metadata, for metadata fields)."""

    section: str
    key: str
    operator: str
    operand: Any
    path: str | None = None

    @property
    def name(self) -> str:
        """The condition's field as a body names it."""
        parts = (self.section, self.key, self.path) if self.section != "ontology" else (self.key,)
        return ".".join(p for p in parts if p)


@attrs.frozen
class Field:
    """A queryable field; each method makes one condition on it."""

    section: str
    key: str
    path: str | None = None

    def _on(self, operator: str, operand: Any) -> Condition:
        return Condition(self.section, self.key, operator, operand, self.path)

    def eq(self, value: Scalar) -> Condition:
        return self._on("$eq", value)

    def neq(self, value: Scalar) -> Condition:
        return self._on("$neq", value)

    def lt(self, value: Scalar) -> Condition:
        return self._on("$lt", value)

    def leq(self, value: Scalar) -> Condition:
        return self._on("$leq", value)

    def gt(self, value: Scalar) -> Condition:
        return self._on("$gt", value)

    def geq(self, value: Scalar) -> Condition:
        return self._on("$geq", value)

    def between(self, low: Scalar, high: Scalar) -> Condition:
        """low <= value <= high."""
        return self._on("$between", [low, high])

    def in_(self, *values: Scalar) -> Condition:
        return self._on("$in", list(values))

    def match(self, text: str) -> Condition:
        """The value contains `text` (case-sensitive)."""
        return self._on("$match", text)

    def exists(self) -> Condition:
        return self._on("$ex", None)

    def missing(self) -> Condition:
        return self._on("$nex", None)


@attrs.frozen
class _Section:
    name: str

    def __getattr__(self, key: str) -> Field:
        if key.startswith("_"):
            raise AttributeError(key)
        return Field(self.name, key)

    def user_metadata(self, key: str) -> Field:
        """A value in the user metadata; `key` may be a dotted path into nested objects."""
        return Field(self.name, "user_metadata", key)


sequence = _Section("sequence")
"""Fields of sequences: ``sequence.locator``, ``sequence.created_at_ns``,
``sequence.user_metadata(key)``."""
topic = _Section("topic")
"""Fields of topics: ``topic.locator``, ``topic.ontology_tag``,
``topic.serialization_format``, ``topic.created_at_ns``, ``topic.user_metadata(key)``."""


def data(tag: str, path: str) -> Field:
    """A leaf column of the stored data of topics tagged `tag`; `path` is dotted through
    struct fields (``data("imu", "acceleration.x")``)."""
    return Field("ontology", f"{tag}.{path}")


def query_body(
    conditions: Iterable[Condition],
    *,
    include_timestamp_range: bool = False,
    data_section: bool = False,
    grammar: QueryGrammar | None = None,
) -> dict[str, Any]:
    """The QUERY body of `conditions`, checked against the grammar. Data conditions (or
    `data_section`) make an ontology section; `include_timestamp_range` asks for each
    topic's time range and needs one. One condition per field: ArgumentError otherwise."""
    body: dict[str, dict[str, Any]] = {}
    for cond in conditions:
        if not isinstance(cond, Condition):
            raise ArgumentError(f"a query takes conditions, not {type(cond).__name__}")
        section = body.setdefault(cond.section, {})
        target = section.setdefault("user_metadata", {}) if cond.path is not None else section
        key = cond.path if cond.path is not None else cond.key
        if key in target:
            raise ArgumentError(f"{cond.name}: one condition per field (use between for a range)")
        target[key] = {cond.operator: cond.operand}
    if include_timestamp_range or data_section:
        body.setdefault("ontology", {})
    if include_timestamp_range:
        body["ontology"]["include_timestamp_range"] = True
    try:
        parse_query(body, grammar or load_spec().query)
    except QueryBodyError as exc:
        raise ArgumentError(f"query: {exc}") from None
    return body


# ---------------------------------------------------------------------------------------------
# Answers


@attrs.frozen
class QueryTopic:
    locator: str
    """The topic's full locator, '<sequence>/<path>'."""
    timestamp_range: tuple[int, int] | None
    """First and last timestamp_ns of the matching rows, when asked for."""


@attrs.frozen
class QueryItem:
    sequence: str
    topics: tuple[QueryTopic, ...]


@attrs.frozen
class QueryResult:
    """The sequences that matched, each with its matching topics, in the server's order."""

    items: tuple[QueryItem, ...]

    def __iter__(self) -> Iterator[QueryItem]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def sequences(self) -> list[str]:
        return [item.sequence for item in self.items]

    @classmethod
    def from_response(cls, value: Any) -> QueryResult:
        """Read a QUERY answer; ActionFailed (internal) naming what is malformed."""
        items = value.get("items") if isinstance(value, Mapping) else None
        if not isinstance(items, list):
            raise _malformed(f"a query answer needs 'items': {value!r:.200}")
        return cls(tuple(_item(raw) for raw in items))


def _malformed(detail: str) -> ActionFailed:
    return ActionFailed("QUERY", ErrorKind.INTERNAL, f"malformed answer: {detail}")


def _item(raw: Any) -> QueryItem:
    if (
        not isinstance(raw, Mapping)
        or not isinstance(raw.get("sequence"), str)
        or not isinstance(raw.get("topics"), list)
    ):
        raise _malformed(f"a query item needs 'sequence' and 'topics': {raw!r:.200}")
    return QueryItem(raw["sequence"], tuple(_topic(t) for t in raw["topics"]))


def _topic(raw: Any) -> QueryTopic:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("locator"), str):
        raise _malformed(f"a query topic needs 'locator': {raw!r:.200}")
    span = raw.get("timestamp_range")
    if span is None:
        return QueryTopic(raw["locator"], None)
    if (
        not isinstance(span, list)
        or len(span) != 2
        or not all(isinstance(t, int) and not isinstance(t, bool) for t in span)
    ):
        raise _malformed(f"a timestamp_range is [start_ns, end_ns]: {span!r:.200}")
    return QueryTopic(raw["locator"], (span[0], span[1]))
