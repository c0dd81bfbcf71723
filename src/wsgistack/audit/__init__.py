"""`wsgistack audit`: can each project's API be deployed as a WSGI application, and what
blocks it. Pure static reading of source trees, with evidence (file and line) for every
finding and the reasons that decided each verdict."""

from __future__ import annotations

import configparser
import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from wsgistack.audit import git, scan
from wsgistack.audit.scan import KINDS, Finding, Tree
from wsgistack.errors import WsgistackError

SUPPORTED, PARTIAL, NOT_SUPPORTED = "supported", "partial", "not supported"
NO_API = "no API service"
# Unindented: an import inside `try:` is optional, the entry works without that server.
SERVER_SPECIFIC = re.compile(r"^(?:import|from)\s+(uwsgi|uwsgidecorators|mod_wsgi)\b", re.M)
CONFIG_ENV_NAME = re.compile(r"""['"][A-Z][A-Z0-9_]*CONF[A-Z0-9_]*['"]""")
# oslo.config finds its files itself (/etc/PROJECT/PROJECT.conf, ~/.PROJECT/...) when told
# the project, or given the files: no command line needed.
DEFAULT_SEARCH = re.compile(r"\bCONF\s*\([^)]*\bproject\s*=|\bdefault_config_files\s*=|"
                            r"\bfind_config_files\s*\(|"
                            # or the entry names its config itself (swift's templates)
                            r"\bloadapp\s*\(\s*['\"]config:|['\"]/etc/[\w./-]+\.(?:conf|ini)['\"]")


class AuditError(WsgistackError):
    """A tree that cannot be audited: missing, not a directory, unreadable."""


@dataclass(frozen=True)
class Audit:
    project: str
    path: str
    verdict: str
    reasons: tuple[str, ...]
    findings: tuple[Finding, ...]
    to_change: tuple[str, ...] = ()  # what would change the verdict (toward supported)
    revision: str = ""  # with --at: the commit read ("<sha> of <date> on <branch>")

    def of(self, group: str) -> list[Finding]:
        return [f for f in self.findings if KINDS[f.kind][0] == group]


TESTS = {"tests", "test", "functional", "unit"}
NOT_THE_API = TESTS | {"examples", "example", "samples", "doc", "docs", "contrib"}


def _is_test(rel: str, skip: set[str] = NOT_THE_API) -> bool:
    """Tests, examples and docs: code in the tree that is not the project's API."""
    parts = rel.split("/")
    return any(p in skip for p in parts[:-1]) or parts[-1].startswith("test_")


def _imported(tree: Tree, rel: str) -> bool:
    """Whether any other file of the project imports `rel` (a helper module, not an entry)."""
    name = tree.modules.get(scan.module_name(rel)) and scan.module_name(rel)
    return bool(name) and any(name in scan.imports_of(tree, other)
                              for other in tree.texts if other.endswith(".py") and other != rel)


def _library(rel: str, text: str) -> bool:
    """A helper module of a `wsgi/` package (cinder/wsgi/common.py), or the package's own
    `__init__.py`, not an entry script: it defines functions or classes, and is not named as
    an entry (wsgi.py, *.wsgi)."""
    name = rel.rsplit("/", 1)[-1]
    if name == "__init__.py":
        return True
    return name != "wsgi.py" and not name.endswith(".wsgi") and scan.defines_code(text)


def _project_name(tree: Tree) -> str:
    """The project's name, with its version when the tree is an sdist (PKG-INFO)."""
    try:
        info = (tree.root / "PKG-INFO").read_text(encoding="utf-8", errors="replace")
    except OSError:
        info = ""
    name = re.search(r"^Name: (.+)$", info, re.M)
    version = re.search(r"^Version: (.+)$", info, re.M)
    if name and version:
        return f"{name.group(1).strip()} {version.group(1).strip()}"
    if "setup.cfg" in tree.texts:
        cfg = configparser.ConfigParser(interpolation=None, strict=False)
        try:
            cfg.read_string(tree.texts["setup.cfg"])
            if cfg.has_option("metadata", "name"):
                return cfg.get("metadata", "name")
        except configparser.Error:
            pass
    if "pyproject.toml" in tree.texts:
        try:
            name = tomllib.loads(tree.texts["pyproject.toml"]).get("project", {}).get("name")
            if isinstance(name, str):
                return name
        except tomllib.TOMLDecodeError:
            pass
    m = re.search(r"""\bname\s*=\s*['"]([\w.-]+)['"]""", tree.texts.get("setup.py", ""))
    return m.group(1) if m else tree.root.name


