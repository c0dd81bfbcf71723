"""The private Apache httpd server root shared by `mod_wsgi` and `apache+uwsgi`.

Like mod_wsgi-express: a generated httpd.conf under the state dir, run in the foreground,
with its tuned defaults: read timeouts against slow clients, `Require all denied` outside
the services, ProductOnly tokens, a backlog of 500, and a client capacity of
10 + max(10, 1.5 x processes x threads). Apache refuses to serve as root: started as root it
serves as www-data, which must then be able to reach the sockets (and entries) it is given.
"""

from __future__ import annotations

import math
import re
import shutil
import signal
from collections.abc import Sequence

from wsgistack.backends.base import (
    STATE_FIX,
    Proc,
    Requirement,
    front_env,
    log_path,
    readable,
)
from wsgistack.backends.quoting import apache as q
from wsgistack.layers.mount import NOT_FOUND
from wsgistack.layers.quirks import FORWARDED_HEADERS
from wsgistack.plan import Plan, ServicePlan

MODULES = "/usr/lib/apache2/modules"
THREADS_PER_CHILD = 25


def binary() -> str:
    return shutil.which("apache2") or shutil.which("httpd") or "/usr/sbin/apache2"


def capacity(plan: Plan) -> int:
    return 10 + max(10, math.ceil(1.5 * sum(
        s.config.processes * s.config.threads for s in plan.services)))


# What every Apache of ours loads (alias: `static` directories).
BASE_MODULES = ("mpm_event", "authz_core", "reqtimeout", "setenvif", "headers", "alias",
                "rewrite")


def module(name: str) -> str:
    return f"LoadModule {name}_module {q(f'{MODULES}/mod_{name}.so')}"


def forwarded_headers(plan: Plan) -> list[str]:
    """Forwarded headers reach the services only from a trusted proxy (the entry checks
    again: one rule on every backend)."""
    lines = []
    if plan.trusted_proxies:
        expr = " || ".join(f"-R '{net}'" for net in plan.trusted_proxies)
        lines.append(f"SetEnvIfExpr {q(expr)} wsgistack_trusted_proxy")
    return lines + [f"RequestHeader unset {h} env=!wsgistack_trusted_proxy"
                    for h in FORWARDED_HEADERS]


def sizing(plan: Plan) -> list[str]:
    """The event MPM sized from the services behind it: threads for `capacity` requests at
    once (idle keep-alive clients take none). Few spare threads asked for: with as many as
    a child has, Apache warned at every start that it was within MinSpareThreads of
    MaxRequestWorkers (AH10159) as soon as one thread was busy."""
    total = capacity(plan)
    per_child = min(THREADS_PER_CHILD, total)
    servers = math.ceil(total / per_child)
    return [f"ServerLimit {servers}", f"StartServers {servers}",
            f"ThreadsPerChild {per_child}", f"MaxRequestWorkers {servers * per_child}",
            f"MinSpareThreads {max(1, per_child // 5)}",
            f"MaxSpareThreads {servers * per_child}"]


def document_root(plan: Plan) -> list[str]:
    """An empty directory as the document root: mod_wsgi looks PATH_INFO up under it
    (PATH_TRANSLATED), which under Debian's /var/www/html and `Require all denied` logged an
    AH01630 error for every request a service answered."""
    empty = plan.path("run", "empty")
    return [f"DocumentRoot {q(empty)}", f"<Directory {q(empty)}>", "    Require all granted",
            "</Directory>"]


def _literal(text: str) -> str:
    r"""A regex matching `text` alone, with no backslash where it can be helped: in a quoted
    argument Apache keeps `\\` as two backslashes (only `\"` is an escape), so re.escape's
    `\-`, quoted, matched a backslash, and every request to /key-manager was "outside the
    prefix" (404). `^`, `\\` and `]`, which a URL path only carries percent-encoded, keep
    re.escape's form."""
    return "".join(c if c.isalnum() or c in "/_" else re.escape(c) if c in "^\\]"
                   else f"[{c}]" for c in text)


