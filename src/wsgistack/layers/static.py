"""Static paths kept from the app (a service's `static`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from wsgistack.layers.common import _plain
from wsgistack.loader import SpecError, WSGIApp


# ---- copied into entries from here ----
def serve_static(app: WSGIApp, static: Sequence[tuple[str, str]], whitenoise: bool) -> WSGIApp:
    """Static paths (URL path under the prefix, directory) kept from the app: a server in
    front serves what exists (granian's mount, uWSGI's static-map) and passes on only what
    does not, a 404 here; or, where no server serves them (gunicorn), WhiteNoise from the
    service's venv does."""
    def not_found(_environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        return _plain(start_response, "404 Not Found", "no such file")

    files: WSGIApp = not_found
    if whitenoise:
        try:
            from whitenoise import WhiteNoise  # type: ignore[import-untyped,unused-ignore]
        except ImportError:
            raise SpecError("static files need WhiteNoise under this server: pip install "
                            "whitenoise into the service's venv") from None
        files = WhiteNoise(not_found)
        for path, directory in static:
            files.add_files(directory, prefix=path.strip("/") + "/")  # type: ignore[attr-defined]
    paths = tuple(path + "/" for path, _ in static)

    def static_first(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO", "").startswith(paths):
            return files(environ, start_response)
        return app(environ, start_response)

    return static_first
