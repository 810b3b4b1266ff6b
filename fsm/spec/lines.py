"""Protocol lines as data: `specs/lines/<line>.toml` and `specs/lines/wire.toml`.

The 0.3 line is the tables of `specs/*.toml` as they are. Every later line names a `base`
line and says what it changes: catalogue entries (added, removed, changed), resource tables
removed, lifecycle rows (replaced, added, removed, new states and triggers), the permission
model, the handshake, the wire shape of each aspect that changed, the enum module, which
known deviations it fixes or leaves unknown, and what is not known (`[[unknown]]`).

`load_line` applies the chain of patches to the parsed TOML documents and builds the line's
`Spec` with the same loader and the same soundness checks as 0.3, checked against the line's
own enums and permissions. This module is the registry of lines: code that differs per line
asks a `Line` for its data (a wire shape name, an enum set, a table), never for its number.
"""

from __future__ import annotations

import copy
import re
import tomllib
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

import attrs

from fsm.errors import ArgumentError, SpecError
from fsm.spec import schema
from fsm.spec.line_enums import EnumSet, seed_enum_set
from fsm.spec.load import load_documents, parse_spec
from fsm.spec.model import Operation, Spec
from fsm.spec.vocabulary import Vocabulary

__all__ = [
    "DEFAULT_LINE",
    "Handshake",
    "KnownIn",
    "Line",
    "PermissionModel",
    "Unknown",
    "WireAspect",
    "client_deviation_ranges",
    "line_names",
    "load_line",
    "load_lines",
    "load_wire",
    "resolve_line",
]

T = TypeVar("T")

DEFAULT_LINE = "0.3"
"""The line of `specs/*.toml` itself: mosaicolabs 0.3.x."""

LINES_DIR = "lines"
WIRE_FILE = "wire.toml"
_LINE_NAME = re.compile(r"^\d+\.\d+$")
_INFO_CONFIG = tuple(f.name for f in attrs.fields(schema.InfoConfig))
_TOPICS = ("handshake", "permissions", "deviations", "enums", "catalogue", "query")
"""Subjects an `[[unknown]]` entry may name besides the line's own entries."""
SERVER_PARTIES = ("mosaicod-0.3",)
SEED_CLIENT_PARTY = "sdk-0.3.2"


@attrs.frozen
class WireAspect:
    """A part of the wire that changed between lines, with every shape it has taken."""

    name: str
    doc: str
    shapes: Mapping[str, str]
    examples: Mapping[str, str]
    fields: Mapping[str, tuple[str, ...]]
    """Per shape, where known: its JSON keys or envelope columns, in order."""


@attrs.frozen
class PermissionModel:
    """`ranked`: each level includes those before it (read < write < delete < manage).
    `granular`: independent bits a key holds in any combination."""

    model: Literal["ranked", "granular"]
    values: tuple[str, ...]

    def covers(self, held: Iterable[str], required: str) -> bool:
        """True when a key holding `held` may run an operation that needs `required`."""
        if required == "none":
            return True
        held = set(held)
        if self.model == "granular":
            return required in held
        rank = self.values.index(required)
        return any(self.values.index(h) >= rank for h in held if h in self.values)


@attrs.frozen
class Handshake:
    """What the line's server answers to its version request: `version` (None: not known)
    and, where the line's connect reads them, its gRPC size limits."""

    version: str | None
    config: Mapping[str, int]


@attrs.frozen
class Unknown:
    """Something that is not known: `about` names the entry it concerns, `stated_in` the line
    that stated it (a later line inherits it while the entry exists)."""

    about: str
    text: str
    stated_in: str


