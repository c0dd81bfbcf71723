"""The catalog: a version-discovery document listing every service, and an aggregated health.

The stack is handed over in the environment variable WSGISTACK_CATALOG (JSON written by
`wsgistack up`), so the app works under any server.

    GET {prefix}/             -> {"stack": ..., "services": [{"name", "url", ...}], "links": [...]}
                                 (links: self, and the stack's metrics endpoint when it has one)
    GET {prefix}/healthcheck  -> 200 when every other service's health check passes, else 503
"""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit
from wsgiref.util import application_uri

ENV_VAR = "WSGISTACK_CATALOG"


def _stack() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(os.environ.get(ENV_VAR) or '{"stack": "", "services": []}')
    return data


def probe_health(url: str, expect: int, timeout: float = 3.0) -> tuple[bool, str]:
    """GET `url`; healthy when the status is `expect`. Returns (healthy, what was seen)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        conn.request("GET", parts.path or "/")
        status = conn.getresponse().status
    except OSError as exc:
        return False, f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()
    return status == expect, f"HTTP {status}"


def _json(start_response: Callable[..., Any], status: str, doc: Any) -> list[bytes]:
    body = json.dumps(doc, indent=1).encode() + b"\n"
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))])
    return [body]


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    stack = _stack()
    path = environ.get("PATH_INFO", "") or "/"
    if path == "/healthcheck":
        others = [s for s in stack["services"] if s.get("health_url") and not s.get("self")]
        with ThreadPoolExecutor(max_workers=max(1, len(others))) as pool:
            results = list(pool.map(
                lambda s: probe_health(s["health_url"], int(s.get("health_status", 200))), others
            ))
        report = {s["name"]: {"healthy": ok, "seen": seen}
                  for s, (ok, seen) in zip(others, results, strict=True)}
        healthy = all(ok for ok, _ in results)
        return _json(start_response, "200 OK" if healthy else "503 Service Unavailable",
                     {"healthy": healthy, "services": report})
    if path != "/":
        return _json(start_response, "404 Not Found", {"error": f"no such path {path}"})
    doc = {
        "stack": stack["stack"],
        "services": [
            {k: s[k] for k in ("name", "url", "prefix", "server") if k in s}
            for s in stack["services"]
        ],
        "links": [{"rel": "self", "href": application_uri(environ)}],
    }
    if stack.get("metrics"):  # the stack's Prometheus endpoint
        doc["links"].append({"rel": "metrics", "href": stack["metrics"]})
    return _json(start_response, "200 OK", doc)
