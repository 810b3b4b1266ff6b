"""Human-readable forms of the spec: text tables and Mermaid / Graphviz diagrams.

Everything here is derived from the loaded `Spec`; README's diagrams are produced by
`mermaid_markdown` and a test compares them, so documentation cannot drift from the tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from fsm.errors import ArgumentError
from fsm.spec.model import (
    MachineSpec,
    ProbeRoute,
    ResourceSpec,
    Spec,
    Step,
    Transition,
)
from fsm.spec.query import QueryGrammar

__all__ = [
    "SPEC_SECTIONS",
    "diagram",
    "diagram_names",
    "embed_diagrams",
    "mermaid_markdown",
    "readme_markers",
    "spec_text",
]


def _guard(when: Mapping[str, str]) -> str:
    return " & ".join(f"{k}={v}" for k, v in when.items())


def _edge_label(row: Transition, machine: MachineSpec) -> str:
    label = row.trigger
    if machine.triggers[row.trigger].kind == "route":
        label = f"⤷ {label}"
    if row.when:
        label += f" [{_guard(row.when)}]"
    if row.steps:
        label += " / " + ", ".join(s.name for s in row.steps)
    return label


def _unique_edges(machine: MachineSpec) -> list[tuple[str, str, str]]:
    """One edge per (source, dest, label); rows written with several sources expand here."""
    seen: set[tuple[str, str, str]] = set()
    edges = []
    for row in machine.transitions:
        edge = (row.source, row.dest, _edge_label(row, machine))
        if edge not in seen:
            seen.add(edge)
            edges.append(edge)
    return edges


def _resource_edges(res: ResourceSpec) -> list[tuple[str, str, str]]:
    grouped: dict[tuple[str, str], list[str]] = {}
    for row in res.rows:
        if row.dest is None:
            continue
        event = row.event + (f" [{_guard(row.when)}]" if row.when else "")
        names = grouped.setdefault((row.source, row.dest), [])
        if event not in names:
            names.append(event)
    return [(s, d, ", ".join(events)) for (s, d), events in grouped.items()]


def diagram_names(spec: Spec) -> list[str]:
    """Names accepted by `diagram`: the client machines, then the server resources."""
    return [*spec.machines, *(f"resource:{name}" for name in spec.resources)]


def diagram(spec: Spec, name: str, fmt: str = "mermaid") -> str:
    """Render one lifecycle (`session`, `topic_writer` or `resource:<name>`)."""
    if name.startswith("resource:"):
        res = spec.resources[name.split(":", 1)[1]]
        return _render(res.name, res.initial, (), _resource_edges(res), fmt)
    machine = spec.machines[name]
    return _render(machine.name, machine.initial, machine.terminals, _unique_edges(machine), fmt)


def _render(
    name: str, initial: str, terminals: Iterable[str], edges: list[tuple[str, str, str]], fmt: str
) -> str:
    if fmt == "mermaid":
        lines = ["stateDiagram-v2", f"    [*] --> {initial}"]
        lines += [f"    {s} --> {d} : {label.replace(':', '-')}" for s, d, label in edges]
        lines += [f"    {t} --> [*]" for t in sorted(terminals)]
        return "\n".join(lines) + "\n"
    if fmt == "dot":
        lines = [f'digraph "{name}" {{', "    rankdir=LR;", "    node [shape=box, style=rounded];"]
        lines.append(f'    "__start" [shape=point]; "__start" -> "{initial}";')
        lines += [f'    "{t}" [peripheries=2];' for t in sorted(terminals)]
        for s, d, label in edges:
            escaped = label.replace('"', '\\"')
            lines.append(f'    "{s}" -> "{d}" [label="{escaped}"];')
        lines.append("}")
        return "\n".join(lines) + "\n"
    raise ArgumentError(f"unknown diagram format {fmt!r}; use mermaid or dot")


def mermaid_markdown(spec: Spec) -> dict[str, str]:
    """The fenced Mermaid blocks README embeds, keyed by machine name."""
    return {name: f"```mermaid\n{diagram(spec, name)}```\n" for name in spec.machines}


def readme_markers(name: str) -> tuple[str, str]:
    """The comment lines that delimit a generated diagram in README.md."""
    return f"<!-- BEGIN generated diagram: {name} -->\n", f"<!-- END generated diagram: {name} -->"


def embed_diagrams(text: str, spec: Spec) -> str:
    """`text` (README.md) with every generated diagram block replaced by the current one."""
    for name, block in mermaid_markdown(spec).items():
        begin, end = readme_markers(name)
        start = text.find(begin)
        stop = text.find(end)
        if start < 0 or stop < start:
            raise ArgumentError(f"README has no markers for the {name} diagram: {begin.strip()}")
        text = text[: start + len(begin)] + block + text[stop:]
    return text


# ---------------------------------------------------------------------------------------------
# Text


def _route_text(step: Step) -> str:
    parts = [f"failed→{step.failed.any}"]
    parts += [f"{kind}→{route}" for kind, route in step.failed.by_kind.items()]
    if isinstance(step.unknown, ProbeRoute):
        u = step.unknown
        parts.append(
            f"unknown→probe {u.probe} (applied→{u.applied}, not_applied→{u.not_applied}, "
            f"unresolved→{u.unresolved})"
        )
    elif step.unknown is not None:
        parts.append(f"unknown→{step.unknown}")
    return "; ".join(parts)


def machine_text(machine: MachineSpec) -> list[str]:
    out = [
        f"== {machine.name} ({machine.enum}) — {machine.file}",
        f"   {machine.doc}",
        f"   states: {', '.join(machine.states)}; initial {machine.initial}; "
        f"terminals {', '.join(sorted(machine.terminals))}",
    ]
    for var in machine.context.values():
        out.append(f"   context {var.name}: {' | '.join(var.values)}")
    groups: dict[str, list[Transition]] = {}
    for row in machine.transitions:
        groups.setdefault(row.id, []).append(row)
    for rows in groups.values():
        row = rows[0]
        source = row.source if len(rows) == 1 else "{" + ", ".join(r.source for r in rows) + "}"
        dest = "=" if len(rows) > 1 and all(r.dest == r.source for r in rows) else row.dest
        guard = f" [{_guard(row.when)}]" if row.when else ""
        out.append(f"   {row.id}: {source} --{row.trigger}{guard}--> {dest}   (error: {row.error})")
        for i, step in enumerate(row.steps, 1):
            out.append(f"      {i}. {step.name:<32} {_route_text(step)}")
    return out


def resource_text(res: ResourceSpec) -> list[str]:
    out = [f"== resource {res.name}", f"   {res.doc}", f"   states: {', '.join(res.states)}"]
    for row in res.rows:
        guard = f" [{_guard(row.when)}]" if row.when else ""
        result = row.dest if row.dest is not None else f"refused: {row.error}"
        out.append(f"   {row.source:<20} {row.event + guard:<58} {result}")
    return out


SPEC_SECTIONS = (
    "machines",
    "resources",
    "operations",
    "probes",
    "errors",
    "query",
    "limits",
    "deviations",
)
"""The sections of `spec_text`, in the order it prints them."""


def query_text(grammar: QueryGrammar) -> list[str]:
    """The QUERY filter grammar: operators, field kinds with their cells, sections."""
    lines = ["== query grammar (QUERY action body)", "   operators:"]
    for op in grammar.operators.values():
        lines.append(f"      {op.name:<10} operand {op.operand:<7} {op.doc}")
    lines.append("   field kinds (values accepted; operator: semantics):")
    for kind in grammar.kinds.values():
        lines.append(f"      {kind.name:<14} values {', '.join(kind.values)}")
        lines.append(f"         {kind.doc}")
        cells = ", ".join(f"{op} {outcome}" for op, outcome in kind.operators.items())
        lines.append(f"         {cells}")
    lines.append("   sections:")
    for section in grammar.sections.values():
        fields = [f"{name}: {kind}" for name, kind in section.fields.items()]
        if section.any_field is not None:
            fields.append(f"<any other key>: {section.any_field}")
        fields += [f"{name}: {kind} option" for name, kind in section.options.items()]
        lines.append(f"      {section.name:<10} {{{', '.join(fields)}}}")
        lines.append(f"         {section.doc}")
    lines.append("")
    return lines


def spec_text(spec: Spec, sections: Iterable[str] = SPEC_SECTIONS) -> str:
    """The whole spec as aligned text, section by section (all of them by default)."""
    lines = [f"mosaico-fsm protocol spec {spec.version}", ""]
    chosen = set(sections)
    unknown = chosen - set(SPEC_SECTIONS)
    if unknown:
        raise ArgumentError(
            f"unknown spec section(s) {sorted(unknown)}; choose from {SPEC_SECTIONS}"
        )
    if "machines" in chosen:
        for machine in spec.machines.values():
            lines += [*machine_text(machine), ""]
    if "resources" in chosen:
        for res in spec.resources.values():
            lines += [*resource_text(res), ""]
    if "operations" in chosen:
        lines.append("== operations")
        for op in spec.operations.values():
            fields = ", ".join(
                f"{f.name}{'' if f.required else '?'}: {f.type}"
                + (f" (at most {f.limit})" if f.limit else "")
                for f in op.request
            )
            lines.append(f"   {op.name:<30} {op.kind:<6} {op.wire:<30} permission {op.permission}")
            lines.append(f"      {op.doc}")
            if fields:
                lines.append(f"      request  {{{fields}}}")
            lines.append(f"      response {op.response}")
            settled = f"; a lost reply is settled by probe {op.probe}" if op.probe else ""
            lines.append(f"      outcomes {', '.join(sorted(op.outcomes))}{settled}")
            for err in op.errors:
                lines.append(f"      {err.kind:<20} {err.when}")
        lines.append("")
    if "probes" in chosen:
        lines.append("== probes (reads that settle a lost reply)")
        for probe in spec.probes.values():
            lines.append(f"   {probe.name:<22} settles {probe.settles:<30} reads {probe.reads}")
            lines.append(f"      applied when {probe.applied_when}")
        lines.append("")
    if "errors" in chosen:
        lines.append("== error kinds (gRPC status)")
        lines += [f"   {kind:<20} {grpc}" for kind, grpc in spec.error_kinds.items()]
        lines.append("   refusals any operation may meet:")
        lines += [f"      {err.kind:<20} {err.when}" for err in spec.common_errors]
        lines.append("   request field types:")
        lines += [f"      {name:<20} {doc}" for name, doc in spec.field_types.items()]
        lines.append("")
    if "query" in chosen:
        lines += query_text(spec.query)
    if "limits" in chosen:
        lines.append("== limits (what one request may carry; beyond them: invalid_argument)")
        lines += [f"   {lim.name:<22} {lim.value:>9}  {lim.doc}" for lim in spec.limits.values()]
        lines.append("")
    if "deviations" in chosen:
        lines.append("== deviations")
        for dev in spec.deviations.values():
            lines.append(f"   {dev.id} ({dev.who}): {dev.summary}")
            lines.append(f"      spec:   {dev.spec}")
            lines.append(f"      actual: {dev.actual}")
            lines.append(f"      sources: {'; '.join(dev.sources)}")
        for profile in spec.profiles.values():
            lines.append(f"   profile {profile.name}: {', '.join(profile.deviations) or '(none)'}")
        lines.append("")
    return "\n".join(lines)
