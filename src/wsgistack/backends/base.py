"""What every backend module provides, and the pieces they share."""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from wsgistack import entry
from wsgistack.plan import Plan, ServicePlan, counts_requests


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
    # The files (under the state dir) whose change needs that reload; empty: any reload
    # does. A front end whose config is unchanged is left alone: its graceful restart
    # closes its clients' idle keep-alive connections, and a request sent on one just then
    # is lost.
    reload_when: tuple[str, ...] = ()
    # When it is left alone: the signal that replaces the processes that run the app
    # instead (mod_wsgi's daemons), and how their command lines begin.
    app_reload: tuple[int, str] | None = None
    # (socket, next socket, argv): a reload starts `argv`, a twin of this server that
    # listens on the next socket, renames that over `socket` once the twin is ready, and
    # then stops this server gracefully (lifecycle/processes.py: swap). For uWSGI behind a
    # front end: its own graceful reload ends a worker that has just accepted a
    # connection, and Apache answers that request 500.
    swap: tuple[str, str, tuple[str, ...]] | None = None
    # Who it is started as ("": as wsgistack). Servers that drop privileges themselves
    # (uWSGI, Apache, nginx) start as root and are told their users in their configs.
    user: str = ""
    group: str = ""
    # UNIX sockets it makes usable by anyone (nginx chmods its own 0666), made its owner's
    # alone once it is up: only wsgistack (the exporter) talks to them.
    private: tuple[str, ...] = ()


@dataclass(frozen=True)
class Site:
    """A front end's part on a host (`install`): a site for the system's own server."""

    server: str  # "apache2" or "nginx"
    text: str
    modules: tuple[str, ...] = ()  # Apache modules it needs enabled (a2enmod)


@dataclass(frozen=True)
class Requirement:
    """Something a backend needs on the machine, and how to get it."""

    what: str  # shown to the user: "apache2", "mod_proxy_uwsgi", "granian"
    # "binary" (on PATH or absolute), "file", "module" (importable by `python`),
    # "debian-python" (`name` is Debian's /usr/bin/python3 or a venv of it),
    # "readable" (`user` can reach `name` through every parent directory), "not-root"
    # (`name`, a user, is not root)
    kind: str
    name: str  # the binary, path, module or interpreter
    fix: str  # the command or change that provides it
    python: str = ""  # for "module": the interpreter that must import it
    user: str = ""  # for "readable": who must reach the path


class Backend(Protocol):
    ID: str
    FRONT_END: bool
    # Whether clients that send their requests slowly leave the workers free (README,
    # "Reliability"): `up` warns when one that does not listens beyond this machine.
    HOLDS_SLOW_CLIENTS: bool
    # What of a request with broken framing still reaches the app (README, "Malformed
    # requests"), "" for nothing that RFC 9112 does not allow: `up` warns as for slow clients.
    FRAMING_GAP: str
    DESCRIPTION: str
    SERVICE_PACKAGES: tuple[str, ...]
    # Files looked for in each service's Python (glob patterns under its prefix), found
    # before rendering (ServicePlan.found): a server built for that Python.
    VENV_FILES: tuple[str, ...]

    def render(self, plan: Plan) -> dict[str, str]: ...

    def command(self, plan: Plan) -> list[Proc]: ...

    def requirements(self, plan: Plan) -> list[Requirement]: ...


def access_log(plan: Plan, svc: ServicePlan) -> str:
    """Where a service's access lines go: its own file, or a container's stdout."""
    if plan.access_log == "off":
        return ""
    return "-" if plan.target == "kubernetes" else plan.path("logs", f"{svc.name}-access.log")


def entry_files(plan: Plan, *, mount: bool, limits: str = "entry", own_timeout: bool = True,
                check_headers: bool = False, http_proxied: bool = False,
                serve_static: bool = False, read_unread: bool = False,
                own_errors: bool = False, check_framing: bool = False) -> dict[str, str]:
    """Entry files for every service, relative to the state dir.

    `mount`: the server passes the full path and no SCRIPT_NAME, so the entry splits the
    prefix itself. `limits`: who stops a body over `max_body`. "entry" where nothing else
    does (granian, gunicorn, uWSGI alone); "front end" where it limits every body, chunked
    included (nginx, Apache's own handlers); "entry, drained" behind a proxy that streams a
    chunked body on unchecked (Apache's): the entry reads the rest before its 413, else the
    proxy's send fails and the client gets a 502. `own_timeout`: the server ends a request
    past `timeout` itself (uWSGI's harakiri, mod_wsgi's request-timeout, a second after the
    entry logged the stack); without one, the entry ends the worker after logging.
    `check_headers`: nothing before the app limits the number and size of header fields.
    `http_proxied`: Apache's mod_proxy_http on a UNIX socket is the only client (layers/quirks.py).
    `serve_static`: the entry serves the services' static files (WhiteNoise); else it only
    answers 404 under their paths for what the server did not find. `read_unread`: a front
    end sends whole bodies to uWSGI, which must read them even after an early answer.
    `own_errors`: the server sends the app's output to a log of its own (mod_wsgi: Apache's),
    so the entry sends it to the service's.
    `check_framing`: the server passes the client's Transfer-Encoding and Content-Length
    unchanged, and the entry refuses broken framing from them (framing.py).
    """
    files = {}
    for svc in plan.services:
        cfg = svc.config
        spec = entry.EntrySpec(
            app=cfg.app, name=cfg.name, env=svc.env, args=cfg.args,
            python_path=cfg.python_path, working_dir=svc.working_dir,
            mount=svc.prefix if mount else "",
            max_body=0 if limits == "front end" else cfg.max_body,
            drain_refused=limits == "entry, drained", timeout=cfg.timeout,
            end_on_timeout=not own_timeout, check_headers=check_headers,
            trusted_proxies=plan.trusted_proxies, http_proxied=http_proxied,
            static=svc.static, static_whitenoise=serve_static,
            spool=not cfg.upload,  # an upload service's bodies stream on
            read_unread=read_unread, check_framing=check_framing,
            access_log=access_log(plan, svc),
            access_format=plan.access_log, log_health=plan.log_health,
            errors_log=plan.path("logs", f"{svc.name}.log") if own_errors else "",
            metrics_dir=plan.path("metrics", svc.name) if counts_requests(plan) else "",
        )
        files[entry_file(svc)] = entry.render(spec)
    return files


