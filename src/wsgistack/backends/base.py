"""What every backend module provides, and the pieces they share."""

from __future__ import annotations

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


@dataclass(frozen=True)
class Requirement:
    """Something a backend needs on the machine, and how to get it."""

    what: str  # shown to the user: "apache2", "mod_proxy_uwsgi", "granian"
    kind: str  # "binary" (on PATH or absolute), "file", or "module" (importable by python)
    name: str  # the binary, file path or module name
    fix: str  # the command that installs it
    python: str = ""  # for kind == "module": the interpreter that must import it


class Backend(Protocol):
    ID: str
    FRONT_END: bool
    DESCRIPTION: str

    def render(self, plan: Plan) -> dict[str, str]: ...

    def command(self, plan: Plan) -> list[Proc]: ...

    def requirements(self, plan: Plan) -> list[Requirement]: ...


def entry_files(plan: Plan, *, mount: bool, limit: bool = True) -> dict[str, str]:
    """Entry files for every service, relative to the state dir.

    `mount`: the server passes the full path and no SCRIPT_NAME, so the entry splits the
    prefix itself. `limit`: the server has no body limit of its own.
    """
    files = {}
    for svc in plan.services:
        cfg = svc.config
        spec = entry.EntrySpec(
            app=cfg.app, name=cfg.name, env=svc.env, args=cfg.args,
            python_path=cfg.python_path, working_dir=svc.working_dir,
            mount=svc.prefix if mount else "",
            max_body=cfg.max_body if limit else 0,
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
