"""`wsgistack audit` on fixture trees built here: every finding kind and verdict, pinned."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import run_cli
from wsgistack.audit import AuditError, audit_tree
from wsgistack.audit.scan import KINDS

GOLDEN = Path(__file__).parent / "golden" / "audit"

SETUP_CFG = """[metadata]
name = {name}

[entry_points]
{entry_points}
"""

TREES: dict[str, dict[str, str]] = {
    # A pbr project whose API is a WSGI app any server loads.
    "ready": {
        "setup.cfg": SETUP_CFG.format(name="ready", entry_points=(
            "wsgi_scripts =\n    ready-api = ready.api.app:init_application\n"
            "console_scripts =\n    ready-manage = ready.cmd.manage:main")),
        "ready/__init__.py": "",
        "ready/api/__init__.py": "",
        "ready/api/app.py": "import flask\n\ndef init_application():\n"
                            "    return flask.Flask('ready')\n",
        "ready/wsgi/__init__.py": "",
        "ready/wsgi/api.py": "import os\nfrom ready.api import app\n\n"
                             "CONFIG = os.environ.get('READY_CONFIG_FILE')\n"
                             "application = app.init_application()\n",
        "ready/cmd/__init__.py": "", "ready/cmd/manage.py": "def main():\n    pass\n",
        "api-paste.ini": "[pipeline:main]\npipeline = auth ready\n\n[app:ready]\n"
                         "paste.app_factory = ready.api.app:factory\n",
        "httpd/ready.conf": "Listen 5000\nWSGIDaemonProcess ready processes=2\n"
                            "WSGIScriptAlias /ready /usr/bin/ready-api\n",
        "tools/uwsgi.ini.template": "[uwsgi]\nmodule = ready.wsgi.api:application\n",
        "devstack/plugin.sh": "function configure_ready {\n"
                              "    write_uwsgi_config $READY_UWSGI_CONF $READY_WSGI /ready\n}\n",
        "doc/source/install.rst": "Install\n=======\n\nDeploy the API with mod_wsgi.\n",
        "ready/tests/test_api.py": "from wsgiref.simple_server import make_server\n"
                                   "make_server('', 0, None)\n",
        # Push to clients over a websocket, as zaqar does: a transport of its own, not WSGI.
        "ready/push.py": "import websockets\n\nasync def main(handler):\n"
                         "    await websockets.serve(handler, '127.0.0.1', 9000)\n",
    },
    # A paste.deploy pipeline loaded into `application` by a module of its own.
    "pasted": {
        "pyproject.toml": '[project]\nname = "pasted"\n',
        "pasted/__init__.py": "",
        "pasted/server.py": "from paste import deploy\n\n"
                            "application = deploy.loadapp('config:/etc/pasted/paste.ini')\n",
    },
    # Only an eventlet server behind a console script; its wsgi.py defines no application.
    "eventlet-only": {
        "setup.cfg": SETUP_CFG.format(name="eventlet-only", entry_points=(
            "console_scripts =\n    evt-api = evt.cmd.api:main")),
        "evt/__init__.py": "",
        "evt/cmd/__init__.py": "",
        "evt/cmd/api.py": "import eventlet\nimport eventlet.wsgi\n\ndef main():\n"
                          "    sock = eventlet.listen(('0.0.0.0', 9292))\n"
                          "    eventlet.wsgi.server(sock, None)\n",
        "evt/wsgi.py": "def make():\n    return None\n",
    },
    # A declared entry point whose module is not in the tree.
    "broken": {
        "setup.py": "from setuptools import setup\nsetup(name='broken', entry_points={\n"
                    "    'wsgi_scripts': ['broken-api = broken.wsgi.api:init'],\n})\n",
        "broken/__init__.py": "",
    },
    # Two APIs: one WSGI-ready, the other only a Python command (wsgiref).
    "two-apis": {
        "pyproject.toml": '[project]\nname = "two-apis"\n[project.scripts]\n'
                          'two-admin = "two.admin:serve"\n',
        "two/__init__.py": "",
        "two/public.py": "def app(environ, start_response):\n    return []\n",
        "two/wsgi.py": "from two.public import app as application\n",
        "two/admin.py": "from wsgiref.simple_server import make_server\n\ndef serve():\n"
                        "    make_server('127.0.0.1', 35357, None).serve_forever()\n",
    },
    # A WSGI entry whose import path monkey-patches, forks badly and reads argv.
    "risky": {
        "pyproject.toml": '[project]\nname = "risky"\n',
        "risky/__init__.py": "",
        "risky/service.py": "import sys\nimport eventlet\nfrom concurrent.futures import "
                            "ThreadPoolExecutor\n\neventlet.monkey_patch()\n"
                            "POOL = ThreadPoolExecutor(4)\n\n"
                            "def conf():\n    return sys.argv[1:]\n\n"
                            "def app(environ, start_response):\n"
                            "    body = environ['eventlet.input'].read()\n    return [body]\n",
        "risky/wsgi.py": "from risky import service\n\napplication = service.app\n",
    },
    # An entry that only works under uWSGI.
    "uwsgi-only": {
        "pyproject.toml": '[project]\nname = "uwsgi-only"\n',
        "app.wsgi": "import uwsgi\n\ndef application(environ, start_response):\n"
                    "    return [uwsgi.version]\n",
    },
    # A library: no API at all.
    "library": {
        "pyproject.toml": '[project]\nname = "library"\n',
        "library/__init__.py": "def helper():\n    return 1\n",
    },
}

VERDICTS = {
    "ready": "supported", "pasted": "supported", "eventlet-only": "not supported",
    "broken": "not supported", "two-apis": "partial", "risky": "partial",
    "uwsgi-only": "partial", "library": "no API service",
}


@pytest.fixture
def trees(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, files in TREES.items():
        for rel, text in files.items():
            path = tmp_path / name / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    monkeypatch.chdir(tmp_path)  # reports name trees as given: relative, stable
    return tmp_path


@pytest.mark.parametrize("name", list(TREES))
def test_verdict_per_tree(trees: Path, name: str) -> None:
    assert audit_tree(name).verdict == VERDICTS[name]


def test_every_finding_kind_and_verdict_is_covered(trees: Path) -> None:
    audits = [audit_tree(name) for name in TREES]
    assert {f.kind for a in audits for f in a.findings} == set(KINDS)
    assert {a.verdict for a in audits} == {"supported", "partial", "not supported",
                                           "no API service"}


def test_text_report_is_pinned(trees: Path) -> None:
    res = run_cli("audit", *TREES)
    assert res.code == 0, res.err
    golden = GOLDEN / "fixtures.txt"
    if os.environ.get("WSGISTACK_UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(res.out)
    assert res.out == golden.read_text()


def test_json_markdown_html_and_list_file(trees: Path) -> None:
    (trees / "trees.txt").write_text("# the fixture trees\nready\n\nlibrary\n")
    doc = json.loads(run_cli("audit", "--list", "trees.txt", "--format", "json").out)
    assert [(d["project"], d["verdict"]) for d in doc] == [("ready", "supported"),
                                                           ("library", "no API service")]
    entry = next(f for f in doc[0]["findings"] if f["kind"] == "wsgi-script")
    assert (entry["file"], entry["line"], entry["group"]) == ("setup.cfg", 6, "entry")
    md = run_cli("audit", "ready", "two-apis", "--format", "md").out
    assert "| ready | **supported** | ready/wsgi/api.py:5, setup.cfg:6 |" in md
    assert "| `two/admin.py:4` | command-server | wsgiref.simple_server " \
           "(console script two-admin) |" in md
    res = run_cli("audit", *TREES, "--format", "html", "-o", "report.html")
    assert res.code == 0 and "wrote report.html (8 project(s))" in res.err
    page = (trees / "report.html").read_text()
    assert page.startswith("<!doctype html>") and "<script" not in page
    assert page.count("<details") == len(TREES)
    assert "2 supported, 3 partial, 2 not supported, 1 no API service" in page


@pytest.mark.parametrize(("setup", "message"), [
    (lambda p: None, r"^missing: no such file or directory; pass a source tree"),
    (lambda p: (p / "missing").write_text("x"),
     r"^missing: not a directory; pass a source tree, or a list of them with --list FILE$"),
])
def test_bad_paths_are_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       setup, message) -> None:
    monkeypatch.chdir(tmp_path)
    setup(tmp_path)
    with pytest.raises(AuditError, match=message):
        audit_tree("missing")
    res = run_cli("audit", "missing")
    assert res.code == 2 and res.err.startswith("wsgistack: error: missing: ")
    assert len(res.err.splitlines()) == 1


@pytest.mark.parametrize("hidden", ["tree", "parent"])
def test_unreadable_tree_is_one_clear_error(hidden: str) -> None:
    # Under /tmp, not pytest's private tmp_path: the user asking must reach the parent.
    parent = Path(tempfile.mkdtemp(prefix="wsgistack-audit-", dir="/tmp"))
    try:
        tree = parent / "secret"
        tree.mkdir()
        (tree / "wsgi.py").write_text("application = None\n")
        (tree if hidden == "tree" else parent).chmod(0)
        argv = [sys.executable, "-m", "wsgistack", "audit", str(tree)]
        if os.geteuid() == 0:  # root reads everything: ask as a user who cannot
            argv = ["runuser", "-u", "nobody", "--", *argv]
        res = subprocess.run(argv, capture_output=True, text=True, check=False)
        assert res.returncode == 2
        assert res.stderr == (f"wsgistack: error: {tree}: cannot be read (permission denied); "
                              "run as a user who can read it, or fix its permissions\n")
    finally:
        parent.chmod(0o700)
        tree.chmod(0o700)
        shutil.rmtree(parent)


def git(repo: Path, *args: str, date: str = "2016-01-01") -> str:
    """git in `repo`, as a fixed author at a fixed date (the history a test makes)."""
    stamp = date if "T" in date else f"{date}T12:00:00+0000"
    env = {**os.environ, "GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp,
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid",
           "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(["git", "-C", str(repo), *args], env=env, check=True,
                          capture_output=True, text=True).stdout.strip()


def commit(repo: Path, date: str, files: dict[str, str], message: str = "change") -> str:
    """Write `files` (relative path -> text) and commit them on `date`; the commit's sha."""
    if not (repo / ".git").exists():
        repo.mkdir(parents=True, exist_ok=True)
        git(repo, "init", "-q", "-b", "master")
    for rel, text in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message, date=date)
    return git(repo, "rev-parse", "HEAD")


