"""The real SDK (mosaicolabs 0.3.x) querying the reference server: every query class it has
(QuerySequence, QueryTopic, QueryOntologyCatalog with the `.Q` fields of its ontology
classes, Query, the QueryResponse conversions), each answer compared with what the test
wrote through the SDK. Under "spec" every operator answers; under "mosaicod-0.3" the SDK
meets the server's query deviations (specs/deviations.toml, MOSAICOD-QUERY-*)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness import require_sdk

require_sdk()

from mosaicolabs import (  # noqa: E402
    GPS,
    IMU,
    GPSStatus,
    Message,
    MosaicoClient,
    Point3d,
    Query,
    QueryOntologyCatalog,
    QuerySequence,
    QueryTopic,
    Time,
    Vector3d,
)

from transport.flight.server import RunningServer, start_server  # noqa: E402

pytestmark = pytest.mark.interop

BASE_NS = 1_700_000_000_000_000_000
N = 10
# sequence: (user metadata, sign of acceleration.x, gps service)
RUNS: dict[str, tuple[dict[str, Any], float, int]] = {
    "drive_a": ({"driver": "ann", "speed": 10, "env": {"temp": 21.5}}, 1.0, 2),
    "drive_b": ({"driver": "bob", "speed": 30, "env": {"temp": 25.0}}, -1.0, 1),
}


def stamp(sequence: str, i: int) -> int:
    return BASE_NS + (0 if sequence == "drive_a" else 1_000_000_000) + i * 1_000_000


def accel_x(sequence: str, i: int) -> float:
    return RUNS[sequence][1] * 0.5 * i


def frame(i: int) -> str:
    return "base_link" if i % 2 == 0 else "arm_link"


class World:
    """The reference server, the SDK client, and what was written."""

    def __init__(self, server: RunningServer, client: MosaicoClient, before_ns: int) -> None:
        self.server = server
        self.client = client
        self.before_ns = before_ns
        self.after_ns = time.time_ns()

    def found(self, *queries: Any) -> dict[str, dict[str, tuple[int, int] | None]]:
        """{sequence: {topic name: (start, end) or None}} of the SDK's answer."""
        response = self.client.query(*queries)
        assert response is not None
        return {
            item.sequence.name: {
                t.name: (t.timestamp_range.start, t.timestamp_range.end)
                if t.timestamp_range
                else None
                for t in item.topics
            }
            for item in response
        }

    def rows(self, sequence: str, keep: Any) -> tuple[int, int]:
        """The first and last timestamp of the written IMU rows `keep(i)` selects."""
        stamps = [stamp(sequence, i) for i in range(N) if keep(i)]
        return min(stamps), max(stamps)


@pytest.fixture(scope="module", params=["spec", "mosaicod-0.3"])
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    with (
        start_server(profile=str(request.param)) as server,
        MosaicoClient.connect(host=server.host, port=server.port) as client,
    ):
        before = time.time_ns()
        for name, (metadata, _, service) in RUNS.items():
            with client.sequence_create(name, metadata) as seq:
                imu = seq.topic_create("front/imu", {"model": "XS"}, IMU)
                gps = seq.topic_create("gps", {"model": "G1"}, GPS)
                assert imu is not None and gps is not None
                for i in range(N):
                    v = Vector3d(x=accel_x(name, i), y=0.0, z=9.81)
                    data = IMU(acceleration=v, angular_velocity=v)
                    imu.push(Message(timestamp_ns=stamp(name, i), frame_id=frame(i), data=data))
                status = GPSStatus(status=1, service=service, satellites=8)
                position = Point3d(x=45.0, y=9.0, z=100.0)
                gps.push(
                    Message(timestamp_ns=stamp(name, 0), data=GPS(position=position, status=status))
                )
        topics = server.model.snapshot()["topics"]
        # Each topic's records travelled as one DoPut batch: one chunk.
        assert {loc: t["chunks"] for loc, t in topics.items()} == {
            f"{s}/{p}": 1 for s in RUNS for p in ("front/imu", "gps")
        }
        yield World(server, client, before)


def emulated(world: World) -> bool:
    return world.server.model.profile == "mosaicod-0.3"


BOTH = {"/front/imu": None, "/gps": None}


