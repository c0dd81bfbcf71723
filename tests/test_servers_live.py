"""Live: the example stack under every real server, started on free loopback ports."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import stat
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Stack, alive, assert_reloaded, free_port
from wsgistack import check
from wsgistack.backends import BACKENDS, apache
from wsgistack.layers import failures

pytestmark = pytest.mark.live

MANIFEST = """
[stack]
name = "live"
base_port = {port}
start_timeout = 30
[services.catalog]
app = "wsgistack.apps.catalog:application"
prefix = "/"
[services.probe]
app = "wsgistack.apps.probe:application"
health_path = "/status/200"
upload = true
[services.api]
app = "sampleapp:application"
prefix = "/api/v1"
python_path = ["{fixtures}"]
processes = 1
threads = 2
"""


@pytest.fixture
def shared_stack() -> Iterator[Stack]:
    """A stack in a directory Apache's and nginx's worker user (www-data) can reach: pytest's
    own tmp_path sits under a private /tmp/pytest-of-root."""
    root = Path(tempfile.mkdtemp(prefix="wsgistack-live-", dir="/tmp"))
    root.chmod(0o755)
    fixtures = root / "fixtures"
    shutil.copytree(Path(__file__).parent / "fixtures", fixtures)
    for path in [fixtures, *fixtures.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IROTH | (stat.S_IXOTH if path.is_dir() else 0))
    st = Stack(root)
    yield st
    pids = st.pids()
    st.cli("down")
    for pid in pids:
        assert not alive(pid), f"pid {pid} survived down"
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)


def get(url: str, headers: dict[str, str] | None = None) -> dict:
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_example_stack_under_every_backend(shared_stack, backend):
    port = free_port()
    fixtures = shared_stack.root / "fixtures"
    shared_stack.write(MANIFEST.format(port=port, fixtures=fixtures))
    res = shared_stack.cli("up", "--detach", "--backend", backend)
    assert res.code == 0, res.err
    assert res.out.count("healthy") == 3
    catalog = get(f"http://127.0.0.1:{port}/")
    urls = {s["name"]: s["url"] for s in catalog["services"]}
    assert catalog["links"][1] == {"rel": "metrics",
                                   "href": f"http://127.0.0.1:{port + 90}/metrics"}
    front = BACKENDS[backend].FRONT_END
    probe_port = port if front else port + 1
    assert urls["probe"] == f"http://127.0.0.1:{probe_port}/probe/"
    echo = get(urls["probe"] + "x/y?z=1", {"Authorization": "Bearer t0ken"})
    assert (echo["SCRIPT_NAME"], echo["PATH_INFO"], echo["QUERY_STRING"]) == (
        "/probe", "/x/y", "z=1")
    assert echo["HTTP_HOST"] == f"127.0.0.1:{probe_port}"
    assert echo["HTTP_AUTHORIZATION"] == "Bearer t0ken"
    api = get(urls["api"] + "things")
    assert api["link"] == f"{urls['api']}v1"  # links built from SCRIPT_NAME carry the prefix
    assert api["argv"] == ["api"]
    assert_idle_clients_starve_nobody(urls["api"])
    assert_app_errors_look_alike(shared_stack.root, urls["probe"], urls["api"])
    health = get(f"http://127.0.0.1:{port}/healthcheck")
    assert health["healthy"] is True
    pids = shared_stack.pids()
    assert shared_stack.cli("status").code == 0
    assert shared_stack.cli("down").code == 0
    assert not [p for p in pids if alive(p)]


def assert_idle_clients_starve_nobody(base: str) -> None:
    """The api service has 2 threads in 1 process. Two clients that keep their connections
    open after an answer (a service's pooled connections to Keystone do) must not hold
    both: a third is answered. And an answer with no length and no body (204) arrives."""
    url = urllib.parse.urlsplit(base)
    idle = [http.client.HTTPConnection(url.hostname, url.port, timeout=10) for _ in range(2)]
    try:
        for conn in idle:
            conn.request("GET", url.path + "nothing")
            resp = conn.getresponse()
            assert (resp.status, resp.read()) == (204, b"")
        assert get(base + "third")["path_info"] == "/third"
    finally:
        for conn in idle:
            conn.close()


def assert_app_errors_look_alike(root: Path, base: str, api: str) -> None:
    """An exception out of the app, before it started its answer or after (but before any
    of its body): the entry's own 500 on every server (not Apache's HTML page, nginx's 502
    or granian's empty 500), the traceback in the log, and the service answers the next
    request."""
    for url in (base + "raise", api + "raise-late"):
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(url, timeout=10)
        assert (raised.value.code, raised.value.read()) == (500, failures.APP_FAILED)
    assert get(base + "after")["PATH_INFO"] == "/after"
    logs = "".join(p.read_text(errors="replace")
                   for p in (root / ".wsgistack" / "logs").glob("*.log"))
    assert "RuntimeError: the probe raised, as asked" in logs
    assert "RuntimeError: the body failed" in logs
    assert "AH10159" not in logs  # Apache sized from the services: no warning at start


def test_check_shows_all_backends_agreeing(shared_stack):
    shared_stack.write(MANIFEST.format(port=free_port(), fixtures=shared_stack.root))
    res = shared_stack.cli("check", "probe", "--backends", "all", "--base-port", str(free_port()),
                           "--format", "json")
    assert res.code == 0, res.out + res.err
    doc = json.loads(res.out)
    assert doc["backends"] == list(BACKENDS) and doc["diverging"] == [] and not doc["skipped"]
    rows = {r["check"]: r for r in doc["rows"]}
    for row, want in (("5 MiB upload, chunked", "5242880 read, sha ok"),
                      ("8 MiB streamed response", "HTTP 200, 8388608")):
        assert rows[row]["mark"] == "same" and want in rows[row]["values"]["granian"], rows[row]
    # Shown, not compared: only nginx in front reads whole requests before a worker does.
    slow = rows["slow clients"]
    assert slow["mark"] == "info" and slow["values"]["nginx+uwsgi"].startswith(
        "holds: answered in")
    assert all(v.startswith(("holds", "starved")) for v in slow["values"].values()), slow
    # Shown, not compared: what of 7 malformed requests reaches the app (tests/framing/).
    verdicts = rows["framing"]["values"]
    assert rows["framing"]["mark"] == "info" and verdicts["gunicorn"] == "7/7 refused", verdicts
    assert all(re.fullmatch(r"\d/7 refused(; got: .+)?", v) for v in verdicts.values()), verdicts
    # The text the same run prints: within 100 columns, a shared value on its row.
    lines = check.text(doc["rows"]).splitlines()
    assert lines[0] == f"backends: {', '.join(BACKENDS)}"
    assert max(map(len, lines)) <= 100, max(lines, key=len)
    assert next(x for x in lines if "upload, chunked" in x).startswith("same")


def test_check_of_a_real_app_with_rows_of_its_own(shared_stack):
    """Another app than the probe: the probe's rows say n/a (a 404 is no agreement), the
    user's --path rows are compared, and --strict adds the PEP 3333 validator's row."""
    body = shared_stack.root / "body.json"
    body.write_text('{"x": 1}')
    shared_stack.write(MANIFEST.format(port=free_port(), fixtures=shared_stack.root / "fixtures"))
    res = shared_stack.cli("check", "api", "--backends", "granian,uwsgi,mod_wsgi", "--strict",
                           "--base-port", str(free_port()), "--path", "GET /x?y=1",
                           "--path", f"post /x @{body}")
    assert res.code == 0, res.out + res.err
    rows = {re.split(r"\s{2,}", r)[1]: re.split(r"\s{2,}", r) for r in res.out.splitlines()[1:]}
    assert "SCRIPT_NAME PATH_INFO" not in rows  # the probe's rows: not for this app
    for name in ("GET /x?y=1", "POST /x @body.json"):
        assert rows[name][0] == "same" and rows[name][2].startswith("HTTP 200, application/json")
    assert rows["PEP 3333 validator"] == ["same", "PEP 3333 validator", "HTTP 200"]
    bad = shared_stack.cli("check", "api", "--path", "GET")
    assert bad.code == 2 and bad.err.strip() == (
        "wsgistack: error: --path 'GET': write it as \"METHOD /PATH [@BODYFILE] [-H 'Name: "
        "value']...\", the path under the service's prefix")


def test_check_path_with_a_json_body_and_a_header_on_flask(shared_stack):
    body = shared_stack.root / "item.json"
    body.write_text('{"name": "lamp"}')
    shared_stack.write(f"""
[stack]
name = "flaskcheck"
base_port = {free_port()}
[services.notes]
app = "flaskapp:app"
python_path = ["{shared_stack.root / "fixtures"}"]
processes = 1
""")
    res = shared_stack.cli("check", "notes", "--backends", "all", "--base-port",
                           str(free_port()), "--format", "json",
                           "--path", f"POST /items @{body} -H 'X-Api-Key: k'",
                           "--path", f"POST /items @{body}")
    assert res.code == 0, res.out + res.err
    rows = {r["check"]: r for r in json.loads(res.out)["rows"]}
    # The same answer from all six: created with the key and a JSON type, refused without it.
    (created,) = set(rows["POST /items @item.json -H X-Api-Key"]["values"].values())
    (refused,) = set(rows["POST /items @item.json"]["values"].values())
    assert created.startswith("HTTP 201, application/json, ")
    assert refused.startswith("HTTP 401, application/json, ")
    assert not [r for r in rows.values() if r["mark"] == "DIFF"]


def test_check_reports_a_diverging_backend(shared_stack):
    """A service whose behaviour depends on the server: the check must say so."""
    shared_stack.write(MANIFEST.format(port=free_port(), fixtures=shared_stack.root)
                       + '\n[services.soft]\napp = "sampleapp:application"\n'
                       f'python_path = ["{shared_stack.root / "fixtures"}"]\n')
    res = shared_stack.cli("check", "probe", "--backends", "granian,mod_wsgi", "--base-port",
                           str(free_port()))
    assert res.code == 0, res.err
    # The server itself differs: reported as info, never as agreement on behaviour.
    assert "info  SERVER_SOFTWARE" in res.out
    assert "Granian" in res.out and "Apache" in res.out


@pytest.mark.parametrize("backend", ["apache+uwsgi", "nginx+uwsgi"])
def test_app_failing_behind_a_front_end_stops_everything(shared_stack, backend):
    """uWSGI exits (need-app) while the front end keeps answering 502: `up` must see the
    service's own process die, not wait out start_timeout on the front end's answers."""
    shared_stack.write(f"""
[stack]
name = "broken"
base_port = {free_port()}
start_timeout = 30
[services.good]
app = "wsgistack.apps.hello:application"
[services.bad]
app = "broken:application"
python_path = ["{shared_stack.root / 'fixtures'}"]
""")
    res = shared_stack.cli("up", "--detach", "--backend", backend)
    assert res.code == 2
    last = res.err.splitlines()[-1]
    # Loaded in a throwaway process first: no server started for it, nor for the others.
    assert last == (
        "wsgistack: error: service 'bad' cannot load its app: cannot load app "
        "'broken:application': ModuleNotFoundError: No module named 'no_such_dependency_xyz' "
        f"at {shared_stack.root}/fixtures/broken.py:1; install no_such_dependency_xyz where the "
        "app runs (services.bad.requirements) or fix the import; nothing was started"), last
    assert shared_stack.all_pids() == []


def test_missing_server_binary(stack, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    stack.write(f'[stack]\nbackend = "uwsgi"\nbase_port = {free_port()}\n'
                '[services.p]\napp = "wsgistack.apps.probe:application"\n')
    res = stack.cli("up", "--detach")
    assert res.code == 2
    assert res.err.splitlines()[-1] == (
        "wsgistack: error: backend uwsgi needs uwsgi: uwsgi is missing; apt-get install uwsgi")
    assert stack.all_pids() == []


def test_missing_apache_module(stack, monkeypatch, tmp_path):
    modules = tmp_path / "modules"
    modules.mkdir()
    for so in Path(apache.MODULES).glob("*.so"):
        if so.name != "mod_proxy_http.so":
            (modules / so.name).symlink_to(so)
    monkeypatch.setattr(apache, "MODULES", str(modules))
    stack.write(f'[stack]\nbackend = "apache+uwsgi"\nbase_port = {free_port()}\n'
                '[services.p]\napp = "wsgistack.apps.probe:application"\n')
    res = stack.cli("up", "--detach")
    assert res.code == 2
    assert res.err.splitlines()[-1] == (
        f"wsgistack: error: backend apache+uwsgi needs mod_proxy_http: "
        f"{modules}/mod_proxy_http.so is missing; apt-get install apache2")


@pytest.mark.skipif(os.geteuid() != 0, reason="services get a user of their own only as root")
@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_unreadable_venv_is_explained(stack, backend):
    private = stack.root / "private"
    (private / "venv" / "bin").mkdir(parents=True)
    (private / "venv" / "bin" / "python").symlink_to(os.path.realpath("/usr/bin/python3"))
    private.chmod(0o700)
    stack.write(f'[stack]\nbackend = "{backend}"\nbase_port = {free_port()}\n'
                f'[services.p]\napp = "wsgistack.apps.probe:application"\n'
                f'venv = "{private / "venv"}"\n')
    res = stack.cli("up", "--detach")
    assert res.code == 2
    assert res.err.splitlines()[-1] == (
        f"wsgistack: error: backend {backend} needs the venv of service p to be readable by "
        f"wsgistack: {private / 'venv'} is unreadable; let wsgistack read it and search every "
        "directory above it (chmod o+x), move it out of a private directory such as /root, "
        "or set services.p.user")
    assert stack.all_pids() == []


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_reload_applies_a_changed_manifest_in_place(shared_stack, backend):
    port = free_port()
    fixtures = shared_stack.root / "fixtures"
    manifest = MANIFEST.format(port=port, fixtures=fixtures)
    shared_stack.write(manifest.replace('threads = 2\n', 'threads = 2\n'
                                        'env = { SAMPLE_SETTING = "one" }\n'))
    assert shared_stack.cli("up", "--detach", "--backend", backend).code == 0
    api = f"http://127.0.0.1:{port if BACKENDS[backend].FRONT_END else port + 2}/api/v1/x"
    assert get(api)["env"] == "one"
    leaders = shared_stack.pids()

    shared_stack.write(manifest.replace('threads = 2\n', 'threads = 2\n'
                                        'env = { SAMPLE_SETTING = "two" }\n'))
    res = shared_stack.cli("reload")
    assert res.code == 0, res.err
    assert res.err.splitlines()[-1].startswith(  # the metrics exporter is one of the stack's
        f"reloaded {len(leaders) + 1} process(es) of stack 'live' in ")
    assert get(api)["env"] == "two"  # every worker from before is gone
    assert_reloaded(backend, leaders, shared_stack.pids())

    shared_stack.write(manifest.replace(f"base_port = {port}", f"base_port = {port + 10}"))
    res = shared_stack.cli("reload")
    assert res.code == 2
    assert res.err.endswith("services, prefixes or ports changed since `up`; a reload keeps "
                            "them: run `wsgistack down` then `up`\n")
    assert shared_stack.cli("down").code == 0


def test_reload_keeps_the_base_port_up_was_given(shared_stack):
    shared_stack.write(MANIFEST.format(port=free_port(), fixtures=shared_stack.root / "fixtures"))
    port = free_port()
    assert shared_stack.cli("up", "--detach", "--backend", "gunicorn",
                            "--base-port", str(port)).code == 0
    leaders = shared_stack.pids()
    res = shared_stack.cli("reload")
    assert res.code == 0, res.err
    assert shared_stack.pids() == leaders
    assert get(f"http://127.0.0.1:{port}/")["stack"] == "live"
    assert shared_stack.cli("down").code == 0
