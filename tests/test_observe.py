"""Live: one access line per request, the same on every backend; request ids kept only from
a trusted proxy; under mod_wsgi the app's traceback in its service's own log; `logs -f`."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Stack, free_port

pytestmark = pytest.mark.live

BACKENDS = ["granian", "gunicorn", "uwsgi", "mod_wsgi", "apache+uwsgi", "nginx+uwsgi"]
PROXY = "127.0.0.2"  # a trusted proxy: the test connects from this loopback address
FRONT_DOORS = {"mod_wsgi", "apache+uwsgi", "nginx+uwsgi"}
COMBINED = re.compile(
    r'^(?P<client>\S+) - - \[(?P<time>[^]]+)\] "(?P<request>[^"]*)" (?P<status>\d{3}) '
    r'(?P<bytes>\d+|-) "(?P<referer>[^"]*)" "(?P<agent>[^"]*)" (?P<us>\d+) (?P<id>\S+) '
    r'(?P<app_id>\S+) (?P<service>\S+)$')


def send(port: int, method: str, path: str, body: bytes = b"", source: str = "127.0.0.1",
         headers: dict[str, str] | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30,
                                      source_address=(source, 0))
    try:
        conn.request(method, path, body=body or None,
                     headers={"User-Agent": "observe-test/1", **(headers or {})})
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.getheader("X-Request-Id") or ""
    finally:
        conn.close()


def manifest(port: int, backend: str, fmt: str = "combined") -> str:
    return f"""
