"""A chunked body read whole and given a length before the app."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wsgistack.layers.common import _AfterClose, _too_large
from wsgistack.loader import WSGIApp

# ---- copied into entries from here ----
SPOOL_IN_MEMORY = 1 << 20  # a chunked body past this goes to a temporary file


def spool_chunked(app: WSGIApp, max_body: int) -> WSGIApp:
    """Read a chunked body whole before the app, and hand it on with a CONTENT_LENGTH, as
    Apache's proxy and nginx do: most apps read by the length alone (Django reads nothing
    without one). Not for `upload` services, whose bodies stream (wsgi.input_terminated)."""
    import tempfile

    def spooled(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("CONTENT_LENGTH") or "chunked" not in environ.get(
                "HTTP_TRANSFER_ENCODING", "").lower():
            return app(environ, start_response)
        body = tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY)  # noqa: SIM115 (closed below)
        stream, size = environ["wsgi.input"], 0
        while piece := stream.read(65536):
            size += len(piece)
            if max_body and size > max_body:
                body.close()
                return _too_large(start_response, max_body, close=True)
            body.write(piece)
        body.seek(0)
        environ.update({"wsgi.input": body, "CONTENT_LENGTH": str(size)})
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        environ.pop("wsgi.input_terminated", None)
        return _AfterClose(app(environ, start_response), body.close)

    return spooled
