from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli
from wsgistack import check, manifest
from wsgistack.backends import resolve
from wsgistack.errors import ManifestError, ServerError

GOOD = """
[stack]
name = "cp"
[services.identity]
app = "keystone.wsgi.api:application"
prefix = "/identity"
env = { OS_KEYSTONE_CONFIG_DIR = "/etc/keystone" }
args = ["--debug"]
"""


def load(tmp_path: Path, text: str) -> manifest.Manifest:
    path = tmp_path / "wsgistack.toml"
    path.write_text(text)
    return manifest.load(path)


def test_good_manifest_is_frozen_and_typed(tmp_path):
    m = load(tmp_path, GOOD)
    svc = m.service("identity")
    assert (svc.prefix, svc.processes, svc.threads, svc.args) == ("/identity", 2, 1, ("--debug",))
    assert svc.env["OS_KEYSTONE_CONFIG_DIR"] == "/etc/keystone"
    with pytest.raises(AttributeError):
        svc.processes = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        svc.env["X"] = "y"  # type: ignore[index]


def test_default_prefix_is_the_service_name(tmp_path):
    m = load(tmp_path, '[services.placement]\napp = "placement.wsgi.api:application"\n')
    assert m.service("placement").prefix == "/placement"


@pytest.mark.parametrize(("text", "message"), [
    ('[services.a]\napp = "m:a"\nprocesess = 2\n',
     r"wsgistack.toml: services.a.procesess: unknown key; did you mean 'processes'\?"),
    ('[stack]\nbakend = "granian"\n[services.a]\napp = "m:a"\n',
     r"stack.bakend: unknown key; did you mean 'backend'\?"),
    ('[services.a]\napp = "m:a"\nprocesses = "4"\n',
     r"services.a.processes: expected integer, got str '4'"),
    ('[services.a]\napp = "m:a"\nprocesses = true\n',
     r"services.a.processes: expected integer, got bool True"),
    ('[services.a]\napp = "m:a"\nprocesses = 0\n',
     r"services.a.processes: must be at least 1, got 0"),
    ('[services.a]\nprefix = "/a"\n', r"services.a.app: missing required key: App spec"),
    ('[services.a]\napp = "m:a"\nprefix = "a/"\n',
     r"services.a.prefix: 'a/' must start with '/' and not end with '/'"),
    ('[services.a]\napp = "m:a"\n[services.b]\napp = "m:b"\nprefix = "/a"\n',
     r"services.b.prefix: '/a' is already the prefix of service 'a'"),
    ('[services.a]\napp = "m:a"\nenv = { X = [1] }\n', r"services.a.env.X: expected a string"),
    ('[stack]\nname = "x"\n', r"services: no services: add a \[services.NAME\] table"),
    ('[servces.a]\napp = "m:a"\n', r"servces: unknown table; did you mean 'services'\?"),
    ('[services.A]\napp = "m:a"\n', r"services.A: service names must match"),
    ('[services.metrics]\napp = "m:a"\n', r"services.metrics: 'metrics' is the name of the "
     r"metrics exporter's process; name the service otherwise"),
    ('[services.a\n', r"wsgistack.toml: -: not valid TOML"),
    ('[services.nova]\napp = "m:a"\n[services.meta]\napp = "m:b"\nneeds = ["nvoa"]\n',
     r"services.meta.needs: 'nvoa' is not another service of the stack; did you mean 'nova'\?"),
    ('[services.a]\napp = "m:a"\nneeds = ["a"]\n',
     r"services.a.needs: 'a' is not another service of the stack$"),
])
def test_manifest_errors_name_file_and_key(tmp_path, text, message):
    with pytest.raises(ManifestError, match=message):
        load(tmp_path, text)


def test_cli_prints_one_line_and_exits_non_zero(tmp_path):
    (tmp_path / "wsgistack.toml").write_text('[services.a]\napp = "m:a"\nthreds = 2\n')
    res = run_cli("up", "--detach", cwd=tmp_path)
    assert res.code == 2
    manifest_path = tmp_path / "wsgistack.toml"
    assert res.err == (f"wsgistack: error: {manifest_path}: services.a.threds: unknown key; "
                       "did you mean 'threads'?\n")
    assert res.err.count("\n") == 1
    assert not (tmp_path / ".wsgistack").exists()


def test_missing_manifest_file(tmp_path):
    with pytest.raises(ManifestError, match=r"nope\.toml: -: file not found"):
        manifest.load(tmp_path / "nope.toml")


def test_embedded_default_is_used_without_a_manifest(tmp_path):
    m = manifest.find(None, tmp_path)
    assert m.path == manifest.EMBEDDED
    assert [s.name for s in m.services] == ["catalog", "probe", "hello"]
    assert m.state_path == tmp_path.resolve() / ".wsgistack-example"