@attrs.frozen
class Line:
    """One protocol line: its description, its data, and its patched tables (`spec`)."""

    name: str
    base: str | None
    chain: tuple[str, ...]
    title: str
    sdk_releases: tuple[str, ...]
    enum_release: str
    server_builds: tuple[str, ...]
    changes: tuple[str, ...]
    permissions: PermissionModel
    handshake: Handshake
    wire: Mapping[str, str]
    enums: EnumSet
    spec: Spec
    fixed_deviations: Mapping[str, str]
    moot_deviations: Mapping[str, str]
    """Deviations of an earlier line no request of this one can reach, with why."""
    unknown_deviations: frozenset[str]
    unknown: tuple[Unknown, ...]
    documents: Mapping[str, Any] = attrs.field(repr=False, eq=False)
    """The patched TOML documents `spec` was parsed from (a later line patches a copy)."""

    def vocabulary(self) -> Vocabulary:
        return _vocabulary(self.chain, self.enums, self.permissions)

    def pick(self, table: Mapping[str, T], aspect: str, who: str) -> T:
        """The entry of `who`'s `table` (one entry per shape name) for the shape this line
        speaks for `aspect`; a SpecError when `who` has none for it."""
        shape = self.wire[aspect]
        if shape not in table:
            raise SpecError(
                f"{LINES_DIR}/{self.name}.toml",
                "wire",
                aspect,
                f"{who} has no entry for the shape {shape!r} (it knows {sorted(table)})",
            )
        return table[shape]

    @property
    def client_parties(self) -> tuple[str, ...]:
        """The SDKs whose deviations this line's tables may name: the releases of every line
        of its chain (a deviation stays until a line fixes it)."""
        return self.vocabulary().client_parties


@attrs.frozen
class KnownIn:
    """The SDK releases a client deviation is known in: from the first line whose tables name
    it to the last line before the one that fixes it."""

    deviation: str
    releases: tuple[str, ...]
    fixed_in: str | None
    """The line that fixes it (None: no line does yet)."""

    def __str__(self) -> str:
        first, last = self.releases[0], self.releases[-1]
        span = first if first == last else f"{first} to {last}"
        fixed = (
            f"; fixed in line {self.fixed_in}" if self.fixed_in else "; not fixed in any line yet"
        )
        return f"SDK {span}{fixed}"


# ---------------------------------------------------------------------------------------------
# Reading files


def _read(directory: Path | None, name: str) -> dict[str, Any]:
    where = f"{LINES_DIR}/{name}"
    try:
        if directory is None:
            text = resources.files("specs").joinpath(LINES_DIR, name).read_text(encoding="utf-8")
        else:
            text = (directory / LINES_DIR / name).read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(where, "-", "file", f"cannot be read: {exc}") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(where, "-", "file", f"not valid TOML: {exc}") from exc


def _line_files(directory: Path | None) -> list[str]:
    if directory is None:
        entries = [p.name for p in resources.files("specs").joinpath(LINES_DIR).iterdir()]
    else:
        entries = [p.name for p in (directory / LINES_DIR).iterdir()]
    return sorted(n for n in entries if n.endswith(".toml") and n != WIRE_FILE)


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split("."))


def line_names(directory: Path | None = None) -> list[str]:
    """The lines described under `specs/lines/` (or `directory/lines/`), oldest first."""
    names = []
    for file in _line_files(directory):
        name = file.removesuffix(".toml")
        if not _LINE_NAME.match(name):
            raise SpecError(
                f"{LINES_DIR}/{file}", "-", "file", "a line file is named <major>.<minor>.toml"
            )
        names.append(name)
    return sorted(names, key=_version_key)


def load_wire(directory: Path | None = None) -> dict[str, WireAspect]:
    """The wire aspects and their shapes (`specs/lines/wire.toml`)."""
    file = f"{LINES_DIR}/{WIRE_FILE}"
    doc = schema.structure(file, _read(directory, WIRE_FILE), schema.WireFile)
    aspects = {}
    for name, entry in doc.aspects.items():
        if not entry.shapes:
            raise SpecError(file, "aspects", name, "an aspect needs at least one shape")
        aspects[name] = WireAspect(
            name,
            entry.doc,
            {shape: body.doc for shape, body in entry.shapes.items()},
            {shape: b.example for shape, b in entry.shapes.items() if b.example is not None},
            {shape: b.fields for shape, b in entry.shapes.items() if b.fields is not None},
        )
    return aspects


# ---------------------------------------------------------------------------------------------
# Where an error is


@attrs.frozen
class _Where:
    file: str
    table: str

    def fail(self, entry: str, problem: str) -> SpecError:
        return SpecError(self.file, self.table, entry, problem)


# ---------------------------------------------------------------------------------------------
# Loading a line


_CACHE: dict[tuple[str, str], Line] = {}


