"""The resolved deployment: every port, path and URL decided, before anything is written.

Backends render from a :class:`Plan` only; nothing downstream reads the manifest's raw data.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import ipaddress
import json
import os
import re
import shlex
import string
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Protocol

from wsgistack import secrets
from wsgistack.apps.catalog import ENV_VAR as CATALOG_ENV
from wsgistack.entry import module_name
from wsgistack.errors import ManifestError
from wsgistack.host import Host, Identity, identity
from wsgistack.manifest import VARIABLES, Manifest, ServiceConfig

DEBIAN_PYTHON = "/usr/bin/python3"


class _Template(string.Template):
    # `${file:/etc/keystone/admin-password}` and `${services.keystone.url}` as well as `${name}`.
    braceidpattern = r"(?a:[_a-z][_a-z0-9]*(?:\.[_a-z0-9-]+)*(?::[^}]+)?)"


SECRET_NAME = re.compile(r"[A-Za-z0-9_.-]+")


class Variables(Mapping[str, str]):
    """The `${variables}` of one service. `${file:PATH}` reads a secret from a file (relative
    to the manifest), `${secret:NAME}` one made for the stack; what was read is remembered,
    so that it is never shown."""

    def __init__(self, values: Mapping[str, str], root: str, secrets_dir: str = "") -> None:
        self._values = dict(values)
        self.root = root
        self.secrets_dir = secrets_dir
        self.secrets: set[str] = set()
        self.warnings: list[str] = []
        self.where = self.key = ""  # what is being substituted, for a missing file's message

    def __getitem__(self, name: str) -> str:
        kind, _, arg = name.partition(":")
        if kind == "file" and arg:
            value = secrets.read_file(Path(self.root, arg), self.where, self.key, self.warnings)
        elif kind == "secret" and arg:
            if not SECRET_NAME.fullmatch(arg):
                raise ManifestError(self.where, self.key, f"${{secret:{arg}}}: a secret's "
                                    "name is letters, digits, '.', '_' and '-'")
            value = secrets.generated(Path(self.secrets_dir, arg), self.where, self.key)
        else:
            return self._values[name]
        self.secrets.add(value)
        return value

    def add_env(self, env: Mapping[str, str]) -> None:
        """`${env.KEY}`: the service's env, once it is known (templates and commands)."""
        self._values.update({f"env.{k}": v for k, v in env.items()})

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


@dataclass(frozen=True)
class Provision:
    """What a service needs before its first start (see provision.py)."""

    venv_base: str = ""  # interpreter that creates the service's own venv ("" : none created)
    packages: tuple[str, ...] = ()  # what pip installs into it
    data_dir: str = ""
    user: str = ""  # who the app runs as, and so who owns data_dir
    templates: tuple[tuple[str, str], ...] = ()  # (target, template), absolute
    setup: tuple[tuple[str, ...], ...] = ()
    after_up: tuple[tuple[str, ...], ...] = ()
    variables: Variables = field(default_factory=lambda: Variables({}, "/"))


@dataclass(frozen=True)
class ServicePlan:
    config: ServiceConfig
    port: int  # the service's own TCP listener; 0 when it sits behind a front end
    socket: str  # its UNIX socket behind a front end, else ""
    entry: str  # the generated entry file
    python: str  # interpreter that runs it
    python_home: str  # sys.prefix of that interpreter (a venv, or the base install)
    env: Mapping[str, str]
    public_url: str
    health_url: str
    working_dir: str
    run_dir: str  # the service's own: where its server writes pid and control files
    identity: Identity
    # The process environment beneath `env`: the clean base and `pass_env` (never written
    # into a config file).
    base_env: Mapping[str, str]
    secrets: frozenset[str] = frozenset()  # values never to be shown
    provision: Provision = Provision()
    # (URL path, directory): the path under the prefix, from its `/`; the directory absolute.
    static: tuple[tuple[str, str], ...] = ()
    # What the backend looks for in the service's Python (Backend.VENV_FILES: its own
    # uWSGI, a pip-built mod_wsgi), by pattern: the path found, or "". Read before
    # rendering, so that renderers never look at the disk.
    found: Mapping[str, str] = field(default_factory=dict)

    @property
    def user(self) -> str:
        return self.identity.user

    @property
    def group(self) -> str:
        return self.identity.group

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def prefix(self) -> str:
        return self.config.prefix

    @property
    def module(self) -> str:
        return module_name(self.config.name)


