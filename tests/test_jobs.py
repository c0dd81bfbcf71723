"""`wsgistack test` and `wsgistack env`: the Flask example's own suite (examples/flask) run
against its stack on each backend; a failing test, an app that cannot start and Ctrl-C in the
middle of the command. The live tests start real servers on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import pytest

from tests.conftest import Stack, alive, free_port, run_cli
from wsgistack import jobs, manifest, plan
from wsgistack.backends import BACKENDS, get
from wsgistack.errors import ManifestError, WsgistackError
from wsgistack.jobs import artifacts
from wsgistack.jobs.job import FAILED, PASSED, STACK_FAILED, TIMED_OUT, Outcome
from wsgistack.lifecycle import processes

EXAMPLE = Path(__file__).parent.parent / "examples" / "flask"
WSGISTACK = Path(sys.executable).with_name("wsgistack")

FAILING_TEST = '''
import os
import urllib.error
import urllib.request


def test_missing_note():
    url = os.environ["WSGISTACK_NOTES_URL"] + "/notes/no-such-note"
    try:
        urllib.request.urlopen(url, timeout=30)
    except urllib.error.HTTPError as exc:
        assert exc.code == 200
'''

HANGS = '''
import os, sys, time
with open(sys.argv[1], "w") as fh:
    fh.write(str(os.getpid()))
time.sleep(600)
'''


@pytest.fixture
def example(stack: Stack) -> Iterator[Stack]:
    """The Flask example, copied where the servers' user can read it."""
    shutil.copytree(EXAMPLE, stack.root, dirs_exist_ok=True)
    yield stack
    left = processes.marked(str(stack.root / ".wsgistack"), nested=True)
    for pid in left:  # never leave a server behind, even when a test failed
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left: {processes.describe(left)}"


def no_stack_left(root: Path) -> None:
    state = root / ".wsgistack"
    assert processes.marked(str(state), nested=True) == []
    assert not list(state.glob("test/*/state.json"))


# ---- the model: [test], the job, the report ------------------------------------------------

def test_test_table_is_declared_like_every_setting(tmp_path: Path) -> None:
    (tmp_path / "wsgistack.toml").write_text(
        '[services.a]\napp = "x:app"\n[test]\ncommand = ["pytest", "tests"]\n'
        'backends = ["granian"]\ntimeout = 30\nenv = { A = "1" }\nresults = "out.xml"\n')
    m = manifest.load(tmp_path / "wsgistack.toml")
    assert m.test == manifest.TestConfig(("pytest", "tests"), ("granian",), 30.0,
                                         {"A": "1"}, "out.xml")
    assert manifest.load_default(tmp_path).test.backends == ("mod_wsgi", "apache+uwsgi")
    assert "## `[test]`" in manifest.settings_reference()


@pytest.mark.parametrize(("text", "message"), [
    ('[test]\ncomand = ["x"]', r"test\.comand: unknown key; did you mean 'command'\?"),
    ("[test]\ntimeout = 0", r"test\.timeout: must be at least 1, got 0"),
    ('[test]\ncommand = "pytest"', r"test\.command: expected list of strings"),
    ("[test]\nbackends = []", r"test\.backends: no backends"),
    ('[tests]\ncommand = ["x"]', r"tests: unknown table; did you mean 'test'\?"),
])
def test_test_table_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "m.toml").write_text(f'[services.a]\napp = "x:app"\n{text}\n')
    with pytest.raises(ManifestError, match=message):
        manifest.load(tmp_path / "m.toml")


