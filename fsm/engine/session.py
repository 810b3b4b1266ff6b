"""Session writers: a new sequence (writer) or a new session on an existing one (updater),
driven by the session table. Every status change goes through the machine; every step runs
through the transport; every failed or lost reply is routed by the table."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import attrs
import pyarrow as pa

from fsm.engine.base import Lifecycle
from fsm.engine.schema import check_format_schema
from fsm.engine.stream import BatchPolicy, StreamWriter
from fsm.engine.topic import TopicWriter
from fsm.engine.validation import check_metadata, check_topic_name, topic_locator
from fsm.enums import (
    FlightAction,
    SerializationFormat,
    SessionLevelErrorPolicy,
    SessionStatus,
    TopicLevelErrorPolicy,
)
from fsm.errors import ArgumentError, MosaicoProtocolError
from fsm.outcome import ErrorKind, Outcome, ProbeVerdict
from fsm.spec.model import Step, Transition
from fsm.transport import Descriptor, SequenceInfo, TopicStream

if TYPE_CHECKING:
    from fsm.engine.client import Client

__all__ = ["SessionWriter"]

_instances = itertools.count(1)


@attrs.define
class _NewTopic:
    """The topic a `topic_create` trigger is registering."""

    name: str
    locator: str
    metadata: dict[str, Any]
    schema: pa.Schema
    serialization_format: SerializationFormat
    ontology_tag: str
    uuid: str | None = None
    stream: TopicStream | None = None


class _SessionSteps:
    """The executor of a session writer's steps and probes."""

    def __init__(
        self, session: SessionWriter, new_topic: _NewTopic | None = None, message: str = ""
    ) -> None:
        self.session = session
        self.new_topic = new_topic
        self.message = message

    def perform(self, step: Step, row: Transition) -> Outcome:
        s = self.session
        if step.topics is not None:
            return s._close_topics(step.topics, self.message)
        name = step.do
        if name == "SEQUENCE_CREATE":
            return s.transport.action(
                FlightAction.SEQUENCE_CREATE, {"locator": s.sequence, "user_metadata": s.metadata}
            )
        if name == "GET_FLIGHT_INFO":
            outcome = s.transport.flight_info(Descriptor.for_resource(s.sequence))
            if outcome.is_ok and isinstance(outcome.value, SequenceInfo):
                s._known_sessions = {x.uuid for x in outcome.value.sessions}
            return outcome
        if name == "SESSION_CREATE":
            outcome = s.transport.action(FlightAction.SESSION_CREATE, {"locator": s.sequence})
            if outcome.is_ok:
                s._uuid = str((outcome.value or {}).get("uuid", ""))
                if not s._uuid:
                    return Outcome.failed(ErrorKind.INTERNAL, "session_create answered no uuid")
            return outcome
        if name == "SESSION_FINALIZE":
            return s.transport.action(FlightAction.SESSION_FINALIZE, {"session_uuid": s._uuid})
        if name == "SESSION_DELETE":
            return s.transport.action(FlightAction.SESSION_DELETE, {"session_uuid": s._uuid})
        if name == "SEQUENCE_DELETE":
            return s.transport.action(FlightAction.SEQUENCE_DELETE, {"locator": s.sequence})
        if name == "SEQUENCE_NOTIFICATION_CREATE":
            return s.transport.action(
                FlightAction.SEQUENCE_NOTIFICATION_CREATE,
                {"locator": s.sequence, "notification_type": "error", "msg": self.message},
            )
        topic = self.new_topic
        if topic is None:
            raise MosaicoProtocolError(f"session step {name} needs a topic being created")
        if name == "TOPIC_CREATE":
            outcome = s.transport.action(
                FlightAction.TOPIC_CREATE,
                {
                    "session_uuid": s._uuid,
                    "locator": topic.locator,
                    "serialization_format": topic.serialization_format.value,
                    "ontology_tag": topic.ontology_tag,
                    "user_metadata": topic.metadata,
                },
            )
            if outcome.is_ok:
                topic.uuid = str((outcome.value or {}).get("uuid", ""))
            return outcome
        if name == "STREAM_OPEN":
            assert topic.uuid is not None
            outcome = s.transport.open_stream(
                Descriptor.for_topic(topic.locator, topic.uuid), topic.schema
            )
            if outcome.is_ok:
                topic.stream = outcome.value
            return outcome
        if name == "TOPIC_DELETE":
            return s.transport.action(FlightAction.TOPIC_DELETE, {"locator": topic.locator})
        raise MosaicoProtocolError(f"session writer cannot run step {name}")

    def probe(self, probe: str, step: Step, row: Transition, outcome: Outcome) -> ProbeVerdict:
        s = self.session
        if probe in ("sequence_notified",):
            listed = s.transport.action(
                FlightAction.SEQUENCE_NOTIFICATION_LIST, {"locator": s.sequence}
            )
            if not listed.is_ok:
                return ProbeVerdict.UNRESOLVED
            messages = [n.get("msg") for n in (listed.value or {}).get("notifications", [])]
            return ProbeVerdict.APPLIED if self.message in messages else ProbeVerdict.NOT_APPLIED
        if probe in ("topic_exists", "topic_absent"):
            assert self.new_topic is not None
            info = s.transport.flight_info(Descriptor.for_resource(self.new_topic.locator))
            return _presence(info, present_means_applied=probe == "topic_exists")
        info = s.transport.flight_info(Descriptor.for_resource(s.sequence))
        if probe in ("sequence_exists", "sequence_absent"):
            return _presence(info, present_means_applied=probe == "sequence_exists")
        if not info.is_ok or not isinstance(info.value, SequenceInfo):
            if probe == "session_absent" and info.kind is ErrorKind.NOT_FOUND:
                return ProbeVerdict.APPLIED
            return ProbeVerdict.UNRESOLVED
        sequence = info.value
        if probe == "session_adoptable":
            fresh = [
                x
                for x in sequence.sessions
                if x.uuid not in s._known_sessions
                and not x.locked
                and not x.topics
                and x.completed_at_ns is None
            ]
            if len(fresh) == 1:
                s._uuid = fresh[0].uuid
                return ProbeVerdict.APPLIED
            return ProbeVerdict.NOT_APPLIED if not fresh else ProbeVerdict.UNRESOLVED
        current = sequence.session(s._uuid or "")
        if probe == "session_finalized":
            if current is None:
                return ProbeVerdict.UNRESOLVED
            return (
                ProbeVerdict.APPLIED
                if current.completed_at_ns is not None
                else ProbeVerdict.NOT_APPLIED
            )
        if probe == "session_absent":
            return ProbeVerdict.APPLIED if current is None else ProbeVerdict.NOT_APPLIED
        raise MosaicoProtocolError(f"session writer has no probe {probe}")


