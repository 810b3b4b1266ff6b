"""No function of the spec loader, the client conformance checker or the server model is
more complex than radon's grade C (cyclomatic complexity 20 at most)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from radon.complexity import cc_rank, cc_visit
from radon.visitors import Class, Function

ROOT = Path(__file__).resolve().parent.parent
PATHS = ("fsm/spec", "fsm/conformance/clients.py", "transport/server")
WORST = "C"


def _files() -> list[Path]:
    files: list[Path] = []
    for name in PATHS:
        path = ROOT / name
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files


def _functions(blocks: list[Function | Class]) -> Iterator[tuple[str, int]]:
    """Every function, method and closure with its complexity (radon lists a class's
    methods beside it; a class's own figure sums its methods, so it is not graded)."""
    for block in blocks:
        if isinstance(block, Function):
            yield block.fullname, block.complexity
            for closure in block.closures:
                yield from _functions([_named(closure, block.fullname)])


def _named(closure: Function, parent: str) -> Function:
    """A closure named after the function it is in, as radon --show-closures does."""
    return closure._replace(name=f"{parent}.{closure.name}")


def _too_complex(source: str) -> list[str]:
    return [
        f"{name}: {cc_rank(complexity)} ({complexity})"
        for name, complexity in _functions(cc_visit(source))
        if cc_rank(complexity) > WORST
    ]


def test_the_paths_hold_code() -> None:
    files = _files()
    assert len(files) > 10
    assert all(f.is_file() for f in files)


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_function_above_grade_c(path: Path) -> None:
    too_complex = _too_complex(path.read_text(encoding="utf-8"))
    assert not too_complex, f"{path.relative_to(ROOT)}: split " + "; ".join(too_complex)


def test_the_check_sees_a_complex_function() -> None:
    branches = "\n".join(f"    if x == {i}:\n        return {i}" for i in range(25))
    source = f"def many(x):\n{branches}\n    return -1\n"
    assert _too_complex(source) == ["many: D (26)"]
    nested = "class K:\n    def m(self, x):\n" + "\n".join(
        f"        if x == {i}:\n            return {i}" for i in range(30)
    )
    assert _too_complex(nested) == ["K.m: E (31)"]
    closure = (
        "def outer(x):\n    def inner(y):\n"
        + "\n".join(f"        if y == {i}:\n            return {i}" for i in range(22))
        + "\n    return inner(x)\n"
    )
    assert "outer.inner: D (23)" in _too_complex(closure)
