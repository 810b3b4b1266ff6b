"""The QUERY filter grammar (`specs/query.toml`): operators, field kinds, sections; and the
check of a query body against it (`parse_query`), shared by the server model and the engine.

`QueryGrammar.cell(kind, operator)` is what a server does with one condition: a semantics
name (`value`, `row`, `chunk_constant`) or an error kind. Server deviations replace cells
(`with_cells`), the way resource patches replace resource rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal, get_args

import attrs

from fsm.errors import ArgumentError, SpecError

__all__ = [
    "OPERANDS",
    "SEMANTICS",
    "VALUE_TYPES",
    "Condition",
    "ParsedQuery",
    "QueryBodyError",
    "QueryGrammar",
    "QueryKind",
    "QueryOperator",
    "QuerySection",
    "parse_query",
    "parse_query_grammar",
    "value_type",
]

Operand = Literal["scalar", "pair", "list", "none"]
ValueType = Literal["integer", "float", "boolean", "text"]
OptionType = Literal["boolean"]
OPERANDS: tuple[str, ...] = get_args(Operand)
VALUE_TYPES: tuple[str, ...] = get_args(ValueType)
SEMANTICS = ("value", "row", "chunk_constant")
OPTION_TYPES: tuple[str, ...] = get_args(OptionType)
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


def parse_query_grammar(doc: Mapping[str, Any], error_kinds: Mapping[str, str]) -> QueryGrammar:
    """Build and check the grammar (its shape is `fsm.spec.schema.QueryFile`); every name it
    uses must be declared."""
    from fsm.spec import schema

    raw = schema.structure(FILE, doc, schema.QueryFile)
    operators: dict[str, QueryOperator] = {}
    for name, op in raw.operators.items():
        if not name.startswith("$"):
            raise _fail(f"operators.{name}", "an operator name starts with '$'")
        operators[name] = QueryOperator(name, op.operand, op.doc)
    kinds: dict[str, QueryKind] = {}
    for name, kind in raw.kinds.items():
        entry = f"kinds.{name}"
        if not kind.values:
            raise _fail(entry, f"'values' must be a non-empty list of {VALUE_TYPES}")
        for operator, outcome in kind.operators.items():
            if operator not in operators:
                raise _fail(entry, f"unknown operator {operator!r}")
            if outcome not in SEMANTICS and outcome not in error_kinds:
                raise _fail(entry, f"{operator}: {outcome!r} is neither a semantics nor an error")
        kinds[name] = QueryKind(name, kind.doc, kind.values, dict(kind.operators))
    sections: dict[str, QuerySection] = {}
    for name, section in raw.sections.items():
        for field, of in [*section.fields.items(), ("*", section.any_field)]:
            if of is not None and of not in kinds:
                raise _fail(f"sections.{name}", f"field {field!r}: unknown kind {of!r}")
        sections[name] = QuerySection(
            name, section.doc, dict(section.fields), section.any_field, dict(section.options)
        )
    return QueryGrammar(operators, kinds, sections)


# ---------------------------------------------------------------------------------------------
# Query bodies


class QueryBodyError(ArgumentError):
    """A query body outside the grammar; the message names the part."""


INT64 = (-(2**63), 2**63 - 1)


@attrs.frozen
class Condition:
    """One condition: `where` names it as the body does ('sequence.user_metadata.k',
    'imu.acceleration.x'); `key` is the field, metadata path or data path it reads."""

    where: str
    kind: str
    key: str
    operator: str
    operand: Any
    outcome: str


@attrs.frozen
class ParsedQuery:
    sequence: tuple[Condition, ...]
    topic: tuple[Condition, ...]
    ontology: tuple[Condition, ...] | None
    include_timestamp_range: bool

    def groups(self) -> dict[str, list[Condition]]:
        """The data conditions by ontology tag, in the order the body gives them."""
        groups: dict[str, list[Condition]] = {}
        for cond in self.ontology or ():
            groups.setdefault(cond.key.split(".", 1)[0], []).append(cond)
        return groups


def value_type(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer" if INT64[0] <= value <= INT64[1] else "float"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "text"
    return None


def _check_value(value: Any, accepted: Sequence[str], where: str, operator: str) -> None:
    found = value_type(value)
    if found is None or found not in accepted:
        raise QueryBodyError(
            f"{where}: {operator} takes {' or '.join(accepted)} values, got {json_type(value)}"
        )


def json_type(value: Any) -> str:
    kind = value_type(value)
    if kind is not None:
        return kind
    return {type(None): "null", list: "an array", dict: "an object"}.get(type(value), "?")


def _condition(grammar: QueryGrammar, kind: str, where: str, key: str, raw: Any) -> Condition:
    if not isinstance(raw, dict) or len(raw) != 1:
        raise QueryBodyError(f"{where}: a condition is an object with exactly one operator")
    ((operator, operand),) = raw.items()
    spec_op = grammar.operators.get(operator)
    if spec_op is None:
        raise QueryBodyError(f"{where}: unknown operator {operator!r}")
    outcome = grammar.cell(kind, operator)
    if outcome is None:
        raise QueryBodyError(f"{where}: {operator} does not apply to a {kind} field")
    _check_operand(spec_op.operand, operand, grammar.kinds[kind].values, where, operator)
    return Condition(where, kind, key, operator, operand, outcome)


def _check_operand(
    shape: str, operand: Any, accepted: Sequence[str], where: str, operator: str
) -> None:
    """QueryBodyError unless `operand` has the operator's `shape` and accepted values."""
    if shape == "scalar":
        _check_value(operand, accepted, where, operator)
        if operator == "$match" and not isinstance(operand, str):
            raise QueryBodyError(f"{where}: $match takes a text value")
    elif shape == "pair":
        _check_pair(operand, accepted, where, operator)
    elif shape == "list":
        if not isinstance(operand, list) or not operand:
            raise QueryBodyError(f"{where}: {operator} takes a non-empty array")
        for item in operand:
            _check_value(item, accepted, where, operator)
    elif operand is not None:
        raise QueryBodyError(f"{where}: {operator} takes null")


