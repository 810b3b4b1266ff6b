"""Model-based exploration: random request sequences sent to the target and to the
reference model (which runs on the resource tables), compared step by step.

Hypothesis drives a stateful test: each rule sends one request (valid or not) to both; the
answers must agree (ok, or the same error kind), and after every step what can be observed
(sequences, sessions and their locks, topics and their locks and chunks, the type and
message of every sequence and topic notification) must agree. A disagreement is shrunk
towards the fewest steps and reported with the seed that found it.

The whole exploration, shrinking included, stops at the time budget: every request first
checks the clock. A disagreement found is always reported, as the shortest failing run seen
so far (`cut_short` says the shrinking was stopped). Each request of a run is kept as a
replayable call (sessions and topics named by their index in the run), so the failing run
can be replayed on models that emulate one recorded deviation each: the deviations that
reproduce every answer the target gave label the disagreement.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import pyarrow as pa
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.reporting import with_reporter
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from fsm.conformance.requests import outcome_text, put_batches, topic_body
from fsm.enums import FlightAction
from fsm.outcome import Outcome
from fsm.transport import Descriptor, SequenceInfo, Transport

# Typed handle: some Hypothesis releases leave this function unannotated.
_run_machine: Callable[..., None] = run_state_machine_as_test

__all__ = ["Exploration", "explore"]

SCHEMA = pa.schema(
    [pa.field("timestamp_ns", pa.int64(), nullable=False), pa.field("x", pa.float64())]
)
A = FlightAction
NOTIFICATION_TYPES = ("error", "info")
MESSAGES = ("m1", "m2")


@attrs.frozen
class Exploration:
    """What exploring found: runs made, requests sent, and the first disagreement (if any),
    with the deviations that explain it and whether its shrinking was cut short."""

    runs: int
    steps: int
    seconds: float
    seed: int
    failure: str | None
    minimal_steps: tuple[str, ...]
    deviations: tuple[str, ...] = ()
    cut_short: bool = False


class _Disagreement(AssertionError):
    """Target and oracle answered differently. Private, outside the error hierarchy: it is the
    failure Hypothesis shrinks, and the exploration reports it as a finding, never raises it."""


class _OutOfTime(BaseException):
    """The budget is spent. A BaseException, so Hypothesis stops rather than shrinks it; private
    control flow, caught by the exploration, which returns what it found so far."""


@attrs.define
class _Side:
    """One server as a run sees it: its transport and the UUIDs it answered, by index."""

    transport: Transport
    sessions: list[str] = attrs.field(factory=list)
    topics: list[str] = attrs.field(factory=list)


@attrs.frozen
class _Call:
    """One request of a run, replayable on any server: `send` answers what is compared."""

    text: str
    send: Callable[[_Side], Any]
    observes: bool = False


@attrs.frozen
class _Found:
    message: str
    calls: tuple[tuple[_Call, Any], ...]  # each call with the target's answer
    names: str


@attrs.define
class _Progress:
    deadline: float
    stop: Callable[[], bool] | None = None
    """Asked before each request: True ends the exploration as its budget would (Ctrl-C)."""
    runs: int = 0
    requests: int = 0
    found: _Found | None = None
    out_of_time: bool = False

    def keep(self, found: _Found) -> None:
        """Keep the shortest failing run seen (shrinking only ever offers shorter ones)."""
        if self.found is None or _length(found) <= _length(self.found):
            self.found = found


def _length(found: _Found) -> tuple[int, int]:
    acting = sum(1 for call, _ in found.calls if not call.observes)
    return acting, len(found.calls)


def _batch(n: int) -> pa.RecordBatch:
    return pa.record_batch([pa.array(range(n), pa.int64()), pa.array([0.5] * n)], schema=SCHEMA)


def _uuid(outcome: Outcome) -> str | None:
    value = outcome.value
    uuid = value.get("uuid") if isinstance(value, dict) else None
    return uuid if isinstance(uuid, str) else None


def _created(outcome: Outcome, into: list[str]) -> str:
    """The view of a create that answers a UUID; the UUID is kept for later requests."""
    if not outcome.is_ok:
        return outcome_text(outcome)
    uuid = _uuid(outcome)
    if uuid is None:
        return "ok without a uuid"
    into.append(uuid)
    return "ok"


def _summary(info: Any, names: str) -> str:
    """What a sequence's FlightInfo shows of its sessions and topics (names after `names`)."""
    if not isinstance(info, SequenceInfo):
        return "ok, not a sequence"
    sessions = [
        ("locked" if s.locked else "completed" if s.completed_at_ns is not None else "open")
        + f" with {len(s.topics)} topic(s)"
        for s in info.sessions
    ]
    topics = [
        f"{t.locator.removeprefix(names)} {'locked' if t.locked else 'unlocked'}, "
        + (f"{t.info.chunks_number} chunk(s)" if t.info is not None else "no data")
        for t in info.topics
    ]
    return f"sessions [{'; '.join(sessions)}], topics [{'; '.join(topics)}]"


