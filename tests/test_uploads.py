"""Uploads on every backend, to a service not marked `upload`: chunked and with a length,
with and without `Expect: 100-continue`, an answer before the body is read, a client that
gives up mid-body. Real servers on 127.0.0.1; the probe app hashes what it reads."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Stack, free_port
from wsgistack.backends import BACKENDS

pytestmark = pytest.mark.live

MANIFEST = """
[stack]
name = "uploads"
base_port = {port}
[services.probe]
app = "wsgistack.apps.probe:application"
prefix = "/probe"
health_path = "/status/200"
"""
BODY = bytes(range(256)) * (3 * 4096)  # 3 MiB: curl sends Expect above 1 MiB
CONTINUE_WITHIN = 0.5  # seconds; clients give up waiting after 1 (curl) and send anyway


@pytest.fixture(scope="module", params=sorted(BACKENDS))
def probe(request: pytest.FixtureRequest) -> Iterator[tuple[str, int]]:
    root = Path(tempfile.mkdtemp(prefix="wsgistack-uploads-", dir="/tmp"))
    root.chmod(0o755)
    stack = Stack(root)
    port = free_port()
    stack.write(MANIFEST.format(port=port))
    res = stack.cli("up", "--detach", "--backend", request.param)
    try:
        assert res.code == 0, res.err
        yield request.param, port
    finally:
        stack.cli("down")
        shutil.rmtree(root, ignore_errors=True)


def _send(port: int, path: str, body: bytes, *, chunked: bool, expect: bool,
          give_up_after: int = 0) -> tuple[str, float | None, tuple[int, bytes] | None]:
    """POST `body`; returns what came first after the headers ("100", a final status, or
    "nothing"), how long it took, and the final response (None when the client gave up)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}",
            "Content-Type: application/octet-stream", "Connection: close"]
    head += ["Transfer-Encoding: chunked"] if chunked else [f"Content-Length: {len(body)}"]
    head += ["Expect: 100-continue"] if expect else []
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    first, waited = "nothing", None
    if expect:
        started = time.monotonic()
        sock.settimeout(2.0)
        with contextlib.suppress(TimeoutError):
            peek = sock.recv(64, socket.MSG_PEEK)
            waited = time.monotonic() - started
            first = peek.split(b" ", 2)[1].decode() if peek.startswith(b"HTTP/") else "?"
        sock.settimeout(30)
        if first not in ("100", "nothing"):  # answered before the body: send none
            return first, waited, _response(sock)
        if first == "100":
            interim = b""
            while not interim.endswith(b"\r\n\r\n"):
                interim += sock.recv(1)
    sent = body[:give_up_after] if give_up_after else body
    for i in range(0, len(sent), 65536):
        piece = sent[i:i + 65536]
        with contextlib.suppress(OSError):  # an early answer may close the connection
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
    if give_up_after:
        sock.close()
        return first, waited, None
    if chunked:
        with contextlib.suppress(OSError):
            sock.sendall(b"0\r\n\r\n")
    return first, waited, _response(sock)


def _response(sock: socket.socket) -> tuple[int, bytes]:
    resp = http.client.HTTPResponse(sock)
    resp.begin()  # skips interim 100 responses
    with contextlib.closing(sock):
        return resp.status, resp.read()


@pytest.mark.parametrize(("chunked", "expect"), [(False, False), (True, False), (False, True),
                                                 (True, True)])
def test_an_upload_arrives_whole(probe, chunked, expect):
    backend, port = probe
    first, waited, resp = _send(port, "/probe/upload", BODY, chunked=chunked, expect=expect)
    assert resp is not None and resp[0] == 200, (backend, first, resp)
    doc = json.loads(resp[1])
    assert (doc["body_length"], doc["body_sha256"]) == (
        len(BODY), hashlib.sha256(BODY).hexdigest()), backend
    # A body with a known length (nginx de-chunks) is not also said to be chunked.
    assert not (doc["CONTENT_LENGTH"] and doc["HTTP_TRANSFER_ENCODING"]), doc
    if expect:  # answered at once, not after the client's own wait
        assert first == "100" and waited is not None and waited < CONTINUE_WITHIN, (
            backend, first, waited)


@pytest.mark.parametrize("expect", [False, True])
def test_an_answer_before_the_body_is_read_reaches_the_client(probe, expect):
    backend, port = probe
    first, _, resp = _send(port, "/probe/status/401", BODY, chunked=False, expect=expect)
    assert resp is not None and resp[0] == 401, (backend, first, resp)


def test_a_client_that_gives_up_mid_body_frees_the_worker(probe):
    backend, port = probe
    for _ in range(3):  # more than the service's workers could hold
        _send(port, "/probe/upload", BODY, chunked=False, expect=False,
              give_up_after=len(BODY) // 3)
    for _ in range(4):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/probe/status/200")
        assert conn.getresponse().status == 200, backend
        conn.close()


def test_static_files_are_served_before_the_app(tmp_path_factory):
    """`static` on every backend: by the front end, granian's mount, uWSGI's static-map or
    WhiteNoise (gunicorn); the app still answers the rest of the prefix."""
    root = Path(tempfile.mkdtemp(prefix="wsgistack-static-", dir="/tmp"))
    root.chmod(0o755)
    (root / "assets").mkdir(mode=0o755)
    (root / "assets" / "hello.txt").write_text("hello, static\n")
    (root / "assets" / "hello.txt").chmod(0o644)
    stack = Stack(root)
    try:
        for backend in sorted(BACKENDS):
            port = free_port()
            stack.write(MANIFEST.format(port=port) + 'static = { "/static" = "assets" }\n')
            res = stack.cli("up", "--detach", "--backend", backend)
            assert res.code == 0, res.err
            try:
                got = {}
                for path in ("/probe/static/hello.txt", "/probe/static/nothing.txt",
                             "/probe/status/200"):
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                    conn.request("GET", path)
                    resp = conn.getresponse()
                    got[path] = (resp.status, resp.read())
                    conn.close()
                assert got["/probe/static/hello.txt"] == (200, b"hello, static\n"), backend
                assert got["/probe/static/nothing.txt"][0] == 404, backend
                assert got["/probe/status/200"] == (200, b""), backend
            finally:
                assert stack.cli("down").code == 0
        stack.write(MANIFEST.format(port=free_port()) + 'static = { "/static" = "nowhere" }\n')
        res = stack.cli("up", "--detach")
        assert res.code == 2 and res.err.strip().endswith(
            f"services.probe.static: {root / 'nowhere'} (for /static) is not a directory; "
            "create it or fix the setting")
    finally:
        shutil.rmtree(root, ignore_errors=True)
