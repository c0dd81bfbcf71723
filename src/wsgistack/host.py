"""What the machine is, read once before planning, and who each process runs as.

Renderers never ask the operating system: whether we run as root, who we are and what the
caller's environment holds are read here into a :class:`Host`, and the plan carries them.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Mapping
from dataclasses import dataclass, field

from wsgistack.errors import ManifestError

# The app user when started as root: a system user of our own, as Debian packages make one
# per service (keystone, placement). Not www-data: the front end's workers would then read
# the apps' secrets, and a hijacked app could sign the front end's files; not nobody: it is
# shared by every daemon that wanted "no one", so they could all reach each other's data.
DEFAULT_USER = "wsgistack"
# Who Apache's and nginx's workers serve as when started as root (Debian's user for both).
FRONT_USER = "www-data"
# What a server inherits from the caller; everything else comes from the manifest.
KEPT_ENV = ("PATH", "LANG", "LC_ALL", "TZ")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Host:
    root: bool  # started as root: services get users of their own
    user: str  # who runs wsgistack
    group: str
    home: str
    environ: Mapping[str, str] = field(default_factory=dict)  # the caller's environment
    # `install`: the ports the system's Apache already has a `Listen` for (ports.conf).
    listening: tuple[int, ...] = ()

    @classmethod
    def read(cls) -> Host:
        pw = pwd.getpwuid(os.geteuid())
        return cls(root=os.geteuid() == 0, user=pw.pw_name,
                   group=_group_name(pw.pw_gid), home=pw.pw_dir, environ=dict(os.environ))

    @property
    def front_user(self) -> str:
        """The user a front end's workers serve as ("": whoever starts it)."""
        return FRONT_USER if self.root else ""

    def base_env(self, home: str) -> dict[str, str]:
        """The clean environment every server and setup command starts from."""
        env = {k: self.environ[k] for k in KEPT_ENV if k in self.environ}
        env.setdefault("PATH", DEFAULT_PATH)
        env["HOME"] = home
        return env


@dataclass(frozen=True)
class Identity:
    """Who a service's processes run as."""

    user: str
    group: str
    home: str
    create: bool = False  # the default system user, made on first `up` (adduser --system)

    @property
    def root(self) -> bool:
        return self.user == "root"


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def identity(host: Host, user: str, group: str, where: str, key: str) -> Identity:
    """Resolve the `user`/`group` settings (`key` names the table that set them)."""
    name = user or (DEFAULT_USER if host.root else host.user)
    if not host.root:
        if name != host.user:
            raise ManifestError(where, f"{key}.user", f"wsgistack runs as '{host.user}', "
                                f"not root, so it cannot run services as '{name}'; start it "
                                "as root, or remove the setting")
        if group and group != host.group:
            raise ManifestError(where, f"{key}.group", f"wsgistack runs as '{host.user}', "
                                f"not root, so it cannot run services in group '{group}'")
        return Identity(host.user, host.group, host.home)
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        if name != DEFAULT_USER:
            raise ManifestError(where, f"{key}.user", f"unknown user '{name}'; create it "
                                f"(adduser --system --group {name}) or name another") from None
        return Identity(name, group or name, "/nonexistent", create=True)
    if group:
        try:
            grp.getgrnam(group)
        except KeyError:
            raise ManifestError(where, f"{key}.group", f"unknown group '{group}'; create it "
                                f"(addgroup --system {group}) or name another") from None
    return Identity(pw.pw_name, group or _group_name(pw.pw_gid), pw.pw_dir)
