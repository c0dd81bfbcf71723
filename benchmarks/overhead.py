"""What the entry's layers (uniform errors, mount, body limit, request watchdog, server
quirks, strict framing) cost per request, in-process:
a figure without the network's noise, to set beside the A/B ratio."""

from __future__ import annotations

import timeit
from typing import Any

from wsgistack.apps.hello import application as hello
from wsgistack.framing import strict_framing
from wsgistack.loader import limit_body, mount, server_quirks, uniform_errors, watch_requests

ENVIRON = {  # what granian passes for `GET /hello/`
    "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": "/hello/", "QUERY_STRING": "",
    "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8782", "SERVER_PROTOCOL": "HTTP/1.1",
    "HTTP_HOST": "127.0.0.1:8782", "wsgi.url_scheme": "http", "wsgi.input": None,
    "wsgi.errors": None, "wsgi.version": (1, 0), "wsgi.multithread": False,
    "wsgi.multiprocess": True, "wsgi.run_once": False,
}


def _start_response(status: str, headers: list[tuple[str, str]], *exc: Any) -> None:
    return None


def per_call_ns(app: Any, number: int) -> float:
    def call() -> None:
        result = app(dict(ENVIRON), _start_response)
        for _ in result:
            pass
        if hasattr(result, "close"):
            result.close()
    return min(timeit.repeat(call, number=number, repeat=5)) / number * 1e9


def measure(number: int = 200_000) -> tuple[float, float]:
    """(bare app, app inside the entry's layers), nanoseconds per request."""
    # As the entry stacks them (entry.py), with the default limits and timeout.
    inner = mount(uniform_errors(hello), "/hello")
    wrapped = strict_framing(server_quirks(watch_requests(limit_body(inner, 100 * 1024 * 1024),
                                                          60), ("10.0.0.0/8",)))
    return per_call_ns(hello, number), per_call_ns(wrapped, number)


if __name__ == "__main__":
    bare, layered = measure()
    print(f"bare {bare:.0f} ns, in the entry {layered:.0f} ns, +{layered - bare:.0f} ns")
