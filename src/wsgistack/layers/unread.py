"""What the app left unread of a body, read after its answer (uWSGI behind a front end)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wsgistack.layers.common import _AfterClose, _discard
from wsgistack.loader import WSGIApp


# ---- copied into entries from here ----
def read_unread(app: WSGIApp) -> WSGIApp:
    """After the answer, read what the app left unread of a body with a length (it answered
    401 or 403 first): the front end is still sending it to uWSGI, whose closing on it made
    the answer a 502 (nginx) or a 503 (Apache)."""
    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        stream = environ.get("wsgi.input")
        if stream is None or environ.get("CONTENT_LENGTH") in (None, "", "0"):
            return app(environ, start_response)
        return _AfterClose(app(environ, start_response), lambda: _discard(stream, -1))

    return wrapped
