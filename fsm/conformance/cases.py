"""The requirement cases: one per requirement of the spec, in our words, with its source.

Each case runs a few requests against the target and fails (`Fail`) when the target does
not meet the requirement, or ends `Unknown` when it cannot be observed. A case that a
recorded server deviation contradicts names it in `deviations`, with the check the deviation
makes fail: a failure of that check (and only of that one) is labelled with the deviation's id.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import attrs
import pyarrow as pa

from fsm.conformance.context import Context, Fail, NotApplicable, Unknown
from fsm.conformance.requests import topic_body
from fsm.enums import APIKeyPermissionEnum, FlightAction
from fsm.outcome import ErrorKind
from fsm.transport import Descriptor, TopicData

__all__ = ["CASES", "Case"]

A = FlightAction
E = ErrorKind


@attrs.frozen
class Case:
    id: str
    requirement: str
    source: str
    run: Callable[[Context], None]
    deviations: Mapping[str, str] = attrs.field(factory=dict)
    """Recorded deviations that contradict the requirement, each with the check it fails."""

    @property
    def group(self) -> str:
        return self.id.split("-", 1)[0]

    def labels(self, failure: Fail) -> tuple[str, ...]:
        """The deviations a failure matches: those whose check is the one that failed."""
        return tuple(d for d, check in self.deviations.items() if check == failure.check)


CASES: list[Case] = []


def case(
    id: str, requirement: str, source: str, deviations: Mapping[str, str] | None = None
) -> Callable[[Callable[[Context], None]], Callable[[Context], None]]:
    def register(fn: Callable[[Context], None]) -> Callable[[Context], None]:
        CASES.append(Case(id, requirement, source, fn, dict(deviations or {})))
        return fn

    return register


# -----------------------------------------------------------------------------------------------
# Data

DEFAULT = pa.schema(
    [
        pa.field("timestamp_ns", pa.int64(), nullable=False),
        pa.field("x", pa.float64()),
        pa.field("n", pa.int32()),
    ]
)
RAGGED = pa.schema(
    [
        pa.field("timestamp_ns", pa.int64(), nullable=False),
        pa.field("points", pa.list_(pa.float32())),
    ]
)
IMAGE = pa.schema(
    [
        pa.field("timestamp_ns", pa.int64(), nullable=False),
        pa.field("data", pa.binary()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("format", pa.string()),
    ]
)


def default_batch(start: int, rows: int) -> pa.RecordBatch:
    ts = list(range(start, start + rows))
    return pa.record_batch(
        [
            pa.array(ts, pa.int64()),
            pa.array([t * 0.25 for t in ts]),
            pa.array([t % 7 for t in ts], pa.int32()),
        ],
        schema=DEFAULT,
    )


def ragged_batch(start: int, rows: int) -> pa.RecordBatch:
    ts = list(range(start, start + rows))
    points = [[float(t)] * (t % 5) for t in ts]
    return pa.record_batch(
        [pa.array(ts, pa.int64()), pa.array(points, pa.list_(pa.float32()))], schema=RAGGED
    )


def image_batch(start: int, rows: int) -> pa.RecordBatch:
    ts = list(range(start, start + rows))
    blobs = [bytes([t % 256]) * 2048 for t in ts]
    return pa.record_batch(
        [
            pa.array(ts, pa.int64()),
            pa.array(blobs, pa.binary()),
            pa.array([64] * rows, pa.int32()),
            pa.array([32] * rows, pa.int32()),
            pa.array(["raw"] * rows),
        ],
        schema=IMAGE,
    )


def same_data(read: TopicData, written: list[pa.RecordBatch], schema: pa.Schema) -> bool:
    got = read.table().replace_schema_metadata(None)
    expected = pa.Table.from_batches(written, schema=schema)
    return bool(got.schema.equals(expected.schema, check_metadata=False) and got.equals(expected))


def locked_topic(ctx: Context, tag: str, rows: int = 3) -> tuple[str, str, str, str]:
    """A sequence with one open session holding one locked topic: (sequence, session, locator, uuid)."""
    seq = ctx.sequence(tag)
    ses = ctx.session(seq)
    loc, uuid = ctx.topic(ses, seq)
    ctx.ok(ctx.put(loc, uuid, [default_batch(0, rows)], DEFAULT), "a clean DoPut")
    return seq, ses, loc, uuid


def finalized(ctx: Context, tag: str) -> tuple[str, str, str]:
    seq, ses, loc, _ = locked_topic(ctx, tag)
    ctx.ok(ctx.act(A.SESSION_FINALIZE, {"session_uuid": ses}), "session_finalize")
    return seq, ses, loc


# -----------------------------------------------------------------------------------------------
# Sequences


@case(
    "SEQ-CREATE",
    "A new sequence is registered with its user metadata and listed.",
    "specs/actions.toml: operations.SEQUENCE_CREATE; specs/actions.toml: operations.LIST_FLIGHTS",
)
def _seq_create(ctx: Context) -> None:
    seq = ctx.sequence("seq", {"robot": "r1", "n": 3})
    info = ctx.sequence_info(seq)
    ctx.check(
        dict(info.user_metadata) == {"robot": "r1", "n": 3},
        f"metadata read back as {dict(info.user_metadata)}",
    )
    ctx.check(info.sessions == (), "a new sequence has no session")
    names = ctx.ok(ctx.transport.list_sequences(), "ListFlights")
    ctx.check(seq in names, "ListFlights does not list the new sequence")


@case(
    "SEQ-EXISTS",
    "Creating a sequence that exists is refused (already_exists) and changes nothing.",
    "specs/actions.toml: operations.SEQUENCE_CREATE",
)
def _seq_exists(ctx: Context) -> None:
    seq = ctx.sequence("dup", {"v": 1})
    ctx.refused(
        ctx.act(A.SEQUENCE_CREATE, {"locator": seq, "user_metadata": {"v": 2}}),
        E.ALREADY_EXISTS,
        "a second sequence_create",
    )
    ctx.check(
        dict(ctx.sequence_info(seq).user_metadata) == {"v": 1},
        "the refused request changed the metadata",
    )


@case(
    "SEQ-LOCATOR",
    "A sequence name with characters outside [A-Za-z0-9_-] is refused (invalid_argument).",
    "specs/actions.toml: operations.SEQUENCE_CREATE",
)
def _seq_locator(ctx: Context) -> None:
    ctx.refused(
        ctx.act(A.SEQUENCE_CREATE, {"locator": f"{ctx.prefix} bad!", "user_metadata": {}}),
        E.INVALID_ARGUMENT,
        "a bad locator",
    )


@case(
    "SEQ-DELETE",
    "Deleting an unlocked sequence removes it with its sessions and topics.",
    "specs/actions.toml: operations.SEQUENCE_DELETE",
)
def _seq_delete(ctx: Context) -> None:
    seq, _, loc, _ = locked_topic(ctx, "del")
    ctx.ok(ctx.act(A.SEQUENCE_DELETE, {"locator": seq}), "sequence_delete")
    ctx.check(not ctx.exists(seq), "the sequence is still there")
    ctx.refused(
        ctx.transport.flight_info(Descriptor.for_resource(loc)),
        E.NOT_FOUND,
        "GetFlightInfo of its topic",
    )


@case(
    "SEQ-DELETE-MISSING",
    "Deleting a sequence that does not exist is refused (not_found).",
    "specs/actions.toml: operations.SEQUENCE_DELETE",
    {"MOSAICOD-DELETE-GONE-SEQUENCE": "delete-missing-refused"},
)
def _seq_delete_missing(ctx: Context) -> None:
    ctx.refused(
        ctx.act(A.SEQUENCE_DELETE, {"locator": ctx.name("ghost")}),
        E.NOT_FOUND,
        "sequence_delete of a missing sequence",
        "delete-missing-refused",
    )


@case(
    "SEQ-DELETE-LOCKED",
    "A sequence holding a finalized, locked session cannot be deleted (failed_precondition); nothing is removed.",
    "mosaicolabs SDK API reference, Enum Module: SessionStatus.Finalized",
    {"MOSAICOD-DELETE-LOCKED-SEQUENCE": "delete-refused"},
)
def _seq_delete_locked(ctx: Context) -> None:
    seq, _, _ = finalized(ctx, "lockseq")
    ctx.refused(
        ctx.act(A.SEQUENCE_DELETE, {"locator": seq}),
        E.FAILED_PRECONDITION,
        "sequence_delete of a locked sequence",
        "delete-refused",
    )
    ctx.check(ctx.exists(seq), "the refused delete removed the sequence")


# -----------------------------------------------------------------------------------------------
# Sessions


@case(
    "SES-CREATE",
    "A session is opened on an existing sequence, answers a UUID, and starts unlocked.",
    "specs/actions.toml: operations.SESSION_CREATE",
)
def _ses_create(ctx: Context) -> None:
    seq = ctx.sequence("ses")
    ses = ctx.session(seq)
    sessions = ctx.sequence_info(seq).sessions
    ctx.check(
        [s.uuid for s in sessions] == [ctx.listed(ses)],
        f"sessions listed: {[s.uuid for s in sessions]}",
    )
    ctx.check(
        not sessions[0].locked and sessions[0].completed_at_ns is None,
        "a new session is locked or completed",
    )


@case(
    "SES-CREATE-MISSING",
    "A session on a missing sequence is refused (not_found).",
    "specs/actions.toml: operations.SESSION_CREATE",
)
def _ses_create_missing(ctx: Context) -> None:
    ctx.refused(
        ctx.act(A.SESSION_CREATE, {"locator": ctx.name("ghost")}),
        E.NOT_FOUND,
        "session_create on a missing sequence",
    )


@case(
    "SES-TOPICS-LISTED",
    "A session lists each of its topics from its topic_create on, before the session is finalized.",
    "specs/resources.toml: session",
    {"MOSAICOD-SESSION-TOPICS-AT-FINALIZE": "open-session-topics"},
)
def _ses_topics_listed(ctx: Context) -> None:
    seq = ctx.sequence("sestop")
    ses = ctx.session(seq)
    loc, _ = ctx.topic(ses, seq)
    session = ctx.sequence_info(seq).session(ctx.listed(ses))
    ctx.check(session is not None, "the session is not listed")
    assert session is not None
    ctx.check(
        session.topics == (loc,),
        f"the open session lists the topics {session.topics}, not ({loc!r},)",
        "open-session-topics",
    )


@case(
    "SES-FINALIZE-EMPTY",
    "A session without topics cannot be finalized (failed_precondition) and stays unlocked.",
    "specs/resources.toml: session and topic (locked); specs/actions.toml: operations.SESSION_FINALIZE",
)
def _ses_empty(ctx: Context) -> None:
    seq = ctx.sequence("empty")
    ses = ctx.session(seq)
    ctx.refused(
        ctx.act(A.SESSION_FINALIZE, {"session_uuid": ses}),
        E.FAILED_PRECONDITION,
        "finalize of an empty session",
    )
    ctx.check(
        not ctx.sequence_info(seq).sessions[0].locked, "the refused finalize locked the session"
    )


@case(
    "SES-FINALIZE-UNLOCKED",
    "A session with a topic whose stream has not ended cannot be finalized (failed_precondition).",
    "specs/resources.toml: session and topic (locked); specs/actions.toml: operations.SESSION_FINALIZE",
)
def _ses_unlocked(ctx: Context) -> None:
    seq = ctx.sequence("open")
    ses = ctx.session(seq)
    ctx.topic(ses, seq)
    ctx.refused(
        ctx.act(A.SESSION_FINALIZE, {"session_uuid": ses}),
        E.FAILED_PRECONDITION,
        "finalize with an unlocked topic",
    )


@case(
    "SES-FINALIZE-LOCKS",
    "A clean finalize completes and locks the session.",
    "mosaicolabs SDK API reference, Enum Module: SessionStatus.Finalized; "
    "specs/actions.toml: operations.SESSION_FINALIZE",
)
def _ses_finalize(ctx: Context) -> None:
    seq, ses, _ = finalized(ctx, "fin")
    session = ctx.sequence_info(seq).session(ctx.listed(ses))
    ctx.check(
        session is not None and session.locked and session.completed_at_ns is not None,
        f"the session is {session}",
    )


@case(
    "SES-FINALIZE-ONCE",
    "A finalized session cannot be finalized again (failed_precondition).",
    "specs/actions.toml: operations.SESSION_FINALIZE (later builds)",
    {"MOSAICOD-REFINALIZE": "refinalize-refused"},
)
def _ses_once(ctx: Context) -> None:
    _, ses, _ = finalized(ctx, "once")
    ctx.refused(
        ctx.act(A.SESSION_FINALIZE, {"session_uuid": ses}),
        E.FAILED_PRECONDITION,
        "a second finalize",
        "refinalize-refused",
    )


@case(
    "SES-FINALIZE-BAD-UUID",
    "A malformed session UUID is refused (invalid_argument), an unknown one (not_found).",
    "specs/actions.toml: operations.SESSION_FINALIZE",
)
def _ses_bad_uuid(ctx: Context) -> None:
    ctx.refused(
        ctx.act(A.SESSION_FINALIZE, {"session_uuid": "not-a-uuid"}),
        E.INVALID_ARGUMENT,
        "finalize with a bad UUID",
    )
    ctx.refused(
        ctx.act(A.SESSION_FINALIZE, {"session_uuid": "00000000-0000-4000-8000-000000000000"}),
        E.NOT_FOUND,
        "finalize of an unknown session",
    )


@case(
    "SES-REPORT-UNLOCKED",
    "A session finalized after an error was reported on its sequence is completed but left unlocked, "
    "and can be deleted.",
    "mosaicolabs SDK API reference, Enum Module: SessionLevelErrorPolicy.Report, 'Lock Status'",
    {"MOSAICOD-REPORT-LOCKS": "left-unlocked"},
)
def _ses_report(ctx: Context) -> None:
    seq, ses, _, _ = locked_topic(ctx, "rep")
    ctx.ok(
        ctx.act(
            A.SEQUENCE_NOTIFICATION_CREATE,
            {"locator": seq, "notification_type": "error", "msg": "failed"},
        ),
        "an error notification",
    )
    ctx.ok(ctx.act(A.SESSION_FINALIZE, {"session_uuid": ses}), "session_finalize after the report")
    session = ctx.sequence_info(seq).session(ctx.listed(ses))
    ctx.check(
        session is not None and session.completed_at_ns is not None, "the session is not completed"
    )
    ctx.check(
        session is not None and not session.locked,
        "the session was locked after an error report",
        "left-unlocked",
    )
    ctx.ok(
        ctx.act(A.SESSION_DELETE, ctx.session_delete_body(ses)),
        "session_delete of the reported session",
    )


@case(
    "SES-DELETE",
    "Deleting an open session removes it and its topics; the sequence stays.",
    "specs/actions.toml: operations.SESSION_DELETE",
)
def _ses_delete(ctx: Context) -> None:
    seq, ses, loc, _ = locked_topic(ctx, "sdel")
    ctx.ok(ctx.act(A.SESSION_DELETE, ctx.session_delete_body(ses)), "session_delete")
    info = ctx.sequence_info(seq)
    ctx.check(info.sessions == () and info.topics == (), "the session or its topic is still listed")
    ctx.refused(
        ctx.transport.flight_info(Descriptor.for_resource(loc)),
        E.NOT_FOUND,
        "GetFlightInfo of the deleted topic",
    )


@case(
    "SES-DELETE-LOCKED",
    "A finalized, locked session cannot be deleted (failed_precondition).",
    "mosaicolabs SDK API reference, Enum Module: SessionStatus.Finalized",
    {"MOSAICOD-DELETE-LOCKED-SESSION": "delete-refused"},
)
def _ses_delete_locked(ctx: Context) -> None:
    seq, ses, _ = finalized(ctx, "slock")
    ctx.refused(
        ctx.act(A.SESSION_DELETE, ctx.session_delete_body(ses)),
        E.FAILED_PRECONDITION,
        "session_delete of a locked session",
        "delete-refused",
    )
    ctx.check(
        ctx.sequence_info(seq).session(ctx.listed(ses)) is not None,
        "the refused delete removed the session",
    )


# -----------------------------------------------------------------------------------------------
# Topics


@case(
    "TOP-CREATE",
    "A topic is registered in an open session, answers its UUID, and starts unlocked without data info.",
    "specs/actions.toml: operations.TOPIC_CREATE; specs/actions.toml: operations.GET_FLIGHT_INFO",
)
def _top_create(ctx: Context) -> None:
    seq = ctx.sequence("top")
    ses = ctx.session(seq)
    loc, _ = ctx.topic(ses, seq, "imu/front", metadata={"k": "v"})
    topic = ctx.topic_info(loc)
    ctx.check(
        topic.locator == loc and not topic.locked and topic.info is None,
        f"the new topic reads {topic}",
    )
    ctx.check(
        topic.ontology_tag == "conformance" and topic.serialization_format == "default",
        "properties not kept",
    )
    ctx.check(dict(topic.user_metadata or {}) == {"k": "v"}, "user metadata not kept")


@case(
    "TOP-EXISTS",
    "A topic locator is unique on the server: a second topic_create is refused (already_exists).",
    "specs/resources.toml: topic; specs/actions.toml: operations.TOPIC_CREATE",
)
def _top_exists(ctx: Context) -> None:
    seq = ctx.sequence("tdup")
    ses = ctx.session(seq)
    loc, _ = ctx.topic(ses, seq)
    ses2 = ctx.session(seq)
    body = topic_body(ses2, loc)
    ctx.refused(
        ctx.act(A.TOPIC_CREATE, body), E.ALREADY_EXISTS, "a second topic with the same locator"
    )


@case(
    "TOP-OUTSIDE",
    "A topic outside its session's sequence is refused (permission_denied).",
    "specs/actions.toml: operations.TOPIC_CREATE",
)
def _top_outside(ctx: Context) -> None:
    seq = ctx.sequence("own")
    other = ctx.sequence("other")
    ses = ctx.session(seq)
    body = topic_body(ses, f"{other}/t")
    ctx.refused(ctx.act(A.TOPIC_CREATE, body), E.PERMISSION_DENIED, "a topic in another sequence")


@case(
    "TOP-FINALIZED",
    "No topic can be added to a finalized session (failed_precondition).",
    "specs/resources.toml: session and topic (locked); specs/actions.toml: operations.TOPIC_CREATE",
)
def _top_finalized(ctx: Context) -> None:
    seq, ses, _ = finalized(ctx, "tfin")
    body = topic_body(ses, f"{seq}/late")
    ctx.refused(
        ctx.act(A.TOPIC_CREATE, body), E.FAILED_PRECONDITION, "topic_create in a finalized session"
    )


@case(
    "TOP-FORMAT",
    "An unknown serialization format is refused (invalid_argument).",
    "specs/actions.toml: operations.TOPIC_CREATE",
)
def _top_format(ctx: Context) -> None:
    seq = ctx.sequence("fmt")
    ses = ctx.session(seq)
    body = topic_body(ses, f"{seq}/t", "jpeg")
    ctx.refused(
        ctx.act(A.TOPIC_CREATE, body), E.INVALID_ARGUMENT, "topic_create with an unknown format"
    )


@case(
    "TOP-DELETE",
    "Deleting a topic of an open session removes it and its data.",
    "specs/actions.toml: operations.TOPIC_DELETE",
)
def _top_delete(ctx: Context) -> None:
    seq, _, loc, _ = locked_topic(ctx, "tdel")
    ticket = ctx.topic_info(loc).ticket
    ctx.ok(ctx.act(A.TOPIC_DELETE, {"locator": loc}), "topic_delete")
    ctx.check(ctx.sequence_info(seq).topics == (), "the topic is still listed")
    ctx.refused(
        ctx.transport.flight_info(Descriptor.for_resource(loc)),
        E.NOT_FOUND,
        "GetFlightInfo of the deleted topic",
    )
    ctx.refused(ctx.transport.read(ticket), E.NOT_FOUND, "DoGet of the deleted topic's data")


@case(
    "TOP-DELETE-LOCKED",
    "A topic of a finalized, locked session cannot be deleted (failed_precondition).",
    "mosaicolabs SDK API reference, Enum Module: SessionStatus.Finalized",
    {"MOSAICOD-DELETE-LOCKED-TOPIC": "delete-refused"},
)
def _top_delete_locked(ctx: Context) -> None:
    seq, _, loc = finalized(ctx, "tlock")
    ctx.refused(
        ctx.act(A.TOPIC_DELETE, {"locator": loc}),
        E.FAILED_PRECONDITION,
        "topic_delete in a locked session",
        "delete-refused",
    )
    ctx.check(len(ctx.sequence_info(seq).topics) == 1, "the refused delete removed the topic")


# -----------------------------------------------------------------------------------------------
# DoPut


@case(
    "PUT-LOCKS",
    "A clean end of stream locks the topic and records its chunks, a byte count and its time range.",
    "specs/resources.toml: topic; specs/actions.toml: operations.DO_PUT, STREAM_WRITE, "
    "STREAM_CLOSE; specs/actions.toml: operations.GET_FLIGHT_INFO",
)
def _put_locks(ctx: Context) -> None:
    seq = ctx.sequence("put")
    ses = ctx.session(seq)
    loc, uuid = ctx.topic(ses, seq)
    ctx.ok(
        ctx.put(loc, uuid, [default_batch(10, 3), default_batch(13, 2)], DEFAULT), "a clean DoPut"
    )
    topic = ctx.topic_info(loc)
    ctx.check(
        topic.locked and topic.completed_at_ns is not None,
        "the topic is not locked after a clean end",
    )
    info = topic.info
    ctx.check(info is not None and info.chunks_number == 2, f"data info: {info}")
    # PROTOCOL.md does not say how the bytes are counted (in memory, or as stored): only that
    # some are recorded for the data written.
    ctx.check(info is not None and info.total_bytes > 0, f"no bytes recorded: {info}")
    ctx.check(info is not None and (info.start_ns, info.end_ns) == (10, 14), f"time range: {info}")


@case(
    "PUT-LOCKED",
    "A DoPut to a locked topic is refused (failed_precondition) before any of its data is stored.",
    "specs/resources.toml: session and topic (locked) (spec: refused before storing)",
    {"MOSAICOD-LOCKED-TOPIC-LATE": "nothing-stored"},
)
def _put_locked(ctx: Context) -> None:
    _, _, loc, uuid = locked_topic(ctx, "plock", rows=3)
    ctx.refused(
        ctx.put(loc, uuid, [default_batch(100, 5)], DEFAULT),
        E.FAILED_PRECONDITION,
        "a DoPut to a locked topic",
    )
    rows = ctx.read(ctx.topic_info(loc).ticket, loc).table().num_rows
    ctx.check(
        rows == 3, f"the refused stream stored data: {rows} rows instead of 3", "nothing-stored"
    )


@case(
    "PUT-UUID",
    "A DoPut with another topic's UUID is refused (permission_denied).",
    "specs/actions.toml: operations.DO_PUT, STREAM_WRITE, STREAM_CLOSE",
)
def _put_uuid(ctx: Context) -> None:
    seq = ctx.sequence("puid")
    ses = ctx.session(seq)
    loc, _ = ctx.topic(ses, seq, "a")
    _, other = ctx.topic(ses, seq, "b")
    ctx.refused(
        ctx.put(loc, other, [default_batch(0, 1)], DEFAULT),
        E.PERMISSION_DENIED,
        "a DoPut with the wrong topic_uuid",
    )


@case(
    "PUT-SCHEMA",
    "A DoPut whose schema has no int64 timestamp_ns is refused (invalid_argument).",
    "specs/actions.toml: operations.DO_PUT, STREAM_WRITE, STREAM_CLOSE",
)
def _put_schema(ctx: Context) -> None:
    seq = ctx.sequence("psch")
    ses = ctx.session(seq)
    loc, uuid = ctx.topic(ses, seq)
    schema = pa.schema([pa.field("timestamp_ns", pa.int32()), pa.field("x", pa.float64())])
    batch = pa.record_batch([pa.array([1], pa.int32()), pa.array([1.0])], schema=schema)
    ctx.refused(
        ctx.put(loc, uuid, [batch], schema),
        E.INVALID_ARGUMENT,
        "a DoPut with an int32 timestamp_ns",
    )


@case(
    "PUT-PATH",
    "A DoPut with a PATH descriptor is refused (invalid_argument).",
    "specs/actions.toml: operations.DO_PUT, STREAM_OPEN",
)
def _put_path(ctx: Context) -> None:
    seq = ctx.sequence("ppath")
    ses = ctx.session(seq)
    loc, uuid = ctx.topic(ses, seq)
    outcome = ctx.put(
        loc,
        uuid,
        [default_batch(0, 1)],
        DEFAULT,
        descriptor=Descriptor("path", path=tuple(loc.split("/"))),
    )
    ctx.refused(outcome, E.INVALID_ARGUMENT, "a DoPut with a PATH descriptor")


@case(
    "PUT-UNKNOWN",
    "A DoPut to a topic that does not exist is refused (not_found).",
    "specs/actions.toml: operations.DO_PUT, STREAM_WRITE, STREAM_CLOSE",
)
def _put_unknown(ctx: Context) -> None:
    seq = ctx.sequence("punk")
    outcome = ctx.put(
        f"{seq}/nothing", "00000000-0000-4000-8000-000000000000", [default_batch(0, 1)], DEFAULT
    )
    ctx.refused(outcome, E.NOT_FOUND, "a DoPut to a missing topic")


@case(
    "PUT-ABORT",
    "A stream that breaks before its clean end locks nothing.",
    "specs/actions.toml: operations.STREAM_ABORT",
)
def _put_abort(ctx: Context) -> None:
    seq = ctx.sequence("pabort")
    ses = ctx.session(seq)
    loc, uuid = ctx.topic(ses, seq)
    ctx.put(loc, uuid, [default_batch(0, 2)], DEFAULT, end="abort")
    ctx.check(not ctx.topic_info(loc).locked, "an aborted stream locked the topic")


@case(
    "PUT-EMPTY",
    "A stream with no batch, ended cleanly, locks the topic with no data.",
    "specs/actions.toml: operations.DO_PUT, STREAM_WRITE, STREAM_CLOSE",
)
def _put_empty(ctx: Context) -> None:
    seq = ctx.sequence("pempty")
    ses = ctx.session(seq)
    loc, uuid = ctx.topic(ses, seq)
    ctx.ok(ctx.put(loc, uuid, [], DEFAULT), "an empty DoPut")
    ctx.check(ctx.topic_info(loc).locked, "an empty clean stream did not lock the topic")


# -----------------------------------------------------------------------------------------------
# Reading


def _roundtrip(
    ctx: Context, tag: str, fmt: str, schema: pa.Schema, make: Callable[[int, int], pa.RecordBatch]
) -> None:
    seq = ctx.sequence(tag)
    ses = ctx.session(seq)
    loc, uuid = ctx.topic(ses, seq, fmt=fmt)
    written = [make(50, 4), make(0, 3), make(20, 5)]  # out of time order on purpose
    ctx.ok(ctx.put(loc, uuid, written, schema), "DoPut")
    data = ctx.read(ctx.topic_info(loc).ticket, loc)
    ctx.check(
        same_data(data, written, schema), f"{fmt} data read back differs from what was written"
    )


@case(
    "GET-DEFAULT",
    "Fixed-width data reads back exactly as written, in write order.",
    "specs/actions.toml: operations.DO_GET",
)
def _get_default(ctx: Context) -> None:
    _roundtrip(ctx, "gdef", "default", DEFAULT, default_batch)


@case(
    "GET-RAGGED",
    "Data with list columns reads back exactly as written.",
    "specs/actions.toml: operations.DO_GET; mosaicolabs SDK API reference, Enum Module: SerializationFormat.Ragged",
)
def _get_ragged(ctx: Context) -> None:
    _roundtrip(ctx, "grag", "ragged", RAGGED, ragged_batch)


@case(
    "GET-IMAGE",
    "Binary payloads with width, height and format read back exactly as written.",
    "specs/actions.toml: operations.DO_GET; mosaicolabs SDK API reference, Enum Module: SerializationFormat.Image",
)
def _get_image(ctx: Context) -> None:
    _roundtrip(ctx, "gimg", "image", IMAGE, image_batch)


@case(
    "GET-RANGE",
    "A time range limits a read to the rows with start <= timestamp_ns < end.",
    "specs/actions.toml: operations.GET_FLIGHT_INFO; specs/actions.toml: operations.DO_GET",
)
def _get_range(ctx: Context) -> None:
    seq = ctx.sequence("grange")
    ses = ctx.session(seq)
    loc, uuid = ctx.topic(ses, seq)
    ctx.ok(ctx.put(loc, uuid, [default_batch(0, 10)], DEFAULT), "DoPut")
    data = ctx.read(ctx.topic_info(loc, 3, 7).ticket, f"{loc}[3, 7)")
    ts = data.table().column("timestamp_ns").to_pylist()
    ctx.check(ts == [3, 4, 5, 6], f"the range read returned timestamps {ts}")


@case(
    "GET-NO-DATA",
    "Reading a topic that never received a stream is refused as a client mistake (failed_precondition), "
    "not an internal error.",
    "specs/actions.toml: error_kinds.internal and common_errors",
    {"MOSAICOD-DOGET-EMPTY-INTERNAL": "client-mistake"},
)
def _get_no_data(ctx: Context) -> None:
    seq = ctx.sequence("gnone")
    ses = ctx.session(seq)
    loc, _ = ctx.topic(ses, seq)
    ctx.refused(
        ctx.transport.read(ctx.topic_info(loc).ticket),
        E.FAILED_PRECONDITION,
        "DoGet of a topic without data",
        "client-mistake",
    )


@case(
    "LIST-CRITERIA",
    "ListFlights criteria other than empty or '/' are refused (invalid_argument).",
    "specs/actions.toml: operations.LIST_FLIGHTS",
)
def _list_criteria(ctx: Context) -> None:
    ctx.refused(
        ctx.transport.list_sequences(b"sensors/*"), E.INVALID_ARGUMENT, "ListFlights with criteria"
    )


# -----------------------------------------------------------------------------------------------
# Notifications


@case(
    "NOT-SEQUENCE",
    "Sequence notifications are created, listed with name, type, message and time, and purged.",
    "specs/actions.toml: operations.*_NOTIFICATION_CREATE, *_NOTIFICATION_LIST, *_NOTIFICATION_PURGE",
)
def _not_sequence(ctx: Context) -> None:
    seq = ctx.sequence("nseq")
    ctx.ok(
        ctx.act(
            A.SEQUENCE_NOTIFICATION_CREATE,
            {"locator": seq, "notification_type": "error", "msg": "m1"},
        ),
        "notification create",
    )
    listed = ctx.ok(ctx.act(A.SEQUENCE_NOTIFICATION_LIST, {"locator": seq}), "notification list")[
        "notifications"
    ]
    ctx.check(
        len(listed) == 1 and listed[0].get("msg") == "m1" and listed[0].get("name") == seq,
        f"listed: {listed}",
    )
    ctx.check(
        bool(listed[0].get("created_datetime")) and listed[0].get("notification_type") == "error",
        f"listed: {listed}",
    )
    ctx.ok(ctx.act(A.SEQUENCE_NOTIFICATION_PURGE, {"locator": seq}), "notification purge")
    listed = ctx.ok(ctx.act(A.SEQUENCE_NOTIFICATION_LIST, {"locator": seq}), "notification list")[
        "notifications"
    ]
    ctx.check(listed == [], "purged notifications are still listed")


@case(
    "NOT-TOPIC",
    "Topic notifications stay on their topic: listed there, not on the sequence, and purged.",
    "specs/actions.toml: operations.*_NOTIFICATION_CREATE, *_NOTIFICATION_LIST, *_NOTIFICATION_PURGE",
)
def _not_topic(ctx: Context) -> None:
    seq = ctx.sequence("ntop")
    ses = ctx.session(seq)
    loc, _ = ctx.topic(ses, seq)
    ctx.ok(
        ctx.act(
            A.TOPIC_NOTIFICATION_CREATE, {"locator": loc, "notification_type": "error", "msg": "t1"}
        ),
        "topic notification",
    )
    on_topic = ctx.ok(ctx.act(A.TOPIC_NOTIFICATION_LIST, {"locator": loc}), "topic list")[
        "notifications"
    ]
    on_seq = ctx.ok(ctx.act(A.SEQUENCE_NOTIFICATION_LIST, {"locator": seq}), "sequence list")[
        "notifications"
    ]
    ctx.check(
        [n.get("msg") for n in on_topic] == ["t1"] and on_topic[0].get("name") == loc,
        f"on the topic: {on_topic}",
    )
    ctx.check(on_seq == [], f"a topic notification shows on the sequence: {on_seq}")
    ctx.ok(ctx.act(A.TOPIC_NOTIFICATION_PURGE, {"locator": loc}), "topic purge")
    ctx.check(
        ctx.ok(ctx.act(A.TOPIC_NOTIFICATION_LIST, {"locator": loc}), "topic list")["notifications"]
        == [],
        "not purged",
    )


@case(
    "NOT-TYPE",
    "An unknown notification type is refused (invalid_argument); a missing sequence (not_found).",
    "specs/actions.toml: operations.SEQUENCE_NOTIFICATION_CREATE, TOPIC_NOTIFICATION_CREATE",
)
def _not_type(ctx: Context) -> None:
    seq = ctx.sequence("ntype")
    ctx.refused(
        ctx.act(
            A.SEQUENCE_NOTIFICATION_CREATE,
            {"locator": seq, "notification_type": "loud", "msg": "x"},
        ),
        E.INVALID_ARGUMENT,
        "a bad type",
    )
    body = {"locator": ctx.name("ghost"), "notification_type": "error", "msg": "x"}
    ctx.refused(
        ctx.act(A.SEQUENCE_NOTIFICATION_CREATE, body),
        E.NOT_FOUND,
        "a notification on a missing sequence",
    )


# -----------------------------------------------------------------------------------------------
# Requests


@case(
    "ACT-UNKNOWN",
    "An unknown action is refused (invalid_argument).",
    "specs/actions.toml: common_errors",
)
def _act_unknown(ctx: Context) -> None:
    ctx.refused(ctx.raw("sequence_rename", b"{}"), E.INVALID_ARGUMENT, "an unknown action")


@case(
    "ACT-MALFORMED",
    "A malformed JSON body is refused as a client mistake (invalid_argument), never as internal.",
    "specs/actions.toml: common_errors",
)
def _act_malformed(ctx: Context) -> None:
    ctx.refused(
        ctx.raw("sequence_create", b'{"locator": '), E.INVALID_ARGUMENT, "a truncated JSON body"
    )
    ctx.refused(ctx.raw("sequence_create", b"[1, 2]"), E.INVALID_ARGUMENT, "a JSON array body")


@case(
    "ACT-VERSION",
    "The handshake action (version, or info where the line replaced it) answers its fields: "
    "{version, semver}, and the server's gRPC limits where the line's answer has config.",
    "specs/actions.toml: operations.VERSION; specs/lines: handshake",
    {},
)
def _act_version(ctx: Context) -> None:
    operation = next((op for op in ("VERSION", "INFO") if op in ctx.spec.operations), None)
    if operation is None:
        raise NotApplicable(f"line {ctx.line.name} has neither version nor info")
    wire = ctx.wire(operation)
    value = ctx.ok(ctx.act(wire, {}), wire)
    ctx.check(
        isinstance(value, dict)
        and isinstance(value.get("version"), str)
        and isinstance(value.get("semver"), dict),
        f"{wire} answered {value}",
    )
    response = ctx.spec.operations[operation].response
    if isinstance(response, Mapping) and "config" in response:
        config = value.get("config")
        limits = tuple(ctx.line.handshake.config) or ("grpc_max_decode_message_size",)
        missing = [
            name
            for name in limits
            if not isinstance(config, dict) or not isinstance(config.get(name), int)
        ]
        ctx.check(not missing, f"{wire} answered no {', '.join(missing)} in config: {value}")


@case(
    "QRY-NAME",
    "A query by sequence name finds that sequence and its topics.",
    "specs/actions.toml: operations.QUERY",
)
def _qry_name(ctx: Context) -> None:
    seq, _, loc, _ = locked_topic(ctx, "qname")
    items = ctx.ok(ctx.act(A.QUERY, {"sequence": ctx.named(seq)}), "query")["items"]
    ctx.check([i.get("sequence") for i in items] == [seq], f"items: {items}")
    ctx.check(
        [t.get("locator") for t in items[0].get("topics", [])] == [loc],
        f"topics: {items[0].get('topics')}",
    )


@case(
    "QRY-METADATA",
    "A query on user metadata returns exactly the matching sequences.",
    "specs/actions.toml: operations.QUERY",
)
def _qry_metadata(ctx: Context) -> None:
    hit = ctx.sequence("qhit", {"mission": ctx.prefix, "n": 5})
    ctx.sequence("qmiss", {"mission": ctx.prefix, "n": 1})
    body = {"sequence": {"user_metadata": {"mission": {"$eq": ctx.prefix}, "n": {"$gt": 3}}}}
    items = ctx.ok(ctx.act(A.QUERY, body), "query")["items"]
    ctx.check(
        [i.get("sequence") for i in items] == [hit], f"items: {[i.get('sequence') for i in items]}"
    )


@case(
    "QRY-UNSUPPORTED",
    "A filter the server does not support is refused (invalid_argument), never answered wrongly.",
    "specs/actions.toml: operations.API_KEY_CREATE",
)
def _qry_unsupported(ctx: Context) -> None:
    outcome = ctx.act(A.QUERY, {"sequence": {"colour": {"$eq": "blue"}}})
    if outcome.is_ok and outcome.value.get("items"):
        raise Fail("an unknown filter field was answered with results")
    if outcome.is_ok:
        raise Unknown("the server ignored an unknown filter field and answered nothing")
    ctx.refused(outcome, E.INVALID_ARGUMENT, "an unknown filter field")


# -----------------------------------------------------------------------------------------------
# Keys and permissions (observable when the target authenticates and a manage key is given)


@case(
    "KEY-LIFECYCLE",
    "A manage key issues keys (msco_<32>_<8>), describes them and revokes them; a revoked key is refused.",
    "specs/actions.toml: error_kinds.unauthenticated; "
    "specs/actions.toml: operations.API_KEY_CREATE, API_KEY_STATUS, API_KEY_REVOKE",
)
def _key_lifecycle(ctx: Context) -> None:
    ctx.needs("API_KEY_CREATE", "API_KEY_STATUS", "API_KEY_REVOKE")
    ctx.authenticating()
    reader = ctx.key_transport(APIKeyPermissionEnum.Read)
    ctx.ok(reader.list_sequences(), "ListFlights with a read key")
    listed = ctx.act(A.API_KEY_CREATE, {"permissions": "read", "description": "to revoke"})
    token = ctx.ok(listed, "api_key_create")["api_key_token"]
    revoked = ctx.connect(str(token), "[key to revoke] ")
    ctx.ok(revoked.list_sequences(), "ListFlights with the new key")
    parts = str(token).split("_")
    ctx.check(
        len(parts) == 3 and parts[0] == "msco" and len(parts[1]) == 32 and len(parts[2]) == 8,
        f"token {token!r}",
    )
    status = ctx.ok(ctx.act(A.API_KEY_STATUS, {"api_key_fingerprint": parts[2]}), "api_key_status")
    ctx.check(
        status.get("api_key_fingerprint") == parts[2] and status.get("description") == "to revoke",
        f"{status}",
    )
    ctx.ok(ctx.act(A.API_KEY_REVOKE, {"api_key_fingerprint": parts[2]}), "api_key_revoke")
    ctx.refused(
        ctx.act(A.API_KEY_STATUS, {"api_key_fingerprint": parts[2]}),
        E.NOT_FOUND,
        "status of a revoked key",
    )
    ctx.refused(revoked.list_sequences(), E.PERMISSION_DENIED, "ListFlights with a revoked key")


def _missing_key_kind(ctx: Context) -> ErrorKind:
    """How the line's tables refuse a request without a key: the common error that names a
    missing key header (unauthenticated in 0.3's tables)."""
    for error in ctx.spec.common_errors:
        if "header is missing" in error.when:
            return ErrorKind(error.kind)
    return E.UNAUTHENTICATED


@case(
    "AUTH-MISSING",
    "With authentication on, a request without a key is refused (unauthenticated, or the "
    "error the line's tables give a missing key).",
    "specs/actions.toml: error_kinds.permission_denied and each operation's permission",
    {"MOSAICOD-MISSING-KEY-DENIED": "missing-key-unauthenticated"},
)
def _auth_missing(ctx: Context) -> None:
    ctx.authenticating(without="no key")
    ctx.refused(
        ctx.anonymous().list_sequences(),
        _missing_key_kind(ctx),
        "ListFlights without a key",
        "missing-key-unauthenticated",
    )


@case(
    "AUTH-BAD",
    "With authentication on, an unknown key is refused (permission_denied).",
    "specs/actions.toml: error_kinds.permission_denied and each operation's permission",
)
def _auth_bad(ctx: Context) -> None:
    ctx.authenticating(without="unknown key")
    transport = ctx.connect(ctx.unknown_key(), "[unknown key] ")
    ctx.refused(transport.list_sequences(), E.PERMISSION_DENIED, "ListFlights with an unknown key")


@case(
    "AUTH-EXPIRED",
    "A key past its expiry time is refused (permission_denied).",
    "specs/actions.toml: error_kinds.permission_denied and each operation's permission (spec: expiry enforced)",
    {"MOSAICOD-NO-KEY-EXPIRY": "expired-refused"},
)
def _auth_expired(ctx: Context) -> None:
    ctx.authenticating()
    expired = ctx.key_transport(APIKeyPermissionEnum.Write, expires_at_ns=1)
    ctx.refused(
        expired.list_sequences(),
        E.PERMISSION_DENIED,
        "ListFlights with an expired key",
        "expired-refused",
    )


@case(
    "PERM-READ",
    "A read key reads and lists but cannot create (permission_denied).",
    "mosaicolabs SDK API reference, Enum Module: APIKeyPermissionEnum.Read",
)
def _perm_read(ctx: Context) -> None:
    ctx.authenticating()
    seq, _, loc, _ = locked_topic(ctx, "pread")
    reader = ctx.key_transport(APIKeyPermissionEnum.Read)
    info = ctx.ok(reader.flight_info(Descriptor.for_resource(loc)), "GetFlightInfo with a read key")
    rows = ctx.read(info.ticket, f"{loc} with a read key", via=reader).table().num_rows
    ctx.check(rows == 3, f"a read key read {rows} of 3 rows")
    names = ctx.ok(reader.list_sequences(), "ListFlights with a read key")
    ctx.check(seq in names, "ListFlights with a read key does not list the sequence")
    ctx.refused(
        ctx.act(A.SEQUENCE_CREATE, {"locator": ctx.name("r"), "user_metadata": {}}, via=reader),
        E.PERMISSION_DENIED,
        "sequence_create with a read key",
    )
    ctx.refused(
        ctx.act(A.SEQUENCE_DELETE, {"locator": seq}, via=reader),
        E.PERMISSION_DENIED,
        "sequence_delete with a read key",
    )


@case(
    "PERM-REPORT-READ",
    "Reporting an error (a notification) needs only the read permission (or, where the line's "
    "tables ask more, a read key is refused).",
    "mosaicolabs SDK API reference, Enum Module: SessionLevelErrorPolicy.Report, 'Note'",
    {"MOSAICOD-NOTIFY-NEEDS-WRITE": "read-key-notifies"},
)
def _perm_report(ctx: Context) -> None:
    ctx.authenticating()
    seq = ctx.sequence("pnote")
    reader = ctx.key_transport(APIKeyPermissionEnum.Read)
    body = {"locator": seq, "notification_type": "error", "msg": "reported by a read key"}
    outcome = ctx.act(A.SEQUENCE_NOTIFICATION_CREATE, body, via=reader)
    needed = ctx.permission("SEQUENCE_NOTIFICATION_CREATE")
    if ctx.line.permissions.covers(ctx.bits(APIKeyPermissionEnum.Read), needed):
        ctx.ok(outcome, "a notification with a read key", "read-key-notifies")
    else:  # the line's tables ask more than read of a notification
        ctx.refused(
            outcome, E.PERMISSION_DENIED, f"a notification with a read key ({needed} needed)"
        )


@case(
    "PERM-WRITE",
    "A write key creates and writes but cannot delete (permission_denied).",
    "mosaicolabs SDK API reference, Enum Module: APIKeyPermissionEnum.Write",
)
def _perm_write(ctx: Context) -> None:
    ctx.authenticating()
    writer = ctx.key_transport(APIKeyPermissionEnum.Write)
    name = ctx.name("pw")
    ctx.ok(
        ctx.act(A.SEQUENCE_CREATE, {"locator": name, "user_metadata": {}}, via=writer),
        "sequence_create with a write key",
    )
    ctx.refused(
        ctx.act(A.SEQUENCE_DELETE, {"locator": name}, via=writer),
        E.PERMISSION_DENIED,
        "sequence_delete with a write key",
    )
    ctx.check(ctx.exists(name), "a refused delete removed the sequence")


@case(
    "PERM-DELETE",
    "A delete key deletes but cannot manage keys (permission_denied); where permissions are "
    "granular bits, the delete bit alone cannot create.",
    "mosaicolabs SDK API reference, Enum Module: APIKeyPermissionEnum.Delete",
)
def _perm_delete(ctx: Context) -> None:
    ctx.authenticating()
    deleter = ctx.key_transport(APIKeyPermissionEnum.Delete)
    seq = ctx.sequence("pdel")
    ctx.ok(
        ctx.act(A.SEQUENCE_DELETE, {"locator": seq}, via=deleter),
        "sequence_delete with a delete key",
    )
    if "API_KEY_CREATE" in ctx.spec.operations:
        ctx.refused(
            ctx.act(A.API_KEY_CREATE, {"permissions": "read", "description": "x"}, via=deleter),
            E.PERMISSION_DENIED,
            "api_key_create with a delete key",
        )
    if not ctx.line.permissions.covers(ctx.bits(APIKeyPermissionEnum.Delete), "write"):
        ctx.refused(
            ctx.act(
                A.SEQUENCE_CREATE, {"locator": ctx.name("d"), "user_metadata": {}}, via=deleter
            ),
            E.PERMISSION_DENIED,
            "sequence_create with a key of the delete bit alone",
        )


# -----------------------------------------------------------------------------------------------
# Error policies, end to end: what a conforming client's run leaves on the target


def _engine_run(
    ctx: Context, policy: str, *, fail: bool, update_of: str | None = None
) -> tuple[str, str]:
    """A client session written with the embedded engine: (sequence, session uuid)."""
    from fsm.engine import BatchPolicy, Client
    from fsm.enums import SessionLevelErrorPolicy

    chosen = SessionLevelErrorPolicy[policy]
    client = Client(
        ctx.transport,
        batch_policy=BatchPolicy(background=False, batch_rows=4),
        protocol=ctx.line,
    )
    name = update_of or ctx.name(f"pol{policy.lower()}")
    writer = (
        client.sequence_update(name, on_error=chosen)
        if update_of
        else client.sequence_create(name, {}, on_error=chosen)
    )
    ctx.log(
        f"engine: {'update of' if update_of else 'new sequence'} {name} under {policy}, "
        f"{'raising' if fail else 'clean'}"
    )

    class Stop(Exception):
        """The user's own exception leaving the block (so, outside the library's errors)."""

    try:
        with writer as session:
            topic = session.topic_create(
                f"t{len(ctx.steps)}", schema=DEFAULT, ontology_tag="conformance"
            )
            for i in range(6):
                topic.push_row({"timestamp_ns": i, "x": float(i), "n": i})
            if fail:
                raise Stop
    except Stop:
        pass
    ctx.log(f"engine: session {writer.session_uuid} ended {writer.session_status.name}")
    ctx.learn_session(writer.session_uuid or "", writer.session_locator)
    return name, writer.session_uuid or ""


@case(
    "POL-FINALIZED",
    "A clean client session ends finalized and locked, with every record stored.",
    "mosaicolabs SDK API reference, Enum Module: SessionStatus.Finalized",
)
def _pol_finalized(ctx: Context) -> None:
    seq, ses = _engine_run(ctx, "Report", fail=False)
    info = ctx.sequence_info(seq)
    session = info.session(ctx.listed(ses))
    ctx.check(session is not None and session.locked, f"the session reads {session}")
    ctx.check(len(info.topics) == 1 and info.topics[0].locked, "the topic is not locked")
    rows = ctx.read(info.topics[0].ticket, info.topics[0].locator).table().num_rows
    ctx.check(rows == 6, f"{rows} of 6 records stored")


@case(
    "POL-REPORT",
    "Under Report, a failed session keeps its records, carries an error notification, and is left unlocked.",
    "mosaicolabs SDK API reference, Enum Module: SessionLevelErrorPolicy.Report",
    {"MOSAICOD-REPORT-LOCKS": "left-unlocked"},
)
def _pol_report(ctx: Context) -> None:
    seq, ses = _engine_run(ctx, "Report", fail=True)
    info = ctx.sequence_info(seq)
    session = info.session(ctx.listed(ses))
    ctx.check(
        session is not None and not session.locked,
        f"the reported session is locked: {session}",
        "left-unlocked",
    )
    notes = ctx.ok(ctx.act(A.SEQUENCE_NOTIFICATION_LIST, {"locator": seq}), "notification list")[
        "notifications"
    ]
    ctx.check(
        any(n.get("notification_type") == "error" for n in notes),
        "no error notification on the sequence",
    )
    rows = ctx.read(info.topics[0].ticket, info.topics[0].locator).table().num_rows
    ctx.check(rows == 6, f"{rows} of 6 records kept")


@case(
    "POL-DELETE-WRITER",
    "Under Delete, a failed new sequence is purged whole.",
    "mosaicolabs SDK API reference, Enum Module: SessionLevelErrorPolicy.Delete",
)
def _pol_delete_writer(ctx: Context) -> None:
    seq, _ = _engine_run(ctx, "Delete", fail=True)
    ctx.check(not ctx.exists(seq), "the failed sequence is still there")


@case(
    "POL-DELETE-UPDATER",
    "Under Delete, a failed update removes only its own session.",
    "mosaicolabs SDK API reference, Enum Module: SessionLevelErrorPolicy.Delete",
)
def _pol_delete_updater(ctx: Context) -> None:
    seq, first = _engine_run(ctx, "Report", fail=False)
    _engine_run(ctx, "Delete", fail=True, update_of=seq)
    sessions = [s.uuid for s in ctx.sequence_info(seq).sessions]
    kept = ctx.listed(first)
    ctx.check(sessions == [kept], f"sessions left: {sessions} (expected only {kept})")


# The QUERY cases on stored data live in a module of their own; importing it registers them.
from fsm.conformance import query_cases  # noqa: E402, F401
