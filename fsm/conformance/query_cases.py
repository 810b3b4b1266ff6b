"""Requirement cases of the QUERY action on stored data (the ontology section of
specs/query.toml), the topic section, and malformed bodies.

Every case writes its own sequence under a topic tag of its own, so a data condition reads
only what the case wrote, whatever else the target holds. Expected answers follow from the
rows written here (`ROWS`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pyarrow as pa

from fsm.conformance.cases import case
from fsm.conformance.context import Context, Fail
from fsm.conformance.requests import topic_body
from fsm.enums import FlightAction
from fsm.outcome import ErrorKind

__all__ = ["ROWS", "data_topic"]

A = FlightAction
E = ErrorKind

SCHEMA = pa.schema(
    [
        pa.field("timestamp_ns", pa.int64(), nullable=False),
        pa.field("x", pa.float64()),
        pa.field("y", pa.float64()),
        pa.field("s", pa.string()),
        pa.field("z", pa.float64()),
    ]
)
# Two DoPut batches (chunks): timestamp_ns, x, y, s; z is null everywhere.
ROWS: tuple[tuple[tuple[int, float, float | None, str], ...], ...] = (
    ((1, 1.0, 1.0, "alpha"), (2, 2.0, 1.0, "beta"), (3, 3.0, 1.0, "gamma"), (4, 4.0, 1.0, "delta")),
    (
        (11, 20.0, None, "omega"),
        (12, 21.0, None, "omega"),
        (13, 22.0, None, "omega"),
        (14, 23.0, None, "omega"),
    ),
)
SECOND = pa.schema(
    [pa.field("timestamp_ns", pa.int64(), nullable=False), pa.field("service", pa.int32())]
)


def _chunk(rows: tuple[tuple[int, float, float | None, str], ...]) -> pa.RecordBatch:
    ts, xs, ys, ss = zip(*rows, strict=True)
    return pa.record_batch(
        [
            pa.array(ts, pa.int64()),
            pa.array(xs, pa.float64()),
            pa.array(ys, pa.float64()),
            pa.array(ss, pa.string()),
            pa.nulls(len(rows), pa.float64()),
        ],
        schema=SCHEMA,
    )


def data_topic(ctx: Context, tag_name: str) -> tuple[str, str, str]:
    """A sequence holding one topic with ROWS under a tag of its own: (sequence, topic
    locator, tag). The session stays open; the topic is locked by its clean DoPut."""
    seq = ctx.sequence(tag_name)
    ses = ctx.session(seq)
    tag = ctx.name("tag")
    loc = f"{seq}/data"
    value = ctx.ok(ctx.act(A.TOPIC_CREATE, topic_body(ses, loc, ontology_tag=tag)), "topic_create")
    batches = [_chunk(chunk) for chunk in ROWS]
    ctx.ok(ctx.put(loc, str(value["uuid"]), batches, SCHEMA), "a DoPut of two batches")
    return seq, loc, tag


def second_topic(ctx: Context, seq: str, tag: str) -> str:
    """A second topic in a new session of `seq`: service = [7, 7] at timestamps 1, 2."""
    ses = ctx.session(seq)
    loc = f"{seq}/second"
    value = ctx.ok(ctx.act(A.TOPIC_CREATE, topic_body(ses, loc, ontology_tag=tag)), "topic_create")
    batch = pa.record_batch(
        [pa.array([1, 2], pa.int64()), pa.array([7, 7], pa.int32())], schema=SECOND
    )
    ctx.ok(ctx.put(loc, str(value["uuid"]), [batch], SECOND), "a DoPut")
    return loc


Answer = dict[str, dict[str, Any]]


def answer(ctx: Context, body: Mapping[str, Any], what: str, check: str | None = None) -> Answer:
    """{sequence: {topic locator: timestamp_range or None}} of a QUERY answer."""
    value = ctx.ok(ctx.act(A.QUERY, body), what, check)
    items = value.get("items") if isinstance(value, dict) else None
    if not isinstance(items, list):
        raise Fail(f"{what} answered {value!r}, not {{'items': [...]}}")
    result: Answer = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("topics"), list):
            raise Fail(f"{what}: malformed item {item!r}")
        result[str(item.get("sequence"))] = {
            str(t.get("locator")): t.get("timestamp_range") for t in item["topics"]
        }
    return result


def expect(
    ctx: Context, body: Mapping[str, Any], expected: Answer, what: str, check: str | None = None
) -> None:
    got = answer(ctx, body, what, check)
    ctx.check(got == expected, f"{what}: answered {got}, expected {expected}", check)


# -----------------------------------------------------------------------------------------------
# One case per operator on data: a query some rows meet (with their exact time range when
# asked), and one no row meets.

# operator: (field, operand some rows meet, their range or None (not asked), operand no row meets)
OPERATORS: dict[str, tuple[str, Any, list[int] | None, Any]] = {
    "$eq": ("x", 2.0, [2, 2], 2.5),
    "$neq": ("x", 1.0, None, None),
    "$lt": ("x", 2.0, [1, 1], 1.0),
    "$leq": ("x", 2.0, [1, 2], 0.5),
    "$gt": ("x", 21.5, [13, 14], 23.0),
    "$geq": ("x", 21.0, [12, 14], 23.5),
    "$between": ("x", [2.0, 3.0], [2, 3], [5.0, 19.0]),
    "$in": ("x", [3.0, 99.0], None, [2.5]),
    "$match": ("s", "elt", None, "zz"),
    "$ex": ("y", None, [1, 4], None),
    "$nex": ("y", None, None, None),
}
# For $neq, $ex and $nex the query no row meets reads another column.
NONE_FIELD = {"$neq": ("y", 1.0), "$ex": ("z", None), "$nex": ("x", None)}
UNSUPPORTED_BY_MOSAICOD = ("$neq", "$in", "$match", "$ex", "$nex")


def _operator_case(operator: str) -> Callable[[Context], None]:
    field, found, span, none = OPERATORS[operator]

    def run(ctx: Context) -> None:
        seq, loc, tag = data_topic(ctx, "qop")
        scope = {"sequence": ctx.named(seq)}
        condition = {f"{tag}.{field}": {operator: found}}
        asked = span is not None and ctx.ranges
        body = {**scope, "ontology": ctx.ranged(condition) if asked else condition}
        expected = {seq: {loc: span if asked else None}}
        expect(ctx, body, expected, f"{operator} some rows meet", "operator-answer")
        none_field, none_value = NONE_FIELD.get(operator, (field, none))
        body = {**scope, "ontology": {f"{tag}.{none_field}": {operator: none_value}}}
        expect(ctx, body, {}, f"{operator} no row meets", "operator-answer")

    return run


for _op in OPERATORS:
    _deviations = (
        {"MOSAICOD-QUERY-DATA-OPS-INTERNAL": "operator-answer"}
        if _op in UNSUPPORTED_BY_MOSAICOD
        else {"MOSAICOD-QUERY-EQ-WHOLE-CHUNK": "operator-answer"}
        if _op == "$eq"
        else {}
    )
    case(
        f"QRY-DATA-{_op[1:].upper()}",
        f"{_op} on a data field finds exactly the topics with a row meeting it, with the "
        "first and last timestamp_ns of those rows when asked.",
        "specs/query.toml: kinds.data",
        _deviations,
    )(_operator_case(_op))


@case(
    "QRY-DATA-SAME-ROW",
    "The conditions of one tag hold on the same row; a chunk without such a row adds nothing.",
    "specs/query.toml: sections.ontology",
    {
        "MOSAICOD-QUERY-EQ-WHOLE-CHUNK": "same-row-found",
        "MOSAICOD-QUERY-RANGE-EMPTY-CHUNK-INTERNAL": "different-rows",
    },
)
def _same_row(ctx: Context) -> None:
    seq, loc, tag = data_topic(ctx, "qrow")
    scope = {"sequence": ctx.named(seq)}
    apart = ctx.ranged({f"{tag}.x": {"$gt": 3.5}, f"{tag}.s": {"$eq": "alpha"}})
    expect(
        ctx, {**scope, "ontology": apart}, {}, "conditions met on different rows", "different-rows"
    )
    together = ctx.ranged({f"{tag}.x": {"$gt": 3.5}, f"{tag}.s": {"$eq": "delta"}})
    expect(
        ctx,
        {**scope, "ontology": together},
        {seq: {loc: [4, 4] if ctx.ranges else None}},
        "conditions met on one row",
        "same-row-found",
    )


@case(
    "QRY-DATA-RANGE",
    "timestamp_range spans every matching row of the topic, across chunks.",
    "specs/query.toml: sections.ontology",
    {"MOSAICOD-QUERY-RANGE-ONE-CHUNK": "range-all-rows"},
)
def _range(ctx: Context) -> None:
    ctx.needs_ranges()
    seq, loc, tag = data_topic(ctx, "qrange")
    scope = {"sequence": ctx.named(seq)}
    body = {**scope, "ontology": {f"{tag}.x": {"$gt": 3.5}, "include_timestamp_range": True}}
    expect(ctx, body, {seq: {loc: [4, 14]}}, "rows in two chunks", "range-all-rows")
    body = {**scope, "ontology": {f"{tag}.x": {"$gt": 3.5}}}
    expect(ctx, body, {seq: {loc: None}}, "without include_timestamp_range (no range)")


@case(
    "QRY-DATA-GAP",
    "A chunk whose values straddle a $between without a row inside it adds nothing, with or "
    "without include_timestamp_range.",
    "specs/query.toml: sections.ontology",
    {"MOSAICOD-QUERY-RANGE-EMPTY-CHUNK-INTERNAL": "chunk-without-row"},
)
def _gap(ctx: Context) -> None:
    seq, _, tag = data_topic(ctx, "qgap")
    scope = {"sequence": ctx.named(seq)}
    gap = {f"{tag}.x": {"$between": [2.2, 2.8]}}
    expect(ctx, {**scope, "ontology": gap}, {}, "a $between with no row inside")
    if ctx.ranges:
        body = {**scope, "ontology": ctx.ranged(gap)}
        expect(ctx, body, {}, "the same with include_timestamp_range", "chunk-without-row")


@case(
    "QRY-DATA-TAGS",
    "Conditions on two tags: a sequence matches when it holds a matching topic for each, and "
    "both topics are listed.",
    "specs/query.toml: sections.ontology",
)
def _tags(ctx: Context) -> None:
    seq, loc, tag = data_topic(ctx, "qtags")
    other_tag = ctx.name("tag")
    other = second_topic(ctx, seq, other_tag)
    scope = {"sequence": ctx.named(seq)}
    body = {**scope, "ontology": {f"{tag}.x": {"$gt": 21.5}, f"{other_tag}.service": {"$geq": 7}}}
    expect(ctx, body, {seq: {loc: None, other: None}}, "both tags met")
    body = {**scope, "ontology": {f"{tag}.x": {"$gt": 21.5}, f"{other_tag}.service": {"$gt": 7}}}
    expect(ctx, body, {}, "one tag not met")


@case(
    "QRY-DATA-SECTIONS",
    "Data conditions AND with the sequence and topic sections, on the same topics.",
    "specs/query.toml: sections",
)
def _sections(ctx: Context) -> None:
    seq, loc, tag = data_topic(ctx, "qsec")
    other_tag = ctx.name("tag")
    second_topic(ctx, seq, other_tag)
    body: dict[str, Any] = {
        "sequence": ctx.named(seq),
        "topic": {"ontology_tag": {"$eq": other_tag}},
        "ontology": {f"{tag}.x": {"$gt": 0.5}},
    }
    expect(ctx, body, {}, "a topic condition naming another topic")
    body["topic"] = {"ontology_tag": {"$eq": tag}}
    expect(ctx, body, {seq: {loc: None}}, "sequence, topic and data conditions on one topic")
    body["sequence"] = ctx.named(ctx.name("ghost"))
    expect(ctx, body, {}, "a sequence condition no sequence meets")


@case(
    "QRY-DATA-EMPTY-SECTION",
    "An ontology section without fields adds no condition.",
    "specs/query.toml: sections.ontology",
    {"MOSAICOD-QUERY-EMPTY-ONTOLOGY": "empty-section"},
)
def _empty_section(ctx: Context) -> None:
    seq, loc, _ = data_topic(ctx, "qempty")
    body = {"sequence": ctx.named(seq), "ontology": ctx.ranged({})}
    expect(ctx, body, {seq: {loc: None}}, "an empty ontology section", "empty-section")


@case(
    "QRY-DATA-NOTHING",
    "A data condition on a path or tag no topic has, or of another type than the column, "
    "answers nothing (no error).",
    "specs/query.toml: kinds.data",
)
def _nothing(ctx: Context) -> None:
    seq, _, tag = data_topic(ctx, "qnone")
    scope = {"sequence": ctx.named(seq)}
    for field, condition in (
        (f"{tag}.w", {"$gt": 0.0}),
        (f"{tag}x.x", {"$gt": 0.0}),
        (f"{tag}.s", {"$gt": 1.0}),
    ):
        expect(ctx, {**scope, "ontology": {field: condition}}, {}, f"{field} {condition}")


@case(
    "QRY-TOPIC",
    "The topic section finds topics by tag and by path ('/path'), listing only those.",
    "specs/query.toml: sections.topic",
)
def _topic(ctx: Context) -> None:
    seq, loc, tag = data_topic(ctx, "qtop")
    other = second_topic(ctx, seq, ctx.name("tag"))
    scope = ctx.named(seq)
    body = {"sequence": scope, "topic": {"ontology_tag": {"$eq": tag}}}
    expect(ctx, body, {seq: {loc: None}}, "by ontology_tag")
    body = {"sequence": scope, "topic": ctx.named("/second", "topic")}
    expect(ctx, body, {seq: {other: None}}, "by path")


@case(
    "QRY-CATALOGUE-OPS",
    "Names compare as text with ordering operators; $in applies to creation times and user "
    "metadata, $match to user metadata.",
    "specs/query.toml: kinds.text, kinds.timestamp, kinds.metadata",
    {"MOSAICOD-QUERY-CATALOGUE-OPS": "catalogue-operator"},
)
def _catalogue_ops(ctx: Context) -> None:
    seq = ctx.sequence("qcat", {"tag": ctx.prefix, "n": 3})
    created = ctx.sequence_info(seq).created_at_ns
    for what, section in (
        (
            f"$between on sequence.{ctx.name_field()}",
            {ctx.name_field(): {"$between": [seq, seq]}},
        ),
        ("$in on sequence.created_at_ns", {**ctx.named(seq), "created_at_ns": {"$in": [created]}}),
        (
            "$in on user metadata",
            {"user_metadata": {"tag": {"$eq": ctx.prefix}, "n": {"$in": [3, 4]}}},
        ),
        (
            "$match on user metadata",
            {"user_metadata": {"tag": {"$match": ctx.prefix}, "n": {"$eq": 3}}},
        ),
    ):
        expect(ctx, {"sequence": section}, {seq: {}}, what, "catalogue-operator")


@case(
    "QRY-EVERYTHING",
    "A query without conditions answers every sequence with its topics.",
    "specs/query.toml: sections",
    {"MOSAICOD-QUERY-NO-CONDITION": "no-condition"},
)
def _everything(ctx: Context) -> None:
    seq, loc, _ = data_topic(ctx, "qall")
    bodies: tuple[dict[str, Any], ...] = ({}, {"sequence": {}})
    for body in bodies:
        found = answer(ctx, body, f"the query {body}", "no-condition")
        ctx.check(
            found.get(seq) == {loc: None},
            f"the query {body} answered {found.get(seq)!r} for {seq}, expected {{{loc!r}: None}}",
            "no-condition",
        )


MALFORMED: tuple[tuple[str, Any], ...] = (
    ("an unknown operator", {"$near": 1.0}),
    ("two operators in one condition", {"$gt": 1.0, "$lt": 2.0}),
    ("a null operand", {"$gt": None}),
    ("an array operand", {"$gt": [1.0]}),
    ("a $between with one bound", {"$between": [1.0]}),
    ("an empty $between range", {"$between": [3.0, 1.0]}),
)


@case(
    "QRY-MALFORMED",
    "A malformed condition is refused (invalid_argument), never answered.",
    "specs/query.toml: operators",
)
def _malformed(ctx: Context) -> None:
    tag = ctx.name("tag")
    for what, condition in MALFORMED:
        ctx.refused(
            ctx.act(A.QUERY, {"ontology": {f"{tag}.x": condition}}), E.INVALID_ARGUMENT, what
        )
    ctx.refused(ctx.raw("query", b"[1, 2]"), E.INVALID_ARGUMENT, "a body that is not an object")
