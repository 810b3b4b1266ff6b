"""The shape of each file of `specs/`, declared once, and the strict reader that structures a
parsed TOML document into it.

Every table is an attrs class; `structure` refuses a key the class does not declare, a
missing key, and a value of the wrong type, with a `SpecError` naming the file and the key
path (`operations.TOPIC_CREATE`, `transitions[3] (exit-ok).steps[1].failed`). What this
module cannot see, names that refer to other entries, is checked by `fsm.spec.load`.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal, NewType, TypeVar

import attrs
import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn

from fsm.errors import SpecError
from fsm.spec.model import ErrorCase, Field
from fsm.spec.query import Operand, OptionType, ValueType

__all__ = [
    "ActionsFile",
    "DeviationsFile",
    "EnumChanges",
    "LineFile",
    "MachineFile",
    "Names",
    "QueryFile",
    "ResourcesFile",
    "Text",
    "WireFile",
    "structure",
]

T = TypeVar("T")

Text = NewType("Text", str)
"""A non-empty string."""
Names = NewType("Names", tuple[str, ...])
"""A name, or a non-empty array of names."""
Route = NewType("Route", str)
"""A step's route: continue, stop or a route trigger (checked by the loader)."""


# ---------------------------------------------------------------------------------------------
# actions.toml


@attrs.frozen
class ErrorKindEntry:
    grpc: Text
    doc: Text


@attrs.frozen
class LimitEntry:
    value: int
    doc: Text


@attrs.frozen
class OperationEntry:
    kind: Literal["action", "rpc", "stream"]
    wire: Text
    permission: Text
    response: Any
    outcomes: Names
    doc: Text
    request: tuple[Field, ...] = ()
    errors: tuple[ErrorCase, ...] = ()


@attrs.frozen
class ProbeEntry:
    """The one declaration of a probe: the operation it settles, the read it makes."""

    settles: Text
    reads: Text
    applied_when: Text


@attrs.frozen
class ActionsFile:
    spec_version: Text
    error_kinds: dict[str, ErrorKindEntry]
    operations: dict[str, OperationEntry]
    probes: dict[str, ProbeEntry]
    field_types: dict[str, str] = attrs.field(factory=dict)
    limits: dict[str, LimitEntry] = attrs.field(factory=dict)
    common_errors: tuple[ErrorCase, ...] = ()
    shapes: dict[str, dict[str, str]] = attrs.field(factory=dict)


# ---------------------------------------------------------------------------------------------
# session.toml, topic_writer.toml


@attrs.frozen
class MachineHead:
    name: Text
    enum: Text
    doc: Text
    states: Names
    initial: Text
    terminals: Names


@attrs.frozen
class VariableEntry:
    """A context variable of a machine, or a fact of a resource."""

    values: Names
    enum: Text | None = None
    doc: str = ""


@attrs.frozen
class TriggerEntry:
    kind: Literal["user", "session", "route"]
    doc: Text


@attrs.frozen
class VerdictRoutes:
    """Where a probe's verdicts go; a verdict left out goes to "continue"."""

    applied: Route | None = None
    not_applied: Route | None = None
    unresolved: Route | None = None


@attrs.frozen
class StepEntry:
    do: Text | None = None
    topics: Text | None = None
    failed: Route | dict[str, Route] | None = None
    unknown: Route | VerdictRoutes | None = None
    optional: bool = False


@attrs.frozen
class RowEntry:
    id: Text
    source: Names
    trigger: Text
    dest: Text
    error: Literal["none", "cause", "propagate", "suppress"]
    doc: Text
    when: dict[str, str] = attrs.field(factory=dict)
    steps: tuple[StepEntry, ...] = ()


@attrs.frozen
class MachineFile:
    spec_version: Text
    machine: MachineHead
    triggers: dict[str, TriggerEntry]
    transitions: tuple[RowEntry, ...]
    context: dict[str, VariableEntry] = attrs.field(factory=dict)


# ---------------------------------------------------------------------------------------------
# resources.toml


@attrs.frozen
class ResourceRowEntry:
    source: Names
    event: Names
    when: dict[str, str] = attrs.field(factory=dict)
    dest: Text | None = None
    error: Text | None = None
    doc: str = ""


