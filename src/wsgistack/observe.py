"""Seeing each request, the same under every server: a request id and an access line.

The entry puts this layer inside `server_quirks` (which says whether the peer is a trusted
proxy) and around everything else, so a request the entry answers itself (a 404 outside the
prefix, a 413) is logged like one the app answers. One code path writes the line on all six
backends, so the same request gives the same line everywhere.

Standard library only: `wsgistack entry` copies what follows the marker into entry files.
"""

from __future__ import annotations

import atexit
import bisect
import collections
import contextlib
import json
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

# ---- copied into entries from here ----
HEALTH_AGENT = "wsgistack-health"  # the User-Agent of wsgistack's own health checks
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# A system call costs microseconds on a virtual machine: the pid is kept, not asked for at
# every request (pre-fork servers fork after this module is loaded).
_PID = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _PID.__setitem__(0, os.getpid()))
_STARTING = [threading.Lock()]  # a writer starts once per process (a new lock in a child)
os.register_at_fork(after_in_child=lambda: _STARTING.__setitem__(0, threading.Lock()))


class AccessLog:
    """Lines appended to one file by every worker, reopened when the file was rotated; `-`
    is standard output (a container's log).

    A request only appends its line to a queue; a thread of the worker's own writes what is
    queued every FLUSH seconds in one write (O_APPEND: whole lines, never interleaved), and
    at exit (nginx's `access_log ... buffer= flush=`). A write(2) per request cost more than
    the rest of the entry here, and under granian, whose request threads hand the GIL back
    and forth with its Rust side, it halved the requests a second."""

    FLUSH = 0.1  # seconds: how late a line may reach the file (and `logs -f`)

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = -1
        self._inode = 0
        self._pid = 0  # the process whose writer runs (a forked worker starts its own)
        self._pending: collections.deque[str] = collections.deque()
        self._lock = threading.Lock()

    def write(self, line: str) -> None:
        if self._pid != _PID[0]:
            self._start()
        self._pending.append(line)

    def _start(self) -> None:
        with _STARTING[0]:
            if self._pid == _PID[0]:
                return
            if self._pid:  # forked: what is queued is the parent's to write
                self._pending.clear()
                self._fd = -1
            self._lock = threading.Lock()
            self._pid = _PID[0]
            written_by_a_thread(self.flush, self.FLUSH, f"access log {self.path}")

    def flush(self) -> None:
        with self._lock:
            lines = []
            with contextlib.suppress(IndexError):
                while True:
                    lines.append(self._pending.popleft())
            if not lines:
                return
            data = "".join(lines).encode("utf-8", "backslashreplace")
            if self.path == "-":
                sys.stdout.buffer.write(data)
                sys.stdout.flush()
                return
            self._reopen_if_rotated()
            try:
                os.write(self._fd, data)
            except OSError:
                self._fd = -1  # rotated away under us: the next flush reopens

    def _reopen_if_rotated(self) -> None:
        try:
            inode = os.stat(self.path).st_ino
        except OSError:
            inode = -1
        if self._fd >= 0 and inode == self._inode:
            return
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._inode = os.fstat(self._fd).st_ino


def written_by_a_thread(flush: Callable[[], object], every: float, what: str) -> None:
    """`flush` every `every` seconds by a thread of this process, and when the worker ends:
    at the interpreter's exit, and where a worker ends without one (a multiprocessing child,
    as granian's are, leaves by os._exit after threading's shutdown hooks)."""
    def loop() -> None:
        while True:
            time.sleep(every)
            try:
                flush()
            except Exception as exc:  # seeing must never end the worker
                sys.stderr.write(f"wsgistack: {what}: {exc}\n")

    atexit.register(flush)
    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        with contextlib.suppress(RuntimeError):  # already shutting down
            register(flush)
    threading.Thread(target=loop, name="wsgistack-" + what.split()[0], daemon=True).start()


def _errors_to(path: str) -> TextIO:
    """The app's stderr (and wsgi.errors) in its service's own log, where the server would
    send them to its own (mod_wsgi: Apache's error log)."""
    try:
        return open(path, "a", buffering=1, encoding="utf-8", errors="backslashreplace")
    except OSError:  # not made yet (a rendered tree): where the server would send it
        return sys.stderr


def client_address(environ: dict[str, Any], trusted: Callable[[str], bool]) -> str:
    """The client: the peer, or behind trusted proxies the last X-Forwarded-For hop that is
    not one of them (what Apache's mod_remoteip and nginx's realip take)."""
    peer = environ.get("REMOTE_ADDR") or "-"
    if not environ.get("wsgistack.trusted_peer"):
        return peer
    for hop in reversed(str(environ.get("HTTP_X_FORWARDED_FOR", "")).split(",")):
        hop = hop.strip()
        if hop and not trusted(hop):
            return hop
    return peer


