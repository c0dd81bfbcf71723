"""Read a source tree, never import or run it, and collect findings with file and line.

Speed comes from reading each file once and parsing (ast) only the Python files whose text
holds something a finding needs; imports are read with a regular expression, which is
enough to follow the project's own import graph from its WSGI entry points.
"""

from __future__ import annotations

import ast
import configparser
import os
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SKIP_DIRS = {".git", ".hg", ".tox", ".nox", ".venv", "venv", "node_modules", "__pycache__",
             "build", "dist", ".eggs", "site-packages", "releasenotes"}
TEXT_SUFFIXES = {".py", ".wsgi", ".cfg", ".ini", ".toml", ".conf", ".template", ".j2", ".tmpl",
                 ".rst", ".md", ".txt", ".sh", ".in"}
MAX_BYTES = 2_000_000


@dataclass(frozen=True)
class Finding:
    kind: str  # see KINDS
    file: str  # relative to the tree
    line: int
    detail: str


# Every finding kind, its group, and what it means. Groups decide the verdict.
KINDS = {
    "wsgi-script": ("entry", "wsgi_scripts entry point"),
    "wsgi-script-broken": ("broken", "wsgi_scripts entry point whose module is not in the tree"),
    "wsgi-module": ("entry", "module-level `application` a WSGI server can load"),
    "wsgi-module-empty": ("broken", "WSGI file that defines no `application`"),
    "paste-app": ("entry", "paste.deploy pipeline loaded into `application`"),
    "paste-config": ("hint", "paste.deploy pipeline configuration"),
    "server-config": ("hint", "Apache/uWSGI/nginx configuration serving a WSGI app"),
    "devstack": ("hint", "devstack deploys the API through Apache/uWSGI"),
    "docs": ("hint", "documentation of a mod_wsgi/uWSGI deployment"),
    "command-server": ("command", "the API is served by a Python command"),
    "websocket-server": ("transport", "a websocket server: a transport of its own beside the "
                                      "WSGI API, not WSGI (WSGI cannot hold a connection open)"),
    "console-script": ("hint", "console script"),
    "monkey-patch": ("blocker", "eventlet.monkey_patch() reached from the API's import path"),
    "import-state": ("risk", "state created at import time that does not survive fork"),
    "argv-config": ("risk", "configuration read from sys.argv on the API's import path"),
    "server-environ": ("risk", "server-specific environ key"),
    "config-argv-only": ("blocker", "config files can only be passed on the command line"),
}

COMMAND_SERVERS = [  # (regex on source, what it is)
    (re.compile(r"\beventlet\.wsgi\.server\s*\(|\bwsgi\.server\s*\(\s*eventlet"),
     "eventlet.wsgi.server"),
    (re.compile(r"\bwsgi\.Server\s*\(|\bWSGIService\s*\(|\bwsgi\.Loader\s*\("),
     "oslo.service wsgi.Server/launch"),
    (re.compile(r"\bmake_server\s*\(|\bsimple_server\.\w+\s*\("), "wsgiref.simple_server"),
    (re.compile(r"\brun_simple\s*\("), "werkzeug run_simple"),
    (re.compile(r"\breactor\.run\s*\("), "Twisted reactor"),
    (re.compile(r"\bIOLoop\.(current|instance)\s*\(\s*\)\s*\.start\s*\("), "tornado IOLoop"),
    (re.compile(r"\bweb\.run_app\s*\("), "aiohttp web.run_app"),
]
# oslo.service's launch() starts any service: an RPC agent or worker (neutron's agents,
# designate's central) as well as an API. It serves HTTP only where the same file builds a
# WSGI server or app.
LAUNCH = re.compile(r"\bservice\.launch\s*\(|\blaunch_service\s*\(")
WSGI_NEARBY = re.compile(r"\bWSGIService\b|\bwsgi\.Server\b|\bwsgi\.Loader\b|\bloadapp\b|"
                         r"\bload_paste_app\b|\bwsgi_app\b")