@attrs.frozen
class ResourceEntry:
    doc: Text
    states: Names
    initial: Text
    events: Names
    locked: Names = Names(())
    facts: dict[str, VariableEntry] = attrs.field(factory=dict)
    rows: tuple[ResourceRowEntry, ...] = ()


@attrs.frozen
class ResourcesFile:
    spec_version: Text
    resources: dict[str, ResourceEntry]


# ---------------------------------------------------------------------------------------------
# deviations.toml


@attrs.frozen
class CellPatch:
    """A resource cell's new outcome."""

    resource: Text
    source: Text
    event: Text
    when: dict[str, str] = attrs.field(factory=dict)
    dest: Text | None = None
    error: Text | None = None


@attrs.frozen
class PermissionPatch:
    operation: Text
    permission: Text


@attrs.frozen
class SettingPatch:
    setting: Text
    value: Any


@attrs.frozen
class QueryPatch:
    query: Text
    operator: Text
    semantics: Text | None = None
    error: Text | None = None


PatchEntry = QueryPatch | SettingPatch | PermissionPatch | CellPatch
_PATCH_KEYS: tuple[tuple[str, type[Any]], ...] = (
    ("query", QueryPatch),
    ("setting", SettingPatch),
    ("operation", PermissionPatch),
)
"""A patch is told apart by its first key found here; without one it patches a cell."""


@attrs.frozen
class Signature:
    """How a client deviation shows in a trace (every key optional)."""

    extra: Text | None = None
    after: Text | None = None
    missing: Text | None = None
    failed: Text | None = None
    policy: Text | None = None
    records_lost: Text | None = None
    bytes_over: int | None = None
    push_after_failed_stream: bool | None = None
    api: Text | None = None

    def written(self) -> dict[str, Any]:
        """The keys the file gives."""
        return {k: v for k, v in attrs.asdict(self).items() if v is not None}


@attrs.frozen
class DeviationEntry:
    id: Text
    who: Text
    summary: Text
    spec: Text
    actual: Text
    sources: Names
    patch: tuple[PatchEntry, ...] = ()
    signature: Signature = Signature()


@attrs.frozen
class ProfileEntry:
    doc: Text
    deviations: tuple[str, ...] = ()


@attrs.frozen
class DeviationsFile:
    spec_version: Text
    deviations: tuple[DeviationEntry, ...]
    profiles: dict[str, ProfileEntry]


# ---------------------------------------------------------------------------------------------
# query.toml


@attrs.frozen
class OperatorEntry:
    operand: Operand
    doc: Text


@attrs.frozen
class KindEntry:
    """A kind of field: the value types it accepts, and each operator's semantics."""

    doc: Text
    values: tuple[ValueType, ...]
    operators: dict[str, Text]


@attrs.frozen
class SectionEntry:
    doc: Text
    fields: dict[str, Text] = attrs.field(factory=dict)
    any_field: Text | None = None
    options: dict[str, OptionType] = attrs.field(factory=dict)


@attrs.frozen
class QueryFile:
    spec_version: Text
    operators: dict[str, OperatorEntry]
    kinds: dict[str, KindEntry]
    sections: dict[str, SectionEntry]


# ---------------------------------------------------------------------------------------------
# lines/wire.toml, lines/<line>.toml

TextList = NewType("TextList", tuple[str, ...])
"""A non-empty array of non-empty strings."""
SemVer = NewType("SemVer", str)
"""A semantic version: major.minor.patch, with an optional -pre-release."""
ByteCount = NewType("ByteCount", int)
"""A positive number of bytes."""
Member = NewType("Member", tuple[str, Any])
"""An enum member: [name, value]."""


@attrs.frozen
class ShapeEntry:
    doc: Text
    example: Text | None = None
    fields: TextList | None = None


@attrs.frozen
class AspectEntry:
    doc: Text
    shapes: dict[str, ShapeEntry]


@attrs.frozen
class WireFile:
    spec_version: Text
    aspects: dict[str, AspectEntry]


