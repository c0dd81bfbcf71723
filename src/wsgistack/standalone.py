"""An entry run as a command (`python ENTRY.py --host H --port P`): served by granian, the
embedded default, when it is installed, else by the standard library's wsgiref.

wsgiref alone hands the app the raw socket as wsgi.input: a chunked body arrived still
chunked, an app that read to EOF waited for ever (the client waits for the answer), and
`Expect: 100-continue` went unanswered. The handler here frames bodies as HTTP/1.1 says.
What follows the marker below is copied into every entry after the loader and framing.py,
whose names (_ChunkedInput, the strict chunk decoder) it uses; it stays standard-library only.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Any

from wsgistack.framing import BadFraming, chunk_reader, framing_error
from wsgistack.layers.common import _ChunkedInput
from wsgistack.loader import WSGIApp

# ---- copied into entries from here ----


class _BoundedInput:
    """wsgi.input that ends with the declared body: read() gives b"" after CONTENT_LENGTH
    bytes, where the socket would wait for more."""

    def __init__(self, stream: Any, length: int) -> None:
        self._stream, self._left = stream, length

    def read(self, size: int | None = -1) -> bytes:
        want = self._left if size is None or size < 0 else min(size, self._left)
        data: bytes = self._stream.read(want) if want else b""
        self._left -= len(data)
        return data

    def readline(self, size: int = -1) -> bytes:
        want = self._left if size is None or size < 0 else min(size, self._left)
        data: bytes = self._stream.readline(want) if want else b""
        self._left -= len(data)
        return data

    def readlines(self, hint: int = -1) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self) -> Any:
        return iter(self.readline, b"")


def framed_input(environ: dict[str, Any], rfile: Any, wfile_fd: int) -> Any:
    """The request body as the app should read it, per its framing; `Expect: 100-continue`
    is answered at once, as the other servers here do. Broken framing headers raise
    BadFraming (framing.py's rules), before anything is read."""
    error = framing_error(environ)
    if error is not None:
        raise error
    if environ.get("CONTENT_LENGTH") == "":  # wsgiref's for no field: as other servers, none
        del environ["CONTENT_LENGTH"]
    if "HTTP_TRANSFER_ENCODING" in environ:  # exactly `chunked`, framing_error says
        environ["wsgi.input_terminated"] = True
        stream: Any = _ChunkedInput(chunk_reader(rfile))
    else:
        stream = _BoundedInput(rfile, int(environ.get("CONTENT_LENGTH") or "0"))
    if environ.get("HTTP_EXPECT", "").lower() == "100-continue":
        with contextlib.suppress(OSError):
            os.write(wfile_fd, b"HTTP/1.1 100 Continue\r\n\r\n")
    return stream


def serve_wsgiref(app: WSGIApp, host: str, port: int, banner: str) -> None:
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer, make_server

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class Handler(WSGIRequestHandler):
        def handle(self) -> None:  # wsgiref's own, with the body framed
            self.raw_requestline = self.rfile.readline(65537)
            if len(self.raw_requestline) > 65536:
                self.send_error(414)
                return
            if not self.parse_request():
                return
            environ = self.get_environ()
            try:
                if len(set(self.headers.get_all("Content-Length") or ())) > 1:
                    raise BadFraming("two different Content-Length fields")  # wsgiref: the 1st
                stdin = framed_input(environ, self.rfile, self.connection.fileno())
            except BadFraming as exc:
                self.close_connection = True
                code, _, reason = exc.status.partition(" ")
                self.send_error(int(code), reason, f"bad request framing: {exc}")
                return
            handler = ServerHandler(stdin, self.wfile, self.get_stderr(),  # type: ignore[arg-type]
                                    environ, multithread=True)
            handler.request_handler = self  # type: ignore[attr-defined]
            handler.run(self.server.get_app())  # type: ignore[attr-defined]

        def log_message(self, fmt: str, *args: Any) -> None:
            sys.stderr.write(f"{self.address_string()} {fmt % args}\n")

    server = make_server(host, port, app, server_class=Server, handler_class=Handler)
    sys.stderr.write(f"{banner} (wsgiref)\n")
    sys.stderr.flush()
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


def serve(entry_file: str, app_args: list[str] | None, host: str, port: int, banner: str,
          app: WSGIApp) -> int:
    """granian when it is installed (its workers import the entry again: the app's own
    arguments reach them through WSGISTACK_APP_ARGS), else wsgiref in this process, with
    `app`, built already."""
    try:
        from granian import Granian  # type: ignore[import-not-found,unused-ignore]
        from granian.constants import Interfaces  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        serve_wsgiref(app, host, port, banner)
        return 0
    if app_args is not None:
        os.environ["WSGISTACK_APP_ARGS"] = json.dumps(app_args)  # [] too: no arguments
    module = os.path.splitext(os.path.basename(entry_file))[0]
    sys.stderr.write(f"{banner} (granian)\n")
    sys.stderr.flush()
    from pathlib import Path

    Granian(f"{module}:application", address=host, port=port, interface=Interfaces.WSGI,
            workers=1, working_dir=Path(entry_file).resolve().parent).serve()
    return 0
