"""The shipped tables are sound, and each soundness check catches the defect it is for."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from fsm.spec import check_spec, load_documents, parse_spec

Docs = dict[str, dict[str, Any]]


def test_shipped_spec_has_no_problems() -> None:
    spec = parse_spec(load_documents(), check=False)
    assert check_spec(spec) == []


def _t(d: Docs, file: str, tid: str) -> dict[str, Any]:
    return next(t for t in d[file]["transitions"] if t["id"] == tid)


def _drop(d: Docs, file: str, tid: str) -> None:
    d[file]["transitions"].remove(_t(d, file, tid))


def _loop(d: Docs) -> None:
    _t(d, "session.toml", "topic-failed")["steps"] = [
        {"do": "TOPIC_DELETE", "failed": "topic_orphaned", "unknown": "topic_orphaned"}
    ]
    _t(d, "session.toml", "topic-orphaned")["steps"][0]["failed"] = "topic_failed"


DEFECTS: list[tuple[str, Callable[[Docs], None], str]] = [
    (
        "overlapping guards",
        lambda d: _t(d, "session.toml", "exit-error-report").pop("when"),
        "overlap",
    ),
    (
        "a trigger not total over its contexts",
        lambda d: _drop(d, "session.toml", "exit-error-delete-updater"),
        "no row for context",
    ),
    (
        "an unreachable state",
        lambda d: _t(d, "session.toml", "exit-ok").update(dest="Error"),
        "Finalized: not reachable",
    ),
    (
        "a state that cannot reach a terminal",
        lambda d: [
            t.update(dest="Pending")
            for t in d["session.toml"]["transitions"]
            if t["dest"] in ("Error", "Finalized")
        ],
        "no terminal state is reachable",
    ),
    (
        "an exit from a terminal",
        lambda d: _t(d, "topic_writer.toml", "enter")["source"].append("Finalized"),
        "leaves terminal state Finalized",
    ),
    (
        "a route that lands nowhere",
        lambda d: _drop(d, "session.toml", "enter-failed"),
        "routes to 'enter_failed', which has 0 rows",
    ),
    (
        "a route that lands nowhere for one context",
        lambda d: _t(d, "session.toml", "enter-undo").update(when={"role": "updater"}),
        "routes to 'enter_undo', which has 0 rows",
    ),
    ("routes that loop", _loop, "a loop"),
    (
        "a fan-out a topic state does not accept",
        lambda d: _t(d, "topic_writer.toml", "close-error-delete").update(source="Active"),
        "is not accepted by a topic writer in IgnoredLastError",
    ),
    (
        "a declared trigger no row uses",
        lambda d: d["session.toml"]["triggers"].update(abort={"kind": "user", "doc": "x"}),
        "declared but no row uses it",
    ),
    (
        "a resource cell decided by no row",
        lambda d: d["resources.toml"]["resources"]["topic"]["rows"].pop(0),
        "decided by 0 rows",
    ),
    (
        "a resource cell decided by two rows",
        lambda d: d["resources.toml"]["resources"]["session"]["rows"].append(
            {"source": "open", "event": "SESSION_DELETE", "error": "internal"}
        ),
        "decided by 2 rows",
    ),
    (
        "an unreachable resource state",
        lambda d: d["resources.toml"]["resources"]["session"]["rows"][5].update(dest="reported"),
        "finalized: not reachable",
    ),
    (
        "a server deviation no profile emulates",
        lambda d: d["deviations.toml"]["profiles"]["mosaicod-2026-03-31"]["deviations"].remove(
            "MOSAICOD-MISSING-KEY-DENIED"
        ),
        "emulated by no profile",
    ),
]


@pytest.mark.parametrize(("name", "mutate", "expected"), DEFECTS, ids=[d[0] for d in DEFECTS])
def test_each_check_catches_its_defect(
    name: str, mutate: Callable[[Docs], None], expected: str
) -> None:
    docs = copy.deepcopy(load_documents())
    mutate(docs)
    problems = check_spec(parse_spec(docs, check=False))
    assert any(expected in str(p) for p in problems), [str(p) for p in problems]


def test_load_refuses_an_unsound_spec() -> None:
    from fsm import SpecError

    docs = copy.deepcopy(load_documents())
    _drop(docs, "session.toml", "enter-failed")
    with pytest.raises(SpecError, match="enter_failed"):
        parse_spec(docs)
