"""The failure-path simulator: the engine keeps every invariant under every single fault (and
under double faults of a few scenarios); reports are reproducible; a replay command runs the
same run again; and the invariants have teeth: deliberately broken engines and servers are
caught, each by the invariant it breaks."""

from __future__ import annotations

import io
import json
import shlex
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import attrs
import pytest

from fsm.cli import main
from fsm.conformance.clients import check_client_trace
from fsm.engine.session import _SessionSteps
from fsm.engine.topic import TopicWriter
from fsm.errors import MosaicoProtocolError
from fsm.outcome import ErrorKind, Outcome
from fsm.simulate import (
    FAMILIES,
    SCENARIOS,
    Exploration,
    explore,
    parse_fault,
    replay,
    replay_command,
    select,
    to_json,
)
from fsm.simulate.plans import describe_plan, effects, faults_at
from fsm.simulate.run import RunResult
from fsm.spec import load_spec
from fsm.spec.model import Step, Transition
from transport.conformance_runs import memory_world
from transport.server import actions
from transport.server.errors import ServerError
from transport.server.model import ServerModel
from transport.server.state import ServerState

SPEC = load_spec()


WORLD = memory_world


def _violations(result: Exploration) -> set[tuple[str, str, str]]:
    return {
        (run.scenario, " + ".join(f.describe() for f in run.faults), v.invariant)
        for run in result.runs
        for v in run.violations
    }


def _broken(result: Exploration) -> set[str]:
    return {invariant for _, _, invariant in _violations(result)}


# -----------------------------------------------------------------------------------------------
# Exhaustive exploration


def test_every_single_fault_of_every_scenario_keeps_the_invariants() -> None:
    result = explore(select(["all"]), WORLD, faults=1)
    assert {s.family for s in SCENARIOS.values()} == {f.name for f in FAMILIES}
    assert len(result.runs) > 1000, "every position of every scenario x every effect"
    assert _violations(result) == set()
    outcomes = {run.client for run in result.runs}
    assert outcomes == {"Finalized", "Error", "Null"}, "the faults reach every end"


def test_single_faults_reach_every_call_with_every_effect() -> None:
    result = explore(select(["writer-report-1-topic"]), WORLD, faults=1)
    baseline, singles = result.runs[0], result.runs[1:]
    assert baseline.faults == () and baseline.cell == "Finalized | locked 1/1 topics"
    expected = sum(len(effects(SPEC, op)) for op, _ in baseline.calls)
    assert len(singles) == expected
    assert all(run.fired == run.faults for run in singles), "every planned fault fired"
    stream_close = [run for run in singles if run.faults[0].operation == "STREAM_CLOSE"]
    assert {f.describe() for run in stream_close for f in run.faults} == {
        "STREAM_CLOSE#1:failed_precondition",
        "STREAM_CLOSE#1:cancelled",
        "STREAM_CLOSE#1:internal",
        "STREAM_CLOSE#1:lose_reply",
        "STREAM_CLOSE#1:lose_request",
        "STREAM_CLOSE#1:drop_stream",
    }


def test_double_faults_keep_the_invariants() -> None:
    result = explore(select(["writer-1-topic", "updater-delete-session-error"]), WORLD, faults=2)
    doubles = [run for run in result.runs if len(run.faults) == 2]
    assert len(doubles) > 1000
    plans = [frozenset((run.scenario, *run.faults)) for run in doubles]
    assert len(plans) == len(set(plans)), "no plan runs twice"
    assert not _violations(result)
    unknown = {v.invariant for run in result.runs for v in run.unknown}
    assert {"client-server-agree", "no-orphans"} <= unknown, "unsettled replies are unknown"


def test_triple_faults_add_a_fault_at_every_call_after_the_last() -> None:
    names = ["writer-report-no-topics", "writer-delete-no-topics"]
    result = explore(select(names), WORLD, faults=3)
    assert not _violations(result)
    by_level: dict[int, list[RunResult]] = {}
    for run in result.runs:
        by_level.setdefault(len(run.faults), []).append(run)
    assert sorted(by_level) == [0, 1, 2, 3]
    # Each triple extends a double that ran with both of its faults fired, by one fault at a
    # call after the second; every such extension runs, and none twice.
    spec = load_spec()
    expected = {
        (run.scenario, *run.faults, fault)
        for run in by_level[2]
        if len(run.fired) == 2
        for fault in faults_at(
            spec, run.calls[run.calls.index((run.fired[1].operation, run.fired[1].nth)) + 1 :]
        )
    }
    triples = [(run.scenario, *run.faults) for run in by_level[3]]
    assert len(triples) == len(set(triples)) == len(expected) > 100
    assert set(triples) == expected