def _entries(tree: Tree, eps: dict[str, list[tuple[str, str, int, str]]]) -> list[str]:
    """Collect entry-point findings; return the files a WSGI server would load."""
    files = []
    for name, target, line, where in eps.get("wsgi_scripts", []):
        module = scan.module_exists(tree, target)
        if module:
            tree.add("wsgi-script", where, line, f"{name} = {target} ({module})")
            files.append(module)
        else:
            tree.add("wsgi-script-broken", where, line,
                     f"{name} = {target}: module {target.split(':')[0]} is not in the tree")
    declared = set(files)  # wsgi_scripts targets are entries, whatever they define
    for module, name, where, line in scan.declared_apps(tree):
        found = scan.defines_application(tree.texts.get(module, ""), name)
        if found and not _is_test(module) and not _is_test(where):
            tree.add("wsgi-module", module, found, f"defines `{name}`, the app {where}:{line} "
                     "serves")
            files.append(module)
            declared.add(module)
    for rel, text in tree.texts.items():
        if (_is_test(rel) and not scan.is_template(rel)) or rel in declared:
            continue
        if scan.is_wsgi_file(rel):
            line = scan.defines_application(text)
            if line:
                tree.add("wsgi-module", rel, line, "defines `application`")
                files.append(rel)
            elif not _imported(tree, rel) and not _library(rel, text):
                tree.add("wsgi-module-empty", rel, 1, "a WSGI file with no `application`")
        elif rel.endswith(".py") and "loadapp" in text:
            m = re.search(r"^application\s*=.*loadapp\s*\(", text, re.M)
            if m:
                tree.add("paste-app", rel, scan.line_of(text, m.start()),
                         "`application` built by paste.deploy loadapp()")
                files.append(rel)
    return sorted(set(files))


def _hints(tree: Tree) -> None:
    for rel, text in tree.texts.items():
        suffix = Path(rel).suffix
        if rel.startswith("devstack/") or "/devstack/" in rel:
            m = scan.DEVSTACK.search(text)
            if m:
                tree.add("devstack", rel, scan.line_of(text, m.start()), m.group(1))
            continue
        if suffix in (".rst", ".md", ".txt"):
            # requirements*.txt naming gunicorn is not documentation of a deployment
            prose = suffix != ".txt" or rel.split("/")[0] in ("doc", "docs")
            m = scan.DOCS.search(text)
            if m and prose and not _is_test(rel, TESTS):
                tree.add("docs", rel, scan.line_of(text, m.start()), f"mentions {m.group(1)}")
            continue
        section = re.search(r"^\[(pipeline|app|composite):[^\]]*\]", text, re.M)
        if suffix == ".ini" and section:
            tree.add("paste-config", rel, scan.line_of(text, section.start()), section.group(0))
        if suffix in (".py", ".cfg", ".toml", ".in") or _is_test(rel):
            continue
        for m in scan.SERVER_DIRECTIVES.finditer(text):
            if m.group(1).startswith(("module", "wsgi-file")) and "[uwsgi]" not in text:
                continue
            tree.add("server-config", rel, scan.line_of(text, m.start()), m.group(0).strip())
            break


def _commands(tree: Tree, eps: dict[str, list[tuple[str, str, int, str]]]) -> None:
    scripts = {}
    for name, target, line, where in eps.get("console_scripts", []):
        scripts[scan.module_exists(tree, target)] = name
        tree.add("console-script", where, line, f"{name} = {target}")
    framework: list[bool] = []  # whether the project uses a web framework: asked once, late

    def uses_framework() -> bool:
        if not framework:
            framework.append(any(scan.FRAMEWORKS.search(t) for r, t in tree.texts.items()
                                 if r.endswith(".py") and not _is_test(r)))
        return framework[0]

    for rel, text in tree.texts.items():
        if not rel.endswith(".py") or _is_test(rel):
            continue
        hits = [(m.start(), what) for pattern, what in scan.COMMAND_SERVERS
                for m in [pattern.search(text)] if m]
        launched = scan.LAUNCH.search(text)
        if launched and scan.WSGI_NEARBY.search(text):
            hits.append((launched.start(), "oslo.service wsgi.Server/launch"))
        m = scan.APP_RUN.search(text) if scan.FRAMEWORKS.search(text) else None
        if m is None and rel in scripts:
            m = scan.SCRIPT_APP_RUN.search(text)
            m = m if m and uses_framework() else None
        if m:
            hits.append((m.start(), "framework app.run()"))
        for pos, what in sorted(hits)[:1]:
            script = f" (console script {scripts[rel]})" if rel in scripts else ""
            tree.add("command-server", rel, scan.line_of(text, pos), what + script)