def entry_file(svc: ServicePlan) -> str:
    """In a directory of the service's own: granian and gunicorn import from it, which
    needs it listable by the app's user, and by no other."""
    return f"entries/{svc.name}/{svc.module}.py"


GRANIAN_LAUNCHER = "wsgistack_granian.py"


def granian_launcher(svc: ServicePlan) -> str:
    """granian's command line with wsgistack's reload (granian_run.py), beside the entry."""
    return f"entries/{svc.name}/{GRANIAN_LAUNCHER}"


def server_name(argv: tuple[str, ...]) -> str:
    """The server a command runs: `python -m granian` or granian's launcher (the interpreter
    runs it), else the binary."""
    if argv[1:2] == ("-m",):
        return argv[2]
    if len(argv) > 1 and os.path.basename(argv[1]) == GRANIAN_LAUNCHER:
        return "granian"
    return argv[0]


def uwsgi_ini(svc: ServicePlan, twin: bool = False) -> str:
    return f"conf/uwsgi-{svc.name}{'.next' if twin else ''}.ini"


def service_files(svc: ServicePlan) -> tuple[str, ...]:
    """Rendered files (under the state dir) that hold one service's env and that its own
    processes read: readable by its group, by no other user."""
    return (entry_file(svc), granian_launcher(svc), uwsgi_ini(svc),
            uwsgi_ini(svc, twin=True))


def log_path(plan: Plan, name: str) -> str:
    return plan.path("logs", f"{name}.log")


def python_module(svc: ServicePlan, module: str, package: str) -> Requirement:
    return Requirement(
        what=f"{module} (for service {svc.name})", kind="module", name=module,
        fix=f"{svc.python} -m pip install {package}", python=svc.python,
    )


def app_proc(plan: Plan, svc: ServicePlan, argv: tuple[str, ...]) -> Proc:
    """A server that runs the app in its own process: started as the app's user, from the
    clean base environment. The entry sets the app's `env` when it loads the app: a key
    removed from the manifest is then gone after a reload, where a server's own
    environment would hand it on to every new worker."""
    user, group = plan.runs_as(svc)
    return Proc(name=svc.name, argv=argv, log=log_path(plan, svc.name), cwd=svc.working_dir,
                env=svc.base_env, user=user, group=group)


def front_env(plan: Plan) -> dict[str, str]:
    """A front end's environment: the clean base, and what any service passes through (the
    mod_wsgi daemons it forks inherit it)."""
    env = plan.host_info.base_env(plan.host_info.home)
    for svc in plan.services:
        env.update({k: v for k, v in svc.base_env.items() if k in svc.config.pass_env})
    return env


STATE_FIX = ("set [stack] state_dir outside a private directory such as /root, or make "
             "every directory above it searchable (chmod o+x)")


def readable(path: str, user: str, what: str, fix: str) -> Requirement:
    return Requirement(f"{what} to be readable by {user}", "readable", path, fix, user=user)


def app_access(plan: Plan) -> list[Requirement]:
    """What each service's user must reach: its interpreter, venv, code and the state dir.
    Started as root, a pyenv Python or a checkout under /root (0700) is out of its reach."""
    if not plan.root:
        return []
    reqs = []
    for svc in plan.services:
        paths = [(os.path.realpath(svc.python), "the interpreter"),
                 (svc.python_home, "the venv"), (svc.working_dir, "the working_dir"),
                 *((os.path.join(svc.working_dir, p), "the python_path entry")
                   for p in svc.config.python_path),
                 (svc.entry, "the entry file")]
        reqs += [readable(path, svc.user, f"{what} of service {svc.name}",
                          f"let {svc.user} read it and search every directory above it "
                          f"(chmod o+x), move it out of a private directory such as /root, "
                          f"or set services.{svc.name}.user")
                 for path, what in paths]
    return reqs


def static_access(plan: Plan, front_end: bool) -> list[Requirement]:
    """Who must read each service's static files: the front end's user where the front end
    serves them, else the app's. Only started as root do they differ from us."""
    if not plan.root:
        return []
    return [readable(directory, plan.front_user if front_end else svc.user,
                     f"the static files of service {svc.name}",
                     "make the directory readable and every directory above it searchable "
                     "(chmod o+rx), or move it out of a private directory such as /root")
            for svc in plan.services for _, directory in svc.static]