@dataclass(frozen=True)
class Plan:
    name: str
    source: str  # the manifest's path, for messages
    backend: str
    host: str
    state: str  # absolute state directory
    front_port: int  # the one front door's port; 0 when each service listens itself
    base_port: int
    start_timeout: float
    services: tuple[ServicePlan, ...]
    host_info: Host
    trusted_proxies: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()  # shown before anything starts
    base_port_given: bool = False  # by `up --base-port`, not the manifest: `reload` keeps it
    # Where the plan is deployed: "local" (a private server root under the state dir, run by
    # wsgistack) or "host" (`install`: systemd runs the servers, the system's Apache or
    # nginx is the front end).
    target: str = "local"
    manifest_id: str = ""  # the manifest file, absolute: the owner recorded in the state
    access_log: str = "combined"  # [stack] access_log
    log_health: bool = False
    metrics: str = ""  # HOST:PORT of the stack's metrics endpoint ("": none)
    # Directories kept outside the state dir, by the name of the subdirectory they replace
    # (`install`: run/ in /run, logs/ in /var/log, data/ and venvs/ in /var/lib).
    dirs: Mapping[str, str] = field(default_factory=dict)
    tls: tuple[str, str] | None = None  # (cert, key) the front end serves HTTPS with
    tls_port: int = 0
    venv_files: tuple[str, ...] = ()  # the backend's VENV_FILES

    def found_again(self) -> Plan:
        """The plan with what the services' Pythons hold read again: after `up` has made
        their venvs."""
        return dataclasses.replace(self, services=tuple(
            dataclasses.replace(s, found=find_in(s.python_home, self.venv_files))
            for s in self.services))

    @property
    def root(self) -> bool:
        """Started as root: each service drops to its user, front ends to theirs."""
        return self.host_info.root

    @property
    def front_user(self) -> str:
        return self.host_info.front_user

    @property
    def secrets(self) -> frozenset[str]:
        return frozenset().union(*(s.secrets for s in self.services))

    def runs_as(self, svc: ServicePlan) -> tuple[str, str]:
        """(user, group) a process of `svc` is switched to: ("", "") when not started as
        root, where everything runs as whoever started it."""
        return (svc.user, svc.group) if self.root else ("", "")

    def path(self, *parts: str) -> str:
        return _under(self.state, self.dirs, parts)

    @property
    def front_ports(self) -> tuple[int, ...]:
        """The front door's ports: its own, and the TLS one when it serves HTTPS."""
        return (self.front_port, *((self.tls_port,) if self.tls else ()))

    def service(self, name: str) -> ServicePlan:
        return next(s for s in self.services if s.name == name)


def _under(state: str, dirs: Mapping[str, str], parts: tuple[str, ...]) -> str:
    """A path under the state dir, or under the directory `dirs` keeps its first part in."""
    if parts and parts[0] in dirs:
        return os.path.join(dirs[parts[0]], *parts[1:])
    return os.path.join(state, *parts)


def find_in(home: str, patterns: tuple[str, ...]) -> dict[str, str]:
    """For each glob pattern under `home` (a Python's prefix), the first file found ("" for
    none); under bin/ only an executable one counts."""
    found = {}
    for pattern in patterns:
        hits = sorted(p for p in glob.glob(os.path.join(home, pattern)) if os.path.isfile(p)
                      and (not pattern.startswith("bin/") or os.access(p, os.X_OK)))
        found[pattern] = hits[0] if hits else ""
    return found


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _ports(manifest: Manifest, first: int) -> list[int]:
    taken = {s.port for s in manifest.services if s.port}
    ports, candidate = [], first
    for svc in manifest.services:
        if svc.port:
            ports.append(svc.port)
            continue
        while candidate in taken:
            candidate += 1
        if candidate > 65535:
            raise ManifestError(manifest.path, "stack.base_port", f"{first} leaves no port "
                                f"below 65536 for service '{svc.name}'; choose a lower one")
        ports.append(candidate)
        taken.add(candidate)
    return ports


