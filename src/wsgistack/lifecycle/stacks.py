"""Stacks as a whole on this machine: which are up (`ls`), what their state dirs hold that
nothing uses any more (`clean`), and a service's venv made again (`venv rebuild`).

A stack is found from its processes, never from a list of our own: every process a stack
starts carries its state dir in its environment (processes.MARKER), which is readable for
one's own processes, and for all of them as root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from wsgistack import access, provision
from wsgistack.errors import ServerError
from wsgistack.lifecycle import health, processes
from wsgistack.plan import Plan


@dataclass(frozen=True)
class Found:
    state_dir: str
    state: processes.StackState | None  # None: its processes run, its state.json is gone

    def health(self) -> str:
        if self.state is None:
            return "unknown (no state.json: `down` still finds its processes)"
        bad = [s.name for s in self.state.services
               if health.http_status(s.health_url, timeout=1.0)[0] != s.health_status]
        return f"unhealthy: {', '.join(bad)}" if bad else "healthy"


def _marked_dirs() -> set[str]:
    mark = f"{processes.MARKER}=".encode()
    found: set[str] = set()
    with os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/environ", "rb") as fh:
                    env = fh.read().split(b"\0")
            except OSError:
                continue  # gone, or another user's
            # A state dir is absolute: a test command's WSGISTACK_STACK is a stack's name.
            found.update(v[len(mark):].decode(errors="replace") for v in env
                         if v.startswith(mark + b"/"))
    return found


def up_on_this_machine() -> list[Found]:
    """Every stack with a live process that this user can see, `check` and `serve` stacks
    included (their state dirs lie under their manifest's)."""
    out = []
    for state_dir in sorted(_marked_dirs()):
        try:
            state = processes.load_state(state_dir)
        except ServerError:
            state = None
        out.append(Found(state_dir, state))
    return out


def _size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # gone meanwhile
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _unused(state_dir: Path, in_use: set[str], live: set[str]) -> Iterator[Path]:
    venvs = state_dir / "venvs"
    if venvs.is_dir():
        for venv in sorted(venvs.iterdir()):
            if str(venv) not in in_use:
                yield venv
    for kind in ("check", "serve", "test", "preflight"):
        for nested in sorted(state_dir.glob(f"{kind}/*")):
            if str(nested) not in live:
                yield nested


def clean(plan: Plan, state_dir: Path, say: Callable[[str], None]) -> int:
    """Remove the venvs no service of the manifest (nor a running stack) uses and the check
    and serve stacks with nothing running; returns the bytes freed."""
    live = _marked_dirs()
    in_use = {s.python_home for s in plan.services}
    state = processes.load_state(str(state_dir))
    if state:
        in_use |= {os.path.dirname(os.path.dirname(s.python)) for s in state.services}
    for nested in live:  # a running check or serve stack keeps its venvs too
        st = processes.load_state(nested) if nested.startswith(f"{state_dir}/") else None
        in_use |= {os.path.dirname(os.path.dirname(s.python)) for s in st.services} if st \
            else set()
    freed = 0
    for path in _unused(state_dir, in_use, live):
        size = _size(path)
        shutil.rmtree(path)
        freed += size
        say(f"removed {path} ({size / 2**20:.1f} MiB)")
    return freed


def rebuild_venvs(plan: Plan, names: list[str], progress: Callable[[str], None]) -> list[str]:
    """Make the named services' own venvs (all, when none is named) again from their
    requirements. Refused while the stack runs: its servers import from them."""
    state = processes.load_state(plan.state)
    if state and any(r.alive() for r in state.procs):
        raise ServerError(f"stack '{plan.name}' is up: run `wsgistack down` first, then "
                          "`wsgistack venv rebuild` and `wsgistack up`")
    chosen = [plan.service(n) for n in names] if names else list(plan.services)
    own = [s for s in chosen if s.provision.venv_base]
    if names and len(own) < len(chosen):
        bare = next(s.name for s in chosen if not s.provision.venv_base)
        raise ServerError(f"service '{bare}' has no venv of its own: it runs on "
                          f"{plan.service(bare).python}; set services.{bare}.requirements")
    done: list[str] = []
    for svc in own:
        if svc.python_home in done:
            continue
        shutil.rmtree(svc.python_home, ignore_errors=True)
        provision.ensure_venv(svc, Path(plan.path("logs")), progress)
        access.venv(plan, svc, svc.python_home)
        done.append(svc.python_home)
    return done
