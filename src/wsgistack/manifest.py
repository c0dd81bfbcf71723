"""The manifest: `wsgistack.toml` loaded once into frozen, typed objects.

Every setting is declared exactly once, as a dataclass field carrying its default and its
description; validation, "did you mean" and the settings reference (docs/settings.md) are all
derived from those declarations.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from wsgistack.errors import ManifestError, did_you_mean

MANIFEST_NAME = "wsgistack.toml"
EMBEDDED = "<embedded default>"
_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
# The stack's own processes, whose names share the services' (logs, status, units).
RESERVED = {"apache": "the Apache front end", "nginx": "the nginx front end",
            "metrics": "the metrics exporter"}


def setting(default: Any, doc: str, **rules: Any) -> Any:
    """Declare a setting: its default, its one-sentence description, and optional rules
    (``choices``, ``minimum``, ``maximum``, ``required``)."""
    meta = {"doc": doc, **rules}
    if isinstance(default, dict):
        return field(default_factory=lambda: types.MappingProxyType(dict(default)), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class StackConfig:
    """The `[stack]` table."""

    name: str = setting("wsgistack", "Name of the stack, used in logs, state and unit names.")
    backend: str = setting(
        "granian",
        "Server backend that runs every service (see `wsgistack render --help` for the list).",
    )
    host: str = setting("127.0.0.1", "Address every listener binds to.")
    public_host: str = setting(
        "", "Host name used in public URLs and the catalog (empty: the listen host)."
    )
    base_port: int = setting(
        8780,
        "First port: the front door with a front-end backend, else the first service's port; "
        "services without a `port` get the next numbers in manifest order, skipping those "
        "other services set (not those other programs hold: `up` names the holder).",
        minimum=1, maximum=65535,
    )
    extends: str = setting(
        "", "Another manifest in the same directory that this one builds on: its tables are "
        "merged under this one's, key by key, and a list or value given here replaces its "
        "own (e.g. one service on another database, with more processes). Each manifest "
        "file has its own state dir, so both can run side by side."
    )
    state_dir: str = setting(
        "", "Directory for rendered configs, pid files, logs and state (relative to the "
        "manifest). Empty: one per manifest, so several can share a directory: `.wsgistack` "
        "for `wsgistack.toml`, `.wsgistack-NAME` for a manifest `NAME.toml`, "
        "`.wsgistack-example` for the built-in example."
    )
    start_timeout: float = setting(
        60.0, "Seconds `up` waits for every service's health check to pass.", minimum=1
    )
    venv_python: str = setting(
        "", "Interpreter that creates service venvs (empty: Debian's /usr/bin/python3 when "
        "present, the one Debian's mod_wsgi and uWSGI embed, else the one running wsgistack)."
    )
    user: str = setting(
        "", "User every process that runs application code runs as when wsgistack is "
        "started as root (empty: the `wsgistack` system user, created when missing with "
        "`adduser --system --group`; `root` only when named, with a warning). Started as "
        "another user, everything runs as that user."
    )
    group: str = setting("", "Group of that user's processes (empty: the user's own group).")
    tls: Mapping[str, str] = setting(
        {}, "`[stack.tls]` with `cert` and `key` (PEM files, relative to the manifest): "
        "`wsgistack install` makes the front end serve HTTPS on the TLS port (443) and "
        "redirect plain HTTP there, except from this machine (health checks, services "
        "calling each other); the apps see the scheme as https."
    )
    access_log: str = setting(
        "combined", "One line per request for each service, the same on every backend, in "
        "`logs/NAME-access.log` (stdout in Kubernetes): `combined` (Apache's, with the "
        "duration in µs, the request id, the app's own request id and the service appended), "
        "`json`, or `off`.", choices=("combined", "json", "off"))
    log_health: bool = setting(
        False, "Also log (and count) wsgistack's own health checks in the access logs.")
    metrics: str = setting(
        "", "Where the stack's Prometheus metrics are served (`/metrics`, and `/rates` for "
        "`status`), by a process of its own beside the servers, never on the apps' URLs: "
        "`HOST:PORT`, `off`, or empty for 127.0.0.1 on `base_port` + 90.")
    trusted_proxies: tuple[str, ...] = setting(
        (), "Addresses or CIDRs (`10.0.0.5`, `10.0.0.0/24`) whose forwarded headers count: "
        "`Forwarded`, `X-Forwarded-For/-Proto/-Host/-Port/-Prefix/-Ssl`; from any other "
        "client they are removed before the app sees them (empty: from nobody; the stack's "
        "own front end passes the client's address itself)."
    )


@dataclass(frozen=True)
class ServiceConfig:
    """One `[services.NAME]` table."""

    name: str = setting("", "The table's name; set by the loader.", internal=True)
    app: str = setting(
        "",
        "App spec: `pkg.mod:app`, `pkg.mod:create_app()`, `paste:api-paste.ini#name`, a "
        "`.wsgi`/`.py` script path, or an entry point `ep:group:name`.",
        required=True,
    )
    prefix: str = setting(
        "/{name}", "URL prefix the service is mounted on (SCRIPT_NAME); `/` for the root."
    )
    port: int = setting(0, "Port of the service's own listener (0: assigned from base_port).",
                        minimum=0, maximum=65535)
    processes: int = setting(2, "Worker processes.", minimum=1)
    threads: int = setting(1, "Threads per worker process.", minimum=1)
    env: Mapping[str, str] = setting(
        {}, "Environment variables set before the app is imported (servers do not inherit the "
        "caller's environment: see `pass_env`); values may use `${variables}`, and "
        "`${file:PATH}` for a secret kept in a file."
    )
    args: tuple[str, ...] = setting(
        (), "The app's own `sys.argv[1:]` (the loader always gives the app a clean argv)."
    )
    working_dir: str = setting("", "Working directory of the app (empty: the manifest's).")
    python_path: tuple[str, ...] = setting(
        (), "Extra directories put on `sys.path` before the app is imported."
    )
    venv: str = setting(
        "", "Virtualenv the service runs from (empty: its own venv when `requirements` are "
        "given, else the interpreter running wsgistack)."
    )
    requirements: tuple[str, ...] = setting(
        (), "pip requirements installed into the service's own venv, created under the state "
        "dir and shared by services that ask for the same. Items may name files, relative to "
        "the manifest: `-r requirements.txt`, `-c constraints.txt`. The venv is keyed on what "
        "they resolve to (the files' contents and the Python): an edit is installed on the "
        "next `up` or `reload`."
    )
    requirements_file: str = setting(
        "", "A pip requirements file (relative to the manifest) for the service's own venv: "
        "the same as `-r FILE` in `requirements`."
    )
    templates: Mapping[str, str] = setting(
        {}, "Config files to render before start: target (relative to the state dir) = "
        "template (relative to the manifest), with `${variables}` substituted."
    )
    setup: tuple[str, ...] = setting(
        (), "One-off commands (shell words, `${variables}` substituted) run in order before "
        "the first start, with the service's env and venv; done again only when they change. "
        "Output goes to logs/NAME-setup.log."
    )
    after_up: tuple[str, ...] = setting(
        (), "Commands run in order on every `up` once the whole stack is healthy (register "
        "endpoints in a catalog, create service users), as `setup` is: shell words, "
        "`${variables}` substituted, the service's env, venv and user. They must be safe to "
        "run again. Output goes to logs/NAME-after_up.log; a failure stops the stack."
    )
    health_path: str = setting("/", "Path under the prefix that the health check requests.")
    health_status: int = setting(200, "HTTP status the health check expects.", minimum=100)
    max_body: int = setting(
        104857600, "Largest request body accepted, in bytes (0: no limit).", minimum=0
    )
    timeout: int = setting(60, "Seconds a request may take before the server gives up.", minimum=1)
    upload: bool = setting(
        False, "The service takes large or chunked uploads and reads them as they stream in "
        "(`wsgi.input_terminated`). Otherwise the entry reads a chunked body whole first "
        "and gives the app a `CONTENT_LENGTH`, as most apps need (Django reads nothing "
        "without one)."
    )
    static: Mapping[str, str] = setting(
        {}, "Static files: URL path under the prefix (`/static`) = directory (relative to the "
        "manifest; `${variables}` allowed). Served by the front end (Apache `Alias`, nginx "
        "`location`), granian's static mount or uWSGI's `static-map`; under gunicorn by "
        "WhiteNoise, which the service's venv must hold."
    )
    user: str = setting("", "User this service runs as, instead of `[stack] user`.")
    group: str = setting("", "Group this service runs in, instead of `[stack] group`.")
    env_files: tuple[str, ...] = setting(
        (), "Files of `KEY=VALUE` lines (relative to the manifest) added to `env`; their "
        "values are secrets. A file other users can read gets a warning."
    )
    secrets: tuple[str, ...] = setting(
        (), "Keys of `env` whose values are secrets, besides keys with a word PASSWORD, "
        "PASSWD, SECRET, TOKEN, KEY or CREDENTIAL(S) in them: shown as `***` in everything "
        "wsgistack prints or logs (values under 4 characters are too short to mask)."
    )
    clouds: str = setting(
        "", "For the stack's Keystone: a clouds.yaml template (relative to the manifest) that "
        "`up` writes to `STATE/clouds.yaml`, mode 0600 (the caller's alone), with this "
        "service's `${variables}`, as devstack writes its own: clouds `${stack}` (a member "
        "user and project) and `${stack}-admin`. Test commands and `wsgistack env` then get "
        "`OS_CLIENT_CONFIG_FILE` and `OS_CLOUD=<stack>-admin`.")
    needs: tuple[str, ...] = setting(
        (), "Other services of the stack whose files this one reads (their rendered "
        "templates, what their setup made: Nova's metadata API reads the compute API's "
        "nova.conf and databases). `check` and `serve`, which run one service alone, bring "
        "these up beside it."
    )
    pass_env: tuple[str, ...] = setting(
        (), "Variables of the caller's environment passed to the service. Servers otherwise "
        "start from a clean environment: `PATH`, `LANG`, `LC_ALL`, `TZ` (when set), the app "
        "user's `HOME`, and `env`."
    )


@dataclass(frozen=True)
class ClusterConfig:
    """The `[cluster]` table: the same stack on several nodes, HAProxy in front."""

    nodes: Mapping[str, str] = setting(
        {}, "The nodes: name = address (each runs this stack, on the same ports).")
    listen: str = setting(
        "127.0.0.1:9000", "Where HAProxy listens (`ADDRESS:PORT`): the stack's one front door.")
    command: str = setting(
        "", "How `wsgistack roll` reloads or upgrades a node: shell words with `{node}` and "
        "`{address}` filled in (e.g. `ssh {address} wsgistack reload`); it must exit 0 once "
        "the node serves the new version.")
    inter: int = setting(2000, "Milliseconds between HAProxy's health checks of a node's "
                         "service (`inter`).", minimum=100)
    rise: int = setting(2, "Checks in a row that put a node's service back (`rise`).",
                        minimum=1)
    fall: int = setting(2, "Checks in a row that take it out (`fall`).", minimum=1)
    drain_timeout: float = setting(
        30.0, "Seconds `roll` waits for a drained node's connections to end.", minimum=0)
    max_unavailable: int = setting(
        1, "Nodes `roll` takes out at once (`--max-unavailable` overrides).", minimum=1)


DEFAULT_TEST_BACKENDS = ("mod_wsgi", "apache+uwsgi")  # the goal's "under Apache"


@dataclass(frozen=True)
class TestConfig:
    """The `[test]` table: the project's own tests, run by `wsgistack test` against the
    stack on each backend."""

    __test__ = False  # not a pytest test class

    command: tuple[str, ...] = setting(
        (), "The test command (shell words, run from the manifest's directory with the "
        "stack's environment: `WSGISTACK_STACK`, `WSGISTACK_STATE_DIR`, "
        "`WSGISTACK_<SERVICE>_URL` and `_INTERNAL_URL`); `wsgistack test -- COMMAND` "
        "overrides it.")
    backends: tuple[str, ...] = setting(
        DEFAULT_TEST_BACKENDS, "Backends the command runs against, each in turn on a stack "
        "of its own (`all`: the six); `--backends` overrides it.")
    timeout: float = setting(
        1800.0, "Seconds the command may run on one backend before it is stopped (and counted "
        "as failed); `--timeout` overrides it.", minimum=1)
    env: Mapping[str, str] = setting(
        {}, "Environment variables of the command, over the caller's and the stack's.")
    results: str = setting(
        "", "A results file the command writes (JUnit XML or subunit; relative to the "
        "manifest): kept in each backend's artifacts.")


@dataclass(frozen=True)
class Manifest:
    """A loaded manifest: where it came from, the stack and its services in order."""

    path: str
    root: Path
    stack: StackConfig
    services: tuple[ServiceConfig, ...]
    cluster: ClusterConfig | None = None  # the `[cluster]` table, when there is one
    test: TestConfig = TestConfig()  # the `[test]` table

    @property
    def identity(self) -> str:
        """The manifest file, absolute (what a stack's state records as its owner)."""
        return EMBEDDED if self.path == EMBEDDED else str(self.root / Path(self.path).name)

    @property
    def state_path(self) -> Path:
        return (self.root / (self.stack.state_dir or default_state_dir(self.path))).resolve()

    def service(self, name: str) -> ServiceConfig:
        for svc in self.services:
            if svc.name == name:
                return svc
        raise ManifestError(
            self.path, f"services.{name}",
            "no such service" + did_you_mean(name, [s.name for s in self.services]),
        )


# The `${variables}` that env values, templates and setup commands may use, declared once.
VARIABLES = {
    "name": "the service's name",
    "stack": "the stack's name (`[stack] name`)",
    "state": "the absolute state directory",
    "data": "the service's data directory, `STATE/data/NAME`, owned by the user the app runs as",
    "manifest_dir": "the directory of the manifest",
    "url": "the service's public URL, without a trailing slash (`http://HOST:PORT/identity`)",
    "internal_url": "the URL other services and the health check reach it on: the listen "
                    "address rather than `public_host` (`http://127.0.0.1:PORT/identity`)",
    "front_url": "the front door's URL (`http://HOST:PORT`): the front end's port, or the "
                 "first port (`base_port`) when each service listens itself",
    "prefix": "the service's URL prefix (empty for the root)",
    "user": "the user the app runs as (see `[stack] user`)",
    "group": "that user's primary group",
    "venv": "the service's venv (its `sys.prefix`)",
    "python": "the service's interpreter",
    "services.NAME.url": "another service's `url`; likewise `services.NAME.internal_url` "
                         "and `services.NAME.prefix`, under every backend",
    "env.KEY": "the value of the service's own `env` key KEY (in templates and commands; a "
               "secret there stays one)",
    "file:PATH": "the text of the file PATH (relative to the manifest), without its final "
                 "line break: a secret, never shown",
    "secret:NAME": "a random password made on first use and kept in `STATE/secrets/NAME` "
                   "(root's alone): the same value wherever the stack names it, never shown",
}


def settings_of(cls: type[Any]) -> list[dataclasses.Field[Any]]:
    """The declared settings of a config class, in declaration order (internal ones left out)."""
    return [f for f in dataclasses.fields(cls) if not f.metadata.get("internal")]


def _hints(cls: type[Any]) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is tuple:
        return "list of strings"
    if origin is Mapping or origin is dict:
        return "table of strings"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}[tp]


