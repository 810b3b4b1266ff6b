"""The failure-path simulator: every scenario under every fault, checked against invariants.

`explore` runs the scenarios of `scenarios.FAMILIES` without faults, under every single
fault at every call they make and, optionally, under every pair; `check_run` judges each run;
`report` prints the outcome matrices and the findings with the commands that replay them.
The server and the transports come from the caller, through a `WorldFactory`.
"""

from fsm.simulate.explore import Exploration, explore, replay
from fsm.simulate.facts import Verdict
from fsm.simulate.invariants import INVARIANTS
from fsm.simulate.plans import effects, faults_at, parse_fault
from fsm.simulate.report import replay_command, summary_line, to_json, to_text
from fsm.simulate.run import RunResult, run_scenario
from fsm.simulate.scenarios import FAMILIES, SCENARIOS, Scenario, select
from fsm.simulate.world import CallLog, World, WorldFactory

__all__ = [
    "FAMILIES",
    "INVARIANTS",
    "SCENARIOS",
    "CallLog",
    "Exploration",
    "RunResult",
    "Scenario",
    "Verdict",
    "World",
    "WorldFactory",
    "effects",
    "explore",
    "faults_at",
    "parse_fault",
    "replay",
    "replay_command",
    "run_scenario",
    "select",
    "summary_line",
    "to_json",
    "to_text",
]
