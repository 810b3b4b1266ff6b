"""API key issuance and the api_key actions (create, status, revoke).

A key is a resource of `specs/resources.toml` like any other: it is issued, described and
revoked through the apply path of `transport/server/state.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fsm.enums import APIKeyPermissionEnum
from fsm.spec.model import Operation
from transport.server.auth import new_token
from transport.server.records import ApiKey
from transport.server.state import Handler, ServerState

__all__ = ["KEY_HANDLERS", "issue_key"]


def issue_key(
    state: ServerState,
    permission: APIKeyPermissionEnum,
    description: str,
    expires_at_ns: int | None,
    *,
    event: str = "API_KEY_CREATE",
    what: str = "api_key_create",
    bits: tuple[str, ...] | None = None,
) -> str:
    """A fresh key's token; the key is stored under its fingerprint."""
    token, payload, fingerprint = new_token(state.token_rng)
    while fingerprint in state.keys:
        token, payload, fingerprint = new_token(state.token_rng)
    key = ApiKey(
        fingerprint,
        payload,
        permission,
        description,
        state.now(),
        expires_at_ns,
        frozenset(bits) if bits is not None else None,
    )
    if "api_key" not in state.resources:
        # A line whose keys are made on the server's command line, outside the protocol:
        # no table decides it, the key is simply stored.
        key.state = "active"
        state.keys[fingerprint] = key
        return token
    state.commit(state.step("api_key", fingerprint, event, what), key)
    return token


def api_key_create(state: ServerState, op: Operation, req: dict[str, Any]) -> dict[str, str]:
    permission = APIKeyPermissionEnum(req["permissions"])
    token = issue_key(
        state,
        permission,
        req["description"],
        req.get("expires_at_ns"),
        event=op.name,
        what=op.wire,
    )
    return {"api_key_token": token}


def api_key_status(state: ServerState, op: Operation, req: dict[str, Any]) -> dict[str, Any]:
    step = state.step("api_key", req["api_key_fingerprint"], op.name, op.wire)
    state.commit(step)
    key = step.record
    assert isinstance(key, ApiKey)  # every accepting row needs one
    return {
        "api_key_fingerprint": key.fingerprint,
        "description": key.description,
        "created_at_ns": key.created_at_ns,
        "expires_at_ns": key.expires_at_ns,
    }


def api_key_revoke(state: ServerState, op: Operation, req: dict[str, Any]) -> None:
    state.commit(state.step("api_key", req["api_key_fingerprint"], op.name, op.wire))


KEY_HANDLERS: Mapping[str, Handler] = {
    "API_KEY_CREATE": api_key_create,
    "API_KEY_STATUS": api_key_status,
    "API_KEY_REVOKE": api_key_revoke,
}
