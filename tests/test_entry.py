from __future__ import annotations

import ast
import contextlib
import dataclasses
import hashlib
import http.client
import itertools
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, free_port, run_cli
from wsgistack import entry
from wsgistack.errors import AppLoadError


def write_entry(tmp_path: Path, *args: str) -> Path:
    out = tmp_path / "myapi.py"
    res = run_cli("entry", *args, "-o", str(out))
    assert res.code == 0, res.err
    return out


def test_imported_entry_exposes_application_with_clean_argv(tmp_path):
    out = write_entry(tmp_path, "sampleapp:application", "--python-path", str(FIXTURES),
                      "--env", "SAMPLE_SETTING=x", "--arg=--config-file=a.conf",
                      "--prefix", "/api")
    # A server imports the entry under its own argv: the app must not see it.
    code = (
        "import sys, importlib.util, json; sys.argv = ['gunicorn', '-w', '4', 'x:y'];"
        f"spec = importlib.util.spec_from_file_location('e', {str(out)!r});"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m);"
        "body = b''.join(m.application({'PATH_INFO': '/api/v', 'SCRIPT_NAME': '',"
        " 'wsgi.url_scheme': 'http', 'HTTP_HOST': 'h'}, lambda s, h: None));"
        "assert m.application is m.get_application(); print(body.decode())"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=tmp_path)
    doc = json.loads(done.stdout)
    assert doc["argv"] == ["myapi", "--config-file=a.conf"]
    assert doc["env"] == "x"
    assert (doc["script_name"], doc["path_info"]) == ("/api", "/v")


def test_entry_for_a_script_target_checks(tmp_path):
    out = write_entry(tmp_path, str(FIXTURES / "script.wsgi"))
    done = subprocess.run([sys.executable, str(out), "--check"], capture_output=True, text=True)
    assert done.returncode == 0
    assert done.stdout.startswith(f"ok: {FIXTURES / 'script.wsgi'} loads")


def test_an_entry_that_cannot_load_its_app_is_not_written(tmp_path):
    out = tmp_path / "myapi.py"
    res = run_cli("entry", "broken:application", "--python-path", str(FIXTURES), "-o", str(out))
    assert res.code != 0 and not out.exists()
    assert res.err.strip() == (
        f"wsgistack: error: {out}: not written: cannot load app 'broken:application': "
        "ModuleNotFoundError: No module named 'no_such_dependency_xyz' at "
        f"{FIXTURES}/broken.py:1; install no_such_dependency_xyz where the app runs (the "
        "service's requirements) or fix the import; or pass --no-check if the app loads only "
        "in another interpreter")


def test_django_spec_names_the_module(tmp_path):
    (tmp_path / "site1").mkdir()
    (tmp_path / "site1" / "__init__.py").write_text("")
    (tmp_path / "site1" / "wsgi.py").write_text(
        "def application(environ, start_response):\n    start_response('200 OK', [])\n"
        "    return [b'site1']\n")
    out = write_entry(tmp_path, "site1.wsgi:application", "--python-path", str(tmp_path))
    done = subprocess.run([sys.executable, str(out), "--check"], capture_output=True, text=True)
    assert done.stdout.startswith("ok: site1.wsgi:application loads"), done.stderr


def test_entry_check_reports_import_error_in_one_line(tmp_path):
    out = write_entry(tmp_path, "broken:application", "--python-path", str(FIXTURES),
                      "--no-check")
    done = subprocess.run([sys.executable, str(out), "--check"], capture_output=True, text=True)
    assert done.returncode == 1
    # The traceback first (what -v shows), then the one line a server or `up` reports.
    assert done.stderr.startswith("Traceback (most recent call last):\n")
    assert done.stderr.splitlines()[-1] == (
        "error: cannot load app 'broken:application': ModuleNotFoundError: No module named "
        f"'no_such_dependency_xyz' at {FIXTURES}/broken.py:1; install no_such_dependency_xyz "
        "where the app runs (the service's requirements) or fix the import")


