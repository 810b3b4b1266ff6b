"""The CLI's spec and diagram commands, and README's generated diagrams."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from fsm.cli import main
from fsm.render import embed_diagrams, mermaid_markdown
from fsm.spec import load_spec
from tests.harness import require_sdk

ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = ["pytester"]


def _run(*argv: str) -> str:
    out = io.StringIO()
    assert main(list(argv), out) == 0
    return out.getvalue()


def test_spec_prints_every_table() -> None:
    text = _run("spec")
    spec = load_spec()
    for machine in spec.machines.values():
        for row in machine.transitions:
            assert f"{row.id}:" in text
    for name in spec.operations:
        assert name in text
    for did, deviation in spec.deviations.items():
        assert did in text and deviation.actual in text
    for probe in spec.probes.values():
        assert f"{probe.name} " in text and probe.applied_when in text
    for kind, grpc in spec.error_kinds.items():
        assert f"{kind} " in text and grpc in text
    for case in spec.common_errors:
        assert case.when in text
    for field_type, doc in spec.field_types.items():
        assert doc in text, field_type


def test_spec_section_filter() -> None:
    text = _run("spec", "--section", "deviations")
    assert "MOSAICOD-REPORT-LOCKS" in text and "enter-writer" not in text


@pytest.mark.parametrize("fmt", ["mermaid", "dot"])
def test_diagram_has_an_edge_per_row(fmt: str) -> None:
    spec = load_spec()
    text = _run("diagram", "--format", fmt)
    for machine in spec.machines.values():
        for row in machine.transitions:
            assert row.trigger in text
            arrow = (
                f"{row.source} --> {row.dest}"
                if fmt == "mermaid"
                else f'"{row.source}" -> "{row.dest}"'
            )
            assert arrow in text


def test_diagram_of_a_resource_and_unknown_name() -> None:
    assert "finalized_reported" in _run("diagram", "resource:session")
    assert main(["diagram", "nothing"], io.StringIO()) == 2


def test_readme_diagrams_match_the_tables() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name, block in mermaid_markdown(load_spec()).items():
        assert block in readme, (
            f"README's {name} diagram drifted: run mosaico-fsm diagram --update-readme README.md"
        )
    assert embed_diagrams(readme, load_spec()) == readme


def test_update_readme_rewrites_a_stale_copy(tmp_path: Path) -> None:
    stale = (
        (ROOT / "README.md")
        .read_text(encoding="utf-8")
        .replace("SESSION_FINALIZE", "SESSION_FINISH")
    )
    copy = tmp_path / "README.md"
    copy.write_text(stale)
    _run("diagram", "--update-readme", str(copy))
    assert all(block in copy.read_text() for block in mermaid_markdown(load_spec()).values())


def _readme_blocks() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return [part.split("```", 1)[0] for part in readme.split("```python\n")[1:]]


def _readme_block(marker: str) -> str:
    """The one Python block of README that holds `marker`."""
    (block,) = [b for b in _readme_blocks() if marker in b]
    return block


def test_readme_engine_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(_readme_block("client = Client(MemoryTransport())"), "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed == ["SessionStatus.Finalized TopicWriterStatus.Finalized", "3"]


def test_readme_reading_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    namespace: dict[str, object] = {}
    exec(
        compile(_readme_block("client = Client(MemoryTransport())"), "README.md", "exec"), namespace
    )
    capsys.readouterr()
    exec(compile(_readme_block("client.stream_sequence("), "README.md", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert printed == [
        "2",
        "('imu/front',) 3 {'timestamp_ns': 1, 'x': 0.1}",
        "checked",
        "dashboard",
    ]


def test_readme_tables_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from fsm import InvalidTrigger

    with pytest.raises(InvalidTrigger, match="'enter' is not allowed in state 'Pending'"):
        exec(compile(_readme_block("fsm.load_spec()"), "README.md", "exec"), {})
    printed = capsys.readouterr().out.split()
    assert printed == ["run", "SEQUENCE_CREATE", "run", "SESSION_CREATE", "Pending"]


def test_readme_plugin_example_passes(pytester: pytest.Pytester) -> None:
    require_sdk()  # the example uses the SDK
    pytester.makepyfile(test_readme_example=_readme_block("def test_my_ingestion"))
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_readme_query_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(_readme_block("from fsm.engine.query import"), "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed == ["QueryTopic(locator='run_7/imu/front', timestamp_range=(1, 3))"]


def test_readme_lists_every_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    from fsm.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in sub.choices:  # type: ignore[union-attr]
        assert f"mosaico-fsm {name}" in readme, name


def _server_trace(tmp_path: Path) -> Path:
    """A server trace of one clean engine session on sequence 'run'."""
    import pyarrow as pa

    from fsm.engine import Client
    from transport.memory import MemoryTransport
    from transport.server.model import ServerModel
    from transport.server.trace import ServerTrace

    path = tmp_path / "server.jsonl"
    model = ServerModel(seed=0)
    model.trace = ServerTrace(path)
    schema = pa.schema([pa.field("timestamp_ns", pa.int64(), nullable=False)])
    with Client(MemoryTransport(model)).sequence_create("run") as seq:
        seq.topic_create("t", schema=schema, ontology_tag="x").push_row({"timestamp_ns": 1})
    model.trace.close()
    return path


def test_check_trace_that_checks_nothing_fails(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    out = io.StringIO()
    assert main(["check-trace", str(empty)], out) == 1
    assert "nothing was checked" in out.getvalue()

    trace = _server_trace(tmp_path)
    assert main(["check-trace", str(trace)], io.StringIO()) == 0
    out = io.StringIO()
    assert main(["check-trace", str(trace), "--sequence", "rnu"], out) == 1
    assert "not in the trace: rnu" in out.getvalue() and "run" in out.getvalue()


def test_unreadable_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-trace", str(tmp_path / "absent.jsonl")], io.StringIO()) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    assert main(["check-trace", str(bad)], io.StringIO()) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2 and all(e.startswith("mosaico-fsm check-trace: ") for e in errors)


def test_update_readme_takes_no_name_or_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("text\n")
    for extra in (["session"], ["--format", "dot"]):
        assert main(["diagram", "--update-readme", str(readme), *extra], io.StringIO()) == 2
        assert "takes no NAME and no --format" in capsys.readouterr().err
    assert readme.read_text() == "text\n"


def test_a_line_that_is_not_an_object_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "list.jsonl"
    trace.write_text('{"machine": "session"}\n[1, 2]\n')
    assert main(["check-trace", str(trace)], io.StringIO()) == 2
    assert "line 2 is not a JSON object" in capsys.readouterr().err


# -----------------------------------------------------------------------------------------------
# README claims: import paths, the fault-plan example, the deviations, the sources it cites


def _readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def _resolves(dotted: str) -> bool:
    """True when `dotted` names a module, or an attribute reached from one."""
    import importlib

    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(target, name):
                return False
            target = getattr(target, name)
        return True
    return False


def test_every_import_path_the_readme_names_exists() -> None:
    import re

    readme = _readme()
    named = set(re.findall(r"`((?:fsm|transport)(?:\.\w+)+)(?:\([^`]*\))?[^`]*`", readme))
    for block in _readme_blocks():
        for module, names in re.findall(
            r"^from ((?:fsm|transport)[\w.]*) import (.+)$", block, re.M
        ):
            named |= {f"{module}.{n.strip()}" for n in names.split("#")[0].split(",")}
        named |= set(re.findall(r"^import ((?:fsm|transport)[\w.]*)", block, re.M))
    named |= set(re.findall(r"\b((?:fsm|transport)\.[a-z_]+(?:\.[A-Za-z_]+)+)\(", readme))
    assert {"transport.server.model.ServerModel", "fsm.engine.Tracer"} <= named
    missing = sorted(n for n in named if not _resolves(n))
    assert not missing, f"README names what does not exist: {missing}"


def test_readme_fault_plan_example_runs(tmp_path: Path) -> None:
    import pyarrow as pa

    from fsm import SessionLevelErrorPolicy, SessionStatus
    from fsm.engine import Client
    from fsm.faults import FaultPlan
    from transport.memory import MemoryTransport

    text = _readme().split("```json fault-plan\n", 1)[1].split("```", 1)[0]
    plan = FaultPlan.loads(text)
    assert [f.describe() for f in plan.faults] == [
        "SESSION_FINALIZE#1:failed_precondition",
        "STREAM_WRITE#2:drop_stream",
        "SEQUENCE_CREATE#2:lose_reply",
    ]
    schema = pa.schema([pa.field("timestamp_ns", pa.int64(), nullable=False)])
    client = Client(MemoryTransport(faults=FaultPlan(plan.faults[:1])))
    with (
        pytest.raises(Exception, match="failed_precondition"),
        client.sequence_create("run", on_error=SessionLevelErrorPolicy.Report) as seq,
    ):
        seq.topic_create("t", schema=schema, ontology_tag="x").push_row({"timestamp_ns": 1})
    assert seq.session_status is SessionStatus.Error  # the first finalize was refused
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(text)
    bad = tmp_path / "bad.json"
    bad.write_text('{"faults": [{"operation": "SESSION_FINISH"}]}')
    from tests.test_cli_errors import mosaico_fsm, one_line_error

    one_line_error(mosaico_fsm("serve", "--port", "0", "--fault-plan", str(bad)), "SESSION_FINISH")


def test_readme_names_every_deviation() -> None:
    readme = _readme()
    missing = [d for d in load_spec().deviations if f"`{d}`" not in readme]
    assert not missing


def test_sources_are_documents_a_user_can_open() -> None:
    import re

    from fsm.conformance.cases import CASES

    unopenable = re.compile(r"PROTOCOL|DESIGN\.md|§|\bseed\b")
    cited = [c.source for c in CASES]
    cited += [s for d in load_spec().deviations.values() for s in d.sources]
    assert not [s for s in cited if unopenable.search(s)]
    for text in cited:
        for table in re.findall(r"specs/(\w+\.toml)", text):
            assert (ROOT / "specs" / table).is_file(), text
    readme = _readme()
    assert not re.search(r"PROTOCOL\.md|DESIGN\.md|§|seed text|the seed\b", readme)
