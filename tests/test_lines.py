"""Protocol lines as data (`specs/lines/`): every line loads into tables that pass the same
soundness checks as 0.3, says what VERSIONS of the SDK changed, and bad line files are
refused with a SpecError naming the file, never half-loaded."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import fsm
from fsm.errors import SpecError
from fsm.spec import check_spec
from fsm.spec.lines import PermissionModel, line_names, load_line, load_lines, load_wire
from tests.harness import profile_examples

SPECS = Path(fsm.__file__).parent.parent / "specs"


def session_steps(line: str, row: str) -> list[str]:
    rows = [t for t in load_line(line).spec.session.transitions if t.id == row]
    assert rows, row
    return [s.name for s in rows[0].steps]


def test_the_lines() -> None:
    assert line_names() == ["0.3", "0.4", "0.5", "0.6", "0.7"]
    assert [line.base for line in load_lines().values()] == [None, "0.3", "0.4", "0.5", "0.6"]


def test_the_default_line_is_the_tables_themselves() -> None:
    assert load_line().spec == fsm.load_spec()
    assert load_line("0.3").wire["connect"] == "list_flights_pool"


@pytest.mark.parametrize("line", line_names())
def test_every_line_is_sound(line: str) -> None:
    assert check_spec(load_line(line).spec) == []


@pytest.mark.parametrize("line", line_names())
def test_every_aspect_has_a_known_shape(line: str) -> None:
    aspects = load_wire()
    wire = load_line(line).wire
    assert set(wire) == set(aspects)
    assert all(shape in aspects[a].shapes for a, shape in wire.items())


def test_purge_of_a_new_sequence_per_line() -> None:
    assert session_steps("0.3", "exit-error-delete-writer") == [
        "TOPICS:close_error",
        "SEQUENCE_DELETE",
    ]
    for line in ("0.4", "0.5", "0.6", "0.7"):
        for row in (
            "exit-error-delete-writer",
            "finalize-failed-delete-writer",
            "topics-failed-delete-writer",
        ):
            assert session_steps(line, row)[-2:] == ["SESSION_DELETE", "SEQUENCE_DELETE"], (
                line,
                row,
            )


def test_status_after_a_delete_purge() -> None:
    def dest(line: str) -> str:
        return next(
            t.dest
            for t in load_line(line).spec.session.transitions
            if t.id == "exit-error-delete-writer"
        )

    assert [dest(n) for n in line_names()] == ["Error", "Error", "Error", "Null", "Null"]


def test_catalogue_per_line() -> None:
    ops = {n: load_line(n).spec.operations for n in line_names()}
    assert "API_KEY_CREATE" in ops["0.5"] and "API_KEY_CREATE" not in ops["0.6"]
    assert "VERSION" in ops["0.6"] and "VERSION" not in ops["0.7"] and "INFO" in ops["0.7"]
    assert "TOPIC_FILTER_CLUSTERIZE" in ops["0.6"] and "TOPIC_FILTER_INTERSECT" in ops["0.7"]
    assert ops["0.4"]["SESSION_CREATE"].response == {"uuid": "uuid"}
    assert ops["0.5"]["SESSION_CREATE"].response == {"uuid": "uuid", "locator": "session_locator"}
    assert [f.name for f in ops["0.5"]["SESSION_DELETE"].request] == ["locator"]
    assert ops["0.5"]["TOPIC_NOTIFICATION_CREATE"].permission == "read"
    assert ops["0.6"]["TOPIC_NOTIFICATION_CREATE"].permission == "write"
    assert "GetSchema" in ops["0.6"]["UNSUPPORTED_RPC"].wire
    assert ops["0.7"]["GET_SCHEMA"].wire == "GetSchema"
    assert "api_key" in load_line("0.5").spec.resources
    assert "api_key" not in load_line("0.6").spec.resources


def test_permission_models() -> None:
    ranked, granular = load_line("0.5").permissions, load_line("0.6").permissions
    assert ranked == PermissionModel("ranked", ("read", "write", "delete", "manage"))
    assert granular == PermissionModel("granular", ("read", "write", "delete"))
    assert ranked.covers(["delete"], "write") and not ranked.covers(["write"], "delete")
    assert not granular.covers(["delete"], "write") and granular.covers(["read", "write"], "write")
    assert granular.covers([], "none") and not granular.covers([], "read")


def test_record_too_large_in_0_7() -> None:
    topic = load_line("0.7").spec.topic_writer
    assert "RecordTooLarge" in topic.states
    row = topic.lookup("Active", "push_too_large", {"policy": "Raise", "session_policy": "Report"})
    assert row is not None and row.dest == "RecordTooLarge"
    assert [s.name for s in row.steps] == ["TOPIC_NOTIFICATION_CREATE"]
    back = topic.lookup("RecordTooLarge", "push", {"policy": "Raise", "session_policy": "Report"})
    assert back is not None and back.dest == "Active"
    assert "RecordTooLarge" not in load_line("0.6").spec.topic_writer.states


def test_handshakes() -> None:
    info = load_line("0.7").handshake
    assert info.version == "0.7.0"
    assert info.config["grpc_max_decode_message_size"] == 50 * 1024 * 1024
    assert load_line("0.5").handshake.version is None
    assert any(u.about == "handshake" for u in load_line("0.5").unknown)


def test_deviations_per_line() -> None:
    assert "SDK-DOUBLE-SEQUENCE-DELETE" in load_line("0.3").spec.deviations
    four = load_line("0.4")
    assert "SDK-DOUBLE-SEQUENCE-DELETE" not in four.spec.deviations
    assert "SDK-DOUBLE-SEQUENCE-DELETE" in four.fixed_deviations
    assert "SDK-REPORT-DROPS-BUFFER" in four.spec.deviations
    assert "SDK-REPORT-DROPS-BUFFER" not in four.unknown_deviations
    assert four.spec.deviations["SDK-FINALIZE-REFUSED-DELETE-KEEPS-SEQUENCE"].who == "sdk-0.4"
    assert "MOSAICOD-REPORT-LOCKS" in four.unknown_deviations
    seven = load_line("0.7")
    assert "SDK-SILENT-DROP-LARGE" not in seven.spec.deviations
    assert "MOSAICOD-NO-KEY-EXPIRY" not in seven.unknown_deviations
    assert "MOSAICOD-NO-KEY-EXPIRY" not in seven.spec.profiles["mosaicod-0.3"].deviations


def test_unknowns_are_inherited_while_their_subject_exists() -> None:
    six, seven = load_line("0.6"), load_line("0.7")
    assert any(u.about == "TOPIC_FILTER_CLUSTERIZE" and u.stated_in == "0.6" for u in seven.unknown)
    assert any(u.about == "MOSAICOD-NO-KEY-EXPIRY" for u in six.unknown)
    assert not any(u.about == "MOSAICOD-NO-KEY-EXPIRY" for u in seven.unknown)


# ---------------------------------------------------------------------------------------------
# Bad line files


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def to_toml(doc: dict[str, Any]) -> str:
    return "".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in doc.items())


def read_line(name: str) -> dict[str, Any]:
    return tomllib.loads((SPECS / "lines" / f"{name}.toml").read_text(encoding="utf-8"))


def specs_with(tmp: Path, **lines: dict[str, Any]) -> Path:
    """A copy of specs/ with the given line files replaced."""
    target = tmp / "specs"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(SPECS, target, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    for name, doc in lines.items():
        (target / "lines" / f"{name.replace('_', '.')}.toml").write_text(
            to_toml(doc), encoding="utf-8"
        )
    return target


def test_the_toml_writer_round_trips() -> None:
    doc = read_line("0.7")
    assert tomllib.loads(to_toml(doc)) == doc


def refused(tmp: Path, line: str, doc: dict[str, Any], words: str) -> SpecError:
    directory = specs_with(tmp, **{line.replace(".", "_"): doc})
    with pytest.raises(SpecError) as caught:
        load_line("0.7", directory)
    assert caught.value.file.startswith("lines/"), caught.value
    assert words in str(caught.value), caught.value
    return caught.value


def test_an_unchanged_copy_loads(tmp_path: Path) -> None:
    directory = specs_with(tmp_path, **{"0_7": read_line("0.7")})
    assert load_line("0.7", directory).spec == load_line("0.7").spec


def test_unknown_key(tmp_path: Path) -> None:
    doc = read_line("0.6") | {"colour": "blue"}
    refused(tmp_path, "0.6", doc, "unknown key(s) colour")


def test_unknown_wire_shape(tmp_path: Path) -> None:
    doc = read_line("0.7")
    doc["wire"]["connect"] = "telepathy"
    refused(tmp_path, "0.7", doc, "unknown shape 'telepathy'")


def test_wire_shape_must_agree_with_the_catalogue(tmp_path: Path) -> None:
    doc = read_line("0.5")
    del doc["wire"]["session_create_answer"]
    refused(tmp_path, "0.5", doc, "SESSION_CREATE's response disagree")


def test_info_needs_its_limits(tmp_path: Path) -> None:
    doc = read_line("0.7")
    del doc["handshake"]["config"]["grpc_target_encode_message_size"]
    refused(tmp_path, "0.7", doc, "info handshake needs")


def test_removing_what_is_not_there(tmp_path: Path) -> None:
    doc = read_line("0.7")
    doc["catalogue"]["remove"] = ["API_KEY_CREATE"]
    refused(tmp_path, "0.7", doc, "no operation 'API_KEY_CREATE' to remove")


def test_a_removed_operation_still_used_by_a_table(tmp_path: Path) -> None:
    doc = read_line("0.6")
    doc["resources"]["remove"] = []
    error = refused(tmp_path, "0.6", doc, "after this line's changes")
    assert "API_KEY" in error.problem


def test_an_unsound_patch_is_refused(tmp_path: Path) -> None:
    """A replaced row that makes the session table nondeterministic fails the 0.3 checks."""
    doc = read_line("0.4")
    doc["lifecycle"]["session"]["replace"][0]["when"] = {"policy": "Delete"}
    refused(tmp_path, "0.4", doc, "overlap")


def test_enum_and_table_must_agree(tmp_path: Path) -> None:
    doc = read_line("0.7")
    del doc["enums"]["change"]["TopicWriterStatus"]
    refused(tmp_path, "0.7", doc, "states must be exactly the members of TopicWriterStatus")


def test_permission_model_must_match_the_enum(tmp_path: Path) -> None:
    doc = read_line("0.6")
    doc["enums"]["remove"] = []
    refused(tmp_path, "0.6", doc, "a granular model has no APIKeyPermissionEnum")


def test_unknown_must_name_something(tmp_path: Path) -> None:
    doc = read_line("0.7")
    doc["unknown"].append({"about": "the weather", "text": "unclear"})
    refused(tmp_path, "0.7", doc, "names nothing of this line")


def test_a_fixed_deviation_must_exist(tmp_path: Path) -> None:
    doc = read_line("0.7")
    doc["deviations"]["fixed"]["SDK-NOTHING"] = "never was"
    refused(tmp_path, "0.7", doc, "no such deviation")


def test_bases_may_not_loop(tmp_path: Path) -> None:
    doc = read_line("0.4") | {"base": "0.7"}
    refused(tmp_path, "0.4", doc, "must be an earlier line")


def test_a_line_is_named_after_its_file(tmp_path: Path) -> None:
    doc = read_line("0.6") | {"line": "0.9"}
    refused(tmp_path, "0.6", doc, "the file's name")


def test_enum_insertion_positions(tmp_path: Path) -> None:
    doc = read_line("0.7")
    doc["enums"]["change"]["FlightAction"]["add"][0] = {
        "name": "INFO",
        "value": "info",
        "after": "NOPE",
    }
    refused(tmp_path, "0.7", doc, "has no member 'NOPE'")
    doc["enums"]["change"]["FlightAction"]["add"][0] = {"name": "INFO", "value": "query"}
    refused(tmp_path, "0.7", doc, "duplicate member values")


LATER_LINES = {name: read_line(name) for name in ("0.4", "0.5", "0.6", "0.7")}


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path into a parsed line file."""
    out: list[tuple[Any, ...]] = []
    items = (
        doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else []
    )
    for key, value in items:
        out.append((*prefix, key))
        out += paths(value, (*prefix, key))
    return out


JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.text(max_size=8),
    st.lists(st.text(max_size=4), max_size=2),
    st.dictionaries(st.text(max_size=4), st.integers(0, 2), max_size=2),
)
DAMAGE = st.sampled_from(sorted(LATER_LINES)).flatmap(
    lambda name: st.tuples(
        st.just(name),
        st.lists(
            st.tuples(st.sampled_from(paths(LATER_LINES[name])), JUNK), min_size=1, max_size=3
        ),
    )
)


@settings(max_examples=profile_examples(0.25))
@given(DAMAGE)
@example(("0.4", [(("deviations", "add", 0, "id"), {})]))
@example(("0.4", [(("lifecycle", "session", "replace", 2, "steps", 1, "do"), [])]))
@example(("0.4", [(("deviations", "add", 0, "signature", "failed"), [])]))
@example(("0.7", [(("wire", "connect"), [])]))
@example(("0.6", [(("query", "merge", "kinds", "data", "operators", "$outside"), {})]))
@example(("0.6", [(("query", "merge", "sections", "sequence", "fields", "name"), {"a": 1})]))
def test_any_damaged_line_file_loads_or_is_a_spec_error(
    tmp_path_factory: pytest.TempPathFactory, damage: tuple[str, list[tuple[tuple[Any, ...], Any]]]
) -> None:
    """Whatever a line file holds, loading the lines gives checked tables or a SpecError
    naming a line file, never another exception."""
    name, changes = damage
    doc = json.loads(json.dumps(LATER_LINES[name]))
    for path, junk in changes:
        target: Any = doc
        try:
            for key in path[:-1]:
                target = target[key]
            if junk is None:
                del target[path[-1]]
            else:
                target[path[-1]] = junk
        except (KeyError, IndexError, TypeError):
            continue
    directory = specs_with(tmp_path_factory.mktemp("line"), **{name.replace(".", "_"): doc})
    try:
        line = load_line("0.7", directory)
    except SpecError as exc:
        assert exc.file.startswith("lines/")
        return
    assert check_spec(line.spec) == []


