"""The invariants every simulated run must keep, and their verdicts.

A run that told its user that a reply was lost and could not be settled (an `OutcomeUnknown`
raised, or a probe that found nothing conclusive) may legitimately leave the server in either
state, so the invariants about server state answer `unknown` rather than `violated` there, as
Jepsen does. The checks of traces and of what the user saw are never relaxed.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from fsm.errors import ActionFailed
from fsm.simulate.facts import NA, OK, UNKNOWN, VIOLATED, Facts, Verdict, succeeded
from fsm.simulate.judge import Judge
from fsm.simulate.scenarios import SEQUENCE, Boom
from fsm.simulate.view import ServerView, SimulationError
from fsm.spec.model import MachineSpec

__all__ = ["INVARIANTS", "check_run", "describe", "describe_server"]

INVARIANTS: dict[str, str] = {
    "terminal": "the run ends in a terminal state (Null only when entering was refused)",
    "errors-surface": "the user sees an error exactly when the session did not finalize, "
    "and only their own exception or a protocol failure",
    "finalized-kept": "Finalized: the session is locked and every pushed record reads back",
    "report-kept": "Error under Report: the session is unlocked and notified, and every record "
    "pushed to a cleanly ended stream reads back",
    "delete-purged": "Error under Delete: the new sequence (writer) or the session and its "
    "topics (updater) are gone",
    "no-orphans": "nothing is left that the client does not know about",
    "client-server-agree": "the client's and the server's states agree, and so do their views "
    "of the session's last finalize and purge",
    "engine-trace": "every transition the engine took is a row of the tables",
    "client-conformance": "what the server saw the client do is explained by the tables",
}
_RELAXED = frozenset(
    {"finalized-kept", "report-kept", "delete-purged", "no-orphans", "client-server-agree"}
)


_ACTIVE = frozenset({"Active", "IgnoredLastError", "RaisedException"})


def ended_states(session: MachineSpec) -> frozenset[str]:
    """The states a session writer may end its block in, by its table: the terminals, and
    the initial state where a row leads an opened session back to it (a line whose Delete
    purge leaves the writer's status null)."""
    back = {
        row.dest
        for row in session.transitions
        if row.source != session.initial and row.dest == session.initial
    }
    return frozenset(session.terminals) | back


def _terminal(facts: Facts, ended: frozenset[str]) -> Verdict:
    if facts.status in ended:
        open_topics = [n for n, (_, st) in facts.topics.items() if st in _ACTIVE]
        if open_topics:
            return Verdict("terminal", VIOLATED, f"topic writers still open: {open_topics}")
        return Verdict("terminal", OK)
    if facts.status == "Null" and isinstance(facts.raised, ActionFailed):
        return Verdict("terminal", OK)
    return Verdict(
        "terminal", VIOLATED, f"the session ends {facts.status} (raised {describe(facts.raised)})"
    )


def _errors_surface(facts: Facts) -> Verdict:
    raised = facts.raised
    if raised is not None and not isinstance(raised, (Boom, ActionFailed)):
        return Verdict("errors-surface", VIOLATED, f"the user saw {describe(raised)}")
    if facts.status == "Finalized" and raised is not None:
        return Verdict("errors-surface", VIOLATED, f"Finalized, yet {describe(raised)} was raised")
    if facts.status in ("Error", "Null") and raised is None:
        return Verdict("errors-surface", VIOLATED, f"the session ends {facts.status} silently")
    return Verdict("errors-surface", OK)


def _records_lost(facts: Facts, view: ServerView, names: list[str]) -> str | None:
    for name in names:
        locator, _ = facts.topics[name]
        stored = view.records(locator)
        pushed = list(facts.pushed.get(name, ()))
        if stored != pushed:
            return f"{locator}: {len(pushed)} records pushed, {len(stored)} read back"
    return None


def _finalized_kept(facts: Facts, view: ServerView) -> Verdict:
    name = "finalized-kept"
    if facts.status != "Finalized":
        return Verdict(name, NA)
    session = view.session(facts.session_uuid)
    if session is None or not session.locked:
        return Verdict(name, VIOLATED, "the Finalized session is not locked on the server")
    lost = _records_lost(facts, view, list(facts.topics))
    return Verdict(name, VIOLATED, lost) if lost else Verdict(name, OK)


def _report_kept(facts: Facts, view: ServerView) -> Verdict:
    name = "report-kept"
    if facts.status != "Error" or facts.scenario.policy.name != "Report":
        return Verdict(name, NA)
    session = view.session(facts.session_uuid)
    if session is None:
        return Verdict(name, VIOLATED, "the session is gone")
    if session.locked:
        return Verdict(name, VIOLATED, "the session is locked")
    if facts.last_failed("SEQUENCE_NOTIFICATION_CREATE") is not True and not view.notified():
        return Verdict(name, VIOLATED, "the sequence carries no error notification")
    clean = [
        n for n, (locator, _) in facts.topics.items() if (t := view.topic(locator)) and t.locked
    ]
    lost = _records_lost(facts, view, clean)
    return Verdict(name, VIOLATED, lost) if lost else Verdict(name, OK)


def _delete_purged(facts: Facts, view: ServerView) -> Verdict:
    name = "delete-purged"
    if facts.status != "Error" or facts.scenario.policy.name != "Delete":
        return Verdict(name, NA)
    purge = "SEQUENCE_DELETE" if facts.scenario.role == "writer" else "SESSION_DELETE"
    failed = facts.last_failed(purge)
    if failed is None:
        return Verdict(name, VIOLATED, f"no {purge} was sent")
    if failed:
        return Verdict(name, NA, f"{purge} failed and the user was told")
    if facts.scenario.role == "writer":
        if view.sequence() is not None:
            return Verdict(name, VIOLATED, "the new sequence is still there")
        return Verdict(name, OK)
    if view.session(facts.session_uuid) is not None:
        return Verdict(name, VIOLATED, "the session is still there")
    left = [loc for loc, _ in facts.topics.values() if view.topic(loc) is not None]
    if left:
        return Verdict(name, VIOLATED, f"topics still there: {left}")
    return Verdict(name, OK)


def _no_orphans(facts: Facts, view: ServerView) -> Verdict:
    name = "no-orphans"
    sequence = view.sequence()
    if facts.status == "Null":
        if facts.scenario.role == "writer" and sequence is not None:
            if facts.last_failed("SEQUENCE_DELETE"):
                return Verdict(name, NA, "removing the new sequence failed and the user was told")
            return Verdict(name, VIOLATED, "an orphan sequence is left after a refused enter")
        if facts.scenario.role == "updater" and view.new_sessions(facts.setup_sessions):
            return Verdict(name, VIOLATED, "an extra session is left after a refused enter")
    known = {locator for locator, _ in facts.topics.values()}
    excused = {f"{SEQUENCE}/{n}" for n in facts.undeletable_topics()}
    unknown = [
        t
        for s in view.new_sessions(facts.setup_sessions)
        for t in s.topics
        if t not in known and t not in excused
    ]
    if unknown:
        return Verdict(name, VIOLATED, f"topics the client does not know: {unknown}")
    return Verdict(name, OK)


def _steps_disagree(facts: Facts, view: ServerView) -> str | None:
    """Where the client's belief about its last finalize or purge (it took effect, directly
    or as its probe found) differs from what the server holds."""
    session = view.session(facts.session_uuid)
    writer = facts.scenario.role == "writer"
    purge = "SEQUENCE_DELETE" if writer else "SESSION_DELETE"
    purges = facts.session_steps(purge)
    if purges and facts.session_uuid is not None:
        applied = succeeded(purges[-1])
        gone = view.sequence() is None if writer else session is None
        if applied != gone:
            believed = "took effect" if applied else "did not take effect"
            held = "no longer holds" if gone else "still holds"
            return f"the client believes its {purge} {believed}; the server {held} it"
    finalizes = facts.session_steps("SESSION_FINALIZE")
    if finalizes and session is not None:
        applied = succeeded(finalizes[-1])
        if applied != (session.completed_at_ns is not None):
            believed = "took effect" if applied else "did not take effect"
            return f"the client believes its SESSION_FINALIZE {believed}; the server disagrees"
    return None


def _agree(facts: Facts, view: ServerView) -> Verdict:
    name = "client-server-agree"
    session = view.session(facts.session_uuid)
    locked = session is not None and session.locked
    if (facts.status == "Finalized") != locked:
        server = "locked" if locked else "not locked"
        return Verdict(name, VIOLATED, f"client {facts.status}, server session {server}")
    disagreement = _steps_disagree(facts, view)
    if disagreement is not None:
        return Verdict(name, VIOLATED, disagreement)
    if session is None:
        return Verdict(name, OK)  # nothing left to compare (purged, or never registered)
    for _, (locator, status) in sorted(facts.topics.items()):
        topic = view.topic(locator)
        if status == "Finalized" and (topic is None or not topic.locked):
            return Verdict(name, VIOLATED, f"topic {locator} Finalized, not locked on the server")
    return Verdict(name, OK)


_READING: dict[str, Callable[[Facts, ServerView], Verdict]] = {
    "finalized-kept": _finalized_kept,
    "report-kept": _report_kept,
    "delete-purged": _delete_purged,
    "no-orphans": _no_orphans,
    "client-server-agree": _agree,
}
"""The invariants that read the server (unknown when a read fails)."""


def _read_and_check(name: str, facts: Facts, view: ServerView) -> Verdict:
    try:
        return _READING[name](facts, view)
    except SimulationError as error:
        return Verdict(name, UNKNOWN, f"the server could not be read: {error}")


def check_run(facts: Facts, view: ServerView, judge: Judge) -> tuple[Verdict, ...]:
    """Every invariant's verdict for one run, in the order of `INVARIANTS`."""
    verdicts = [
        _terminal(facts, ended_states(judge.spec.session)),
        _errors_surface(facts),
        *(_read_and_check(name, facts, view) for name in _READING),
        judge.engine_trace(facts),
        judge.conformance(facts),
    ]
    if facts.unsettled:
        verdicts = [
            attrs.evolve(v, status=UNKNOWN)
            if v.status == VIOLATED and v.invariant in _RELAXED
            else v
            for v in verdicts
        ]
    return tuple(verdicts)


# -----------------------------------------------------------------------------------------------
# Describing a run


def describe(raised: BaseException | None) -> str:
    """What the user saw, in a few words."""
    if raised is None:
        return "-"
    if isinstance(raised, ActionFailed):
        return f"{type(raised).__name__}({raised.operation}: {raised.kind.value})"
    if isinstance(raised, Boom):
        return "Boom"
    return f"{type(raised).__name__}: {raised}"


def describe_server(facts: Facts, view: ServerView) -> str:
    """The server's side of a run in a few words, e.g. `locked 2/2 topics`."""
    try:
        return _server_text(facts, view)
    except SimulationError:
        return "unreadable"


def _server_text(facts: Facts, view: ServerView) -> str:
    sequence = view.sequence()
    if sequence is None:
        return "seq gone" if facts.scenario.role == "writer" else "sequence missing"
    sessions = view.new_sessions(facts.setup_sessions)
    if facts.status == "Null" or facts.session_uuid is None:
        if facts.scenario.role == "writer":
            return f"seq left, {len(sessions)} session(s)"
        return f"{len(sessions)} new session(s)"
    session = sequence.session(facts.session_uuid)
    if session is None:
        return "session gone"
    if session.locked:
        state = "locked"
    elif session.completed_at_ns is not None:
        state = "finalized unlocked"
    else:
        state = "open"
    topics = [sequence.topic(t) for t in session.topics]
    locked = sum(1 for t in topics if t is not None and t.locked)
    text = f"{state} {locked}/{len(topics)} topics"
    if view.notified():
        text += ", notified"
    return text
