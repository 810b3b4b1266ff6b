"""The one apply path of the server model.

Every request that touches a resource goes through two calls:

- `ServerState.step(resource, key, event, what)` reads the resource's state (`absent` when
  the server holds no such resource) and its facts, and looks up the row of
  `specs/resources.toml` (with the profile's deviations applied). A refusing row raises a
  `ServerError` with the row's error kind; nothing has changed yet.
- `ServerState.commit(step)` gives the resource the row's `dest`. `absent` removes it (with
  what it holds: a sequence's sessions, a session's topics); any other state stores it.

A request first takes every step it needs, then commits them all, so a refused request leaves
the state exactly as it was. No other code assigns a resource's state.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from fsm.outcome import ErrorKind
from fsm.spec.model import Operation, ResourceRow, ResourceSpec
from transport.server.errors import ServerError
from transport.server.records import (
    ABSENT,
    ApiKey,
    Record,
    SequenceRecord,
    SessionRecord,
    TopicRecord,
)

__all__ = ["FACTS", "FactsOf", "Handler", "ServerState", "Step"]

FactsOf = Callable[["ServerState", Any], dict[str, str]]
Handler = Callable[["ServerState", Operation, dict[str, Any]], Any]


@attrs.frozen
class Step:
    """A decided, not yet committed, move of one resource."""

    resource: str
    key: str
    record: Record | None
    row: ResourceRow

    @property
    def dest(self) -> str:
        assert self.row.dest is not None  # refusing rows raise in `step`
        return self.row.dest


def _sequence_facts(state: ServerState, sequence: SequenceRecord | None) -> dict[str, str]:
    if sequence is None:
        return {"locked_session": "no"}
    locked = state.resources["session"].locked
    any_locked = any(state.sessions[s].state in locked for s in sequence.sessions)
    return {"locked_session": "yes" if any_locked else "no"}


def _session_facts(state: ServerState, session: SessionRecord | None) -> dict[str, str]:
    if session is None or not session.topics:
        return {"topics": "none"}
    locked = state.resources["topic"].locked
    all_locked = all(state.topics[t].state in locked for t in session.topics)
    return {"topics": "all_locked" if all_locked else "unlocked"}


def _topic_facts(state: ServerState, topic: TopicRecord | None) -> dict[str, str]:
    if topic is None:
        return {"session_locked": "no", "schema": "no"}
    session = state.sessions[topic.session]
    return {
        "session_locked": "yes" if session.state in state.resources["session"].locked else "no",
        "schema": "yes" if topic.schema is not None else "no",
    }


def _no_facts(state: ServerState, record: ApiKey | None) -> dict[str, str]:
    return {}


FACTS: Mapping[str, FactsOf] = {
    "sequence": _sequence_facts,
    "session": _session_facts,
    "topic": _topic_facts,
    "api_key": _no_facts,
}


class ServerState:
    """The resources a server holds, and the tables that move them.

    `clock` answers nanoseconds; `rng` draws UUIDs and `token_rng` key tokens, so a seeded
    run can be reproduced. Not thread-safe: the model holds its lock around every request.
    """

    def __init__(
        self,
        resources: dict[str, ResourceSpec],
        *,
        clock: Callable[[], int],
        rng: random.Random,
        token_rng: random.Random,
    ) -> None:
        for name, table in resources.items():
            if table.initial != ABSENT:
                raise ServerError(
                    ErrorKind.INTERNAL,
                    f"resource {name!r} must start {ABSENT!r}, not {table.initial!r}",
                )
        self.resources = resources
        self.facts: dict[str, FactsOf] = dict(FACTS)
        self.clock = clock
        self.rng = rng
        self.token_rng = token_rng
        self.sequences: dict[str, SequenceRecord] = {}
        self.sessions: dict[str, SessionRecord] = {}
        self.topics: dict[str, TopicRecord] = {}
        self.keys: dict[str, ApiKey] = {}
        # The sequence of each deleted session, kept only when `remember_gone` (while
        # tracing): a later request naming the session is still attributed to its sequence.
        self.remember_gone = False
        self.gone_sessions: dict[str, str] = {}

    def now(self) -> int:
        return self.clock()

    def new_uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _records(self, resource: str) -> dict[str, Any]:
        stores: dict[str, dict[str, Any]] = {
            "sequence": self.sequences,
            "session": self.sessions,
            "topic": self.topics,
            "api_key": self.keys,
        }
        return stores[resource]

    # -----------------------------------------------------------------------------------------
    # The apply path

    def step(self, resource: str, key: str, event: str, what: str) -> Step:
        """The row that decides `event` on the resource `key`; a refusing row is raised."""
        record: Record | None = self._records(resource).get(key)
        state = ABSENT if record is None else record.state
        facts = self.facts[resource](self, record)
        row = self.resources[resource].decide(state, event, facts)
        if row is None:  # excluded by the soundness checks
            raise ServerError(
                ErrorKind.INTERNAL, f"no {resource} row for {state} --{event}--> {facts}"
            )
        if row.error is not None:
            reason = f" ({row.doc})" if row.doc else ""
            raise ServerError(ErrorKind(row.error), f"{what}: {resource} is {state}{reason}")
        return Step(resource, key, record, row)

    def commit(self, step: Step, created: Record | None = None) -> None:
        """Give the resource the row's destination. `created` is the record of a resource
        the server did not hold yet."""
        record = step.record if step.record is not None else created
        if step.dest == ABSENT:
            if step.record is not None:
                self._remove(step.resource, step.record)
            return
        if record is None:
            raise ServerError(
                ErrorKind.INTERNAL,
                f"{step.resource} {step.key!r} moves to {step.dest!r} but has no record",
            )
        record.state = step.dest
        if step.record is None:
            self._insert(step.resource, step.key, record)

    def _insert(self, resource: str, key: str, record: Record) -> None:
        self._records(resource)[key] = record
        if isinstance(record, SessionRecord):
            self.sequences[record.sequence].sessions.append(key)
        elif isinstance(record, TopicRecord):
            self.sessions[record.session].topics.append(key)

    def _remove(self, resource: str, record: Record) -> None:
        if isinstance(record, SequenceRecord):
            for session_uuid in list(record.sessions):
                self._remove("session", self.sessions[session_uuid])
            del self.sequences[record.name]
        elif isinstance(record, SessionRecord):
            if self.remember_gone:
                self.gone_sessions[record.uuid] = record.sequence
            for locator in record.topics:
                self.topics.pop(locator, None)
            self.sessions.pop(record.uuid, None)
            sequence = self.sequences.get(record.sequence)
            if sequence is not None and record.uuid in sequence.sessions:
                sequence.sessions.remove(record.uuid)
        elif isinstance(record, TopicRecord):
            self.topics.pop(record.locator)
            session = self.sessions.get(record.session)
            if session is not None:
                session.topics.remove(record.locator)
        else:
            del self.keys[record.fingerprint]
