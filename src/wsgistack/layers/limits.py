"""A body over the service's `max_body`: 413, for servers with no limit of their own."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from wsgistack.layers.common import BodyTooLarge, _discard, _too_large
from wsgistack.loader import WSGIApp


# ---- copied into entries from here ----
class _CountedInput:
    """wsgi.input that stops a body of unknown length at the limit: read in pieces, so a
    read() of everything never holds more than the limit and a piece."""

    def __init__(self, stream: Any, limit: int) -> None:
        self._stream = stream
        self._limit = limit
        self._seen = 0

    def _count(self, data: bytes) -> bytes:
        self._seen += len(data)
        if self._seen > self._limit:
            raise BodyTooLarge(self._limit)
        return data

    def read(self, size: int | None = -1) -> bytes:
        if size is not None and size >= 0:
            return self._count(self._stream.read(size))
        pieces = []
        while piece := self._count(self._stream.read(65536)):
            pieces.append(piece)
        return b"".join(pieces)

    def readline(self, size: int = -1) -> bytes:
        return self._count(self._stream.readline(size))

    def readlines(self, hint: int = -1) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self) -> Any:
        return iter(self.readline, b"")


def limit_body(app: WSGIApp, max_body: int, drain: bool = False) -> WSGIApp:
    """Answer 413 to a body over `max_body` bytes, for servers with no limit of their own
    (gunicorn, granian, uWSGI alone): a declared length at once, a chunked body when the app
    reads past the limit (unless it has answered already)."""
    if max_body <= 0:
        return app

    def limited(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        length = environ.get("CONTENT_LENGTH") or ""
        stream = environ.get("wsgi.input")
        if length.isdigit():
            if int(length) > max_body:
                if drain and stream is not None:
                    _discard(stream, int(length))
                return _too_large(start_response, max_body, close=drain)
            return app(environ, start_response)
        if stream is None:
            return app(environ, start_response)
        environ["wsgi.input"] = _CountedInput(stream, max_body)
        try:
            return app(environ, start_response)
        except BodyTooLarge:
            if drain:
                _discard(stream, -1)
            # The rest of the body is unread: the connection cannot carry another request.
            return _too_large(lambda s, h: start_response(s, h, sys.exc_info()), max_body,
                              close=True)

    return limited