# A websocket server (zaqar's autobahn transport, the `websockets` library): run as its own
# process next to the WSGI API, never by a WSGI server, so it is neither an entry nor a
# command that a WSGI entry ought to mirror.
WEBSOCKET_SERVER = re.compile(r"\bWebSocketServer(?:Factory|Protocol)\b|"
                              r"\bwebsockets\.(?:asyncio\.server\.)?serve\s*\(")
APP_RUN = re.compile(r"^\s*\w+\.run\s*\(.*\b(host|port|debug)\s*=", re.M)
# In a console script's module, `app.run(host, port)` of a project built on a framework
# (kuryr-libnetwork's plugin endpoint for Docker): its HTTP API, served by a command.
SCRIPT_APP_RUN = re.compile(r"^\s*\w*app(?:lication)?\.run\s*\(", re.M)
FRAMEWORKS = re.compile(r"^\s*(?:from|import)\s+(flask|pecan|falcon|bottle|django|pyramid)\b",
                        re.M)
IMPORT_RE = re.compile(r"^\s*(?:from\s+([\w.]+)\s+import\s+([\w, ()]+)|import\s+([\w., ]+))",
                       re.M)
IMPORT_STATE = re.compile(
    r"^(?:\w+\s*=\s*)?(?:[\w.]+\.)?(Thread|ThreadPoolExecutor|ProcessPoolExecutor|Pool|"
    r"create_engine|socket|GreenPool|Timer)\s*\(", re.M)
SERVER_ENVIRON = re.compile(r"""['"]((?:eventlet|gunicorn|uwsgi|mod_wsgi)\.[\w.]+)['"]""")
SERVER_DIRECTIVES = re.compile(
    r"^\s*(WSGIScriptAlias\b|WSGIDaemonProcess\b|wsgi-file\s*=|module\s*=|uwsgi_pass\b).*", re.M)
DEVSTACK = re.compile(r"\b(write_uwsgi_config|WSGIScriptAlias|write_local_uwsgi_http_config|"
                      r"configure_mod_wsgi|enable_apache_site)\b")
DOCS = re.compile(r"\b(mod_wsgi|WSGIScriptAlias|uWSGI|uwsgi --|gunicorn)\b")


@dataclass
class Tree:
    """What was read of one tree: text files, Python modules by dotted name."""

    root: Path
    texts: dict[str, str] = field(default_factory=dict)  # relative path -> text
    modules: dict[str, str] = field(default_factory=dict)  # dotted name -> relative path
    findings: list[Finding] = field(default_factory=list)

    def add(self, kind: str, file: str, line: int, detail: str) -> None:
        self.findings.append(Finding(kind, file, line, detail))


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.endswith(
            ".egg-info"))
        for name in sorted(filenames):
            yield Path(dirpath, name)


def read_tree(root: Path) -> Tree:
    tree = Tree(root)
    for path in _walk(root):
        if path.suffix not in TEXT_SUFFIXES and path.name not in ("setup.py", "setup.cfg"):
            continue
        try:
            if path.stat().st_size > MAX_BYTES:
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        rel = path.relative_to(root).as_posix()
        tree.texts[rel] = text
        if path.suffix == ".py":
            tree.modules[module_name(rel)] = rel
    return tree


def module_name(rel: str) -> str:
    parts = rel[:-3].split("/")
    if parts[0] in ("src", "lib") and len(parts) > 1:
        parts = parts[1:]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


# ---- declared entry points ----------------------------------------------------------

