"""Client conformance: check what a server saw a client do against the tables.

The input is the server-side trace of one sequence (see `transport.server.trace`): every
request the client made, with the server's answer, plus optional client annotations (`PUSH`
events: records a push accepted). No client code is needed, so any client, the real SDK
included, can be checked.

The checker searches for a run of the session table (and of the topic-writer table for each
topic) that produces exactly the observed requests in order, choosing the triggers a client
may have fired and the error policy it may have used. Requests that no row explains are
compared with the recorded client deviations (`specs/deviations.toml`, who = sdk-0.3.2): a
match is reported by its id and the search goes on; anything else is the first violation,
reported with the rows the table allowed there.

A server trace cannot show a reply the client lost (the server applied the request; the
client saw an unknown outcome and took the table's route for it). With `lost_replies` > 0
the checker may make that many assumptions, where no other explanation accepts the trace:
a lost reply, at a request whose step routes an unknown outcome, whose probe found what the
server did or nothing conclusive (one assumption), or the opposite of what the server did
(two: the probe's own answer went wrong too). Each lost reply is listed in `accepted`.

Requests are ordered as the server saw them, with two allowances that the protocol forces:
a DoPut stream's own events (its opening, its batches, a cancellation) travel on their own
connection and may reach the server in any order relative to other requests, so they are
matched by topic rather than by position; and topics closed together at the end of a session
may be closed in any interleaving.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from fsm.machines import Executor, ProtocolMachine, Walk
from fsm.outcome import ErrorKind, Outcome, ProbeVerdict
from fsm.spec.model import Deviation, MachineSpec, Spec, Step, Transition

__all__ = ["ClientReport", "Finding", "check_client_trace", "group_by_sequence"]

# Requests that read or administer, and never take part in a session's lifecycle.
NEUTRAL = frozenset(
    {
        "LIST_FLIGHTS",
        "DO_GET",
        "QUERY",
        "VERSION",
        "SEQUENCE_NOTIFICATION_LIST",
        "TOPIC_NOTIFICATION_LIST",
        "SEQUENCE_NOTIFICATION_PURGE",
        "TOPIC_NOTIFICATION_PURGE",
        "API_KEY_CREATE",
        "API_KEY_STATUS",
        "API_KEY_REVOKE",
        "UNKNOWN_ACTION",
        "GET_FLIGHT_INFO",
        # Later protocol lines (specs/lines/): their handshake, schema read and topic filters.
        "INFO",
        "GET_SCHEMA",
        "TOPIC_FILTER_CLUSTERIZE",
        "TOPIC_FILTER_INTERSECT",
    }
)
# A DoPut stream's own events: matched by topic, not by position.
STREAM_EVENTS = frozenset({"DO_PUT_OPEN", "DO_PUT_WRITE", "DO_PUT_CANCEL"})
# Table steps whose request the server sees under another name.
WIRE_NAME = {"STREAM_CLOSE": "DO_PUT_END"}
TOPIC_SCOPED = frozenset({"TOPIC_NOTIFICATION_CREATE", "DO_PUT_END"})


@attrs.frozen
class Finding:
    """A deviation (with its id) or a violation found at trace event `index`."""

    index: int
    kind: str  # "deviation" or "violation"
    rule: str  # a deviation id, or the table rows concerned
    message: str

    def __str__(self) -> str:
        label = "DEVIATION" if self.kind == "deviation" else "VIOLATION"
        where = f"event {self.index}" if self.index >= 0 else "the end of the trace"
        return f"{label} {self.rule} at {where}: {self.message}"


@attrs.frozen
class ClientReport:
    sequence: str
    role: str | None
    policy: str | None
    accepted: tuple[str, ...]
    findings: tuple[Finding, ...]

    @property
    def deviations(self) -> tuple[str, ...]:
        return tuple(f.rule for f in self.findings if f.kind == "deviation")

    @property
    def violation(self) -> Finding | None:
        return next((f for f in self.findings if f.kind == "violation"), None)

    @property
    def conforms(self) -> bool:
        return not self.findings


class _Mismatch(Exception):
    """A trace that disagrees with a table at event `index`. Private control flow, outside the
    error hierarchy: the matchers catch it and report the deepest one as a finding."""

    def __init__(self, index: int, expected: str, found: str, rows: Sequence[str]) -> None:
        self.index = index
        self.expected = expected
        self.found = found
        self.rows = tuple(rows)
        super().__init__(f"expected {expected}, found {found}")


@attrs.define
class _Topic:
    state: str
    policy: str | None = None  # TopicLevelErrorPolicy member name, once a row needed it

    def follow(self, machine: ProtocolMachine, result: Walk, context: Mapping[str, str]) -> None:
        """Take the row the walk ended in, moved by the topic-writer machine."""
        self.state = machine.follow(self.state, result.taken, context)


@attrs.frozen
class _Machines:
    """The tables' machines, which move every candidate run: built once per trace."""

    session: ProtocolMachine
    topic_writer: ProtocolMachine
    # The tables' answers, which every candidate run asks again and again: (table, state,
    # trigger, context) -> the row (None when none applies), (table, state, context) -> the
    # user triggers some row accepts there. The tables are immutable; so are these answers.
    _rows: dict[tuple[str, str, str, tuple[tuple[str, str], ...]], Transition | None] = attrs.field(
        factory=dict, init=False
    )
    _allowed: dict[tuple[str, str, tuple[tuple[str, str], ...]], tuple[str, ...]] = attrs.field(
        factory=dict, init=False
    )

    def lookup(
        self, table: MachineSpec, state: str, trigger: str, context: Mapping[str, str]
    ) -> Transition | None:
        """`table.lookup`, answered once per state, trigger and context."""
        key = (table.name, state, trigger, tuple(sorted(context.items())))
        try:
            return self._rows[key]
        except KeyError:
            row = self._rows[key] = table.lookup(state, trigger, context)
            return row

    def allowed(
        self, table: MachineSpec, state: str, context: Mapping[str, str]
    ) -> tuple[str, ...]:
        """`table.allowed` (user triggers), answered once per state and context."""
        key = (table.name, state, tuple(sorted(context.items())))
        found = self._allowed.get(key)
        if found is None:
            found = self._allowed[key] = tuple(table.allowed(state, context))
        return found

    def walk(
        self,
        table: MachineSpec,
        state: str,
        trigger: str,
        context: Mapping[str, str],
        matcher: Executor,
    ) -> Walk:
        """`walk` from the machine's plan of the row, resolved once per state, trigger and
        context."""
        machine = self.session if table is self.session.spec else self.topic_writer
        return machine.plan(state, trigger, context).walk(table, context, matcher)

    @classmethod
    def of(cls, spec: Spec) -> _Machines:
        """The machines of `spec`, built once per spec object (a few are kept)."""
        kept = _MACHINES.get(id(spec))
        if kept is not None and kept[0] is spec:
            return kept[1]
        machines = cls(ProtocolMachine(spec.session), ProtocolMachine(spec.topic_writer))
        if len(_MACHINES) >= 8:
            _MACHINES.clear()
        _MACHINES[id(spec)] = (spec, machines)
        return machines