def test_a_missing_key_per_line() -> None:
    def kinds(line: str) -> list[str]:
        return [e.kind for e in load_line(line).spec.common_errors]

    assert "unauthenticated" in kinds("0.5")
    assert "unauthenticated" not in kinds("0.6")
    assert "permission_denied" in kinds("0.6")
    assert "MOSAICOD-MISSING-KEY-DENIED" in load_line("0.3").spec.deviations
    assert "MOSAICOD-MISSING-KEY-DENIED" in load_line("0.4").fixed_deviations


def test_query_grammar_per_line() -> None:
    five, six = load_line("0.5").spec.query, load_line("0.6").spec.query
    assert "locator" in five.sections["sequence"].fields
    assert "name" in six.sections["sequence"].fields
    assert "locator" not in six.sections["topic"].fields
    assert "include_timestamp_range" in five.sections["ontology"].options
    assert "include_timestamp_range" not in six.sections["ontology"].options
    assert "$outside" not in five.operators and six.cell("timestamp", "$outside") == "value"
    assert load_line("0.7").spec.query == six


def test_query_patches_are_checked(tmp_path: Path) -> None:
    doc = read_line("0.6")
    doc["query"]["remove"].append(["sections", "nowhere"])
    refused(tmp_path, "0.6", doc, "no sections.nowhere to remove")
    doc = read_line("0.6")
    doc["query"]["merge"]["sections"]["sequence"]["fields"]["locator"] = "text"
    refused(tmp_path, "0.6", doc, "names resources by 'name'")
    doc = read_line("0.6")
    doc["query"]["merge"]["kinds"]["data"]["operators"]["$outside"] = "sometimes"
    refused(tmp_path, "0.6", doc, "neither a semantics nor an error")


