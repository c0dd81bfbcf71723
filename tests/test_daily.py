"""Daily use: manifests side by side, load errors that point at the line, requirement files
that follow their edits, `ls`, `clean`, `init`, completion."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from tests.conftest import Stack, alive, free_port
from wsgistack.lifecycle import processes

BACKENDS = ["granian", "gunicorn", "uwsgi", "mod_wsgi", "apache+uwsgi", "nginx+uwsgi"]


def two(root: Path, name: str, port: int, backend: str) -> Path:
    path = root / f"{name}.toml"
    path.write_text(f"""
[stack]
name = "{name}"
backend = "{backend}"
base_port = {port}
start_timeout = 30
[services.{name}]
app = "wsgistack.apps.probe:application"
processes = 1
""")
    return path


def leaders(state: Path) -> list[int]:
    found = processes.load_state(str(state))
    return [r.pid for r in found.procs] if found else []


@pytest.mark.live
@pytest.mark.parametrize("backend", BACKENDS)
def test_two_manifests_in_one_directory_keep_to_their_own(stack: Stack, backend: str) -> None:
    alpha_port = free_port(2)
    alpha = two(stack.root, "alpha", alpha_port, backend)
    beta = two(stack.root, "beta", free_port(2), backend)
    try:
        assert stack.cli("-f", str(alpha), "up", "--detach").code == 0
        up = stack.cli("-f", str(beta), "up", "--detach")
        assert up.code == 0, up.err
        a_state, b_state = stack.root / ".wsgistack-alpha", stack.root / ".wsgistack-beta"
        a_pids = leaders(a_state)
        assert a_pids and leaders(b_state) and not set(a_pids) & set(leaders(b_state))

        listed = stack.cli("ls", "--json")  # (its health checks are alpha's last requests)
        found = {d["stack"]: d for d in json.loads(listed.out)}
        assert found["alpha"]["manifest"] == str(alpha.resolve())
        assert found["beta"]["state_dir"] == str(b_state) and found["beta"]["health"] == "healthy"

        a_files = sorted(p for p in a_state.rglob("*") if p.is_file())
        status = stack.cli("-f", str(beta), "status", "--json")
        assert [s["name"] for s in json.loads(status.out)["services"]] == ["beta"]
        assert stack.cli("-f", str(beta), "reload").code == 0
        down = stack.cli("-f", str(beta), "down")
        assert down.code == 0 and "of stack 'beta'" in down.err
        assert all(map(alive, a_pids)) and leaders(a_state) == a_pids
        assert sorted(p for p in a_state.rglob("*") if p.is_file()) == a_files
        assert stack.cli("-f", str(alpha), "status").code == 0
        _outside_every_prefix_is_the_same_404(a_state, alpha_port)
    finally:
        stack.cli("-f", str(beta), "down")
        stack.cli("-f", str(alpha), "down")


def _outside_every_prefix_is_the_same_404(state: Path, port: int) -> None:
    """Status, type and body alike on every backend, and no line in any error log."""
    logs = {p: p.read_text(errors="replace") for p in (state / "logs").glob("*.log")}
    for method in ("GET", "POST"):
        req = urllib.request.Request(f"http://127.0.0.1:{port}/elsewhere?x=1", method=method,
                                     data=b"{}" if method == "POST" else None)
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(req, timeout=10)
        answer = caught.value
        assert (answer.code, answer.headers["Content-Type"], answer.read()) == (
            404, "text/plain", b"not found")
    for path, before in logs.items():
        new = path.read_text(errors="replace")[len(before):]
        if path.name.endswith("-access.log"):
            # Where the entry itself answers (one server, no front door) the request is seen,
            # and its line says what it got.
            assert all(" 404 " in line for line in new.splitlines() if "elsewhere" in line), new
            continue
        assert "elsewhere" not in new and "AH01630" not in new, (path, new)


def test_a_state_dir_holding_another_manifests_stack_is_refused(stack: Stack) -> None:
    alpha = two(stack.root, "alpha", free_port(2), "granian")
    beta = two(stack.root, "beta", free_port(2), "granian")
    state = stack.root / "shared"
    state.mkdir()
    (state / "state.json").write_text(json.dumps({
        "stack": "alpha", "backend": "granian", "manifest": "alpha.toml",
        "manifest_id": str(alpha.resolve()), "procs": [], "services": []}))
    beta.write_text(beta.read_text().replace('backend =', 'state_dir = "shared"\nbackend ='))
    res = stack.cli("-f", str(beta), "down")
    assert res.code == 2
    assert res.err.strip() == (
        f"wsgistack: error: {beta}: the state dir {state} holds stack 'alpha' of "
        f"{alpha.resolve()}, not this manifest's; leave [stack] state_dir unset (one per "
        "manifest) or give each manifest its own")


DEEP = """
[stack]
name = "syn"
base_port = {port}
[services.syn]
app = "{app}"
python_path = ["{root}"]
"""


def test_a_load_error_names_the_file_and_line_and_v_shows_the_traceback(stack: Stack) -> None:
    (stack.root / "deep.py").write_text("import deeper\n\napp = deeper.make()\n")
    (stack.root / "deeper.py").write_text("import os\n\nRATIO = 1 / 0\n")
    stack.write(DEEP.format(port=free_port(1), app="deep:app", root=stack.root))
    res = stack.cli("up", "--detach")
    assert res.code == 2
    assert res.err.splitlines()[-1] == (
        "wsgistack: error: service 'syn' cannot load its app: cannot load app 'deep:app': "
        f"ZeroDivisionError: division by zero at {stack.root}/deeper.py:3; fix the app or its "
        "configuration there (-v shows the traceback); nothing was started")
    assert "Traceback" not in res.err
    verbose = stack.cli("up", "--detach", "-v")
    assert verbose.code == 2
    assert f'File "{stack.root}/deep.py", line 1, in <module>' in verbose.err
    assert "RATIO = 1 / 0" in verbose.err
    assert verbose.err.splitlines()[-1] == res.err.splitlines()[-1]


def test_a_missing_environment_variable_gets_the_env_advice(stack: Stack) -> None:
    (stack.root / "envy.py").write_text(
        "import os\n\nCONF = os.environ['NOTES_CONFIG']\napp = None\n")
    stack.write(DEEP.format(port=free_port(1), app="envy:app", root=stack.root))
    res = stack.cli("up", "--detach")
    assert res.code == 2
    assert res.err.splitlines()[-1] == (
        "wsgistack: error: service 'syn' cannot load its app: cannot load app 'envy:app': "
        f"KeyError: 'NOTES_CONFIG' at {stack.root}/envy.py:3; the app reads the environment "
        "variable NOTES_CONFIG: set it in services.syn.env; nothing was started")


def test_a_syntax_error_names_file_line_and_column(stack: Stack) -> None:
    (stack.root / "typo.py").write_text("def app(environ, start_response)\n    pass\n")
    stack.write(DEEP.format(port=free_port(1), app="typo:app", root=stack.root))
    res = stack.cli("up", "--detach")
    assert res.code == 2
    assert f"at {stack.root}/typo.py:1:33; fix the syntax there" in res.err.splitlines()[-1]


def wheel(where: Path, name: str, value: str) -> Path:
    """A one-module wheel, made by hand: pip installs it with no index and no build."""
    path = where / f"{name}-1.0-py3-none-any.whl"
    info = f"{name}-1.0.dist-info"
    files = {
        f"{name}.py": f"VALUE = {value!r}\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                         "Tag: py3-none-any\n",
    }
    with zipfile.ZipFile(path, "w") as zf:
        for rel, text in files.items():
            zf.writestr(rel, text)
        zf.writestr(f"{info}/RECORD", "".join(f"{rel},,\n" for rel in files)
                    + f"{info}/RECORD,,\n")
    return path


USES = """
import importlib

