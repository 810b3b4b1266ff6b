"""`mosaico-fsm spec --protocol X`, `spec --diff A B` and `diagram --protocol X` print from
the line data."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import pytest

from fsm.cli import main
from fsm.render_lines import line_diff, lines_markdown
from fsm.spec.lines import line_names, load_line, load_lines


def run(*argv: str) -> str:
    out = io.StringIO()
    assert main(list(argv), out) == 0
    return out.getvalue()


@pytest.mark.parametrize("line", line_names())
def test_spec_of_a_line_prints_its_data_and_tables(line: str) -> None:
    data = load_line(line)
    text = run("spec", "--protocol", line)
    assert f"protocol line {line}: {data.title}" in text
    for change in data.changes:
        assert change in text
    for unknown in data.unknown:
        assert unknown.text in text
    for aspect, shape in data.wire.items():
        assert f"{aspect:<28} {shape}:" in text
    for name in data.spec.operations:
        assert name in text
    for machine in data.spec.machines.values():
        for row in machine.transitions:
            assert f"{row.id}:" in text


def test_spec_of_0_7_names_what_it_changed() -> None:
    text = run("spec", "--protocol", "0.7", "--section", "machines")
    assert "RecordTooLarge" in text and "push-too-large:" in text
    assert "INFO='info'" in text and "API_KEY_CREATE" not in text
    assert "== operations" not in text


def test_the_default_spec_is_line_0_3() -> None:
    assert run("spec", "--protocol", "0.3").endswith(run("spec"))


def test_diff_of_0_3_and_0_7() -> None:
    text = run("spec", "--diff", "0.3", "0.7")
    for entry in (
        "permissions ~ ranked read, write, delete, manage -> granular read, write, delete",
        "wire ~ connect: list_flights_pool -> info",
        "operation - API_KEY_CREATE (api_key_create)",
        "operation - VERSION (version)",
        "operation + INFO (info)",
        "operation ~ SESSION_DELETE.request: session_uuid: uuid -> locator: session_locator",
        "machine topic_writer state + RecordTooLarge",
        "resource - api_key",
        "enum - OnErrorPolicy",
        "enum TopicWriterStatus member + RecordTooLarge: 'record_too_large'",
        "deviation - SDK-DOUBLE-SEQUENCE-DELETE",
    ):
        assert entry in text, entry
    assert text.startswith(
        f"protocol line 0.3 -> 0.7: {len(line_diff(load_line('0.3'), load_line('0.7')))} difference(s)"
    )


@pytest.mark.parametrize("line", line_names())
def test_a_line_has_no_difference_with_itself(line: str) -> None:
    assert line_diff(load_line(line), load_line(line)) == []


@pytest.mark.parametrize("a,b", list(itertools.pairwise(line_names())))
def test_each_line_differs_from_its_base(a: str, b: str) -> None:
    forward = line_diff(load_line(a), load_line(b))
    assert forward
    assert line_diff(load_line(b), load_line(a))


def test_diagram_of_a_line() -> None:
    text = run("diagram", "--protocol", "0.7", "topic_writer")
    assert "RecordTooLarge --> Active : push / STREAM_WRITE" in text
    assert "RecordTooLarge" not in run("diagram", "--protocol", "0.6", "topic_writer")
    assert "Pending --> Null : exit_error [policy=Delete & role=writer]" in run(
        "diagram", "--protocol", "0.6", "session"
    )


def test_bad_line_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    readme = str(Path(__file__).resolve().parent.parent / "README.md")
    for argv, words in (
        (["spec", "--protocol", "9.9"], "invalid choice: '9.9'"),
        (["spec", "--diff", "0.3"], "expected 2 arguments"),
        (["spec", "--diff", "0.3", "0.7", "--protocol", "0.6"], "--diff compares two whole lines"),
        (["diagram", "--protocol", "0.7", "--update-readme", readme], "no --protocol"),
    ):
        out = io.StringIO()
        assert main(argv, out) == 2, argv
        assert words in capsys.readouterr().err, argv
        assert out.getvalue() == "", argv


def test_readme_table_of_lines_matches_the_data() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    begin, end = "<!-- BEGIN generated table: lines -->\n", "<!-- END generated table: lines -->"
    assert begin in readme and end in readme
    current = readme[readme.index(begin) + len(begin) : readme.index(end)]
    expected = lines_markdown(load_lines().values())
    assert current == expected, f"README's table of lines drifted; it should read:\n{expected}"
