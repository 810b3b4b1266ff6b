"""Reports of an exploration: the outcome matrix of each scenario family, and every finding
with the command that replays it. Text for people, JSON for tools; both are a pure function
of the exploration, so the same seed gives byte-identical reports."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from fsm.simulate.explore import Exploration
from fsm.simulate.invariants import INVARIANTS
from fsm.simulate.plans import describe_plan
from fsm.simulate.run import RunResult
from fsm.simulate.scenarios import FAMILIES

__all__ = ["replay_command", "to_json", "to_text"]


def replay_command(run: RunResult, seed: int) -> str:
    """The one-line command that runs `run` again."""
    faults = "".join(f" --fault {f.describe()}" for f in run.faults)
    return f"mosaico-fsm simulate --scenario {run.scenario}{faults} --seed {seed}"


def _mark(run: RunResult) -> str:
    if run.violations:
        return " !"
    return " ?" if run.unknown else ""


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
                cells = rows.setdefault(describe_plan(run.faults), {})
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
        "unknown_runs": exploration.unknown,
        "invariants": INVARIANTS,
        "families": _matrices(exploration),
        "violations": [f for f in findings if f["verdict"] == "violated"],
        "unknown": [f for f in findings if f["verdict"] == "unknown"],
    }
    return json.dumps(body, indent=1, sort_keys=True) + "\n"


def _table(columns: list[str], rows: list[tuple[str, list[str]]]) -> list[str]:
    widths = [max([len("fault"), *(len(k) for k, _ in rows)])]
    for i, name in enumerate(columns):
        widths.append(max([len(name), *(len(cells[i]) for _, cells in rows)]))
    lines = []
    header = ["fault", *columns]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    for key, cells in rows:
        values = [key, *cells]
        lines.append("  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip())
    return lines


def to_text(exploration: Exploration, *, full_matrix: bool | None = None) -> str:
    """The report for people. The full matrix is printed for single faults; for double faults
    (thousands of rows) each column's outcomes are counted instead, unless `full_matrix`."""
    full = exploration.faults <= 1 if full_matrix is None else full_matrix
    out: list[str] = []
    for family in _matrices(exploration):
        columns = list(family["columns"])
        out.append(f"== {family['family']}: {family['doc']}")
        out.append("   " + ", ".join(f"{c}: {n}" for c, n in family["columns"].items()))
        if full:
            rows = [
                (r["faults"], [r["cells"].get(c, "-") for c in columns]) for r in family["matrix"]
            ]
            out.extend(_table(columns, rows))
        else:
            for c in columns:
                counts = Counter(r["cells"][c] for r in family["matrix"] if c in r["cells"])
                out.append(f"  {c}: {sum(counts.values())} runs")
                for cell, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
                    out.append(f"    {n:6d}  {cell}")
        out.append("")
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
    runs = len(exploration.runs)
    out.append(
        f"{runs} runs of {len(exploration.scenarios)} scenarios "
        f"(up to {exploration.faults} fault(s), seed {exploration.seed}): "
        f"{exploration.violations} with violations, "
        f"{exploration.unknown} unknown"
    )
    if exploration.replay:
        for run in exploration.runs:
            fired = describe_plan(run.fired) if run.fired else "none"
            out.append(f"{run.scenario}: faults fired: {fired}; raised {run.raised}")
            for v in run.verdicts:
                out.append(
                    f"  {v.status:9} {v.invariant}" + (f": {v.message}" if v.message else "")
                )
    return "\n".join(out) + "\n"