def _presence(info: Outcome, *, present_means_applied: bool) -> ProbeVerdict:
    if info.is_ok:
        present = True
    elif info.kind is ErrorKind.NOT_FOUND:
        present = False
    else:
        return ProbeVerdict.UNRESOLVED
    return ProbeVerdict.APPLIED if present == present_means_applied else ProbeVerdict.NOT_APPLIED


class SessionWriter(Lifecycle):
    """One upload session. Use it as a context manager: entering registers the session
    (and, for a writer, the sequence); leaving finalizes it, or applies the
    SessionLevelErrorPolicy when an exception leaves the block."""

    def __init__(
        self,
        client: Client,
        sequence: str,
        metadata: dict[str, Any],
        role: str,
        policy: SessionLevelErrorPolicy,
        batch_policy: BatchPolicy,
    ) -> None:
        super().__init__(
            client.machines.session,
            {"role": role, "policy": policy.name},
            f"{sequence}#{next(_instances)}",
            client.tracer,
        )
        self.client = client
        self.transport = client.transport
        self.sequence = sequence
        self.metadata = metadata
        self.role = role
        self.policy = policy
        self.batch_policy = batch_policy
        self._uuid: str | None = None
        self._known_sessions: set[str] = set()
        self._topics: dict[str, TopicWriter] = {}

    @property
    def session_status(self) -> SessionStatus:
        return SessionStatus[self.state]

    status = session_status

    @property
    def session_uuid(self) -> str | None:
        return self._uuid

    @property
    def topics(self) -> Mapping[str, TopicWriter]:
        """The topic writers of this session, by name."""
        return dict(self._topics)

    def topic_writer(self, name: str) -> TopicWriter | None:
        return self._topics.get(check_topic_name(name))

    # -------------------------------------------------------------------------------------------

    def __enter__(self) -> SessionWriter:
        fired = self.fire("enter", _SessionSteps(self))
        if fired.mode == "cause":
            raise fired.cause()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        if exc is None:
            fired = self.fire(
                "exit_ok", _SessionSteps(self, message="a topic of the session failed to close")
            )
            if fired.mode == "cause":
                raise fired.cause()
            return False
        message = (
            f"session {self._uuid} of sequence {self.sequence!r} ended with "
            f"{type(exc).__name__}: {exc}"
        )
        fired = self.fire("exit_error", _SessionSteps(self, message=message))
        fired.annotate(exc)
        return False

    def topic_create(
        self,
        name: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        schema: pa.Schema,
        serialization_format: SerializationFormat = SerializationFormat.Default,
        ontology_tag: str,
        on_error: TopicLevelErrorPolicy = TopicLevelErrorPolicy.Raise,
        batch_policy: BatchPolicy | None = None,
    ) -> TopicWriter:
        """Register a topic and open its stream. Bad arguments raise ArgumentError before any
        I/O; a refusal by the server raises ActionFailed (the session stays open)."""
        path = check_topic_name(name)
        meta = check_metadata(metadata if metadata is not None else {}, "topic")
        if not isinstance(serialization_format, SerializationFormat):
            raise ArgumentError(
                f"serialization_format must be a SerializationFormat, got {serialization_format!r}"
            )
        if not isinstance(on_error, TopicLevelErrorPolicy):
            raise ArgumentError(f"on_error must be a TopicLevelErrorPolicy, got {on_error!r}")
        if not isinstance(ontology_tag, str) or not ontology_tag:
            raise ArgumentError("ontology_tag must be a non-empty string")
        check_format_schema(schema, serialization_format)
        if path in self._topics:
            raise ArgumentError(f"topic {path!r} already exists in this session")
        self._machine.lookup(self._holder, "topic_create", self._context)
        new = _NewTopic(
            path,
            topic_locator(self.sequence, path),
            meta,
            schema,
            serialization_format,
            ontology_tag,
        )
        fired = self.fire("topic_create", _SessionSteps(self, new_topic=new))
        if fired.mode == "cause":
            if new.stream is not None:
                new.stream.abort()
            raise fired.cause()
        assert new.stream is not None
        writer = StreamWriter(new.stream, schema, batch_policy or self.batch_policy)
        topic = TopicWriter(
            self,
            path,
            new.locator,
            schema,
            serialization_format,
            ontology_tag,
            on_error,
            writer,
            self.client.machines.topic_writer,
            self.client.tracer,
        )
        self._topics[path] = topic
        return topic

    def _close_topics(self, trigger: str, message: str) -> Outcome:
        """The `topics` step: fire `trigger` on every open topic writer, in parallel."""
        open_topics = [t for t in self._topics.values() if t.is_active]
        if not open_topics:
            return Outcome.ok()
        if len(open_topics) == 1 or not self.batch_policy.background:
            # One topic, or a deterministic run: the streams end one after the other.
            errors = [topic.close(trigger, message) for topic in open_topics]
        else:
            errors = list(self.client.pool().map(lambda t: t.close(trigger, message), open_topics))
        failed = [(t, e) for t, e in zip(open_topics, errors, strict=True) if e is not None]
        if not failed:
            return Outcome.ok()
        first = failed[0][1]
        kind = getattr(first, "kind", ErrorKind.INTERNAL)
        detail = "; ".join(f"{t.locator}: {e}" for t, e in failed)
        return Outcome.failed(kind, f"{len(failed)} topic(s) failed to close: {detail}")
