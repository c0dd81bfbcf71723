"""`wsgistack logs`: the tail of a service's log, its lines since a moment, its errors only,
and `-f`, which follows the file across rotation (a rename or a truncation) until Ctrl-C.

Each server stamps its lines its own way; a line without a stamp of its own belongs to the
moment of the line before it (a traceback to its first line).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

# The servers' own line stamps: `t` the time (`y` its year, when apart), `z` a zone.
_STAMPS = (
    (re.compile(r"\[(?P<t>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?: (?P<z>[+-]\d{4}))?"),
     "%Y-%m-%d %H:%M:%S"),  # granian, gunicorn
    (re.compile(r"^(?P<t>\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) "), "%Y/%m/%d %H:%M:%S"),  # nginx
    (re.compile(r"^\[\w{3} (?P<t>\w{3} \d\d \d\d:\d\d:\d\d)\.\d+ (?P<y>\d{4})\]"),
     "%b %d %H:%M:%S %Y"),  # Apache
    (re.compile(r"\[(?P<t>\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d) (?P<z>[+-]\d{4})\]"),
     "%d/%b/%Y:%H:%M:%S"),  # access lines (combined)
    (re.compile(r"\{\w{3} (?P<t>\w{3} +\d+ \d\d:\d\d:\d\d) (?P<y>\d{4})\}"),
     "%b %d %H:%M:%S %Y"),  # uWSGI
)
ERROR_WORDS = re.compile(r"error|traceback|exception|critical|alert|emerg|fatal|killed",
                         re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def since(text: str) -> datetime:
    """`5m`, `2h`, `30s`, `1d` ago, or an ISO time."""
    match = re.fullmatch(r"(\d+)([smhd])", text.strip())
    if match:
        return datetime.now(UTC) - timedelta(
            seconds=int(match[1]) * _UNITS[match[2]])
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since {text!r}: write 30s, 5m, 2h, 1d or an ISO time") from None
    return moment if moment.tzinfo else moment.astimezone()


def stamp(line: str) -> datetime | None:
    """The moment a line carries, in any of the servers' formats (None: none)."""
    for pattern, fmt in _STAMPS:
        found = pattern.search(line)
        if not found:
            continue
        parts = found.groupdict()
        text = " ".join(parts["t"].split()) + (f" {parts['y']}" if parts.get("y") else "")
        try:
            moment = datetime.strptime(text, fmt)
        except ValueError:
            continue
        if parts.get("z"):
            return moment.replace(tzinfo=datetime.strptime(parts["z"], "%z").tzinfo)
        return moment.astimezone()  # the server's local time
    return None


def select(lines: Iterable[str], after: datetime | None, errors: bool) -> Iterator[str]:
    """The lines at or after `after` (unstamped lines go with the line before), and with
    `errors` only those that say so (with the unstamped lines that follow them)."""
    keep_time = after is None
    keep_error = False
    for line in lines:
        moment = stamp(line)
        if moment is not None:
            keep_time = after is None or moment >= after
            keep_error = bool(ERROR_WORDS.search(line))
        elif errors and ERROR_WORDS.search(line):
            keep_error = True
        if keep_time and (not errors or keep_error):
            yield line


def follow(path: Path, show: Callable[[str], None], errors: bool = False,
           poll: float = 0.2, stop: Callable[[], bool] = lambda: False,
           start: int | None = None) -> None:
    """Print what is appended to `path` from `start` (default: its end) on, reopening it
    when it is rotated (renamed away, or truncated); returns when `stop()` says so (Ctrl-C:
    KeyboardInterrupt)."""
    handle = open(path, "rb")  # noqa: SIM115 (reopened below)
    if start is None:
        handle.seek(0, os.SEEK_END)
    else:
        handle.seek(start)
    inode = os.fstat(handle.fileno()).st_ino
    pending = ""
    try:
        while not stop():
            chunk = handle.read()
            if chunk:
                pending += chunk.decode("utf-8", "replace")
                *complete, pending = pending.split("\n")
                for line in select(complete, None, errors):
                    show(line)
                continue
            try:
                current = os.stat(path)
            except FileNotFoundError:
                time.sleep(poll)  # between the rename and the new file
                continue
            if current.st_ino != inode or current.st_size < handle.tell():
                handle.close()
                handle = open(path, "rb")  # noqa: SIM115
                inode = os.fstat(handle.fileno()).st_ino
                continue
            time.sleep(poll)
    finally:
        handle.close()