def load_line(name: str = DEFAULT_LINE, directory: Path | None = None) -> Line:
    """The line `name` with its patched, checked tables. `directory` is a spec directory
    holding the 0.3 tables and a `lines/` directory (default: the packaged `specs/`)."""
    key = (name, "" if directory is None else str(directory.resolve()))
    if key not in _CACHE:
        _CACHE[key] = _build(name, directory, load_wire(directory), ())
    return _CACHE[key]


def resolve_line(protocol: str | Line | None) -> Line:
    """A line given by name (None: the default line) or as itself; ArgumentError for a name
    no file of `specs/lines/` has."""
    if isinstance(protocol, Line):
        return protocol
    name = DEFAULT_LINE if protocol is None else protocol
    if name not in line_names():
        raise ArgumentError(f"unknown protocol line {name!r}; choose from {line_names()}")
    return load_line(name)


def load_lines(directory: Path | None = None) -> dict[str, Line]:
    """Every line, oldest first."""
    return {name: load_line(name, directory) for name in line_names(directory)}


def _vocabulary(chain: tuple[str, ...], enums: EnumSet, perms: PermissionModel) -> Vocabulary:
    return Vocabulary(
        enums=enums.build(),
        permissions=perms.values,
        server_parties=SERVER_PARTIES,
        client_parties=(SEED_CLIENT_PARTY, *(f"sdk-{n}" for n in chain[1:])),
    )


def _build(
    name: str, directory: Path | None, wire: Mapping[str, WireAspect], seen: tuple[str, ...]
) -> Line:
    file = f"{LINES_DIR}/{name}.toml"
    if name in seen:
        raise SpecError(file, "-", "base", f"the bases loop: {' -> '.join((*seen, name))}")
    if name not in line_names(directory):
        raise SpecError(
            file, "-", "file", f"no such line; lines: {', '.join(line_names(directory))}"
        )
    raw = _read(directory, f"{name}.toml")
    doc = schema.structure(file, raw, schema.LineFile)
    r = _Where(file, "-")
    if doc.line != name:
        raise r.fail("line", f"must be {name!r} (the file's name), got {doc.line!r}")
    base = _base(r, name, doc.base, directory, wire, seen)
    documents = copy.deepcopy(dict(base.documents)) if base else load_documents(directory)
    chain = (*base.chain, name) if base else (name,)
    if doc.enum_release not in doc.sdk_releases:
        raise r.fail(
            "enum_release", f"{doc.enum_release!r} is not one of sdk_releases {doc.sdk_releases}"
        )
    enums = base.enums if base is not None else seed_enum_set()
    if doc.enums is not None:
        enums = enums.patched(SpecError(file, "enums", "-", ""), doc.enums)
    perms = _permissions(
        _Where(file, "permissions"), doc.permissions, base.permissions if base else None, enums
    )
    config = attrs.asdict(doc.handshake.config)
    handshake = Handshake(doc.handshake.version, {k: v for k, v in config.items() if v})
    line_wire = _wire(_Where(file, "wire"), doc.wire, base.wire if base else {}, wire)

    fixed, unknown_devs = _apply_changes(file, doc, raw, documents, base)
    moot = {**(base.moot_deviations if base else {}), **doc.deviations.moot}
    vocabulary = _vocabulary(chain, enums, perms)
    try:
        spec = parse_spec(documents, vocabulary=vocabulary)
    except SpecError as exc:
        raise SpecError(
            file,
            f"{exc.file} [{exc.table}]",
            exc.entry,
            f"after this line's changes: {exc.problem}",
        ) from exc
    _check_wire_against_catalogue(_Where(file, "wire"), line_wire, wire, spec, handshake)
    unknown = _unknowns(
        _Where(file, "unknown"),
        doc.unknown,
        spec,
        line_wire,
        {**fixed, **moot},
        name,
        base.unknown if base else (),
    )
    if handshake.version is None and not any(u.about == "handshake" for u in unknown):
        raise r.fail(
            "handshake", "no version given: add an [[unknown]] about 'handshake' saying why"
        )
    return Line(
        name=name,
        base=base.name if base is not None else None,
        chain=chain,
        title=doc.title,
        sdk_releases=doc.sdk_releases,
        enum_release=doc.enum_release,
        server_builds=doc.server_builds,
        changes=doc.changes,
        permissions=perms,
        handshake=handshake,
        wire=line_wire,
        enums=enums,
        spec=spec,
        fixed_deviations=fixed,
        moot_deviations=moot,
        unknown_deviations=unknown_devs,
        unknown=unknown,
        documents=documents,
    )


