"""The stack's metrics endpoint: `python -m wsgistack.exporter --listen HOST:PORT --state DIR`.

One process per stack, beside the servers (never on the apps' URL space): it adds up what
every worker of every service wrote in prometheus_client's multiprocess files
(`STATE/metrics/SERVICE/`), adds each server process's memory and CPU from /proc, and answers
`/metrics` (Prometheus' text format) and `/rates` (requests per second and 5xx over the
last minute per service, for `wsgistack status`).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from wsgistack.lifecycle import processes

WINDOW = 60.0  # seconds `/rates` looks back over
SAMPLE = 5.0


class _Stack:
    """The stack's own processes, found by their marker: memory and CPU per process name."""

    def __init__(self, state: str) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        rss = GaugeMetricFamily("wsgistack_process_resident_memory_bytes",
                                "Resident memory of the stack's processes, by name.",
                                labels=["process"])
        cpu = GaugeMetricFamily("wsgistack_process_cpu_seconds",
                                "CPU time of the stack's live processes, by name.",
                                labels=["process"])
        count = GaugeMetricFamily("wsgistack_processes",
                                  "The stack's live processes, by name (workers included).",
                                  labels=["process"])
        totals: dict[str, list[float]] = {}
        page, tick = os.sysconf("SC_PAGE_SIZE"), os.sysconf("SC_CLK_TCK")
        for pid in processes.marked(self.state):
            fields = processes.proc_stat(pid)
            try:
                name = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            if len(fields) < 22:
                continue
            entry = totals.setdefault(name, [0.0, 0.0, 0.0])
            entry[0] += int(fields[21]) * page
            entry[1] += (int(fields[11]) + int(fields[12])) / tick
            entry[2] += 1
        for name, (memory, seconds, live) in sorted(totals.items()):
            rss.add_metric([name], memory)
            cpu.add_metric([name], seconds)
            count.add_metric([name], live)
        yield from (rss, cpu, count)


