"""Who may read, write or pass through each file and directory under the state dir.

Entries, server configs, rendered templates and setup logs hold env values and command
lines, so secrets: they are readable by root and the one service's group, and by no other
local user. What the app must write (its data dir, its log, its run dir) belongs to its
user; what it only reads is root's, so a hijacked app cannot change its own code or config.
A directory that several users must pass through (the state dir, entries/, logs/) is 0711:
searchable, but nobody else can list it, and each file in it guards itself.

Started as another user than root, the same modes apply and nothing is chowned: every file
is that user's alone.
"""

from __future__ import annotations

import grp
import os
import pwd
from pathlib import Path

from wsgistack.plan import Plan, ServicePlan

PASS_THROUGH = 0o711  # several users search it; nobody lists it
PRIVATE_DIR = 0o700
GROUP_DIR = 0o750
PRIVATE_FILE = 0o600
GROUP_FILE = 0o640
SHARED_DIRS = ("entries", "conf", "logs", "data", "venvs", "tmp", "check", "serve",
               "preflight")


def _ids(plan: Plan, user: str, group: str) -> tuple[int, int]:
    """(uid, gid) to chown to; -1 leaves it as it is: not root, not named, or not made yet
    (`render` before the first `up` creates the default user: the file stays root's, which
    its mode already keeps from everyone else)."""
    if not plan.root:
        return -1, -1
    try:
        uid = pwd.getpwnam(user).pw_uid if user else -1
    except KeyError:
        uid = -1
    try:
        gid = grp.getgrnam(group).gr_gid if group else -1
    except KeyError:
        gid = -1
    return uid, gid


def make_dir(plan: Plan, path: str, mode: int, user: str = "", group: str = "") -> None:
    os.makedirs(path, mode=PASS_THROUGH, exist_ok=True)
    os.chown(path, *_ids(plan, user, group))
    os.chmod(path, mode)


def make_file(plan: Plan, path: str, mode: int, user: str = "", group: str = "",
              text: str | None = None) -> None:
    """Create (or with `text`, replace) a file with its owner and mode set before a byte of
    it is written: there is no moment at which another user could open it."""
    make_parents(plan, os.path.dirname(path))
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_TRUNC if text is not None else 0)
    fd = os.open(path, flags, PRIVATE_FILE)
    try:
        os.fchown(fd, *_ids(plan, user, group))
        os.fchmod(fd, mode)
        if text is not None:
            os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)


def make_parents(plan: Plan, path: str) -> None:
    """Directories made on the way to a file: passable, not listable."""
    missing = []
    current = Path(path)
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        make_dir(plan, str(directory), PASS_THROUGH)


def layout(plan: Plan) -> None:
    """The state dir's directories, with their owners and modes."""
    make_parents(plan, os.path.dirname(plan.state))
    make_dir(plan, plan.state, PASS_THROUGH)
    for sub in SHARED_DIRS:
        make_dir(plan, plan.path(sub), PASS_THROUGH)
    make_dir(plan, plan.path("setup"), PRIVATE_DIR)
    if plan.front_port:
        # The front end's workers reach the sockets; the apps never need to.
        make_dir(plan, plan.path("run"), GROUP_DIR, group=plan.front_user)
    else:
        make_dir(plan, plan.path("run"), PASS_THROUGH)
    make_dir(plan, plan.path("run", "empty"), PASS_THROUGH)  # Apache's document root
    for svc in plan.services:
        # Listable by the service's group (imports list it); searchable by the front end's
        # workers, which look at the entry under mod_wsgi.
        make_dir(plan, os.path.dirname(svc.entry), GROUP_DIR | 0o001, group=svc.group)
        if not plan.front_port:
            make_dir(plan, svc.run_dir, PRIVATE_DIR, svc.user, svc.group)
        make_dir(plan, svc.provision.data_dir, GROUP_DIR, svc.user, svc.group)
        # What the app's own process writes: its access lines, and under mod_wsgi its log.
        for log in (f"{svc.name}-access.log", f"{svc.name}.log"):
            make_file(plan, plan.path("logs", log), GROUP_FILE, svc.user, svc.group)


def service_files(plan: Plan) -> dict[str, ServicePlan]:
    """Rendered files that one service's processes read, by path under the state dir."""
    from wsgistack.backends.base import service_files as files_of

    return {rel: svc for svc in plan.services for rel in files_of(svc)}


def write_rendered(plan: Plan, files: dict[str, str]) -> set[str]:
    """A service's own files for its group to read; the rest (front-end configs, read by
    their root master) for root alone. Returns the files whose text changed."""
    owners = service_files(plan)
    changed = set()
    for rel, text in files.items():
        try:
            changed |= set() if Path(plan.path(rel)).read_text(encoding="utf-8") == text \
                else {rel}
        except (OSError, UnicodeDecodeError):
            changed.add(rel)
        svc = owners.get(rel)
        if svc is not None:
            group_readable(plan, svc, plan.path(rel), text)
        else:
            make_file(plan, plan.path(rel), PRIVATE_FILE, text=text)
    return changed


def service_log(plan: Plan, path: str) -> None:
    """A server's log, before it is opened for appending: a service's belongs to its user
    (root may still read it), a front end's to root."""
    svc = next((s for s in plan.services if path == plan.path("logs", f"{s.name}.log")), None)
    if svc is None:
        make_file(plan, path, PRIVATE_FILE)
    else:
        make_file(plan, path, GROUP_FILE, svc.user, svc.group)


def group_readable(plan: Plan, svc: ServicePlan, path: str, text: str | None = None) -> None:
    """A file root writes for one service to read: its setup log, its rendered templates."""
    make_file(plan, path, GROUP_FILE, group=svc.group, text=text)


def hand_over(plan: Plan, svc: ServicePlan, path: str) -> None:
    """Give a tree the app writes (its data dir) to the app's user: sqlite files and key
    repositories made by setup commands included."""
    if not plan.root:
        return
    uid, gid = _ids(plan, svc.user, svc.group)
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.lchown(name, uid, gid)


def venv(plan: Plan, svc: ServicePlan, path: str) -> None:
    """A venv is code, not secrets, but the state dir is nobody else's business."""
    make_dir(plan, path, GROUP_DIR, group=svc.group)
