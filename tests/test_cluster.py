"""Beyond one machine: three nodes made here as network namespaces (veth pairs, addresses
the test picks and checks are unused, all removed at the end), each running the stack on a
real backend, HAProxy in front of them on 127.0.0.1. Traffic goes only to loopback and those
addresses; every load is bounded in time."""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from benchmarks import wrk

from tests.conftest import free_port, run_cli
from wsgistack import manifest, plan
from wsgistack.backends import get
from wsgistack.lifecycle import processes
from wsgistack.targets import cluster

pytestmark = [pytest.mark.live, pytest.mark.reliability,
              pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")]

WSGISTACK = str(Path(sys.executable).with_name("wsgistack"))
NODES = ("n1", "n2", "n3")
STACK = """\
[stack]
name = "cl"
host = "0.0.0.0"
base_port = {port}
trusted_proxies = ["{net}"]
start_timeout = 60
[services.hello]
app = "wsgistack.apps.hello:application"
prefix = "/hello"
[services.probe]
app = "wsgistack.apps.probe:application"
prefix = "/probe"
health_path = "/status/200"
"""
CLUSTER = """\
[cluster]
nodes = {{ {nodes} }}
listen = "127.0.0.1:{listen}"
command = "ip netns exec {ns}-{{node}} {wsgistack} -f {root}/{{node}}/wsgistack.toml reload"
inter = 500
rise = 2
fall = 2
drain_timeout = 10
"""


_RUNS = itertools.count()


def _free_net() -> ipaddress.IPv4Network:
    """A /16 under 10.0.0.0/8 that no interface here is in."""
    used = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True,
                          check=True).stdout
    taken = [ipaddress.ip_interface(w.split()[3]).network for w in used.splitlines()]
    for second in range(213, 250):
        net = ipaddress.ip_network(f"10.{second}.0.0/16")
        if not any(net.overlaps(t) for t in taken):
            return net
    raise RuntimeError("no free 10.x.0.0/16 here")


@dataclass
class Node:
    name: str
    ns: str
    address: str
    root: Path

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.ns, *argv], capture_output=True,
                              text=True, check=check, timeout=300)

    def wsgistack(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return self.run(WSGISTACK, "-f", str(self.root / "wsgistack.toml"), *argv,
                        check=False)

    def workers(self) -> set[int]:
        """The app's worker processes (not a front end's, which a reload may keep)."""
        status = json.loads(self.wsgistack("status", "--json").stdout)
        return {p["pid"] for s in status["services"] for p in s["processes"]
                if p["role"] == "worker" and p["name"] == s["name"]}


@pytest.fixture
def netns() -> Iterator[tuple[str, ipaddress.IPv4Network]]:
    """Three namespaces, each with a veth pair to this one: 10.X.i.1 here, 10.X.i.2 there."""
    net = _free_net()
    ns = f"wsgc{os.getpid() % 10000}{next(_RUNS)}"
    made: list[str] = []
    links: list[str] = []
    try:
        for i, name in enumerate(NODES, start=1):
            here, there = f"{ns}h{i}", f"{ns}n{i}"
            subprocess.run(["ip", "netns", "add", f"{ns}-{name}"], check=True)
            made.append(f"{ns}-{name}")
            links.append(here)
            for argv in (
                    ["ip", "link", "add", here, "type", "veth", "peer", "name", there],
                    ["ip", "link", "set", there, "netns", f"{ns}-{name}"],
                    ["ip", "addr", "add", f"{net[256 * i + 1]}/24", "dev", here],
                    ["ip", "link", "set", here, "up"]):
                subprocess.run(argv, check=True)
            for argv in (["ip", "addr", "add", f"{net[256 * i + 2]}/24", "dev", there],
                         ["ip", "link", "set", there, "up"], ["ip", "link", "set", "lo", "up"]):
                subprocess.run(["ip", "netns", "exec", f"{ns}-{name}", *argv], check=True)
        yield ns, net
    finally:
        for link in links:  # both ends at once (a namespace's go when it is freed)
            subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)
        for name in made:
            subprocess.run(["ip", "netns", "del", name], check=False)
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert ns not in left


@pytest.fixture
def three_nodes(netns, tmp_path, request) -> Iterator[tuple[list[Node], Path]]:
    """The stack up on each node (the backend is the test's parameter), and the balancer's
    manifest: the same stack, with the [cluster] table."""
    ns, net = netns
    backend = request.param
    port = free_port()
    stack = STACK.format(port=port, net=net)
    nodes = []
    for i, name in enumerate(NODES, start=1):
        root = tmp_path / name
        root.mkdir()
        root.chmod(0o755)
        (root / "wsgistack.toml").write_text(stack.replace('name = "cl"', 'name = "cl"\n'
                                                           f'backend = "{backend}"'))
        nodes.append(Node(name, f"{ns}-{name}", str(net[256 * i + 2]), root))
    listen = free_port(1)
    (tmp_path / "wsgistack.toml").write_text(
        stack.replace('name = "cl"', f'name = "cl"\nbackend = "{backend}"') + CLUSTER.format(
            nodes=", ".join(f'{n.name} = "{n.address}"' for n in nodes), listen=listen,
            ns=ns, wsgistack=WSGISTACK, root=tmp_path))
    try:
        for node in nodes:
            done = node.wsgistack("up", "--detach")
            assert done.returncode == 0, done.stderr
        up = run_cli("cluster", "up", cwd=tmp_path)
        assert up.code == 0, up.err
        yield nodes, tmp_path
    finally:
        run_cli("cluster", "down", cwd=tmp_path)
        for node in nodes:
            node.wsgistack("down")