def test_query_sequence(world: World) -> None:
    assert world.found(QuerySequence().with_name("drive_a")) == {"drive_a": BOTH}
    assert world.found(QuerySequence().with_name_match("drive_")) == {
        "drive_a": BOTH,
        "drive_b": BOTH,
    }
    assert world.found(QuerySequence().with_name("drive_c")) == {}
    for key, condition, expected in [
        ("driver", {"eq": "bob"}, ["drive_b"]),
        ("speed", {"gt": 15}, ["drive_b"]),
        ("speed", {"geq": 10}, ["drive_a", "drive_b"]),
        ("speed", {"lt": 30}, ["drive_a"]),
        ("speed", {"leq": 9}, []),
        ("speed", {"between": [5, 20]}, ["drive_a"]),
        ("env.temp", {"lt": 22.0}, ["drive_a"]),
        ("env.temp", {"between": [21.5, 25.0]}, ["drive_a", "drive_b"]),
    ]:
        found = world.found(QuerySequence().with_user_metadata(key, **condition))
        assert sorted(found) == expected, (key, condition)
    start, end = Time.from_nanoseconds(world.before_ns), Time.from_nanoseconds(world.after_ns)
    assert sorted(world.found(QuerySequence().with_created_timestamp(start, end))) == [
        "drive_a",
        "drive_b",
    ]
    assert world.found(QuerySequence().with_created_timestamp(time_end=start)) == {}


def test_query_topic(world: World) -> None:
    imu_only = {"drive_a": {"/front/imu": None}, "drive_b": {"/front/imu": None}}
    assert world.found(QueryTopic().with_name("/front/imu")) == imu_only
    assert world.found(QueryTopic().with_name_match("imu")) == imu_only
    assert world.found(QueryTopic().with_ontology_tag("gps")) == {
        "drive_a": {"/gps": None},
        "drive_b": {"/gps": None},
    }
    assert world.found(QueryTopic().with_user_metadata("model", eq="XS")) == imu_only
    start, end = Time.from_nanoseconds(world.before_ns), Time.from_nanoseconds(world.after_ns)
    assert world.found(QueryTopic().with_created_timestamp(start, end)) == {
        "drive_a": BOTH,
        "drive_b": BOTH,
    }
    assert world.found(
        QuerySequence().with_name("drive_b"), QueryTopic().with_ontology_tag("imu")
    ) == {"drive_b": {"/front/imu": None}}


def test_query_ontology_catalog_numeric(world: World) -> None:
    """The numeric operators of the .Q fields, with the time range of the matching rows."""
    x = IMU.Q.acceleration.x
    for expression, keep_a, keep_b in [
        (x.gt(3.0), lambda i: 0.5 * i > 3.0, None),
        (x.geq(3.0), lambda i: 0.5 * i >= 3.0, None),
        (x.lt(-4.0), None, lambda i: -0.5 * i < -4.0),
        (x.leq(0.0), lambda i: i == 0, lambda i: True),
        (x.between(1.0, 2.0), lambda i: 1.0 <= 0.5 * i <= 2.0, None),
        (IMU.Q.timestamp_ns.geq(stamp("drive_b", 8)), None, lambda i: i >= 8),
    ]:
        expected = {}
        if keep_a is not None:
            expected["drive_a"] = {"/front/imu": world.rows("drive_a", keep_a)}
        if keep_b is not None:
            expected["drive_b"] = {"/front/imu": world.rows("drive_b", keep_b)}
        found = world.found(QueryOntologyCatalog(expression, include_timestamp_range=True))
        assert found == expected, expression.to_dict()
    assert world.found(QueryOntologyCatalog(x.gt(100.0))) == {}


def test_query_ontology_catalog_eq(world: World) -> None:
    """$eq: a row with the value (spec); mosaicod only a chunk whose values all equal it."""
    found = world.found(
        QueryOntologyCatalog(IMU.Q.acceleration.x.eq(1.0), include_timestamp_range=True)
    )
    if emulated(world):
        assert found == {}  # MOSAICOD-QUERY-EQ-WHOLE-CHUNK: x differs within the one chunk
    else:
        assert found == {"drive_a": {"/front/imu": world.rows("drive_a", lambda i: i == 2)}}
    # A column constant in its chunk is found under both.
    assert world.found(QueryOntologyCatalog(GPS.Q.status.service.eq(2))) == {
        "drive_a": {"/gps": None}
    }
    assert world.found(QueryOntologyCatalog(IMU.Q.acceleration.z.eq(9.81))) == {
        "drive_a": {"/front/imu": None},
        "drive_b": {"/front/imu": None},
    }