def test_an_unsettled_lost_reply_is_unknown_not_a_violation() -> None:
    plan = [parse_fault("SESSION_FINALIZE#1:lose_reply"), parse_fault("GET_FLIGHT_INFO#1:internal")]
    (run,) = replay(select(["writer-report-1-topic"]), plan, WORLD).runs
    assert run.client == "Error" and run.server.startswith("locked")
    assert not run.violations
    assert {v.invariant for v in run.unknown} >= {"client-server-agree", "report-kept"}


# -----------------------------------------------------------------------------------------------
# Reports and replays


def _cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(["simulate", *args], out)
    return code, out.getvalue()


def test_same_seed_same_report_whatever_the_workers() -> None:
    args = ("--scenario", "writer-3-topics", "--scenario", "updater-2-topics", "--report", "json")
    code1, first = _cli(*args, "--seed", "5")
    code2, second = _cli(*args, "--seed", "5")
    code3, spread = _cli(*args, "--seed", "5", "--workers", "2")
    assert code1 == code2 == code3 == 0
    assert first == second == spread
    _, other = _cli(*args, "--seed", "6")
    assert other != first, "the seed reaches the run"
    report = json.loads(first)
    assert report["runs"] > 300 and report["violations"] == []


def test_the_report_has_one_matrix_per_family_with_one_column_per_policy() -> None:
    code, text = _cli("--scenario", "writer-1-topic")
    assert code == 0
    lines = text.splitlines()
    assert lines[0].startswith("== writer-1-topic:")
    header = lines[2].split()
    assert header == ["fault", "Report", "Delete"]
    row = next(line for line in lines if line.startswith("SESSION_FINALIZE#1:failed_precondition"))
    assert "Error | open 1/1 topics, notified" in row and "Error | seq gone" in row
    assert "0 with violations" in lines[-1]


def test_a_replay_command_runs_the_same_run_again() -> None:
    result = explore(select(["writer-delete-session-error"]), WORLD, faults=1)
    run = next(r for r in result.runs if r.faults and r.faults[0].operation == "SEQUENCE_DELETE")
    command = shlex.split(replay_command(run, result.seed))
    assert command[:2] == ["mosaico-fsm", "simulate"]
    code, text = _cli(*command[2:], "--report", "json")
    report = json.loads(text)
    (family,) = report["families"]
    (row,) = family["matrix"]
    assert row["faults"] == describe_plan(run.faults)
    assert row["cells"] == {"Delete": run.cell}
    assert code == 0


def test_bad_arguments_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, words in [
        (["--scenario", "nope"], "unknown scenario"),
        (["--fault", "SESSION_FINALIZE"], "OPERATION#N:EFFECT"),
        (["--fault", "SESSION_FINALIZE#1:boom"], "unknown effect"),
        (["--fault", "SESSION_FINISH#1:internal"], "no such operation"),
    ]:
        assert _cli(*argv) == (2, "")
        assert words in capsys.readouterr().err
    with pytest.raises(ValueError, match="drop_stream"):
        parse_fault("SESSION_FINALIZE#1:drop_stream")


# -----------------------------------------------------------------------------------------------
# Teeth: broken engines and servers are caught, by the invariant they break


class _KeepsDeletedSequences(ServerModel):
    """Answers SEQUENCE_DELETE with ok and deletes nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handlers["SEQUENCE_DELETE"] = _keep_sequence


def _keep_sequence(state: ServerState, op: Any, req: dict[str, Any]) -> None:
    state.step("sequence", req["locator"], op.name, op.wire)


class _NeverLocksSessions(ServerModel):
    """Finalizes a session without locking it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handlers["SESSION_FINALIZE"] = _finalize_unlocked


def _finalize_unlocked(state: ServerState, op: Any, req: dict[str, Any]) -> None:
    step = state.step("session", req["session_uuid"], op.name, op.wire)
    unlocked = attrs.evolve(step.row, dest="finalized_reported")
    state.commit(attrs.evolve(step, row=unlocked))