_MACHINES: dict[int, tuple[Spec, _Machines]] = {}

STOP_AT_UNBEATABLE = True
"""The search stops trying moves once one explains the rest of the trace so that no other
can explain it better (see `_unbeatable`); False searches every move (the same report)."""


@attrs.frozen
class _Order:
    """Which events take part in the lifecycle, computed once per trace and shared by forks."""

    lifecycle: tuple[int, ...]
    lifecycle_set: frozenset[int]
    consumable: frozenset[int]
    """Every event a run may ever explain (`_Run.consumed` stays within it): the lifecycle
    requests, a stream's opening and cancellation, the updater's look-up of its sequence."""

    @classmethod
    def of(cls, events: Sequence[Mapping[str, Any]]) -> _Order:
        indices = tuple(
            i
            for i, event in enumerate(events)
            if event.get("source", "server") == "server"
            and str(event.get("op")) not in NEUTRAL
            and str(event.get("op")) not in STREAM_EVENTS
        )
        consumable = frozenset(indices).union(
            i
            for i, event in enumerate(events)
            if event.get("op") in ("DO_PUT_OPEN", "DO_PUT_CANCEL")
            or (event.get("op") == "GET_FLIGHT_INFO" and not event.get("topic"))
        )
        return cls(indices, frozenset(indices), consumable)


