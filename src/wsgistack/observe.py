"""Seeing each request, the same under every server: a request id and an access line.

The entry puts this layer inside `server_quirks` (which says whether the peer is a trusted
proxy) and around everything else, so a request the entry answers itself (a 404 outside the
prefix, a 413) is logged like one the app answers. One code path writes the line on all six
backends, so the same request gives the same line everywhere.

Standard library only: `wsgistack entry` copies what follows the marker into entry files.
"""

from __future__ import annotations

# ---- copied into entries from here ----
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

HEALTH_AGENT = "wsgistack-health"  # the User-Agent of wsgistack's own health checks
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class AccessLog:
    """Lines appended to one file by every worker (O_APPEND: a line is one write), reopened
    when the file was rotated; `-` is standard output (a container's log)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = -1
        self._inode = 0
        self._checked = 0.0
        self._pid = 0

    def write(self, line: str) -> None:
        data = line.encode("utf-8", "backslashreplace")
        if self.path == "-":
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
            return
        now = time.monotonic()
        if self._fd < 0 or self._pid != os.getpid() or now - self._checked > 1.0:
            self._reopen_if_rotated(now)
        try:
            os.write(self._fd, data)
        except OSError:
            self._fd = -1  # rotated away under us: the next line reopens

    def _reopen_if_rotated(self, now: float) -> None:
        self._checked = now
        try:
            inode = os.stat(self.path).st_ino
        except OSError:
            inode = -1
        if self._fd >= 0 and inode == self._inode and self._pid == os.getpid():
            return
        if self._fd >= 0 and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._inode = os.fstat(self._fd).st_ino
        self._pid = os.getpid()


def _errors_to(path: str) -> TextIO:
    """The app's stderr (and wsgi.errors) in its service's own log, where the server would
    send them to its own (mod_wsgi: Apache's error log)."""
    try:
        return open(path, "a", buffering=1, encoding="utf-8", errors="backslashreplace")
    except OSError:  # not made yet (a rendered tree): where the server would send it
        return sys.stderr


def client_address(environ: dict[str, Any], trusted: Callable[[str], bool]) -> str:
    """The client: the peer, or behind trusted proxies the last X-Forwarded-For hop that is
    not one of them (what Apache's mod_remoteip and nginx's realip take)."""
    peer = environ.get("REMOTE_ADDR") or "-"
    if not environ.get("wsgistack.trusted_peer"):
        return peer
    for hop in reversed(str(environ.get("HTTP_X_FORWARDED_FOR", "")).split(",")):
        hop = hop.strip()
        if hop and not trusted(hop):
            return hop
    return peer


def _clf_time(now: float) -> str:
    t = time.gmtime(now)
    return (f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000")


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"') if value else "-"


def line(fields: dict[str, Any], fmt: str) -> str:
    """Apache's combined format with the duration (µs), the request id, the app's own
    request id (x-openstack-request-id) and the service appended; or one JSON object."""
    if fmt == "json":
        return json.dumps(fields, separators=(",", ":")) + "\n"
    request = f"{fields['method']} {fields['path']} {fields['protocol']}"
    return (f"{fields['client']} - - [{_clf_time(fields['time'])}] \"{_quoted(request)}\" "
            f"{fields['status']} {fields['bytes'] or '-'} \"{_quoted(fields['referer'])}\" "
            f"\"{_quoted(fields['user_agent'])}\" {fields['duration_us']} "
            f"{fields['request_id']} {fields['app_request_id'] or '-'} {fields['service']}\n")


class _Counted:
    """The app's answer, counted as it is sent; the line is written when it is closed (the
    server has sent it all, or the client went away)."""

    def __init__(self, result: Iterable[bytes], done: Callable[[int], None]) -> None:
        self._result = result
        self._done = done
        self._sent = 0

    def __iter__(self) -> Iterator[bytes]:
        for piece in self._result:
            self._sent += len(piece)
            yield piece

    def close(self) -> None:
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            self._done(self._sent)


def observe(app: Callable[..., Any], service: str, log_path: str, fmt: str = "combined",
            log_health: bool = False, trusted: Callable[[str], bool] = lambda _a: False,
            errors: TextIO | None = None) -> Callable[..., Any]:
    """A request id for every request (the trusted proxy's X-Request-Id, else a new one) in
    the environ and the answer, an access line in `log_path` ("" : none), and with `errors`
    the app's wsgi.errors there."""
    log = AccessLog(log_path) if log_path else None

    def observed(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if errors is not None:
            environ["wsgi.errors"] = errors
        began = time.time()
        clock = time.perf_counter()
        given = environ.get("HTTP_X_REQUEST_ID", "")
        request_id = given if given and environ.get("wsgistack.trusted_peer") and \
            len(given) <= 200 and given.isprintable() else os.urandom(16).hex()
        environ["HTTP_X_REQUEST_ID"] = request_id
        answer: dict[str, Any] = {}

        def start(status: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
            answer["status"] = status
            answer["headers"] = headers
            if not any(k.lower() == "x-request-id" for k, _ in headers):
                headers = [*headers, ("X-Request-Id", request_id)]
            return start_response(status, headers, *exc)

        agent = environ.get("HTTP_USER_AGENT", "")
        if log is None or (not log_health and agent.startswith(HEALTH_AGENT)):
            return app(environ, start)

        def done(sent: int) -> None:
            app_id = next((v for k, v in answer.get("headers", ())
                           if k.lower() == "x-openstack-request-id"), "")
            query = environ.get("QUERY_STRING", "")
            path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
            log.write(line({
                "time": round(began, 6), "client": client_address(environ, trusted),
                "method": environ.get("REQUEST_METHOD", "-"),
                "path": path + (f"?{query}" if query else ""),
                "protocol": environ.get("SERVER_PROTOCOL", "-"),
                "status": int(str(answer.get("status", "0")).split(" ", 1)[0] or 0),
                "bytes": sent, "referer": environ.get("HTTP_REFERER", ""),
                "user_agent": agent,
                "duration_us": int((time.perf_counter() - clock) * 1e6),
                "request_id": request_id, "app_request_id": app_id, "service": service,
            }, fmt))

        try:
            result = app(environ, start)
        except BaseException:
            answer.setdefault("status", "500")
            done(0)
            raise
        if type(result) is list:  # the whole answer at hand (most APIs): no wrapper needed
            done(sum(map(len, result)))
            return result
        return _Counted(result, done)

    return observed
