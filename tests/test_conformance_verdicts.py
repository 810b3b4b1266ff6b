"""Conformance verdicts mean what they say: a lost reply is unknown, a deviation labels only
the failure of its own check, every request is in the steps, and a requirement passes only
when it was observed."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs
import pyarrow as pa
import pytest

from fsm import FlightAction
from fsm.conformance.cases import CASES, Case
from fsm.conformance.context import Context, Fail, Unknown
from fsm.conformance.suite import SuiteResult, run_suite
from fsm.errors import OutcomeUnknown
from fsm.outcome import ErrorKind, Outcome
from fsm.transport import Descriptor, SequenceInfo, TopicData, TopicInfo, Transport
from transport.conformance_runs import embedded_target
from transport.memory import MemoryTransport
from transport.server import actions, keys
from transport.server.auth import Principal
from transport.server.errors import ServerError
from transport.server.model import ServerModel
from transport.server.records import TopicRecord
from transport.server.state import ServerState
from transport.server.variants import VARIANTS

BY_ID = {case.id: case for case in CASES}


@pytest.fixture(autouse=True)
def quiet() -> Iterator[None]:
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


def _run(model: ServerModel, *, with_key: bool = True, auth: bool = True) -> SuiteResult:
    with embedded_target(model) as target:
        model.auth = auth
        return run_suite(
            target.connect,
            target=target.location,
            api_key=target.api_key if with_key else None,
        )


def _status(result: SuiteResult) -> dict[str, str]:
    return {v.case.id: v.status for v in result.verdicts}


# -----------------------------------------------------------------------------------------------
# A lost reply is unknown, not a failure


def test_a_lost_reply_in_the_engine_is_unknown_not_a_failure() -> None:
    def lost(ctx: Context) -> None:
        raise OutcomeUnknown("SESSION_FINALIZE", ErrorKind.CANCELLED, "the reply was lost")

    case = Case("POL-LOST", "A lost reply.", "test", lost)
    model = ServerModel(profile="spec")
    result = run_suite(lambda key: MemoryTransport(model), target="memory", cases=[case])
    (verdict,) = result.verdicts
    assert verdict.status == "unknown" and "reply was lost" in verdict.message
    assert not result.failed and result.observed_nothing


# -----------------------------------------------------------------------------------------------
# Deviation labels follow the failed check


def test_a_failure_is_labelled_only_when_its_check_is_the_deviations() -> None:
    case = BY_ID["PUT-LOCKED"]
    assert case.labels(Fail("data stored", "nothing-stored")) == ("MOSAICOD-LOCKED-TOPIC-LATE",)
    assert case.labels(Fail("accepted", None)) == ()
    assert case.labels(Fail("refused differently", "other")) == ()


def test_a_variant_failing_another_check_gets_no_deviation_label() -> None:
    variant = next(v for v in VARIANTS if v.name == "put-accepts-locked-topic")
    verdict = next(
        v for v in _run(variant.make(profile="spec")).verdicts if v.case.id == "PUT-LOCKED"
    )
    assert verdict.status == "fail" and verdict.deviations == ()
    deviating = next(
        v for v in _run(ServerModel(profile="mosaicod-0.3")).verdicts if v.case.id == "PUT-LOCKED"
    )
    assert deviating.status == "fail" and deviating.deviations == ("MOSAICOD-LOCKED-TOPIC-LATE",)


def test_a_deviation_is_labelled_by_its_own_id_alone() -> None:
    result = _run(ServerModel(deviations=["MOSAICOD-REPORT-LOCKS"]))
    labels = {d for v in result.verdicts if v.status == "fail" for d in v.deviations}
    assert labels == {"MOSAICOD-REPORT-LOCKS"}


# -----------------------------------------------------------------------------------------------
# Every request is in the steps


@attrs.define
class _Counted:
    """Counts every request a transport passes on (stream calls included)."""

    inner: Transport
    count: list[int]

    def _n(self, outcome: Outcome) -> Outcome:
        self.count[0] += 1
        return outcome

    def action_raw(self, action_type: str, body: bytes) -> Outcome:
        return self._n(self.inner.action_raw(action_type, body))

    def action(self, action: FlightAction, body: Mapping[str, Any]) -> Outcome:
        return self._n(self.inner.action(action, body))

    def open_stream(self, descriptor: Descriptor, schema: pa.Schema) -> Outcome:
        outcome = self._n(self.inner.open_stream(descriptor, schema))
        return Outcome.ok(_CountedStream(outcome.value, self.count)) if outcome.is_ok else outcome

    def flight_info(self, descriptor: Descriptor) -> Outcome:
        return self._n(self.inner.flight_info(descriptor))

    def read(self, ticket: bytes) -> Outcome:
        return self._n(self.inner.read(ticket))

    def list_sequences(self, criteria: bytes = b"") -> Outcome:
        return self._n(self.inner.list_sequences(criteria))

    def close(self) -> None:
        self.inner.close()


@attrs.define
class _CountedStream:
    inner: Any
    count: list[int]

    @property
    def failure(self) -> Outcome | None:
        return self.inner.failure  # type: ignore[no-any-return]

    def write(self, batch: pa.RecordBatch) -> Outcome:
        self.count[0] += 1
        return self.inner.write(batch)  # type: ignore[no-any-return]

    def close(self) -> Outcome:
        self.count[0] += 1
        return self.inner.close()  # type: ignore[no-any-return]

    def abort(self) -> Outcome:
        self.count[0] += 1
        return self.inner.abort()  # type: ignore[no-any-return]


@pytest.mark.parametrize("profile", ["spec", "mosaicod-0.3"])
def test_every_request_of_every_case_is_in_its_steps(profile: str) -> None:
    model = ServerModel(profile=profile, auth=True)
    manage = model.bootstrap_key()
    count = [0]

    def connect(key: str | None) -> Transport:
        return _Counted(MemoryTransport(model, api_key=key), count)

    for number, case in enumerate(CASES):
        count[0] = 0
        ctx = Context(connect, manage, f"log{number}")
        try:
            case.run(ctx)
        except (Fail, Unknown):
            pass
        finally:
            ctx.close()
        logged = [s for s in ctx.steps if not s.startswith("engine:")]
        assert len(logged) == count[0], f"{case.id}: {count[0]} requests, {len(logged)} logged"


def test_steps_name_the_key_that_sent_each_request() -> None:
    result = _run(ServerModel(profile="mosaicod-0.3"))
    expired = next(v for v in result.verdicts if v.case.id == "AUTH-EXPIRED")
    assert any(step.startswith("[write expired key] ListFlights") for step in expired.steps)
    no_data = next(v for v in result.verdicts if v.case.id == "GET-NO-DATA")
    assert sum(step.startswith("DoGet ") for step in no_data.steps) == 1  # logged once


# -----------------------------------------------------------------------------------------------
# A requirement passes only when it was observed


def test_with_authentication_off_a_given_key_leaves_the_auth_requirements_unknown() -> None:
    result = _run(ServerModel(profile="spec"), with_key=True, auth=False)
    status = _status(result)
    for cid in ("AUTH-MISSING", "AUTH-BAD", "AUTH-EXPIRED", "KEY-LIFECYCLE", "PERM-READ"):
        assert status[cid] == "unknown", cid
    assert not result.failed


class _KeepsDeletedTopicData(ServerModel):
    """topic_delete unlists the topic, but DoGet still serves its data."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kept: dict[str, TopicRecord] = {}
        self.handlers["TOPIC_DELETE"] = self._delete_keeping

    def _delete_keeping(self, state: ServerState, op: Any, req: dict[str, Any]) -> None:
        self.kept[req["locator"]] = state.topics[req["locator"]]
        actions.topic_delete(state, op, req)

    def read(self, principal: Principal, ticket: bytes) -> TopicData:
        try:
            return super().read(principal, ticket)
        except ServerError:
            topic = next((t for loc, t in self.kept.items() if loc.encode() in ticket), None)
            if topic is None:
                raise
            return TopicData(topic.chunks[0].schema, tuple(topic.chunks))


