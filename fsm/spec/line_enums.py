"""The enum set of a protocol line, as data, and its patches.

The 0.3 set is read from `fsm.enums` (equal to mosaicolabs 0.3.2); a later line's
set is its base's with the classes and members its line file adds, removes or changes. Built
classes carry names and values only (no methods): they say what a release's enum module
holds, and are what a line's tables are checked against.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import attrs

from fsm import enums as seed_enums
from fsm.errors import SpecError

__all__ = ["EnumDef", "EnumSet", "seed_enum_set"]

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

    def patched(self, where: SpecError, raw: Any) -> EnumSet:
        """This set with the `[enums]` table of a line file applied; `where` names the file
        and table in errors."""
        return _patch(self, where, raw)


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


def _fail(where: SpecError, entry: str, problem: str) -> SpecError:
    return SpecError(where.file, where.table, entry, problem)


def _only(where: SpecError, entry: str, raw: Mapping[str, Any], keys: Iterable[str]) -> None:
    extra = sorted(set(raw) - set(keys))
    if extra:
        raise _fail(where, entry, f"unknown key(s) {', '.join(extra)}")


def _table(where: SpecError, entry: str, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _fail(where, entry, f"expected a table, got {raw!r}")
    return raw


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


def _patch(base: EnumSet, where: SpecError, raw: Any) -> EnumSet:
    raw = _table(where, "enums", raw)
    _only(where, "enums", raw, ("remove", "add", "change"))
    classes = dict(base.classes)
    aliases = dict(base.aliases)
    removed = raw.get("remove", [])
    if not isinstance(removed, list) or not all(isinstance(n, str) for n in removed):
        raise _fail(where, "enums.remove", f"expected a list of enum names, got {removed!r}")
    for name in removed:
        if name not in classes:
            raise _fail(where, "enums.remove", f"no enum {name!r} to remove")
        del classes[name]
        aliases = {a: t for a, t in aliases.items() if t != name}
    for name, entry in _table(where, "enums.add", raw.get("add", {})).items():
        e = f"enums.add.{name}"
        if name in classes or name in aliases:
            raise _fail(where, e, f"enum {name!r} exists already")
        classes[name] = _new_enum(where, e, name, entry)
    for name, entry in _table(where, "enums.change", raw.get("change", {})).items():
        e = f"enums.change.{name}"
        if name not in classes:
            raise _fail(where, e, f"no enum {name!r} to change")
        classes[name] = _changed_enum(where, e, classes[name], entry)
    return EnumSet(classes, aliases)


def _new_enum(where: SpecError, e: str, name: str, entry: Any) -> EnumDef:
    body = _table(where, e, entry)
    _only(where, e, body, ("kind", "members"))
    kind = body.get("kind")
    if kind not in ("str", "int"):
        raise _fail(where, e, f"kind must be 'str' or 'int', got {kind!r}")
    members = body.get("members")
    if not isinstance(members, list) or not all(
        isinstance(m, list) and len(m) == 2 and isinstance(m[0], str) for m in members
    ):
        raise _fail(where, e, "members must be a list of [name, value] pairs")
    return _checked(
        where,
        e,
        EnumDef(name, kind, tuple((m[0], _value(where, e, kind, m[1])) for m in members)),
    )


def _changed_enum(where: SpecError, e: str, d: EnumDef, entry: Any) -> EnumDef:
    name = d.name
    body = _table(where, e, entry)
    _only(where, e, body, ("remove", "add"))
    members = list(d.members)
    removed_members = body.get("remove", [])
    if not isinstance(removed_members, list):
        raise _fail(where, e, f"'remove' must be a list of member names, got {removed_members!r}")
    for member in removed_members:
        if not isinstance(member, str) or member not in dict(members):
            raise _fail(where, e, f"{name} has no member {member!r} to remove")
        members = [m for m in members if m[0] != member]
    added = body.get("add", [])
    if not isinstance(added, list):
        raise _fail(where, e, f"'add' must be a list of members, got {added!r}")
    for i, add in enumerate(added):
        ae = f"{e}.add[{i}]"
        spec = _table(where, ae, add)
        _only(where, ae, spec, ("name", "value", "after", "first"))
        member = spec.get("name")
        if not isinstance(member, str) or member in dict(members):
            raise _fail(where, ae, f"{member!r} is not a new member name of {name}")
        value = _value(where, ae, d.kind, spec.get("value"))
        members.insert(_position(where, ae, name, members, spec), (member, value))
    return _checked(where, e, attrs.evolve(d, members=tuple(members)))


def _position(
    where: SpecError, ae: str, name: str, members: list[Any], spec: Mapping[str, Any]
) -> int:
    """Where an added member goes: `first`, right `after` a member, or last."""
    if "after" in spec and spec.get("first"):
        raise _fail(where, ae, "give 'after' or 'first', not both")
    if spec.get("first"):
        return 0
    if "after" in spec:
        names = [m[0] for m in members]
        if spec["after"] not in names:
            raise _fail(where, ae, f"{name} has no member {spec['after']!r}")
        return names.index(spec["after"]) + 1
    return len(members)