def entry_points(tree: Tree) -> dict[str, list[tuple[str, str, int, str]]]:
    """{group: [(name, "mod:attr", line, file)]} from setup.cfg, setup.py and pyproject."""
    found: dict[str, list[tuple[str, str, int, str]]] = {}
    if "setup.cfg" in tree.texts:
        text = tree.texts["setup.cfg"]
        cfg = configparser.ConfigParser(interpolation=None, strict=False)
        try:
            cfg.read_string(text)
        except configparser.Error:
            cfg = configparser.ConfigParser()
        if cfg.has_section("entry_points"):
            for group, value in cfg.items("entry_points"):
                for spec in filter(None, (v.strip() for v in value.splitlines())):
                    name, _, target = spec.partition("=")
                    pos = text.find(spec)
                    found.setdefault(group, []).append(
                        (name.strip(), target.strip(), line_of(text, max(pos, 0)), "setup.cfg"))
    if "pyproject.toml" in tree.texts:
        text = tree.texts["pyproject.toml"]
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            doc = {}
        project = doc.get("project", {})
        groups = dict(project.get("entry-points", {}))
        if project.get("scripts"):
            groups["console_scripts"] = project["scripts"]
        for group, table in groups.items():
            for name, target in table.items():
                pos = text.find(name)
                found.setdefault(group, []).append(
                    (name, target, line_of(text, max(pos, 0)), "pyproject.toml"))
    if "setup.py" in tree.texts:
        text = tree.texts["setup.py"]
        for group in ("wsgi_scripts", "console_scripts"):
            for m in re.finditer(rf"""['"]{group}['"]\s*:\s*\[([^\]]*)\]""", text):
                for spec in re.findall(r"""['"]([^'"]+=[^'"]+)['"]""", m.group(1)):
                    name, _, target = spec.partition("=")
                    found.setdefault(group, []).append(
                        (name.strip(), target.strip(), line_of(text, m.start()), "setup.py"))
    return found


def module_exists(tree: Tree, target: str) -> str:
    """The file of `pkg.mod` from a `pkg.mod:attr` target, or ""."""
    mod = target.split(":", 1)[0].strip()
    return tree.modules.get(mod, "")


# ---- Python sources -------------------------------------------------------------------

def defines_application(text: str, name: str = "application") -> int:
    """Line of a module-level `name` (assigned, defined, or imported), else 0."""
    try:
        body = ast.parse(text).body
    except SyntaxError:
        return 0
    for node in _module_level(body):
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            names += [e.id for t in targets if isinstance(t, ast.Tuple)
                      for e in t.elts if isinstance(e, ast.Name)]
            if name in names:
                return node.lineno
        defined = isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name
        imported = isinstance(node, (ast.Import, ast.ImportFrom)) and any(
            (a.asname or a.name) == name for a in node.names)
        if defined or imported:
            return node.lineno
    return 0


def defines_code(text: str) -> bool:
    """Whether a module defines functions or classes: a library module, not an entry
    script (which builds `application` and stops)."""
    try:
        body = ast.parse(text).body
    except SyntaxError:
        return False
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
               for n in body)


# The app a project's own server configs name: uWSGI's `module = pkg.mod:app` (or `module`
# with `callable`), Apache's WSGIScriptAlias with WSGICallableObject.
UWSGI_MODULE = re.compile(r"^\s*(?:module|wsgi)\s*=\s*([A-Za-z_][\w.]*)(?::(\w+))?\s*$", re.M)
UWSGI_CALLABLE = re.compile(r"^\s*callable\s*=\s*(\w+)\s*$", re.M)
SCRIPT_ALIAS = re.compile(r"^\s*WSGIScriptAlias\s+\S+\s+\"?([^\s\"]+)", re.M)
CALLABLE_OBJECT = re.compile(r"^\s*WSGICallableObject\s+(\w+)", re.M)