def _spec_where_clean_ends_leave_topics_open() -> Any:
    """The specification with a server that takes a clean end of stream without locking
    the topic (it stays `created`, as after a cancelled stream)."""
    spec = load_spec()
    topic = spec.resources["topic"]
    rows = tuple(
        attrs.evolve(row, dest="created")
        if (row.source, row.event, row.dest) == ("receiving", "DO_PUT_END", "locked")
        else row
        for row in topic.rows
    )
    assert rows != topic.rows
    resources = {**spec.resources, "topic": attrs.evolve(topic, rows=rows)}
    return attrs.evolve(spec, resources=resources)


def test_a_server_that_does_not_lock_finalized_topics_is_caught() -> None:
    spec = _spec_where_clean_ends_leave_topics_open()

    def model(**kwargs: Any) -> ServerModel:
        return ServerModel(spec, **kwargs)

    result = explore(
        select(["writer-report-1-topic"]), partial(memory_world, model_class=model), faults=0
    )
    agree = [
        v for run in result.runs for v in run.violations if v.invariant == "client-server-agree"
    ]
    assert agree, [run.violations for run in result.runs]
    assert any("Finalized, not locked on the server" in v.message for v in agree), agree


def test_a_server_that_keeps_deleted_sequences_is_caught() -> None:
    result = explore(
        select(["writer-delete-1-topic"]), partial(memory_world, model_class=_KeepsDeletedSequences)
    )
    broken = _violations(result)
    assert ("writer-delete-1-topic", "SESSION_FINALIZE#1:internal", "delete-purged") in broken
    assert ("writer-delete-1-topic", "SESSION_CREATE#1:internal", "no-orphans") in broken


