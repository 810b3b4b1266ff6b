"""API keys: token format, fingerprints and the principal a request runs as."""

from __future__ import annotations

import hashlib
import random
import re
import string

import attrs

from fsm.enums import APIKeyPermissionEnum

__all__ = ["ApiKey", "Principal", "fingerprint_of", "new_token", "parse_token"]

_ALPHABET = string.ascii_lowercase + string.digits
_TOKEN = re.compile(r"msco_([a-z0-9]{32})_([a-z0-9]{8})")
HEADER = "mosaico-api-key-token"


@attrs.frozen
class Principal:
    """Who a request runs as: a key's permission, or full rights when authentication is off."""

    permission: APIKeyPermissionEnum
    fingerprint: str | None = None


@attrs.define
class ApiKey:
    fingerprint: str
    payload: str
    permission: APIKeyPermissionEnum
    description: str
    created_at_ns: int
    expires_at_ns: int | None


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