def test_the_job_takes_options_over_the_table(tmp_path: Path) -> None:
    (tmp_path / "wsgistack.toml").write_text(
        '[services.a]\napp = "x:app"\n[test]\ncommand = ["pytest"]\ntimeout = 30\n')
    m = manifest.load(tmp_path / "wsgistack.toml")
    job = jobs.make(m, [], None, None, None)
    assert (job.command, job.backends, job.timeout) == (
        ("pytest",), ("mod_wsgi", "apache+uwsgi"), 30.0)
    assert job.artifacts == tmp_path / ".wsgistack" / "test-artifacts"
    job = jobs.make(m, ["--", "tox", "-e", "api"], "all", 5, str(tmp_path / "a"))
    assert (job.command, job.backends, job.timeout) == (("tox", "-e", "api"),
                                                       tuple(BACKENDS), 5)
    with pytest.raises(WsgistackError, match=r"--backends: unknown backend 'modwsgi'; "
                       r"did you mean 'mod_wsgi'\?"):
        jobs.make(m, [], "granian,modwsgi", None, None)
    (tmp_path / "wsgistack.toml").write_text('[services.a]\napp = "x:app"\n')
    with pytest.raises(WsgistackError, match=r"no test command: give one after `--`"):
        jobs.make(manifest.load(tmp_path / "wsgistack.toml"), [], None, None, None)


def test_a_stack_with_keystone_names_its_clouds_yaml(tmp_path: Path) -> None:
    (tmp_path / "wsgistack.toml").write_text(
        '[stack]\nname = "os"\n[services.keystone]\napp = "x:app"\nprefix = "/identity"\n'
        'clouds = "clouds.yaml.in"\n[services.other]\napp = "y:app"\n')
    m = manifest.load(tmp_path / "wsgistack.toml")
    env = jobs.stack_env(plan.build(m, get("mod_wsgi")))
    assert env["OS_CLIENT_CONFIG_FILE"] == str(tmp_path / ".wsgistack" / "clouds.yaml")
    assert env["OS_CLOUD"] == "os-admin"
    assert env["WSGISTACK_KEYSTONE_URL"] == "http://127.0.0.1:8780/identity"
    assert env["WSGISTACK_OTHER_INTERNAL_URL"] == "http://127.0.0.1:8780/other"
    (tmp_path / "wsgistack.toml").write_text(
        '[services.a]\napp = "x:app"\nclouds = "c.in"\n[services.b]\napp = "y:app"\n'
        'clouds = "c.in"\n')
    with pytest.raises(ManifestError, match=r"services\.b\.clouds: the stack has one "
                       r"clouds\.yaml, and service 'a' writes it already"):
        manifest.load(tmp_path / "wsgistack.toml")


def outcomes(tmp_path: Path) -> list[Outcome]:
    return [
        Outcome("granian", PASSED, tmp_path / "granian", 0, 0.5, 2.0),
        Outcome("gunicorn", FAILED, tmp_path / "gunicorn", 1, 0.5, 2.0,
                output_tail=("1 failed, 2 passed",), failed_tests=("tests/t.py::test_x",),
                log_error="notes.log: Traceback (most recent call last):"),
        Outcome("uwsgi", TIMED_OUT, tmp_path / "uwsgi", None, 0.5, 9.0),
        Outcome("mod_wsgi", STACK_FAILED, tmp_path / "mod_wsgi", error="cannot load its app"),
    ]


def test_matrix_exit_code_and_junit(tmp_path: Path) -> None:
    found = outcomes(tmp_path)
    text = jobs.matrix(found, tmp_path)
    assert text.splitlines()[:5] == [
        "backend   healthy  command  result",
        "granian   0.5s     2.0s     passed",
        "gunicorn  0.5s     2.0s     failed exit 1",
        "uwsgi     0.5s     9.0s     timed out",
        "mod_wsgi  -        -        stack failed"]
    assert "  failed: tests/t.py::test_x" in text
    assert "  log: notes.log: Traceback (most recent call last):" in text
    assert "  error: cannot load its app" in text
    assert [jobs.exit_code(found[:1]), jobs.exit_code(found[:3]), jobs.exit_code(found)] == [
        0, 1, 2]
    suite = ElementTree.fromstring(jobs.junit(found, "wsgistack.t"))
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("4", "2", "1")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert cases["granian"].find("failure") is None
    assert "failed: tests/t.py::test_x" in (cases["gunicorn"].findtext("failure") or "")
    assert cases["mod_wsgi"].find("error") is not None


