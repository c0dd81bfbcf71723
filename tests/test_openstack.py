"""Live: Keystone, Placement and Glance from PyPI, deployed from examples/openstack under
every backend, behind one front door at /identity, /placement and /image; Placement and
Glance take Keystone tokens and are registered in its catalog by Keystone's `after_up`.

The first `up` creates the service venv (pip) and runs the setup commands; every later one
reuses both. Marked `openstack`: deselect with `-m "not openstack"` for a quick run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Stack, alive, free_port
from wsgistack.backends import BACKENDS
from wsgistack.lifecycle import processes

pytestmark = [pytest.mark.live, pytest.mark.openstack]
EXAMPLE = Path(__file__).parent.parent / "examples" / "openstack"
PLACEMENT = {"OpenStack-API-Version": "placement latest"}
IMAGE_SIZE = 5 * 1024 * 1024


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


def token(identity: str) -> tuple[str, dict[str, dict[str, str]]]:
    """(an admin token, the catalog that came with it: {type: {interface: url}})."""
    auth = {"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": "admin", "domain": {"id": "default"}, "password": "s3cr3t"}}},
        "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}
    status, headers, body = call(f"{identity}v3/auth/tokens", "POST", auth)
    assert status == 201, body
    subject = headers.get("X-Subject-Token")
    assert subject
    catalog = {entry["type"]: {e["interface"]: e["url"] for e in entry["endpoints"]}
               for entry in body["token"]["catalog"]}
    return subject, catalog


OPENSTACK = Path(sys.executable).parent / "openstack"
WORKLOAD_CLIENTS, WORKLOAD_ROUNDS = 4, 34  # x 3 calls: 408 Keystone writes, bounded


def keystone_workload(identity: str) -> tuple[int, list[str]]:
    """Concurrent clients creating, updating and deleting projects, as a client workload
    does: (calls made, what failed)."""
    subject, _ = token(identity)
    auth = {"X-Auth-Token": subject}
    failed: list[str] = []

    def client(n: int) -> int:
        calls = 0
        for i in range(WORKLOAD_ROUNDS):
            status, _, doc = call(f"{identity}v3/projects", "POST", {"project": {
                "name": f"wl-{n}-{i}-{uuid.uuid4().hex[:6]}", "domain_id": "default"}}, auth)
            calls += 1
            if status != 201:
                failed.append(f"create: {status} {str(doc)[:200]}")
                continue
            project = f"{identity}v3/projects/{doc['project']['id']}"
            for method, body, want in (("PATCH", {"project": {"description": "x"}}, 200),
                                       ("DELETE", None, 204)):
                status, _, doc = call(project, method, body, auth)
                calls += 1
                if status != want:
                    failed.append(f"{method}: {status} {str(doc)[:200]}")
        return calls

    with ThreadPoolExecutor(WORKLOAD_CLIENTS) as pool:
        calls = sum(pool.map(client, range(WORKLOAD_CLIENTS)))
    return calls, failed


def operator_commands(identity: str, backend: str) -> None:
    """What an operator types, with python-openstackclient and osc-placement, as admin."""
    env = {**os.environ, "OS_AUTH_URL": f"{identity}v3", "OS_USERNAME": "admin",
           "OS_PASSWORD": "s3cr3t", "OS_PROJECT_NAME": "admin", "OS_USER_DOMAIN_ID": "default",
           "OS_PROJECT_DOMAIN_ID": "default", "OS_IDENTITY_API_VERSION": "3",
           "OS_REGION_NAME": "RegionOne"}

    def osc(*args: str) -> Any:
        return osc_output(args, subprocess.run([str(OPENSTACK), *args], env=env,
                                               capture_output=True, text=True, timeout=120,
                                               check=False))

    assert osc("token", "issue", "-f", "json")["project_id"]
    catalog = {e["type"]: e["endpoints"] for e in osc("catalog", "list", "-f", "json")}
    for kind in ("identity", "placement", "image"):
        interfaces = {e["interface"] for e in catalog[kind]}
        assert {"public", "internal"} <= interfaces, (kind, catalog[kind])
    tag = f"{backend.replace('+', '-')}-{uuid.uuid4().hex[:6]}"
    project = osc("project", "create", f"p-{tag}", "-f", "json")["id"]
    user = osc("user", "create", "--project", project, "--password", "pw-" + tag, f"u-{tag}",
               "-f", "json")["id"]
    osc("role", "add", "--project", project, "--user", user, "member")
    roles = osc("role", "assignment", "list", "--user", user, "--project", project, "--names",
                "-f", "json")
    assert [r["role"] for r in roles] == ["member"]
    cred = osc("application", "credential", "create", f"ac-{tag}", "-f", "json")
    assert cred["secret"]
    osc("application", "credential", "delete", f"ac-{tag}")
    osc("user", "delete", user)
    osc("project", "delete", project)

    rp = osc("resource", "provider", "create", f"rp-{tag}", "-f", "json")["uuid"]
    assert rp in [r["uuid"] for r in osc("resource", "provider", "list", "-f", "json")]
    assert osc("resource", "provider", "show", rp, "-f", "json")["name"] == f"rp-{tag}"
    inventory = osc("resource", "provider", "inventory", "set", rp, "--resource", "VCPU=8",
                    "--resource", "MEMORY_MB=4096", "-f", "json")
    assert {i["resource_class"] for i in inventory} == {"VCPU", "MEMORY_MB"}
    traits = osc("--os-placement-api-version", "1.6", "resource", "provider", "trait", "set",
                 rp, "--trait", "HW_CPU_X86_AVX2", "-f", "json")
    assert [t["name"] for t in traits] == ["HW_CPU_X86_AVX2"]
    for version in ("1.10", "1.29", "1.39"):
        found = osc("--os-placement-api-version", version, "allocation", "candidate", "list",
                    "--resource", "VCPU=2", "-f", "json")
        assert rp in {c["resource provider"] for c in found}, (version, found)
    usage = osc("resource", "provider", "usage", "show", rp, "-f", "json")
    assert {u["resource_class"]: u["usage"] for u in usage} == {"VCPU": 0, "MEMORY_MB": 0}
    # The internal endpoints answer too.
    assert osc("--os-interface", "internal", "resource", "provider", "show", rp, "-f",
               "json")["uuid"] == rp
    osc("resource", "provider", "delete", rp)

    disk = Path(tempfile.mkdtemp(prefix="wsgistack-osc-")) / "disk.img"
    disk.write_bytes(os.urandom(1024 * 1024))
    try:
        image = osc("image", "create", "--disk-format", "raw", "--container-format", "bare",
                    "--file", str(disk), f"img-{tag}", "-f", "json")
        assert (image["status"], image["size"]) == ("active", 1024 * 1024), image
        assert f"img-{tag}" in [i["name"] for i in osc("image", "list", "-f", "json")]
        osc("image", "delete", image["id"])
    finally:
        shutil.rmtree(disk.parent)


def abort_upload(url: str, subject: str, size: int) -> None:
    """Send a third of a `size`-byte body, then close; wait until the server has ended the
    request (it closes its side)."""
    parts = urllib.parse.urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(f"PUT {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                     f"X-Auth-Token: {subject}\r\nContent-Type: application/octet-stream\r\n"
                     f"Content-Length: {size}\r\n\r\n".encode() + os.urandom(size // 3))
        sock.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError):
            while sock.recv(65536):
                pass


def upload_image(image: str, subject: str, data: Path) -> tuple[str, str]:
    """Create an image and upload `data` into it as curl does above 1 MiB: chunked, with
    `Expect: 100-continue`. Returns curl's verbose output."""
    status, _, doc = call(f"{image}/v2/images", "POST", {
        "name": "wsgistack-test", "disk_format": "raw", "container_format": "bare"},
        {"X-Auth-Token": subject})
    assert status == 201, doc
    done = subprocess.run(
        ["curl", "-sS", "-v", "--max-time", "60", "-X", "PUT", "-o", "/dev/null",
         "-w", "%{http_code}", "-H", f"X-Auth-Token: {subject}",
         "-H", "Content-Type: application/octet-stream", "-H", "Transfer-Encoding: chunked",
         "-H", "Expect: 100-continue", "--data-binary", f"@{data}",
         f"{image}/v2/images/{doc['id']}/file"],
        capture_output=True, text=True, timeout=90, check=False)
    assert done.stdout == "204", done.stderr[-2000:]
    return doc["id"], done.stderr


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_control_plane(openstack: Stack, backend: str) -> None:
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
        subject, catalog = token(identity)
        status, _, doc = call(f"{identity}v3/projects", headers={"X-Auth-Token": subject})
        assert status == 200, doc
        assert "admin" in [p["name"] for p in doc["projects"]]
        # after_up put the others in the catalog, at the URLs this backend serves them on.
        assert catalog["placement"]["public"] == placement.rstrip("/")
        assert catalog["image"]["public"] == urls["glance"].rstrip("/")
        assert set(catalog["image"]) == {"public", "internal"}

        status, _, doc = call(placement)
        assert status == 200, doc
        assert doc["versions"][0]["id"] == "v1.0"
        # No noauth: the literal token `admin` is nobody, a Keystone token is the admin.
        status, _, doc = call(f"{placement}resource_providers",
                              headers={**PLACEMENT, "X-Auth-Token": "admin"})
        assert status == 401, doc
        authed = {**PLACEMENT, "X-Auth-Token": subject}
        name = f"rp-{backend.replace('+', '-')}-{uuid.uuid4().hex[:8]}"
        status, _, doc = call(f"{placement}resource_providers", "POST", {"name": name}, authed)
        assert status == 200, doc
        assert doc["links"][0]["href"].startswith("/placement/resource_providers/")
        status, _, doc = call(f"{placement}resource_providers?name={name}", headers=authed)
        assert status == 200, doc
        assert [rp["name"] for rp in doc["resource_providers"]] == [name]

        image = catalog["image"]["public"]
        data = openstack.root / "image.bin"
        if not data.exists():
            data.write_bytes(os.urandom(IMAGE_SIZE))
        image_id, trace = upload_image(image, subject, data)
        assert "HTTP/1.1 100 Continue" in trace, trace[-2000:]
        status, _, doc = call(f"{image}/v2/images/{image_id}",
                              headers={"X-Auth-Token": subject})
        assert (status, doc["status"], doc["size"]) == (200, "active", IMAGE_SIZE), doc
        digest = hashlib.sha512(data.read_bytes()).hexdigest()
        assert doc["os_hash_algo"] == "sha512" and doc["os_hash_value"] == digest
        req = urllib.request.Request(f"{image}/v2/images/{image_id}/file",
                                     headers={"X-Auth-Token": subject})
        with urllib.request.urlopen(req, timeout=60) as resp:
            assert hashlib.sha512(resp.read()).hexdigest() == digest
        # A client that gives up half-way: no image is made of half the data.
        status, _, doc = call(f"{image}/v2/images", "POST", {
            "name": "half", "disk_format": "raw", "container_format": "bare"},
            {"X-Auth-Token": subject})
        half = f"{image}/v2/images/{doc['id']}"
        abort_upload(f"{half}/file", subject, IMAGE_SIZE)
        # A front end may end the client's side before the app has seen its own end.
        deadline = time.monotonic() + 30
        while (doc := call(half, headers={"X-Auth-Token": subject})[2])["status"] == "saving" \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        assert doc["status"] == "queued" and not doc["size"], doc

        operator_commands(identity, backend)

        if os.geteuid() == 0:  # only the front ends' masters stay root, never an app
            root, users = _root_processes(pids)
            assert root <= {"front end"} and "wsgistack" in users, (root, users)
            assert users <= {"root", "www-data", "wsgistack"}
        # The admin password (a secret key in env) is in no log and nowhere on screen.
        logs = openstack.root / ".wsgistack" / "logs"
        kept = [openstack.root / ".wsgistack" / "secrets" / n for n in ("placement", "glance")]
        assert all(p.stat().st_mode & 0o077 == 0 for p in kept)  # root's alone
        made = [p.read_text().strip() for p in kept]
        for text in ((logs / "keystone-setup.log").read_text(),
                     (logs / "keystone-after_up.log").read_text(), res.out + res.err):
            assert not [s for s in ("s3cr3t", *made) if s in text]
    finally:
        assert openstack.cli("down").code == 0
    assert not [p for p in pids if alive(p)]


