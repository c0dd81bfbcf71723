"""What several layers share: the request's refusals and the answers the entry makes itself."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# ---- copied into entries from here ----
DRAIN_PIECES = 4096  # 256 MiB at most of a refused body read to its end


class _AfterClose:
    """The app's result, with something done once the server has closed it (the request's
    end, as servers count it)."""

    def __init__(self, result: Any, then: Callable[[], object], body: Any = None) -> None:
        self._result = result
        self._then = then
        self._body = result if body is None else body  # what is sent: the result, or a view

    def __iter__(self) -> Any:
        return iter(self._body)

    def close(self) -> None:
        try:
            if hasattr(self._result, "close"):
                self._result.close()
        finally:
            self._then()


class BodyTooLarge(Exception):
    """A body of unknown length (chunked) went past the limit as the app read it."""


class RequestRefused(Exception):
    """Raised as the app reads a request that must be refused (framing.BadFraming, a body
    uWSGI could not de-chunk): framing.strict_framing answers `status` and closes, not
    uniform_errors with a 500."""

    def __init__(self, reason: str, status: str = "400 Bad Request") -> None:
        super().__init__(reason)
        self.status = status


def _discard(stream: Any, length: int) -> None:
    """Read a refused body to its end (`length`, or -1: unknown), up to DRAIN_PIECES pieces:
    a client that sends on and on is cut off."""
    for _ in range(DRAIN_PIECES):
        piece = stream.read(65536 if length < 0 else min(65536, length))
        length -= len(piece)
        if not piece or length == 0:
            break


def _too_large(start_response: Callable[..., Any], max_body: int,
               close: bool = False) -> list[bytes]:
    return _plain(start_response, "413 Request Entity Too Large",
                  f"request body over the limit of {max_body} bytes", close=close)


def _plain(start_response: Callable[..., Any], status: str, text: str,
           close: bool = False, newline: bool = True) -> list[bytes]:
    # A length lets keep-alive clients see where the answer ends.
    body = (text + ("\n" if newline else "")).encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
                            *([("Connection", "close")] if close else [])])
    return [body]


class _ChunkedInput:
    """wsgi.input over a source of body pieces that returns b"" at the end: uWSGI's
    chunked-input API, which its HTTP sockets need for chunked bodies (their plain
    wsgi.input sees nothing), or a decoder of HTTP/1.1 chunks (standalone.py)."""

    def __init__(self, next_piece: Callable[[], bytes]) -> None:
        self._next = next_piece
        self._buffer = b""
        self._done = False

    def _fill(self, size: int) -> None:
        while not self._done and (size < 0 or len(self._buffer) < size):
            chunk = self._next()
            if not chunk:
                self._done = True
            self._buffer += chunk

    def read(self, size: int | None = -1) -> bytes:
        self._fill(size if size is not None else -1)
        if size is None or size < 0:
            size = len(self._buffer)
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def readline(self, size: int = -1) -> bytes:
        while b"\n" not in self._buffer and not self._done:
            self._fill(len(self._buffer) + 1)
        end = self._buffer.find(b"\n") + 1 or len(self._buffer)
        if size is not None and 0 <= size < end:
            end = size
        data, self._buffer = self._buffer[:end], self._buffer[end:]
        return data

    def readlines(self, hint: int = -1) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self) -> Any:
        return iter(self.readline, b"")
