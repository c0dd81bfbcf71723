"""A request past the service's `timeout`: its stack logged, its client answered 504."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from typing import Any

from wsgistack.layers.common import _AfterClose
from wsgistack.loader import WSGIApp


# ---- copied into entries from here ----
class _Watchdog:
    """Requests in flight in this process; one that runs past `timeout` has its thread's
    Python stack written to the service's log, so that where it hangs is known; its client
    is answered 504 where the server lets the entry reach the connection (uWSGI, gunicorn)
    and the app has not begun its own answer; and, where the server has no request timeout
    of its own (granian, gunicorn's gthread), the process then ends: its server replaces it,
    and the worker is free again. Per request it costs a dict entry: nothing is formatted
    until a request overruns."""

    def __init__(self, timeout: float, end_process: bool) -> None:
        import threading

        self.timeout = timeout
        self.end_process = end_process
        # thread -> [started, environ, connection (uWSGI fd, gunicorn socket), begun]
        self.inflight: dict[int, list[Any]] = {}
        self.running = False  # this process's watchdog thread (workers fork after import)
        self.lock = threading.Lock()
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        self.running = False
        self.inflight.clear()

    def start(self) -> None:
        import signal
        import threading

        with self.lock:
            if not self.running:
                self.running = True
                # Born with every signal blocked: a signal for the process (uWSGI's SIGHUP
                # to a worker) must reach the server's own thread, not this one, or the
                # worker sleeps on in accept(), drops the next connection, and its reload
                # waits out the mercy.
                old = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
                try:
                    threading.Thread(target=self._watch, name="wsgistack-watchdog",
                                     daemon=True).start()
                finally:
                    signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def _watch(self) -> None:
        import time

        reported: set[tuple[int, float]] = set()
        while True:
            time.sleep(0.2)
            now = time.monotonic()
            for ident, (started, environ, conn, begun) in list(self.inflight.items()):
                if now - started >= self.timeout and (ident, started) not in reported:
                    reported.add((ident, started))
                    self._overrun(ident, environ, conn, begun)

    def _overrun(self, ident: int, environ: dict[str, Any], conn: Any, begun: bool) -> None:
        import traceback

        frame = sys._current_frames().get(ident)
        stack = "".join(traceback.format_stack(frame)) if frame else "(gone)\n"
        what = f"{environ.get('REQUEST_METHOD', '')} {environ.get('SCRIPT_NAME', '')}" \
               f"{environ.get('PATH_INFO', '')}"
        sys.stderr.write(f"wsgistack: request {what} still running after {self.timeout:g}s "
                         f"(timeout); where it is:\n{stack}")
        sys.stderr.flush()
        if conn is not None and not begun:
            with contextlib.suppress(OSError):
                _answer(conn, TIMEOUT_ANSWER)
        if self.end_process:
            sys.stderr.write("wsgistack: ending this worker; the server starts another\n")
            sys.stderr.flush()
            os._exit(70)


TIMEOUT_ANSWER = (b"HTTP/1.1 504 Gateway Timeout\r\nContent-Type: text/plain\r\n"
                  b"Content-Length: 31\r\nConnection: close\r\n\r\n"
                  b"the request ran past its limit\n")


def _answer(conn: Any, data: bytes) -> None:
    """Answer a stuck request's client directly, and end the connection: the worker is
    stuck, so nobody else will."""
    import socket

    if isinstance(conn, int):  # uWSGI's fd, shared with uWSGI: a duplicate is closed
        with socket.fromfd(conn, socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_RDWR)
    else:
        conn.sendall(data)
        conn.shutdown(socket.SHUT_RDWR)


def watch_requests(app: WSGIApp, timeout: float, end_process: bool = False) -> WSGIApp:
    """Report, answer (and with `end_process`, end) a request that runs past `timeout`
    seconds; a request runs until its response is closed, as the servers count it."""
    if timeout <= 0:
        return app
    import threading
    import time

    dog = _Watchdog(timeout, end_process)
    inflight, ident_of, clock = dog.inflight, threading.get_ident, time.monotonic
    uwsgi = None

    def watched(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        nonlocal uwsgi
        if not dog.running:
            dog.start()
        if uwsgi is None and "uwsgi.version" in environ:
            import uwsgi as module  # only importable under uWSGI

            uwsgi = module
        conn = uwsgi.connection_fd() if uwsgi is not None else environ.get("gunicorn.socket")
        ident = ident_of()
        entry = inflight[ident] = [clock(), environ, conn, False]

        def start(*args: Any) -> Any:
            entry[3] = True
            return start_response(*args)

        try:
            result = app(environ, start)
        except BaseException:
            inflight.pop(ident, None)
            raise
        if type(result) is list:
            # The whole answer is made: nothing of the app's is left to overrun. A list, not
            # a wrapper, also keeps granian on its fast path (one write, not an iteration
            # from Rust: 0.73 of granian by hand with it, in the benchmark).
            inflight.pop(ident, None)
            return result
        return _AfterClose(result, lambda: inflight.pop(ident, None))

    return watched
