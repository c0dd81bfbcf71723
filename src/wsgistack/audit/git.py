"""A git repository read as it was at a date, and the history of one line.

The commit read is the last one of the default branch before the date, following first
parents only (what the branch itself said then, not a side branch merged later that was
written earlier). Its files come out of the object store with `git archive` into a
temporary directory: the repository's work tree, index and HEAD are never touched, so an
operator's checkout with work in progress can be audited at any date."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from wsgistack.errors import WsgistackError

# No lock taken, no index refreshed: reading must leave the repository as it was.
ENV = {"GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class GitError(WsgistackError):
    """A repository that cannot be read at a date."""


@dataclass(frozen=True)
class Revision:
    sha: str
    date: str  # committer date, YYYY-MM-DD
    branch: str

    def __str__(self) -> str:
        return f"{self.sha} of {self.date} on {self.branch}"


def parse_date(text: str, flag: str = "--at") -> str:
    """`YYYY-MM-DD`, checked: the moment is the start of that day in UTC."""
    try:
        if not DATE.fullmatch(text):
            raise ValueError
        dt.date.fromisoformat(text)
    except ValueError:
        raise GitError(f"{flag} {text}: not a date; write it as YYYY-MM-DD "
                       "(the review at the goal's start: 2017-01-12)") from None
    return text


def _git(repo: str, *args: str, binary: bool = False) -> str | bytes:
    try:
        done = subprocess.run(["git", "-C", repo, *args], capture_output=True, check=False,
                              env={**os.environ, **ENV}, timeout=600)
    except FileNotFoundError:
        raise GitError("git is not installed; install it (apt-get install git) to read "
                       "repositories at a date") from None
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip().splitlines()
        raise GitError(f"{repo}: git {args[0]} failed: {err[-1] if err else done.returncode}")
    return done.stdout if binary else done.stdout.decode(errors="replace")


def _text(repo: str, *args: str) -> str:
    out = _git(repo, *args)
    assert isinstance(out, str)
    return out.strip()


def is_repository(path: str) -> bool:
    return Path(path, ".git").exists()


def default_branch(repo: str) -> str:
    """The branch a clone would check out (origin/HEAD); else main or master; else the
    branch HEAD is on."""
    for ref in ("refs/remotes/origin/HEAD", "refs/heads/main", "refs/heads/master"):
        try:
            if ref.endswith("/HEAD"):
                return _text(repo, "symbolic-ref", "--short", ref)
            _text(repo, "rev-parse", "--verify", "--quiet", ref)
            return ref.removeprefix("refs/heads/")
        except GitError:
            continue
    return _text(repo, "rev-parse", "--abbrev-ref", "HEAD")


def commit_before(repo: str, date: str) -> Revision:
    """The last first-parent commit of the default branch made before `date` began (UTC)."""
    if not is_repository(repo):
        raise GitError(f"{repo}: not a git repository; --at reads a repository's history "
                       "(pass a git checkout, or drop --at)")
    branch = default_branch(repo)
    line = _text(repo, "rev-list", "--first-parent", "-n1", "--format=%H %cs",
                 f"--before={date}T00:00:00+0000", branch, "--")
    found = [ln for ln in line.splitlines() if not ln.startswith("commit ")]
    if not found:
        first = _text(repo, "log", "--first-parent", "--reverse", "--format=%cs", branch)
        shallow = Path(repo, ".git", "shallow").exists()
        raise GitError(f"{repo}: no commit on {branch} before {date} (its first is of "
                       f"{first.splitlines()[0] if first else '?'}); "
                       + ("the clone is shallow: run `git fetch --unshallow` in it"
                          if shallow else "pass a later --at"))
    sha, day = found[0].split()
    return Revision(sha, day, branch)


def tip(repo: str) -> Revision:
    branch = default_branch(repo)
    sha, day = _text(repo, "log", "-1", "--format=%H %cs", branch, "--").split()
    return Revision(sha, day, branch)


def extract(repo: str, sha: str, dest: Path) -> None:
    """The commit's files under `dest`, streamed from the object store (regular files
    only: the audit reads text, and a symlink or a `..` name must not escape `dest`)."""
    try:
        proc = subprocess.Popen(["git", "-C", repo, "archive", "--format=tar", sha],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={**os.environ, **ENV})
    except FileNotFoundError:
        raise GitError("git is not installed; install it (apt-get install git) to read "
                       "repositories at a date") from None
    assert proc.stdout is not None and proc.stderr is not None
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                parts = Path(member.name).parts
                if not member.isfile() or Path(member.name).is_absolute() or ".." in parts:
                    continue
                source = tar.extractfile(member)
                if source is not None:
                    target = dest.joinpath(*parts)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(source.read())
    except tarfile.TarError:
        pass  # git's own message, read below, says why the stream stopped
    finally:
        proc.stdout.close()
        err = proc.stderr.read().decode(errors="replace").strip().splitlines()
        proc.stderr.close()
        code = proc.wait(timeout=600)
    if code != 0:
        raise GitError(f"{repo}: git archive failed: {err[-1] if err else code}")


def checkout_at(repo: str, revision: Revision) -> tempfile.TemporaryDirectory[str]:
    """A temporary directory holding the repository's files at `revision`; the caller
    removes it (use as a context manager)."""
    tmp = tempfile.TemporaryDirectory(prefix="wsgistack-at-")
    try:
        extract(repo, revision.sha, Path(tmp.name))
    except BaseException:
        tmp.cleanup()
        raise
    return tmp


def remote_names(path: str) -> set[str]:
    """The repository names a checkout's remotes give (`.../openstack/freezer-api.git` ->
    `freezer-api`), read from its config file: no git command, nothing written."""
    config = Path(path, ".git", "config")
    try:
        text = config.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    urls = re.findall(r"^\s*url\s*=\s*(\S+)", text, re.M)
    return {re.sub(r"\.git$", "", u.rstrip("/")).rsplit("/", 1)[-1].rsplit(":", 1)[-1].lower()
            for u in urls}


def first_added(repo: str, branch: str, file: str, text: str) -> Revision | None:
    """The first first-parent commit of `branch` whose change to `file` added `text` (git's
    pickaxe: the commit where the string's count in the file went up from zero)."""
    out = _text(repo, "log", "--first-parent", "--reverse", "--format=%H %cs",
                f"-S{text}", branch, "--", file)
    if not out:
        return None
    sha, day = out.splitlines()[0].split()
    return Revision(sha, day, branch)
