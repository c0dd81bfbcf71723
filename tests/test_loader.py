from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from tests.conftest import FIXTURES
from wsgistack.layers.failures import APP_FAILED, uniform_errors
from wsgistack.layers.limits import limit_body
from wsgistack.layers.mount import mount
from wsgistack.layers.quirks import server_quirks
from wsgistack.layers.spool import spool_chunked
from wsgistack.layers.watchdog import watch_requests
from wsgistack.loader import SpecError, load_app, parse_spec


def call(app, path="/", script_name="", **extra):
    seen = {}

    def start_response(status, headers):
        seen["status"] = status

    environ = {"PATH_INFO": path, "SCRIPT_NAME": script_name, "wsgi.url_scheme": "http",
               "HTTP_HOST": "h:1", **extra}
    body = b"".join(app(environ, start_response))
    return seen["status"], body


def test_parse_forms():
    assert parse_spec("pkg.mod:app").kind == "module"
    assert parse_spec("pkg.mod").attr == "application"
    spec = parse_spec("pkg.mod:make(1, 'x', debug=True)")
    assert (spec.attr, spec.args, spec.kwargs) == ("make", (1, "x"), {"debug": True})
    assert parse_spec("paste:etc/api-paste.ini#public")[1:3] == ("etc/api-paste.ini", "public")
    assert parse_spec("paste:api-paste.ini").attr == "main"
    assert parse_spec("bin/app.wsgi").kind == "script"
    assert parse_spec("ep:wsgi_scripts:keystone-wsgi-public")[1:3] == (
        "wsgi_scripts", "keystone-wsgi-public")


@pytest.mark.parametrize(("spec", "message"), [
    ("", "app spec is empty"),
    ("pkg.mod:make(open('x'))", r"arguments of make\(\) must be literals"),
    ("pkg.mod:1+2", "'1\\+2' is not an attribute or a call"),
    ("not a module:app", "is neither a module name nor a .wsgi/.py file"),
    ("ep:nogroup", "entry points are written ep:GROUP:NAME"),
])
def test_parse_errors(spec, message):
    with pytest.raises(SpecError, match=message):
        parse_spec(spec)


@pytest.mark.usefixtures("clean_sampleapp")
def test_module_attribute_gets_clean_argv_and_env(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["gunicorn", "--workers", "4", "x:y"])
    monkeypatch.delenv("SAMPLE_SETTING", raising=False)
    app = load_app("sampleapp:application", argv0="keystone", args=["--debug"],
                   env={"SAMPLE_SETTING": "from-manifest"})
    doc = json.loads(call(app)[1])
    assert doc["argv"] == ["keystone", "--debug"]
    assert doc["env"] == "from-manifest"
    monkeypatch.delenv("SAMPLE_SETTING")


@pytest.mark.usefixtures("clean_sampleapp")
def test_dotted_attribute():
    assert json.loads(call(load_app("sampleapp:Holder.inner"))[1])["app"] == "module"


@pytest.mark.usefixtures("clean_sampleapp")
def test_factory_with_literal_arguments():
    app = load_app("sampleapp:create_app('yo', repeat=2)")
    assert json.loads(call(app)[1]) == {"app": "factory", "greeting": "yoyo"}


@pytest.mark.usefixtures("clean_sampleapp")
def test_paste_deploy_named_app():
    app = load_app(f"paste:{FIXTURES / 'api-paste.ini'}#other")
    assert json.loads(call(app)[1]) == {"app": "paste", "conf": {"color": "green"}}


@pytest.mark.usefixtures("clean_sampleapp")
def test_script_file():
    app = load_app(str(FIXTURES / "script.wsgi"))
    assert json.loads(call(app)[1]) == {"app": "script"}


@pytest.mark.usefixtures("clean_sampleapp")
def test_entry_points_app_and_factory():
    plain = load_app("ep:wsgistack.test_apps:plain")
    assert json.loads(call(plain)[1])["app"] == "module"
    # pbr's wsgi_scripts entry points name a function that builds the app.
    built = load_app("ep:wsgi_scripts:sample-api")
    assert json.loads(call(built)[1]) == {"app": "factory", "greeting": "hi"}


