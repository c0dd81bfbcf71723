"""Turn an app spec into a WSGI callable.

This module imports only the standard library: `wsgistack entry` copies it verbatim into
generated entry files, which must work in any interpreter and under any server, with or
without wsgistack installed.

Spec forms:
    pkg.mod:app               attribute (dotted) of a module; `pkg.mod` alone means `:application`
    pkg.mod:create_app(1, x="y")   call with literal arguments
    paste:path/api-paste.ini#name  paste.deploy (name defaults to "main")
    path/to/app.wsgi          script file exposing `application` (also .py, or `file.py:name`)
    ep:group:name             an installed entry point (an app, or a factory returning one)
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import inspect
import itertools
import os
import runpy
import sys
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

WSGIApp = Callable[..., Any]


class SpecError(Exception):
    """The spec or the app it names is wrong; the message is one line for the user."""


class Spec(NamedTuple):
    kind: str  # "module", "script", "paste", "entrypoint"
    target: str  # module name, file path, ini path, or entry-point group
    attr: str  # attribute path, paste app name, or entry-point name
    args: tuple[Any, ...] | None  # None: no call; () and up: call with these
    kwargs: dict[str, Any]


def _parse_call(expr: str, spec: str) -> tuple[str, tuple[Any, ...] | None, dict[str, Any]]:
    try:
        node = ast.parse(expr.strip(), mode="eval").body
    except SyntaxError:
        raise SpecError(f"app spec '{spec}': '{expr}' is not an attribute or a call") from None
    call = node if isinstance(node, ast.Call) else None
    target = call.func if call else node
    parts = []
    while isinstance(target, ast.Attribute):
        parts.append(target.attr)
        target = target.value
    if not isinstance(target, ast.Name):
        raise SpecError(f"app spec '{spec}': '{expr}' is not an attribute or a call")
    parts.append(target.id)
    attr = ".".join(reversed(parts))
    if call is None:
        return attr, None, {}
    try:
        args = tuple(ast.literal_eval(a) for a in call.args)
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg}
    except ValueError:
        raise SpecError(
            f"app spec '{spec}': arguments of {attr}() must be literals (strings, numbers, ...)"
        ) from None
    if len(kwargs) != len(call.keywords):
        raise SpecError(f"app spec '{spec}': **kwargs are not supported")
    return attr, args, kwargs


def parse_spec(spec: str) -> Spec:
    """Parse an app spec without importing anything."""
    spec = spec.strip()
    if not spec:
        raise SpecError("app spec is empty: use pkg.mod:app, paste:FILE#name, FILE.wsgi or ep:G:N")
    if spec.startswith("paste:"):
        path, _, name = spec[len("paste:"):].partition("#")
        if not path:
            raise SpecError(f"app spec '{spec}': paste: needs an ini file (paste:api-paste.ini)")
        return Spec("paste", path, name or "main", None, {})
    if spec.startswith("ep:"):
        group, sep, name = spec[len("ep:"):].rpartition(":")
        if not sep or not group or not name:
            raise SpecError(f"app spec '{spec}': entry points are written ep:GROUP:NAME")
        return Spec("entrypoint", group, name, None, {})
    target, sep, expr = spec.partition(":")
    dotted = all(part.isidentifier() for part in target.split("."))
    # Django's `site1.wsgi:application` names a module; `app.wsgi` a file when there is one.
    if "/" in target or (target.endswith((".wsgi", ".py"))
                         and (not dotted or os.path.isfile(target))):
        attr, args, kwargs = _parse_call(expr, spec) if sep else ("application", None, {})
        return Spec("script", target, attr, args, kwargs)
    if not dotted:
        raise SpecError(
            f"app spec '{spec}': '{target}' is neither a module name nor a .wsgi/.py file"
        )
    attr, args, kwargs = _parse_call(expr, spec) if sep else ("application", None, {})
    return Spec("module", target, attr, args, kwargs)


def _last_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return text[-1] if text else type(exc).__name__


def _library(filename: str) -> bool:
    """Code the user did not write: the standard library, installed packages, importlib."""
    import sysconfig

    roots = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    return (filename == __file__ or any(filename.startswith(r + os.sep) for r in roots))


def _env_key(exc: BaseException, line: str) -> str:
    """The variable a KeyError names when the line that raised it reads the environment."""
    if isinstance(exc, KeyError) and exc.args and "environ" in line:
        return str(exc.args[0])
    return ""


def _failure(spec: str, exc: BaseException) -> str:
    """One line: what went wrong, where (the line that raised it, and the last line of the
    user's own code on the way there), and advice for that kind of error."""
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if f.filename != __file__ and not f.filename.startswith("<")]
    where = []
    if isinstance(exc, SyntaxError) and exc.filename:
        where.append(f"{exc.filename}:{exc.lineno}:{exc.offset}")
    elif frames:
        where.append(f"{frames[-1].filename}:{frames[-1].lineno}")
        own = [f for f in frames if not _library(f.filename)]
        if own and own[-1] is not frames[-1]:
            where.append(f"from {own[-1].filename}:{own[-1].lineno}")
    key = _env_key(exc, frames[-1].line or "" if frames else "")
    if key:
        advice = (f"the app reads the environment variable {key}: set it in the service's "
                  "env")
    elif isinstance(exc, ImportError):
        missing = getattr(exc, "name", "") or "what it imports"
        advice = (f"install {missing} where the app runs (the service's requirements) or "
                  "fix the import")
    elif isinstance(exc, SyntaxError):
        advice = "fix the syntax there"
    else:
        advice = "fix the app or its configuration there (-v shows the traceback)"
    at = f" at {' '.join(where)}" if where else ""
    return f"cannot load app '{spec}': {_last_line(exc)}{at}; {advice}"


