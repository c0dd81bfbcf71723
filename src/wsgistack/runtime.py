"""Where files are written and processes run: start, health-wait, record, stop.

Backends only describe (`render`, `command`); this module acts on their descriptions.
Every process is started in its own session so that stopping it stops all its children,
and is recorded with its start time so a recycled pid is never mistaken for ours.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import grp
import http.client
import importlib.util
import json
import os
import pwd
import random
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from wsgistack import access, provision
from wsgistack.backends import get
from wsgistack.backends.base import Proc, Requirement
from wsgistack.errors import ServerError
from wsgistack.plan import DEBIAN_PYTHON, Plan, ServicePlan

STATE_FILE = "state.json"
UMASK = 0o027  # what servers and setup commands create: nothing for other users
STOP_GRACE = 15.0
START_MARK = "--- wsgistack: starting "
# Children we started, kept so they can be reaped; a detached stack outlives this process.
_children: dict[int, subprocess.Popen[bytes]] = {}


def write_files(root: str, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = Path(root, rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def render(plan: Plan) -> dict[str, str]:
    return get(plan.backend).render(plan)


def reachable(path: str, user: str) -> bool:
    """Can `user` read `path`, searching every directory on the way to it?"""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return False
    groups = {pw.pw_gid, *(g.gr_gid for g in grp.getgrall() if user in g.gr_mem)}
    target = Path(path)
    for part in [*reversed(target.parents), target]:
        try:
            st = part.stat()
        except OSError:
            return False
        shift = 6 if st.st_uid == pw.pw_uid else 3 if st.st_gid in groups else 0
        # On the way: search; the target: read, and list a directory (imports do).
        need = 0o1 if part != target else (0o5 if stat.S_ISDIR(st.st_mode) else 0o4)
        if not (st.st_mode >> shift) & need:
            return False
    return True


def missing(req: Requirement) -> bool:
    if req.kind == "binary":
        return shutil.which(req.name) is None
    if req.kind == "file":
        return not os.path.exists(req.name)
    if req.kind == "readable":
        return not reachable(req.name, req.user)
    if req.kind == "debian-python":
        return not os.path.realpath(req.name).startswith(DEBIAN_PYTHON)
    if not os.access(req.python, os.X_OK):
        return True
    if os.path.abspath(req.python) == os.path.abspath(sys.executable):
        return importlib.util.find_spec(req.name) is None  # our own interpreter: ask here
    probe = [req.python, "-c", f"import importlib.util,sys; "
             f"sys.exit(importlib.util.find_spec({req.name!r}) is None)"]
    return subprocess.run(probe, capture_output=True, check=False).returncode != 0


def check_requirements(plan: Plan) -> None:
    # Services that share an interpreter share its answers: asked once, not once a service.
    seen: set[tuple[str, str, str, str]] = set()
    for req in get(plan.backend).requirements(plan):
        key = (req.kind, req.name, req.python, req.user)
        if key in seen:
            continue
        seen.add(key)
        if missing(req):
            problem = "is unreadable" if req.kind == "readable" else (
                "is not Debian's" if req.kind == "debian-python" else "is missing")
            raise ServerError(
                f"backend {plan.backend} needs {req.what}: {req.name} {problem}; {req.fix}"
            )


def listeners(plan: Plan) -> list[tuple[int, str]]:
    """Every TCP port the plan binds, with the setting that chose it."""
    if plan.front_port:
        return [(plan.front_port, "[stack] base_port")]
    return [
        (s.port, f"services.{s.name}.port" if s.config.port else "[stack] base_port")
        for s in plan.services
    ]


def check_ports(plan: Plan) -> None:
    for port, key in listeners(plan):
        with socket.socket(socket.AF_INET6 if ":" in plan.host else socket.AF_INET) as sock:
            # As the servers do: a port with connections in TIME_WAIT is free to listen on.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((plan.host, port))
            except OSError as exc:
                why = "is in use by another program" if exc.errno == errno.EADDRINUSE else str(exc)
                raise ServerError(
                    f"{plan.source}: port {port} on {plan.host} ({key}) {why}; stop that "
                    f"program or choose another port with {key}"
                ) from None


def free_ports(host: str = "127.0.0.1", count: int = 1) -> int:
    """The first of `count` consecutive ports free on `host`, below the kernel's ephemeral
    range: a port the kernel hands out for bind(0) can be taken a moment later as the source
    port of some outgoing connection, and then nothing can listen on it."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as fh:
            ephemeral = int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(10000, ephemeral - count)
        try:
            for port in range(base, base + count):
                with socket.socket(family) as sock:
                    sock.bind((host, port))
        except OSError:
            continue
        return base
    raise ServerError(f"no {count} consecutive free ports on {host} below {ephemeral}")


