"""Live: Keystone and Placement from PyPI, deployed from examples/openstack under every
backend, behind one front door at /identity and /placement.

The first `up` creates the service venv (pip) and runs the setup commands; every later one
reuses both. Marked `openstack`: deselect with `-m "not openstack"` for a quick run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Stack, alive, free_port
from wsgistack.backends import BACKENDS
from wsgistack.lifecycle import processes

pytestmark = [pytest.mark.live, pytest.mark.openstack]
EXAMPLE = Path(__file__).parent.parent / "examples" / "openstack"
PLACEMENT = {"x-auth-token": "admin", "OpenStack-API-Version": "placement latest"}


def call(url: str, method: str = "GET", body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, Message, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={
        "Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            return resp.status, resp.headers, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read().decode(errors="replace")


@pytest.fixture(scope="module")
def openstack() -> Iterator[Stack]:
    # Under /tmp, mode 0755: Apache's worker user must reach the venv and the data.
    root = Path(tempfile.mkdtemp(prefix="wsgistack-openstack-", dir="/tmp"))
    root.chmod(0o755)
    for path in EXAMPLE.iterdir():
        shutil.copy(path, root / path.name)
    manifest = root / "wsgistack.toml"
    text = re.sub(r"(?m)^base_port = \d+", f"base_port = {free_port()}", manifest.read_text())
    manifest.write_text(text)
    stack = Stack(root)
    yield stack
    stack.cli("down")
    shutil.rmtree(root, ignore_errors=True)


def token(identity: str) -> str:
    auth = {"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": "admin", "domain": {"id": "default"}, "password": "s3cr3t"}}},
        "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}
    status, headers, body = call(f"{identity}v3/auth/tokens", "POST", auth)
    assert status == 201, body
    subject = headers.get("X-Subject-Token")
    assert subject
    return subject


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_keystone_and_placement(openstack: Stack, backend: str) -> None:
    started = time.monotonic()
    res = openstack.cli("up", "--detach", "--backend", backend)
    assert res.code == 0, res.err
    print(f"\n{backend}: up in {time.monotonic() - started:.1f}s")
    pids = openstack.pids()
    try:
        urls = {s["name"]: s["url"] for s in json.loads(_catalog(openstack))["services"]}
        identity, placement = urls["keystone"], urls["placement"]
        assert identity.endswith("/identity/") and placement.endswith("/placement/")
        if BACKENDS[backend].FRONT_END:  # one front door
            assert identity.rsplit("/identity/", 1)[0] == placement.rsplit("/placement/", 1)[0]

        status, _, doc = call(f"{identity}v3")
        assert status == 200, doc
        assert doc["version"]["links"][0]["href"] == f"{identity}v3/"
        subject = token(identity)
        status, _, doc = call(f"{identity}v3/projects", headers={"X-Auth-Token": subject})
        assert status == 200, doc
        assert "admin" in [p["name"] for p in doc["projects"]]

        status, _, doc = call(placement)
        assert status == 200, doc
        assert doc["versions"][0]["id"] == "v1.0"
        name = f"rp-{backend.replace('+', '-')}-{uuid.uuid4().hex[:8]}"
        status, _, doc = call(f"{placement}resource_providers", "POST", {"name": name},
                              PLACEMENT)
        assert status == 200, doc
        assert doc["links"][0]["href"].startswith("/placement/resource_providers/")
        status, _, doc = call(f"{placement}resource_providers?name={name}", headers=PLACEMENT)
        assert status == 200, doc
        assert [rp["name"] for rp in doc["resource_providers"]] == [name]

        if os.geteuid() == 0:  # only the front ends' masters stay root, never an app
            root, users = _root_processes(pids)
            assert root <= {"front end"} and "wsgistack" in users, (root, users)
            assert users <= {"root", "www-data", "wsgistack"}
        # The admin password (a secret key in env) is in no log and nowhere on screen.
        logs = openstack.root / ".wsgistack" / "logs"
        assert "s3cr3t" not in (logs / "keystone-setup.log").read_text()
        assert "s3cr3t" not in res.out + res.err
    finally:
        assert openstack.cli("down").code == 0
    assert not [p for p in pids if alive(p)]


def _root_processes(pids: list[int]) -> tuple[set[str], set[str]]:
    """(programs that run as root, users of every process of the stack, children included).
    Only the front ends' masters (Apache, nginx: the leaders) may be root."""
    root, users = set(), set()
    todo = [(pid, True) for pid in pids]
    while todo:
        pid, leader = todo.pop()
        todo += [(child, False) for child in processes.child_pids(pid)]
        user = processes.owner(pid)
        users.add(user)
        if user == "root":
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            root.add(name if not (leader and name in ("apache2", "nginx")) else "front end")
    return root, users


def _catalog(stack: Stack) -> str:
    state = json.loads((stack.root / ".wsgistack" / "state.json").read_text())
    front = next(s["url"] for s in state["services"] if s["name"] == "catalog")
    with urllib.request.urlopen(front, timeout=10) as resp:
        return resp.read().decode()


def test_second_up_reuses_venv_and_setup(openstack: Stack) -> None:
    openstack.cli("up", "--detach", "--backend", "granian")  # whatever the order, once done
    openstack.cli("down")
    started = time.monotonic()
    res = openstack.cli("up", "--detach", "--backend", "granian")
    took = time.monotonic() - started
    assert res.code == 0, res.err
    assert openstack.cli("down").code == 0
    print(f"\nsecond up: {took:.1f}s")
    assert "installing" not in res.err and "setup command" not in res.err, res.err
    assert (openstack.root / ".wsgistack" / "logs" / "keystone-setup.log").read_text().count(
        "bootstrap") >= 1