class _DeletesThenRefuses(ServerModel):
    """Applies SESSION_DELETE, then answers internal: the client believes nothing happened."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handlers["SESSION_DELETE"] = _delete_then_refuse


def _delete_then_refuse(state: ServerState, op: Any, req: dict[str, Any]) -> None:
    actions.session_delete(state, op, req)
    raise ServerError(ErrorKind.INTERNAL, "deleted, then failed")


def test_a_purge_the_client_believes_failed_but_the_server_applied_is_caught() -> None:
    """The client's view of its purge must agree with the server's, both ways."""
    result = explore(
        select(["updater-delete-session-error"]),
        partial(memory_world, model_class=_DeletesThenRefuses),
        faults=0,
    )
    assert ("updater-delete-session-error", "", "client-server-agree") in _violations(result)
    message = next(
        v.message
        for run in result.runs
        for v in run.violations
        if v.invariant == "client-server-agree"
    )
    assert "believes its SESSION_DELETE did not take effect" in message


def test_a_server_that_never_locks_sessions_is_caught() -> None:
    result = explore(
        select(["writer-report-3-topics"]),
        partial(memory_world, model_class=_NeverLocksSessions),
        faults=0,
    )
    assert _broken(result) == {"finalized-kept", "client-server-agree"}


@pytest.fixture
def engine_skips(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, str], None]]:
    """Make the engine pretend that `operation` of row `row` succeeded without sending it."""

    def skip(operation: str, row: str) -> None:
        real = _SessionSteps.perform

        def perform(self: _SessionSteps, step: Step, transition: Transition) -> Outcome:
            if step.do == operation and transition.id.startswith(row):
                return Outcome.ok()
            return real(self, step, transition)

        monkeypatch.setattr(_SessionSteps, "perform", perform)

    yield skip


def test_an_engine_that_leaves_the_orphan_sequence_is_caught(
    engine_skips: Callable[[str, str], None],
) -> None:
    engine_skips("SEQUENCE_DELETE", "enter-undo")
    result = explore(select(["writer-report-1-topic"]), WORLD)
    assert ("writer-report-1-topic", "SESSION_CREATE#1:internal", "no-orphans") in _violations(
        result
    )
    assert _broken(result) == {"no-orphans", "client-conformance"}


def test_an_engine_that_does_not_report_errors_is_caught(
    engine_skips: Callable[[str, str], None],
) -> None:
    engine_skips("SEQUENCE_NOTIFICATION_CREATE", "exit-error-report")
    result = explore(select(["writer-report-session-error"]), WORLD, faults=0)
    # Unreported, the session is finalized and locked like a clean one: the server trace alone
    # looks like topic errors ignored and a clean exit, but the server's state gives it away.
    assert _broken(result) == {"report-kept", "client-server-agree"}


def test_an_engine_whose_report_skips_the_flush_at_close_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = TopicWriter.close

    def close(self: TopicWriter, trigger: str, message: str = "") -> MosaicoProtocolError | None:
        if trigger == "close_error":
            self._writer._rows.clear()  # the buffered records are dropped, not sent
        return real(self, trigger, message)

    monkeypatch.setattr(TopicWriter, "close", close)
    result = explore(select(["writer-report-session-error"]), WORLD, faults=0)
    (run,) = result.runs
    assert _broken(result) == {"report-kept"}
    assert "run/rows: 3 records pushed, 0 read back" in run.violations[0].message


def test_an_engine_that_leaves_topic_writers_open_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def close(self: TopicWriter, trigger: str, message: str = "") -> MosaicoProtocolError | None:
        return None  # the session ends without ending its topics' streams

    monkeypatch.setattr(TopicWriter, "close", close)
    result = explore(select(["writer-3-topics"]), WORLD, faults=0)
    assert result.runs
    for run in result.runs:
        terminal = [v for v in run.violations if v.invariant == "terminal"]
        assert terminal, (run.scenario, run.violations)
        assert "topic writers still open" in terminal[0].message


def test_an_engine_that_swallows_the_users_exception_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fsm.engine import SessionWriter

    real = SessionWriter.__exit__

    def swallow(self: SessionWriter, *exc: Any) -> bool:
        real(self, *exc)
        return True

    monkeypatch.setattr(SessionWriter, "__exit__", swallow)
    result = explore(select(["updater-delete-session-error"]), WORLD, faults=0)
    assert _broken(result) == {"errors-surface"}
    assert to_json(result).count('"invariant": "errors-surface"') == 1


# -----------------------------------------------------------------------------------------------
# A server that cannot be read leaves the invariants that read it unknown


class _ReadsFail(ServerModel):
    """Every read (GetFlightInfo, DoGet, the notification lists) fails with internal."""

    def flight_info(self, principal: Any, descriptor_kind: str, command: bytes) -> Any:
        raise ServerError(ErrorKind.INTERNAL, "reads are broken")

    def read(self, principal: Any, ticket: bytes) -> Any:
        raise ServerError(ErrorKind.INTERNAL, "reads are broken")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handlers["SEQUENCE_NOTIFICATION_LIST"] = _reads_are_broken


def _reads_are_broken(state: ServerState, op: Any, req: dict[str, Any]) -> Any:
    raise ServerError(ErrorKind.INTERNAL, "reads are broken")


_READING = {"finalized-kept", "report-kept", "delete-purged", "no-orphans", "client-server-agree"}


def test_failed_reads_are_unknown_never_a_violation_or_a_crash() -> None:
    result = explore(
        select(["all"]), partial(memory_world, model_class=_ReadsFail), faults=0, workers=2
    )
    assert len(result.runs) == len(SCENARIOS)
    assert _violations(result) == set()
    for run in result.runs:
        for verdict in run.verdicts:
            if verdict.invariant in _READING and verdict.status == "unknown":
                assert "could not be read" in verdict.message or "set up" in verdict.message
    unknown = {v.invariant for run in result.runs for v in run.unknown}
    assert {"finalized-kept", "report-kept", "no-orphans", "client-server-agree"} <= unknown
    assert {run.server for run in result.runs} == {"unreadable"}


@pytest.mark.parametrize(
    "fault", ["TOPIC_CREATE#1:lose_reply", "STREAM_OPEN#1:lose_reply", "STREAM_OPEN#1:drop_stream"]
)
def test_a_route_after_a_lost_reply_is_judged_not_left_unknown(fault: str) -> None:
    (run,) = replay(select(["writer-report-1-topic"]), [parse_fault(fault)], WORLD).runs
    verdict = next(v for v in run.verdicts if v.invariant == "client-conformance")
    assert verdict.status == "ok", verdict.message


def test_a_hidden_fault_is_placed_at_its_request_in_the_servers_trace() -> None:
    from fsm.faults import Fault, FaultEffect
    from fsm.simulate.judge import _fault_index

    events = [{"op": op} for op in ("SEQUENCE_CREATE", "SESSION_CREATE", "TOPIC_CREATE")]
    events += [{"op": "DO_PUT_OPEN"}, {"op": "TOPIC_CREATE"}]
    refused = Fault("TOPIC_CREATE", 1)  # refused before the server saw it
    lost = Fault("TOPIC_CREATE", 3, FaultEffect.LOSE_REPLY)
    assert _fault_index(events, (refused, lost), lost) == 4
    opened = Fault("STREAM_OPEN", 1, FaultEffect.DROP_STREAM)
    assert _fault_index(events, (opened,), opened) == 3


# -----------------------------------------------------------------------------------------------
# The server-trace check stops its search early without changing a report


def _server_traces(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[Any], dict[str, Any]]]:
    """Every server trace (with the assumptions allowed) the judge checks in the single-fault
    runs of two scenarios."""
    import fsm.simulate.judge as judge_module

    seen: list[tuple[list[Any], dict[str, Any]]] = []
    real = judge_module.check_client_trace

    def record(events: Any, spec: Any, **kwargs: Any) -> Any:
        seen.append((list(events), kwargs))
        return real(events, spec, **kwargs)

    monkeypatch.setattr(judge_module, "check_client_trace", record)
    explore(select(["writer-report-1-topic", "updater-delete-2-topics"]), WORLD, faults=1)
    monkeypatch.undo()
    return seen


def _mutated(events: list[Any]) -> Iterator[list[Any]]:
    """The trace with one event dropped, doubled, or swapped with the next: most of them
    are traces no client following the tables leaves."""
    for i in range(len(events)):
        yield events[:i] + events[i + 1 :]
        yield events[: i + 1] + events[i:]
        if i + 1 < len(events):
            yield [*events[:i], events[i + 1], events[i], *events[i + 2 :]]


def test_the_early_stop_gives_the_reports_of_the_whole_search(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fsm.conformance import clients

    traces = _server_traces(monkeypatch)
    cases = [(events, kwargs) for events, kwargs in traces]
    cases += [(m, kwargs) for events, kwargs in traces[::6] for m in _mutated(events)]
    # Traces that end a failed session judged as the SDK's, whose recorded deviations (a
    # missing or repeated delete or report) the search may match.
    ended = [
        (events, kwargs)
        for events, kwargs in traces
        if any(e.get("op") == "SEQUENCE_DELETE" or e.get("outcome", "ok") != "ok" for e in events)
    ]
    cases += [
        (m, {**kwargs, "client": "sdk-0.3.2"})
        for events, kwargs in ended[::4]
        for m in _mutated(events)
    ]
    stops = 0
    real = clients._unbeatable

    def counted(done: Any, start: Any) -> bool:
        nonlocal stops
        found = real(done, start)
        stops += found
        return found

    monkeypatch.setattr(clients, "_unbeatable", counted)
    stopped = [check_client_trace(e, SPEC, **kw) for e, kw in cases]
    assert stops > len(cases)  # the search did stop early, again and again
    monkeypatch.setattr(clients, "STOP_AT_UNBEATABLE", False)
    whole = [check_client_trace(e, SPEC, **kw) for e, kw in cases]
    assert stopped == whole
    # The corpus holds conforming traces and violations of many kinds.
    assert sum(1 for r in whole if r.conforms) > 50
    assert sum(1 for r in whole if r.violation is not None) > 100
    assert len({r.violation.rule for r in whole if r.violation is not None}) > 5
    assert sum(1 for r in whole if r.deviations) >= 3
    assert any(kw.get("lost_replies") for _, kw in cases)


def test_an_explanation_is_unbeatable_only_without_more_findings_lost_replies_or_events() -> None:
    from fsm.conformance.clients import Finding, _Machines, _Run, _unbeatable
    from fsm.outcome import ProbeVerdict

    events: list[dict[str, Any]] = [{"op": "SEQUENCE_CREATE"}, {"op": "DO_PUT_OPEN"}]
    start = _Run(events, set(), "Null", "writer", "Report", {}, [], [], [])
    start.machines = _Machines.of(SPEC)
    done = start.fork()
    done.consumed |= {0, 1}
    assert _unbeatable(done, start)
    partial_ = start.fork()
    partial_.consumed.add(0)  # the stream's opening is left unexplained
    assert not _unbeatable(partial_, start)
    deviated = done.fork()
    deviated.findings.append(Finding(0, "deviation", "SDK-X", "a deviation"))
    assert not _unbeatable(deviated, start)
    assumed = done.fork()
    assumed.lost[0] = ProbeVerdict.APPLIED
    assert not _unbeatable(assumed, start)


def test_each_exploration_judges_its_traces_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """The judge's memory of accepted traces lasts one exploration (its workers keep it from
    one chunk of runs to the next): a second exploration checks every trace again."""
    first = _server_traces(monkeypatch)
    second = _server_traces(monkeypatch)
    assert len(first) == len(second) > 50
    assert [events for events, _ in first] == [events for events, _ in second]