@attrs.define
class _Run:
    """One candidate explanation of the trace, advanced move by move."""

    events: list[Mapping[str, Any]]
    consumed: set[int]
    session: str
    role: str
    policy: str
    topics: dict[str, _Topic]
    topic_order: list[str]
    accepted: list[str]
    findings: list[Finding]
    last_op: str | None = None
    sessions: list[list[str]] = attrs.field(factory=list)
    order: _Order = attrs.field(default=None)
    lost: dict[int, ProbeVerdict] = attrs.field(factory=dict)  # replies assumed lost
    lost_left: int = 0  # how many more may be assumed
    candidates: list[int] = attrs.field(factory=list)  # requests a lost reply could explain
    requests_lost_left: int = 0  # how many requests may be assumed lost before the server
    machines: _Machines = attrs.field(default=None)  # shared by forks

    def __attrs_post_init__(self) -> None:
        if self.order is None:
            self.order = _Order.of(self.events)

    def violation_free(self) -> bool:
        return not any(f.kind == "violation" for f in self.findings)

    def fork(self) -> _Run:
        return _Run(
            self.events,
            set(self.consumed),
            self.session,
            self.role,
            self.policy,
            {name: _Topic(t.state, t.policy) for name, t in self.topics.items()},
            list(self.topic_order),
            list(self.accepted),
            list(self.findings),
            self.last_op,
            [list(x) for x in self.sessions],
            self.order,
            dict(self.lost),
            self.lost_left,
            list(self.candidates),
            self.requests_lost_left,
            self.machines,
        )

    # -- reading the trace ------------------------------------------------------------------

    def lifecycle(self, index: int) -> bool:
        return index in self.order.lifecycle_set

    def next_lifecycle(self, start: int = 0) -> int | None:
        """The first request not yet explained that takes part in the lifecycle."""
        consumed = self.consumed
        for i in self.order.lifecycle:
            if i >= start and i not in consumed:
                return i
        return None

    def describe(self, index: int | None) -> str:
        if index is None or index >= len(self.events):
            return "the end of the trace"
        event = self.events[index]
        where = f" on {event['topic']}" if event.get("topic") else ""
        return f"{event.get('op')}{where} ({event.get('outcome', 'ok')})"

    def take(self, index: int) -> Outcome:
        self.consumed.add(index)
        event = self.events[index]
        self.last_op = str(event.get("op"))
        outcome = str(event.get("outcome", "ok"))
        if outcome == "ok":
            return Outcome.ok()
        try:
            kind = ErrorKind(outcome)
        except ValueError:
            kind = ErrorKind.INTERNAL
        return Outcome.failed(kind, f"the server answered {outcome}")

    def stream_failed(self, topic: str, before: int) -> Outcome | None:
        """A server-side end of `topic`'s stream other than a clean one, seen before event
        `before` (a failure the server recorded later cannot explain an earlier close)."""
        for i, event in enumerate(self.events[:before]):
            if event.get("topic") != topic or event.get("source", "server") != "server":
                continue
            op, outcome = event.get("op"), str(event.get("outcome", "ok"))
            if (
                op == "DO_PUT_CANCEL" or (op in ("DO_PUT_WRITE", "DO_PUT_OPEN") and outcome != "ok")
            ) and (i not in self.consumed):
                kind = (
                    ErrorKind(outcome)
                    if outcome in {k.value for k in ErrorKind}
                    else ErrorKind.CANCELLED
                )
                return Outcome.failed(kind, f"the server ended the stream ({outcome})")
        return None


