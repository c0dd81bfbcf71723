"""Live: examples/openstack/postgresql.toml, Keystone with 4 processes on a PostgreSQL
server that the test starts from Debian's binaries in a temp dir, on a free loopback port,
and removes after."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Stack, alive, free_port
from tests.test_openstack import EXAMPLE, _catalog, keystone_workload
from wsgistack.lifecycle import processes

pytestmark = [pytest.mark.live, pytest.mark.openstack]


def _as_postgres(*argv: str) -> list[str]:
    # PostgreSQL refuses to run as root.
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else list(argv)


@contextlib.contextmanager
def postgres_server(user: str, databases: list[str]) -> Iterator[str]:
    """A PostgreSQL server of its own, with `user` owning `databases`; yields the server's
    URL for SQLAlchemy without a database (`postgresql+psycopg2://USER:PW@127.0.0.1:PORT`).
    Stopped and removed on the way out, also on failure."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    assert found, "no PostgreSQL server: tools/test.sh installs Debian's postgresql"
    bin_dir = Path(found[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="wsgistack-pg-", dir="/tmp"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    subprocess.run(_as_postgres(str(bin_dir / "initdb"), "-D", f"{root}/data", "-U", "postgres",
                                "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"),
                   check=True, capture_output=True)
    port = free_port(1)
    with open(root / "server.log", "wb") as log:
        server = subprocess.Popen(
            _as_postgres(str(bin_dir / "postgres"), "-D", f"{root}/data", "-p", str(port),
                         "-k", str(root), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"),
            stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while subprocess.run([str(bin_dir / "pg_isready"), "-q", "-h", str(root), "-p",
                              str(port)], check=False).returncode != 0:
            assert server.poll() is None and time.monotonic() < deadline, \
                (root / "server.log").read_text()
            time.sleep(0.1)
        password = secrets.token_hex(12)
        sql = [f"CREATE ROLE {user} LOGIN PASSWORD '{password}'",
               *(f"CREATE DATABASE {name} OWNER {user}" for name in databases)]
        subprocess.run(_as_postgres(
            str(bin_dir / "psql"), "-q", "-h", str(root), "-p", str(port), "-U", "postgres",
            *(arg for stmt in sql for arg in ("-c", stmt))), check=True, capture_output=True)
        yield f"postgresql+psycopg2://{user}:{password}@127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGINT)  # fast shutdown
        server.wait(30)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A database URL for Keystone on a server of its own."""
    with postgres_server("keystone", ["keystone"]) as server:
        yield f"{server}/keystone"


@pytest.fixture(scope="module")
def stack(postgres: str) -> Iterator[Stack]:
    root = Path(tempfile.mkdtemp(prefix="wsgistack-openstack-pg-", dir="/tmp"))
    root.chmod(0o755)  # Apache's worker user must reach the venv and the data
    for path in EXAMPLE.iterdir():
        if path.is_file():
            shutil.copy(path, root / path.name)
    base = root / "wsgistack.toml"
    base.write_text(re.sub(r"(?m)^base_port = \d+", f"base_port = {free_port()}",
                           base.read_text()))
    secret = root / "keystone-database"
    secret.write_text(postgres + "\n")
    secret.chmod(0o600)
    st = Stack(root)
    yield st
    st.cli("-f", "postgresql.toml", "down")
    shutil.rmtree(root, ignore_errors=True)


def test_four_keystone_processes_on_postgresql_take_a_concurrent_workload(stack, postgres):
    res = stack.cli("-f", "postgresql.toml", "up", "--detach", "--backend", "mod_wsgi")
    assert res.code == 0, res.err
    state = stack.root / ".wsgistack-pg"
    running = processes.load_state(str(state))
    pids = [r.pid for r in running.procs] if running else []
    try:
        conf = (state / "etc" / "keystone" / "keystone.conf").read_text()
        assert f"connection = {postgres}" in conf
        assert postgres not in res.out + res.err  # a secret: never shown
        daemons = [p for leader in pids for p in processes.descendants(leader)
                   if processes.cmdline(p).startswith("(wsgi:keystone)")]
        assert len(daemons) == 4, [processes.cmdline(p) for p in daemons]
        catalog = json.loads(_catalog(stack, state))
        identity = next(s["url"] for s in catalog["services"] if s["name"] == "keystone")
        calls, failed = keystone_workload(identity)
    finally:
        assert stack.cli("-f", "postgresql.toml", "down").code == 0
    assert calls >= 400 and failed == [], failed[:5]
    assert not [p for p in pids if alive(p)]