def _coerce(value: Any, tp: Any, path: str, key: str) -> Any:
    def wrong() -> ManifestError:
        shown = f"'{value}'" if isinstance(value, str) else repr(value)
        return ManifestError(
            path, key, f"expected {type_name(tp)}, got {type(value).__name__} {shown}"
        )

    origin = typing.get_origin(tp)
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise wrong()
        return tuple(value)
    if origin is Mapping:
        if not isinstance(value, dict):
            raise wrong()
        out = {}
        for k, v in value.items():
            if isinstance(v, bool) or not isinstance(v, (str, int, float)):
                raise ManifestError(path, f"{key}.{k}", f"expected a string, got {v!r}")
            out[str(k)] = str(v)
        return types.MappingProxyType(out)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    # bool is an int subclass: `processes = true` must not pass as 1.
    if isinstance(value, bool) != (tp is bool) or not isinstance(value, tp):
        raise wrong()
    return value


def _build(cls: type[Any], table: Mapping[str, Any], path: str, where: str,
           extra: Mapping[str, Any]) -> Any:
    hints = _hints(cls)
    declared = {f.name: f for f in settings_of(cls)}
    kwargs: dict[str, Any] = dict(extra)
    for key, value in table.items():
        if key not in declared:
            raise ManifestError(
                path, f"{where}.{key}", "unknown key" + did_you_mean(key, declared)
            )
        fld = declared[key]
        value = _coerce(value, hints[key], path, f"{where}.{key}")
        if "choices" in fld.metadata and value not in fld.metadata["choices"]:
            raise ManifestError(path, f"{where}.{key}", f"must be one of {fld.metadata['choices']}")
        if "minimum" in fld.metadata and value < fld.metadata["minimum"]:
            raise ManifestError(
                path, f"{where}.{key}", f"must be at least {fld.metadata['minimum']}, got {value}"
            )
        if "maximum" in fld.metadata and value > fld.metadata["maximum"]:
            raise ManifestError(
                path, f"{where}.{key}", f"must be at most {fld.metadata['maximum']}, got {value}"
            )
        kwargs[key] = value
    for name, fld in declared.items():
        if fld.metadata.get("required") and name not in table:
            raise ManifestError(
                path, f"{where}.{name}", f"missing required key: {fld.metadata['doc']}"
            )
    return cls(**kwargs)


