"""The one family of user errors.

Anything raised as a :class:`WsgistackError` is the user's to fix: the CLI prints it on one
line and exits non-zero. Anything else is our bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class WsgistackError(Exception):
    """A user error: one line saying what is wrong and how to fix it."""

    detail = ""  # what `-v` prints above the line (an app's traceback)

    def __str__(self) -> str:
        return one_line(super().__str__())


def one_line(text: str) -> str:
    """`text` with its control characters escaped: a key or value from the manifest with a
    line break in it must not break the one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class ManifestError(WsgistackError):
    """The manifest is wrong: names the file and the key."""

    def __init__(self, path: str, key: str, problem: str) -> None:
        self.path = path
        self.key = key
        self.problem = problem
        super().__init__(f"{path}: {key}: {problem}")


class AppLoadError(WsgistackError):
    """An app spec could not be turned into a WSGI callable."""


class ServerError(WsgistackError):
    """A server could not be started, or did not become healthy."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return " (did you mean 'x'?)" for the closest choice, or "" when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""
