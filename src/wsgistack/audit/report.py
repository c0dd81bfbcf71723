"""The audit as text, Markdown, JSON, and a self-contained HTML status page."""

from __future__ import annotations

import html
import json
from collections import Counter

from wsgistack.audit import NO_API, NOT_SUPPORTED, PARTIAL, SUPPORTED, Audit
from wsgistack.audit.scan import KINDS

ORDER = (SUPPORTED, PARTIAL, NOT_SUPPORTED, NO_API)
COLOURS = {SUPPORTED: "#1a7f37", PARTIAL: "#9a6700", NOT_SUPPORTED: "#cf222e",
           NO_API: "#6e7781"}


def _entries(a: Audit) -> str:
    return ", ".join(dict.fromkeys(f"{f.file}:{f.line}" for f in a.of("entry"))) or "-"


def _blockers(a: Audit) -> str:
    """The reasons that kept the verdict from `supported`."""
    if a.verdict == NO_API:
        return "-"
    return "; ".join(r for r in a.reasons
                     if not r.startswith(("WSGI entry:", "beside it,"))) or "-"


def _summary(audits: list[Audit]) -> str:
    counts = Counter(a.verdict for a in audits)
    return ", ".join(f"{counts[v]} {v}" for v in ORDER if counts[v])


def text(audits: list[Audit]) -> str:
    rows = [("project", "verdict", "entry points", "blockers")]
    rows += [(a.project, a.verdict, _entries(a), _blockers(a)) for a in audits]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    out = ["  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=False)) + "  " + r[3]
           for r in rows]
    for a in audits:
        at = f" at {a.revision}" if a.revision else ""
        out += ["", f"{a.project} ({a.path}{at}): {a.verdict}"]
        out += [f"  because {r}" for r in a.reasons]
        out += [f"  would change it: {c}" for c in a.to_change]
        out += [f"  {f.file}:{f.line}: [{f.kind}] {f.detail}" for f in a.findings]
    out += ["", _summary(audits)]
    return "\n".join(out) + "\n"


def markdown(audits: list[Audit]) -> str:
    def cell(s: str) -> str:
        return s.replace("|", "\\|")

    out = ["# WSGI deployability audit", "", _summary(audits), "",
           "| project | verdict | entry points | blockers |", "| --- | --- | --- | --- |"]
    out += [f"| {cell(a.project)} | **{a.verdict}** | {cell(_entries(a))} | "
            f"{cell(_blockers(a))} |" for a in audits]
    for a in audits:
        out += ["", f"## {a.project}: {a.verdict}", ""]
        out += [f"- {cell(r)}" for r in a.reasons]
        out += ["", "| file:line | finding | detail |", "| --- | --- | --- |"]
        out += [f"| `{f.file}:{f.line}` | {f.kind} | {cell(f.detail)} |" for f in a.findings]
    return "\n".join(out) + "\n"


def as_json(audits: list[Audit]) -> str:
    return json.dumps([{
        "project": a.project, "path": a.path, "revision": a.revision, "verdict": a.verdict,
        "reasons": list(a.reasons),
        "to_change": list(a.to_change),
        "findings": [{"kind": f.kind, "group": KINDS[f.kind][0], "file": f.file,
                      "line": f.line, "detail": f.detail} for f in a.findings],
    } for a in audits], indent=1) + "\n"


CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:70rem;color:#1f2328}
h1{font-size:1.6rem;margin-bottom:.2rem}.sub{color:#59636e;margin-top:0}
.tiles{display:flex;gap:1rem;margin:1.2rem 0}.tile{flex:1;border-radius:8px;padding:.8rem 1rem;
color:#fff}.tile b{font-size:1.8rem;display:block}
table{border-collapse:collapse;width:100%;margin:.6rem 0 1.4rem}
th,td{text-align:left;padding:.45rem .6rem;border-bottom:1px solid #d1d9e0;vertical-align:top}
th{background:#f6f8fa}.badge{color:#fff;border-radius:1rem;padding:.1rem .6rem;
white-space:nowrap;font-size:.85rem}code{font-size:.85rem}
details{border:1px solid #d1d9e0;border-radius:8px;padding:.5rem 1rem;margin:.6rem 0}
summary{cursor:pointer;font-weight:600}.g-entry{color:#1a7f37}.g-blocker,.g-broken,
.g-command{color:#cf222e}.g-risk{color:#9a6700}.g-hint,.g-ok,.g-transport{color:#59636e}
"""


def _badge(verdict: str) -> str:
    return f'<span class="badge" style="background:{COLOURS[verdict]}">{verdict}</span>'


def as_html(audits: list[Audit]) -> str:
    e = html.escape
    counts = Counter(a.verdict for a in audits)
    tiles = "".join(
        f'<div class="tile" style="background:{COLOURS[v]}"><b>{counts[v]}</b>{v}</div>'
        for v in ORDER)
    rows = "".join(
        f"<tr><td><a href='#p{i}'>{e(a.project)}</a></td><td>{_badge(a.verdict)}</td>"
        f"<td><code>{e(_entries(a))}</code></td><td>{e(_blockers(a))}</td></tr>"
        for i, a in enumerate(audits))
    details = []
    for i, a in enumerate(audits):
        items = "".join(f"<li>{e(r)}</li>" for r in a.reasons)
        found = "".join(
            f"<tr><td><code>{e(f.file)}:{f.line}</code></td>"
            f"<td class='g-{KINDS[f.kind][0]}'>{e(f.kind)}</td><td>{e(f.detail)}</td></tr>"
            for f in a.findings)
        at = e(f" at {a.revision}") if a.revision else ""
        details.append(
            f"<details id='p{i}'><summary>{e(a.project)} {_badge(a.verdict)}"
            f"</summary><p><code>{e(a.path)}</code>{at}</p><ul>{items}</ul><table><tr>"
            f"<th>file:line</th><th>finding</th><th>detail</th></tr>{found}</table></details>")
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<title>WSGI deployability audit</title>"
        f"<style>{CSS}</style></head><body><h1>WSGI deployability audit</h1>"
        f"<p class='sub'>{len(audits)} project(s): {e(_summary(audits))}</p>"
        f"<div class='tiles'>{tiles}</div>"
        "<table><tr><th>project</th><th>verdict</th><th>entry points</th><th>blockers</th></tr>"
        f"{rows}</table><h2>Evidence</h2>{''.join(details)}</body></html>\n")


FORMATS = {"text": text, "md": markdown, "json": as_json, "html": as_html}