def _check_pair(operand: Any, accepted: Sequence[str], where: str, operator: str) -> None:
    if not isinstance(operand, list) or len(operand) != 2:
        raise QueryBodyError(f"{where}: {operator} takes [low, high]")
    for bound in operand:
        _check_value(bound, accepted, where, operator)
    low, high = operand
    if value_type(low) == "text" or value_type(high) == "text":
        comparable = isinstance(low, str) and isinstance(high, str)
    else:
        comparable = not isinstance(low, bool) and not isinstance(high, bool)
    if not comparable or low > high:
        raise QueryBodyError(f"{where}: {operator} [{low!r}, {high!r}] is an empty range")


def _section(grammar: QueryGrammar, name: str, raw: Any) -> tuple[list[Condition], dict[str, Any]]:
    section = grammar.sections[name]
    if not isinstance(raw, dict):
        raise QueryBodyError(f"the {name} section must be an object")
    conditions: list[Condition] = []
    options: dict[str, Any] = {}
    for field, spec in raw.items():
        where = f"{name}.{field}"
        if field in section.options:
            if spec is not None and not isinstance(spec, bool):
                raise QueryBodyError(f"{where} must be true or false")
            options[field] = spec
            continue
        kind = section.kind_of(field)
        if kind is None:
            raise QueryBodyError(f"unknown field {where!r}")
        if kind == "metadata":
            if not isinstance(spec, dict):
                raise QueryBodyError(f"{where}: expected {{'<key>': {{'$op': value}}}}")
            for path, cond in spec.items():
                conditions.append(_condition(grammar, kind, f"{where}.{path}", path, cond))
        elif section.any_field == kind and field not in section.fields:
            tag, _, path = field.partition(".")
            if not tag or not path or "" in path.split("."):
                raise QueryBodyError(f"data field {field!r} must be '<ontology tag>.<path>'")
            conditions.append(_condition(grammar, kind, field, field, spec))
        else:
            conditions.append(_condition(grammar, kind, where, field, spec))
    return conditions, options


def parse_query(body: Mapping[str, Any], grammar: QueryGrammar) -> ParsedQuery:
    """Check a whole query body against the grammar; QueryBodyError names the first part
    that is malformed. Cells a deviation turned into errors are left to the caller."""
    if not isinstance(body, Mapping):
        raise QueryBodyError("the body must be an object")
    parsed: dict[str, list[Condition]] = {}
    options: dict[str, Any] = {}
    for name, raw in body.items():
        if name not in grammar.sections:
            raise QueryBodyError(
                f"unknown section {name!r}; sections are {sorted(grammar.sections)}"
            )
        if raw is None:
            continue
        parsed[name], section_options = _section(grammar, name, raw)
        options.update(section_options)
    return ParsedQuery(
        tuple(parsed.get("sequence", ())),
        tuple(parsed.get("topic", ())),
        tuple(parsed["ontology"]) if "ontology" in parsed else None,
        bool(options.get("include_timestamp_range")),
    )
