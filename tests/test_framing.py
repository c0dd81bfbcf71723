"""The strict chunked decoder and the entry's framing checks (framing.py), without servers."""

from __future__ import annotations

import contextlib
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import FIXTURES
from wsgistack.framing import (
    MAX_CHUNK_LINE,
    BadFraming,
    chunk_reader,
    framing_error,
    parse_chunk_size,
    strict_framing,
)


def decode(raw: bytes) -> bytes:
    """The whole body of chunked `raw`; the stream must be left right after it."""
    stream = io.BufferedReader(io.BytesIO(raw + b"NEXT"))  # readline(limit), as a socket file
    read = chunk_reader(stream)
    body = b"".join(iter(read, b""))
    assert stream.read() == b"NEXT"  # the next request starts where the body ended
    return body


def test_a_plain_body_decodes():
    assert decode(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n") == b"hello world"


def test_sizes_may_have_leading_zeros_and_either_case():
    assert decode(b"000A\r\n0123456789\r\na\r\n0123456789\r\n0000\r\n\r\n") == b"0123456789" * 2


@pytest.mark.parametrize("size", [b"+5", b"-0", b" 5", b"5 ", b"0x5", b"1_0", b"5\t", b"",
                                  b"g", b"\xd9\xa5", b"\xb2", b"5 5", b"5\rhello"])
def test_a_size_that_is_not_bare_hex_digits_is_refused(size):
    with pytest.raises(BadFraming, match="chunk size is not bare hex digits"):
        decode(size + b"\r\nhello\r\n0\r\n\r\n")


def test_a_size_too_large_for_any_body_is_refused():
    with pytest.raises(BadFraming, match="chunk size too large"):
        parse_chunk_size(b"1" * 16 + b"\r\n")
    assert parse_chunk_size(b"0" * 40 + b"f\r\n") == 15


@pytest.mark.parametrize("line", [b"5;ext", b"5 ;ext", b"5\t; ext", b"5;a=b", b"5; a = b",
                                  b'5;a="x;y\\" z"', b"5;a;b=c", b"5;a=\"\""])
def test_extensions_with_their_syntax_are_read_and_ignored(line):
    assert decode(line + b"\r\nhello\r\n0\r\n\r\n") == b"hello"


@pytest.mark.parametrize("line", [b"5;", b"5;=x", b"5;a b", b"5;a=", b'5;a="open', b"5;a=b c",
                                  b"5;a=(x)", b'5;a="x"y', b"5;a@=b"])
def test_extensions_with_bad_syntax_are_refused(line):
    with pytest.raises(BadFraming, match="chunk extension"):
        decode(line + b"\r\nhello\r\n0\r\n\r\n")


@pytest.mark.parametrize("raw", [
    b"5\r\nhelloXX0\r\n\r\n",  # no CRLF after the data
    b"5\r\nhello\n0\r\n\r\n",  # a bare LF after the data
    b"5\r\nhelloo\r\n0\r\n\r\n",  # more data than the size said
])
def test_chunk_data_not_followed_by_crlf_is_refused(raw):
    with pytest.raises(BadFraming, match="chunk data not followed by CRLF"):
        decode(raw)


@pytest.mark.parametrize("raw", [b"5\nhello\r\n0\r\n\r\n", b"5", b"0\n\n"])
def test_a_size_line_not_ended_by_crlf_is_refused(raw):
    with pytest.raises(BadFraming, match="not ended by CRLF"):
        decode(raw)


def test_a_body_that_ends_inside_a_chunk_is_refused():
    with pytest.raises(BadFraming, match="body ended inside a chunk"):
        b"".join(iter(chunk_reader(io.BufferedReader(io.BytesIO(b"9\r\nhello"))), b""))


def test_oversize_lines_are_refused():
    ext = b"5;" + b"a" * MAX_CHUNK_LINE + b"\r\nhello\r\n0\r\n\r\n"
    with pytest.raises(BadFraming, match=f"chunk-size line over {MAX_CHUNK_LINE} bytes"):
        decode(ext)
    trailer = b"0\r\nX-Long: " + b"a" * MAX_CHUNK_LINE + b"\r\n\r\n"
    with pytest.raises(BadFraming, match=f"trailer line over {MAX_CHUNK_LINE} bytes"):
        decode(trailer)


def test_allowed_trailers_are_read_and_dropped():
    assert decode(b"2\r\nhi\r\n0\r\nX-Checksum: abc\r\nServer-Timing: x;dur=1\r\n\r\n") == b"hi"


@pytest.mark.parametrize("field", [b"Content-Length: 5", b"Transfer-Encoding: chunked",
                                   b"Host: evil", b"content-type: text/plain",
                                   b"Authorization: Basic eA==", b"TRAILER: x"])
def test_forbidden_trailer_fields_are_refused(field):
    with pytest.raises(BadFraming, match="is not allowed in trailers"):
        decode(b"2\r\nhi\r\n0\r\n" + field + b"\r\n\r\n")


@pytest.mark.parametrize("field", [b"No colon", b" X: folded", b"X : space", b"X\n: y",
                                   b": empty"])
def test_malformed_trailer_fields_are_refused(field):
    with pytest.raises(BadFraming, match="trailer"):
        decode(b"2\r\nhi\r\n0\r\n" + field + b"\r\n\r\n")


def test_too_many_trailer_fields_are_refused():
    with pytest.raises(BadFraming, match="more than 100 trailer fields"):
        decode(b"0\r\n" + b"X-A: b\r\n" * 101 + b"\r\n")


def test_after_an_error_the_stream_is_read_no_further():
    stream = io.BufferedReader(io.BytesIO(b"+5\r\nhello\r\n0\r\n\r\n"))
    read = chunk_reader(stream)
    with pytest.raises(BadFraming):
        read()
    assert read() == b""
    assert stream.read() == b"hello\r\n0\r\n\r\n"


_EXT = st.lists(st.tuples(st.from_regex(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,8}", fullmatch=True),
                          st.none() | st.from_regex(r"[A-Za-z0-9.-]{1,8}", fullmatch=True)
                          | st.from_regex(r'"[ !#-\[\]-~]{0,8}"', fullmatch=True)),
                max_size=3)


@st.composite
def chunked_bodies(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A valid chunked encoding of a body: any chunk sizes, hex in either case with leading
    zeros, extensions and allowed trailers."""
    pieces = draw(st.lists(st.binary(min_size=1, max_size=300), max_size=6))
    out = []
    for piece in [*pieces, b""]:
        size = format(len(piece), draw(st.sampled_from(["x", "X"])))
        size = "0" * draw(st.integers(0, 3)) + size
        ext = "".join(f";{n}" + (f"={v}" if v is not None else "") for n, v in draw(_EXT))
        out.append(f"{size}{ext}\r\n".encode() + piece + (b"\r\n" if piece else b""))
    trailers = draw(st.lists(st.from_regex(r"X-[A-Za-z]{1,6}: [ -~]{0,10}", fullmatch=True),
                             max_size=3))
    out.append("".join(t.rstrip() + "\r\n" for t in trailers).encode() + b"\r\n")
    return b"".join(out), b"".join(pieces)


@settings(max_examples=300, deadline=None)
@given(chunked_bodies())
def test_any_valid_chunked_body_round_trips(case):
    raw, body = case
    assert decode(raw) == body


# ---- the framing headers the server passed (the entry's check) ----------------------------

@pytest.mark.parametrize("environ", [
    {}, {"CONTENT_LENGTH": ""}, {"CONTENT_LENGTH": "0"}, {"CONTENT_LENGTH": "00012"},
    {"HTTP_TRANSFER_ENCODING": "chunked"}, {"HTTP_TRANSFER_ENCODING": "Chunked"},
    {"HTTP_TRANSFER_ENCODING": "chunked", "CONTENT_LENGTH": ""},
])
def test_good_framing_passes(environ):
    assert framing_error(environ) is None


@pytest.mark.parametrize(("environ", "status", "reason"), [
    ({"CONTENT_LENGTH": "+5"}, "400", "Content-Length is not one run of digits"),
    ({"CONTENT_LENGTH": "-1"}, "400", "not one run"),
    ({"CONTENT_LENGTH": " 5"}, "400", "not one run"),
    ({"CONTENT_LENGTH": "5, 5"}, "400", "not one run"),
    ({"CONTENT_LENGTH": "5,6"}, "400", "not one run"),
    ({"CONTENT_LENGTH": "0x5"}, "400", "not one run"),
    ({"CONTENT_LENGTH": "\u00b2"}, "400", "not one run"),
    ({"CONTENT_LENGTH": "\u0665"}, "400", "not one run"),
    ({"CONTENT_LENGTH": "5", "HTTP_TRANSFER_ENCODING": "chunked"}, "400",
     "both Transfer-Encoding and Content-Length"),
    ({"HTTP_TRANSFER_ENCODING": "gzip, chunked"}, "400", "only `chunked` alone"),
    ({"HTTP_TRANSFER_ENCODING": "chunked, chunked"}, "400", "only `chunked` alone"),
    ({"HTTP_TRANSFER_ENCODING": "chunked, gzip"}, "400", "only `chunked` alone"),
    ({"HTTP_TRANSFER_ENCODING": "identity"}, "400", "only `chunked` alone"),
    ({"HTTP_TRANSFER_ENCODING": ""}, "400", "an empty coding"),
    ({"HTTP_TRANSFER_ENCODING": "chunked,"}, "400", "an empty coding"),
    ({"HTTP_TRANSFER_ENCODING": "xchunked"}, "501", "unknown coding"),
    ({"HTTP_TRANSFER_ENCODING": "chunked;q=1"}, "501", "unknown coding"),
    ({"HTTP_TRANSFER_ENCODING": "\x0bchunked"}, "501", "unknown coding"),
])
def test_broken_framing_is_refused(environ, status, reason):
    error = framing_error(environ)
    assert error is not None and error.status.startswith(status)
    with pytest.raises(BadFraming, match=reason):
        raise error


def _call(app, environ):
    seen = []
    body = b"".join(app(environ, lambda s, h, *e: seen.append((s, dict(h)))))
    return seen[-1], body


def test_strict_framing_answers_before_the_app_and_closes():
    called = []
    app = strict_framing(lambda e, s: called.append(e) or s("200 OK", []) or [b"ok"])
    (status, headers), body = _call(app, {"CONTENT_LENGTH": "1", "SERVER_PROTOCOL": "HTTP/1.1",
                                          "HTTP_TRANSFER_ENCODING": "chunked"})
    assert status == "400 Bad Request" and headers["Connection"] == "close"
    assert body == b"bad request framing: both Transfer-Encoding and Content-Length\n"
    assert not called
    (status, _), _ = _call(app, {"CONTENT_LENGTH": "3", "SERVER_PROTOCOL": "HTTP/1.1"})
    assert status == "200 OK" and called


def test_strict_framing_answers_a_body_found_broken_as_the_app_reads_it():
    def reads(environ, start_response):
        environ["wsgi.input"].read()
        start_response("200 OK", [])
        return [b"read"]

    environ = {"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input": _Reader(b"0x5\r\n"),
               "SERVER_PROTOCOL": "HTTP/1.1"}
    (status, headers), body = _call(strict_framing(reads), environ)
    assert status == "400 Bad Request" and headers["Connection"] == "close"
    assert body == b"bad request framing: chunk size is not bare hex digits\n"


def test_a_chunked_body_the_server_cannot_decode_is_a_400_not_the_apps_500():
    class ServerInput:  # as gunicorn's, raising its InvalidChunkSize
        def read(self, size: int = -1) -> bytes:
            raise ValueError("Invalid chunk size: '+5'")

    def reads(environ, start_response):
        try:
            environ["wsgi.input"].read()
        except ValueError:  # an app's own handling of a bad body does not see it
            start_response("500 Internal Server Error", [])
            return [b"app"]
        start_response("200 OK", [])
        return [b"read"]

    environ = {"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input": ServerInput(),
               "SERVER_PROTOCOL": "HTTP/1.1"}
    (status, headers), body = _call(strict_framing(reads), environ)
    assert status == "400 Bad Request" and headers["Connection"] == "close"
    assert body == b"bad request framing: chunked body: ValueError: Invalid chunk size: '+5'\n"


@pytest.mark.parametrize(("version", "status"), [
    ("HTTP/111", "505 HTTP Version Not Supported"), ("HTTP/3.0", "505 HTTP Version Not Supported"),
    ("HTTP/2.0", "505 HTTP Version Not Supported"),
    ("FTP/1.1", "400 Bad Request"), ("http/1.1", "400 Bad Request"), ("", "400 Bad Request")])
def test_an_unknown_protocol_version_is_refused(version, status):
    app = strict_framing(lambda e, s: s("200 OK", []) or [b"ok"])
    (seen, _), _ = _call(app, {"SERVER_PROTOCOL": version})
    assert seen == status
    (seen, _), _ = _call(app, {"SERVER_PROTOCOL": "HTTP/1.0"})
    assert seen == "200 OK"


def test_an_empty_content_length_is_refused_only_where_servers_set_none():
    app = strict_framing(lambda e, s: s("200 OK", []) or [b"ok"])
    (status, _), body = _call(app, {"CONTENT_LENGTH": "", "SERVER_PROTOCOL": "HTTP/1.1"})
    assert (status, body) == ("400 Bad Request",
                              b"bad request framing: Content-Length is not one run of digits\n")
    assert framing_error({"CONTENT_LENGTH": ""}) is None  # wsgiref's, on every request
    both = {"CONTENT_LENGTH": "", "HTTP_TRANSFER_ENCODING": "chunked"}
    assert framing_error(both) is None
    assert str(framing_error(both, empty_length=False)) == (
        "both Transfer-Encoding and Content-Length")


def test_without_the_environ_check_only_the_decoder_refuses():
    app = strict_framing(lambda e, s: s("200 OK", []) or [b"ok"], check_environ=False)
    (status, _), _ = _call(app, {"CONTENT_LENGTH": "5", "HTTP_TRANSFER_ENCODING": "chunked"})
    assert status == "200 OK"


class _Reader:
    def __init__(self, raw: bytes) -> None:
        from wsgistack.layers.common import _ChunkedInput

        self._input = _ChunkedInput(chunk_reader(io.BufferedReader(io.BytesIO(raw))))

    def read(self, size: int = -1) -> bytes:
        return self._input.read(size)


# ---- the entry run as a command, under wsgiref (no granian): our decoder on the wire -----

def raw_exchange(port: int, request: bytes, timeout: float = 5.0) -> bytes:
    """Send `request` as it is, and read until the server closes (or `timeout`)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        out = b""
        with contextlib.suppress(OSError):
            while piece := sock.recv(65536):
                out += piece
    return out


@pytest.mark.live
@pytest.mark.parametrize(("body", "headers", "status"), [
    (b"+5\r\nhello\r\n0\r\n\r\n", b"Transfer-Encoding: chunked\r\n", b"400"),
    # A value neither token nor quoted-string: was a 500, as the entry's log quoting shadowed
    # the decoder's quoted-string check.
    (b"5;a=@@\r\nhello\r\n0\r\n\r\n", b"Transfer-Encoding: chunked\r\n", b"400"),
    (b"5\r\nhelloXX0\r\n\r\n", b"Transfer-Encoding: chunked\r\n", b"400"),
    (b"5\r\nhello\r\n0\r\nHost: x\r\n\r\n", b"Transfer-Encoding: chunked\r\n", b"400"),
    (b"5\r\nhello\r\n0\r\n\r\n", b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", b"400"),
    (b"5\r\nhello\r\n0\r\n\r\n", b"Transfer-Encoding: gzip, chunked\r\n", b"400"),
    (b"5\r\nhello\r\n0\r\n\r\n", b"Transfer-Encoding: xchunked\r\n", b"501"),
    (b"hello", b"Content-Length: 5\r\nContent-Length: 4\r\n", b"400"),
    (b"hello", b"Content-Length: +5\r\n", b"400"),
])
def test_the_entry_as_a_command_refuses_broken_framing(tmp_path, body, headers, status):
    from tests.test_entry import serving, write_entry

    out = write_entry(tmp_path, "readall:application", "--python-path", str(FIXTURES))
    with serving(out, isolated=True) as port:
        answer = raw_exchange(port, b"POST / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n" + body
                              + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.0 " + status), answer
        assert answer.count(b"HTTP/1.") == 1  # closed: the request after it was not read
        good = raw_exchange(port, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
                            b"\r\nConnection: close\r\n\r\n5;a=b\r\nhello\r\n0\r\n\r\n")
        assert good.startswith(b"HTTP/1.0 200") and b'"length": 5' in good, good


def test_a_body_uwsgi_cannot_de_chunk_is_refused_not_failed():
    from wsgistack.layers.common import RequestRefused
    from wsgistack.layers.quirks import _uwsgi_chunks

    def chunked_read() -> bytes:  # as uwsgi.chunked_read on `5;ext` or `0x5`
        raise OSError("unable to receive chunked part")

    with pytest.raises(RequestRefused, match="chunked body: uWSGI unable to receive") as got:
        _uwsgi_chunks(chunked_read)()
    assert got.value.status == "400 Bad Request"
    assert _uwsgi_chunks(lambda: b"piece")() == b"piece"
