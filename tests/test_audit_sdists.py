"""`wsgistack audit` as a new user would try it: sdists of real Python web services from
PyPI, downloaded and unpacked in a temporary directory (nothing committed), what it finds
pinned. Marked `pypi`: it needs the package index."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from wsgistack.audit import audit_tree

pytestmark = pytest.mark.pypi

SDISTS = {  # requirement -> (project, verdict, evidence that must be among the reasons)
    # The entry, and the project's own uWSGI ini that serves it.
    "keystone==30.0.0": ("keystone 30.0.0", "supported",
                         "WSGI entry: defines `application`, the app "
                         "httpd/keystone-uwsgi-public.ini:2 serves at keystone/wsgi/api.py:19"),
    "openstack-placement==16.0.0": (
        "openstack-placement 16.0.0", "supported",
        "WSGI entry: defines `application` at placement/wsgi/api.py:19"),
    "glance==33.0.0": ("glance 33.0.0", "supported",
                       "WSGI entry: defines `application`, the app httpd/glance-api-uwsgi.ini:18 "
                       "serves at glance/wsgi/api.py:19"),
    # Zed's Glance: a WSGI entry; glance-api, the console script named for that API, is
    # the old way to run the same app (on eventlet), not an API without an entry.
    "glance==25.0.0": ("glance 25.0.0", "supported",
                       "WSGI entry: glance-wsgi-api = glance.common.wsgi_app:init_app "
                       "(glance/common/wsgi_app.py) at setup.cfg:47"),
    "oslo.config==10.7.0": ("oslo.config 10.7.0", "no API service",
                            "no WSGI entry point and no server started by its code"),
    "Flask-RESTful==0.3.10": ("Flask-RESTful 0.3.10", "no API service",
                              "no WSGI entry point and no server started by its code"),
}


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    where = tmp_path_factory.mktemp("sdists")
    glances = [r for r in SDISTS if r.startswith("glance")]
    # One pip call cannot hold two versions of a project.
    for batch in ([r for r in SDISTS if r not in glances[1:]], glances[1:]):
        res = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
             ":all:", "--disable-pip-version-check", "--dest", str(where), *batch],
            capture_output=True, text=True, check=False)
        assert res.returncode == 0, res.stderr[-2000:]
    out = {}
    safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    for archive in sorted(where.glob("*.tar.gz")):
        with tarfile.open(archive) as tar:
            tar.extractall(where, **safe)  # type: ignore[arg-type]
        root = where / archive.name.removesuffix(".tar.gz")
        name, _, version = root.name.rpartition("-")
        out[normalise(f"{name}=={version}")] = root
    return out


def normalise(requirement: str) -> str:
    name, _, version = requirement.partition("==")
    return re.sub(r"[-_.]+", "-", name).lower() + "==" + version


@pytest.mark.parametrize("requirement", list(SDISTS))
def test_real_sdist(trees: dict[str, Path], requirement: str) -> None:
    project, verdict, evidence = SDISTS[requirement]
    root = trees[normalise(requirement)]
    # How fast is the benchmark's to say (2 shared cores: a timed assertion only measures
    # the machine's load).
    audit = audit_tree(str(root))
    assert (audit.project, audit.verdict) == (project, verdict), audit.reasons
    assert evidence in audit.reasons
