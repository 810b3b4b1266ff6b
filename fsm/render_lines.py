"""Text forms of protocol lines: one line's description, and the differences of two lines.

Both are computed from the loaded lines (`fsm.spec.lines`), so what `mosaico-fsm spec
--protocol X` and `spec --diff A B` print cannot drift from `specs/lines/`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fsm.spec.line_enums import EnumSet
from fsm.spec.lines import Line, load_wire
from fsm.spec.model import MachineSpec, Operation, ResourceRow, ResourceSpec, Spec, Transition

__all__ = ["diff_text", "line_diff", "line_text", "lines_markdown"]


def line_text(line: Line) -> str:
    """What the line is: releases, builds, changes, permission model, handshake, wire
    shapes, enums, deviations and what is not known."""
    aspects = load_wire()
    base = f" (the changes to line {line.base})" if line.base else " (the base line)"
    out = [
        f"protocol line {line.name}: {line.title}",
        f"   lines: {' -> '.join(line.chain)}",
        f"   SDK releases: {', '.join(line.sdk_releases)} (enums compared with {line.enum_release})",
        *(f"   server: {build}" for build in line.server_builds),
        f"   what changed{base}:",
        *(f"      - {change}" for change in line.changes),
        f"   permissions: {line.permissions.model} {', '.join(line.permissions.values)}",
        f"   handshake: version {line.handshake.version or 'not known'}"
        + "".join(f"; {k} {v}" for k, v in line.handshake.config.items()),
        "   wire shapes:",
    ]
    for aspect, shape in line.wire.items():
        out.append(f"      {aspect:<28} {shape}: {aspects[aspect].shapes[shape]}")
        fields = aspects[aspect].fields.get(shape)
        if fields:
            out.append(f"      {'':<28} fields: {'; '.join(fields)}")
    out.append("   enums (mosaicolabs.enum):")
    for name in line.enums.names():
        d = line.enums.resolve(name)
        if d is None:  # pragma: no cover - names() lists resolvable names only
            continue
        alias = f" (alias of {d.name})" if d.name != name else ""
        members = ", ".join(f"{m}={v!r}" for m, v in d.members)
        out.append(f"      {name}{alias}: {members}")
    if line.fixed_deviations:
        out.append("   deviations this line fixes:")
        out += [f"      {did}: {why}" for did, why in line.fixed_deviations.items()]
    if line.moot_deviations:
        out.append("   deviations no request of this line reaches (dropped from its tables):")
        out += [f"      {did}: {why}" for did, why in line.moot_deviations.items()]
    if line.unknown_deviations:
        out.append("   deviations kept in the tables, not known to hold for this line's releases:")
        out += [f"      {did}" for did in sorted(line.unknown_deviations)]
    if line.unknown:
        out.append("   not known:")
        out += [f"      [{u.about}] {u.text} (line {u.stated_in})" for u in line.unknown]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# Differences


def _mapping_diff(
    section: str, a: Mapping[str, Any], b: Mapping[str, Any], show: Any = repr
) -> list[str]:
    out = []
    for key in a:
        if key not in b:
            out.append(f"{section} - {key}")
    for key in b:
        if key not in a:
            out.append(f"{section} + {key}: {show(b[key])}")
        elif a[key] != b[key]:
            out.append(f"{section} ~ {key}: {show(a[key])} -> {show(b[key])}")
    return out


def _operation_fields(op: Operation) -> dict[str, Any]:
    return {
        "kind": op.kind,
        "wire": op.wire,
        "permission": op.permission,
        "request": ", ".join(f"{f.name}{'' if f.required else '?'}: {f.type}" for f in op.request),
        "response": op.response,
        "outcomes": ", ".join(sorted(op.outcomes)),
        "probe": op.probe,
        "errors": "; ".join(f"{e.kind}: {e.when}" for e in op.errors),
        "doc": op.doc,
    }


def _operations(a: Spec, b: Spec) -> list[str]:
    out = []
    for name in a.operations:
        if name not in b.operations:
            out.append(f"operation - {name} ({a.operations[name].wire})")
    for name, op in b.operations.items():
        if name not in a.operations:
            fields = _operation_fields(op)
            out.append(
                f"operation + {name} ({op.wire}): permission {op.permission}; "
                f"request {{{fields['request']}}}; response {op.response}"
            )
            continue
        before = _operation_fields(a.operations[name])
        for key, value in _operation_fields(op).items():
            if before[key] != value:
                out.append(f"operation ~ {name}.{key}: {before[key]} -> {value}")
    return out


def _row_key(row: Transition) -> tuple[str, str]:
    return (row.id, row.source)


def _row_text(row: Transition) -> str:
    guard = " [" + " & ".join(f"{k}={v}" for k, v in row.when.items()) + "]" if row.when else ""
    steps = ", ".join(s.name for s in row.steps)
    return f"{row.source} --{row.trigger}{guard}--> {row.dest} / {steps or '-'}"


def _machine(name: str, a: MachineSpec | None, b: MachineSpec | None) -> list[str]:
    if a is None or b is None:
        return [f"machine {'+' if a is None else '-'} {name}"]
    out = []
    out += [f"machine {name} state - {s}" for s in a.states if s not in b.states]
    out += [f"machine {name} state + {s}" for s in b.states if s not in a.states]
    out += _mapping_diff(
        f"machine {name} trigger",
        {t: v.kind for t, v in a.triggers.items()},
        {t: v.kind for t, v in b.triggers.items()},
        str,
    )
    rows_a = {_row_key(r): r for r in a.transitions}
    rows_b = {_row_key(r): r for r in b.transitions}
    for key, row in rows_a.items():
        if key not in rows_b:
            out.append(f"machine {name} row - {row.id}: {_row_text(row)}")
    for key, row in rows_b.items():
        if key not in rows_a:
            out.append(f"machine {name} row + {row.id}: {_row_text(row)}")
        elif rows_a[key] != row:
            out.append(
                f"machine {name} row ~ {row.id}: {_row_text(rows_a[key])}  ->  {_row_text(row)}"
            )
    return out


def _resource(name: str, a: ResourceSpec | None, b: ResourceSpec | None) -> list[str]:
    if a is None or b is None:
        return [f"resource {'+' if a is None else '-'} {name}"]

    def text(r: ResourceRow) -> str:
        guard = " [" + " & ".join(f"{k}={v}" for k, v in r.when.items()) + "]" if r.when else ""
        return f"{r.source} --{r.event}{guard}--> {r.dest or 'refused: ' + str(r.error)}"

    out = [f"resource {name} row - {text(r)}" for r in a.rows if r not in b.rows]
    out += [f"resource {name} row + {text(r)}" for r in b.rows if r not in a.rows]
    return out


def _query(a: Spec, b: Spec) -> list[str]:
    qa, qb = a.query, b.query
    out = _mapping_diff(
        "query operator",
        {n: f"{o.operand}: {o.doc}" for n, o in qa.operators.items()},
        {n: f"{o.operand}: {o.doc}" for n, o in qb.operators.items()},
        str,
    )
    for name in _union(qa.kinds, qb.kinds):
        ka, kb = qa.kinds.get(name), qb.kinds.get(name)
        out += _mapping_diff(
            f"query kind {name}",
            {} if ka is None else dict(ka.operators),
            {} if kb is None else dict(kb.operators),
            str,
        )
    for name in _union(qa.sections, qb.sections):
        sa, sb = qa.sections.get(name), qb.sections.get(name)
        out += _mapping_diff(
            f"query section {name} field",
            {} if sa is None else dict(sa.fields),
            {} if sb is None else dict(sb.fields),
            str,
        )
        out += _mapping_diff(
            f"query section {name} option",
            {} if sa is None else dict(sa.options),
            {} if sb is None else dict(sb.options),
            str,
        )
    return out


def _enums(a: EnumSet, b: EnumSet) -> list[str]:
    out = []
    for name in a.names():
        if name not in b.names():
            out.append(f"enum - {name}")
    for name in b.names():
        db = b.resolve(name)
        da = a.resolve(name) if name in a.names() else None
        if db is None:  # pragma: no cover - names() lists resolvable names only
            continue
        if da is None:
            out.append(f"enum + {name}: {', '.join(f'{m}={v!r}' for m, v in db.members)}")
            continue
        out += _mapping_diff(f"enum {name} member", dict(da.members), dict(db.members))
        if [m for m, _ in da.members if m in dict(db.members)] != [
            m for m, _ in db.members if m in dict(da.members)
        ]:
            out.append(f"enum {name} ~ member order")
    return out


def line_diff(a: Line, b: Line) -> list[str]:
    """Every difference between lines `a` and `b`, one per string, in a fixed order:
    permissions, handshake, wire, operations, probes, field types, common refusals, query
    grammar, machines, resources, enums, deviations."""
    out: list[str] = []
    if a.permissions != b.permissions:
        out.append(
            f"permissions ~ {a.permissions.model} {', '.join(a.permissions.values)} -> "
            f"{b.permissions.model} {', '.join(b.permissions.values)}"
        )
    if a.handshake != b.handshake:
        out.append(f"handshake ~ {a.handshake.version} -> {b.handshake.version}")
        out += _mapping_diff("handshake config", a.handshake.config, b.handshake.config)
    out += _mapping_diff("wire", a.wire, b.wire, str)
    out += _operations(a.spec, b.spec)
    out += _mapping_diff(
        "probe",
        {n: p.applied_when for n, p in a.spec.probes.items()},
        {n: p.applied_when for n, p in b.spec.probes.items()},
        str,
    )
    out += _mapping_diff("field type", a.spec.field_types, b.spec.field_types, str)
    common_a = [f"{e.kind}: {e.when}" for e in a.spec.common_errors]
    common_b = [f"{e.kind}: {e.when}" for e in b.spec.common_errors]
    out += [f"common refusal - {e}" for e in common_a if e not in common_b]
    out += [f"common refusal + {e}" for e in common_b if e not in common_a]
    out += _query(a.spec, b.spec)
    for name in _union(a.spec.machines, b.spec.machines):
        out += _machine(name, a.spec.machines.get(name), b.spec.machines.get(name))
    for name in _union(a.spec.resources, b.spec.resources):
        out += _resource(name, a.spec.resources.get(name), b.spec.resources.get(name))
    out += _enums(a.enums, b.enums)
    out += _mapping_diff(
        "deviation",
        {d.id: d.summary for d in a.spec.deviations.values()},
        {d.id: d.summary for d in b.spec.deviations.values()},
        str,
    )
    for did in sorted(b.unknown_deviations - a.unknown_deviations):
        out.append(f"deviation ? {did}: not known to hold for line {b.name}")
    for did in sorted(a.unknown_deviations - b.unknown_deviations):
        if did in b.spec.deviations:
            out.append(f"deviation ! {did}: known to hold for line {b.name}")
    return out


def _union(a: Iterable[str], b: Iterable[str]) -> list[str]:
    names = list(a)
    return names + [n for n in b if n not in names]


def diff_text(a: Line, b: Line) -> str:
    """`line_diff` with a heading; '-' removed, '+' added, '~' changed (before -> after)."""
    lines = line_diff(a, b)
    head = f"protocol line {a.name} -> {b.name}: {len(lines)} difference(s)"
    return "\n".join([head, *(f"   {entry}" for entry in lines)]) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def lines_markdown(lines: Iterable[Line]) -> str:
    """README's table of protocol lines (a test keeps README's copy equal to it)."""
    rows = [
        "| line | SDK releases | server builds | what changed | not known (`spec --protocol`) |",
        "|---|---|---|---|---|",
    ]
    for line in lines:
        name = f"{line.name} (default)" if line.base is None else line.name
        unknown = sorted({u.about for u in line.unknown if u.stated_in == line.name})
        if line.unknown_deviations:
            unknown.append(f"{len(line.unknown_deviations)} recorded deviations")
        rows.append(
            "| "
            + " | ".join(
                _cell(cell)
                for cell in (
                    name,
                    ", ".join(line.sdk_releases),
                    "; ".join(line.server_builds),
                    line.title,
                    ", ".join(unknown) or "-",
                )
            )
            + " |"
        )
    return "\n".join(rows) + "\n"
