"""`wsgistack install` and `uninstall`: put a host layout (targets/host.py) in place, check
it with the tools that will read it, enable it, and keep a record of what was written.

Safe to fail: every file written is first saved (or noted as new), every module, site and
unit enabled is noted; when a check fails all of it is put back, so the host is as it was,
an earlier install of the same stack included. `--root DIR` writes the same tree under DIR
and nothing else (no users, venvs, checks or enabling), for packagers and image builders.
"""

from __future__ import annotations

import contextlib
import dataclasses
import grp
import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from wsgistack import access, provision, runtime
from wsgistack.backends import get
from wsgistack.errors import ServerError
from wsgistack.host import DEFAULT_PATH, Host
from wsgistack.lifecycle import health
from wsgistack.manifest import EMBEDDED, Manifest
from wsgistack.plan import Plan, build
from wsgistack.targets import host, systemd
from wsgistack.targets.host import HostFile, Layout

Progress = Callable[[str], None]
RECORD = ".install.json"
# Installed services run with PrivateTmp and ProtectHome: code there would be out of sight.
HIDDEN = ("/tmp/", "/var/tmp/", "/home/", "/root/", "/run/user/")
APACHE_PORTS = "/etc/apache2/ports.conf"
DEFAULT_PORT = 80


def listening(ports_conf: str = APACHE_PORTS) -> tuple[int, ...]:
    """The ports the system Apache already listens on (a second `Listen` is an error)."""
    try:
        text = Path(ports_conf).read_text(encoding="utf-8")
    except OSError:
        return ()
    found = []
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "Listen":
            found.append(int(words[1].rpartition(":")[2]))
    return tuple(found)


def plan_for(manifest: Manifest, backend: str, port: int, tls_port: int,
             host_info: Host | None = None, under: str = "") -> Plan:
    traits = get(backend)
    tls = None
    if manifest.stack.tls:
        tls = (str((manifest.root / manifest.stack.tls["cert"]).absolute()),
               str((manifest.root / manifest.stack.tls["key"]).absolute()))
        if not traits.FRONT_END:
            raise ServerError(f"{manifest.path}: stack.tls needs a front end to serve HTTPS, "
                              f"and {backend} has none; install with --backend "
                              "apache+uwsgi, nginx+uwsgi or mod_wsgi")
    if host_info is None:
        # Units start from systemd's clean environment, not the installing shell's: only
        # what a service passes on (`pass_env`) is taken from it.
        read = Host.read()
        environ = {**read.environ, "PATH": DEFAULT_PATH, "LANG": "C.UTF-8"}
        environ.pop("LC_ALL", None)
        environ.pop("TZ", None)
        host_info = dataclasses.replace(read, environ=environ, listening=listening())
    # The front end's port; services that listen themselves keep base_port and onwards.
    port = (port or DEFAULT_PORT) if traits.FRONT_END else port
    return build(manifest, traits, host=host_info,
                 target=host.target(manifest.stack.name, port, tls, tls_port, under))


def layout_of(plan: Plan, manifest: Manifest) -> Layout:
    """The layout, with the manifest as installed: its own text (the embedded default's)."""
    if manifest.path == EMBEDDED:
        text = resources.files("wsgistack").joinpath("default.toml").read_text(encoding="utf-8")
    else:
        text = Path(manifest.path).read_text(encoding="utf-8")
    return host.render(plan, get(plan.backend), text)


def check_paths(plan: Plan) -> None:
    """One line for code the installed services could not see."""
    for svc in plan.services:
        for key, path in (("venv", svc.python_home), ("working_dir", svc.working_dir),
                          *(("python_path", p) for p in svc.config.python_path)):
            full = os.path.join(path, "")
            if full.startswith(HIDDEN):
                raise ServerError(
                    f"{plan.source}: services.{svc.name}.{key}: {path} is hidden from "
                    "installed services (their units have PrivateTmp and ProtectHome); "
                    "move it under /srv, /opt or /usr/local and install again")


