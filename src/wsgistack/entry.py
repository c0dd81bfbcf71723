"""Generate server-agnostic WSGI entry files.

An entry is one self-contained Python file: the loader (`wsgistack.loader`) and the layers
its service uses (`wsgistack.layers`, `framing`, `observe`), copied from the package, plus the
service's spec, environment, argv and path. Imported by any server it exposes
`application`, built once under a lock; run as `python FILE --host H --port P [-- args]` it
serves the app itself; `python FILE --check` builds the app and reports in one line.
"""

from __future__ import annotations

import ast
import functools
import importlib
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from wsgistack import loader
from wsgistack.errors import AppLoadError

_MARKER = "# ---- copied into entries from here ----\n"
# What every entry carries: loading the app, the layers every service has (the same 500s,
# every server's request made alike, strict framing, request ids) and serving as a command.
_ALWAYS = ("wsgistack.loader", "wsgistack.layers.failures", "wsgistack.layers.quirks",
           "wsgistack.framing", "wsgistack.observe", "wsgistack.standalone")


@functools.cache
def _module(name: str) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...], str]:
    """A module copied into entries: the wsgistack modules it imports from (copied before
    it), its other imports as (module, name) pairs ("" for a plain import) and what follows
    its marker line."""
    text = Path(str(importlib.import_module(name).__file__)).read_text(encoding="utf-8")
    head, marker, body = text.partition(_MARKER)
    if not marker:
        raise RuntimeError(f"{name} has no line {_MARKER.strip()!r}")
    needs: list[str] = []
    imports: list[tuple[str, str]] = []
    for node in ast.parse(head).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)) and any(a.asname for a in node.names):
            raise RuntimeError(f"{name}: an import with `as` above its marker line")
        if isinstance(node, ast.Import):
            imports += [("", alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("wsgistack"):
            needs.append(str(node.module))
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            imports += [(str(node.module), alias.name) for alias in node.names]
    return tuple(needs), tuple(imports), body


def _import_lines(modules: Sequence[str]) -> str:
    """The imports of `modules`, each name once (two modules may import the same)."""
    found = dict.fromkeys(pair for name in modules for pair in _module(name)[1])
    plain = sorted(name for source, name in found if not source)
    sources = sorted({source for source, _ in found if source})
    return "".join(f"import {name}\n" for name in plain) + "".join(
        f"from {source} import "
        f"{', '.join(sorted(name for s, name in found if s == source))}\n"
        for source in sources)


def _modules(names: Sequence[str]) -> list[str]:
    """`names` and what they import from, each after the modules it needs."""
    ordered: list[str] = []

    def visit(name: str) -> None:
        if name not in ordered:
            for need in _module(name)[0]:
                visit(need)
            ordered.append(name)

    for name in names:
        visit(name)
    return ordered


@dataclass(frozen=True)
class EntrySpec:
    """What an entry file bakes in."""

    app: str
    name: str = "app"
    env: Mapping[str, str] = field(default_factory=dict)
    args: Sequence[str] = ()
    python_path: Sequence[str] = ()
    working_dir: str = ""
    mount: str = ""  # prefix to split off PATH_INFO, for servers that set no SCRIPT_NAME
    max_body: int = 0  # 413 above this declared length, for servers with no limit of their own
    trusted_proxies: Sequence[str] = ()  # whose forwarded headers count (addresses, CIDRs)
    drain_refused: bool = False  # read a refused body to its end before the 413
    timeout: float = 0  # a request past it has its stack logged (0: not watched)
    end_on_timeout: bool = False  # ...and ends its process: the server has no timeout
    check_headers: bool = False  # 431 over MAX_FIELDS fields or a field over MAX_FIELD
    # Behind Apache's mod_proxy_http on a UNIX socket: the client's address is the last
    # X-Forwarded-For, the server's name and port those of the Host header.
    http_proxied: bool = False
    # (URL path under the prefix, directory): kept from the app (layers.static), and
    # served with WhiteNoise where no server does (gunicorn).
    static: Sequence[tuple[str, str]] = ()
    static_whitenoise: bool = False
    spool: bool = False  # read a chunked body whole and give it a CONTENT_LENGTH
    read_unread: bool = False  # read what the app left of a body (uWSGI behind a front end)
    access_log: str = ""  # where each request's line goes ("-": stdout; "": none)
    access_format: str = "combined"  # or "json"
    log_health: bool = False  # also log wsgistack's own health checks
    errors_log: str = ""  # the app's stderr and wsgi.errors, where the server's go elsewhere
    metrics_dir: str = ""  # prometheus_client's multiprocess files ("": no metrics)
    # The server passes the client's Transfer-Encoding and Content-Length as they came: the
    # entry refuses broken or ambiguous framing from them (framing.strict_framing).
    check_framing: bool = False


# The layers a service may not need, innermost first: (module, the call that wraps `built`,
# whether the spec uses it). An entry carries, and runs, only those its service uses.
_OPTIONAL: tuple[tuple[str, str, Callable[[EntrySpec], bool]], ...] = (
    ("wsgistack.layers.static", "serve_static(built, STATIC, STATIC_WHITENOISE)",
     lambda spec: bool(spec.static)),
    ("wsgistack.layers.mount", "mount(built, MOUNT)", lambda spec: bool(spec.mount.strip("/"))),
    ("wsgistack.layers.limits", "limit_body(built, MAX_BODY, DRAIN_REFUSED)",
     lambda spec: spec.max_body > 0),
    ("wsgistack.layers.watchdog", "watch_requests(built, TIMEOUT, END_ON_TIMEOUT)",
     lambda spec: spec.timeout > 0),
    ("wsgistack.layers.unread", "read_unread(built)", lambda spec: spec.read_unread),
    ("wsgistack.layers.spool", "spool_chunked(built, MAX_BODY)", lambda spec: spec.spool),
)


def layers(spec: EntrySpec) -> list[str]:
    """The modules the entry for `spec` is made of, in the order they are copied."""
    used = [module for module, _, uses in _OPTIONAL if uses(spec)]
    return _modules([*_ALWAYS, *used])


def module_name(service: str) -> str:
    """Importable module name of a service's entry (never shadows the app's own package)."""
    return "wsgistack_entry_" + re.sub(r"[^A-Za-z0-9_]", "_", service)


_RUNNER = '''
# ---- generated by wsgistack: the service this entry serves ----
import argparse as _argparse
import threading as _threading

SPEC = {app!r}
NAME = {name!r}
ENV = {env!r}
ARGS = {args!r}
PYTHON_PATH = {python_path!r}
WORKING_DIR = {working_dir!r}
MOUNT = {mount!r}
MAX_BODY = {max_body!r}
DRAIN_REFUSED = {drain_refused!r}
TIMEOUT = {timeout!r}
END_ON_TIMEOUT = {end_on_timeout!r}
CHECK_HEADERS = {check_headers!r}
HTTP_PROXIED = {http_proxied!r}
STATIC = {static!r}
STATIC_WHITENOISE = {static_whitenoise!r}
SPOOL = {spool!r}
READ_UNREAD = {read_unread!r}
CHECK_FRAMING = {check_framing!r}
TRUSTED_PROXIES = {trusted_proxies!r}
ACCESS_LOG = {access_log!r}
ACCESS_FORMAT = {access_format!r}
LOG_HEALTH = {log_health!r}
ERRORS_LOG = {errors_log!r}
METRICS_DIR = {metrics_dir!r}

_lock = _threading.Lock()
_app = None


def get_application(args=None):
    """Build the app once, under a lock: a concurrent double init breaks some apps."""
    global _app
    with _lock:
        if _app is None:
            if args is None and "WSGISTACK_APP_ARGS" in os.environ:  # granian's worker
                args = json.loads(os.environ.pop("WSGISTACK_APP_ARGS"))
            built = load_app(
                SPEC, argv0=NAME, args=ARGS if args is None else args, env=ENV,
                python_path=PYTHON_PATH, working_dir=WORKING_DIR,
            )
            built = uniform_errors(built)
            if os.environ.get("WSGISTACK_VALIDATE"):  # `wsgistack check`: PEP 3333 checks
                from wsgiref.validate import validator
                built = validator(built)
{layers}            networks = _networks(TRUSTED_PROXIES)
            built = observe(built, NAME, ACCESS_LOG, ACCESS_FORMAT, LOG_HEALTH,
                            lambda address: _trusted(address, networks),
                            sys.stderr if ERRORS_LOG else None, METRICS_DIR)
            close_connections_on_signal()
            _app = strict_framing(server_quirks(built, TRUSTED_PROXIES, CHECK_HEADERS,
                                                HTTP_PROXIED, MAX_BODY), CHECK_FRAMING)
    return _app


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    app_args = None
    if "--" in argv:
        cut = argv.index("--")
        argv, app_args = argv[:cut], argv[cut + 1:]
    parser = _argparse.ArgumentParser(prog=NAME, description="Serve " + SPEC)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--check", action="store_true", help="build the app, report, exit")
    opts = parser.parse_args(argv)
    try:
        app = get_application(app_args)
    except SpecError as exc:
        if exc.__cause__ is not None:  # for -v: the whole traceback, then the one line
            import traceback
            cause = exc.__cause__
            traceback.print_exception(type(cause), cause, cause.__traceback__)
        sys.stderr.write("error: %s\\n" % exc)
        return 1
    if opts.check:
        sys.stdout.write("ok: %s loads %r\\n" % (SPEC, app))
        return 0
    banner = "serving %s (%s) on http://%s:%d%s/" % (NAME, SPEC, opts.host, opts.port, MOUNT)
    return serve(__file__, app_args, opts.host, opts.port, banner, app)


if __name__ == "__main__":
    sys.exit(main())
else:
    if ERRORS_LOG:  # imported by mod_wsgi: the app's output in its service's own log
        sys.stderr = _errors_to(ERRORS_LOG)
    application = get_application()
'''


def render(spec: EntrySpec) -> str:
    """The text of an entry file for `spec`."""
    try:
        loader.parse_spec(spec.app)  # a bad spec fails now, not in the server
    except loader.SpecError as exc:
        raise AppLoadError(str(exc)) from None
    header = (
        f'"""WSGI entry for {spec.name}: {spec.app} (generated by wsgistack; do not edit)."""\n\n'
        "from __future__ import annotations\n"
    )
    runner = _RUNNER.format(
        app=spec.app, name=spec.name, env=dict(spec.env), args=list(spec.args),
        python_path=list(spec.python_path), working_dir=spec.working_dir, mount=spec.mount,
        max_body=spec.max_body, trusted_proxies=list(spec.trusted_proxies),
        drain_refused=spec.drain_refused, timeout=spec.timeout,
        end_on_timeout=spec.end_on_timeout, check_headers=spec.check_headers,
        http_proxied=spec.http_proxied, static=[tuple(s) for s in spec.static],
        static_whitenoise=spec.static_whitenoise, spool=spec.spool,
        read_unread=spec.read_unread, check_framing=spec.check_framing,
        access_log=spec.access_log, access_format=spec.access_format,
        log_health=spec.log_health, errors_log=spec.errors_log, metrics_dir=spec.metrics_dir,
        layers="".join(f"            built = {call}\n" for _, call, uses in _OPTIONAL
                       if uses(spec)),
    )
    modules = layers(spec)
    return header + _import_lines(modules) + "".join(
        "\n" + _module(name)[2] for name in modules) + runner


def write_checked(spec: EntrySpec, output: Path, python: str = sys.executable) -> None:
    """Write the entry for `spec` to `output` only once it loads its app, in a throwaway
    `python` process: an entry that cannot load is not written."""
    text = render(spec)
    with tempfile.TemporaryDirectory(prefix="wsgistack-entry-") as tmp:
        trial = Path(tmp, output.name if output.suffix == ".py" else "entry.py")
        trial.write_text(text, encoding="utf-8")
        try:
            out = subprocess.run([python, str(trial), "--check"], capture_output=True,
                                 text=True, timeout=120, check=False)
        except subprocess.TimeoutExpired:
            raise AppLoadError(f"{output}: not written: loading '{spec.app}' did not finish "
                               "in 120s (does it hang at import?)") from None
    if out.returncode:
        lines = (out.stderr or out.stdout).strip().splitlines()
        why = lines[-1].removeprefix("error: ") if lines else f"exit code {out.returncode}"
        error = AppLoadError(f"{output}: not written: {why}; or pass --no-check if the app "
                             "loads only in another interpreter")
        error.detail = out.stderr.strip()
        raise error
    output.write_text(text, encoding="utf-8")
