"""A second, deliberately plain reading of the machine tables, for tests.

It works on the raw TOML dictionaries (never on `fsm.spec` objects) and re-implements row
lookup and route following in the most literal way, so that the tests can compare the real
machines and the real walker against an independent interpretation.
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Callable, Iterator
from importlib import resources
from typing import Any

Doc = dict[str, Any]
OutcomeFn = Callable[[str], str]
"""Maps a step name to 'ok', 'failed:<kind>', 'unknown:applied', 'unknown:not_applied' or
'unknown:unresolved' (the probe's verdict) or 'unknown' (no probe)."""


def raw_doc(name: str) -> Doc:
    return tomllib.loads(resources.files("specs").joinpath(name).read_text(encoding="utf-8"))


def raw_docs() -> dict[str, Doc]:
    from fsm.spec import SPEC_FILES

    return {name: raw_doc(name) for name in SPEC_FILES}


@functools.cache
def probe_of(operation: str) -> str | None:
    """The probe of actions.toml that settles `operation`, if any."""
    probes = raw_doc("actions.toml")["probes"]
    return next((name for name, p in probes.items() if p["settles"] == operation), None)


def rows(doc: Doc) -> Iterator[dict[str, Any]]:
    """Every row, one per source state, with '=' resolved."""
    for raw in doc["transitions"]:
        sources = raw["source"] if isinstance(raw["source"], list) else [raw["source"]]
        for source in sources:
            yield {
                "id": raw["id"],
                "source": source,
                "trigger": raw["trigger"],
                "when": raw.get("when", {}),
                "dest": source if raw["dest"] == "=" else raw["dest"],
                "error": raw["error"],
                "steps": raw.get("steps", []),
            }


def lookup(doc: Doc, state: str, trigger: str, ctx: dict[str, str]) -> dict[str, Any] | None:
    found = [
        r
        for r in rows(doc)
        if r["source"] == state
        and r["trigger"] == trigger
        and all(ctx[k] == v for k, v in r["when"].items())
    ]
    assert len(found) <= 1, f"ambiguous rows {[r['id'] for r in found]}"
    return found[0] if found else None


def step_name(step: dict[str, Any]) -> str:
    return step["do"] if "do" in step else f"TOPICS:{step['topics']}"


def interpret(
    doc: Doc, state: str, trigger: str, ctx: dict[str, str], outcome: OutcomeFn
) -> tuple[list[str], dict[str, Any]]:
    """Run (state, trigger) literally: the list of steps and probes done, and the row whose
    dest is taken. Probes appear as '?<probe>'."""
    row = lookup(doc, state, trigger, ctx)
    if row is None:
        raise LookupError(trigger)
    done: list[str] = []
    while True:
        jumped = None
        for step in row["steps"]:
            name = step_name(step)
            done.append(name)
            result = outcome(name)
            if result == "ok":
                continue
            if result.startswith("failed"):
                kind = result.partition(":")[2]
                failed = step["failed"]
                route = failed.get(kind, failed["any"]) if isinstance(failed, dict) else failed
            else:
                # A probe's verdicts route to "continue" unless the step names another route.
                unknown = step.get("unknown", {})
                probe = probe_of(step["do"]) if "do" in step else None
                if probe is not None and isinstance(unknown, dict):
                    done.append("?" + probe)
                    route = unknown.get(result.partition(":")[2] or "unresolved", "continue")
                else:
                    route = unknown
            if route == "continue":
                continue
            if route == "stop":
                break
            jumped = route
            break
        if jumped is None:
            return done, row
        nxt = lookup(doc, row["source"], jumped, ctx)
        assert nxt is not None, f"route {jumped} lands nowhere"
        row = nxt
