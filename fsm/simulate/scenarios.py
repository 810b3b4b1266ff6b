"""The scenarios: representative client runs, written with the engine's own API.

A scenario is a short body of user code (open a session, create topics, push batches and rows,
raise in a block) run by an `Actor`, which notes what the user was promised: the records
each push accepted, and the topics it asked for. A family of scenarios is one body under
several error policies; each member has its own name, such as `writer-report-3-topics`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import NoReturn

import attrs
import pyarrow as pa

from fsm.engine import Client, SessionWriter, TopicWriter
from fsm.enums import SessionLevelErrorPolicy, TopicLevelErrorPolicy
from fsm.errors import ArgumentError

__all__ = [
    "FAMILIES",
    "SCENARIOS",
    "SCHEMA",
    "SEQUENCE",
    "Actor",
    "Boom",
    "Family",
    "Scenario",
    "UnknownScenario",
    "select",
]

SEQUENCE = "run"
SCHEMA = pa.schema(
    [pa.field("timestamp_ns", pa.int64(), nullable=False), pa.field("x", pa.float64())]
)
Row = tuple[int, float]


class Boom(Exception):
    """The user's own exception, raised in a session or topic block. Deliberately outside
    the library's error hierarchy: it stands for an exception the library did not raise."""


class UnknownScenario(ArgumentError, KeyError):
    """A scenario or family name that is not in the catalogue (also a `KeyError`, whose
    argument is the name)."""


class Actor:
    """Runs a scenario's body against a client and notes what the user was promised."""

    def __init__(self, client: Client, scenario: Scenario, seed: int) -> None:
        self.client = client
        self.scenario = scenario
        self.session: SessionWriter | None = None
        self.attempted: list[str] = []
        self.topics: dict[str, TopicWriter] = {}
        self.pushed: dict[str, list[Row]] = {}
        self._rng = random.Random(seed)
        self._next_ts = 1

    def open_session(self) -> SessionWriter:
        """The session writer of this scenario's role and policy (enter it with `with`)."""
        s = self.scenario
        if s.role == "writer":
            self.session = self.client.sequence_create(
                SEQUENCE, {"scenario": s.name}, on_error=s.policy
            )
        else:
            self.session = self.client.sequence_update(SEQUENCE, on_error=s.policy)
        return self.session

    def topic(
        self,
        session: SessionWriter,
        name: str,
        policy: TopicLevelErrorPolicy = TopicLevelErrorPolicy.Raise,
    ) -> TopicWriter:
        self.attempted.append(name)
        topic = session.topic_create(name, schema=SCHEMA, ontology_tag="imu", on_error=policy)
        self.topics[name] = topic
        self.pushed[name] = []
        return topic

    def _rows(self, n: int) -> list[Row]:
        rows = [(self._next_ts + i, round(self._rng.random(), 6)) for i in range(n)]
        self._next_ts += n
        return rows

    def push(self, topic: TopicWriter, n: int) -> None:
        """Push `n` records as one Arrow batch."""
        rows = self._rows(n)
        batch = pa.RecordBatch.from_arrays(
            [
                pa.array([r[0] for r in rows], pa.int64()),
                pa.array([r[1] for r in rows], pa.float64()),
            ],
            schema=SCHEMA,
        )
        topic.push(batch)
        self.pushed[topic.name].extend(rows)

    def push_rows(self, topic: TopicWriter, n: int) -> None:
        """Push `n` records one by one (buffered by the writer until it sends them)."""
        for ts, x in self._rows(n):
            topic.push_row({"timestamp_ns": ts, "x": x})
            self.pushed[topic.name].append((ts, x))

    def fail(self, where: str) -> NoReturn:
        raise Boom(f"failure in {where}")


Body = Callable[[Actor], None]


@attrs.frozen
class Scenario:
    """One member of a family: a body under one role and error policy (and topic policy)."""

    name: str
    family: str
    role: str
    policy: SessionLevelErrorPolicy
    topic_policy: TopicLevelErrorPolicy
    body: Body
    column: str  # the member's label in its family's outcome matrix


@attrs.frozen
class Family:
    name: str
    doc: str
    members: tuple[Scenario, ...]


# -----------------------------------------------------------------------------------------------
# Bodies


def _one_topic(a: Actor) -> None:
    with a.open_session() as s:
        t = a.topic(s, "imu")
        a.push(t, 3)
        a.push(t, 2)


def _three_topics(a: Actor) -> None:
    with a.open_session() as s:
        for name in ("a", "b", "c"):
            t = a.topic(s, name)
            a.push(t, 2)
            a.push(t, 1)


