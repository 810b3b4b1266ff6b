"""Each protocol line's enums, generated from `specs/lines/`, equal its SDK release's
`mosaicolabs.enum` name by name and value by value (class names, aliases, int or str values
and member order included). The releases are installed side by side by `tests/sdks/install.py`
and each is read in a subprocess of its own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fsm import enums as seed
from fsm.spec.line_enums import EnumSet, seed_enum_set
from fsm.spec.lines import line_names, load_line
from tests.harness import sdk_missing
from tests.sdks import install

DUMP = Path(__file__).parent / "sdks" / "enum_dump.py"


@pytest.fixture(scope="module")
def releases() -> dict[str, Path]:
    """Every line's release, installed into the cache. Without a reachable package index the
    comparison cannot run: a skip locally, a failure where MOSAICO_FSM_REQUIRE_SDK=1 (CI)."""
    try:
        return install.ensure_releases()
    except install.InstallError as exc:
        sdk_missing(f"the SDK releases cannot be installed here: {exc}")


def released_enums(path: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(DUMP), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def as_released(enums: EnumSet) -> dict[str, Any]:
    """An enum set in the dump's form."""
    out: dict[str, Any] = {}
    for name in enums.names():
        d = enums.resolve(name)
        assert d is not None
        out[name] = {"class": d.name, "kind": d.kind, "members": [list(m) for m in d.members]}
    return out


@pytest.mark.parametrize("line", line_names())
def test_line_enums_equal_the_release(line: str, releases: dict[str, Path]) -> None:
    data = load_line(line)
    expected = released_enums(releases[data.enum_release])
    assert as_released(data.enums) == expected


def test_seed_enums_equal_the_0_3_release(releases: dict[str, Path]) -> None:
    """fsm.enums itself (not only its data form) is mosaicolabs 0.3.2's enum module."""
    expected = released_enums(releases[load_line("0.3").enum_release])
    public = {name: getattr(seed, name) for name in seed.__all__}
    assert sorted(public) == sorted(expected)
    for name, cls in public.items():
        assert cls.__name__ == expected[name]["class"]
        assert [[m.name, m.value] for m in cls] == expected[name]["members"]


def test_the_seed_set_is_fsm_enums() -> None:
    built = seed_enum_set().build()
    for name in seed.__all__:
        cls = getattr(seed, name)
        assert [(m.name, m.value) for m in built[name]] == [(m.name, m.value) for m in cls]


def test_0_7_enums() -> None:
    """The 0.7 set as the line's data makes it: info, no API-key actions, RecordTooLarge,
    no APIKeyPermissionEnum or OnErrorPolicy."""
    built = load_line("0.7").enums.build()
    actions = [m.name for m in built["FlightAction"]]
    assert actions[0] == "INFO" and "VERSION" not in actions
    assert not [a for a in actions if a.startswith("API_KEY")]
    assert built["TopicWriterStatus"]["RecordTooLarge"].value == "record_too_large"
    assert "APIKeyPermissionEnum" not in built and "OnErrorPolicy" not in built
    assert built["SequenceStatus"] is built["SessionStatus"]