class _Matcher:
    """Performs table steps by matching them against the trace (the walk's executor)."""

    def __init__(
        self, run: _Run, spec: Spec, deviations: Sequence[Deviation], topic: str | None = None
    ) -> None:
        self.run = run
        self.spec = spec
        self.deviations = deviations
        self.topic = topic  # the topic of a topic walk, or of a topic being created
        self.window_end: int | None = None  # for topic walks of a fan-out
        self._probed: ProbeVerdict | None = None

    def probe(self, probe: str, step: Step, row: Transition, outcome: Outcome) -> ProbeVerdict:
        """What the client's probe found of a reply assumed lost (server traces show no
        probe verdicts: without that assumption there is nothing to settle)."""
        return self._probed or ProbeVerdict.UNRESOLVED

    def _taken(self, index: int, step: Step) -> Outcome:
        """Explain `step` by request `index`: its outcome, or unknown when its reply is
        assumed lost."""
        run = self.run
        outcome = run.take(index)
        if step.unknown is not None and index not in run.candidates:
            run.candidates.append(index)
        verdict = run.lost.get(index)
        if verdict is None:
            return outcome
        self._probed = verdict
        run.accepted.append(
            f"reply lost: {run.describe(index)}, the client's probe found {verdict.value}"
        )
        return Outcome.unknown(f"the reply to {run.describe(index)} was lost")

    def perform(self, step: Step, row: Transition) -> Outcome:
        run = self.run
        self._probed = None
        if step.topics is not None:
            return self._fan_out(step.topics, row)
        op = step.do or ""
        if op == "STREAM_WRITE":
            return Outcome.ok()  # batches are matched by topic, see module docstring
        if op == "STREAM_OPEN":
            return self._stream_open(step)
        if op == "STREAM_ABORT":
            return self._stream_abort(row)
        if op == "STREAM_CLOSE" and self.topic is not None:
            index = self._next_for_topic()
            horizon = self.window_end if self.window_end is not None else run.next_lifecycle()
            failed = run.stream_failed(self.topic, len(run.events) if horizon is None else horizon)
            if index is None or run.events[index].get("op") != "DO_PUT_END":
                if failed is not None:
                    return failed  # the stream died earlier: the close fails on the client
                return self._missing(op, index, row, step)
            return self._taken(index, step)
        wire = WIRE_NAME.get(op, op)
        index = (
            self._next_for_topic()
            if (self.topic is not None and wire in TOPIC_SCOPED)
            else run.next_lifecycle()
        )
        if op == "GET_FLIGHT_INFO":
            index = self._next_read(index)
        if (
            index is None
            or run.events[index].get("op") != wire
            or not self._same_topic(index, wire)
        ):
            if step.optional:
                return Outcome.ok()  # a read this client left out, as the row allows
            return self._missing(op, index, row, step)
        return self._taken(index, step)

    # -- steps ---------------------------------------------------------------------------

    def _same_topic(self, index: int, wire: str) -> bool:
        if wire in ("TOPIC_CREATE", "TOPIC_DELETE") or wire in TOPIC_SCOPED:
            return self.topic is None or self.run.events[index].get("topic") == self.topic
        return True

    def _next_read(self, before: int | None) -> int | None:
        """The updater's look-up of its sequence: a GetFlightInfo before its next request."""
        run = self.run
        stop = before if before is not None else len(run.events)
        for i in range(stop):
            if (
                i not in run.consumed
                and run.events[i].get("op") == "GET_FLIGHT_INFO"
                and not run.events[i].get("topic")
            ):
                return i
        return before

    def _next_for_topic(self) -> int | None:
        run = self.run
        end = self.window_end if self.window_end is not None else len(run.events)
        for i in range(end):
            if i in run.consumed or not run.lifecycle(i):
                continue
            if run.events[i].get("topic") == self.topic:
                return i
            if self.window_end is None:
                return i  # outside a fan-out, requests keep their order
        return None

    def _stream_open(self, step: Step) -> Outcome:
        run = self.run
        for i, event in enumerate(run.events):
            if (
                i not in run.consumed
                and event.get("op") == "DO_PUT_OPEN"
                and event.get("topic") == self.topic
            ):
                return self._taken(i, step)
        return Outcome.ok()  # the open may not have reached the server yet; its data will tell

    def _stream_abort(self, row: Transition) -> Outcome:
        """An abort is local to the client; the server may see the stream cancelled."""
        run = self.run
        for i, event in enumerate(run.events):
            if (
                i not in run.consumed
                and event.get("op") == "DO_PUT_CANCEL"
                and event.get("topic") == self.topic
            ):
                run.consumed.add(i)
                break
        return Outcome.ok()

    def _fan_out(self, trigger: str, row: Transition) -> Outcome:
        """Fire `trigger` on every open topic; their requests may interleave freely up to the
        session's next request."""
        run = self.run
        topic_spec = self.spec.topic_writer
        open_topics = [
            t for t in run.topic_order if run.topics[t].state not in topic_spec.terminals
        ]
        end = run.next_lifecycle()
        while end is not None and run.events[end].get("op") in TOPIC_SCOPED:
            end = run.next_lifecycle(end + 1)
        end = len(run.events) if end is None else end
        failed = False
        for topic in open_topics:
            sub = _Matcher(run, self.spec, self.deviations, topic)
            sub.window_end = end
            if _walk_topic(topic_spec, run.topics[topic], trigger, run.policy, sub) is None:
                failed = True
        leftover = [
            i
            for i in range(end)
            if i not in run.consumed
            and run.lifecycle(i)
            and run.events[i].get("topic") in open_topics
        ]
        if leftover:
            raise _Mismatch(
                leftover[0],
                "no more requests for the closed topics",
                run.describe(leftover[0]),
                [row.id],
            )
        return (
            Outcome.failed(ErrorKind.CANCELLED, "a topic failed to close")
            if failed
            else Outcome.ok()
        )

    # -- deviations -----------------------------------------------------------------------

    def _missing(self, op: str, index: int | None, row: Transition, step: Step) -> Outcome:
        """A step whose request is not where the table expects it: a recorded deviation, or,
        when the run may assume it, a request lost before the server saw it (the client
        saw unknown, and its probe found the request not applied)."""
        for dev in self.deviations:
            sig = dev.signature
            if sig.get("missing") != op:
                continue
            if "policy" in sig and sig["policy"] != self.run.policy:
                continue
            failed_op = sig.get("failed")
            earlier = [
                i
                for i in self.run.consumed
                if self.run.events[i].get("op") == failed_op
                and self.run.events[i].get("outcome", "ok") != "ok"
            ]
            if failed_op and earlier:
                self.run.findings.append(
                    Finding(
                        index if index is not None else len(self.run.events),
                        "deviation",
                        dev.id,
                        f"row {row.id} requires {op}, the client sent {self.run.describe(index)}: {dev.summary}",
                    )
                )
                return Outcome.ok()
        if step.unknown is not None and self.run.requests_lost_left > 0:
            self.run.requests_lost_left -= 1
            self._probed = ProbeVerdict.NOT_APPLIED
            self.run.accepted.append(
                f"request lost: {op} never reached the server, the client's probe found not_applied"
            )
            return Outcome.unknown(f"the {op} request was lost")
        raise _Mismatch(
            index if index is not None else len(self.run.events),
            op,
            self.run.describe(index),
            [row.id],
        )


