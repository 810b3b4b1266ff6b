"""Who may do what: API-key permissions against every operation of the catalogue.

The expected permission of each operation is read from the loaded spec (`specs/actions.toml`,
with a profile's deviations applied), so a change in the catalogue changes the expectation.
Every call runs over both transports against a server with authentication on. An allowed
call must succeed; a refused one answers PERMISSION_DENIED (or UNAUTHENTICATED without a key)
and leaves the server state exactly as it was.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs
import pyarrow as pa
import pytest

from fsm.enums import APIKeyPermissionEnum
from fsm.outcome import ErrorKind, Outcome, OutcomeStatus
from fsm.spec import load_spec
from fsm.transport import Descriptor, Transport, encode_body
from tests.harness import KIND_PARAMS, Harness, expect_ok, harness, topic_args
from tests.harness import put_batches as put
from transport.server.model import ServerModel

SPEC = load_spec()
PROFILES = ("spec", "mosaicod-0.3")
# The hierarchy of PROTOCOL.md §2.2: each level includes the ones below it.
LEVELS = ("read", "write", "delete", "manage")
PERMISSIONS = tuple(APIKeyPermissionEnum(level) for level in LEVELS)
# Catalogue entries that are not one callable operation: any unknown action name, and the RPCs
# outside the protocol.
PSEUDO = frozenset({"UNKNOWN_ACTION", "UNSUPPORTED_RPC"})
OPERATIONS = tuple(
    name
    for name, op in SPEC.operations.items()
    if op.kind in ("action", "rpc") and name not in PSEUDO
)
# Operations whose success leaves the state as it was.
READ_ONLY = frozenset(
    {
        "SEQUENCE_NOTIFICATION_LIST",
        "TOPIC_NOTIFICATION_LIST",
        "QUERY",
        "API_KEY_STATUS",
        "VERSION",
        "GET_FLIGHT_INFO",
        "LIST_FLIGHTS",
        "DO_GET",
    }
)

SCHEMA = pa.schema(
    [pa.field("timestamp_ns", pa.int64(), nullable=False), pa.field("value", pa.float64())]
)
BATCH = pa.record_batch(
    [pa.array([10, 20, 30], pa.int64()), pa.array([1.0, 2.0, 3.0])], schema=SCHEMA
)


def required(profile: str, operation: str) -> str | None:
    """The least permission `operation` needs in `profile`, as the spec files say."""
    value = SPEC.operations[operation].permission
    for deviation in SPEC.profiles[profile].deviations:
        for patch in SPEC.deviations[deviation].patch:
            if patch.operation == operation and patch.permission is not None:
                value = patch.permission
    return None if value == "none" else value


def allows(held: APIKeyPermissionEnum, needed: str | None) -> bool:
    return needed is None or LEVELS.index(held.value) >= LEVELS.index(needed)


def fingerprint(token: str) -> str:
    return token.rsplit("_", 1)[1]


@attrs.frozen
class World:
    """Resources made with a manage key, so that every operation has a valid target.

    `alpha` has an open session whose only topic is locked with data (it can be finalized and
    read), and a notification on the sequence and on the topic (they can be purged); `beta`
    has an open session with one topic that never streamed (it can be deleted or uploaded
    to); `other_key` is a key that is not the caller's.
    """

    alpha_session: str
    beta_session: str
    beta_topic_uuid: str
    ticket: bytes
    other_key: str


def action(t: Transport, operation: str, body: Mapping[str, Any]) -> Outcome:
    return t.action_raw(SPEC.operations[operation].wire, encode_body(body))


def build_world(h: Harness, manage: Transport) -> World:
    expect_ok(action(manage, "SEQUENCE_CREATE", {"locator": "alpha", "user_metadata": {}}), "a")
    alpha = expect_ok(action(manage, "SESSION_CREATE", {"locator": "alpha"}), "alpha session")
    topic = expect_ok(
        action(
            manage,
            "TOPIC_CREATE",
            topic_args(alpha["uuid"], "alpha/locked"),
        ),
        "alpha topic",
    )
    expect_ok(
        put(manage, Descriptor.for_topic("alpha/locked", topic["uuid"]), SCHEMA, [BATCH]), "put"
    )
    info = expect_ok(manage.flight_info(Descriptor.for_resource("alpha/locked")), "info")
    expect_ok(action(manage, "SEQUENCE_CREATE", {"locator": "beta", "user_metadata": {}}), "b")
    beta = expect_ok(action(manage, "SESSION_CREATE", {"locator": "beta"}), "beta session")
    beta_topic = expect_ok(
        action(
            manage,
            "TOPIC_CREATE",
            topic_args(beta["uuid"], "beta/open"),
        ),
        "beta topic",
    )
    for operation, locator in (
        ("SEQUENCE_NOTIFICATION_CREATE", "alpha"),
        ("TOPIC_NOTIFICATION_CREATE", "alpha/locked"),
    ):
        body = {"locator": locator, "notification_type": "info", "msg": "earlier"}
        expect_ok(action(manage, operation, body), operation)
    other = h.model.bootstrap_key(APIKeyPermissionEnum.Read, "other")
    return World(alpha["uuid"], beta["uuid"], beta_topic["uuid"], info.ticket, other)


Call = Callable[[Transport, World], Outcome]

CALLS: dict[str, Call] = {
    "SEQUENCE_CREATE": lambda t, w: action(
        t, "SEQUENCE_CREATE", {"locator": "gamma", "user_metadata": {"k": 1}}
    ),
    "SESSION_CREATE": lambda t, w: action(t, "SESSION_CREATE", {"locator": "alpha"}),
    "SESSION_FINALIZE": lambda t, w: action(
        t, "SESSION_FINALIZE", {"session_uuid": w.alpha_session}
    ),
    "SESSION_DELETE": lambda t, w: action(t, "SESSION_DELETE", {"session_uuid": w.beta_session}),
    "SEQUENCE_DELETE": lambda t, w: action(t, "SEQUENCE_DELETE", {"locator": "beta"}),
    "SEQUENCE_NOTIFICATION_CREATE": lambda t, w: action(
        t,
        "SEQUENCE_NOTIFICATION_CREATE",
        {"locator": "alpha", "notification_type": "error", "msg": "boom"},
    ),
    "SEQUENCE_NOTIFICATION_LIST": lambda t, w: action(
        t, "SEQUENCE_NOTIFICATION_LIST", {"locator": "alpha"}
    ),
    "SEQUENCE_NOTIFICATION_PURGE": lambda t, w: action(
        t, "SEQUENCE_NOTIFICATION_PURGE", {"locator": "alpha"}
    ),
    "TOPIC_CREATE": lambda t, w: action(
        t,
        "TOPIC_CREATE",
        {
            "session_uuid": w.beta_session,
            "locator": "beta/new",
            "serialization_format": "ragged",
            "ontology_tag": "gps",
            "user_metadata": {"k": "v"},
        },
    ),
    "TOPIC_DELETE": lambda t, w: action(t, "TOPIC_DELETE", {"locator": "beta/open"}),
    "TOPIC_NOTIFICATION_CREATE": lambda t, w: action(
        t,
        "TOPIC_NOTIFICATION_CREATE",
        {"locator": "alpha/locked", "notification_type": "error", "msg": "boom"},
    ),
    "TOPIC_NOTIFICATION_LIST": lambda t, w: action(
        t, "TOPIC_NOTIFICATION_LIST", {"locator": "alpha/locked"}
    ),
    "TOPIC_NOTIFICATION_PURGE": lambda t, w: action(
        t, "TOPIC_NOTIFICATION_PURGE", {"locator": "alpha/locked"}
    ),
    "QUERY": lambda t, w: action(t, "QUERY", {"sequence": {"locator": {"$eq": "alpha"}}}),
    "API_KEY_CREATE": lambda t, w: action(
        t, "API_KEY_CREATE", {"permissions": "read", "description": "new"}
    ),
    "API_KEY_STATUS": lambda t, w: action(
        t, "API_KEY_STATUS", {"api_key_fingerprint": fingerprint(w.other_key)}
    ),
    "API_KEY_REVOKE": lambda t, w: action(
        t, "API_KEY_REVOKE", {"api_key_fingerprint": fingerprint(w.other_key)}
    ),
    "VERSION": lambda t, w: action(t, "VERSION", {}),
    "GET_FLIGHT_INFO": lambda t, w: t.flight_info(Descriptor.for_resource("alpha")),
    "LIST_FLIGHTS": lambda t, w: t.list_sequences(b""),
    "DO_GET": lambda t, w: t.read(w.ticket),
    "DO_PUT": lambda t, w: put(
        t, Descriptor.for_topic("beta/open", w.beta_topic_uuid), SCHEMA, [BATCH]
    ),
}


@pytest.fixture(params=KIND_PARAMS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server(kind: str) -> Iterator[tuple[Harness, Transport, World]]:
    """A spec-profile server with authentication on, a manage transport and its world."""
    with harness(kind, auth=True) as h:
        manage = h.transport(h.model.bootstrap_key())
        yield h, manage, build_world(h, manage)


def assert_refused(h: Harness, outcome: Outcome, kind: ErrorKind, before: Any, what: str) -> None:
    assert outcome.status is OutcomeStatus.FAILED, f"{what}: expected {kind}, got {outcome}"
    assert outcome.kind is kind, f"{what}: expected {kind}, got {outcome.kind}: {outcome.detail}"
    assert h.model.snapshot() == before, f"{what}: a refused call changed the state"


# ---------------------------------------------------------------------------------------------
# The catalogue itself


def test_every_operation_of_the_catalogue_is_exercised() -> None:
    """Each DoAction and RPC of the catalogue has a call in this module."""
    assert set(OPERATIONS) == set(CALLS)
    assert {"GET_FLIGHT_INFO", "LIST_FLIGHTS", "DO_GET", "DO_PUT"} <= set(OPERATIONS)


def test_expectations_follow_the_catalogue() -> None:
    """The expectations come from the spec: the seed's levels and the mosaicod deviation."""
    assert required("spec", "SEQUENCE_NOTIFICATION_CREATE") == "read"
    assert required("spec", "TOPIC_NOTIFICATION_CREATE") == "read"
    assert required("spec", "VERSION") is None
    assert required("spec", "API_KEY_REVOKE") == "manage"
    assert required("spec", "DO_PUT") == "write"
    assert required("mosaicod-0.3", "SEQUENCE_NOTIFICATION_CREATE") == "write"
    assert required("mosaicod-0.3", "TOPIC_NOTIFICATION_CREATE") == "write"
    assert "MOSAICOD-NOTIFY-NEEDS-WRITE" in SPEC.profiles["mosaicod-0.3"].deviations


