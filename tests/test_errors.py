"""One error hierarchy: every exception class the library defines derives from `MosaicoError`
through exactly one branch, the user-facing failure paths raise the typed class with the
context they promise, and no library code raises a bare built-in exception."""

from __future__ import annotations

import ast
import importlib
import json
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pytest

import fsm
import transport
from fsm import errors
from fsm.cli.common import CliError
from fsm.engine import Client
from fsm.enums import OnErrorPolicy
from fsm.errors import (
    ActionFailed,
    ArgumentError,
    ConformanceError,
    InvalidTrigger,
    MosaicoError,
    MosaicoProtocolError,
    OutcomeUnknown,
    ProtocolError,
    ServerError,
    SimulationError,
    SpecError,
    TransportError,
)
from fsm.faults import Fault, FaultEffect, FaultPlan, FaultSchedule
from fsm.outcome import ErrorKind, Outcome
from fsm.simulate.scenarios import UnknownScenario, select
from fsm.simulate.view import ServerView
from fsm.spec import load_spec
from fsm.transport import Descriptor, Transport
from tests.harness import Forward
from transport.flight.client import FlightTransport
from transport.flight.codec import EnvelopeError, decode_envelope
from transport.flight.frames import FrameError, decode_frame
from transport.flight.limits import ServerLimits
from transport.flight.server import ListenError, start_server
from transport.memory import MemoryTransport
from transport.server.model import ServerModel

BRANCHES: tuple[type[MosaicoError], ...] = (
    ProtocolError,
    SpecError,
    ServerError,
    TransportError,
    SimulationError,
    ConformanceError,
    CliError,
)

EXPECTED: dict[str, type[MosaicoError] | None] = {
    # None: the root itself, under no branch.
    "fsm.errors.MosaicoError": None,
    "fsm.errors.ProtocolError": ProtocolError,
    "fsm.errors.InvalidTrigger": ProtocolError,
    "fsm.errors.ActionFailed": ProtocolError,
    "fsm.errors.OutcomeUnknown": ProtocolError,
    "fsm.errors.ArgumentError": ProtocolError,
    "fsm.engine.schema.RowTooLarge": ProtocolError,
    "fsm.errors.ArgumentTypeError": ProtocolError,
    "fsm.spec.query.QueryBodyError": ProtocolError,
    "fsm.errors.SpecError": SpecError,
    "fsm.errors.ServerError": ServerError,
    "fsm.errors.TransportError": TransportError,
    "fsm.simulate.scenarios.UnknownScenario": ProtocolError,
    "transport.flight.codec.EnvelopeError": TransportError,
    "transport.flight.codec.FlightInfoError": TransportError,
    "transport.flight.frames.FrameError": TransportError,
    "transport.flight.server.ListenError": TransportError,
    "transport.server.faults.InjectedFault": TransportError,
    "fsm.errors.SimulationError": SimulationError,
    "fsm.errors.ConformanceError": ConformanceError,
    "fsm.conformance.suite.Unreachable": ConformanceError,
    "fsm.conformance.context.Fail": ConformanceError,
    "fsm.conformance.context.Unknown": ConformanceError,
    "fsm.conformance.context.NotApplicable": ConformanceError,
    "fsm.cli.common.CliError": CliError,
}

NOT_LIBRARY_ERRORS = {
    # Stands for the user's own exception leaving a `with` block in the simulated scenarios:
    # it must be foreign to the library, or the engine would treat it as one of its own.
    "fsm.simulate.scenarios.Boom",
}

# The built-in classes still kept as a second base, so `except ValueError` (or TypeError,
# KeyError) written before the hierarchy keeps catching what it caught.
COMPAT = (ValueError, TypeError, KeyError)


def _library_modules() -> Iterator[str]:
    """Every module of `fsm` and `transport`. pkgutil.walk_packages does not descend into
    `transport/server`, a namespace package (it has no `__init__.py`), so the files are
    listed instead."""
    for package in (fsm, transport):
        root = Path(next(iter(package.__path__)))
        for file in sorted(root.rglob("*.py")):
            parts = file.relative_to(root.parent).with_suffix("").parts
            if parts[-1] == "__main__":  # importing it runs the command line
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(parts)


def _public_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for name in _library_modules():
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if (
                isinstance(value, type)
                and issubclass(value, BaseException)
                and value.__module__ == name
                and not attr.startswith("_")
                and attr == value.__name__  # not an alias (MosaicoProtocolError)
            ):
                found[f"{name}.{attr}"] = value
    return found


