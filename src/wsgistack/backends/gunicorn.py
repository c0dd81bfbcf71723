"""gunicorn: gthread workers, one arbiter per service on its own port.

gunicorn sets no SCRIPT_NAME from a prefix and has no body limit: the entry does both.
Each instance gets its own control socket (27.x otherwise shares ~/.gunicorn/gunicorn.ctl).
No --preload: state made before fork breaks workers.
"""

from __future__ import annotations

from wsgistack.backends.base import Proc, Requirement, entry_files, log_path, python_module
from wsgistack.plan import Plan, ServicePlan

ID = "gunicorn"
FRONT_END = False
SERVICE_PACKAGES: tuple[str, ...] = ("gunicorn",)  # what a service's own venv must hold
APP_AS_WORKER_USER = False  # the app runs as the front end's worker user
DESCRIPTION = "gunicorn (gthread) per service, each on its own port"


def render(plan: Plan) -> dict[str, str]:
    return entry_files(plan, mount=True)


def argv(plan: Plan, svc: ServicePlan) -> tuple[str, ...]:
    cfg = svc.config
    return (
        svc.python, "-m", "gunicorn",
        "--bind", f"{plan.host}:{svc.port}",
        "--worker-class", "gthread", "--workers", str(cfg.processes),
        "--threads", str(cfg.threads), "--timeout", str(cfg.timeout),
        "--graceful-timeout", "10", "--backlog", "500",
        "--chdir", plan.path("entries"),
        "--pid", plan.path("run", f"{svc.name}.pid"),
        "--control-socket", plan.path("run", f"{svc.name}.ctl"),
        "--log-level", "warning", "--error-logfile", "-",
        # The entry applies X-Forwarded-Proto the same way under every server.
        "--forwarded-allow-ips", "",
        f"{svc.module}:application",
    )


def command(plan: Plan) -> list[Proc]:
    return [
        Proc(name=svc.name, argv=argv(plan, svc), log=log_path(plan, svc.name),
             cwd=svc.working_dir, env=svc.env)
        for svc in plan.services
    ]


def requirements(plan: Plan) -> list[Requirement]:
    return [python_module(svc, "gunicorn", "gunicorn") for svc in plan.services]