def check_tls(plan: Plan) -> None:
    """The certificate and key exist, are readable and belong together."""
    if plan.tls is None:
        return
    cert, key = plan.tls
    for setting, what, path in (("cert", "certificate", cert), ("key", "key", key)):
        if not os.access(path, os.R_OK):
            raise ServerError(f"{plan.source}: stack.tls.{setting}: the {what} {path} is "
                              "missing or unreadable; give a PEM file")
    def pub(argv: list[str]) -> str:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        return done.stdout if done.returncode == 0 else ""
    mine = pub(["openssl", "x509", "-noout", "-pubkey", "-in", cert])
    theirs = pub(["openssl", "pkey", "-pubout", "-in", key])
    if not mine:
        raise ServerError(f"{plan.source}: stack.tls.cert: {cert} is not a PEM certificate")
    if mine != theirs:
        raise ServerError(f"{plan.source}: stack.tls.key: {key} is not the private key of "
                          f"{cert}; give the key the certificate was made for")


# --- writing ---------------------------------------------------------------------------

def _ids(f: HostFile) -> tuple[int, int]:
    try:
        return pwd.getpwnam(f.user).pw_uid, grp.getgrnam(f.group).gr_gid
    except KeyError:
        return -1, -1


def _write(f: HostFile, under: str, chown: bool) -> None:
    path = under + f.path
    if f.text is None:
        os.makedirs(path, mode=0o755, exist_ok=True)
        if chown:
            os.chown(path, *_ids(f))
        os.chmod(path, f.mode)
        return
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    tmp = f"{path}.wsgistack-new"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        if chown:
            os.fchown(fd, *_ids(f))
        os.fchmod(fd, f.mode)
        os.write(fd, f.text.encode("utf-8"))
    finally:
        os.close(fd)
    os.replace(tmp, path)


def changes(layout: Layout, under: str = "") -> list[tuple[str, str]]:
    """(what, path) for every file that install would create or change."""
    out = []
    for f in layout.files:
        path = under + f.path
        if f.text is None:
            if not os.path.isdir(path):
                out.append(("create", f.path))
            continue
        try:
            same = Path(path).read_text(encoding="utf-8") == f.text
        except (OSError, UnicodeDecodeError):
            out.append(("create" if not os.path.exists(path) else "update", f.path))
            continue
        if not same:
            out.append(("update", f.path))
    return out


def write_tree(layout: Layout, under: str, name: str, backend: str) -> list[HostFile]:
    """`--root DIR`: the same files under DIR, owned as on the host where this user may set
    owners (root, and the users exist), with a record of its own: an earlier tree of the same
    stack is replaced (what it had and this one has not is removed). Returns the files whose
    owner could not be set."""
    old = Record.read(name, under)
    files = {f.path for f in layout.files if f.text is not None}
    dirs = {f.path for f in layout.files if f.text is None}
    if old:
        _remove_tree(old, under, keep=files | dirs)
    unowned = []
    for f in layout.files:
        owned = os.geteuid() == 0 and _ids(f) != (-1, -1)
        _write(f, under, chown=owned)
        if not owned and f.text is not None and (f.user, f.group) != _me():
            unowned.append(f)
    record = Record(stack=name, backend=backend, files=tuple(sorted(files)),
                    dirs=tuple(sorted(dirs)), site_link=layout.site_link)
    _write(HostFile(record_path(name), json.dumps(dataclasses.asdict(record), indent=1),
                    0o600), under, chown=False)
    return unowned


def _me() -> tuple[str, str]:
    return pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name


def _remove_tree(rec: Record, under: str, keep: Collection[str] = ()) -> list[str]:
    """What a tree's record lists (but `keep`), removed from under DIR; directories only
    once empty."""
    removed = []
    for path in (*rec.files, rec.site_link):
        if path and path not in keep and os.path.lexists(under + path):
            os.unlink(under + path)
            removed.append(path)
    for directory in sorted(rec.dirs, reverse=True):
        if directory not in keep:
            with contextlib.suppress(OSError):
                os.rmdir(under + directory)
    return removed


