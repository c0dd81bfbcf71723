"""The Flask example: a small notes API that `wsgistack test` runs its own suite against."""

from __future__ import annotations

import os
import sqlite3

from flask import Flask, request

app = Flask(__name__)


def _db() -> sqlite3.Connection:
    db = sqlite3.connect(os.path.join(os.environ.get("NOTES_DATA", "."), "notes.db"))
    db.execute("CREATE TABLE IF NOT EXISTS notes (text TEXT)")
    return db


@app.get("/")
def index() -> dict[str, str]:
    return {"app": "notes"}


@app.post("/notes")
def add_note() -> tuple[dict[str, int], int]:
    with _db() as db:
        db.execute("INSERT INTO notes VALUES (?)", (request.get_data(as_text=True),))
        count = db.execute("SELECT COUNT(*) FROM notes").fetchone()[0]
    return {"notes": count}, 201


@app.get("/notes")
def list_notes() -> dict[str, list[str]]:
    with _db() as db:
        return {"notes": [row[0] for row in db.execute("SELECT text FROM notes")]}


@app.get("/whoami")
def whoami() -> dict[str, str]:
    return {"script_name": request.script_root, "path": request.path}
