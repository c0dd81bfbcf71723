"""Governance's `reference/projects.yaml`: which repositories belong to which team.

Only the path team -> `deliverables` -> deliverable -> `repos` is read, in both layouts the
file has had (2017's, with `openstack-dev/` and `openstack-infra/` repositories, and today's,
with `deprecated` and `release-management` beside `repos`). A reader of that one path by
indentation needs no YAML library at run time; tests compare it with PyYAML on both
layouts."""

from __future__ import annotations

import re
from pathlib import Path

from wsgistack.goal.document import GoalError

KEY = re.compile(r"""^(\s*)(['"]?)([^'"#:][^#:]*?)\2:(?:\s+(.*?))?\s*$""")
ITEM = re.compile(r"""^(\s*)-\s+(['"]?)(.+?)\2\s*$""")
BLOCK_SCALAR = re.compile(r"^[>|][+-]?\d*$")


def _strip_comment(line: str) -> str:
    return re.sub(r"\s+#.*$", "", line) if not line.lstrip().startswith("#") else ""


def parse(text: str, source: str) -> dict[str, list[str]]:
    """Team name -> its repositories (`openstack/nova`), in the file's order."""
    teams: dict[str, list[str]] = {}
    stack: list[tuple[int, str]] = []  # (indent, key) of the keys enclosing this line
    scalar_at = -1  # inside a block scalar (`mission: >`) opened at this indent
    for raw in text.splitlines():
        line = _strip_comment(raw.rstrip())
        if not line.strip() or line.strip() == "---":
            continue
        indent = len(line) - len(line.lstrip())
        if scalar_at >= 0:
            if indent > scalar_at:
                continue
            scalar_at = -1
        path = [k for _, k in stack]
        item = ITEM.match(line)
        if item:
            if len(path) == 4 and path[1] == "deliverables" and path[3] == "repos":
                teams[path[0]].append(item.group(3))
            continue
        key = KEY.match(line)
        if key is None:
            continue  # a plain scalar's continuation line
        while stack and stack[-1][0] >= indent:
            stack.pop()
        name, value = key.group(3).strip(), key.group(4) or ""
        if not stack:
            teams.setdefault(name, [])
        stack.append((indent, name))
        path = [k for _, k in stack]
        if BLOCK_SCALAR.match(value):
            scalar_at = indent
        elif len(path) == 4 and path[1] == "deliverables" and path[3] == "repos" and value:
            teams[path[0]] += [r.strip().strip("'\"") for r in value.strip("[]").split(",")
                               if r.strip()]
    if not any(teams.values()):
        raise GoalError(f"{source}: no team lists a repository (team -> deliverables -> "
                        "NAME -> repos); pass governance's reference/projects.yaml")
    return teams


def read(path: str) -> dict[str, list[str]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise GoalError(f"{path}: cannot read projects.yaml: {exc.strerror}") from None
    return parse(text, path)


def repo_name(repo: str) -> str:
    """`openstack/freezer-api` -> `freezer-api`: what a checkout's directory is called."""
    return repo.rsplit("/", 1)[-1].lower()
