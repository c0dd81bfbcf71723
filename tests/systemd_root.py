"""Boot a real systemd (PID 1 of its own pid namespace) in a Debian root, for tests of
`wsgistack install` on a machine whose PID 1 is not systemd (this one, CI's).

    make_root(dest, include)          mmdebstrap a bookworm minbase root, readied for booting
    with booted_systemd(root) as sd:  unshare --fork --pid --mount --uts + chroot + systemd
        sd.run("systemctl", "start", "x.service")   # nsenter into it

The booted systemd shares the host's network namespace (no --net): a server that it starts
on 127.0.0.1:PORT is reachable from the host, and clashes with the host's ports.
It also shares the kernel: units that write kernel state (sysctl, binfmt, modules, static
/dev nodes, gettys on the host's ttys) are masked in the root before boot.

Needs root, util-linux (unshare, nsenter), mmdebstrap. Linux with cgroup v1+v2 hybrid
(as here) or pure v2 (/sys/fs/cgroup is cgroup2).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DEFAULT_INCLUDE = [
    "systemd", "systemd-sysv", "dbus", "apache2", "libapache2-mod-wsgi-py3", "uwsgi",
    "uwsgi-plugin-python3", "python3-venv", "python3-pip", "nginx", "logrotate",
    "ca-certificates", "curl",
]

# Masked before boot. Kernel-global or host-device side effects, or units that fail here.
MASK = [
    # gettys would run agetty on the host's /dev/tty1; console-getty fails (console is
    # /dev/null here) and leaves the system `degraded`.
    "getty.target", "getty@tty1.service", "console-getty.service", "serial-getty@.service",
    "systemd-logind.service",            # takes the host's VTs
    "systemd-sysctl.service",            # would write the HOST's fs.protected_* sysctls
    "systemd-modules-load.service", "kmod-static-nodes.service",
    "systemd-binfmt.service", "proc-sys-fs-binfmt_misc.automount",
    "proc-sys-fs-binfmt_misc.mount",
    "systemd-tmpfiles-setup-dev.service",  # creates nodes in the host's /dev (rbound)
    "systemd-remount-fs.service",        # remounts / (the host's filesystem)
    "systemd-pstore.service", "e2scrub_reap.service", "e2scrub_all.timer",
    "fstrim.timer", "apt-daily.timer", "apt-daily-upgrade.timer",
]

SYSTEM_CONF = """\
[Manager]
# Leave the host's controllers alone: units stay in the caller's memory/pids/cpu cgroups.
DefaultCPUAccounting=no
DefaultIOAccounting=no
DefaultIPAccounting=no
DefaultBlockIOAccounting=no
DefaultMemoryAccounting=no
DefaultTasksAccounting=no
"""

JOURNALD_CONF = """\
[Journal]
ReadKMsg=no
"""

# The shell that unshare runs (as PID 1 of the new pid namespace, then exec'd into systemd).
# $1 root, $2 cgroup name (made by the caller under each hierarchy, may be empty).
BOOT_SH = r"""
set -e
R=$1; CG=$2
for d in $CGDIRS; do echo 0 > "$d/$CG/cgroup.procs"; done
mount --bind "$R" "$R"
mount -t proc proc "$R/proc"
mount --rbind /sys "$R/sys"
# A /dev of its own, as systemd-nspawn makes one: device nodes made here, never the host's.
# (A bind of the host's /dev/null on /dev/console let systemd chmod the host's /dev/null.)
mount -t tmpfs -o mode=755,nosuid tmpfs "$R/dev"
for node in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
    IFS=: read -r name major minor <<EOF_NODE
$node
EOF_NODE
    mknod -m 666 "$R/dev/$name" c "$major" "$minor"
done
mknod -m 600 "$R/dev/console" c 1 3
mkdir "$R/dev/pts" "$R/dev/shm" "$R/dev/mqueue"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$R/dev/shm"
ln -s /proc/self/fd "$R/dev/fd"
ln -s /proc/self/fd/0 "$R/dev/stdin"
ln -s /proc/self/fd/1 "$R/dev/stdout"
ln -s /proc/self/fd/2 "$R/dev/stderr"
mount -t tmpfs -o mode=755 tmpfs "$R/run"
mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"
exec env -i container=wsgistack-sdroot TERM=dumb /usr/sbin/chroot "$R" \
    /lib/systemd/systemd --system --show-status=false