def test_each_manifest_file_has_a_state_dir_of_its_own(tmp_path):
    for name, state in (("wsgistack.toml", ".wsgistack"), ("alpha.toml", ".wsgistack-alpha")):
        (tmp_path / name).write_text('[services.a]\napp = "x:app"\n')
        assert manifest.load(tmp_path / name).state_path == tmp_path.resolve() / state
    (tmp_path / "beta.toml").write_text('[stack]\nstate_dir = "st"\n[services.a]\napp = "x:app"\n')
    assert manifest.load(tmp_path / "beta.toml").state_path == tmp_path.resolve() / "st"


def test_settings_reference_is_generated_and_committed():
    committed = Path(__file__).parent.parent / "docs" / "settings.md"
    assert committed.read_text() == manifest.settings_reference() + "\n", (
        "docs/settings.md is stale: run `wsgistack settings > docs/settings.md`")
    for fld in manifest.settings_of(manifest.ServiceConfig):
        assert f"| `{fld.name}` |" in committed.read_text()


def test_a_manifest_extends_another_key_by_key(tmp_path):
    (tmp_path / "wsgistack.toml").write_text(GOOD + "processes = 2\n[services.extra]\n"
                                             'app = "x:app"\n')
    (tmp_path / "more.toml").write_text(
        '[stack]\nextends = "wsgistack.toml"\nname = "cp-db"\n[services.identity]\n'
        'processes = 4\nargs = []\nenv = { DB = "postgresql://" }\n[services.new]\napp = "y:app"\n')
    m = manifest.load(tmp_path / "more.toml")
    assert m.stack.name == "cp-db" and [s.name for s in m.services] == ["identity", "extra", "new"]
    svc = m.service("identity")
    # Tables merge (env keeps its key), values and lists replace, the rest is the base's.
    assert (svc.processes, svc.args, svc.prefix) == (4, (), "/identity")
    assert dict(svc.env) == {"OS_KEYSTONE_CONFIG_DIR": "/etc/keystone", "DB": "postgresql://"}


@pytest.mark.parametrize(("files", "message"), [
    ({"a.toml": '[stack]\nextends = "b.toml"\n', "b.toml": '[stack]\nextends = "a.toml"\n'},
     r"b.toml: stack.extends: a.toml extends this manifest again$"),
    ({"a.toml": '[stack]\nextends = "sub/b.toml"\n', "sub/b.toml": "[stack]\n"},
     r"a.toml: stack.extends: sub/b.toml is in another directory; extend a manifest beside "
     r"this one$"),
    ({"a.toml": '[stack]\nextends = "nowhere.toml"\n'},
     r"a.toml: stack.extends: no manifest .*/nowhere.toml; fix the name \(it is relative "
     r"to this manifest\)$"),
])
def test_extends_errors_are_one_line(tmp_path, files, message):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    with pytest.raises(ManifestError, match=message):
        manifest.load(tmp_path / "a.toml")


def test_an_unknown_backend_is_named_with_the_manifest(tmp_path):
    """The manifest knows no servers: the registry checks the name it is given."""
    m = load(tmp_path, '[stack]\nbackend = "gunicron"\n[services.a]\napp = "m:a"\n')
    with pytest.raises(ManifestError, match=r"wsgistack.toml: stack.backend: unknown backend "
                       r"'gunicron'; did you mean 'gunicorn'\? \(known: granian, "):
        resolve(m)


NEEDS = """
[services.nova]
app = "m:a"
[services.meta]
app = "m:b"
needs = ["nova"]
[services.edge]
app = "m:c"
needs = ["meta", "nova"]
[services.x]
app = "m:x"
needs = ["y"]
[services.y]
app = "m:y"
needs = ["x"]
"""


def test_needs_come_first_each_once_and_a_cycle_is_one_line(tmp_path):
    m = load(tmp_path, NEEDS)
    assert [s.name for s in check.with_needs(m, "edge")] == ["nova", "meta", "edge"]
    assert [s.name for s in check.with_needs(m, "nova")] == ["nova"]
    with pytest.raises(ServerError, match=r"^service 'x' needs itself through x -> y -> x$"):
        check.with_needs(m, "x")


def test_check_base_port_moves_the_checks_ports_not_the_stacks(tmp_path, monkeypatch):
    """`check --base-port` places the check's own stack; the other services, which a
    checked service reaches through `${services.NAME.url}`, stay on the stack's ports."""
    (tmp_path / "wsgistack.toml").write_text(
        '[stack]\nbase_port = 9100\n[services.a]\napp = "m:a"\n')
    seen = []

    def fake_run(m, service, backends, progress, paths, strict, base_port):
        seen.append((m.stack.base_port, base_port))
        return {}, {}

    monkeypatch.setattr(check, "run", fake_run)
    res = run_cli("check", "a", "--backends", "granian", "--base-port", "9700", cwd=tmp_path)
    assert res.code == 0, res.err
    assert seen == [(9100, 9700)]
