"""What a test run leaves for people and CI, per backend, in the layout of devstack's job
logs:

    ARTIFACTS/BACKEND/logs/       every log of the stack: each service's log and access log
                                  (`NAME-access.log`), the servers' own logs, setup and
                                  after_up output; `stack-up.log` when it did not come up
    ARTIFACTS/BACKEND/etc/        the rendered configs (conf/), entries (entries/), the
                                  services' templates as rendered and a clouds.yaml
    ARTIFACTS/BACKEND/status.json the stack as `wsgistack status --json` describes it
    ARTIFACTS/BACKEND/command-stdout.txt, command-stderr.txt
    ARTIFACTS/BACKEND/results/    the file the command wrote (`[test] results`), if any
    ARTIFACTS/BACKEND/summary.json

Every text copied passes the secret filter: a secret of the stack is `***` in all of them.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from wsgistack import secrets
from wsgistack.errors import WsgistackError
from wsgistack.jobs.job import FAILED, PASSED, STACK_FAILED, TIMED_OUT, Outcome
from wsgistack.lifecycle import health, processes
from wsgistack.logview import ERROR_WORDS
from wsgistack.plan import Plan
from wsgistack.provision import CLOUDS

STDOUT = "command-stdout.txt"
STDERR = "command-stderr.txt"
SUMMARY = "summary.json"
TAIL_LINES = 5
# pytest's short summary (`-rfE`, its default): the tests that failed, one a line.
FAILED_LINE = re.compile(r"^(FAILED|ERROR) (\S+)")


def copy_masked(source: Path, target: Path) -> None:
    """A text file copied with its secrets masked."""
    target.parent.mkdir(parents=True, exist_ok=True)
    text = source.read_bytes().decode("utf-8", "replace")
    target.write_text(secrets.redact(text), encoding="utf-8")


def copy_tree(source: Path, target: Path) -> None:
    if not source.is_dir():
        return
    for path in sorted(source.rglob("*")):
        if path.is_file() and not path.is_symlink():
            copy_masked(path, target / path.relative_to(source))


def collect(plan: Plan, where: Path) -> None:
    """The stack's configs, entries and status, into `where` (while it is still up: the
    status is read from the running processes)."""
    state = Path(plan.state)
    copy_tree(state / "conf", where / "etc" / "conf")
    copy_tree(state / "entries", where / "etc" / "entries")
    for target in (*(t for s in plan.services for t, _ in s.provision.templates),
                   plan.path(CLOUDS)):  # the rendered templates, and a clouds.yaml
        if Path(target).is_file() and Path(target).is_relative_to(state):
            copy_masked(Path(target), where / "etc" / Path(target).relative_to(state))
    (where / "status.json").write_text(json.dumps(status(plan), indent=1) + "\n",
                                       encoding="utf-8")


def collect_logs(plan: Plan, where: Path) -> None:
    copy_tree(Path(plan.state) / "logs", where / "logs")


def status(plan: Plan) -> dict[str, Any]:
    """Per service: URL, health, server, Python and processes, as `status --json` has them."""
    state = processes.load_state(plan.state)
    if state is None:
        return {"stack": plan.name, "backend": plan.backend, "up": False}
    services = []
    for svc in state.services:
        code, why = health.http_status(svc.health_url)
        services.append({
            "name": svc.name, "url": svc.url, "server": svc.server, "python": svc.python,
            "health": "healthy" if code == svc.health_status else (f"HTTP {code}" if code
                                                                   else f"down: {why}"),
            "processes": [{"name": r.name, "pid": r.pid,
                           "state": "running" if r.alive() else "gone"}
                          for r in state.serving(svc.name)]})
    return {"stack": plan.name, "backend": plan.backend, "up": True, "services": services}


UP_LOG = "stack-up.log"


def write_up_error(where: Path, exc: WsgistackError) -> None:
    """Why the stack did not come up, and what lies behind it (an app's traceback, from
    the trial load that `up` makes before starting anything), as `logs/stack-up.log`."""
    (where / "logs").mkdir(exist_ok=True)
    text = "\n".join(t for t in (exc.detail.rstrip(), f"wsgistack: error: {exc}") if t)
    (where / "logs" / UP_LOG).write_text(secrets.redact(text) + "\n", encoding="utf-8")


def keep_results(source: Path, where: Path) -> None:
    """The command's own results file (JUnit XML, subunit), when it wrote one: subunit is
    binary, and kept as it is."""
    if source.is_file():
        (where / "results").mkdir(exist_ok=True)
        shutil.copyfile(source, where / "results" / source.name)


def first_error(logs: Path, services: Iterable[str]) -> str:
    """The first line of the services' logs (then the servers') that reports an error."""
    names = [f"{name}.log" for name in services]
    others = sorted(p.name for p in logs.glob("*.log") if p.name not in names
                    and not p.name.endswith("-access.log"))
    for name in (*names, *others):
        try:
            text = (logs / name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            if not line.startswith(processes.START_MARK) and ERROR_WORDS.search(line):
                return f"{name}: {line.strip()}"
    return ""


def output_summary(where: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(what the matrix shows of the command's output, the tests it names as failed): the
    last lines of its stdout and stderr, and pytest's FAILED and ERROR lines."""
    lines: list[str] = []
    for name in (STDOUT, STDERR):
        path = where / name
        if path.is_file():
            lines += [ln for ln in path.read_text(encoding="utf-8", errors="replace")
                      .splitlines() if ln.strip()]
    failed = tuple(m.group(2) for m in map(FAILED_LINE.match, lines) if m)
    return tuple(lines[-TAIL_LINES:]), failed


def write_summary(outcome: Outcome, command: tuple[str, ...], env: dict[str, str]) -> None:
    doc = {**dataclasses.asdict(outcome), "status": outcome.status, "command": list(command),
           "environment": env, "artifacts": str(outcome.artifacts)}
    (outcome.artifacts / SUMMARY).write_text(secrets.redact(json.dumps(doc, indent=1)) + "\n",
                                             encoding="utf-8")


def _seconds(o: Outcome) -> float:
    return (o.healthy_seconds or 0) + (o.command_seconds or 0)


def junit(outcomes: list[Outcome], suite: str) -> str:
    """One test case per backend: a failure for a command that failed or timed out, an
    error for a stack that did not come up."""
    root = ElementTree.Element("testsuite", {
        "name": suite, "tests": str(len(outcomes)),
        "failures": str(sum(o.result in (FAILED, TIMED_OUT) for o in outcomes)),
        "errors": str(sum(o.result == STACK_FAILED for o in outcomes)),
        "time": f"{sum(map(_seconds, outcomes)):.3f}"})
    for o in outcomes:
        case = ElementTree.SubElement(root, "testcase", {
            "classname": suite, "name": o.backend, "time": f"{_seconds(o):.3f}"})
        if o.result != PASSED:
            tag = "error" if o.result == STACK_FAILED else "failure"
            text = "\n".join([*(f"failed: {t}" for t in o.failed_tests), *o.output_tail,
                              *([o.error] if o.error else []),
                              *([o.log_error] if o.log_error else [])])
            ElementTree.SubElement(case, tag, {"message": o.status}).text = text
        ElementTree.SubElement(case, "system-out").text = f"artifacts: {o.artifacts}"
    ElementTree.indent(root)
    return secrets.redact(ElementTree.tostring(root, encoding="unicode", xml_declaration=True))
