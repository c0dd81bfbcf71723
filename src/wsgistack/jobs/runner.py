"""`wsgistack test`: the project's own test command against its stack, on each backend in
turn.

Each backend gets a stack of its own: the manifest's services in `STATE/test/BACKEND`, on
free ports of 127.0.0.1, so a stack the user has up (in `STATE`) is left alone. The stack
comes up as `up` brings it (setup, health, after_up), the command runs with the stack's
environment in a session of its own, bounded by the timeout, the artifacts are collected,
and the stack goes down: also when the command fails or times out, and on Ctrl-C or
SIGTERM, after which no process of the command or of the stack is left.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from wsgistack import plan as plans
from wsgistack import runtime, secrets
from wsgistack.backends import get
from wsgistack.errors import WsgistackError
from wsgistack.host import DEFAULT_PATH
from wsgistack.jobs import artifacts, environment
from wsgistack.jobs.job import FAILED, PASSED, STACK_FAILED, TIMED_OUT, Job, Outcome, slug
from wsgistack.lifecycle import preflight
from wsgistack.lifecycle.processes import Running
from wsgistack.manifest import Manifest
from wsgistack.observe import AccessLog

STOP_WAIT = 10.0  # seconds the command's processes get after SIGTERM, before SIGKILL
NOT_STARTED = 127  # the shell's status for a command that cannot be run


def state_dir(m: Manifest, backend: str) -> Path:
    """Where the test stack of `backend` lives: under the manifest's own state dir, so that
    its `down` finds it too."""
    return m.state_path / "test" / slug(backend)


def stack_of(m: Manifest, base_port: int) -> Manifest:
    """The manifest as its test stack runs it: on 127.0.0.1 from `base_port` on (every
    service's port, then the metrics endpoint's), URLs naming 127.0.0.1."""
    services = tuple(dataclasses.replace(s, port=0) for s in m.services)
    metrics = "off" if m.stack.metrics == "off" else f"127.0.0.1:{base_port + len(services)}"
    stack = dataclasses.replace(m.stack, host="127.0.0.1", public_host="",
                                base_port=base_port, metrics=metrics)
    return dataclasses.replace(m, stack=stack, services=services)


def plan_for(m: Manifest, backend: str) -> plans.Plan:
    base = preflight.free_ports("127.0.0.1", len(m.services) + 1)
    p = plans.build(stack_of(m, base), get(backend), state=state_dir(m, backend))
    secrets.hide(p.secrets)
    return p


def fresh(m: Manifest, backend: str) -> plans.Plan:
    """The plan of a new test stack for `backend`: what an earlier one left (`--keep`)
    stopped and removed first."""
    state = state_dir(m, backend)
    if state.is_dir():
        runtime.down(str(state))
        shutil.rmtree(state, ignore_errors=True)
    return plan_for(m, backend)


def down(p: plans.Plan, running: list[Running]) -> None:
    """A test stack stopped, its state dir removed."""
    runtime.stop_stack(p.state, running)
    _remove(p)


def _remove(p: plans.Plan) -> None:
    shutil.rmtree(p.state, ignore_errors=True)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(p.state))  # STATE/test, when no other is left


def _command_env(job: Job, p: plans.Plan) -> dict[str, str]:
    """The caller's environment, the stack's, then `[test] env`; the directory of the
    Python running wsgistack first on PATH (its `pytest` is found without activating it)."""
    env = {**os.environ, **environment.stack_env(p), **job.env}
    here = os.path.dirname(sys.executable)
    env["PATH"] = os.pathsep.join([here, env.get("PATH", DEFAULT_PATH)])
    return env


def _end(child: subprocess.Popen[bytes]) -> None:
    """Stop the command's whole session (it leads it): SIGTERM, then SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + STOP_WAIT
        while time.monotonic() < deadline:
            child.poll()  # the leader reaped: only the live ones keep the group
            try:
                os.killpg(child.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


def run_command(job: Job, p: plans.Plan, where: Path) -> tuple[str, int | None, float, str]:
    """(result, exit status, seconds, why it did not start) of the command on `p`'s stack;
    its output in `where`."""
    t0 = time.monotonic()
    with open(where / artifacts.STDOUT, "wb") as out, open(where / artifacts.STDERR, "wb") as err:
        try:
            child = subprocess.Popen(
                job.command, cwd=job.manifest.root, env=_command_env(job, p),
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)
        except OSError as exc:
            return FAILED, NOT_STARTED, 0.0, f"cannot run {job.command[0]}: {exc.strerror}"
        try:
            code = child.wait(timeout=job.timeout)
        except subprocess.TimeoutExpired:
            return TIMED_OUT, None, time.monotonic() - t0, ""
        finally:
            _end(child)  # what it left running, or all of it on a timeout or Ctrl-C
    return (PASSED if code == 0 else FAILED), code, time.monotonic() - t0, ""


def _mask_output(where: Path) -> None:
    for name in (artifacts.STDOUT, artifacts.STDERR):
        path = where / name
        if path.is_file():
            text = path.read_bytes().decode("utf-8", "replace")
            path.write_text(secrets.redact(text), encoding="utf-8")


def run_backend(job: Job, backend: str) -> Outcome:
    """Up, command, artifacts, down: one backend."""
    where = job.artifacts / slug(backend)
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    p = fresh(job.manifest, backend)
    running: list[Running] = []
    t0 = time.monotonic()
    outcome = Outcome(backend, STACK_FAILED, where)
    try:
        try:
            running = runtime.up(p, lambda _msg: None)
        except WsgistackError as exc:
            outcome = dataclasses.replace(outcome, error=str(exc))
            artifacts.write_up_error(where, exc)
        else:
            healthy = time.monotonic() - t0
            result, code, seconds, why = run_command(job, p, where)
            _mask_output(where)
            outcome = Outcome(backend, result, where, code, healthy, seconds, why)
    finally:
        _finish(job, p, where, running)
    tail, failed = artifacts.output_summary(where)
    names = [s.name for s in p.services]
    outcome = dataclasses.replace(outcome, output_tail=tail, failed_tests=failed,
                                  log_error=artifacts.first_error(where / "logs", names))
    artifacts.write_summary(outcome, job.command, environment.stack_env(p))
    return outcome


def _finish(job: Job, p: plans.Plan, where: Path, running: list[Running]) -> None:
    """Artifacts collected, the stack down (unless kept) and its state dir removed. The logs
    are taken once the servers have stopped: their workers write the last access lines as
    they exit."""
    try:
        artifacts.collect(p, where)
        if job.results:
            artifacts.keep_results(job.manifest.root / job.results, where)
    finally:
        kept = job.keep and running
        if kept:
            time.sleep(2 * AccessLog.FLUSH)  # the lines of the last requests, written
        else:
            runtime.stop_stack(p.state, running)
        try:
            artifacts.collect_logs(p, where)
        finally:
            if not kept:  # as before the logs moved here: removed whatever the copy did
                _remove(p)


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a CI job cancelled): stopped as Ctrl-C stops it."""


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_signum: int, _frame: object) -> None:
        raise _Terminated()

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def run(job: Job, progress: Callable[[Outcome, int], None]) -> list[Outcome]:
    """Every backend of the job in turn; `progress(outcome, index)` after each."""
    outcomes: list[Outcome] = []
    with _sigterm_as_interrupt():
        for index, backend in enumerate(job.backends, 1):
            outcomes.append(run_backend(job, backend))
            progress(outcomes[-1], index)
    return outcomes
