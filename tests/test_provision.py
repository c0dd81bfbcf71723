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
    (stack.root / "app.conf.in").write_text(
        "url=${url} front=${front_url} user=${user} $$5 env=${env.SAMPLE_SETTING}\n")
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
    conf = (f"url={url} front=http://127.0.0.1:{port} user={user} $5 "
            f"env={state}/data/api|{url}\n")
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
     r"\(known: name, stack, state, .*; write \$\$ for a literal \$\)$"),
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


def two_services(port: int, after_up: str) -> str:
    return manifest(port, f"""env = {{ SAMPLE_SETTING = "${{services.auth.internal_url}}", \
AUTH_PASSWORD = "${{secret:auth}}" }}
after_up = [{after_up}]
[services.auth]
app = "sampleapp:application"
prefix = "/auth"
python_path = ["{FIXTURES}"]
processes = 1
templates = {{ "etc/auth.conf" = "auth.conf.in" }}
""")


def test_services_see_each_other_and_after_up_runs_on_every_up(stack):
    """Under granian each service has a port of its own: `${services.auth.url}` is auth's,
    not the front door's. `${secret:auth}` is one value, made once, kept, never shown."""
    port = free_port(2)
    (stack.root / "auth.conf.in").write_text("password=${secret:auth} me=${url}\n")
    stack.write(two_services(port, '''"sh -c 'echo $$AUTH_PASSWORD ${services.auth.url} \
>> ${data}/registered'"'''))
    first = stack.cli("up", "--detach")
    assert first.code == 0, first.err
    state = stack.root / ".wsgistack"
    kept = state / "secrets" / "auth"
    secret = kept.read_text().strip()
    assert len(secret) >= 24 and kept.stat().st_mode & 0o077 == 0
    auth = f"http://127.0.0.1:{port + 1}/auth"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/", timeout=10) as resp:
        assert json.loads(resp.read())["env"] == auth
    assert (state / "etc" / "auth.conf").read_text() == f"password={secret} me={auth}\n"
    assert stack.cli("down").code == 0
    second = stack.cli("up", "--detach")
    assert second.code == 0, second.err
    assert "after_up command" in first.err and "after_up command" in second.err
    # Run by every up, once the stack was healthy; the secret the same each time.
    assert (state / "data" / "api" / "registered").read_text() == f"{secret} {auth}\n" * 2
    log = (state / "logs" / "api-after_up.log").read_text()
    assert secret not in log + first.out + first.err + second.out + second.err
    assert stack.cli("down").code == 0


def test_failing_after_up_stops_the_stack(stack):
    port = free_port(2)
    (stack.root / "auth.conf.in").write_text("\n")
    stack.write(two_services(port, '''"sh -c 'echo nobody home; exit 4'"'''))
    res = stack.cli("up", "--detach")
    assert res.code == 2
    assert res.err.splitlines()[-1].startswith(
        "wsgistack: error: service 'api': after_up command `sh -c 'echo nobody home; exit 4'` "
        "failed (exit 4): nobody home; see ")
    assert res.err.rstrip().endswith("fix services.api.after_up and run `wsgistack up` again "
                                     "(the stack was stopped)")
    assert not (stack.root / ".wsgistack" / "state.json").exists()
    for p in (port, port + 1):  # both listeners are gone
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{p}/", timeout=5)


@pytest.mark.parametrize(("value", "message"), [
    ("${services.nova.url}", r"\$\{services.nova.url\}: no such service or value \(services: "
                             r"api, auth; values: url, internal_url, prefix\)$"),
    ("${secret:a/b}", r"\$\{secret:a/b\}: a secret's name is letters, digits, '.', '_' and "
                      r"'-'$"),
])
def test_bad_references_are_one_line(stack, value, message):
    (stack.root / "auth.conf.in").write_text("\n")
    stack.write(two_services(free_port(2), "").replace(
        '"${services.auth.internal_url}"', f'"{value}"'))
    res = stack.cli("up", "--detach")
    assert res.code == 2
    assert re.search(r"wsgistack.toml: services.api.env.SAMPLE_SETTING: " + message,
                     res.err.strip().splitlines()[-1]), res.err
