"""`wsgistack check`: one service under each backend, the same requests, side by side.

Each backend runs the service alone (its own state dir, ports from the manifest's base_port
+ 100 or --base-port). Rows marked `info` describe the server and are not compared; the
probe's own rows (`n/a` for another app) and the user's `--path` rows are.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.client
import json
import mimetypes
import shlex
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
from wsgistack.backends import BACKENDS, get
from wsgistack.errors import ServerError, WsgistackError
from wsgistack.manifest import Manifest, ServiceConfig

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


def _fetch(t: Target, method: str, path: str, headers: dict[str, str] | None = None,
           body: Any = None, chunked: bool = False) -> tuple[int, str, bytes]:
    """(status, content type, body), or (0, "", the error's name) when nothing answered."""
    conn = t.conn()
    try:
        conn.request(method, t.prefix + path, body=body, headers=headers or {},
                     encode_chunked=chunked)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type") or "", resp.read()
    except (OSError, http.client.HTTPException) as exc:
        return 0, "", f"{type(exc).__name__}".encode()
    finally:
        conn.close()


def _request(t: Target, method: str, path: str, **kw: Any) -> tuple[int, bytes]:
    status, _, body = _fetch(t, method, path, **kw)
    return status, body


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
        status = _request(dataclasses.replace(t, timeout=SLOW_WAIT), "GET", "/")[0]
        took = time.monotonic() - started
    finally:
        for sock in socks:
            sock.close()
    # Any answer, whatever the app's: the server was free to give it.
    return f"holds: answered in {took:.1f}s" if status else f"starved: no answer in {SLOW_WAIT:g}s"


# A handful of the malformed requests in tests/framing/ (the README's "Malformed requests"
# table has them all): (short name, headers after Host, body).
FRAMING_CASES = (
    ("TE+CL", "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
    ("TE gzip", "Transfer-Encoding: gzip, chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
    ("CL +5", "Content-Length: +5\r\n", "hello"),
    ("0x5", "Transfer-Encoding: chunked\r\n", "0x5\r\nhello\r\n0\r\n\r\n"),
    ("+5", "Transfer-Encoding: chunked\r\n", "+5\r\nhello\r\n0\r\n\r\n"),
    ("no CRLF", "Transfer-Encoding: chunked\r\n", "5\r\nhelloXX0\r\n\r\n"),
    ("trailer Host", "Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\nHost: y\r\n\r\n"),
)
REFUSED = (400, 413, 422, 431, 501, 505)  # what servers, front ends and the entry answer


def _raw_status(t: Target, raw: bytes) -> int:
    """The status of the first answer to `raw` sent as it is; 0: closed without one, or
    none in 5 s (the server waits for more: nothing reached the app either)."""
    with contextlib.suppress(OSError), socket.create_connection((t.host, t.port), 5) as sock:
        sock.sendall(raw)
        head = sock.recv(64)
        if head[:5] == b"HTTP/" and head[9:12].isdigit():
            return int(head[9:12])
    return 0


def _framing(t: Target) -> str:
    """Requests with broken or ambiguous framing, sent raw: which reach the app?"""
    through = []
    for name, headers, body in FRAMING_CASES:
        raw = (f"POST {t.prefix}/ HTTP/1.1\r\nHost: {t.host}:{t.port}\r\n{headers}"
               f"Connection: close\r\n\r\n{body}").encode()
        status = _raw_status(t, raw)
        if status and status not in REFUSED:
            through.append(name if status == 200 else f"{name} ({status})")
    refused = len(FRAMING_CASES) - len(through)
    return f"{refused}/{len(FRAMING_CASES)} refused" + (
        f"; got: {', '.join(through)}" if through else "")


def _app_raises(t: Target) -> str:
    status, _kind, data = _fetch(t, "GET", "/raise")
    after = _request(t, "GET", "/status/200")[0]
    return f"HTTP {status}, {len(data)} B {hashlib.sha256(data).hexdigest()[:8]}; then {after}"


def _outside(t: Target) -> str:
    # Front ends deny what no service serves (403), servers of one app answer 404: both refuse.
    status = _request(dataclasses.replace(t, prefix=""), "GET", "/elsewhere")[0]
    return "refused" if status in (403, 404) else f"HTTP {status}"


@dataclass(frozen=True)
class Check:
    name: str
    # "same": compared; "info": shown only; "probe", "probe info": the same, for the probe
    # app only (another app shows "-")
    kind: str
    run: Callable[[Target], str]


@dataclass(frozen=True)
class PathCheck:
    """A request of the user's own (`--path "METHOD /PATH [@BODYFILE] [-H 'Name: value']"`):
    its status, type and size are compared. A body's Content-Type, unless given, follows its
    file's extension (an API answers 400 or 415 to a JSON body sent without one)."""

    method: str
    path: str
    body_file: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    label: str = ""  # its row's name

    @classmethod
    def parse(cls, text: str) -> PathCheck:
        usage = (f"--path '{text}': write it as \"METHOD /PATH [@BODYFILE] [-H 'Name: "
                 "value']...\", the path under the service's prefix")
        try:
            words = shlex.split(text)
        except ValueError as exc:
            raise ServerError(f"{usage} ({exc})") from None
        if len(words) < 2 or not words[1].startswith("/"):
            raise ServerError(usage)
        body_file, headers, rest = "", [], words[2:]
        while rest:
            word = rest.pop(0)
            if word.startswith("@") and not body_file:
                body_file = word[1:]
            elif word == "-H" and rest and ":" in rest[0]:
                name, _, value = rest.pop(0).partition(":")
                headers.append((name.strip(), value.strip()))
            else:
                raise ServerError(usage)
        if body_file and not Path(body_file).is_file():
            raise ServerError(f"--path '{text}': no such file {body_file}")
        label = " ".join([words[0].upper(), words[1],
                          *([f"@{Path(body_file).name}"] if body_file else []),
                          *(f"-H {n}" for n, _ in headers)])  # names only: values may be keys
        if body_file and not any(n.lower() == "content-type" for n, _ in headers):
            kind = mimetypes.guess_type(body_file)[0]
            headers.append(("Content-Type", kind or "application/octet-stream"))
        return cls(words[0].upper(), words[1], body_file, tuple(headers), label)

    def __call__(self, t: Target) -> str:
        body = Path(self.body_file).read_bytes() if self.body_file else None
        status, kind, data = _fetch(t, self.method, self.path, body=body,
                                    headers=dict(self.headers))
        if not status:
            return data.decode()
        return f"HTTP {status}, {kind.split(';')[0] or '-'}, {len(data)} B"


def _is_probe(t: Target) -> bool:
    doc = _echo(t)
    return isinstance(doc, dict) and "body_sha256" in doc


CHECKS: list[Check] = [
    Check("GET prefix/", "same", lambda t: f"HTTP {_request(t, 'GET', '/')[0]}"),
    Check("SCRIPT_NAME PATH_INFO", "probe", lambda t: _field(_echo(t, "/a/b%20c"), "SCRIPT_NAME",
                                                            "PATH_INFO")),
    Check("QUERY_STRING", "probe", lambda t: _field(_echo(t, "/q?x=1&y=%20"), "QUERY_STRING")),
    Check("HTTP_HOST as sent", "probe", lambda t: str(
        _field(_echo(t), "HTTP_HOST") == f"{t.host}:{t.port}")),
    Check("absolute link", "probe", lambda t: _field(_echo(t), "application_uri").replace(
        f"{t.host}:{t.port}", "HOST")),
    Check("Authorization passed", "probe", lambda t: _field(
        _echo(t, headers={"Authorization": "Bearer s3cr3t"}), "HTTP_AUTHORIZATION")),
    Check("X-Forwarded-Proto: https", "probe", lambda t: _field(
        _echo(t, headers={"X-Forwarded-Proto": "https"}), "HTTP_X_FORWARDED_PROTO",
        "wsgi.url_scheme")),
    Check("5 MiB upload, Content-Length", "probe", lambda t: _upload(t, chunked=False)),
    Check("5 MiB upload, chunked", "probe", lambda t: _upload(t, chunked=True)),
    Check("8 MiB streamed response", "probe", _stream),
    Check("app raises", "probe", _app_raises),
    Check("body over the limit", "same", _over_limit),
    # Compared since uWSGI alone serves through its HTTP router, which keeps connections.
    Check("keep-alive", "same", _keepalive),
    Check("outside the prefix", "same", lambda t: _outside(t)),
    Check("wsgi.multiprocess/thread", "probe info", lambda t: _field(
        _echo(t), "wsgi.multiprocess", "wsgi.multithread")),
    Check("slow clients", "info", _slow_clients),
    Check("framing", "info", _framing),
    Check("SERVER_SOFTWARE", "probe info", lambda t: _field(_echo(t), "server_software") or "-"),
]
# With --strict: wsgiref's PEP 3333 validator in front of the app, as a row of its own (it
# also fails legal apps: never part of a plain check, never a failed start).
STRICT = Check("PEP 3333 validator", "same", lambda t: f"HTTP {_request(t, 'GET', '/')[0]}")
CHECK_PORT_OFFSET = 100  # from the manifest's base_port: clear of the stack's own ports


def checks(paths: list[PathCheck], strict: bool) -> list[Check]:
    return [*CHECKS, *([STRICT] if strict else []),
            *(Check(p.label, "same", p) for p in paths)]


def run_one(m: Manifest, service: str, backend: str, rows: list[Check],
            base_port: int, strict: bool) -> dict[str, str]:
    """Bring `service` up alone under `backend`, run every check, stop it."""
    svc = m.service(service)
    svc = dataclasses.replace(
        svc, port=0, max_body=LIMIT, processes=min(svc.processes, 2),
        env={**svc.env, **({"WSGISTACK_VALIDATE": "1"} if strict else {})})
    # The services whose files it reads come up beside it (first: their setup makes them).
    needed = tuple(dataclasses.replace(n, port=0, processes=min(n.processes, 2))
                   for n in with_needs(m, service)[:-1])
    alone = dataclasses.replace(
        m, services=(*needed, svc),
        stack=dataclasses.replace(m.stack, base_port=base_port, host="127.0.0.1"))
    state = Path(m.state_path, "check", backend.replace("+", "-"))
    p = plans.build(alone, get(backend), state=state, whole=m)
    try:
        running = runtime.up(p, lambda _m: None, after_up=False)  # not the stack's own
    except WsgistackError as exc:  # its logs are the check stack's, not the stack's
        raise ServerError(f"{exc} (logs: {p.state}/logs/)") from None
    try:
        url = urlsplit(p.services[-1].public_url)
        target = Target(url.hostname or "127.0.0.1", url.port or 80, svc.prefix)
        probe = _is_probe(target)
        return {c.name: c.run(target) if probe or not c.kind.startswith("probe") else "-"
                for c in rows}
    finally:
        runtime.stop_stack(p.state, running)


def with_needs(m: Manifest, service: str) -> list[ServiceConfig]:
    """`service` and the services it `needs`, theirs included, each once, in the order they
    are set up: what it needs before it, `service` itself last."""
    out: list[ServiceConfig] = []

    def visit(name: str, seen: tuple[str, ...]) -> None:
        if name in seen:
            raise ServerError(f"service '{name}' needs itself through "
                              f"{' -> '.join((*seen, name))}")
        svc = m.service(name)
        for need in svc.needs:
            visit(need, (*seen, name))
        if svc not in out:
            out.append(svc)

    visit(service, ())
    return out


def run(m: Manifest, service: str, backends: list[str], progress: Callable[[str], None],
        paths: list[PathCheck] | None = None, strict: bool = False, base_port: int = 0,
        ) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """Results per backend, and the backends that could not run with the reason."""
    m.service(service)
    rows = checks(paths or [], strict)
    results: dict[str, dict[str, str]] = {}
    skipped: dict[str, str] = {}
    for backend in backends:
        progress(f"checking {service} under {backend}")
        try:
            results[backend] = run_one(m, service, backend, rows,
                                       base_port or m.stack.base_port + CHECK_PORT_OFFSET, strict)
        except WsgistackError as exc:
            skipped[backend] = str(exc)
    return results, skipped


def diverging(results: dict[str, dict[str, str]], rows: list[Check]) -> list[str]:
    return [c.name for c in rows
            if not c.kind.endswith("info") and len({r[c.name] for r in results.values()}) > 1]


def matrix(results: dict[str, dict[str, str]], rows: list[Check]) -> list[dict[str, Any]]:
    """Each row that applies to the app: its mark (same, DIFF, info) and value per backend.
    The probe's rows are left out for another app (they would all say "-")."""
    differ = set(diverging(results, rows))
    out = []
    for c in rows:
        values = {b: results[b][c.name] for b in results}
        if set(values.values()) == {"-"}:
            continue
        mark = "info" if c.kind.endswith("info") else "DIFF" if c.name in differ else "same"
        out.append({"mark": mark, "check": c.name, "values": values})
    return out


def text(table: list[dict[str, Any]]) -> str:
    """The matrix within 100 columns: a value all backends share on the row itself, else a
    line per backend under it."""
    if not table:
        return ""
    backends = list(table[0]["values"])
    width = max(len(r["check"]) for r in table)
    lines = [f"backends: {', '.join(backends)}"]
    for row in table:
        values = set(row["values"].values())
        head = f"{row['mark']:<4}  {row['check']:<{width}}"
        if len(values) == 1:
            lines.append(f"{head}  {values.pop()}".rstrip())
            continue
        lines.append(head.rstrip())
        lines += [f"      {b:<14}{v}" for b, v in row["values"].items()]
    return "\n".join(lines)


def select(spec: str) -> list[str]:
    if spec == "all":
        return list(BACKENDS)
    chosen = [b.strip() for b in spec.split(",") if b.strip()]
    for b in chosen:
        if b not in BACKENDS:
            raise ServerError(f"--backends: unknown backend '{b}' (known: {', '.join(BACKENDS)})")
    return chosen