# ---- process records -------------------------------------------------------------------

def _proc_stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name (state first), or [] when gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _start_time(pid: int) -> str:
    fields = _proc_stat(pid)
    return fields[19] if len(fields) > 19 else ""


def _zombie(pid: int) -> bool:
    return _proc_stat(pid)[:1] == ["Z"]


@dataclass(frozen=True)
class Running:
    name: str
    pid: int
    started: str  # the kernel's start time of pid, to tell it from a recycled pid
    log: str
    serves: tuple[str, ...]
    ready: tuple[str, int] | None = None  # from Proc.ready; known only to the `up` that started it
    since: int = 0  # where in the log this start's (or reload's) output begins

    def alive(self) -> bool:
        fields = _proc_stat(self.pid)
        return (bool(self.started) and len(fields) > 19 and fields[19] == self.started
                and fields[0] != "Z")


def state_path(state_dir: str) -> Path:
    return Path(state_dir, STATE_FILE)


def save_state(plan: Plan, running: list[Running]) -> None:
    doc = {
        "stack": plan.name, "backend": plan.backend, "manifest": plan.source,
        "base_port": plan.base_port if plan.base_port_given else None,
        "procs": [{"name": r.name, "pid": r.pid, "started": r.started, "log": r.log,
                   "serves": list(r.serves)} for r in running],
        "services": [{"name": s.name, "url": s.public_url, "health_url": s.health_url,
                      "health_status": s.config.health_status} for s in plan.services],
    }
    path = state_path(plan.state)
    tmp = path.with_suffix(".tmp")
    access.make_file(plan, str(tmp), access.PRIVATE_FILE, text=json.dumps(doc, indent=1))
    tmp.replace(path)


