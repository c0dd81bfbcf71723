from __future__ import annotations

import contextlib
import io
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from wsgistack import cli
from wsgistack.host import DEFAULT_USER
from wsgistack.lifecycle import preflight, processes
from wsgistack.runtime import EXPORTER

FIXTURES = Path(__file__).parent / "fixtures"


def free_port(count: int = 3) -> int:
    """A base port with room for the example stacks' three services."""
    return preflight.free_ports("127.0.0.1", count)


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_cli(*argv: str, cwd: Path | None = None) -> Result:
    """Run the CLI in-process, as a user would from `cwd`."""
    out, err = io.StringIO(), io.StringIO()
    old = Path.cwd()
    try:
        if cwd:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.run(list(argv))
    finally:
        os.chdir(old)
    return Result(code, out.getvalue(), err.getvalue())


def assert_golden(golden: Path, files: dict[str, str]) -> None:
    """`files` (path: text) are exactly the `.golden` files under `golden`; with
    WSGISTACK_UPDATE_GOLDEN=1 they become them (review the diff)."""
    if os.environ.get("WSGISTACK_UPDATE_GOLDEN"):
        shutil.rmtree(golden, ignore_errors=True)
        for rel, text in files.items():
            (golden / f"{rel}.golden").parent.mkdir(parents=True, exist_ok=True)
            (golden / f"{rel}.golden").write_text(text)
    expected = {str(p.relative_to(golden)).removesuffix(".golden"): p.read_text()
                for p in golden.rglob("*.golden")}
    assert sorted(files) == sorted(expected)
    for rel, text in files.items():
        assert text == expected[rel], f"{golden / rel}.golden differs"


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture(scope="session", autouse=True)
def _restore_system_users() -> Iterator[None]:
    """Started as root, `up` creates the default app user when it is missing: a user the
    tests made, they remove again (userdel removes its group too)."""
    existed = user_exists(DEFAULT_USER)
    yield
    if os.geteuid() == 0 and not existed and user_exists(DEFAULT_USER):
        subprocess.run(["userdel", DEFAULT_USER], capture_output=True, check=False)


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A temporary directory that the users services run as (wsgistack, www-data) can
    reach: pytest's own lie under a private /tmp/pytest-of-root when the tests run as root."""
    root = Path(tempfile.mkdtemp(prefix="wsgistack-test-", dir="/tmp"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def clean_sampleapp(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Let each test import the fixture apps afresh, and undo what loading changes."""
    monkeypatch.syspath_prepend(str(FIXTURES))
    for mod in ("sampleapp", "broken"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.chdir(os.getcwd())
    yield
    for mod in ("sampleapp", "broken"):
        sys.modules.pop(mod, None)


class Stack:
    """A manifest in a temporary directory, brought up and down through the CLI."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, text: str) -> Path:
        path = self.root / "wsgistack.toml"
        path.write_text(text)
        return path

    def cli(self, *argv: str) -> Result:
        return run_cli(*argv, cwd=self.root)

    def pids(self) -> list[int]:
        """The servers' leaders (the stack's metrics exporter is not one of them)."""
        return [pid for name, pid in self._procs() if name != EXPORTER]

    def all_pids(self) -> list[int]:
        return [pid for _name, pid in self._procs()]

    def _procs(self) -> list[tuple[str, int]]:
        state = processes.load_state(str(self.root / ".wsgistack"))
        return [(r.name, r.pid) for r in state.procs] if state else []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return processes.proc_stat(pid)[:1] not in (["Z"], [])


# Behind these front ends (uWSGI's own HTTP router for uwsgi) a reload swaps a new uWSGI in
# on each socket (runtime.py).
SWAPPED = ("apache+uwsgi", "nginx+uwsgi", "uwsgi")


def assert_reloaded(backend: str, before: list[int], after: list[int]) -> None:
    """The leaders after a reload: the same processes, but for uWSGI behind a front end,
    which is new (the old one gone); the front ends (last: nginx or Apache, or each
    service's uWSGI router) stay."""
    if backend in SWAPPED:
        replaced = [old for old, new in zip(before, after, strict=True) if old != new]
        assert replaced and after[-1] == before[-1]
        assert not set(after) & set(replaced) and not any(map(alive, replaced))
        assert all(map(alive, after))
    else:
        assert after == before and all(map(alive, after))


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    st = Stack(tmp_path)
    yield st
    pids = st.all_pids()
    st.cli("down")
    for pid in pids:  # never leave a server behind, even when a test failed
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
