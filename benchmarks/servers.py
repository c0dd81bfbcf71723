"""The servers a benchmark drives: stacks brought up by wsgistack, and the same servers
started by hand with the minimal equivalent command, each in its own process group.

Both sides get the same server, the same app, the same processes and threads; the by-hand
side serves the app at `/`, wsgistack under its prefix (mounting is part of its cost).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from wsgistack.lifecycle.health import http_status
from wsgistack.lifecycle.preflight import free_ports
from wsgistack.lifecycle.processes import load_state

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
HELLO = "wsgistack.apps.hello:application"
PROBE = "wsgistack.apps.probe:application"


@dataclass(frozen=True)
class Target:
    label: str
    url: str  # the base URL; workloads append their paths
    pids: tuple[int, ...]  # process group leaders, for RSS


def wsgistack_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "wsgistack"), *args], cwd=cwd, text=True,
                          capture_output=True, check=False)


def manifest(services: dict[str, str], port: int, processes: int, threads: int,
             backend: str = "granian", stack_settings: str = "") -> str:
    lines = [f'[stack]\nname = "bench"\nbackend = "{backend}"\nbase_port = {port}\n'
             + stack_settings]
    for name, app in services.items():
        lines.append(
            f'[services.{name}]\napp = "{app}"\nprocesses = {processes}\nthreads = {threads}\n'
            f'max_body = 0\nhealth_path = "{"/status/200" if app == PROBE else "/"}"\n'
            # The probe takes the uploads: as an upload service would, it reads them as
            # they arrive.
            + ("upload = true\n" if app == PROBE else ""))
    return "\n".join(lines)


@dataclass(frozen=True)
class Stack:
    backend: str
    urls: dict[str, str]  # service -> base URL, no trailing slash
    procs: dict[str, int]  # process name -> process group leader
    up_seconds: float


def running_stack(workdir: Path) -> tuple[dict[str, str], dict[str, int]]:
    """The URL of each service (no trailing slash) and the pid of each process of the stack
    that is up in `workdir`, from its state."""
    state = load_state(str(workdir / ".wsgistack"))
    if state is None:
        return {}, {}
    return ({s.name: s.url.rstrip("/") for s in state.services},
            {r.name: r.pid for r in state.procs})


@contextlib.contextmanager
def wsgistack_stack(workdir: Path, backend: str, services: dict[str, str], processes: int,
                    threads: int, stack_settings: str = "") -> Iterator[Stack]:
    """The stack brought up by `wsgistack up --detach` under `backend`, and down after."""
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)  # Apache's and nginx's worker user walks into it
    port = free_ports("127.0.0.1", len(services))
    (workdir / "wsgistack.toml").write_text(manifest(services, port, processes, threads,
                                                     backend, stack_settings))
    started = time.perf_counter()
    res = wsgistack_cli("up", "--detach", cwd=workdir)
    took = time.perf_counter() - started
    if res.returncode != 0:
        raise RuntimeError(f"wsgistack up ({backend}) failed: {res.stderr.strip()}")
    try:
        urls, procs = running_stack(workdir)
        yield Stack(backend, urls, procs, took)
    finally:
        wsgistack_cli("down", cwd=workdir)


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        if http_status(url, timeout=1.0)[0] == 200:
            return
        time.sleep(0.05)
    raise RuntimeError(f"{url} not ready after {timeout}s")


@contextlib.contextmanager
def by_hand(label: str, argv: list[str], port: int, workdir: Path,
            env: dict[str, str] | None = None) -> Iterator[Target]:
    workdir.mkdir(parents=True, exist_ok=True)
    log = open(workdir / f"{label.replace(' ', '_')}.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(argv, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, **(env or {})})
    try:
        _wait_ready(f"http://127.0.0.1:{port}/", proc)
        yield Target(label, f"http://127.0.0.1:{port}", (proc.pid,))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def hand_command(backend: str, port: int, processes: int, threads: int,
                 workdir: Path) -> list[str] | None:
    """The minimal command a person would type to serve the hello app with `backend`."""
    py = str(VENV_BIN / "python")
    if backend in ("granian", "granian access-log"):
        return [py, "-m", "granian", "--interface", "wsgi", "--host", "127.0.0.1",
                "--port", str(port), "--workers", str(processes),
                "--blocking-threads", str(threads), "--no-ws",
                *(["--access-log"] if backend == "granian access-log" else []), HELLO]
    if backend == "gunicorn":
        return [py, "-m", "gunicorn", "-k", "gthread", "-w", str(processes),
                "--threads", str(threads), "-b", f"127.0.0.1:{port}", HELLO]
    if backend == "uwsgi":
        # As uWSGI's documentation has it serve clients itself: its HTTP router (`--http`,
        # embedded: it makes the workers' socket), with keep-alive.
        return ["uwsgi", "--plugin", "python3,http", "--http", f"127.0.0.1:{port}",
                "--http-keepalive=60", "--http-auto-chunked",  # its value needs the `=`
                "--master", "--processes", str(processes), "--threads", str(threads),
                "--virtualenv", sys.prefix, "--module", HELLO, "--disable-logging",
                "--die-on-term"]
    if backend == "uwsgi http-socket":
        # One request per connection: what `--http-socket` gives (for behind a proxy).
        return ["uwsgi", "--plugin", "python3", "--http-socket", f"127.0.0.1:{port}",
                "--master", "--processes", str(processes), "--threads", str(threads),
                "--virtualenv", sys.prefix, "--module", HELLO, "--disable-logging",
                "--die-on-term"]
    express = VENV_BIN / "mod_wsgi-express"
    if backend == "mod_wsgi" and express.exists():
        script = workdir / "hello.wsgi"
        workdir.mkdir(parents=True, exist_ok=True)
        script.write_text(f"from {HELLO.replace(':', ' import ')}\n")
        user = ["--user", "www-data", "--group", "www-data"] if os.geteuid() == 0 else []
        return [str(express), "start-server", "--host", "127.0.0.1", "--port", str(port),
                "--processes", str(processes), "--threads", str(threads),
                "--server-root", str(workdir / "express"), *user, str(script)]
    return None


def nginx_return_200(port: int, workdir: Path) -> list[str]:
    """nginx answering from its config: the machine's HTTP upper bound."""
    workdir.mkdir(parents=True, exist_ok=True)
    for sub in ("logs", "tmp"):
        (workdir / sub).mkdir(exist_ok=True)
    (workdir / "nginx.conf").write_text(
        "daemon off;\nworker_processes 2;\npid nginx.pid;\nerror_log logs/error.log;\n"
        "events { worker_connections 1024; }\n"
        "http {\n access_log off;\n client_body_temp_path tmp;\n"
        f" server {{\n  listen 127.0.0.1:{port};\n"
        '  location / { return 200 "Hello, world!\\n"; }\n }\n}\n')
    return [shutil.which("nginx") or "nginx", "-c", str(workdir / "nginx.conf"),
            "-p", str(workdir)]


def wsgiref_command(port: int) -> list[str]:
    """The plain "Python command" way: the stdlib's wsgiref server, one request at a time."""
    code = ("import sys; from wsgiref.simple_server import make_server, WSGIRequestHandler\n"
            "from wsgistack.apps.hello import application\n"
            "class Quiet(WSGIRequestHandler):\n"
            "    def log_message(self, *a): pass\n"
            "make_server('127.0.0.1', int(sys.argv[1]), application,"
            " handler_class=Quiet).serve_forever()\n")
    return [str(VENV_BIN / "python"), "-c", code, str(port)]


def peak_rss_mib(pids: tuple[int, ...]) -> float:
    """Peak resident memory (VmHWM) summed over every process in these process groups."""
    groups = set(pids)
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[2]) not in groups:  # field 5: process group
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1024
