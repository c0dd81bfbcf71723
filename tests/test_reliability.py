"""Reliability: faults injected into real stacks on every backend, on 127.0.0.1 only.

Leaders SIGKILLed, a state dir deleted, two commands at once, an app that breaks before a
reload, a front end killed, workers killed under load, a reload under load. Every load is
wrk against loopback, bounded in time. Figures go to $WSGISTACK_FIGURES (JSON lines) when
it is set: the README's Reliability table is made from them.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from benchmarks import wrk

from tests.conftest import FIXTURES, Stack, alive, assert_reloaded, free_port
from wsgistack.backends import BACKENDS
from wsgistack.lifecycle import processes

pytestmark = [pytest.mark.live, pytest.mark.reliability]

MANIFEST = """
[stack]
name = "rel"
base_port = {port}
start_timeout = {timeout}
[services.api]
app = "{app}"
prefix = "/api"
python_path = ["{fixtures}"]
processes = 2
env = {{ KEEP = "kept"{extra_env} }}
"""


def write(stack: Stack, port: int, app: str = "whoami:application", timeout: int = 30,
          extra_env: str = ', DROP = "dropped"') -> None:
    stack.write(MANIFEST.format(port=port, app=app, fixtures=FIXTURES, timeout=timeout,
                                extra_env=extra_env))


def record(test: str, backend: str, **figures: object) -> None:
    path = os.environ.get("WSGISTACK_FIGURES")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps({"test": test, "backend": backend, **figures}) + "\n")


def seen(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/", timeout=10) as resp:
        return json.loads(resp.read())


def answers(port: int) -> bool:
    try:
        seen(port)
    except (OSError, urllib.error.URLError, ValueError):
        return False
    return True


def wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def state_dir(stack: Stack) -> str:
    return str(stack.root / ".wsgistack")


@pytest.fixture
def up_stack(stack: Stack) -> Iterator[Callable[[str], int]]:
    """Bring the test stack up under a backend; returns its port. Whatever happens, nothing
    of it survives the test."""
    def start(backend: str) -> int:
        port = free_port()
        write(stack, port)
        res = stack.cli("up", "--detach", "--backend", backend)
        assert res.code == 0, res.err
        return port

    yield start
    stack.cli("down")
    for pid in processes.marked(state_dir(stack), nested=True):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# ---- the lifecycle ------------------------------------------------------------------------

@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_killed_leaders_are_found_refused_and_stopped(stack, up_stack, backend):
    port = up_stack(backend)
    state = state_dir(stack)
    everything = processes.marked(state, leaders=processes.load_state(state).procs)
    leaders = stack.all_pids()  # the metrics exporter too
    assert set(leaders) < set(everything)  # workers carry the marker too
    for pid in leaders:
        os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: not any(alive(p) for p in leaders), 5)
    # And a worker its server started between the two looks (gunicorn spawns its workers up
    # to 0.1 s apart, and one answering is healthy): with the leaders dead, none comes later.
    everything = sorted({*everything, *processes.marked(state)})
    orphans = [p for p in everything if alive(p)]

    again = stack.cli("up", "--detach")
    if orphans and again.code == 2:  # workers outlived their leader: named, not started over
        named = re.search(r"has processes left from an earlier run: (.*); run `wsgistack "
                          r"down` to stop them$", again.err.strip())
        assert named, again.err
        pids = [int(p.split()[0]) for p in named.group(1).split(", ")]
        assert pids and set(pids) <= set(everything)
    else:  # (uWSGI's workers follow their master out, some moments later)
        assert again.code == 0 or not [p for p in everything if alive(p)], again.err
    down = stack.cli("down")
    assert down.code == 0, down.err
    assert [p for p in everything if alive(p)] == []
    assert processes.marked(state, nested=True) == []
    record("killed leaders", backend, orphans=len(orphans))

    again = stack.cli("up", "--detach", "--backend", backend)
    assert again.code == 0, again.err
    assert answers(port)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_down_stops_a_stack_whose_state_dir_was_deleted(stack, up_stack, backend):
    up_stack(backend)
    state = state_dir(stack)
    everything = processes.marked(state)
    shutil.rmtree(state)
    res = stack.cli("down")
    assert res.code == 0
    # At least what was there: a server may have started one more (a gunicorn worker being
    # replaced) between the two looks; all of them must go.
    stopped = re.fullmatch(r"stopped (\d+) process\(es\) of stack 'rel'\n", res.err)
    assert stopped and int(stopped.group(1)) >= len(everything), res.err
    assert wait_for(lambda: not any(alive(p) for p in everything), 5)
    assert wait_for(lambda: processes.marked(state, nested=True) == [], 5)


def test_one_command_at_a_time(stack):
    write(stack, free_port())
    state = state_dir(stack)
    with processes.locked(state, "up"):
        for command in ("up", "reload", "down"):
            res = stack.cli(command)
            assert res.code == 2
            assert res.err.splitlines()[-1] + "\n" == (
                f"wsgistack: error: another wsgistack command (up, pid {os.getpid()}) is "
                f"working on the stack in {state}; wait for it to finish, then run "
                f"`wsgistack {command}` again\n")
    assert stack.all_pids() == []


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_reload_never_makes_things_worse(stack, up_stack, backend):
    port = up_stack(backend)
    before = seen(port)
    assert before["environ"]["DROP"] == "dropped"
    leaders = stack.pids()

    write(stack, port, app="broken:application")
    res = stack.cli("reload")
    assert res.code == 2
    assert res.err.splitlines()[-1] == (
        "wsgistack: error: service 'api' cannot load its app: cannot load app "
        "'broken:application': ModuleNotFoundError: No module named 'no_such_dependency_xyz' "
        f"at {FIXTURES}/broken.py:1; install no_such_dependency_xyz where the app runs "
        "(services.api.requirements) or fix the import; reload refused: the running stack is "
        "untouched; fix it and run `wsgistack reload` again")
    assert stack.pids() == leaders and seen(port)["environ"]["DROP"] == "dropped"

    write(stack, port, extra_env="")  # DROP removed from the manifest
    res = stack.cli("reload")
    assert res.code == 0, res.err
    after = seen(port)
    assert "DROP" not in after["environ"] and after["environ"]["KEEP"] == "kept"
    assert_reloaded(backend, leaders, stack.pids())


@pytest.mark.parametrize("backend", ["apache+uwsgi", "nginx+uwsgi"])
def test_status_sees_a_dead_front_end(stack, up_stack, backend):
    up_stack(backend)
    front = next(r for r in processes.load_state(state_dir(stack)).procs if r.name != "api")
    os.kill(front.pid, signal.SIGKILL)
    assert wait_for(lambda: not front.alive(), 5)
    res = stack.cli("status")
    assert res.code == 1
    # Its workers may still answer a while (degraded), or not (crashed): gone either way.
    assert re.search(f"(crashed|degraded): {front.name} \\(pid {front.pid}\\) gone; see "
                     f"wsgistack logs {front.name}", res.out), res.out
    doc = json.loads(stack.cli("status", "--json").out)
    states = {p["role"]: p["state"] for p in doc["services"][0]["processes"]
              if p["role"] != "worker"}
    assert states == {"leader": "running", "front end": "gone"}


def test_granian_respawns_a_killed_worker(stack, up_stack):
    port = up_stack("granian")
    leader = stack.pids()[0]
    workers = processes.descendants(leader)
    victim = workers[0]
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: len(set(processes.descendants(leader)) - {victim})
                    >= len(workers), 15)
    assert answers(port)
    assert stack.cli("status").code == 0


def test_start_timeout_holds_when_the_app_hangs_at_import(stack):
    write(stack, free_port(), app="hangs:application", timeout=3)
    started = time.monotonic()
    res = stack.cli("up", "--detach")
    took = time.monotonic() - started
    assert res.code == 2
    assert res.err.splitlines()[-1] == (
        "wsgistack: error: service 'api' cannot load its app: loading it did not finish in 3s "
        "(it hangs at import?); fix services.api.app; nothing was started")
    assert processes.marked(state_dir(stack), nested=True) == []
    record("hung import", "granian", start_timeout=3, seconds=round(took, 1))
    assert took < 3 + 5 + processes.STOP_GRACE


# ---- bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize(("stack_extra", "service_extra", "message"), [
    ("", "port = 70000", r"services.api.port: must be at most 65535, got 70000$"),
    ("", "port = -5", r"services.api.port: must be at least 0, got -5$"),
    ('state_dir = "/proc/wsgistack"', "",
     r"stack.state_dir: /proc/wsgistack is under /proc, which holds no files of ours; "
     r"choose a directory such as .wsgistack$"),
    ('state_dir = "st$ate"', "",
     r"stack.state_dir: /.*/st\$ate contains '\$', which server configs would read as "
     r"syntax; choose a path without it$"),
    ("", 'working_dir = "nowhere"',
     r"services.api.working_dir: /.*/nowhere is not a directory; create it or fix the "
     r"setting$"),
    ("", 'venv = "no-venv"',
     r"services.api.venv: no interpreter at /.*/no-venv/bin/python; create the venv "
     r"\(python3 -m venv DIR\) or fix the setting$"),
    ('host = "not a host"', "",
     r"stack.host: 'not a host' is not an address or a known host name \(.*\); use e.g. "
     r"127.0.0.1 or 0.0.0.0$"),
])
def test_bad_input_is_one_line_and_starts_nothing(stack, stack_extra, service_extra, message):
    stack.write(f"[stack]\nbase_port = {free_port(1)}\n{stack_extra}\n"
                f'[services.api]\napp = "wsgistack.apps.probe:application"\n{service_extra}\n')
    res = stack.cli("up", "--detach")
    assert res.code == 2
    errors = [ln for ln in res.err.splitlines() if not ln.startswith("starting stack")]
    assert len(errors) == 1 and errors[0].startswith("wsgistack: error: "), res.err
    assert re.search(message, errors[0]), res.err
    assert stack.all_pids() == []


def test_read_only_state_dir_is_one_line(stack):
    ro = stack.root / "ro"
    ro.mkdir()
    if os.system(f"mount -t tmpfs -o ro,size=1m tmpfs {ro} 2>/dev/null") != 0:
        pytest.skip("cannot mount a read-only file system here")
    try:
        stack.write(f'[stack]\nbase_port = {free_port(1)}\nstate_dir = "ro/state"\n'
                    '[services.api]\napp = "wsgistack.apps.probe:application"\n')
        res = stack.cli("up", "--detach")
        assert res.code == 2
        assert res.err.strip().endswith(
            f"stack.state_dir: cannot write {ro} (read-only file system); choose a writable "
            "directory")
    finally:
        os.system(f"umount {ro}")


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_paths_with_spaces_and_non_ascii_work(tmp_path, backend):
    """The stack, its state dir, the app's dir and the entry all live under such paths:
    every server config quotes them."""
    where = Stack(tmp_path / "my stack, été")
    apps = where.root / "app dir ü"
    apps.mkdir(parents=True)
    for d in (where.root, apps):
        d.chmod(0o755)
    shutil.copy(FIXTURES / "whoami.py", apps)
    port = free_port(1)
    where.write(MANIFEST.replace(str(FIXTURES), str(apps)).format(
        port=port, app="whoami:application", fixtures=apps, timeout=30, extra_env="")
        + f'working_dir = "{apps}"\n')
    try:
        res = where.cli("up", "--detach", "--backend", backend)
        assert res.code == 0, res.err
        got = seen(port)
        assert (got["script_name"], got["cwd"], got["environ"]["KEEP"]) == (
            "/api", str(apps), "kept")
    finally:
        assert where.cli("down").code == 0
    assert processes.marked(str(where.root / ".wsgistack"), nested=True) == []


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_idle_pooled_connections_never_block_a_third_client(stack, backend):
    """A client that pools connections (requests, keystonemiddleware) leaves them open and
    idle: on a 1-worker service, they must not hold the worker from anyone else."""
    import requests

    port = free_port()
    stack.write(MANIFEST.format(port=port, app="whoami:application", fixtures=FIXTURES,
                                timeout=30, extra_env="").replace("processes = 2",
                                                                  "processes = 1"))
    res = stack.cli("up", "--detach", "--backend", backend)
    assert res.code == 0, res.err
    url = f"http://127.0.0.1:{port}/api/"
    with requests.Session() as session:
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=2)
        session.mount("http://", adapter)
        # Two responses open at once take two connections; read, both go back to the pool.
        first, second = session.get(url, stream=True), session.get(url, stream=True)
        for resp in (first, second):
            assert resp.status_code == 200
            resp.content  # noqa: B018 - read to the end: the connection returns to the pool
            resp.close()
        pools = adapter.poolmanager.pools
        # keys(): urllib3 refuses to iterate its pool container itself.
        assert [pools[key].num_connections for key in pools.keys()] == [2]  # noqa: SIM118
        # A third client, while both pooled connections sit idle.
        with urllib.request.urlopen(url, timeout=20) as third:
            assert third.status == 200
        assert session.get(url, timeout=20).status_code == 200  # the pool still works


# ---- under load -----------------------------------------------------------------------------

LOAD_SECONDS = 4.0
CONNECTIONS = 8


@contextlib.contextmanager
def load(port: int) -> Iterator[dict[str, wrk.Result]]:
    """wrk against the service for LOAD_SECONDS (bounded), in the background."""
    out: dict[str, wrk.Result] = {}
    worker = threading.Thread(target=lambda: out.setdefault("result", wrk.run(
        f"http://127.0.0.1:{port}/api/", LOAD_SECONDS, CONNECTIONS, threads=1)))
    worker.start()
    try:
        yield out
    finally:
        worker.join(LOAD_SECONDS + 30)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_reload_under_load_loses_nothing(stack, up_stack, backend):
    port = up_stack(backend)
    write(stack, port, extra_env=', DROP = "changed"')
    with load(port) as result:
        time.sleep(1)
        res = stack.cli("reload")
        assert res.code == 0, res.err
    got = result["result"]
    record("reload under load", backend, requests=got.requests, failed=got.errors)
    assert got.requests > 0
    # uWSGI is swapped on its socket behind its front end (its HTTP router, when alone), not
    # reloaded: its own graceful stop ends a worker that has just accepted a connection.
    assert got.errors == 0, f"{got.errors} of {got.requests} failed in the reload: " \
        f"{got.detail}"
    assert seen(port)["environ"]["DROP"] == "changed"
    if backend == "granian":
        # Every old worker stopped gracefully: none was killed at workers-kill-timeout.
        log = (stack.root / ".wsgistack" / "logs" / "api.log").read_text(encoding="utf-8")
        assert "refused to gracefully stop" not in log, log


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_killed_worker_under_load_heals(stack, up_stack, backend):
    port = up_stack(backend)
    state = state_dir(stack)
    app_leader = processes.load_state(state).serving("api")[0]  # mod_wsgi: Apache
    # A process that runs the app: the app user's, under the app's leader (Apache's, under
    # mod_wsgi, whose own workers are www-data's).
    app_user = "wsgistack" if os.geteuid() == 0 else processes.owner(os.getpid())
    workers = [p for p in processes.descendants(app_leader.pid)
               if processes.owner(p) == app_user]
    assert workers, processes.describe(processes.descendants(app_leader.pid))
    with load(port) as result:
        time.sleep(1)
        os.kill(workers[0], signal.SIGKILL)
    got = result["result"]
    healed = wait_for(lambda: answers(port) and stack.cli("status").code == 0, 15)
    record("killed worker under load", backend, requests=got.requests, failed=got.errors,
           healed=healed)
    assert got.requests > 0
    assert got.errors <= CONNECTIONS, f"{got.errors} of {got.requests} failed"
    assert healed


# ---- limits ---------------------------------------------------------------------------------

def _exchange(port: int, head: bytes, body: list[bytes] = ()) -> tuple[str, float]:
    """Send a raw request; (status line, or how the connection ended; seconds taken)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            sock.sendall(head)
            for piece in body:
                sock.sendall(piece)
            answer = sock.recv(256).decode("latin-1").split("\r\n")[0] or "closed"
        except ConnectionResetError:
            answer = "reset"
        except OSError as exc:
            answer = type(exc).__name__
    return answer, time.monotonic() - started


