"""The server profiles, one per mosaicod build: `mosaico-fsm serve --profile` runs each, and
the conformance suite names each deviation of the 2026-03-31 build."""

from __future__ import annotations

import io
import signal
from collections.abc import Iterator

import pytest

from fsm.cli import main
from fsm.enums import FlightAction
from fsm.outcome import ErrorKind
from fsm.spec import load_spec
from tests.harness import failed_with, ok
from tests.test_flight_server import TIMEOUT, Served
from transport.conformance_runs import embedded_target
from transport.flight.client import FlightTransport
from transport.server.model import ServerModel

EARLY = "mosaicod-2026-03-31"


@pytest.fixture
def served() -> Iterator[list[Served]]:
    started: list[Served] = []
    yield started
    for s in started:
        s.kill()


def test_serve_runs_the_early_build(served: list[Served]) -> None:
    """serve --profile mosaicod-2026-03-31: a missing key is permission_denied with the
    build's message, and a second sequence_delete succeeds."""
    s = Served("--profile", EARLY, "--api-key-auth")
    served.append(s)
    location = s.location()
    token = s.line().removeprefix("bootstrap manage key: ")
    anonymous = FlightTransport(location, timeout=TIMEOUT)
    keyed = FlightTransport(location, api_key=token, timeout=TIMEOUT)
    try:
        refused = anonymous.list_sequences()
        failed_with(refused, ErrorKind.PERMISSION_DENIED)
        assert "missing api key token in request" in refused.detail
        ok(keyed.action(FlightAction.SEQUENCE_CREATE, {"locator": "s", "user_metadata": {}}))
        ok(keyed.action(FlightAction.SEQUENCE_DELETE, {"locator": "s"}))
        ok(keyed.action(FlightAction.SEQUENCE_DELETE, {"locator": "s"}))
    finally:
        anonymous.close()
        keyed.close()
    code, _ = s.stop(signal.SIGINT)
    assert code == 0, s.stderr_text[-2000:]


def test_conformance_names_each_deviation_of_the_early_build() -> None:
    """Against the 2026-03-31 profile every failure is labelled, and its three own
    deviations are among the labels."""
    from fsm.conformance.suite import run_suite

    with embedded_target(ServerModel(profile=EARLY)) as target:
        result = run_suite(
            target.connect, target=target.location, api_key=target.api_key, seed=0, budget=0
        )
    failing = [v for v in result.verdicts if v.status == "fail"]
    assert failing and all(v.deviations for v in failing), [str(v) for v in failing]
    labels = {d for v in failing for d in v.deviations}
    assert labels == set(load_spec().profiles[EARLY].deviations)


def test_conformance_cli_accepts_the_early_build() -> None:
    out = io.StringIO()
    assert main(["conformance", "--budget", "0", "--profile", EARLY], out) == 1
    assert "MOSAICOD-DELETE-GONE-SEQUENCE" in out.getvalue()