def venv_python(manifest: Manifest) -> str:
    if manifest.stack.venv_python:
        return manifest.stack.venv_python
    return DEBIAN_PYTHON if os.path.exists(DEBIAN_PYTHON) else getattr(
        sys, "_base_executable", sys.executable)


METRICS_OFFSET = 90  # the metrics endpoint's default port, from base_port


def exports_here(plan: Plan) -> bool:
    """Whether wsgistack runs the stack's exporter itself (a local stack), which alone
    reads what the servers tell of their workers (uWSGI's stats, nginx's stub_status)."""
    return bool(plan.metrics) and plan.target == "local"


def counts_requests(plan: Plan) -> bool:
    """Whether the entries write request metrics: where an exporter of ours reads them (a
    local stack; installed, beside the units (mod_wsgi's dirs by systemd-tmpfiles); in a pod,
    beside the server container)."""
    return exports_here(plan) or (bool(plan.metrics) and plan.target in ("host", "kubernetes"))


METRICS_PACKAGE = "prometheus_client"
# The stack's metrics exporter's name wherever it runs: `up`'s process, the installed unit
# (wsgistack-STACK-metrics.service), the pod's sidecar and its port.
EXPORTER = "metrics"


def metrics_address(manifest: Manifest) -> str:
    """`HOST:PORT` of the stack's metrics endpoint, "" when off."""
    given = manifest.stack.metrics
    if given == "off":
        return ""
    if not given:
        return f"127.0.0.1:{manifest.stack.base_port + METRICS_OFFSET}"
    host, sep, port = given.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ManifestError(manifest.path, "stack.metrics", f"{given!r} is not HOST:PORT "
                            "(e.g. \"127.0.0.1:9180\"), or \"off\"")
    return given


def _pinned(package: str) -> str:
    """The server package at the version wsgistack runs with, so every venv serves alike."""
    try:
        return f"{package}=={metadata.version(package)}"
    except metadata.PackageNotFoundError:
        return package


_FILE_FLAGS = {"-r": "--requirement", "--requirement": "--requirement",
               "-c": "--constraint", "--constraint": "--constraint"}


def pip_requirements(manifest: Manifest, svc: ServiceConfig) -> tuple[str, ...]:
    """The service's requirements as pip arguments, each file named by its absolute path as
    one `--requirement=PATH` (`-r FILE`, `-r` then `FILE`, `requirements_file`)."""
    given = [*svc.requirements, *(("-r", svc.requirements_file) if svc.requirements_file
                                  else ())]
    out: list[str] = []
    flag = ""
    for item in given:
        word, _, rest = item.strip().partition(" ")
        if flag:  # the file after a lone -r or -c
            word, rest, flag = flag, item.strip(), ""
        elif word in _FILE_FLAGS and not rest.strip():
            flag = _FILE_FLAGS[word]
            continue
        if word in _FILE_FLAGS:
            path = (manifest.root / rest.strip()).absolute()
            out.append(f"{_FILE_FLAGS[word]}={path}")
        else:
            out.append(item.strip())
    if flag:
        raise ManifestError(manifest.path, f"services.{svc.name}.requirements",
                            f"{flag} names no file: write \"-r requirements.txt\"")
    return tuple(out)


def _file_contents(requirement: str, manifest: Manifest, key: str) -> list[str]:
    """What a `--requirement=PATH` item resolves to: the file's lines, and those of the
    files it names in turn."""
    _flag, _, path = requirement.partition("=")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestError(manifest.path, key, f"cannot read {path}: {exc.strerror}; "
                            "requirement files are relative to the manifest") from None
    lines = [path, text]
    for line in text.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word in _FILE_FLAGS and rest.strip():
            nested = Path(path).parent / rest.strip()
            lines += _file_contents(f"{_FILE_FLAGS[word]}={nested}", manifest, key)
    return lines


