"""The streaming filter actions: topic_filter_clusterize and topic_filter_intersect.

What is implemented is what `VERSIONS.md` (§2.3) states of the mosaicod 0.6 server:

* clusterize: an ontology filter of the topic's own ontology tag (an empty filter, or one of
  another tag, is invalid_argument) picks the topic's matching rows in timestamp order;
  consecutive matches stay in one cluster while the gap to the next is at most
  `clustering_dt_ns` (0: no limit, one cluster from the first to the last match). Each
  cluster is `{ts: {start_ns, end_ns}, id}` with ids from 0.
* intersect: at least two topics of one sequence (else invalid_argument), each clusterized
  with its own filter and gap; a k-way walk over their clusters emits a window whenever the
  latest start is at most the earliest end plus `intersect_dt_ns`: `[max_start, min_end]`,
  or, when the clusters are disjoint, that gap widened by floor(dt/2) before and the rest of
  dt after; then the stream whose cluster ends first advances; the walk stops when any
  stream ends. Ids from 0.

Not stated, so refused rather than guessed: a `timestamp_range` that is not null (whether its
bounds are inclusive is not known) answers UNIMPLEMENTED.
"""

from __future__ import annotations

import operator as op_
from collections.abc import Mapping
from functools import reduce
from typing import Any

import pyarrow.compute as pc

from fsm.outcome import ErrorKind
from fsm.spec.model import Operation
from fsm.spec.query import QueryGrammar
from transport.server.errors import ServerError
from transport.server.query import parse_query, row_expression
from transport.server.records import TopicRecord
from transport.server.state import ServerState
from transport.server.validate import normalize_topic_locator, split_topic_locator

__all__ = ["FILTER_HANDLERS", "clusterize", "intersect", "topic_filter_clusterize"]

UNBOUNDED = 2**64 - 1
"""The gap a `clustering_dt_ns` of 0 stands for (the server's u64::MAX)."""


def _bad(message: str) -> ServerError:
    return ServerError(ErrorKind.INVALID_ARGUMENT, message)


def _matching_stamps(
    state: ServerState, op: Operation, spec: Mapping[str, Any], grammar: QueryGrammar
) -> list[int]:
    """The timestamps of the rows of the topic `spec` names that meet its ontology filter."""
    if spec.get("timestamp_range") is not None:
        raise ServerError(
            ErrorKind.UNIMPLEMENTED,
            f"{op.wire}: a timestamp_range is not supported by this server (its bounds' "
            "semantics are not known)",
        )
    try:
        locator = normalize_topic_locator(str(spec["locator"]))
    except (KeyError, ServerError) as exc:
        raise _bad(f"{op.wire}: a filter needs a topic locator ({exc})") from None
    ontology = spec.get("ontology")
    if not isinstance(ontology, dict) or not ontology:
        raise _bad(f"{op.wire}: the ontology filter is empty")
    gap = spec.get("clustering_dt_ns")
    if not isinstance(gap, int) or isinstance(gap, bool) or not 0 <= gap <= UNBOUNDED:
        raise _bad(f"{op.wire}: clustering_dt_ns must be a non-negative integer")
    step = state.step("topic", locator, "GET_FLIGHT_INFO", op.wire)
    state.commit(step)
    topic = step.record
    assert isinstance(topic, TopicRecord)
    groups = parse_query({"ontology": ontology}, grammar).groups()
    if set(groups) != {topic.ontology_tag}:
        raise _bad(
            f"{op.wire}: the filter's ontology {sorted(groups)} is not the topic's "
            f"{topic.ontology_tag!r} (unsupported ontology type)"
        )
    (conditions,) = groups.values()
    paths = [tuple(c.key.split(".")[1:]) for c in conditions]
    if topic.stats is None or not topic.chunks:
        return []
    for path in paths:
        if path not in topic.stats.leaves:
            raise _bad(f"{op.wire}: the topic has no field {'.'.join(path)!r}")
    columns = sorted({"timestamp_ns", *(p[0] for p in paths)})
    table = topic.stats.rows(topic.chunks, columns)
    expression = reduce(
        op_.and_, (row_expression(c, p) for c, p in zip(conditions, paths, strict=True))
    )
    stamps = table.filter(expression).column("timestamp_ns")
    return sorted(t for t in pc.drop_null(stamps).to_pylist())


def clusterize(stamps: list[int], gap: int) -> list[tuple[int, int]]:
    """[start, end] of each run of `stamps` (sorted) whose steps are at most `gap` (0: any)."""
    limit = UNBOUNDED if gap == 0 else gap
    clusters: list[tuple[int, int]] = []
    for t in stamps:
        if clusters and t - clusters[-1][1] <= limit:
            clusters[-1] = (clusters[-1][0], t)
        else:
            clusters.append((t, t))
    return clusters


def intersect(streams: list[list[tuple[int, int]]], gap: int) -> list[tuple[int, int]]:
    """The windows the k-way walk over `streams` of clusters emits (module docstring)."""
    heads = [0] * len(streams)
    windows: list[tuple[int, int]] = []
    while all(h < len(s) for h, s in zip(heads, streams, strict=True)):
        current = [s[h] for h, s in zip(heads, streams, strict=True)]
        latest_start = max(c[0] for c in current)
        earliest_end = min(c[1] for c in current)
        if latest_start <= earliest_end + gap:
            if latest_start <= earliest_end:
                windows.append((latest_start, earliest_end))
            else:
                windows.append((latest_start - gap // 2, earliest_end + (gap - gap // 2)))
        first = min(range(len(current)), key=lambda k: current[k][1])
        heads[first] += 1
    return windows


def _answer(windows: list[tuple[int, int]]) -> list[dict[str, Any]]:
    return [
        {"ts": {"start_ns": start, "end_ns": end}, "id": i}
        for i, (start, end) in enumerate(windows)
    ]


def topic_filter_clusterize(
    state: ServerState, op: Operation, req: dict[str, Any], *, grammar: QueryGrammar
) -> list[dict[str, Any]]:
    """One answer per cluster (each becomes its own Flight Result)."""
    stamps = _matching_stamps(state, op, req, grammar)
    return _answer(clusterize(stamps, req["clustering_dt_ns"]))


def topic_filter_intersect(
    state: ServerState, op: Operation, req: dict[str, Any], *, grammar: QueryGrammar
) -> list[dict[str, Any]]:
    """One answer per window where every topic's clusters meet."""
    topics = req["topics"]
    if len(topics) < 2:
        raise _bad(f"{op.wire}: at least two topics are needed")
    sequences = set()
    for spec in topics:
        try:
            sequences.add(split_topic_locator(str(spec.get("locator")))[0])
        except ServerError as exc:
            raise _bad(f"{op.wire}: {exc.message}") from None
    if len(sequences) != 1:
        raise _bad(f"{op.wire}: the topics must belong to one sequence, not {sorted(sequences)}")
    gap = req["intersect_dt_ns"]
    if gap < 0:
        raise _bad(f"{op.wire}: intersect_dt_ns must be non-negative")
    streams = [
        clusterize(_matching_stamps(state, op, spec, grammar), spec["clustering_dt_ns"])
        for spec in topics
    ]
    return _answer(intersect(streams, gap))


FILTER_HANDLERS = {
    "TOPIC_FILTER_CLUSTERIZE": topic_filter_clusterize,
    "TOPIC_FILTER_INTERSECT": topic_filter_intersect,
}
"""Handlers that also need the server's query grammar (bound by the model)."""
