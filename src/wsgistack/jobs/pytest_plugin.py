"""The pytest plugin (entry point `pytest11`): a project's tests against its stack.

    pytest --wsgistack wsgistack.toml [--wsgistack-backend B] [--wsgistack-reuse] tests/

One stack for the session, brought up before collection (test modules may read
`WSGISTACK_<SERVICE>_URL` when imported) and down at the end; with pytest-xdist, by the
controller alone, its environment handed to every worker. `--wsgistack-reuse` takes the
manifest's own stack when it is up, and leaves it up. Run by `wsgistack test`, the plugin
takes the stack that command brought up (from `WSGISTACK_STATE_DIR`).

The `wsgistack_stack` fixture gives the stack's name, state dir, backend, environment and
service URLs; a failing test's report carries what the services' logs and access logs
gained while it ran (their last lines).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from wsgistack import manifest, runtime, secrets
from wsgistack.errors import WsgistackError
from wsgistack.jobs import environment, runner
from wsgistack.jobs.job import select
from wsgistack.lifecycle.processes import Running
from wsgistack.observe import AccessLog
from wsgistack.plan import Plan

TAIL = 20  # lines of each log a failing test's report shows
KEY = "wsgistack"  # in xdist's workerinput: the stack's environment, as JSON
_offsets = pytest.StashKey[dict[str, int]]()


@dataclass(frozen=True)
class StackInfo:
    """What the `wsgistack_stack` fixture gives a test."""

    name: str
    state_dir: str
    backend: str
    env: dict[str, str]
    # Per service, by its name as its variables spell it, lower-cased (`my-api`: `my_api`).
    urls: dict[str, str] = field(default_factory=dict)
    internal_urls: dict[str, str] = field(default_factory=dict)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("wsgistack", "the project's stack, deployed by wsgistack")
    group.addoption("--wsgistack", metavar="MANIFEST",
                    help="bring this manifest's stack up for the session (one for all "
                    "xdist workers) and down at the end")
    group.addoption("--wsgistack-backend", metavar="B",
                    help="its backend (default: the first of [test] backends)")
    group.addoption("--wsgistack-reuse", action="store_true",
                    help="use the manifest's own stack when it is up (and leave it up)")


class _Session:
    """The controller's (or the only process's) stack: up at the start, down at the end."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.plan: Plan | None = None
        self.running: list[Running] = []
        self.env: dict[str, str] = {}

    def up(self) -> None:
        m = manifest.load(Path(self.config.getoption("wsgistack")))
        if self.config.getoption("wsgistack_reuse"):
            found = environment.running(m)
            if found is not None:
                secrets.hide(found.secrets)
                self.env = environment.stack_env(found)
                return
        chosen = self.config.getoption("wsgistack_backend")
        backend = select([chosen] if chosen else list(m.test.backends),
                         "--wsgistack-backend")[0]
        self.plan = runner.fresh(m, backend)
        try:
            self.running = runtime.up(self.plan, lambda _msg: None)
        except BaseException:
            runner.down(self.plan, [])
            self.plan = None
            raise
        self.env = environment.stack_env(self.plan)

    def down(self) -> None:
        if self.plan is not None:
            runner.down(self.plan, self.running)
            self.plan = None


def pytest_configure(config: pytest.Config) -> None:
    worker = getattr(config, "workerinput", None)
    if worker is not None and KEY in worker:  # an xdist worker: the controller's stack
        os.environ.update(json.loads(worker[KEY]))
    elif config.getoption("wsgistack"):
        config.pluginmanager.register(_Session(config), "wsgistack-session")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Before xdist starts its workers and before anything is collected."""
    own = session.config.pluginmanager.get_plugin("wsgistack-session")
    if isinstance(own, _Session):
        try:
            own.up()
        except WsgistackError as exc:
            raise pytest.UsageError(f"wsgistack: {exc}") from None
        os.environ.update(own.env)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist: each worker gets the stack's environment."""
    own = node.config.pluginmanager.get_plugin("wsgistack-session")
    if isinstance(own, _Session) and own.env:
        node.workerinput[KEY] = json.dumps(own.env)


def pytest_unconfigure(config: pytest.Config) -> None:
    own = config.pluginmanager.get_plugin("wsgistack-session")
    if isinstance(own, _Session):
        own.down()


def _state_dir() -> str:
    return os.environ.get(environment.STATE_DIR, "")


@pytest.fixture(scope="session")
def wsgistack_stack() -> StackInfo:
    """The stack the tests run against (`--wsgistack MANIFEST`, or `wsgistack test`'s)."""
    if not _state_dir():
        pytest.skip("no stack: run with --wsgistack MANIFEST, or under `wsgistack test`")
    env = {k: v for k, v in os.environ.items() if k.startswith("WSGISTACK_")}
    services = [k.removeprefix("WSGISTACK_").removesuffix("_INTERNAL_URL") for k in env
                if k.endswith("_INTERNAL_URL")]
    return StackInfo(env.get(environment.STACK, ""), env[environment.STATE_DIR],
                     env.get(environment.BACKEND, ""), env,
                     {s.lower(): env.get(f"WSGISTACK_{s}_URL", "") for s in services},
                     {s.lower(): env[f"WSGISTACK_{s}_INTERNAL_URL"] for s in services})


def _logs() -> list[Path]:
    logs = Path(_state_dir(), "logs")
    return sorted(logs.glob("*.log")) if _state_dir() and logs.is_dir() else []


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Where each log ends as the test begins: what it gains is the test's window."""
    item.stash[_offsets] = {str(p): p.stat().st_size for p in _logs()}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    before = item.stash.get(_offsets, {})
    time.sleep(2 * AccessLog.FLUSH)  # the workers write their access lines that often
    for path in _logs():
        with open(path, "rb") as fh:
            fh.seek(before.get(str(path), 0))
            lines = fh.read().decode("utf-8", "replace").splitlines()
        if lines:
            report.sections.append((f"wsgistack: logs/{path.name} while the test ran",
                                    secrets.redact("\n".join(lines[-TAIL:]))))