def outside_prefixes(plan: Plan) -> list[str]:
    """A path outside every prefix: the 404 every backend gives (the entry's own, nginx's
    `return`), decided before any file is looked at, so nothing lands in the error log."""
    prefixes = sorted({s.prefix.rstrip("/") for s in plan.services}, key=len, reverse=True)
    if "" in prefixes:  # a service at the root serves every path
        return []
    served = "|".join(_literal(p) for p in prefixes)
    return ["RewriteEngine On",
            f"RewriteCond %{{REQUEST_URI}} {q(f'!^({served})(/|$)')}",
            "RewriteRule ^ - [R=404,L,E=WSGISTACK_OUTSIDE:1]",
            f"ErrorDocument 404 {q(NOT_FOUND)}",
            'Header always set Content-Type "text/plain" env=WSGISTACK_OUTSIDE']


# Apache's strict request parsing, said even where it is the default (a distribution's
# global `Unsafe` would let a server-wide setting weaken it), and no HTTP/0.9 (a request
# with no version and no header fields): README, "Malformed requests".
PROTOCOL = ("HttpProtocolOptions Strict LenientMethods Require1.0",)


def httpd_conf(plan: Plan, modules: list[str], body: list[str]) -> str:
    user = plan.front_user
    timeout = max(s.config.timeout for s in plan.services)
    head = [
        f"# {plan.name}: {plan.backend} (generated by wsgistack; do not edit)",
        f"ServerRoot {q(plan.state)}",
        f"PidFile {q(plan.path('run', 'apache.pid'))}",
        f"DefaultRuntimeDir {q(plan.path('run'))}",
        f"Mutex {q('file:' + plan.path('run'))} default",
        f"Listen {plan.host}:{plan.front_port}",
        f"ServerName {plan.host}:{plan.front_port}",
        *([f"User {user}", f"Group {user}"] if user else []),
        *(module(m) for m in (*BASE_MODULES, *modules)),
        "ErrorLog /dev/stderr",
        "LogLevel warn",
        "ServerTokens ProductOnly",
        "ServerSignature Off",
        "TraceEnable Off",
        *PROTOCOL,
        f"Timeout {timeout}",
        "KeepAlive On",
        "KeepAliveTimeout 5",
        "ListenBacklog 500",
        "RequestReadTimeout header=15-30,MinRate=500 body=15,MinRate=500",
        *sizing(plan),
        "<Directory />",
        "    AllowOverride None",
        "    Require all denied",
        "</Directory>",
        *forwarded_headers(plan),
        *document_root(plan),
        *outside_prefixes(plan),
    ]
    return "\n".join([*head, *body]) + "\n"


# What an installed site needs enabled besides its own modules (Debian's a2enmod names).
SITE_MODULES = ("authz_core", "reqtimeout", "setenvif", "headers", "alias", "rewrite")


def _vhost_host(plan: Plan) -> str:
    return "*" if plan.host in ("0.0.0.0", "::", "") else plan.host


def _redirect(plan: Plan) -> list[str]:
    """Plain HTTP from anywhere but this machine goes to HTTPS. Local clients (health
    checks, one service calling another on its internal URL) stay on HTTP."""
    return ["RewriteEngine On",
            "RewriteCond expr \"! -R '127.0.0.0/8' && ! -R '::1/128'\"",
            f"RewriteRule ^ https://%{{SERVER_NAME}}:{plan.tls_port}%{{REQUEST_URI}} [R=301,L]"]


