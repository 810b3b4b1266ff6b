"""Failure paths per protocol line: `simulate --protocol X` runs the engine of line X against
a server of line X, with faults on every call the line makes (its handshake included), and
judges each run by that line's tables."""

from __future__ import annotations

import functools
import io

import pytest

from fsm import simulate
from fsm.cli import main
from fsm.simulate.invariants import ended_states
from fsm.simulate.plans import parse_fault
from fsm.spec.lines import line_names, load_line
from transport.conformance_runs import memory_world

LATER = [name for name in line_names() if load_line(name).base is not None]
# The purges and the sessions that end them, whose rows the later lines change.
PURGES = ["writer-delete-session-error", "updater-delete-session-error", "writer-report-1-topic"]


@pytest.mark.parametrize("line", LATER)
def test_single_faults_keep_every_invariant_on_each_line(line: str) -> None:
    world = functools.partial(memory_world, protocol=line)
    result = simulate.explore(simulate.select(PURGES), world, faults=1, protocol=line)
    assert result.protocol == line
    assert result.runs and result.violations == 0, simulate.to_text(result)
    handshake = load_line(line).wire["connect"]
    faulted = {f.operation for run in result.runs for f in run.faults}
    if handshake in ("version", "info"):
        assert handshake.upper() in faulted, "the line's handshake is a call faults reach"
    assert "SESSION_DELETE" in faulted, "the later lines purge the session, then the sequence"


def test_a_refused_handshake_leaves_nothing_and_is_judged() -> None:
    """A 0.7 client whose info request fails cannot connect: it raises, nothing is written,
    and every invariant holds."""
    world = functools.partial(memory_world, protocol="0.7")
    result = simulate.replay(
        simulate.select(["writer-report-1-topic"]),
        [parse_fault("INFO#1:internal")],
        world,
        protocol="0.7",
    )
    (run,) = result.runs
    assert run.fired and run.client == "Null" and "INFO" in run.raised
    assert not run.violations, run.verdicts


def test_where_a_session_may_end_follows_the_lines_table() -> None:
    assert ended_states(load_line("0.3").spec.session) == {"Finalized", "Error"}
    # From 0.6 a Delete purge leaves the writer's status null (row exit-error-delete-writer).
    assert ended_states(load_line("0.6").spec.session) == {"Finalized", "Error", "Null"}


def test_the_command_takes_a_line() -> None:
    out = io.StringIO()
    code = main(["simulate", "--protocol", "0.5", "--scenario", "writer-delete-session-error"], out)
    assert code == 0 and "0 with violations" in out.getvalue()
    assert main(["simulate", "--protocol", "9.9"], io.StringIO()) == 2