@pytest.mark.usefixtures("clean_sampleapp")
@pytest.mark.parametrize(("spec", "message"), [
    ("broken:application",
     r"cannot load app 'broken:application': ModuleNotFoundError: No module named "
     r"'no_such_dependency_xyz'"),
    ("sampleapp:nothing_here", "module 'sampleapp' has no attribute 'nothing_here'"),
    ("sampleapp:fail_at_call()", "RuntimeError: database is not configured"),
    ("sampleapp:ARGV_AT_IMPORT", "names a list, not a WSGI callable"),
    ("ep:wsgi_scripts:nope", "no entry point 'nope' in group 'wsgi_scripts'"),
    ("paste:/no/such.ini", "no such paste ini file /no/such.ini"),
    ("/no/such/app.wsgi", "no such script file /no/such/app.wsgi"),
])
def test_load_errors_are_one_line(spec, message):
    with pytest.raises(SpecError, match=message) as info:
        load_app(spec)
    assert "\n" not in str(info.value)


def test_mount_splits_prefix_and_refuses_outside():
    inner = lambda environ, sr: (sr("200 OK", []), [  # noqa: E731
        f"{environ['SCRIPT_NAME']}|{environ['PATH_INFO']}".encode()])[1]
    app = mount(inner, "/identity")
    assert call(app, "/identity/v3") == ("200 OK", b"/identity|/v3")
    assert call(app, "/identity") == ("200 OK", b"/identity|")
    assert call(app, "/identityx")[0].startswith("404")
    assert call(app, "/other")[0].startswith("404")


def test_limit_body():
    inner = lambda environ, sr: (sr("200 OK", []), [b"ok"])[1]  # noqa: E731
    app = limit_body(inner, 10)
    assert call(app, CONTENT_LENGTH="10") == ("200 OK", b"ok")
    assert call(app, CONTENT_LENGTH="11")[0].startswith("413")


@pytest.mark.parametrize("drain", [False, True])
def test_limit_body_stops_a_chunked_body_as_it_is_read(drain):
    import io

    def reader(environ, start_response):
        body = environ["wsgi.input"].read()
        start_response("200 OK", [])
        return [body]

    app = limit_body(reader, 10, drain)
    for size, expected in ((10, "200 OK"), (11, "413 Request Entity Too Large")):
        stream = io.BytesIO(b"x" * size + (b"y" * 100_000 if size > 10 else b""))
        seen: list[str] = []
        body = b"".join(app({"wsgi.input": stream}, lambda s, h, *e, seen=seen: seen.append(s)))
        assert seen == [expected]
        assert (body == b"x" * 10) == (size == 10)
        # Drained: the rest of the body is read before the answer (a streaming proxy is
        # still sending it); not drained: what was left stays unread.
        assert (stream.read() == b"") == (drain or size == 10)


def test_loader_imports_only_the_standard_library():
    source = Path(sys.modules[load_app.__module__].__file__).read_text()
    assert "wsgistack" not in "".join(
        line for line in source.splitlines() if line.startswith(("import", "from")))


def _seen(trusted: list[str], remote: str, headers: dict[str, str],
          **environ: str) -> dict[str, object]:
    """The environ an app sees behind server_quirks, from `remote` with `headers`."""
    got: dict[str, object] = {}

    def app(env, start_response):
        got.update(env)
        start_response("200 OK", [])
        return [b""]

    env = {"REMOTE_ADDR": remote, "wsgi.url_scheme": "http", **environ,
           **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()}}
    server_quirks(app, trusted)(env, lambda *a: None)
    return got


@pytest.mark.parametrize("headers", [
    {"X-Forwarded-Proto": "https"}, {"Forwarded": 'for=1.2.3.4;proto="https"'},
    {"X-Forwarded-Ssl": "on"}, {"Front-End-Https": "on"}, {"X-Url-Scheme": "https"},
])
def test_forwarded_scheme_counts_only_from_a_trusted_proxy(headers):
    trusted = ["10.0.0.0/24", "2001:db8::1"]
    for remote in ("10.0.0.9", "::ffff:10.0.0.9", "2001:db8::1"):
        seen = _seen(trusted, remote, headers)
        assert seen["wsgi.url_scheme"] == "https", remote
        assert all(("HTTP_" + k.upper().replace("-", "_")) in seen for k in headers)
    for remote in ("10.0.1.9", "127.0.0.1", "2001:db8::2", "", "not-an-address"):
        seen = _seen(trusted, remote, {**headers, "X-Forwarded-For": "1.2.3.4"})
        assert seen["wsgi.url_scheme"] == "http", remote
        assert not [k for k in seen if "FORWARDED" in k or k in (
            "HTTP_X_URL_SCHEME", "HTTP_FRONT_END_HTTPS")], remote


