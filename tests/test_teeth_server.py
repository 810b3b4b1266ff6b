"""The tests have teeth on the server side too: every single-entry mutant of
`resources.toml` and of the operations of `actions.toml` is caught, or is listed in
`EQUIVALENT` with the reason no observable behaviour can tell it from the original.

A resource row is mutated in its destination (to every other state), its error (to every other
kind in use), its outcome (an accepting row refuses, a refusing row accepts), and its guard
(each fact flipped, the guard dropped). An operation is mutated in its permission, its wire
name, each request field (dropped, its type changed, its `required` flipped), its outcomes and
its probe. A mutant is caught when the spec loader or the soundness checks refuse it, or when
one of the checks written from the protocol's text (`tests/server_checks.py`,
`tests/catalogue_checks.py`) or the conformance suite (whose cases never read the tables)
fails on a reference server running the mutant; a crash counts as caught. The engine-side
behaviour scenarios run too, for the catalogue mutants the client machines use.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fsm.conformance.suite import run_suite
from fsm.errors import SpecError
from fsm.spec import load_documents, load_spec, parse_spec
from fsm.spec.model import Spec
from tests.catalogue_checks import CATALOGUE_CHECKS, first_catalogue_failure
from tests.scenarios import ALL_SCENARIOS, run_scenario
from tests.server_checks import CHECKS, first_failure
from transport.memory import MemoryTransport
from transport.server.model import ServerModel

Docs = dict[str, dict[str, Any]]
Mutant = tuple[str, Callable[[Docs], None]]
PERMISSIONS = ("none", "read", "write", "delete", "manage")

# Mutants no test can catch, because no request can tell them from the original, with why.
UNREACHABLE_SESSION_CREATE = "a session UUID is fresh when it is made: the row never runs"
UNREACHABLE_KEY_CREATE = "a fresh key gets a fresh fingerprint: the row never runs"
UNREACHABLE_CANCEL = (
    "a cancel whose stream no longer owns the topic answers before the table; only a "
    "receiving topic has a stream"
)
READ_IS_NONE = "every key holds read: permissions none and read admit the same keys"
REFUSED_FIRST = "refused as unknown or unimplemented before any permission check"
STREAM_PHASE = (
    "a client-side phase of one DoPut: the server authorizes and names the stream once, as DO_PUT"
)
OUTCOMES = "`outcomes` is only printed by `mosaico-fsm spec`; no behaviour reads it"
RPC_NAME = "an RPC is chosen by its Flight method, not by this name, which only documents it"
RAW_BYTES = "carried as raw bytes (an opaque ticket, a criteria string), never as a JSON field"
QUERY_BODY = "QUERY hands its whole body to the filter compiler, which refuses a bad filter itself"


def _operation_equivalents() -> dict[str, str]:
    ops = load_documents()["actions.toml"]["operations"]
    found: dict[str, str] = {}
    for name, op in ops.items():
        for outcome in op.get("outcomes", []):
            found[f"actions.{name} outcome {outcome} dropped"] = OUTCOMES
        if op["permission"] == "read":
            found[f"actions.{name} permission=none"] = READ_IS_NONE
        if op["permission"] == "none" and op["wire"] not in ("*",) and "|" not in op["wire"]:
            found[f"actions.{name} permission=read"] = READ_IS_NONE
        if name in ("UNKNOWN_ACTION", "UNSUPPORTED_RPC"):
            for level in PERMISSIONS[1:]:
                found[f"actions.{name} permission={level}"] = REFUSED_FIRST
        if name.startswith("STREAM_"):
            for level in PERMISSIONS:
                if level != op["permission"]:
                    found[f"actions.{name} permission={level}"] = STREAM_PHASE
            found[f"actions.{name} wire renamed"] = STREAM_PHASE
        if op["kind"] == "rpc":
            found[f"actions.{name} wire renamed"] = RPC_NAME
    for name, field in (("DO_GET", "ticket"), ("LIST_FLIGHTS", "criteria")):
        for mutant in ("dropped", "required flipped", "type=integer"):
            found[f"actions.{name} request.{field} {mutant}"] = RAW_BYTES
    for field in ("sequence", "topic", "ontology"):
        found[f"actions.QUERY request.{field} dropped"] = QUERY_BODY
    found["actions.QUERY request.ontology type=string"] = (
        "the server refuses every ontology (data-level) filter, whatever its type"
    )
    return found


EQUIVALENT: dict[str, str] = {
    **{
        f"resources.session[1] open/reported/finalized/finalized_reported SESSION_CREATE {m}": (
            UNREACHABLE_SESSION_CREATE
        )
        for m in ("error=already_exists", "error=failed_precondition", "error=not_found", "accepts")
    },
    **{
        f"resources.api_key[1] active API_KEY_CREATE {m}": UNREACHABLE_KEY_CREATE
        for m in ("error=already_exists", "error=failed_precondition", "error=not_found", "accepts")
    },
    **{
        f"resources.topic[12] created/locked DO_PUT_CANCEL {m}": UNREACHABLE_CANCEL
        for m in ("dest=absent", "dest=created", "dest=receiving", "dest=locked", "refuses")
    },
    **_operation_equivalents(),
}


@pytest.fixture(autouse=True)
def quiet() -> Iterator[None]:
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


def _listed(value: Any) -> list[str]:
    return list(value) if isinstance(value, list) else [value]


def _resource_mutants(base: Docs) -> Iterator[tuple[str, Mutant]]:
    kinds = sorted(
        {
            r["error"]
            for res in base["resources.toml"]["resources"].values()
            for r in res["rows"]
            if "error" in r
        }
    )
    for name, res in base["resources.toml"]["resources"].items():
        facts = res.get("facts", {})
        for i, row in enumerate(res["rows"]):
            rid = f"resources.{name}[{i}] {'/'.join(_listed(row['source']))} {'/'.join(_listed(row['event']))}"
            if "dest" in row:
                sources = _listed(row["source"])
                current = {row["dest"] if row["dest"] != "=" else s for s in sources}
                for state in [*res["states"], "="]:
                    became = {state if state != "=" else s for s in sources}
                    if became != current:
                        yield rid, (f"dest={state}", _set_row(name, i, {"dest": state}))
                yield (
                    rid,
                    ("refuses", _set_row(name, i, {"dest": None, "error": "failed_precondition"})),
                )
            else:
                for kind in kinds:
                    if kind != row["error"]:
                        yield rid, (f"error={kind}", _set_row(name, i, {"error": kind}))
                yield rid, ("accepts", _set_row(name, i, {"error": None, "dest": "="}))
            when = row.get("when", {})
            for fact, value in when.items():
                for other in facts[fact]["values"]:
                    if other != value:
                        yield (
                            rid,
                            (
                                f"when {fact}={other}",
                                _set_row(name, i, {"when": {**when, fact: other}}),
                            ),
                        )
            if when:
                yield rid, ("when dropped", _set_row(name, i, {"when": None}))


def _set_row(resource: str, i: int, changes: dict[str, Any]) -> Callable[[Docs], None]:
    def mutate(docs: Docs) -> None:
        row = docs["resources.toml"]["resources"][resource]["rows"][i]
        for key, value in changes.items():
            if value is None:
                row.pop(key, None)
            else:
                row[key] = copy.deepcopy(value)

    return mutate


def _operation_mutants(base: Docs) -> Iterator[tuple[str, Mutant]]:
    probes = sorted(base["actions.toml"].get("probes", {}))
    for name, op in base["actions.toml"]["operations"].items():
        rid = f"actions.{name}"
        for permission in PERMISSIONS:
            if permission != op["permission"]:
                yield rid, (f"permission={permission}", _set_op(name, {"permission": permission}))
        if op["wire"] != "*":
            yield rid, ("wire renamed", _set_op(name, {"wire": f"{op['wire']}_x"}))
        for j, field in enumerate(op.get("request", [])):
            fid = f"request.{field['name']}"
            rest = op["request"][:j] + op["request"][j + 1 :]
            yield rid, (f"{fid} dropped", _set_op(name, {"request": rest}))
            yield (
                rid,
                (
                    f"{fid} required flipped",
                    _set_field(name, j, {"required": not field["required"]}),
                ),
            )
            other = "integer" if field["type"] == "string" else "string"
            yield rid, (f"{fid} type={other}", _set_field(name, j, {"type": other}))
        for outcome in op.get("outcomes", []):
            kept = [o for o in op["outcomes"] if o != outcome]
            yield rid, (f"outcome {outcome} dropped", _set_op(name, {"outcomes": kept}))
        if "probe" in op:
            yield rid, ("probe dropped", _set_op(name, {"probe": None}))
            for probe in probes:
                if probe != op["probe"]:
                    yield rid, (f"probe={probe}", _set_op(name, {"probe": probe}))


def _set_op(name: str, changes: dict[str, Any]) -> Callable[[Docs], None]:
    def mutate(docs: Docs) -> None:
        op = docs["actions.toml"]["operations"][name]
        for key, value in changes.items():
            if value is None:
                op.pop(key, None)
            else:
                op[key] = copy.deepcopy(value)

    return mutate


def _set_field(name: str, j: int, changes: dict[str, Any]) -> Callable[[Docs], None]:
    def mutate(docs: Docs) -> None:
        docs["actions.toml"]["operations"][name]["request"][j].update(changes)

    return mutate


def _suite_fails(spec: Spec) -> str | None:
    model = ServerModel(spec, auth=True, seed=1)
    key = model.bootstrap_key()
    result = run_suite(lambda k: MemoryTransport(model, api_key=k), target="memory", api_key=key)
    failed = [v.case.id for v in result.verdicts if v.status == "fail"]
    return f"conformance: {failed[0]}" if failed else None


def _caught(mutate: Callable[[Docs], None], base: Docs, *, engine: bool) -> str | None:
    docs = copy.deepcopy(base)
    mutate(docs)
    try:
        spec = parse_spec(docs)
        if engine:
            for scenario in ALL_SCENARIOS:
                try:
                    run_scenario(spec, scenario)
                except AssertionError:
                    return f"scenario: {scenario.name}"
        checked = first_failure(lambda: ServerModel(spec, seed=1)) or first_catalogue_failure(
            lambda: ServerModel(spec, seed=1)
        )
        if checked is not None:
            return f"server check: {checked}"
        return _suite_fails(spec)
    except SpecError as exc:
        return f"spec: {exc.problem}"
    except Exception as exc:  # the server or engine crashed on the mutant: caught
        return f"crash: {type(exc).__name__}: {exc}"


def _survivors(mutants: list[tuple[str, Mutant]], *, engine: bool) -> list[str]:
    base = load_documents()
    survivors = []
    for rid, (name, mutate) in mutants:
        label = f"{rid} {name}"
        if label not in EQUIVALENT and _caught(mutate, base, engine=engine) is None:
            survivors.append(label)
    return survivors


def test_every_resource_row_mutant_is_caught() -> None:
    mutants = list(_resource_mutants(load_documents()))
    assert len(mutants) > 150
    survivors = _survivors(mutants, engine=False)
    assert survivors == [], f"{len(survivors)} of {len(mutants)} survive:\n" + "\n".join(survivors)


def test_every_equivalent_mutant_is_still_made() -> None:
    """An entry of EQUIVALENT names a mutant that is still generated (no stale excuses)."""
    base = load_documents()
    labels = {
        f"{rid} {name}" for rid, (name, _) in [*_resource_mutants(base), *_operation_mutants(base)]
    }
    assert set(EQUIVALENT) <= labels, sorted(set(EQUIVALENT) - labels)
    assert load_spec() is not None


def test_the_server_checks_pass_on_the_reference_model() -> None:
    for check in CHECKS:
        check(ServerModel(seed=1))
    for catalogue_check in CATALOGUE_CHECKS:
        catalogue_check(lambda: ServerModel(seed=1))


def test_every_operation_mutant_is_caught() -> None:
    mutants = list(_operation_mutants(load_documents()))
    assert len(mutants) > 100
    survivors = _survivors(mutants, engine=True)
    assert survivors == [], f"{len(survivors)} of {len(mutants)} survive:\n" + "\n".join(survivors)
