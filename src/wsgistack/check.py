"""`wsgistack check`: one service under each backend, the same requests, side by side.

Each backend runs the service alone (its own state dir, a free port), with wsgiref's PEP 3333
validator in front of the app. Rows marked `info` describe the server and are not compared.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from wsgistack import plan as plans
from wsgistack import runtime
from wsgistack.backends import BACKENDS
from wsgistack.errors import ServerError, WsgistackError
from wsgistack.lifecycle.preflight import free_ports
from wsgistack.manifest import Manifest

UPLOAD = 5 * 1024 * 1024
STREAM = 8 * 1024 * 1024
LIMIT = 8 * 1024 * 1024


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    prefix: str
    timeout: float = 30.0

    def conn(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)


def _request(t: Target, method: str, path: str, headers: dict[str, str] | None = None,
             body: Any = None, chunked: bool = False) -> tuple[int, bytes]:
    conn = t.conn()
    try:
        conn.request(method, t.prefix + path, body=body, headers=headers or {},
                     encode_chunked=chunked)
        resp = conn.getresponse()
        return resp.status, resp.read()
    except (OSError, http.client.HTTPException) as exc:
        return 0, f"{type(exc).__name__}".encode()
    finally:
        conn.close()


def _echo(t: Target, path: str = "/echo", **kw: Any) -> dict[str, Any] | str:
    status, body = _request(t, kw.pop("method", "GET"), path, **kw)
    if status != 200:
        return f"HTTP {status}" if status else body.decode()
    try:
        doc: dict[str, Any] = json.loads(body)
    except ValueError:
        return "not the probe's JSON"
    return doc


def _field(doc: dict[str, Any] | str, *keys: str) -> str:
    if isinstance(doc, str):
        return doc
    return " ".join(f"{doc.get(k)}" for k in keys)


def _chunks(data: bytes, size: int = 65536) -> Any:
    for i in range(0, len(data), size):
        yield data[i:i + size]


def _upload(t: Target, chunked: bool) -> str:
    data = bytes(range(256)) * (UPLOAD // 256)
    headers = {"Content-Type": "application/octet-stream"}
    if chunked:
        doc = _echo(t, "/upload", method="POST", headers=headers, body=_chunks(data),
                    chunked=True)
    else:
        doc = _echo(t, "/upload", method="POST", headers=headers, body=data)
    if isinstance(doc, str):
        return doc
    if "body_length" not in doc:  # JSON, but not the probe's
        return "not the probe's JSON"
    ok = doc["body_length"] == len(data) and doc["body_sha256"] == hashlib.sha256(data).hexdigest()
    return f"{doc['body_length']} read" + (", sha ok" if ok else ", CORRUPT")


def _stream(t: Target) -> str:
    status, body = _request(t, "GET", f"/stream?bytes={STREAM}")
    return f"HTTP {status}, {len(body)}"


def _keepalive(t: Target) -> str:
    conn = t.conn()
    try:
        seen = []
        for _ in range(2):
            conn.request("GET", t.prefix + "/status/200")
            resp = conn.getresponse()
            resp.read()
            seen.append(conn.sock.getsockname() if conn.sock else None)
        return "kept" if seen[0] is not None and seen[0] == seen[1] else "closed"
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__
    finally:
        conn.close()


def _over_limit(t: Target) -> str:
    """POST one byte over the limit, whole: some servers refuse on the length, some only
    once they read past the limit."""
    with socket.create_connection((t.host, t.port), timeout=30) as sock:
        def send() -> None:
            with contextlib.suppress(OSError):  # refused early: the answer is what counts
                sock.sendall(
                    f"POST {t.prefix}/upload HTTP/1.1\r\nHost: {t.host}:{t.port}\r\n"
                    f"Content-Length: {LIMIT + 1}\r\nConnection: close\r\n\r\n".encode()
                    + b"x" * (LIMIT + 1))

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        try:
            head = sock.recv(64).decode("latin-1")
        except OSError as exc:
            return type(exc).__name__
        finally:
            sender.join(30)
    return f"HTTP {head.split(' ', 2)[1]}" if head.startswith("HTTP/") else "no answer"


SLOW_HEADERS = 48
SLOW_BODIES = 16
SLOW_WAIT = 2.0  # seconds a normal request may take while they are held


def _slow_clients(t: Target) -> str:
    """Clients that send their headers, or a declared body, a byte at a time: does a normal
    request still get its answer while they hold on? (Bounded: one byte each, 2 s.)"""
    socks: list[socket.socket] = []
    try:
        for i in range(SLOW_HEADERS + SLOW_BODIES):
            with contextlib.suppress(OSError):  # refused: it holds nothing
                sock = socket.create_connection((t.host, t.port), timeout=2)
                socks.append(sock)
                sock.sendall(f"GET {t.prefix}/ HTTP/1.1\r\nHost: x\r\n".encode()
                             if i < SLOW_HEADERS else
                             f"POST {t.prefix}/upload HTTP/1.1\r\nHost: x\r\n"
                             "Content-Length: 100000\r\n\r\nx".encode())
        started = time.monotonic()
        status = _request(dataclasses.replace(t, timeout=SLOW_WAIT), "GET", "/status/200")[0]
        took = time.monotonic() - started
    finally:
        for sock in socks:
            sock.close()
    if status == 200:
        return f"holds: answered in {took:.1f}s"
    return f"starved: {f'HTTP {status}' if status else 'no answer'} in {SLOW_WAIT:g}s"


def _outside(t: Target) -> str:
    # Front ends deny what no service serves (403), servers of one app answer 404: both refuse.
    status = _request(dataclasses.replace(t, prefix=""), "GET", "/elsewhere")[0]
    return "refused" if status in (403, 404) else f"HTTP {status}"


Check = tuple[str, bool, Callable[[Target], str]]
CHECKS: list[Check] = [
    ("GET prefix/", True, lambda t: f"HTTP {_request(t, 'GET', '/')[0]}"),
    ("SCRIPT_NAME PATH_INFO", True, lambda t: _field(_echo(t, "/a/b%20c"), "SCRIPT_NAME",
                                                     "PATH_INFO")),
    ("QUERY_STRING", True, lambda t: _field(_echo(t, "/q?x=1&y=%20"), "QUERY_STRING")),
    ("HTTP_HOST as sent", True, lambda t: str(
        _field(_echo(t), "HTTP_HOST") == f"{t.host}:{t.port}")),
    ("absolute link", True, lambda t: _field(_echo(t), "application_uri").replace(
        f"{t.host}:{t.port}", "HOST")),
    ("Authorization passed", True, lambda t: _field(
        _echo(t, headers={"Authorization": "Bearer s3cr3t"}), "HTTP_AUTHORIZATION")),
    ("X-Forwarded-Proto: https", True, lambda t: _field(
        _echo(t, headers={"X-Forwarded-Proto": "https"}), "HTTP_X_FORWARDED_PROTO",
        "wsgi.url_scheme")),
    ("5 MiB upload, Content-Length", True, lambda t: _upload(t, chunked=False)),
    ("5 MiB upload, chunked", True, lambda t: _upload(t, chunked=True)),
    ("8 MiB streamed response", True, _stream),
    ("body over the limit", True, _over_limit),
    ("keep-alive", True, _keepalive),
    ("outside the prefix", True, lambda t: _outside(t)),
    ("PEP 3333 validator", True, lambda t: f"HTTP {_request(t, 'GET', '/status/204')[0]}"),
    ("wsgi.multiprocess/thread", False, lambda t: _field(_echo(t), "wsgi.multiprocess",
                                                          "wsgi.multithread")),
    ("slow clients", False, _slow_clients),
    ("SERVER_SOFTWARE", False, lambda t: _field(_echo(t), "server_software") or "-"),
]


def run_one(m: Manifest, service: str, backend: str) -> dict[str, str]:
    """Bring `service` up alone under `backend`, run every check, stop it."""
    svc = m.service(service)
    svc = dataclasses.replace(
        svc, port=0, max_body=LIMIT, env={**svc.env, "WSGISTACK_VALIDATE": "1"},
        processes=min(svc.processes, 2))
    alone = dataclasses.replace(
        m, services=(svc,),
        stack=dataclasses.replace(m.stack, base_port=free_ports(), host="127.0.0.1"))
    p = plans.build(alone, backend, state=Path(m.state_path, "check", backend.replace("+", "-")))
    running = runtime.up(p, lambda _m: None)
    try:
        url = urlsplit(p.services[0].public_url)
        target = Target(url.hostname or "127.0.0.1", url.port or 80, svc.prefix)
        return {name: fn(target) for name, _, fn in CHECKS}
    finally:
        runtime.stop_stack(p.state, running)


def run(m: Manifest, service: str, backends: list[str],
        progress: Callable[[str], None]) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """Results per backend, and the backends that could not run with the reason."""
    m.service(service)
    results: dict[str, dict[str, str]] = {}
    skipped: dict[str, str] = {}
    for backend in backends:
        progress(f"checking {service} under {backend}")
        try:
            results[backend] = run_one(m, service, backend)
        except WsgistackError as exc:
            skipped[backend] = str(exc)
    return results, skipped


def diverging(results: dict[str, dict[str, str]]) -> list[str]:
    return [name for name, compared, _ in CHECKS
            if compared and len({r[name] for r in results.values()}) > 1]


def matrix(results: dict[str, dict[str, str]]) -> list[list[str]]:
    differ = set(diverging(results))
    rows = []
    for name, compared, _ in CHECKS:
        mark = "DIFF" if name in differ else ("info" if not compared else "same")
        rows.append([mark, name, *(results[b][name] for b in results)])
    return rows


def select(spec: str) -> list[str]:
    if spec == "all":
        return list(BACKENDS)
    chosen = [b.strip() for b in spec.split(",") if b.strip()]
    for b in chosen:
        if b not in BACKENDS:
            raise ServerError(f"--backends: unknown backend '{b}' (known: {', '.join(BACKENDS)})")
    return chosen
