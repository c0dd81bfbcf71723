"""Every server presents the same request to the app: forwarded headers, header limits,
uWSGI's chunked input, granian's hand-over."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from typing import Any

from wsgistack.layers.common import RequestRefused, _ChunkedInput, _plain
from wsgistack.loader import WSGIApp

# ---- copied into entries from here ----
# Request headers by which a proxy tells what the client sent, as WSGI environ keys. From a
# client that is not a trusted proxy they are lies: removed before the app (or its own proxy
# middleware, oslo's http_proxy_to_wsgi, werkzeug's ProxyFix) can believe them.
FORWARDED_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Port",
                     "X-Forwarded-Proto", "X-Forwarded-Prefix", "X-Forwarded-Ssl",
                     "X-Forwarded-Scheme", "X-Forwarded-Protocol", "X-Url-Scheme",
                     "Front-End-Https")
def environ_key(header: str) -> str:
    """The WSGI environ key a request header arrives under (`X-Forwarded-For`:
    `HTTP_X_FORWARDED_FOR`)."""
    return "HTTP_" + header.upper().replace("-", "_")


_FORWARDED_KEYS = tuple(map(environ_key, FORWARDED_HEADERS))
_FORWARDED_SET = frozenset(_FORWARDED_KEYS)


def _networks(trusted: Sequence[str]) -> list[Any]:
    import ipaddress

    return [ipaddress.ip_network(t, strict=False) for t in trusted]


def _trusted(remote: str, networks: list[Any]) -> bool:
    import ipaddress

    try:
        addr: Any = ipaddress.ip_address(remote.split("%")[0])
    except ValueError:
        return False
    addr = getattr(addr, "ipv4_mapped", None) or addr
    return any(addr in net for net in networks)


def _forwarded_scheme(environ: dict[str, Any]) -> str:
    """The scheme a trusted proxy says the client used ("" when it says none)."""
    forwarded = str(environ.get("HTTP_FORWARDED", ""))
    for part in forwarded.split(",", 1)[0].split(";"):
        key, _, value = part.strip().partition("=")
        if key.lower() == "proto":
            return value.strip('"').lower()
    for key in ("HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_SCHEME",
                "HTTP_X_FORWARDED_PROTOCOL", "HTTP_X_URL_SCHEME"):
        value = str(environ.get(key, "")).split(",")[0].strip().lower()
        if value:
            return value
    on = ("on", "true", "1", "yes")
    if any(environ.get(k, "").lower() in on
           for k in ("HTTP_X_FORWARDED_SSL", "HTTP_FRONT_END_HTTPS")):
        return "https"
    return ""


def _own_scheme(environ: dict[str, Any]) -> str:
    """uWSGI sets wsgi.url_scheme from X-Forwarded-Proto itself, whoever sent it: the scheme
    of the connection is what the front end said (HTTPS, REQUEST_SCHEME) or plain http."""
    if environ.get("HTTPS", "").lower() in ("on", "1"):
        return "https"
    return "https" if environ.get("REQUEST_SCHEME") == "https" else "http"


# Header limits, the same under every server: gunicorn and Apache refuse more than 100
# fields or a field over 8 KiB themselves; granian, uWSGI and nginx (to uWSGI) do not limit
# one or the other, and the entry does. A field may be as large as the 64 KiB uWSGI has
# always been given for token headers.
MAX_FIELDS = 100
MAX_FIELD = 65536


def _too_many_or_too_large(environ: dict[str, Any]) -> bool:
    # Counted only when the environ could hold that many; a value over the limit is looked
    # for among the long ones alone: a plain request costs one pass, no list. A loop, not
    # any() over a generator: half the time (1.1 against 2.0 us for 26 keys, here).
    if len(environ) > MAX_FIELDS and sum(k[:5] == "HTTP_" for k in environ) > MAX_FIELDS:
        return True
    for k, v in environ.items():
        if type(v) is str and len(v) > MAX_FIELD and k[:5] == "HTTP_":
            return True
    return False


def _last_hop(environ: dict[str, Any], key: str) -> str:
    """Take the value a proxy appended to a forwarded header (its last element) off it."""
    values = [v.strip() for v in str(environ.pop(key, "")).split(",")]
    if len(values) > 1:
        environ[key] = ", ".join(values[:-1])
    return values[-1]


def _from_http_proxy(environ: dict[str, Any]) -> None:
    """Behind Apache's mod_proxy_http on a UNIX socket, which only Apache can reach: the
    connection says nothing of the client, Apache's X-Forwarded-* do (it appends to them,
    and removes any a client sent unless it is a trusted proxy). Set the environ as
    mod_proxy_uwsgi would have."""
    environ["REMOTE_ADDR"] = _last_hop(environ, "HTTP_X_FORWARDED_FOR")
    environ.pop("REMOTE_PORT", None)
    scheme = environ.pop("HTTP_X_WSGISTACK_SCHEME", "http")
    environ["REQUEST_SCHEME"] = scheme
    for key in ("HTTP_X_FORWARDED_HOST", "HTTP_X_FORWARDED_SERVER"):
        _last_hop(environ, key)
    host = environ.get("HTTP_HOST", "")
    name, sep, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
    environ["SERVER_NAME"] = (name if sep else host) or environ.get("SERVER_NAME", "")
    environ["SERVER_PORT"] = port if sep and port.isdigit() else (
        "443" if scheme == "https" else "80")


def server_quirks(app: WSGIApp, trusted_proxies: Sequence[str] = (),
                  check_headers: bool = False, http_proxied: bool = False,
                  max_body: int = 0) -> WSGIApp:
    """Make every server present the same request to the app.

    - With `check_headers` (where nothing before the app limits them), more than MAX_FIELDS
      header fields, or one over MAX_FIELD bytes: 431.
    - Forwarded headers count only from `trusted_proxies` (addresses or CIDRs), judged by
      REMOTE_ADDR, which every server and front end sets from the connection: from anyone
      else they are removed. From a trusted proxy, the scheme it names sets
      wsgi.url_scheme (servers disagree on whether they do it themselves).
    - A chunked body under uWSGI's HTTP sockets is read through uwsgi.chunked_read().
    - SCRIPT_NAME is always present, and HTTP_CONTENT_TYPE/HTTP_CONTENT_LENGTH never are
      (uWSGI behind nginx gets both wrong; PEP 3333 says otherwise); a body with a
      CONTENT_LENGTH has no HTTP_TRANSFER_ENCODING.
    - While granian hands this worker's connections over (close_connections_on_signal),
      every response says `Connection: close`.
    """
    networks = _networks(trusted_proxies)
    trust: dict[str, bool] = {}  # by REMOTE_ADDR: asked once per address, not per request

    def uniform(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if check_headers and _too_many_or_too_large(environ):
            return _plain(start_response, "431 Request Header Fields Too Large",
                          f"more than {MAX_FIELDS} header fields, or one over {MAX_FIELD} "
                          "bytes", close=True)
        if http_proxied:
            _from_http_proxy(environ)
        environ.setdefault("SCRIPT_NAME", "")
        environ.pop("HTTP_CONTENT_TYPE", None)
        environ.pop("HTTP_CONTENT_LENGTH", None)
        remote = environ.get("REMOTE_ADDR") or ""
        trusted = trust.get(remote) if networks else False
        if trusted is None:
            if len(trust) > 4096:
                trust.clear()
            trusted = trust[remote] = _trusted(remote, networks)
        environ["wsgistack.trusted_peer"] = trusted  # for the request id and access line
        if trusted:
            proto = _forwarded_scheme(environ)
            if proto in ("http", "https"):
                environ["wsgi.url_scheme"] = proto
        else:
            if not _FORWARDED_SET.isdisjoint(environ):
                for key in _FORWARDED_KEYS:
                    environ.pop(key, None)
            if "uwsgi.version" in environ:
                environ["wsgi.url_scheme"] = _own_scheme(environ)
        if environ.get("CONTENT_LENGTH") and "HTTP_TRANSFER_ENCODING" in environ:
            # A body with a known length (nginx de-chunks one and passes its length) is
            # read by that length: an app that believed the header (Werkzeug) read nothing.
            del environ["HTTP_TRANSFER_ENCODING"]
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if chunked and "uwsgi.version" in environ:
            import uwsgi  # only importable under uWSGI

            environ["wsgi.input"] = _ChunkedInput(_uwsgi_chunks(uwsgi.chunked_read))
            environ["wsgi.input_terminated"] = True
        if _handing_over:  # granian's reload: the client reconnects, to a new worker
            return app(environ, _closing(start_response))
        return app(environ, start_response)

    return uniform


_handing_over = False  # set by the grace signal: this worker is about to stop


def close_connections_on_signal() -> None:
    """Under wsgistack's granian (backends/granian_run.py), which sends WSGISTACK_GRACE_SIGNAL
    to an old worker once its replacement is serving: from then on every answer says
    `Connection: close`, so that a keep-alive client moves to the new worker between two
    requests rather than meet its connection closed under a request in flight."""
    import signal
    import threading

    signum = os.environ.get("WSGISTACK_GRACE_SIGNAL", "")
    if not signum.isdigit() or threading.current_thread() is not threading.main_thread():
        return

    def hand_over(_signum: int, _frame: Any) -> None:
        global _handing_over
        _handing_over = True

    signal.signal(int(signum), hand_over)


def _closing(start_response: Callable[..., Any]) -> Callable[..., Any]:
    def start(status: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
        return start_response(status, [*headers, ("Connection", "close")], *exc)

    return start


def _uwsgi_chunks(read: Callable[[], bytes]) -> Callable[[], bytes]:
    """uwsgi.chunked_read, whose OSError on a body it cannot de-chunk (a bad size, any
    chunk extension, a missing CRLF) becomes a 400, not the app's 500."""
    def next_piece() -> bytes:
        try:
            return read()
        except OSError as exc:
            raise RequestRefused(f"chunked body: uWSGI {exc}") from None

    return next_piece


def _shutdown_uwsgi_connection() -> None:
    import socket

    import uwsgi  # only importable under uWSGI

    # shutdown() acts on the connection shared with uWSGI's own fd; the duplicate is closed.
    with contextlib.suppress(OSError), socket.fromfd(
            uwsgi.connection_fd(), socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.shutdown(socket.SHUT_RDWR)