def test_the_walk_sees_every_module() -> None:
    modules = set(_library_modules())
    assert {"transport.server.faults", "fsm.errors", "fsm.cli.common", "fsm.engine.base"} <= (
        modules
    )
    assert "fsm.cli.__main__" not in modules


def test_every_public_exception_class_is_in_the_hierarchy() -> None:
    found = _public_exceptions()
    outside = sorted(
        name
        for name, cls in found.items()
        if not issubclass(cls, MosaicoError) and name not in NOT_LIBRARY_ERRORS
    )
    assert not outside, f"exception classes outside MosaicoError: {outside}"
    unlisted = sorted(set(found) - set(EXPECTED) - NOT_LIBRARY_ERRORS)
    assert not unlisted, f"place these in a branch (and in EXPECTED): {unlisted}"
    stale = sorted(set(EXPECTED) - set(found))
    assert not stale, f"EXPECTED names classes that no longer exist: {stale}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_class_is_under_exactly_its_branch(name: str) -> None:
    module, _, attr = name.rpartition(".")
    cls = getattr(importlib.import_module(module), attr)
    assert issubclass(cls, MosaicoError)
    assert issubclass(cls, Exception)
    under = [b for b in BRANCHES if issubclass(cls, b)]
    expected = EXPECTED[name]
    assert under == ([] if expected is None else [expected]), f"{name} is under {under}"


def test_the_branches_are_direct_children_of_the_root() -> None:
    for branch in BRANCHES:
        assert branch.__bases__ == (MosaicoError,), branch


def test_the_old_base_name_is_the_root() -> None:
    assert MosaicoProtocolError is MosaicoError
    assert fsm.MosaicoProtocolError is MosaicoError
    assert set(errors.__all__) <= set(vars(errors))


def test_classes_that_were_built_in_errors_still_are() -> None:
    assert issubclass(ArgumentError, ValueError)
    assert issubclass(errors.ArgumentTypeError, TypeError)
    assert issubclass(FrameError, ValueError)
    assert issubclass(EnvelopeError, ValueError)
    assert issubclass(UnknownScenario, KeyError)


def test_context_attributes_default_to_none_and_are_kept() -> None:
    bare = MosaicoError("x")
    assert (bare.machine, bare.state, bare.trigger, bare.operation) == (None, None, None, None)
    spec = SpecError("f.toml", "t", "e", "p")
    assert (spec.machine, spec.state, spec.trigger, spec.operation) == (None, None, None, None)
    told = ProtocolError("x", machine="m", state="s", trigger="t", operation="o")
    assert (told.machine, told.state, told.trigger, told.operation) == ("m", "s", "t", "o")
    assert str(told) == "x"


# -----------------------------------------------------------------------------------------------
# The user-facing paths raise the typed class, with the context they promise.

SCHEMA = pa.schema(
    [pa.field("timestamp_ns", pa.int64(), nullable=False), pa.field("x", pa.float64())]
)


def _memory(*faults: Fault) -> MemoryTransport:
    return MemoryTransport(ServerModel(seed=0), faults=FaultSchedule(FaultPlan(faults)))


def test_bad_arguments_to_the_engine_are_argument_errors() -> None:
    t = _memory()
    with Client(t).sequence_create("run") as seq:
        with pytest.raises(ArgumentError, match="ontology_tag"):
            seq.topic_create("a", schema=SCHEMA, ontology_tag="")
        topic = seq.topic_create("a", schema=SCHEMA, ontology_tag="imu")
        topic.push(pa.record_batch([pa.array([1]), pa.array([1.0])], schema=SCHEMA))


def test_a_refused_trigger_names_machine_state_and_trigger() -> None:
    writer = Client(_memory()).sequence_create("run")
    with pytest.raises(InvalidTrigger) as info:
        writer.topic_create("imu", schema=SCHEMA, ontology_tag="imu")
    error = info.value
    assert isinstance(error, ProtocolError)
    assert (error.machine, error.state, error.trigger, error.operation) == (
        "session",
        "Null",
        "topic_create",
        None,
    )


def test_a_failed_operation_names_machine_state_trigger_and_operation() -> None:
    t = _memory(Fault("SEQUENCE_CREATE", 1, FaultEffect.FAIL, ErrorKind.INTERNAL))
    writer = Client(t).sequence_create("run")
    with pytest.raises(ActionFailed) as info:
        writer.__enter__()
    error = info.value
    assert isinstance(error, ProtocolError)
    assert error.kind is ErrorKind.INTERNAL
    assert (error.machine, error.state, error.trigger, error.operation) == (
        "session",
        "Null",
        "enter",
        "SEQUENCE_CREATE",
    )