@attrs.frozen
class PermissionsEntry:
    """`ranked` names its `levels`, `granular` its `bits` (the loader checks which)."""

    model: Literal["ranked", "granular"]
    levels: TextList | None = None
    bits: TextList | None = None


@attrs.frozen
class InfoConfig:
    """The gRPC size limits an info handshake reports."""

    grpc_max_decode_message_size: ByteCount | None = None
    grpc_max_encode_message_size: ByteCount | None = None
    grpc_target_encode_message_size: ByteCount | None = None


@attrs.frozen
class HandshakeEntry:
    version: SemVer | None = None
    config: InfoConfig = InfoConfig()


@attrs.frozen
class OperationChange:
    """The keys of an operation a line changes (each optional)."""

    kind: Literal["action", "rpc", "stream"] | None = None
    wire: Text | None = None
    permission: Text | None = None
    response: Any = None
    outcomes: Names | None = None
    doc: Text | None = None
    request: tuple[Field, ...] | None = None
    errors: tuple[ErrorCase, ...] | None = None


@attrs.frozen
class CatalogueChanges:
    remove: tuple[Text, ...] = ()
    add: dict[str, OperationEntry] = attrs.field(factory=dict)
    change: dict[str, OperationChange] = attrs.field(factory=dict)
    field_types: dict[str, Text] = attrs.field(factory=dict)
    probes: dict[str, ProbeEntry] = attrs.field(factory=dict)
    shapes: dict[str, dict[str, Text]] = attrs.field(factory=dict)
    common_errors: tuple[ErrorCase, ...] | None = None


@attrs.frozen
class ResourceChanges:
    remove: tuple[Text, ...] = ()


@attrs.frozen
class QueryChanges:
    """`remove`: key paths deleted from query.toml; `merge`: a table merged into it."""

    remove: tuple[TextList, ...] = ()
    merge: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class StateLike:
    like: Text


@attrs.frozen
class MachineChanges:
    remove: tuple[Text, ...] = ()
    replace: tuple[RowEntry, ...] = ()
    add_states: dict[str, StateLike] = attrs.field(factory=dict)
    triggers: dict[str, TriggerEntry] = attrs.field(factory=dict)
    add: tuple[RowEntry, ...] = ()


@attrs.frozen
class NewEnum:
    kind: Literal["str", "int"]
    members: tuple[Member, ...]


@attrs.frozen
class AddedMember:
    name: Text
    value: Any
    after: Text | None = None
    first: bool = False


@attrs.frozen
class EnumChange:
    remove: tuple[Text, ...] = ()
    add: tuple[AddedMember, ...] = ()


@attrs.frozen
class EnumChanges:
    remove: tuple[Text, ...] = ()
    add: dict[str, NewEnum] = attrs.field(factory=dict)
    change: dict[str, EnumChange] = attrs.field(factory=dict)


@attrs.frozen
class DeviationChanges:
    fixed: dict[str, Text] = attrs.field(factory=dict)
    moot: dict[str, Text] = attrs.field(factory=dict)
    """Deviations no request of the line can reach (why), dropped from its tables."""
    unknown: tuple[Text, ...] = ()
    confirmed: tuple[Text, ...] = ()
    add: tuple[DeviationEntry, ...] = ()


@attrs.frozen
class UnknownEntry:
    about: Text
    text: Text


@attrs.frozen
class LineFile:
    """A protocol line: its description, and what it changes against its `base` line."""

    line: Text
    title: Text
    sdk_releases: TextList
    enum_release: Text
    server_builds: TextList
    changes: TextList
    base: Text | None = None
    permissions: PermissionsEntry | None = None
    handshake: HandshakeEntry = HandshakeEntry()
    wire: dict[str, Text] = attrs.field(factory=dict)
    catalogue: CatalogueChanges = CatalogueChanges()
    resources: ResourceChanges = ResourceChanges()
    query: QueryChanges = QueryChanges()
    lifecycle: dict[str, MachineChanges] = attrs.field(factory=dict)
    enums: EnumChanges | None = None
    deviations: DeviationChanges = DeviationChanges()
    unknown: tuple[UnknownEntry, ...] = ()


# ---------------------------------------------------------------------------------------------
# The strict converter


class _Wrong(Exception):
    """A value of the wrong shape; the message says what was expected."""