def _normalise_prefix(prefix: str, name: str, path: str) -> str:
    prefix = prefix.replace("{name}", name)
    if prefix in ("", "/"):
        return ""
    if not prefix.startswith("/") or prefix.endswith("/") or "//" in prefix or " " in prefix:
        raise ManifestError(
            path, f"services.{name}.prefix",
            f"'{prefix}' must start with '/' and not end with '/' (e.g. '/identity')",
        )
    return prefix


TABLES = ("stack", "services", "cluster", "test")


def parse(data: Mapping[str, Any], path: str, root: Path) -> Manifest:
    """Turn a parsed TOML document into a :class:`Manifest`, or raise a :class:`ManifestError`."""
    for key in data:
        if key not in TABLES:
            raise ManifestError(path, key, "unknown table" + did_you_mean(key, TABLES))
    stack_table = data.get("stack", {})
    if not isinstance(stack_table, dict):
        raise ManifestError(path, "stack", "expected a table ([stack])")
    stack: StackConfig = _build(StackConfig, stack_table, path, "stack", {})
    for key in stack.tls:
        if key not in ("cert", "key"):
            raise ManifestError(path, f"stack.tls.{key}",
                                "unknown key" + did_you_mean(key, ["cert", "key"]))
    if stack.tls and set(stack.tls) != {"cert", "key"}:
        missing = ({"cert", "key"} - set(stack.tls)).pop()
        raise ManifestError(path, f"stack.tls.{missing}", "missing: TLS needs both the "
                            "certificate (cert) and its private key (key)")
    for proxy in stack.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ManifestError(path, "stack.trusted_proxies", f"'{proxy}' is not an address "
                                "or a CIDR (e.g. '10.0.0.5' or '10.0.0.0/24')") from None
    if not _NAME_RE.match(stack.name):
        raise ManifestError(path, "stack.name", f"'{stack.name}' must match {_NAME_RE.pattern}")
    services_table = data.get("services", {})
    if not isinstance(services_table, dict) or not services_table:
        raise ManifestError(path, "services", "no services: add a [services.NAME] table")
    services = []
    for name, table in services_table.items():
        if not _NAME_RE.match(name):
            raise ManifestError(
                path, f"services.{name}", f"service names must match {_NAME_RE.pattern}"
            )
        if name in RESERVED:
            raise ManifestError(path, f"services.{name}", f"'{name}' is the name of "
                                f"{RESERVED[name]}'s process; name the service otherwise")
        if not isinstance(table, dict):
            raise ManifestError(path, f"services.{name}", "expected a table")
        svc: ServiceConfig = _build(ServiceConfig, table, path, f"services.{name}", {"name": name})
        svc = dataclasses.replace(svc, prefix=_normalise_prefix(svc.prefix, name, path))
        services.append(svc)
    _check_unique(services, path)
    return Manifest(path=path, root=root, stack=stack, services=tuple(services),
                    cluster=_cluster(data.get("cluster"), path), test=_test(data.get("test"), path))


