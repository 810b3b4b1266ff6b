"""The embedded protocol engine: sequence, session and topic writers driven by the tables."""

from fsm.engine.actions import APIKey, APIKeyStatus, Notification, NotificationType, ServerVersion
from fsm.engine.client import Client, Machines
from fsm.engine.read import SequenceReader, TopicReader
from fsm.engine.session import SessionWriter
from fsm.engine.stream import BatchPolicy
from fsm.engine.topic import TopicWriter
from fsm.engine.trace import Tracer, TraceReport, TraceViolation, check_trace, read_trace

__all__ = [
    "APIKey",
    "APIKeyStatus",
    "BatchPolicy",
    "Client",
    "Machines",
    "Notification",
    "NotificationType",
    "SequenceReader",
    "ServerVersion",
    "SessionWriter",
    "TopicReader",
    "TopicWriter",
    "TraceReport",
    "TraceViolation",
    "Tracer",
    "check_trace",
    "read_trace",
]
