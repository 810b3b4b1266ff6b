"""What the reference server has the C allocator keep (`transport.flight.allocator`).

The trim threshold follows the DoPut streams open in the process, and memory a refused
request took is handed back at once: these are what keep the server's resident memory flat
over refused requests (`tests/benchmarks/bench_server.py` prints it). The allocator calls are
recorded here rather than made, and the server's periodic release is put out of the way.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest

from tests import wire
from tests.harness import wait_until
from tests.test_flight_wire import NARROW, WIDE, open_topic, wide
from transport.flight import allocator
from transport.flight import server as flight_server
from transport.flight.server import RunningServer, start_server
from transport.server.model import ServerModel

STREAM, IDLE = allocator.STREAM_TRIM_THRESHOLD, allocator.IDLE_TRIM_THRESHOLD
GRACE = allocator.IDLE_GRACE


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The trim thresholds set and the releases asked for, in order."""
    calls: list[object] = []
    monkeypatch.setattr(allocator, "_set_trim_threshold", calls.append)
    monkeypatch.setattr(allocator, "release", lambda: calls.append("release"))
    monkeypatch.setattr(flight_server, "RELEASE_PERIOD", 1e9)
    return calls


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch, recorded: list[object]) -> Iterator[RunningServer]:
    """A server whose process-wide trim state starts afresh, with no grace running out
    during the test."""
    monkeypatch.setattr(allocator, "STREAMS", allocator.StreamTrim())
    monkeypatch.setattr(allocator, "IDLE_GRACE", 1e9)
    with start_server(ServerModel(seed=0)) as running:
        recorded.clear()  # what starting set
        yield running


def test_the_trim_threshold_follows_the_streams_open(recorded: list[object]) -> None:
    """Raised while a stream is open and for IDLE_GRACE seconds after the last one ended
    cleanly (the next stream reuses what it freed), then lowered with a release."""
    trim = allocator.StreamTrim()
    trim.apply()
    trim.opened()
    trim.opened()
    trim.closed(now=100.0)
    trim.closed(now=100.0)
    trim.settle(now=100.0 + GRACE / 2)
    assert recorded == [IDLE, STREAM]
    trim.opened()  # within the grace: still raised, nothing to set
    trim.closed(now=200.0)
    trim.settle(now=200.0 + GRACE / 2)
    assert recorded == [IDLE, STREAM]
    trim.settle(now=200.0 + GRACE)
    assert recorded == [IDLE, STREAM, IDLE, "release"]
    trim.settle(now=300.0)  # lowered already: nothing more
    trim.apply()
    assert recorded == [IDLE, STREAM, IDLE, "release", IDLE]


def test_a_refused_stream_is_handed_back_once_no_other_is_open(recorded: list[object]) -> None:
    trim = allocator.StreamTrim()
    trim.opened()
    trim.opened()
    trim.closed(refused=True)
    assert recorded == [STREAM]  # another stream is receiving into the same heaps
    trim.closed(refused=True)
    assert recorded == [STREAM, IDLE, "release"]
    trim.opened()
    trim.closed(refused=True, now=0.0)
    trim.settle(now=GRACE)  # lowered at the refusal already
    assert recorded == [STREAM, IDLE, "release", STREAM, IDLE, "release"]


def test_starting_a_server_fixes_the_mmap_threshold(
    monkeypatch: pytest.MonkeyPatch, recorded: list[object]
) -> None:
    options: list[tuple[int, int]] = []
    monkeypatch.setattr(
        allocator, "_MALLOPT", lambda option, value: options.append((option, value))
    )
    with start_server(ServerModel(seed=0)):
        pass
    assert options == [(allocator._M_MMAP_THRESHOLD, allocator.MMAP_THRESHOLD)]
    assert recorded == [IDLE]  # through the recorded trim threshold: no stream is open


def test_a_large_refused_request_is_handed_back_at_once(
    server: RunningServer, recorded: list[object]
) -> None:
    body = json.dumps({"locator": "n" * (2 << 20), "user_metadata": {}}).encode()
    assert (
        wire.action(server.port, "sequence_create", body).code is grpc.StatusCode.INVALID_ARGUMENT
    )
    assert recorded == ["release"]
    small = wire.action(server.port, "sequence_create", b"{not json")
    assert small.code is grpc.StatusCode.INVALID_ARGUMENT
    assert recorded == ["release"]  # a small refusal leaves nothing worth a release


def test_a_stream_refused_after_a_large_message_is_handed_back(
    server: RunningServer, recorded: list[object]
) -> None:
    locator, topic = open_topic(server, "forged")
    header = wire.header_frame(locator, topic, WIDE)
    answer = wire.do_put(server.port, [header, wire.forged_batch(NARROW, 1_000_000)])
    assert answer.code is grpc.StatusCode.INVALID_ARGUMENT, answer
    assert recorded == [STREAM, IDLE, "release"]


def test_a_clean_stream_and_a_small_refused_one_keep_their_memory_for_the_next(
    server: RunningServer, recorded: list[object]
) -> None:
    locator, topic = open_topic(server, "kept")
    header = wire.header_frame(locator, topic, WIDE)
    assert wire.do_put(server.port, [header, wide(0, 200_000)]).code is grpc.StatusCode.OK
    locator, topic = open_topic(server, "small")
    header = wire.header_frame(locator, topic, WIDE)
    refused = wire.do_put(server.port, [header, wire.forged_batch(NARROW, 1000)])
    assert refused.code is grpc.StatusCode.INVALID_ARGUMENT, refused
    assert recorded == [STREAM]  # raised by the first stream, kept for the next


def test_the_watchdog_lowers_the_threshold_once_the_grace_is_over(
    monkeypatch: pytest.MonkeyPatch, recorded: list[object]
) -> None:
    monkeypatch.setattr(allocator, "STREAMS", allocator.StreamTrim())
    monkeypatch.setattr(allocator, "IDLE_GRACE", 0.1)
    with start_server(ServerModel(seed=0)) as running:
        locator, topic = open_topic(running, "settled")
        header = wire.header_frame(locator, topic, WIDE)
        recorded.clear()
        assert wire.do_put(running.port, [header, wide(0, 10)]).code is grpc.StatusCode.OK
        wait_until(lambda: recorded == [STREAM, IDLE, "release"], "the threshold lowered")
