"""Server backends, registered by id. Each module renders pure text from a Plan."""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
from typing import cast

from wsgistack.backends import apache_uwsgi, granian, gunicorn, mod_wsgi, nginx_uwsgi, uwsgi
from wsgistack.backends.base import Backend, server_name
from wsgistack.errors import ManifestError, did_you_mean
from wsgistack.manifest import Manifest
from wsgistack.plan import Plan

_MODULES = (granian, gunicorn, uwsgi, mod_wsgi, apache_uwsgi, nginx_uwsgi)
BACKENDS: dict[str, Backend] = {cast(Backend, m).ID: cast(Backend, m) for m in _MODULES}


def get(backend_id: str) -> Backend:
    return BACKENDS[backend_id]


def resolve(manifest: Manifest, given: str | None = None) -> Backend:
    """The backend a command runs: the one given (by --backend, which argparse checked),
    else the manifest's, which is checked here: the manifest knows no servers."""
    name = given or manifest.stack.backend
    if name not in BACKENDS:
        raise ManifestError(
            manifest.path, "stack.backend",
            f"unknown backend '{name}'" + did_you_mean(name, BACKENDS)
            + f" (known: {', '.join(BACKENDS)})")
    return BACKENDS[name]


def exposure_warnings(plan: Plan) -> list[str]:
    """What to tell before a stack listens beyond this machine on a server that slow clients
    can starve, or that lets broken request framing reach the app."""
    backend = get(plan.backend)
    if (backend.HOLDS_SLOW_CLIENTS and not backend.FRAMING_GAP) or _loopback(plan.host):
        return []
    warnings = []
    if not backend.HOLDS_SLOW_CLIENTS:
        warnings.append(
            f"{plan.backend} listens on {plan.host}, beyond this machine, but cannot hold off "
            "slow clients (each one sending its request a byte at a time holds a worker): put "
            "nginx or HAProxy in front, or use the nginx+uwsgi backend")
    if backend.FRAMING_GAP:
        warnings.append(
            f"{plan.backend} listens on {plan.host}, beyond this machine, and lets malformed "
            f"request framing reach the app ({backend.FRAMING_GAP}): put HAProxy or nginx in "
            "front, or use gunicorn or nginx+uwsgi (README, \"Malformed requests\")")
    return warnings


def _loopback(host: str) -> bool:
    """Whether `host` is only this machine; a name that does not resolve counts (the
    preflight refuses it in its own words)."""
    try:
        found = {str(a[4][0]) for a in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)}
    except (OSError, UnicodeError):
        return True
    return all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in found)


def servers(plan: Plan) -> dict[str, str]:
    """Per service, the server binary that runs its app: what `status --json` reports."""
    procs = get(plan.backend).command(plan)
    found = {}
    for svc in plan.services:
        proc = next((p for p in procs if p.name == svc.name), None) or next(
            p for p in procs if svc.name in p.serves)
        # `python -m granian`: the module names the server, the interpreter runs it.
        name = server_name(proc.argv)
        found[svc.name] = name if name != proc.argv[0] else os.path.realpath(
            shutil.which(name) or name)
        if plan.backend == mod_wsgi.ID:  # Apache hosts the module, the module embeds Python
            found[svc.name] += f" + {mod_wsgi.module_path(plan)}"
    return found