class Undo:
    """What to put back if a check fails: each file as it was, each link and module."""

    def __init__(self) -> None:
        self.files: dict[str, bytes | None] = {}
        self.modes: dict[str, tuple[int, int, int]] = {}
        self.dirs: list[str] = []
        self.before: list[Callable[[], None]] = []  # while the new files are there
        self.after: list[Callable[[], None]] = []  # once the old ones are back

    def save(self, path: str) -> None:
        if path in self.files or path in self.dirs:
            return
        if os.path.isdir(path):
            return
        if os.path.lexists(path):
            st = os.lstat(path)
            self.files[path] = os.readlink(path).encode() if os.path.islink(path) \
                else Path(path).read_bytes()
            self.modes[path] = (st.st_mode, st.st_uid, st.st_gid)
        else:
            self.files[path] = None

    def made_dirs(self, path: str) -> None:
        missing = []
        current = Path(path)
        while not current.exists():
            missing.append(str(current))
            current = current.parent
        self.dirs += missing

    def run(self) -> None:
        for step in self.before:
            with contextlib.suppress(ServerError):
                step()
        for path, data in self.files.items():
            if os.path.lexists(path):
                os.unlink(path)
            if data is None:  # made by this install
                continue
            mode, uid, gid = self.modes[path]
            if stat.S_ISLNK(mode):
                os.symlink(data.decode(), path)
                continue
            Path(path).write_bytes(data)
            os.chown(path, uid, gid)
            os.chmod(path, mode & 0o7777)
        for directory in self.dirs:  # made by this install: all of it is ours
            shutil.rmtree(directory, ignore_errors=True)
        for step in self.after:
            with contextlib.suppress(ServerError):
                step()


@contextmanager
def undone_on_failure(undo: Undo) -> Iterator[None]:
    try:
        yield
    except BaseException:
        undo.run()
        raise


# A front end started here (no systemd) gets a clean environment, as systemd would give
# it: mod_wsgi's daemons inherit Apache's, and the installing shell's is not theirs.
CLEAN_ENV = {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8"}


def _check(argv: list[str], what: str, env: dict[str, str] | None = None,
           quiet: bool = False) -> None:
    """Run a check or step; its failure is one line with its own output. `quiet`: any
    output is a failure too (systemd-analyze warns with exit 0)."""
    done = subprocess.run(argv, capture_output=True, text=True, check=False, env=env, cwd="/")
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0 or (quiet and output):
        lines = " / ".join(line.strip() for line in output.splitlines() if line.strip())
        said = lines or f"exit {done.returncode}"
        raise ServerError(f"{what} failed: `{' '.join(argv)}`: {said}; the host is left "
                          "as it was")


def _unit_state(unit: str) -> tuple[str, int]:
    """(ActiveState, NRestarts): how many times systemd restarted it on failure."""
    shown = subprocess.run(["systemctl", "show", "-p", "ActiveState,NRestarts", unit],
                           capture_output=True, text=True, check=False).stdout
    props = dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)
    restarts = props.get("NRestarts", "0")
    return props.get("ActiveState", ""), int(restarts) if restarts.isdigit() else 0


def _restarting(unit: str, before: int) -> bool:
    """Failed, or restarted by systemd since this install started it: it will not come
    up. (A unit only reloaded keeps the count of its earlier life.)"""
    state, restarts = _unit_state(unit)
    return state == "failed" or restarts > before


def systemd_running() -> bool:
    return os.path.isdir("/run/systemd/system")


MODS = "/etc/apache2/mods"


def _with_dependencies(modules: tuple[str, ...]) -> list[str]:
    """The modules and what each needs (a2enmod's `# Depends:` lines), needs first."""
    out: list[str] = []

    def add(name: str) -> None:
        if name in out:
            return
        try:
            text = Path(f"{MODS}-available/{name}.load").read_text(encoding="utf-8")
        except OSError:
            text = ""
        for line in text.splitlines():
            if line.startswith("# Depends:"):
                for dep in line.split(":", 1)[1].split():
                    add(dep)
        out.append(name)

    for name in modules:
        add(name)
    return out


