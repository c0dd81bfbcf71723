"""`wsgistack install` for real, on this machine's own Apache (Debian's apache2, started
and stopped by the test when it was not running): mod_wsgi needs no systemd, so the whole
stack serves here. HTTP and HTTPS (a certificate made in the test), the app's user, a
failing check that leaves the earlier install serving, and `uninstall --purge` leaving
/etc, /var/lib, /var/log and the enabled sites and modules as they were."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, free_port, run_cli
from tests.test_install import make_cert

pytestmark = [pytest.mark.live,
              pytest.mark.skipif(os.geteuid() != 0, reason="install writes /etc: root only")]

WATCHED = ("/etc", "/var/lib", "/var/log", "/run")
# What Apache itself writes as it runs, whoever's site it serves.
APACHE_OWN = ("/var/log/apache2/", "/run/apache2/", "/var/lib/apache2/", "/run/lock/apache2")


def listing() -> set[str]:
    found = set()
    for top in WATCHED:
        for root, dirs, files in os.walk(top):
            if root.startswith(("/run/user", "/run/systemd")):
                continue
            for name in dirs + files:
                path = os.path.join(root, name)
                if not path.startswith(APACHE_OWN):
                    found.add(path)
    return found


def _apache_running() -> bool:
    return subprocess.run(["pgrep", "-f", "^/usr/sbin/apache2 -k"], capture_output=True,
                          check=False).returncode == 0


@pytest.fixture
def system_apache() -> Iterator[None]:
    """Debian's Apache: left running if it was, stopped again if the test started it."""
    if not shutil.which("apache2ctl"):
        pytest.skip("no apache2")
    was_running = _apache_running()
    if not was_running:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("0.0.0.0", 80))
            except OSError:
                pytest.skip("port 80 is taken here: Debian's Apache cannot start its own site")
    try:
        yield
    finally:
        if not was_running:
            subprocess.run(["apache2ctl", "stop"], capture_output=True, check=False)


@pytest.fixture
def stack_dir() -> Iterator[Path]:
    """Installed services cannot see /tmp (PrivateTmp): the manifest lives beside the
    repository, in a directory of its own."""
    where = Path(tempfile.mkdtemp(prefix=".install-test-", dir=Path(__file__).parent.parent))
    where.chmod(0o755)
    yield where
    shutil.rmtree(where, ignore_errors=True)


def _get(url_port: int, path: str, tls: Path | None = None) -> tuple[int, str]:
    if tls:
        ctx = ssl.create_default_context(cafile=str(tls))
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            "127.0.0.1", url_port, context=ctx, timeout=10)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", url_port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def test_install_serves_over_http_and_https_and_uninstall_leaves_nothing(
        system_apache, stack_dir):
    cert, _key = make_cert(stack_dir, "site")
    (stack_dir / "wsgistack.toml").write_text(
        '[stack]\nname = "livetest"\n[stack.tls]\ncert = "site.pem"\nkey = "site.key"\n'
        f'[services.who]\napp = "whoami:application"\npython_path = ["{FIXTURES}"]\n'
        '[services.hello]\napp = "wsgistack.apps.hello:application"\n')
    manifest = str(stack_dir / "wsgistack.toml")
    port, tls_port = free_port(), free_port()
    # The app user first: a package makes it once and keeps it; it is not ours to count.
    subprocess.run(["adduser", "--system", "--group", "--quiet", "--home", "/nonexistent",
                    "--no-create-home", "wsgistack"], capture_output=True, check=False)
    before = listing()
    args = ("-f", manifest, "install", "--backend", "mod_wsgi", "--port", str(port),
            "--tls-port", str(tls_port))
    res = run_cli(*args)
    try:
        assert res.code == 0, res.err
        assert "every service healthy" in res.err
        status, body = _get(port, "/who/")
        seen = json.loads(body)
        assert status == 200 and seen["url_scheme"] == "http"
        assert seen["uid"] == int(subprocess.check_output(["id", "-u", "wsgistack"]))
        # Not the installing shell's environment: systemd's would be as clean.
        assert "PYTEST_CURRENT_TEST" not in seen["environ"]
        assert seen["environ"].get("PWD", "/") == "/" and seen["environ"]["HOME"] == "/nonexistent"
        status, body = _get(tls_port, "/who/", tls=cert)
        assert status == 200 and json.loads(body)["url_scheme"] == "https"
        assert _get(tls_port, "/hello/", tls=cert) == (200, "Hello, world!\n")

        # A check that fails (another site Apache cannot read) changes nothing: the earlier
        # install still serves, and its files are as they were.
        site = Path("/etc/apache2/sites-available/wsgistack-livetest.conf")
        text = site.read_text()
        broken = Path("/etc/apache2/conf-enabled/zz-wsgistack-test-broken.conf")
        broken.write_text("ThisIsNotADirective on\n")
        try:
            again = run_cli("-f", manifest, "install", "--backend", "mod_wsgi", "--port",
                            str(free_port()), "--tls-port", str(tls_port))
        finally:
            broken.unlink()
        assert again.code == 2
        assert again.err.strip().splitlines()[-1].startswith(
            "wsgistack: error: apache2ctl configtest failed: `apache2ctl configtest`: ")
        assert "ThisIsNotADirective" in again.err and again.err.rstrip().endswith(
            "the host is left as it was")
        assert site.read_text() == text
        assert _get(port, "/hello/") == (200, "Hello, world!\n")

        # A port another program holds: refused before anything changes.
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            taken = busy.getsockname()[1]
            res = run_cli("-f", manifest, "install", "--backend", "mod_wsgi", "--port",
                          str(taken), "--tls-port", str(tls_port))
        assert res.code == 2
        assert res.err.strip() == (
            f"wsgistack: error: port {taken} on 127.0.0.1 is taken (Address already in use); "
            "stop what listens there or install with another --port; the host is left as "
            "it was")
        assert site.read_text() == text and _get(port, "/hello/")[0] == 200
    finally:
        gone = run_cli("-f", manifest, "uninstall", "--purge")
    assert gone.code == 0, gone.err
    with pytest.raises(OSError):
        _get(port, "/hello/")
    assert listing() ^ before == set()
