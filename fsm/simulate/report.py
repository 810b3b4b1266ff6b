"""Reports of an exploration: the outcome matrix of each scenario family, and every finding
with the command that replays it. Text for people, JSON for tools; both are a pure function
of the exploration, so the same seed gives byte-identical reports."""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from typing import Any

from fsm.simulate.explore import Exploration
from fsm.simulate.invariants import INVARIANTS
from fsm.simulate.plans import describe_plan
from fsm.simulate.run import RunResult
from fsm.simulate.scenarios import FAMILIES

__all__ = ["LEGEND", "matrices", "replay_command", "summary_line", "to_json", "to_text"]

WIDTH = 120
"""Width the text report's tables fit in: wider families are split into several tables."""

LEGEND = {
    "cell": "CLIENT | SERVER: the session status the client ended in (Null: never opened), then "
    "what the server holds afterwards",
    "locked N/M topics": "the session is finalized and locked, with N of its M topics locked",
    "open N/M topics": "the session was never finalized (under Report: its records are kept)",
    "finalized unlocked": "the session completed but was left unlocked (a reported session)",
    "notified": "an error notification was left on the sequence or a topic",
    "seq gone": "the new sequence is gone (never created, or purged under Delete)",
    "seq left, N session(s)": "a new sequence stayed although its session never opened",
    "session gone": "the session was removed (an updater's Delete)",
    "sequence missing": "the sequence to update is gone",
    "unreadable": "the server could not be read after the run",
    "!": "an invariant is violated (listed under the table, with its replay command)",
    "?": "an invariant could not be decided (a lost reply left unsettled)",
    "-": "no run: the scenario made no such call",
}
"""What the cells of an outcome matrix say."""


def replay_command(run: RunResult, seed: int) -> str:
    """The one-line command that runs `run` again."""
    faults = "".join(f" --fault {f.describe()}" for f in run.faults)
    return f"mosaico-fsm simulate --scenario {run.scenario}{faults} --seed {seed}"


def _mark(run: RunResult) -> str:
    if run.violations:
        return " !"
    return " ?" if run.unknown else ""


def _row_key(run: RunResult, replay: bool) -> str:
    """The row a run is drawn in: its fault plan; in a replay, also what really fired."""
    planned = describe_plan(run.faults)
    if not replay or run.fired == run.faults:
        return planned
    fired = describe_plan(run.fired) if run.fired else "nothing"
    return f"{planned} (fired: {fired})"


def matrices(exploration: Exploration) -> list[dict[str, Any]]:
    """Per family: its columns (policies) and one row per fault plan, in enumeration order;
    each cell holds the outcome and the command that replays it."""
    chosen = set(exploration.scenarios)
    out = []
    for family in FAMILIES:
        members = [s for s in family.members if s.name in chosen]
        if not members:
            continue
        column = {s.name: s.column for s in members}
        rows: dict[str, dict[str, dict[str, str]]] = {}
        for run in exploration.runs:
            if run.scenario in column:
                cells = rows.setdefault(_row_key(run, exploration.replay), {})
                cells[column[run.scenario]] = {
                    "outcome": run.cell,
                    "mark": _mark(run).strip(),
                    "replay": replay_command(run, exploration.seed),
                    "scenario": run.scenario,
                }
        out.append(
            {
                "family": family.name,
                "doc": family.doc,
                "columns": {s.column: s.name for s in members},
                "rows": [{"faults": k, "cells": v} for k, v in rows.items()],
            }
        )
    return out


def _matrices(exploration: Exploration) -> list[dict[str, Any]]:
    """Per family: its columns (policies) and one row per fault plan, in enumeration order."""
    chosen = set(exploration.scenarios)
    out = []
    for family in FAMILIES:
        members = [s for s in family.members if s.name in chosen]
        if not members:
            continue
        column = {s.name: s.column for s in members}
        rows: dict[str, dict[str, str]] = {}
        for run in exploration.runs:
            if run.scenario in column:
                cells = rows.setdefault(_row_key(run, exploration.replay), {})
                cells[column[run.scenario]] = run.cell + _mark(run)
        out.append(
            {
                "family": family.name,
                "doc": family.doc,
                "columns": {s.column: s.name for s in members},
                "matrix": [{"faults": k, "cells": v} for k, v in rows.items()],
            }
        )
    return out


def _findings(exploration: Exploration) -> list[dict[str, Any]]:
    found = []
    for run in exploration.runs:
        for verdict in run.verdicts:
            if verdict.status in ("violated", "unknown"):
                found.append(
                    {
                        "scenario": run.scenario,
                        "faults": describe_plan(run.faults),
                        "invariant": verdict.invariant,
                        "verdict": verdict.status,
                        "message": verdict.message,
                        "client": run.client,
                        "server": run.server,
                        "raised": run.raised,
                        "replay": replay_command(run, exploration.seed),
                    }
                )
    return found


