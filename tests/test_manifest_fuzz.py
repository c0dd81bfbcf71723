"""Fuzzed manifests: whatever a manifest holds, it loads, or fails in one line naming the file;
and a plausible one brought up for real is healthy, or fails and leaves nothing running."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Stack, free_port
from wsgistack import manifest, plan, runtime
from wsgistack.backends import BACKENDS, get, resolve
from wsgistack.errors import WsgistackError
from wsgistack.host import Host
from wsgistack.lifecycle import processes

STACK_KEYS = [f.name for f in manifest.settings_of(manifest.StackConfig)]
SERVICE_KEYS = [f.name for f in manifest.settings_of(manifest.ServiceConfig)]
ROOT = Host(root=True, user="root", group="root", home="/root", environ={"PATH": "/usr/bin"})

scalars = st.one_of(
    st.text(max_size=12), st.integers(-(2**31), 2**31), st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", "/", "/api", "granian", "nginx+uwsgi", "127.0.0.1", "::1",
                     "wsgistack.apps.probe:application", "pkg:make()", "paste:x.ini#main",
                     "${url}", "${nope}", "$", "${file:missing}", "10.0.0.0/8", "root"]))
values = st.one_of(scalars, st.lists(scalars, max_size=3),
                   st.dictionaries(st.text(max_size=6), scalars, max_size=3))


def table(keys: list[str]) -> Any:
    return st.dictionaries(st.one_of(st.sampled_from(keys), st.text(max_size=8)), values,
                           max_size=6)


documents = st.fixed_dictionaries(
    {"stack": table(STACK_KEYS),
     "services": st.dictionaries(st.one_of(st.sampled_from(["api", "web", "x-1"]),
                                           st.text(max_size=6)),
                                 table(SERVICE_KEYS), max_size=3)},
    optional={"extra": values})

ROOT_DIR = Path(tempfile.mkdtemp(prefix="wsgistack-fuzz-"))


@pytest.fixture(scope="module", autouse=True)
def _remove_root_dir() -> Iterator[None]:
    yield
    shutil.rmtree(ROOT_DIR, ignore_errors=True)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_any_manifest_loads_or_fails_in_one_line(doc):
    try:
        m = manifest.parse(doc, "fuzz.toml", ROOT_DIR)
        resolve(m)  # the manifest's own backend, named or not
        for backend in BACKENDS:
            runtime.render(plan.build(m, get(backend), state=ROOT_DIR / "state", host=ROOT))
    except WsgistackError as exc:
        text = str(exc)
        assert "\n" not in text and text.strip() == text and text, text
        assert text.startswith("fuzz.toml: ") or text.startswith("app spec ") \
            or text.startswith("cannot load app"), text


plausible = st.fixed_dictionaries({
    "processes": st.integers(-1, 3), "threads": st.integers(0, 3),
    "prefix": st.sampled_from(["/", "/api", "/a/b", "api", "/api/"]),
    "health_path": st.sampled_from(["/", "/status/200", "/status/500", "/nowhere"]),
    "max_body": st.integers(-1, 2**20), "timeout": st.integers(0, 30),
    "app": st.sampled_from(["wsgistack.apps.probe:application", "wsgistack.apps.nope:app",
                            "wsgistack.apps.hello:application"]),
})


@pytest.mark.live
@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(service=plausible, backend=st.sampled_from(sorted(BACKENDS)))
def test_a_plausible_manifest_comes_up_or_leaves_nothing(tmp_path, service, backend):
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    root.chmod(0o755)
    stack = Stack(root)
    svc = "\n".join(f"{k} = {v!r}".replace("'", '"') for k, v in service.items())
    stack.write(f"[stack]\nbase_port = {free_port(1)}\nstart_timeout = 10\n"
                f"[services.api]\n{svc}\n")
    res = stack.cli("up", "--detach", "--backend", backend)
    try:
        if res.code == 0:
            assert stack.cli("status").code == 0
        else:
            assert res.code == 2
            assert res.err.splitlines()[-1].startswith("wsgistack: error: "), res.err
            assert "Traceback" not in res.err
            assert processes.marked(str(root / ".wsgistack"), nested=True) == []
    finally:
        stack.cli("down")
    assert processes.marked(str(root / ".wsgistack"), nested=True) == []


def test_fuzzed_settings_cover_every_declared_key():
    # The generators draw from the declarations: a new setting is fuzzed without a change here.
    declared = {f.name for f in dataclasses.fields(manifest.ServiceConfig)} - {"name"}
    assert declared == set(SERVICE_KEYS)