def _enable_modules(modules: tuple[str, ...], undo: Undo) -> list[str]:
    """Link what is not enabled yet, as a2enmod does (but without a2enmod's records of
    who enabled what under /var/lib/apache2: uninstall leaves no trace); returns them."""
    missing = [m for m in _with_dependencies(modules)
               if not os.path.lexists(f"{MODS}-enabled/{m}.load")]
    for module in missing:
        if not os.path.exists(f"{MODS}-available/{module}.load"):
            raise ServerError(f"Apache module {module} is not installed "
                              f"({MODS}-available/{module}.load is missing); install the "
                              "package that provides it; the host is left as it was")
    for module in missing:
        for ext in (".load", ".conf"):
            if os.path.exists(f"{MODS}-available/{module}{ext}"):
                link = f"{MODS}-enabled/{module}{ext}"
                undo.save(link)
                os.symlink(f"../mods-available/{module}{ext}", link)
    return missing


def disable_modules(modules: tuple[str, ...]) -> None:
    for module in modules:
        for ext in (".load", ".conf"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{MODS}-enabled/{module}{ext}")


def ports_of(plan: Plan) -> tuple[int, ...]:
    """The TCP ports the installed stack listens on."""
    return plan.front_ports if plan.front_port else tuple(s.port for s in plan.services)


def check_ports(plan: Plan, old: Record | None) -> None:
    """A port new to this stack must be free: taken, the front end's graceful reload
    fails to bind it, and the whole front end stops, every other site with it."""
    for port in ports_of(plan):
        if (old and port in old.ports) or (plan.front_port and port in plan.host_info.listening):
            continue
        family = socket.AF_INET6 if ":" in plan.host else socket.AF_INET
        with socket.socket(family) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((plan.host, port))
            except OSError as exc:
                raise ServerError(
                    f"port {port} on {plan.host} is taken ({exc.strerror}); stop what "
                    "listens there or install with another --port; the host is left as "
                    "it was") from None


def _checks(layout: Layout) -> None:
    """Each file by the tool that will read it, before anything is started or reloaded."""
    units = [f.path for f in layout.files if f.path.startswith(host.UNITS + "/")]
    if shutil.which("systemd-analyze"):
        _check(["systemd-analyze", "verify", *units], "systemd-analyze verify", quiet=True)
    logrotate = next(f.path for f in layout.files if f.path.startswith("/etc/logrotate.d/"))
    if shutil.which("logrotate"):
        _check(["logrotate", "-d", logrotate], "logrotate -d")
    if layout.site is not None and layout.site.server == "apache2":
        _check(["apache2ctl", "configtest"], "apache2ctl configtest")
    elif layout.site is not None:
        _check(["nginx", "-t", "-q"], "nginx -t")


def _enable_site(layout: Layout, undo: Undo) -> list[str]:
    """Link the site and enable its modules; returns the modules this install enabled."""
    site = layout.site
    if site is None:
        return []
    undo.save(layout.site_link)
    if not os.path.lexists(layout.site_link):
        os.symlink(os.path.relpath(layout.site_file, os.path.dirname(layout.site_link)),
                   layout.site_link)
    if site.server != "apache2":
        return []
    return _enable_modules(site.modules, undo)


def install(manifest: Manifest, backend: str, progress: Progress, *, port: int = 0,
            tls_port: int = 443, under: str = "", dry_run: bool = False,
            tree: bool = True) -> Layout:
    if not under and not dry_run and os.geteuid() != 0:
        raise ServerError("install writes to /etc, /var and systemd: run it as root, or "
                          "give --root DIR to write the tree under DIR")
    if dry_run:  # the secrets it would make, made nowhere
        scratch = tempfile.mkdtemp(prefix="wsgistack-dry-run-")
        kept = os.path.join(host.ETC, manifest.stack.name, "secrets")
        if os.path.isdir(kept):  # the installed ones: entries that hold them compare equal
            shutil.copytree(kept, scratch + kept)
        try:
            return install(manifest, backend, progress, port=port, tls_port=tls_port,
                           under=scratch, dry_run=False, tree=False)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    plan = plan_for(manifest, backend, port, tls_port, under=under)
    check_paths(plan)
    if under:
        layout = layout_of(plan, manifest)
        if tree:
            for f in write_tree(layout, under, plan.name, plan.backend):
                progress(f"{under}{f.path}: owned by you, not {f.user}:{f.group} as on a "
                         f"host: `chown {f.user}:{f.group}` it where the tree is unpacked")
        return layout
    check_tls(plan)
    undo = Undo()
    old = Record.read(plan.name)
    check_ports(plan, old)
    provision.ensure_users(plan, progress)  # kept on failure, as a package's would be
    for top in (plan.state, plan.path("data"), plan.path("logs")):
        undo.made_dirs(top)
    with undone_on_failure(undo):
        _prepare(plan, progress)
        plan = plan.found_again()  # the venvs made: a server of their own may be there
        layout = layout_of(plan, manifest)
        _try_apps(plan)
        changed = {path for _, path in changes(layout)}
        for f in layout.files:
            if f.text is None:
                undo.made_dirs(f.path)
            else:
                undo.save(f.path)
            _write(f, "", chown=True)
        if layout.site is not None and not os.path.lexists(layout.site_link):
            changed.add(layout.site_link)
        modules = _enable_site(layout, undo)
        if modules:
            changed.add(layout.site_link)
        _checks(layout)
        undo.save(record_path(plan.name))
        _record(plan, layout, old, modules)
        # Should the new stack not come up, the old files come back, and are served again.
        undo.before.append(lambda: _stop_new(layout, old))
        undo.after.append(lambda: _restart_old(layout, old))
        _start(plan, layout, progress, changed)
    return layout


def _prepare(plan: Plan, progress: Progress) -> None:
    """What the apps need before the first start, as `up` makes it: venvs, data dirs,
    templates and setup commands (once, as the app's user)."""
    first = plan.services[0]
    for path, mode, user, group in (
            (plan.state, 0o755, "", ""), (plan.path("data"), 0o755, "", ""),
            (plan.path("setup"), access.PRIVATE_DIR, "", ""),
            (plan.path("logs"), access.GROUP_DIR, first.user, first.group)):
        for parent in reversed(Path(path).parents):
            if not parent.exists():
                access.make_dir(plan, str(parent), 0o755)
        access.make_dir(plan, path, mode, user, group)
    for svc in plan.services:
        access.make_dir(plan, svc.provision.data_dir, access.GROUP_DIR, svc.user, svc.group)
        if plan.access_log != "off":  # the app's workers append to it
            access.make_file(plan, plan.path("logs", f"{svc.name}-access.log"),
                             access.GROUP_FILE, svc.user, svc.group)
    provision.prepare(plan, progress)
    provision.render_templates(plan)
    provision.run_setup(plan, progress)


def _try_apps(plan: Plan) -> None:
    """Each app loaded from its new entry as its user, in a throwaway process, before
    anything is written where the servers read (as `up` and `reload` do)."""
    try:
        runtime.try_apps(plan, get(plan.backend).render(plan), "; the host is left as it was")
    finally:
        shutil.rmtree(plan.path("preflight"), ignore_errors=True)


def record_path(name: str) -> str:
    return os.path.join(host.LIB, name, RECORD)


@dataclass(frozen=True)
class Record:
    """What an install of a stack put on the host: what `uninstall` removes."""

    stack: str
    backend: str
    files: tuple[str, ...] = ()
    dirs: tuple[str, ...] = ()
    site_link: str = ""
    server: str = ""  # the front end to reload: apache2, nginx or ""
    modules: tuple[str, ...] = ()  # Apache modules this stack's installs enabled
    units: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()

    @classmethod
    def read(cls, name: str, under: str = "") -> Record | None:
        try:
            data = json.loads(Path(under + record_path(name)).read_text(encoding="utf-8"))
            fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                      for k, v in data.items()}
            return cls(**fields)
        except (OSError, ValueError, TypeError):
            return None