def test_no_trusted_proxy_means_nobody_and_uwsgi_scheme_is_reset():
    # uWSGI sets wsgi.url_scheme from X-Forwarded-Proto itself; the front end's HTTPS stays.
    seen = _seen([], "127.0.0.1", {"X-Forwarded-Proto": "https"},
                 **{"wsgi.url_scheme": "https", "uwsgi.version": "2.0"})
    assert seen["wsgi.url_scheme"] == "http"
    seen = _seen([], "127.0.0.1", {}, HTTPS="on", **{"uwsgi.version": "2.0"})
    assert seen["wsgi.url_scheme"] == "https"


def test_a_body_with_a_length_is_not_also_chunked():
    # nginx de-chunks a body, passes its length and the client's Transfer-Encoding too.
    seen = _seen([], "127.0.0.1", {"Transfer-Encoding": "chunked"}, CONTENT_LENGTH="5")
    assert seen["CONTENT_LENGTH"] == "5" and "HTTP_TRANSFER_ENCODING" not in seen
    seen = _seen([], "127.0.0.1", {"Transfer-Encoding": "chunked"})
    assert seen["HTTP_TRANSFER_ENCODING"] == "chunked"


@pytest.mark.usefixtures("clean_sampleapp")
def test_django_style_module_named_wsgi_and_a_script_file_by_that_name(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "site1").mkdir()
    (tmp_path / "site1" / "__init__.py").write_text("")
    (tmp_path / "site1" / "wsgi.py").write_text(
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [])\n    return [b'django-ish']\n")
    (tmp_path / "here.wsgi").write_text(
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [])\n    return [b'script']\n")
    assert parse_spec("site1.wsgi:application").kind == "module"
    assert call(load_app("site1.wsgi:application", working_dir=str(tmp_path)))[1] == \
        b"django-ish"
    # A file by that name in the working dir is the script.
    assert call(load_app("here.wsgi", working_dir=str(tmp_path)))[1] == b"script"
    with pytest.raises(SpecError, match=r"^app spec 'gone\.wsgi': 'gone\.wsgi' is neither a "
                       rf"file in {tmp_path} nor an importable module \(No module named "):
        load_app("gone.wsgi", working_dir=str(tmp_path))


def test_behind_apaches_http_proxy_the_client_is_its_last_hop():
    got: dict[str, object] = {}

    def app(env, start_response):
        got.update(env)
        start_response("200 OK", [])
        return [b""]

    env = {"REMOTE_ADDR": "", "REMOTE_PORT": "0", "SERVER_NAME": "vm", "SERVER_PORT": "80",
           "HTTP_HOST": "api.example:8780", "wsgi.url_scheme": "http",
           # A trusted proxy (127.0.0.2) sent the first hop; Apache appended the second.
           "HTTP_X_FORWARDED_FOR": "203.0.113.9, 127.0.0.2", "HTTP_X_FORWARDED_PROTO": "https",
           "HTTP_X_FORWARDED_HOST": "api.example:8780", "HTTP_X_FORWARDED_SERVER": "127.0.0.1"}
    server_quirks(app, ["127.0.0.2"], http_proxied=True)(env, lambda *a: None)
    assert (got["REMOTE_ADDR"], got["HTTP_X_FORWARDED_FOR"], got["wsgi.url_scheme"]) == (
        "127.0.0.2", "203.0.113.9", "https")
    assert (got["SERVER_NAME"], got["SERVER_PORT"]) == ("api.example", "8780")
    assert "REMOTE_PORT" not in got and "HTTP_X_FORWARDED_SERVER" not in got
    # From anyone else, Apache's own hop is all there is: the client's address.
    got.clear()
    env = {"HTTP_HOST": "h", "wsgi.url_scheme": "http", "HTTP_X_FORWARDED_FOR": "198.51.100.4"}
    server_quirks(app, ["127.0.0.2"], http_proxied=True)(env, lambda *a: None)
    assert (got["REMOTE_ADDR"], got["SERVER_NAME"], got["SERVER_PORT"]) == (
        "198.51.100.4", "h", "80")
    assert "HTTP_X_FORWARDED_FOR" not in got