# ---------------------------------------------------------------------------------------------
# The matrix


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("permission", PERMISSIONS, ids=lambda p: p.value)
@pytest.mark.parametrize("profile", PROFILES)
def test_permission_matrix(
    kind: str, profile: str, permission: APIKeyPermissionEnum, operation: str
) -> None:
    """A key may run an operation exactly when its level covers the catalogue's permission."""
    needed = required(profile, operation)
    with harness(kind, profile=profile, auth=True) as h:
        manage = h.transport(h.model.bootstrap_key())
        world = build_world(h, manage)
        caller = h.transport(h.model.bootstrap_key(permission, "caller"))
        before = h.model.snapshot()
        outcome = CALLS[operation](caller, world)
        what = f"{operation} with a {permission.value} key ({profile}, needs {needed})"
        if allows(permission, needed):
            expect_ok(outcome, what)
            if operation in READ_ONLY:
                assert h.model.snapshot() == before, f"{what}: a read changed the state"
            else:
                assert h.model.snapshot() != before, f"{what}: succeeded but changed nothing"
        else:
            assert_refused(h, outcome, ErrorKind.PERMISSION_DENIED, before, what)


@pytest.mark.parametrize("permission", PERMISSIONS, ids=lambda p: p.value)
def test_unknown_action_is_invalid_whatever_the_permission(
    kind: str, permission: APIKeyPermissionEnum
) -> None:
    """An unknown action name is a malformed request for every key, never a permission matter."""
    assert SPEC.operations["UNKNOWN_ACTION"].permission == "none"
    with harness(kind, auth=True) as h:
        caller = h.transport(h.model.bootstrap_key(permission))
        before = h.model.snapshot()
        outcome = caller.action_raw("sequence_rename", b'{"locator": "alpha"}')
        assert_refused(h, outcome, ErrorKind.INVALID_ARGUMENT, before, "sequence_rename")


