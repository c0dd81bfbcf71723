"""Is a service up: health probes, worker readiness, and why it is not."""

from __future__ import annotations

import http.client
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

from wsgistack.errors import ServerError
from wsgistack.lifecycle.processes import Running, as_service, reap
from wsgistack.observe import HEALTH_AGENT
from wsgistack.plan import Plan, ServicePlan

# How long the loader may take to tell why a service failed, after start_timeout ran out:
# an app that hangs at import hangs there too.
DIAGNOSE_AFTER_TIMEOUT = 5.0


def http_status(url: str, timeout: float = 2.0) -> tuple[int, str]:
    """(status, "") for a response, or (0, why) when nothing answered."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        # Known by its agent: the access log leaves our own checks out ([stack] log_health).
        conn.request("GET", parts.path or "/", headers={"User-Agent": HEALTH_AGENT})
        resp = conn.getresponse()
        resp.read()
        return resp.status, ""
    except OSError as exc:
        return 0, str(exc) or type(exc).__name__
    finally:
        conn.close()


def log_tail(path: str, lines: int = 1) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    kept = [ln.strip() for ln in text.splitlines()
            if ln.strip() and not ln.startswith("--- wsgistack")]
    return " | ".join(kept[-lines:])


class Diagnosis(NamedTuple):
    reason: str  # one line; "" when the app loads
    detail: str = ""  # the trial's whole output (the app's traceback), for -v


def diagnose(plan: Plan, svc: ServicePlan, timeout: float = 120.0,
             entry: str = "") -> Diagnosis:
    """Build the app in a fresh interpreter, as its user with its environment, to find out
    whether loading it is what fails."""
    try:
        out = subprocess.run(
            [svc.python, entry or svc.entry, "--check"], capture_output=True, text=True,
            timeout=timeout, check=False, **as_service(plan, svc),
        )
    except subprocess.TimeoutExpired:
        return Diagnosis(f"loading it did not finish in {timeout:g}s (it hangs at import?)")
    except OSError as exc:
        return Diagnosis(f"{svc.python}: {exc.strerror}")
    if out.returncode == 0:
        return Diagnosis("")
    text = (out.stderr or out.stdout).strip()
    lines = text.splitlines()
    return Diagnosis(lines[-1].removeprefix("error: ") if lines
                     else f"exit code {out.returncode}", text)


def cannot_load(svc: ServicePlan, found: Diagnosis, what: str = "cannot load its app",
                then: str = "") -> ServerError:
    """`service 'api' cannot load its app: <the loader's line>`, its advice speaking of the
    service's own keys, and the traceback kept for -v."""
    reason = found.reason.replace("the service's ", f"services.{svc.name}.")
    if "; " not in reason:  # no advice of the loader's own (a hang, an interpreter)
        reason += f"; fix services.{svc.name}.app"
    error = ServerError(f"service '{svc.name}' {what}: {reason}{then}")
    error.detail = found.detail
    return error


def wait_healthy(plan: Plan, running: list[Running],
                 progress: Callable[[str], None] = lambda _m: None) -> None:
    """Poll every service's health URL until it answers as expected; raise ServerError
    naming the first service that died or never became healthy, with the reason and the
    last line of its log. Done within start_timeout (and a few seconds to say why)."""
    # Every process a service needs: its own (a uWSGI behind a front end) and the front end.
    owners = {s.name: sorted((r for r in running if s.name in r.serves),
                             key=lambda r: r.name != s.name) for s in plan.services}
    pending = {s.name: s for s in plan.services}
    last: dict[str, str] = {}
    deadline = time.monotonic() + plan.start_timeout
    while pending:
        for name, svc in list(pending.items()):
            proc = owners[name][0]  # its own process, whose log tells what went wrong
            for r in owners[name]:
                reap(r.pid)
                if not r.alive():
                    raise failure(plan, svc, r, "exited during start-up")
            left = max(0.2, deadline - time.monotonic())
            status, why = http_status(svc.health_url, timeout=min(1.0, left))
            last[name] = f"HTTP {status}" if status else why
            if status == svc.config.health_status and all(map(workers_ready, owners[name])):
                del pending[name]
                progress(f"{name} healthy")
            elif status >= 500 and not plan.front_port:
                # A server that answers 5xx is up but the app may not be: ask the loader.
                found = diagnose(plan, svc, timeout=max(left, DIAGNOSE_AFTER_TIMEOUT))
                if found.reason:
                    raise cannot_load(svc, found, then=f"; log: {log_tail(proc.log)}")
        if pending and time.monotonic() > deadline:
            name, svc = next(iter(pending.items()))
            raise failure(
                plan, svc, owners[name][0],
                f"did not become healthy in {plan.start_timeout:g}s (last: {last.get(name)} "
                f"from {svc.health_url}, expected {svc.config.health_status})",
                diagnose_for=DIAGNOSE_AFTER_TIMEOUT,
            )
        if pending:
            time.sleep(0.05)


def wait_ready(plan: Plan, svc: ServicePlan, proc: Running) -> None:
    """Until every worker of `proc` logged its ready line, within start_timeout."""
    deadline = time.monotonic() + plan.start_timeout
    while not workers_ready(proc):
        reap(proc.pid)
        if not proc.alive():
            raise failure(plan, svc, proc, "exited during start-up")
        if time.monotonic() > deadline:
            raise failure(plan, svc, proc, f"workers were not ready in {plan.start_timeout:g}s",
                          diagnose_for=DIAGNOSE_AFTER_TIMEOUT)
        time.sleep(0.05)


def workers_ready(proc: Running) -> bool:
    """Whether every worker has logged its ready line since this start. uWSGI loads the app
    in each worker after fork (lazy-apps): a worker still loading when `down` comes misses
    the graceful stop and holds it up for worker-reload-mercy."""
    if proc.ready is None:
        return True
    line, count = proc.ready
    try:
        with open(proc.log, "rb") as log:  # only what was written since: logs grow for weeks
            log.seek(proc.since)
            text = log.read().decode("utf-8", errors="replace")
    except OSError:
        return False
    return sum(1 for ln in text.splitlines() if ln == line) >= count


def failure(plan: Plan, svc: ServicePlan, proc: Running, what: str,
            diagnose_for: float = 60.0) -> ServerError:
    found = diagnose(plan, svc, diagnose_for)
    tail = f"; log: {log_tail(proc.log) or '(empty)'}"
    if found.reason:  # what happened, then why
        return cannot_load(svc, found, f"{what}: cannot load its app", tail)
    return ServerError(f"service '{svc.name}' {what}{tail}; see `wsgistack logs {svc.name}`")
