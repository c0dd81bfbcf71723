"""The local target: a stack in a private server root, started, reloaded and stopped by
wsgistack itself.

Backends only describe (`render`, `command`); lifecycle/ acts on their descriptions: its
preflight checks, its process records and its health probes. This module puts them in
order, and holds the state dir's lock while it does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import shlex
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from wsgistack import access, provision
from wsgistack.backends import get
from wsgistack.backends.base import Proc, entry_file
from wsgistack.errors import ServerError
from wsgistack.host import DEFAULT_PATH
from wsgistack.lifecycle import health, preflight, processes
from wsgistack.lifecycle.processes import Running, StackState
from wsgistack.plan import EXPORTER as EXPORTER
from wsgistack.plan import Plan, ServicePlan


def render(plan: Plan) -> dict[str, str]:
    return get(plan.backend).render(plan)


def commands(plan: Plan) -> list[Proc]:
    """Every process of the stack: the backend's servers, then the metrics exporter."""
    procs = get(plan.backend).command(plan)
    if plan.metrics:
        procs.append(Proc(
            EXPORTER, (sys.executable, "-m", "wsgistack.exporter", "--listen", plan.metrics,
                       "--state", plan.state),
            plan.path("logs", f"{EXPORTER}.log"), cwd=plan.state,
            env={"PATH": DEFAULT_PATH, "LANG": "C.UTF-8"},
            # Never signalled by a reload: what it reads is the servers' files.
            reload_when=("conf/metrics.never",)))
    return procs


def metrics_dirs(plan: Plan) -> None:
    """prometheus_client's multiprocess files, one dir per service, emptied at `up` (counts
    start again with the stack, as a server's own would)."""
    if not plan.metrics:
        return
    access.make_dir(plan, plan.path("metrics"), access.PASS_THROUGH)
    for svc in plan.services:
        shutil.rmtree(plan.path("metrics", svc.name), ignore_errors=True)
        access.make_dir(plan, plan.path("metrics", svc.name), access.GROUP_DIR, svc.user,
                        svc.group)


def _ready(plan: Plan, progress: Callable[[str], None]) -> Plan:
    """What the new processes will run on, made before anything running is touched: users,
    directories, venvs. Returns the plan with what the venvs now hold (their own servers)."""
    provision.ensure_users(plan, progress)  # first: files are handed to them
    access.layout(plan)
    provision.prepare(plan, progress)  # before the requirement checks look into the venvs
    return plan.found_again()


def _write(plan: Plan, files: dict[str, str], progress: Callable[[str], None]) -> set[str]:
    """Everything the servers read, written and checked before they start (or reload).
    Returns the rendered files whose text changed."""
    changed = access.write_rendered(plan, files)
    preflight.check_requirements(plan)  # after writing: some ask whether files are readable
    provision.render_templates(plan)
    provision.run_setup(plan, progress)
    return changed


def _refuse_leftovers(plan: Plan, state: StackState | None) -> None:
    if state and any(r.alive() for r in state.procs):
        raise ServerError(
            f"stack '{plan.name}' is already up (state in {plan.state}); run `wsgistack down` "
            "first, or use another [stack] state_dir")
    left = processes.marked(plan.state, leaders=state.procs if state else ())
    if left:
        raise ServerError(
            f"stack '{plan.name}' has processes left from an earlier run: "
            f"{processes.describe(left)}; run `wsgistack down` to stop them")


def up(plan: Plan, progress: Callable[[str], None], after_up: bool = True) -> list[Running]:
    """Start the whole plan and wait for health, then run the after_up commands (not for a
    service run alone by `check` or `serve`); on any failure stop what was started."""
    preflight.check_host(plan)
    preflight.check_paths(plan)  # first: the lock lives in the state dir
    with processes.locked(plan.state, "up"):
        _refuse_leftovers(plan, processes.load_state(plan.state))
        processes.clear_pid_files(plan.state)
        preflight.check_ports(plan)
        _say_shared_interpreters(plan, progress)
        plan = _ready(plan, progress)
        files = render(plan)
        _write(plan, files, progress)  # the apps' config and setup first: they load with them
        try_apps(plan, files, "; nothing was started")
        running: list[Running] = []
        try:
            procs = commands(plan)
            metrics_dirs(plan)
            _mark_app_logs(plan, {p.log for p in procs})
            for path in (p for proc in procs for p in proc.private):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)  # left by a server that was killed: nginx binds no stale one
            for proc in procs:
                running.append(processes.start(plan, proc))
                processes.save_state(plan, running)
            health.wait_healthy(plan, running, progress)
            for path in (p for proc in procs for p in proc.private):
                with contextlib.suppress(FileNotFoundError):
                    os.chmod(path, 0o600)
            if after_up:
                provision.run_after_up(plan, progress)
        except BaseException:
            stop_stack(plan.state, running)
            raise
    return running


