"""Apache httpd in front of uWSGI: mod_proxy_http to each service's uWSGI http-socket, on a
UNIX socket.

Not mod_proxy_uwsgi: it answers 411 to every chunked request body. Apache spools a chunked
body and sends it with a Content-Length (`proxy-sendcl`), which every app can read
(devstack's arrangement for Glance and Swift, here for every service). The entry sets
REMOTE_ADDR, SERVER_NAME and SERVER_PORT from what Apache forwards (layers/quirks.py), as
mod_proxy_uwsgi would have passed them.
"""

from __future__ import annotations

from wsgistack.backends import apache, uwsgi
from wsgistack.backends.base import Proc, Requirement, Site, entry_files, static_access
from wsgistack.backends.quoting import apache as q
from wsgistack.plan import Plan, ServicePlan

ID = "apache+uwsgi"
FRONT_END = True
HOLDS_SLOW_CLIENTS = False
FRAMING_GAP = ""
SERVICE_PACKAGES: tuple[str, ...] = ()  # what a service's own venv must hold
VENV_FILES: tuple[str, ...] = uwsgi.VENV_FILES
DESCRIPTION = "Apache httpd (mod_proxy_http) in front of uWSGI on UNIX sockets"
MODULES = ["proxy", "proxy_http", "env", "rewrite"]


def proxy(svc: ServicePlan) -> list[str]:
    path = svc.prefix or "/"
    timeout = svc.config.timeout + 2  # after the entry's 504 and harakiri: a fallback
    # Apache appends the rest of the path to the target: `/identity` maps to `/identity`
    # (no trailing slash on either side), the root to `/`.
    target = f"unix:{svc.socket}|http://{svc.name}{path}"
    return [
        f"<Location {q(path)}>",
        f"    ProxyPass {q(target)} retry=0 acquire=1 timeout={timeout}",
        "    SetEnv proxy-sendcl 1",
        # The scheme the client used, which no client can set (`set` replaces theirs): the
        # entry reads it (layers/quirks.py), as mod_proxy_uwsgi would have passed HTTPS.
        '    RequestHeader set X-Wsgistack-Scheme "expr=%{REQUEST_SCHEME}"',
        # uWSGI closes its HTTP socket after each answer (http-keepalive = false): a pooled
        # connection Apache reused could be the one uWSGI just closed, and the request a 502.
        "    SetEnv proxy-nokeepalive 1",
        # Apache answers a client's `Expect: 100-continue` itself and spools the body:
        # passed on, it waited for a 100 that uWSGI's http-socket never sends, and the
        # upload hung until the proxy timeout.
        "    Proxy100Continue Off",
        f"    LimitRequestBody {svc.config.max_body}",
        "    Require all granted",
        "</Location>",
    ]


def _body(plan: Plan) -> list[str]:
    # 8 KiB reads from uWSGI made a 1 MiB answer 3x slower through Apache than from uWSGI
    # alone; 256 KiB (per request in flight) brought it to 0.7 (benchmarks/results.md).
    body = ["ProxyPreserveHost On", "ProxyIOBufferSize 262144", *apache.length_limits(plan),
            *apache.static_aliases(plan)]
    for svc in reversed(apache.by_specificity(plan)):  # <Location>s: the most specific last
        body += proxy(svc)
    return body + apache.static_unproxied(plan)


def site(plan: Plan) -> Site:
    modules = (*apache.SITE_MODULES, *MODULES, *(["ssl"] if plan.tls else []))
    return Site("apache2", apache.site_conf(plan, _body(plan)), tuple(dict.fromkeys(modules)))


def render(plan: Plan) -> dict[str, str]:
    body = _body(plan)
    files = {
        # Apache passes the full path: the entry splits the prefix off.
        **entry_files(plan, mount=True, limits="entry, drained", http_proxied=True,
                      read_unread=True),
        **uwsgi.front_ini_files(plan, uwsgi.http_listen),
        "conf/httpd.conf": apache.httpd_conf(plan, MODULES, body),
    }
    return files


def command(plan: Plan) -> list[Proc]:
    return [*uwsgi.front_procs(plan), *apache.command(plan)]


def requirements(plan: Plan) -> list[Requirement]:
    return [*uwsgi.uwsgi_requirements(plan), *apache.requirements(plan, MODULES),
            *static_access(plan, front_end=True)]