def _notes(outcome: Outcome) -> str:
    """A notification list as its sorted (type, message) pairs."""
    if not outcome.is_ok:
        return outcome_text(outcome)
    value = outcome.value
    listed = value.get("notifications") if isinstance(value, dict) else None
    if not isinstance(listed, list):
        return "ok without a notification list"
    pairs = sorted(
        f"{n.get('notification_type')} {n.get('msg')!r}" for n in listed if isinstance(n, dict)
    )
    return f"[{', '.join(pairs)}]"


def _machine(
    target: Transport, oracle_factory: Callable[[], Transport], prefix: str, progress: _Progress
) -> type[RuleBasedStateMachine]:
    class Differential(RuleBasedStateMachine):
        """One run: a fresh oracle, fresh names on the target."""

        def __init__(self) -> None:
            super().__init__()
            progress.runs += 1
            self.names = f"{prefix}r{progress.runs}"
            self.sides = (_Side(target), _Side(oracle_factory()))
            self.calls: list[tuple[_Call, Any]] = []
            self.sequences: list[str] = []
            self.sessions: list[str] = []  # the sequence of each session, by index
            self.topics: list[str] = []  # the locator of each topic, by index

        def teardown(self) -> None:
            self.sides[1].transport.close()

        def rel(self, name: str) -> str:
            return name[len(self.names) :] if name.startswith(self.names) else name

        def _step(self, call: _Call, compare: bool = True) -> Any:
            """Send `call` to the target and the oracle; a _Disagreement when their answers
            differ (what a crash while sending is, too)."""
            if time.monotonic() >= progress.deadline or (
                progress.stop is not None and progress.stop()
            ):
                progress.out_of_time = True
                raise _OutOfTime
            progress.requests += 1
            views = []
            for side in self.sides:
                try:
                    views.append(call.send(side))
                except Exception as error:  # a malformed answer the call could not read
                    views.append(f"an answer that could not be read ({type(error).__name__})")
            got, want = views
            self.calls.append((call, got))
            if compare and got != want:
                message = f"{call.text}: the target answered {got}, the specification {want}"
                progress.keep(_Found(message, tuple(self.calls), self.names))
                raise _Disagreement(message)
            return got

        @rule(data=st.data())
        def sequence_create(self, data: st.DataObject) -> None:
            reuse = bool(self.sequences) and data.draw(st.booleans(), label="reuse a name")
            name = (
                data.draw(st.sampled_from(self.sequences), label="name")
                if reuse
                else f"{self.names}s{len(self.sequences)}"
            )
            body = {"locator": name, "user_metadata": {"run": progress.runs}}
            view = self._step(
                _Call(
                    f"sequence_create {self.rel(name)}",
                    lambda side: outcome_text(side.transport.action(A.SEQUENCE_CREATE, body)),
                )
            )
            if view == "ok":
                self.sequences.append(name)

        @rule(data=st.data())
        def session_create(self, data: st.DataObject) -> None:
            if not self.sequences:
                return
            name = data.draw(st.sampled_from(self.sequences), label="sequence")
            view = self._step(
                _Call(
                    f"session_create on {self.rel(name)}",
                    lambda side: _created(
                        side.transport.action(A.SESSION_CREATE, {"locator": name}), side.sessions
                    ),
                )
            )
            if view == "ok":
                self.sessions.append(name)

        def _session_text(self, index: int) -> str:
            return f"session {index} (on {self.rel(self.sessions[index])})"

        @rule(data=st.data(), fmt=st.sampled_from(["default", "ragged"]))
        def topic_create(self, data: st.DataObject, fmt: str) -> None:
            if not self.sessions:
                return
            index = data.draw(st.integers(0, len(self.sessions) - 1), label="session")
            outside = data.draw(st.integers(0, 4), label="outside") == 0  # mostly its own
            sequence = (
                data.draw(st.sampled_from(self.sequences), label="topic's sequence")
                if outside
                else self.sessions[index]
            )
            locator = f"{sequence}/t{len(self.topics)}"

            def send(side: _Side) -> str:
                body = topic_body(side.sessions[index], locator, fmt, ontology_tag="x")
                return _created(side.transport.action(A.TOPIC_CREATE, body), side.topics)

            text = f"topic_create {self.rel(locator)} ({fmt}) in {self._session_text(index)}"
            if self._step(_Call(text, send)) == "ok":
                self.topics.append(locator)

        @rule(data=st.data(), batches=st.integers(0, 3), end=st.sampled_from(["close", "abort"]))
        def do_put(self, data: st.DataObject, batches: int, end: str) -> None:
            if not self.topics:
                return
            index = data.draw(st.integers(0, len(self.topics) - 1), label="topic")
            locator = self.topics[index]

            def send(side: _Side) -> str:
                descriptor = Descriptor.for_topic(locator, side.topics[index])
                written = [_batch(i + 1) for i in range(batches)]
                return outcome_text(put_batches(side.transport, descriptor, SCHEMA, written, end))

            # An aborted stream answers nothing about the server (a refusal may arrive before
            # the abort or not): only what the server then holds is compared, after the step.
            text = f"DoPut {self.rel(locator)} ({batches} batch(es), {end})"
            self._step(_Call(text, send), compare=end == "close")

        @rule(
            data=st.data(),
            on_topic=st.booleans(),
            kind=st.sampled_from(NOTIFICATION_TYPES),
            msg=st.sampled_from(MESSAGES),
        )
        def notify(self, data: st.DataObject, on_topic: bool, kind: str, msg: str) -> None:
            if on_topic and self.topics:
                locator = data.draw(st.sampled_from(self.topics), label="topic")
                action = A.TOPIC_NOTIFICATION_CREATE
            elif self.sequences:
                locator = data.draw(st.sampled_from(self.sequences), label="sequence")
                action = A.SEQUENCE_NOTIFICATION_CREATE
            else:
                return
            body = {"locator": locator, "notification_type": kind, "msg": msg}
            self._step(
                _Call(
                    f"{action.value} {self.rel(locator)} ({kind}, {msg})",
                    lambda side: outcome_text(side.transport.action(action, body)),
                )
            )

        @rule(data=st.data())
        def complete_a_topic(self, data: st.DataObject) -> None:
            """A topic with one clean stream: the common way to reach locked states."""
            if not self.sessions:
                return
            index = data.draw(st.integers(0, len(self.sessions) - 1), label="session")
            locator = f"{self.sessions[index]}/t{len(self.topics)}"

            def send(side: _Side) -> str:
                body = topic_body(side.sessions[index], locator, ontology_tag="x")
                created = _created(side.transport.action(A.TOPIC_CREATE, body), side.topics)
                if created != "ok":
                    return created
                descriptor = Descriptor.for_topic(locator, side.topics[-1])
                put = put_batches(side.transport, descriptor, SCHEMA, [_batch(2)])
                return f"ok, then DoPut {outcome_text(put)}"

            text = (
                f"topic_create {self.rel(locator)} in {self._session_text(index)}, "
                "then a DoPut of 1 batch, close"
            )
            if self._step(_Call(text, send)).startswith("ok"):
                self.topics.append(locator)

        @rule(data=st.data(), action=st.sampled_from([A.SESSION_FINALIZE, A.SESSION_DELETE]))
        def on_session(self, data: st.DataObject, action: FlightAction) -> None:
            if not self.sessions:
                return
            index = data.draw(st.integers(0, len(self.sessions) - 1), label="session")
            self._step(
                _Call(
                    f"{action.value} {self._session_text(index)}",
                    lambda side: outcome_text(
                        side.transport.action(action, {"session_uuid": side.sessions[index]})
                    ),
                )
            )

        @rule(data=st.data())
        def sequence_delete(self, data: st.DataObject) -> None:
            if self.sequences:
                name = data.draw(st.sampled_from(self.sequences), label="sequence")
                self._step(
                    _Call(
                        f"sequence_delete {self.rel(name)}",
                        lambda side: outcome_text(
                            side.transport.action(A.SEQUENCE_DELETE, {"locator": name})
                        ),
                    )
                )

        @rule(data=st.data())
        def topic_delete(self, data: st.DataObject) -> None:
            if self.topics:
                locator = data.draw(st.sampled_from(self.topics), label="topic")
                self._step(
                    _Call(
                        f"topic_delete {self.rel(locator)}",
                        lambda side: outcome_text(
                            side.transport.action(A.TOPIC_DELETE, {"locator": locator})
                        ),
                    )
                )

        @invariant()
        def what_can_be_seen_agrees(self) -> None:
            for name in self.sequences:
                self._step(_observe_sequence(name, self.names))
                self._step(_observe_notes(A.SEQUENCE_NOTIFICATION_LIST, name, self.rel(name)))
            for locator in dict.fromkeys(self.topics):
                self._step(_observe_notes(A.TOPIC_NOTIFICATION_LIST, locator, self.rel(locator)))

    return Differential


