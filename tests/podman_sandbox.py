"""Real podman, rootful, in a room of its own, for tests/test_kubernetes_live.py.

    with podman_sandbox(tmp) as pm:        # or the reason it cannot run: SandboxUnavailable
        pm.run("kube", "play", "--network", "host", "pod.yaml")

Every podman command runs in one private mount namespace (held by a process of the
sandbox) that mounts its own cgroup v1 hierarchies: podman's default runtime here (crun)
and cgroups in hybrid mode do not get on, runc on these does. Nothing outside that namespace
changes: podman's storage, run root, libpod tmp dir, volumes, secrets, events and network
configs are all under `tmp`, named by a containers.conf and a storage.conf of the sandbox's
own (so the host's podman storage is never touched), and the end removes everything it made
(`podman system reset`), then the namespace and `tmp`'s podman files.

Needs root, util-linux (unshare, nsenter) and Debian's podman, runc, catatonit (the pause
image podman builds for pods) and netavark.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

CGROUPS = ("cpu", "cpuacct", "cpuset", "memory", "pids", "devices", "freezer", "net_cls",
           "blkio")
NEEDED = ("podman", "runc", "unshare", "nsenter", "catatonit")

_HOLD = """\
set -e
mount -t tmpfs tmpfs /sys/fs/cgroup
for c in {cgroups}; do
  mkdir -p /sys/fs/cgroup/$c
  mount -t cgroup -o $c cgroup /sys/fs/cgroup/$c
done
mkdir -p /sys/fs/cgroup/systemd
mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
echo ready
exec sleep infinity
"""


class SandboxUnavailable(Exception):
    """Why podman cannot run here (the tests skip with it)."""


def missing() -> str:
    """"" when podman may run here, else why not."""
    if os.geteuid() != 0:
        return "podman runs rootful here: the tests need root"
    absent = [n for n in NEEDED if not shutil.which(n) and not Path(
        f"/usr/libexec/podman/{n}").exists()]
    if absent:
        return f"not installed: {', '.join(absent)} (Debian: podman runc catatonit netavark)"
    return ""


class Podman:
    """podman, as the sandbox runs it."""

    def __init__(self, root: Path, holder: subprocess.Popen[bytes]) -> None:
        self.root = root
        self.holder = holder
        self.env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "LANG": "C.UTF-8", "HOME": str(root),
                    "CONTAINERS_CONF": str(root / "containers.conf"),
                    "CONTAINERS_STORAGE_CONF": str(root / "storage.conf"),
                    "CONTAINERS_REGISTRIES_CONF": str(root / "registries.conf"),
                    "TMPDIR": str(root / "tmp")}

    def argv(self, *args: str) -> list[str]:
        return ["nsenter", "-t", str(self.holder.pid), "-m", "--", "podman", *args]

    def run(self, *args: str, check: bool = True, timeout: float = 900,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(self.argv(*args), env=self.env, capture_output=True, text=True,
                              timeout=timeout, input=input, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: exit {done.returncode}\n"
                                 f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
        return done

    def lines(self, *args: str) -> list[str]:
        return [line for line in self.run(*args).stdout.splitlines() if line.strip()]

    def leftovers(self) -> dict[str, list[str]]:
        """What the sandbox still holds: pods, containers, volumes (all the test's)."""
        return {"pods": self.lines("pod", "ps", "-q"),
                "containers": self.lines("ps", "-aq"),
                "volumes": self.lines("volume", "ls", "-q")}


def _configs(root: Path) -> None:
    for sub in ("storage", "run", "tmp", "libpod-tmp", "networks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "containers.conf").write_text(f"""\
[containers]
default_ulimits = []

[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
events_logger = "file"
events_logfile_path = "{root}/events.log"
tmp_dir = "{root}/libpod-tmp"

[network]
network_config_dir = "{root}/networks"
""")
    (root / "storage.conf").write_text(f"""\
[storage]
driver = "overlay"
graphroot = "{root}/storage"
runroot = "{root}/run"
""")
    # No registry is reachable: images are the sandbox's own (localhost/...).
    (root / "registries.conf").write_text('unqualified-search-registries = []\n')


def _hold(root: Path) -> subprocess.Popen[bytes]:
    holder = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         _HOLD.format(cgroups=" ".join(CGROUPS))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    assert holder.stdout is not None and holder.stderr is not None
    ready, _, _ = select.select([holder.stdout], [], [], 30)
    line = holder.stdout.readline() if ready else b""
    if line.strip() != b"ready":
        with contextlib.suppress(ProcessLookupError):
            os.killpg(holder.pid, signal.SIGKILL)
        why = holder.stderr.read().decode(errors="replace").strip().splitlines()
        _end(holder)
        raise SandboxUnavailable("a mount namespace with its own cgroup hierarchies: "
                                 + (why[-1] if why else "no answer in 30 s"))
    return holder


def _end(holder: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    for pipe in (holder.stdout, holder.stderr):
        if pipe is not None:
            pipe.close()


@contextlib.contextmanager
def podman_sandbox(tmp: Path) -> Iterator[Podman]:
    why = missing()
    if why:
        raise SandboxUnavailable(why)
    root = tmp / "podman"
    _configs(root)
    holder = _hold(root)
    pm = Podman(root, holder)
    try:
        info = pm.run("info", "--format", "{{.Host.OCIRuntime.Name}}", check=False)
        if info.returncode != 0:
            raise SandboxUnavailable("podman info: " + (info.stderr.strip().splitlines()
                                                        or ["failed"])[-1])
        yield pm
    finally:
        t0 = time.monotonic()
        # Everything in this storage is the sandbox's: pods, containers, images, volumes,
        # secrets; then podman's own files.
        pm.run("system", "reset", "--force", check=False, timeout=300)
        _end(holder)
        shutil.rmtree(root, ignore_errors=True)
        print(f"podman sandbox removed in {time.monotonic() - t0:.1f}s", flush=True)
