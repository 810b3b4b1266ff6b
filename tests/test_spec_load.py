"""Loading `specs/`: the shipped spec is valid, and malformed specs fail with an error that
names the file, the table and the entry."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fsm import ErrorKind, SpecError, enums
from fsm.spec import load_documents, load_spec, parse_spec
from fsm.spec.model import ProbeRoute
from tests import reference

Docs = dict[str, dict[str, Any]]


def test_packaged_spec_loads_and_is_versioned() -> None:
    spec = load_spec()
    assert spec.version == "1.0.0"
    assert set(spec.machines) == {"session", "topic_writer"}
    assert set(spec.resources) == {"sequence", "session", "topic", "api_key"}
    assert {"spec", "mosaicod-0.3"} <= set(spec.profiles)


def test_loading_from_a_directory_equals_the_package(tmp_path: Path) -> None:
    for name, doc in reference.raw_docs().items():
        del doc  # only the text matters
        text = (Path(__file__).parent.parent / "specs" / name).read_text()
        (tmp_path / name).write_text(text)
    assert load_spec(tmp_path) == load_spec()


def test_catalogue_covers_every_flight_action_and_error_kind() -> None:
    spec = load_spec()
    for action in enums.FlightAction:
        op = spec.operations[action.name]
        assert op.kind == "action" and op.wire == action.value
    assert set(spec.error_kinds) == {k.value for k in ErrorKind}


def test_every_state_changing_operation_the_machines_run_has_a_probe() -> None:
    spec = load_spec()
    used = {s.do for m in spec.machines.values() for t in m.transitions for s in t.steps if s.do}
    changing = {
        op
        for op in used
        if op.endswith(("_CREATE", "_DELETE", "_FINALIZE")) or op == "STREAM_CLOSE"
    }
    assert changing, "the machines run state-changing operations"
    for name in changing:
        probe = spec.operations[name].probe
        assert probe is not None, name
        assert spec.probes[probe].settles == name


def _mutated(mutate: Callable[[Docs], None]) -> Docs:
    docs = copy.deepcopy(load_documents())
    mutate(docs)
    return docs


def _transition(docs: Docs, file: str, tid: str) -> dict[str, Any]:
    return next(t for t in docs[file]["transitions"] if t["id"] == tid)


MALFORMED: list[tuple[str, Callable[[Docs], None], tuple[str, str, str]]] = [
    (
        "unknown source state",
        lambda d: _transition(d, "session.toml", "exit-ok").update(source="Open"),
        ("session.toml", "transitions", "exit-ok"),
    ),
    (
        "unknown operation in a step",
        lambda d: _transition(d, "session.toml", "exit-ok")["steps"][1].update(do="SESSION_CLOSE"),
        ("session.toml", "transitions", "steps[1]"),
    ),
    (
        "a failure without a route",
        lambda d: _transition(d, "topic_writer.toml", "push")["steps"][0].pop("failed"),
        ("topic_writer.toml", "transitions", "push"),
    ),
    (
        "a lost reply without a route, of an operation no probe settles",
        lambda d: _transition(d, "session.toml", "enter-updater")["steps"][0].pop("unknown"),
        ("session.toml", "transitions", "enter-updater"),
    ),
    (
        "verdict routes for an operation no probe settles",
        lambda d: _transition(d, "session.toml", "enter-updater")["steps"][0].update(
            unknown={"not_applied": "enter_failed"}
        ),
        ("session.toml", "transitions", "enter-updater"),
    ),
    (
        "a row naming a probe",
        lambda d: _transition(d, "session.toml", "enter-writer")["steps"][0]["unknown"].update(
            probe="topic_exists"
        ),
        ("session.toml", "transitions", "enter-writer).steps[0].unknown"),
    ),
    (
        "a verdict route written as the default",
        lambda d: _transition(d, "session.toml", "enter-writer")["steps"][0]["unknown"].update(
            applied="continue"
        ),
        ("session.toml", "transitions", "steps[0].unknown.applied"),
    ),
    (
        "an unknown verdict",
        lambda d: _transition(d, "session.toml", "enter-writer")["steps"][0]["unknown"].update(
            lost="continue"
        ),
        ("session.toml", "transitions", "steps[0].unknown"),
    ),
    (
        "a probe that a row relies on, not declared",
        lambda d: d["actions.toml"]["probes"].pop("sequence_exists"),
        ("session.toml", "transitions", "enter-writer"),
    ),
    (
        "a probe of an operation another probe settles",
        lambda d: d["actions.toml"]["probes"]["topic_exists"].update(settles="SEQUENCE_CREATE"),
        ("actions.toml", "probes.topic_exists", "settles"),
    ),
    (
        "a probe of an operation that cannot end unknown",
        lambda d: d["actions.toml"]["probes"]["topic_exists"].update(settles="UNKNOWN_ACTION"),
        ("actions.toml", "probes.topic_exists", "settles"),
    ),
    (
        "a probe of an undeclared operation",
        lambda d: d["actions.toml"]["probes"]["topic_exists"].update(settles="TOPIC_MAKE"),
        ("actions.toml", "probes.topic_exists", "settles"),
    ),
    (
        "an operation naming its probe",
        lambda d: d["actions.toml"]["operations"]["TOPIC_CREATE"].update(probe="topic_exists"),
        ("actions.toml", "operations.TOPIC_CREATE", "-"),
    ),
    (
        "an unknown key in a row",
        lambda d: _transition(d, "session.toml", "exit-ok").update(dset="Finalized"),
        ("session.toml", "transitions", "exit-ok"),
    ),
    (
        "a route to a user trigger",
        lambda d: _transition(d, "session.toml", "exit-ok")["steps"][1].update(failed="exit_error"),
        ("session.toml", "transitions", "exit-ok"),
    ),
    (
        "a state that is not an enum member",
        lambda d: d["session.toml"]["machine"]["states"].append("Aborted"),
        ("session.toml", "machine", "states"),
    ),
    (
        "an enum member missing from the states",
        lambda d: d["topic_writer.toml"]["machine"]["states"].remove("IgnoredLastError"),
        ("topic_writer.toml", "machine", "states"),
    ),
    (
        "a guard on an undeclared context value",
        lambda d: _transition(d, "session.toml", "exit-error-report").update(
            when={"policy": "Retry"}
        ),
        ("session.toml", "transitions", "exit-error-report"),
    ),
    (
        "a route row that does not raise its cause",
        lambda d: _transition(d, "session.toml", "enter-failed").update(error="none"),
        ("session.toml", "transitions", "enter-failed"),
    ),
    (
        "a catalogue entry without a permission",
        lambda d: d["actions.toml"]["operations"]["TOPIC_CREATE"].pop("permission"),
        ("actions.toml", "operations.TOPIC_CREATE", "-"),
    ),
    (
        "a FlightAction without a catalogue entry",
        lambda d: d["actions.toml"]["operations"].pop("API_KEY_REVOKE"),
        ("actions.toml", "operations", "API_KEY_REVOKE"),
    ),
    (
        "an unknown error kind",
        lambda d: d["actions.toml"]["operations"]["QUERY"]["errors"].append(
            {"kind": "timeout", "when": "x"}
        ),
        ("actions.toml", "operations.QUERY", "errors[1]"),
    ),
    (
        "a resource row with both dest and error",
        lambda d: d["resources.toml"]["resources"]["topic"]["rows"][0].update(error="internal"),
        ("resources.toml", "resources.topic.rows", "[0]"),
    ),
    (
        "a patch of a cell that does not exist",
        lambda d: d["deviations.toml"]["deviations"][0]["patch"][0].update(source="sealed"),
        ("deviations.toml", "deviations", "MOSAICOD-REPORT-LOCKS"),
    ),
    (
        "a profile naming an unknown deviation",
        lambda d: d["deviations.toml"]["profiles"]["mosaicod-0.3"]["deviations"].append("NOPE"),
        ("deviations.toml", "profiles.mosaicod-0.3", "-"),
    ),
    (
        "a machine named after another file",
        lambda d: d["session.toml"]["machine"].update(name="topic_writer"),
        ("session.toml", "machine", "name"),
    ),
    (
        "an unknown key in the machine table",
        lambda d: d["topic_writer.toml"]["machine"].update(initail="Active"),
        ("topic_writer.toml", "machine", "-"),
    ),
    (
        "an unknown key in a trigger",
        lambda d: d["session.toml"]["triggers"]["enter"].update(kinds="user"),
        ("session.toml", "triggers", "enter"),
    ),
    (
        "an error kind that is not a table",
        lambda d: d["actions.toml"]["error_kinds"].update(internal="INTERNAL"),
        ("actions.toml", "error_kinds", "internal"),
    ),
    (
        "a request field whose 'required' is not a boolean",
        lambda d: d["actions.toml"]["operations"]["SEQUENCE_CREATE"]["request"][0].update(
            required="no"
        ),
        ("actions.toml", "operations.SEQUENCE_CREATE", "request[0].required"),
    ),
    (
        "a resource row whose 'when' is not a table",
        lambda d: d["resources.toml"]["resources"]["topic"]["rows"][0].update(when="always"),
        ("resources.toml", "resources.topic.rows", "[0].when"),
    ),
    (
        "a patch with an unknown error kind",
        lambda d: next(
            x
            for x in d["deviations.toml"]["deviations"]
            if x["id"] == "MOSAICOD-DOGET-EMPTY-INTERNAL"
        )["patch"][0].update(error="not_fonud"),
        ("deviations.toml", "deviations", "MOSAICOD-DOGET-EMPTY-INTERNAL"),
    ),
    (
        "a setting patch whose value is not a switch",
        lambda d: next(
            x for x in d["deviations.toml"]["deviations"] if x["id"] == "MOSAICOD-NO-KEY-EXPIRY"
        )["patch"][0].update(value="off"),
        ("deviations.toml", "deviations", "MOSAICOD-NO-KEY-EXPIRY"),
    ),
    (
        "a profile that is not a table",
        lambda d: d["deviations.toml"]["profiles"].update(broken="everything"),
        ("deviations.toml", "profiles.broken", "-"),
    ),
    (
        "a query setting value of another setting",
        lambda d: next(
            x
            for x in d["deviations.toml"]["deviations"]
            if x["id"] == "MOSAICOD-QUERY-EMPTY-ONTOLOGY"
        )["patch"][0].update(value="always"),
        ("deviations.toml", "deviations", "MOSAICOD-QUERY-EMPTY-ONTOLOGY"),
    ),
    (
        "a query patch on an unknown operator",
        lambda d: next(
            x
            for x in d["deviations.toml"]["deviations"]
            if x["id"] == "MOSAICOD-QUERY-DATA-OPS-INTERNAL"
        )["patch"][0].update(operator="$near"),
        ("deviations.toml", "deviations", "MOSAICOD-QUERY-DATA-OPS-INTERNAL"),
    ),
    (
        "a query patch with both semantics and error",
        lambda d: next(
            x
            for x in d["deviations.toml"]["deviations"]
            if x["id"] == "MOSAICOD-QUERY-EQ-WHOLE-CHUNK"
        )["patch"][0].update(error="internal"),
        ("deviations.toml", "deviations", "MOSAICOD-QUERY-EQ-WHOLE-CHUNK"),
    ),
    (
        "a query operator without a known operand shape",
        lambda d: d["query.toml"]["operators"]["$in"].update(operand="many"),
        ("query.toml", "operators.$in", "operand"),
    ),
    (
        "a query kind cell naming an unknown operator",
        lambda d: d["query.toml"]["kinds"]["data"]["operators"].update({"$near": "row"}),
        ("query.toml", "kinds.data", "-"),
    ),
    (
        "a query kind cell with an unknown semantics",
        lambda d: d["query.toml"]["kinds"]["text"]["operators"].update({"$eq": "fuzzy"}),
        ("query.toml", "kinds.text", "-"),
    ),
    (
        "a query section field of an unknown kind",
        lambda d: d["query.toml"]["sections"]["topic"]["fields"].update(locator="path"),
        ("query.toml", "sections.topic", "-"),
    ),
    (
        "a query value type that does not exist",
        lambda d: d["query.toml"]["kinds"]["timestamp"].update(values=["date"]),
        ("query.toml", "kinds.timestamp", "values[0]"),
    ),
    (
        "an unknown key in a query section",
        lambda d: d["query.toml"]["sections"]["topic"].update(colour="red"),
        ("query.toml", "sections.topic", "-"),
    ),
    (
        "a query section option of an unknown type",
        lambda d: d["query.toml"]["sections"]["ontology"]["options"].update(x="integer"),
        ("query.toml", "sections.ontology", "options.x"),
    ),
    (
        "files disagreeing on the spec version",
        lambda d: d["actions.toml"].update(spec_version="2.0.0"),
        ("deviations.toml", "-", "spec_version"),
    ),
]


@pytest.mark.parametrize(("name", "mutate", "where"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_spec_names_file_table_entry(
    name: str, mutate: Callable[[Docs], None], where: tuple[str, str, str]
) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(_mutated(mutate))
    err = info.value
    file, table, entry = where
    assert err.file == file, err
    assert err.table == table, err
    assert entry in err.entry, err
    assert file in str(err) and err.problem in str(err)


@pytest.mark.parametrize(
    ("mutate", "says"),
    [
        (
            lambda d: _transition(d, "session.toml", "exit-ok").update(dset="Finalized"),
            "unknown key(s) dset",
        ),
        (
            lambda d: _transition(d, "session.toml", "enter-writer")["steps"][0]["unknown"].update(
                probe="sequence_exists"
            ),
            "a row names no probe: the probe of an operation is the [probes] entry",
        ),
        (
            lambda d: d["actions.toml"]["probes"].pop("sequence_exists"),
            "no probe settles SEQUENCE_CREATE",
        ),
        (
            lambda d: d["actions.toml"]["probes"].pop("sequence_absent"),
            "missing route 'unknown'",
        ),
        (
            lambda d: _transition(d, "session.toml", "exit-ok")["steps"][0].update(failed=3),
            "session.toml: [transitions] transitions[7] (exit-ok).steps[0].failed: "
            "must be a non-empty string, got 3",
        ),
        (
            lambda d: _transition(d, "session.toml", "exit-ok").update(steps="x"),
            "(exit-ok).steps: must be an array, got 'x'",
        ),
        (
            lambda d: _transition(d, "session.toml", "exit-ok").update(error="loud"),
            "(exit-ok).error: must be one of none, cause, propagate, suppress, got 'loud'",
        ),
        (
            lambda d: _transition(d, "session.toml", "exit-ok").pop("dest"),
            "(exit-ok): missing key 'dest'",
        ),
        (
            lambda d: d["actions.toml"]["probes"]["topic_exists"].update(colour="red"),
            "actions.toml: [probes.topic_exists] -: unknown key(s) colour",
        ),
        (
            lambda d: d["actions.toml"].update(extras={}),
            "actions.toml: [-] -: unknown key(s) extras",
        ),
        (
            lambda d: d["deviations.toml"]["deviations"][0]["patch"][0].update(colour="x"),
            "[deviations] [0] (MOSAICOD-REPORT-LOCKS).patch[0]: unknown key(s) colour",
        ),
        (
            lambda d: d["actions.toml"]["limits"].update(x={"value": True, "doc": "d"}),
            "actions.toml: [limits] x.value: must be an integer, got True",
        ),
        (
            lambda d: d["session.toml"]["triggers"]["enter"].update(doc=3),
            "session.toml: [triggers] enter.doc: must be a non-empty string, got 3",
        ),
        (
            lambda d: d["actions.toml"]["probes"]["topic_exists"].update(reads=""),
            "actions.toml: [probes.topic_exists] reads: must be a non-empty string, got ''",
        ),
        (
            lambda d: d["actions.toml"]["field_types"].update(text=1),
            "actions.toml: [field_types] text: must be a string, got 1",
        ),
    ],
    ids=[
        "unknown row key",
        "probe named in a row",
        "probe not declared",
        "default lost",
        "route of the wrong type",
        "array given a string",
        "value outside its set",
        "missing key",
        "unknown key in a probe",
        "unknown top-level table",
        "unknown key in a patch",
        "integer given a boolean",
        "text given a number",
        "empty text",
        "string given a number",
    ],
)
def test_the_error_says_what_is_wrong(mutate: Callable[[Docs], None], says: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(_mutated(mutate))
    assert says in str(info.value)


def test_a_probe_routes_its_verdicts_to_continue_unless_the_row_says_otherwise() -> None:
    spec = load_spec()
    docs = load_documents()
    seen: set[tuple[str, ...]] = set()
    for machine in spec.machines.values():
        written = {r["id"]: r.get("steps", []) for r in docs[machine.file]["transitions"]}
        for row in machine.transitions:
            for step, raw in zip(row.steps, written[row.id], strict=True):
                op = spec.operations[step.do] if step.do else None
                if op is None or op.probe is None or isinstance(raw.get("unknown"), str):
                    continue
                assert isinstance(step.unknown, ProbeRoute)
                assert step.unknown.probe == op.probe
                assert spec.probes[op.probe].settles == op.name
                verdicts = raw.get("unknown", {})
                routes = (step.unknown.applied, step.unknown.not_applied, step.unknown.unresolved)
                for verdict, route in zip(
                    ("applied", "not_applied", "unresolved"), routes, strict=True
                ):
                    assert route == verdicts.get(verdict, "continue"), (row.id, step.name)
                seen.add(tuple(sorted(verdicts)))
    assert () in seen and len(seen) > 1, "both defaulted and written verdicts occur"


def test_a_missing_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"session\.toml.*cannot be read"):
        load_spec(tmp_path)


def test_bad_toml_is_a_spec_error(tmp_path: Path) -> None:
    for name, _ in reference.raw_docs().items():
        (tmp_path / name).write_text((Path(__file__).parent.parent / "specs" / name).read_text())
    (tmp_path / "resources.toml").write_text("spec_version = \n")
    with pytest.raises(SpecError, match=r"resources\.toml"):
        load_spec(tmp_path)
