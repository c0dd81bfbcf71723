"""What the entry's layers cost per request, in-process: each layer alone around the hello
app, and all of them as entry.py stacks them. Figures without the network's noise, to set
beside the A/B ratios."""

from __future__ import annotations

import tempfile
import timeit
from collections.abc import Callable
from typing import Any

from wsgistack.apps.hello import application as hello
from wsgistack.framing import strict_framing
from wsgistack.layers.failures import uniform_errors
from wsgistack.layers.limits import limit_body
from wsgistack.layers.mount import mount
from wsgistack.layers.quirks import server_quirks
from wsgistack.layers.watchdog import watch_requests
from wsgistack.observe import observe

ENVIRON = {  # what granian passes for `GET /hello/`
    "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": "/hello/", "QUERY_STRING": "",
    "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8782", "SERVER_PROTOCOL": "HTTP/1.1",
    "HTTP_HOST": "127.0.0.1:8782", "REMOTE_ADDR": "127.0.0.1", "HTTP_USER_AGENT": "wrk",
    "wsgi.url_scheme": "http", "wsgi.input": None, "wsgi.errors": None,
    "wsgi.version": (1, 0), "wsgi.multithread": False, "wsgi.multiprocess": True,
    "wsgi.run_once": False,
}
TRUSTED = ("10.0.0.0/8",)
Layer = Callable[[Any], Any]


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


def _layers(tmp: str) -> list[tuple[str, Layer]]:
    """Each layer as the entry makes it for a default service (granian: the entry checks
    headers and framing, and watches the timeout)."""
    log, metrics = f"{tmp}/access.log", f"{tmp}/metrics"
    return [
        ("uniform errors", uniform_errors),
        ("prefix mount", lambda app: mount(app, "/hello")),
        ("body limit", lambda app: limit_body(app, 100 * 1024 * 1024)),
        ("request timeout watchdog", lambda app: watch_requests(app, 60)),
        ("request id, access log and metrics off", lambda app: observe(app, "hello", "")),
        ("access log", lambda app: observe(app, "hello", log)),
        ("metrics", lambda app: observe(app, "hello", "", metrics_dir=metrics)),
        ("server quirks (trusted proxies, header limits)",
         lambda app: server_quirks(app, TRUSTED, check_headers=True)),
        ("strict framing", strict_framing),
    ]


def measure(number: int = 100_000) -> list[tuple[str, float]]:
    """(what, ns a request): the bare app, each layer's cost alone, and the whole entry as
    entry.py stacks it with the access log and metrics on, then off."""
    import os

    with tempfile.TemporaryDirectory(prefix="wsgistack-layers-") as tmp:
        os.mkdir(f"{tmp}/metrics")
        layers = dict(_layers(tmp))
        bare = per_call_ns(hello, number)
        rows = [("the hello app alone", bare)]
        rows += [(name, per_call_ns(layer(hello), number) - bare)
                 for name, layer in layers.items()]

        def entry(observing: Layer) -> Any:
            inner = mount(uniform_errors(hello), "/hello")
            limited = watch_requests(limit_body(inner, 100 * 1024 * 1024), 60)
            return strict_framing(server_quirks(observing(limited), TRUSTED, True))

        both = lambda app: observe(app, "hello", f"{tmp}/entry.log",  # noqa: E731
                                   metrics_dir=f"{tmp}/metrics")
        rows.append(("the whole entry, access log and metrics on",
                     per_call_ns(entry(both), number) - bare))
        rows.append(("the whole entry, access log and metrics off",
                     per_call_ns(entry(layers["request id, access log and metrics off"]),
                                 number) - bare))
    return rows


if __name__ == "__main__":
    for what, ns in measure():
        print(f"{what}: {ns:.0f} ns")