def _say_shared_interpreters(plan: Plan, progress: Callable[[str], None]) -> None:
    """Said once the manifest is known to be sound, so a user error stays the only line."""
    for svc in plan.services:
        if not svc.provision.venv_base and not svc.config.venv:
            progress(f"service '{svc.name}' runs on {svc.python} (no requirements or venv of "
                     f"its own: set services.{svc.name}.requirements to give it one)")


def _mark_app_logs(plan: Plan, written: set[str]) -> None:
    """A service whose log no server process writes (mod_wsgi: the entry does) gets the
    start's marker there too, so what `logs` shows of it is never an earlier run's."""
    for svc in plan.services:
        log = plan.path("logs", f"{svc.name}.log")
        if log not in written:
            with open(log, "ab") as fh:
                processes.mark_log(fh, f"{svc.name} under {plan.backend}")


TRIALS_AT_ONCE = 4  # apps loaded side by side: each may take a few hundred MiB


def try_apps(plan: Plan, files: dict[str, str], then: str,
             services: tuple[ServicePlan, ...] | None = None) -> None:
    """Load each service's app, from its new entry, in a throwaway process as its user,
    before anything is started or signalled; the first that fails is one error, which ends
    with `then` (what was left as it was)."""
    services = plan.services if services is None else services

    def trial(svc: ServicePlan) -> health.Diagnosis:
        path = plan.path("preflight", svc.name, os.path.basename(svc.entry))
        access.make_dir(plan, os.path.dirname(path), access.GROUP_DIR, group=svc.group)
        access.group_readable(plan, svc, path, files[entry_file(svc)])
        return health.diagnose(plan, svc, plan.start_timeout, entry=path)

    with ThreadPoolExecutor(TRIALS_AT_ONCE) as pool:
        found = list(pool.map(trial, services))
    for svc, diagnosis in zip(services, found, strict=True):
        if diagnosis.reason:
            raise health.cannot_load(svc, diagnosis, then=then)


def _not_tried(plan: Plan, svc: ServicePlan) -> str:
    """Why `render` cannot load this app yet ("" when it can)."""
    if svc.provision.templates or svc.provision.setup:
        return "its templates and setup come first"
    if not os.path.exists(svc.python):
        return ("its venv is made by `up`" if svc.provision.venv_base else
                f"{svc.python} is not on this machine")
    if plan.root and not preflight.reachable(plan.state, svc.user):
        return f"{svc.user} cannot reach {plan.state}"
    return ""


def still_to_make(plan: Plan) -> list[str]:
    """What `up` would make before the first start that `render` does not write: one line
    each (users, venvs, rendered templates, setup commands)."""
    todo = []
    for user in sorted({s.user for s in plan.services if s.identity.create}):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(user)
            continue
        todo.append(f"the system user {user}: adduser --system --group --no-create-home {user}")
    venvs: set[str] = set()
    for svc in plan.services:
        prov = svc.provision
        if prov.venv_base and svc.python_home not in venvs and not os.path.exists(svc.python):
            venvs.add(svc.python_home)
            todo.append(f"{svc.python_home}: {prov.venv_base} -m venv {svc.python_home} && "
                        f"{svc.python_home}/bin/pip install {shlex.join(prov.packages)}")
        todo += [f"{target}: rendered from {source}" for target, source in prov.templates]
        todo += [f"{svc.name}'s setup: {shlex.join(cmd)}" for cmd in prov.setup]
    return todo


