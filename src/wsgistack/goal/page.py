"""The goal's status page in each format: text, Markdown, RST (to paste back into the
governance repository), JSON, and one self-contained HTML page (sortable, readable on a
phone)."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Sequence

from wsgistack.goal import RULE, Row, change_links, verdict_of
from wsgistack.goal.document import Artifacts, Goal


def _artifacts(a: Artifacts) -> str:
    if a.state in ("none", "empty"):
        return a.state
    return "; ".join(a.items)


def _evidence(row: Row, limit: int = 3) -> list[str]:
    """Per repository: its verdict, the commit read (with --at), the reasons that decided
    it and the first entry lines; then the completion artifacts that are changes or
    commits, so the document's claim and the code sit side by side."""
    out = []
    for a in row.audits:
        lines = [f"{f.file}:{f.line} {f.detail}" for f in a.of("entry")[:limit]]
        at = f" at {a.revision[:12]}{a.revision[40:]}" if a.revision else ""
        out.append(f"{a.project}{at}: {a.verdict} ({'; '.join(a.reasons)})"
                   + (f" [{', '.join(lines)}]" if lines else ""))
    return out + [f"completion artifact: {u}" for u in change_links(row.team)]


def _summary(goal: Goal, rows: list[Row]) -> str:
    flagged = sum(1 for r in rows if r.flags)
    audited = sum(1 for r in rows if r.audits)
    return (f"{len(rows)} teams; {audited} with code audited; {flagged} where the document "
            f"and the code disagree; review of {goal.review_date or 'no date'}: "
            f"{len(goal.cannot)} cannot, {len(goal.can)} can")


def text(goal: Goal, rows: list[Row], left_out: Sequence[str] = ()) -> str:
    out = [goal.title, f"topic: {goal.topic}", _summary(goal, rows), f"rule: {RULE}",
           *[f"LEFT OUT: {w}" for w in left_out], ""]
    for r in rows:
        out.append(f"{r.team.name}: review {r.review or '-'}; audit {verdict_of(r) or '-'}")
        out.append(f"  planning: {_artifacts(r.team.planning)}")
        out.append(f"  completion: {_artifacts(r.team.completion)}")
        out += [f"  audit: {e}" for e in _evidence(r)]
        out += [f"  FLAG: {f}" for f in r.flags]
    return "\n".join(out) + "\n"


def _cell(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")


def markdown(goal: Goal, rows: list[Row], left_out: Sequence[str] = ()) -> str:
    out = [f"# {goal.title}", "", f"Gerrit topic: `{goal.topic}`. {_summary(goal, rows)}.", "",
           f"The audit column: {RULE}.", "",
           *[f"- **left out:** {_cell(w)}" for w in left_out], *([""] if left_out else []),
           "| team | planning | completion | review | audit | evidence | flags |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        out.append("| " + " | ".join(_cell(c) for c in (
            r.team.name, _artifacts(r.team.planning), _artifacts(r.team.completion),
            r.review, verdict_of(r), "<br>".join(_evidence(r)), "<br>".join(r.flags))) + " |")
    return "\n".join(out) + "\n"


def _rst_text(value: str) -> str:
    """Prose from the document as text: a `name_` reference or a `*` would be markup
    without its target here. Roles (`:repo:`) stay: the governance repository has them."""
    value = re.sub(r"(\w)_(?=\W|$)", r"\1\\_", value)
    return value.replace("*", "\\*").replace("|", "\\|")


def rst(goal: Goal, rows: list[Row], left_out: Sequence[str] = ()) -> str:
    """A `list-table`, as the governance repository's goal pages use."""
    title = f"Status: {goal.title}"
    out = [title, "=" * len(title), "", _summary(goal, rows) + ".", "",
           f"The audit: {_rst_text(RULE)}.", "",
           *[f"* Left out: {_rst_text(w)}" for w in left_out], *([""] if left_out else []),
           ".. list-table::", "   :header-rows: 1", "",
           "   * - Team", "     - Planning", "     - Completion", "     - Review",
           "     - Audit", "     - Flags"]
    for r in rows:
        cells = (r.team.name, _artifacts(r.team.planning), _artifacts(r.team.completion),
                 r.review or "-", "; ".join(_evidence(r)) or "-", "; ".join(r.flags) or "-")
        out.append(f"   * - {_rst_text(cells[0])}")
        out += [f"     - {_rst_text(c)}" for c in cells[1:]]
    return "\n".join(out) + "\n"


