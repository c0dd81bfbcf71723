"""An exception that escapes the app: the same short 500 under every server."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable
from typing import Any

from wsgistack.layers.common import BodyTooLarge, RequestRefused, _AfterClose
from wsgistack.loader import WSGIApp

# ---- copied into entries from here ----
APP_FAILED = b"500 Internal Server Error: the app failed; the service's log has why\n"


def uniform_errors(app: WSGIApp) -> WSGIApp:
    """An exception that escapes the app: the same short 500 on every server, its traceback
    in the service's log (wsgi.errors). Servers disagreed: an HTML page (Apache), a 502 as
    uWSGI closed (nginx), an empty 500 (granian). Once part of the body is out, nothing can
    be said any more: the exception goes on, and the server ends the connection."""

    def failed(environ: dict[str, Any], start_response: Callable[..., Any],
               started: bool) -> list[bytes]:
        import traceback

        errors = environ.get("wsgi.errors") or sys.stderr
        errors.write(f"wsgistack: {environ.get('REQUEST_METHOD', '')} "
                     f"{environ.get('PATH_INFO', '')}: the app raised\n")
        errors.write(traceback.format_exc())
        errors.flush()
        # exc_info says "replace what the app started"; uWSGI, given it, returns with the
        # exception still set (a SystemError), and replaces the headers without it.
        replace = (sys.exc_info(),) if started and "uwsgi.version" not in environ else ()
        start_response("500 Internal Server Error", [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(APP_FAILED)))], *replace)
        return [APP_FAILED]

    def call(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        started: list[bool] = []

        def start(*args: Any) -> Any:
            started.append(True)
            return start_response(*args)

        result: Any = None
        try:
            result = app(environ, start)
            if isinstance(result, (list, tuple)) or hasattr(result, "filelike"):
                return result  # nothing left to fail, or a file for the server to send
            # Up to the first piece of body, here: some servers (granian) send the headers
            # as soon as they start iterating, and a failure then could say nothing.
            pieces, first = iter(result), []
            for piece in pieces:
                first.append(piece)
                if piece:
                    break
        except (BodyTooLarge, RequestRefused):  # limit_body's 413, strict_framing's 400
            raise
        except Exception:
            if hasattr(result, "close"):
                result.close()
            return failed(environ, start_response, bool(started))
        return _AfterClose(result, lambda: None, itertools.chain(first, pieces))

    return call
