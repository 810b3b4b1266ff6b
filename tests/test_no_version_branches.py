"""Code that differs per protocol line is chosen by the line's data (a wire shape name, an
enum set, a table), never by a version number: outside the line registry, no module of fsm or
transport compares with a version-like literal, keys a table by one, matches on one, or
compares a value named like a version or a line."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
REGISTRY = {
    "fsm/spec/lines.py",  # the registry of lines: reads and orders line names
    "fsm/spec/line_enums.py",  # builds each line's enum set from its data
}
"""Where a line may be named by its number (a codec module that picks one entry per wire
shape joins these only if it must)."""
VERSION_LIKE = re.compile(r"^v?\d+\.\d+(\.\d+)?([-+.][0-9A-Za-z.]+)?$")
VERSION_NAMES = {"protocol", "line", "line_name", "version", "semver", "protocol_version"}


def modules() -> list[Path]:
    files = sorted((ROOT / "fsm").rglob("*.py")) + sorted((ROOT / "transport").rglob("*.py"))
    return [f for f in files if f.relative_to(ROOT).as_posix() not in REGISTRY]


def _version_literal(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return bool(VERSION_LIKE.match(node.value))
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return any(_version_literal(e) for e in node.elts)
    return False


def _version_named(node: ast.AST) -> bool:
    if isinstance(node, ast.Name):
        return node.id in VERSION_NAMES
    if isinstance(node, ast.Attribute):
        return node.attr in VERSION_NAMES
    return False


def _presence_test(node: ast.Compare) -> bool:
    """`x is None` / `x is not None`: whether a line was given, not which one; and `a is b`
    between two names: whether two line objects are one (identity says nothing of a number)."""
    if not all(isinstance(op, ast.Is | ast.IsNot) for op in node.ops):
        return False
    operands = [node.left, *node.comparators]
    return any(isinstance(o, ast.Constant) and o.value is None for o in operands) or all(
        isinstance(o, ast.Name) for o in operands
    )


def branches(tree: ast.AST) -> list[tuple[int, str]]:
    """(line number, what) for every branch on a version in `tree`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(_version_literal(o) for o in operands):
                found.append((node.lineno, "compares with a version literal"))
            elif any(_version_named(o) for o in operands) and not _presence_test(node):
                found.append((node.lineno, "compares a value named like a version or line"))
        elif isinstance(node, ast.Dict):
            if any(k is not None and _version_literal(k) for k in node.keys):
                found.append((node.lineno, "a table keyed by version literals"))
        elif isinstance(node, ast.MatchValue) and _version_literal(node.value):
            found.append((node.lineno, "matches a version literal"))
    return found


def test_no_module_branches_on_a_version_number() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {what}"
        for path in modules()
        for line, what in branches(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize(
    "source",
    [
        'if line == "0.7": pass',
        'if protocol >= "0.6.3": pass',
        "ok = self.version < other",
        'shape = {"0.5": "uuid_locator"}[name]',
        'match name:\n    case "0.7": pass',
        'if name in ("0.6", "0.7"): pass',
    ],
)
def test_the_check_sees_a_version_branch(source: str) -> None:
    assert branches(ast.parse(source))


@pytest.mark.parametrize(
    "source",
    [
        'if shape == "uuid_locator": pass',
        'x = {"connect": "info"}',
        'if kind == "0": pass',
        "if args.protocol is not None: pass",
    ],
)
def test_the_check_leaves_data_choices_alone(source: str) -> None:
    assert not branches(ast.parse(source))