def site_conf(plan: Plan, body: list[str], outside: Sequence[str] = ()) -> str:
    """The stack as a site of the system's Apache (`install`): one virtual host on its
    port (and one on the TLS port), its own logs; `outside`: server-wide lines (mod_wsgi's
    daemons, which both virtual hosts use)."""
    host = _vhost_host(plan)
    ports = plan.front_ports
    listen = [f"Listen {host}:{p}" if host != "*" else f"Listen {p}"
              for p in ports if p not in plan.host_info.listening]
    lines = [f"# {plan.name}: {plan.backend} (generated by wsgistack install; do not edit)",
             *listen, *outside]
    for port in ports:
        tls = plan.tls is not None and port == plan.tls_port
        head = [f"ServerName {plan.host}",
                f"ErrorLog {q(plan.path('logs', 'apache-error.log'))}",
                f"CustomLog {q(plan.path('logs', 'apache-access.log'))} combined",
                "LogLevel warn",
                *PROTOCOL,
                *forwarded_headers(plan)]
        if tls and plan.tls:
            head += ["SSLEngine on", f"SSLCertificateFile {q(plan.tls[0])}",
                     f"SSLCertificateKeyFile {q(plan.tls[1])}"]
        elif plan.tls:
            head += _redirect(plan)
        head += [*document_root(plan), *outside_prefixes(plan)]
        lines += [f"<VirtualHost {host}:{port}>", *("    " + x for x in [*head, *body]),
                  "</VirtualHost>"]
    return "\n".join(lines) + "\n"


def by_specificity(plan: Plan) -> list[ServicePlan]:
    """Longest prefix first: Apache takes the first alias that matches, `/` must come last."""
    return sorted(plan.services, key=lambda s: -len(s.prefix))


def _static(plan: Plan) -> list[tuple[str, str]]:
    return [(svc.prefix.rstrip("/") + path, directory)
            for svc in plan.services for path, directory in svc.static]


def static_aliases(plan: Plan) -> list[str]:
    """Each service's static directories, served by Apache itself. Before the services' own
    aliases: the first that matches is taken."""
    lines = []
    for url, directory in _static(plan):
        lines += [f"Alias {q(url)} {q(directory)}", f"<Directory {q(directory)}>",
                  "    Require all granted", "</Directory>"]
    return lines


def static_unproxied(plan: Plan) -> list[str]:
    """<Location>s that proxy nothing under a proxied service's static paths: after the
    services' own (<Location>s merge, the most specific last)."""
    return [line for url, _ in _static(plan)
            for line in (f"<Location {q(url)}>", '    ProxyPass "!"', "</Location>")]


def location_limits(svc: ServicePlan) -> list[str]:
    return [
        f"<Location {q(svc.prefix or '/')}>",
        f"    LimitRequestBody {svc.config.max_body}",
        "    Require all granted",
        "</Location>",
    ]


def length_limits(plan: Plan) -> list[str]:
    """413 for a declared body over a service's limit, before anything is proxied.

    Apache's proxy does not apply LimitRequestBody to a Content-Length it forwards; the
    backend's own 413 then races the body Apache is still sending and becomes a 502.
    """
    lines = ["RewriteEngine On"]
    for svc in plan.services:
        if svc.config.max_body:
            lines += [
                f"RewriteCond %{{REQUEST_URI}} {q('^' + svc.prefix + '(/|$)')}",
                f"RewriteCond %{{HTTP:Content-Length}} -gt{svc.config.max_body}",
                "RewriteRule ^ - [R=413,L]",
            ]
    return lines


def command(plan: Plan, app_reload: tuple[int, str] | None = None) -> list[Proc]:
    return [Proc(
        name="apache", argv=(binary(), "-f", plan.path("conf", "httpd.conf"), "-DFOREGROUND"),
        log=log_path(plan, "apache"), cwd=plan.state, env=front_env(plan),
        serves=tuple(s.name for s in plan.services),
        reload_signal=signal.SIGUSR1,  # graceful restart: mod_wsgi daemons included
        reload_when=("conf/httpd.conf",), app_reload=app_reload,
    )]


def requirements(plan: Plan, modules: list[str]) -> list[Requirement]:
    reqs = [Requirement("Apache httpd", "binary", binary(), "apt-get install apache2")]
    for name in (*BASE_MODULES, *modules):
        reqs.append(Requirement(f"mod_{name}", "file", f"{MODULES}/mod_{name}.so",
                                "apt-get install apache2"))
    if plan.front_user:
        reqs.append(readable(plan.path("run"), plan.front_user, "the state dir", STATE_FIX))
    return reqs
