"""The catalogue as the protocol's text states it, checked on the model's own API.

Per DoAction: the least permission that may run it (read < write < delete < manage; `none`
needs only a valid key), and each request field with a valid value and a value its type must
refuse. Written from the protocol's description of each action, never read from
`specs/actions.toml`, so a wrong entry there is caught.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fsm.enums import APIKeyPermissionEnum
from fsm.outcome import ErrorKind
from transport.server.auth import Principal
from transport.server.errors import ServerError
from transport.server.model import ServerModel

UUID = "00000000-0000-4000-8000-000000000000"
NO_VALUE = object()

# wire -> (permission, {field: (valid value, a value the field's type refuses, required)})
ACTIONS: dict[str, tuple[str, dict[str, tuple[Any, Any, bool]]]] = {
    "sequence_create": (
        "write",
        {"locator": ("pv", "bad name!", True), "user_metadata": ({}, "x", True)},
    ),
    "session_create": ("write", {"locator": ("pv", "bad name!", True)}),
    "session_finalize": ("write", {"session_uuid": (UUID, "not-a-uuid", True)}),
    "session_delete": ("delete", {"session_uuid": (UUID, "not-a-uuid", True)}),
    "sequence_delete": ("delete", {"locator": ("pv", "bad name!", True)}),
    "sequence_notification_create": (
        "read",
        {
            "locator": ("pv", "bad name!", True),
            "notification_type": ("info", "loud", True),
            "msg": ("m", 5, True),
        },
    ),
    "sequence_notification_list": ("read", {"locator": ("pv", "bad name!", True)}),
    "sequence_notification_purge": ("delete", {"locator": ("pv", "bad name!", True)}),
    "topic_create": (
        "write",
        {
            "session_uuid": (UUID, "not-a-uuid", True),
            "locator": ("pv/t", "pv", True),
            "serialization_format": ("default", "weird", True),
            "ontology_tag": ("imu", 5, True),
            "user_metadata": ({}, "x", True),
        },
    ),
    "topic_delete": ("delete", {"locator": ("pv/t", "pv", True)}),
    "topic_notification_create": (
        "read",
        {
            "locator": ("pv/t", "pv", True),
            "notification_type": ("error", "loud", True),
            "msg": ("m", 5, True),
        },
    ),
    "topic_notification_list": ("read", {"locator": ("pv/t", "pv", True)}),
    "topic_notification_purge": ("delete", {"locator": ("pv/t", "pv", True)}),
    "api_key_create": (
        "manage",
        {
            "permissions": ("read", "root", True),
            "description": ("d", 5, True),
            "expires_at_ns": (4_000_000_000_000_000_000, "soon", False),
        },
    ),
    "api_key_status": ("manage", {"api_key_fingerprint": ("abcd1234", "ABC", True)}),
    "api_key_revoke": ("manage", {"api_key_fingerprint": ("abcd1234", "ABC", True)}),
    "query": (
        "read",
        {"sequence": ({}, "x", False), "topic": ({}, "x", False)},
    ),
    "version": ("none", {}),
}
LEVELS = ("read", "write", "delete", "manage")


def _refusal(model: ServerModel, principal: Principal, wire: str, body: dict[str, Any]) -> Any:
    try:
        model.handle_action(principal, wire, json.dumps(body).encode())
    except ServerError as exc:
        return exc.kind
    return None


def permissions_are_the_protocols(make: Callable[[], ServerModel]) -> None:
    for wire, (needed, fields) in ACTIONS.items():
        body = {name: valid for name, (valid, _bad, _req) in fields.items()}
        for level in LEVELS:
            principal = Principal(APIKeyPermissionEnum(level))
            denied = _refusal(make(), principal, wire, body) is ErrorKind.PERMISSION_DENIED
            allowed = needed == "none" or LEVELS.index(level) >= LEVELS.index(needed)
            assert denied != allowed, f"{wire} with a {level} key: denied={denied}"


def request_fields_are_the_protocols(make: Callable[[], ServerModel]) -> None:
    manage = Principal(APIKeyPermissionEnum.Manage)
    for wire, (_needed, fields) in ACTIONS.items():
        body = {name: valid for name, (valid, _bad, _req) in fields.items()}
        assert _refusal(make(), manage, wire, body) is not ErrorKind.INVALID_ARGUMENT, wire
        for name, (_valid, bad, required) in fields.items():
            wrong = _refusal(make(), manage, wire, {**body, name: bad})
            assert wrong is ErrorKind.INVALID_ARGUMENT, f"{wire}.{name}={bad!r}: {wrong}"
            missing = _refusal(make(), manage, wire, {k: v for k, v in body.items() if k != name})
            assert (missing is ErrorKind.INVALID_ARGUMENT) == required, f"{wire} without {name}"


def _rpc_refusal(call: Callable[[], object]) -> Any:
    try:
        call()
    except ServerError as exc:
        return exc.kind
    return None


def rpc_descriptors_are_the_protocols(make: Callable[[], ServerModel]) -> None:
    """GetFlightInfo needs a valid `resource_locator`; a DoPut descriptor a topic locator and a
    topic UUID; DoPut needs write, GetFlightInfo read."""
    import pyarrow as pa

    schema = pa.schema([("timestamp_ns", pa.int64())])
    manage = Principal(APIKeyPermissionEnum.Manage)

    def info(body: dict[str, Any], who: Principal = manage) -> Any:
        return _rpc_refusal(lambda: make().flight_info(who, "cmd", json.dumps(body).encode()))

    def put(body: dict[str, Any], who: Principal = manage) -> Any:
        command = json.dumps(body).encode()
        return _rpc_refusal(lambda: make().put_open(who, "cmd", command, schema))

    assert info({"resource_locator": "pv"}) is ErrorKind.NOT_FOUND
    assert info({"resource_locator": "bad name!"}) is ErrorKind.INVALID_ARGUMENT
    assert info({}) is ErrorKind.INVALID_ARGUMENT
    good = {"resource_locator": "pv/t", "topic_uuid": UUID}
    assert put(good) is ErrorKind.NOT_FOUND
    for name, bad in (("resource_locator", "pv"), ("topic_uuid", "not-a-uuid")):
        assert put({**good, name: bad}) is ErrorKind.INVALID_ARGUMENT, name
        assert put({k: v for k, v in good.items() if k != name}) is ErrorKind.INVALID_ARGUMENT
    read, write = (Principal(APIKeyPermissionEnum(p)) for p in ("read", "write"))
    assert put(good, read) is ErrorKind.PERMISSION_DENIED
    assert put(good, write) is ErrorKind.NOT_FOUND
    assert info({"resource_locator": "pv"}, read) is ErrorKind.NOT_FOUND


CATALOGUE_CHECKS = (
    permissions_are_the_protocols,
    request_fields_are_the_protocols,
    rpc_descriptors_are_the_protocols,
)


def first_catalogue_failure(make: Callable[[], ServerModel]) -> str | None:
    for check in CATALOGUE_CHECKS:
        try:
            check(make)
        except Exception as exc:  # a wrong answer or a crash: both are caught
            return f"{check.__name__}: {type(exc).__name__}: {exc}"
    return None
