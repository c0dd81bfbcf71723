"""Request framing, strictly (RFC 9112 §6-7, RFC 9110 §6.5 and §8.6): the one chunked decoder
every Python path uses, and the entry's check of the framing headers a server passed on.

Request smuggling lives in the gaps between two parsers that read one request two ways: a
chunk size `+5` or `0x5` (Python's int(s, 16) takes both), a chunk not closed by CRLF, a
Transfer-Encoding that only contains "chunked", a Content-Length beside it. Whatever is not
exactly what the RFC allows is refused here, and the connection closed, rather than guessed.

What follows the marker below is copied into every entry (entry.py), after the loader whose
names it uses; it stays standard-library only.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from wsgistack.layers.common import RequestRefused, _AfterClose
from wsgistack.layers.quirks import _shutdown_uwsgi_connection

# ---- copied into entries from here ----
MAX_CHUNK_LINE = 4096  # a chunk-size line with its extensions, or one trailer field line
MAX_TRAILERS = 100  # trailer fields; more is refused, as for header fields
_HEXDIG = frozenset(b"0123456789abcdefABCDEF")
_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
                   b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_QDTEXT = frozenset(b"\t !") | frozenset(range(0x23, 0x5C)) | frozenset(range(0x5D, 0x7F)) \
    | frozenset(range(0x80, 0x100))
# Fields a trailer must not carry (RFC 9110 §6.5.1): framing, routing, request modifiers,
# authentication, content processing. A parser that merged them into the header fields
# would read another request than ours.
FORBIDDEN_TRAILERS = frozenset((
    "content-length", "transfer-encoding", "host", "trailer", "te", "connection",
    "keep-alive", "upgrade", "proxy-connection", "expect", "max-forwards", "range",
    "if-match", "if-none-match", "if-modified-since", "if-unmodified-since", "if-range",
    "cache-control", "authorization", "proxy-authorization", "cookie", "set-cookie",
    "content-encoding", "content-type", "content-range",
))


# What SERVER_PROTOCOL may say: HTTP/1.x on the wire; granian names HTTP/2 so when it
# speaks it. uWSGI alone answered `HTTP/111`, `FTP/1.1` and `http/1.1` requests with 200,
# Apache (mod_wsgi) `HTTP/2.0` in an HTTP/1 request line.
VERSIONS = frozenset(("HTTP/1.0", "HTTP/1.1", "HTTP/2"))


class BadFraming(RequestRefused):
    """The request's framing is broken or ambiguous: answered `status` (400, 501), the
    connection closed, the app never called or its body read stopped."""


def _is_token(data: bytes) -> bool:
    return bool(data) and _TCHAR.issuperset(data)


def _quoted_string(data: bytes) -> bool:
    """A quoted-string (with quoted-pairs), quotes included."""
    if len(data) < 2 or data[:1] != b'"' or data[-1:] != b'"':
        return False
    i, end = 1, len(data) - 1
    while i < end:
        c = data[i]
        if c == 0x5C:  # backslash: a quoted-pair, any visible char, SP or HTAB after it
            if i + 1 >= end or (data[i + 1] not in _QDTEXT and data[i + 1] not in b'"\\'):
                return False
            i += 2
            continue
        if c not in _QDTEXT:
            return False
        i += 1
    return True


def _check_extensions(ext: bytes) -> None:
    """`ext` is what follows the first ";": chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS
    value ] ), value a token or a quoted-string. Quoted strings may hold ";", so the split
    walks quotes."""
    parts, current, quoted, escaped = [], bytearray(), False, False
    for c in ext:
        if quoted:
            current.append(c)
            if escaped:
                escaped = False
            elif c == 0x5C:
                escaped = True
            elif c == 0x22:
                quoted = False
        elif c == 0x3B:  # ";"
            parts.append(bytes(current))
            current = bytearray()
        else:
            current.append(c)
            quoted = c == 0x22
    if quoted:
        raise BadFraming("chunk extension: unterminated quoted string")
    parts.append(bytes(current))
    for part in parts:
        name, eq, value = part.partition(b"=")
        if not _is_token(name.strip(b" \t")):
            raise BadFraming("chunk extension: name is not a token")
        value = value.strip(b" \t")
        if eq and not (_is_token(value) or _quoted_string(value)):
            raise BadFraming("chunk extension: value is neither a token nor a quoted string")


def parse_chunk_size(line: bytes) -> int:
    """The size on a chunk-size line (CRLF included): bare hex digits, then nothing or
    extensions after optional whitespace. No sign, prefix, underscore or space before."""
    if line[-2:] != b"\r\n":
        raise BadFraming("chunk-size line not ended by CRLF" if len(line) < MAX_CHUNK_LINE
                         else f"chunk-size line over {MAX_CHUNK_LINE} bytes")
    line = line[:-2]
    size, semi, ext = line.partition(b";")
    if semi:
        size = size.rstrip(b" \t")  # BWS before ";" (RFC 9112 §7.1.1): a recipient parses it
        _check_extensions(ext)
    if not size or not _HEXDIG.issuperset(size):
        raise BadFraming("chunk size is not bare hex digits")
    if len(size.lstrip(b"0")) > 15:
        raise BadFraming("chunk size too large")
    return int(size, 16)


def _read_trailers(stream: Any) -> None:
    """Read the trailer section up to its empty line, refusing bad or forbidden fields."""
    for _ in range(MAX_TRAILERS + 1):
        line = stream.readline(MAX_CHUNK_LINE)
        if line == b"\r\n":
            return
        if line[-2:] != b"\r\n":
            raise BadFraming("trailer line not ended by CRLF" if len(line) < MAX_CHUNK_LINE
                             else f"trailer line over {MAX_CHUNK_LINE} bytes")
        name, colon, value = line[:-2].partition(b":")
        if not colon or not _is_token(name):
            raise BadFraming("trailer field is not `name: value`")
        if b"\r" in value or b"\n" in value or b"\0" in value:
            raise BadFraming("trailer field value holds CR, LF or NUL")
        if name.decode("ascii").lower() in FORBIDDEN_TRAILERS:
            raise BadFraming(f"trailer field {name.decode('ascii')} is not allowed in trailers")
    raise BadFraming(f"more than {MAX_TRAILERS} trailer fields")


def chunk_reader(stream: Any) -> Callable[[], bytes]:
    """The pieces of a chunked body on `stream` (readline(limit) and read(n), as a socket's
    file), b"" after the last, its trailers checked and dropped. Raises BadFraming at the
    first byte that is not RFC 9112 §7.1, and stays failed: nothing after it is read."""
    state = {"left": 0, "done": False}

    def next_piece() -> bytes:
        if state["done"]:
            return b""
        if state["left"] == 0:
            state["done"] = True  # also after an error: a broken stream is read no further
            size = parse_chunk_size(stream.readline(MAX_CHUNK_LINE))
            if size == 0:
                _read_trailers(stream)
                return b""
            state["left"], state["done"] = size, False
        data: bytes = stream.read(min(state["left"], 65536))
        if not data:
            state["done"] = True
            raise BadFraming("body ended inside a chunk")
        state["left"] -= len(data)
        if state["left"] == 0 and stream.read(2) != b"\r\n":
            state["done"] = True
            raise BadFraming("chunk data not followed by CRLF")
        return data

    return next_piece


def framing_error(environ: dict[str, Any], empty_length: bool = True) -> BadFraming | None:
    """What is wrong with the framing headers the server passed on as they are (HTTP_
    TRANSFER_ENCODING, CONTENT_LENGTH), or None; meant for servers that pass the client's
    values unchanged. An empty CONTENT_LENGTH is no body (wsgiref sets one on every
    request) unless not `empty_length`: the servers that set none without the field."""
    te = environ.get("HTTP_TRANSFER_ENCODING")
    length = environ.get("CONTENT_LENGTH")
    if te is None:
        if length is None or (length.isascii() and length.isdigit()) or (
                empty_length and not length):
            return None
        return BadFraming("Content-Length is not one run of digits")
    if length or (length is not None and not empty_length):
        return BadFraming("both Transfer-Encoding and Content-Length")
    if te != "chunked":
        codings = [c.strip(" \t").lower() for c in te.split(",")]
        if codings != ["chunked"]:
            if not all(codings):
                return BadFraming("Transfer-Encoding with an empty coding")
            if any(c not in ("chunked", "gzip", "deflate", "compress", "x-gzip", "identity")
                   for c in codings):
                return BadFraming(f"Transfer-Encoding {te!r}: unknown coding",
                                  "501 Not Implemented")
            return BadFraming(f"Transfer-Encoding {te!r}: only `chunked` alone is accepted")
    return None


def refusal(environ: dict[str, Any], start_response: Callable[..., Any],
            error: RequestRefused) -> Any:
    """The answer to a request with broken framing: its status, and the connection closed
    (what follows on it cannot be told apart from this request's body). wsgiref refuses a
    Connection header from the app, and closes after every request anyway."""
    body = f"bad request framing: {error}\n".encode()
    headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
    if not environ.get("SERVER_SOFTWARE", "").startswith("WSGIServer/"):
        headers.append(("Connection", "close"))
    start_response(error.status, headers)
    if "uwsgi.version" in environ:  # uWSGI reads on whatever we say: the connection is shut
        return _AfterClose([body], _shutdown_uwsgi_connection)
    return [body]


def strict_framing(app: Callable[..., Any], check_environ: bool = True
                   ) -> Callable[..., Any]:
    """Refuse broken framing before `app`: with `check_environ` (servers that pass the
    client's own values), the framing headers and the protocol version as the server passed
    them; always, a chunked body that turns out broken as it is read (our decoder's
    BadFraming, uWSGI's failure). Three look-ups per request, when all is well: servers
    given `check_environ` set no CONTENT_LENGTH without the field, so an empty one is the
    client's (uWSGI passes it), refused."""
    def strict(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if check_environ:
            length = environ.get("CONTENT_LENGTH", "0")
            if "HTTP_TRANSFER_ENCODING" in environ or not (length.isascii()
                                                          and length.isdigit()):
                error = framing_error(environ, empty_length=False)
                if error is not None:
                    return refusal(environ, start_response, error)
                if "HTTP_TRANSFER_ENCODING" in environ and "wsgi.input" in environ:
                    environ["wsgi.input"] = _DecodedInput(environ["wsgi.input"])
            if environ.get("SERVER_PROTOCOL") not in VERSIONS:
                return refusal(environ, start_response, _bad_version(environ))
        try:
            return app(environ, start_response)
        except RequestRefused as exc:
            # exc_info: "replace what the app started". uWSGI, given it, returns with the
            # exception still set and sends the headers without the body (as in
            # layers.failures): the client waited for a body that never came.
            replace = () if "uwsgi.version" in environ else (sys.exc_info(),)
            return refusal(environ, lambda s, h: start_response(s, h, *replace), exc)

    return strict


class _DecodedInput:
    """wsgi.input of a chunked body the server decodes: a read that fails there (gunicorn's
    InvalidChunkSize, mod_wsgi's read error) is the client's broken framing, answered 400
    by strict_framing, not a 500 from the app's own error handling."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def _do(self, name: str, arg: int | None) -> Any:
        try:
            return getattr(self._stream, name)(arg)
        except RequestRefused:
            raise
        except Exception as exc:
            raise BadFraming(f"chunked body: {type(exc).__name__}: {exc}") from None

    def read(self, size: int | None = -1) -> bytes:
        data: bytes = self._do("read", size)
        return data

    def readline(self, size: int | None = -1) -> bytes:
        data: bytes = self._do("readline", size)
        return data

    def readlines(self, hint: int = -1) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self) -> Any:
        return iter(self.readline, b"")


def _bad_version(environ: dict[str, Any]) -> BadFraming:
    version = str(environ.get("SERVER_PROTOCOL", ""))
    if version.startswith("HTTP/"):
        return BadFraming(f"protocol {version!r}: HTTP/1.0 or HTTP/1.1 only",
                          "505 HTTP Version Not Supported")
    return BadFraming(f"protocol {version!r} is not HTTP")