"""

INNER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _sources() -> list[str]:
    """The host's apt sources, if deb822 (mmdebstrap takes a .sources/.list file as MIRROR)."""
    for p in ("/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"):
        if os.path.exists(p) and Path(p).read_text().strip():
            return [p]
    return []


def make_root(dest: Path, include: list[str], *, suite: str = "bookworm",
              apache_listen: str = "127.0.0.1:28080",
              nginx_listen: str = "127.0.0.1:28081") -> None:
    """mmdebstrap a minbase root at `dest` (absent or empty) with `include`, and ready it
    for `booted_systemd`: masks, machine-id, hostname, the host's extra CAs (pip behind
    the egress proxy), apache2 on `apache_listen`, nginx on `nginx_listen` and disabled."""
    dest = Path(dest)
    t0 = time.monotonic()
    subprocess.run(
        ["mmdebstrap", "--variant=minbase", "--mode=root", "--quiet",
         "--aptopt=Acquire::Check-Valid-Until \"false\"",
         "--aptopt=Acquire::Check-Date \"false\"",
         "--include=" + ",".join(include), suite, str(dest), *_sources()],
        check=True)
    print(f"mmdebstrap: {time.monotonic() - t0:.1f}s", flush=True)  # shown with -s
    etc = dest / "etc"
    for unit in MASK:
        link = etc / "systemd/system" / unit
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to("/dev/null")
    for wants in (etc / "systemd/system").glob("*.wants"):
        for link in wants.iterdir():
            if link.name in MASK:
                link.unlink()
    (etc / "systemd/system.conf.d").mkdir(parents=True, exist_ok=True)
    (etc / "systemd/system.conf.d/50-sdroot.conf").write_text(SYSTEM_CONF)
    (etc / "systemd/journald.conf.d").mkdir(parents=True, exist_ok=True)
    (etc / "systemd/journald.conf.d/50-sdroot.conf").write_text(JOURNALD_CONF)
    (etc / "hostname").write_text("sdroot\n")
    subprocess.run(["systemd-machine-id-setup", f"--root={dest}"], check=True,
                   capture_output=True)
    # The host trusts extra CAs (the egress proxy's): pip inside needs them too.
    extra = Path("/usr/local/share/ca-certificates")
    if extra.is_dir() and (dest / "usr/sbin/update-ca-certificates").exists():
        for crt in extra.glob("*.crt"):
            shutil.copy2(crt, dest / "usr/local/share/ca-certificates" / crt.name)
        subprocess.run(["chroot", str(dest), "update-ca-certificates"], check=True,
                       capture_output=True)
    ports = etc / "apache2/ports.conf"
    if ports.exists():
        port = apache_listen.rsplit(":", 1)[1]
        ports.write_text(ports.read_text().replace("Listen 80\n", f"Listen {apache_listen}\n"))
        site = etc / "apache2/sites-available/000-default.conf"
        site.write_text(site.read_text().replace("<VirtualHost *:80>", f"<VirtualHost *:{port}>"))
    nginx = etc / "nginx/sites-available/default"
    if nginx.exists():
        text = nginx.read_text().replace("listen [::]:80 default_server;", "")
        nginx.write_text(text.replace("listen 80 default_server;",
                                      f"listen {nginx_listen} default_server;"))
        wanted = etc / "systemd/system/multi-user.target.wants/nginx.service"
        if wanted.is_symlink():
            wanted.unlink()


def remove_root(root: Path) -> None:
    """rm -r the root, refusing while anything is mounted under it (host's view)."""
    root = Path(root).resolve()
    mounted = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
               if line.split()[4] == str(root) or line.split()[4].startswith(f"{root}/")]
    if mounted:
        raise RuntimeError(f"still mounted under {root}: {mounted}")
    shutil.rmtree(root)