def test_the_delete_body_shape_must_agree_with_the_catalogue(tmp_path: Path) -> None:
    doc = read_line("0.5")
    doc["catalogue"]["change"]["SESSION_DELETE"]["request"][0]["type"] = "string"
    refused(tmp_path, "0.5", doc, "the shape and SESSION_DELETE's request")


def test_shape_fields_of_the_envelope() -> None:
    aspects = load_wire()
    envelope = aspects["do_put_schema"].fields
    assert envelope["recording_envelope"][0] == "timestamp_ns: int64 not null"
    assert envelope["header_structs"] == ("timestamp_ns: int64 not null",)
    assert aspects["session_create_answer"].fields["uuid_locator"] == (
        "uuid: uuid",
        "locator: session_locator",
    )


STRUCTURE_DAMAGE = [
    ("0.7", ("handshake", "version"), "seven", "handshake", "version", "semantic version"),
    (
        "0.7",
        ("handshake", "config", "grpc_max_decode_message_size"),
        0,
        "handshake",
        "config.grpc_max_decode_message_size",
        "positive number of bytes",
    ),
    ("0.7", ("handshake", "config", "colour"), 1, "handshake", "config", "unknown key(s) colour"),
    ("0.7", ("sdk_releases",), [], "sdk_releases", "-", "non-empty array"),
    ("0.7", ("catalogue", "add", "INFO", "kind"), "call", "catalogue", "add.INFO.kind", "one of"),
    (
        "0.7",
        ("enums", "change", "FlightAction", "add", 0, "first"),
        "yes",
        "enums",
        "change.FlightAction.add[0].first",
        "true or false",
    ),
    (
        "0.4",
        ("lifecycle", "session", "replace", 0, "colour"),
        "blue",
        "lifecycle",
        "session.replace[0]",
        "unknown key(s) colour",
    ),
    ("0.6", ("permissions", "levels"), ["read"], "permissions", "-", "lists its bits, and only"),
    ("0.4", ("unknown", 0, "about"), "", "unknown", "[0].about", "non-empty string"),
]


