"""The image the Kubernetes manifests expect, as a Containerfile beside them (README,
Kubernetes): built from the manifest's directory with `podman build` or `docker build`.

The contract (kubernetes_image.py): /usr/local/bin/python3 holds the apps' requirements, the
backend's server, wsgistack and prometheus_client; the manifest's directory is /app; a user
`app` with uid 10001. The official python images have /usr/local/bin/python3 already; on a
distribution's Python (Debian's /usr/bin/python3, as an image made by mmdebstrap has it) a
venv at /usr/local gives the same path, so the manifests need not know the base.

Two stages: the first copies the build context and installs (from `--wheels` when given, so
the build needs no index: hosts without internet, or a builder that does not trust the
index's certificate); the second takes the installed /usr/local and /app without the wheels.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from wsgistack.errors import WsgistackError
from wsgistack.plan import METRICS_PACKAGE, Plan
from wsgistack.targets.kubernetes_image import APP_DIR, IMAGE_PREFIX, IMAGE_PYTHON

DEFAULT_BASE = "docker.io/library/python:3.11-slim"
APP_UID = 10001
APP_USER = "app"
# An image made from a root filesystem (`podman import`) has no PATH at all; the official
# python images set this one.
PATH = "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"
# What each backend's container runs, from PyPI (uWSGI's wheel has Python built in).
SERVER_PACKAGE = {"granian": "granian", "gunicorn": "gunicorn", "uwsgi": "uwsgi"}


@dataclass(frozen=True)
class Build:
    """How the image is built: read once, before rendering (cli.py)."""

    base: str = DEFAULT_BASE
    wheels: str = ""  # a directory under the manifest's, relative to it ("": the index)
    # What pip installs, as pip arguments: wsgistack, the server and prometheus_client
    # pinned to what this machine runs, then every service's requirements.
    packages: tuple[str, ...] = ()
    # Where `pip wheel -r image-requirements.txt` finds wsgistack itself, when it is not
    # from an index (a source checkout): its directory, else "".
    wsgistack_source: str = ""


def image_packages(plan: Plan, pinned: tuple[str, ...]) -> tuple[str, ...]:
    """`pinned` (wsgistack, the server, prometheus_client), then the services'
    requirements in the order the manifest names them, each once."""
    out = list(pinned)
    for svc in plan.services:
        for item in svc.provision.packages:
            if item not in out:
                out.append(item)
    return tuple(out)


def _pinned(package: str) -> str:
    """At the version this machine runs, so the pods serve as `up` does here."""
    try:
        return f"{package}=={metadata.version(package)}"
    except metadata.PackageNotFoundError:
        return package


def _wsgistack_source() -> str:
    """wsgistack's source directory when it was installed from one (pip install -e, or a
    checkout), which `pip wheel` builds; "" when it came from an index."""
    try:
        text = metadata.distribution("wsgistack").read_text("direct_url.json") or "{}"
    except metadata.PackageNotFoundError:
        return ""
    url = str(json.loads(text).get("url", ""))
    return url.removeprefix("file://") if url.startswith("file:///") else ""


def read_build(plan: Plan, backend_id: str, base: str, wheels: str) -> Build:
    """What the build needs of this machine, read once before rendering: the versions it
    runs, and `wheels` (a directory under the manifest's: the build context) checked."""
    root = Path(plan.services[0].provision.variables["manifest_dir"]).resolve()
    rel = ""
    if wheels:
        where = Path(wheels).resolve()
        if not where.is_dir():
            raise WsgistackError(f"--wheels {wheels}: no such directory; fill one with "
                                 "`pip wheel -w DIR -r image-requirements.txt` (written by a "
                                 "render without --wheels)")
        if where != root and root not in where.parents:
            raise WsgistackError(f"--wheels {wheels} is outside {root}, the manifest's "
                                 "directory the image is built from; put the wheels under it")
        rel = where.relative_to(root).as_posix()
        if rel == ".":
            raise WsgistackError(f"--wheels {wheels} is the manifest's directory itself; "
                                 "give a directory under it that holds only wheels")
    pinned = ["wsgistack", SERVER_PACKAGE[backend_id],
              *([METRICS_PACKAGE] if plan.metrics else [])]
    return Build(base or DEFAULT_BASE, rel, image_packages(plan, tuple(map(_pinned, pinned))),
                 _wsgistack_source())


def _in_image(item: str, root: str) -> str:
    """A requirement file named by its path on this machine, where the image has it."""
    flag, sep, path = item.partition("=")
    if sep and flag in ("--requirement", "--constraint") and path.startswith(root + "/"):
        return f"{flag}={APP_DIR}/{path[len(root) + 1:]}"
    return item


def containerfile(plan: Plan, build: Build, root: str) -> str:
    """`root`: the manifest's directory (the build context) as this machine has it."""
    packages = " ".join(shlex.quote(_in_image(p, root)) for p in build.packages)
    source = (f"--no-index --find-links {APP_DIR}/{build.wheels}" if build.wheels else
              "--no-cache-dir")
    drop = f" \\\n    && rm -rf {APP_DIR}/{build.wheels}" if build.wheels else ""
    return f"""\
# {plan.name}: the image the manifests beside this file run (wsgistack render --target
# kubernetes). Build it from the manifest's directory, then push it as --image named it:
#   podman build -f THIS_FILE -t IMAGE MANIFEST_DIR
# A .containerignore (.dockerignore) there keeps what the image need not carry (venvs).
FROM {build.base} AS build
ENV PATH={PATH} LANG=C.UTF-8 PIP_DISABLE_PIP_VERSION_CHECK=1
# The contract's interpreter: the official python images have it; elsewhere a venv there.
RUN if [ ! -x {IMAGE_PYTHON} ]; then python3 -m venv {IMAGE_PREFIX}; fi
COPY . {APP_DIR}
RUN {IMAGE_PYTHON} -m pip install {source} \\
    {packages}{drop}

FROM {build.base}
ENV PATH={PATH} LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1
# keystone-manage --keystone-user and its kind look the user up by name.
RUN groupadd --system --gid {APP_UID} {APP_USER} \\
    && useradd --system --uid {APP_UID} --gid {APP_UID} --home-dir /nonexistent \\
       --no-create-home --shell /usr/sbin/nologin {APP_USER}
COPY --from=build {IMAGE_PREFIX} {IMAGE_PREFIX}
COPY --from=build {APP_DIR} {APP_DIR}
WORKDIR {APP_DIR}
USER {APP_UID}:{APP_UID}
"""


def requirements_txt(plan: Plan, build: Build) -> str:
    """What the image installs, for `pip wheel -w DIR -r image-requirements.txt` on a host
    with the index (then render with `--wheels DIR`)."""
    lines = [f"# {plan.name}: what the Containerfile installs; fetch it with",
             "#   pip wheel -w WHEELS_DIR -r image-requirements.txt"]
    for item in build.packages:
        flag, sep, path = item.partition("=")
        if sep and flag in ("--requirement", "--constraint"):
            lines.append(f"{'-r' if flag == '--requirement' else '-c'} {path}")
        elif item.partition("==")[0] == "wsgistack" and build.wsgistack_source:
            lines.append(build.wsgistack_source)  # builds wsgistack's wheel from its source
        else:
            lines.append(item)
    return "\n".join(lines) + "\n"
