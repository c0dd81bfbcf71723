"""The probe: echoes what the server passed the app, so servers can be compared.

    GET  {prefix}/anything      -> JSON of the environ keys that differ between servers
    POST {prefix}/anything      -> the same, with the body read completely (length, sha256)
    GET  {prefix}/stream?bytes=N -> N bytes streamed in 64 KiB chunks
    GET  {prefix}/status/NNN     -> an empty response with that status
    GET  {prefix}/raise          -> the app raises (the entry answers 500)
    GET  {prefix}/sleep/N        -> an empty 200 after N seconds (at most 10): a request held
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs
from wsgiref.util import application_uri, request_uri

StartResponse = Callable[..., Any]

ECHOED = (
    "REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "SERVER_NAME", "SERVER_PORT",
    "SERVER_PROTOCOL", "HTTP_HOST", "HTTP_AUTHORIZATION", "HTTP_X_AUTH_TOKEN",
    "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST", "HTTP_X_FORWARDED_FOR", "CONTENT_TYPE",
    "CONTENT_LENGTH", "HTTP_TRANSFER_ENCODING", "HTTPS", "wsgi.url_scheme", "wsgi.multiprocess",
    "wsgi.multithread", "wsgi.run_once", "wsgi.input_terminated",
)
_CHUNK = 65536


def _read_body(environ: dict[str, Any]) -> tuple[int, str]:
    stream = environ["wsgi.input"]
    digest = hashlib.sha256()
    total = 0
    length = environ.get("CONTENT_LENGTH") or ""
    remaining = int(length) if length.isdigit() else None
    # Without a length (chunked) PEP 3333 says read to EOF only when the server promises
    # wsgi.input_terminated; mod_wsgi and uWSGI do for chunked bodies.
    while remaining is None or remaining > 0:
        want = _CHUNK if remaining is None else min(_CHUNK, remaining)
        data = stream.read(want)
        if not data:
            break
        digest.update(data)
        total += len(data)
        if remaining is not None:
            remaining -= len(data)
    return total, digest.hexdigest()


def _stream(size: int) -> Iterator[bytes]:
    block = b"x" * _CHUNK
    while size > 0:
        piece = block[: min(size, _CHUNK)]
        size -= len(piece)
        yield piece


def echo(environ: dict[str, Any]) -> dict[str, Any]:
    """The part of the environ the probe reports, plus what it read of the body."""
    report: dict[str, Any] = {key: environ.get(key) for key in ECHOED}
    encoding = (environ.get("HTTP_TRANSFER_ENCODING") or "").lower()
    report["chunked"] = "chunked" in encoding
    report["body_length"], report["body_sha256"] = _read_body(environ)
    report["application_uri"] = application_uri(environ)
    report["request_uri"] = request_uri(environ)
    report["server_software"] = environ.get("SERVER_SOFTWARE", "")
    report["pid"] = os.getpid()
    return report


def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    if path == "/stream":
        query = parse_qs(environ.get("QUERY_STRING", ""))
        size = int(query.get("bytes", ["1048576"])[0])
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return _stream(size)
    if path == "/raise":
        raise RuntimeError("the probe raised, as asked")
    if path.startswith("/sleep/") and path[7:].isdigit():
        time.sleep(min(int(path[7:]), 10))
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "0")])
        return [b""]
    if path.startswith("/status/") and path[8:].isdigit():
        code = int(path[8:])
        # PEP 3333 (and wsgiref.validate): 204 and 304 carry no Content-Type, all else one.
        typed = [] if code in (204, 304) else [("Content-Type", "text/plain")]
        start_response(f"{code} Probe", [*typed, ("Content-Length", "0")])
        return [b""]
    body = json.dumps(echo(environ), indent=1, sort_keys=True).encode() + b"\n"
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]