def osc_output(args: tuple[str, ...], done: subprocess.CompletedProcess[str]) -> Any:
    """What an `openstack` command printed: its text, or with `-f json` its rows (or its
    one row) with lower-case column names ("Type" or "type", as versions go)."""
    assert done.returncode == 0, (args, done.stderr[-2000:])
    if "-f" not in args:
        return done.stdout
    doc = json.loads(done.stdout)
    return ([{k.lower(): v for k, v in row.items()} for row in doc]
            if isinstance(doc, list) else {k.lower(): v for k, v in doc.items()})


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


def _catalog(stack: Stack, state_dir: Path | None = None) -> str:
    state = json.loads(((state_dir or stack.root / ".wsgistack") / "state.json").read_text())
    front = next(s["url"] for s in state["services"] if s["name"] == "catalog")
    with urllib.request.urlopen(front, timeout=10) as resp:
        return resp.read().decode()


def test_one_sqlite_writer_takes_a_concurrent_workload(openstack: Stack) -> None:
    res = openstack.cli("up", "--detach", "--backend", "granian")
    assert res.code == 0, res.err
    try:
        identity = next(s["url"] for s in json.loads(_catalog(openstack))["services"]
                        if s["name"] == "keystone")
        calls, failed = keystone_workload(identity)
    finally:
        assert openstack.cli("down").code == 0
    assert calls >= 400 and failed == [], failed[:5]


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
