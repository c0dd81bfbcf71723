"""Turn an app spec into a WSGI callable.

This module imports only the standard library: `wsgistack.entry` copies what follows its
marker line into every entry file, which must work in any interpreter and under any server,
with or without wsgistack installed; the layers around the app are in `wsgistack.layers`.

Spec forms:
    pkg.mod:app               attribute (dotted) of a module; `pkg.mod` alone means `:application`
    pkg.mod:create_app(1, x="y")   call with literal arguments
    paste:path/api-paste.ini#name  paste.deploy (name defaults to "main")
    path/to/app.wsgi          script file exposing `application` (also .py, or `file.py:name`)
    ep:group:name             an installed entry point (an app, or a factory returning one)
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import runpy
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

# ---- copied into entries from here ----
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