def _walk_topic(
    spec: MachineSpec, topic: _Topic, trigger: str, session_policy: str, matcher: _Matcher
) -> str | None:
    """Run a topic trigger; returns the new state, or None when it ended with a failure."""
    # The session's fan-out rows do not depend on the topic policy; a topic's own exit_error
    # row does, and its policy is set by the move that fires it.
    policies = [topic.policy] if topic.policy else ["Raise"]
    last: _Mismatch | None = None
    for policy in policies:
        context = {"policy": policy, "session_policy": session_policy}
        run = matcher.run
        row = run.machines.lookup(spec, topic.state, trigger, context)
        if row is None:
            continue
        saved = (set(run.consumed), run.last_op, len(run.findings))
        try:
            result = run.machines.walk(spec, topic.state, trigger, context, matcher)
        except _Mismatch as mismatch:
            run.consumed, run.last_op = saved[0], saved[1]
            del run.findings[saved[2] :]
            last = mismatch
            continue
        if "policy" in row.when or "policy" in result.taken.when:
            topic.policy = policy
        topic.follow(run.machines.topic_writer, result, context)
        matcher.run.accepted.append(
            f"topic {matcher.topic}: --{trigger}--> {result.taken.dest} [{result.taken.id}]"
        )
        return None if result.taken.error == "cause" else result.taken.dest
    if last is not None:
        raise last
    raise _Mismatch(len(matcher.run.events), trigger, "no row of the topic table", [])


def _moves(run: _Run, spec: Spec) -> list[tuple[str, str | None, str | None]]:
    """Triggers a client may fire next: (trigger, topic or None for the session, the topic's
    policy where the topic's row depends on it)."""
    session = spec.session
    index = run.next_lifecycle()
    if index is None:
        return []
    event = run.events[index]
    moves: list[tuple[str, str | None, str | None]] = []
    context = {"role": run.role, "policy": run.policy}
    for trigger in run.machines.allowed(session, run.session, context):
        moves.append((trigger, None, None))
    topic = event.get("topic")
    if isinstance(topic, str) and topic in run.topics and event.get("op") in TOPIC_SCOPED:
        known = run.topics[topic]
        if known.state not in spec.topic_writer.terminals:
            # Raise sends nothing, so only Finalize and Ignore show in a trace; each is a move
            # of its own, so a wrong guess can be undone by the search.
            for policy in [known.policy] if known.policy else ["Finalize", "Ignore"]:
                moves.append(("exit_error", topic, policy))
    return moves


def _apply(
    run: _Run,
    spec: Spec,
    deviations: Sequence[Deviation],
    trigger: str,
    topic: str | None,
    topic_policy: str | None = None,
) -> None:
    """Fire one trigger on `run` (mutating it); _Mismatch when the trace disagrees."""
    if topic is not None:
        matcher = _Matcher(run, spec, deviations, topic)
        if topic_policy is not None:
            run.topics[topic].policy = topic_policy
        _walk_topic(spec.topic_writer, run.topics[topic], trigger, run.policy, matcher)
        return
    session = spec.session
    context = {"role": run.role, "policy": run.policy}
    new_topic = None
    if trigger == "topic_create":
        index = run.next_lifecycle()
        if index is None or run.events[index].get("op") != "TOPIC_CREATE":
            raise _Mismatch(
                index if index is not None else len(run.events),
                "TOPIC_CREATE",
                run.describe(index),
                ["topic-create"],
            )
        new_topic = str(run.events[index].get("topic"))
    matcher = _Matcher(run, spec, deviations, new_topic)
    result = run.machines.walk(session, run.session, trigger, context, matcher)
    before = run.session
    run.session = run.machines.session.follow(run.session, result.taken, context)
    if new_topic is not None and result.taken.id == "topic-create":
        run.topics[new_topic] = _Topic(spec.topic_writer.initial)
        run.topic_order.append(new_topic)
    run.accepted.append(f"session: {before} --{trigger}--> {run.session} [{result.taken.id}]")