def _cgroup_dirs() -> list[Path]:
    """The hierarchies systemd tracks its processes in: name=systemd (v1) and/or cgroup2."""
    base = Path("/sys/fs/cgroup")
    if (base / "cgroup.controllers").exists():  # pure cgroup2
        return [base]
    return [p for p in (base / "systemd", base / "unified") if (p / "cgroup.procs").exists()]


def _rmdir_tree(path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while path.exists():
        try:
            for dirpath, _dirs, _files in sorted(os.walk(path), key=lambda t: -len(t[0])):
                os.rmdir(dirpath)
        except OSError:  # EBUSY: killed tasks not yet gone
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _pdeathsig_kill() -> None:
    # unshare dies with the process (thread) that started it; --kill-child then kills systemd.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class Booted:
    root: Path
    pid: int          # systemd, in the host's pid namespace
    boot_seconds: float

    def run(self, *argv: str, check: bool = False, env: dict[str, str] | None = None,
            timeout: float | None = 120, input: str | None = None,
            ) -> subprocess.CompletedProcess[str]:
        """argv inside (mount, pid, uts namespaces, root and cwd of systemd), with a clean
        environment (the host's PIP_*, PATH... would leak in through nsenter)."""
        inner_env = {"PATH": INNER_PATH, "LANG": "C.UTF-8", "HOME": "/root",
                     "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0", **(env or {})}
        cmd = ["nsenter", "-t", str(self.pid), "-m", "-p", "-u", "-r", "-w",
               "env", "-i", *(f"{k}={v}" for k, v in inner_env.items()), *argv]
        return subprocess.run(cmd, capture_output=True, text=True, check=check,
                              timeout=timeout, input=input)

    def state(self) -> str:
        return self.run("systemctl", "is-system-running", timeout=10).stdout.strip()


@contextlib.contextmanager
def booted_systemd(root: Path, timeout: float = 30.0) -> Iterator[Booted]:
    """Boot systemd in `root`; yield once `is-system-running` says running/degraded; on
    exit SIGKILL it (the pid namespace's init: the kernel kills all in it, the mount
    namespace and its mounts go with them) and remove its cgroups."""
    root = Path(root).resolve()
    cgname = f"{root.name}-{os.getpid()}-{time.monotonic_ns()}"
    cgdirs = _cgroup_dirs()
    for d in cgdirs:
        (d / cgname).mkdir()
    t0 = time.monotonic()
    proc = subprocess.Popen(
        ["unshare", "--fork", "--pid", "--mount", "--uts", "--propagation", "private",
         "--kill-child=SIGKILL", "sh", "-c", BOOT_SH, "sh", str(root), cgname],
        env={"PATH": os.environ.get("PATH", INNER_PATH),
             "CGDIRS": " ".join(str(d) for d in cgdirs)},
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,  # a ^C to the tests must not reach systemd (SIGINT = reboot)
        preexec_fn=_pdeathsig_kill)
    pid = 0
    try:
        deadline = t0 + timeout
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        while not pid:
            if proc.poll() is not None:
                raise RuntimeError(f"boot failed: {proc.stdout.read().decode()}")  # type: ignore[union-attr]
            kids = children.read_text().split() if children.exists() else []
            if kids and Path(f"/proc/{kids[0]}/comm").read_text().strip() == "systemd":
                pid = int(kids[0])
            elif time.monotonic() > deadline:
                raise TimeoutError("systemd did not start")
            else:
                time.sleep(0.02)
        booted = Booted(root, pid, 0.0)
        state = ""
        while state not in ("running", "degraded"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"systemd not up after {timeout}s: {state!r}")
            if proc.poll() is not None:
                raise RuntimeError(f"systemd died: {proc.stdout.read().decode()}")  # type: ignore[union-attr]
            time.sleep(0.05)
            state = booted.state()
        booted.boot_seconds = time.monotonic() - t0
        yield booted
    finally:
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        else:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        try:
            proc.wait(timeout=15)
        finally:
            if proc.stdout is not None:
                proc.stdout.close()
            for d in cgdirs:
                _rmdir_tree(d / cgname)