def _record(plan: Plan, layout: Layout, old: Record | None, modules: list[str]) -> Record:
    record = Record(
        stack=plan.name, backend=plan.backend,
        # What an earlier install wrote and this one did not is still ours to remove.
        files=tuple(sorted({*(f.path for f in layout.files if f.text is not None),
                            *(old.files if old else ())})),
        dirs=tuple(f.path for f in layout.files if f.text is None),
        site_link=layout.site_link, server=layout.site.server if layout.site else "",
        modules=tuple(sorted({*modules, *(old.modules if old else ())})),
        units=(*layout.units, layout.target), ports=ports_of(plan),
    )
    access.make_file(plan, record_path(plan.name), access.PRIVATE_FILE,
                     text=json.dumps(dataclasses.asdict(record), indent=1))
    return record


def _start(plan: Plan, layout: Layout, progress: Progress, changed: set[str]) -> None:
    """Enable the units; start, restart or reload what changed; wait until every service
    answers its health check, where something here runs them."""
    before = {u: _unit_state(u)[1] for u in layout.units} if systemd_running() else {}
    _run_units(layout, progress, changed)
    exporter = systemd.unit_name(plan, systemd.EXPORTER)
    # Without systemd, what runs in a unit waits for the next boot; mod_wsgi's services are
    # Apache's and answer now.
    if systemd_running() or not [u for u in layout.units if u != exporter]:
        _wait_healthy(plan, layout, before)
        progress("every service healthy")
        provision.run_after_up(plan, progress)


