"""mosaico-fsm: the Mosaico ingestion protocol as transition tables.

`import fsm` gives the protocol's enums, the spec loaded from `specs/` (`fsm.load_spec()`),
and the machines built from its tables (`fsm.session_machine()`, `fsm.topic_writer_machine()`).
"""

from __future__ import annotations

from functools import cache

from fsm.enums import (
    APIKeyPermissionEnum,
    FlightAction,
    OnErrorPolicy,
    SequenceStatus,
    SerializationFormat,
    SessionLevelErrorPolicy,
    SessionStatus,
    TopicLevelErrorPolicy,
    TopicWriterStatus,
)
from fsm.errors import (
    ActionFailed,
    ArgumentError,
    InvalidTrigger,
    MosaicoProtocolError,
    OutcomeUnknown,
    SpecError,
)
from fsm.machines import ProtocolMachine, StateHolder, Walk, walk
from fsm.outcome import ErrorKind, Outcome, OutcomeStatus, ProbeVerdict
from fsm.spec import Spec, load_spec

__all__ = [
    "APIKeyPermissionEnum",
    "ActionFailed",
    "ArgumentError",
    "ErrorKind",
    "FlightAction",
    "InvalidTrigger",
    "MosaicoProtocolError",
    "OnErrorPolicy",
    "Outcome",
    "OutcomeStatus",
    "OutcomeUnknown",
    "ProbeVerdict",
    "ProtocolMachine",
    "SequenceStatus",
    "SerializationFormat",
    "SessionLevelErrorPolicy",
    "SessionStatus",
    "Spec",
    "SpecError",
    "StateHolder",
    "TopicLevelErrorPolicy",
    "TopicWriterStatus",
    "Walk",
    "load_spec",
    "session_machine",
    "topic_writer_machine",
    "walk",
]

__version__ = "0.1.0"


@cache
def session_machine() -> ProtocolMachine:
    """The shared machine of the session table."""
    return ProtocolMachine(load_spec().session)


@cache
def topic_writer_machine() -> ProtocolMachine:
    """The shared machine of the topic-writer table."""
    return ProtocolMachine(load_spec().topic_writer)