def _observe_sequence(name: str, names: str) -> _Call:
    def send(side: _Side) -> str:
        outcome = side.transport.flight_info(Descriptor.for_resource(name))
        return _summary(outcome.value, names) if outcome.is_ok else outcome_text(outcome)

    return _Call(f"GetFlightInfo {name.removeprefix(names)}", send, observes=True)


def _observe_notes(action: FlightAction, locator: str, shown: str) -> _Call:
    def send(side: _Side) -> Any:
        return _notes(side.transport.action(action, {"locator": locator}))

    return _Call(f"{action.value} {shown}", send, observes=True)


def _steps(found: _Found) -> tuple[str, ...]:
    """The failing run's requests, whole, with the target's answers (observations that
    agreed are left out)."""
    last = len(found.calls) - 1
    return tuple(
        f"{call.text} -> {answer}"
        for i, (call, answer) in enumerate(found.calls)
        if not call.observes or i == last
    )


def _explained_by(
    found: _Found, deviations: Mapping[str, Callable[[], Transport]]
) -> tuple[str, ...]:
    """The deviations whose model gives every answer the target gave in the failing run."""
    labels = []
    for did, factory in deviations.items():
        side = _Side(factory())
        try:
            if all(_replayed(call, side) == answer for call, answer in found.calls):
                labels.append(did)
        finally:
            side.transport.close()
    return tuple(labels)


