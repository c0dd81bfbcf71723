"""Hello world: the smallest WSGI app, for measuring a server's own overhead."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

_BODY = b"Hello, world!\n"


def application(
    environ: dict[str, Any], start_response: Callable[..., Any]
) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(_BODY)))])
    return [_BODY]