class _NoBytes(ServerModel):
    """Records no byte count."""

    def flight_info(self, *args: Any, **kwargs: Any) -> SequenceInfo | TopicInfo:
        view = super().flight_info(*args, **kwargs)
        if isinstance(view, TopicInfo):
            return _no_bytes(view)
        return attrs.evolve(view, topics=tuple(_no_bytes(t) for t in view.topics))


def _no_bytes(view: TopicInfo) -> TopicInfo:
    if view.info is None:
        return view
    return attrs.evolve(view, info=attrs.evolve(view.info, total_bytes=0))


class _ReadKeysListNothing(ServerModel):
    """ListFlights answers nothing to a read key."""

    def list_sequences(self, principal: Principal, criteria: bytes) -> list[str]:
        names = super().list_sequences(principal, criteria)
        return [] if principal.permission.value == "read" else names


class _RevokedKeysStillWork(ServerModel):
    """A revoked key is no longer described, but still authenticates."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.revoked: dict[str, Any] = {}
        self.handlers["API_KEY_REVOKE"] = self._revoke_keeping

    def _revoke_keeping(self, state: ServerState, op: Any, req: dict[str, Any]) -> None:
        self.revoked[req["api_key_fingerprint"]] = state.keys[req["api_key_fingerprint"]]
        keys.api_key_revoke(state, op, req)

    def authenticate(self, token: str | None) -> Principal:
        fingerprint = (token or "").rsplit("_", 1)[-1]
        if fingerprint in self.revoked:
            return Principal(self.revoked[fingerprint].permission, fingerprint)
        return super().authenticate(token)


@pytest.mark.parametrize(
    ("broken", "caught_by"),
    [
        (_KeepsDeletedTopicData, "TOP-DELETE"),
        (_NoBytes, "PUT-LOCKS"),
        (_ReadKeysListNothing, "PERM-READ"),
        (_RevokedKeysStillWork, "KEY-LIFECYCLE"),
    ],
)
def test_requirements_are_observed_not_assumed(
    broken: Callable[..., ServerModel], caught_by: str
) -> None:
    result = _run(broken(profile="spec"))
    assert _status(result)[caught_by] == "fail", [
        v.message for v in result.verdicts if v.case.id == caught_by
    ]