def _base(
    r: _Where,
    name: str,
    base: str | None,
    directory: Path | None,
    wire: Mapping[str, WireAspect],
    seen: tuple[str, ...],
) -> Line | None:
    """The loaded base line of `name` (None for the root line)."""
    if name == DEFAULT_LINE:
        if base is not None:
            raise r.fail("base", f"line {DEFAULT_LINE} is the root: it has no base")
        return None
    if base is None:
        raise r.fail("base", f"a line other than {DEFAULT_LINE} names its base line")
    if not _LINE_NAME.match(base) or _version_key(base) >= _version_key(name):
        raise r.fail("base", f"the base of {name} must be an earlier line, got {base!r}")
    return _build(base, directory, wire, (*seen, name))


def _apply_changes(
    file: str,
    doc: schema.LineFile,
    raw: Mapping[str, Any],
    documents: dict[str, dict[str, Any]],
    base: Line | None,
) -> tuple[dict[str, str], frozenset[str]]:
    """Patch the base's `documents` with the line's changes; the fixed deviations (with why)
    and the deviations left unknown."""
    changes = raw.get("catalogue", {})
    _patch_catalogue(_Where(file, "catalogue"), doc.catalogue, changes, documents)
    _remove(_Where(file, "resources"), doc.resources.remove, documents, "resources.toml")
    _patch_query(_Where(file, "query"), doc.query, documents)
    _patch_lifecycle(_Where(file, "lifecycle"), doc.lifecycle, raw.get("lifecycle", {}), documents)
    return _patch_deviations(
        _Where(file, "deviations"),
        doc.deviations,
        raw.get("deviations", {}).get("add", []),
        documents,
        base.unknown_deviations if base else frozenset(),
    )


def _permissions(
    r: _Where,
    entry: schema.PermissionsEntry | None,
    base: PermissionModel | None,
    enums: EnumSet,
) -> PermissionModel:
    if entry is None:
        if base is None:
            raise r.fail("-", "the root line states its permission model")
        perms = base
    else:
        values, other = (
            (entry.levels, entry.bits) if entry.model == "ranked" else (entry.bits, entry.levels)
        )
        key = "levels" if entry.model == "ranked" else "bits"
        if values is None or other is not None:
            raise r.fail("-", f"a {entry.model} model lists its {key}, and only those")
        perms = PermissionModel(entry.model, values)
        if len(set(perms.values)) != len(perms.values) or "none" in perms.values:
            raise r.fail("-", f"permission values must be distinct and not 'none': {perms.values}")
    enum = enums.resolve("APIKeyPermissionEnum")
    if perms.model == "ranked":
        if enum is None or tuple(str(v) for _, v in enum.members) != perms.values:
            raise r.fail(
                "-",
                "a ranked model's levels are the values of the line's APIKeyPermissionEnum, in order",
            )
    elif enum is not None:
        raise r.fail("-", "a granular model has no APIKeyPermissionEnum (remove it under [enums])")
    return perms


def _wire(
    r: _Where, shapes: Mapping[str, str], base: Mapping[str, str], aspects: Mapping[str, WireAspect]
) -> dict[str, str]:
    result = dict(base)
    for aspect, shape in shapes.items():
        if aspect not in aspects:
            raise r.fail(aspect, f"unknown wire aspect; aspects: {', '.join(aspects)}")
        if shape not in aspects[aspect].shapes:
            raise r.fail(
                aspect, f"unknown shape {shape!r}; shapes: {', '.join(aspects[aspect].shapes)}"
            )
        if base.get(aspect) == shape:
            raise r.fail(aspect, f"the base line speaks {shape!r} already: drop the entry")
        result[aspect] = shape
    missing = [a for a in aspects if a not in result]
    if missing:
        raise r.fail("-", f"no shape for aspect(s) {', '.join(missing)}")
    return result


