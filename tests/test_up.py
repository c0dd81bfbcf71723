"""Live: `wsgistack up` starts real granian servers on 127.0.0.1 and stops them."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.request

import pytest

from tests.conftest import FIXTURES, alive, free_port
from wsgistack.lifecycle import processes

pytestmark = pytest.mark.live


def get(url: str) -> tuple[int, dict]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status, json.loads(resp.read())


def manifest(api_port: int, probe_port: int, app: str = "sampleapp:application",
             extra: str = "") -> str:
    return f"""
[stack]
name = "t"
start_timeout = 20
[services.api]
app = "{app}"
prefix = "/api/v2"
port = {api_port}
python_path = ["{FIXTURES}"]
args = ["--config-file", "api.conf"]
{extra}
[services.probe]
app = "wsgistack.apps.probe:application"
port = {probe_port}
health_path = "/status/200"
"""


def test_up_status_down_with_prefix_links(stack):
    api, probe = free_port(), free_port()
    stack.write(manifest(api, probe))
    res = stack.cli("up", "--detach")
    assert res.code == 0, res.err
    lines = res.out.splitlines()
    assert lines[0].split() == ["service", "url", "server", "pid", "health"]
    assert lines[1].split()[:3] == ["api", f"http://127.0.0.1:{api}/api/v2/", "granian"]
    assert lines[1].split()[4] == "healthy"
    pids = stack.pids()
    assert len(pids) == 2 and len(stack.all_pids()) == 3  # and the metrics exporter
    assert all(alive(p) for p in stack.all_pids())

    _status, doc = get(f"http://127.0.0.1:{api}/api/v2/things")
    assert (doc["script_name"], doc["path_info"]) == ("/api/v2", "/things")
    assert doc["link"] == f"http://127.0.0.1:{api}/api/v2/v1"
    assert doc["argv"] == ["api", "--config-file", "api.conf"]  # not granian's argv
    _, echo = get(f"http://127.0.0.1:{probe}/probe/a/b?x=1")
    assert (echo["SCRIPT_NAME"], echo["PATH_INFO"], echo["QUERY_STRING"]) == (
        "/probe", "/a/b", "x=1")
    with pytest.raises(urllib.error.HTTPError, match="404"):
        get(f"http://127.0.0.1:{probe}/elsewhere")

    st = stack.cli("status")
    assert st.code == 0 and st.out.count("healthy") == 2
    every = {p for pid in stack.all_pids() for p in (pid, *processes.descendants(pid))}
    down = stack.cli("down")
    assert down.code == 0 and f"stopped {len(every)} process(es)" in down.err  # workers too
    assert not any(alive(p) for p in every)
    assert stack.cli("status").code == 3


def test_failing_app_is_reported_and_nothing_is_left(stack):
    api, probe = free_port(), free_port()
    stack.write(manifest(api, probe, app="broken:application"))
    res = stack.cli("up", "--detach")
    assert res.code == 2
    # Tried in a throwaway process before anything started.
    assert res.err.splitlines()[-1] == (
        "wsgistack: error: service 'api' cannot load its app: cannot load app "
        "'broken:application': ModuleNotFoundError: No module named 'no_such_dependency_xyz' "
        f"at {FIXTURES}/broken.py:1; install no_such_dependency_xyz where the app runs "
        "(services.api.requirements) or fix the import; nothing was started")
    assert "healthy" not in res.err
    assert not (stack.root / ".wsgistack" / "state.json").exists()
    for port in (api, probe):  # both listeners are gone
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_busy_port_is_refused_before_anything_starts(stack):
    api, probe = free_port(), free_port()
    stack.write(manifest(api, probe))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", probe))
        busy.listen()
        res = stack.cli("up", "--detach")
    assert res.code == 2
    assert res.err.splitlines()[-1].startswith(
        f"wsgistack: error: {stack.root / 'wsgistack.toml'}: port {probe} on 127.0.0.1 "
        f"(services.probe.port) is in use by pid {os.getpid()} (")
    assert res.err.rstrip().endswith("; stop that program or choose another port there")
    assert stack.all_pids() == []


def test_health_check_that_never_passes(stack):
    api, probe = free_port(), free_port()
    stack.write(manifest(api, probe, extra="health_status = 204").replace(
        "start_timeout = 20", "start_timeout = 2"))
    res = stack.cli("up", "--detach")
    assert res.code == 2
    assert res.err.splitlines()[-1].startswith(
        f"wsgistack: error: service 'api' did not become healthy in 2s (last: HTTP 200 from "
        f"http://127.0.0.1:{api}/api/v2/, expected 204); log: ")
    assert res.err.endswith("see `wsgistack logs api`\n")
    assert stack.all_pids() == []


def test_crashed_service_is_reported_not_respawned(stack):
    api, probe = free_port(), free_port()
    stack.write(manifest(api, probe))
    assert stack.cli("up", "--detach").code == 0
    victim = next(r for r in stack.pids())
    os.killpg(victim, signal.SIGKILL)
    # SIGKILL is delivered when the kernel gets to it: status is asked once it has been
    # (this test asked at once, and failed one run in three).
    deadline = time.monotonic() + 5
    while alive(victim) and time.monotonic() < deadline:
        time.sleep(0.01)
    res = stack.cli("status")
    assert res.code == 1
    assert f"crashed: api (pid {victim}) gone; see wsgistack logs api" in res.out
    assert "healthy" in res.out.splitlines()[2]


def test_second_up_is_refused_while_running(stack):
    stack.write(manifest(free_port(), free_port()))
    assert stack.cli("up", "--detach").code == 0
    res = stack.cli("up", "--detach")
    assert res.code == 2
    assert "stack 't' is already up" in res.err


def test_embedded_default_stack(tmp_path, stack):
    res = stack.cli("up", "--detach")
    assert res.code == 0, res.err
    _, doc = get("http://127.0.0.1:8780/")
    assert [s["name"] for s in doc["services"]] == ["catalog", "probe", "hello"]
    assert doc["services"][1]["url"] == "http://127.0.0.1:8781/probe/"
    status, health = get("http://127.0.0.1:8780/healthcheck")
    assert status == 200 and health["healthy"] is True
    assert set(health["services"]) == {"probe", "hello"}
    logs = stack.cli("logs", "probe")
    assert logs.code == 0 and "wsgistack" not in logs.err
    assert stack.cli("down").code == 0


def test_down_also_stops_what_a_killed_check_left(stack):
    """`check` runs each backend in STATE/check/<backend>; killed hard, it cannot stop them."""
    from wsgistack import manifest as manifests
    from wsgistack import plan as plans
    from wsgistack import runtime
    from wsgistack.backends import get

    stack.write(manifest(free_port(1), free_port(1)))
    m = manifests.load(stack.root / "wsgistack.toml")
    alone = m.__class__(m.path, m.root, m.stack, m.services[1:])
    leftover = plans.build(alone, get("granian"), state=m.state_path / "check" / "granian")
    running = runtime.up(leftover, lambda _m: None)
    assert all(r.alive() for r in running)
    every = [pid for r in running for pid in (r.pid, *processes.descendants(r.pid))]
    res = stack.cli("down")
    assert res.code == 0
    assert res.err == f"stopped {len(every)} process(es) of stack 't'\n"
    assert not [pid for pid in every if alive(pid)]
    assert not (m.state_path / "check" / "granian" / "state.json").exists()
