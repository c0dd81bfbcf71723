"""`wsgistack init`: a commented manifest for the app in a directory, found by reading its
files (never importing them): a Django project, a Flask, Falcon or Pyramid app, a WSGI
script, or an app spec the user gives.
"""

from __future__ import annotations

import re
from pathlib import Path

from wsgistack.errors import WsgistackError

_SKIP = {".git", ".venv", "venv", "node_modules", "__pycache__", ".tox", "build", "dist"}
# (framework, pattern giving the app's name, spec suffix); first match in a file wins.
_APPS = (
    ("Flask", re.compile(r"^(\w+)\s*=\s*(?:flask\.)?Flask\(", re.M), ""),
    ("Flask", re.compile(r"^def (create_app)\(\s*\)", re.M), "()"),
    ("Falcon", re.compile(r"^(\w+)\s*=\s*falcon\.(?:App|API)\(", re.M), ""),
    ("Pyramid", re.compile(r"^(\w+)\s*=\s*\w+\.make_wsgi_app\(\)", re.M), ""),
    ("WSGI", re.compile(r"^(application)\s*=", re.M), ""),
)


def _python_files(root: Path) -> list[Path]:
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if not _SKIP & set(rel.parts) and len(rel.parts) <= 3 and \
                not rel.name.startswith("test"):
            found.append(path)
    return found


def _module(root: Path, path: Path) -> str:
    return ".".join(path.relative_to(root).with_suffix("").parts)


def find_app(root: Path) -> tuple[str, str]:
    """(app spec, what was found) for the app in `root`; ("", "") when nothing is."""
    for path in _python_files(root):
        text = path.read_text(encoding="utf-8", errors="replace")
        if path.name == "wsgi.py" and "get_wsgi_application" in text:
            return f"{_module(root, path)}:application", f"a Django project ({path.parent.name})"
    for path in _python_files(root):
        text = path.read_text(encoding="utf-8", errors="replace")
        for framework, pattern, call in _APPS:
            hit = pattern.search(text)
            if hit:
                what = f"a {framework} app in {path.relative_to(root)}"
                return f"{_module(root, path)}:{hit.group(1)}{call}", what
    return "", ""


def manifest_text(root: Path, spec: str, found: str) -> str:
    name = re.sub(r"[^a-z0-9_-]", "-", root.resolve().name.lower()).strip("-_")[:30] or "api"
    if not name[0].isalpha():
        name = f"app-{name}"[:30]
    reqs = ('requirements = ["-r requirements.txt"]  # its own venv, rebuilt when the file '
            'changes' if (root / "requirements.txt").exists() else
            '# requirements = ["flask>=3"]   # its own venv (else: the interpreter running '
            'wsgistack)')
    return f"""# wsgistack manifest{f" for {found}" if found else ""}: `wsgistack up` runs it.
# Every setting, its default and meaning: `wsgistack settings` (docs/settings.md).

[stack]
name = "{name}"
backend = "granian"        # or gunicorn, uwsgi, mod_wsgi, apache+uwsgi, nginx+uwsgi
base_port = 8780           # the first service's port; the next ones follow
# host = "127.0.0.1"       # listen beyond this machine only behind a trusted proxy

[services.api]
app = "{spec}"
prefix = "/"               # where the app is mounted (SCRIPT_NAME)
processes = 2              # workers; threads = 1 each unless set
{reqs}
# env = {{ APP_SETTINGS = "${{state}}/app.conf" }}
# health_path = "/"          # what `up` polls before it calls the service healthy
# max_body = 10485760        # bytes; 413 above it
# timeout = 60               # seconds a request may take before its worker is replaced
"""


def write(root: Path, target: Path, spec: str | None) -> str:
    """Write the manifest at `target`; returns what it is for. Refuses to overwrite."""
    if target.exists():
        raise WsgistackError(f"{target} exists: edit it, or remove it to start again")
    found = "the app you named"
    if not spec:
        spec, found = find_app(root)
    if not spec:
        raise WsgistackError(
            f"no WSGI app found in {root} (a Django wsgi.py, a Flask, Falcon or Pyramid app, "
            "a module-level `application`); name it: `wsgistack init --app pkg.mod:app`")
    target.write_text(manifest_text(root, spec, found), encoding="utf-8")
    return found
