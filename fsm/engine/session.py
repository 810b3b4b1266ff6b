"""Session writers: a new sequence (writer) or a new session on an existing one (updater),
driven by the session table. Every status change goes through the machine; every step runs
through the transport; every failed or lost reply is routed by the table."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import attrs
import pyarrow as pa

from fsm.engine.base import Fired, Lifecycle, Notices, ask_server, created_uuid, outcome_error
from fsm.engine.executors import Registry
from fsm.engine.schema import check_format_schema
from fsm.engine.stream import BatchPolicy, StreamWriter
from fsm.engine.topic import TopicWriter
from fsm.engine.validation import check_metadata, check_topic_name, topic_locator
from fsm.engine.wire import Created, created_session
from fsm.enums import (
    FlightAction,
    SerializationFormat,
    SessionLevelErrorPolicy,
    SessionStatus,
    TopicLevelErrorPolicy,
)
from fsm.errors import ActionFailed, ArgumentError, ProtocolError
from fsm.outcome import ErrorKind, Outcome, ProbeVerdict
from fsm.spec.model import Step, Transition
from fsm.transport import Descriptor, SequenceInfo, SessionInfo, TopicStream

if TYPE_CHECKING:
    from fsm.engine.client import Client

__all__ = ["SESSION_STEPS", "SessionWriter"]

_instances = itertools.count(1)


@attrs.frozen
class _NewTopic:
    """The topic a `topic_create` trigger is registering."""

    name: str
    locator: str
    metadata: dict[str, Any]
    schema: pa.Schema
    serialization_format: SerializationFormat
    ontology_tag: str


class _SessionSteps:
    """The executor of one trigger of a session writer: its steps and probes run through
    `SESSION_STEPS`, and what they produced is kept by operation (`produced`: the session's
    uuid under SESSION_CREATE, the new topic's uuid and stream under TOPIC_CREATE and
    STREAM_OPEN), for the later steps of the trigger and for the writer to take. `message`
    is the text of the sequence notification; when none is given, it is built from the
    failure that routed to the notification."""

    def __init__(
        self, session: SessionWriter, new_topic: _NewTopic | None = None, message: str = ""
    ) -> None:
        self.session = session
        self.new_topic = new_topic
        self.message = message
        self.failure = ""  # the last failed or lost step, as the caller would see it
        self.produced: dict[str, Any] = {}

    def perform(self, step: Step, row: Transition) -> Outcome:
        outcome = SESSION_STEPS.perform(self, step)
        if not outcome.is_ok:
            self.failure = str(outcome_error(step.name, outcome))
        elif step.do is not None and outcome.value is not None:
            self.produced[step.do] = outcome.value
        return outcome

    def probe(self, probe: str, step: Step, row: Transition, outcome: Outcome) -> ProbeVerdict:
        verdict = SESSION_STEPS.probe(self, probe)
        self.failure = str(outcome_error(step.name, outcome, verdict=verdict))
        return verdict

    @property
    def created(self) -> Created | None:
        """The session: created (or adopted) by this trigger, or known before it."""
        created = self.produced.get("SESSION_CREATE")
        return created if isinstance(created, Created) else self.session._created

    @property
    def session_uuid(self) -> str | None:
        created = self.created
        return None if created is None else created.uuid

    @property
    def marker(self) -> str:
        """The text every notification of this session carries, and its probe looks for."""
        return f"session {self.session_uuid}"

    def topic(self) -> _NewTopic:
        if self.new_topic is None:
            raise ProtocolError("this session step needs a topic being created", machine="session")
        return self.new_topic

    def adopt(self, info: object) -> bool | None:
        """session_adoptable: exactly one new, empty, open session on the sequence (one the
        sequence's info read by this trigger did not list), which this trigger then takes as
        the one it created. A session listed without its uuid (by locator alone, as FlightInfo
        lists them from line 0.5) cannot be taken: the writer would not know what to
        finalize, so the verdict is unresolved."""
        if not isinstance(info, SequenceInfo):
            return None
        before = self.produced.get("GET_FLIGHT_INFO")
        known = {x.uuid for x in before.sessions} if isinstance(before, SequenceInfo) else set()
        fresh = [
            x
            for x in info.sessions
            if x.uuid not in known and not x.locked and not x.topics and x.completed_at_ns is None
        ]
        if len(fresh) == 1 and fresh[0].uuid != fresh[0].locator:
            self.produced["SESSION_CREATE"] = Created(fresh[0].uuid, fresh[0].locator)
            return True
        return False if not fresh else None

    def _listed(self, info: SequenceInfo) -> SessionInfo | None:
        """This trigger's session in the sequence's info: by its locator where it has one
        (from line 0.5 a FlightInfo names sessions by locator alone), else by its uuid."""
        created = self.created
        if created is None:
            return None
        if created.locator is not None:
            return next((s for s in info.sessions if s.locator == created.locator), None)
        return info.session(created.uuid)

    def finalized(self, info: object) -> bool | None:
        current = self._listed(info) if isinstance(info, SequenceInfo) else None
        return None if current is None else current.completed_at_ns is not None

    def absent(self, info: object) -> bool | None:
        if info is None:  # the sequence is gone, and its sessions with it
            return True
        if not isinstance(info, SequenceInfo):
            return None
        return self._listed(info) is None


def _act(
    action: FlightAction, body: Callable[[_SessionSteps], dict[str, Any]]
) -> Callable[[_SessionSteps], Outcome]:
    """The handler that sends `action` with the body built from the trigger's executor."""
    return lambda run: run.session.transport.action(action, body(run))


def _sequence_body(run: _SessionSteps) -> dict[str, Any]:
    return {"locator": run.session.sequence, "user_metadata": run.session.metadata}


def _locator_body(run: _SessionSteps) -> dict[str, Any]:
    return {"locator": run.session.sequence}


def _notified(run: _SessionSteps) -> ProbeVerdict:
    return run.session._notices.probe(run.marker)


def _sequence_info(run: _SessionSteps) -> Outcome:
    return run.session.transport.flight_info(Descriptor.for_resource(run.session.sequence))


def _session_create(run: _SessionSteps) -> Outcome:
    sent = run.session.transport.action(
        FlightAction.SESSION_CREATE, {"locator": run.session.sequence}
    )
    return created_session(sent, run.session.client.wire.session_create_answer)


def _session_delete(run: _SessionSteps) -> Outcome:
    """SESSION_DELETE with the body the line's shape holds (the session's uuid, or its
    locator); a session whose locator the writer never learned cannot be named."""
    created = run.created
    body = None if created is None else run.session.client.wire.session_delete_body(created)
    if body is None:
        return Outcome.failed(
            ErrorKind.INVALID_ARGUMENT,
            f"the session of {run.session.sequence!r} cannot be named: its "
            f"{'uuid' if created is None else 'locator'} was never answered",
        )
    return run.session.transport.action(FlightAction.SESSION_DELETE, body)


def _notify(run: _SessionSteps) -> Outcome:
    s = run.session
    return s._notices.create(run.message or s._failure_message(run.failure), run.marker)


def _topic_create(run: _SessionSteps) -> Outcome:
    topic = run.topic()
    sent = run.session.transport.action(
        FlightAction.TOPIC_CREATE,
        {
            "session_uuid": run.session_uuid,
            "locator": topic.locator,
            "serialization_format": topic.serialization_format.value,
            "ontology_tag": topic.ontology_tag,
            "user_metadata": topic.metadata,
        },
    )
    return created_uuid(sent, "TOPIC_CREATE")


def _stream_open(run: _SessionSteps) -> Outcome:
    topic = run.topic()
    uuid = run.produced.get("TOPIC_CREATE")
    if not isinstance(uuid, str):
        raise ProtocolError(
            "STREAM_OPEN runs before TOPIC_CREATE answered a uuid", operation="STREAM_OPEN"
        )
    return run.session.transport.open_stream(
        Descriptor.for_topic(topic.locator, uuid), topic.schema
    )


def _asks(
    locator: Callable[[_SessionSteps], str],
    took_effect: Callable[[_SessionSteps, Any], bool | None],
) -> Callable[[_SessionSteps], ProbeVerdict]:
    """A probe that reads `locator`'s info on the server and asks `took_effect` about it."""
    return lambda run: ask_server(
        run.session.transport, locator(run), lambda info: took_effect(run, info)
    )


def _sequence(run: _SessionSteps) -> str:
    return run.session.sequence


def _new_topic(run: _SessionSteps) -> str:
    return run.topic().locator


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
        self._created: Created | None = None
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
        return None if self._created is None else self._created.uuid

    @property
    def session_locator(self) -> str | None:
        """'<sequence>:<session>', on a protocol line whose sessions have locators."""
        return None if self._created is None else self._created.locator

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
        return f"session {self.session_uuid}"

    def _failure_message(self, failure: str) -> str:
        return f"{self._marker} of sequence {self.sequence!r} could not be finalized: {failure}"

    def _run(self, trigger: str, steps: _SessionSteps, *, raise_cause: bool = True) -> Fired:
        """Fire `trigger` with `steps` (raising the failure that routed, unless
        `raise_cause` is False), then take the session's uuid from what the steps produced."""
        try:
            return self.fire_or_raise(trigger, steps) if raise_cause else self.fire(trigger, steps)
        finally:
            created = steps.produced.get("SESSION_CREATE")
            if isinstance(created, Created):
                self._created = created

    # -------------------------------------------------------------------------------------------

    def __enter__(self) -> SessionWriter:
        self._run("enter", _SessionSteps(self))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        if exc is None:
            self._run("exit_ok", _SessionSteps(self))
            return False
        message = (
            f"{self._marker} of sequence {self.sequence!r} ended with {type(exc).__name__}: {exc}"
        )
        fired = self._run("exit_error", _SessionSteps(self, message=message), raise_cause=False)
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
        steps = _SessionSteps(self, new_topic=new)
        try:
            self._run("topic_create", steps)
        except ActionFailed:
            opened = steps.produced.get("STREAM_OPEN")
            if opened is not None:
                opened.abort()
            raise
        stream: TopicStream | None = steps.produced.get("STREAM_OPEN")
        if stream is None:
            raise ProtocolError(
                f"topic {path!r} was created without an open stream", trigger="topic_create"
            )
        writer = StreamWriter(stream, schema, batch_policy or self.batch_policy)
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


SESSION_STEPS: Registry[_SessionSteps] = Registry(
    "session writer",
    operations={
        "SEQUENCE_CREATE": _act(FlightAction.SEQUENCE_CREATE, _sequence_body),
        "GET_FLIGHT_INFO": _sequence_info,
        "SESSION_CREATE": _session_create,
        "SESSION_FINALIZE": _act(
            FlightAction.SESSION_FINALIZE, lambda run: {"session_uuid": run.session_uuid}
        ),
        "SESSION_DELETE": _session_delete,
        "SEQUENCE_DELETE": _act(FlightAction.SEQUENCE_DELETE, _locator_body),
        "SEQUENCE_NOTIFICATION_CREATE": _notify,
        "TOPIC_CREATE": _topic_create,
        "STREAM_OPEN": _stream_open,
        "TOPIC_DELETE": _act(
            FlightAction.TOPIC_DELETE, lambda run: {"locator": run.topic().locator}
        ),
    },
    probes={
        "sequence_notified": _notified,
        "topic_exists": _asks(_new_topic, lambda run, info: info is not None),
        "topic_absent": _asks(_new_topic, lambda run, info: info is None),
        "sequence_exists": _asks(_sequence, lambda run, info: info is not None),
        "sequence_absent": _asks(_sequence, lambda run, info: info is None),
        "session_adoptable": _asks(_sequence, _SessionSteps.adopt),
        "session_finalized": _asks(_sequence, _SessionSteps.finalized),
        "session_absent": _asks(_sequence, _SessionSteps.absent),
    },
    fan_out=lambda run, trigger: run.session._close_topics(trigger, run.message),
)