# ---- live: the example's suite on real servers ---------------------------------------------

@pytest.mark.live
def test_suite_passes_on_all_six_backends(example: Stack) -> None:
    junit = example.root / "junit.xml"
    res = example.cli("test", "--backends", "all", "--junit", str(junit),
                      "--artifacts", "out")
    assert res.code == 0, res.out + res.err
    rows = [line.split() for line in res.out.splitlines()[1:7]]
    assert [(r[0], r[-1]) for r in rows] == [(b, "passed") for b in BACKENDS]
    assert [ln.split(":")[0] for ln in res.err.splitlines() if ln.startswith("[")] == [
        f"[{i}/6] {b}" for i, b in enumerate(BACKENDS, 1)]
    suite = ElementTree.parse(junit).getroot()
    assert [c.get("name") for c in suite.iter("testcase")] == list(BACKENDS)
    for backend in BACKENDS:
        where = example.root / "out" / backend.replace("+", "-")
        summary = json.loads((where / artifacts.SUMMARY).read_text())
        assert summary["status"] == "passed" and summary["code"] == 0
        assert summary["environment"]["WSGISTACK_STACK"] == "notes"
        assert "3 passed" in (where / artifacts.STDOUT).read_text()
        assert '"POST /notes/notes HTTP/1.1" 201' in (where / "logs/notes-access.log").read_text()
        assert list((where / "etc" / "entries" / "notes").glob("*.py"))
        assert json.loads((where / "status.json").read_text())["services"][0]["health"] == \
            "healthy"
    no_stack_left(example.root)


@pytest.mark.live
def test_a_failing_test_is_named_with_its_request_in_the_access_log(example: Stack) -> None:
    (example.root / "tests" / "test_fail.py").write_text(FAILING_TEST)
    res = example.cli("test", "--backends", "gunicorn")
    assert res.code == 1, res.out + res.err
    assert "gunicorn  " in res.out and "failed exit 1" in res.out
    assert "  failed: tests/test_fail.py::test_missing_note" in res.out
    where = example.root / ".wsgistack" / "test-artifacts" / "gunicorn"
    access_log = (where / "logs" / "notes-access.log").read_text()
    assert '"GET /notes/notes/no-such-note HTTP/1.1" 404' in access_log
    assert json.loads((where / artifacts.SUMMARY).read_text())["failed_tests"] == [
        "tests/test_fail.py::test_missing_note"]
    no_stack_left(example.root)


@pytest.mark.live
def test_an_app_that_cannot_start_is_exit_2_with_its_log(example: Stack) -> None:
    (example.root / "app.py").write_text('raise RuntimeError("no database configured")\n')
    res = example.cli("test", "--backends", "granian")
    assert res.code == 2, res.out + res.err
    assert "granian  -        -        stack failed" in res.out
    assert "RuntimeError: no database configured" in res.out
    log = example.root / ".wsgistack/test-artifacts/granian/logs" / artifacts.UP_LOG
    assert 'raise RuntimeError("no database configured")' in log.read_text()  # the traceback
    no_stack_left(example.root)


@pytest.mark.live
def test_a_command_over_its_timeout_is_stopped(example: Stack) -> None:
    ready = example.root / "pid"
    res = example.cli("test", "--backends", "uwsgi", "--timeout", "3", "--",
                      sys.executable, "-c", HANGS, str(ready))
    assert res.code == 1, res.out + res.err
    assert "uwsgi  " in res.out and "timed out" in res.out
    assert not alive(int(ready.read_text()))
    no_stack_left(example.root)