def _resolve(obj: Any, attr: str, spec: str, where: str) -> Any:
    for part in attr.split("."):
        try:
            obj = getattr(obj, part) if not isinstance(obj, dict) else obj[part]
        except (AttributeError, KeyError):
            raise SpecError(f"app spec '{spec}': {where} has no attribute '{attr}'") from None
    return obj


def _is_factory(obj: Any) -> bool:
    """A callable taking no required arguments builds the app (pbr wsgi_scripts, factories)."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return False
    required = [
        p for p in sig.parameters.values()
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return not required and not inspect.isclass(obj)


def _build(spec: str, parsed: Spec) -> Any:
    if parsed.kind == "paste":
        try:
            from paste.deploy import loadapp
        except ImportError:
            raise SpecError(
                f"app spec '{spec}': paste.deploy is not installed; pip install PasteDeploy"
            ) from None
        path = os.path.abspath(parsed.target)
        if not os.path.isfile(path):
            raise SpecError(f"app spec '{spec}': no such paste ini file {path}")
        return loadapp("config:" + path, name=parsed.attr)
    if parsed.kind == "entrypoint":
        from importlib.metadata import entry_points

        found = [ep for ep in entry_points(group=parsed.target) if ep.name == parsed.attr]
        if not found:
            raise SpecError(
                f"app spec '{spec}': no entry point '{parsed.attr}' in group '{parsed.target}'"
                " (is the package installed in this interpreter?)"
            )
        obj = found[0].load()
        if parsed.target == "paste.app_factory":
            return obj({})
        return obj() if _is_factory(obj) else obj
    if parsed.kind == "script":
        path = os.path.abspath(parsed.target)
        if not os.path.isfile(path):
            raise SpecError(f"app spec '{spec}': no such script file {path}")
        namespace = runpy.run_path(path, run_name="__wsgistack_script__")
        obj = _resolve(namespace, parsed.attr, spec, path)
    else:
        try:
            module = importlib.import_module(parsed.target)
        except ModuleNotFoundError as exc:
            if not parsed.target.endswith((".wsgi", ".py")) or not parsed.target.startswith(
                    str(exc.name)):
                raise
            raise SpecError(f"app spec '{spec}': '{parsed.target}' is neither a file in "
                            f"{os.getcwd()} nor an importable module ({exc})") from None
        obj = _resolve(module, parsed.attr, spec, f"module '{parsed.target}'")
    if parsed.args is not None:
        obj = obj(*parsed.args, **parsed.kwargs)
    return obj


def load_app(
    spec: str,
    *,
    argv0: str = "wsgistack",
    args: tuple[str, ...] | list[str] = (),
    env: dict[str, str] | None = None,
    python_path: tuple[str, ...] | list[str] = (),
    working_dir: str = "",
) -> WSGIApp:
    """Build the WSGI app a spec names, in a clean process state.

    The environment is set and `sys.argv` replaced *before* the app is imported: apps built
    on oslo.config parse `sys.argv` and read `OS_*_CONFIG_DIR` at import time, and under
    gunicorn or granian `sys.argv` holds the server's own flags.
    """
    os.environ.update(env or {})
    if working_dir:
        os.chdir(working_dir)
    parsed = parse_spec(spec)  # in the working dir: whether `x.wsgi` is a file there counts
    for path in reversed([*python_path, os.getcwd()]):
        if path not in sys.path:
            sys.path.insert(0, path)
    sys.argv = [argv0, *args]
    try:
        app = _build(spec, parsed)
    except SpecError:
        raise
    except SystemExit as exc:
        raise SpecError(f"app spec '{spec}': the app exited while loading (code {exc.code})") \
            from None
    except Exception as exc:
        raise SpecError(_failure(spec, exc)) from exc
    if not callable(app):
        raise SpecError(f"app spec '{spec}' names a {type(app).__name__}, not a WSGI callable")
    built: WSGIApp = app
    return built


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


# The body of the 404 for a path outside every prefix, the same from every backend (Apache's
# ErrorDocument and nginx's `return` send it as it is).
NOT_FOUND = "not found"


def mount(app: WSGIApp, prefix: str) -> WSGIApp:
    """Serve `app` under `prefix` for servers that pass the full path and no SCRIPT_NAME.

    The prefix comes from our configuration, never from a request header.
    """
    prefix = prefix.rstrip("/")
    if not prefix:
        return app

    def mounted(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("SCRIPT_NAME", "").rstrip("/") == prefix:  # the server split it
            return app(environ, start_response)
        path = environ.get("PATH_INFO", "")
        if path == prefix or path.startswith(prefix + "/"):
            environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
            environ["PATH_INFO"] = path[len(prefix):]
            return app(environ, start_response)
        return _plain(start_response, "404 Not Found", NOT_FOUND, newline=False)

    return mounted


DRAIN_PIECES = 4096  # 256 MiB at most of a refused body read to its end


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


class _AfterClose:
    """The app's result, with something done once the server has closed it (the request's
    end, as servers count it)."""

    def __init__(self, result: Any, then: Callable[[], object], body: Any = None) -> None:
        self._result = result
        self._then = then
        self._body = result if body is None else body  # what is sent: the result, or a view

    def __iter__(self) -> Any:
        return iter(self._body)

    def close(self) -> None:
        try:
            if hasattr(self._result, "close"):
                self._result.close()
        finally:
            self._then()


APP_FAILED = b"500 Internal Server Error: the app failed; the service's log has why\n"


def uniform_errors(app: WSGIApp) -> WSGIApp:
    """An exception that escapes the app: the same short 500 on every server, its traceback
    in the service's log (wsgi.errors). Servers disagreed: an HTML page (Apache), a 502 as
    uWSGI closed (nginx), an empty 500 (granian). Once part of the body is out, nothing can
    be said any more: the exception goes on, and the server ends the connection."""

    def failed(environ: dict[str, Any], start_response: Callable[..., Any],
               started: bool) -> list[bytes]:
        import traceback

        errors = environ.get("wsgi.errors") or sys.stderr
        errors.write(f"wsgistack: {environ.get('REQUEST_METHOD', '')} "
                     f"{environ.get('PATH_INFO', '')}: the app raised\n")
        errors.write(traceback.format_exc())
        errors.flush()
        # exc_info says "replace what the app started"; uWSGI, given it, returns with the
        # exception still set (a SystemError), and replaces the headers without it.
        replace = (sys.exc_info(),) if started and "uwsgi.version" not in environ else ()
        start_response("500 Internal Server Error", [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(APP_FAILED)))], *replace)
        return [APP_FAILED]

    def call(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        started: list[bool] = []

        def start(*args: Any) -> Any:
            started.append(True)
            return start_response(*args)

        result: Any = None
        try:
            result = app(environ, start)
            if isinstance(result, (list, tuple)) or hasattr(result, "filelike"):
                return result  # nothing left to fail, or a file for the server to send
            # Up to the first piece of body, here: some servers (granian) send the headers
            # as soon as they start iterating, and a failure then could say nothing.
            pieces, first = iter(result), []
            for piece in pieces:
                first.append(piece)
                if piece:
                    break
        except (BodyTooLarge, RequestRefused):  # limit_body's 413, strict_framing's 400
            raise
        except Exception:
            if hasattr(result, "close"):
                result.close()
            return failed(environ, start_response, bool(started))
        return _AfterClose(result, lambda: None, itertools.chain(first, pieces))

    return call


class BodyTooLarge(Exception):
    """A body of unknown length (chunked) went past the limit as the app read it."""


class RequestRefused(Exception):
    """Raised as the app reads a request that must be refused (framing.BadFraming, a body
    uWSGI could not de-chunk): framing.strict_framing answers `status` and closes, not
    uniform_errors with a 500."""

    def __init__(self, reason: str, status: str = "400 Bad Request") -> None:
        super().__init__(reason)
        self.status = status


class _CountedInput:
    """wsgi.input that stops a body of unknown length at the limit: read in pieces, so a
    read() of everything never holds more than the limit and a piece."""

    def __init__(self, stream: Any, limit: int) -> None:
        self._stream = stream
        self._limit = limit
        self._seen = 0

    def _count(self, data: bytes) -> bytes:
        self._seen += len(data)
        if self._seen > self._limit:
            raise BodyTooLarge(self._limit)
        return data

    def read(self, size: int | None = -1) -> bytes:
        if size is not None and size >= 0:
            return self._count(self._stream.read(size))
        pieces = []
        while piece := self._count(self._stream.read(65536)):
            pieces.append(piece)
        return b"".join(pieces)

    def readline(self, size: int = -1) -> bytes:
        return self._count(self._stream.readline(size))

    def readlines(self, hint: int = -1) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self) -> Any:
        return iter(self.readline, b"")


def _discard(stream: Any, length: int) -> None:
    """Read a refused body to its end (`length`, or -1: unknown), up to DRAIN_PIECES pieces:
    a client that sends on and on is cut off."""
    for _ in range(DRAIN_PIECES):
        piece = stream.read(65536 if length < 0 else min(65536, length))
        length -= len(piece)
        if not piece or length == 0:
            break


def limit_body(app: WSGIApp, max_body: int, drain: bool = False) -> WSGIApp:
    """Answer 413 to a body over `max_body` bytes, for servers with no limit of their own
    (gunicorn, granian, uWSGI alone): a declared length at once, a chunked body when the app
    reads past the limit (unless it has answered already)."""
    if max_body <= 0:
        return app

    def limited(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        length = environ.get("CONTENT_LENGTH") or ""
        stream = environ.get("wsgi.input")
        if length.isdigit():
            if int(length) > max_body:
                if drain and stream is not None:
                    _discard(stream, int(length))
                return _too_large(start_response, max_body, close=drain)
            return app(environ, start_response)
        if stream is None:
            return app(environ, start_response)
        environ["wsgi.input"] = _CountedInput(stream, max_body)
        try:
            return app(environ, start_response)
        except BodyTooLarge:
            if drain:
                _discard(stream, -1)
            # The rest of the body is unread: the connection cannot carry another request.
            return _too_large(lambda s, h: start_response(s, h, sys.exc_info()), max_body,
                              close=True)

    return limited


def read_unread(app: WSGIApp) -> WSGIApp:
    """After the answer, read what the app left unread of a body with a length (it answered
    401 or 403 first): the front end is still sending it to uWSGI, whose closing on it made
    the answer a 502 (nginx) or a 503 (Apache)."""
    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        stream = environ.get("wsgi.input")
        if stream is None or environ.get("CONTENT_LENGTH") in (None, "", "0"):
            return app(environ, start_response)
        return _AfterClose(app(environ, start_response), lambda: _discard(stream, -1))

    return wrapped


SPOOL_IN_MEMORY = 1 << 20  # a chunked body past this goes to a temporary file


def spool_chunked(app: WSGIApp, max_body: int) -> WSGIApp:
    """Read a chunked body whole before the app, and hand it on with a CONTENT_LENGTH, as
    Apache's proxy and nginx do: most apps read by the length alone (Django reads nothing
    without one). Not for `upload` services, whose bodies stream (wsgi.input_terminated)."""
    import tempfile

    def spooled(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("CONTENT_LENGTH") or "chunked" not in environ.get(
                "HTTP_TRANSFER_ENCODING", "").lower():
            return app(environ, start_response)
        body = tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY)  # noqa: SIM115 (closed below)
        stream, size = environ["wsgi.input"], 0
        while piece := stream.read(65536):
            size += len(piece)
            if max_body and size > max_body:
                body.close()
                return _too_large(start_response, max_body, close=True)
            body.write(piece)
        body.seek(0)
        environ.update({"wsgi.input": body, "CONTENT_LENGTH": str(size)})
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        environ.pop("wsgi.input_terminated", None)
        return _AfterClose(app(environ, start_response), body.close)

    return spooled


def _too_large(start_response: Callable[..., Any], max_body: int,
               close: bool = False) -> list[bytes]:
    return _plain(start_response, "413 Request Entity Too Large",
                  f"request body over the limit of {max_body} bytes", close=close)


def _plain(start_response: Callable[..., Any], status: str, text: str,
           close: bool = False, newline: bool = True) -> list[bytes]:
    # A length lets keep-alive clients see where the answer ends.
    body = (text + ("\n" if newline else "")).encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
                            *([("Connection", "close")] if close else [])])
    return [body]


class _ChunkedInput:
    """wsgi.input over a source of body pieces that returns b"" at the end: uWSGI's
    chunked-input API, which its HTTP sockets need for chunked bodies (their plain
    wsgi.input sees nothing), or a decoder of HTTP/1.1 chunks (standalone.py)."""

    def __init__(self, next_piece: Callable[[], bytes]) -> None:
        self._next = next_piece
        self._buffer = b""
        self._done = False

    def _fill(self, size: int) -> None:
        while not self._done and (size < 0 or len(self._buffer) < size):
            chunk = self._next()
            if not chunk:
                self._done = True
            self._buffer += chunk

    def read(self, size: int | None = -1) -> bytes:
        self._fill(size if size is not None else -1)
        if size is None or size < 0:
            size = len(self._buffer)
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def readline(self, size: int = -1) -> bytes:
        while b"\n" not in self._buffer and not self._done:
            self._fill(len(self._buffer) + 1)
        end = self._buffer.find(b"\n") + 1 or len(self._buffer)
        if size is not None and 0 <= size < end:
            end = size
        data, self._buffer = self._buffer[:end], self._buffer[end:]
        return data

    def readlines(self, hint: int = -1) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self) -> Any:
        return iter(self.readline, b"")


# Request headers by which a proxy tells what the client sent, as WSGI environ keys. From a
# client that is not a trusted proxy they are lies: removed before the app (or its own proxy
# middleware, oslo's http_proxy_to_wsgi, werkzeug's ProxyFix) can believe them.
FORWARDED_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Port",
                     "X-Forwarded-Proto", "X-Forwarded-Prefix", "X-Forwarded-Ssl",
                     "X-Forwarded-Scheme", "X-Forwarded-Protocol", "X-Url-Scheme",
                     "Front-End-Https")
def environ_key(header: str) -> str:
    """The WSGI environ key a request header arrives under (`X-Forwarded-For`:
    `HTTP_X_FORWARDED_FOR`)."""
    return "HTTP_" + header.upper().replace("-", "_")


_FORWARDED_KEYS = tuple(map(environ_key, FORWARDED_HEADERS))
_FORWARDED_SET = frozenset(_FORWARDED_KEYS)


def _networks(trusted: Sequence[str]) -> list[Any]:
    import ipaddress

    return [ipaddress.ip_network(t, strict=False) for t in trusted]


def _trusted(remote: str, networks: list[Any]) -> bool:
    import ipaddress

    try:
        addr: Any = ipaddress.ip_address(remote.split("%")[0])
    except ValueError:
        return False
    addr = getattr(addr, "ipv4_mapped", None) or addr
    return any(addr in net for net in networks)


def _forwarded_scheme(environ: dict[str, Any]) -> str:
    """The scheme a trusted proxy says the client used ("" when it says none)."""
    forwarded = str(environ.get("HTTP_FORWARDED", ""))
    for part in forwarded.split(",", 1)[0].split(";"):
        key, _, value = part.strip().partition("=")
        if key.lower() == "proto":
            return value.strip('"').lower()
    for key in ("HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_SCHEME",
                "HTTP_X_FORWARDED_PROTOCOL", "HTTP_X_URL_SCHEME"):
        value = str(environ.get(key, "")).split(",")[0].strip().lower()
        if value:
            return value
    on = ("on", "true", "1", "yes")
    if any(environ.get(k, "").lower() in on
           for k in ("HTTP_X_FORWARDED_SSL", "HTTP_FRONT_END_HTTPS")):
        return "https"
    return ""


def _own_scheme(environ: dict[str, Any]) -> str:
    """uWSGI sets wsgi.url_scheme from X-Forwarded-Proto itself, whoever sent it: the scheme
    of the connection is what the front end said (HTTPS, REQUEST_SCHEME) or plain http."""
    if environ.get("HTTPS", "").lower() in ("on", "1"):
        return "https"
    return "https" if environ.get("REQUEST_SCHEME") == "https" else "http"


# Header limits, the same under every server: gunicorn and Apache refuse more than 100
# fields or a field over 8 KiB themselves; granian, uWSGI and nginx (to uWSGI) do not limit
# one or the other, and the entry does. A field may be as large as the 64 KiB uWSGI has
# always been given for token headers.
MAX_FIELDS = 100
MAX_FIELD = 65536


def _too_many_or_too_large(environ: dict[str, Any]) -> bool:
    # Counted only when the environ could hold that many; a value over the limit is looked
    # for among the long ones alone: a plain request costs one pass, no list. A loop, not
    # any() over a generator: half the time (1.1 against 2.0 us for 26 keys, here).
    if len(environ) > MAX_FIELDS and sum(k[:5] == "HTTP_" for k in environ) > MAX_FIELDS:
        return True
    for k, v in environ.items():
        if type(v) is str and len(v) > MAX_FIELD and k[:5] == "HTTP_":
            return True
    return False


def _last_hop(environ: dict[str, Any], key: str) -> str:
    """Take the value a proxy appended to a forwarded header (its last element) off it."""
    values = [v.strip() for v in str(environ.pop(key, "")).split(",")]
    if len(values) > 1:
        environ[key] = ", ".join(values[:-1])
    return values[-1]


def _from_http_proxy(environ: dict[str, Any]) -> None:
    """Behind Apache's mod_proxy_http on a UNIX socket, which only Apache can reach: the
    connection says nothing of the client, Apache's X-Forwarded-* do (it appends to them,
    and removes any a client sent unless it is a trusted proxy). Set the environ as
    mod_proxy_uwsgi would have."""
    environ["REMOTE_ADDR"] = _last_hop(environ, "HTTP_X_FORWARDED_FOR")
    environ.pop("REMOTE_PORT", None)
    scheme = environ.pop("HTTP_X_WSGISTACK_SCHEME", "http")
    environ["REQUEST_SCHEME"] = scheme
    for key in ("HTTP_X_FORWARDED_HOST", "HTTP_X_FORWARDED_SERVER"):
        _last_hop(environ, key)
    host = environ.get("HTTP_HOST", "")
    name, sep, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
    environ["SERVER_NAME"] = (name if sep else host) or environ.get("SERVER_NAME", "")
    environ["SERVER_PORT"] = port if sep and port.isdigit() else (
        "443" if scheme == "https" else "80")


def server_quirks(app: WSGIApp, trusted_proxies: Sequence[str] = (),
                  check_headers: bool = False, http_proxied: bool = False,
                  max_body: int = 0) -> WSGIApp:
    """Make every server present the same request to the app.

    - With `check_headers` (where nothing before the app limits them), more than MAX_FIELDS
      header fields, or one over MAX_FIELD bytes: 431.
    - Forwarded headers count only from `trusted_proxies` (addresses or CIDRs), judged by
      REMOTE_ADDR, which every server and front end sets from the connection: from anyone
      else they are removed. From a trusted proxy, the scheme it names sets
      wsgi.url_scheme (servers disagree on whether they do it themselves).
    - A chunked body under uWSGI's HTTP sockets is read through uwsgi.chunked_read().
    - SCRIPT_NAME is always present, and HTTP_CONTENT_TYPE/HTTP_CONTENT_LENGTH never are
      (uWSGI behind nginx gets both wrong; PEP 3333 says otherwise); a body with a
      CONTENT_LENGTH has no HTTP_TRANSFER_ENCODING.
    - While granian hands this worker's connections over (close_connections_on_signal),
      every response says `Connection: close`.
    """
    networks = _networks(trusted_proxies)
    trust: dict[str, bool] = {}  # by REMOTE_ADDR: asked once per address, not per request

    def uniform(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if check_headers and _too_many_or_too_large(environ):
            return _plain(start_response, "431 Request Header Fields Too Large",
                          f"more than {MAX_FIELDS} header fields, or one over {MAX_FIELD} "
                          "bytes", close=True)
        if http_proxied:
            _from_http_proxy(environ)
        environ.setdefault("SCRIPT_NAME", "")
        environ.pop("HTTP_CONTENT_TYPE", None)
        environ.pop("HTTP_CONTENT_LENGTH", None)
        remote = environ.get("REMOTE_ADDR") or ""
        trusted = trust.get(remote) if networks else False
        if trusted is None:
            if len(trust) > 4096:
                trust.clear()
            trusted = trust[remote] = _trusted(remote, networks)
        environ["wsgistack.trusted_peer"] = trusted  # for the request id and access line
        if trusted:
            proto = _forwarded_scheme(environ)
            if proto in ("http", "https"):
                environ["wsgi.url_scheme"] = proto
        else:
            if not _FORWARDED_SET.isdisjoint(environ):
                for key in _FORWARDED_KEYS:
                    environ.pop(key, None)
            if "uwsgi.version" in environ:
                environ["wsgi.url_scheme"] = _own_scheme(environ)
        if environ.get("CONTENT_LENGTH") and "HTTP_TRANSFER_ENCODING" in environ:
            # A body with a known length (nginx de-chunks one and passes its length) is
            # read by that length: an app that believed the header (Werkzeug) read nothing.
            del environ["HTTP_TRANSFER_ENCODING"]
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if chunked and "uwsgi.version" in environ:
            import uwsgi  # only importable under uWSGI

            environ["wsgi.input"] = _ChunkedInput(_uwsgi_chunks(uwsgi.chunked_read))
            environ["wsgi.input_terminated"] = True
        if _handing_over:  # granian's reload: the client reconnects, to a new worker
            return app(environ, _closing(start_response))
        return app(environ, start_response)

    return uniform


_handing_over = False  # set by the grace signal: this worker is about to stop


def close_connections_on_signal() -> None:
    """Under wsgistack's granian (backends/granian_run.py), which sends WSGISTACK_GRACE_SIGNAL
    to an old worker once its replacement is serving: from then on every answer says
    `Connection: close`, so that a keep-alive client moves to the new worker between two
    requests rather than meet its connection closed under a request in flight."""
    import signal
    import threading

    signum = os.environ.get("WSGISTACK_GRACE_SIGNAL", "")
    if not signum.isdigit() or threading.current_thread() is not threading.main_thread():
        return

    def hand_over(_signum: int, _frame: Any) -> None:
        global _handing_over
        _handing_over = True

    signal.signal(int(signum), hand_over)


def _closing(start_response: Callable[..., Any]) -> Callable[..., Any]:
    def start(status: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
        return start_response(status, [*headers, ("Connection", "close")], *exc)

    return start


def _uwsgi_chunks(read: Callable[[], bytes]) -> Callable[[], bytes]:
    """uwsgi.chunked_read, whose OSError on a body it cannot de-chunk (a bad size, any
    chunk extension, a missing CRLF) becomes a 400, not the app's 500."""
    def next_piece() -> bytes:
        try:
            return read()
        except OSError as exc:
            raise RequestRefused(f"chunked body: uWSGI {exc}") from None

    return next_piece


def _shutdown_uwsgi_connection() -> None:
    import socket

    import uwsgi  # only importable under uWSGI

    # shutdown() acts on the connection shared with uWSGI's own fd; the duplicate is closed.
    with contextlib.suppress(OSError), socket.fromfd(
            uwsgi.connection_fd(), socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.shutdown(socket.SHUT_RDWR)