def _transports(tree: Tree) -> None:
    for rel, text in tree.texts.items():
        # A substring test first: the regular expression over every file cost 12% of
        # keystone's audit.
        if not rel.endswith(".py") or ("WebSocketServer" not in text
                                       and "websockets" not in text):
            continue
        m = scan.WEBSOCKET_SERVER.search(text)
        if m and not _is_test(rel):
            tree.add("websocket-server", rel, scan.line_of(text, m.start()),
                     m.group(0).rstrip("( "))


def _risks(tree: Tree, chains: dict[str, list[str]]) -> None:
    argv_seen, env_config = False, False
    for rel, chain in chains.items():
        text = tree.texts[rel]
        via = " <- ".join(reversed(chain)) if len(chain) > 1 else "the entry itself"
        for line, src in scan.module_level_lines(text, re.compile(
                r"(?:eventlet\.)?monkey_patch\s*\(")):
            tree.add("monkey-patch", rel, line, f"{src.strip()} (imported via {via})")
        for line, src in scan.module_level_lines(text, scan.IMPORT_STATE):
            tree.add("import-state", rel, line, src.strip())
        main = text.find("if __name__")
        for m in re.finditer(r"\bsys\.argv\b", text):
            if main == -1 or m.start() < main:
                argv_seen = True
                tree.add("argv-config", rel, scan.line_of(text, m.start()),
                         f"reads sys.argv (imported via {via})")
                break
        env_config = env_config or (bool(CONFIG_ENV_NAME.search(text))
                                    and ("environ" in text or "getenv" in text))
        key = scan.SERVER_ENVIRON.search(text)
        if key:
            tree.add("server-environ", rel, scan.line_of(text, key.start()), key.group(1))
    # oslo.config's own search can live anywhere in the project (its config module); only
    # looked for when it matters.
    if argv_seen and not env_config and not any(
            DEFAULT_SEARCH.search(t) for r, t in tree.texts.items()
            if (r.endswith(".py") or scan.is_template(r)) and not _is_test(r, TESTS)):
        first = next(f for f in tree.findings if f.kind == "argv-config")
        tree.add("config-argv-only", first.file, first.line,
                 "no config file path from the environment on the API's import path")


# A console script named for the API (`PROJECT-api`, `PROJECT-api-metadata`); not
# `glance-registry` or `murano-cfapi`, other HTTP services with no WSGI entry of their own.
API_SCRIPT = re.compile(r"[\w.]+-(?:api(?:-[\w.-]+)?|server|all)")


def _covered(command: Finding, entries: list[str], reached: dict[str, list[str]],
             project: str) -> bool:
    """Whether a command server serves an API that a WSGI entry also serves: it is on an
    entry's import path (shared server code), or named like an entry (`cmd/api.py` and
    `wsgi/api.py`, console script `glance-api` and `wsgi/api.py`)."""
    if command.file in reached:
        return True
    script = re.search(r"console script ([\w.-]+)\)", command.detail)
    if script is None:
        # Server code of the project's own library (service.py, base_wsgi.py) that no
        # command of its own starts: the legacy way to run the API its entries serve.
        return bool(entries)
    if entries and (API_SCRIPT.fullmatch(script.group(1)) or script.group(1) == project):
        # `glance-api`, `nova-api-metadata`, `mistral-server`, `ironic-inspector` (all in
        # one): the API the entries serve, run the old way.
        return True
    stems = {Path(e).stem for e in entries} - {"wsgi", "app", "__init__"}
    tail = script.group(1).rsplit("-", 1)[-1]
    return Path(command.file).stem in stems or tail in stems


def _verdict(tree: Tree, entries: list[str],
             reached: dict[str, list[str]]) -> tuple[str, list[str]]:
    found = {k: [f for f in tree.findings if f.kind == k] for k in KINDS}

    def at(f: Finding) -> str:
        return f"{f.file}:{f.line}"

    commands = found["command-server"]
    project = _project_name(tree).split()[0]  # "ironic-inspector", not its version
    uncovered = [f for f in commands if not _covered(f, entries, reached, project)]
    broken = found["wsgi-script-broken"] + found["wsgi-module-empty"]
    blockers = found["monkey-patch"] + found["config-argv-only"]
    if not entries:
        if commands:
            return NOT_SUPPORTED, [f"the API runs only as a Python command: {f.detail} at "
                                   f"{at(f)}" for f in commands]
        if broken:
            return NOT_SUPPORTED, [f"declared WSGI entry is broken: {f.detail} at {at(f)}"
                                   for f in broken]
        return NO_API, ["no WSGI entry point and no server started by its code",
                        *_beside(found["websocket-server"])]
    reasons = [f"WSGI entry: {f.detail} at {at(f)}"
               for f in found["wsgi-script"] + found["wsgi-module"] + found["paste-app"]]
    why_partial = [f"a server started as a Python command that no WSGI entry mirrors: "
                   f"{f.detail} at {at(f)}" for f in uncovered]
    why_partial += [f"broken entry: {f.detail} at {at(f)}" for f in broken]
    why_partial += [f"blocker: {KINDS[f.kind][1]}: {f.detail} at {at(f)}" for f in blockers]
    specific = [rel for rel in entries if SERVER_SPECIFIC.search(tree.texts[rel])]
    if specific and len(specific) == len(entries):
        why_partial += [f"entry {rel} imports a server-specific module" for rel in specific]
    return (PARTIAL if why_partial else SUPPORTED), (reasons + why_partial
                                                     + _beside(found["websocket-server"]))


