"""What the conformance suite leaves on its target: no key it created stays valid, and what it
could not remove is listed with the target's own reason."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from fsm.conformance.suite import SuiteResult, render, run_suite
from fsm.outcome import ErrorKind
from transport.conformance_runs import embedded_target
from transport.server.auth import Principal
from transport.server.errors import ServerError
from transport.server.model import ServerModel
from transport.server.state import ServerState


@pytest.fixture(autouse=True)
def quiet() -> Iterator[None]:
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


def _run(model: ServerModel) -> tuple[SuiteResult, str]:
    """The suite against `model` behind Flight; the fingerprint of the manage key it got."""
    with embedded_target(model) as target:
        manage = target.api_key.rsplit("_", 1)[1]
        return run_suite(target.connect, target=target.location, api_key=target.api_key), manage


def test_no_key_the_suite_created_stays_valid() -> None:
    model = ServerModel(profile="spec")
    result, manage = _run(model)
    assert not result.failed
    assert set(model.keys) == {manage}, "only the manage key the suite was given is left"
    assert not [item for item in result.left_behind if item.what == "API key"]


def test_keys_revoked_by_a_deviating_server_too() -> None:
    model = ServerModel(profile="mosaicod-0.3")
    _, manage = _run(model)
    assert set(model.keys) == {manage}


class _KeepsKeys(ServerModel):
    """Refuses to revoke keys."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handlers["API_KEY_REVOKE"] = _revocation_is_broken


def _revocation_is_broken(state: ServerState, op: Any, req: dict[str, Any]) -> None:
    raise ServerError(ErrorKind.INTERNAL, "revocation is broken")


def test_keys_that_cannot_be_revoked_are_left_behind_with_the_reason() -> None:
    model = _KeepsKeys(profile="spec")
    result, manage = _run(model)
    kept = [item for item in result.left_behind if item.what == "API key"]
    assert {item.name for item in kept} == set(model.keys) - {manage} != set()
    assert all("api_key_revoke refused with internal" in item.reason for item in kept)
    text = render(result, "text")
    assert "x API key: api_key_revoke refused with internal" in text and kept[0].name in text


class _CannotList(ServerModel):
    """ListFlights fails."""

    def list_sequences(self, principal: Principal, criteria: bytes) -> list[str]:
        raise ServerError(ErrorKind.INTERNAL, "listing is broken")


def test_a_failed_listing_at_clean_up_is_reported() -> None:
    result, _ = _run(_CannotList(profile="spec"))
    (listing,) = [item for item in result.left_behind if item.what == "sequences"]
    assert listing.name == f"{result.prefix}*"
    assert "ListFlights internal" in listing.reason and "none was deleted" in listing.reason
    assert "could not be found" in render(result, "text")


def test_left_behind_sequences_carry_the_targets_reason() -> None:
    result, _ = _run(ServerModel(profile="spec"))
    assert result.left_behind and all(item.what == "sequence" for item in result.left_behind)
    for item in result.left_behind:
        assert item.reason.startswith("sequence_delete refused with failed_precondition")
        assert "locked" in item.reason  # the server's own words
    text = render(result, "text")
    assert f"{len(result.left_behind)} left behind on the target" in text.splitlines()[-1]
    assert all(item.name in text for item in result.left_behind)
    assert "locked sessions cannot be deleted under the spec" not in text
