"""The entry's access log and metrics writers, without a server: what each worker writes and
when (tests/test_observe.py runs them under all six backends)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from wsgistack import observe


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin", **env},
                          check=False)


def soon(path: Path, written: Callable[[str], bool]) -> bool:
    """Whether the file's text is `written` within 20 flush intervals."""
    deadline = time.monotonic() + 20 * observe.AccessLog.FLUSH
    while time.monotonic() < deadline:
        if written(path.read_text() if path.exists() else ""):
            return True
        time.sleep(observe.AccessLog.FLUSH / 4)
    return False


def test_access_lines_from_many_threads_land_whole_and_in_order_by_the_exit(tmp_path):
    log = tmp_path / "a-access.log"
    done = _run(f"""
        import threading
        from wsgistack.observe import AccessLog
        log = AccessLog({str(log)!r})
        def lines(n):
            for i in range(500):
                log.write(f"thread {{n}} line {{i}} " + "x" * 200 + "\\n")
        threads = [threading.Thread(target=lines, args=(n,)) for n in range(4)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        # no flush: the exit writes what is still queued
    """)
    assert done.returncode == 0, done.stderr
    got = log.read_text().splitlines()
    assert len(got) == 2000
    for n in range(4):
        mine = [line.split()[3] for line in got if line.startswith(f"thread {n} ")]
        assert mine == [str(i) for i in range(500)]


def test_a_forked_worker_that_ends_by_os_exit_still_writes_its_lines(tmp_path):
    """granian's workers are multiprocessing children: they leave by os._exit, after
    threading's shutdown hooks but without the interpreter's atexit."""
    log = tmp_path / "a-access.log"
    done = _run(f"""
        import multiprocessing
        from wsgistack.observe import AccessLog
        log = AccessLog({str(log)!r})
        log.write("parent\\n")
        def worker():
            for i in range(3):
                log.write(f"child {{i}}\\n")
        child = multiprocessing.get_context("fork").Process(target=worker)
        child.start()
        child.join()
        assert child.exitcode == 0
    """)
    assert done.returncode == 0, done.stderr
    assert sorted(log.read_text().splitlines()) == ["child 0", "child 1", "child 2", "parent"]


def test_a_line_reaches_the_file_within_the_flush_interval_and_follows_a_rotation(tmp_path):
    log_path = tmp_path / "a-access.log"
    log = observe.AccessLog(str(log_path))
    log.write("first\n")
    assert soon(log_path, lambda text: "first\n" in text)
    log_path.rename(tmp_path / "a-access.log.1")  # logrotate's rename
    log.write("second\n")
    assert soon(log_path, lambda text: "second\n" in text)
    assert (tmp_path / "a-access.log.1").read_text() == "first\n"


def test_metrics_written_in_batches_read_as_if_each_request_was_observed(tmp_path):
    """The flush writes a bucket once for many requests: the exporter must read the same
    histogram as prometheus_client's observe() for each value would have written."""
    metrics = tmp_path / "m"
    metrics.mkdir()
    done = _run("""
        import random
        from prometheus_client import CollectorRegistry, Histogram, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector
        from wsgistack.observe import DURATION_BUCKETS, _observe_all
        one, many = (Histogram(name, "h", ["s"], buckets=DURATION_BUCKETS,
                               registry=None).labels("x") for name in ("one", "many"))
        values = [random.choice([0, 0.005, 0.0051, 0.3, 1.0, 59.9, 60, 61, 1e9])
                  for _ in range(5000)]
        for value in values:
            one.observe(value)
        _observe_all(many, values)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        text = generate_latest(registry).decode()
        rows = lambda name: sorted(line[len(name):] for line in text.splitlines()
                                   if line.startswith(name + "_"))
        assert rows("one") == rows("many") and len(rows("one")) == 16, text
        print("ok")
    """, PROMETHEUS_MULTIPROC_DIR=str(metrics))
    assert done.returncode == 0 and done.stdout == "ok\n", done.stderr


def test_the_line_carries_both_request_ids_and_the_answer_one_x_request_id(tmp_path):
    """OpenStack services log their own x-openstack-request-id: the line has it beside ours;
    an app that sets X-Request-Id itself keeps its own, not a second one."""
    log = tmp_path / "s-access.log"

    def app(environ, start_response):
        own = [("X-Request-Id", "app-made")] if environ["PATH_INFO"] == "/own" else []
        start_response("202 Accepted", [("Content-Type", "application/json"),
                                        ("x-openstack-request-id", "req-1234"), *own])
        return [b"{}"]

    observed = observe.observe(app, "nova", str(log))
    sent: list[list[tuple[str, str]]] = []
    for path in ("/servers", "/own"):
        env = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "SCRIPT_NAME": "/compute",
               "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "192.0.2.7"}
        assert observed(env, lambda status, headers, *exc: sent.append(headers)) == [b"{}"]
    ids = [[v for k, v in headers if k.lower() == "x-request-id"] for headers in sent]
    assert len(ids[0]) == 1 and len(ids[0][0]) == 32 and ids[1] == ["app-made"]
    assert soon(log, lambda text: text.count(" nova\n") == 2)
    first, second = log.read_text().splitlines()
    assert first.startswith('192.0.2.7 - - [') and first.endswith(
        f' {ids[0][0]} req-1234 nova') and '"GET /compute/servers HTTP/1.1" 202 2 ' in first
    assert second.endswith(" req-1234 nova")