def _test(table: Any, path: str) -> TestConfig:
    if table is None:
        return TestConfig()
    if not isinstance(table, dict):
        raise ManifestError(path, "test", "expected a table ([test])")
    test: TestConfig = _build(TestConfig, table, path, "test", {})
    if not test.backends:
        raise ManifestError(path, "test.backends", "no backends: name at least one, or \"all\"")
    return test


def _cluster(table: Any, path: str) -> ClusterConfig | None:
    if table is None:
        return None
    if not isinstance(table, dict):
        raise ManifestError(path, "cluster", "expected a table ([cluster])")
    cluster: ClusterConfig = _build(ClusterConfig, table, path, "cluster", {})
    if not cluster.nodes:
        raise ManifestError(path, "cluster.nodes", "no nodes: add `nodes = { n1 = "
                            "\"10.0.0.11\", ... }`")
    for name, address in cluster.nodes.items():
        if not _NAME_RE.match(name):
            raise ManifestError(path, f"cluster.nodes.{name}",
                                f"node names must match {_NAME_RE.pattern}")
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ManifestError(path, f"cluster.nodes.{name}", f"'{address}' is not an IP "
                                "address") from None
    host, _, port = cluster.listen.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ManifestError(path, "cluster.listen", f"'{cluster.listen}' is not ADDRESS:PORT "
                            "(e.g. '0.0.0.0:80')")
    return cluster