SERVED = {  # an eventlet-served API before its WSGI entry, as 2016's services were
    "setup.cfg": SETUP_CFG.format(name="served", entry_points=(
        "console_scripts =\n    served-api = served.cmd.api:main")),
    "served/__init__.py": "",
    "served/app.py": "def app(environ, start_response):\n    return []\n",
    "served/cmd/__init__.py": "",
    "served/cmd/api.py": "import eventlet.wsgi\nfrom served import app\n\ndef main():\n"
                         "    eventlet.wsgi.server(None, app.app)\n",
}
WITH_ENTRY = {"setup.cfg": SETUP_CFG.format(name="served", entry_points=(
    "wsgi_scripts =\n    served-wsgi-api = served.app:app\n"
    "console_scripts =\n    served-api = served.cmd.api:main"))}


def served_repo(repo: Path) -> dict[str, str]:
    """master: 2016-11-01 (no entry), 2017-02-01 merge of a side branch whose commit of
    2016-12-15 added the entry, 2017-03-01 after. First-parent before 2017-01-12 is the
    first commit; following every parent by date would pick the side branch's."""
    shas = {"before": commit(repo, "2016-11-01", SERVED, "eventlet only")}
    git(repo, "checkout", "-q", "-b", "side")
    shas["side"] = commit(repo, "2016-12-15", WITH_ENTRY, "wsgi_scripts")
    git(repo, "checkout", "-q", "master")
    git(repo, "merge", "-q", "--no-ff", "-m", "merge side", "side", date="2017-02-01")
    shas["after"] = commit(repo, "2017-03-01", {"README.rst": "served\n"}, "docs")
    return shas


