"""HTML reports: one self-contained file each (styles inline, no script, nothing fetched), so
a report opens in any browser without a network.

`conformance_html` lists every requirement with its verdict, text, source, the requests that
reproduce a failure and the recorded deviation it matches; `simulate_html` draws each
scenario family's outcome matrix as a coloured grid, with a legend and, in every cell, the
command that replays that run.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fsm.conformance.suite import SuiteResult, Verdict
    from fsm.simulate.explore import Exploration

__all__ = ["conformance_html", "simulate_html"]

_STYLE = """
:root { --ok: #1a7f37; --ok-bg: #dafbe1; --bad: #cf222e; --bad-bg: #ffebe9;
  --unk: #8250df; --unk-bg: #fbefff; --warn: #9a6700; --warn-bg: #fff8c5;
  --none: #57606a; --none-bg: #eaeef2; --line: #d0d7de; }
* { box-sizing: border-box; }
body { font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1f2328;
  margin: 0 auto; padding: 24px 32px 48px; max-width: 1400px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 6px; border-bottom: 1px solid var(--line);
  padding-bottom: 4px; }
p.meta { color: #57606a; margin: 0 0 12px; }
p.summary { font-size: 15px; font-weight: 600; margin: 12px 0; }
code, pre { font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
pre { background: #f6f8fa; border: 1px solid var(--line); border-radius: 6px; padding: 8px;
  white-space: pre-wrap; word-break: break-all; margin: 6px 0; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid var(--line); padding: 6px 8px; vertical-align: top; text-align: left; }
th { background: #f6f8fa; position: sticky; top: 0; z-index: 1; }
.badge { display: inline-block; min-width: 64px; text-align: center; border-radius: 12px;
  padding: 1px 8px; font-weight: 600; font-size: 12px; }
.pass { color: var(--ok); background: var(--ok-bg); }
.fail { color: var(--bad); background: var(--bad-bg); }
.unknown { color: var(--unk); background: var(--unk-bg); }
.counts span { margin-right: 8px; }
td.id { white-space: nowrap; font-weight: 600; }
td.source { color: #57606a; width: 26%; font-size: 12px; }
td.source div + div { margin-top: 2px; }
tr.row-fail td:first-child { box-shadow: inset 4px 0 0 var(--bad); }
tr.row-unknown td:first-child { box-shadow: inset 4px 0 0 var(--unk); }
.detail { margin-top: 4px; color: #57606a; }
details > summary { cursor: pointer; }
.grid td { padding: 0; min-width: 140px; font-size: 13px; }
.grid td.fault, .grid th.fault { padding: 6px 8px; white-space: nowrap; font-family: ui-monospace,
  SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; background: #f6f8fa; }
.grid details { padding: 5px 8px; height: 100%; }
.grid summary { list-style: none; }
.grid summary::-webkit-details-marker { display: none; }
.grid code { display: block; margin-top: 4px; color: #1f2328; user-select: all; }
.c-ok { background: var(--ok-bg); }
.c-handled { background: var(--warn-bg); }
.c-none { background: var(--none-bg); }
.c-bad { background: var(--bad-bg); outline: 2px solid var(--bad); outline-offset: -2px; }
.c-unknown { background: var(--unk-bg); }
.c-empty { background: #fff; color: #8c959f; padding: 5px 8px !important; }
.legend { display: grid; grid-template-columns: max-content 1fr; gap: 4px 12px; margin: 8px 0 16px; }
.legend .swatch { border: 1px solid var(--line); border-radius: 4px; padding: 1px 8px;
  font-size: 12px; }
.mark { font-weight: 700; margin-left: 4px; }
"""


def _page(title: str, body: list[str]) -> str:
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(title)}</title>",
            f"<style>{_STYLE}</style>",
            "</head><body>",
            *body,
            "</body></html>",
            "",
        ]
    )


# -----------------------------------------------------------------------------------------------
# Conformance


def _verdict_row(v: Verdict, seed: int) -> str:
    status = v.status
    cells = [
        f'<td><span class="badge {status}">{status.upper()}</span></td>',
        f'<td class="id">{escape(v.case.id)}</td>',
    ]
    text = [escape(v.case.requirement)]
    if status != "pass":
        text.append(f'<div class="detail">{escape(v.message)}</div>')
    if v.deviations:
        text.append(
            '<div class="detail">matches the recorded deviation '
            f"<b>{escape(' or '.join(v.deviations))}</b> (specs/deviations.toml)</div>"
        )
    if status == "fail" and v.steps:
        steps = escape("\n".join(v.steps))
        text.append(
            f"<details open><summary>reproduce (seed {seed}): {len(v.steps)} requests"
            f"</summary><pre>{steps}</pre></details>"
        )
    cells.append(f"<td>{''.join(text)}</td>")
    sources = "".join(f"<div>{escape(part)}</div>" for part in v.case.source.split("; "))
    cells.append(f'<td class="source">{sources}</td>')
    return f'<tr class="row-{status}">{"".join(cells)}</tr>'


def conformance_html(result: SuiteResult) -> str:
    """The conformance report as one HTML page."""
    from fsm.conformance.suite import summary_line

    counts = {s: result.count(s) for s in ("pass", "fail", "unknown")}
    body = [
        "<h1>Mosaico conformance report</h1>",
        f'<p class="meta">target {escape(result.target)} &middot; seed {result.seed} &middot; '
        f"names under <code>{escape(result.prefix)}</code> &middot; {result.seconds:.1f} s</p>",
        '<p class="counts">'
        + "".join(f'<span class="badge {s}">{n} {s}</span>' for s, n in counts.items())
        + "</p>",
        f'<p class="summary">{escape(summary_line(result))}</p>',
    ]
    if result.interrupted:
        body.append(
            "<p><b>The run was interrupted:</b> the requirements below are all that was "
            "checked.</p>"
        )
    body += [
        "<h2>Requirements</h2>",
        "<table><thead><tr><th>verdict</th><th>id</th><th>requirement</th><th>source</th>"
        "</tr></thead><tbody>",
        *(_verdict_row(v, result.seed) for v in result.verdicts),
        "</tbody></table>",
    ]
    e = result.exploration
    if e is not None:
        status = "fail" if e.failure else "pass"
        body += [
            "<h2>Exploration</h2>",
            f'<p><span class="badge {status}">{status.upper()}</span> random request sequences '
            f"agree with the specification's model: {e.runs} runs, {e.steps} requests compared "
            f"in {e.seconds:.1f} s (seed {e.seed})</p>",
        ]
        if e.failure:
            body.append(f"<p>{escape(e.failure)}</p>")
            if e.deviations:
                body.append(
                    f"<p>matches the recorded deviation <b>{escape(' or '.join(e.deviations))}"
                    "</b></p>"
                )
            shrunk = "cut short at the budget" if e.cut_short else "shrunk"
            body.append(
                f"<details open><summary>reproduce ({shrunk}, seed {e.seed})</summary>"
                f"<pre>{escape(chr(10).join(e.minimal_steps))}</pre></details>"
            )
    if result.left_behind and not result.throwaway:
        body += [
            "<h2>Left on the target</h2>",
            "<p>The suite removes what it creates; the target refused to remove these.</p>",
            "<table><thead><tr><th>what</th><th>name</th><th>reason</th></tr></thead><tbody>",
            *(
                f"<tr><td>{escape(i.what)}</td><td><code>{escape(i.name)}</code></td>"
                f"<td>{escape(i.reason)}</td></tr>"
                for i in result.left_behind
            ),
            "</tbody></table>",
        ]
    return _page(f"Conformance of {result.target}", body)


# -----------------------------------------------------------------------------------------------
# Simulation

_CELL_CLASSES = [
    ("c-ok", "Finalized", "the session ended finalized"),
    ("c-handled", "Error", "the session ended by its error policy (Report or Delete)"),
    ("c-none", "Null", "the session never opened"),
    ("c-bad", "!", "an invariant is violated (listed below, with its replay command)"),
    ("c-unknown", "?", "an invariant could not be decided (a lost reply left unsettled)"),
    ("c-empty", "-", "no run: the scenario made no such call"),
]
"""Colour, label and meaning of the grid's cells (by the client's final session status)."""


def _cell_class(cell: dict[str, str]) -> str:
    if cell["mark"] == "!":
        return "c-bad"
    if cell["mark"] == "?":
        return "c-unknown"
    client = cell["outcome"].split(" | ", 1)[0]
    return {"Finalized": "c-ok", "Error": "c-handled"}.get(client, "c-none")


def _grid(family: dict[str, Any]) -> list[str]:
    columns = list(family["columns"])
    head = "".join(
        f'<th title="{escape(family["columns"][c])}">{escape(c)}<br>'
        f'<code style="font-weight:400">{escape(family["columns"][c])}</code></th>'
        for c in columns
    )
    rows = [
        '<table class="grid"><thead><tr><th class="fault">fault</th>' + head + "</tr></thead>",
        "<tbody>",
    ]
    for row in family["rows"]:
        cells = [f'<td class="fault">{escape(row["faults"])}</td>']
        for c in columns:
            cell = row["cells"].get(c)
            if cell is None:
                cells.append('<td class="c-empty">-</td>')
                continue
            mark = f'<span class="mark">{escape(cell["mark"])}</span>' if cell["mark"] else ""
            client, _, server = cell["outcome"].partition(" | ")
            cells.append(
                f'<td class="{_cell_class(cell)}" title="{escape(cell["replay"])}"><details>'
                f"<summary><b>{escape(client)}</b>{mark}<br>{escape(server)}</summary>"
                f"<code>{escape(cell['replay'])}</code></details></td>"
            )
        rows.append(f"<tr>{''.join(cells)}</tr>")
    rows.append("</tbody></table>")
    return rows


def simulate_html(exploration: Exploration) -> str:
    """The simulation report as one HTML page: a grid per scenario family."""
    import json

    from fsm.simulate.report import LEGEND, matrices, summary_line, to_json

    findings = json.loads(to_json(exploration))
    body = [
        "<h1>Mosaico failure-path simulation</h1>",
        f'<p class="meta">seed {exploration.seed} &middot; up to {exploration.faults} '
        f"fault(s) per run &middot; scenarios: {escape(', '.join(exploration.scenarios))}</p>",
        f'<p class="summary">{escape(summary_line(exploration))}</p>',
        "<h2>How to read the grids</h2>",
        "<p>One grid per scenario family: a row per fault plan (<code>OPERATION#N:EFFECT</code>: "
        "the N-th call of the operation fails with that error kind, loses its reply, or drops "
        "its stream), a column per error policy. A cell reads "
        f"<b>{escape(LEGEND['cell'])}</b>. Click a cell for the command that replays it; "
        "hovering shows it too.</p>",
        '<div class="legend">',
        *(
            f'<span class="swatch {cls}">{escape(label)}</span><span>{escape(text)}</span>'
            for cls, label, text in _CELL_CLASSES
        ),
        *(
            f'<span class="swatch">{escape(key)}</span><span>{escape(text)}</span>'
            for key, text in LEGEND.items()
            if key not in ("cell", "!", "?", "-")
        ),
        "</div>",
    ]
    for family in matrices(exploration):
        body.append(f"<h2>{escape(family['family'])}: {escape(family['doc'])}</h2>")
        body += _grid(family)
    if findings["violations"] or findings["unknown"]:
        body += [
            "<h2>Findings</h2>",
            "<table><thead><tr><th>verdict</th><th>invariant</th><th>run</th><th>what</th>"
            "</tr></thead><tbody>",
        ]
        for f in findings["violations"] + findings["unknown"]:
            status = "fail" if f["verdict"] == "violated" else "unknown"
            body.append(
                f'<tr><td><span class="badge {status}">{escape(f["verdict"])}</span></td>'
                f"<td>{escape(f['invariant'])}</td>"
                f"<td>{escape(f['scenario'])} under <code>{escape(f['faults'])}</code></td>"
                f"<td>{escape(f['message'])}<pre>{escape(f['replay'])}</pre></td></tr>"
            )
        body.append("</tbody></table>")
    return _page("Mosaico failure-path simulation", body)