def _search(run: _Run, spec: Spec, deviations: Sequence[Deviation], depth: int = 0) -> _Run:
    """The best explanation of the rest of the trace from `run`: the one that consumes the
    most, with the fewest deviations; a violation is recorded where every move fails."""
    index = run.next_lifecycle()
    if index is None:
        return _search_at_end(run, spec, deviations, depth)
    event = run.events[index]
    if (
        event.get("op") in ("SEQUENCE_CREATE", "SESSION_CREATE")
        and run.session in spec.session.terminals
    ):
        return _next_session(run, spec, deviations, str(event.get("op")), depth)
    repeated = _repeated_request(run, index, deviations)
    if repeated is not None:
        return _search(repeated, spec, deviations, depth + 1)
    best, deepest = _best_move(run, index, spec, deviations, depth)
    if best is not None and best.violation_free():
        return best
    failed = run.fork()
    allowed = _moves(run, spec)
    where = (
        deepest.rows if deepest is not None and deepest.rows else tuple(t for t, _, _ in allowed)
    )
    message = (
        f"{deepest.expected} was expected, the client sent {deepest.found}"
        if deepest is not None
        else f"no row of {spec.session.name} in {run.session} explains {run.describe(index)}"
    )
    failed.findings.append(
        Finding(
            deepest.index if deepest else index,
            "violation",
            ", ".join(where) or run.session,
            message,
        )
    )
    if best is not None and _better(best, failed):
        return best
    return failed


def _search_at_end(run: _Run, spec: Spec, deviations: Sequence[Deviation], depth: int) -> _Run:
    """The trace has no lifecycle request left: the session must have ended (or never
    started after a refused enter)."""
    if run.session == spec.session.initial and run.accepted:
        return run  # the client gave up after a refused enter
    if run.session not in spec.session.terminals and run.session != spec.session.initial:
        ended = _end_by_lost_request(run, spec, deviations, depth)
        if ended is not None:
            return ended
        run.findings.append(
            Finding(
                -1,
                "violation",
                f"{spec.session.name} {run.session}",
                "the trace ends with the session still open",
            )
        )
    return run


def _repeated_request(run: _Run, index: int, deviations: Sequence[Deviation]) -> _Run | None:
    """A fork of `run` that takes request `index` as a repeat of the one before it, when a
    deviation names that repetition; else None."""
    event = run.events[index]
    for dev in deviations:
        sig = dev.signature
        if "extra" in sig and event.get("op") == sig["extra"] and run.last_op == sig.get("after"):
            fork = run.fork()
            fork.consumed.add(index)
            fork.findings.append(
                Finding(
                    index,
                    "deviation",
                    dev.id,
                    f"{fork.describe(index)} repeats {sig['after']}: {dev.summary}",
                )
            )
            return fork
    return None


def _best_move(
    run: _Run, index: int, spec: Spec, deviations: Sequence[Deviation], depth: int
) -> tuple[_Run | None, _Mismatch | None]:
    """The best explanation over every move from `run`, and the mismatch that got furthest."""
    best: _Run | None = None
    deepest: _Mismatch | None = None
    for move in _moves(run, spec):
        for done, mismatch, _ in _tries(run, spec, deviations, move, depth):
            if mismatch is not None and (deepest is None or mismatch.index > deepest.index):
                deepest = mismatch
            if done is not None and (best is None or _better(done, best)):
                best = done
                if STOP_AT_UNBEATABLE and _unbeatable(best, run):
                    return best, deepest
    return best, deepest


def _unbeatable(done: _Run, start: _Run) -> bool:
    """True when `done`, an explanation searched from `start`, cannot be beaten by any other
    searched from `start`: it adds no finding and no lost reply to `start`'s (the others can
    only add some), and explains every event a run may explain (the others cannot explain
    more). `_better` keeps the first of equals, so the search may stop at `done`: its
    outcome is the one the search of every move would have found."""
    return (
        len(done.findings) == len(start.findings)
        and len(done.lost) == len(start.lost)
        and done.order.consumable <= done.consumed
    )


def _tries(
    run: _Run,
    spec: Spec,
    deviations: Sequence[Deviation],
    move: tuple[str, str | None, str | None],
    depth: int,
) -> list[tuple[_Run | None, _Mismatch | None, list[int]]]:
    """`move` with every reply received, then, when that explains nothing and the run may
    assume lost replies, with the reply of one of its requests lost."""
    tries = [_try(run, spec, deviations, move, depth)]
    done, _, candidates = tries[0]
    if (done is None or not done.violation_free()) and run.lost_left > 0:
        tries += [
            _try(run, spec, deviations, move, depth, (index, verdict), cost)
            for index in candidates
            if index not in run.lost
            for verdict, cost in _probe_verdicts(run.events[index])
            if cost <= run.lost_left
        ]
    return tries


def _end_by_lost_request(
    run: _Run, spec: Spec, deviations: Sequence[Deviation], depth: int
) -> _Run | None:
    """A run whose trace ends with the session open, explained by a last request lost
    before the server saw it (when the run may assume one): the first move that ends the
    session that way, or None."""
    if run.requests_lost_left <= 0:
        return None
    context = {"role": run.role, "policy": run.policy}
    for trigger in run.machines.allowed(spec.session, run.session, context):
        move: tuple[str, str | None, str | None] = (trigger, None, None)
        done, _, _ = _try(run, spec, deviations, move, depth)
        if done is not None and done.violation_free() and done.session in spec.session.terminals:
            return done
    return None


