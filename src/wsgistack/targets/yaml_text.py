"""A small YAML writer for the manifests wsgistack renders (Kubernetes): mappings, lists,
scalars, and multi-line strings as literal blocks, with no dependency (wsgistack depends on
its servers only)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

_PLAIN = re.compile(r"[A-Za-z_/][A-Za-z0-9_./-]*")
_WORDS = {"y", "n", "yes", "no", "true", "false", "on", "off", "null"}


def _scalar(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    text = str(value)
    if _PLAIN.fullmatch(text) and text.lower() not in _WORDS:
        return text
    return json.dumps(text)  # a JSON string is a YAML double-quoted scalar


def _block(text: str, indent: str) -> str | None:
    """A multi-line string as a literal block, where YAML keeps it exactly."""
    if "\n" not in text or text[0] in " \n" or any(
            not (c.isprintable() or c in "\n\t") for c in text):
        return None
    chomp = "+" if text.endswith("\n\n") else ("" if text.endswith("\n") else "-")
    body = text[:-1] if text.endswith("\n") else text
    lines = [f"{indent}{line}" if line else "" for line in body.split("\n")]
    return f"|{chomp}\n" + "\n".join(lines)


def _yaml(value: object, indent: str = "") -> list[str]:
    if isinstance(value, Mapping):
        if not value:
            return [indent + "{}"]
        out = []
        for key, item in value.items():
            out += _entry(f"{indent}{_scalar(key)}:", item, indent + "  ")
        return out
    if isinstance(value, list | tuple):
        if not value:
            return [indent + "[]"]
        out = []
        for item in value:
            lines = _yaml(item, indent + "  ")
            out.append(f"{indent}- {lines[0][len(indent) + 2:]}")
            out += lines[1:]
        return out
    return [indent + _scalar(value)]


def _entry(head: str, item: object, indent: str) -> list[str]:
    if isinstance(item, Mapping | list | tuple) and item:
        return [head, *_yaml(item, indent)]
    if isinstance(item, str):
        block = _block(item, indent)
        if block is not None:
            return [f"{head} {block}"]
    return [f"{head} {_yaml(item)[0]}"]


def dump(doc: Mapping[str, Any], comment: str = "") -> str:
    head = "".join(f"# {line}\n".replace("# \n", "#\n") for line in comment.splitlines())
    return head + "\n".join(_yaml(doc)) + "\n"