def _disable(units: list[str] | tuple[str, ...]) -> None:
    """Disable units, and stop them where systemd runs; the `.wants` dirs `enable` made
    for them go too, once empty."""
    now = ["--now"] if systemd_running() else []
    subprocess.run(["systemctl", "disable", *now, "--quiet", *units], capture_output=True,
                   check=False)
    for unit in units:
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join(host.UNITS, unit + ".wants"))


def _stop_new(layout: Layout, old: Record | None) -> None:
    """After a failed start: the units this install added, stopped and disabled."""
    kept = old.units if old else ()
    _disable([u for u in (*layout.units, layout.target) if u not in kept])


def _restart_old(layout: Layout, old: Record | None) -> None:
    """The files put back: the earlier install's units and front end serve them again."""
    if systemd_running():
        subprocess.run(["systemctl", "daemon-reload"], capture_output=True, check=False)
        for unit in old.units if old else ():
            subprocess.run(["systemctl", "reload-or-restart", unit], capture_output=True,
                           check=False)
    if layout.site is not None:
        _front_reload(layout.site.server)


def _wait_healthy(plan: Plan, layout: Layout, before: dict[str, int]) -> None:
    deadline = time.monotonic() + plan.start_timeout
    for svc in plan.services:
        _wait_answer(systemd.unit_name(plan, svc.name), f"service '{svc.name}'",
                     svc.health_url, svc.config.health_status, plan, layout, before, deadline)
    exporter = systemd.unit_name(plan, systemd.EXPORTER)
    if exporter in layout.units and systemd_running():  # the metrics endpoint was asked for
        # It holds no state: systemd restarts it (Restart=on-failure) until the deadline.
        _wait_answer(exporter, "the stack's metrics exporter", f"http://{plan.metrics}/metrics",
                     200, plan, layout, None, deadline)


def _wait_answer(unit: str, what: str, url: str, want: int, plan: Plan, layout: Layout,
                 before: dict[str, int] | None, deadline: float) -> None:
    """Until `url` answers `want`; a unit systemd had to restart fails at once, unless
    `before` is None."""
    while True:
        if before is not None and unit in layout.units and \
                _restarting(unit, before.get(unit, 0)):
            raise ServerError(f"{what} failed to start under systemd ({unit}): "
                              f"{_journal_tail(unit)}; the previous install is back")
        status, why = health.http_status(url)
        if status == want:
            return
        if time.monotonic() > deadline:
            said = f"HTTP {status}" if status else why
            if before is None:
                said += "; journalctl -u " + unit + ": " + _journal_tail(unit)
            raise ServerError(f"{what} is not healthy after install: {url} answered {said} "
                              f"(want {want}); see {plan.path('logs')}; the previous install "
                              "is back")
        time.sleep(0.2)


def _journal_tail(unit: str) -> str:
    said = subprocess.run(["journalctl", "-u", unit, "-n", "1", "-o", "cat", "--no-pager"],
                          capture_output=True, text=True, check=False).stdout.strip()
    return said or "see journalctl -u " + unit


