"""Live: the core of a cloud from examples/openstack/cloud.toml (Nova's compute and metadata
APIs, Neutron, Cinder and Barbican beside Keystone, Placement and Glance, OpenStack 2026.2
from PyPI), driven by python-openstackclient (and python-barbicanclient's plugin) as an
operator types it.

CI runs it on one backend, mod_wsgi (the APIs under Apache): 10 minutes on a 2-core machine
shared with two other live runs, most of it the first `up` (pip, then the setup commands,
each importing its project anew), about 2 minutes the operator's commands. Every backend, or
a chosen few, when asked (each later one reuses the venv and the databases):

    WSGISTACK_CLOUD_BACKENDS=all .venv/bin/pytest tests/test_openstack_cloud.py
    WSGISTACK_CLOUD_BACKENDS=granian,uwsgi .venv/bin/pytest tests/test_openstack_cloud.py

Marked `openstack`: deselect with `-m "not openstack"` for a quick run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Stack, alive, free_port
from tests.test_openstack import osc_output
from wsgistack.backends import BACKENDS
from wsgistack.lifecycle import processes

pytestmark = [pytest.mark.live, pytest.mark.openstack]
EXAMPLE = Path(__file__).parent.parent / "examples" / "openstack"
OPENSTACK = Path(sys.executable).parent / "openstack"
MANIFEST = ("-f", "cloud.toml")
KINDS = ("identity", "placement", "image", "compute", "network", "volumev3", "key-manager")


def chosen_backends(asked: str | None) -> list[str]:
    """mod_wsgi unless WSGISTACK_CLOUD_BACKENDS names others (comma-separated) or `all`."""
    if not asked:
        return ["mod_wsgi"]
    if asked.strip() == "all":
        return list(BACKENDS)
    names = [n.strip() for n in asked.split(",") if n.strip()]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise ValueError(f"WSGISTACK_CLOUD_BACKENDS: no backend {', '.join(unknown)}; "
                         f"choose from {', '.join(BACKENDS)} or all")
    return names


def test_chosen_backends() -> None:
    assert chosen_backends(None) == ["mod_wsgi"]
    assert chosen_backends("all") == list(BACKENDS)
    assert chosen_backends("granian, uwsgi") == ["granian", "uwsgi"]
    with pytest.raises(ValueError, match="WSGISTACK_CLOUD_BACKENDS: no backend nope; choose"):
        chosen_backends("granian,nope")


@pytest.fixture(scope="module")
def cloud() -> Iterator[Stack]:
    # Under /tmp, mode 0755: Apache's worker user must reach the venv and the data.
    root = Path(tempfile.mkdtemp(prefix="wsgistack-cloud-", dir="/tmp"))
    root.chmod(0o755)
    for path in EXAMPLE.iterdir():
        if path.is_file():
            shutil.copy(path, root / path.name)
    base = root / "wsgistack.toml"  # cloud.toml's ports follow its base's
    base.write_text(re.sub(r"(?m)^base_port = \d+", f"base_port = {free_port()}",
                           base.read_text()))
    stack = Stack(root)
    yield stack
    stack.cli(*MANIFEST, "down")
    shutil.rmtree(root, ignore_errors=True)


class Osc:
    """python-openstackclient as the admin, against one Keystone."""

    def __init__(self, identity: str) -> None:
        self.env = {**os.environ, "OS_AUTH_URL": f"{identity}v3", "OS_USERNAME": "admin",
                    "OS_PASSWORD": "s3cr3t", "OS_PROJECT_NAME": "admin",
                    "OS_USER_DOMAIN_ID": "default", "OS_PROJECT_DOMAIN_ID": "default",
                    "OS_IDENTITY_API_VERSION": "3", "OS_REGION_NAME": "RegionOne"}

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(OPENSTACK), *args], env=self.env, capture_output=True,
                              text=True, timeout=120, check=False)

    def __call__(self, *args: str) -> Any:
        return osc_output(args, self.run(*args))


@pytest.mark.parametrize("backend", chosen_backends(os.environ.get("WSGISTACK_CLOUD_BACKENDS")))
def test_cloud(cloud: Stack, backend: str) -> None:
    started = time.monotonic()
    res = cloud.cli(*MANIFEST, "up", "--detach", "--backend", backend)
    assert res.code == 0, res.err[-3000:]
    print(f"\n{backend}: up in {time.monotonic() - started:.1f}s")
    pids = _pids(cloud)
    try:
        urls = {s["name"]: s["url"] for s in json.loads(_front(cloud))["services"]}
        osc = Osc(urls["keystone"])
        tag = f"{backend.replace('+', '-')}-{uuid.uuid4().hex[:6]}"

        catalog = {e["type"]: e["endpoints"] for e in osc("catalog", "list", "-f", "json")}
        for kind in KINDS:
            interfaces = {e["interface"] for e in catalog[kind]}
            assert {"public", "internal"} <= interfaces, (kind, catalog[kind])
        compute = next(e["url"] for e in catalog["compute"] if e["interface"] == "public")
        assert compute == f"{urls['nova']}v2.1"

        # Nova: flavors, servers through both cells, the API's own service record.
        flavor = osc("flavor", "create", "--ram", "64", "--disk", "1", "--vcpus", "1",
                     f"f-{tag}", "-f", "json")
        assert f"f-{tag}" in [f["name"] for f in osc("flavor", "list", "-f", "json")]
        assert osc("flavor", "show", flavor["id"], "-f", "json")["ram"] == 64
        assert osc("server", "list", "--all-projects", "-f", "json") == []
        osc("availability", "zone", "list", "--compute", "-f", "json")
        osc("compute", "service", "list", "-f", "json")
        assert {"name": "max_total_instances", "value": 10} in \
            osc("limits", "show", "--absolute", "-f", "json")
        assert "PRIVATE KEY" in osc("keypair", "create", f"k-{tag}")
        osc("keypair", "delete", f"k-{tag}")
        osc("flavor", "delete", flavor["id"])
        with urllib.request.urlopen(urls["nova-metadata"], timeout=30) as resp:
            assert "latest" in resp.read().decode().split()

        # Neutron: records only, no agent to wire them.
        net = osc("network", "create", f"n-{tag}", "-f", "json")
        subnet = osc("subnet", "create", "--network", net["id"], "--subnet-range",
                     "10.9.0.0/24", f"s-{tag}", "-f", "json")
        assert subnet["cidr"] == "10.9.0.0/24"
        assert net["id"] in [n["id"] for n in osc("network", "list", "-f", "json")]
        port = osc("port", "create", "--network", net["id"], f"p-{tag}", "-f", "json")
        osc("port", "delete", port["id"])
        group = osc("security", "group", "create", f"sg-{tag}", "-f", "json")
        rule = osc("security", "group", "rule", "create", "--protocol", "tcp", "--dst-port",
                   "22", group["id"], "-f", "json")
        assert rule["port_range_min"] == 22
        osc("security", "group", "delete", group["id"])
        osc("network", "delete", net["id"])

        # Cinder: types and the (empty) volume list.
        vtype = osc("volume", "type", "create", f"vt-{tag}", "-f", "json")
        assert f"vt-{tag}" in [t["name"] for t in osc("volume", "type", "list", "-f", "json")]
        osc("volume", "type", "delete", vtype["id"])
        assert osc("volume", "list", "-f", "json") == []
        assert osc("volume", "service", "list", "-f", "json") == []  # no cinder-volume
        quota = osc("quota", "show", "-f", "json")  # Nova's, Neutron's and Cinder's
        assert {"networks", "volumes", "instances"} <= {q["resource"] for q in quota}, quota
        # No scheduler runs: a question only it answers (an RPC call) fails with a 500 once
        # rpc_response_timeout (5 s) has passed, as in a cloud whose scheduler is down,
        # not a hung request.
        asked = time.monotonic()
        done = osc.run("volume", "backend", "pool", "list")
        took = time.monotonic() - asked
        assert done.returncode == 1, done.stdout
        assert re.search(r"500: Server Error for url: \S+/volume/v3/scheduler-stats/get_pools",
                         done.stderr), done.stderr[-2000:]
        assert took < 60, took

        # Barbican: a secret stored with the simple crypto plugin comes back.
        href = osc("secret", "store", "--name", f"s-{tag}", "--payload", f"payload-{tag}",
                   "-f", "json")["secret href"]
        assert href.startswith(urls["barbican"])
        assert osc("secret", "get", "--payload", href, "-f", "json")["payload"] == \
            f"payload-{tag}"
        assert href in [s["secret href"] for s in osc("secret", "list", "-f", "json")]
        osc("secret", "delete", href)
        print(f"{backend}: done in {time.monotonic() - started:.1f}s")
    finally:
        assert cloud.cli(*MANIFEST, "down").code == 0
    assert not [p for p in pids if alive(p)]


def _pids(stack: Stack) -> list[int]:
    state = processes.load_state(str(stack.root / ".wsgistack-cloud"))
    return [r.pid for r in state.procs] if state else []


def _front(stack: Stack) -> str:
    state = json.loads((stack.root / ".wsgistack-cloud" / "state.json").read_text())
    front = next(s["url"] for s in state["services"] if s["name"] == "catalog")
    with urllib.request.urlopen(front, timeout=10) as resp:
        text: str = resp.read().decode()
    return text
