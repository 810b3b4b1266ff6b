"""The QUERY filter grammar (`specs/query.toml`): operators, field kinds, sections.

`QueryGrammar.cell(kind, operator)` is what a server does with one condition: a semantics
name (`value`, `row`, `chunk_constant`) or an error kind. Server deviations replace cells
(`with_cells`), the way resource patches replace resource rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import attrs

from fsm.errors import SpecError

__all__ = [
    "OPERANDS",
    "SEMANTICS",
    "VALUE_TYPES",
    "QueryGrammar",
    "QueryKind",
    "QueryOperator",
    "QuerySection",
    "parse_query_grammar",
]

OPERANDS = ("scalar", "pair", "list", "none")
VALUE_TYPES = ("integer", "float", "boolean", "text")
SEMANTICS = ("value", "row", "chunk_constant")
OPTION_TYPES = ("boolean",)
FILE = "query.toml"


@attrs.frozen
class QueryOperator:
    name: str
    operand: str
    doc: str


@attrs.frozen
class QueryKind:
    """A kind of field: the operand types it accepts, and per operator its semantics (or,
    once a deviation changed it, an error kind)."""

    name: str
    doc: str
    values: tuple[str, ...]
    operators: Mapping[str, str]


@attrs.frozen
class QuerySection:
    name: str
    doc: str
    fields: Mapping[str, str]
    any_field: str | None
    options: Mapping[str, str]

    def kind_of(self, field: str) -> str | None:
        """The kind of `field` in this section, or None when the section has no such field."""
        return self.fields.get(field, None if field in self.options else self.any_field)


@attrs.frozen
class QueryGrammar:
    operators: Mapping[str, QueryOperator]
    kinds: Mapping[str, QueryKind]
    sections: Mapping[str, QuerySection]

    def cell(self, kind: str, operator: str) -> str | None:
        """The semantics (or error kind) of `operator` on a field of `kind`; None when the
        operator does not apply to the kind."""
        return self.kinds[kind].operators.get(operator)

    def cells(self) -> Iterator[tuple[str, str, str]]:
        for kind in self.kinds.values():
            for operator, outcome in kind.operators.items():
                yield kind.name, operator, outcome

    def with_cells(self, changes: Mapping[tuple[str, str], str]) -> QueryGrammar:
        """A copy with the (kind, operator) cells replaced."""
        kinds = dict(self.kinds)
        for (kind, operator), outcome in changes.items():
            ops = dict(kinds[kind].operators)
            ops[operator] = outcome
            kinds[kind] = attrs.evolve(kinds[kind], operators=ops)
        return attrs.evolve(self, kinds=kinds)


def _fail(entry: str, text: str) -> SpecError:
    return SpecError(FILE, entry, "-", text)


def _table(value: Any, entry: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(entry, "must be a table")
    return value


def _text(raw: Mapping[str, Any], key: str, entry: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str):
        raise _fail(entry, f"{key!r} must be a string")
    return value


def _only(raw: Mapping[str, Any], allowed: tuple[str, ...], entry: str) -> None:
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise _fail(entry, f"unknown key(s) {unknown}")


def parse_query_grammar(doc: Mapping[str, Any], error_kinds: Mapping[str, str]) -> QueryGrammar:
    """Build and check the grammar; every name it uses must be declared."""
    _only(doc, ("spec_version", "operators", "kinds", "sections"), "-")
    operators: dict[str, QueryOperator] = {}
    for name, raw in _table(doc.get("operators"), "operators").items():
        entry = f"operators.{name}"
        raw = _table(raw, entry)
        _only(raw, ("operand", "doc"), entry)
        if not name.startswith("$"):
            raise _fail(entry, "an operator name starts with '$'")
        operand = _text(raw, "operand", entry)
        if operand not in OPERANDS:
            raise _fail(entry, f"operand must be one of {OPERANDS}, got {operand!r}")
        operators[name] = QueryOperator(name, operand, _text(raw, "doc", entry))
    kinds: dict[str, QueryKind] = {}
    for name, raw in _table(doc.get("kinds"), "kinds").items():
        entry = f"kinds.{name}"
        raw = _table(raw, entry)
        _only(raw, ("doc", "values", "operators"), entry)
        values = raw.get("values")
        if not isinstance(values, list) or not values or not set(values) <= set(VALUE_TYPES):
            raise _fail(entry, f"'values' must be a non-empty list of {VALUE_TYPES}")
        cells = _table(raw.get("operators"), f"{entry}.operators")
        for operator, outcome in cells.items():
            if operator not in operators:
                raise _fail(entry, f"unknown operator {operator!r}")
            if outcome not in SEMANTICS and outcome not in error_kinds:
                raise _fail(entry, f"{operator}: {outcome!r} is neither a semantics nor an error")
        kinds[name] = QueryKind(name, _text(raw, "doc", entry), tuple(values), dict(cells))
    sections: dict[str, QuerySection] = {}
    for name, raw in _table(doc.get("sections"), "sections").items():
        entry = f"sections.{name}"
        raw = _table(raw, entry)
        _only(raw, ("doc", "fields", "any_field", "options"), entry)
        fields = dict(_table(raw.get("fields", {}), f"{entry}.fields"))
        any_field = raw.get("any_field")
        for field, kind in [*fields.items(), ("*", any_field)]:
            if kind is not None and kind not in kinds:
                raise _fail(entry, f"field {field!r}: unknown kind {kind!r}")
        options = dict(_table(raw.get("options", {}), f"{entry}.options"))
        for option, kind in options.items():
            if kind not in OPTION_TYPES:
                raise _fail(entry, f"option {option!r}: type must be one of {OPTION_TYPES}")
        sections[name] = QuerySection(name, _text(raw, "doc", entry), fields, any_field, options)
    return QueryGrammar(operators, kinds, sections)
