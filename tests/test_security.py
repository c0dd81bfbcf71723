"""Live, as root (how operators, init systems and CI start it): on every backend the app runs
as its own unprivileged user, with a clean environment; no other local user can read, list
or connect to anything under the state dir; secrets are masked in everything wsgistack
shows; forwarded headers count only from a trusted proxy."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, free_port
from wsgistack import plan
from wsgistack.backends import BACKENDS, mod_wsgi

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(os.geteuid() != 0, reason="users of their own only when started as root"),
]

SECRET = "hunter2-correct-horse"
FILE_SECRET = "postgresql://keystone:battery-staple@db/keystone"
TRUSTED = "127.0.0.2"  # a loopback address of its own: the "proxy" in front

MANIFEST = """
[stack]
name = "sec"
base_port = {port}
start_timeout = 30
trusted_proxies = ["{trusted}"]
[services.who]
app = "whoami:application"
prefix = "/who"
python_path = ["{fixtures}"]
processes = 1
pass_env = ["WSGISTACK_TEST_PASSED"]
env = {{ SECRET_PASSWORD = "{secret}", DATABASE_URL = "${{file:db-url}}", PLAIN = "visible" }}
secrets = ["DATABASE_URL"]
setup = ["sh -c 'test \\"$$SECRET_PASSWORD\\" = {secret}'", "true ${{file:db-url}}"]
"""

# Run as nobody: everything under the state dir it can open, list or connect to.
AS_NOBODY = r"""
import json, os, socket, stat, sys
opened = []
for path in json.load(sys.stdin):
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        continue  # it cannot even look: fine
    try:
        if stat.S_ISSOCK(mode):
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(path)
        elif stat.S_ISDIR(mode):
            os.listdir(path)
        elif stat.S_ISREG(mode):
            open(path, "rb").close()
        else:
            continue
    except PermissionError:
        continue
    opened.append(path)
