"""What a server stores: one record per resource, holding the state its table gave it last.

A record's `state` is written by one function only, `ServerState.commit`, with the
destination of the row that decided the request (see `transport/server/state.py`). A record
that was never committed is `absent`, as is every resource the server does not hold.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import attrs
import pyarrow as pa

from fsm.enums import APIKeyPermissionEnum
from transport.server.chunks import ChunkStats

__all__ = [
    "ABSENT",
    "ApiKey",
    "Notification",
    "Record",
    "SequenceRecord",
    "SessionRecord",
    "TopicRecord",
]

ABSENT = "absent"


@attrs.define
class Notification:
    name: str
    notification_type: str
    msg: str
    created_ns: int

    def to_json(self) -> dict[str, Any]:
        stamp = dt.datetime.fromtimestamp(self.created_ns / 1e9, tz=dt.UTC).isoformat()
        return {
            "name": self.name,
            "notification_type": self.notification_type,
            "msg": self.msg,
            "created_datetime": stamp,
        }


@attrs.define
class SequenceRecord:
    name: str
    user_metadata: dict[str, Any]
    created_ns: int
    sessions: list[str] = attrs.field(factory=list)
    notifications: list[Notification] = attrs.field(factory=list)
    state: str = attrs.field(default=ABSENT, init=False)


@attrs.define
class SessionRecord:
    uuid: str
    sequence: str
    created_ns: int
    completed_ns: int | None = None
    topics: list[str] = attrs.field(factory=list)
    locator: str | None = None
    """'<sequence>:<session>', on a line whose sessions have locators."""
    state: str = attrs.field(default=ABSENT, init=False)


@attrs.define
class TopicRecord:
    locator: str
    sequence: str
    session: str
    uuid: str
    serialization_format: str
    ontology_tag: str
    user_metadata: dict[str, Any]
    created_ns: int
    completed_ns: int | None = None
    schema: pa.Schema | None = None
    chunks: list[pa.RecordBatch] = attrs.field(factory=list)
    stats: ChunkStats | None = None
    total_bytes: int = 0
    start_ns: int | None = None
    end_ns: int | None = None
    stream: int | None = None
    notifications: list[Notification] = attrs.field(factory=list)
    state: str = attrs.field(default=ABSENT, init=False)


@attrs.define
class ApiKey:
    fingerprint: str
    payload: str
    permission: APIKeyPermissionEnum
    description: str
    created_at_ns: int
    expires_at_ns: int | None
    bits: frozenset[str] | None = None
    """On a line with granular permissions: the permission bits the key holds."""
    state: str = attrs.field(default=ABSENT, init=False)


Record = SequenceRecord | SessionRecord | TopicRecord | ApiKey