[stack]
name = "obs"
backend = "{backend}"
base_port = {port}
start_timeout = 30
access_log = "{fmt}"
trusted_proxies = ["{PROXY}"]
[services.probe]
app = "wsgistack.apps.probe:application"
processes = 1
"""


def the_five(port: int) -> list[tuple[int, str]]:
    return [
        # The probe's /status/NNN: an answer of the same size from every server.
        send(port, "GET", "/probe/status/200?page=2&q=a%20b"),
        send(port, "POST", "/probe/status/201", b'{"x": 1}',
             headers={"Content-Type": "application/json"}),
        send(port, "GET", "/probe/raise"),
        send(port, "GET", "/probe/status/203", source=PROXY,
             headers={"X-Request-Id": "req-from-proxy", "X-Forwarded-For": "203.0.113.9"}),
        send(port, "GET", "/probe/status/202",
             headers={"X-Request-Id": "req-from-client", "X-Forwarded-For": "203.0.113.9"}),
    ]


def access_lines(stack: Stack, count: int) -> list[str]:
    log = stack.root / ".wsgistack" / "logs" / "probe-access.log"
    deadline = time.monotonic() + 10  # a line is written when the server closes the answer
    while time.monotonic() < deadline:
        lines = log.read_text().splitlines()
        if len(lines) >= count:
            return lines
        time.sleep(0.05)
    return log.read_text().splitlines()


@pytest.fixture(scope="module")
def seen(shared: Stack) -> dict[str, list[dict[str, str]]]:
    """The five requests on each backend, their access lines parsed."""
    out = {}
    for backend in BACKENDS:
        port = free_port(2)
        shared.write(manifest(port, backend))
        up = shared.cli("up", "--detach")
        assert up.code == 0, up.err
        try:
            log = shared.root / ".wsgistack" / "logs" / "probe-access.log"
            before = len(log.read_text().splitlines())
            answers = the_five(port)
            assert [status for status, _ in answers] == [200, 201, 500, 203, 202], answers
            assert answers[3][1] == "req-from-proxy" and answers[4][1] != "req-from-client"
            lines = access_lines(shared, before + 5)[before:]
            assert len(lines) == 5, lines  # and no line for the health checks
            parsed = []
            for text in lines:
                match = COMBINED.match(text)
                assert match, text
                parsed.append(match.groupdict())
            out[backend] = parsed
            errors = shared.cli("logs", "probe", "--errors", "-n", "200")
            assert "the probe raised, as asked" in errors.out, (backend, errors.out)
            apache = shared.root / ".wsgistack" / "logs" / "apache.log"
            assert not apache.exists() or "AH01630" not in apache.read_text()
        finally:
            shared.cli("down")
    return out


@pytest.fixture(scope="module")
def shared() -> Iterator[Stack]:
    """Where Apache's and nginx's workers (www-data) reach the sockets: not under pytest's
    private /tmp/pytest-of-root."""
    root = Path(tempfile.mkdtemp(prefix="wsgistack-observe-", dir="/tmp"))
    root.chmod(0o755)
    yield Stack(root)
    Stack(root).cli("down")
    shutil.rmtree(root, ignore_errors=True)


def test_the_same_request_gives_the_same_line_on_every_backend(seen) -> None:
    fields = ("client", "request", "status", "bytes", "referer", "agent", "service", "app_id")
    reference = [{k: line[k] for k in fields} for line in seen["granian"]]
    for backend in BACKENDS:
        got = [{k: line[k] for k in fields} for line in seen[backend]]
        assert got == reference, backend
    assert [r["request"] for r in reference] == [
        "GET /probe/status/200?page=2&q=a%20b HTTP/1.1", "POST /probe/status/201 HTTP/1.1",
        "GET /probe/raise HTTP/1.1", "GET /probe/status/203 HTTP/1.1",
        "GET /probe/status/202 HTTP/1.1"]
    assert [r["status"] for r in reference] == ["200", "201", "500", "203", "202"]
    # Behind the trusted proxy the client is the address it forwarded; from anyone else the
    # X-Forwarded-For is not believed.
    assert [r["client"] for r in reference] == ["127.0.0.1"] * 3 + ["203.0.113.9", "127.0.0.1"]


def test_request_ids_are_kept_only_from_a_trusted_proxy(seen) -> None:
    for backend, lines in seen.items():
        ids = [line["id"] for line in lines]
        assert ids[3] == "req-from-proxy", backend
        assert ids[4] != "req-from-client" and re.fullmatch(r"[0-9a-f]{32}", ids[4]), backend
        assert len(set(ids)) == 5 and all(int(line["us"]) > 0 for line in lines)


def test_json_format_and_logs_follow(shared: Stack) -> None:
    port = free_port(2)
    shared.write(manifest(port, "granian", fmt="json"))
    assert shared.cli("up", "--detach").code == 0
    assert send(port, "GET", "/probe/first")[0] == 200
    access_lines(shared, 1)
    follower = subprocess.Popen(
        [sys.executable, "-m", "wsgistack", "logs", "probe", "--access", "-f", "-n", "1"],
        cwd=shared.root, stdout=subprocess.PIPE, text=True)
    try:
        assert follower.stdout is not None
        assert json.loads(follower.stdout.readline())["path"] == "/probe/first"
        assert send(port, "GET", "/probe/followed?x=1")[0] == 200  # made after it started
        line = json.loads(follower.stdout.readline())
        assert (line["method"], line["path"], line["status"], line["service"]) == (
            "GET", "/probe/followed?x=1", 200, "probe")
        assert line["user_agent"] == "observe-test/1" and line["duration_us"] > 0
    finally:
        follower.terminate()
        follower.wait(timeout=10)
        if follower.stdout is not None:
            follower.stdout.close()
        shared.cli("down")


def test_no_stale_lines_after_a_change_of_backend(shared: Stack) -> None:
    port = free_port(2)
    shared.write(manifest(port, "granian"))
    assert shared.cli("up", "--detach").code == 0
    shared.cli("down")
    shared.write(manifest(port, "mod_wsgi"))
    assert shared.cli("up", "--detach").code == 0
    try:
        shown = shared.cli("logs", "probe", "-n", "1").out.strip()
        assert shown == "--- wsgistack: starting probe under mod_wsgi", shown
    finally:
        shared.cli("down")



def _query(port: int, expr: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.loads(resp.read())["data"]["result"]
    except OSError:  # not listening yet
        return []


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_real_prometheus_counts_what_was_sent(shared: Stack, tmp_path: Path,
                                                backend: str) -> None:
    """Debian's Prometheus, scraping the stack's endpoint every second, answers with the
    counts the test sent; a held request shows in flight."""
    if not shutil.which("prometheus"):
        pytest.skip("Debian's prometheus is not installed (tools/test.sh installs it)")
    port, metrics_port, prom_port = free_port(2), free_port(1), free_port(1)
    shared.write(manifest(port, backend).replace(
        "trusted_proxies", f'metrics = "127.0.0.1:{metrics_port}"\ntrusted_proxies'))
    assert shared.cli("up", "--detach").code == 0
    config = tmp_path / "prometheus.yml"
    config.write_text("global: {scrape_interval: 1s}\nscrape_configs:\n"
                      "  - job_name: wsgistack\n"
                      f"    static_configs: [{{targets: ['127.0.0.1:{metrics_port}']}}]\n")
    server = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path}/db",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _query(prom_port, "up == 1"):
            time.sleep(0.2)  # readiness: Prometheus has scraped the stack once
        assert _query(prom_port, "up == 1"), "Prometheus never scraped the stack"
        sent = [send(port, "GET", "/probe/status/200")[0] for _ in range(7)]
        sent += [send(port, "GET", "/probe/raise")[0] for _ in range(2)]
        assert sent == [200] * 7 + [500] * 2
        held = threading.Thread(target=send, args=(port, "GET", "/probe/sleep/4"))
        held.start()  # in flight while Prometheus scrapes
        want = {("probe", "200"): 7.0, ("probe", "500"): 2.0}
        got: dict[tuple[str, str], float] = {}
        in_flight = 0.0
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and (got != want or in_flight < 1):
            got = {(r["metric"]["service"], r["metric"]["code"]): float(r["value"][1])
                   for r in _query(prom_port, "sum by (service, code) "
                                   "(wsgistack_http_requests_total)")}
            if got.get(("probe", "200"), 0) > 7:  # the held request, answered meanwhile
                got[("probe", "200")] -= 1
            flight = _query(prom_port, "max_over_time(wsgistack_http_requests_in_flight[1m])")
            in_flight = max((float(r["value"][1]) for r in flight), default=0.0)
            time.sleep(0.5)
        held.join(timeout=30)
        assert got == want and in_flight >= 1, (got, in_flight)
        _servers_tell_their_workers(prom_port, backend)
        status = shared.cli("status", "--json")
        assert json.loads(status.out)["metrics"] == f"http://127.0.0.1:{metrics_port}/metrics"
    finally:
        server.terminate()
        server.wait(timeout=30)
        shared.cli("down")


def _servers_tell_their_workers(prom_port: int, backend: str) -> None:
    """The probe's one worker process: busy or idle from uWSGI's stats (busy while the held
    request was), running from the others; nginx's own counts from its stub_status."""
    states = {r["metric"]["state"]: float(r["value"][1]) for r in _query(
        prom_port, 'sum by (state) (wsgistack_server_workers{service="probe"})')}
    if "uwsgi" in backend:
        assert set(states) <= {"busy", "idle"} and sum(states.values()) == 1, states
        busy = _query(prom_port, 'max_over_time(wsgistack_server_workers'
                                 '{service="probe",state="busy"}[1m])')
        assert busy and float(busy[0]["value"][1]) == 1, busy
    else:
        assert states == {"running": 1.0}, states
    nginx = _query(prom_port, "wsgistack_nginx_requests_total")
    assert bool(nginx and float(nginx[0]["value"][1]) >= 9) == (backend == "nginx+uwsgi"), nginx