def test_a_chunked_body_is_spooled_and_given_a_length():
    seen = {}

    def app(env, start_response):
        seen.update(env, body=env["wsgi.input"].read(int(env["CONTENT_LENGTH"])))
        start_response("200 OK", [])
        return [b""]

    body = b"x" * (3 << 20)  # past what is kept in memory
    env = {"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input": io.BytesIO(body),
           "wsgi.input_terminated": True}
    result = spool_chunked(app, max_body=4 << 20)(env, lambda *a: None)
    result.close()
    assert (seen["CONTENT_LENGTH"], seen["body"] == body) == (str(len(body)), True)
    assert "HTTP_TRANSFER_ENCODING" not in seen and "wsgi.input_terminated" not in seen
    status = []
    spool_chunked(app, max_body=1024)({"HTTP_TRANSFER_ENCODING": "chunked",
                                       "wsgi.input": io.BytesIO(body)},
                                      lambda s, h: status.append(s))
    assert status == ["413 Request Entity Too Large"]


def test_an_exception_out_of_the_app_is_one_500_until_the_body_has_begun():
    import io

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        if environ["PATH_INFO"] == "/call":
            raise KeyError("at call")

        def body():
            if environ["PATH_INFO"] == "/late":
                yield b"part"
            raise ValueError("in the body")
        return body()

    wrapped = uniform_errors(app)
    for path, error in (("/call", "KeyError: 'at call'"), ("/first", "ValueError: in the body")):
        errors, seen = io.StringIO(), []
        env = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "wsgi.errors": errors}

        def start(status, headers, exc=None, seen=seen):
            seen.append((status, exc is not None))

        body = b"".join(wrapped(env, start))
        assert (seen[-1], body) == (("500 Internal Server Error", True), APP_FAILED)
        assert f"wsgistack: GET {path}: the app raised" in errors.getvalue()
        assert error in errors.getvalue()
    # Once part of the body is out, only the server can end it: the exception goes on.
    late = wrapped({"PATH_INFO": "/late", "REQUEST_METHOD": "GET", "wsgi.errors": io.StringIO()},
                   lambda s, h, exc=None: None)
    with pytest.raises(ValueError, match="in the body"):
        list(late)


def test_a_whole_answer_goes_through_the_layers_as_the_apps_own_list():
    """granian sends a list in one write and iterates anything else from Rust, a chunk at a
    time: the entry's layers must hand the app's list on, not a wrapper of it."""
    from wsgistack.framing import strict_framing
    from wsgistack.observe import observe

    closed = []

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "2")])
        if environ["PATH_INFO"] == "/list":
            return [b"ok"]

        def pieces():
            try:
                yield b"ok"
            finally:
                closed.append(True)
        return pieces()

    # As entry.py stacks them, with a timeout (the watchdog on) and an access log.
    inner = mount(uniform_errors(app), "/p")
    layered = watch_requests(limit_body(inner, 1 << 20), 60)
    entry = strict_framing(server_quirks(observe(layered, "s", "/dev/null"), ()))
    env = {"REQUEST_METHOD": "GET", "PATH_INFO": "/p/list", "SERVER_PROTOCOL": "HTTP/1.1",
           "wsgi.input": io.BytesIO()}
    answer = entry(dict(env), lambda *a: None)
    assert type(answer) is list and answer == [b"ok"]
    streamed = entry({**env, "PATH_INFO": "/p/gen"}, lambda *a: None)
    assert type(streamed) is not list and next(iter(streamed)) == b"ok" and not closed
    streamed.close()  # the server's close reaches the app's generator through every layer
    assert closed == [True]
