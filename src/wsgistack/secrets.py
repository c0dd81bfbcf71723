"""Secret values: which env values are secrets, where they may come from, and hiding them in
everything wsgistack itself prints or logs.

A value is a secret when its key says so (a word such as PASSWORD or TOKEN in it), when the
manifest lists the key in `secrets`, or when it was read from a file (`${file:PATH}`,
`env_files`): a manifest that keeps its secrets in files need not say which they are.
"""

from __future__ import annotations

import os
import re
import secrets as random
import stat
from collections.abc import Iterable
from pathlib import Path

from wsgistack.errors import ManifestError

MASK = "***"
# Whole words of a key only: KEYSTONE_CONFIG is no key, SECRET_KEY and DB_PASSWORD are.
SECRET_WORDS = ("PASSWORD", "PASSWD", "SECRET", "TOKEN", "KEY", "CREDENTIAL", "CREDENTIALS")
_SECRET_KEY = re.compile(r"(?:^|_)(?:" + "|".join(SECRET_WORDS) + r")(?:_|$)", re.IGNORECASE)

# Shorter values are not masked: "1" or "yes" would mask every number and word on screen,
# and no one keeps a secret that short.
SHORTEST = 4
# What this command has learnt to be secret: every line wsgistack prints passes here.
_hidden: set[str] = set()


def secret_key(key: str, declared: Iterable[str] = ()) -> bool:
    return key in set(declared) or bool(_SECRET_KEY.search(key))


def hide(values: Iterable[str]) -> None:
    """Register values that must never be printed."""
    _hidden.update(v for v in values if len(v) >= SHORTEST)


def forget() -> None:
    """A new command starts knowing no secrets (the CLI runs many in one test process)."""
    _hidden.clear()


def redact(text: str, values: Iterable[str] = ()) -> str:
    """`text` with every secret value (registered, or given) replaced by ***."""
    given = {v for v in values if len(v) >= SHORTEST}
    for value in sorted(_hidden | given, key=len, reverse=True):
        text = text.replace(value, MASK)
    return text


def read_file(path: Path, where: str, key: str, warnings: list[str]) -> str:
    """A secret held in a file: its text without the final line break. A file other users
    can read is a leak waiting to happen: say so (once per file)."""
    try:
        st = path.stat()
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(where, key, f"secret file {path} does not exist; create it "
                            "(chmod 600) or fix the reference") from None
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ManifestError(where, key, f"cannot read secret file {path}: {why}") from None
    if st.st_mode & stat.S_IROTH:
        warning = (f"secret file {path} is readable by every local user; "
                   f"chmod o-r {path}")
        if warning not in warnings:
            warnings.append(warning)
    return text.removesuffix("\n").removesuffix("\r")


def generated(path: Path, where: str, key: str) -> str:
    """The password kept in `path`, made (random, URL-safe) on first use. Root's alone (or
    its maker's): the stack's other users get it only through the configs and env that name
    it. Made whole or not at all: written aside, then linked into place."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return _make(path, where, key)
    except OSError as exc:
        raise ManifestError(where, key, f"cannot read secret {path}: {exc.strerror}") from None
    with os.fdopen(fd, encoding="utf-8") as kept:
        st = os.fstat(kept.fileno())
        value = kept.read().strip()
    if st.st_uid != os.geteuid() or st.st_mode & 0o077 or not value:
        raise ManifestError(where, key, f"secret {path} is empty, or not this user's alone "
                            f"(mode 600); remove it and a new one is made")
    return value


def _make(path: Path, where: str, key: str) -> str:
    value = random.token_urlsafe(24)
    try:
        if not path.parent.parent.exists():  # the state dir: passable, as access makes it
            path.parent.parent.mkdir(mode=0o711, parents=True)
        path.parent.mkdir(mode=0o700, exist_ok=True)
        aside = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(value + "\n")
        try:
            os.link(aside, path)
        except FileExistsError:  # made meanwhile by another command: that one counts
            value = generated(path, where, key)
        finally:
            aside.unlink()
    except OSError as exc:
        raise ManifestError(where, key, f"cannot keep a new secret in {path}: "
                            f"{exc.strerror}; check the state dir") from None
    return value


def read_env_file(path: Path, where: str, key: str, warnings: list[str]) -> dict[str, str]:
    """`KEY=VALUE` lines (as systemd's EnvironmentFile): blank lines and `#` comments are
    skipped, one pair of surrounding quotes is removed."""
    out = {}
    for number, line in enumerate(read_file(path, where, key, warnings).splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.removeprefix("export ").partition("=")
        name = name.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ManifestError(where, key, f"{path}:{number}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[name] = value
    return out

