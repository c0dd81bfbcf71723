"""The example's own suite: plain HTTP against the deployed service, found through the
stack's environment (`WSGISTACK_NOTES_URL`, set by `wsgistack test` and `wsgistack env`)."""

from __future__ import annotations

import json
import os
import urllib.request

URL = os.environ.get("WSGISTACK_NOTES_URL", "http://127.0.0.1:8780/notes").rstrip("/")


def call(method: str, path: str, body: bytes | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(URL + path, data=body, method=method)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.status, json.loads(resp.read())


def test_index() -> None:
    assert call("GET", "/") == (200, {"app": "notes"})


def test_mounted_under_its_prefix() -> None:
    _status, doc = call("GET", "/whoami")
    assert doc == {"script_name": "/notes", "path": "/whoami"}


def test_notes_are_kept() -> None:
    status, doc = call("POST", "/notes", b"remember the milk")
    assert status == 201 and doc["notes"] >= 1
    assert "remember the milk" in call("GET", "/notes")[1]["notes"]