def _check_unique(services: list[ServiceConfig], path: str) -> None:
    seen_prefix: dict[str, str] = {}
    seen_port: dict[int, str] = {}
    for svc in services:
        if svc.prefix in seen_prefix:
            raise ManifestError(
                path, f"services.{svc.name}.prefix",
                f"'{svc.prefix or '/'}' is already the prefix of service "
                f"'{seen_prefix[svc.prefix]}'; give each service its own prefix",
            )
        seen_prefix[svc.prefix] = svc.name
        if svc.port and svc.port in seen_port:
            raise ManifestError(
                path, f"services.{svc.name}.port",
                f"{svc.port} is already the port of service '{seen_port[svc.port]}'",
            )
        seen_port[svc.port] = svc.name
    names = [svc.name for svc in services]
    for svc in services:
        for need in svc.needs:
            if need not in names or need == svc.name:
                raise ManifestError(
                    path, f"services.{svc.name}.needs",
                    f"'{need}' is not another service of the stack"
                    + did_you_mean(need, [n for n in names if n != svc.name]))
    clouds = [svc.name for svc in services if svc.clouds]
    if len(clouds) > 1:
        raise ManifestError(path, f"services.{clouds[1]}.clouds", "the stack has one "
                            f"clouds.yaml, and service '{clouds[0]}' writes it already")


