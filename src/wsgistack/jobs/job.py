"""What `wsgistack test` is asked to do (:class:`Job`), and what came of it on one backend
(:class:`Outcome`)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from wsgistack.backends import BACKENDS
from wsgistack.errors import WsgistackError, did_you_mean
from wsgistack.manifest import Manifest

PASSED = "passed"
FAILED = "failed"
TIMED_OUT = "timed out"
STACK_FAILED = "stack failed"

EXIT_PASSED = 0
EXIT_FAILED = 1  # a command failed (or timed out) on some backend
EXIT_STACK_FAILED = 2  # a stack did not come up


@dataclass(frozen=True)
class Job:
    manifest: Manifest
    command: tuple[str, ...]
    backends: tuple[str, ...]
    timeout: float
    artifacts: Path
    env: Mapping[str, str] = field(default_factory=dict)
    results: str = ""  # a file the command writes, relative to the manifest ("": none)
    keep: bool = False  # leave each stack up after its command


@dataclass(frozen=True)
class Outcome:
    backend: str
    result: str  # PASSED, FAILED, TIMED_OUT or STACK_FAILED
    artifacts: Path
    code: int | None = None  # the command's exit status
    healthy_seconds: float | None = None
    command_seconds: float | None = None
    error: str = ""  # why the stack did not come up, or the command did not start
    output_tail: tuple[str, ...] = ()  # what the matrix shows of the command's output
    failed_tests: tuple[str, ...] = ()
    log_error: str = ""  # the first error line of the services' logs

    @property
    def status(self) -> str:
        """`passed`, `failed exit N`, `timed out` or `stack failed`."""
        if self.result == FAILED and self.code is not None:
            return f"failed exit {self.code}"
        return self.result


def arguments(p: argparse.ArgumentParser) -> None:
    """The options of `wsgistack test`, as :func:`make` reads them."""
    p.add_argument("--backends", help="B,B or all (default: [test] backends)")
    p.add_argument("--artifacts", metavar="DIR", help="default: STATE/test-artifacts")
    p.add_argument("--junit", metavar="FILE", help="one test case per backend")
    p.add_argument("--timeout", type=float, metavar="S", help="default: [test] timeout")
    p.add_argument("--keep", action="store_true", help="leave each stack up (`down` stops it)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="after --: the test command")


def make(m: Manifest, command: list[str], backends: str | None, timeout: float | None,
         artifacts: str | None, keep: bool = False) -> Job:
    """The job `wsgistack test` was asked for: its options over the manifest's `[test]`."""
    command = command[1:] if command[:1] == ["--"] else command
    job = Job(
        manifest=m, command=tuple(command) or m.test.command,
        backends=select(backends.split(","), "--backends") if backends
        else select(m.test.backends, f"{m.path}: test.backends"),
        timeout=timeout or m.test.timeout, env=m.test.env, results=m.test.results,
        artifacts=Path(artifacts or m.state_path / "test-artifacts").absolute(), keep=keep)
    if not job.command:
        raise WsgistackError(f"{m.path}: no test command: give one after `--` "
                             "(wsgistack test -- pytest tests) or set [test] command")
    return job


def exit_code(outcomes: list[Outcome]) -> int:
    """2 when a stack did not come up, else 1 when a command failed, else 0."""
    if any(o.result == STACK_FAILED for o in outcomes):
        return EXIT_STACK_FAILED
    if any(o.result != PASSED for o in outcomes):
        return EXIT_FAILED
    return EXIT_PASSED


def select(names: list[str] | tuple[str, ...], where: str) -> tuple[str, ...]:
    """The backends named (`all`: the six), in the order given; `where` names the option or
    key they came from, for the message about one that is unknown."""
    if "all" in names:
        return tuple(BACKENDS)
    chosen = tuple(dict.fromkeys(n.strip() for n in names if n.strip()))
    for name in chosen:
        if name not in BACKENDS:
            raise WsgistackError(f"{where}: unknown backend '{name}'"
                                 + did_you_mean(name, BACKENDS)
                                 + f" (known: {', '.join(BACKENDS)}, or all)")
    if not chosen:
        raise WsgistackError(f"{where}: no backend named; give one or more, or all")
    return chosen


def slug(backend: str) -> str:
    """A backend's directory name (`apache+uwsgi` -> `apache-uwsgi`)."""
    return backend.replace("+", "-")
