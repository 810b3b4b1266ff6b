"""Authentication: the token format, fingerprints, the principal a request runs as, and the
check of a request's key and permission."""

from __future__ import annotations

import hashlib
import random
import re
import string
from collections.abc import Mapping

import attrs

from fsm.enums import APIKeyPermissionEnum
from fsm.outcome import ErrorKind
from fsm.spec.lines import PermissionModel
from transport.server.errors import ServerError
from transport.server.records import ApiKey

__all__ = [
    "HEADER",
    "Principal",
    "authenticate",
    "authorize",
    "fingerprint_of",
    "new_token",
    "parse_token",
]

_ALPHABET = string.ascii_lowercase + string.digits
_TOKEN = re.compile(r"msco_([a-z0-9]{32})_([a-z0-9]{8})")
HEADER = "mosaico-api-key-token"


@attrs.frozen
class Principal:
    """Who a request runs as: a key's permission, or full rights when authentication is off."""

    permission: APIKeyPermissionEnum
    fingerprint: str | None = None
    bits: tuple[str, ...] | None = None
    """On a line with granular permissions: the bits the key holds (None: its permission)."""

    @property
    def held(self) -> tuple[str, ...]:
        """The permission names the principal holds."""
        return self.bits if self.bits is not None else (self.permission.value,)


def fingerprint_of(payload: str) -> str:
    """The 8-character fingerprint derived from a token's payload."""
    return hashlib.sha256(payload.encode("ascii")).hexdigest()[:8]


def new_token(rng: random.Random) -> tuple[str, str, str]:
    """(token, payload, fingerprint) of a fresh key: 'msco_<32>_<8>'. The payload mixes
    letters and digits, as clients check."""
    while True:
        payload = "".join(rng.choice(_ALPHABET) for _ in range(32))
        if any(c.isdigit() for c in payload) and any(c.isalpha() for c in payload):
            break
    fingerprint = fingerprint_of(payload)
    return f"msco_{payload}_{fingerprint}", payload, fingerprint


def parse_token(token: str) -> tuple[str, str] | None:
    """(payload, fingerprint) of a well-formed token, or None."""
    match = _TOKEN.fullmatch(token)
    if match is None:
        return None
    return match.group(1), match.group(2)


def authenticate(
    keys: Mapping[str, ApiKey],
    token: str | None,
    now: int,
    *,
    enforce_expiry: bool,
    missing_key: ErrorKind = ErrorKind.UNAUTHENTICATED,
) -> Principal:
    """The principal of a request carrying `token` (the mosaico-api-key-token header).
    A request without one is refused with `missing_key`."""
    if not token:
        if missing_key is ErrorKind.PERMISSION_DENIED:
            raise ServerError(missing_key, "missing api key token in request")
        raise ServerError(missing_key, "missing API key in request header")
    parsed = parse_token(token)
    if parsed is None:
        raise ServerError(ErrorKind.PERMISSION_DENIED, "unauthorized: malformed API key")
    payload, fingerprint = parsed
    key = keys.get(fingerprint)
    if key is None:
        raise ServerError(ErrorKind.PERMISSION_DENIED, "unauthorized: unknown API key")
    if key.payload != payload or fingerprint_of(payload) != fingerprint:
        raise ServerError(ErrorKind.PERMISSION_DENIED, "unauthorized: API key does not match")
    if enforce_expiry and key.expires_at_ns is not None and key.expires_at_ns <= now:
        raise ServerError(ErrorKind.PERMISSION_DENIED, "unauthorized: API key expired")
    bits = tuple(sorted(key.bits)) if key.bits is not None else None
    return Principal(key.permission, fingerprint, bits)


def authorize(
    permissions: Mapping[str, APIKeyPermissionEnum | None],
    principal: Principal,
    operation: str,
    model: PermissionModel | None = None,
) -> None:
    """Refuse with PERMISSION_DENIED when `principal` is below the operation's permission,
    in the permission `model` of the server's protocol line (default: ranked levels)."""
    needed = permissions[operation]
    if needed is None:
        return
    allowed = (
        principal.permission.covers(needed)
        if model is None
        else model.covers(principal.held, needed.value)
    )
    if not allowed:
        raise ServerError(
            ErrorKind.PERMISSION_DENIED,
            f"unauthorized: {operation} needs the {needed.value} permission, "
            f"the key has {'|'.join(principal.held)}",
        )
