"""The enum set of a protocol line, as data, and its patches.

The 0.3 set is read from `fsm.enums` (equal to mosaicolabs 0.3.2); a later line's
set is its base's with the classes and members its line file adds, removes or changes. Built
classes carry names and values only (no methods): they say what a release's enum module
holds, and are what a line's tables are checked against.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import attrs

from fsm import enums as seed_enums
from fsm.errors import SpecError

if TYPE_CHECKING:
    from fsm.spec.schema import AddedMember, EnumChange, EnumChanges

__all__ = ["EnumDef", "EnumSet", "python_enums", "seed_enum_set"]

Value = str | int
Kind = Literal["str", "int"]


@attrs.frozen
class EnumDef:
    """One enum class: its name, whether its values are strings or integers (an IntEnum), and
    its members in definition order."""

    name: str
    kind: Kind
    members: tuple[tuple[str, Value], ...]

    def as_dict(self) -> dict[str, Value]:
        return dict(self.members)


@attrs.frozen
class EnumSet:
    """The enum classes of a line, by name, and the aliases (another public name of a class,
    such as SequenceStatus for SessionStatus)."""

    classes: Mapping[str, EnumDef]
    aliases: Mapping[str, str]

    def names(self) -> list[str]:
        """Every public name: classes and aliases, sorted."""
        return sorted([*self.classes, *self.aliases])

    def resolve(self, name: str) -> EnumDef | None:
        return self.classes.get(self.aliases.get(name, name))

    def build(self) -> dict[str, type[enum.Enum]]:
        """Python enum classes for every public name (an alias maps to its class)."""
        built: dict[str, type[enum.Enum]] = {}
        for d in self.classes.values():
            factory: Any = enum.IntEnum if d.kind == "int" else enum.Enum
            built[d.name] = factory(d.name, list(d.members))
        for alias, target in self.aliases.items():
            built[alias] = built[target]
        return built

    def patched(self, where: SpecError, changes: EnumChanges) -> EnumSet:
        """This set with the `[enums]` table of a line file (checked by `fsm.spec.schema`)
        applied; `where` names the file and table in errors."""
        return _patch(self, where, changes)


def seed_enum_set() -> EnumSet:
    """The enums of `fsm.enums`, as data."""
    classes: dict[str, EnumDef] = {}
    aliases: dict[str, str] = {}
    for name in seed_enums.__all__:
        cls = getattr(seed_enums, name)
        if cls.__name__ != name:
            aliases[name] = cls.__name__
            continue
        kind: Kind = "int" if issubclass(cls, enum.IntEnum) else "str"
        classes[name] = EnumDef(name, kind, tuple((m.name, m.value) for m in cls))
    return EnumSet(classes, aliases)


_BUILT: dict[int, tuple[EnumSet, dict[str, type[enum.Enum]]]] = {}


def python_enums(enums: EnumSet) -> dict[str, type[enum.Enum]]:
    """The Python enum classes of a line, by public name: the class of `fsm.enums` itself
    where the line's enum is the seed's, member for member (so 0.3 code compares as before),
    a class built from the line's data where it differs. Built once per enum set."""
    kept = _BUILT.get(id(enums))
    if kept is not None and kept[0] is enums:
        return kept[1]
    seed = seed_enum_set()
    built = enums.build()
    for name, d in enums.classes.items():
        if seed.classes.get(name) == d:
            built[name] = getattr(seed_enums, name)
    for alias, target in enums.aliases.items():
        built[alias] = built[target]
    _BUILT[id(enums)] = (enums, built)
    return built


def _fail(where: SpecError, entry: str, problem: str) -> SpecError:
    return SpecError(where.file, where.table, entry, problem)


def _value(where: SpecError, entry: str, kind: Kind, value: Any) -> Value:
    ok = (
        isinstance(value, int) and not isinstance(value, bool)
        if kind == "int"
        else isinstance(value, str) and bool(value)
    )
    if not ok:
        raise _fail(where, entry, f"a {kind} enum needs {kind} values, got {value!r}")
    return value  # type: ignore[no-any-return]


def _checked(where: SpecError, entry: str, d: EnumDef) -> EnumDef:
    names = [n for n, _ in d.members]
    values = [v for _, v in d.members]
    if not names:
        raise _fail(where, entry, "an enum needs at least one member")
    for n in names:
        if not n.isidentifier() or (n.startswith("__")):
            raise _fail(where, entry, f"{n!r} is not a member name")
    if len(set(names)) != len(names):
        raise _fail(where, entry, f"duplicate member names in {names}")
    if len(set(values)) != len(values):
        raise _fail(where, entry, f"duplicate member values in {values}")
    return d


def _patch(base: EnumSet, where: SpecError, changes: EnumChanges) -> EnumSet:
    classes = dict(base.classes)
    aliases = dict(base.aliases)
    for gone in changes.remove:
        if gone not in classes:
            raise _fail(where, "enums.remove", f"no enum {gone!r} to remove")
        del classes[gone]
        aliases = {a: t for a, t in aliases.items() if t != gone}
    for name, entry in changes.add.items():
        e = f"enums.add.{name}"
        if name in classes or name in aliases:
            raise _fail(where, e, f"enum {name!r} exists already")
        members = tuple((n, _value(where, e, entry.kind, v)) for n, v in entry.members)
        classes[name] = _checked(where, e, EnumDef(name, entry.kind, members))
    for name, change in changes.change.items():
        e = f"enums.change.{name}"
        if name not in classes:
            raise _fail(where, e, f"no enum {name!r} to change")
        classes[name] = _changed_enum(where, e, classes[name], change)
    return EnumSet(classes, aliases)


def _changed_enum(where: SpecError, e: str, d: EnumDef, change: EnumChange) -> EnumDef:
    name = d.name
    members = list(d.members)
    for member in change.remove:
        if member not in dict(members):
            raise _fail(where, e, f"{name} has no member {member!r} to remove")
        members = [m for m in members if m[0] != member]
    for i, add in enumerate(change.add):
        ae = f"{e}.add[{i}]"
        if add.name in dict(members):
            raise _fail(where, ae, f"{add.name!r} is not a new member name of {name}")
        value = _value(where, ae, d.kind, add.value)
        members.insert(_position(where, ae, name, members, add), (add.name, value))
    return _checked(where, e, attrs.evolve(d, members=tuple(members)))


def _position(where: SpecError, ae: str, name: str, members: list[Any], add: AddedMember) -> int:
    """Where an added member goes: `first`, right `after` a member, or last."""
    if add.after is not None and add.first:
        raise _fail(where, ae, "give 'after' or 'first', not both")
    if add.first:
        return 0
    if add.after is not None:
        names = [m[0] for m in members]
        if add.after not in names:
            raise _fail(where, ae, f"{name} has no member {add.after!r}")
        return names.index(add.after) + 1
    return len(members)