def commands_sh(plan: Plan) -> str:
    """The servers' exact command lines, as `up` starts them, for a person or a supervisor
    of their own: `render` writes it beside the configs it names."""
    lines = ["#!/bin/sh",
             f"# The servers of stack '{plan.name}' ({plan.backend}) as `wsgistack up` starts "
             "them, each in the foreground.",
             "# Written by `wsgistack render`; run as root when a command names a user.",
             *(f"# Before the first start, `up` also makes {item}"
               for item in still_to_make(plan)),
             "set -e"]
    for proc in commands(plan):
        who = ["runuser", "-u", proc.user, *(["-g", proc.group] if proc.group else []),
               "--"] if proc.user else []
        env = [f"{k}={v}" for k, v in sorted(proc.env.items())]
        command = shlex.join([*who, "env", "-i", *env, *proc.argv])
        lines += [f"# {proc.name}: its log is {proc.log}",
                  f"cd {shlex.quote(proc.cwd)} && {command} >> {shlex.quote(proc.log)} 2>&1 &"]
    return "\n".join([*lines, "wait", ""])


def try_rendered(plan: Plan, files: dict[str, str]) -> list[str]:
    """`render`'s check: each app loaded from its entry before anything is written, except
    where what it needs comes later (`up` makes its venv, templates and setup); returns
    what was not tried, and why."""
    untried, tried = [], []
    os.makedirs(plan.state, exist_ok=True)  # where the trial entries go, as the files will
    for svc in plan.services:
        why = _not_tried(plan, svc)
        if why:
            untried.append(f"{svc.name}: {why}")
        else:
            tried.append(svc)
    if tried:
        try:
            try_apps(plan, files, "; nothing was written (or render with --no-check)",
                     tuple(tried))
        finally:
            shutil.rmtree(plan.path("preflight"), ignore_errors=True)
    return untried


def reload(plan: Plan, progress: Callable[[str], None]) -> list[Running]:
    """Re-render, try the new apps, then have every server reload gracefully, in place:
    done when none of the workers from before is left and every service is healthy (and,
    under uWSGI, loaded)."""
    preflight.check_host(plan)
    preflight.check_paths(plan)
    with processes.locked(plan.state, "reload"):
        state = processes.load_state(plan.state)
        if not state or not state.procs or not all(r.alive() for r in state.procs):
            raise ServerError(f"stack '{plan.name}' is not up (or not whole: see `wsgistack "
                              "status`); start it with `wsgistack up`")
        if state.backend != plan.backend:
            raise ServerError(f"stack '{plan.name}' runs under {state.backend}, not "
                              f"{plan.backend}; to switch, run `wsgistack down` then `up`")
        if {s.name: s.url for s in state.services} != {
                s.name: s.public_url for s in plan.services}:
            raise ServerError(f"{plan.source}: services, prefixes or ports changed since "
                              "`up`; a reload keeps them: run `wsgistack down` then `up`")
        _say_shared_interpreters(plan, progress)
        plan = _ready(plan, progress)
        files = render(plan)
        try_apps(plan, files, "; reload refused: the running stack is untouched; fix it and "
                 "run `wsgistack reload` again")
        changed = _write(plan, files, progress)
        return _signal_reload(plan, state, changed, progress)


