"""Real third-party apps on every backend: a Flask API and a Django project made by
`django-admin startproject`, side by side in one stack. Each takes a chunked upload with
`Expect: 100-continue` and echoes it byte for byte, serves a static file, and writes to a
sqlite database in its data dir. Flask and Django come from PyPI (the test extras)."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import DEFAULT_USER, FIXTURES, Stack, free_port, user_exists
from wsgistack.backends import BACKENDS

pytestmark = [pytest.mark.live, pytest.mark.pypi]

MANIFEST = """
[stack]
name = "real"
base_port = {port}
start_timeout = 60
[services.flask]
app = "flaskapp:app"
python_path = ["{root}/apps"]
env = {{ APP_DATA = "${{data}}" }}
static = {{ "/static" = "assets" }}
[services.django]
app = "site1.wsgi:application"
python_path = ["{root}/site1"]
working_dir = "site1"
env = {{ DJANGO_DB = "${{data}}/db.sqlite3", DJANGO_PREFIX = "${{prefix}}" }}
static = {{ "/static" = "assets" }}
"""

URLS = '''
import sqlite3

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt


@csrf_exempt
def echo(request):
    return HttpResponse(request.body, content_type="application/octet-stream")


@csrf_exempt
def notes(request):
    with sqlite3.connect(settings.DATABASES["default"]["NAME"]) as db:
        db.execute("CREATE TABLE IF NOT EXISTS notes (text TEXT)")
        db.execute("INSERT INTO notes VALUES (?)", (request.body.decode(),))
        count = db.execute("SELECT COUNT(*) FROM notes").fetchone()[0]
    return JsonResponse({"notes": count})


urlpatterns = [path("", lambda request: JsonResponse({"app": "django"})),
               path("echo", echo), path("notes", notes)]
'''


@pytest.fixture(scope="module")
def project() -> Iterator[Path]:
    """The apps' directory: the Flask fixture, and a Django project as startproject made it,
    set to take its database path from the environment and any host."""
    root = Path(tempfile.mkdtemp(prefix="wsgistack-real-", dir="/tmp"))
    (root / "apps").mkdir()
    shutil.copy(FIXTURES / "flaskapp.py", root / "apps")
    admin = Path(sys.executable).with_name("django-admin")
    subprocess.run([str(admin), "startproject", "site1"], cwd=root, check=True)
    settings = root / "site1" / "site1" / "settings.py"
    settings.write_text(settings.read_text()
                        .replace("ALLOWED_HOSTS = []", 'ALLOWED_HOSTS = ["*"]')
                        .replace("BASE_DIR / 'db.sqlite3'", 'os.environ["DJANGO_DB"]')
                        .replace("BASE_DIR / \"db.sqlite3\"", 'os.environ["DJANGO_DB"]')
                        + "\nimport os\nDATA_UPLOAD_MAX_MEMORY_SIZE = None\n")
    settings.write_text("import os\n" + settings.read_text())
    (root / "site1" / "site1" / "urls.py").write_text(URLS)
    assets = root / "assets"
    assets.mkdir()
    (assets / "hello.txt").write_text("hello, static\n")
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _post(port: int, path: str, body: bytes, chunked: bool = False) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, body=iter([body[:7], body[7:]]) if chunked else body,
                     headers={"Expect": "100-continue",
                              "Content-Type": "application/octet-stream"},
                     encode_chunked=chunked)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_flask_and_django_alike_on_every_backend(project, backend):
    stack = Stack(project)
    port = free_port()
    stack.write(MANIFEST.format(port=port, root=project))
    res = stack.cli("up", "--detach", "--backend", backend)
    assert res.code == 0, res.err
    try:
        state = json.loads(stack.cli("status", "--json").out)
        ports = {s["name"]: int(s["url"].split(":")[2].split("/")[0]) for s in state["services"]}
        body = os.urandom(3 * 1024 * 1024)
        for name in ("flask", "django"):
            at = ports[name]
            status, echoed = _post(at, f"/{name}/echo", body, chunked=True)
            assert (status, len(echoed), echoed == body) == (200, len(body), True), name
            assert _get(at, f"/{name}/static/hello.txt") == (200, b"hello, static\n"), name
            counts = [json.loads(_post(at, f"/{name}/notes", b"note %d" % i)[1])["notes"]
                      for i in range(2)]
            assert counts[1] == counts[0] + 1, (name, counts)
    finally:
        assert stack.cli("down").code == 0


PYENV = Path("/root/.pyenv/versions/3.12.1/bin/python3.12")


@pytest.fixture(scope="module")
def other_python() -> Iterator[Path]:
    """A venv of another Python than Debian's (this machine's pyenv 3.12), with PyPI's uWSGI
    and mod_wsgi built for it (apache2-dev's apxs builds the module)."""
    if not os.access(PYENV, os.X_OK):
        pytest.skip(f"no {PYENV} on this machine")
    venv = Path(tempfile.mkdtemp(prefix="wsgistack-py312-", dir="/tmp"))
    venv.chmod(0o755)
    subprocess.run([str(PYENV), "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "uwsgi", "mod_wsgi"],
                   check=True)
    yield venv
    shutil.rmtree(venv, ignore_errors=True)


@pytest.mark.parametrize("backend", ["uwsgi", "apache+uwsgi", "nginx+uwsgi"])
def test_uwsgi_runs_the_services_own_python(other_python, tmp_path, backend):
    """Not Debian's uWSGI and its python3 plugin (which embed /usr/bin/python3): the uWSGI
    in the service's venv, built for that Python."""
    stack = Stack(tmp_path)
    port = free_port()
    # pyenv lives under /root: only root may run it (said in the manifest, and warned).
    stack.write(f'[stack]\nbase_port = {port}\nuser = "root"\n[services.api]\n'
                f'app = "whoami:application"\npython_path = ["{FIXTURES}"]\n'
                f'venv = "{other_python}"\n')
    res = stack.cli("up", "--detach", "--backend", backend)
    try:
        assert res.code == 0, res.err
        assert _python_of(port) == _version_of(PYENV)
        # status --json says which server and which Python each service runs.
        status = json.loads(stack.cli("status", "--json").out)["services"][0]
        assert (status["server"], status["python"]) == (
            os.path.realpath(other_python / "bin" / "uwsgi"), str(other_python / "bin" / "python"))
    finally:
        stack.cli("down")


def _python_of(port: int) -> str:
    return str(json.loads(_get(port, "/api/")[1])["python"])


def _version_of(python: Path) -> str:
    return subprocess.run([str(python), "-c", "import sys; print(sys.version)"],
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def app_user_searches_root() -> Iterator[str]:
    """pyenv lives under /root (0700): for this test only, the app's user may search /root
    (an ACL entry naming that user alone, removed after), as an operator would allow it."""
    if os.geteuid() != 0 or not shutil.which("setfacl"):
        pytest.skip("needs root and setfacl (Debian's acl)")
    if not user_exists(DEFAULT_USER):
        subprocess.run(["adduser", "--system", "--group", "--quiet", "--home", "/nonexistent",
                        "--no-create-home", DEFAULT_USER], check=True)
    before = subprocess.run(["getfacl", "-p", "/root"], capture_output=True, text=True,
                            check=True).stdout
    assert f"user:{DEFAULT_USER}:" not in before
    subprocess.run(["setfacl", "-m", f"u:{DEFAULT_USER}:x", "/root"], check=True)
    try:
        yield DEFAULT_USER
    finally:
        subprocess.run(["setfacl", "--restore=-"], input=before, text=True, check=True)
        assert subprocess.run(["getfacl", "-p", "/root"], capture_output=True, text=True,
                              check=True).stdout == before


def test_mod_wsgi_runs_the_services_own_python(other_python, app_user_searches_root, tmp_path):
    """The mod_wsgi built by pip in the service's venv, not Debian's (which embeds
    /usr/bin/python3): the app reports that Python's own sys.version."""
    stack = Stack(tmp_path)
    port = free_port()
    stack.write(f'[stack]\nbase_port = {port}\n[services.api]\n'
                f'app = "whoami:application"\npython_path = ["{FIXTURES}"]\n'
                f'venv = "{other_python}"\n')
    res = stack.cli("up", "--detach", "--backend", "mod_wsgi")
    try:
        assert res.code == 0, res.err
        assert _python_of(port) == _version_of(PYENV)
        status = json.loads(stack.cli("status", "--json").out)["services"][0]
        module = next((other_python / "lib").glob("python3.12/site-packages/mod_wsgi/server/"
                                                  "mod_wsgi-py312*.so"))
        assert status["server"] == f"/usr/sbin/apache2 + {module}"
        assert status["python"] == str(other_python / "bin" / "python")
    finally:
        stack.cli("down")


ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="users are switched only as root")


@pytest.mark.parametrize(("backend", "user", "message"), [
    ("uwsgi", "root", "wsgistack: error: backend uwsgi needs service api to run on "
     "/usr/bin/python3 (Debian's uWSGI embeds it): {venv}/bin/python is not Debian's; pip "
     "install uwsgi into the service's venv ({venv}/bin/python -m pip install uwsgi: it is "
     "built for that Python), or make the venv from /usr/bin/python3"),
    # Debian's mod_wsgi embeds /usr/bin/python3; a pip-built one would have to be in the venv.
    ("mod_wsgi", "", "wsgistack: error: backend mod_wsgi needs service api to run on "
     "/usr/bin/python3 (Debian's mod_wsgi embeds it): {venv}/bin/python is not Debian's; pip "
     "install mod_wsgi into the service's venv, or create the venv from /usr/bin/python3"),
    # Root could read the pyenv Python under /root, but mod_wsgi runs no daemon as root.
    pytest.param("mod_wsgi", "root", "wsgistack: error: backend mod_wsgi needs service api to "
                 "run as another user than root (mod_wsgi never runs its daemons as root): "
                 "root is refused; set services.api.user to a user that can read {venv}, or "
                 "use a uWSGI backend", marks=ROOT_ONLY),
])
def test_another_python_the_server_cannot_run_is_one_line(tmp_path, backend, user, message):
    if not os.access(PYENV, os.X_OK):
        pytest.skip(f"no {PYENV} on this machine")
    venv = tmp_path / "venv"
    subprocess.run([str(PYENV), "-m", "venv", "--without-pip", str(venv)], check=True)
    stack = Stack(tmp_path)
    stack.write(f'[stack]\nbase_port = {free_port()}\nuser = "{user}"\n[services.api]\n'
                f'app = "whoami:application"\nvenv = "{venv}"\n')
    res = stack.cli("up", "--detach", "--backend", backend)
    assert res.code == 2 and stack.all_pids() == []
    assert res.err.splitlines()[-1] == message.format(venv=venv)