def to_json(exploration: Exploration) -> str:
    findings = _findings(exploration)
    body = {
        "seed": exploration.seed,
        "faults": exploration.faults,
        "scenarios": list(exploration.scenarios),
        "runs": len(exploration.runs),
        "violating_runs": exploration.violations,
        "interrupted": exploration.interrupted,
        "unknown_runs": exploration.unknown,
        "invariants": INVARIANTS,
        "families": _matrices(exploration),
        "violations": [f for f in findings if f["verdict"] == "violated"],
        "unknown": [f for f in findings if f["verdict"] == "unknown"],
    }
    return json.dumps(body, indent=1, sort_keys=True) + "\n"


def _table(columns: list[str], rows: list[tuple[str, list[str]]]) -> list[str]:
    """Rows under a header, left-aligned; split into several tables, each repeating the
    fault column, when the columns do not fit in WIDTH."""
    key_width = max([len("fault"), *(len(k) for k, _ in rows)])
    widths = [
        max([len(name), *(len(cells[i]) for _, cells in rows)]) for i, name in enumerate(columns)
    ]
    groups: list[list[int]] = [[]]
    used = key_width
    for i, width in enumerate(widths):
        if groups[-1] and used + 2 + width > WIDTH:
            groups.append([])
            used = key_width
        groups[-1].append(i)
        used += 2 + width
    lines: list[str] = []
    for group in groups:
        if lines:
            lines.append("")
        header = ["fault".ljust(key_width), *(columns[i].ljust(widths[i]) for i in group)]
        lines.append("  ".join(header).rstrip())
        for key, cells in rows:
            values = [key.ljust(key_width), *(cells[i].ljust(widths[i]) for i in group)]
            lines.append("  ".join(values).rstrip())
    return lines


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def summary_line(exploration: Exploration) -> str:
    """The one line that sums an exploration up: the text report's last line."""
    line = (
        f"{_plural(len(exploration.runs), 'run')} of "
        f"{_plural(len(exploration.scenarios), 'scenario')} "
        f"(up to {_plural(exploration.faults, 'fault')} per run, seed {exploration.seed}): "
        f"{exploration.violations} with violations, {exploration.unknown} unknown"
    )
    return f"interrupted after {line}" if exploration.interrupted else line


def _legend() -> list[str]:
    lines = textwrap.wrap("Cells: " + LEGEND["cell"] + ".", 100, subsequent_indent="  ")
    for key, text in LEGEND.items():
        if key != "cell":
            lines.append(f"  {key:24}{text}")
    return lines


def to_text(exploration: Exploration, *, full_matrix: bool | None = None) -> str:
    """The report for people. The full matrix is printed for single faults; for double faults
    (thousands of rows) each column's outcomes are counted instead, unless `full_matrix`."""
    full = exploration.faults <= 1 if full_matrix is None else full_matrix
    out: list[str] = []
    for family in _matrices(exploration):
        columns = list(family["columns"])
        out.append(f"== {family['family']}: {family['doc']}")
        out += textwrap.wrap(
            ", ".join(f"{c}: {n}" for c, n in family["columns"].items()),
            100,
            initial_indent="   ",
            subsequent_indent="   ",
            break_on_hyphens=False,
        )
        if full:
            rows = [
                (r["faults"], [r["cells"].get(c, "-") for c in columns]) for r in family["matrix"]
            ]
            out.extend(_table(columns, rows))
        else:
            for c in columns:
                counts = Counter(r["cells"][c] for r in family["matrix"] if c in r["cells"])
                out.append(f"  {c}: {_plural(sum(counts.values()), 'run')}")
                for cell, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
                    out.append(f"    {n:6d}  {cell}")
        out.append("")
    if exploration.runs:
        out += [*_legend(), ""]
    findings = _findings(exploration)
    violations = [f for f in findings if f["verdict"] == "violated"]
    unknown = Counter(f["invariant"] for f in findings if f["verdict"] == "unknown")
    for f in violations:
        out.append(
            f"VIOLATION {f['invariant']}: {f['scenario']} under {f['faults']}: {f['message']} "
            f"(client {f['client']}, server {f['server']}, raised {f['raised']})"
        )
        out.append(f"  replay: {f['replay']}")
    if unknown:
        parts = ", ".join(f"{k} {n}" for k, n in sorted(unknown.items()))
        out.append(
            f"unknown verdicts (a lost reply left unsettled, or unseen by the server): {parts}"
        )
    if exploration.replay:
        for run in exploration.runs:
            fired = describe_plan(run.fired) if run.fired else "none"
            out.append(f"{run.scenario}: faults fired: {fired}; raised {run.raised}")
            for v in run.verdicts:
                out.append(
                    f"  {v.status:9} {v.invariant}" + (f": {v.message}" if v.message else "")
                )
    if exploration.interrupted:
        out.append("The exploration was interrupted: the runs above are all that ended.")
    out.append(summary_line(exploration))
    return "\n".join(out) + "\n"
