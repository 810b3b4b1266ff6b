"""The QUERY action: the filter grammar of `specs/query.toml`, checked and evaluated.

A body is first parsed whole against the grammar: anything malformed (an unknown section or
field, an operator that does not apply to the field's kind, an operand of the wrong shape or
type, an empty range) is refused with INVALID_ARGUMENT naming the part. Then each condition's
cell of the grammar decides: a cell a server deviation made an error is refused with that
error; the others are evaluated.

Catalogue conditions (sequence and topic sections) hold on a resource's fields. Data
conditions (the ontology section) are grouped by ontology tag and evaluated per topic with
pyarrow.compute: the per-chunk statistics kept at ingest pick the candidate chunks, and one
Arrow filter expression (all conditions of the group on the same row) runs over their rows.
"""

from __future__ import annotations

import operator as op_
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import reduce
from typing import Any

import attrs
import pyarrow as pa
import pyarrow.compute as pc

from fsm.outcome import ErrorKind
from fsm.spec import query as spec_query
from fsm.spec.query import Condition, ParsedQuery, QueryGrammar, value_type
from transport.server.chunks import CHUNK, ChunkStats, Leaf
from transport.server.errors import ServerError

__all__ = [
    "QuerySettings",
    "SequenceCandidate",
    "TopicCandidate",
    "parse_query",
    "row_expression",
    "run_query",
]

_ABSENT = object()


def _bad(message: str) -> ServerError:
    return ServerError(ErrorKind.INVALID_ARGUMENT, f"query: {message}")


def parse_query(body: Mapping[str, Any], grammar: QueryGrammar) -> ParsedQuery:
    """The body checked against the grammar (INVALID_ARGUMENT naming the part), then
    refused if a condition's cell is an error (with that error)."""
    try:
        query = spec_query.parse_query(body, grammar)
    except spec_query.QueryBodyError as exc:
        raise _bad(str(exc)) from None
    for cond in (*query.sequence, *query.topic, *(query.ontology or ())):
        if cond.outcome not in spec_query.SEMANTICS:
            raise ServerError(
                ErrorKind(cond.outcome),
                f"query: {cond.where}: {cond.operator} on a {cond.kind} field is not supported",
            )
    return query


# ---------------------------------------------------------------------------------------------
# Catalogue conditions (field values)


def _same_type(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    numbers = (int, float)
    return (isinstance(a, numbers) and isinstance(b, numbers)) or (
        isinstance(a, str) and isinstance(b, str)
    )


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "$eq": op_.eq,
    "$lt": op_.lt,
    "$leq": op_.le,
    "$gt": op_.gt,
    "$geq": op_.ge,
}


def _holds(cond: Condition, value: Any) -> bool:
    """Whether a field's value (or _ABSENT) meets a condition of value semantics."""
    name, operand = cond.operator, cond.operand
    if name == "$ex":
        return value is not _ABSENT and value is not None
    if name == "$nex":
        return value is _ABSENT or value is None
    if value is _ABSENT or value is None:
        return False
    if name == "$neq":
        return not (_same_type(value, operand) and value == operand)
    if name == "$in":
        return any(_same_type(value, o) and value == o for o in operand)
    if name == "$between":
        low, high = operand
        return _same_type(value, low) and _same_type(value, high) and low <= value <= high
    if name == "$match":
        return isinstance(value, str) and operand in value
    return _same_type(value, operand) and _COMPARE[name](value, operand)


def _lookup(metadata: Mapping[str, Any], path: str) -> Any:
    value: Any = metadata
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _ABSENT
        value = value[part]
    return value


def _field_holds(cond: Condition, fields: Mapping[str, Any]) -> bool:
    if cond.kind == "metadata":
        return _holds(cond, _lookup(fields["user_metadata"], cond.key))
    if cond.kind == "topic_locator":
        locator = str(fields["locator"])
        path = locator.partition("/")[2]
        names = (locator, path, f"/{path}")
        if cond.operator == "$neq":
            return not any(_holds(attrs.evolve(cond, operator="$eq"), n) for n in names)
        return any(_holds(cond, n) for n in names)
    return _holds(cond, fields.get(cond.key, _ABSENT))


