"""granian: Rust HTTP I/O, the WSGI app on blocking threads. The embedded default.

One granian per service on its own port. The entry splits the prefix itself: granian's
`--url-path-prefix` (2.8) answers a path outside the prefix as if it were the prefix's root
instead of 404. granian has no body limit of its own: the entry enforces it.
"""

from __future__ import annotations

import os
from pathlib import Path

from wsgistack.backends.base import (
    Proc,
    Requirement,
    app_access,
    app_proc,
    entry_files,
    granian_launcher,
    python_module,
    static_access,
)
from wsgistack.plan import Plan, ServicePlan

# granian's command line with a reload that hands connections over, copied beside each
# service's entry.
_LAUNCHER_SOURCE = (Path(__file__).parent / "granian_run.py").read_text(encoding="utf-8")

ID = "granian"
FRONT_END = False
HOLDS_SLOW_CLIENTS = False
FRAMING_GAP = ("a chunked body hyper cannot decode reaches the app cut short (granian says "
               "only that the body ended)")
SERVICE_PACKAGES: tuple[str, ...] = ("granian",)  # what a service's own venv must hold
VENV_FILES: tuple[str, ...] = ()
DESCRIPTION = "granian per service, each on its own port (the embedded default)"


def render(plan: Plan) -> dict[str, str]:
    # granian refuses more than 100 fields, but not a large one: the entry does.
    return {**entry_files(plan, mount=True, own_timeout=False, check_headers=True,
                          check_framing=True),
            **{granian_launcher(svc): _LAUNCHER_SOURCE for svc in plan.services}}


def argv(plan: Plan, svc: ServicePlan) -> tuple[str, ...]:
    cfg = svc.config
    return (
        svc.python, os.path.join(os.path.dirname(svc.entry),
                                 os.path.basename(granian_launcher(svc))),
        "--interface", "wsgi",
        "--host", plan.host, "--port", str(svc.port),
        "--workers", str(cfg.processes), "--blocking-threads", str(cfg.threads),
        "--no-ws", "--log-level", "warning",
        "--working-dir", os.path.dirname(svc.entry),
        "--workers-kill-timeout", "10",
        # After the new worker has built its app: time for keep-alive clients to leave the
        # old one (granian_run.py). granian's default, 3.5 s a worker, made a reload 7 s.
        "--respawn-interval", "0.5",
        "--respawn-failed-workers",  # off by default: one crashed worker, one lost service
        "--pid-file", f"{svc.run_dir}/granian.pid",
        *(arg for path, directory in svc.static for arg in (
            "--static-path-route", svc.prefix.rstrip("/") + path,
            "--static-path-mount", directory)),
        f"{svc.module}:application",
    )


def command(plan: Plan) -> list[Proc]:
    return [app_proc(plan, svc, argv(plan, svc)) for svc in plan.services]


def requirements(plan: Plan) -> list[Requirement]:
    return [*app_access(plan), *static_access(plan, front_end=False),
            *(python_module(svc, "granian", "granian") for svc in plan.services)]