def _active(unit: str) -> bool:
    return subprocess.run(["systemctl", "is-active", "--quiet", unit], check=False).returncode == 0


def _run_units(layout: Layout, progress: Progress, changed: set[str]) -> None:
    """A unit not running is started; one whose unit file changed is restarted; one whose
    entry or config changed is reloaded (gracefully); the rest are left alone, and the
    front end is reloaded only when something of its own changed."""
    units = [*layout.units, layout.target]
    front = bool(changed & set(layout.front_files))
    if not systemd_running():
        # No systemd here (a container, a chroot): the units are enabled for the next boot.
        _check(["systemctl", "enable", "--quiet", *units], "systemctl enable")
        if layout.units:
            progress("systemd is not running here: units enabled, not started")
        if front and layout.site is not None:
            _front_reload(layout.site.server)
            progress(f"{layout.site.server} reloaded")
        return
    _check(["systemctl", "daemon-reload"], "systemctl daemon-reload")
    _check(["systemctl", "enable", "--quiet", *units], "systemctl enable")
    done: dict[str, list[str]] = {"started": [], "restarted": [], "reloaded": []}
    for unit in units:
        paths = layout.owned.get(unit, ())
        if not _active(unit):
            how, argv = "started", ["systemctl", "start", unit]
        elif paths and paths[0] in changed:
            how, argv = "restarted", ["systemctl", "restart", unit]
        elif set(paths) & changed:
            how, argv = "reloaded", ["systemctl", "reload", unit]
        else:
            continue
        _check(argv, f"systemctl {argv[1]} {unit}")
        done[how].append(unit)
    if front and layout.site is not None:
        _check(["systemctl", "reload-or-restart", layout.site.server], "front end reload")
        done["reloaded"].append(layout.site.server)
    said = "; ".join(f"{how} {', '.join(names)}" for how, names in done.items() if names)
    progress(said or "nothing changed")


def _front_reload(server: str) -> None:
    if server == "apache2":
        _check(["apache2ctl", "graceful"], "apache2ctl graceful", env=CLEAN_ENV)
    else:
        running = subprocess.run(["nginx", "-s", "reload"], capture_output=True, check=False,
                                 env=CLEAN_ENV)
        if running.returncode != 0:
            _check(["nginx"], "starting nginx", env=CLEAN_ENV)


def uninstall(name: str, progress: Progress, purge: bool = False,
              under: str = "") -> list[str]:
    """Remove exactly what install wrote (its record says what), keep data and logs unless
    `purge`. `under`: a tree written with --root DIR, where nothing runs."""
    rec = Record.read(name, under)
    if rec is None:
        raise ServerError(f"stack '{name}' is not installed (no {under}{record_path(name)}); "
                          "nothing to remove")
    if under:
        removed = _remove_tree(rec, under)
        os.unlink(under + record_path(name))
        progress(f"removed {len(removed)} file(s) of stack '{name}' from {under}")
        return removed
    if rec.units:
        _disable(rec.units)
    removed = []
    for path in (rec.site_link, *rec.files):
        if path and os.path.lexists(path):
            os.unlink(path)
            removed.append(path)
    disable_modules(rec.modules)
    if rec.server:
        _front_reload(rec.server)
    if systemd_running():
        subprocess.run(["systemctl", "daemon-reload"], capture_output=True, check=False)
    for directory in sorted(rec.dirs, reverse=True):
        shutil.rmtree(directory, ignore_errors=True)
    shutil.rmtree(os.path.join(host.ETC, name), ignore_errors=True)
    os.unlink(record_path(name))
    if purge:
        for top in (host.LIB, host.LOG, host.RUN):
            shutil.rmtree(os.path.join(top, name), ignore_errors=True)
    for top in (host.ETC, host.LIB, host.LOG, host.RUN):
        with contextlib.suppress(OSError):
            os.rmdir(top)  # only when no other stack is there
    progress(f"removed {len(removed)} file(s) of stack '{name}'"
             + ("; data and logs purged" if purge else
                f"; data in {host.LIB}/{name} and logs in {host.LOG}/{name} kept"))
    return removed