def _try(
    run: _Run,
    spec: Spec,
    deviations: Sequence[Deviation],
    move: tuple[str, str | None, str | None],
    depth: int,
    lost: tuple[int, ProbeVerdict] | None = None,
    cost: int = 1,
) -> tuple[_Run | None, _Mismatch | None, list[int]]:
    """Fire `move` on a fork of `run` (with the reply of one more request assumed lost, at
    `cost` assumptions) and search on: the best explanation (None when the move mismatched
    or made no progress), the mismatch, and the requests of the move a lost reply could
    explain."""
    fork = run.fork()
    fork.candidates = []
    if lost is not None:
        fork.lost[lost[0]] = lost[1]
        fork.lost_left -= cost
    trigger, topic, topic_policy = move
    try:
        _apply(fork, spec, deviations, trigger, topic, topic_policy)
    except _Mismatch as mismatch:
        return None, mismatch, fork.candidates
    if fork.consumed == run.consumed and fork.session == run.session:
        return None, None, fork.candidates  # made no progress
    candidates = fork.candidates
    return _search(fork, spec, deviations, depth + 1), None, candidates


def _probe_verdicts(event: Mapping[str, Any]) -> tuple[tuple[ProbeVerdict, int], ...]:
    """What the probe after a lost reply may have found, with how many assumptions each
    takes: what the server did, or nothing conclusive (the lost reply alone); the opposite
    only when the probe's own answer went wrong too (a second assumption)."""
    applied = str(event.get("outcome", "ok")) == "ok"
    right, wrong = ProbeVerdict.APPLIED, ProbeVerdict.NOT_APPLIED
    if not applied:
        right, wrong = wrong, right
    return (right, 1), (ProbeVerdict.UNRESOLVED, 1), (wrong, 2)


def _next_session(
    run: _Run, spec: Spec, deviations: Sequence[Deviation], op: str, depth: int
) -> _Run:
    """A new session on the sequence (the first, or an update after the previous one ended):
    its role follows from its first request, its error policy is whichever explains the
    trace best ("either" when both do)."""
    role = "writer" if op == "SEQUENCE_CREATE" else "updater"
    results = []
    for policy in spec.session.context["policy"].values:
        fork = run.fork()
        fork.session, fork.role, fork.policy = spec.session.initial, role, policy
        fork.sessions.append([role, policy])
        results.append(_search(fork, spec, deviations, depth + 1))
    best = results[0]
    for other in results[1:]:
        if _better(other, best):
            best = other
    if all(not _better(best, other) and not _better(other, best) for other in results):
        best.sessions[len(run.sessions)][1] = "either"
    return best


def _better(a: _Run, b: _Run) -> bool:
    a_bad = sum(f.kind == "violation" for f in a.findings)
    b_bad = sum(f.kind == "violation" for f in b.findings)
    if a_bad != b_bad:
        return a_bad < b_bad
    if len(a.consumed) != len(b.consumed):
        return len(a.consumed) > len(b.consumed)
    if len(a.findings) != len(b.findings):
        return len(a.findings) < len(b.findings)
    return len(a.lost) < len(b.lost)


def _data_checks(run: _Run, spec: Spec, deviations: Sequence[Deviation]) -> None:
    """Records pushed but never stored, and pushes accepted after the stream failed."""
    for topic in run.topic_order:
        _lost_records(run, topic, deviations)
        _late_batches(run, topic)
        _pushes_after_failure(run, topic, deviations)


def _ok(e: Mapping[str, Any]) -> bool:
    return bool(e.get("outcome", "ok") == "ok")


def _lost_records(run: _Run, topic: str, deviations: Sequence[Deviation]) -> None:
    """Records pushed to `topic` that its cleanly ended stream never received."""
    events = run.events
    received = sum(
        int(e.get("rows", 0))
        for e in events
        if e.get("topic") == topic and e.get("op") == "DO_PUT_WRITE" and _ok(e)
    )
    pushes = [
        e
        for e in events
        if e.get("source") == "client" and e.get("op") == "PUSH" and e.get("topic") == topic
    ]
    pushed = sum(int(e.get("rows", 0)) for e in pushes if _ok(e))
    ended = any(e.get("topic") == topic and e.get("op") == "DO_PUT_END" and _ok(e) for e in events)
    if not (pushes and ended and pushed > received):
        return
    dev = _records_lost_deviation(run, topic, pushes, deviations)
    message = (
        f"{pushed - received} of {pushed} records pushed to {topic} never reached its stream, "
        "which ended cleanly"
    )
    run.findings.append(
        Finding(-1, "deviation", dev.id, f"{message}: {dev.summary}")
        if dev is not None
        else Finding(-1, "violation", "no record dropped silently", message)
    )


