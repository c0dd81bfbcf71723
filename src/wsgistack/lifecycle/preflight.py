"""Before anything starts: what the backend needs on the machine, the ports, the paths and
the host, each checked with a one-line answer naming the setting and the fix."""

from __future__ import annotations

import errno
import grp
import importlib.util
import os
import pwd
import random
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

from wsgistack.backends import get
from wsgistack.backends.base import Requirement
from wsgistack.errors import ManifestError, ServerError
from wsgistack.host import DEFAULT_PATH
from wsgistack.plan import DEBIAN_PYTHON, Plan

# Where no state can live: kernel interfaces, not directories of files.
PSEUDO_FILESYSTEMS = ("/proc", "/sys", "/dev")
# Characters a state path may not hold: config files would read them as syntax ($ starts a
# variable in nginx's, quotes and backslashes end or escape a quoted value).
UNSAFE_PATH_CHARS = "$\\\"'`"


def reachable(path: str, user: str) -> bool:
    """Can `user` read `path`, searching every directory on the way to it?"""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return False
    groups = [g.gr_gid for g in grp.getgrall() if user in g.gr_mem]
    target = Path(path)
    # Imports list the directories they import from: a directory must be searchable too.
    # test(1) from the system's PATH, not the caller's (which may name nothing).
    test = shutil.which("test", path=DEFAULT_PATH) or "/usr/bin/test"
    want = [test, "-r", path, "-a", "-x", path] if target.is_dir() else [test, "-r", path]
    if os.geteuid() == 0 or pw.pw_uid == os.geteuid():
        # The kernel answers as that user: ACLs and capabilities count, not only mode bits.
        if pw.pw_uid == os.geteuid():
            return subprocess.run(want, check=False).returncode == 0
        return subprocess.run(want, check=False, user=pw.pw_uid, group=pw.pw_gid,
                              extra_groups=groups).returncode == 0
    ids = {pw.pw_gid, *groups}
    for part in [*reversed(target.parents), target]:
        try:
            st = part.stat()
        except OSError:
            return False
        shift = 6 if st.st_uid == pw.pw_uid else 3 if st.st_gid in ids else 0
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
    if req.kind == "not-root":
        try:
            return pwd.getpwnam(req.name).pw_uid == 0
        except KeyError:  # made by `up` as a system user: never root
            return False
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
            problem = {"readable": "is unreadable", "debian-python": "is not Debian's",
                       "not-root": "is refused"}.get(req.kind, "is missing")
            raise ServerError(
                f"backend {plan.backend} needs {req.what}: {req.name} {problem}; {req.fix}"
            )


def listeners(plan: Plan) -> list[tuple[int, str]]:
    """Every TCP port the plan binds, with the setting that chose it."""
    if plan.front_port:
        return [(plan.front_port, "[stack] base_port")]
    return [
        (s.port, f"services.{s.name}.port" if s.config.port else
         f"services.{s.name}.port, or [stack] base_port ({plan.base_port}) and up, which "
         "gives it the next number in manifest order")
        for s in plan.services
    ]


def _listening_inodes(port: int) -> set[str]:
    """The socket inodes listening on `port` (any address), from the kernel's tables."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as fh:
                rows = fh.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                found.add(cols[9])
    return found


def holder(port: int) -> str:
    """`pid 123 (nginx: master process ...)` listening on `port`, where the system tells
    ("" when it does not: another user's process, for one not root)."""
    inodes = {f"socket:[{i}]" for i in _listening_inodes(port)}
    if not inodes:
        return ""
    with os.scandir("/proc") as entries:
        for entry in entries:
            if entry.name.isdigit() and _holds(entry.name, inodes):
                cmd = Path(f"/proc/{entry.name}/cmdline").read_bytes()
                shown = cmd.replace(b"\0", b" ").decode(errors="replace").strip()
                return f"pid {entry.name} ({shown[:80]})"
    return ""


def _holds(pid: str, inodes: set[str]) -> bool:
    try:
        with os.scandir(f"/proc/{pid}/fd") as fds:
            return any(os.readlink(fd.path) in inodes for fd in fds)
    except OSError:
        return False


def check_ports(plan: Plan) -> None:
    ports = [(plan.host, port, key) for port, key in listeners(plan)]
    if plan.metrics:
        where, _, number = plan.metrics.rpartition(":")
        ports.append((where.strip("[]"), int(number), "[stack] metrics"))
    for host, port, key in ports:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            # As the servers do: a port with connections in TIME_WAIT is free to listen on.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                who = holder(port) if exc.errno == errno.EADDRINUSE else ""
                why = (f"is in use by {who}" if who else "is in use by another program"
                       ) if exc.errno == errno.EADDRINUSE else str(exc)
                raise ServerError(
                    f"{plan.source}: port {port} on {host} ({key}) {why}; stop that "
                    "program or choose another port there"
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


def check_paths(plan: Plan) -> None:
    """The state dir can hold files, and every service's working dir and venv exist."""
    state = plan.state
    for pseudo in PSEUDO_FILESYSTEMS:
        if state == pseudo or state.startswith(pseudo + "/"):
            raise ManifestError(plan.source, "stack.state_dir", f"{state} is under {pseudo}, "
                                "which holds no files of ours; choose a directory such as "
                                ".wsgistack")
    bad = sorted({c for c in state if c in UNSAFE_PATH_CHARS or ord(c) < 32})
    if bad:
        raise ManifestError(plan.source, "stack.state_dir", f"{state} contains "
                            f"{' '.join(repr(c) for c in bad)}, which server configs would "
                            "read as syntax; choose a path without it")
    existing = Path(state)
    while not existing.exists():
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        why = "read-only file system" if os.statvfs(existing).f_flag & os.ST_RDONLY else \
            "permission denied"
        raise ManifestError(plan.source, "stack.state_dir", f"cannot write {existing} ({why}); "
                            "choose a writable directory")
    for svc in plan.services:
        key = f"services.{svc.name}"
        if not os.path.isdir(svc.working_dir):
            raise ManifestError(plan.source, f"{key}.working_dir", f"{svc.working_dir} is not "
                                "a directory; create it or fix the setting")
        for path, directory in svc.static:
            if not os.path.isdir(directory):
                raise ManifestError(plan.source, f"{key}.static", f"{directory} (for {path}) is "
                                    "not a directory; create it or fix the setting")
        if not svc.provision.venv_base and not os.access(svc.python, os.X_OK):
            raise ManifestError(plan.source, f"{key}.venv", f"no interpreter at {svc.python}; "
                                "create the venv (python3 -m venv DIR) or fix the setting")


def check_host(plan: Plan) -> None:
    try:
        socket.getaddrinfo(plan.host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise ManifestError(plan.source, "stack.host", f"'{plan.host}' is not an address or a "
                            f"known host name ({exc.args[-1]}); use e.g. 127.0.0.1 or "
                            "0.0.0.0") from None