@pytest.mark.parametrize(
    ("line", "path", "junk", "table", "entry", "words"),
    STRUCTURE_DAMAGE,
    ids=[".".join(map(str, d[1])) for d in STRUCTURE_DAMAGE],
)
def test_a_wrong_shape_is_refused_where_it_is(
    tmp_path: Path, line: str, path: tuple[Any, ...], junk: Any, table: str, entry: str, words: str
) -> None:
    """The shape of a line file is declared once (`fsm.spec.schema.LineFile`): a key of the
    wrong type or an unknown key is a SpecError naming its table and entry."""
    doc = read_line(line)
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = junk
    error = refused(tmp_path, line, doc, words)
    assert (error.file, error.table, error.entry) == (f"lines/{line}.toml", table, entry), error


def test_a_wrong_shape_in_the_wire_file_is_refused(tmp_path: Path) -> None:
    directory = specs_with(tmp_path)
    wire = directory / "lines" / "wire.toml"
    text = wire.read_text(encoding="utf-8")
    wire.write_text(text.replace("[aspects.connect]\n", '[aspects.connect]\ncolour = "blue"\n'))
    with pytest.raises(SpecError) as caught:
        load_line("0.7", directory)
    error = caught.value
    assert (error.file, error.table, error.entry) == ("lines/wire.toml", "aspects", "connect")
    assert "unknown key(s) colour" in error.problem


def test_a_change_that_changes_nothing_is_refused(tmp_path: Path) -> None:
    """A line says only what it changes: an added enum member that exists, or a query merge
    of what the base grammar holds already, is a mistake in the line file."""
    doc = read_line("0.7")
    doc["enums"]["change"]["FlightAction"]["add"][0] = {"name": "QUERY", "value": "info"}
    refused(tmp_path, "0.7", doc, "'QUERY' is not a new member name of FlightAction")
    doc = read_line("0.7")
    grammar = tomllib.loads((SPECS / "query.toml").read_text(encoding="utf-8"))
    doc["query"] = {"merge": {"operators": {"$eq": grammar["operators"]["$eq"]}}}
    refused(tmp_path, "0.7", doc, "the base line's grammar has all of this already")


def test_a_deviation_no_request_of_a_line_reaches_is_moot_there(tmp_path: Path) -> None:
    """From 0.6 queries answer no time range, so the range failure of mosaicod 0.3 cannot be
    reached: the line drops it from its tables and says why (`spec --protocol` prints it)."""
    did = "MOSAICOD-QUERY-RANGE-EMPTY-CHUNK-INTERNAL"
    assert did in load_line("0.5").spec.deviations
    for name in ("0.6", "0.7"):
        line = load_line(name)
        assert did not in line.spec.deviations and did in line.moot_deviations
        assert did not in line.unknown_deviations
        assert did not in line.spec.profiles["mosaicod-0.3"].deviations
    doc = read_line("0.6")
    doc["deviations"]["moot"] = {"NO-SUCH-DEVIATION": "why"}
    refused(tmp_path, "0.6", doc, "no such deviation in the base line")