# ---------------------------------------------------------------------------------------------
# Data conditions (stored Arrow data)


@attrs.frozen
class QuerySettings:
    """The server behaviours a query depends on (see SERVER_SETTINGS of the spec loader)."""

    empty_ontology: str = "no_condition"
    timestamp_range: str = "matching_rows"
    chunk_without_match: str = "skipped"
    without_conditions: str = "everything"


@attrs.frozen
class TopicCandidate:
    """What a query reads of a topic: its catalogue fields and its stored chunks."""

    fields: Mapping[str, Any]
    chunks: Sequence[pa.RecordBatch]
    stats: ChunkStats | None

    @property
    def locator(self) -> str:
        return str(self.fields["locator"])


@attrs.frozen
class SequenceCandidate:
    fields: Mapping[str, Any]
    topics: Sequence[TopicCandidate]


_VALUE_CLASS = {"integer": "numeric", "float": "numeric", "boolean": "boolean", "text": "text"}


def _applies(cond: Condition, leaf: Leaf) -> bool:
    """Whether the condition's values can meet the leaf's type (else it matches nothing)."""
    if cond.operator in ("$ex", "$nex"):
        return True
    if cond.operator == "$match":
        return leaf.cls == "text"
    values = cond.operand if isinstance(cond.operand, list) else [cond.operand]
    return all(_VALUE_CLASS[str(value_type(v))] == leaf.cls for v in values)


def _chunk_mask(cond: Condition, leaf: Leaf) -> pa.Array | None:
    """Which chunks may hold a row meeting `cond`, from their statistics (None: all may)."""
    low, high = leaf.arrays()
    name, v = cond.operator, cond.operand
    if name == "$eq" and cond.outcome == "chunk_constant":
        # Every non-null value equals v; a chunk without values passes (its bounds are unset).
        return pc.fill_null(pc.and_(pc.greater_equal(low, v), pc.less_equal(high, v)), True)
    mask: pa.Array
    if name == "$eq":
        mask = pc.and_(pc.less_equal(low, v), pc.greater_equal(high, v))
    elif name == "$gt":
        mask = pc.greater(high, v)
    elif name == "$geq":
        mask = pc.greater_equal(high, v)
    elif name == "$lt":
        mask = pc.less(low, v)
    elif name == "$leq":
        mask = pc.less_equal(low, v)
    elif name == "$between":
        mask = pc.and_(pc.less_equal(low, v[1]), pc.greater_equal(high, v[0]))
    elif name == "$ex":
        mask = pc.is_valid(low)
    else:
        return None
    return pc.fill_null(mask, False)


def _row_expression(cond: Condition, path: tuple[str, ...]) -> pc.Expression:
    field = pc.field(*path)
    name, v = cond.operator, cond.operand
    if name == "$eq":
        return field == v
    if name == "$neq":
        return field != v
    if name == "$lt":
        return field < v
    if name == "$leq":
        return field <= v
    if name == "$gt":
        return field > v
    if name == "$geq":
        return field >= v
    if name == "$between":
        return (field >= v[0]) & (field <= v[1])
    if name == "$in":
        return field.isin(v)
    if name == "$match":
        return pc.match_substring(field, v)
    if name == "$ex":
        return field.is_valid()
    assert name == "$nex", name
    return field.is_null()


row_expression = _row_expression
"""The Arrow expression of one data condition on the column at `path` (also used by the
streaming filter actions)."""

_CHUNK = CHUNK