def _patch_catalogue(
    r: _Where,
    changes: schema.CatalogueChanges,
    raw: Mapping[str, Any],
    documents: dict[str, dict[str, Any]],
) -> None:
    """`changes` is the checked `[catalogue]` table, `raw` the same table as parsed (what is
    copied into actions.toml)."""
    actions = documents["actions.toml"]
    _remove(r, changes.remove, documents, "actions.toml", "operations")
    ops = actions.setdefault("operations", {})
    for name in changes.add:
        if name in ops:
            raise r.fail(f"add.{name}", "the operation exists already: change it instead")
        ops[name] = copy.deepcopy(raw["add"][name])
    for name in changes.change:
        if name not in ops:
            raise r.fail(f"change.{name}", "no such operation to change")
        body = raw["change"][name]
        if not body:
            raise r.fail(f"change.{name}", "changes nothing")
        for key, value in body.items():
            if ops[name].get(key) == value:
                raise r.fail(f"change.{name}.{key}", "the base line has this value already")
            ops[name][key] = copy.deepcopy(value)
    if changes.common_errors is not None:
        if not changes.common_errors:
            raise r.fail("common_errors", "expected a non-empty array of {kind, when}")
        if raw["common_errors"] == actions.get("common_errors"):
            raise r.fail("common_errors", "the base line has these already")
        actions["common_errors"] = copy.deepcopy(raw["common_errors"])
    for table in ("field_types", "probes", "shapes"):
        actions.setdefault(table, {}).update(copy.deepcopy(raw.get(table, {})))


def _remove(
    r: _Where,
    names: Iterable[str],
    documents: dict[str, dict[str, Any]],
    file: str,
    table: str = "resources",
) -> None:
    """Delete each of `names` from `table` of `file`; each must be there."""
    entries = documents[file].setdefault(table, {})
    for name in names:
        if name not in entries:
            what = "resource" if table == "resources" else "operation"
            raise r.fail("remove", f"no {what} {name!r} to remove")
        del entries[name]


def _patch_query(
    r: _Where, changes: schema.QueryChanges, documents: dict[str, dict[str, Any]]
) -> None:
    """Delete each key path of `remove` from query.toml, then merge `merge` into it (tables
    key by key, any other value replaced). The grammar loader checks the result."""
    doc = documents["query.toml"]
    for i, path in enumerate(changes.remove):
        target: Any = doc
        for key in path[:-1]:
            target = target.get(key) if isinstance(target, dict) else None
        if not isinstance(target, dict) or path[-1] not in target:
            raise r.fail(f"remove[{i}]", f"query.toml has no {'.'.join(path)} to remove")
        del target[path[-1]]
    if changes.merge and _merged(doc, changes.merge) == doc:
        raise r.fail("merge", "the base line's grammar has all of this already")
    doc.update(_merged(doc, changes.merge))


