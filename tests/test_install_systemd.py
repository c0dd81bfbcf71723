"""`wsgistack install` under a real systemd: a Debian root made by mmdebstrap, its systemd
booted in pid and mount namespaces of its own (tests/systemd_root.py), wsgistack installed
inside from this checkout. For each backend the stack is installed there, served to this
host on 127.0.0.1 (the root shares our network), reloaded and stopped through systemctl:
`Type=notify` units reach `active`, a reload keeps the master and replaces its workers with
no failed request, a stop leaves no process, `uninstall --purge` leaves nothing."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import systemd_root
from tests.conftest import free_port
from tests.test_install import make_cert

pytestmark = [pytest.mark.live, pytest.mark.systemd,
              pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mmdebstrap"),
                                 reason="needs root and mmdebstrap")]

REPO = Path(__file__).parent.parent
INCLUDE = [*systemd_root.DEFAULT_INCLUDE, "procps"]
STACK = """\
[stack]
name = "sd"
base_port = {port}
# Not base_port + 90, the default: a port nobody checked may be a client's.
metrics = "127.0.0.1:{metrics}"
[services.catalog]
app = "wsgistack.apps.catalog:application"
prefix = "/"
[services.probe]
app = "wsgistack.apps.probe:application"
prefix = "/probe"
health_path = "/status/200"
[services.hello]
app = "wsgistack.apps.hello:application"
prefix = "/hello"
"""


@pytest.fixture(scope="module")
def booted() -> Iterator[systemd_root.Booted]:
    root = Path(tempfile.mkdtemp(prefix="wsgistack-sdroot-"))
    try:
        systemd_root.make_root(root, INCLUDE, apache_listen=f"127.0.0.1:{free_port(1)}",
                               nginx_listen=f"127.0.0.1:{free_port(1)}")
        shutil.copytree(REPO, root / "opt/wsgistack-src", ignore=shutil.ignore_patterns(
            ".git", "__pycache__", "*.egg-info", "build", ".venv", ".mypy_cache",
            ".ruff_cache", ".pytest_cache", ".wsgistack*", ".install-test-*"))
        with systemd_root.booted_systemd(root) as sd:
            sd.run("python3", "-m", "venv", "/opt/wsgistack", check=True)
            done = sd.run("/opt/wsgistack/bin/pip", "install", "-q", "/opt/wsgistack-src[servers]",
                          timeout=600)
            assert done.returncode == 0, done.stdout + done.stderr
            yield sd
    finally:
        systemd_root.remove_root(root)


def _get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def _show(sd: systemd_root.Booted, unit: str, *props: str) -> dict[str, str]:
    out = sd.run("systemctl", "show", "-p", ",".join(props), unit, check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _workers(sd: systemd_root.Booted, main: str) -> set[str]:
    return set(sd.run("pgrep", "-P", main).stdout.split())


class Load:
    """A bounded client loop (at most `limit` requests, `seconds` long) run beside a
    reload: what failed is counted."""

    def __init__(self, port: int, path: str, limit: int = 2000, seconds: float = 20) -> None:
        self.port, self.path, self.limit, self.seconds = port, path, limit, seconds
        self.ok = self.failed = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.seconds
        while not self.stop.is_set() and self.ok + self.failed < self.limit \
                and time.monotonic() < deadline:
            try:
                status = _get(self.port, self.path)
            except OSError:
                status = 0
            if status == 200:
                self.ok += 1
            else:
                self.failed += 1

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


@pytest.mark.parametrize("backend", ["apache+uwsgi", "nginx+uwsgi", "granian", "gunicorn"])
def test_installed_units_start_reload_and_stop_under_systemd(booted, backend):
    sd = booted
    port = free_port()
    (sd.root / "opt/stack").mkdir(exist_ok=True)
    metrics = free_port(1)
    (sd.root / "opt/stack/wsgistack.toml").write_text(STACK.format(port=port, metrics=metrics))
    front = backend in ("apache+uwsgi", "nginx+uwsgi")
    args = ["--port", str(port)] if front else []
    done = sd.run("/opt/wsgistack/bin/wsgistack", "-f", "/opt/stack/wsgistack.toml", "install",
                  "--backend", backend, *args, timeout=300)
    try:
        assert done.returncode == 0, done.stderr
        assert "every service healthy" in done.stderr
        hello = port + 2 if not front else port  # alone, each service has its own port
        assert _get(hello, "/hello/") == 200
        units = [f"wsgistack-sd-{name}.service" for name in ("catalog", "probe", "hello")]
        kind = "notify" if backend != "granian" else "exec"
        for unit in units:
            shown = _show(sd, unit, "ActiveState", "Type", "User")
            assert shown == {"ActiveState": "active", "Type": kind, "User": "wsgistack"}
        _the_exporter_counts(sd, metrics, hello)

        # systemctl reload: the same master, new workers, nobody turned away.
        unit = units[2]
        main = _show(sd, unit, "MainPID")["MainPID"]
        before = _workers(sd, main)
        with Load(hello, "/hello/") as load:
            time.sleep(0.5)
            sd.run("systemctl", "reload", unit, check=True)
            deadline = time.monotonic() + 30
            while _workers(sd, main) & before or len(_workers(sd, main)) < len(before):
                assert time.monotonic() < deadline, "the workers were not replaced"
                time.sleep(0.1)
            time.sleep(0.5)
        assert _show(sd, unit, "MainPID", "ActiveState") == {"MainPID": main,
                                                             "ActiveState": "active"}
        assert load.ok > 0 and load.failed == 0, (load.ok, load.failed)

        # Installed again with one service changed: that one is reloaded (uWSGI: its ini
        # changed) or restarted (its command line, in the unit, changed), the rest untouched.
        others = {u: _show(sd, u, "MainPID")["MainPID"] for u in units[:2]}
        changed = STACK.format(port=port, metrics=metrics).replace(
            'prefix = "/hello"\n', 'prefix = "/hello"\nprocesses = 3\n')
        (sd.root / "opt/stack/wsgistack.toml").write_text(changed)
        again = sd.run("/opt/wsgistack/bin/wsgistack", "-f", "/opt/stack/wsgistack.toml",
                       "install", "--backend", backend, *args, timeout=300)
        assert again.returncode == 0, again.stderr
        how = "reloaded" if "uwsgi" in backend else "restarted"
        assert f"  {how} {unit}\n" in again.stderr, again.stderr
        assert {u: _show(sd, u, "MainPID")["MainPID"] for u in units[:2]} == others
        deadline = time.monotonic() + 30
        while len(_workers(sd, _show(sd, unit, "MainPID")["MainPID"])) != 3:
            assert time.monotonic() < deadline, "hello does not run 3 processes"
            time.sleep(0.1)
        assert _get(hello, "/hello/") == 200

        # Stopping the stack's target stops every unit, and leaves no process of it.
        # (`systemctl stop` of the target returns before its units' graceful stops end.)
        sd.run("systemctl", "stop", "wsgistack-sd.target", check=True)
        deadline = time.monotonic() + 30
        while {_show(sd, u, "ActiveState")["ActiveState"] for u in units} != {"inactive"}:
            assert time.monotonic() < deadline, "the units did not stop"
            time.sleep(0.1)
        assert sd.run("pgrep", "-u", "wsgistack").stdout == ""
    finally:
        gone = sd.run("/opt/wsgistack/bin/wsgistack", "-f", "/opt/stack/wsgistack.toml",
                      "uninstall", "--purge")
    assert gone.returncode == 0, gone.stderr
    for path in ("etc/wsgistack", "var/lib/wsgistack", "var/log/wsgistack",
                 "etc/systemd/system/wsgistack-sd.target"):
        assert not (sd.root / path).exists(), path


def test_installed_mod_wsgi_is_counted_by_the_exporter(booted):
    """mod_wsgi's daemons are Apache's, with no unit to make their metrics dirs:
    systemd-tmpfiles' file makes them (now, and at every boot), the exporter counts them."""
    sd = booted
    port, metrics = free_port(), free_port(1)
    (sd.root / "opt/stack").mkdir(exist_ok=True)
    (sd.root / "opt/stack/wsgistack.toml").write_text(STACK.format(port=port, metrics=metrics))
    tmpfiles = sd.root / "etc/tmpfiles.d/wsgistack-sd.conf"
    done = sd.run("/opt/wsgistack/bin/wsgistack", "-f", "/opt/stack/wsgistack.toml", "install",
                  "--backend", "mod_wsgi", "--port", str(port), timeout=300)
    try:
        assert done.returncode == 0, done.stderr
        assert "d /run/wsgistack/sd/metrics/hello 0700 wsgistack wsgistack -" in \
            tmpfiles.read_text()
        _the_exporter_counts(sd, metrics, port)
    finally:
        gone = sd.run("/opt/wsgistack/bin/wsgistack", "-f", "/opt/stack/wsgistack.toml",
                      "uninstall", "--purge")
    assert gone.returncode == 0, gone.stderr
    assert not tmpfiles.exists() and not (sd.root / "run/wsgistack/sd/metrics").exists()


