"""`wsgistack goal`: a community goal's status page, from its own document and the code.

One row per project team: its planning and completion artifacts as the document gives
them, what the document's review said of it, the audit's verdict on each of its trees with
the lines that decided it, and a flag wherever the document and the code disagree. Reads
documents and trees only (the audit's static reading); never the deployment side.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from wsgistack.audit import NO_API, NOT_SUPPORTED, PARTIAL, SUPPORTED, Audit, audit_tree, git
from wsgistack.goal.document import Goal, GoalError, Team
from wsgistack.goal.projects import repo_name


@dataclass(frozen=True)
class Row:
    team: Team
    review: str  # "cannot", "can" or "" (not in the review's lists)
    audits: tuple[Audit, ...]  # one per repository of the team that was given
    flags: tuple[str, ...]


# How a team's verdict follows from its repositories' (stated on the page).
RULE = ("a team's verdict comes from its repositories that serve an API (a library, client "
        "or agent with no API does not count): supported if all of them are, partial if some "
        "are supported or partial, not supported if none is; no API service if none serves one")


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


def tree_names(audit: Audit) -> set[str]:
    """What a tree answers to: its directory (without an sdist's version), its package
    name, and the repository names of its git remotes."""
    base = os.path.basename(os.path.normpath(audit.path)).lower()
    stem = base.rsplit("-", 1)[0] if base.rsplit("-", 1)[-1][:1].isdigit() else base
    package = audit.project.split()[0].lower() if audit.project.split() else base
    return {package, base, stem, stem.replace("openstack-", "")} | git.remote_names(audit.path)


def _where(audit: Audit, several: bool) -> list[str]:
    # One line per place: several servers' configs may name the same `application`.
    return list(dict.fromkeys((f"{audit.project.split()[0]}: " if several else "")
                              + f"{f.file}:{f.line}" for f in audit.of("entry")))


def _flags(review: str, completion: str, audits: Sequence[Audit],
           since: Callable[[Audit], str | None] | None) -> list[str]:
    flags = []
    verdict = team_verdict(audits)
    entries = [w for a in audits for w in _where(a, len(audits) > 1)]
    if review == "cannot" and verdict in (SUPPORTED, PARTIAL):
        flags.append(f"the review says it cannot, but the code has a WSGI entry "
                     f"({', '.join(entries[:3])})")
    if review == "cannot" and verdict == NO_API:
        flags.append("the review says it cannot, but no repository given serves an API (give "
                     "the API's repository; --projects names a team's repositories)")
    done = completion in ("links", "prose") or review == "can"
    if done and audits and not entries:
        verdicts = ", ".join(sorted({a.verdict for a in audits}))
        at = sorted({a.revision.split(" of ")[1].split()[0] for a in audits if a.revision})
        when = f" at {', '.join(at)}" if at else ""
        later = [s for a in audits if since and (s := since(a))]
        flags.append(f"listed as done, but the code{when} has no WSGI entry ({verdicts})"
                     + (f"; {'; '.join(later)}" if later else ""))
    return flags


def _claims(goal: Goal, teams: Mapping[str, list[str]] | None,
            projects: Mapping[str, list[str]] | None) -> list[tuple[str, set[str]]]:
    """(team, repository names) in the order a tree is matched: a `--teams` file first,
    then governance's projects.yaml, then each team's own name."""
    known = {t.name.lower() for t in goal.teams}
    out = [(t, set(r)) for t, r in (teams or {}).items() if t in known]
    out += [(t.lower(), {repo_name(r) for r in repos})
            for t, repos in (projects or {}).items()]
    out += [(t.name.lower(), {t.name.lower()}) for t in goal.teams]
    return out


def assign(goal: Goal, audits: Sequence[Audit], teams: Mapping[str, list[str]] | None = None,
           projects: Mapping[str, list[str]] | None = None
           ) -> tuple[dict[str, list[Audit]], list[str]]:
    """Each tree's team (by its lowered name), and one line for each tree that belongs to
    no team of the document: no tree is left out without a word."""
    known = {t.name.lower() for t in goal.teams}
    claims = _claims(goal, teams, projects)
    mine: dict[str, list[Audit]] = {t: [] for t in known}
    lost = []
    for audit in audits:
        names = tree_names(audit)
        owner = next((t for t, repos in claims if names & repos), None)
        if owner in known:
            mine[owner].append(audit)
        elif owner:
            lost.append(f"tree {audit.path} belongs to no team in the goal (projects.yaml "
                        f"gives it to team '{owner}', which {goal.source} does not have)")
        else:
            lost.append(f"tree {audit.path} belongs to no team in the goal (no team's "
                        f"repositories name {', '.join(sorted(names))}); name its team with "
                        "--projects or --teams")
    return mine, lost


def rows(goal: Goal, audits: Sequence[Audit],
         teams: Mapping[str, list[str]] | None = None,
         projects: Mapping[str, list[str]] | None = None,
         since: Callable[[Audit], str | None] | None = None) -> list[Row]:
    """Every team of the document, with the trees that are its own (see `assign`)."""
    cannot = {n.lower() for n in goal.cannot}
    can = {n.lower() for n in goal.can}
    owned = {t.lower(): {repo_name(r) for r in repos} for t, repos in (projects or {}).items()}
    mine, _ = assign(goal, audits, teams, projects)
    out = []
    for team in goal.teams:
        name = team.name.lower()
        said = set((teams or {}).get(name, [])) | owned.get(name, set()) | {name}
        said |= {n for a in mine[name] for n in tree_names(a)}
        review = "cannot" if said & cannot else "can" if said & can else ""
        trees = tuple(mine[name])
        out.append(Row(team, review, trees,
                       tuple(_flags(review, team.completion.state, trees, since))))
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
        elif not any(tree_names(a) & set(repos) for a in audits):
            out.append(f"team '{team}': no tree given for {', '.join(repos)}; its row has no "
                       "audit (pass the tree with --trees or --list)")
    return out


def team_verdict(audits: Sequence[Audit]) -> str:
    """See RULE."""
    if not audits:
        return ""
    serving = [a.verdict for a in audits if a.verdict != NO_API]
    if not serving:
        return NO_API
    if all(v == SUPPORTED for v in serving):
        return SUPPORTED
    if any(v in (SUPPORTED, PARTIAL) for v in serving):
        return PARTIAL
    return NOT_SUPPORTED


def verdict_of(row: Row) -> str:
    return team_verdict(row.audits)


# A completion artifact that is a change or a commit: shown beside the code's evidence.
CHANGE_LINK = re.compile(r"review\.(?:openstack|opendev)\.org/(?:#/)?(?:c/)?\d+|/commit/|"
                         r"[?&;]id=[0-9a-f]{7,}|github\.com/[^/]+/[^/]+/(?:commit|pull)/")


# Governance's `:repo:` role names a path under opendev.org (`openstack/devstack/commit/SHA`).
REPO_ROLE = re.compile(r":repo:`([^`<>]+)`")


def change_links(team: Team) -> list[str]:
    """The team's completion artifacts that are changes or commits, as addresses."""
    roles = [f"https://opendev.org/{m}" for item in team.completion.items
             for m in REPO_ROLE.findall(item)]
    return [u for u in [*team.completion.links, *roles] if CHANGE_LINK.search(u)]


def entry_since(audit: Audit) -> str | None:
    """For a repository read at a date (`--at`) that had no WSGI entry then: since when its
    default branch has the entry it has today (the first commit that added it), or None
    when today's code has none either."""
    if not audit.revision:
        return None
    name = audit.project.split()[0]
    try:
        now = git.tip(audit.path)
        with git.checkout_at(audit.path, now) as tmp:
            entries = audit_tree(tmp).of("entry")
            if not entries:
                return None
            # A pbr `wsgi_scripts` entry: when the section appeared, whatever its lines
            # became later; else the line that makes the entry (`application = ...`).
            entry = next((f for f in entries if f.kind == "wsgi-script"), entries[0])
            lines = Path(tmp, entry.file).read_text(errors="replace").splitlines()
            needle = ("wsgi_scripts" if entry.kind == "wsgi-script"
                      else lines[entry.line - 1].strip())
        added = git.first_added(audit.path, now.branch, entry.file, needle)
    except (git.GitError, OSError, IndexError) as exc:
        return f"{name}: its history could not be read ({exc})"
    if added is None:
        return f"{name}: has a WSGI entry today ({entry.file}:{entry.line}), added when unknown"
    return (f"{name} has a WSGI entry since {added.date} (commit {added.sha[:12]} added "
            f"`{needle}` to {entry.file})")