_CLF_SECOND: list[Any] = [None, ""]  # the last second formatted, and its text


def _clf_time(now: float) -> str:
    second = int(now)
    if _CLF_SECOND[0] != second:
        t = time.gmtime(second)
        _CLF_SECOND[:] = [second, f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
                                  f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"]
    return str(_CLF_SECOND[1])


def new_request_id() -> str:
    """128 random bits as hex. Not a secret (it is sent back and logged): Python's own
    generator, reseeded in every forked worker, spares a system call per request."""
    return f"{random.getrandbits(128):032x}"


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"') if value else "-"


def line(fields: dict[str, Any], fmt: str) -> str:
    """Apache's combined format with the duration (µs), the request id, the app's own
    request id (x-openstack-request-id) and the service appended; or one JSON object."""
    if fmt == "json":
        return json.dumps(fields, separators=(",", ":")) + "\n"
    request = f"{fields['method']} {fields['path']} {fields['protocol']}"
    return (f"{fields['client']} - - [{_clf_time(fields['time'])}] \"{_quoted(request)}\" "
            f"{fields['status']} {fields['bytes'] or '-'} \"{_quoted(fields['referer'])}\" "
            f"\"{_quoted(fields['user_agent'])}\" {fields['duration_us']} "
            f"{fields['request_id']} {fields['app_request_id'] or '-'} {fields['service']}\n")


class _Counted:
    """The app's answer, counted as it is sent; the line is written when it is closed (the
    server has sent it all, or the client went away)."""

    def __init__(self, result: Iterable[bytes], done: Callable[[int], None]) -> None:
        self._result = result
        self._done = done
        self._sent = 0

    def __iter__(self) -> Iterator[bytes]:
        for piece in self._result:
            self._sent += len(piece)
            yield piece

    def close(self) -> None:
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            self._done(self._sent)


_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
# An API's answers: from 5 ms to a minute. Bodies: from 100 B to 1 GiB.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SIZE_BUCKETS = (100, 1000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000, 1 << 30)


class Metrics:
    """The service's request metrics, in prometheus_client's multiprocess files under
    `directory`: every worker of every server writes its own, the stack's exporter adds
    them up. Imported only when metrics are on: the app's interpreter must have
    prometheus_client (wsgistack adds it to the service's venv).

    A request only appends what it saw to a list; a thread of the worker's own moves that
    into the files every FLUSH seconds (and at exit). Written at every request, the files'
    locks and writes cost more than the rest of the entry (about 40 us a request)."""

    FLUSH = 1.0  # seconds: how far the exporter's figures may lag behind

    def __init__(self, service: str, directory: str) -> None:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory  # before the import reads it
        from prometheus_client import Counter, Gauge, Histogram

        self.service = service
        # No registry: the exporter reads the files; one in this process would only refuse a
        # second Metrics (a second app in the interpreter, the benchmark's layers).
        self.requests = Counter("wsgistack_http_requests", "Requests answered.",
                                ["service", "method", "code"], registry=None)
        self.duration = Histogram("wsgistack_http_request_duration_seconds",
                                  "Time to answer a request.", ["service"],
                                  buckets=DURATION_BUCKETS, registry=None).labels(service)
        self.in_flight = Gauge("wsgistack_http_requests_in_flight", "Requests being answered.",
                               ["service"], multiprocess_mode="livesum",
                               registry=None).labels(service)
        self.request_size = Histogram("wsgistack_http_request_size_bytes",
                                      "Request bodies (declared length).", ["service"],
                                      buckets=SIZE_BUCKETS, registry=None).labels(service)
        self.response_size = Histogram("wsgistack_http_response_size_bytes",
                                       "Response bodies sent.", ["service"],
                                       buckets=SIZE_BUCKETS, registry=None).labels(service)
        self._counters: dict[tuple[str, int], Any] = {}
        self._live = 0  # requests in flight in this process
        self._pending: list[tuple[str, int, float, int, int]] = []
        self._counting = threading.Lock()  # held for an addition: a worker's threads share
        self._lock = threading.Lock()
        written_by_a_thread(self.flush, self.FLUSH, f"metrics of {service}")

    def begin(self) -> None:
        with self._counting:
            self._live += 1

    def done(self, method: str, status: int, seconds: float, received: int, sent: int) -> None:
        with self._counting:
            self._live -= 1
            self._pending.append((method, status, seconds, received, sent))

    def flush(self) -> None:
        with self._lock:
            with self._counting:
                pending, self._pending, live = self._pending, [], self._live
            self.in_flight.set(live)
            counts: dict[tuple[str, int], int] = {}
            durations, received, sent = [], [], []
            for method, status, seconds, got, gave in pending:
                key = (method if method in _METHODS else "other", status)
                counts[key] = counts.get(key, 0) + 1
                durations.append(seconds)
                received.append(got)
                sent.append(gave)
            for key, count in counts.items():
                counter = self._counters.get(key)
                if counter is None:
                    counter = self._counters[key] = self.requests.labels(
                        self.service, key[0], str(key[1]))
                counter.inc(count)
            for histogram, values in ((self.duration, durations),
                                      (self.request_size, received),
                                      (self.response_size, sent)):
                _observe_all(histogram, values)


def _observe_all(histogram: Any, values: list[float] | list[int]) -> None:
    """`histogram.observe(v)` for each value, with one write per bucket and one for the sum:
    in multiprocess mode each write takes a lock and touches a file's page, and a busy
    worker has thousands of values a second. Through the histogram's own bounds, buckets and
    sum (what observe() uses); where a prometheus_client lacks them, observe() each."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if not values:
        return
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for value in values:
            histogram.observe(value)
        return
    counts = [0] * len(bounds)
    for value in values:
        counts[bisect.bisect_left(bounds, value)] += 1  # the first bound >= value
    total.inc(sum(values))
    for bucket, count in zip(buckets, counts, strict=True):
        if count:
            bucket.inc(count)


def observe(app: Callable[..., Any], service: str, log_path: str, fmt: str = "combined",
            log_health: bool = False, trusted: Callable[[str], bool] = lambda _a: False,
            errors: TextIO | None = None, metrics_dir: str = "") -> Callable[..., Any]:
    """A request id for every request (the trusted proxy's X-Request-Id, else a new one) in
    the environ and the answer, an access line in `log_path` ("" : none), with `errors` the
    app's wsgi.errors there, and with `metrics_dir` the request metrics."""
    log = AccessLog(log_path) if log_path else None
    made: list[Metrics | None] = []  # at the first request: a trial load (--check) makes none
    lock = threading.Lock()

    def counting() -> Metrics | None:
        if made or not metrics_dir:
            return made[0] if made else None
        with lock:
            if not made:
                try:
                    made.append(Metrics(service, metrics_dir))
                except Exception as exc:  # counting must never fail a request
                    sys.stderr.write(f"wsgistack: no metrics for {service}: {exc}\n")
                    made.append(None)
        return made[0]

    def observed(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if errors is not None:
            environ["wsgi.errors"] = errors
        began = time.time()
        clock = time.perf_counter()
        given = environ.get("HTTP_X_REQUEST_ID", "")
        request_id = given if given and environ.get("wsgistack.trusted_peer") and \
            len(given) <= 200 and given.isprintable() else new_request_id()
        environ["HTTP_X_REQUEST_ID"] = request_id
        answer: dict[str, Any] = {}

        def start(status: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
            answer["status"] = status
            has_id = False
            for key, value in headers:  # one pass, no generator: this runs every request
                lower = key.lower()
                if lower == "x-request-id":
                    has_id = True
                elif lower == "x-openstack-request-id":
                    answer["app_id"] = value
            if not has_id:
                headers = [*headers, ("X-Request-Id", request_id)]
            return start_response(status, headers, *exc)

        agent = environ.get("HTTP_USER_AGENT", "")
        if not log_health and agent.startswith(HEALTH_AGENT):
            return app(environ, start)  # wsgistack's own checks: neither logged nor counted
        metrics = counting()
        if log is None and metrics is None:
            return app(environ, start)
        if metrics is not None:
            metrics.begin()

        def done(sent: int) -> None:
            status = int(str(answer.get("status", "0")).split(" ", 1)[0] or 0)
            seconds = time.perf_counter() - clock
            if metrics is not None:
                length = environ.get("CONTENT_LENGTH") or "0"
                metrics.done(environ.get("REQUEST_METHOD", ""), status, seconds,
                             int(length) if length.isdigit() else 0, sent)
            if log is None:
                return
            query = environ.get("QUERY_STRING", "")
            path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
            log.write(line({
                "time": round(began, 6), "client": client_address(environ, trusted),
                "method": environ.get("REQUEST_METHOD", "-"),
                "path": path + (f"?{query}" if query else ""),
                "protocol": environ.get("SERVER_PROTOCOL", "-"),
                "status": status, "bytes": sent, "referer": environ.get("HTTP_REFERER", ""),
                "user_agent": agent, "duration_us": int(seconds * 1e6),
                "request_id": request_id, "app_request_id": answer.get("app_id", ""),
                "service": service,
            }, fmt))

        try:
            result = app(environ, start)
        except BaseException:
            answer.setdefault("status", "500")
            done(0)
            raise
        if type(result) is list:  # the whole answer at hand (most APIs): no wrapper needed
            done(sum(map(len, result)))
            return result
        return _Counted(result, done)

    return observed
