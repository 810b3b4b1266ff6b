"""The engine's typed query API: the bodies it builds (the SDK's, for the same query), its
checks before any I/O, and the answers it reads."""

from __future__ import annotations

from typing import Any

import pytest

from fsm.engine import Client
from fsm.engine.query import QueryItem, QueryResult, QueryTopic, data, query_body, sequence, topic
from fsm.enums import FlightAction
from fsm.errors import ActionFailed, ArgumentError
from fsm.outcome import ErrorKind, Outcome
from tests.harness import require_sdk
from tests.test_query import build_world
from transport.memory import MemoryTransport
from transport.server.model import ServerModel


def test_bodies_of_each_section() -> None:
    body = query_body(
        [
            sequence.locator.eq("run1"),
            sequence.user_metadata("env.weather").eq("rain"),
            sequence.created_at_ns.between(1, 2),
            topic.ontology_tag.eq("imu"),
            topic.user_metadata("rate").gt(100),
            data("imu", "acceleration.x").between(-1.0, 2.5),
            data("gps", "status.service").eq(2),
        ],
        include_timestamp_range=True,
    )
    assert body == {
        "sequence": {
            "locator": {"$eq": "run1"},
            "user_metadata": {"env.weather": {"$eq": "rain"}},
            "created_at_ns": {"$between": [1, 2]},
        },
        "topic": {"ontology_tag": {"$eq": "imu"}, "user_metadata": {"rate": {"$gt": 100}}},
        "ontology": {
            "imu.acceleration.x": {"$between": [-1.0, 2.5]},
            "gps.status.service": {"$eq": 2},
            "include_timestamp_range": True,
        },
    }
    assert query_body([data("imu", "frame_id").in_("a", "b")]) == {
        "ontology": {"imu.frame_id": {"$in": ["a", "b"]}}
    }
    assert query_body([data("imu", "y").exists(), data("gps", "y").missing()]) == {
        "ontology": {"imu.y": {"$ex": None}, "gps.y": {"$nex": None}}
    }
    assert query_body([], data_section=True) == {"ontology": {}}
    assert query_body([]) == {}


def test_the_sdk_builds_the_same_bodies() -> None:
    """For every query class of the SDK 0.3.2, the engine builds the body the SDK sends."""
    require_sdk()
    from mosaicolabs import GPS, IMU, QueryOntologyCatalog, QuerySequence, QueryTopic, Time

    def sent(*builders: Any) -> dict[str, Any]:
        return {b.name(): b.to_dict() for b in builders}

    pairs: list[tuple[dict[str, Any], dict[str, Any]]] = [
        (
            sent(QueryOntologyCatalog(IMU.Q.acceleration.x.gt(0.1), include_timestamp_range=True)),
            query_body([data("imu", "acceleration.x").gt(0.1)], include_timestamp_range=True),
        ),
        (
            sent(
                QuerySequence().with_name("run1"),
                QueryOntologyCatalog(
                    IMU.Q.acceleration.x.between(-1.0, 2.5),
                    GPS.Q.status.service.eq(2),
                    include_timestamp_range=True,
                ),
            ),
            query_body(
                [
                    sequence.locator.eq("run1"),
                    data("imu", "acceleration.x").between(-1.0, 2.5),
                    data("gps", "status.service").eq(2),
                ],
                include_timestamp_range=True,
            ),
        ),
        (
            sent(
                QueryTopic()
                .with_name("/imu")
                .with_ontology_tag("imu")
                .with_user_metadata("sensor.model", eq="XS")
            ),
            query_body(
                [
                    topic.locator.eq("/imu"),
                    topic.ontology_tag.eq("imu"),
                    topic.user_metadata("sensor.model").eq("XS"),
                ]
            ),
        ),
        (
            sent(
                QuerySequence().with_created_timestamp(Time.from_float(1.0), Time.from_float(2.5))
            ),
            query_body([sequence.created_at_ns.between(1_000_000_000, 2_500_000_000)]),
        ),
        (
            sent(QueryTopic().with_name_match("front")),
            query_body([topic.locator.match("front")]),
        ),
        (
            sent(QueryOntologyCatalog(IMU.Q.frame_id.match("base"), IMU.Q.sequence_id.in_([1, 2]))),
            query_body(
                [data("imu", "frame_id").match("base"), data("imu", "sequence_id").in_(1, 2)]
            ),
        ),
        (sent(QueryOntologyCatalog()), query_body([], data_section=True)),
    ]
    for sdk_body, ours in pairs:
        assert ours == sdk_body


@pytest.mark.parametrize(
    ("conditions", "named"),
    [
        ([data("imu", "x").gt(1), data("imu", "x").lt(2)], "one condition per field"),
        ([data("imu", "x").between(3, 1)], "empty range"),
        ([data("imu", "x").in_()], "$in"),
        ([sequence.created_at_ns.gt(1.5)], "created_at_ns"),
        ([sequence.colour.eq("red")], "sequence.colour"),
        ([topic.created_at_ns.match("1")], "$match"),
        ([data("imu", "x").eq([1])], "imu.x"),  # type: ignore[arg-type]
        (["imu.x > 1"], "conditions"),
    ],
)
def test_malformed_queries_fail_before_any_request(conditions: list[Any], named: str) -> None:
    calls: list[str] = []

    class Counting(MemoryTransport):
        def action(self, action: FlightAction, body: Any) -> Outcome:
            calls.append(action.name)
            return super().action(action, body)

    client = Client(Counting(ServerModel()))
    with pytest.raises(ArgumentError, match=named.replace("$", r"\$")):
        client.query(*conditions)
    assert calls == []


def test_query_reads_the_answer() -> None:
    t = MemoryTransport(ServerModel())
    build_world(t)
    client = Client(t)
    result = client.query(data("imu", "acceleration.x").gt(11.0), include_timestamp_range=True)
    assert result == QueryResult((QueryItem("q_one", (QueryTopic("q_one/imu", (22, 24)),)),))
    assert result.sequences == ["q_one"] and len(result) == 1
    result = client.query(sequence.locator.eq("q_two"), topic.ontology_tag.eq("gps"))
    assert [(i.sequence, [t.locator for t in i.topics]) for i in result] == [
        ("q_two", ["q_two/gps"])
    ]
    assert client.query(data("imu", "acceleration.x").gt(1000)).items == ()


def test_a_refused_query_raises_action_failed() -> None:
    t = MemoryTransport(ServerModel(profile="mosaicod-0.3"))
    build_world(t)
    with pytest.raises(ActionFailed) as caught:
        Client(t).query(data("imu", "acceleration.x").neq(1.0))
    assert caught.value.kind is ErrorKind.INTERNAL and caught.value.operation == "QUERY"


@pytest.mark.parametrize(
    "answer",
    [
        None,
        {"items": {}},
        {"items": [{"sequence": "s"}]},
        {"items": [{"sequence": "s", "topics": [{"name": "x"}]}]},
        {"items": [{"sequence": "s", "topics": [{"locator": "s/t", "timestamp_range": [1]}]}]},
    ],
)
def test_a_malformed_answer_is_named(answer: Any) -> None:
    with pytest.raises(ActionFailed, match="malformed answer"):
        QueryResult.from_response(answer)