@pytest.mark.live
def test_sigint_mid_command_leaves_no_process_and_no_state(example: Stack) -> None:
    ready = example.root / "pid"
    # SIGINT as a terminal gives it, also where this suite runs in the background of a shell
    # without job control, which ignores SIGINT for its children (and Python then keeps it
    # ignored).
    child = subprocess.Popen(
        [str(WSGISTACK), "test", "--backends", "mod_wsgi", "--", sys.executable, "-c", HANGS,
         str(ready)], cwd=example.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while not (ready.exists() and ready.read_text()):  # the command is running
            assert child.poll() is None and time.monotonic() < deadline, child.communicate()
            time.sleep(0.05)
        assert processes.marked(str(example.root / ".wsgistack"), nested=True)  # the stack
        child.send_signal(signal.SIGINT)
        _out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:  # reaped, its pipes closed: nothing left for a later test
            child.kill()
            child.communicate()
    assert child.returncode == 130, err
    assert not alive(int(ready.read_text()))
    no_stack_left(example.root)
    assert not (example.root / ".wsgistack" / "test").exists()


@pytest.mark.live
def test_env_and_a_user_stack_left_alone(example: Stack) -> None:
    port = free_port(2)
    assert example.cli("up", "-d", "--base-port", str(port)).code == 0
    before = example.pids()
    res = example.cli("env", "--format", "json")
    assert res.code == 0, res.err
    env = json.loads(res.out)
    assert env["WSGISTACK_STACK"] == "notes"
    assert env["WSGISTACK_STATE_DIR"] == str(example.root / ".wsgistack")
    assert env["WSGISTACK_NOTES_URL"] == f"http://127.0.0.1:{port}/notes"
    shell = example.cli("env").out
    assert f"export WSGISTACK_NOTES_URL=http://127.0.0.1:{port}/notes" in shell.splitlines()
    # The suite through `wsgistack env`, as a person runs it against their own stack.
    suite = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            "tests"], cwd=example.root, env={**os.environ, **env},
                           capture_output=True, text=True, check=False)
    assert suite.returncode == 0, suite.stdout
    res = example.cli("test", "--backends", "granian")  # beside it, on ports of its own
    assert res.code == 0, res.out + res.err
    assert example.pids() == before and all(map(alive, before))
    assert example.cli("down").code == 0


def test_env_of_a_stack_that_is_not_up(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLE, tmp_path, dirs_exist_ok=True)
    res = run_cli("env", cwd=tmp_path)
    assert res.code == 2
    assert "stack 'notes' is not up: `wsgistack up -d` first" in res.err


# ---- the pytest plugin -----------------------------------------------------------------

SEEN = '''
import os


def test_the_stack_is_shared(wsgistack_stack):
    assert wsgistack_stack.urls["notes"] == os.environ["WSGISTACK_NOTES_URL"]
    with open(os.path.join(os.environ["SEEN_DIR"], os.environ["PYTEST_XDIST_WORKER"]), "w") as fh:
        fh.write(wsgistack_stack.state_dir)
'''


@pytest.mark.live
def test_pytest_plugin_one_stack_for_two_workers(example: Stack) -> None:
    tests = example.root / "tests"
    (tests / "test_seen.py").write_text(SEEN)
    (tests / "test_fail.py").write_text(FAILING_TEST)
    seen = example.root / "seen"
    seen.mkdir()
    res = subprocess.run(
        # `--dist each`: both workers run every test, against the one stack.
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2", "--dist", "each",
         "--wsgistack",
         "wsgistack.toml", "--wsgistack-backend", "apache+uwsgi", "tests"],
        cwd=example.root, env={**os.environ, "SEEN_DIR": str(seen)}, capture_output=True,
        text=True, check=False, timeout=300)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "2 failed, 8 passed" in res.stdout
    workers = {p.name: p.read_text() for p in seen.iterdir()}
    assert set(workers) == {"gw0", "gw1"}
    assert len(set(workers.values())) == 1  # against one stack
    assert next(iter(workers.values())) == str(example.root / ".wsgistack/test/apache-uwsgi")
    # The failing test's report: the access line of its request, from its time window.
    assert "wsgistack: logs/notes-access.log while the test ran" in res.stdout
    assert '"GET /notes/notes/no-such-note HTTP/1.1" 404' in res.stdout
    no_stack_left(example.root)
