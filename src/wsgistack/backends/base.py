"""What every backend module provides, and the pieces they share."""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from wsgistack import entry
from wsgistack.plan import Plan, ServicePlan


@dataclass(frozen=True)
class Proc:
    """One process to start and supervise (always in the foreground: we hold its pid)."""

    name: str
    argv: tuple[str, ...]
    log: str
    cwd: str = "/"
    env: Mapping[str, str] = field(default_factory=dict)
    serves: tuple[str, ...] = ()  # services this process answers for (default: its name)
    # A line the server logs as each worker becomes ready, and how many workers: healthy
    # means all of them ready, not just the first to answer.
    ready: tuple[str, int] | None = None
    # What makes the server reload its config and replace its workers gracefully.
    reload_signal: int = signal.SIGHUP


@dataclass(frozen=True)
class Requirement:
    """Something a backend needs on the machine, and how to get it."""

    what: str  # shown to the user: "apache2", "mod_proxy_uwsgi", "granian"
    # "binary" (on PATH or absolute), "file", "module" (importable by `python`),
    # "debian-python" (`name` is Debian's /usr/bin/python3 or a venv of it),
    # "readable" (`user` can reach `name` through every parent directory)
    kind: str
    name: str  # the binary, path, module or interpreter
    fix: str  # the command or change that provides it
    python: str = ""  # for "module": the interpreter that must import it
    user: str = ""  # for "readable": who must reach the path


class Backend(Protocol):
    ID: str
    FRONT_END: bool
    DESCRIPTION: str
    SERVICE_PACKAGES: tuple[str, ...]
    APP_AS_WORKER_USER: bool

    def render(self, plan: Plan) -> dict[str, str]: ...

    def command(self, plan: Plan) -> list[Proc]: ...

    def requirements(self, plan: Plan) -> list[Requirement]: ...


def entry_files(plan: Plan, *, mount: bool) -> dict[str, str]:
    """Entry files for every service, relative to the state dir.

    `mount`: the server passes the full path and no SCRIPT_NAME, so the entry splits the
    prefix itself. Every entry also enforces the body
    limit on a declared length: not every server or front end does (Apache's proxy does not).
    """
    files = {}
    for svc in plan.services:
        cfg = svc.config
        spec = entry.EntrySpec(
            app=cfg.app, name=cfg.name, env=svc.env, args=cfg.args,
            python_path=cfg.python_path, working_dir=svc.working_dir,
            mount=svc.prefix if mount else "",
            max_body=cfg.max_body,
        )
        files[f"entries/{svc.module}.py"] = entry.render(spec)
    return files


def log_path(plan: Plan, name: str) -> str:
    return plan.path("logs", f"{name}.log")


def python_module(svc: ServicePlan, module: str, package: str) -> Requirement:
    return Requirement(
        what=f"{module} (for service {svc.name})", kind="module", name=module,
        fix=f"{svc.python} -m pip install {package}", python=svc.python,
    )


WORKER_USER = "www-data"


def worker_user() -> str:
    """The user a front end (Apache, nginx) serves as: www-data when started as root (Apache
    refuses to serve as root), else whoever starts it ("")."""
    return WORKER_USER if os.geteuid() == 0 else ""


def readable(path: str, user: str, what: str, fix: str, server: str = "Apache") -> Requirement:
    return Requirement(
        f"{what} to be readable by {server}'s user {user}", "readable", path,
        f"{fix}, or make every parent directory searchable (chmod o+x)", user=user,
    )
