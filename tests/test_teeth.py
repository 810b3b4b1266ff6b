"""The tests have teeth: every single-entry mutant of the machine tables is caught.

Each row of both tables is mutated in turn: its destination (to every other state), its guard
(each value flipped, the guard dropped, or one added), one of its steps (dropped, or its
operation replaced) and each of its routes. A mutant is caught when the spec loader or the
soundness checks refuse it, or when a behaviour scenario of `tests.scenarios` fails on it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

from fsm.errors import SpecError
from fsm.spec import load_documents, load_spec, parse_spec
from tests.scenarios import ALL_SCENARIOS, route_law_violations, run_scenario

Docs = dict[str, dict[str, Any]]
Mutant = tuple[str, Callable[[Docs], None]]
MACHINE_FILES = ("session.toml", "topic_writer.toml")
VERDICTS = ("applied", "not_applied", "unresolved")
CONTINUE = "continue"

# A plausible wrong operation for each one, as a careless edit would make it.
SWAP = {
    "SEQUENCE_CREATE": "SESSION_CREATE",
    "SESSION_CREATE": "SEQUENCE_CREATE",
    "SESSION_FINALIZE": "SESSION_DELETE",
    "SESSION_DELETE": "SEQUENCE_DELETE",
    "SEQUENCE_DELETE": "SESSION_DELETE",
    "SEQUENCE_NOTIFICATION_CREATE": "TOPIC_NOTIFICATION_CREATE",
    "TOPIC_NOTIFICATION_CREATE": "SEQUENCE_NOTIFICATION_CREATE",
    "TOPIC_CREATE": "SEQUENCE_CREATE",
    "TOPIC_DELETE": "SEQUENCE_DELETE",
    "GET_FLIGHT_INFO": "SEQUENCE_NOTIFICATION_LIST",
    "STREAM_OPEN": "STREAM_WRITE",
    "STREAM_WRITE": "STREAM_CLOSE",
    "STREAM_CLOSE": "STREAM_ABORT",
    "STREAM_ABORT": "STREAM_CLOSE",
}
TOPICS_SWAP = {"finalize": "close_error", "close_error": "finalize"}


def _row(docs: Docs, file: str, index: int) -> dict[str, Any]:
    row: dict[str, Any] = docs[file]["transitions"][index]
    return row


def _mutants() -> Iterator[tuple[str, Mutant]]:
    base = load_documents()
    probed = {probe["settles"] for probe in base["actions.toml"]["probes"].values()}
    for file in MACHINE_FILES:
        doc = base[file]
        states = doc["machine"]["states"]
        context = doc.get("context", {})
        route_triggers = [t for t, spec in doc["triggers"].items() if spec["kind"] == "route"]
        for i, row in enumerate(doc["transitions"]):
            rid = f"{file}:{row['id']}"

            for state in states:
                if state != row["dest"]:
                    yield rid, (f"dest={state}", _set(file, i, "dest", state))

            when = row.get("when", {})
            for var, value in when.items():
                for other in context[var]["values"]:
                    if other != value:
                        yield (
                            rid,
                            (f"when {var}={other}", _set(file, i, "when", {**when, var: other})),
                        )
            if when:
                yield rid, ("when dropped", _set(file, i, "when", {}))
            elif context:
                var = next(iter(context))
                yield (
                    rid,
                    (f"when {var} added", _set(file, i, "when", {var: context[var]["values"][0]})),
                )

            steps = row.get("steps", [])
            for j, step in enumerate(steps):
                yield rid, (f"step {j} dropped", _set(file, i, "steps", steps[:j] + steps[j + 1 :]))
                if "do" in step:
                    swapped = {**step, "do": SWAP[step["do"]]}
                else:
                    swapped = {**step, "topics": TOPICS_SWAP[step["topics"]]}
                yield rid, (f"step {j} operation swapped", _set_step(file, i, j, swapped))
                for path, route in _routes(step, probed):
                    for other in ["continue", "stop", *route_triggers]:
                        if other != route:
                            yield (
                                rid,
                                (f"step {j} {path}->{other}", _set_route(file, i, j, path, other)),
                            )
            if not steps:
                extra = {"do": "TOPIC_DELETE", "failed": "continue", "unknown": "continue"}
                yield rid, ("step added", _set(file, i, "steps", [extra]))


def _routes(step: dict[str, Any], probed: set[str]) -> Iterator[tuple[tuple[str, ...], str]]:
    """Every route of a step, with where it sits; a verdict of a probed operation's lost reply
    that the row leaves out routes to `continue`."""
    if isinstance(step["failed"], str):
        yield ("failed",), step["failed"]
    unknown = step.get("unknown")
    if isinstance(unknown, str):
        yield ("unknown",), unknown
    elif step.get("do") in probed:
        for key in VERDICTS:
            yield ("unknown", key), (unknown or {}).get(key, CONTINUE)


def _set(file: str, i: int, key: str, value: Any) -> Callable[[Docs], None]:
    def mutate(docs: Docs) -> None:
        _row(docs, file, i)[key] = copy.deepcopy(value)

    return mutate


def _set_step(file: str, i: int, j: int, step: dict[str, Any]) -> Callable[[Docs], None]:
    def mutate(docs: Docs) -> None:
        _row(docs, file, i)["steps"][j] = copy.deepcopy(step)

    return mutate


def _set_route(
    file: str, i: int, j: int, path: tuple[str, ...], route: str
) -> Callable[[Docs], None]:
    def mutate(docs: Docs) -> None:
        target = _row(docs, file, i)["steps"][j]
        for key in path[:-1]:
            target = target.setdefault(key, {})
        if route == CONTINUE and len(path) > 1:
            target.pop(path[-1], None)  # a verdict routes to continue unless told otherwise
        else:
            target[path[-1]] = route

    return mutate


def _caught(mutate: Callable[[Docs], None], base: Docs) -> str | None:
    docs = copy.deepcopy(base)
    mutate(docs)
    try:
        spec = parse_spec(docs)
    except SpecError as exc:
        return f"spec: {exc.problem}"
    laws = route_law_violations(spec)
    if laws:
        return f"route law: {laws[0]}"
    for scenario in ALL_SCENARIOS:
        try:
            run_scenario(spec, scenario)
        except AssertionError:
            return f"scenario: {scenario.name}"
        except SpecError as exc:  # pragma: no cover - refused while building the machine
            return f"spec: {exc.problem}"
    return None


def test_every_single_entry_mutant_is_caught() -> None:
    base = load_documents()
    mutants = list(_mutants())
    survivors = [
        f"{rid} {name}" for rid, (name, mutate) in mutants if _caught(mutate, base) is None
    ]
    kinds = {name.split()[0] for _, (name, _) in mutants}
    # Every kind of mutation is made: each state as a wrong dest, guards dropped, steps changed.
    states = {s for m in load_spec().machines.values() for s in m.states}
    assert {f"dest={s}" for s in states} | {"when", "step"} <= kinds
    assert len(mutants) > 300
    assert survivors == [], f"{len(survivors)} of {len(mutants)} mutants survive:\n" + "\n".join(
        survivors
    )
