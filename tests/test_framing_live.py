"""Malformed requests on the wire: our corpus (tests/framing/, one raw request per file, the
rule it breaks in its name) sent as it is to a probe stack with `prefix = "/"` on every
backend, and through HAProxy in front of a granian and an apache+uwsgi stack, all on
127.0.0.1. The probe answers 200 to anything that reaches it: no case with broken framing
may (but those each backend documents in THROUGH, with why); every answer is a 4xx/5xx of
the rule's kind, or the connection closed; the stack answers normally afterwards.

`python -m tests.test_framing_live FIGURES` prints the README's "Malformed requests" table
from the JSON lines the tests write to $WSGISTACK_FIGURES.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Stack, free_port
from wsgistack.backends import BACKENDS

pytestmark = pytest.mark.live

CORPUS = Path(__file__).parent / "framing"
CASES = {p.stem: p.read_bytes() for p in sorted(CORPUS.glob("*.http"))}
# Cases that break no framing rule (the request line, other fields) are sent and reported,
# but may reach the app: whether they do is the server's business.
FRAMING = sorted(c for c in CASES if not c.startswith("other-"))
# Which answers are right, by the rule's kind: an unknown coding may be 501, a size too
# large for the server 413, a line too long 431, an unknown version 505.
RIGHT = {"te-": {400, 422, 501}, "cl-overflow": {400, 413}, "chunk-size-overflow": {400, 413},
         "chunk-line-oversize": {400, 413, 431}, "other-version": {400, 505}}
READ_TIMEOUT = 2.0

MANIFEST = """
[stack]
name = "framing"
host = "{host}"
base_port = {port}
start_timeout = 60
[services.probe]
app = "wsgistack.apps.probe:application"
prefix = "/"
processes = 1
threads = 2
"""
CLUSTER = """
[cluster]
nodes = {{ n1 = "{host}" }}
listen = "127.0.0.1:{listen}"
command = "true"
"""

# What still reaches the app with broken framing, per backend, and why it cannot be
# refused there (the README's table says the same). A server or front end that de-chunks a
# body itself and hands on one request is the only reader of those bytes: lenient is not
# ambiguous there, since nothing after it reads them another way.
REASONS = {
    "ignored": "chunk extensions are skipped unread (RFC 9112 §7.1.1: a recipient ignores "
    "those it does not know)",
    "dropped": "trailers are read and dropped, never merged into the header fields",
    "BWS": "whitespace after a chunk size is read as the BWS allowed before an extension",
    "LF": "a bare LF ends a chunk line (RFC 9112 §2.2 lets a recipient accept it)",
    "long": "no limit of its own on a chunk-size line's extensions",
    "TE wins": "framed by Transfer-Encoding, Content-Length removed, the connection closed "
    "after (RFC 9112 §6.3's own handling)",
    "1.0": "Transfer-Encoding honoured in an HTTP/1.0 request, Content-Length removed, the "
    "connection closed after",
    "unfolded": "the folded line is unfolded into `chunked` (RFC 9112 §5.2 allows it)",
    "cut": "hyper refuses the chunk, but granian tells the app only that the body ended: the "
    "app sees the body cut there; the connection is closed after",
    "uWSGI C": "uWSGI's own chunk decoder (uwsgi.chunked_read, in C) accepts it; the raw "
    "chunks never reach Python",
    "uWSGI :": "uWSGI takes `Content-Length :` or `Transfer-Encoding :` for another field "
    "(RFC 9112 §5.1: refuse it); the app sees no body, and uWSGI's router ends the "
    "connection after the answer (checked), so the body is never read as a request",
}
EXTENSIONS = dict.fromkeys(("chunk-ext-bad-name", "chunk-ext-empty", "chunk-ext-open-quote"),
                           "ignored")
TRAILERS = dict.fromkeys(("trailer-content-length", "trailer-host",
                          "trailer-transfer-encoding"), "dropped")
BWS = {"chunk-size-trailing-space": "BWS"}
BARE_LF = dict.fromkeys(("chunk-data-bare-lf", "chunk-last-bare-lf", "chunk-size-bare-lf"), "LF")
LONG_LINE = {"chunk-line-oversize": "long"}
TE_WINS = dict.fromkeys(("te-and-cl", "te-and-cl-te-first"), "TE wins")
TE_HTTP10 = {"te-in-http10": "1.0"}
MUST_CLOSE = {*TE_WINS, *TE_HTTP10}
OBS_FOLD = {"te-obs-fold": "unfolded"}
APACHE = {**EXTENSIONS, **TRAILERS, **BWS, **TE_WINS, **TE_HTTP10, **OBS_FOLD}
HAPROXY = {**EXTENSIONS, **TRAILERS, **BWS, **BARE_LF, **LONG_LINE, **TE_WINS, **OBS_FOLD}
THROUGH: dict[str, dict[str, str]] = {
    "granian": {**dict.fromkeys((
        "chunk-data-bare-lf", "chunk-data-no-crlf", "chunk-data-too-long",
        "chunk-ext-bad-name", "chunk-ext-empty", "chunk-ext-open-quote", "chunk-last-bare-lf",
        "chunk-line-oversize", "chunk-size-bare-lf", "chunk-size-empty",
        "chunk-size-hex-prefix", "chunk-size-leading-space", "chunk-size-minus-zero",
        "chunk-size-not-hex", "chunk-size-overflow", "chunk-size-plus-sign",
        "chunk-size-trailing-space", "chunk-size-underscore"), "cut"),
        **TE_WINS, **TRAILERS},
    "gunicorn": LONG_LINE,
    "mod_wsgi": APACHE,
    "apache+uwsgi": APACHE,
    "nginx+uwsgi": {**EXTENSIONS, **TRAILERS, **BWS, **BARE_LF, **LONG_LINE},
    "uwsgi": {**dict.fromkeys(("chunk-data-bare-lf", "chunk-data-no-crlf", "chunk-size-empty",
                               "chunk-size-hex-prefix", "chunk-size-not-hex"), "uWSGI C"),
              **TRAILERS,
              **dict.fromkeys(("cl-space-before-colon", "te-space-before-colon"), "uWSGI :")},
    "HAProxy -> granian": HAPROXY,
    "HAProxy -> apache+uwsgi": {**HAPROXY, **TE_HTTP10},
}
# Refused, but with another code than the rule's: Apache's proxy answers 500 where its core
# (mod_wsgi) answers 501.
OTHER_CODE = {"apache+uwsgi": {"te-chunked-twice": "500", "te-gzip-then-chunked": "500",
                               "te-two-fields": "500"}}


def right_codes(case: str) -> set[int]:
    return next((codes for prefix, codes in RIGHT.items() if case.startswith(prefix)), {400})


def exchange(port: int, raw: bytes, must_close: bool = False) -> str:
    """Send `raw` on a new connection: the first answer's status code (with ` entry` when
    the entry refused it, ` open` when a refusal left the connection open: what follows on
    it could be read as a request; also for a 200 if `must_close`), `closed` if the server
    closed without an answer, `no answer` if it waited past READ_TIMEOUT."""
    with socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(raw)
        data, ended = _read(sock, lambda d: b"\r\n\r\n" in d and len(
            d.partition(b"\r\n\r\n")[2]) >= min(_length(d), 4096))
        if not data:
            return "no answer" if ended == "timeout" else "closed"
        found = re.match(rb"\S+ (\d{3})[ \r]", data)
        if not found and b"CONTENT_LENGTH" in data:
            return "0.9"  # an HTTP/0.9 answer: the probe's body alone
        if not found:
            return "garbled " + repr(data[:20])
        status = found.group(1).decode()
        if (status != "200" or must_close) and ended == "enough":
            ended = _read(sock, lambda d: False)[1]
    head = data.partition(b"\r\n\r\n")[0] + b"\r\n"
    # The entry's refusal is the only plain-text one (servers and front ends send HTML or
    # nothing); its words may be lost, as a server closing on an unread body resets.
    entry = re.search(rb"(?i)\r\ncontent-type: text/plain\r\n", head)
    return status + (" entry" if entry else "") + (" open" if ended == "timeout" else "")


def _read(sock: socket.socket, enough: Callable[[bytes], bool]) -> tuple[bytes, str]:
    """What arrives until `enough` of it, or the end: ("enough", "closed" or "timeout")."""
    data = b""
    try:
        while not enough(data):
            piece = sock.recv(65536)
            if not piece:
                return data, "closed"
            data += piece
    except TimeoutError:
        return data, "timeout"
    except OSError:
        return data, "closed"  # reset: what came before it counts
    return data, "enough"


def _length(data: bytes) -> int:
    found = re.search(rb"(?i)\r\ncontent-length: *(\d+)\r\n", data.partition(b"\r\n\r\n")[0])
    return int(found.group(1)) if found else 0


def healthy(port: int) -> bool:
    """A plain GET and a good chunked POST both answered 200 by the app."""
    get = exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    post = exchange(port, b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    return get == post == "200"


def run_corpus(port: int, target: str) -> dict[str, str]:
    # A body the server could not frame stays unread: only a closed connection keeps it from
    # being read as the next request.
    closing = MUST_CLOSE | {c for c, why in THROUGH.get(target, {}).items() if why == "uWSGI :"}
    return {case: exchange(port, raw, must_close=case in closing)
            for case, raw in CASES.items()}


def record(target: str, results: dict[str, str]) -> None:
    path = os.environ.get("WSGISTACK_FIGURES")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps({"test": "malformed requests", "backend": target,
                                  "results": results}) + "\n")


def check(target: str, results: dict[str, str]) -> None:
    # A refusal of broken framing ends the connection: what follows could be read as a
    # request. So does an answer framed by Transfer-Encoding despite a Content-Length (RFC
    # 9112 §6.3 says it must). Not so a 413 on a declared length: the server reads the
    # body to drop it.
    kept_open = sorted(c for c, r in results.items() if c in FRAMING and r.endswith(" open")
                       and not r.startswith("413"))
    assert not kept_open, kept_open
    results = {c: r.split()[0] if r[:1].isdigit() else r for c, r in results.items()}
    through = sorted(c for c in FRAMING if results[c] == "200")
    assert through == sorted(THROUGH.get(target, {})), through
    wrong = {c: r for c, r in results.items() if c in FRAMING and r.isdigit() and r != "200"
             and int(r) not in right_codes(c) and OTHER_CODE.get(target, {}).get(c) != r}
    garbled = {c: r for c, r in results.items() if not r.isdigit()
               and r not in ("closed", "no answer", "0.9")}
    assert not wrong and not garbled, (wrong, garbled)


@contextlib.contextmanager
def probe_stack(stack: Stack, backend: str, host: str = "127.0.0.1",
                port: int = 0) -> Iterator[int]:
    port = port or free_port()
    stack.write(MANIFEST.format(host=host, port=port))
    up = stack.cli("up", "--detach", "--backend", backend)
    assert up.code == 0, up.err
    yield port


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_malformed_requests_never_reach_the_app(stack, backend):
    with probe_stack(stack, backend) as port:
        assert healthy(port)
        results = run_corpus(port, backend)
        record(backend, results)
        assert healthy(port)
    check(backend, results)


@pytest.mark.parametrize("backend", ["granian", "apache+uwsgi"])
def test_haproxy_in_front_refuses_them_first(stack, backend):
    port, listen = free_port(), free_port(1)
    with probe_stack(stack, backend, port=port):
        stack.write(MANIFEST.format(host="127.0.0.1", port=port)
                    + CLUSTER.format(host="127.0.0.1", listen=listen))
        up = stack.cli("cluster", "up")
        assert up.code == 0, up.err
        try:
            deadline = time.monotonic() + 20
            while not healthy(listen):
                assert time.monotonic() < deadline, "HAProxy never saw the node up"
                time.sleep(0.2)
            results = run_corpus(listen, f"HAProxy -> {backend}")
            record(f"HAProxy -> {backend}", results)
            assert healthy(listen) and healthy(port)
        finally:
            stack.cli("cluster", "down")
    check(f"HAProxy -> {backend}", results)


# ---- the README's table, from the figures ------------------------------------------------

SERVER = {"granian": "granian", "gunicorn": "gunicorn", "uwsgi": "uWSGI", "mod_wsgi": "Apache",
          "apache+uwsgi": "Apache", "nginx+uwsgi": "nginx", "HAProxy": "HAProxy"}


def table(lines: list[dict[str, object]]) -> str:
    """Per backend: how many framing cases are refused, by whom, and which reach the app
    and why (THROUGH); the other cases that reach it."""
    rows = [f"| backend | refused, of {len(FRAMING)} | refused by | broken framing reaching "
            "the app (why: below) | other cases reaching the app |",
            "| --- | --- | --- | --- | --- |"]
    for line in lines:
        target = str(line["backend"])
        res: dict[str, str] = line["results"]  # type: ignore[assignment]
        through = [c for c in FRAMING if res.get(c) == "200"]
        by_entry = sum(1 for c in FRAMING if res.get(c, "").endswith(" entry"))
        server = SERVER.get(target.split(" -> ")[0], target)
        where = f"{server} {len(FRAMING) - len(through) - by_entry}" + (
            f", entry {by_entry}" if by_entry else "")
        why: dict[str, int] = {}
        for case in through:
            label = THROUGH.get(target, {}).get(case, "?")
            why[label] = why.get(label, 0) + 1
        reached = ", ".join(f"{n} {label}" for label, n in why.items()) or "none"
        other = [c.removeprefix("other-") for c in res if c.startswith("other-")
                 and res[c] in ("200", "0.9")]
        rows.append(f"| {target} | {len(FRAMING) - len(through)} | {where} | {reached} | "
                    f"{', '.join(other) or 'none'} |")
    return "\n".join(rows)


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        found = [json.loads(x) for x in f if '"malformed requests"' in x]
    order = [*BACKENDS, "HAProxy -> granian", "HAProxy -> apache+uwsgi"]
    print(table(sorted(found, key=lambda x: order.index(x["backend"]))))
    print()
    for label, reason in REASONS.items():
        print(f"- **{label}**: {reason}.")
