"""Live: venvs, templates, setup commands and `${variables}` before a service starts."""

from __future__ import annotations

import json
import os
import pwd
import re
import urllib.request

import pytest

from tests.conftest import FIXTURES, free_port

pytestmark = pytest.mark.live


def manifest(port: int, extra: str) -> str:
    return f"""
[stack]
name = "prov"
base_port = {port}
start_timeout = 20
[services.api]
app = "sampleapp:application"
prefix = "/api"
python_path = ["{FIXTURES}"]
processes = 1
{extra}
"""


def test_templates_setup_and_variables(stack):
    port = free_port(1)
    (stack.root / "app.conf.in").write_text("url=${url} front=${front_url} user=${user} $$5\n")
    stack.write(manifest(port, """
env = { SAMPLE_SETTING = "${data}|${url}" }
templates = { "etc/app.conf" = "app.conf.in" }
setup = ["sh -c 'echo ran >> ${data}/count'", "sh -c 'cat ${state}/etc/app.conf'"]
"""))
    first = stack.cli("up", "--detach")
    assert first.code == 0, first.err
    state = stack.root / ".wsgistack"
    url = f"http://127.0.0.1:{port}/api"
    with urllib.request.urlopen(url + "/", timeout=10) as resp:
        assert json.loads(resp.read())["env"] == f"{state}/data/api|{url}"
    user = "wsgistack" if os.geteuid() == 0 else pwd.getpwuid(os.getuid()).pw_name
    conf = f"url={url} front=http://127.0.0.1:{port} user={user} $5\n"
    assert (state / "etc" / "app.conf").read_text() == conf
    log = (state / "logs" / "api-setup.log").read_text()
    assert conf in log  # setup ran after the templates, and its output was kept
    assert stack.cli("down").code == 0

    second = stack.cli("up", "--detach")
    assert second.code == 0, second.err
    assert "setup command" in first.err and "setup command" not in second.err
    assert (state / "data" / "api" / "count").read_text() == "ran\n"


def test_failing_setup_starts_nothing(stack):
    stack.write(manifest(free_port(1), 'setup = ["true", "sh -c \'echo boom; exit 3\'"]'))
    res = stack.cli("up", "--detach")
    assert res.code == 2
    assert res.err.splitlines()[-1].startswith(
        "wsgistack: error: service 'api': setup command `sh -c 'echo boom; exit 3'` failed "
        "(exit 3): boom; see ")
    assert not (stack.root / ".wsgistack" / "state.json").exists()
    assert not (stack.root / ".wsgistack" / "setup" / "api.done").exists()


@pytest.mark.parametrize(("extra", "message"), [
    ('env = { SAMPLE_SETTING = "${nope}" }',
     r"wsgistack.toml: services.api.env.SAMPLE_SETTING: unknown variable \$\{nope\} "
     r"\(known: name, state, .*; write \$\$ for a literal \$\)$"),
    ('templates = { "etc/x.conf" = "missing.in" }',
     r"wsgistack.toml: services.api.templates: cannot read template .*/missing.in: "
     r"No such file or directory$"),
    ('requirements = ["wsgistack-no-such-package-0xdead"]',
     r"service 'api': `.*/bin/python -m pip install \.\.\.` failed: .*; see .*venv-.*\.log; "
     r"fix services.api.requirements or \[stack\] venv_python$"),
])
def test_provisioning_errors_are_one_line(stack, extra, message):
    stack.write(manifest(free_port(1), extra))
    res = stack.cli("up", "--detach")
    assert res.code == 2
    assert len(res.err.strip().splitlines()) <= 3  # progress lines, then the one error
    assert res.err.strip().splitlines()[-1].startswith("wsgistack: error: ")
    assert re.search(message, res.err.strip().splitlines()[-1])
    assert not (stack.root / ".wsgistack" / "state.json").exists()
