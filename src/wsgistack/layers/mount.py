"""The app under its prefix, for servers that set no SCRIPT_NAME."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wsgistack.layers.common import _plain
from wsgistack.loader import WSGIApp

# ---- copied into entries from here ----
# The body of the 404 for a path outside every prefix, the same from every backend (Apache's
# ErrorDocument and nginx's `return` send it as it is).
NOT_FOUND = "not found"


def mount(app: WSGIApp, prefix: str) -> WSGIApp:
    """Serve `app` under `prefix` for servers that pass the full path and no SCRIPT_NAME.

    The prefix comes from our configuration, never from a request header.
    """
    prefix = prefix.rstrip("/")
    if not prefix:
        return app

    def mounted(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("SCRIPT_NAME", "").rstrip("/") == prefix:  # the server split it
            return app(environ, start_response)
        path = environ.get("PATH_INFO", "")
        if path == prefix or path.startswith(prefix + "/"):
            environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
            environ["PATH_INFO"] = path[len(prefix):]
            return app(environ, start_response)
        return _plain(start_response, "404 Not Found", NOT_FOUND, newline=False)

    return mounted