def _merged(base: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _row_id(row: Any) -> str | None:
    """The `id` of a row or deviation table, when it is a string (the loader refuses others)."""
    rid = row.get("id") if isinstance(row, dict) else None
    return rid if isinstance(rid, str) else None


def _patch_lifecycle(
    r: _Where,
    changes: Mapping[str, schema.MachineChanges],
    raw: Mapping[str, Any],
    documents: dict[str, dict[str, Any]],
) -> None:
    """Per machine: `remove` rows by id, `replace` rows by id, `add_states` (a new state takes
    every row that leaves the state it is `like`), `triggers` (new ones), then `add` rows."""
    for machine, m in changes.items():
        file = f"{machine}.toml"
        if file not in documents or "machine" not in documents[file]:
            raise r.fail(machine, "not a machine of the spec")
        doc = documents[file]
        rows: list[Any] = doc.setdefault("transitions", [])
        for rid in m.remove:
            if rid not in [_row_id(row) for row in rows]:
                raise r.fail(f"{machine}.remove", f"no row {rid!r} to remove")
            rows[:] = [row for row in rows if _row_id(row) != rid]
        patch = raw[machine]
        _replace_rows(r, machine, patch.get("replace", []), rows)
        _add_states(r, machine, m.add_states, doc["machine"], rows)
        triggers = doc.setdefault("triggers", {})
        for name in m.triggers:
            if name in triggers:
                raise r.fail(f"{machine}.triggers.{name}", "the trigger exists already")
            triggers[name] = copy.deepcopy(patch["triggers"][name])
        ids = [_row_id(row) for row in rows]
        for i, row in enumerate(patch.get("add", [])):
            if _row_id(row) in ids:
                raise r.fail(f"{machine}.add[{i}]", f"row {_row_id(row)!r} exists: replace it")
            rows.append(copy.deepcopy(row))


def _replace_rows(r: _Where, machine: str, replace: list[Any], rows: list[Any]) -> None:
    ids = [_row_id(row) for row in rows]
    for i, row in enumerate(replace):
        replaced = _row_id(row)
        if replaced not in ids:
            raise r.fail(f"{machine}.replace[{i}]", f"no row {replaced!r} to replace")
        if rows[ids.index(replaced)] == row:
            raise r.fail(f"{machine}.replace[{i}]", f"row {replaced!r} is the base's already")
        rows[ids.index(replaced)] = copy.deepcopy(row)


def _add_states(
    r: _Where,
    machine: str,
    states: Mapping[str, schema.StateLike],
    head: dict[str, Any],
    rows: list[Any],
) -> None:
    for state, spec in states.items():
        e = f"{machine}.add_states.{state}"
        like = spec.like
        if state in head.get("states", []):
            raise r.fail(e, f"{state!r} is a state already")
        if like not in head.get("states", []):
            raise r.fail(e, f"'like' must name a state of {machine}, got {like!r}")
        head["states"] = [*head["states"], state]
        if like in head.get("terminals", []):
            head["terminals"] = [*head["terminals"], state]
        for row in rows:
            sources = row.get("source") if isinstance(row, dict) else None
            listed = [sources] if isinstance(sources, str) else sources
            if isinstance(listed, list) and like in listed:
                row["source"] = [*listed, state]


def _patch_deviations(
    r: _Where,
    changes: schema.DeviationChanges,
    added: list[Any],
    documents: dict[str, dict[str, Any]],
    base_unknown: frozenset[str],
) -> tuple[dict[str, str], frozenset[str]]:
    """`added` is the parsed `add` array of `changes` (what is copied into deviations.toml)."""
    doc = documents["deviations.toml"]
    devs: list[Any] = doc.setdefault("deviations", [])
    existing = {_row_id(d) for d in devs}
    for table, dids in (("fixed", changes.fixed), ("moot", changes.moot)):
        for did in dids:
            if did not in existing:
                raise r.fail(f"{table}.{did}", "no such deviation in the base line")
    fixed: dict[str, str] = dict(changes.fixed)
    gone = {**fixed, **changes.moot}
    devs[:] = [d for d in devs if _row_id(d) not in gone]
    for profile in doc.get("profiles", {}).values():
        if isinstance(profile, dict) and isinstance(profile.get("deviations"), list):
            profile["deviations"] = [d for d in profile["deviations"] if d not in gone]
    for i, entry in enumerate(added):
        if _row_id(entry) in existing:
            raise r.fail(f"add[{i}]", f"deviation {_row_id(entry)!r} exists already")
        devs.append(copy.deepcopy(entry))
    present = {_row_id(d) for d in devs}
    return fixed, _unknown_deviations(r, changes, present, set(base_unknown) - set(gone))


def _unknown_deviations(
    r: _Where, changes: schema.DeviationChanges, present: set[str | None], unknown: set[str]
) -> frozenset[str]:
    """The deviations left unknown: the base's, plus `unknown`, less `confirmed`."""
    for did in changes.unknown:
        if did not in present:
            raise r.fail("unknown", f"no deviation {did!r} in this line")
        if did in unknown:
            raise r.fail("unknown", f"{did} is unknown in the base line already")
        unknown.add(did)
    for did in changes.confirmed:
        if did not in unknown:
            raise r.fail("confirmed", f"{did} is not unknown in the base line")
        unknown.discard(did)
    return frozenset(unknown)


def _check_wire_against_catalogue(
    r: _Where,
    wire: Mapping[str, str],
    aspects: Mapping[str, WireAspect],
    spec: Spec,
    handshake: Handshake,
) -> None:
    """Where a wire shape implies a catalogue entry, the two must agree."""
    ops = spec.operations
    action_wires = {op.wire for op in ops.values() if op.kind == "action"}
    connect = wire["connect"]
    if connect in ("version", "info") and connect not in action_wires:
        raise r.fail("connect", f"the client connects with {connect!r}, which the catalogue lacks")
    if connect == "info" and set(handshake.config) != set(_INFO_CONFIG):
        raise r.fail("connect", f"an info handshake needs [handshake.config] with {_INFO_CONFIG}")
    if connect != "info" and handshake.config:
        raise r.fail("connect", "only an info handshake reports limits: drop [handshake.config]")
    _check_wire_against_operations(r, wire, aspects, ops)
    key = "name" if wire["query_filter"] == "name" else "locator"
    for section in ("sequence", "topic"):
        names = set(spec.query.sections[section].fields)
        if key not in names or ({"name", "locator"} - {key}) & names:
            raise r.fail(
                "query_filter", f"the {section} filter names resources by {key!r} in this shape"
            )


def _check_wire_against_operations(
    r: _Where,
    wire: Mapping[str, str],
    aspects: Mapping[str, WireAspect],
    ops: Mapping[str, Operation],
) -> None:
    rpc_wires = {w for op in ops.values() if op.kind == "rpc" for w in op.wire.split("|")}
    serves_schema = any(op.kind == "rpc" and op.wire == "GetSchema" for op in ops.values())
    if (wire["get_schema"] == "stored_schema") != serves_schema or "GetSchema" not in rpc_wires:
        raise r.fail("get_schema", "the shape and the catalogue's GetSchema entry disagree")
    streams = any(
        isinstance(op.response, str) and op.response.startswith("stream[") for op in ops.values()
    )
    if (wire["filter_answer"] != "none") != streams:
        raise r.fail("filter_answer", "a streamed answer shape needs a streaming action, and back")
    create = ops["SESSION_CREATE"].response
    answer = [f"{k}: {v}" for k, v in create.items()] if isinstance(create, dict) else []
    if list(_shape_fields(aspects, wire, "session_create_answer")) != answer:
        raise r.fail("session_create_answer", "the shape and SESSION_CREATE's response disagree")
    body = [f"{f.name}: {f.type}" for f in ops["SESSION_DELETE"].request]
    if list(_shape_fields(aspects, wire, "session_delete_body")) != body:
        raise r.fail(
            "session_delete_body", f"the shape and SESSION_DELETE's request {body} disagree"
        )


def _shape_fields(
    aspects: Mapping[str, WireAspect], wire: Mapping[str, str], aspect: str
) -> tuple[str, ...]:
    return aspects[aspect].fields.get(wire[aspect], ())


def _unknowns(
    r: _Where,
    entries: tuple[schema.UnknownEntry, ...],
    spec: Spec,
    wire: Mapping[str, str],
    fixed: Mapping[str, str],
    line: str,
    inherited: tuple[Unknown, ...],
) -> tuple[Unknown, ...]:
    subjects = {
        *_TOPICS,
        *spec.operations,
        *spec.probes,
        *spec.resources,
        *spec.deviations,
        *fixed,
        *wire,
        *(row.id for m in spec.machines.values() for row in m.transitions),
    }
    out = [u for u in inherited if u.about in subjects and u.about not in fixed]
    for i, entry in enumerate(entries):
        if entry.about not in subjects:
            raise r.fail(
                f"[{i}]",
                f"about {entry.about!r} names nothing of this line (an operation, probe, "
                f"resource, row id, deviation, wire aspect or one of {', '.join(_TOPICS)})",
            )
        out.append(Unknown(entry.about, entry.text, line))
    return tuple(out)


def client_deviation_ranges(directory: Path | None = None) -> dict[str, KnownIn]:
    """Each client deviation of any line, with the SDK releases it is known in."""
    releases: dict[str, list[str]] = {}
    fixed_in: dict[str, str] = {}
    for line in load_lines(directory).values():
        for did in line.fixed_deviations:
            fixed_in.setdefault(did, line.name)
        for did, deviation in line.spec.deviations.items():
            if deviation.who.startswith("sdk-") and did not in fixed_in:
                releases.setdefault(did, []).extend(line.sdk_releases)
    return {did: KnownIn(did, tuple(found), fixed_in.get(did)) for did, found in releases.items()}