def test_audit_at_a_date_reads_the_commit_and_touches_nothing(tmp_path: Path) -> None:
    repo = tmp_path / "served"
    shas = served_repo(repo)
    # An operator's checkout: on another branch, with uncommitted work in the tree.
    git(repo, "checkout", "-q", "side")
    (repo / "served/app.py").write_text("# work in progress\n")
    (repo / "new.txt").write_text("untracked\n")
    before = (git(repo, "symbolic-ref", "HEAD"), git(repo, "rev-parse", "HEAD"),
              git(repo, "status", "--porcelain"), (repo / ".git/index").read_bytes())
    res = run_cli("audit", "--at", "2017-01-12", str(repo), "--format", "json")
    assert res.code == 0, res.err
    assert res.err.splitlines() == [f"{repo}: read {shas['before']} of 2016-11-01 on "
                                    "master, the last commit before 2017-01-12"]
    doc = json.loads(res.out)
    assert (doc[0]["project"], doc[0]["verdict"]) == ("served", "not supported")
    assert doc[0]["revision"] == f"{shas['before']} of 2016-11-01 on master"
    later = json.loads(run_cli("audit", "--at", "2017-03-02", str(repo), "--format",
                               "json").out)
    assert later[0]["verdict"] == "supported"
    assert later[0]["revision"].startswith(shas["after"])
    after = (git(repo, "symbolic-ref", "HEAD"), git(repo, "rev-parse", "HEAD"),
             git(repo, "status", "--porcelain"), (repo / ".git/index").read_bytes())
    assert after == before
    assert (repo / "served/app.py").read_text() == "# work in progress\n"