def app(environ, start_response):
    found = []
    for name in ("first_dep", "second_dep"):
        try:
            found.append(importlib.import_module(name).VALUE)
        except ImportError:
            pass
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [",".join(found).encode()]
"""


@pytest.mark.live
def test_a_requirements_file_edited_between_two_ups_is_installed(stack: Stack) -> None:
    port = free_port(1)
    first, second = wheel(stack.root, "first_dep", "one"), wheel(stack.root, "second_dep", "two")
    (stack.root / "uses.py").write_text(USES)
    (stack.root / "requirements.txt").write_text(f"{first}\n")
    stack.write(DEEP.format(port=port, app="uses:app", root=stack.root)
                + 'requirements = ["-r requirements.txt"]\n')

    def answer() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/syn/", timeout=10) as resp:
            return str(resp.read().decode())

    assert stack.cli("up", "--detach").code == 0
    assert answer() == "one"
    assert stack.cli("down").code == 0
    venvs = stack.root / ".wsgistack" / "venvs"
    (old,) = venvs.iterdir()
    (stack.root / "requirements.txt").write_text(f"{first}\n{second}\n")
    again = stack.cli("up", "--detach")
    assert again.code == 0, again.err
    assert answer() == "one,two"
    assert old.is_dir() and len(list(venvs.iterdir())) == 2  # a new one, keyed on the file

    cleaned = stack.cli("clean")  # the old venv is no one's; the new one is the stack's
    assert cleaned.code == 0, cleaned.err
    assert f"removed {old} (" in cleaned.err and "freed " in cleaned.err
    assert [p.name for p in venvs.iterdir()] != [old.name] and len(list(venvs.iterdir())) == 1
    assert answer() == "one,two"

    refused = stack.cli("venv", "rebuild")
    assert refused.code == 2 and "stack 'syn' is up: run `wsgistack down` first" in refused.err
    assert stack.cli("down").code == 0


def test_requirement_file_forms_resolve_to_one_pip_argument(tmp_path: Path) -> None:
    from wsgistack import manifest
    from wsgistack.plan import pip_requirements

    (tmp_path / "req.txt").write_text("flask\n")
    (tmp_path / "wsgistack.toml").write_text(
        '[services.a]\napp = "x:app"\nrequirements = ["-r req.txt", "-c", "c.txt", "six"]\n'
        'requirements_file = "req.txt"\n')
    m = manifest.load(tmp_path / "wsgistack.toml")
    assert pip_requirements(m, m.services[0]) == (
        f"--requirement={tmp_path}/req.txt", f"--constraint={tmp_path}/c.txt", "six",
        f"--requirement={tmp_path}/req.txt")


def test_init_finds_a_flask_app_and_writes_a_manifest_that_loads(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "__init__.py").write_text("")
    (tmp_path / "notes" / "api.py").write_text(
        "from flask import Flask\n\napi = Flask(__name__)\n")
    (tmp_path / "requirements.txt").write_text("flask\n")
    res = subprocess.run([sys.executable, "-m", "wsgistack", "init"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ("wrote wsgistack.toml for a Flask app in notes/api.py; read it, "
                          "then `wsgistack up`\n")
    text = (tmp_path / "wsgistack.toml").read_text()
    assert 'app = "notes.api:api"' in text and 'requirements = ["-r requirements.txt"]' in text
    from wsgistack import manifest

    assert manifest.load(tmp_path / "wsgistack.toml").services[0].app == "notes.api:api"
    again = subprocess.run([sys.executable, "-m", "wsgistack", "init"], cwd=tmp_path,
                           capture_output=True, text=True)
    assert again.returncode == 2
    assert again.stderr == ("wsgistack: error: wsgistack.toml exists: edit it, or remove it to "
                            "start again\n")


def test_init_with_nothing_to_find_says_how_to_name_the_app(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "wsgistack", "init"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.strip().endswith("name it: `wsgistack init --app pkg.mod:app`")


def test_version_and_bash_completion(tmp_path: Path) -> None:
    from wsgistack import __version__

    version = subprocess.run([sys.executable, "-m", "wsgistack", "--version"],
                             capture_output=True, text=True)
    assert version.stdout == f"wsgistack {__version__}\n"
    script = subprocess.run([sys.executable, "-m", "wsgistack", "completion", "bash"],
                            capture_output=True, text=True, check=True).stdout
    # Completing `wsgistack st` and `wsgistack logs -` in a real bash.
    probe = (script + 'COMP_WORDS=(wsgistack st); COMP_CWORD=1; _wsgistack; '
             'echo "${COMPREPLY[*]}"; COMP_WORDS=(wsgistack logs --); COMP_CWORD=2; '
             '_wsgistack; echo "${COMPREPLY[*]}"\n')
    out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True,
                         env={**os.environ}).stdout.splitlines()
    assert out[0] == "status"
    assert {"--lines", "--verbose", "--help"} <= set(out[1].split())


def test_an_entry_runs_from_any_directory(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes_api.py").write_text(
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [])\n    return [b'ok']\n")
    made = subprocess.run([sys.executable, "-m", "wsgistack", "entry", "notes_api:app", "-o",
                           "entry.py"], cwd=project, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    ran = subprocess.run([sys.executable, str(project / "entry.py"), "--check"], cwd="/",
                         capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("ok: notes_api:app loads ")


@pytest.mark.live
@pytest.mark.parametrize("backend", ["granian", "nginx+uwsgi"])
def test_render_writes_the_commands_that_run_what_it_rendered(tmp_path: Path,
                                                              backend: str) -> None:
    port = free_port(1)
    (tmp_path / "wsgistack.toml").write_text(
        f'[stack]\nname = "r"\nbase_port = {port}\n'
        '[services.probe]\napp = "wsgistack.apps.probe:application"\nprocesses = 1\n')
    out = tmp_path / "out"
    tmp_path.chmod(0o711)  # nginx's workers (www-data) reach the socket under it
    res = subprocess.run([sys.executable, "-m", "wsgistack", "render", "--backend", backend,
                          "-o", str(out)], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-1] == str(out / "commands.sh")
    script = out / "commands.sh"
    assert oct(script.stat().st_mode & 0o777) == "0o700"
    run = subprocess.Popen(["sh", str(script)], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        answer = None
        while time.monotonic() < deadline and answer is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/probe/x", timeout=2) as r:
                    answer = json.loads(r.read())
            except OSError:
                time.sleep(0.1)
        assert answer is not None and answer["PATH_INFO"] == "/x"
    finally:
        os.killpg(run.pid, signal.SIGTERM)  # the script and every server it started
        run.wait(timeout=30)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _group_alive(run.pid):
            time.sleep(0.05)
        left = _group_alive(run.pid)
        if left:
            os.killpg(run.pid, signal.SIGKILL)
        assert not left, "a server outlived the SIGTERM"


def _group_alive(pgid: int) -> bool:
    pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    stats = [processes.proc_stat(pid) for pid in pids]
    return any(len(f) > 3 and int(f[2]) == pgid and f[0] != "Z" for f in stats)