print(json.dumps(opened))
"""


def request(port: int, headers: dict[str, str], source: str = "127.0.0.1") -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10,
                                      source_address=(source, 0))
    try:
        conn.putrequest("GET", "/who/", skip_accept_encoding=True)
        for name, value in headers.items():  # putheader: `X_Forwarded_Proto` as it is
            conn.putheader(name, value)
        conn.endheaders()
        resp = conn.getresponse()
        assert resp.status == 200
        return json.loads(resp.read())
    finally:
        conn.close()


FORGED = {"X-Forwarded-Proto": "https", "X_Forwarded_Proto": "https",
          "Forwarded": "for=1.2.3.4;proto=https", "X-Forwarded-Ssl": "on",
          "X-Forwarded-For": "1.2.3.4", "X-Forwarded-Host": "evil.example"}


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_safe_by_default(stack, backend, monkeypatch):
    port = free_port()
    secret_file = stack.root / "db-url"
    secret_file.write_text(FILE_SECRET + "\n")
    secret_file.chmod(0o600)
    stack.write(MANIFEST.format(port=port, trusted=TRUSTED, fixtures=FIXTURES, secret=SECRET))
    monkeypatch.setenv("WSGISTACK_TEST_LEAK", "from the caller's shell")
    monkeypatch.setenv("WSGISTACK_TEST_PASSED", "passed on purpose")
    up = stack.cli("up", "--detach", "--backend", backend)
    assert up.code == 0, up.err
    state = stack.root / ".wsgistack"

    # Least privilege: the app is not root, and runs as the default system user.
    seen = request(port, {})
    assert seen["uid"] != 0 and seen["euid"] != 0 and seen["gid"] != 0
    assert seen["uid"] == int(subprocess.check_output(["id", "-u", "wsgistack"]))
    status = json.loads(stack.cli("status", "--json").out)
    users = {p["name"]: p["user"] for s in status["services"] for p in s["processes"]}
    assert users.get("who", "wsgistack") == "wsgistack"  # front ends are root, serving as www-data
    # ...and which server binary and Python it runs on.
    ran = status["services"][0]
    assert ran["python"] == sys.executable or ran["python"].startswith(sys.prefix), ran
    server = {"granian": "granian", "gunicorn": "gunicorn"}.get(
        backend, os.path.realpath(shutil.which("apache2" if backend == "mod_wsgi" else "uwsgi")
                                  or "?"))
    if backend == "mod_wsgi":  # Apache and the module that embeds the Python
        server += " + " + (plan.find_in(sys.prefix, mod_wsgi.VENV_FILES)[mod_wsgi.PIP_MODULE]
                           or mod_wsgi.DEBIAN_MODULE)
    assert ran["server"] == server, ran

    # A clean environment: only what the manifest says, plus what it passes on purpose.
    env = seen["environ"]
    assert "WSGISTACK_TEST_LEAK" not in env
    assert env["WSGISTACK_TEST_PASSED"] == "passed on purpose"
    assert env["SECRET_PASSWORD"] == SECRET and env["DATABASE_URL"] == FILE_SECRET
    assert env["HOME"] == "/nonexistent"

    # Forwarded headers: lies from a direct client, the truth from the trusted proxy.
    direct = request(port, FORGED)
    assert direct["url_scheme"] == "http"
    assert direct["forwarded"] == []
    proxied = request(port, {"X-Forwarded-Proto": "https"}, source=TRUSTED)
    assert proxied["url_scheme"] == "https"
    assert "HTTP_X_FORWARDED_PROTO" in proxied["forwarded"]

    # Nobody else can read, list or connect to anything under the state dir.
    paths = [str(p) for p in [state, *state.rglob("*")]]
    if BACKENDS[backend].FRONT_END:  # the sockets behind it are among them
        assert any(stat.S_ISSOCK(os.lstat(p).st_mode) for p in paths)
    opened = subprocess.run(
        ["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c", AS_NOBODY],
        input=json.dumps(paths), capture_output=True, text=True, check=True)
    assert json.loads(opened.stdout) == []
    writable = [p for p in paths if os.lstat(p).st_mode & stat.S_IWOTH
                and not stat.S_ISLNK(os.lstat(p).st_mode)]
    assert writable == []

    # The secrets are in the files the app needs, and shown nowhere.
    holders = [p for p in paths if os.path.isfile(p) and SECRET in Path(p).read_text(
        errors="replace")]
    assert holders  # (the entry at least): the test would prove nothing otherwise
    setup_log = (state / "logs" / "who-setup.log").read_text()
    assert SECRET not in setup_log and FILE_SECRET not in setup_log
    assert "true ***" in setup_log
    shown = [up, stack.cli("status"), stack.cli("status", "--json"),
             stack.cli("logs", "who", "-n", "500"),  # under mod_wsgi too: the entry's log
             stack.cli("check", "who", "--backends", backend)]
    assert "whoami loaded with SECRET_PASSWORD=***" in shown[3].out
    for res in shown:
        assert SECRET not in res.out + res.err and FILE_SECRET not in res.out + res.err


def write(stack, text: str) -> None:
    stack.write(f'[stack]\nbase_port = {free_port(1)}\n'
                f'[services.p]\napp = "wsgistack.apps.probe:application"\n{text}')


@pytest.mark.parametrize(("extra", "message"), [
    ('user = "no-such-user-x"',
     r"^wsgistack: error: .*wsgistack.toml: services.p.user: unknown user 'no-such-user-x'; "
     r"create it \(adduser --system --group no-such-user-x\) or name another$"),
    ('group = "no-such-group-x"',
     r"^wsgistack: error: .*wsgistack.toml: services.p.group: unknown group 'no-such-group-x'"),
    ('env = { TOKEN = "${file:missing-secret}" }',
     r"^wsgistack: error: .*wsgistack.toml: services.p.env.TOKEN: secret file "
     r".*/missing-secret does not exist; create it \(chmod 600\) or fix the reference$"),
    ('env_files = ["missing.env"]',
     r"^wsgistack: error: .*wsgistack.toml: services.p.env_files: secret file "
     r".*/missing.env does not exist"),
])
def test_bad_security_input_is_one_line_and_starts_nothing(stack, extra, message):
    write(stack, extra + "\n")
    res = stack.cli("up", "--detach")
    assert res.code == 2
    assert len(res.err.splitlines()) == 1, res.err
    assert re.match(message, res.err.strip()), res.err
    assert stack.all_pids() == []


def test_root_and_readable_secret_files_are_warned_about(stack):
    env_file = stack.root / "app.env"
    env_file.write_text("# comment\nexport DB_PASSWORD='pa ss'\nPLAIN=1\n")
    env_file.chmod(0o644)
    write(stack, 'user = "root"\nenv_files = ["app.env"]\n')
    res = stack.cli("up", "--detach")
    assert res.code == 0, res.err
    assert f"wsgistack: warning: secret file {env_file} is readable by every local user; " \
           f"chmod o-r {env_file}" in res.err.splitlines()
    assert any(line.startswith("wsgistack: warning: service 'p' runs as root")
               for line in res.err.splitlines())
    status = json.loads(stack.cli("status", "--json").out)
    assert status["services"][0]["processes"][0]["user"] == "root"


def test_trusted_proxies_must_be_addresses(stack):
    stack.write('[stack]\ntrusted_proxies = ["10.0.0.0/33"]\n'
                '[services.p]\napp = "wsgistack.apps.probe:application"\n')
    res = stack.cli("up")
    assert res.code == 2
    assert res.err.strip().endswith(
        "stack.trusted_proxies: '10.0.0.0/33' is not an address or a CIDR "
        "(e.g. '10.0.0.5' or '10.0.0.0/24')")


def test_plain_user_runs_everything_as_itself(tmp_path):
    """Started as another user, nothing switches user: the app runs as that user."""
    port = free_port(1)
    (tmp_path / "wsgistack.toml").write_text(
        f'[stack]\nbase_port = {port}\n[services.who]\napp = "whoami:application"\n'
        f'python_path = ["{FIXTURES}"]\nprocesses = 1\n')
    os.chown(tmp_path, 65534, 65534)
    cmd = ["runuser", "-u", "nobody", "--", sys.executable, "-m", "wsgistack"]
    up = subprocess.run([*cmd, "up", "--detach"], cwd=tmp_path, capture_output=True,
                        text=True, timeout=60, check=False)
    try:
        assert up.returncode == 0, up.stderr
        seen = request(port, {})
        assert seen["uid"] == 65534
        assert "HOME" in seen["environ"]
    finally:
        subprocess.run([*cmd, "down"], cwd=tmp_path, capture_output=True, timeout=60,
                       check=False)