def test_a_bad_spec_directory_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path)
    assert isinstance(info.value, MosaicoError)
    assert not isinstance(info.value, ProtocolError)


def test_a_refusal_of_the_server_model_is_a_server_error() -> None:
    model = ServerModel(seed=0)
    with pytest.raises(ServerError) as info:
        model.handle_action(model.authenticate(None), "no_such_action", b"{}")
    assert info.value.kind is ErrorKind.INVALID_ARGUMENT
    assert isinstance(info.value, MosaicoError)
    assert info.value.operation is None  # no operation of the catalogue


def test_a_server_refusal_names_its_operation() -> None:
    model = ServerModel(seed=0)
    principal = model.authenticate(None)
    body = json.dumps({"session_uuid": str(uuid.UUID(int=1))}).encode()
    with pytest.raises(ServerError) as info:
        model.handle_action(principal, "session_finalize", body)
    assert (info.value.kind, info.value.operation) == (ErrorKind.NOT_FOUND, "SESSION_FINALIZE")
    with pytest.raises(ServerError) as info:
        model.handle_action(principal, "session_finalize", b"[]")
    assert (info.value.kind, info.value.operation) == (
        ErrorKind.INVALID_ARGUMENT,
        "SESSION_FINALIZE",
    )
    with pytest.raises(ServerError) as info:
        model.flight_info(principal, "cmd", json.dumps({"resource_locator": "nothing"}).encode())
    assert (info.value.kind, info.value.operation) == (ErrorKind.NOT_FOUND, "GET_FLIGHT_INFO")
    with pytest.raises(ServerError) as info:
        model.read(principal, b"not a ticket")
    assert (info.value.kind, info.value.operation) == (ErrorKind.INVALID_ARGUMENT, "DO_GET")
    with pytest.raises(ServerError) as info:
        model.put_open(principal, "cmd", b"{}", SCHEMA)
    assert (info.value.kind, info.value.operation) == (ErrorKind.INVALID_ARGUMENT, "DO_PUT")


class _Refusing(Forward):
    def flight_info(self, descriptor: Descriptor) -> Outcome:
        return Outcome.failed(ErrorKind.INTERNAL, "refused")


def test_a_simulation_that_cannot_read_is_a_simulation_error() -> None:
    inner: Transport = _memory()
    with pytest.raises(SimulationError, match="reading the sequence failed: refused"):
        ServerView(_Refusing(inner)).sequence()


def test_a_malformed_frame_is_a_transport_error() -> None:
    with pytest.raises(FrameError) as info:
        decode_frame(b"\x0a\xff")
    assert isinstance(info.value, TransportError)
    assert isinstance(info.value, ValueError)


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_dead_flight_server_is_an_action_failure_naming_the_operation() -> None:
    """A transport answers outcomes, never raises: over Flight to a port nobody listens on,
    the first operation's outcome is unknown (the call may or may not have reached a server)
    and asking the server settles nothing, so the engine raises `OutcomeUnknown`, an
    `ActionFailed` naming where it happened."""
    t = FlightTransport(f"grpc://127.0.0.1:{_dead_port()}", timeout=5.0, connect_timeout=1.0)
    try:
        with pytest.raises(OutcomeUnknown) as info:
            Client(t).sequence_create("run").__enter__()
    finally:
        t.close()
    error = info.value
    assert isinstance(error, ActionFailed)
    assert "unavailable" in error.detail
    assert (error.machine, error.state, error.trigger, error.operation) == (
        "session",
        "Null",
        "enter",
        "SEQUENCE_CREATE",
    )


def test_a_server_that_cannot_listen_is_a_transport_error() -> None:
    """192.0.2.1 (TEST-NET-1) is no address of this machine: gRPC cannot bind it."""
    with pytest.raises(ListenError, match=r"cannot listen on 192\.0\.2\.1:0") as info:
        start_server(host="192.0.2.1")
    assert isinstance(info.value, TransportError)
    assert isinstance(info.value, OSError)


def test_a_bad_flight_location_is_an_argument_error() -> None:
    with pytest.raises(ArgumentError, match="grpc://host:port"):
        FlightTransport("http://127.0.0.1:1")


