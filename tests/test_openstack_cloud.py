"""Live: the core of a cloud from examples/openstack/cloud.toml (Nova's compute and metadata
APIs, Neutron, Cinder and Barbican beside Keystone, Placement and Glance, OpenStack 2026.2
from PyPI), driven by python-openstackclient (and python-barbicanclient's plugin) as an
operator types it; then postgresql.toml, the same cloud on a PostgreSQL server the
test starts, with more processes.

CI runs the sqlite cloud on one backend, mod_wsgi (the APIs under Apache), and the
PostgreSQL one on apache+uwsgi (another backend at no extra cost), with one venv for both:
most of the time is the first `up` (pip, then the setup commands, each importing its project
anew); README ("The core of a cloud") has the times. Every backend for the sqlite cloud, or
a chosen few, when asked (each later one reuses the venv and the databases):

    WSGISTACK_CLOUD_BACKENDS=all .venv/bin/pytest tests/test_openstack_cloud.py
    WSGISTACK_CLOUD_BACKENDS=granian,uwsgi .venv/bin/pytest tests/test_openstack_cloud.py

Marked `openstack`: deselect with `-m "not openstack"` for a quick run.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Stack, alive, free_port
from tests.test_openstack import call, keystone_workload, osc_output
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
        shown = osc("flavor", "show", flavor["id"], "-f", "json")
        assert (shown["name"], shown["ram"], shown["disk"], shown["vcpus"]) == \
            (f"f-{tag}", 64, 1, 1)
        assert osc("server", "list", "--all-projects", "-f", "json") == []
        # No compute host, no cinder-volume, no agent: only Nova's `internal` zone (where
        # its own services live) is listed, with no host in it; Nova lists no service (its
        # APIs' records are not shown).
        available = [{"zone name": "internal", "zone status": "available"}]
        assert osc("availability", "zone", "list", "-f", "json") == available
        assert [(z["zone name"], z["host name"]) for z in osc(
            "availability", "zone", "list", "--long", "-f", "json")] == [("internal", "")]
        assert osc("availability", "zone", "list", "--volume", "-f", "json") == []
        assert osc("availability", "zone", "list", "--network", "-f", "json") == []
        assert osc("compute", "service", "list", "-f", "json") == []
        assert {"name": "max_total_instances", "value": 10} in \
            osc("limits", "show", "--absolute", "-f", "json")
        assert "PRIVATE KEY" in osc("keypair", "create", f"k-{tag}")
        assert f"k-{tag}" in [k["name"] for k in osc("keypair", "list", "-f", "json")]
        osc("keypair", "delete", f"k-{tag}")
        assert f"k-{tag}" not in [k["name"] for k in osc("keypair", "list", "-f", "json")]
        osc("flavor", "delete", flavor["id"])
        assert f"f-{tag}" not in [f["name"] for f in osc("flavor", "list", "-f", "json")]
        with urllib.request.urlopen(urls["nova-metadata"], timeout=30) as resp:
            assert "latest" in resp.read().decode().split()

        # Neutron: records only, no agent to wire them.
        net = osc("network", "create", f"n-{tag}", "-f", "json")
        shown = osc("network", "show", net["id"], "-f", "json")
        assert (shown["name"], shown["id"], shown["status"], shown["provider:network_type"]) \
            == (f"n-{tag}", net["id"], "ACTIVE", "vxlan")
        subnet = osc("subnet", "create", "--network", net["id"], "--subnet-range",
                     "10.9.0.0/24", "--allocation-pool", "start=10.9.0.10,end=10.9.0.20",
                     f"s-{tag}", "-f", "json")
        assert (subnet["cidr"], subnet["gateway_ip"], subnet["allocation_pools"]) == (
            "10.9.0.0/24", "10.9.0.1", [{"start": "10.9.0.10", "end": "10.9.0.20"}])
        # A subnet from a subnet pool, on a network of its own (Neutron wants a network's
        # subnets from one pool): the pool's first free prefix of its default length.
        pool = osc("subnet", "pool", "create", "--pool-prefix", "10.10.0.0/16",
                   "--default-prefix-length", "26", f"sp-{tag}", "-f", "json")
        assert (pool["prefixes"], pool["default_prefixlen"]) == (["10.10.0.0/16"], 26)
        pooled_net = osc("network", "create", f"np-{tag}", "-f", "json")
        pooled = osc("subnet", "create", "--network", pooled_net["id"], "--subnet-pool",
                     pool["id"], f"sps-{tag}", "-f", "json")
        assert (pooled["cidr"], pooled["subnetpool_id"], pooled["allocation_pools"]) == (
            "10.10.0.0/26", pool["id"], [{"start": "10.10.0.2", "end": "10.10.0.62"}])
        assert net["id"] in [n["id"] for n in osc("network", "list", "-f", "json")]
        port = osc("port", "create", "--network", net["id"], f"p-{tag}", "-f", "json")
        # An address from the allocation pool (Neutron's IPAM picks one of the first free
        # ones at random), and no agent to bind the port: DOWN, unbound.
        assert (port["status"], port["binding_vif_type"]) == ("DOWN", "unbound")
        address = port["fixed_ips"][0]["ip_address"]
        assert address.startswith("10.9.0.") and 10 <= int(address.rsplit(".", 1)[1]) <= 20
        osc("port", "delete", port["id"])
        assert port["id"] not in [p["id"] for p in osc("port", "list", "--network", net["id"],
                                                       "-f", "json")]
        group = osc("security", "group", "create", f"sg-{tag}", "-f", "json")
        rule = osc("security", "group", "rule", "create", "--protocol", "tcp", "--dst-port",
                   "22", group["id"], "-f", "json")
        assert rule["port_range_min"] == 22
        osc("security", "group", "delete", group["id"])
        osc("network", "delete", net["id"], pooled_net["id"])  # their subnets with them
        left = [n["id"] for n in osc("network", "list", "-f", "json")]
        assert net["id"] not in left and pooled_net["id"] not in left
        osc("subnet", "pool", "delete", pool["id"])

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
        # A volume is accepted, and stays `creating`: its creation was cast to no scheduler.
        asked = time.monotonic()
        volume = osc("volume", "create", "--size", "1", f"v-{tag}", "-f", "json")
        assert (volume["status"], volume["size"]) == ("creating", 1)
        assert time.monotonic() - asked < 60
        assert osc("volume", "show", volume["id"], "-f", "json")["status"] == "creating"
        # Never scheduled (no host): deleted by the API itself, at once.
        osc("volume", "delete", volume["id"])
        assert osc("volume", "list", "-f", "json") == []

        # Barbican: a secret stored with the simple crypto plugin comes back.
        href = osc("secret", "store", "--name", f"s-{tag}", "--payload", f"payload-{tag}",
                   "-f", "json")["secret href"]
        assert href.startswith(urls["barbican"])
        assert osc("secret", "get", "--payload", href, "-f", "json")["payload"] == \
            f"payload-{tag}"
        assert href in [s["secret href"] for s in osc("secret", "list", "-f", "json")]
        osc("secret", "delete", href)

        # A token from Keystone works on every API; revoked in Keystone, it is refused by
        # every API once keystonemiddleware's cache of it has expired.
        public = {kind: next(e["url"] for e in catalog[kind] if e["interface"] == "public")
                  for kind in KINDS}
        issued = osc("token", "issue", "-f", "json")["id"]
        assert answers(public, issued) == dict.fromkeys(KINDS, 200)
        # Revoked through the API (`openstack token revoke` does the same, a few seconds
        # later: long enough for the caches to expire before anything is asked again).
        status, _, body = call(f"{public['identity']}/auth/tokens", "DELETE", headers={
            "X-Auth-Token": issued, "X-Subject-Token": issued})
        assert status == 204, body
        waited = refused(public, issued, TOKEN_CACHE_TIME + 60)
        print(f"{backend}: the revoked token refused after "
              + ", ".join(f"{k} {s:.1f}s" for k, s in waited.items()))
        assert set(waited) == set(KINDS), waited
        assert waited["identity"] == min(waited.values())  # Keystone at once, no cache
        assert answers(public, issued) == dict.fromkeys(KINDS, 401)
        print(f"{backend}: done in {time.monotonic() - started:.1f}s")
    finally:
        assert cloud.cli(*MANIFEST, "down").code == 0
    assert not [p for p in pids if alive(p)]


# What each API answers a token with, under its public URL in the catalog: a list any
# authenticated user may read.
TOKEN_PATHS = {"identity": "/auth/projects", "placement": "/resource_providers",
               "image": "/v2/images", "compute": "/flavors", "network": "/v2.0/networks",
               "volumev3": "/types", "key-manager": "/v1/secrets"}
TOKEN_CACHE_TIME = 10  # keystonemiddleware's token_cache_time in the example's templates


def answers(public: dict[str, str], subject: str) -> dict[str, int]:
    """The status each API answers `subject` with."""
    return {kind: call(public[kind].rstrip("/") + TOKEN_PATHS[kind],
                       headers={"X-Auth-Token": subject})[0] for kind in public}


def refused(public: dict[str, str], subject: str, limit: float) -> dict[str, float]:
    """Poll every API with `subject` until each answers 401, for at most `limit` seconds:
    the seconds each took to refuse it (those that never did are missing)."""
    started = time.monotonic()
    waited: dict[str, float] = {}
    while len(waited) < len(public) and time.monotonic() - started < limit:
        for kind in [k for k in public if k not in waited]:
            if answers({kind: public[kind]}, subject)[kind] == 401:
                waited[kind] = time.monotonic() - started
        time.sleep(0.5)
    return waited


def _as_postgres(*argv: str) -> list[str]:
    # PostgreSQL refuses to run as root.
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else list(argv)


@contextlib.contextmanager
def postgres_server(user: str, databases: list[str]) -> Iterator[str]:
    """A PostgreSQL server of its own, with `user` owning `databases`; yields the server's
    URL for SQLAlchemy without a database (`postgresql+psycopg2://USER:PW@127.0.0.1:PORT`).
    Stopped and removed on the way out, also on failure."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    assert found, "no PostgreSQL server: tools/test.sh installs Debian's postgresql"
    bin_dir = Path(found[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="wsgistack-pg-", dir="/tmp"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    subprocess.run(_as_postgres(str(bin_dir / "initdb"), "-D", f"{root}/data", "-U", "postgres",
                                "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"),
                   check=True, capture_output=True)
    port = free_port(1)
    with open(root / "server.log", "wb") as log:
        server = subprocess.Popen(
            _as_postgres(str(bin_dir / "postgres"), "-D", f"{root}/data", "-p", str(port),
                         "-k", str(root), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"),
            stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while subprocess.run([str(bin_dir / "pg_isready"), "-q", "-h", str(root), "-p",
                              str(port)], check=False).returncode != 0:
            assert server.poll() is None and time.monotonic() < deadline, \
                (root / "server.log").read_text()
            time.sleep(0.1)
        password = secrets.token_hex(12)
        sql = [f"CREATE ROLE {user} LOGIN PASSWORD '{password}'",
               *(f"CREATE DATABASE {name} OWNER {user}" for name in databases)]
        subprocess.run(_as_postgres(
            str(bin_dir / "psql"), "-q", "-h", str(root), "-p", str(port), "-U", "postgres",
            *(arg for stmt in sql for arg in ("-c", stmt))), check=True, capture_output=True)
        yield f"postgresql+psycopg2://{user}:{password}@127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGINT)  # fast shutdown
        server.wait(30)
        shutil.rmtree(root, ignore_errors=True)


PG_MANIFEST = ("-f", "postgresql.toml")
# Not mod_wsgi (the sqlite test's in CI): another backend for the same APIs at no extra cost.
PG_BACKEND = "apache+uwsgi"
DATABASES = ["keystone", "placement", "glance", "nova_api", "nova", "nova_cell0", "neutron",
             "cinder"]
PG_WORKERS = {"keystone": 4, "placement": 2, "glance": 2, "nova": 2, "nova-metadata": 2,
              "neutron": 2, "cinder": 2, "barbican": 1}
NETWORK_CLIENTS, NETWORK_ROUNDS = 4, 5  # x 2 calls: 40 concurrent Neutron writes, bounded


@pytest.fixture(scope="module")
def cloud_pg(cloud: Stack) -> Iterator[tuple[Stack, str]]:
    """cloud.toml's directory with a PostgreSQL server of its own for postgresql.toml:
    (the stack, the server's URL)."""
    with postgres_server("openstack", DATABASES) as server:
        secret = cloud.root / "database-server"
        secret.write_text(server + "\n")
        secret.chmod(0o600)
        # One venv for both clouds (the same requirements): the PostgreSQL stack's venvs
        # are the sqlite stack's, so pip runs once.
        venvs = cloud.root / ".wsgistack-cloud" / "venvs"
        venvs.mkdir(parents=True, exist_ok=True)
        (cloud.root / ".wsgistack-postgresql").mkdir(exist_ok=True)
        (cloud.root / ".wsgistack-postgresql" / "venvs").symlink_to(venvs)
        try:
            yield cloud, server
        finally:
            cloud.cli(*PG_MANIFEST, "down")


def test_cloud_on_postgresql(cloud_pg: tuple[Stack, str]) -> None:
    stack, server = cloud_pg
    started = time.monotonic()
    res = stack.cli(*PG_MANIFEST, "up", "--detach", "--backend", PG_BACKEND)
    assert res.code == 0, res.err[-3000:]
    print(f"\npostgresql on {PG_BACKEND}: up in {time.monotonic() - started:.1f}s")
    state = stack.root / ".wsgistack-postgresql"
    pids = _pids(stack, state)
    try:
        assert server.split("@")[0] not in res.out + res.err  # the password: never shown
        # Every database on the server but Barbican's (postgresql.toml says why).
        assert [p.name for p in state.glob("data/*/*.sqlite")] == ["barbican.sqlite"]
        # Each API's uWSGI workers (its leader's children): more where the server takes
        # concurrent writers.
        running = processes.load_state(str(state))
        workers = {r.name: len(processes.descendants(r.pid))
                   for r in (running.procs if running else [])}
        assert {k: workers.get(k) for k in PG_WORKERS} == PG_WORKERS, workers
        urls = {s["name"]: s["url"] for s in json.loads(_front(stack, state))["services"]}
        osc = Osc(urls["keystone"])
        tag = f"pg-{uuid.uuid4().hex[:6]}"

        catalog = {e["type"]: e["endpoints"] for e in osc("catalog", "list", "-f", "json")}
        public = {kind: next(e["url"] for e in catalog[kind] if e["interface"] == "public")
                  for kind in KINDS}
        issued = osc("token", "issue", "-f", "json")["id"]
        assert answers(public, issued) == dict.fromkeys(KINDS, 200)

        flavor = osc("flavor", "create", "--ram", "64", "--disk", "1", "--vcpus", "1",
                     f"f-{tag}", "-f", "json")
        assert f"f-{tag}" in _psql(server, "nova_api", "SELECT name FROM flavors")
        assert osc("server", "list", "--all-projects", "-f", "json") == []
        osc("flavor", "delete", flavor["id"])
        provider = osc("resource", "provider", "create", f"rp-{tag}", "-f", "json")
        assert f"rp-{tag}" in _psql(server, "placement", "SELECT name FROM resource_providers")
        osc("resource", "provider", "delete", provider["uuid"])
        vtype = osc("volume", "type", "create", f"vt-{tag}", "-f", "json")
        assert f"vt-{tag}" in _psql(server, "cinder", "SELECT name FROM volume_types")
        osc("volume", "type", "delete", vtype["id"])
        href = osc("secret", "store", "--name", f"s-{tag}", "--payload", f"payload-{tag}",
                   "-f", "json")["secret href"]
        assert osc("secret", "get", "--payload", href, "-f", "json")["payload"] == \
            f"payload-{tag}"
        osc("secret", "delete", href)
        assert osc("image", "list", "-f", "json") == []

        # Concurrent writers, which sqlite would refuse: clients creating and deleting
        # networks at once, through Neutron's two processes.
        made, failed = network_workload(public["network"], issued, tag)
        assert failed == [], failed[:5]
        assert made == NETWORK_CLIENTS * NETWORK_ROUNDS
        assert f"n-{tag}" not in _psql(server, "neutron", "SELECT name FROM networks")
        # And Keystone's 4 processes: clients creating, updating and deleting projects at
        # once, every call answered.
        calls, failed = keystone_workload(urls["keystone"].rstrip("/") + "/")
        assert calls >= 400 and failed == [], failed[:5]
        print(f"postgresql on {PG_BACKEND}: done in {time.monotonic() - started:.1f}s")
    finally:
        assert stack.cli(*PG_MANIFEST, "down").code == 0
    assert not [p for p in pids if alive(p)]


def network_workload(network: str, subject: str, tag: str) -> tuple[int, list[str]]:
    """Concurrent clients each creating and deleting networks: (networks made, failures)."""
    auth = {"X-Auth-Token": subject}
    failed: list[str] = []

    def client(n: int) -> int:
        made = 0
        for i in range(NETWORK_ROUNDS):
            status, _, doc = call(f"{network.rstrip('/')}/v2.0/networks", "POST",
                                  {"network": {"name": f"n-{tag}-{n}-{i}"}}, auth)
            if status != 201:
                failed.append(f"create: {status} {str(doc)[:200]}")
                continue
            made += 1
            status, _, doc = call(f"{network.rstrip('/')}/v2.0/networks/"
                                  f"{doc['network']['id']}", "DELETE", headers=auth)
            if status != 204:
                failed.append(f"delete: {status} {str(doc)[:200]}")
        return made

    with ThreadPoolExecutor(NETWORK_CLIENTS) as pool:
        return sum(pool.map(client, range(NETWORK_CLIENTS))), failed


def _psql(server: str, database: str, sql: str) -> str:
    """What `sql` returns from `database` on the test's PostgreSQL server, as text."""
    url = server.replace("postgresql+psycopg2://", "postgresql://") + f"/{database}"
    done = subprocess.run(["psql", "-At", url, "-c", sql], capture_output=True, text=True,
                          timeout=30, check=True)
    return done.stdout


def _pids(stack: Stack, state_dir: Path | None = None) -> list[int]:
    state = processes.load_state(str(state_dir or stack.root / ".wsgistack-cloud"))
    return [r.pid for r in state.procs] if state else []


def _front(stack: Stack, state_dir: Path | None = None) -> str:
    state = json.loads(((state_dir or stack.root / ".wsgistack-cloud") / "state.json")
                       .read_text())
    front = next(s["url"] for s in state["services"] if s["name"] == "catalog")
    with urllib.request.urlopen(front, timeout=10) as resp:
        text: str = resp.read().decode()
    return text
