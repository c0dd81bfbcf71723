"""The resolved deployment: every port, path and URL decided, before anything is written.

Backends render from a :class:`Plan` only; nothing downstream reads the manifest's raw data.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from wsgistack.apps.catalog import ENV_VAR as CATALOG_ENV
from wsgistack.entry import module_name
from wsgistack.manifest import Manifest, ServiceConfig


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
    start_timeout: float
    services: tuple[ServicePlan, ...]

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


def interpreter(svc: ServiceConfig, root: Path) -> tuple[str, str]:
    """(python, python_home) for a service: its venv's, else the one running wsgistack."""
    if svc.venv:
        home = str((root / svc.venv).absolute())
        return os.path.join(home, "bin", "python"), home
    return sys.executable, sys.prefix


def build(manifest: Manifest, backend: str, state: Path | None = None) -> Plan:
    """Decide ports, sockets, paths and URLs for `manifest` deployed with `backend`."""
    from wsgistack.backends import get

    front_end = get(backend).FRONT_END
    stack = manifest.stack
    state_dir = str((state or manifest.state_path).absolute())
    public = _url_host(stack.public_host or _connect_host(stack.host))
    connect = _url_host(_connect_host(stack.host))
    front_port = stack.base_port if front_end else 0
    ports = [0] * len(manifest.services) if front_end else _ports(manifest, stack.base_port)
    drafts = []
    for svc, port in zip(manifest.services, ports, strict=False):
        listen = front_port or port
        python, home = interpreter(svc, manifest.root)
        drafts.append((svc, port, listen, python, home))
    catalog = json.dumps({
        "stack": stack.name,
        "services": [
            {"name": svc.name, "prefix": svc.prefix, "server": backend,
             "url": f"http://{public}:{listen}{svc.prefix}/",
             "health_url": f"http://{connect}:{listen}{svc.prefix}{svc.health_path}",
             "health_status": svc.health_status,
             # The catalog must not count itself: its own health is asked by `up`.
             "self": svc.app.startswith("wsgistack.apps.catalog")}
            for svc, _, listen, _, _ in drafts
        ],
    }, sort_keys=True)
    services = []
    for svc, port, listen, python, home in drafts:
        env = {**svc.env, CATALOG_ENV: catalog}
        services.append(ServicePlan(
            config=svc,
            port=port,
            socket=os.path.join(state_dir, "run", f"{svc.name}.sock") if front_end else "",
            entry=os.path.join(state_dir, "entries", module_name(svc.name) + ".py"),
            python=python,
            python_home=home,
            env=env,
            public_url=f"http://{public}:{listen}{svc.prefix}/",
            health_url=f"http://{connect}:{listen}{svc.prefix}{svc.health_path}",
            working_dir=str((manifest.root / svc.working_dir).absolute()),
        ))
    return Plan(
        name=stack.name, source=manifest.path, backend=backend, host=stack.host,
        state=state_dir, front_port=front_port, start_timeout=stack.start_timeout,
        services=tuple(services),
    )