def _signal_reload(plan: Plan, state: StackState, changed: set[str],
                   progress: Callable[[str], None]) -> list[Running]:
    procs = {p.name: p for p in commands(plan)}
    old: set[int] = set()  # the workers that must be replaced before the reload is done
    current: list[Running] = []
    # Every service's uWSGI swapped at once: one after the other, a reload took as many
    # times 1.5 s as there are services. Each swapped server is recorded as it comes.
    swapped: dict[str, Running] = {}
    saving = threading.Lock()

    def swap(r: Running) -> None:
        new = _swap(plan, r, procs[r.name])
        with saving:
            swapped[r.name] = new
            processes.save_state(plan, [swapped.get(p.name, p) for p in state.procs])

    with ThreadPoolExecutor(max(1, len(state.procs))) as pool:
        for done in [pool.submit(swap, r) for r in state.procs if procs[r.name].swap]:
            done.result()
    for r in state.procs:
        proc = procs[r.name]
        if proc.swap:
            current.append(swapped[r.name])
            continue
        whole = not proc.reload_when or bool(changed & set(proc.reload_when))
        if not whole and not proc.app_reload:
            current.append(r)  # a front end whose config is unchanged
            continue
        apps, sig = processes.child_pids(r.pid), proc.reload_signal
        if not whole:  # the leader stays; the app's processes go
            assert proc.app_reload
            sig, title = proc.app_reload
            apps = {p for p in apps if processes.cmdline(p).startswith(title)}
        old |= apps
        with open(r.log, "ab") as log:  # ready lines count from here
            since = processes.mark_log(log, f"reload ({signal.Signals(sig).name})")
        for pid in [r.pid] if whole else apps & processes.child_pids(r.pid):
            os.kill(pid, sig)
        current.append(dataclasses.replace(r, ready=proc.ready, since=since))
    deadline = time.monotonic() + plan.start_timeout
    while old & set().union(*(processes.child_pids(r.pid) for r in current)):
        if time.monotonic() > deadline:
            raise ServerError(f"stack '{plan.name}': old workers still running "
                              f"{plan.start_timeout:g}s after the reload; see `wsgistack logs`")
        time.sleep(0.05)
    health.wait_healthy(plan, current, progress)
    return current


def _swap(plan: Plan, old: Running, proc: Proc) -> Running:
    """Replace a server on a UNIX socket without losing a request: its twin starts on the
    next socket; once every new worker is ready, the next socket is renamed over the old
    one (atomic: a connect finds one or the other); the old server's workers take what
    was queued to them before, then it stops gracefully, finishing requests under way."""
    assert proc.swap
    path, next_path, argv = proc.swap
    svc = plan.service(old.name)
    new = processes.start(plan, dataclasses.replace(proc, argv=argv))
    try:
        health.wait_ready(plan, svc, new)
        os.replace(next_path, path)
    except BaseException:
        processes.end(new)
        raise
    # Twice in a row with nothing queued: a connection taken just before is by then a
    # request under way, which the graceful stop lets finish.
    clear, deadline = 0, time.monotonic() + svc.config.timeout
    while clear < 2 and time.monotonic() < deadline:
        clear = clear + 1 if not processes.queued((path, next_path)) else 0
        time.sleep(0.05)
    processes.end(old)  # uWSGI: SIGTERM is a graceful stop (its ini)
    return new


def stop_stack(state_dir: str, running: list[Running]) -> list[int]:
    """Stop what `up` started with its state in `state_dir` (and whatever of it is left
    without a record), and forget it."""
    stopped = processes.stop(running, state_dir)
    processes.forget(state_dir)
    return stopped


def down(state_dir: str) -> list[int]:
    """Stop every process of the stack, its `check` and `serve` stacks included, also after
    a leader was SIGKILLed or the state dir removed. Returns the pids stopped."""
    if not os.path.isdir(state_dir):
        return processes.stop([], state_dir, nested=True)
    with processes.locked(state_dir, "down"):
        state = processes.load_state(state_dir)
        stopped = processes.stop(state.procs if state else [], state_dir, nested=True)
        for nested in (*Path(state_dir).glob("check/*"), *Path(state_dir).glob("serve/*"),
                       *Path(state_dir).glob("test/*")):
            processes.forget(str(nested))  # their processes were among the marked
        processes.forget(state_dir)
    return stopped


def wait_foreground(running: list[Running], progress: Callable[[str], None]) -> int:
    """Block until SIGINT/SIGTERM; report (not respawn) a process that dies meanwhile."""
    stopping: list[int] = []

    def handler(signum: int, _frame: object) -> None:
        stopping.append(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    reported: set[str] = set()
    try:
        while not stopping:
            for r in running:
                processes.reap(r.pid)
                if r.name not in reported and not r.alive():
                    reported.add(r.name)
                    progress(f"{r.name} exited; log: {health.log_tail(r.log)}")
            if len(reported) == len(running):
                return 1
            time.sleep(0.2)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return 0


def pid_of(running: list[Running] | tuple[Running, ...], service: str) -> int:
    return next((r.pid for r in running if service in r.serves), 0)