LIMITS = """
[stack]
name = "lim"
base_port = {port}
[services.api]
app = "wsgistack.apps.probe:application"
prefix = "/api"
processes = 1
threads = 2
max_body = 1048576
upload = true
"""


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_limits_answer_at_once_and_alike(stack, backend):
    port = free_port()
    stack.write(LIMITS.format(port=port))
    assert stack.cli("up", "--detach", "--backend", backend).code == 0
    piece = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
    chunked, took = _exchange(port, b"POST /api/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                              b"chunked\r\n\r\n", [piece] * 32 + [b"0\r\n\r\n"])
    assert chunked.split(" ", 2)[1] == "413", chunked  # 2 MiB chunked over a 1 MiB limit
    fields = "".join(f"X-F{i}: v\r\n" for i in range(200)).encode()
    many, took_many = _exchange(port, b"GET /api/ HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
    big, took_big = _exchange(port, b"GET /api/ HTTP/1.1\r\nHost: x\r\nX-Big: "
                              + b"a" * 102400 + b"\r\n\r\n")
    assert many.split(" ", 2)[1] in ("400", "431"), many
    # uWSGI alone turns each header into a var with a 16-bit length: one over 64 KiB cannot
    # be parsed, and it drops the connection at once.
    refused = ("400", "431") if backend != "uwsgi" else ("reset",)
    assert (big.split(" ", 2)[1] if big.startswith("HTTP/") else big) in refused, big
    assert max(took, took_many, took_big) < 1.0
    assert answers_probe(port)  # and it serves the next request
    record("limits", backend, chunked_over_limit=chunked, fields_200=many, header_100k=big)


def answers_probe(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status/200", timeout=5) as resp:
        return resp.status == 200


@pytest.mark.parametrize("backend", ["apache+uwsgi", "mod_wsgi", "nginx+uwsgi"])
def test_front_ends_do_not_let_a_request_be_smuggled(stack, backend):
    """CL.TE and TE.CL: a request with both lengths is refused (nginx: 400), or framed by its
    Transfer-Encoding alone (Apache, RFC 9112): the app behind sees the chunked body, never
    the bytes a Content-Length would have framed, so nothing is left over to smuggle."""
    port = free_port()
    stack.write(LIMITS.format(port=port))
    assert stack.cli("up", "--detach", "--backend", backend).code == 0
    probes = [(b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG", 0),
              (b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n"
               b"0\r\n\r\n", 8)]
    for framing, chunked_length in probes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"POST /api/upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                         + framing)
            answer = b""
            with contextlib.suppress(OSError):
                while chunk := sock.recv(65536):
                    answer += chunk
        status = answer.split(b" ", 2)[1]
        if backend == "nginx+uwsgi":
            assert status == b"400", answer[:200]
            continue
        assert status == b"200", answer[:200]
        body = json.loads(answer.split(b"\r\n\r\n", 1)[1].split(b"\r\n")[-1] or b"{}")
        assert body["body_length"] == chunked_length, body


TIMEOUT = """
[stack]
name = "slow"
base_port = {port}
[services.api]
app = "slow:application"
prefix = "/api"
python_path = ["{fixtures}"]
processes = 1
timeout = 2
"""


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_a_request_past_its_timeout_is_ended_and_shown(stack, backend):
    port = free_port()
    stack.write(TIMEOUT.format(port=port, fixtures=FIXTURES))
    assert stack.cli("up", "--detach", "--backend", backend).code == 0
    started = time.monotonic()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/sleep/30", timeout=15) as r:
            outcome = f"HTTP {r.status}"
    except urllib.error.HTTPError as exc:
        outcome = f"HTTP {exc.code}"
    except (OSError, http.client.HTTPException) as exc:
        outcome = type(exc).__name__
    took = time.monotonic() - started
    record("request past timeout", backend, outcome=outcome, seconds=round(took, 1))
    if backend == "granian":  # the entry cannot reach its connection: the worker ends
        assert outcome in ("RemoteDisconnected", "ConnectionResetError"), outcome
    else:  # answered by the front end, or by the entry on the server's connection
        assert outcome in ("HTTP 503", "HTTP 504"), outcome
    assert took < 2 + 2
    log = stack.root / ".wsgistack" / "logs" / "api.log"  # under mod_wsgi too: the entry's
    assert wait_for(lambda: "wsgistack: request GET /api/sleep/30 still running after 2s "
                    "(timeout); where it is:" in log.read_text(errors="replace"), 5)
    assert "in application" in log.read_text(errors="replace")  # the stack reaches the app
    assert wait_for(lambda: _get_ok(f"http://127.0.0.1:{port}/api/"), 10)


def _get_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.status == 200
    except (OSError, http.client.HTTPException):
        return False


# ---- slow clients -----------------------------------------------------------------------------

SLOW_HEADERS = 256
SLOW_BODIES = 64
SLOW_SECONDS = 6.0
# Backends whose front end reads whole requests before a worker is given one: nginx. The
# others were measured starved by these clients (the README's Reliability table).
SAFE_FROM_SLOW_CLIENTS = ("nginx+uwsgi",)
# ...and those that hold slow headers without a worker: granian (in Rust) and uWSGI's HTTP
# router (asynchronous); a slow body still holds the worker it is streamed to.
SAFE_FROM_SLOW_HEADERS = ("granian", "nginx+uwsgi", "uwsgi")


def slow_clients(port: int, seconds: float, headers: int = SLOW_HEADERS,
                 bodies: int = SLOW_BODIES) -> Iterator[list[socket.socket]]:
    """`headers` connections sending their headers a byte at a time, `bodies` sending a
    declared body a byte at a time, every 0.5 s, for `seconds` at most."""
    socks: list[socket.socket] = []
    try:
        for i in range(headers + bodies):
            with contextlib.suppress(OSError):
                sock = socket.create_connection(("127.0.0.1", port), timeout=2)
                socks.append(sock)
                sock.setblocking(False)
                sock.send(b"GET /api/ HTTP/1.1\r\nHost: x\r\n" if i < headers else
                          b"POST /api/upload HTTP/1.1\r\nHost: x\r\n"
                          b"Content-Length: 100000\r\n\r\n")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            yield socks
            for sock in socks:
                with contextlib.suppress(OSError):
                    sock.send(b"x")
            time.sleep(0.5)
    finally:
        for sock in socks:
            sock.close()


def answers_while_held(stack: Stack, backend: str, headers: int, bodies: int
                       ) -> tuple[list[float], int]:
    """Up to 6 normal requests while the slow clients hold on: how long each took, and how
    many failed."""
    port = free_port()
    stack.write(LIMITS.format(port=port))
    assert stack.cli("up", "--detach", "--backend", backend).code == 0
    waits, failed = [], 0
    with contextlib.closing(slow_clients(port, SLOW_SECONDS, headers, bodies)) as attack:
        for socks in attack:
            if len(socks) < (headers + bodies) * 3 // 4:
                break  # the server refused them: nothing was held
            started = time.monotonic()
            ok = _get_ok(f"http://127.0.0.1:{port}/api/status/200")
            waits.append(time.monotonic() - started)
            failed += not ok
            if len(waits) >= 6:
                break
    return waits, failed


@pytest.mark.parametrize("backend", SAFE_FROM_SLOW_CLIENTS)
def test_slow_clients_do_not_starve_the_others(stack, backend):
    waits, failed = answers_while_held(stack, backend, SLOW_HEADERS, SLOW_BODIES)
    record("slow clients", backend, slowest_answer=round(max(waits), 2) if waits else None,
           failed=failed)
    assert waits and failed == 0 and max(waits) < 2.0, (waits, failed)


@pytest.mark.parametrize("backend", SAFE_FROM_SLOW_HEADERS)
def test_slow_headers_do_not_starve_the_others(stack, backend):
    waits, failed = answers_while_held(stack, backend, SLOW_HEADERS, 0)
    record("slow headers", backend, slowest_answer=round(max(waits), 2) if waits else None,
           failed=failed)
    assert waits and failed == 0 and max(waits) < 2.0, (waits, failed)
