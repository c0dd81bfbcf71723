"""Read a community goal document in the format of OpenStack's governance repository: the
title, the gerrit topic, the completion criteria, the review's lists of projects that can
and cannot, and one section per project team with its planning and completion artifacts
(links, `None`, or prose). Plain text reading; no RST library needed for this much."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from wsgistack.errors import WsgistackError

ADORNMENT = re.compile(r"^([=\-~^\"'`#*+])\1{2,}\s*$")
MARKERS = {"planning": "Planning Artifacts:", "completion": "Completion Artifacts:"}
DATE = re.compile(r"\bOn (\d{1,2} \w+ \d{4})")


class GoalError(WsgistackError):
    """A goal document that cannot be read, or is not one."""


@dataclass(frozen=True)
class Artifacts:
    """One team's planning or completion artifacts as the document gives them."""

    items: tuple[str, ...] = ()  # each bullet or paragraph, continuation lines joined
    none: bool = False  # said "None" in so many words

    @property
    def links(self) -> tuple[str, ...]:
        return tuple(u for item in self.items for u in re.findall(r"https?://[^\s<>`]+", item))

    @property
    def state(self) -> str:
        """"none" (said so), "empty" (nothing written), "links" or "prose"."""
        if self.none:
            return "none"
        if not self.items:
            return "empty"
        return "links" if self.links or any(":repo:" in i for i in self.items) else "prose"


@dataclass(frozen=True)
class Team:
    name: str
    planning: Artifacts
    completion: Artifacts
    notes: tuple[str, ...] = ()  # prose outside the two lists (a team with no API says so)


@dataclass(frozen=True)
class Goal:
    source: str
    title: str
    topic: str
    criteria: tuple[str, ...]
    review_date: str
    cannot: tuple[str, ...]  # the review's list of projects that cannot deploy via WSGI
    can: tuple[str, ...]  # and of those that already do
    teams: tuple[Team, ...]


@dataclass(frozen=True)
class _Section:
    title: str
    level: int
    body: list[str]


def _sections(lines: list[str]) -> tuple[str, list[_Section]]:
    """The title (over- and underlined) and every section after it, levels by adornment
    in order of first use, as RST does."""
    styles: list[str] = []
    title, found, body = "", list[_Section](), list[str]()
    i = 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        over = i > 0 and ADORNMENT.match(lines[i - 1] or "") and ADORNMENT.match(nxt)
        if line.strip() and ADORNMENT.match(nxt) and len(nxt.strip()) >= len(line.strip()):
            if over and not title:
                title = line.strip()
                body = []
            else:
                style = nxt.strip()[0]
                if style not in styles:
                    styles.append(style)
                body = []
                found.append(_Section(line.strip(), styles.index(style), body))
            i += 2
            continue
        if not ADORNMENT.match(line):
            body.append(line)
        i += 1
    return title, found


def _blocks(body: list[str]) -> list[str]:
    """Bullets and paragraphs, each joined into one line; comments (`..` with nothing
    after the dots' directive) dropped, directives kept as prose."""
    out: list[str] = []
    current: list[str] = []
    comment = False

    def flush() -> None:
        if current:
            out.append(" ".join(current))
            current.clear()

    for raw in body:
        line = raw.rstrip()
        text = line.strip()
        if not text:
            flush()
            comment = False
            continue
        if text.startswith("..") and not re.match(r"\.\. [\w-]+::", text):
            flush()
            comment = True  # an RST comment, and the lines indented under it
            continue
        if comment and line.startswith(" "):
            continue
        comment = False
        directive = re.match(r"\.\. ([\w-]+)::\s*", text)
        if directive:  # `.. note::` and its text: "Note: ..."
            flush()
            text = f"{directive.group(1).capitalize()}: {text[directive.end():]}".rstrip()
        if re.match(r"^(\*|-|#\.|\d+\.)\s", text):
            flush()
            text = re.sub(r"^(\*|-|#\.|\d+\.)\s+", "", text)
        current.append(text)
    flush()
    return out