def _records_lost_deviation(
    run: _Run, topic: str, pushes: Sequence[Mapping[str, Any]], deviations: Sequence[Deviation]
) -> Deviation | None:
    """The deviation that explains records lost on `topic`: a record too large, or a stream
    closed by an error notification; None when neither applies."""
    largest = max(int(e.get("bytes", 0)) for e in pushes)
    if _large(deviations, largest):
        dev = _deviation_with(deviations, "records_lost", "large_record")
        if dev is not None:
            return dev
    notified = any(
        e.get("topic") == topic and e.get("op") == "TOPIC_NOTIFICATION_CREATE" for e in run.events
    )
    return _deviation_with(deviations, "records_lost", "error_close") if notified else None


def _late_batches(run: _Run, topic: str) -> None:
    """A batch of `topic` written after its stream ended cleanly."""
    events = run.events
    end = next(
        (
            i
            for i, e in enumerate(events)
            if e.get("topic") == topic and e.get("op") == "DO_PUT_END" and _ok(e)
        ),
        None,
    )
    if end is None:
        return
    late = [
        i
        for i, e in enumerate(events)
        if i > end and e.get("topic") == topic and e.get("op") == "DO_PUT_WRITE"
    ]
    if late:
        run.findings.append(
            Finding(
                late[0],
                "violation",
                "one stream per topic",
                f"a batch of {topic} arrived after its stream ended",
            )
        )


def _pushes_after_failure(run: _Run, topic: str, deviations: Sequence[Deviation]) -> None:
    """More than one push to `topic` that succeeded after the server failed its stream."""
    events = run.events
    failure = next(
        (
            i
            for i, e in enumerate(events)
            if e.get("topic") == topic
            and e.get("source", "server") == "server"
            and (e.get("op") == "DO_PUT_CANCEL" or (e.get("op") == "DO_PUT_WRITE" and not _ok(e)))
        ),
        None,
    )
    if failure is None:
        return
    later = [
        i
        for i, e in enumerate(events)
        if i > failure
        and e.get("source") == "client"
        and e.get("op") == "PUSH"
        and e.get("topic") == topic
        and _ok(e)
    ]
    if len(later) <= 1:
        return
    dev = _deviation_with(deviations, "push_after_failed_stream", True)
    message = f"{len(later)} pushes to {topic} succeeded after the server failed its stream"
    run.findings.append(
        Finding(later[1], "deviation", dev.id, f"{message}: {dev.summary}")
        if dev is not None
        else Finding(later[1], "violation", "failures surface at the next push", message)
    )


def _deviation_with(deviations: Sequence[Deviation], key: str, value: Any) -> Deviation | None:
    return next((d for d in deviations if d.signature.get(key) == value), None)


def _large(deviations: Sequence[Deviation], size: int) -> bool:
    return any(
        dev.signature.get("records_lost") == "large_record"
        and size > int(dev.signature.get("bytes_over", 0))
        for dev in deviations
    )


def check_client_trace(
    events: Sequence[Mapping[str, Any]],
    spec: Spec,
    *,
    sequence: str = "",
    client: str | Iterable[str] = "sdk-0.3.2",
    lost_replies: int = 0,
    lost_requests: int = 0,
) -> ClientReport:
    """Check one sequence's server-side trace (in the order the server saw it), making at
    most `lost_replies` assumptions of lost replies and `lost_requests` of requests lost
    before the server saw them, where nothing else explains it. `client` names the party (or
    parties, such as `Line.client_parties`) whose known deviations the report may name."""
    parties = {client} if isinstance(client, str) else set(client)
    deviations = [d for d in spec.deviations.values() if d.who in parties]
    events = list(events)
    first = next(
        (
            e
            for e in events
            if e.get("source", "server") == "server"
            and e.get("op") in ("SEQUENCE_CREATE", "SESSION_CREATE")
        ),
        None,
    )
    empty = _Run(events, set(), spec.session.initial, "writer", "Report", {}, [], [], [])
    empty.machines = _Machines.of(spec)
    empty.lost_left = lost_replies
    empty.requests_lost_left = lost_requests
    if first is None:
        done = _search(empty, spec, deviations)
    else:
        empty.session = sorted(spec.session.terminals)[0]  # before any session: as after one
        done = _next_session(empty, spec, deviations, str(first.get("op")), 0)
    _data_checks(done, spec, deviations)
    roles = ", ".join(r for r, _ in done.sessions) or None
    policies = ", ".join(p for _, p in done.sessions) or None
    return ClientReport(sequence, roles, policies, tuple(done.accepted), tuple(done.findings))


def group_by_sequence(events: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Server trace events by sequence, each group in trace order (events of no sequence,
    such as ListFlights, are left out)."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for event in events:
        name = event.get("sequence")
        if isinstance(name, str) and name:
            groups.setdefault(name, []).append(event)
    return groups