def test_query_ontology_catalog_text_and_sets(world: World) -> None:
    """neq, in_ and match: row semantics (spec); mosaicod fails them with INTERNAL."""
    queries = [
        (IMU.Q.frame_id.match("arm"), lambda i: i % 2 == 1),
        (IMU.Q.frame_id.neq("base_link"), lambda i: i % 2 == 1),
        (IMU.Q.frame_id.in_("base_link"), lambda i: i % 2 == 0),
        (IMU.Q.acceleration.x.in_(0.5, 4.5), lambda i: i in (1, 9)),
    ]
    for expression, keep in queries:
        catalog = QueryOntologyCatalog(expression, include_timestamp_range=True)
        if emulated(world):
            with pytest.raises(Exception, match=r"(?i)internal"):
                world.client.query(catalog)  # MOSAICOD-QUERY-DATA-OPS-INTERNAL
            continue
        expected = {"drive_a": {"/front/imu": world.rows("drive_a", keep)}}
        if expression.to_dict() != {"imu.acceleration.x": {"$in": [0.5, 4.5]}}:
            expected["drive_b"] = {"/front/imu": world.rows("drive_b", keep)}
        assert world.found(catalog) == expected, expression.to_dict()


def test_query_combinations(world: World) -> None:
    """Several conditions on one tag hold on the same row; conditions on two tags need a
    matching topic for each; every builder ANDs with the others."""
    x = IMU.Q.acceleration.x
    same_row = QueryOntologyCatalog(x.gt(2.0), IMU.Q.timestamp_ns.lt(stamp("drive_a", 6)))
    assert world.found(same_row) == {"drive_a": {"/front/imu": None}}
    two_tags = QueryOntologyCatalog(x.gt(3.0), GPS.Q.status.service.geq(2))
    assert world.found(two_tags) == {"drive_a": BOTH}
    assert world.found(QueryOntologyCatalog(x.lt(0.0), GPS.Q.status.service.geq(2))) == {}
    combined = Query(
        QuerySequence().with_user_metadata("speed", gt=15),
        QueryOntologyCatalog(x.lt(-4.0), include_timestamp_range=True),
    )
    assert world.found(*combined._queries) == {
        "drive_b": {"/front/imu": world.rows("drive_b", lambda i: i > 8)}
    }
    response = world.client.query(query=combined)
    assert response is not None and [i.sequence.name for i in response] == ["drive_b"]
    assert world.found(QueryTopic().with_ontology_tag("gps"), QueryOntologyCatalog(x.gt(0.0))) == {}


def test_query_response_conversions(world: World) -> None:
    """A response becomes a QuerySequence or QueryTopic narrowing the next query."""
    first = world.client.query(QueryOntologyCatalog(IMU.Q.acceleration.x.gt(3.0)))
    assert first is not None and not first.is_empty()
    narrowed = world.found(first.to_query_sequence(), QueryTopic().with_ontology_tag("gps"))
    assert narrowed == {"drive_a": {"/gps": None}}
    topics = world.client.query(QueryTopic().with_ontology_tag("imu"))
    assert topics is not None
    assert world.found(
        topics.to_query_topic(), QueryOntologyCatalog(IMU.Q.acceleration.x.lt(-4.0))
    ) == {"drive_b": {"/front/imu": None}}
    empty = world.client.query(QueryOntologyCatalog(IMU.Q.acceleration.x.gt(100.0)))
    assert empty is not None and empty.is_empty()


def test_empty_catalog(world: World) -> None:
    """QueryOntologyCatalog() adds no condition (spec); mosaicod answers nothing."""
    found = world.found(QuerySequence().with_name("drive_a"), QueryOntologyCatalog())
    assert found == ({} if emulated(world) else {"drive_a": BOTH})