@pytest.mark.parametrize(
    ("profile", "least"), [("spec", "read"), ("mosaicod-0.3", "write")], ids=["spec", "mosaicod"]
)
@pytest.mark.parametrize("operation", ["SEQUENCE_NOTIFICATION_CREATE", "TOPIC_NOTIFICATION_CREATE"])
def test_reporting_an_error_needs_read_in_the_spec_and_write_in_mosaicod(
    kind: str, profile: str, least: str, operation: str
) -> None:
    """The seed lets a read key report errors; mosaicod 0.3 wants write
    (MOSAICOD-NOTIFY-NEEDS-WRITE)."""
    for permission in PERMISSIONS:
        with harness(kind, profile=profile, auth=True) as h:
            world = build_world(h, h.transport(h.model.bootstrap_key()))
            caller = h.transport(h.model.bootstrap_key(permission))
            before = h.model.snapshot()
            outcome = CALLS[operation](caller, world)
            what = f"{operation} with {permission.value} in {profile}"
            if LEVELS.index(permission.value) >= LEVELS.index(least):
                expect_ok(outcome, what)
                assert h.model.snapshot() != before
            else:
                assert_refused(h, outcome, ErrorKind.PERMISSION_DENIED, before, what)


# ---------------------------------------------------------------------------------------------
# Authentication


