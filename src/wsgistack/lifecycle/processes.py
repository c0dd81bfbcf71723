"""Every process a stack starts: started, recorded, found again, locked, stopped.

Each process is started as the leader of a session of its own, recorded with its start time
(a recycled pid is never taken for ours), and carries the stack's marker in its environment,
which every child inherits. A process is the stack's when it carries the marker, or when it
is in the session of one that does or of a recorded leader: a uWSGI worker whose master was
SIGKILLed, or a granian worker of a stack whose state dir was deleted, is still found, named
and stopped. (nginx rewrites its environment area with its process titles: its workers are
found through their master's session.) Only this module reads or writes the state file,
through :class:`StackState`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import grp
import json
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from wsgistack import access
from wsgistack.backends import servers
from wsgistack.backends.base import Proc
from wsgistack.errors import ServerError
from wsgistack.plan import Plan, ServicePlan

STATE_FILE = "state.json"
LOCK_FILE = "lock"
UMASK = 0o027  # what servers and setup commands create: nothing for other users
STOP_GRACE = 15.0
KILL_WAIT = 5.0
START_MARK = "--- wsgistack: starting "
# In the environment of every process of a stack: its state dir.
MARKER = "WSGISTACK_STACK"
TITLE_REWRITERS = {b"nginx"}
# Children we started, kept so they can be reaped; a detached stack outlives this process.
_children: dict[int, subprocess.Popen[bytes]] = {}


def proc_stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name (state first), or [] when gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _start_time(pid: int) -> str:
    fields = proc_stat(pid)
    return fields[19] if len(fields) > 19 else ""


def pid_alive(pid: int) -> bool:
    return proc_stat(pid)[:1] not in ([], ["Z"])


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
        fields = proc_stat(self.pid)
        return (bool(self.started) and len(fields) > 19 and fields[19] == self.started
                and fields[0] != "Z")


@dataclass(frozen=True)
class ServiceRecord:
    name: str
    url: str
    health_url: str
    health_status: int
    server: str = ""  # the server binary (or module) that runs the app
    python: str = ""  # the interpreter the app runs on


@dataclass(frozen=True)
class StackState:
    """What `up` left for `status`, `reload` and `down`: the one reader of state.json."""

    stack: str
    backend: str
    manifest: str
    base_port: int | None  # given by `up --base-port`: `reload` keeps it
    procs: tuple[Running, ...]
    services: tuple[ServiceRecord, ...]
    manifest_id: str = ""  # the manifest file, absolute ("" in states written before it)
    metrics: str = ""  # HOST:PORT of the stack's metrics endpoint

    def serving(self, service: str) -> list[Running]:
        """The processes a service needs: its own first, then a front end."""
        return sorted((r for r in self.procs if service in r.serves),
                      key=lambda r: r.name != service)


def state_path(state_dir: str) -> Path:
    return Path(state_dir, STATE_FILE)


def save_state(plan: Plan, running: list[Running]) -> None:
    server = servers(plan)
    doc = {
        "stack": plan.name, "backend": plan.backend, "manifest": plan.source,
        "manifest_id": plan.manifest_id, "metrics": plan.metrics,
        "base_port": plan.base_port if plan.base_port_given else None,
        "procs": [{"name": r.name, "pid": r.pid, "started": r.started, "log": r.log,
                   "serves": list(r.serves)} for r in running],
        "services": [{"name": s.name, "url": s.public_url, "health_url": s.health_url,
                      "health_status": s.config.health_status, "server": server[s.name],
                      "python": s.python} for s in plan.services],
    }
    path = state_path(plan.state)
    tmp = path.with_suffix(".tmp")
    access.make_file(plan, str(tmp), access.PRIVATE_FILE, text=json.dumps(doc, indent=1))
    tmp.replace(path)  # atomic: a reader sees the old record or the new one


def load_state(state_dir: str) -> StackState | None:
    path = state_path(state_dir)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return StackState(
            stack=doc["stack"], backend=doc["backend"], manifest=doc["manifest"],
            manifest_id=doc.get("manifest_id", ""), metrics=doc.get("metrics", ""),
            base_port=doc.get("base_port"),
            procs=tuple(Running(p["name"], p["pid"], p["started"], p["log"],
                                tuple(p["serves"])) for p in doc["procs"]),
            services=tuple(ServiceRecord(s["name"], s["url"], s["health_url"],
                                         s["health_status"], s.get("server", ""),
                                         s.get("python", "")) for s in doc["services"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ServerError(f"{path}: unreadable state ({exc}); run `wsgistack down` (it finds "
                          "the stack's processes without it), then remove the file") from None


def forget(state_dir: str) -> None:
    state_path(state_dir).unlink(missing_ok=True)


def clear_pid_files(state_dir: str) -> None:
    """Pid files left by servers that were killed: Apache, gunicorn and granian refuse to
    start while the pid in theirs is alive, and after a SIGKILL that pid may be anyone's by
    now. Called once no process of the stack is left."""
    for pid_file in Path(state_dir, "run").glob("**/*.pid"):
        pid_file.unlink(missing_ok=True)


@contextlib.contextmanager
def locked(state_dir: str, command: str) -> Iterator[None]:
    """One command at a time on a state dir: a second `up`, `reload` or `down` fails in one
    line instead of racing the first (two `up`s lost one stack's record)."""
    os.makedirs(state_dir, mode=access.PASS_THROUGH, exist_ok=True)
    path = os.path.join(state_dir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, access.PRIVATE_FILE)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise ServerError(
                f"another wsgistack command ({holder}) is working on the stack in {state_dir}; "
                f"wait for it to finish, then run `wsgistack {command}` again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{command}, pid {os.getpid()}".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


# ---- finding processes -------------------------------------------------------------------

def child_pids(pid: int) -> set[int]:
    """Children of `pid`, whichever of its threads started them."""
    pids: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError, ValueError):
            pids |= {int(p) for p in (task / "children").read_text().split()}
    return pids


def descendants(pid: int) -> list[int]:
    found, todo = [], list(child_pids(pid))
    while todo:
        child = todo.pop()
        found.append(child)
        todo += child_pids(child)
    return found


def _carries(pid: int, state_dir: str, nested: bool) -> bool:
    """Whether a process carries the stack's marker: in its environment, or (nginx, whose
    titles overwrite its environment) in its master's title, which names our config."""
    mark = f"{MARKER}={state_dir}".encode()
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            env = fh.read().split(b"\0")
        if mark in env or (nested and any(v.startswith(mark + b"/") for v in env)):
            return True
        with open(f"/proc/{pid}/comm", "rb") as fh:
            if fh.read().strip() not in TITLE_REWRITERS:
                return False
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            title = fh.read()
    except OSError:
        return False  # gone, or another user's: not ours
    conf = f" -c {state_dir}/".encode()
    return conf + b"conf/" in title or (nested and conf in title)


def marked(state_dir: str, nested: bool = False, leaders: Iterable[Running] = ()) -> list[int]:
    """Live processes of this stack (with `nested`, also of the `check` and `serve` stacks
    under it), whatever became of their parents or of the state file: those carrying its
    marker, and those in the session of one that does or of a recorded leader. A session
    whose leader's pid now belongs to another process is not ours."""
    table: dict[int, tuple[int, str]] = {}  # pid -> (session, start time)
    carrying = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        fields = proc_stat(pid)
        if len(fields) < 20 or fields[0] == "Z":
            continue
        table[pid] = (int(fields[3]), fields[19])
        if _carries(pid, state_dir, nested):
            carrying.add(pid)
    recorded = {r.pid: r.started for r in leaders}
    sessions = {table[p][0] for p in carrying} | set(recorded)

    def ours(session: int) -> bool:
        if session not in table:  # its leader is gone: only ours used it
            return True
        return session in carrying or table[session][1] == recorded.get(session)

    valid = {s for s in sessions if ours(s)}
    return sorted(p for p, (session, _) in table.items() if p in carrying or session in valid)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return ""


def owner(pid: int) -> str:
    """The user a process runs as ("" when it is gone)."""
    try:
        return pwd.getpwuid(os.stat(f"/proc/{pid}").st_uid).pw_name
    except (OSError, KeyError):
        return ""


def describe(pids: Iterable[int]) -> str:
    """`1234 (uwsgi), 1235 (uwsgi)`: what a message names."""
    shown = []
    for pid in pids:
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            name = "?"
        shown.append(f"{pid} ({name})")
    return ", ".join(shown)


# ---- start and stop ------------------------------------------------------------------------

def mark_log(log: BinaryIO, what: str) -> int:
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
    return {"user": user, "group": group, "extra_groups": os.getgrouplist(user, gid)}


def as_service(plan: Plan, svc: ServicePlan, **env: str) -> dict[str, Any]:
    """Popen arguments for a one-off command of a service (a setup command, a trial load of
    its app): as its user, in its working dir, with its environment (and `env`) and the
    stack's marker."""
    return {"cwd": svc.working_dir, "umask": UMASK,
            "env": {**svc.base_env, **svc.env, **env, MARKER: plan.state},
            **as_user(*plan.runs_as(svc))}


def start(plan: Plan, proc: Proc) -> Running:
    access.service_log(plan, proc.log)
    with open(proc.log, "ab") as log:
        since = mark_log(log, " ".join(proc.argv))
        try:
            # Only what the plan says: never the environment of the shell that ran `up`.
            child = subprocess.Popen(
                proc.argv, cwd=proc.cwd, env={**proc.env, MARKER: plan.state},
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, umask=UMASK, **as_user(proc.user, proc.group),
            )
        except OSError as exc:
            raise ServerError(f"cannot start {proc.name}: {proc.argv[0]}: {exc.strerror}") \
                from None
    _children[child.pid] = child
    return Running(proc.name, child.pid, _start_time(child.pid), proc.log,
                   proc.serves or (proc.name,), proc.ready, since)


def adopt(child: subprocess.Popen[bytes]) -> None:
    """A server started elsewhere (the cluster's HAProxy), kept to be reaped like ours."""
    _children[child.pid] = child


def reap(pid: int) -> None:
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        del _children[pid]


def _signal(pid: int, sig: int, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def end(r: Running, sig: int = signal.SIGTERM, grace: float = STOP_GRACE) -> None:
    """Stop one leader with `sig` (its own graceful stop), then its whole group with SIGKILL
    if it is not gone within `grace`."""
    if r.alive():
        _signal(r.pid, sig, group=False)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        reap(r.pid)
        if not r.alive():
            break
        time.sleep(0.05)
    _signal(r.pid, signal.SIGKILL, group=True)  # what is left of its group, if anything


def queued(paths: Iterable[str]) -> int:
    """Connections waiting in the backlog of UNIX listeners bound to `paths`: the kernel
    lists each under its listener's path (kept when the socket file is renamed), as
    connecting (state 02), until a worker accepts it."""
    wanted = set(paths)
    with open("/proc/net/unix", encoding="utf-8", errors="replace") as table:
        rows = (line.rstrip("\n").split(None, 7) for line in table)
        return sum(1 for f in rows if len(f) == 8 and f[5] == "02" and f[7] in wanted)


def stop(running: Iterable[Running], state_dir: str, grace: float = STOP_GRACE,
         nested: bool = False) -> list[int]:
    """SIGTERM every recorded process group and every marked process left (a worker whose
    leader was SIGKILLed lives in a session of its own), wait for them to go, SIGKILL what is
    left. Returns the pids that were stopped."""
    running = list(running)
    for r in running:
        reap(r.pid)  # a leader SIGKILLed by someone else: our zombie until reaped
    leaders = [r for r in running if r.alive()]
    family = {r.pid for r in leaders}.union(*(descendants(r.pid) for r in leaders))
    for r in leaders:
        _signal(r.pid, signal.SIGTERM, group=True)
    # The stack's, but no live leader's: orphans of a SIGKILLed leader, or of a lost state.
    strays = [p for p in marked(state_dir, nested, running) if p not in family]
    for pid in strays:
        _signal(pid, signal.SIGTERM, group=False)
    deadline = time.monotonic() + grace
    pending = {r.pid for r in leaders} | set(strays)
    while time.monotonic() < deadline:
        for pid in pending:
            reap(pid)
        # Children of a leader go with it; anything still the stack's is still ours.
        pending = {p for p in pending if pid_alive(p)} | set(marked(state_dir, nested, running))
        if not pending:
            break
        time.sleep(0.05)
    for pid in pending:
        _signal(pid, signal.SIGKILL, group=pid in {r.pid for r in leaders})
    # SIGKILL takes effect when the kernel gets to it: done means gone.
    deadline = time.monotonic() + KILL_WAIT
    while pending and time.monotonic() < deadline:
        for pid in pending:
            reap(pid)
        pending = {p for p in pending if pid_alive(p)}
        time.sleep(0.01)
    return sorted(family | set(strays))  # every process, workers included