def _beside(transports: list[Finding]) -> list[str]:
    """One reason for the transports that are not WSGI: said, and not held against it."""
    if not transports:
        return []
    first = transports[0]
    return [f"beside it, a websocket transport that is not WSGI ({first.detail} at "
            f"{first.file}:{first.line}): it runs as a process of its own and does not count "
            "for or against the WSGI API"]


def audit_at(path: str, date: str) -> Audit:
    """The git repository at `path` as its default branch was before `date`, read from
    its object store (see audit.git); the Audit names the repository and the commit."""
    try:
        revision = git.commit_before(path, date)
        with git.checkout_at(path, revision) as tmp:
            found = audit_tree(tmp)
            if found.project == Path(tmp).name:  # no name in its metadata: the directory's
                found = dataclasses.replace(found, project=Path(path).resolve().name)
    except git.GitError as exc:
        raise AuditError(str(exc)) from None
    return dataclasses.replace(found, path=path, revision=str(revision))


def audit_tree(path: str) -> Audit:
    root = Path(path)
    try:
        root.stat()
    except FileNotFoundError:
        raise AuditError(f"{path}: no such file or directory; pass a source tree (a git "
                         "checkout or an unpacked sdist)") from None
    except OSError:
        raise AuditError(f"{path}: cannot be read (permission denied); run as a user who can "
                         "read it, or fix its permissions") from None
    if not root.is_dir():
        raise AuditError(f"{path}: not a directory; pass a source tree, or a list of them "
                         "with --list FILE")
    if not os.access(root, os.R_OK | os.X_OK):
        raise AuditError(f"{path}: cannot be read (permission denied); run as a user who can "
                         "read it, or fix its permissions")
    tree = scan.read_tree(root)
    eps = scan.entry_points(tree)
    entries = _entries(tree, eps)
    reached = scan.reachable(tree, entries)  # each entry's import path
    _hints(tree)
    _commands(tree, eps)
    _transports(tree)
    _risks(tree, reached)
    verdict, reasons = _verdict(tree, entries, reached)
    findings = sorted(set(tree.findings), key=lambda f: (f.file, f.line, f.kind))
    return Audit(_project_name(tree), str(root), verdict, tuple(reasons), tuple(findings),
                 tuple(_to_change(verdict, findings, reasons)))


# What each finding that held the verdict back would take, said once per kind.
CHANGES = {
    "command-server": "a WSGI entry for the API the command serves: a module-level "
                      "`application` (or a `wsgi_scripts` entry point) building the same app",
    "wsgi-script-broken": "point the `wsgi_scripts` entry point at a module in the tree",
    "wsgi-module-empty": "define `application` in that WSGI file, or remove it",
    "monkey-patch": "take eventlet.monkey_patch() off the WSGI entry's import path",
    "config-argv-only": "let the app find its config without a command line: from an "
                        "environment variable, or oslo.config's own search "
                        "(`CONF(project=...)`)",
}


def _to_change(verdict: str, findings: list[Finding], reasons: list[str]) -> list[str]:
    """For each kind of finding the verdict names, what would lift it, and where."""
    if verdict == SUPPORTED:
        return []
    if verdict == NO_API:
        return ["nothing, unless the project serves HTTP: then a WSGI entry (a module-level "
                "`application`) or the server its code starts would be found"]
    said = " ".join(reasons)
    named = [f for f in findings if f"{f.file}:{f.line}" in said]
    return [f"{what} ({', '.join(f'{f.file}:{f.line}' for f in named if f.kind == kind)})"
            for kind, what in CHANGES.items() if any(f.kind == kind for f in named)]


def read_list(path: str) -> list[str]:
    """Trees named in a list file, one per line (# comments), relative to the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise AuditError(f"{path}: cannot read the list file: {exc.strerror}") from None
    base = Path(path).parent
    return [str(base / ln.strip()) for ln in text.splitlines()
            if ln.strip() and not ln.strip().startswith("#")]
