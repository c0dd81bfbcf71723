"""The resolved deployment: every port, path and URL decided, before anything is written.

Backends render from a :class:`Plan` only; nothing downstream reads the manifest's raw data.
"""

from __future__ import annotations

import dataclasses
import grp
import hashlib
import json
import os
import pwd
import shlex
import string
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from wsgistack.apps.catalog import ENV_VAR as CATALOG_ENV
from wsgistack.entry import module_name
from wsgistack.errors import ManifestError
from wsgistack.manifest import VARIABLES, Manifest, ServiceConfig

DEBIAN_PYTHON = "/usr/bin/python3"


@dataclass(frozen=True)
class Provision:
    """What a service needs before its first start (see provision.py)."""

    venv_base: str = ""  # interpreter that creates the service's own venv ("" : none created)
    packages: tuple[str, ...] = ()  # what pip installs into it
    data_dir: str = ""
    user: str = ""  # who the app runs as, and so who owns data_dir
    templates: tuple[tuple[str, str], ...] = ()  # (target, template), absolute
    setup: tuple[tuple[str, ...], ...] = ()
    variables: Mapping[str, str] = field(default_factory=dict)


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
    provision: Provision = Provision()

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
    base_port_given: bool = False  # by `up --base-port`, not the manifest: `reload` keeps it

    def path(self, *parts: str) -> str:
        return os.path.join(self.state, *parts)

    def service(self, name: str) -> ServicePlan:
        return next(s for s in self.services if s.name == name)


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
        ports.append(candidate)
        taken.add(candidate)
    return ports


def venv_python(manifest: Manifest) -> str:
    if manifest.stack.venv_python:
        return manifest.stack.venv_python
    return DEBIAN_PYTHON if os.path.exists(DEBIAN_PYTHON) else getattr(
        sys, "_base_executable", sys.executable)


def _pinned(package: str) -> str:
    """The server package at the version wsgistack runs with, so every venv serves alike."""
    try:
        return f"{package}=={metadata.version(package)}"
    except metadata.PackageNotFoundError:
        return package


def own_venv(manifest: Manifest, svc: ServiceConfig, server_packages: tuple[str, ...],
             state: str) -> tuple[str, tuple[str, ...]]:
    """(venv dir, packages) of a service's own venv: named by its requirements, so services
    with the same list share one and a changed list makes a new one. The server package a
    backend needs (gunicorn, granian) is added to the same venv when first needed."""
    key = hashlib.sha256(json.dumps([venv_python(manifest), sorted(svc.requirements)]).encode())
    packages = (*svc.requirements, *(_pinned(p) for p in server_packages))
    return os.path.join(state, "venvs", key.hexdigest()[:12]), packages


def interpreter(svc: ServiceConfig, root: Path, own: str = "") -> tuple[str, str]:
    """(python, python_home) for a service: its venv's, else the one running wsgistack."""
    if svc.venv or own:
        home = own or str((root / svc.venv).absolute())
        return os.path.join(home, "bin", "python"), home
    return sys.executable, sys.prefix


def app_user(as_worker: bool) -> tuple[str, str]:
    from wsgistack.backends.base import worker_user

    pw = pwd.getpwnam(worker_user()) if as_worker and worker_user() else pwd.getpwuid(os.getuid())
    return pw.pw_name, grp.getgrgid(pw.pw_gid).gr_name


def substitute(text: str, variables: Mapping[str, str], where: str, key: str) -> str:
    try:
        return string.Template(text).substitute(variables)
    except KeyError as exc:
        raise ManifestError(
            where, key, f"unknown variable ${{{exc.args[0]}}} (known: "
            f"{', '.join(VARIABLES)}; write $$ for a literal $)") from None
    except ValueError as exc:
        raise ManifestError(where, key, f"{exc}; write $$ for a literal $") from None


def _provision(manifest: Manifest, svc: ServiceConfig, variables: Mapping[str, str],
               venv: tuple[str, tuple[str, ...]] | None) -> Provision:
    where, key = manifest.path, f"services.{svc.name}"
    templates = tuple(
        (os.path.join(variables["state"], target),
         str((manifest.root / source).absolute()))
        for target, source in svc.templates.items())
    setup = tuple(
        tuple(shlex.split(substitute(cmd, variables, where, f"{key}.setup")))
        for cmd in svc.setup)
    return Provision(
        venv_base=venv_python(manifest) if venv else "", packages=venv[1] if venv else (),
        data_dir=variables["data"], user=variables["user"], templates=templates,
        setup=setup, variables=variables)


def _catalog(stack: str, backend: str, services: list[ServicePlan]) -> str:
    """What the catalog app lists, passed to every service in its environment."""
    return json.dumps({
        "stack": stack,
        "services": [
            {"name": s.name, "prefix": s.prefix, "server": backend, "url": s.public_url,
             "health_url": s.health_url, "health_status": s.config.health_status,
             # The catalog must not count itself: its own health is asked by `up`.
             "self": s.config.app.startswith("wsgistack.apps.catalog")}
            for s in services
        ],
    }, sort_keys=True)


def build(manifest: Manifest, backend: str, state: Path | None = None) -> Plan:
    """Decide ports, sockets, paths and URLs for `manifest` deployed with `backend`."""
    from wsgistack.backends import get

    server = get(backend)
    front_end = server.FRONT_END
    user, group = app_user(server.APP_AS_WORKER_USER)
    stack = manifest.stack
    state_dir = str((state or manifest.state_path).absolute())
    public = _url_host(stack.public_host or _connect_host(stack.host))
    connect = _url_host(_connect_host(stack.host))
    front_port = stack.base_port if front_end else 0
    front_url = f"http://{public}:{stack.base_port}"  # the front end, or the first service
    ports = [0] * len(manifest.services) if front_end else _ports(manifest, stack.base_port)
    services = []
    for svc, port in zip(manifest.services, ports, strict=False):
        listen = front_port or port
        venv = (own_venv(manifest, svc, server.SERVICE_PACKAGES, state_dir)
                if svc.requirements and not svc.venv else None)
        python, home = interpreter(svc, manifest.root, venv[0] if venv else "")
        variables = {
            "name": svc.name, "state": state_dir,
            "data": os.path.join(state_dir, "data", svc.name), "manifest_dir": str(manifest.root),
            "url": f"http://{public}:{listen}{svc.prefix}", "front_url": front_url,
            "prefix": svc.prefix, "user": user, "group": group, "venv": home, "python": python,
        }
        services.append(ServicePlan(
            config=svc,
            port=port,
            socket=os.path.join(state_dir, "run", f"{svc.name}.sock") if front_end else "",
            entry=os.path.join(state_dir, "entries", module_name(svc.name) + ".py"),
            python=python,
            python_home=home,
            env={k: substitute(v, variables, manifest.path, f"services.{svc.name}.env.{k}")
                 for k, v in svc.env.items()},
            public_url=f"{variables['url']}/",
            health_url=f"http://{connect}:{listen}{svc.prefix}{svc.health_path}",
            working_dir=str((manifest.root / svc.working_dir).absolute()),
            provision=_provision(manifest, svc, variables, venv),
        ))
    catalog = _catalog(stack.name, backend, services)
    services = [dataclasses.replace(s, env={**s.env, CATALOG_ENV: catalog}) for s in services]
    return Plan(
        name=stack.name, source=manifest.path, backend=backend, host=stack.host,
        state=state_dir, front_port=front_port, base_port=stack.base_port,
        start_timeout=stack.start_timeout,
        services=tuple(services),
    )