def _balancer(root: Path) -> tuple[plan.Plan, cluster.ClusterConfig, cluster.Balancer]:
    m = manifest.load(root / "wsgistack.toml")
    assert m.cluster is not None
    return plan.build(m, get(m.stack.backend)), m.cluster, cluster.balancer(m)


def _all_up(root: Path, timeout: float = 30) -> None:
    _, _, where = _balancer(root)
    deadline = time.monotonic() + timeout
    while not all(s.status == "UP" for s in cluster.states(where)):
        assert time.monotonic() < deadline, cluster.states(where)
        time.sleep(0.1)


class Load:
    """wrk through HAProxy for `seconds` (bounded), in the background."""

    def __init__(self, url: str, seconds: float) -> None:
        self.result: wrk.Result | None = None
        self.thread = threading.Thread(
            target=lambda: setattr(self, "result", wrk.run(url, seconds, 8)), daemon=True)

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(timeout=120)


@pytest.mark.parametrize("three_nodes", ["granian", "apache+uwsgi"], indirect=True)
def test_roll_under_load_loses_nothing_and_reloads_every_node(three_nodes):
    nodes, root = three_nodes
    _all_up(root)
    _, config, _ = _balancer(root)
    before = {n.name: n.workers() for n in nodes}
    url = f"http://{config.listen}/hello/"
    with Load(url, 35) as load:
        time.sleep(2)
        rolled = run_cli("roll", cwd=root)
    assert rolled.code == 0, rolled.err
    for n in NODES:
        assert f"  {n} rolled: healthy and back in" in rolled.err
    assert load.result is not None
    print(f"roll under load: {load.result.requests} requests, {load.result.errors} failed; "
          f"{rolled.err.strip().splitlines()[-1]}")
    assert load.result.requests > 1000 and load.result.errors == 0, load.result.detail
    for node in nodes:
        after = node.workers()
        assert after and not after & before[node.name], (node.name, before, after)
    status = run_cli("cluster", "status", "--json", cwd=root)
    assert status.code == 0 and {s["status"] for s in json.loads(status.out)} == {"UP"}
    # `status` on the balancer's host shows the same: each node per service, as HAProxy
    # sees it.
    seen = run_cli("status", "--json", cwd=root)
    assert seen.code == 0
    assert {(s["backend"], s["node"], s["status"]) for s in json.loads(seen.out)["cluster"]} \
        == {(svc, n, "UP") for svc in ("hello", "probe") for n in NODES}


def _kill_stack(node: Node) -> int:
    """kill -9 every process of the node's stack, workers included: found by the stack's
    marker (the namespaces share this pid namespace)."""
    pids = processes.marked(str(node.root / ".wsgistack"), nested=True)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return len(pids)


@pytest.mark.parametrize("three_nodes", ["granian"], indirect=True)
def test_a_node_killed_under_load_is_taken_out_and_put_back(three_nodes):
    nodes, root = three_nodes
    _all_up(root)
    _, config, where = _balancer(root)
    victim = nodes[1]
    with Load(f"http://{config.listen}/hello/", 12) as load:
        time.sleep(2)
        assert _kill_stack(victim) > 0
        killed = time.monotonic()
        while {s.status for s in cluster.states(where) if s.node == victim.name} != {"DOWN"}:
            assert time.monotonic() - killed < 10, cluster.states(where)
            time.sleep(0.05)
        out_after = time.monotonic() - killed
    assert load.result is not None
    print(f"node killed: out after {out_after:.2f}s (fall x inter = "
          f"{config.fall * config.inter / 1000:.1f}s); {load.result.requests} requests, "
          f"{load.result.errors} failed")
    assert out_after <= config.fall * config.inter / 1000 + config.inter / 1000
    assert load.result.errors == 0, load.result.detail  # GETs: retried elsewhere
    # Brought back up, HAProxy's checks put it back in by themselves: within `rise` checks.
    victim.wsgistack("down")
    assert victim.wsgistack("up", "--detach").returncode == 0
    healthy = time.monotonic()
    _all_up(root)
    back_after = time.monotonic() - healthy
    print(f"node back: in after {back_after:.2f}s (rise x inter = "
          f"{config.rise * config.inter / 1000:.1f}s)")
    assert back_after <= (config.rise + 1) * config.inter / 1000


@pytest.mark.parametrize("three_nodes", ["granian"], indirect=True)
def test_roll_stops_at_a_node_whose_new_app_fails(three_nodes):
    nodes, root = three_nodes
    _all_up(root)
    _, config, where = _balancer(root)
    broken = nodes[1]
    manifest_file = broken.root / "wsgistack.toml"
    manifest_file.write_text(manifest_file.read_text().replace(
        "wsgistack.apps.hello:application", "wsgistack.apps.hello:no_such_app"))
    untouched = nodes[2].workers()
    rolled = run_cli("roll", cwd=root)
    assert rolled.code == 2
    last = rolled.err.strip().splitlines()[-1]
    assert last.startswith("wsgistack: error: roll stopped at node n2: `ip netns exec ")
    assert "no_such_app" in last and last.endswith(
        "n2 stays drained; rolled: n1; untouched: n3"), last
    assert nodes[2].workers() == untouched
    seen = {(s.backend, s.node): s.status for s in cluster.states(where)}
    assert seen[("hello", "n2")] == "DRAIN" and seen[("hello", "n3")] == "UP"
    assert wrk.run(f"http://{config.listen}/hello/", 2, 4).errors == 0