def as_json(goal: Goal, rows: list[Row], left_out: Sequence[str] = ()) -> str:
    return json.dumps({
        "title": goal.title, "topic": goal.topic, "criteria": list(goal.criteria),
        "left_out": list(left_out),
        "review": {"date": goal.review_date, "cannot": list(goal.cannot),
                   "can": list(goal.can)},
        "teams": [{
            "team": r.team.name, "notes": list(r.team.notes), "review": r.review,
            "planning": {"state": r.team.planning.state, "items": list(r.team.planning.items)},
            "completion": {"state": r.team.completion.state,
                           "items": list(r.team.completion.items)},
            "verdict": verdict_of(r), "changes": change_links(r.team),
            "audit": [{"project": a.project, "path": a.path, "revision": a.revision,
                       "verdict": a.verdict,
                       "reasons": list(a.reasons),
                       "entries": [f"{f.file}:{f.line}" for f in a.of("entry")]}
                      for a in r.audits],
            "flags": list(r.flags)} for r in rows],
    }, indent=1) + "\n"


CSS = """
body{font:15px/1.4 system-ui,sans-serif;margin:1rem;color:#1f2328}
table{border-collapse:collapse;width:100%;table-layout:fixed}th,td{border:1px solid #d0d7de;
padding:.4rem;vertical-align:top;text-align:left;overflow-wrap:anywhere}
th{background:#f6f8fa;cursor:pointer}col.t{width:9%}col.a{width:15%}col.r{width:7%}
col.v{width:10%}col.e{width:30%}col.f{width:14%}
td.flag,.warn li{background:#fff8c5}.v{font-weight:600;overflow-wrap:normal}a{word-break:break-all}
@media (max-width:700px){table,thead,tbody,tr,th,td{display:block}thead{display:none}
tr{margin:0 0 1rem;border:1px solid #d0d7de}td{border:none;border-bottom:1px solid #eee}
td::before{content:attr(data-h) ": ";font-weight:600}}
"""
# Click a header to sort by it (again: the other way).
SORT = """
document.querySelectorAll('th').forEach((th,i)=>th.onclick=()=>{const b=th.closest('table')
.tBodies[0];const rows=[...b.rows];const d=th.dataset.d=th.dataset.d==='1'?'-1':'1';
rows.sort((x,y)=>x.cells[i].innerText.localeCompare(y.cells[i].innerText)*d);
rows.forEach(r=>b.appendChild(r))});
"""


def _linked(items: tuple[str, ...] | list[str]) -> str:
    out = []
    for item in items:
        words = [f'<a href="{html.escape(w)}">{html.escape(w)}</a>'
                 if w.startswith(("http://", "https://")) else html.escape(w)
                 for w in item.split()]
        out.append(" ".join(words))
    return "<br>".join(out)


def as_html(goal: Goal, rows: list[Row], left_out: Sequence[str] = ()) -> str:
    heads = ("Team", "Planning", "Completion", "Review", "Audit", "Evidence", "Flags")
    body = []
    for r in rows:
        cells = (html.escape(r.team.name),
                 _linked(r.team.planning.items) or r.team.planning.state,
                 _linked(r.team.completion.items) or r.team.completion.state,
                 html.escape(r.review or "-"),
                 f'<span class="v">{html.escape(verdict_of(r) or "-")}</span>',
                 _linked(_evidence(r)) or "-", _linked(list(r.flags)) or "-")
        body.append("<tr>" + "".join(
            f'<td data-h="{h}"{" class=flag" if h == "Flags" and r.flags else ""}>{c}</td>'
            for h, c in zip(heads, cells, strict=True)) + "</tr>")
    return "\n".join([
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(goal.title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(goal.title)}</h1>",
        f"<p>Gerrit topic <code>{html.escape(goal.topic)}</code>. "
        f"{html.escape(_summary(goal, rows))}.</p>",
        f"<p>The audit column: {html.escape(RULE)}.</p>",
        *([f'<ul class="warn">{"".join(f"<li>Left out: {html.escape(w)}</li>" for w in left_out)}'
           "</ul>"] if left_out else []),
        '<table><colgroup><col class="t"><col class="a"><col class="a"><col class="r">'
        '<col class="v"><col class="e"><col class="f"></colgroup>',
        "<thead><tr>" + "".join(f"<th>{h}</th>" for h in heads) + "</tr></thead>",
        "<tbody>", *body, "</tbody></table>", f"<script>{SORT}</script></body></html>", ""])


FORMATS: dict[str, Callable[[Goal, list[Row], Sequence[str]], str]] = {
    "text": text, "md": markdown, "rst": rst, "json": as_json, "html": as_html}
