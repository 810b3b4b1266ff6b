"""Behaviour scenarios, written from the seed and PROTOCOL.md §9, not from the tables.

Each scenario is a list of expected moves: the trigger, the scripted outcome of some steps,
the steps (and probes, as '?name') the machine must run, the state it must end in and what the
caller must see ('none', 'cause', 'propagate', 'suppress', or 'invalid' for a refused trigger).
`run_scenario` replays one against any `Spec`, so the mutation tests can run the same
scenarios against deliberately broken tables.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from fsm.errors import InvalidTrigger
from fsm.machines import ProtocolMachine, walk
from fsm.outcome import ErrorKind, Outcome, ProbeVerdict
from fsm.spec.model import Spec, Step, Transition


@attrs.frozen
class Move:
    trigger: str
    steps: tuple[str, ...]
    state: str
    sees: str = "none"
    script: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen
class Scenario:
    name: str
    machine: str
    context: Mapping[str, str]
    moves: tuple[Move, ...]
    start: str | None = None
    source: str = ""


def M(trigger: str, steps: str, state: str, sees: str = "none", **script: str) -> Move:
    """A move; `steps` is space-separated, `script` maps a step name (':' as '__') to its
    outcome: ok, failed, failed:<kind>, unknown, unknown:<verdict>."""
    return Move(
        trigger,
        tuple(steps.split()),
        state,
        sees,
        {k.replace("__", ":"): v for k, v in script.items()},
    )


W_R = {"role": "writer", "policy": "Report"}
W_D = {"role": "writer", "policy": "Delete"}
U_R = {"role": "updater", "policy": "Report"}
U_D = {"role": "updater", "policy": "Delete"}

ENTER_W = M("enter", "SEQUENCE_CREATE SESSION_CREATE", "Pending")
ENTER_U = M("enter", "GET_FLIGHT_INFO SESSION_CREATE", "Pending")
TOPIC = M("topic_create", "TOPIC_CREATE STREAM_OPEN", "Pending")

SESSION_SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "writer: clean run creates sequence then session, finalizes once",
        "session",
        W_R,
        (ENTER_W, TOPIC, TOPIC, M("exit_ok", "TOPICS:finalize SESSION_FINALIZE", "Finalized")),
        source="PROTOCOL.md §9.4.1",
    ),
    Scenario(
        "updater: looks the sequence up, opens a session, finalizes",
        "session",
        U_D,
        (ENTER_U, TOPIC, M("exit_ok", "TOPICS:finalize SESSION_FINALIZE", "Finalized")),
        source="PROTOCOL.md §9.1 S3, S7",
    ),
    Scenario(
        "Report: exception in the session block notifies topics, the sequence, then finalizes",
        "session",
        W_R,
        (
            ENTER_W,
            TOPIC,
            M(
                "exit_error",
                "TOPICS:close_error SEQUENCE_NOTIFICATION_CREATE SESSION_FINALIZE",
                "Error",
                "propagate",
            ),
        ),
        source="seed SessionLevelErrorPolicy.Report; PROTOCOL.md §9.1 S10",
    ),
    Scenario(
        "Report (updater): same reporting path",
        "session",
        U_R,
        (
            ENTER_U,
            M(
                "exit_error",
                "TOPICS:close_error SEQUENCE_NOTIFICATION_CREATE SESSION_FINALIZE",
                "Error",
                "propagate",
            ),
        ),
        source="seed SessionLevelErrorPolicy.Report",
    ),
    Scenario(
        "Report: a failed error notification leaves the session unfinalized (unlocked)",
        "session",
        W_R,
        (
            ENTER_W,
            M(
                "exit_error",
                "TOPICS:close_error SEQUENCE_NOTIFICATION_CREATE",
                "Error",
                "propagate",
                SEQUENCE_NOTIFICATION_CREATE="failed:permission_denied",
            ),
        ),
        source="seed Report 'Lock Status'",
    ),
    Scenario(
        "Report: failures while reporting are kept, not raised over the user's exception",
        "session",
        W_R,
        (
            ENTER_W,
            M(
                "exit_error",
                "TOPICS:close_error SEQUENCE_NOTIFICATION_CREATE SESSION_FINALIZE",
                "Error",
                "propagate",
                TOPICS__close_error="failed",
                SESSION_FINALIZE="failed:failed_precondition",
            ),
        ),
        source="PROTOCOL.md §9.1 S10",
    ),
    Scenario(
        "Delete (writer): exception purges the sequence with exactly one SEQUENCE_DELETE",
        "session",
        W_D,
        (
            ENTER_W,
            TOPIC,
            M("exit_error", "TOPICS:close_error SEQUENCE_DELETE", "Error", "propagate"),
        ),
        source="seed SessionLevelErrorPolicy.Delete; DESIGN.md §3 (no double delete)",
    ),
    Scenario(
        "Delete (writer): a refused delete is kept, the user's exception propagates",
        "session",
        W_D,
        (
            ENTER_W,
            M(
                "exit_error",
                "TOPICS:close_error SEQUENCE_DELETE",
                "Error",
                "propagate",
                SEQUENCE_DELETE="failed:permission_denied",
            ),
        ),
        source="PROTOCOL.md §3.3 (delete without the delete permission)",
    ),
    Scenario(
        "Delete (writer): a topic that fails to abort does not stop the purge",
        "session",
        W_D,
        (
            ENTER_W,
            M(
                "exit_error",
                "TOPICS:close_error SEQUENCE_DELETE",
                "Error",
                "propagate",
                TOPICS__close_error="failed",
            ),
        ),
        source="seed SessionLevelErrorPolicy.Delete",
    ),
    Scenario(
        "Delete (updater): a topic that fails to abort does not stop the purge",
        "session",
        U_D,
        (
            ENTER_U,
            M(
                "exit_error",
                "TOPICS:close_error SESSION_DELETE",
                "Error",
                "propagate",
                TOPICS__close_error="failed",
            ),
        ),
        source="seed SessionLevelErrorPolicy.Delete",
    ),
    Scenario(
        "Delete (updater): exception purges only its own session",
        "session",
        U_D,
        (
            ENTER_U,
            TOPIC,
            M("exit_error", "TOPICS:close_error SESSION_DELETE", "Error", "propagate"),
        ),
        source="seed SessionLevelErrorPolicy.Delete; PROTOCOL.md §9.4.7",
    ),
    Scenario(
        "Delete (writer): a lost delete reply is settled by asking the server",
        "session",
        W_D,
        (
            ENTER_W,
            M(
                "exit_error",
                "TOPICS:close_error SEQUENCE_DELETE ?sequence_absent",
                "Error",
                "propagate",
                SEQUENCE_DELETE="unknown:applied",
            ),
        ),
        source="DESIGN.md §3 (unknown outcomes)",
    ),
    Scenario(
        "writer: SEQUENCE_CREATE refused leaves nothing and raises",
        "session",
        W_R,
        (M("enter", "SEQUENCE_CREATE", "Null", "cause", SEQUENCE_CREATE="failed:already_exists"),),
        source="PROTOCOL.md §9.1 S4",
    ),
    Scenario(
        "writer: SESSION_CREATE refused after SEQUENCE_CREATE deletes the new sequence",
        "session",
        W_R,
        (
            M(
                "enter",
                "SEQUENCE_CREATE SESSION_CREATE SEQUENCE_DELETE",
                "Null",
                "cause",
                SESSION_CREATE="failed:internal",
            ),
        ),
        source="DESIGN.md §3 (no orphan sequence); PROTOCOL.md §9.1 S5",
    ),
    Scenario(
        "writer: the clean-up delete failing still raises the original failure",
        "session",
        W_D,
        (
            M(
                "enter",
                "SEQUENCE_CREATE SESSION_CREATE SEQUENCE_DELETE",
                "Null",
                "cause",
                SESSION_CREATE="failed:internal",
                SEQUENCE_DELETE="failed:permission_denied",
            ),
            ENTER_W,
        ),
        source="DESIGN.md §3",
    ),
    Scenario(
        "updater: a missing sequence is refused before anything is created",
        "session",
        U_R,
        (M("enter", "GET_FLIGHT_INFO", "Null", "cause", GET_FLIGHT_INFO="failed:not_found"),),
        source="PROTOCOL.md §8 (sequence_handler then update)",
    ),
    Scenario(
        "updater: a refused SESSION_CREATE deletes nothing (the sequence is not its own)",
        "session",
        U_D,
        (M("enter", "GET_FLIGHT_INFO SESSION_CREATE", "Null", "cause", SESSION_CREATE="failed"),),
        source="seed Delete for SequenceUpdater",
    ),
    Scenario(
        "updater: a lost SESSION_CREATE reply is settled; adopted session continues",
        "session",
        U_R,
        (
            M(
                "enter",
                "GET_FLIGHT_INFO SESSION_CREATE ?session_adoptable",
                "Pending",
                SESSION_CREATE="unknown:applied",
            ),
        ),
        source="DESIGN.md §3",
    ),
    Scenario(
        "updater: a lost SESSION_CREATE reply that did not apply fails the enter",
        "session",
        U_R,
        (
            M(
                "enter",
                "GET_FLIGHT_INFO SESSION_CREATE ?session_adoptable",
                "Null",
                "cause",
                SESSION_CREATE="unknown:not_applied",
            ),
        ),
        source="DESIGN.md §3",
    ),
    Scenario(
        "writer: a lost SEQUENCE_CREATE reply is settled by asking the server",
        "session",
        W_R,
        (
            M(
                "enter",
                "SEQUENCE_CREATE ?sequence_exists SESSION_CREATE",
                "Pending",
                SEQUENCE_CREATE="unknown:applied",
            ),
        ),
        source="DESIGN.md §3",
    ),
    Scenario(
        "writer: a lost SEQUENCE_CREATE reply that did not apply fails the enter",
        "session",
        W_R,
        (
            M(
                "enter",
                "SEQUENCE_CREATE ?sequence_exists",
                "Null",
                "cause",
                SEQUENCE_CREATE="unknown:not_applied",
            ),
        ),
        source="DESIGN.md §3",
    ),
    Scenario(
        "writer: a lost SESSION_CREATE reply that cannot be settled removes the new sequence",
        "session",
        W_D,
        (
            M(
                "enter",
                "SEQUENCE_CREATE SESSION_CREATE ?session_adoptable SEQUENCE_DELETE",
                "Null",
                "cause",
                SESSION_CREATE="unknown:unresolved",
            ),
        ),
        source="DESIGN.md §3",
    ),
    Scenario(
        "topic_create refused: nothing to undo, the session stays open",
        "session",
        W_R,
        (
            ENTER_W,
            M(
                "topic_create",
                "TOPIC_CREATE",
                "Pending",
                "cause",
                TOPIC_CREATE="failed:already_exists",
            ),
            TOPIC,
        ),
        source="PROTOCOL.md §9.3",
    ),
    Scenario(
        "topic stream fails to open: the registered topic is deleted",
        "session",
        U_R,
        (
            ENTER_U,
            M(
                "topic_create",
                "TOPIC_CREATE STREAM_OPEN TOPIC_DELETE",
                "Pending",
                "cause",
                STREAM_OPEN="failed:invalid_argument",
            ),
        ),
        source="PROTOCOL.md §9.3",
    ),
    Scenario(
        "topic_create reply lost but applied: the topic (whose UUID is lost) is deleted",
        "session",
        W_R,
        (
            ENTER_W,
            M(
                "topic_create",
                "TOPIC_CREATE ?topic_exists TOPIC_DELETE",
                "Pending",
                "cause",
                TOPIC_CREATE="unknown:applied",
            ),
            M(
                "topic_create",
                "TOPIC_CREATE ?topic_exists",
                "Pending",
                "cause",
                TOPIC_CREATE="unknown:not_applied",
            ),
        ),
        source="DESIGN.md §3",
    ),
    Scenario(
        "finalize refused under Report: error notified on the sequence, Error raised",
        "session",
        W_R,
        (
            ENTER_W,
            M(
                "exit_ok",
                "TOPICS:finalize SESSION_FINALIZE SEQUENCE_NOTIFICATION_CREATE",
                "Error",
                "cause",
                SESSION_FINALIZE="failed:failed_precondition",
            ),
        ),
        source="PROTOCOL.md §9.1 S9 (empty session)",
    ),
    Scenario(
        "finalize refused under Delete (writer): the sequence is deleted once",
        "session",
        W_D,
        (
            ENTER_W,
            M(
                "exit_ok",
                "TOPICS:finalize SESSION_FINALIZE SEQUENCE_DELETE",
                "Error",
                "cause",
                SESSION_FINALIZE="failed:failed_precondition",
            ),
        ),
        source="PROTOCOL.md §9.4.5",
    ),
    Scenario(
        "finalize refused under Delete (updater): only the session is deleted",
        "session",
        U_D,
        (
            ENTER_U,
            M(
                "exit_ok",
                "TOPICS:finalize SESSION_FINALIZE SESSION_DELETE",
                "Error",
                "cause",
                SESSION_FINALIZE="failed",
            ),
        ),
        source="PROTOCOL.md §9.1 S9",
    ),
    Scenario(
        "finalize reply lost: settled as applied, the session is Finalized",
        "session",
        U_R,
        (
            ENTER_U,
            M(
                "exit_ok",
                "TOPICS:finalize SESSION_FINALIZE ?session_finalized",
                "Finalized",
                SESSION_FINALIZE="unknown:applied",
            ),
        ),
        source="DESIGN.md §3",
    ),
    Scenario(
        "a topic fails to close at a clean exit, Report: reported and finalized (unlocked)",
        "session",
        W_R,
        (
            ENTER_W,
            TOPIC,
            M(
                "exit_ok",
                "TOPICS:finalize SEQUENCE_NOTIFICATION_CREATE SESSION_FINALIZE",
                "Error",
                "cause",
                TOPICS__finalize="failed",
            ),
        ),
        source="PROTOCOL.md §9.1 S8",
    ),
    Scenario(
        "a topic fails to close, Report, and the report fails: no finalize",
        "session",
        U_R,
        (
            ENTER_U,
            M(
                "exit_ok",
                "TOPICS:finalize SEQUENCE_NOTIFICATION_CREATE",
                "Error",
                "cause",
                TOPICS__finalize="failed",
                SEQUENCE_NOTIFICATION_CREATE="failed",
            ),
        ),
        source="seed Report 'Lock Status'",
    ),
    Scenario(
        "a topic fails to close, Delete (writer): the sequence is deleted",
        "session",
        W_D,
        (
            ENTER_W,
            M(
                "exit_ok",
                "TOPICS:finalize SEQUENCE_DELETE",
                "Error",
                "cause",
                TOPICS__finalize="failed",
            ),
        ),
        source="PROTOCOL.md §9.1 S8",
    ),
    Scenario(
        "a topic fails to close, Delete (updater): the session is deleted",
        "session",
        U_D,
        (
            ENTER_U,
            M(
                "exit_ok",
                "TOPICS:finalize SESSION_DELETE",
                "Error",
                "cause",
                TOPICS__finalize="failed",
            ),
        ),
        source="PROTOCOL.md §9.1 S8",
    ),
    Scenario(
        "invalid triggers are refused and change nothing",
        "session",
        W_R,
        (
            M("topic_create", "", "Null", "invalid"),
            M("exit_ok", "", "Null", "invalid"),
            ENTER_W,
            M("enter", "", "Pending", "invalid"),
            M("exit_ok", "TOPICS:finalize SESSION_FINALIZE", "Finalized"),
            M("topic_create", "", "Finalized", "invalid"),
            M("exit_error", "", "Finalized", "invalid"),
        ),
        source="DESIGN.md §2 (lookup first)",
    ),
)

F_R = {"policy": "Finalize", "session_policy": "Report"}
I_R = {"policy": "Ignore", "session_policy": "Report"}
R_R = {"policy": "Raise", "session_policy": "Report"}
R_D = {"policy": "Raise", "session_policy": "Delete"}
PUSH = M("push", "STREAM_WRITE", "Active")

TOPIC_SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "pushes keep the writer Active; a clean session end finalizes it",
        "topic_writer",
        R_R,
        (PUSH, PUSH, M("enter", "", "Active"), M("finalize", "STREAM_CLOSE", "Finalized")),
        source="PROTOCOL.md §9.2 T2, T9",
    ),
    Scenario(
        "a failed push raises and marks RaisedException; a later push recovers",
        "topic_writer",
        I_R,
        (
            M("push", "STREAM_WRITE", "RaisedException", "cause", STREAM_WRITE="failed:cancelled"),
            PUSH,
        ),
        source="DESIGN.md §3 (background failures surface at the next push)",
    ),
    Scenario(
        "Finalize: notification, clean end, FinalizedWithError, exception absorbed",
        "topic_writer",
        F_R,
        (
            PUSH,
            M(
                "exit_error",
                "TOPIC_NOTIFICATION_CREATE STREAM_CLOSE",
                "FinalizedWithError",
                "suppress",
            ),
            M("push", "", "FinalizedWithError", "invalid"),
            M("enter", "", "FinalizedWithError", "invalid"),
        ),
        source="seed TopicWriterStatus.FinalizedWithError; PROTOCOL.md §9.2 T5",
    ),
    Scenario(
        "Finalize: a failed notification still closes the stream",
        "topic_writer",
        F_R,
        (
            M(
                "exit_error",
                "TOPIC_NOTIFICATION_CREATE STREAM_CLOSE",
                "FinalizedWithError",
                "suppress",
                TOPIC_NOTIFICATION_CREATE="failed",
            ),
        ),
        source="PROTOCOL.md §6.3",
    ),
    Scenario(
        "Finalize: a refused close is raised",
        "topic_writer",
        F_R,
        (
            M(
                "exit_error",
                "TOPIC_NOTIFICATION_CREATE STREAM_CLOSE",
                "FinalizedWithError",
                "cause",
                STREAM_CLOSE="failed:failed_precondition",
            ),
        ),
        source="DESIGN.md §3 (no silent loss)",
    ),
    Scenario(
        "Finalize: a lost close reply is settled by the topic's lock",
        "topic_writer",
        F_R,
        (
            M(
                "exit_error",
                "TOPIC_NOTIFICATION_CREATE STREAM_CLOSE ?topic_locked",
                "FinalizedWithError",
                "suppress",
                STREAM_CLOSE="unknown:applied",
            ),
        ),
        source="DESIGN.md §3",
    ),
    Scenario(
        "Ignore: notification, IgnoredLastError, still writable",
        "topic_writer",
        I_R,
        (
            M("exit_error", "TOPIC_NOTIFICATION_CREATE", "IgnoredLastError", "suppress"),
            M("enter", "", "IgnoredLastError"),
            M(
                "exit_error",
                "TOPIC_NOTIFICATION_CREATE",
                "IgnoredLastError",
                "suppress",
                TOPIC_NOTIFICATION_CREATE="failed",
            ),
            PUSH,
            M("finalize", "STREAM_CLOSE", "Finalized"),
        ),
        source="seed TopicWriterStatus.IgnoredLastError; PROTOCOL.md §9.2 T6",
    ),
    Scenario(
        "Raise: nothing sent, RaisedException, exception passed up",
        "topic_writer",
        R_R,
        (
            M("exit_error", "", "RaisedException", "propagate"),
            M("enter", "", "RaisedException"),
            M("close_error", "TOPIC_NOTIFICATION_CREATE STREAM_CLOSE", "FinalizedWithError"),
        ),
        source="seed TopicWriterStatus.RaisedException; PROTOCOL.md §9.2 T7",
    ),
    Scenario(
        "session error under Delete: the stream is aborted, nothing notified",
        "topic_writer",
        R_D,
        (PUSH, M("close_error", "STREAM_ABORT", "FinalizedWithError")),
        source="seed SessionLevelErrorPolicy.Delete",
    ),
    Scenario(
        "session end: a refused close ends FinalizedWithError and is raised to the session",
        "topic_writer",
        I_R,
        (
            M(
                "finalize",
                "STREAM_CLOSE",
                "FinalizedWithError",
                "cause",
                STREAM_CLOSE="failed:failed_precondition",
            ),
        ),
        source="PROTOCOL.md §9.1 S8",
    ),
    Scenario(
        "session error under Report: a close whose reply is lost and not applied fails",
        "topic_writer",
        R_R,
        (
            M(
                "close_error",
                "TOPIC_NOTIFICATION_CREATE STREAM_CLOSE ?topic_locked",
                "FinalizedWithError",
                "cause",
                STREAM_CLOSE="unknown:not_applied",
            ),
        ),
        source="DESIGN.md §3",
    ),
)

ALL_SCENARIOS = SESSION_SCENARIOS + TOPIC_SCENARIOS


class ScriptedExecutor:
    """Performs steps by reading their outcome from a script; records what ran."""

    def __init__(self, script: Mapping[str, str]) -> None:
        self.script = script
        self.done: list[str] = []

    def perform(self, step: Step, row: Transition) -> Outcome:
        self.done.append(step.name)
        result = self.script.get(step.name, "ok")
        if result == "ok":
            return Outcome.ok()
        status, _, detail = result.partition(":")
        if status == "failed":
            kind = ErrorKind(detail) if detail else ErrorKind.INTERNAL
            return Outcome.failed(kind, f"scripted {step.name} failure")
        return Outcome.unknown(f"scripted lost reply of {step.name}")

    def probe(self, probe: str, step: Step, row: Transition, outcome: Outcome) -> ProbeVerdict:
        self.done.append("?" + probe)
        verdict = self.script.get(step.name, "unknown:unresolved").partition(":")[2]
        return ProbeVerdict(verdict or "unresolved")


def run_scenario(spec: Spec, scenario: Scenario) -> None:
    """Replay `scenario` on the machine built from `spec`; AssertionError on any difference."""
    machine = ProtocolMachine(spec.machines[scenario.machine])
    holder = machine.new(scenario.name)
    for i, move in enumerate(scenario.moves):
        where = f"{scenario.name}: move {i} ({move.trigger} from {holder.state})"
        before = holder.state
        executor = ScriptedExecutor(move.script)
        try:
            result = walk(machine.spec, holder.state, move.trigger, scenario.context, executor)
        except InvalidTrigger:
            assert move.sees == "invalid", f"{where}: refused, expected {move.sees}"
            assert holder.state == before, f"{where}: a refused trigger changed the state"
            continue
        assert move.sees != "invalid", f"{where}: accepted, expected a refusal"
        machine.commit(holder, result.taken, scenario.context)
        assert tuple(executor.done) == move.steps, (
            f"{where}: ran {executor.done}, expected {list(move.steps)}"
        )
        assert holder.state == move.state, (
            f"{where}: ended in {holder.state}, expected {move.state}"
        )
        assert result.taken.error == move.sees, (
            f"{where}: caller sees {result.taken.error}, expected {move.sees}"
        )


# ---------------------------------------------------------------------------------------------
# Route laws: how lost replies must be handled, stated once for every step of every table.
#
# 1. A reply lost after the server applied the operation is as good as a success: the row
#    goes on. Exception: TOPIC_CREATE, whose lost reply also lost the topic's UUID, so the topic
#    cannot be written and must be removed.
# 2. A reply lost before the server applied the operation is a failure: same route as failed.
# 3. When the probe cannot tell, the row takes the failure route, except for TOPIC_CREATE,
#    where the topic may exist and must be removed (the route that deletes it).
# 4. An operation whose lost reply is not probed is treated as failed.

ORPHAN_ROUTE = {"TOPIC_CREATE": "topic_orphaned"}


def route_law_violations(spec: Spec) -> list[str]:
    from fsm.spec.model import ProbeRoute

    out = []
    for machine in spec.machines.values():
        for row in machine.transitions:
            for step in row.steps:
                where = f"{machine.name}:{row.id}:{step.name}"
                failed = step.failed.any
                if isinstance(step.unknown, ProbeRoute):
                    u = step.unknown
                    orphan = ORPHAN_ROUTE.get(step.name)
                    if u.applied != (orphan or "continue"):
                        out.append(f"{where}: applied routes to {u.applied}")
                    if u.not_applied != failed:
                        out.append(
                            f"{where}: not_applied routes to {u.not_applied}, failed to {failed}"
                        )
                    if u.unresolved != (orphan or failed):
                        out.append(f"{where}: unresolved routes to {u.unresolved}")
                elif step.unknown is not None and step.unknown != failed:
                    out.append(f"{where}: unknown routes to {step.unknown}, failed to {failed}")
    return out
