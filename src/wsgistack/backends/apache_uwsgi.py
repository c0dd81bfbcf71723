"""Apache httpd in front of uWSGI: mod_proxy_uwsgi to each service's UNIX socket.

mod_proxy_uwsgi answers 411 to chunked request bodies, so
services marked `upload` are proxied over HTTP instead, to a uWSGI http-socket
(devstack's arrangement for Glance and Swift); Apache spools a chunked body and sends it
with a Content-Length (`proxy-sendcl`), which every app can read.
"""

from __future__ import annotations

from wsgistack.backends import apache, uwsgi
from wsgistack.backends.base import Proc, Requirement, entry_files
from wsgistack.backends.quoting import apache as q
from wsgistack.plan import Plan, ServicePlan

ID = "apache+uwsgi"
FRONT_END = True
HOLDS_SLOW_CLIENTS = False
SERVICE_PACKAGES: tuple[str, ...] = ()  # what a service's own venv must hold
DESCRIPTION = "Apache httpd (mod_proxy_uwsgi) in front of uWSGI on UNIX sockets"
MODULES = ["proxy", "proxy_uwsgi", "proxy_http", "env", "rewrite"]


def proxy(svc: ServicePlan) -> list[str]:
    path = svc.prefix or "/"
    timeout = svc.config.timeout + 2  # after the entry's 504 and harakiri: a fallback
    # Apache appends the rest of the path to the target: `/identity` maps to `/identity`
    # (no trailing slash on either side), the root to `/`.
    if svc.config.upload:
        target = f"unix:{svc.socket}|http://{svc.name}{path}"
        # uWSGI closes its HTTP socket after each answer (http-keepalive = false): a pooled
        # connection Apache reused could be the one uWSGI just closed, and the request a 502.
        extra = ["ProxyPreserveHost On", "SetEnv proxy-sendcl 1", "SetEnv proxy-nokeepalive 1"]
    else:
        target = f"unix:{svc.socket}|uwsgi://{svc.name}{path}"
        extra = []
    return [
        f"<Location {q(path)}>",
        f"    ProxyPass {q(target)} retry=0 acquire=1 timeout={timeout}",
        *("    " + e for e in extra),
        f"    LimitRequestBody {svc.config.max_body}",
        "    Require all granted",
        "</Location>",
    ]


def listen(plan: Plan, svc: ServicePlan) -> list[str]:
    if svc.config.upload:
        return uwsgi.http_upload_listen(plan, svc)
    return uwsgi.socket_listen(plan, svc)


def render(plan: Plan) -> dict[str, str]:
    body = ["ProxyPreserveHost On", *apache.length_limits(plan)]
    for svc in reversed(apache.by_specificity(plan)):  # <Location>s: the most specific last
        body += proxy(svc)
    files = {
        # mod_proxy_uwsgi (Debian 12's) passes the full path and no SCRIPT_NAME.
        **entry_files(plan, mount=True, limits="entry, drained"),
        **uwsgi.front_ini_files(plan, listen),
        "conf/httpd.conf": apache.httpd_conf(plan, MODULES, body),
    }
    return files


def command(plan: Plan) -> list[Proc]:
    return [*uwsgi.front_procs(plan), *apache.command(plan)]


def requirements(plan: Plan) -> list[Requirement]:
    return [*uwsgi.uwsgi_requirements(plan), *apache.requirements(plan, MODULES)]