def declared_apps(tree: Tree) -> list[tuple[str, str, str, int]]:
    """(module file, callable, config file, line) for each app a server config of the
    project names, where that module is in the tree."""
    out = []
    by_name: dict[str, list[str]] = {}
    for rel in tree.texts:
        by_name.setdefault(rel.rsplit("/", 1)[-1], []).append(rel)
    for rel, text in tree.texts.items():
        if rel.endswith(".py"):
            continue
        callable_ = UWSGI_CALLABLE.search(text)
        for m in UWSGI_MODULE.finditer(text) if "[uwsgi]" in text else ():
            module = tree.modules.get(m.group(1), "")
            name = m.group(2) or (callable_.group(1) if callable_ else "application")
            if module:
                out.append((module, name, rel, line_of(text, m.start())))
        obj = CALLABLE_OBJECT.search(text)
        for m in SCRIPT_ALIAS.finditer(text):
            for script in by_name.get(m.group(1).rsplit("/", 1)[-1], []):
                out.append((script, obj.group(1) if obj else "application", rel,
                            line_of(text, m.start())))
    return out


def _module_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Module-level statements, looking into `if`/`try`/`with` blocks (not defs)."""
    for node in body:
        yield node
        if isinstance(node, (ast.If, ast.Try, ast.With)):
            yield from _module_level(node.body)
            for extra in ("orelse", "finalbody"):
                yield from _module_level(getattr(node, extra, []))
            for handler in getattr(node, "handlers", []):
                yield from _module_level(handler.body)


def is_wsgi_file(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    parts = rel.split("/")
    return (name.endswith(".wsgi") or name in ("wsgi.py", "app.wsgi") or is_template(rel)
            or (len(parts) >= 2 and parts[-2] == "wsgi" and name.endswith(".py")))


def is_template(rel: str) -> bool:
    """A WSGI script shipped as a template or sample (swift's `*.wsgi.template`), for the
    operator to install: evidence of a WSGI entry as good as the script itself."""
    return rel.endswith((".wsgi.template", ".wsgi.in", ".wsgi.sample", ".wsgi.example"))


def imports_of(tree: Tree, rel: str) -> set[str]:
    """Project modules `rel` imports (resolved against the tree's own modules)."""
    out: set[str] = set()
    text = tree.texts.get(rel, "")
    here = module_name(rel) if rel.endswith(".py") else ""
    for m in IMPORT_RE.finditer(text):
        if m.group(1):
            base = m.group(1)
            if base.startswith("."):
                continue  # relative imports are rare in these projects' API paths
            names = [n.strip(" ()") for n in m.group(2).split(",")]
            candidates = [base, *(f"{base}.{n}" for n in names if n)]
        else:
            candidates = [n.strip().split(" as ")[0] for n in m.group(3).split(",")]
        for cand in candidates:
            parts = cand.split(".")
            # `import a.b.c` runs a/__init__, a/b/__init__ and a/b/c.
            for i in range(1, len(parts) + 1):
                name = ".".join(parts[:i])
                if name in tree.modules and name != here:
                    out.add(name)
    return out


def reachable(tree: Tree, start: list[str]) -> dict[str, list[str]]:
    """Every project module imported, directly or not, from the files in `start`, with the
    chain of files that leads to it."""
    chains: dict[str, list[str]] = {}
    queue = [(rel, [rel]) for rel in start]
    seen = set(start)
    while queue:
        rel, chain = queue.pop(0)
        chains[rel] = chain
        for mod in sorted(imports_of(tree, rel)):
            target = tree.modules[mod]
            if target not in seen:
                seen.add(target)
                queue.append((target, [*chain, target]))
    return chains


def module_level_lines(text: str, pattern: re.Pattern[str]) -> list[tuple[int, str]]:
    """Matches of `pattern` at module level (column 0, outside `if __name__` blocks)."""
    out = []
    main = text.find("if __name__")
    for m in pattern.finditer(text):
        if main != -1 and m.start() > main:
            break
        start = text.rfind("\n", 0, m.start()) + 1
        if text[start:m.start()].strip() == "" and m.start() == start:
            out.append((line_of(text, m.start()), text[m.start():text.find("\n", m.start())]))
    return out