def _match_topic(
    topic: TopicCandidate,
    conditions: Sequence[Condition],
    settings: QuerySettings,
    want_range: bool,
) -> tuple[bool, tuple[int, int] | None]:
    """Whether the topic holds a row meeting every condition (all of one tag), and the
    [first, last] timestamp_ns the answer gives it."""
    stats = topic.stats
    if stats is None or stats.count == 0:
        return False, None
    paths: list[tuple[str, ...]] = []
    masks: list[pa.Array] = []
    for cond in conditions:
        path = tuple(cond.key.split(".")[1:])
        leaf = stats.leaves.get(path)
        if leaf is None or not _applies(cond, leaf):
            return False, None
        paths.append(path)
        mask = _chunk_mask(cond, leaf)
        if mask is not None:
            masks.append(mask)
    sizes = stats.row_counts()
    # Every row of the topic (the columns the conditions read), then only those of the chunks
    # the statistics chose; empty chunks hold no row.
    columns = sorted({"timestamp_ns", *(path[0] for path in paths)})
    table = stats.rows(topic.chunks, columns)
    chosen_mask = reduce(pc.and_, masks) if masks else None
    if chosen_mask is not None:
        chosen = pc.indices_nonzero(pc.and_(chosen_mask, pc.greater(sizes, 0)))
        table = table.filter(pc.take(chosen_mask, table.column(_CHUNK)))
    else:
        chosen = pc.indices_nonzero(pc.greater(sizes, 0))
    if len(chosen) == 0:
        return False, None
    expression = reduce(
        op_.and_, (_row_expression(c, p) for c, p in zip(conditions, paths, strict=True))
    )
    hits = table.filter(expression).select(["timestamp_ns", _CHUNK])
    if hits.num_rows == 0 and not (want_range and settings.chunk_without_match == "internal"):
        return False, None
    if want_range and settings.chunk_without_match == "internal":
        hit = pc.is_in(chosen.cast(pa.int64()), value_set=pc.unique(hits.column(_CHUNK)))
        if not pc.all(hit).as_py():
            raise ServerError(
                ErrorKind.INTERNAL,
                "query: a chunk chosen by its statistics holds no matching row, so its "
                "timestamp range is undefined",
            )
    if settings.timestamp_range == "last_matching_chunk":
        last = pc.max(hits.column(_CHUNK))
        hits = hits.filter(pc.equal(hits.column(_CHUNK), last))
    bounds = pc.min_max(hits.column("timestamp_ns"))
    return True, (bounds["min"].as_py(), bounds["max"].as_py())


# ---------------------------------------------------------------------------------------------
# The answer


def run_query(
    body: Mapping[str, Any],
    grammar: QueryGrammar,
    sequences: Iterable[SequenceCandidate],
    settings: QuerySettings = QuerySettings(),
) -> list[dict[str, Any]]:
    """The `items` of the answer: each matching sequence with its matching topics.

    Without topic or data conditions a matching sequence lists all of its topics; with them,
    only the matching topics, and a sequence without one is left out."""
    query = parse_query(body, grammar)
    groups = query.groups()
    if query.ontology is not None and not groups and settings.empty_ontology == "matches_nothing":
        return []
    if not (query.sequence or query.topic or groups) and settings.without_conditions == "nothing":
        return []
    want_range = query.include_timestamp_range and bool(groups)
    items = []
    for sequence in sequences:
        if not all(_field_holds(c, sequence.fields) for c in query.sequence):
            continue
        topics = [t for t in sequence.topics if all(_field_holds(c, t.fields) for c in query.topic)]
        if query.topic and not topics:
            continue
        if not groups:
            items.append(
                {
                    "sequence": sequence.fields["locator"],
                    "topics": [{"locator": t.locator} for t in topics],
                }
            )
            continue
        found = _data_matches(topics, groups, settings, want_range)
        if found is not None:
            items.append({"sequence": sequence.fields["locator"], "topics": found})
    return items


def _data_matches(
    topics: Sequence[TopicCandidate],
    groups: Mapping[str, Sequence[Condition]],
    settings: QuerySettings,
    want_range: bool,
) -> list[dict[str, Any]] | None:
    """The topics that match their ontology's data conditions (sorted by locator), or None
    when some ontology of `groups` is matched by none of them."""
    found: list[dict[str, Any]] = []
    matched_groups = set()
    for tag, conditions in groups.items():
        for topic in topics:
            if topic.fields["ontology_tag"] != tag:
                continue
            matched, bounds = _match_topic(topic, conditions, settings, want_range)
            if not matched:
                continue
            matched_groups.add(tag)
            entry: dict[str, Any] = {"locator": topic.locator}
            if want_range:
                assert bounds is not None
                entry["timestamp_range"] = list(bounds)
            found.append(entry)
    if matched_groups != set(groups):
        return None
    found.sort(key=lambda e: str(e["locator"]))
    return found