def own_venv(manifest: Manifest, svc: ServiceConfig, server_packages: tuple[str, ...],
             venvs: str) -> tuple[str, tuple[str, ...]]:
    """(venv dir, packages) of a service's own venv: named by what its requirements resolve
    to (files read), so services asking for the same share one and any change makes a new
    one. The server package a backend needs (gunicorn, granian) is added to the same venv
    when first needed."""
    requirements = pip_requirements(manifest, svc)
    if manifest.stack.metrics != "off":  # the entry counts requests with it
        server_packages = (*server_packages, METRICS_PACKAGE)
    resolved = [venv_python(manifest), sorted(requirements)]
    for item in requirements:
        if item.startswith(("--requirement=", "--constraint=")):
            resolved += _file_contents(item, manifest, f"services.{svc.name}.requirements")
    key = hashlib.sha256(json.dumps(resolved).encode())
    packages = (*requirements, *(_pinned(p) for p in server_packages))
    return os.path.join(venvs, key.hexdigest()[:12]), packages


def interpreter(svc: ServiceConfig, root: Path, own: str = "") -> tuple[str, str]:
    """(python, python_home) for a service: its venv's, else the one running wsgistack."""
    if svc.venv or own:
        home = own or str((root / svc.venv).absolute())
        return os.path.join(home, "bin", "python"), home
    return sys.executable, sys.prefix


def substitute(text: str, variables: Mapping[str, str], where: str, key: str) -> str:
    if isinstance(variables, Variables):
        variables.where, variables.key = where, key
    try:
        return _Template(text).substitute(variables)
    except KeyError as exc:
        name = exc.args[0]
        if name.startswith("services."):
            names = sorted({k.split(".")[1] for k in variables if k.startswith("services.")})
            raise ManifestError(
                where, key, f"${{{name}}}: no such service or value (services: "
                f"{', '.join(names)}; values: url, internal_url, prefix)") from None
        raise ManifestError(
            where, key, f"unknown variable ${{{name}}} (known: "
            f"{', '.join(VARIABLES)}; write $$ for a literal $)") from None
    except ValueError as exc:
        raise ManifestError(where, key, f"{exc}; write $$ for a literal $") from None