@pytest.mark.parametrize(("argv", "message"), [
    (["--at", "12/01/2017", "served"], r"^--at 12/01/2017: not a date; write it as YYYY-MM-DD"),
    (["--at", "2016-01-01", "served"], r"^served: no commit on master before 2016-01-01 \(its "
                                       r"first is of 2016-11-01\); pass a later --at$"),
    (["--at", "2017-01-12", "plain"], r"^plain: not a git repository; --at reads a "
                                      r"repository's history"),
])
def test_audit_at_errors_are_one_line(tmp_path: Path, argv: list[str], message: str) -> None:
    served_repo(tmp_path / "served")
    (tmp_path / "plain").mkdir()
    res = run_cli("audit", *argv, cwd=tmp_path)
    assert res.code == 2 and len(res.err.splitlines()) == 1
    assert re.search(message, res.err.removeprefix("wsgistack: error: ")), res.err


def test_a_websocket_transport_beside_the_api_is_said_and_not_held_against_it(
        trees: Path) -> None:
    """zaqar's case: its WSGI API, and a websocket server run as a process of its own."""
    found = audit_tree("ready")
    assert found.verdict == "supported" and found.to_change == ()
    assert [(f.file, f.line) for f in found.findings if f.kind == "websocket-server"] == [
        ("ready/push.py", 4)]
    assert found.reasons[-1] == (
        "beside it, a websocket transport that is not WSGI (websockets.serve at "
        "ready/push.py:4): it runs as a process of its own and does not count for or against "
        "the WSGI API")
    assert "websocket" not in run_cli("audit", "--format", "md", "ready").out.split("\n")[4]


def test_at_is_the_start_of_the_day_in_utc(tmp_path: Path) -> None:
    repo = tmp_path / "edge"
    late = commit(repo, "2017-01-11T23:59:00+0000", {"a.txt": "1\n"})
    commit(repo, "2017-01-11T23:30:00-0100", {"a.txt": "2\n"})  # 00:30 UTC on the 12th
    res = run_cli("audit", "--at", "2017-01-12", str(repo))
    assert res.err.startswith(f"{repo}: read {late} of 2017-01-11 on master"), res.err