@pytest.mark.parametrize("token", [None, ""], ids=["absent", "empty"])
def test_a_call_without_a_key_is_unauthenticated(
    server: tuple[Harness, Transport, World], token: str | None
) -> None:
    """With authentication on, every operation without a key answers UNAUTHENTICATED."""
    h, _manage, world = server
    anonymous = h.transport(token)
    before = h.model.snapshot()
    for operation in OPERATIONS:
        outcome = CALLS[operation](anonymous, world)
        assert_refused(h, outcome, ErrorKind.UNAUTHENTICATED, before, operation)


def _bad_tokens(model: ServerModel) -> dict[str, str]:
    valid = model.bootstrap_key(APIKeyPermissionEnum.Manage, "victim")
    _, payload, fp = valid.split("_")
    other_payload = "".join(reversed(payload))
    if other_payload == payload:  # pragma: no cover - a palindrome of 32 random characters
        other_payload = "0" * 31 + "a"
    stranger = ServerModel(auth=True, seed=12345).bootstrap_key()
    assert fingerprint(stranger) not in model.keys
    return {
        "garbage": "not-a-token",
        "no parts": "msco",
        "short payload": f"msco_{payload[:31]}_{fp}",
        "short fingerprint": f"msco_{payload}_{fp[:7]}",
        "upper case": valid.upper(),
        "wrong header": f"mscx_{payload}_{fp}",
        "trailing junk": valid + "0",
        "unknown fingerprint": stranger,
        "payload of another key": f"msco_{other_payload}_{fp}",
    }


def test_a_bad_token_is_permission_denied(server: tuple[Harness, Transport, World]) -> None:
    """A malformed token, an unknown fingerprint, or a payload that does not match its
    fingerprint is refused with PERMISSION_DENIED on every operation."""
    h, _manage, world = server
    tokens = _bad_tokens(h.model)
    before = h.model.snapshot()
    for name, token in tokens.items():
        caller = h.transport(token)
        for operation in OPERATIONS:
            outcome = CALLS[operation](caller, world)
            assert_refused(h, outcome, ErrorKind.PERMISSION_DENIED, before, f"{name}: {operation}")


def test_a_revoked_key_is_refused_on_its_next_call(
    server: tuple[Harness, Transport, World],
) -> None:
    """A key issued with api_key_create works until api_key_revoke, then is refused."""
    h, manage, world = server
    issued = expect_ok(
        action(manage, "API_KEY_CREATE", {"permissions": "delete", "description": "temporary"}),
        "create",
    )
    token = issued["api_key_token"]
    user = h.transport(token)
    expect_ok(CALLS["VERSION"](user, world), "version before the revocation")
    expect_ok(CALLS["LIST_FLIGHTS"](user, world), "list before the revocation")
    expect_ok(
        action(manage, "API_KEY_REVOKE", {"api_key_fingerprint": fingerprint(token)}), "revoke"
    )
    before = h.model.snapshot()
    assert fingerprint(token) not in before["keys"]
    for operation in ("VERSION", "LIST_FLIGHTS", "SEQUENCE_DELETE", "DO_PUT"):
        outcome = CALLS[operation](user, world)
        assert_refused(h, outcome, ErrorKind.PERMISSION_DENIED, before, f"revoked: {operation}")
    expect_ok(CALLS["VERSION"](manage, world), "the manage key still works")


@pytest.mark.parametrize(
    ("profile", "accepted"), [("spec", False), ("mosaicod-0.3", True)], ids=["spec", "mosaicod"]
)
def test_an_expired_key(kind: str, profile: str, accepted: bool) -> None:
    """A key past its expiry is refused by the spec and still accepted by mosaicod 0.3
    (MOSAICOD-NO-KEY-EXPIRY); a key expiring in the future works in both."""
    with harness(kind, profile=profile, auth=True) as h:
        manage = h.transport(h.model.bootstrap_key())
        world = build_world(h, manage)
        future = time.time_ns() + 3600 * 10**9
        keys = {}
        for name, expires in (("expired", 1), ("valid", future)):
            body = {"permissions": "write", "description": name, "expires_at_ns": expires}
            keys[name] = expect_ok(action(manage, "API_KEY_CREATE", body), name)["api_key_token"]
        status = expect_ok(
            action(manage, "API_KEY_STATUS", {"api_key_fingerprint": fingerprint(keys["expired"])}),
            "status",
        )
        assert status["expires_at_ns"] == 1

        valid = h.transport(keys["valid"])
        expect_ok(CALLS["VERSION"](valid, world), "a key that has not expired")

        expired = h.transport(keys["expired"])
        for operation in ("VERSION", "LIST_FLIGHTS", "SEQUENCE_CREATE"):
            before = h.model.snapshot()
            outcome = CALLS[operation](expired, world)
            if accepted:
                expect_ok(outcome, f"expired key, {operation}, {profile}")
            else:
                assert_refused(
                    h, outcome, ErrorKind.PERMISSION_DENIED, before, f"expired: {operation}"
                )