def _read(path: Path, shown: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(shown, "-", "file not found; create it or pass -f PATH") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(shown, "-", f"cannot read: {exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(shown, "-", f"not valid TOML: {exc}") from None


def _merged(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = (_merged(out[key], value) if isinstance(value, dict)
                    and isinstance(out.get(key), dict) else value)
    return out


def _with_bases(data: dict[str, Any], path: Path, shown: str,
                seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """`data` over the manifests it extends (`[stack] extends`), in order."""
    stack = data.get("stack")
    extends = stack.get("extends") if isinstance(stack, dict) else None
    if not extends:
        return data
    if not isinstance(extends, str):
        raise ManifestError(shown, "stack.extends", "expected a file name")
    base = (path.parent / extends).resolve()
    if base in (path.resolve(), *seen):
        raise ManifestError(shown, "stack.extends", f"{extends} extends this manifest again")
    if base.parent != path.resolve().parent:
        # Paths in both are read from this manifest's directory: one directory keeps them
        # meaning the same.
        raise ManifestError(shown, "stack.extends", f"{extends} is in another directory; "
                            "extend a manifest beside this one")
    if not base.is_file():
        raise ManifestError(shown, "stack.extends", f"no manifest {base}; fix the name (it is "
                            "relative to this manifest)")
    base_data = _with_bases(_read(base, str(base)), base, str(base), (*seen, path.resolve()))
    return _merged(base_data, data)


def load(path: Path) -> Manifest:
    """Load a manifest file (over the one it extends, if any)."""
    shown = str(path)
    data = _with_bases(_read(path, shown), path, shown)
    return parse(data, shown, path.resolve().parent)


def default_state_dir(manifest_path: str) -> str:
    """Each manifest file its own state dir, so two manifests in one directory never share
    processes, locks or logs."""
    if manifest_path == EMBEDDED:
        return ".wsgistack-example"
    name = Path(manifest_path).name
    return ".wsgistack" if name == MANIFEST_NAME else f".wsgistack-{name.removesuffix('.toml')}"


def load_default(cwd: Path) -> Manifest:
    """The embedded example stack; its state lives under the current directory."""
    text = resources.files("wsgistack").joinpath("default.toml").read_text(encoding="utf-8")
    return parse(tomllib.loads(text), EMBEDDED, cwd.resolve())


def find(explicit: str | None, cwd: Path) -> Manifest:
    """The manifest named with -f, else ./wsgistack.toml, else the embedded default."""
    if explicit:
        return load(Path(explicit))
    here = cwd / MANIFEST_NAME
    return load(here) if here.exists() else load_default(cwd)


def settings_reference() -> str:
    """The Markdown settings reference, generated from the declarations above."""
    lines = ["# Manifest settings", "",
             "Generated from `src/wsgistack/manifest.py` by `wsgistack settings`; do not edit.", ""]
    for title, cls in (("[stack]", StackConfig), ("[services.NAME]", ServiceConfig),
                       ("[cluster]", ClusterConfig), ("[test]", TestConfig)):
        hints = _hints(cls)
        lines += [f"## `{title}`", "", "| key | type | default | description |",
                  "| --- | --- | --- | --- |"]
        for fld in settings_of(cls):
            if fld.metadata.get("required"):
                default = "required"
            elif fld.default_factory is not dataclasses.MISSING:
                default = "`{}`"
            else:
                default = f"`{fld.default!r}`".replace("'", '"')
            kind, doc = type_name(hints[fld.name]), fld.metadata["doc"]
            lines.append(f"| `{fld.name}` | {kind} | {default} | {doc} |")
        lines.append("")
    lines += ["## `${variables}`", "",
              "Usable in `env` values, `templates`, `static` directories, `setup` and `after_up` "
              "commands (`$$` is a literal `$`).",
              "", "| variable | value |", "| --- | --- |"]
    lines += [f"| `${{{k}}}` | {v} |" for k, v in VARIABLES.items()]
    lines.append("")
    return "\n".join(lines)