@pytest.mark.parametrize(
    "call",
    [
        lambda: ServerModel(profile="no-such-profile"),
        lambda: ServerModel(deviations=["NO-SUCH-DEVIATION"]),
        lambda: ServerLimits(max_message_bytes=1),
        lambda: ServerLimits(max_streams=0),
        lambda: FlightTransport("grpc://127.0.0.1:1", timeout=0),
    ],
    ids=["profile", "deviation", "message-bytes", "streams", "timeout"],
)
def test_bad_configuration_is_an_argument_error(call: Callable[[], object]) -> None:
    with pytest.raises(ArgumentError):
        call()


def test_a_wrong_policy_type_is_an_argument_type_error() -> None:
    with pytest.raises(errors.ArgumentTypeError, match="SessionLevelErrorPolicy") as info:
        OnErrorPolicy.normalize("Delete")  # type: ignore[arg-type]
    assert isinstance(info.value, TypeError)


def test_an_unknown_scenario_is_an_argument_error_and_a_key_error() -> None:
    with pytest.raises(UnknownScenario) as info:
        select(["no-such-scenario"])
    assert isinstance(info.value, ArgumentError)
    assert info.value.args == ("no-such-scenario",)


def test_a_reply_that_is_not_an_envelope_is_a_transport_error() -> None:
    with pytest.raises(EnvelopeError, match="tagged"):
        decode_envelope("version", b'{"action": "other", "response": {}}')
    with pytest.raises(EnvelopeError, match="not an envelope"):
        decode_envelope("version", b"[1]")


# -----------------------------------------------------------------------------------------------
# No library code raises a bare built-in exception for a domain error, nor the root itself.

BARE = frozenset(
    # the built-ins a domain error used to be, and the root, which belongs to no branch
    {"ValueError", "TypeError", "KeyError", "RuntimeError", "Exception"}
    | {"MosaicoError", "MosaicoProtocolError"}
)

ALLOWED_BARE: dict[tuple[str, str], str] = {
    # (file, enclosing function): why
    ("transport/server/validate.py", "_no_constant"): (
        "the parse_constant hook of json.loads: its ValueError is caught with json's own "
        "errors by the caller, which refuses the body with a ServerError; it never escapes"
    ),
}


class _BareRaises(ast.NodeVisitor):
    """Each `raise X(...)` or `raise X` of a bare built-in, with its innermost function."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.scope = ["<module>"]
        self.found: list[tuple[str, str, int, str]] = []

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Raise(self, node: ast.Raise) -> None:
        exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
        if isinstance(exc, ast.Name) and exc.id in BARE:
            self.found.append((self.file, self.scope[-1], node.lineno, exc.id))
        self.generic_visit(node)


def _scan(source: str, file: str) -> list[tuple[str, str, int, str]]:
    visitor = _BareRaises(file)
    visitor.visit(ast.parse(source, file))
    return visitor.found


def _bare_raises() -> list[tuple[str, str, int, str]]:
    found = []
    for package in (fsm, transport):
        root = Path(next(iter(package.__path__)))
        for file in sorted(root.rglob("*.py")):
            relative = file.relative_to(root.parent).as_posix()
            found += _scan(file.read_text(encoding="utf-8"), relative)
    return found


def test_no_bare_built_in_raises_outside_the_allow_list() -> None:
    found = _bare_raises()
    bare = [f"{f}:{line} raise {name} (in {scope})" for f, scope, line, name in found]
    unexplained = [
        b for b, (f, scope, _, _) in zip(bare, found, strict=True) if (f, scope) not in ALLOWED_BARE
    ]
    assert not unexplained, "raise a typed error (fsm.errors) instead:\n" + "\n".join(unexplained)
    used = {(f, scope) for f, scope, _, _ in found}
    assert set(ALLOWED_BARE) <= used, f"stale allow-list entries: {set(ALLOWED_BARE) - used}"


def test_the_bare_raise_scan_sees_every_form() -> None:
    source = (
        "def f():\n"
        "    def g():\n"
        "        raise ValueError('x')\n"
        "    raise KeyError\n"
        "raise RuntimeError('top')\n"
        "raise ArgumentError('typed')\n"
        "raise MosaicoProtocolError('root')\n"
    )
    assert _scan(source, "m.py") == [
        ("m.py", "g", 3, "ValueError"),
        ("m.py", "f", 4, "KeyError"),
        ("m.py", "<module>", 5, "RuntimeError"),
        ("m.py", "<module>", 7, "MosaicoProtocolError"),
    ]
