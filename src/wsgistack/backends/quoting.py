"""One quoting function per output format: a value never changes a config's structure."""

from __future__ import annotations

from wsgistack.errors import WsgistackError


def _no_newline(value: str, fmt: str) -> str:
    if "\n" in value or "\r" in value or "\0" in value:
        raise WsgistackError(f"{fmt} value {value!r} contains a line break; remove it")
    return value


def apache(value: str) -> str:
    """A double-quoted Apache directive argument."""
    value = _no_newline(value, "Apache")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def nginx(value: str) -> str:
    """A double-quoted nginx parameter (a `$` would start a variable: escape it)."""
    value = _no_newline(value, "nginx")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "${dollar}") + '"'


def ini(value: str) -> str:
    """A uWSGI ini value: taken verbatim to the end of the line."""
    return _no_newline(value, "uWSGI ini")

