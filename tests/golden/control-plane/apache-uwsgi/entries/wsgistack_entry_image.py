: the service this entry serves ----
import argparse as _argparse
import threading as _threading

SPEC = 'paste:/etc/glance/glance-api-paste.ini#glance-api'
NAME = 'image'
ENV = {'WSGISTACK_CATALOG': '{"services": [{"health_status": 200, "health_url": "http://127.0.0.1:9000/", "name": "catalog", "prefix": "", "self": true, "server": "apache+uwsgi", "url": "http://127.0.0.1:9000/"}, {"health_status": 200, "health_url": "http://127.0.0.1:9000/identity/v3", "name": "identity", "prefix": "/identity", "self": false, "server": "apache+uwsgi", "url": "http://127.0.0.1:9000/identity/"}, {"health_status": 200, "health_url": "http://127.0.0.1:9000/image/", "name": "image", "prefix": "/image", "self": false, "server": "apache+uwsgi", "url": "http://127.0.0.1:9000/image/"}], "stack": "cp"}'}
ARGS = []
PYTHON_PATH = []
WORKING_DIR = '/srv/cp'
MOUNT = '/image'
MAX_BODY = 0

_lock = _threading.Lock()
_app = None


def get_application(args=None):
    """Build the app once, under a lock: a concurrent double init breaks some apps."""
    global _app
    with _lock:
        if _app is None:
            built = load_app(
                SPEC, argv0=NAME, args=ARGS if args is None else args, env=ENV,
                python_path=PYTHON_PATH, working_dir=WORKING_DIR,
            )
            if os.environ.get("WSGISTACK_VALIDATE"):  # `wsgistack check`: PEP 3333 checks
                from wsgiref.validate import validator
                built = validator(built)
            _app = server_quirks(limit_body(mount(built, MOUNT), MAX_BODY))
    return _app


def _serve(host, port, app):
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    class _Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class _Quiet(WSGIRequestHandler):
        def log_message(self, fmt, *a):
            sys.stderr.write("%s %s\n" % (self.address_string(), fmt % a))

    server = make_server(host, port, app, server_class=_Server, handler_class=_Quiet)
    sys.stderr.write("serving %s (%s) on http://%s:%d%s/\n" % (NAME, SPEC, host, port, MOUNT))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


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
        sys.stderr.write("error: %s\n" % exc)
        return 1
    if opts.check:
        sys.stdout.write("ok: %s loads %r\n" % (SPEC, app))
        return 0
    return _serve(opts.host, opts.port, app)


if __name__ == "__main__":
    sys.exit(main())
else:
    application = get_application()
