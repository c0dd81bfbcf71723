"""`wsgistack goal`: a community goal's status page, from its own document and the code.

One row per project team: its planning and completion artifacts as the document gives
them, what the document's review said of it, the audit's verdict on each of its trees with
the lines that decided it, and a flag wherever the document and the code disagree. Reads
documents and trees only (the audit's static reading); never the deployment side.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from wsgistack.audit import NO_API, NOT_SUPPORTED, SUPPORTED, Audit
from wsgistack.goal.document import Goal, GoalError, Team


@dataclass(frozen=True)
class Row:
    team: Team
    review: str  # "cannot", "can" or "" (not in the review's lists)
    audits: tuple[Audit, ...]
    flags: tuple[str, ...]


def read_teams(path: str) -> dict[str, list[str]]:
    """`--teams FILE`: TOML, team = ["repository", ...]."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise GoalError(f"{path}: cannot read the teams file: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise GoalError(f"{path}: not TOML ({exc}); write team = [\"repo\", ...]") from None
    out = {}
    for team, repos in data.items():
        if not isinstance(repos, list) or not all(isinstance(r, str) for r in repos):
            raise GoalError(f"{path}: {team}: expected a list of repository names")
        out[team.lower()] = [r.lower() for r in repos]
    return out


def _names(audit: Audit) -> set[str]:
    """What a tree answers to: its project name and its directory, without a version."""
    base = os.path.basename(os.path.normpath(audit.path)).lower()
    stem = base.rsplit("-", 1)[0] if base.rsplit("-", 1)[-1][:1].isdigit() else base
    return {audit.project.lower(), base, stem, stem.replace("openstack-", "")}


def _flags(review: str, completion: str, audits: Sequence[Audit]) -> list[str]:
    flags = []
    entries = [f for a in audits for f in a.of("entry")]
    if review == "cannot" and any(a.verdict == SUPPORTED for a in audits):
        where = ", ".join(f"{f.file}:{f.line}" for f in entries[:3])
        flags.append(f"the review says it cannot, but the code has a WSGI entry ({where})")
    done = completion in ("links", "prose") or review == "can"
    if done and audits and not entries:
        verdicts = ", ".join(sorted({a.verdict for a in audits}))
        flags.append(f"listed as done, but the code has no WSGI entry ({verdicts})")
    return flags


def rows(goal: Goal, audits: Sequence[Audit],
         teams: Mapping[str, list[str]] | None = None) -> list[Row]:
    """Every team of the document, with the trees that are its own: named in `teams`, or
    by the team's name."""
    cannot = {n.lower() for n in goal.cannot}
    can = {n.lower() for n in goal.can}
    out = []
    for team in goal.teams:
        name = team.name.lower()
        repos = set((teams or {}).get(name, [name]))
        mine = tuple(a for a in audits if _names(a) & repos)
        said = repos | {name}
        review = "cannot" if said & cannot else "can" if said & can else ""
        out.append(Row(team, review, mine, tuple(_flags(review, team.completion.state, mine))))
    return out


def unmatched(goal: Goal, audits: Sequence[Audit],
              teams: Mapping[str, list[str]] | None) -> list[str]:
    """One line for each team `--teams` names that the document lacks, or whose trees were
    not among those given."""
    known = {t.name.lower() for t in goal.teams}
    out = []
    for team, repos in (teams or {}).items():
        if team not in known:
            out.append(f"the teams file names team '{team}', which {goal.source} does not "
                       "have; check its spelling against the document's sections")
        elif not any(_names(a) & set(repos) for a in audits):
            out.append(f"team '{team}': no tree given for {', '.join(repos)}; its row has no "
                       "audit (pass the tree with --trees or --list)")
    return out


def verdict_of(row: Row) -> str:
    if not row.audits:
        return ""
    order = (SUPPORTED, "partial", NOT_SUPPORTED, NO_API)
    return min((a.verdict for a in row.audits), key=order.index)
