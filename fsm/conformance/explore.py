"""Model-based exploration: random request sequences sent to the target and to the
reference model (which runs on the resource tables), compared step by step.

Hypothesis drives a stateful test: each rule sends one request (valid or not) to both; the
outcomes must agree (ok, or the same error kind), and after every step what can be observed
(sequences, sessions and their locks, topics and their locks and chunks, notifications)
must agree. A disagreement is shrunk to a minimal sequence of steps and reported with the
seed that found it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import attrs
import pyarrow as pa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.reporting import with_reporter
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from fsm.enums import FlightAction
from fsm.outcome import Outcome, OutcomeStatus
from fsm.transport import Descriptor, SequenceInfo, TopicStream, Transport

# Typed handle: some Hypothesis releases leave this function unannotated.
_run_machine: Callable[..., None] = run_state_machine_as_test

__all__ = ["Exploration", "explore"]

SCHEMA = pa.schema(
    [pa.field("timestamp_ns", pa.int64(), nullable=False), pa.field("x", pa.float64())]
)
A = FlightAction


@attrs.frozen
class Exploration:
    """What exploring found: runs made, requests sent, and the first disagreement (if any)."""

    runs: int
    steps: int
    seconds: float
    seed: int
    failure: str | None
    minimal_steps: tuple[str, ...]


class _Disagreement(AssertionError):
    pass


def _view(outcome: Outcome) -> str:
    if outcome.status is OutcomeStatus.OK:
        return "ok"
    return outcome.kind.value if outcome.kind else outcome.status.value


def _batch(n: int) -> pa.RecordBatch:
    return pa.record_batch([pa.array(range(n), pa.int64()), pa.array([0.5] * n)], schema=SCHEMA)


def _machine(
    target: Transport, oracle_factory: Callable[[], Transport], prefix: str, counter: list[int]
) -> type[RuleBasedStateMachine]:
    class Differential(RuleBasedStateMachine):
        """One run: a fresh oracle, fresh names on the target."""

        def __init__(self) -> None:
            super().__init__()
            counter[0] += 1
            self.run = counter[0]
            self.oracle = oracle_factory()
            self.sequences: list[str] = []
            self.sessions: list[tuple[str, str, str]] = []  # (sequence, target uuid, oracle uuid)
            self.topics: list[tuple[str, str, str]] = []  # (locator, target uuid, oracle uuid)

        def teardown(self) -> None:
            self.oracle.close()

        def _both(self, call: Callable[[Transport], Outcome], what: str) -> tuple[Outcome, Outcome]:
            counter[1] += 1
            got, want = call(target), call(self.oracle)
            if _view(got) != _view(want):
                raise _Disagreement(
                    f"{what}: the target answered {_view(got)}, the specification {_view(want)}"
                )
            return got, want

        def _act(
            self,
            action: FlightAction,
            body: dict[str, Any],
            oracle_body: dict[str, Any] | None = None,
        ) -> tuple[Outcome, Outcome]:
            counter[1] += 1
            got = target.action(action, body)
            want = self.oracle.action(action, oracle_body if oracle_body is not None else body)
            if _view(got) != _view(want):
                raise _Disagreement(
                    f"{action.value} {body}: the target answered {_view(got)}, the specification {_view(want)}"
                )
            return got, want

        @rule(data=st.data())
        def sequence_create(self, data: st.DataObject) -> None:
            reuse = bool(self.sequences) and data.draw(st.booleans(), label="reuse a name")
            name = (
                data.draw(st.sampled_from(self.sequences), label="name")
                if reuse
                else f"{prefix}r{self.run}s{len(self.sequences)}"
            )
            got, _ = self._act(
                A.SEQUENCE_CREATE, {"locator": name, "user_metadata": {"run": self.run}}
            )
            if got.is_ok:
                self.sequences.append(name)

        @rule(data=st.data())
        def session_create(self, data: st.DataObject) -> None:
            if not self.sequences:
                return
            name = data.draw(st.sampled_from(self.sequences), label="sequence")
            got, want = self._act(A.SESSION_CREATE, {"locator": name})
            if got.is_ok:
                self.sessions.append((name, got.value["uuid"], want.value["uuid"]))

        @rule(data=st.data(), fmt=st.sampled_from(["default", "ragged"]))
        def topic_create(self, data: st.DataObject, fmt: str) -> None:
            if not self.sessions:
                return
            own, got_uuid, want_uuid = data.draw(st.sampled_from(self.sessions), label="session")
            outside = (
                data.draw(st.integers(0, 4), label="outside") == 0
            )  # mostly in its own sequence
            target_seq = (
                data.draw(st.sampled_from(self.sequences), label="topic's sequence")
                if outside
                else own
            )
            locator = f"{target_seq}/t{len(self.topics)}"
            body = {
                "locator": locator,
                "serialization_format": fmt,
                "ontology_tag": "x",
                "user_metadata": {},
            }
            got, want = self._act(
                A.TOPIC_CREATE,
                {"session_uuid": got_uuid, **body},
                {"session_uuid": want_uuid, **body},
            )
            if got.is_ok:
                self.topics.append((locator, got.value["uuid"], want.value["uuid"]))

        @rule(data=st.data(), batches=st.integers(0, 3), end=st.sampled_from(["close", "abort"]))
        def do_put(self, data: st.DataObject, batches: int, end: str) -> None:
            if not self.topics:
                return
            locator, got_uuid, want_uuid = data.draw(st.sampled_from(self.topics), label="topic")

            def put(transport: Transport, uuid: str) -> Outcome:
                opened = transport.open_stream(Descriptor.for_topic(locator, uuid), SCHEMA)
                if not opened.is_ok:
                    return opened
                stream: TopicStream = opened.value
                for i in range(batches):
                    written = stream.write(_batch(i + 1))
                    if not written.is_ok:
                        stream.abort()
                        return written
                return stream.abort() if end == "abort" else stream.close()

            counter[1] += 1
            got, want = put(target, got_uuid), put(self.oracle, want_uuid)
            # An aborted stream answers nothing about the server (a refusal may arrive before
            # the abort or not): only what the server then holds is compared, below.
            if end == "close" and _view(got) != _view(want):
                raise _Disagreement(
                    f"DoPut {locator} ({batches} batches, {end}): the target answered {_view(got)}, "
                    f"the specification {_view(want)}"
                )

        @rule(data=st.data(), on_topic=st.booleans())
        def notify_error(self, data: st.DataObject, on_topic: bool) -> None:
            if on_topic and self.topics:
                locator = data.draw(st.sampled_from(self.topics), label="topic")[0]
                self._act(
                    A.TOPIC_NOTIFICATION_CREATE,
                    {"locator": locator, "notification_type": "error", "msg": "x"},
                )
            elif self.sequences:
                name = data.draw(st.sampled_from(self.sequences), label="sequence")
                self._act(
                    A.SEQUENCE_NOTIFICATION_CREATE,
                    {"locator": name, "notification_type": "error", "msg": "x"},
                )

        @rule(data=st.data())
        def complete_a_topic(self, data: st.DataObject) -> None:
            """A topic with one clean stream: the common way to reach locked states."""
            if not self.sessions:
                return
            own, got_uuid, want_uuid = data.draw(st.sampled_from(self.sessions), label="session")
            locator = f"{own}/t{len(self.topics)}"
            body = {
                "locator": locator,
                "serialization_format": "default",
                "ontology_tag": "x",
                "user_metadata": {},
            }
            got, want = self._act(
                A.TOPIC_CREATE,
                {"session_uuid": got_uuid, **body},
                {"session_uuid": want_uuid, **body},
            )
            if not got.is_ok:
                return
            self.topics.append((locator, got.value["uuid"], want.value["uuid"]))
            for transport, uuid in ((target, got.value["uuid"]), (self.oracle, want.value["uuid"])):
                opened = transport.open_stream(Descriptor.for_topic(locator, uuid), SCHEMA)
                if opened.is_ok:
                    stream: TopicStream = opened.value
                    stream.write(_batch(2))
                    stream.close()

        @rule(data=st.data(), action=st.sampled_from([A.SESSION_FINALIZE, A.SESSION_DELETE]))
        def on_session(self, data: st.DataObject, action: FlightAction) -> None:
            if not self.sessions:
                return
            _, got_uuid, want_uuid = data.draw(st.sampled_from(self.sessions), label="session")
            self._act(action, {"session_uuid": got_uuid}, {"session_uuid": want_uuid})

        @rule(data=st.data())
        def sequence_delete(self, data: st.DataObject) -> None:
            if self.sequences:
                self._act(
                    A.SEQUENCE_DELETE,
                    {"locator": data.draw(st.sampled_from(self.sequences), label="sequence")},
                )

        @rule(data=st.data())
        def topic_delete(self, data: st.DataObject) -> None:
            if self.topics:
                self._act(
                    A.TOPIC_DELETE,
                    {"locator": data.draw(st.sampled_from(self.topics), label="topic")[0]},
                )

        @invariant()
        def what_can_be_seen_agrees(self) -> None:
            for name in self.sequences:
                descriptor = Descriptor.for_resource(name)
                got, want = self._both(
                    partial(_info, descriptor=descriptor), f"GetFlightInfo {name}"
                )
                if got.is_ok and _summary(got.value) != _summary(want.value):
                    raise _Disagreement(
                        f"{name} reads {_summary(got.value)} on the target, {_summary(want.value)} by the specification"
                    )
                self._both(partial(_notifications, name=name), f"notifications of {name}")

    return Differential


def _info(transport: Transport, descriptor: Descriptor) -> Outcome:
    return transport.flight_info(descriptor)


def _notifications(transport: Transport, name: str) -> Outcome:
    return transport.action(A.SEQUENCE_NOTIFICATION_LIST, {"locator": name})


def _summary(info: Any) -> tuple[Any, ...]:
    if not isinstance(info, SequenceInfo):
        return ()
    sessions = tuple(
        (s.locked, s.completed_at_ns is not None, len(s.topics)) for s in info.sessions
    )
    topics = tuple(
        (t.locator, t.locked, t.info.chunks_number if t.info is not None else None)
        for t in info.topics
    )
    return sessions, topics


def explore(
    target: Transport,
    oracle_factory: Callable[[], Transport],
    *,
    prefix: str,
    seed: int,
    budget: float,
    examples_per_round: int = 10,
) -> Exploration:
    """Explore for about `budget` seconds (at least one round); the first disagreement stops
    it, shrunk by Hypothesis to the fewest steps that still show it."""
    counter = [0, 0]
    machine = _machine(target, oracle_factory, prefix, counter)
    started = time.monotonic()
    failure: str | None = None
    steps: tuple[str, ...] = ()
    round_number = 0
    while True:
        test_settings = settings(
            max_examples=examples_per_round,
            stateful_step_count=25,
            deadline=None,
            database=None,
            derandomize=False,
            suppress_health_check=list(HealthCheck),
            print_blob=False,
        )
        try:
            with with_reporter(lambda value: None):
                _seeded(machine, test_settings, seed * 1_000_003 + round_number)
        except Exception as exc:
            first = _first_failure(exc)
            failure = str(first).splitlines()[0]
            steps = _steps(first)
            break
        round_number += 1
        if time.monotonic() - started >= budget:
            break
    return Exploration(counter[0], counter[1], time.monotonic() - started, seed, failure, steps)


def _first_failure(exc: BaseException) -> BaseException:
    """The disagreement inside what Hypothesis raised (one failure, or a group of them)."""
    if isinstance(exc, BaseExceptionGroup):
        found: list[BaseException] = [e for e in exc.exceptions if isinstance(e, _Disagreement)]
        return _first_failure(found[0] if found else exc.exceptions[0])
    return exc


def _steps(exc: BaseException) -> tuple[str, ...]:
    """The minimal failing program Hypothesis attached to the failure."""
    lines: list[str] = []
    for note in getattr(exc, "__notes__", []):
        lines.extend(str(note).splitlines())
    return tuple(line for line in lines if line.startswith(("state.", "Draw ")))


def _seeded(machine: type[RuleBasedStateMachine], test_settings: settings, seed: int) -> None:
    """Run the state machine test with a fixed seed, so a report can be reproduced."""
    from hypothesis import seed as fixed_seed

    _run_machine(fixed_seed(seed)(machine), settings=test_settings)