def _provision(manifest: Manifest, svc: ServiceConfig, variables: Variables,
               venv: tuple[str, tuple[str, ...]] | None) -> Provision:
    where, key = manifest.path, f"services.{svc.name}"
    templates = tuple(
        (os.path.join(variables["state"], target),
         str((manifest.root / source).absolute()))
        for target, source in svc.templates.items())
    def commands(name: str, given: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
        return tuple(tuple(shlex.split(substitute(cmd, variables, where, f"{key}.{name}")))
                     for cmd in given)

    return Provision(
        venv_base=venv_python(manifest) if venv else "", packages=venv[1] if venv else (),
        data_dir=variables["data"], user=variables["user"], templates=templates,
        setup=commands("setup", svc.setup), after_up=commands("after_up", svc.after_up),
        variables=variables)


def _static(manifest: Manifest, svc: ServiceConfig, variables: Variables
            ) -> Iterator[tuple[str, str]]:
    for path, directory in svc.static.items():
        key = f"services.{svc.name}.static"
        if not path.startswith("/") or path.rstrip("/") == "" or any(
                c in path for c in ' "\'\\$;{}'):
            raise ManifestError(manifest.path, key, f"'{path}' is not a URL path under the "
                                "prefix; write it like \"/static\"")
        where = substitute(directory, variables, manifest.path, f"{key}.{path}")
        yield path.rstrip("/"), str((manifest.root / where).absolute())


def catalog(stack: str, backend: str, services: list[ServicePlan], metrics: str = "") -> str:
    """What the catalog app lists, passed to every service in its environment."""
    return json.dumps({
        "stack": stack,
        **({"metrics": f"http://{metrics}/metrics"} if metrics else {}),
        "services": [
            {"name": s.name, "prefix": s.prefix, "server": backend, "url": s.public_url,
             "health_url": s.health_url, "health_status": s.config.health_status,
             # The catalog must not count itself: its own health is asked by `up`.
             "self": s.config.app.startswith("wsgistack.apps.catalog")}
            for s in services
        ],
    }, sort_keys=True)


def _env(manifest: Manifest, svc: ServiceConfig, variables: Variables
         ) -> tuple[dict[str, str], set[str]]:
    """The service's env (env files first, the manifest's `env` over them) and its secret
    values."""
    key = f"services.{svc.name}"
    env: dict[str, str] = {}
    hidden: set[str] = set()
    for name in svc.env_files:
        pairs = secrets.read_env_file(manifest.root / name, manifest.path, f"{key}.env_files",
                                      variables.warnings)
        env.update(pairs)
        hidden.update(pairs.values())
    for k, v in svc.env.items():
        env[k] = substitute(v, variables, manifest.path, f"{key}.env.{k}")
        if secrets.secret_key(k, svc.secrets):
            hidden.add(env[k])
    return env, hidden


@dataclass(frozen=True)
class _Stack:
    """What every service's plan is decided against."""

    host: Host
    state: str
    public: str  # host in public URLs
    connect: str  # host the health checks connect to
    front_port: int
    front_url: str
    server_packages: tuple[str, ...]
    secrets: str  # where `${secret:NAME}` are kept: the stack's own state dir, always
    dirs: Mapping[str, str]  # as Plan.dirs
    target: str
    tls_port: int  # the front end's HTTPS port (0: none): public URLs are https there
    venv_files: tuple[str, ...]
    venvs: str  # where services' own venvs are made

    def path(self, *parts: str) -> str:
        return _under(self.state, self.dirs, parts)


def _addresses(manifest: Manifest, ports: list[int], where: _Stack) -> dict[str, str]:
    """`services.NAME.url`, `.internal_url` and `.prefix` of every service: what one service
    may know of another, decided before any of them is planned."""
    out = {}
    for svc, port in zip(manifest.services, ports, strict=True):
        listen = where.front_port or port
        public = (f"https://{where.public}:{where.tls_port}" if where.tls_port
                  else f"http://{where.public}:{listen}")
        out.update({
            f"services.{svc.name}.url": public + svc.prefix,
            f"services.{svc.name}.internal_url": f"http://{where.connect}:{listen}{svc.prefix}",
            f"services.{svc.name}.prefix": svc.prefix,
        })
    return out


def _socket(where: _Stack, name: str) -> str:
    """A service's socket behind a front end. Installed, in the service's own runtime dir
    (systemd makes it for the app's user; the front end's group may only pass through)."""
    if where.target == "host":
        return where.path("run", name, f"{name}.sock")
    return where.path("run", f"{name}.sock")


def _service(manifest: Manifest, svc: ServiceConfig, port: int, where: _Stack,
             warnings: list[str], addresses: Mapping[str, str]) -> ServicePlan:
    """One service's plan: interpreter, user, variables, env and secrets, URLs, paths."""
    host, state = where.host, where.state
    own = f"services.{svc.name}."
    venv = (own_venv(manifest, svc, where.server_packages, where.venvs)
            if (svc.requirements or svc.requirements_file) and not svc.venv else None)
    python, home = interpreter(svc, manifest.root, venv[0] if venv else "")
    who = identity(host, svc.user or manifest.stack.user, svc.group or manifest.stack.group,
                   manifest.path, f"services.{svc.name}" if svc.user or svc.group else "stack")
    if who.root and host.root:
        warnings.append(f"service '{svc.name}' runs as root ({manifest.path}: user = "
                        "\"root\"): a flaw in the app is a flaw in the whole machine")
    variables = Variables({
        **addresses, "name": svc.name, "stack": manifest.stack.name, "state": state,
        "data": where.path("data", svc.name), "manifest_dir": str(manifest.root),
        "url": addresses[own + "url"], "internal_url": addresses[own + "internal_url"],
        "front_url": where.front_url, "prefix": svc.prefix, "user": who.user,
        "group": who.group, "venv": home, "python": python,
    }, str(manifest.root), where.secrets)
    env, hidden = _env(manifest, svc, variables)
    variables.add_env(env)
    provision = _provision(manifest, svc, variables, venv)
    static = tuple(_static(manifest, svc, variables))
    warnings += [w for w in variables.warnings if w not in warnings]
    base = host.base_env(who.home)
    base.update({k: host.environ[k] for k in svc.pass_env if k in host.environ})
    return ServicePlan(
        config=svc,
        port=port,
        socket=_socket(where, svc.name) if where.front_port else "",
        entry=os.path.join(state, "entries", svc.name, module_name(svc.name) + ".py"),
        python=python,
        python_home=home,
        env=env,
        public_url=f"{variables['url']}/",
        health_url=variables["internal_url"] + svc.health_path,
        working_dir=str((manifest.root / svc.working_dir).absolute()),
        run_dir=where.path("run", svc.name),
        identity=who,
        base_env=base,
        secrets=frozenset(hidden | variables.secrets),
        provision=provision,
        static=static,
        found=find_in(home, where.venv_files),
    )


@dataclass(frozen=True)
class Target:
    """Where a plan is deployed, when not in the private server root under the state dir
    (`install`: see targets/host.py)."""

    name: str = "local"
    state: str = ""  # absolute; "" : the manifest's state dir
    dirs: Mapping[str, str] = field(default_factory=dict)
    port: int = 0  # the front door's port instead of base_port (0: base_port)
    tls: tuple[str, str] | None = None  # (cert, key)
    tls_port: int = 0
    secrets: str = ""  # where `${secret:NAME}` are kept ("": STATE/secrets)


LOCAL = Target()


class BackendTraits(Protocol):
    """What the plan needs to know of a backend (backends.base.Backend has it all): the
    backend is handed in, the model imports none."""

    ID: str
    FRONT_END: bool
    SERVICE_PACKAGES: tuple[str, ...]
    VENV_FILES: tuple[str, ...]


def _where(manifest: Manifest, backend: BackendTraits, state: Path | None,
           host: Host | None, target: Target = LOCAL) -> tuple[_Stack, list[int]]:
    stack = manifest.stack
    front_end = backend.FRONT_END
    public = _url_host(stack.public_host or _connect_host(stack.host))
    port = target.port or stack.base_port
    state_dir = target.state or str((state or manifest.state_path).absolute())
    where = _Stack(
        host=host or Host.read(), state=state_dir,
        public=public, connect=_url_host(_connect_host(stack.host)),
        front_port=port if front_end else 0,
        front_url=f"http://{public}:{port}",  # the front end, or the first service
        server_packages=backend.SERVICE_PACKAGES,
        secrets=target.secrets or (os.path.join(target.state, "secrets") if target.state
                                   else str(manifest.state_path / "secrets")),
        dirs=target.dirs, target=target.name, tls_port=target.tls_port if target.tls else 0,
        venv_files=backend.VENV_FILES,
        # The manifest's own, also for its `check` and `serve` stacks: one venv per set of
        # requirements, not one per command.
        venvs=(_under(target.state, target.dirs, ("venvs",)) if target.state
               else str(manifest.state_path / "venvs")))
    ports = [0] * len(manifest.services) if front_end else _ports(manifest, port)
    return where, ports


def build(manifest: Manifest, backend: BackendTraits, state: Path | None = None,
          host: Host | None = None, whole: Manifest | None = None,
          target: Target = LOCAL) -> Plan:
    """Decide ports, sockets, paths, users and URLs for `manifest` deployed with `backend`.
    `whole`: the stack `manifest` was cut from (one service run alone by `check` or
    `serve`), where `${services.NAME...}` find the others, as its own `up` would place them.
    `target`: where it is deployed, when not under the state dir."""
    stack = manifest.stack
    where, ports = _where(manifest, backend, state, host, target)
    warnings: list[str] = []
    addresses = _addresses(manifest, ports, where)
    if whole is not None:
        full, full_ports = _where(whole, backend, None, where.host)
        addresses = {**_addresses(whole, full_ports, full), **addresses}
    services = [_service(manifest, svc, port, where, warnings, addresses)
                for svc, port in zip(manifest.services, ports, strict=True)]
    listed = catalog(stack.name, backend.ID, services,
                     metrics_address(manifest) if target.name != "kubernetes" else "")
    services = [dataclasses.replace(s, env={**s.env, CATALOG_ENV: listed}) for s in services]
    return Plan(
        name=stack.name, source=manifest.path, manifest_id=manifest.identity,
        access_log=stack.access_log, log_health=stack.log_health,
        metrics=metrics_address(manifest),
        backend=backend.ID, host=stack.host,
        state=where.state, front_port=where.front_port, base_port=stack.base_port,
        start_timeout=stack.start_timeout,
        services=tuple(services), host_info=where.host,
        trusted_proxies=tuple(str(ipaddress.ip_network(p, strict=False))
                              for p in stack.trusted_proxies),
        warnings=tuple(warnings), target=target.name, dirs=target.dirs, tls=target.tls,
        tls_port=where.tls_port, venv_files=where.venv_files,
    )
