"""QUERY with data conditions (the ontology section), under the specification and as mosaicod
answers it; malformed bodies; the grammar table.

One stored world, queried in memory and over Flight. Expected answers are worked out by
hand from the rows written below (`WORLD`), never from the server's own evaluation.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
import pytest

from fsm.enums import FlightAction
from fsm.outcome import ErrorKind
from fsm.spec import load_spec
from fsm.transport import Descriptor, Transport
from tests.harness import KIND_PARAMS, failed_with, ok, put_batches
from transport.flight.client import FlightTransport
from transport.flight.server import start_server
from transport.memory import MemoryTransport
from transport.server.model import ServerModel

IMU = pa.schema(
    [
        pa.field("timestamp_ns", pa.int64(), nullable=False),
        pa.field("acceleration", pa.struct([("x", pa.float64()), ("y", pa.float64())])),
        pa.field("frame_id", pa.string()),
        pa.field("ok", pa.bool_()),
        pa.field("covariance", pa.list_(pa.float64())),
    ]
)
GPS = pa.schema(
    [
        pa.field("timestamp_ns", pa.int64(), nullable=False),
        pa.field("status", pa.struct([("service", pa.uint16())])),
    ]
)


def imu_chunk(
    start: int, xs: list[float], ys: list[float | None], frames: list[str], oks: list[bool]
) -> pa.RecordBatch:
    n = len(xs)
    return pa.record_batch(
        [
            pa.array(range(start, start + n), pa.int64()),
            pa.array(
                [{"x": x, "y": y} for x, y in zip(xs, ys, strict=True)],
                IMU.field("acceleration").type,
            ),
            pa.array(frames),
            pa.array(oks),
            pa.array([[0.0]] * n, pa.list_(pa.float64())),
        ],
        schema=IMU,
    )


def gps_chunk(start: int, services: list[int]) -> pa.RecordBatch:
    return pa.record_batch(
        [
            pa.array(range(start, start + len(services)), pa.int64()),
            pa.array([{"service": s} for s in services], GPS.field("status").type),
        ],
        schema=GPS,
    )


# sequence -> topic path -> (tag, schema, chunks); every chunk is one DoPut batch.
WORLD: dict[str, dict[str, tuple[str, pa.Schema, list[pa.RecordBatch]]]] = {
    "q_one": {
        "imu": (
            "imu",
            IMU,
            [
                # ts 0..4
                imu_chunk(
                    0,
                    [0.0, 1.0, 2.0, 3.0, 4.0],
                    [1.0] * 5,
                    ["base", "base", "arm", "arm", "base"],
                    [True, True, False, True, True],
                ),
                # ts 10..14: x constant, y all null
                imu_chunk(10, [2.0] * 5, [None] * 5, ["base"] * 5, [True] * 5),
                # ts 20..24
                imu_chunk(20, [10.0, 11.0, 12.0, 13.0, 14.0], [5.0] * 5, ["arm"] * 5, [False] * 5),
            ],
        ),
        "gps": ("gps", GPS, [gps_chunk(0, [2, 2])]),
    },
    "q_two": {
        "imu": (
            "imu",
            IMU,
            [imu_chunk(100, [-5.0, -4.0, -3.0, -2.0, -1.0], [1.0] * 5, ["base"] * 5, [True] * 5)],
        ),
        "gps": ("gps", GPS, [gps_chunk(100, [1])]),
    },
    "q_empty": {"imu": ("imu", IMU, [])},
}


def build_world(t: Transport) -> None:
    for name, topics in WORLD.items():
        ok(t.action(FlightAction.SEQUENCE_CREATE, {"locator": name, "user_metadata": {}}))
        session = ok(t.action(FlightAction.SESSION_CREATE, {"locator": name}))["uuid"]
        for path, (tag, schema, chunks) in topics.items():
            locator = f"{name}/{path}"
            body = {
                "session_uuid": session,
                "locator": locator,
                "serialization_format": "ragged",
                "ontology_tag": tag,
                "user_metadata": {},
            }
            uuid = ok(t.action(FlightAction.TOPIC_CREATE, body))["uuid"]
            if chunks:
                ok(put_batches(t, Descriptor.for_topic(locator, uuid), schema, chunks))


@contextmanager
def served(kind: str, model: ServerModel) -> Iterator[Transport]:
    """A transport to `model` holding WORLD, in memory or over Flight."""
    if kind == "memory":
        t: Transport = MemoryTransport(model)
        build_world(t)
        yield t
        return
    with start_server(model) as running:
        t = FlightTransport(running.location)
        try:
            build_world(t)
            yield t
        finally:
            t.close()


@pytest.fixture(scope="module", params=KIND_PARAMS)
def spec_server(request: pytest.FixtureRequest) -> Iterator[Transport]:
    with served(str(request.param), ServerModel(profile="spec")) as t:
        yield t


@pytest.fixture(scope="module", params=KIND_PARAMS)
def mosaicod_server(request: pytest.FixtureRequest) -> Iterator[Transport]:
    with served(str(request.param), ServerModel(profile="mosaicod-0.3")) as t:
        yield t


Answer = dict[str, dict[str, Any]]


def answer(t: Transport, body: dict[str, Any]) -> Answer:
    """{sequence: {topic locator: timestamp_range or None}}; checks the response shape."""
    items = ok(t.action(FlightAction.QUERY, body))["items"]
    result: Answer = {}
    for item in items:
        assert set(item) == {"sequence", "topics"}, item
        topics = {}
        for topic in item["topics"]:
            assert set(topic) <= {"locator", "timestamp_range"}, topic
            topics[topic["locator"]] = topic.get("timestamp_range")
        assert item["sequence"] not in result
        result[item["sequence"]] = topics
    return result


def onto(field: str, condition: dict[str, Any], **options: Any) -> dict[str, Any]:
    return {"ontology": {field: condition, **options}}


R = {"include_timestamp_range": True}
X = "imu.acceleration.x"

# (id, body, answer under the specification)
SPEC_CASES: list[tuple[str, dict[str, Any], Answer]] = [
    ("eq", onto(X, {"$eq": 2.0}, **R), {"q_one": {"q_one/imu": [2, 14]}}),
    ("eq-int-on-float", onto(X, {"$eq": 2}, **R), {"q_one": {"q_one/imu": [2, 14]}}),
    (
        "neq",
        onto(X, {"$neq": 2.0}, **R),
        {"q_one": {"q_one/imu": [0, 24]}, "q_two": {"q_two/imu": [100, 104]}},
    ),
    ("lt", onto(X, {"$lt": 0}, **R), {"q_two": {"q_two/imu": [100, 104]}}),
    (
        "leq",
        onto(X, {"$leq": 0.0}, **R),
        {"q_one": {"q_one/imu": [0, 0]}, "q_two": {"q_two/imu": [100, 104]}},
    ),
    ("gt", onto(X, {"$gt": 11.0}, **R), {"q_one": {"q_one/imu": [22, 24]}}),
    ("gt-bound", onto(X, {"$gt": 13.0}, **R), {"q_one": {"q_one/imu": [24, 24]}}),
    (
        "lt-bound",
        onto(X, {"$lt": 1.0}, **R),
        {"q_one": {"q_one/imu": [0, 0]}, "q_two": {"q_two/imu": [100, 104]}},
    ),
    (
        "leq-bound",
        onto(X, {"$leq": 1.0}, **R),
        {"q_one": {"q_one/imu": [0, 1]}, "q_two": {"q_two/imu": [100, 104]}},
    ),
    ("geq-bound", onto(X, {"$geq": 13.0}, **R), {"q_one": {"q_one/imu": [23, 24]}}),
    ("geq", onto(X, {"$geq": 11}, **R), {"q_one": {"q_one/imu": [21, 24]}}),
    ("between", onto(X, {"$between": [3, 10.0]}, **R), {"q_one": {"q_one/imu": [3, 20]}}),
    ("between-gap", onto(X, {"$between": [2.5, 2.9]}, **R), {}),
    ("in", onto(X, {"$in": [1.0, 13.0]}, **R), {"q_one": {"q_one/imu": [1, 23]}}),
    ("match", onto("imu.frame_id", {"$match": "ar"}, **R), {"q_one": {"q_one/imu": [2, 24]}}),
    (
        "ex",
        onto("imu.acceleration.y", {"$ex": None}, **R),
        {"q_one": {"q_one/imu": [0, 24]}, "q_two": {"q_two/imu": [100, 104]}},
    ),
    ("nex", onto("imu.acceleration.y", {"$nex": None}, **R), {"q_one": {"q_one/imu": [10, 14]}}),
    ("eq-boolean", onto("imu.ok", {"$eq": False}, **R), {"q_one": {"q_one/imu": [2, 24]}}),
    ("eq-text", onto("imu.frame_id", {"$eq": "arm"}, **R), {"q_one": {"q_one/imu": [2, 24]}}),
    (
        "uint-column",
        onto("gps.status.service", {"$eq": 1}, **R),
        {"q_two": {"q_two/gps": [100, 100]}},
    ),
    (
        "envelope-field",
        onto("imu.timestamp_ns", {"$gt": 22}, **R),
        {"q_one": {"q_one/imu": [23, 24]}, "q_two": {"q_two/imu": [100, 104]}},
    ),
    ("without-range", onto(X, {"$gt": 11.0}), {"q_one": {"q_one/imu": None}}),
    (
        "same-row",
        {"ontology": {X: {"$geq": 3}, "imu.frame_id": {"$eq": "base"}, **R}},
        {"q_one": {"q_one/imu": [4, 4]}},
    ),
    (
        "same-row-boolean",
        {"ontology": {X: {"$gt": 3.5}, "imu.ok": {"$eq": False}}},
        {"q_one": {"q_one/imu": None}},
    ),
    ("same-row-empty", {"ontology": {X: {"$gt": 4.5}, "imu.frame_id": {"$eq": "base"}}}, {}),
    (
        "two-tags",
        {"ontology": {X: {"$gt": 11}, "gps.status.service": {"$eq": 2}}},
        {"q_one": {"q_one/gps": None, "q_one/imu": None}},
    ),
    ("two-tags-one-fails", {"ontology": {X: {"$lt": 0}, "gps.status.service": {"$eq": 2}}}, {}),
    (
        "with-sequence",
        {"sequence": {"locator": {"$eq": "q_two"}}, "ontology": {X: {"$leq": 0}}},
        {"q_two": {"q_two/imu": None}},
    ),
    (
        "with-topic-other-tag",
        {"topic": {"ontology_tag": {"$eq": "imu"}}, "ontology": {"gps.status.service": {"$eq": 2}}},
        {},
    ),
    (
        "with-topic",
        {"topic": {"locator": {"$eq": "/imu"}}, "ontology": {X: {"$gt": 1.5}}},
        {"q_one": {"q_one/imu": None}},
    ),
    ("unknown-path", onto("imu.acceleration.w", {"$gt": 0}), {}),
    ("non-leaf-path", onto("imu.acceleration", {"$gt": 0}), {}),
    ("list-column", onto("imu.covariance", {"$eq": 0.0}), {}),
    ("unknown-tag", onto("lidar.range", {"$gt": 0}), {}),
    ("type-mismatch", onto("imu.frame_id", {"$gt": 1}), {}),
    ("nothing-matches", onto(X, {"$gt": 1000}, **R), {}),
    (
        "empty-section",
        {"sequence": {"locator": {"$eq": "q_two"}}, "ontology": {}},
        {"q_two": {"q_two/gps": None, "q_two/imu": None}},
    ),
    (
        "null-section",
        {"sequence": {"locator": {"$eq": "q_two"}}, "ontology": None},
        {"q_two": {"q_two/gps": None, "q_two/imu": None}},
    ),
]


@pytest.mark.parametrize(
    ("body", "expected"), [c[1:] for c in SPEC_CASES], ids=[c[0] for c in SPEC_CASES]
)
def test_spec_semantics(spec_server: Transport, body: dict[str, Any], expected: Answer) -> None:
    """Row-level semantics: the answer the rows written in WORLD give."""
    assert answer(spec_server, body) == expected


# Where mosaicod-0.3 answers otherwise: (id, body, answer or the error kind).
MOSAICOD_CASES: list[tuple[str, dict[str, Any], Answer | ErrorKind]] = [
    ("eq-whole-chunk", onto(X, {"$eq": 2.0}, **R), {"q_one": {"q_one/imu": [10, 14]}}),
    (
        "eq-text-whole-chunk",
        onto("imu.frame_id", {"$eq": "arm"}, **R),
        {"q_one": {"q_one/imu": [20, 24]}},
    ),
    ("same-row-eq", {"ontology": {X: {"$geq": 3}, "imu.frame_id": {"$eq": "base"}}}, {}),
    ("range-last-chunk", onto(X, {"$gt": 1.5}, **R), {"q_one": {"q_one/imu": [20, 24]}}),
    ("range-gap-internal", onto(X, {"$between": [2.5, 2.9]}, **R), ErrorKind.INTERNAL),
    ("gap-without-range", onto(X, {"$between": [2.5, 2.9]}), {}),
    ("eq-all-null-internal", onto("imu.acceleration.y", {"$eq": 3.0}, **R), ErrorKind.INTERNAL),
    ("neq", onto(X, {"$neq": 2.0}), ErrorKind.INTERNAL),
    ("in", onto(X, {"$in": [1.0]}), ErrorKind.INTERNAL),
    ("match", onto("imu.frame_id", {"$match": "a"}), ErrorKind.INTERNAL),
    ("ex", onto("imu.acceleration.y", {"$ex": None}), ErrorKind.INTERNAL),
    ("nex", onto("imu.acceleration.y", {"$nex": None}), ErrorKind.INTERNAL),
    ("unsupported-on-unknown-tag", onto("lidar.range", {"$neq": 1}), ErrorKind.INTERNAL),
    ("empty-section", {"sequence": {"locator": {"$eq": "q_two"}}, "ontology": {}}, {}),
    ("empty-section-range", {"ontology": R}, {}),
    ("gt-same", onto(X, {"$gt": 11.0}, **R), {"q_one": {"q_one/imu": [22, 24]}}),
    (
        "two-tags-same",
        {"ontology": {X: {"$gt": 11}, "gps.status.service": {"$eq": 2}}},
        {"q_one": {"q_one/gps": None, "q_one/imu": None}},
    ),
]


@pytest.mark.parametrize(
    ("body", "expected"), [c[1:] for c in MOSAICOD_CASES], ids=[c[0] for c in MOSAICOD_CASES]
)
def test_mosaicod_semantics(
    mosaicod_server: Transport, body: dict[str, Any], expected: Answer | ErrorKind
) -> None:
    """What mosaicod 0.3 answers (specs/deviations.toml, MOSAICOD-QUERY-*)."""
    if isinstance(expected, ErrorKind):
        failed_with(mosaicod_server.action(FlightAction.QUERY, body), expected)
    else:
        assert answer(mosaicod_server, body) == expected


MALFORMED: list[tuple[str, Any, str]] = [
    ("unknown-section", {"layer": {}}, "layer"),
    ("section-not-object", {"ontology": [1]}, "ontology"),
    ("no-path", onto("imu", {"$gt": 1}), "imu"),
    ("empty-tag", onto(".x", {"$gt": 1}), ".x"),
    ("empty-path-part", onto("imu..x", {"$gt": 1}), "imu..x"),
    ("unknown-operator", onto(X, {"$near": 1}), "$near"),
    ("two-operators", onto(X, {"$gt": 1, "$lt": 2}), X),
    ("condition-not-object", onto(X, 3), X),
    ("null-operand", onto(X, {"$gt": None}), X),
    ("array-operand", onto(X, {"$eq": [1]}), X),
    ("object-operand", onto(X, {"$eq": {"a": 1}}), X),
    ("between-one-bound", onto(X, {"$between": [1]}), "$between"),
    ("between-empty-range", onto(X, {"$between": [3, 1]}), "empty range"),
    ("between-mixed", onto(X, {"$between": ["a", 1]}), "$between"),
    ("in-not-list", onto(X, {"$in": 1}), "$in"),
    ("in-empty", onto(X, {"$in": []}), "$in"),
    ("match-number", onto("imu.frame_id", {"$match": 1}), "$match"),
    ("ex-operand", onto(X, {"$ex": 1}), "$ex"),
    (
        "range-flag-type",
        {"ontology": {X: {"$gt": 1}, "include_timestamp_range": "yes"}},
        "include_timestamp_range",
    ),
    ("created-at-float", {"sequence": {"created_at_ns": {"$gt": 1.5}}}, "created_at_ns"),
    ("created-at-match", {"topic": {"created_at_ns": {"$match": "1"}}}, "created_at_ns"),
    ("text-field-number", {"topic": {"ontology_tag": {"$eq": 1}}}, "ontology_tag"),
]


@pytest.mark.parametrize(
    ("body", "named"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED]
)
@pytest.mark.parametrize("profile", ["spec", "mosaicod-0.3"])
def test_malformed_bodies_are_refused(body: Any, named: str, profile: str) -> None:
    """A malformed body is invalid_argument naming the part, under every profile, and
    changes nothing."""
    model = ServerModel(profile=profile)
    t = MemoryTransport(model)
    before = model.snapshot()
    outcome = t.action(FlightAction.QUERY, body)
    failed_with(outcome, ErrorKind.INVALID_ARGUMENT)
    assert named in outcome.detail, outcome.detail
    assert model.snapshot() == before


def test_a_query_needs_no_data_to_answer() -> None:
    """On an empty server every data query answers nothing (no error)."""
    t = MemoryTransport(ServerModel())
    assert answer(t, onto(X, {"$gt": 0}, **R)) == {}


def test_every_data_operator_has_a_case() -> None:
    """Each operator of the grammar's data kind is exercised by a spec case and, where
    mosaicod differs, by a mosaicod case."""
    grammar = load_spec().query
    used = {op for _, body, _ in SPEC_CASES for cond in _conditions(body) for op in cond}
    assert set(grammar.kinds["data"].operators) <= used


def _conditions(body: dict[str, Any]) -> list[dict[str, Any]]:
    section = body.get("ontology") or {}
    return [c for k, c in section.items() if k != "include_timestamp_range"]


# ---------------------------------------------------------------------------------------------
# One test per query deviation (registered in tests/test_profiles.py): the spec answer, then
# the answer of a server emulating that deviation alone.


@contextmanager
def pair(kind: str, did: str) -> Iterator[tuple[Transport, Transport]]:
    with (
        served(kind, ServerModel(profile="spec")) as spec_t,
        served(kind, ServerModel(deviations=[did])) as deviant,
    ):
        yield spec_t, deviant


@pytest.fixture(params=KIND_PARAMS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_query_eq_whole_chunk(kind: str) -> None:
    """MOSAICOD-QUERY-EQ-WHOLE-CHUNK: $eq finds a row anywhere (spec); mosaicod only in a
    batch whose values all equal the operand."""
    body = onto(X, {"$eq": 2.0}, **R)
    with pair(kind, "MOSAICOD-QUERY-EQ-WHOLE-CHUNK") as (spec_t, deviant):
        assert answer(spec_t, body) == {"q_one": {"q_one/imu": [2, 14]}}
        assert answer(deviant, body) == {"q_one": {"q_one/imu": [10, 14]}}
        body = onto("imu.frame_id", {"$eq": "base"})
        assert answer(spec_t, body) == {"q_one": {"q_one/imu": None}, "q_two": {"q_two/imu": None}}
        assert answer(deviant, body) == {"q_one": {"q_one/imu": None}, "q_two": {"q_two/imu": None}}
        body = {"ontology": {X: {"$eq": 0.0}}}
        assert answer(spec_t, body) == {"q_one": {"q_one/imu": None}}
        assert answer(deviant, body) == {}


def test_query_data_ops_internal(kind: str) -> None:
    """MOSAICOD-QUERY-DATA-OPS-INTERNAL: $neq, $in, $match, $ex, $nex work on data (spec);
    mosaicod fails with internal, even on a tag no topic has."""
    bodies = [
        onto(X, {"$neq": 2.0}),
        onto(X, {"$in": [2.0]}),
        onto("imu.frame_id", {"$match": "b"}),
        onto(X, {"$ex": None}),
        onto("lidar.range", {"$nex": None}),
    ]
    with pair(kind, "MOSAICOD-QUERY-DATA-OPS-INTERNAL") as (spec_t, deviant):
        for body in bodies:
            answer(spec_t, body)
            failed_with(deviant.action(FlightAction.QUERY, body), ErrorKind.INTERNAL)
        assert answer(deviant, onto(X, {"$gt": 13.5})) == {"q_one": {"q_one/imu": None}}


def test_query_empty_ontology(kind: str) -> None:
    """MOSAICOD-QUERY-EMPTY-ONTOLOGY: an ontology section without fields adds no condition
    (spec); mosaicod answers nothing."""
    body = {
        "sequence": {"locator": {"$eq": "q_one"}},
        "ontology": {"include_timestamp_range": True},
    }
    with pair(kind, "MOSAICOD-QUERY-EMPTY-ONTOLOGY") as (spec_t, deviant):
        assert answer(spec_t, body) == {"q_one": {"q_one/gps": None, "q_one/imu": None}}
        assert answer(deviant, body) == {}
        assert answer(deviant, {"sequence": {"locator": {"$eq": "q_one"}}}) == answer(spec_t, body)


def test_query_range_one_chunk(kind: str) -> None:
    """MOSAICOD-QUERY-RANGE-ONE-CHUNK: timestamp_range spans every matching row (spec);
    mosaicod gives the matching rows of the last chunk."""
    body = onto(X, {"$gt": 1.5}, **R)
    with pair(kind, "MOSAICOD-QUERY-RANGE-ONE-CHUNK") as (spec_t, deviant):
        assert answer(spec_t, body) == {"q_one": {"q_one/imu": [2, 24]}}
        assert answer(deviant, body) == {"q_one": {"q_one/imu": [20, 24]}}
        body = onto(X, {"$lt": 1.5}, **R)
        assert answer(spec_t, body) == {
            "q_one": {"q_one/imu": [0, 1]},
            "q_two": {"q_two/imu": [100, 104]},
        }
        assert answer(deviant, body) == answer(spec_t, body)


def test_query_range_empty_chunk_internal(kind: str) -> None:
    """MOSAICOD-QUERY-RANGE-EMPTY-CHUNK-INTERNAL: a chunk whose statistics pass without a
    matching row is skipped (spec); with include_timestamp_range mosaicod fails internal."""
    with pair(kind, "MOSAICOD-QUERY-RANGE-EMPTY-CHUNK-INTERNAL") as (spec_t, deviant):
        for body in (
            onto(X, {"$between": [2.5, 2.9]}, **R),
            {"ontology": {X: {"$gt": 3.5}, "imu.frame_id": {"$eq": "arm"}, **R}},
        ):
            ok(spec_t.action(FlightAction.QUERY, body))
            failed_with(deviant.action(FlightAction.QUERY, body), ErrorKind.INTERNAL)
            del body["ontology"]["include_timestamp_range"]
            assert answer(deviant, body) == answer(spec_t, body)


def test_query_catalogue_ops(kind: str) -> None:
    """MOSAICOD-QUERY-CATALOGUE-OPS: names compare with ordering operators, $in applies to
    creation times and metadata, $match to metadata (spec); mosaicod refuses them."""
    with pair(kind, "MOSAICOD-QUERY-CATALOGUE-OPS") as (spec_t, deviant):
        refused = [
            (
                {"sequence": {"locator": {"$between": ["q_one", "q_onf"]}}},
                ErrorKind.INVALID_ARGUMENT,
            ),
            ({"topic": {"ontology_tag": {"$gt": "ha"}}}, ErrorKind.INVALID_ARGUMENT),
            ({"topic": {"locator": {"$leq": "/a"}}}, ErrorKind.INVALID_ARGUMENT),
            ({"sequence": {"created_at_ns": {"$in": [1, 2]}}}, ErrorKind.INTERNAL),
            ({"sequence": {"user_metadata": {"k": {"$in": [1]}}}}, ErrorKind.INTERNAL),
            ({"topic": {"user_metadata": {"k": {"$match": "a"}}}}, ErrorKind.INTERNAL),
        ]
        assert answer(spec_t, refused[0][0]) == {"q_one": {"q_one/gps": None, "q_one/imu": None}}
        assert answer(spec_t, refused[1][0]) == {
            "q_one": {"q_one/imu": None},
            "q_two": {"q_two/imu": None},
            "q_empty": {"q_empty/imu": None},
        }
        for body, error in refused:
            ok(spec_t.action(FlightAction.QUERY, body))
            failed_with(deviant.action(FlightAction.QUERY, body), error)
        body = {"sequence": {"locator": {"$in": ["q_two"]}}, "topic": {"locator": {"$match": "gp"}}}
        assert answer(deviant, body) == answer(spec_t, body) == {"q_two": {"q_two/gps": None}}


def test_query_no_condition(kind: str) -> None:
    """MOSAICOD-QUERY-NO-CONDITION: a query without conditions answers everything (spec);
    mosaicod answers nothing."""
    everything = {
        "q_one": {"q_one/gps": None, "q_one/imu": None},
        "q_two": {"q_two/gps": None, "q_two/imu": None},
        "q_empty": {"q_empty/imu": None},
    }
    with pair(kind, "MOSAICOD-QUERY-NO-CONDITION") as (spec_t, deviant):
        for body in ({}, {"sequence": {}}, {"sequence": {}, "topic": {}}, {"ontology": None}):
            assert answer(spec_t, body) == everything
            assert answer(deviant, body) == {}
        body = {"topic": {"ontology_tag": {"$eq": "gps"}}}
        assert answer(deviant, body) == answer(spec_t, body)


DEVIATION_TESTS = {
    "MOSAICOD-QUERY-CATALOGUE-OPS": test_query_catalogue_ops,
    "MOSAICOD-QUERY-NO-CONDITION": test_query_no_condition,
    "MOSAICOD-QUERY-EQ-WHOLE-CHUNK": test_query_eq_whole_chunk,
    "MOSAICOD-QUERY-DATA-OPS-INTERNAL": test_query_data_ops_internal,
    "MOSAICOD-QUERY-EMPTY-ONTOLOGY": test_query_empty_ontology,
    "MOSAICOD-QUERY-RANGE-ONE-CHUNK": test_query_range_one_chunk,
    "MOSAICOD-QUERY-RANGE-EMPTY-CHUNK-INTERNAL": test_query_range_empty_chunk_internal,
}


def test_spec_prints_the_query_grammar() -> None:
    """`mosaico-fsm spec --section query` prints every operator, kind and section."""
    import io

    from fsm.cli import main

    out = io.StringIO()
    assert main(["spec", "--section", "query"], out) == 0
    text = out.getvalue()
    grammar = load_spec().query
    for name in [*grammar.operators, *grammar.kinds, *grammar.sections]:
        assert name in text, name
    assert "include_timestamp_range: boolean option" in text
    assert "$eq row" in text


ORDERING = ("$lt", "$leq", "$gt", "$geq", "$between")


def test_a_deviation_changes_only_its_cells() -> None:
    """The mosaicod-0.3 grammar differs from the specification's in exactly the cells of its
    query patches."""
    spec_grammar = ServerModel(profile="spec").query_grammar
    mosaicod = ServerModel(profile="mosaicod-0.3").query_grammar
    changed = {
        (kind, op): outcome
        for kind, op, outcome in mosaicod.cells()
        if spec_grammar.cell(kind, op) != outcome
    }
    assert changed == {
        ("data", "$eq"): "chunk_constant",
        ("data", "$neq"): "internal",
        ("data", "$in"): "internal",
        ("data", "$match"): "internal",
        ("data", "$ex"): "internal",
        ("data", "$nex"): "internal",
        **{(k, op): "invalid_argument" for k in ("text", "topic_locator") for op in ORDERING},
        ("timestamp", "$in"): "internal",
        ("metadata", "$in"): "internal",
        ("metadata", "$match"): "internal",
    }
