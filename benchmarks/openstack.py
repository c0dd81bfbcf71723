"""Placement `GET /` and Keystone token validation, with examples/openstack deployed by
wsgistack under each backend. Its venv and setup are kept between runs in a directory the
front ends' worker user can reach, so only the first run pays for pip."""

from __future__ import annotations

import json
import re
import shutil
import urllib.request
from pathlib import Path

from benchmarks import servers, wrk
from wsgistack.lifecycle.preflight import free_ports

EXAMPLE = servers.ROOT / "examples" / "openstack"
HOME = Path("/var/tmp/wsgistack-bench-openstack")
AUTH = {"auth": {
    "identity": {"methods": ["password"], "password": {"user": {
        "name": "admin", "domain": {"id": "default"}, "password": "s3cr3t"}}},
    "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}


def _token(identity: str) -> str:
    req = urllib.request.Request(f"{identity}/v3/auth/tokens", data=json.dumps(AUTH).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return str(resp.headers["X-Subject-Token"])


def _prepare() -> None:
    HOME.mkdir(parents=True, exist_ok=True)
    HOME.chmod(0o755)
    for path in EXAMPLE.iterdir():
        shutil.copy(path, HOME / path.name)
    manifest = HOME / "wsgistack.toml"
    manifest.write_text(re.sub(r"(?m)^base_port = \d+", f"base_port = {free_ports()}",
                               manifest.read_text()))


def run(duration: float, connections: int, backends: list[str]) -> list[list[str]]:
    _prepare()
    rows = []
    for backend in backends:
        res = servers.wsgistack_cli("up", "--detach", "--backend", backend, cwd=HOME)
        if res.returncode != 0:
            rows.append([backend, "-", "-", res.stderr.strip().splitlines()[-1]])
            continue
        try:
            urls = servers.running_stack(HOME)[0]
            token = _token(urls["keystone"])
            placement = wrk.run(urls["placement"] + "/", duration, connections)
            validate = wrk.run(urls["keystone"] + "/v3/auth/tokens", duration, connections,
                               headers={"X-Auth-Token": token, "X-Subject-Token": token})
            rows.append([backend, f"{placement.rps:,.0f}", f"{validate.rps:,.0f}",
                         f"{placement.errors + validate.errors} errors"])
        finally:
            servers.wsgistack_cli("down", cwd=HOME)
        print(f"  openstack {backend}: {rows[-1]}", flush=True)
    return rows
