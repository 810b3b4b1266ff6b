"""Server behaviour profiles and the QUERY action.

Each recorded server deviation of specs/deviations.toml is shown twice: the spec behaviour
under profile "spec", and the emulated mosaicod behaviour under a mosaicod profile
("mosaicod-0.3", or "mosaicod-2026-03-31" for the behaviours of that build only).
Both run in memory and over Flight.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pytest

from fsm.enums import FlightAction
from fsm.outcome import ErrorKind, Outcome
from fsm.spec import load_spec
from fsm.transport import Descriptor, Transport
from tests.harness import (
    KIND_PARAMS,
    SCHEMA,
    Harness,
    batch,
    failed_with,
    harness,
    ok,
    topic_args,
)

SPEC = "spec"
MOSAICOD = "mosaicod-0.3"
EARLY = "mosaicod-2026-03-31"


@pytest.fixture(params=KIND_PARAMS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def stream_verdict(
    t: Transport, locator: str, topic_uuid: str, batches: list[pa.RecordBatch]
) -> Outcome:
    """Open, write, close: the first outcome that is not ok, or the close's (over Flight a
    refusal shows at the next write or at the close)."""
    opened = t.open_stream(Descriptor.for_topic(locator, topic_uuid), SCHEMA)
    if not opened.is_ok:
        return opened
    for b in batches:
        written = opened.value.write(b)
        if not written.is_ok:
            return written
    return opened.value.close()


class Writer:
    """A few protocol steps on one transport, remembering UUIDs."""

    def __init__(self, t: Transport) -> None:
        self.t = t
        self.topics: dict[str, str] = {}

    def sequence(self, name: str, metadata: dict[str, Any] | None = None) -> str:
        ok(
            self.t.action(
                FlightAction.SEQUENCE_CREATE, {"locator": name, "user_metadata": metadata or {}}
            )
        )
        return self.session(name)

    def session(self, name: str) -> str:
        return str(ok(self.t.action(FlightAction.SESSION_CREATE, {"locator": name}))["uuid"])

    def topic(
        self,
        session: str,
        locator: str,
        ontology_tag: str = "imu",
        metadata: dict[str, Any] | None = None,
        serialization_format: str = "default",
    ) -> str:
        topic_uuid = str(
            ok(
                self.t.action(
                    FlightAction.TOPIC_CREATE,
                    {
                        "session_uuid": session,
                        "locator": locator,
                        "serialization_format": serialization_format,
                        "ontology_tag": ontology_tag,
                        "user_metadata": metadata or {},
                    },
                )
            )["uuid"]
        )
        self.topics[locator] = topic_uuid
        return topic_uuid

    def stream(self, locator: str, *batches: pa.RecordBatch) -> Outcome:
        return stream_verdict(self.t, locator, self.topics[locator], list(batches))

    def finalize(self, session: str) -> Outcome:
        return self.t.action(FlightAction.SESSION_FINALIZE, {"session_uuid": session})

    def locked_session(self, name: str) -> str:
        """A sequence whose only session holds one streamed topic and is finalized."""
        session = self.sequence(name)
        self.topic(session, f"{name}/a")
        ok(self.stream(f"{name}/a", batch(0)))
        ok(self.finalize(session))
        return session

    def session_info(self, name: str, session: str) -> Any:
        info = ok(self.t.flight_info(Descriptor.for_resource(name)))
        return info.session(session)


def both(
    kind: str,
    check: Callable[[Harness, Writer, bool], None],
    auth: bool = False,
    emulating: str = MOSAICOD,
) -> None:
    """Run `check(h, writer, emulated)` under the spec profile, then under `emulating`."""
    for profile in (SPEC, emulating):
        with harness(kind, profile=profile, auth=auth) as h:
            key = h.model.bootstrap_key() if auth else None
            check(h, Writer(h.transport(api_key=key)), profile == emulating)


# ---------------------------------------------------------------------------------------------
# One test per server deviation


def test_report_locks(kind: str) -> None:
    """MOSAICOD-REPORT-LOCKS: finalizing after an error report leaves the session unlocked
    (spec); mosaicod locks it."""

    def check(h: Harness, w: Writer, emulated: bool) -> None:
        session = w.sequence("rep")
        w.topic(session, "rep/a")
        ok(w.stream("rep/a", batch(0)))
        ok(
            w.t.action(
                FlightAction.SEQUENCE_NOTIFICATION_CREATE,
                {"locator": "rep", "notification_type": "error", "msg": "boom"},
            )
        )
        ok(w.finalize(session))
        info = w.session_info("rep", session)
        assert info.locked is emulated
        assert info.completed_at_ns is not None
        state = h.model.snapshot()["sessions"][session]["state"]
        assert state == ("finalized" if emulated else "finalized_reported")
        # A finalized session takes no more topics either way.
        refused = w.t.action(
            FlightAction.TOPIC_CREATE,
            topic_args(session, "rep/b"),
        )
        failed_with(refused, ErrorKind.FAILED_PRECONDITION)
        if not emulated:
            # Unlocked: it can be deleted later.
            ok(w.t.action(FlightAction.SESSION_DELETE, {"session_uuid": session}))
            assert session not in h.model.snapshot()["sessions"]

    both(kind, check)


def test_delete_locked_session(kind: str) -> None:
    """MOSAICOD-DELETE-LOCKED-SESSION: a locked session cannot be deleted (spec); mosaicod
    deletes it with its topics."""

    def check(h: Harness, w: Writer, emulated: bool) -> None:
        session = w.locked_session("dls")
        before = h.model.snapshot()
        outcome = w.t.action(FlightAction.SESSION_DELETE, {"session_uuid": session})
        if emulated:
            ok(outcome)
            after = h.model.snapshot()
            assert session not in after["sessions"]
            assert "dls/a" not in after["topics"]
            assert after["sequences"]["dls"]["sessions"] == []
        else:
            failed_with(outcome, ErrorKind.FAILED_PRECONDITION)
            assert h.model.snapshot() == before

    both(kind, check)


def test_delete_locked_sequence(kind: str) -> None:
    """MOSAICOD-DELETE-LOCKED-SEQUENCE: a sequence with a locked session cannot be deleted
    (spec); mosaicod deletes it."""

    def check(h: Harness, w: Writer, emulated: bool) -> None:
        w.locked_session("dlq")
        open_session = w.session("dlq")
        before = h.model.snapshot()
        outcome = w.t.action(FlightAction.SEQUENCE_DELETE, {"locator": "dlq"})
        if emulated:
            ok(outcome)
            assert ok(w.t.list_sequences()) == []
            after = h.model.snapshot()
            assert after["sessions"] == {}
            assert after["topics"] == {}
        else:
            failed_with(outcome, ErrorKind.FAILED_PRECONDITION)
            assert h.model.snapshot() == before
            assert ok(w.t.list_sequences()) == ["dlq"]
            assert open_session in h.model.snapshot()["sessions"]

    both(kind, check)


def test_delete_locked_topic(kind: str) -> None:
    """MOSAICOD-DELETE-LOCKED-TOPIC: a topic of a locked session cannot be deleted (spec);
    mosaicod deletes it. A topic of an open session is deletable under both."""

    def check(h: Harness, w: Writer, emulated: bool) -> None:
        w.locked_session("dlt")
        open_session = w.session("dlt")
        w.topic(open_session, "dlt/open")
        ok(w.stream("dlt/open", batch(0)))
        ok(w.t.action(FlightAction.TOPIC_DELETE, {"locator": "dlt/open"}))
        before = h.model.snapshot()
        outcome = w.t.action(FlightAction.TOPIC_DELETE, {"locator": "dlt/a"})
        if emulated:
            ok(outcome)
            assert "dlt/a" not in h.model.snapshot()["topics"]
            failed_with(w.t.flight_info(Descriptor.for_resource("dlt/a")), ErrorKind.NOT_FOUND)
        else:
            failed_with(outcome, ErrorKind.FAILED_PRECONDITION)
            assert h.model.snapshot() == before
            assert ok(w.t.flight_info(Descriptor.for_resource("dlt/a"))).locked is True

    both(kind, check)


def test_locked_topic_late(kind: str) -> None:
    """MOSAICOD-LOCKED-TOPIC-LATE: a DoPut to a locked topic is refused before storing
    anything (spec); mosaicod stores its batches, then refuses at the end of the stream."""

    def check(h: Harness, w: Writer, emulated: bool) -> None:
        session = w.sequence("late")
        w.topic(session, "late/a")
        ok(w.stream("late/a", batch(0, 3)))
        outcome = w.stream("late/a", batch(10, 4), batch(20, 5))
        failed_with(outcome, ErrorKind.FAILED_PRECONDITION)
        topic = h.model.snapshot()["topics"]["late/a"]
        assert topic["state"] == "locked"
        if emulated:
            assert topic["chunks"] == 3
            assert topic["rows"] == 12
        else:
            assert topic["chunks"] == 1
            assert topic["rows"] == 3
        # The topic is still locked, so its session can be finalized.
        ok(w.finalize(session))

    both(kind, check)


def test_refinalize(kind: str) -> None:
    """MOSAICOD-REFINALIZE: a second session_finalize is refused (spec); mosaicod accepts it
    again."""

    def check(h: Harness, w: Writer, emulated: bool) -> None:
        session = w.locked_session("ref")
        before = h.model.snapshot()
        outcome = w.finalize(session)
        if emulated:
            ok(outcome)
        else:
            failed_with(outcome, ErrorKind.FAILED_PRECONDITION)
        assert h.model.snapshot() == before
        assert w.session_info("ref", session).locked is True

    both(kind, check)


def test_notify_needs_write(kind: str) -> None:
    """MOSAICOD-NOTIFY-NEEDS-WRITE: a read key may create notifications (spec); mosaicod
    wants the write permission."""

    def check(h: Harness, w: Writer, emulated: bool) -> None:
        session = w.sequence("nt")
        w.topic(session, "nt/a")
        read_key = ok(
            w.t.action(FlightAction.API_KEY_CREATE, {"permissions": "read", "description": "r"})
        )["api_key_token"]
        write_key = ok(
            w.t.action(FlightAction.API_KEY_CREATE, {"permissions": "write", "description": "w"})
        )["api_key_token"]
        reader = h.transport(api_key=read_key)
        writer = h.transport(api_key=write_key)
        sequence_note = {"locator": "nt", "notification_type": "error", "msg": "seq"}
        topic_note = {"locator": "nt/a", "notification_type": "error", "msg": "top"}
        before = h.model.snapshot()
        seq_outcome = reader.action(FlightAction.SEQUENCE_NOTIFICATION_CREATE, sequence_note)
        top_outcome = reader.action(FlightAction.TOPIC_NOTIFICATION_CREATE, topic_note)
        if emulated:
            failed_with(seq_outcome, ErrorKind.PERMISSION_DENIED)
            failed_with(top_outcome, ErrorKind.PERMISSION_DENIED)
            assert h.model.snapshot() == before
            ok(writer.action(FlightAction.SEQUENCE_NOTIFICATION_CREATE, sequence_note))
            ok(writer.action(FlightAction.TOPIC_NOTIFICATION_CREATE, topic_note))
        else:
            ok(seq_outcome)
            ok(top_outcome)
        # Listing needs only read, under both profiles.
        listed = ok(reader.action(FlightAction.SEQUENCE_NOTIFICATION_LIST, {"locator": "nt"}))
        assert [n["msg"] for n in listed["notifications"]] == ["seq"]
        listed = ok(reader.action(FlightAction.TOPIC_NOTIFICATION_LIST, {"locator": "nt/a"}))
        assert [(n["name"], n["msg"]) for n in listed["notifications"]] == [("nt/a", "top")]

    both(kind, check, auth=True)


def test_no_key_expiry(kind: str) -> None:
    """MOSAICOD-NO-KEY-EXPIRY: a key past its expiry is refused (spec); mosaicod accepts it."""

    def check(h: Harness, w: Writer, emulated: bool) -> None:
        expired = ok(
            w.t.action(
                FlightAction.API_KEY_CREATE,
                {"permissions": "write", "description": "old", "expires_at_ns": 1},
            )
        )["api_key_token"]
        future = ok(
            w.t.action(
                FlightAction.API_KEY_CREATE,
                {"permissions": "write", "description": "new", "expires_at_ns": 2**62},
            )
        )["api_key_token"]
        ok(h.transport(api_key=future).action(FlightAction.VERSION, {}))
        old = h.transport(api_key=expired)
        calls = [
            old.action(FlightAction.VERSION, {}),
            old.list_sequences(),
            old.action(FlightAction.SEQUENCE_CREATE, {"locator": "exp", "user_metadata": {}}),
        ]
        for outcome in calls:
            if emulated:
                ok(outcome)
            else:
                failed_with(outcome, ErrorKind.PERMISSION_DENIED)
        assert ("exp" in h.model.sequences) is emulated

    both(kind, check, auth=True)


def test_doget_empty_internal(kind: str) -> None:
    """MOSAICOD-DOGET-EMPTY-INTERNAL: reading a topic that never received a stream is
    failed_precondition (spec); mosaicod answers internal."""

    def check(h: Harness, w: Writer, emulated: bool) -> None:
        session = w.sequence("dg")
        w.topic(session, "dg/a")
        ticket = ok(w.t.flight_info(Descriptor.for_resource("dg/a"))).ticket
        expected = ErrorKind.INTERNAL if emulated else ErrorKind.FAILED_PRECONDITION
        failed_with(w.t.read(ticket), expected)
        # Once a stream delivered its schema, both read it.
        ok(w.stream("dg/a", batch(0, 3)))
        data = ok(w.t.read(ticket))
        assert data.table().column("timestamp_ns").to_pylist() == [0, 1, 2]

    both(kind, check)


def test_delete_gone_sequence(kind: str) -> None:
    """MOSAICOD-DELETE-GONE-SEQUENCE: deleting a sequence that is gone is not_found (spec);
    the 2026-03-31 build accepts it and changes nothing."""

    def check(h: Harness, w: Writer, emulated: bool) -> None:
        w.sequence("gone")
        ok(w.t.action(FlightAction.SEQUENCE_DELETE, {"locator": "gone"}))
        before = h.model.snapshot()
        again = w.t.action(FlightAction.SEQUENCE_DELETE, {"locator": "gone"})
        if emulated:
            ok(again)
        else:
            failed_with(again, ErrorKind.NOT_FOUND)
        assert h.model.snapshot() == before

    both(kind, check, emulating=EARLY)


def test_session_topics_at_finalize(kind: str) -> None:
    """MOSAICOD-SESSION-TOPICS-AT-FINALIZE: an open session lists its topics (spec); the
    2026-03-31 build lists them only once the session is finalized."""

    def check(h: Harness, w: Writer, emulated: bool) -> None:
        session = w.sequence("st")
        w.topic(session, "st/a")
        listed = w.session_info("st", session).topics
        assert listed == (() if emulated else ("st/a",))
        ok(w.stream("st/a", batch(0)))
        ok(w.finalize(session))
        assert w.session_info("st", session).topics == ("st/a",)

    both(kind, check, emulating=EARLY)


def test_missing_key_denied(kind: str) -> None:
    """MOSAICOD-MISSING-KEY-DENIED: a request without a key is unauthenticated (spec); the
    2026-03-31 build answers permission_denied 'missing api key token in request'."""

    def check(h: Harness, w: Writer, emulated: bool) -> None:
        for outcome in (
            h.transport().list_sequences(),
            h.transport().action(FlightAction.VERSION, {}),
        ):
            if emulated:
                failed_with(outcome, ErrorKind.PERMISSION_DENIED)
                assert "missing api key token in request" in outcome.detail
            else:
                failed_with(outcome, ErrorKind.UNAUTHENTICATED)
        ok(w.t.list_sequences())

    both(kind, check, auth=True, emulating=EARLY)


DEVIATION_TESTS: dict[str, Callable[[str], None]] = {
    "MOSAICOD-DELETE-GONE-SEQUENCE": test_delete_gone_sequence,
    "MOSAICOD-SESSION-TOPICS-AT-FINALIZE": test_session_topics_at_finalize,
    "MOSAICOD-MISSING-KEY-DENIED": test_missing_key_denied,
    "MOSAICOD-REPORT-LOCKS": test_report_locks,
    "MOSAICOD-DELETE-LOCKED-SESSION": test_delete_locked_session,
    "MOSAICOD-DELETE-LOCKED-SEQUENCE": test_delete_locked_sequence,
    "MOSAICOD-DELETE-LOCKED-TOPIC": test_delete_locked_topic,
    "MOSAICOD-LOCKED-TOPIC-LATE": test_locked_topic_late,
    "MOSAICOD-REFINALIZE": test_refinalize,
    "MOSAICOD-NOTIFY-NEEDS-WRITE": test_notify_needs_write,
    "MOSAICOD-NO-KEY-EXPIRY": test_no_key_expiry,
    "MOSAICOD-DOGET-EMPTY-INTERNAL": test_doget_empty_internal,
}


def test_every_server_deviation_has_a_test() -> None:
    """Each server deviation of the spec is shown by a test of this module; the mosaicod
    profiles together emulate exactly those, and the 2026-03-31 build has every deviation of
    mosaicod-0.3 and three of its own."""
    from tests import test_query

    spec = load_spec()
    server_ids = {d.id for d in spec.deviations.values() if d.who == "mosaicod-0.3"}
    tests = {**DEVIATION_TESTS, **test_query.DEVIATION_TESTS}
    assert server_ids == set(tests)
    assert set(spec.profiles[MOSAICOD].deviations) | set(spec.profiles[EARLY].deviations) == (
        server_ids
    )
    early_only = set(spec.profiles[EARLY].deviations) - set(spec.profiles[MOSAICOD].deviations)
    assert early_only == {
        "MOSAICOD-DELETE-GONE-SEQUENCE",
        "MOSAICOD-SESSION-TOPICS-AT-FINALIZE",
        "MOSAICOD-MISSING-KEY-DENIED",
    }
    assert set(spec.profiles[MOSAICOD].deviations) <= set(spec.profiles[EARLY].deviations)
    assert spec.profiles[SPEC].deviations == ()
    for name, test in tests.items():
        assert test.__doc__ is not None
        assert test.__doc__.startswith(name + ":")


# ---------------------------------------------------------------------------------------------
# QUERY

SEQUENCES: dict[str, dict[str, Any]] = {
    "alpha_run": {
        "project": "apollo",
        "speed": 10,
        "env": {"visibility": 80, "weather": "rain"},
    },
    "beta_run": {"project": "gemini", "speed": 20, "env": {"visibility": 120}},
    "gamma_test": {"project": "apollo", "speed": 30.5, "flag": True},
}
TOPICS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "alpha_run/imu/front": ("imu", "default", {"sensor_id": "A1", "rate": 100}),
    "alpha_run/camera": ("image", "image", {"sensor_id": "C1", "rate": 30}),
    "beta_run/imu": ("imu", "default", {"rate": 200, "calib": {"scale": 2}}),
    "gamma_test/gps": ("gps", "ragged", {"sensor_id": "G1"}),
}


@pytest.fixture(scope="module", params=KIND_PARAMS)
def queried(request: pytest.FixtureRequest) -> Iterator[Transport]:
    """Three sequences with topics, queried in memory or over Flight."""
    with harness(str(request.param)) as h:
        w = Writer(h.transport())
        sessions = {name: w.sequence(name, meta) for name, meta in SEQUENCES.items()}
        for locator, (tag, fmt, meta) in TOPICS.items():
            w.topic(sessions[locator.split("/")[0]], locator, tag, meta, fmt)
        yield w.t


def query(t: Transport, body: dict[str, Any]) -> dict[str, list[str]]:
    """{sequence: [topic locators]} of a QUERY answer."""
    items = ok(t.action(FlightAction.QUERY, body))["items"]
    return {i["sequence"]: sorted(x["locator"] for x in i["topics"]) for i in items}


ALL_TOPICS = {
    "alpha_run": ["alpha_run/camera", "alpha_run/imu/front"],
    "beta_run": ["beta_run/imu"],
    "gamma_test": ["gamma_test/gps"],
}


def test_query_everything(queried: Transport) -> None:
    """An empty query answers every sequence with all of its topics."""
    assert query(queried, {}) == ALL_TOPICS


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"$eq": "beta_run"}, ["beta_run"]),
        ({"$eq": "beta"}, []),
        ({"$match": "_run"}, ["alpha_run", "beta_run"]),
        ({"$match": "test"}, ["gamma_test"]),
        ({"$match": "a"}, ["alpha_run", "beta_run", "gamma_test"]),
    ],
)
def test_query_sequence_name(
    queried: Transport, condition: dict[str, Any], expected: list[str]
) -> None:
    """Sequence name filters: exact ($eq) and substring ($match)."""
    answer = query(queried, {"sequence": {"locator": condition}})
    assert answer == {name: ALL_TOPICS[name] for name in expected}


@pytest.mark.parametrize(
    ("topic_filter", "expected"),
    [
        (
            {"locator": {"$eq": "alpha_run/camera"}},
            {"alpha_run": ["alpha_run/camera"]},
        ),
        (
            {"locator": {"$match": "imu"}},
            {"alpha_run": ["alpha_run/imu/front"], "beta_run": ["beta_run/imu"]},
        ),
        (
            {"ontology_tag": {"$eq": "imu"}},
            {"alpha_run": ["alpha_run/imu/front"], "beta_run": ["beta_run/imu"]},
        ),
        ({"ontology_tag": {"$eq": "gps"}}, {"gamma_test": ["gamma_test/gps"]}),
        ({"ontology_tag": {"$eq": "lidar"}}, {}),
        (
            {"serialization_format": {"$eq": "image"}},
            {"alpha_run": ["alpha_run/camera"]},
        ),
        (
            {"user_metadata": {"rate": {"$geq": 100}}},
            {"alpha_run": ["alpha_run/imu/front"], "beta_run": ["beta_run/imu"]},
        ),
        ({"user_metadata": {"calib.scale": {"$eq": 2}}}, {"beta_run": ["beta_run/imu"]}),
        (
            {"user_metadata": {"sensor_id": {"$in": ["C1", "G1"]}}},
            {"alpha_run": ["alpha_run/camera"], "gamma_test": ["gamma_test/gps"]},
        ),
        (
            {"ontology_tag": {"$eq": "imu"}, "user_metadata": {"rate": {"$lt": 150}}},
            {"alpha_run": ["alpha_run/imu/front"]},
        ),
    ],
)
def test_query_topic(
    queried: Transport, topic_filter: dict[str, Any], expected: dict[str, list[str]]
) -> None:
    """Topic filters answer the sequences holding a matching topic, with only those topics."""
    assert query(queried, {"topic": topic_filter}) == expected


@pytest.mark.parametrize(
    ("key", "condition", "expected"),
    [
        ("project", {"$eq": "apollo"}, ["alpha_run", "gamma_test"]),
        ("project", {"$neq": "apollo"}, ["beta_run"]),
        ("speed", {"$eq": 20}, ["beta_run"]),
        ("speed", {"$eq": "20"}, []),
        ("speed", {"$lt": 20}, ["alpha_run"]),
        ("speed", {"$leq": 20}, ["alpha_run", "beta_run"]),
        ("speed", {"$gt": 20}, ["gamma_test"]),
        ("speed", {"$geq": 20}, ["beta_run", "gamma_test"]),
        ("speed", {"$in": [10, 30.5]}, ["alpha_run", "gamma_test"]),
        ("speed", {"$between": [10, 20]}, ["alpha_run", "beta_run"]),
        ("speed", {"$between": [15, 31]}, ["beta_run", "gamma_test"]),
        ("project", {"$lt": "b"}, ["alpha_run", "gamma_test"]),
        ("project", {"$geq": "b"}, ["beta_run"]),
        ("flag", {"$ex": None}, ["gamma_test"]),
        ("flag", {"$nex": None}, ["alpha_run", "beta_run"]),
        ("flag", {"$eq": True}, ["gamma_test"]),
        ("env.visibility", {"$gt": 100}, ["beta_run"]),
        ("env.visibility", {"$leq": 100}, ["alpha_run"]),
        ("env.weather", {"$eq": "rain"}, ["alpha_run"]),
        ("env.visibility", {"$ex": None}, ["alpha_run", "beta_run"]),
        ("env.weather", {"$nex": None}, ["beta_run", "gamma_test"]),
        ("env.visibility.deeper", {"$ex": None}, []),
        ("missing", {"$eq": 1}, []),
    ],
)
def test_query_sequence_user_metadata(
    queried: Transport, key: str, condition: dict[str, Any], expected: list[str]
) -> None:
    """User-metadata comparisons on sequences, with dotted keys for nested values; $ex and
    $nex as the SDK sends them (a null operand)."""
    answer = query(queried, {"sequence": {"user_metadata": {key: condition}}})
    assert sorted(answer) == expected


def test_query_and_of_sequence_and_topic_filters(queried: Transport) -> None:
    """Sequence and topic filters combine with AND."""
    body = {
        "sequence": {"user_metadata": {"project": {"$eq": "apollo"}}},
        "topic": {"ontology_tag": {"$eq": "imu"}},
    }
    assert query(queried, body) == {"alpha_run": ["alpha_run/imu/front"]}
    body = {
        "sequence": {"locator": {"$match": "run"}, "user_metadata": {"speed": {"$gt": 15}}},
        "topic": {"locator": {"$match": "imu"}},
    }
    assert query(queried, body) == {"beta_run": ["beta_run/imu"]}
    body = {
        "sequence": {"locator": {"$eq": "gamma_test"}},
        "topic": {"ontology_tag": {"$eq": "imu"}},
    }
    assert query(queried, body) == {}


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"ontology": {"imu": {"$gt": 5}}}, "imu"),
        ({"sequence": {"user_metadata": {"speed": {"$gt": 10, "$lt": 30}}}}, "speed"),
        ({"layer": {}}, "layer"),
        ({"sequence": {"colour": {"$eq": "red"}}}, "sequence.colour"),
        ({"topic": {"frequency": {"$gt": 1}}}, "topic.frequency"),
        ({"sequence": {"locator": {"$regex": "a.*"}}}, "$regex"),
        ({"topic": {"user_metadata": {"rate": {"$near": 3}}}}, "$near"),
        ({"sequence": {"user_metadata": {"speed": {"$in": 10}}}}, "$in"),
        ({"sequence": {"user_metadata": {"speed": {"$between": [1]}}}}, "$between"),
        ({"sequence": {"locator": "alpha_run"}}, "sequence.locator"),
        ({"sequence": "alpha_run"}, "sequence"),
    ],
    ids=[
        "data-field-without-path",
        "two-operators",
        "unknown-top-level-filter",
        "unknown-sequence-field",
        "unknown-topic-field",
        "unknown-operator",
        "unknown-metadata-operator",
        "in-without-list",
        "between-one-bound",
        "condition-not-an-object",
        "filter-not-an-object",
    ],
)
def test_query_unsupported_filters_are_refused(
    queried: Transport, body: dict[str, Any], named: str
) -> None:
    """Anything the server does not support is invalid_argument, naming the filter."""
    outcome = queried.action(FlightAction.QUERY, body)
    failed_with(outcome, ErrorKind.INVALID_ARGUMENT)
    assert named in outcome.detail