def _answering(port: int, proc: subprocess.Popen[str], path: str = "/") -> bool:
    """Readiness: the server answers (anything) on its port, or has exited."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.05)
    return False


@contextlib.contextmanager
def serving(out: Path, *argv: str, isolated: bool = False) -> Iterator[int]:
    """The entry run as a command; `isolated` (python -S): no site-packages, so no granian."""
    port = free_port()
    with subprocess.Popen(
        [sys.executable, *(["-S"] if isolated else []), str(out), "--host", "127.0.0.1",
         "--port", str(port), *argv], stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert _answering(port, proc), proc.stderr.read() if proc.stderr else ""
            yield port
        finally:
            proc.terminate()
            proc.wait(10)


@pytest.mark.live
@pytest.mark.parametrize("isolated", [False, True], ids=["granian", "wsgiref"])
@pytest.mark.parametrize("app_args", [["--debug"], []], ids=["args", "none"])
def test_entry_runs_as_a_command_with_app_args(tmp_path, isolated, app_args):
    out = write_entry(tmp_path, "sampleapp:application", "--python-path", str(FIXTURES),
                      "--prefix", "/api", "--arg=--from-spec")
    with serving(out, "--", *app_args, isolated=isolated) as port:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/x") as resp:
            doc = json.loads(resp.read())
        assert doc["argv"] == ["myapi", *app_args]
        assert doc["link"] == f"http://127.0.0.1:{port}/api/v1"


@pytest.mark.live
@pytest.mark.parametrize("isolated", [False, True], ids=["granian", "wsgiref"])
def test_entry_as_a_command_frames_request_bodies(tmp_path, isolated):
    """Chunked, with a length, with Expect: 100-continue, to an app that reads to EOF."""
    out = write_entry(tmp_path, "readall:application", "--python-path", str(FIXTURES))
    body = bytes(range(256)) * 8192
    with serving(out, isolated=isolated) as port:
        for chunked, expect in ((False, False), (True, False), (True, True), (False, True)):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            headers = {"Expect": "100-continue"} if expect else {}
            conn.request("POST", "/", body=iter([body[:1000], body[1000:]]) if chunked else body,
                         headers=headers, encode_chunked=chunked)
            doc = json.loads(conn.getresponse().read())
            conn.close()
            assert (doc["length"], doc["sha256"]) == (
                len(body), hashlib.sha256(body).hexdigest()), (chunked, expect)


def test_render_refuses_a_bad_spec():
    with pytest.raises(AppLoadError, match=r"is neither a module name nor a \.wsgi/\.py file"):
        entry.render(entry.EntrySpec(app="a b:c"))


# ---- what an entry is made of ------------------------------------------------------------

HELLO = "wsgistack.apps.hello:application"
EVERY_LAYER = entry.EntrySpec(app=HELLO, mount="/api", max_body=10, timeout=5,
                              static=[("/s", "/nowhere")], read_unread=True, spool=True)
OPTIONAL_CODE = ("def serve_static(", "def mount(", "def limit_body(", "def watch_requests(",
                 "def read_unread(", "def spool_chunked(")


def test_a_plain_service_entry_carries_and_runs_only_the_layers_it_uses(tmp_path):
    plain = entry.render(entry.EntrySpec(app=HELLO))
    full = entry.render(EVERY_LAYER)
    assert [code in plain for code in OPTIONAL_CODE] == [False] * len(OPTIONAL_CODE)
    assert [code in full for code in OPTIONAL_CODE] == [True] * len(OPTIONAL_CODE)
    # Each still serves: the plain one at its root, the other under its prefix only.
    for name, text, paths in (("plain", plain, {"/": "200 OK"}),
                              ("full", full, {"/api/": "200 OK", "/": "404 Not Found"})):
        path = tmp_path / f"{name}.py"
        path.write_text(text, encoding="utf-8")
        code = (
            "import importlib.util, json;"
            f"spec = importlib.util.spec_from_file_location('e', {str(path)!r});"
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); seen = {};"
            "call = lambda p: (b''.join(m.application({'PATH_INFO': p, 'REQUEST_METHOD': 'GET',"
            " 'SERVER_PROTOCOL': 'HTTP/1.1', 'wsgi.url_scheme': 'http', 'HTTP_HOST': 'h',"
            " 'REMOTE_ADDR': '127.0.0.1'}, lambda s, h, *e: seen.update({p: s}))), seen[p])[1];"
            f"print(json.dumps({{p: call(p) for p in {sorted(paths)!r}}}))"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=False, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == paths


def test_modules_copied_into_one_entry_define_no_name_twice():
    # One entry is one namespace: a name defined by two modules would be the later one's in
    # both (framing's quoted-string check once ran observe's log quoting in entries).
    every = entry._modules([*entry._ALWAYS, *(module for module, _, _ in entry._OPTIONAL)])
    where: dict[str, list[str]] = {}
    for module in every:
        for node in ast.parse(entry._module(module)[2]).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names = [node.name]
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = [t.id for t in targets if isinstance(t, ast.Name)]
            else:
                continue
            for name in names:
                where.setdefault(name, []).append(module)
    assert {n: m for n, m in where.items() if len(m) > 1} == {}


def test_every_combination_of_layers_makes_an_entry_with_no_unknown_name(tmp_path):
    # Each layer's settings, as EVERY_LAYER has them; a combination turns some of them on.
    fields = ("static", "mount", "max_body", "timeout", "read_unread", "spool")
    for bits in itertools.product((False, True), repeat=len(fields)):
        spec = dataclasses.replace(entry.EntrySpec(app=HELLO), **{
            f: getattr(EVERY_LAYER, f) for f, on in zip(fields, bits, strict=True) if on})
        name = "e_" + "".join("1" if on else "0" for on in bits) + ".py"
        (tmp_path / name).write_text(entry.render(spec), encoding="utf-8")
    ruff = Path(sys.executable).with_name("ruff")
    done = subprocess.run([str(ruff), "check", "--no-cache", "--isolated", "--select",
                           "F821,F811,F822,F823", str(tmp_path)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-3000:]
    assert len(list(tmp_path.glob("e_*.py"))) == 2 ** len(fields)