def load_state(state_dir: str) -> dict[str, object] | None:
    try:
        data: dict[str, object] = json.loads(state_path(state_dir).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ServerError(f"{state_path(state_dir)}: unreadable state ({exc}); remove it") from None
    return data


def running_from(state: dict[str, object]) -> list[Running]:
    procs = state.get("procs", [])
    assert isinstance(procs, list)
    return [Running(p["name"], p["pid"], p["started"], p["log"], tuple(p["serves"]))
            for p in procs]


# ---- start, wait, stop -----------------------------------------------------------------

def _mark(log: BinaryIO, what: str) -> int:
    """Write a marker line into a server's log; return where the output after it begins."""
    since = log.seek(0, os.SEEK_END)
    log.write(f"{START_MARK}{what}\n".encode())
    log.flush()
    return since


def as_user(user: str, group: str) -> dict[str, Any]:
    """Popen arguments that start a process as `user` in `group`, with that user's own
    supplementary groups and none of root's ({} when no user is named)."""
    if not user:
        return {}
    gid = grp.getgrnam(group).gr_gid
    return {"user": user, "group": group,
            "extra_groups": os.getgrouplist(user, gid)}


def start(plan: Plan, proc: Proc) -> Running:
    access.service_log(plan, proc.log)
    with open(proc.log, "ab") as log:
        since = _mark(log, " ".join(proc.argv))
        try:
            # Only what the plan says: never the environment of the shell that ran `up`.
            child = subprocess.Popen(
                proc.argv, cwd=proc.cwd, env=dict(proc.env), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                umask=UMASK, **as_user(proc.user, proc.group),
            )
        except OSError as exc:
            raise ServerError(f"cannot start {proc.name}: {proc.argv[0]}: {exc.strerror}") \
                from None
    _children[child.pid] = child
    return Running(proc.name, child.pid, _start_time(child.pid), proc.log,
                   proc.serves or (proc.name,), proc.ready, since)


def _reap(pid: int) -> None:
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        del _children[pid]


def stop(running: Iterable[Running], grace: float = STOP_GRACE) -> None:
    """SIGTERM every process group, wait for them to go, SIGKILL what is left."""
    targets = [r for r in running if r.alive()]
    for r in targets:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(r.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while targets and time.monotonic() < deadline:
        for r in targets:
            _reap(r.pid)
        targets = [r for r in targets if r.alive()]
        if targets:
            time.sleep(0.05)
    for r in targets:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(r.pid, signal.SIGKILL)
        _reap(r.pid)


def http_status(url: str, timeout: float = 2.0) -> tuple[int, str]:
    """(status, "") for a response, or (0, why) when nothing answered."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        conn.request("GET", parts.path or "/")
        resp = conn.getresponse()
        resp.read()
        return resp.status, ""
    except OSError as exc:
        return 0, str(exc) or type(exc).__name__
    finally:
        conn.close()


def log_tail(path: str, lines: int = 1) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    kept = [ln.strip() for ln in text.splitlines()
            if ln.strip() and not ln.startswith("--- wsgistack")]
    return " | ".join(kept[-lines:])


def diagnose(plan: Plan, svc: ServicePlan) -> str:
    """Build the app in a fresh interpreter, as its user with its environment, to find out
    whether loading it is what fails."""
    try:
        out = subprocess.run(
            [svc.python, svc.entry, "--check"], capture_output=True, text=True, timeout=120,
            cwd=svc.working_dir, check=False, env={**svc.base_env, **svc.env}, umask=UMASK,
            **as_user(svc.user if plan.root else "", svc.group),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{svc.python}: {exc}"
    if out.returncode == 0:
        return ""
    lines = (out.stderr or out.stdout).strip().splitlines()
    return lines[-1].removeprefix("error: ") if lines else f"exit code {out.returncode}"


def wait_healthy(plan: Plan, running: list[Running],
                 progress: Callable[[str], None] = lambda _m: None) -> dict[str, str]:
    """Poll every service's health URL until it answers as expected.

    Returns {service: ""} on success; raises ServerError naming the first service that died
    or never became healthy, with the reason and the last line of its log.
    """
    # Every process a service needs: its own (a uWSGI behind a front end) and the front end.
    owners = {s.name: sorted((r for r in running if s.name in r.serves),
                             key=lambda r: r.name != s.name) for s in plan.services}
    pending = {s.name: s for s in plan.services}
    last: dict[str, str] = {}
    deadline = time.monotonic() + plan.start_timeout
    while pending:
        for name, svc in list(pending.items()):
            proc = owners[name][0]  # its own process, whose log tells what went wrong
            for r in owners[name]:
                _reap(r.pid)
                if not r.alive():
                    raise _failure(plan, svc, r, "exited during start-up")
            status, why = http_status(svc.health_url, timeout=1.0)
            last[name] = f"HTTP {status}" if status else why
            if status == svc.config.health_status and all(map(_workers_ready, owners[name])):
                del pending[name]
                progress(f"{name} healthy")
            elif status >= 500 and not plan.front_port:
                # A server that answers 5xx is up but the app may not be: ask the loader.
                reason = diagnose(plan, svc)
                if reason:
                    raise _failure(plan, svc, proc, f"cannot load its app: {reason}")
        if pending and time.monotonic() > deadline:
            name, svc = next(iter(pending.items()))
            raise _failure(
                plan, svc, owners[name][0],
                f"did not become healthy in {plan.start_timeout:g}s (last: {last.get(name)} "
                f"from {svc.health_url}, expected {svc.config.health_status})",
            )
        if pending:
            time.sleep(0.05)
    return {}


def _workers_ready(proc: Running) -> bool:
    """Whether every worker has logged its ready line since this start. uWSGI loads the app
    in each worker after fork (lazy-apps): a worker still loading when `down` comes misses
    the graceful stop and holds it up for worker-reload-mercy."""
    if proc.ready is None:
        return True
    line, count = proc.ready
    try:
        with open(proc.log, "rb") as log:  # only what was written since: logs grow for weeks
            log.seek(proc.since)
            text = log.read().decode("utf-8", errors="replace")
    except OSError:
        return False
    return sum(1 for ln in text.splitlines() if ln == line) >= count


def _failure(plan: Plan, svc: ServicePlan, proc: Running, what: str) -> ServerError:
    reason = diagnose(plan, svc) if "cannot load" not in what else ""
    if reason:  # what happened, then why
        what = f"{what}: cannot load its app: {reason}"
        fix = f"fix services.{svc.name}.app or install what it imports"
    else:
        fix = f"see `wsgistack logs {svc.name}`"
    tail = log_tail(proc.log)
    return ServerError(
        f"service '{svc.name}' {what}; log: {tail or '(empty)'}; {fix}"
    )


def _prepare(plan: Plan, progress: Callable[[str], None]) -> None:
    """Everything the servers read, made or checked before they start (or reload)."""
    provision.ensure_users(plan, progress)  # first: files are handed to them
    access.layout(plan)
    provision.prepare(plan, progress)  # before the requirement checks look into the venvs
    access.write_rendered(plan, render(plan))
    check_requirements(plan)  # after writing: some ask whether the server can read the files
    provision.render_templates(plan)
    provision.run_setup(plan, progress)


def up(plan: Plan, progress: Callable[[str], None]) -> list[Running]:
    """Start the whole plan and wait for health; on any failure stop what was started."""
    state = load_state(plan.state)
    if state and any(r.alive() for r in running_from(state)):
        raise ServerError(
            f"stack '{plan.name}' is already up (state in {plan.state}); run `wsgistack down` "
            "first, or use another [stack] state_dir"
        )
    check_ports(plan)
    _prepare(plan, progress)
    running: list[Running] = []
    try:
        for proc in get(plan.backend).command(plan):
            running.append(start(plan, proc))
            save_state(plan, running)
        wait_healthy(plan, running, progress)
    except BaseException:
        stop_stack(plan.state, running)
        raise
    return running


def _child_pids(pid: int) -> set[int]:
    """Children of `pid`, whichever of its threads started them."""
    pids: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            pids |= {int(p) for p in (task / "children").read_text().split()}
    return pids


def reload(plan: Plan, progress: Callable[[str], None]) -> list[Running]:
    """Re-render, then have every server reload gracefully, in place: done when none of the
    workers from before is left and every service is healthy (and, under uWSGI, loaded)."""
    state = load_state(plan.state)
    running = running_from(state) if state else []
    if not running or not all(r.alive() for r in running):
        raise ServerError(f"stack '{plan.name}' is not up (or not whole: see `wsgistack "
                          "status`); start it with `wsgistack up`")
    if state and state.get("backend") != plan.backend:
        raise ServerError(f"stack '{plan.name}' runs under {state.get('backend')}, not "
                          f"{plan.backend}; to switch, run `wsgistack down` then `up`")
    urls = {s["name"]: s["url"] for s in state.get("services", [])}  # type: ignore[union-attr]
    if urls != {s.name: s.public_url for s in plan.services}:
        raise ServerError(f"{plan.source}: services, prefixes or ports changed since `up`; "
                          "a reload keeps them: run `wsgistack down` then `up`")
    _prepare(plan, progress)
    procs = {p.name: p for p in get(plan.backend).command(plan)}
    old: set[int] = set()
    current = []
    for r in running:
        proc = procs[r.name]
        old |= _child_pids(r.pid)
        with open(r.log, "ab") as log:  # ready lines count from here
            since = _mark(log, f"reload ({signal.Signals(proc.reload_signal).name})")
        os.kill(r.pid, proc.reload_signal)
        current.append(dataclasses.replace(r, ready=proc.ready, since=since))
    deadline = time.monotonic() + plan.start_timeout
    while old & set().union(*(_child_pids(r.pid) for r in current)):
        if time.monotonic() > deadline:
            raise ServerError(f"stack '{plan.name}': old workers still running "
                              f"{plan.start_timeout:g}s after the reload; see `wsgistack logs`")
        time.sleep(0.05)
    wait_healthy(plan, current, progress)
    return current


def stop_stack(state_dir: str, running: list[Running]) -> None:
    """Stop what `up` started with its state in `state_dir`, and forget it."""
    stop(running)
    state_path(state_dir).unlink(missing_ok=True)


def down(state_dir: str) -> list[Running]:
    state = load_state(state_dir)
    if state is None:
        return []
    running = running_from(state)
    stop_stack(state_dir, running)
    return running


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
                _reap(r.pid)
                if r.name not in reported and not r.alive():
                    reported.add(r.name)
                    progress(f"{r.name} exited; log: {log_tail(r.log)}")
            if len(reported) == len(running):
                return 1
            time.sleep(0.2)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return 0


def owner(pid: int) -> str:
    """The user a process runs as ("" when it is gone)."""
    try:
        return pwd.getpwuid(os.stat(f"/proc/{pid}").st_uid).pw_name
    except (OSError, KeyError):
        return ""


def pid_of(running: list[Running], service: str) -> int:
    return next((r.pid for r in running if service in r.serves), 0)