def _rows_and_batches(a: Actor) -> None:
    with a.open_session() as s:
        rows = a.topic(s, "rows")
        a.push_rows(rows, 3)
        batches = a.topic(s, "batches")
        a.push(batches, 4)
        a.push_rows(rows, 2)


def _no_topics(a: Actor) -> None:
    with a.open_session():
        pass


def _session_error(a: Actor) -> None:
    with a.open_session() as s:
        batches = a.topic(s, "batches")
        a.push(batches, 3)
        rows = a.topic(s, "rows")
        a.push_rows(rows, 3)
        a.fail("the session block")


def _topic_error(a: Actor) -> None:
    with a.open_session() as s:
        faulty = a.topic(s, "faulty", a.scenario.topic_policy)
        a.push(faulty, 3)
        with faulty:
            a.fail("the topic block")
        other = a.topic(s, "other")
        a.push(other, 2)
        if faulty.is_active:  # Ignore keeps the stream open
            a.push(faulty, 1)


def _updater_two_topics(a: Actor) -> None:
    with a.open_session() as s:
        for name in ("u1", "u2"):
            t = a.topic(s, name)
            a.push(t, 3)


def _updater_session_error(a: Actor) -> None:
    with a.open_session() as s:
        t = a.topic(s, "u1")
        a.push(t, 2)
        a.push_rows(t, 2)
        a.fail("the session block")


# -----------------------------------------------------------------------------------------------
# The catalogue

_POLICIES = tuple(SessionLevelErrorPolicy)
_TOPIC_POLICIES = tuple(TopicLevelErrorPolicy)


def _family(
    template: str,
    doc: str,
    role: str,
    body: Body,
    topic_policies: tuple[TopicLevelErrorPolicy, ...] = (TopicLevelErrorPolicy.Raise,),
) -> Family:
    """A family over every session policy (and each of `topic_policies`); `template` names
    a member from {policy} and {topic_policy}, lower case."""
    members = tuple(
        Scenario(
            template.format(policy=p.name.lower(), topic_policy=tp.name.lower()),
            template.format(policy="{policy}", topic_policy="{topic_policy}")
            .replace("-{policy}", "")
            .replace("-{topic_policy}", ""),
            role,
            p,
            tp,
            body,
            p.name if len(topic_policies) == 1 else f"{p.name}/{tp.name}",
        )
        for tp in topic_policies
        for p in _POLICIES
    )
    return Family(members[0].family, doc, members)


FAMILIES: tuple[Family, ...] = (
    _family(
        "writer-{policy}-1-topic",
        "a new sequence with one topic and two pushed batches",
        "writer",
        _one_topic,
    ),
    _family(
        "writer-{policy}-3-topics",
        "a new sequence with three topics, two batches each",
        "writer",
        _three_topics,
    ),
    _family(
        "writer-{policy}-rows",
        "records pushed one by one (buffered) beside a batch topic",
        "writer",
        _rows_and_batches,
    ),
    _family(
        "writer-{policy}-no-topics",
        "a session left without any topic (the server refuses to finalize it)",
        "writer",
        _no_topics,
    ),
    _family(
        "writer-{policy}-session-error",
        "an exception in the session block after batches and buffered rows",
        "writer",
        _session_error,
    ),
    _family(
        "writer-{policy}-topic-{topic_policy}-error",
        "an exception in a topic block under each topic error policy, then more pushes",
        "writer",
        _topic_error,
        _TOPIC_POLICIES,
    ),
    _family(
        "updater-{policy}-2-topics",
        "a new session with two topics on an existing sequence",
        "updater",
        _updater_two_topics,
    ),
    _family(
        "updater-{policy}-session-error",
        "an exception in an updater's session block after batches and buffered rows",
        "updater",
        _updater_session_error,
    ),
)

SCENARIOS: dict[str, Scenario] = {s.name: s for f in FAMILIES for s in f.members}


def select(names: list[str] | None) -> list[Scenario]:
    """The scenarios named (a member, a family, or `all`), in catalogue order;
    UnknownScenario (a KeyError) names an unknown one."""
    if not names or "all" in names:
        return list(SCENARIOS.values())
    families = {f.name: f for f in FAMILIES}
    chosen: dict[str, Scenario] = {}
    for name in names:
        if name in SCENARIOS:
            chosen[name] = SCENARIOS[name]
        elif name in families:
            chosen.update((s.name, s) for s in families[name].members)
        else:
            raise UnknownScenario(name)
    order = list(SCENARIOS)
    return sorted(chosen.values(), key=lambda s: order.index(s.name))