TARGET = re.compile(r"^\s*\.\. _([^:]+):\s*(\S+)\s*$")


def _plain(item: str, targets: dict[str, str]) -> str:
    """Links as text and address: `` `text <url>`_ ``, and `` `name`_ `` with its target
    defined elsewhere in the section (`.. _name: url`)."""
    item = re.sub(r"`([^`<]+?)\s*<([^>]+)>`__?", r"\1 (\2)", item)
    return re.sub(r"`([^`]+)`_\b|\b(\w+)_\b",
                  lambda m: (f"{m.group(1) or m.group(2)} "
                             f"({targets.get((m.group(1) or m.group(2)).lower(), '?')})")
                  if (m.group(1) or m.group(2)).lower() in targets else m.group(0), item)


def _team(section: _Section) -> Team:
    parts: dict[str, list[str]] = {"notes": [], "planning": [], "completion": []}
    where = "notes"
    inline: dict[str, str] = {}
    for line in section.body:
        text = line.strip()
        for key, marker in MARKERS.items():
            if text.startswith(marker):
                where = key
                inline[key] = text[len(marker):].strip()
                break
        else:
            parts[where].append(line)

    targets = {m.group(1).lower(): m.group(2) for line in section.body
               if (m := TARGET.match(line))}

    def artifacts(key: str) -> Artifacts:
        items = [_plain(i, targets)
                 for i in _blocks(([inline[key]] if inline.get(key) else []) + parts[key])]
        said_none = [i for i in items if i.rstrip(".").lower() == "none"]
        return Artifacts(tuple(i for i in items if i not in said_none), bool(said_none))

    return Team(section.title, artifacts("planning"), artifacts("completion"),
                tuple(_blocks(parts["notes"])))


def _review(body: list[str]) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """(date, cannot, can): the bullet lists after the paragraphs that introduce them."""
    text = "\n".join(body)
    date = DATE.search(text)
    lists: dict[str, list[str]] = {"cannot": [], "can": []}
    which = ""
    for block in _blocks(body):
        low = block.lower()
        if "don't support" in low or "do not support" in low or "can't be" in low:
            which = "cannot"
        elif "already" in low:
            which = "can"
        elif which and re.fullmatch(r"[\w.-]+", block):
            lists[which].append(block)
    return (date.group(1) if date else "", tuple(lists["cannot"]), tuple(lists["can"]))


def parse(text: str, source: str) -> Goal:
    title, sections = _sections(text.splitlines())
    if not title:
        raise GoalError(f"{source}: no title (a line over- and underlined with '='): not a "
                        "goal document")
    by_name = {s.title.lower(): s for s in sections}
    teams_at = next((i for i, s in enumerate(sections) if s.title.lower() == "project teams"),
                    None)
    if teams_at is None:
        raise GoalError(f"{source}: no 'Project Teams' section: not a goal document in the "
                        "governance format")
    top = sections[teams_at].level
    teams = []
    for section in sections[teams_at + 1:]:
        if section.level <= top:
            break
        if section.level == top + 1:
            teams.append(_team(section))
    topic_body = by_name.get("gerrit topic")
    topic = next((ln.strip() for ln in (topic_body.body if topic_body else [])
                  if ln.startswith((" ", "\t")) and ln.strip()), "")
    criteria = by_name.get("completion criteria")
    impact = next((s for s in sections if s.title.lower().startswith("current state")), None)
    date, cannot, can = _review(impact.body if impact else [])
    return Goal(source, title, topic,
                tuple(b for b in _blocks(criteria.body if criteria else [])
                      if not b.endswith(":")),
                date, cannot, can, tuple(teams))


def read(path: str) -> Goal:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise GoalError(f"{path}: cannot read the goal document: {exc.strerror}") from None
    return parse(text, path)