def _ask_unix(path: str, request: bytes = b"") -> bytes:
    """What a UNIX socket answers (uWSGI's stats say it all and close; nginx is asked)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        sock.connect(path)
        if request:
            sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


class _Servers:
    """What each server knows of its workers: busy and idle from uWSGI's stats socket,
    else the live worker processes of the service's own server (granian, gunicorn; the
    mod_wsgi daemons of its process group); nginx's connections from its stub_status."""

    def __init__(self, state: str, metrics: str) -> None:
        self.state, self.metrics = state, metrics

    def collect(self) -> Iterator[Metric]:
        workers = GaugeMetricFamily("wsgistack_server_workers",
                                    "Worker processes of each service by state: busy or idle "
                                    "where the server tells (uWSGI), else running.",
                                    labels=["service", "state"])
        stack = processes.load_state(self.state)
        if stack is not None:  # none where the exporter is installed: no state of ours
            for svc in stack.services:
                for state, count in sorted(self._workers(stack, svc.name).items()):
                    workers.add_metric([svc.name, state], count)
        yield workers
        yield from self._nginx()

    def _workers(self, stack: processes.StackState, service: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for sock in sorted(Path(self.metrics, service).glob("uwsgi-stats*.sock")):
            try:
                doc = json.loads(_ask_unix(str(sock)))
            except (OSError, ValueError):
                continue  # a twin gone after a swap, or one not listening yet
            for worker in doc.get("workers", ()):
                status = "busy" if worker.get("status") == "busy" else "idle"
                counts[status] = counts.get(status, 0) + 1
        if counts:
            return counts
        title = f"(wsgi:{service})"
        found = [pid for r in stack.procs if r.alive() for pid in processes.descendants(r.pid)
                 if r.name == service or processes.cmdline(pid).startswith(title)]
        return {"running": len(found)}

    def _nginx(self) -> Iterator[Metric]:
        path = os.path.join(self.state, "run", "nginx-status.sock")
        if not os.path.exists(path):
            return
        try:
            answer = _ask_unix(path, b"GET /stub_status HTTP/1.0\r\nHost: status\r\n\r\n")
        except OSError:
            return
        words = answer.split(b"\r\n\r\n", 1)[-1].split()
        # "Active connections: N  server accepts handled requests A H R  Reading: r
        # Writing: w Waiting: i"
        numbers = [int(w) for w in words if w.isdigit()]
        if len(numbers) != 7:
            return
        conns = GaugeMetricFamily("wsgistack_nginx_connections",
                                  "nginx's client connections by state (stub_status).",
                                  labels=["state"])
        for state, value in zip(("reading", "writing", "waiting"), numbers[4:], strict=True):
            conns.add_metric([state], value)
        yield conns
        requests = CounterMetricFamily("wsgistack_nginx_requests",
                                       "Client requests nginx has taken (stub_status).")
        requests.add_metric([], numbers[3])
        yield requests


def registry(state: str, metrics: str = "") -> CollectorRegistry:
    """`metrics`: the services' metrics dirs' parent (default: STATE/metrics)."""
    reg = CollectorRegistry()
    root = Path(metrics or os.path.join(state, "metrics"))
    for directory in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else ():
        MultiProcessCollector(reg, path=str(directory))  # type: ignore[no-untyped-call]
    reg.register(_Stack(state))
    reg.register(_Servers(state, str(root)))
    return reg


def _totals(reg: CollectorRegistry) -> dict[str, tuple[float, float]]:
    """(requests, 5xx answers) so far, per service."""
    out: dict[str, list[float]] = {}
    for family in reg.collect():
        if family.name != "wsgistack_http_requests":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                entry = out.setdefault(sample.labels["service"], [0.0, 0.0])
                entry[0] += sample.value
                entry[1] += sample.value if sample.labels["code"].startswith("5") else 0
    return {k: (v[0], v[1]) for k, v in out.items()}


class Rates:
    """Totals sampled every few seconds; the rate over the last minute from them."""

    def __init__(self, collect: Callable[[], CollectorRegistry]) -> None:
        self.collect = collect
        self.samples: deque[tuple[float, dict[str, tuple[float, float]]]] = deque()

    def sample(self) -> None:
        now = time.monotonic()
        self.samples.append((now, _totals(self.collect())))
        while self.samples and now - self.samples[0][0] > WINDOW + SAMPLE:
            self.samples.popleft()

    def rates(self) -> dict[str, dict[str, float]]:
        self.sample()
        (t0, first), (t1, last) = self.samples[0], self.samples[-1]
        span = max(t1 - t0, 1e-9)
        return {name: {"requests_per_second": round((total - first.get(name, (0, 0))[0]) / span, 3)
                       if t1 > t0 else 0.0,
                       "errors_5xx": int(errors - first.get(name, (0, 0))[1]),
                       "seconds": round(t1 - t0, 1)}
                for name, (total, errors) in last.items()}


def app(collect: Callable[[], CollectorRegistry], rates: Rates) -> Callable[..., Iterable[bytes]]:
    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            body, kind = generate_latest(collect()), "text/plain; version=0.0.4"
        elif path == "/rates":
            body, kind = json.dumps(rates.rates()).encode(), "application/json"
        else:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"/metrics or /rates\n"]
        start_response("200 OK", [("Content-Type", kind), ("Content-Length", str(len(body)))])
        return [body]

    return serve


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape a second would fill the log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wsgistack.exporter")
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    parser.add_argument("--state", required=True, help="the stack's state dir")
    parser.add_argument("--metrics", default="", help="the services' metrics dirs are in "
                        "here (default: STATE/metrics)")
    opts = parser.parse_args(argv)
    host, _, port = opts.listen.rpartition(":")
    collect = functools.partial(registry, opts.state, opts.metrics)
    rates = Rates(collect)

    def sampler() -> None:
        while True:
            rates.sample()
            time.sleep(SAMPLE)

    threading.Thread(target=sampler, daemon=True).start()
    server: WSGIServer = make_server(host.strip("[]"), int(port), app(collect, rates),
                                     handler_class=_Quiet)
    print(f"wsgistack exporter on http://{opts.listen}/metrics", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
