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

from fsm.engine.base import Lifecycle, Notices, ask_server, created_uuid, outcome_error
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
from fsm.errors import ActionFailed, ArgumentError, MosaicoProtocolError
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
    """The executor of a session writer's steps and probes. `message` is the text of the
    sequence notification; when none is given, it is built from the failure that routed to
    the notification."""

    def __init__(
        self, session: SessionWriter, new_topic: _NewTopic | None = None, message: str = ""
    ) -> None:
        self.session = session
        self.new_topic = new_topic
        self.message = message
        self.failure = ""  # the last failed or lost step, as the caller would see it

    def perform(self, step: Step, row: Transition) -> Outcome:
        outcome = self._perform(step)
        if not outcome.is_ok:
            self.failure = str(outcome_error(step.name, outcome))
        return outcome

    def _perform(self, step: Step) -> Outcome:
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
            outcome, uuid = created_uuid(
                s.transport.action(FlightAction.SESSION_CREATE, {"locator": s.sequence}), name
            )
            s._uuid = uuid or None
            return outcome
        if name == "SESSION_FINALIZE":
            return s.transport.action(FlightAction.SESSION_FINALIZE, {"session_uuid": s._uuid})
        if name == "SESSION_DELETE":
            return s.transport.action(FlightAction.SESSION_DELETE, {"session_uuid": s._uuid})
        if name == "SEQUENCE_DELETE":
            return s.transport.action(FlightAction.SEQUENCE_DELETE, {"locator": s.sequence})
        if name == "SEQUENCE_NOTIFICATION_CREATE":
            message = self.message or s._failure_message(self.failure)
            return s._notices.create(message, s._marker)
        topic = self.new_topic
        if topic is None:
            raise MosaicoProtocolError(f"session step {name} needs a topic being created")
        if name == "TOPIC_CREATE":
            outcome, uuid = created_uuid(
                s.transport.action(
                    FlightAction.TOPIC_CREATE,
                    {
                        "session_uuid": s._uuid,
                        "locator": topic.locator,
                        "serialization_format": topic.serialization_format.value,
                        "ontology_tag": topic.ontology_tag,
                        "user_metadata": topic.metadata,
                    },
                ),
                name,
            )
            topic.uuid = uuid or None
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
        verdict = self._probe(probe)
        self.failure = str(outcome_error(step.name, outcome, verdict=verdict))
        return verdict

    def _probe(self, probe: str) -> ProbeVerdict:
        s = self.session
        if probe == "sequence_notified":
            return s._notices.probe(s._marker)
        if probe in ("topic_exists", "topic_absent"):
            assert self.new_topic is not None
            exists = probe == "topic_exists"
            return ask_server(
                s.transport, self.new_topic.locator, lambda info: (info is not None) == exists
            )
        if probe in ("sequence_exists", "sequence_absent"):
            exists = probe == "sequence_exists"
            return ask_server(s.transport, s.sequence, lambda info: (info is not None) == exists)
        if probe == "session_adoptable":
            return ask_server(s.transport, s.sequence, s._adopt)
        if probe == "session_finalized":
            return ask_server(s.transport, s.sequence, s._finalized)
        if probe == "session_absent":
            return ask_server(s.transport, s.sequence, s._absent)
        raise MosaicoProtocolError(f"session writer has no probe {probe}")


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
        self.batch_policy = batch_policy
        self._uuid: str | None = None
        self._known_sessions: set[str] = set()
        self._topics: dict[str, TopicWriter] = {}
        self._notices = Notices(self.transport, "sequence", sequence)

    @property
    def role(self) -> str:
        """'writer' (a new sequence) or 'updater' (a new session on an existing one)."""
        return self._context["role"]

    @property
    def policy(self) -> SessionLevelErrorPolicy:
        return SessionLevelErrorPolicy[self._context["policy"]]

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
    # What the session's notifications say, and what its probes read on the server

    @property
    def _marker(self) -> str:
        """The text every notification of this session carries, and its probe looks for."""
        return f"session {self._uuid}"

    def _failure_message(self, failure: str) -> str:
        return f"{self._marker} of sequence {self.sequence!r} could not be finalized: {failure}"

    def _adopt(self, info: object) -> bool | None:
        """session_adoptable: exactly one new, empty, open session on the sequence, which
        this writer then takes as its own."""
        if not isinstance(info, SequenceInfo):
            return None
        fresh = [
            x
            for x in info.sessions
            if x.uuid not in self._known_sessions
            and not x.locked
            and not x.topics
            and x.completed_at_ns is None
        ]
        if len(fresh) == 1:
            self._uuid = fresh[0].uuid
            return True
        return False if not fresh else None

    def _finalized(self, info: object) -> bool | None:
        current = info.session(self._uuid or "") if isinstance(info, SequenceInfo) else None
        return None if current is None else current.completed_at_ns is not None

    def _absent(self, info: object) -> bool | None:
        if info is None:  # the sequence is gone, and its sessions with it
            return True
        if not isinstance(info, SequenceInfo):
            return None
        return info.session(self._uuid or "") is None

    # -------------------------------------------------------------------------------------------

    def __enter__(self) -> SessionWriter:
        self.fire_or_raise("enter", _SessionSteps(self))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        if exc is None:
            self.fire_or_raise("exit_ok", _SessionSteps(self))
            return False
        message = (
            f"{self._marker} of sequence {self.sequence!r} ended with {type(exc).__name__}: {exc}"
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
        new = _NewTopic(
            path,
            topic_locator(self.sequence, path),
            meta,
            schema,
            serialization_format,
            ontology_tag,
        )
        try:
            self.fire_or_raise("topic_create", _SessionSteps(self, new_topic=new))
        except ActionFailed:
            if new.stream is not None:
                new.stream.abort()
            raise
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
        """The `topics` step: fire `trigger` on every topic writer not yet ended, in parallel
        (a topic whose stream already failed is ended too: that reports its failure)."""
        open_topics = [t for t in self._topics.values() if not t.finished]
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
