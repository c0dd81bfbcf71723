"""Apache httpd + mod_wsgi in daemon mode: one WSGIDaemonProcess per service.

Daemon mode only (WSGIRestrictEmbedded On), the global application group (C extensions
break in sub-interpreters), the Authorization header passed through, chunked request
bodies accepted. The module is a pip-built mod_wsgi found in the service's venv (built
against that Python with apache2-dev's apxs) or Debian's libapache2-mod-wsgi-py3.
"""

from __future__ import annotations

import signal

from wsgistack.backends import apache
from wsgistack.backends.base import (
    Proc,
    Requirement,
    Site,
    app_access,
    entry_files,
    static_access,
)
from wsgistack.backends.quoting import apache as q
from wsgistack.backends.uwsgi import DEBIAN_PYTHON
from wsgistack.plan import Plan, ServicePlan

ID = "mod_wsgi"
FRONT_END = True
HOLDS_SLOW_CLIENTS = False
FRAMING_GAP = ""
SERVICE_PACKAGES: tuple[str, ...] = ()  # what a service's own venv must hold
DESCRIPTION = "Apache httpd + mod_wsgi daemon mode, every service under one front door"
DEBIAN_MODULE = f"{apache.MODULES}/mod_wsgi.so"


PIP_MODULE = "lib/python3*/site-packages/mod_wsgi/server/mod_wsgi-py*.so"
VENV_FILES = (PIP_MODULE,)


def module_path(plan: Plan) -> str:
    """The pip-built mod_wsgi of the first service's interpreter, else Debian's."""
    return plan.services[0].found.get(PIP_MODULE) or DEBIAN_MODULE


def group_name(plan: Plan, svc: ServicePlan) -> str:
    """Installed, daemon groups share the system Apache with other sites: the stack's name
    keeps them apart."""
    return f"{plan.name}-{svc.name}" if plan.target == "host" else svc.name


def daemon(plan: Plan, svc: ServicePlan) -> list[str]:
    """The daemon process group of one service."""
    cfg = svc.config
    # Started as root, the daemons run as the app's user (Apache's workers as www-data).
    who = [f"user={q(svc.user)}", f"group={q(svc.group)}"] if plan.root else []
    options = [
        f"processes={cfg.processes}", f"threads={cfg.threads}", *who, "umask=0027",
        "display-name=%{GROUP}",
        f"python-home={q(svc.python_home)}", f"home={q(svc.working_dir)}",
        "lang=C.UTF-8", "locale=C.UTF-8", f"request-timeout={cfg.timeout + 1}",
        f"socket-timeout={cfg.timeout}", "header-buffer-size=65536",
        f"graceful-timeout={cfg.timeout}", f"eviction-timeout={cfg.timeout}",
    ]
    return [f"WSGIDaemonProcess {group_name(plan, svc)} " + " ".join(options)]


def _body(plan: Plan) -> list[str]:
    """What every virtual host of the stack holds: the aliases, not the daemons."""
    body = [
        "WSGIPassAuthorization On",
        "WSGIChunkedRequest On",
        f"<Directory {q(plan.path('entries'))}>",
        "    Require all granted",
        "</Directory>",
        *apache.static_aliases(plan),
    ]
    for svc in apache.by_specificity(plan):
        body.append(f"WSGIScriptAlias {q(svc.prefix or '/')} {q(svc.entry)} "
                    f"process-group={group_name(plan, svc)} application-group=%{{GLOBAL}}")
    for svc in reversed(apache.by_specificity(plan)):  # <Location>s merge: most specific last
        body += apache.location_limits(svc)
    return body


def site(plan: Plan) -> Site:
    """Debian's mod_wsgi is enabled with a2enmod; a pip-built one is loaded by the site."""
    so = module_path(plan)
    load = [] if so == DEBIAN_MODULE else [
        "<IfModule !wsgi_module>", f"    LoadModule wsgi_module {q(so)}", "</IfModule>"]
    daemons = [line for svc in apache.by_specificity(plan) for line in daemon(plan, svc)]
    modules = (*apache.SITE_MODULES, *(["wsgi"] if so == DEBIAN_MODULE else []),
               *(["ssl"] if plan.tls else []))
    return Site("apache2", apache.site_conf(plan, _body(plan), [*load, *daemons]), modules)


def render(plan: Plan) -> dict[str, str]:
    head = [
        f"LoadModule wsgi_module {q(module_path(plan))}",
        "WSGIRestrictEmbedded On",
        f"WSGISocketPrefix {q(plan.path('run', 'wsgi'))}",
        *(line for svc in apache.by_specificity(plan) for line in daemon(plan, svc)),
    ]
    conf = apache.httpd_conf(plan, [], [*head, *_body(plan)])
    return {**entry_files(plan, mount=False, limits="front end", own_errors=True,
                          check_framing=True),
            "conf/httpd.conf": conf}


def command(plan: Plan) -> list[Proc]:
    # A daemon process restarts gracefully on SIGUSR1 (in-flight requests finish within
    # eviction-timeout) while Apache keeps its socket: new requests wait, none is refused.
    return apache.command(plan, app_reload=(signal.SIGUSR1, "(wsgi:"))


def requirements(plan: Plan) -> list[Requirement]:
    so = module_path(plan)
    reqs = [*apache.requirements(plan, []), *static_access(plan, front_end=True)]
    reqs.append(Requirement("mod_wsgi", "file", so, "apt-get install libapache2-mod-wsgi-py3 "
                            "(or pip install mod_wsgi into the service's venv)"))
    for svc in plan.services:
        if plan.root:  # mod_wsgi: "WSGI process blocked from running as root."
            reqs.append(Requirement(
                f"service {svc.name} to run as another user than root (mod_wsgi never runs "
                "its daemons as root)", "not-root", svc.user,
                f"set services.{svc.name}.user to a user that can read {svc.python_home}, or "
                "use a uWSGI backend"))
        if so == DEBIAN_MODULE:
            reqs.append(Requirement(
                f"service {svc.name} to run on {DEBIAN_PYTHON} (Debian's mod_wsgi embeds it)",
                "debian-python", svc.python,
                f"pip install mod_wsgi into the service's venv, or create the venv from "
                f"{DEBIAN_PYTHON}", python=svc.python))
    return [*reqs, *app_access(plan)]