def _replayed(call: _Call, side: _Side) -> Any:
    try:
        return call.send(side)
    except Exception as error:
        return f"an answer that could not be read ({type(error).__name__})"


def explore(
    target: Transport,
    oracle_factory: Callable[[], Transport],
    *,
    prefix: str,
    seed: int,
    budget: float,
    examples_per_round: int = 10,
    deviations: Mapping[str, Callable[[], Transport]] | None = None,
    stop: Callable[[], bool] | None = None,
) -> Exploration:
    """Explore for at most `budget` seconds, shrinking included; the first disagreement ends
    the search, and is reported shrunk as far as the budget allowed. `deviations` maps a
    recorded deviation's id to a factory of models emulating it (to label the failure)."""
    started = time.monotonic()
    progress = _Progress(deadline=started + budget, stop=stop)
    machine = _machine(target, oracle_factory, prefix, progress)
    round_number = 0
    while progress.found is None and not progress.out_of_time:
        test_settings = settings(
            max_examples=examples_per_round,
            stateful_step_count=25,
            deadline=None,
            database=None,
            derandomize=False,
            phases=[Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
            print_blob=False,
        )
        try:
            with with_reporter(lambda value: None):
                _seeded(machine, test_settings, seed * 1_000_003 + round_number)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            # A disagreement (kept in `progress`), the budget spent (perhaps while shrinking),
            # Ctrl-C wrapped by Hypothesis, or else a fault of the exploration itself.
            stopped = progress.stop is not None and progress.stop()
            if stopped or isinstance(_exploration_fault(exc), KeyboardInterrupt):
                # Ctrl-C, even when it broke Hypothesis's own bookkeeping on its way.
                raise KeyboardInterrupt from exc
            if progress.found is None and not progress.out_of_time:
                raise _exploration_fault(exc) from exc
        round_number += 1
    found = progress.found
    labels = _explained_by(found, deviations or {}) if found is not None else ()
    return Exploration(
        progress.runs,
        progress.requests,
        time.monotonic() - started,
        seed,
        None if found is None else f"{found.message} (names under {found.names})",
        () if found is None else _steps(found),
        labels,
        found is not None and progress.out_of_time,
    )


def _exploration_fault(exc: BaseException) -> BaseException:
    """What Hypothesis raised, unwrapped from a group of one."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _seeded(machine: type[RuleBasedStateMachine], test_settings: settings, seed: int) -> None:
    """Run the state machine test with a fixed seed, so a report can be reproduced."""
    from hypothesis import seed as fixed_seed

    _run_machine(fixed_seed(seed)(machine), settings=test_settings)