def _text(value: Any, _: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _Wrong(f"must be a non-empty string, got {value!r}")
    return value


def _string(value: Any, _: Any) -> str:
    if not isinstance(value, str):
        raise _Wrong(f"must be a string, got {value!r}")
    return value


def _integer(value: Any, _: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Wrong(f"must be an integer, got {value!r}")
    return value


def _boolean(value: Any, _: Any) -> bool:
    if not isinstance(value, bool):
        raise _Wrong(f"must be true or false, got {value!r}")
    return value


def _names(value: Any, _: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) and v for v in items):
        raise _Wrong(f"must be a name or a non-empty array of names, got {value!r}")
    return tuple(items)


def _text_list(value: Any, _: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise _Wrong(f"must be a non-empty array of non-empty strings, got {value!r}")
    return tuple(value)


def _semver(value: Any, _: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"\d+\.\d+\.\d+(-[0-9A-Za-z.]+)?", value):
        raise _Wrong(f"must be a semantic version, got {value!r}")
    return value


def _byte_count(value: Any, _: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise _Wrong(f"must be a positive number of bytes, got {value!r}")
    return value


def _member(value: Any, _: Any) -> tuple[str, Any]:
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)):
        raise _Wrong(f"an enum member is a [name, value] pair, got {value!r}")
    return (value[0], value[1])


def _literal(cl: Any) -> Callable[[Any, Any], Any]:
    allowed = typing.get_args(cl)

    def hook(value: Any, _: Any) -> Any:
        if value not in allowed:
            raise _Wrong(f"must be one of {', '.join(map(str, allowed))}, got {value!r}")
        return value

    return hook


def _items(
    converter: cattrs.Converter, cl: Any, pairs: Iterator[tuple[int | str, Any]], of: Any
) -> list[Any]:
    """Structure each value as `of`, collecting every failure with its index or key."""
    out, errors = [], []
    for index, value in pairs:
        try:
            out.append(converter.structure(value, of))
        except Exception as exc:
            exc.add_note(IterableValidationNote(f"@ {index!r}", index, of))
            errors.append(exc)
    if errors:
        raise IterableValidationError(f"While structuring {cl!r}", errors, cl)
    return out


def _origin(t: Any) -> Any:
    return typing.get_origin(t)


def _make_converter() -> cattrs.Converter:
    c = cattrs.Converter(forbid_extra_keys=True)
    c.register_structure_hook(Text, _text)
    c.register_structure_hook(Route, _text)
    c.register_structure_hook(str, _string)
    c.register_structure_hook(int, _integer)
    c.register_structure_hook(bool, _boolean)
    c.register_structure_hook(Names, _names)
    c.register_structure_hook(TextList, _text_list)
    c.register_structure_hook(SemVer, _semver)
    c.register_structure_hook(ByteCount, _byte_count)
    c.register_structure_hook(Member, _member)
    c.register_structure_hook(Any, lambda value, _: value)
    c.register_structure_hook_factory(lambda t: _origin(t) is Literal, _literal)

    def mapping(cl: Any) -> Callable[[Any, Any], Any]:
        of = typing.get_args(cl)[1]

        def hook(value: Any, _: Any) -> dict[str, Any]:
            if not isinstance(value, dict):
                raise _Wrong(f"must be a table, got {value!r}")
            return dict(zip(value, _items(c, cl, iter(value.items()), of), strict=True))

        return hook

    def array(cl: Any) -> Callable[[Any, Any], Any]:
        of = typing.get_args(cl)[0]

        def hook(value: Any, _: Any) -> tuple[Any, ...]:
            if not isinstance(value, list):
                raise _Wrong(f"must be an array, got {value!r}")
            return tuple(_items(c, cl, enumerate(value), of))

        return hook

    def table(cl: Any) -> Callable[[Any, Any], Any]:
        inner = make_dict_structure_fn(cl, c, _cattrs_forbid_extra_keys=True)

        def hook(value: Any, _: Any) -> Any:
            if not isinstance(value, dict):
                raise _Wrong(f"must be a table, got {value!r}")
            return inner(value, cl)

        return hook

    def routes(value: Any, _: Any) -> Any:
        if isinstance(value, dict):
            if "probe" in value:
                raise _Wrong(
                    "a row names no probe: the probe of an operation is the [probes] entry "
                    "of actions.toml that settles it"
                )
            return c.structure(value, VerdictRoutes)
        return _text(value, Route)

    def failed(value: Any, _: Any) -> Any:
        return c.structure(value, dict[str, Route]) if isinstance(value, dict) else _text(value, _)

    def patch(value: Any, _: Any) -> Any:
        if not isinstance(value, dict):
            raise _Wrong(f"a patch must be a table, got {value!r}")
        kind = next((cl for key, cl in _PATCH_KEYS if key in value), CellPatch)
        return c.structure(value, kind)

    c.register_structure_hook_factory(
        lambda t: _origin(t) is dict and typing.get_args(t)[0] is str, mapping
    )
    c.register_structure_hook_factory(
        lambda t: _origin(t) is tuple and typing.get_args(t)[1:] == (...,), array
    )
    c.register_structure_hook_factory(attrs.has, table)
    c.register_structure_hook(Route | VerdictRoutes | None, routes)
    c.register_structure_hook(Route | dict[str, Route] | None, failed)
    c.register_structure_hook(PatchEntry, patch)
    return c


_CONVERTER = _make_converter()

# Where a key path starts a table of its own: [operations.X], [probes.X], [resources.X] and its
# rows and facts, [profiles.X], and query.toml's [operators.X], [kinds.X], [sections.X]; rows of
# an array of tables are named with their `id`.
_KEYED = ("operations", "probes", "resources", "profiles", "operators", "kinds", "sections")
_ARRAYS = {"transitions": "transitions", "deviations": ""}


def structure(file: str, raw: Mapping[str, Any], cl: type[T]) -> T:
    """`raw` (a parsed file of `specs/`) as `cl`; SpecError names the first wrong key."""
    try:
        return _CONVERTER.structure(raw, cl)
    except Exception as exc:
        path, problem = next(_failures(exc, []), ([], f"{type(exc).__name__}: {exc}"))
        raise _located(file, raw, path, problem) from exc


def _failures(exc: BaseException, path: list[int | str]) -> Iterator[tuple[list[int | str], str]]:
    """Each failure inside a cattrs error: the key path to it and what is wrong."""
    if isinstance(exc, ClassValidationError | IterableValidationError):
        with_notes, without = exc.group_exceptions()
        for inner, note in with_notes:
            step = note.name if isinstance(note, AttributeValidationNote) else note.index
            yield from _failures(inner, [*path, step])
        for inner in without:
            yield from _failures(inner, path)
    elif isinstance(exc, ForbiddenExtraKeysError):
        yield path, f"unknown key(s) {', '.join(sorted(exc.extra_fields))}"
    elif isinstance(exc, KeyError) and path:
        yield path[:-1], f"missing key {path[-1]!r}"
    elif isinstance(exc, _Wrong):
        yield path, str(exc)
    else:
        yield path, f"{type(exc).__name__}: {exc}"


def _located(file: str, raw: Mapping[str, Any], path: list[int | str], problem: str) -> SpecError:
    """The SpecError for `path` in `raw`: the table the path is in, and the entry within it."""
    if not path:
        return SpecError(file, "-", "-", problem)
    head, rest = str(path[0]), path[1:]
    if head in _KEYED and rest:
        head, rest = f"{head}.{rest[0]}", rest[1:]
        if head.startswith("resources.") and rest and rest[0] in ("rows", "facts"):
            head, rest = f"{head}.{rest[0]}", rest[1:]
    entry = ""
    if head in _ARRAYS and rest and isinstance(rest[0], int):
        row = raw.get(head, [])[rest[0]]
        rid = row.get("id") if isinstance(row, dict) else None
        entry = f"{_ARRAYS[head]}[{rest[0]}]" + (f" ({rid})" if isinstance(rid, str) else "")
        rest = rest[1:]
    for key in rest:
        entry += f"[{key}]" if isinstance(key, int) else (f".{key}" if entry else str(key))
    return SpecError(file, head, entry or "-", problem)
