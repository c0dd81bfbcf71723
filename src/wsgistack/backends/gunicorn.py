"""gunicorn: gthread workers, one arbiter per service on its own port.

gunicorn sets no SCRIPT_NAME from a prefix and has no body limit: the entry does both.
Each instance gets its own control socket (27.x otherwise shares ~/.gunicorn/gunicorn.ctl).
No --preload: state made before fork breaks workers.
"""

from __future__ import annotations

import os

from wsgistack.backends.base import (
    Proc,
    Requirement,
    app_access,
    app_proc,
    entry_files,
    log_path,
    python_module,
    static_access,
)
from wsgistack.plan import Plan, ServicePlan

ID = "gunicorn"
FRONT_END = False
HOLDS_SLOW_CLIENTS = False
FRAMING_GAP = ""
SERVICE_PACKAGES: tuple[str, ...] = ("gunicorn",)  # what a service's own venv must hold
VENV_FILES: tuple[str, ...] = ()
DESCRIPTION = "gunicorn (gthread) per service, each on its own port"


def render(plan: Plan) -> dict[str, str]:
    # gthread's --timeout watches the worker's main loop, which a stuck request does not
    # hold: it ends no request.
    return entry_files(plan, mount=True, own_timeout=False, serve_static=True,
                       check_framing=True)


def argv(plan: Plan, svc: ServicePlan) -> tuple[str, ...]:
    cfg = svc.config
    return (
        svc.python, "-m", "gunicorn",
        "--bind", f"{plan.host}:{svc.port}",
        "--worker-class", "gthread", "--workers", str(cfg.processes),
        "--threads", str(cfg.threads), "--timeout", str(cfg.timeout),
        "--graceful-timeout", "10", "--backlog", "500",
        "--chdir", os.path.dirname(svc.entry),
        "--pid", f"{svc.run_dir}/gunicorn.pid",
        "--control-socket", f"{svc.run_dir}/gunicorn.ctl",
        "--log-level", "warning", "--error-logfile",
        # Installed, its own log file, reopened on SIGUSR1 (logrotate).
        log_path(plan, svc.name) if plan.target == "host" else "-",
        # gunicorn's own scheme handling agrees with the entry's (which drops the headers).
        "--forwarded-allow-ips", ",".join(plan.trusted_proxies),
        f"{svc.module}:application",
    )


def command(plan: Plan) -> list[Proc]:
    return [app_proc(plan, svc, argv(plan, svc)) for svc in plan.services]


def requirements(plan: Plan) -> list[Requirement]:
    return [*app_access(plan), *static_access(plan, front_end=False),
            *(python_module(svc, "gunicorn", "gunicorn") for svc in plan.services),
            *(python_module(svc, "whitenoise", "whitenoise")  # it serves their static files
              for svc in plan.services if svc.static)]
