"""The exploration keeps to its time budget, shrinking included; it compares the contents of
notifications; and it reports whole requests, under names relative to the run's prefix, with
the deviation that explains a disagreement."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from fsm import FlightAction
from fsm.cli import main
from fsm.conformance.explore import explore
from fsm.outcome import Outcome
from fsm.transport import Transport
from transport.conformance_runs import deviation_oracles, oracle
from transport.memory import MemoryTransport
from transport.server import actions
from transport.server.model import ServerModel
from transport.server.records import Notification
from transport.server.state import ServerState


@pytest.fixture(autouse=True)
def quiet() -> Iterator[None]:
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


class _SequenceNotesAreAllErrors(ServerModel):
    """Stores every sequence notification as an error."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handlers["SEQUENCE_NOTIFICATION_CREATE"] = _all_errors


def _all_errors(state: ServerState, op: Any, req: dict[str, Any]) -> None:
    actions.sequence_notification_create(state, op, req)
    sequence = state.sequences[req["locator"]]
    last = sequence.notifications[-1]
    sequence.notifications[-1] = Notification(last.name, "error", last.msg, last.created_ns)


class _SlowOnceWrong(MemoryTransport):
    """Turns slow once it stored a notification wrongly: shrinking the disagreement would
    then take minutes."""

    slow = False

    def action(self, action: FlightAction, body: Mapping[str, Any]) -> Outcome:
        if self.slow:
            time.sleep(0.05)
        outcome = super().action(action, body)
        if action is FlightAction.SEQUENCE_NOTIFICATION_CREATE and outcome.is_ok:
            self.slow = self.slow or body["notification_type"] == "info"
        return outcome


def test_the_budget_bounds_the_exploration_shrinking_included() -> None:
    target = _SlowOnceWrong(_SequenceNotesAreAllErrors(profile="spec"))
    # CPU time, not wall time: on a loaded machine the wall clock runs on while the
    # exploration waits for a CPU; an exploration that ignored its budget would use far more.
    started = time.process_time()
    found = explore(target, oracle, prefix="slow", seed=0, budget=3.0)
    elapsed = time.process_time() - started
    assert elapsed < 3.5, f"the exploration used {elapsed:.1f} s of CPU for a budget of 3 s"
    assert found.failure is not None and found.cut_short, "found, then cut short"
    assert "sequence_notification_list" in found.failure
    assert any("(info, " in step for step in found.minimal_steps)


def test_the_conformance_command_keeps_to_its_budget() -> None:
    started = time.process_time()  # CPU time: see the test above
    main(["conformance", "--budget", "2", "--profile", "mosaicod-0.3"], io.StringIO())
    elapsed = time.process_time() - started
    assert elapsed < 8, f"--budget 2 used {elapsed:.1f} s of CPU"


def test_a_disagreement_names_the_deviation_it_matches() -> None:
    did = "MOSAICOD-LOCKED-TOPIC-LATE"
    found = explore(
        MemoryTransport(ServerModel(deviations=[did])),
        oracle,
        prefix="lbl",
        seed=0,
        budget=30,
        deviations=deviation_oracles(),
    )
    assert found.failure is not None
    assert found.deviations == (did,), found.failure
    unexplained = explore(
        MemoryTransport(_SequenceNotesAreAllErrors(profile="spec")),
        oracle,
        prefix="lbl",
        seed=0,
        budget=30,
        deviations=deviation_oracles(),
    )
    assert unexplained.failure is not None and unexplained.deviations == ()


def test_steps_are_whole_requests_under_relative_names() -> None:
    found = explore(
        MemoryTransport(ServerModel(profile="mosaicod-0.3")),
        oracle,
        prefix="pfx",
        seed=0,
        budget=30,
    )
    assert found.failure is not None and "(names under pfxr" in found.failure
    for step in found.minimal_steps:
        assert "\n" not in step and " -> " in step
        assert "pfx" not in step, step
    assert found.minimal_steps[-1].split(" -> ")[0] in found.failure


class _TopicNotesLoseTheirMessage(ServerModel):
    """Stores every topic notification with an empty message."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handlers["TOPIC_NOTIFICATION_CREATE"] = _lose_message


def _lose_message(state: ServerState, op: Any, req: dict[str, Any]) -> None:
    actions.topic_notification_create(state, op, req)
    topic = state.topics[req["locator"]]
    last = topic.notifications[-1]
    topic.notifications[-1] = Notification(last.name, last.notification_type, "", last.created_ns)


@pytest.mark.parametrize(
    ("model", "listing"),
    [
        (_TopicNotesLoseTheirMessage, "topic_notification_list"),
        (_SequenceNotesAreAllErrors, "sequence_notification_list"),
    ],
)
def test_notification_contents_are_compared(model: type[ServerModel], listing: str) -> None:
    target: Transport = MemoryTransport(model(profile="spec"))
    found = explore(target, oracle, prefix="n", seed=0, budget=30)
    assert found.failure is not None and found.failure.startswith(listing), found.failure