def _the_exporter_counts(sd: systemd_root.Booted, metrics_port: int, hello: int) -> None:
    """The installed stack's metrics endpoint, as `up` has it: a unit of its own, a user of
    its own, the services' requests counted (each worker writes them once a second)."""
    unit = "wsgistack-sd-metrics.service"
    shown = _show(sd, unit, "ActiveState", "DynamicUser")
    assert shown == {"ActiveState": "active", "DynamicUser": "yes"}, shown
    for _ in range(3):
        assert _get(hello, "/hello/") == 200
    want = 'wsgistack_http_requests_total{code="200",method="GET",service="hello"}'
    deadline, text = time.monotonic() + 30, ""
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", metrics_port, timeout=10)
        try:
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode()
        except OSError:
            text = ""
        finally:
            conn.close()
        counted = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(want)]
        if counted and counted[0] >= 3:
            return
        time.sleep(0.5)
    raise AssertionError(f"hello's requests never counted: {text[-2000:]}")


def _https(port: int, path: str, ca: Path, method: str = "GET", body: str = "",
           headers: dict[str, str] | None = None) -> int:
    ctx = ssl.create_default_context(cafile=str(ca))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


@pytest.mark.openstack
def test_openstack_installed_under_systemd_serves_http_and_https(booted):
    """examples/openstack installed as an operator would (apache+uwsgi, TLS): Keystone and
    Placement through the system Apache, over HTTP and HTTPS; a token over HTTPS."""
    sd = booted
    inside = "/opt/wsgistack-src/examples/openstack"
    here = sd.root / inside.lstrip("/")
    cert, _key = make_cert(here, "tls")
    (here / "tls.toml").write_text('[stack]\nextends = "wsgistack.toml"\n'
                                   '[stack.tls]\ncert = "tls.pem"\nkey = "tls.key"\n')
    port, tls_port = free_port(1), free_port(1)
    done = sd.run("/opt/wsgistack/bin/wsgistack", "-f", f"{inside}/tls.toml", "install",
                  "--backend", "apache+uwsgi", "--port", str(port), "--tls-port",
                  str(tls_port), timeout=900)
    try:
        assert done.returncode == 0, done.stderr
        for path in ("/identity/v3", "/placement/"):
            assert _get(port, path) == 200, path
            assert _https(tls_port, path, cert) == 200, path
        token = json.dumps({"auth": {"identity": {"methods": ["password"], "password": {
            "user": {"name": "admin", "domain": {"id": "default"}, "password": "s3cr3t"}}},
            "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}})
        assert _https(tls_port, "/identity/v3/auth/tokens", cert, "POST", token,
                      {"Content-Type": "application/json"}) == 201
        for name in ("keystone", "placement", "glance"):
            assert _show(sd, f"wsgistack-openstack-{name}.service", "ActiveState",
                         "User") == {"ActiveState": "active", "User": "wsgistack"}
    finally:
        gone = sd.run("/opt/wsgistack/bin/wsgistack", "-f", f"{inside}/tls.toml",
                      "uninstall", "--purge")
    assert gone.returncode == 0, gone.stderr
    assert not (sd.root / "etc/wsgistack/openstack").exists()
