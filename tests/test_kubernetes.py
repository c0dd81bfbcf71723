"""`render --target kubernetes`: the manifests for the example stacks on each backend that
runs one server per container, their properties, and the real schemas, offline.

Validation: every object but the HTTPRoute against Kubernetes' own OpenAPI schemas as
PyPI's kubernetes-validate bundles them (strict: an unknown field fails); the HTTPRoute
against the Gateway API CRD schema as npm's @kubernetes-models/gateway-api carries it, run
with node (skipped when either is missing). The kustomization has no schema there: it is
checked against the files it lists.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_cli
from wsgistack import backends
from wsgistack import manifest as manifests
from wsgistack import plan as planning
from wsgistack.errors import ServerError
from wsgistack.host import DEFAULT_PATH, Host
from wsgistack.targets import kubernetes as k8s
from wsgistack.targets import kubernetes_scripts, yaml_text

yaml = pytest.importorskip("yaml")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
HOST = Host(root=False, user="app", group="app", home="/nonexistent",
            environ={"PATH": DEFAULT_PATH, "LANG": "C.UTF-8"})
IMAGE = "registry.example/wsgistack-app:1.0"
K8S_VERSIONS = ("1.30.0", "1.37.0")  # the oldest with the preStop sleep action on by default


STACKS = {"example": None, "openstack": REPO / "examples/openstack/wsgistack.toml"}


def _manifest(stack: str, tmp: Path) -> manifests.Manifest:
    path = STACKS[stack]
    return manifests.load(path) if path else manifests.load_default(tmp)


def _render(stack: str, backend_id: str, tmp: Path) -> tuple[planning.Plan, dict[str, str]]:
    manifest = _manifest(stack, tmp)
    backend = backends.get(backend_id)
    scratch = tmp / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    plan = planning.build(manifest, backend, host=HOST,
                          target=k8s.target(manifest.stack.name, str(scratch)))
    return plan, k8s.render(plan, backend, IMAGE, k8s.read_templates(plan))


CASES = [(s, b) for s in STACKS for b in k8s.FITS]


@pytest.fixture(scope="module", params=CASES, ids=[f"{s}-{b}" for s, b in CASES])
def rendered(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[planning.Plan, dict[str, str], dict[str, Any]]:
    stack, backend_id = request.param
    plan, files = _render(stack, backend_id, tmp_path_factory.mktemp(stack))
    docs = {name: yaml.safe_load(text) for name, text in files.items()
            if name.endswith(".yaml")}
    return plan, files, docs


def _kind(docs: dict[str, Any], kind: str) -> Iterator[dict[str, Any]]:
    return (d for d in docs.values() if d["kind"] == kind)


def _pod_containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


# ---- properties --------------------------------------------------------------------------

def test_no_secret_value_anywhere(rendered: Any) -> None:
    plan, files, _ = rendered
    values = [v for v in plan.secrets if len(v) >= 4]
    if plan.name == "openstack":
        assert "s3cr3t" in values and len(values) >= 3  # the admin's, placement's, glance's
    for name, text in files.items():
        for value in values:
            assert value not in text, f"a secret value in {name}"


def test_secrets_come_from_the_operators_secret(rendered: Any) -> None:
    plan, files, docs = rendered
    refs = [e["valueFrom"]["secretKeyRef"] for d in docs.values() if "template" in d.get(
        "spec", {}) for c in _pod_containers(d) for e in c.get("env", []) if "valueFrom" in e]
    if plan.name != "openstack":
        assert refs == []
        return
    assert {r["name"] for r in refs} == {"openstack-secrets"}
    assert {r["key"] for r in refs} == {"OS_BOOTSTRAP_PASSWORD", "PLACEMENT_PASSWORD",
                                        "GLANCE_PASSWORD", "DEMO_PASSWORD"}
    # Placement's config names its password: the config init container fills it in.
    placement = docs["deployment-placement.yaml"]["spec"]["template"]["spec"]
    config = next(c for c in placement["initContainers"] if c["name"] == "config")
    assert [e["name"] for e in config["env"]] == ["PLACEMENT_PASSWORD"]
    conf = docs["configmap-placement.yaml"]["data"]["etc_placement_placement.conf"]
    assert "password = @@wsgistack-secret:PLACEMENT_PASSWORD@@" in conf
    assert "kubectl create secret generic openstack-secrets" in files["kustomization.yaml"]
    # The entries hold the env without its secrets (the container gets those).
    entry = docs["configmap-keystone.yaml"]["data"][
        "entries_keystone_wsgistack_entry_keystone.py"]
    assert "OS_KEYSTONE_CONFIG_DIR" in entry and "OS_BOOTSTRAP_PASSWORD" not in entry


def test_deployment_per_service(rendered: Any) -> None:
    plan, _, docs = rendered
    for svc in plan.services:
        dep = docs[f"deployment-{svc.name}.yaml"]
        pod = dep["spec"]["template"]["spec"]
        server = pod["containers"][0]
        path = svc.prefix + svc.config.health_path
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert server[probe]["httpGet"] == {"path": path, "port": "http"}
        assert server["ports"] == [{"name": "http", "containerPort": k8s.PORT,
                                    "protocol": "TCP"}]
        assert server["lifecycle"]["preStop"] == {"sleep": {"seconds": k8s.PRESTOP_SLEEP}}
        assert pod["terminationGracePeriodSeconds"] > svc.config.timeout + k8s.PRESTOP_SLEEP
        assert server["resources"]["requests"]["cpu"] and server["resources"]["limits"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        for c in _pod_containers(dep):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"] == {"drop": ["ALL"]}
        mounts = {m["mountPath"] for m in server["volumeMounts"]}
        assert {"/tmp", svc.run_dir, svc.provision.data_dir, plan.state} <= mounts
        # The server listens on every address, on PORT: in its argv or its ini.
        listen = " ".join(server["command"]) + docs[f"configmap-{svc.name}.yaml"]["data"].get(
            f"conf_uwsgi-{svc.name}.ini", "")
        assert f"0.0.0.0:{k8s.PORT}" in listen or f"0.0.0.0 --port {k8s.PORT}" in listen
        assert docs[f"service-{svc.name}.yaml"]["spec"]["ports"][0]["targetPort"] == "http"
        pdb = docs[f"pdb-{svc.name}.yaml"]
        assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]


def test_setup_steps_are_jobs_the_deployments_wait_for(rendered: Any) -> None:
    plan, _, docs = rendered
    for svc in plan.services:
        jobs = [d for n, d in sorted(docs.items()) if n.startswith(f"job-{svc.name}-setup-")]
        assert len(jobs) == len(svc.config.setup)
        pod = docs[f"deployment-{svc.name}.yaml"]["spec"]["template"]["spec"]
        waits = [c for c in pod["initContainers"] if c["name"] == "wait"]
        if not jobs:
            assert not waits
            continue
        names = [f"job:{j['metadata']['name']}" for j in jobs]
        assert waits[0]["command"][2:] == names
        assert pod["serviceAccountName"] == f"{plan.name}-setup-waiter"
        for before, job in zip([None, *jobs], jobs, strict=False):
            init = job["spec"]["template"]["spec"]["initContainers"]
            if before is not None:
                assert init[0]["command"][2:] == [f"job:{before['metadata']['name']}"]
    if plan.name == "openstack":
        keystone = docs["job-keystone-setup-1.yaml"]["spec"]["template"]["spec"]
        assert keystone["containers"][0]["command"][:3] == [
            "keystone-manage", "--config-file",
            "/etc/wsgistack/openstack/etc/keystone/keystone.conf"]
        role = docs["role-openstack-setup-waiter.yaml"]["rules"][0]
        assert role["verbs"] == ["get"] and len(role["resourceNames"]) == 7


def test_routes_by_prefix(rendered: Any) -> None:
    plan, _, docs = rendered
    want = {(s.prefix or "/", f"{plan.name}-{s.name}") for s in plan.services}
    route = docs["httproute.yaml"]["spec"]
    assert {(r["matches"][0]["path"]["value"], r["backendRefs"][0]["name"])
            for r in route["rules"]} == want
    assert all(r["matches"][0]["path"]["type"] == "PathPrefix" for r in route["rules"])
    paths = docs["ingress.yaml"]["spec"]["rules"][0]["http"]["paths"]
    assert {(p["path"], p["backend"]["service"]["name"]) for p in paths} == want


def test_kustomization_lists_every_file(rendered: Any) -> None:
    _, files, docs = rendered
    assert sorted(docs["kustomization.yaml"]["resources"]) == sorted(
        n for n in files if n.endswith(".yaml") and n != "kustomization.yaml")
    assert set(files) - set(docs) == {"Containerfile", "image-requirements.txt"}


def test_metrics_sidecar_shares_the_workers_counts(rendered: Any) -> None:
    """Each pod: the exporter beside the server, reading the emptyDir the server's workers
    write their counts in, on a named port Prometheus is told of."""
    plan, _, docs = rendered
    for svc in plan.services:
        template = docs[f"deployment-{svc.name}.yaml"]["spec"]["template"]
        server, sidecar = template["spec"]["containers"]
        assert sidecar["name"] == "metrics" and sidecar["image"] == server["image"]
        assert sidecar["command"] == [
            "/usr/local/bin/python3", "-m", "wsgistack.exporter", "--listen",
            f"0.0.0.0:{k8s.METRICS_PORT}", "--state", plan.state,
            "--metrics", f"/run/wsgistack/{plan.name}/metrics"]
        assert sidecar["ports"] == [{"name": "metrics", "containerPort": k8s.METRICS_PORT,
                                     "protocol": "TCP"}]
        for probe in ("readinessProbe", "livenessProbe"):
            assert sidecar[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}
        where = f"/run/wsgistack/{plan.name}/metrics/{svc.name}"
        assert {"name": "metrics", "mountPath": where} in server["volumeMounts"]
        assert sidecar["volumeMounts"] == [{"name": "metrics", "mountPath": where,
                                            "readOnly": True}]
        assert template["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
        assert template["metadata"]["annotations"]["prometheus.io/port"] == str(
            k8s.METRICS_PORT)
        assert template["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
        entry = next(v for k, v in docs[f"configmap-{svc.name}.yaml"]["data"].items()
                     if k.startswith("entries_") and "wsgistack_entry" in k)
        assert f"METRICS_DIR = {where!r}" in entry
    policy = docs[f"networkpolicy-{plan.name}-api.yaml"]["spec"]["ingress"][0]["ports"]
    assert {"port": k8s.METRICS_PORT, "protocol": "TCP"} in policy


def test_no_sidecar_when_metrics_are_off(tmp_path: Path) -> None:
    manifest = tmp_path / "wsgistack.toml"
    manifest.write_text('[stack]\nname = "quiet"\nmetrics = "off"\n\n[services.hello]\n'
                        'app = "wsgistack.apps.hello:application"\n')
    backend = backends.get("granian")
    plan = planning.build(manifests.load(manifest), backend, host=HOST,
                          target=k8s.target("quiet", str(tmp_path)))
    doc = yaml.safe_load(k8s.render(plan, backend, IMAGE)["deployment-hello.yaml"])
    template = doc["spec"]["template"]
    assert [c["name"] for c in template["spec"]["containers"]] == ["granian"]
    assert "metrics" not in {v["name"] for v in template["spec"]["volumes"]}
    assert not any(k.startswith("prometheus.io/") for k in template["metadata"]["annotations"])


def test_rendering_is_pure_and_repeatable(tmp_path: Path) -> None:
    """Two renders (other scratch dirs, so other made-up secrets) give the same files."""
    first = _render("openstack", "granian", tmp_path / "a")[1]
    second = _render("openstack", "granian", tmp_path / "b")[1]
    assert first == second


@pytest.mark.parametrize("backend_id", ["apache+uwsgi", "nginx+uwsgi", "mod_wsgi"])
def test_front_end_backends_refused_in_one_line(backend_id: str) -> None:
    with pytest.raises(ServerError) as caught:
        k8s.check_backend(backend_id)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"backend {backend_id} runs ")
    assert message.endswith("render for Kubernetes with granian, gunicorn or uwsgi")


def test_yaml_round_trips() -> None:
    doc = {"a": "yes", "b": "", "c": "line\n  two\n", "d": "no end", "e": " lead\nx",
           "f": "tail\n\n", "g": ["1", 1, True, None, {}], "h": {"x": [{"y": "$(Z)"}]},
           "i": "tab\tand\r\n", "j": "0.5", "k": "- dash", "l": "#hash"}
    assert yaml.safe_load(yaml_text.dump(doc)) == doc


# ---- the real schemas --------------------------------------------------------------------

def test_valid_against_kubernetes_schemas(rendered: Any) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    _, _, docs = rendered
    checked = 0
    for doc in docs.values():
        if doc["kind"] in ("HTTPRoute", "Kustomization"):
            continue
        for version in K8S_VERSIONS:
            kv.validate(doc, version, strict=True)  # raises with the path of what is wrong
        checked += 1
    assert checked >= 10


def test_validator_catches_mistakes() -> None:
    """The validator is not a no-op: a misspelled field and a wrong type fail."""
    kv = pytest.importorskip("kubernetes_validate")
    doc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
           "spec": {"ports": [{"port": "80"}], "selectr": {}}}
    with pytest.raises(kv.ValidationError):
        kv.validate(doc, "1.37.0", strict=True)


@pytest.fixture(scope="module")
def npm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Gateway API schema, from npm (tests/k8s/package.json pins it), beside its
    validator: installed here, in a temporary directory."""
    if not shutil.which("node") or not shutil.which("npm"):
        pytest.skip("node and npm are needed (Debian's nodejs)")
    where = tmp_path_factory.mktemp("npm")
    for name in ("package.json", "validate-httproute.mjs"):
        shutil.copy(HERE / "k8s" / name, where / name)
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent"], cwd=where,
                   check=True, capture_output=True, timeout=300)
    return where


def test_httproute_valid_against_gateway_api_schema(rendered: Any, tmp_path: Path,
                                                    npm: Path) -> None:
    script = npm / "validate-httproute.mjs"
    _, _, docs = rendered
    paths = []
    for name, doc in docs.items():
        if doc["kind"] == "HTTPRoute":
            paths.append(tmp_path / f"{name}.json")
            paths[-1].write_text(json.dumps(doc))
    assert paths
    done = subprocess.run(["node", str(script), *map(str, paths)], cwd=npm,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_gateway_validator_catches_mistakes(tmp_path: Path, npm: Path) -> None:
    script = npm / "validate-httproute.mjs"
    bad = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
           "metadata": {"name": "x"}, "spec": {"rules": [{"matches": [
               {"path": {"type": "Prefix", "value": "/a"}}]}]}}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    done = subprocess.run(["node", str(script), str(tmp_path / "bad.json")], cwd=npm,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 1 and "path/type" in done.stdout


# ---- the init containers' scripts, run here on a ConfigMap's layout ----------------------

def test_config_script_fills_in_secrets(tmp_path: Path) -> None:
    """As the kubelet lays a ConfigMap out: files under a timestamped dir, reached through
    `..data` and a link per top-level name."""
    real = tmp_path / "files" / "..2026_01_01_00_00_00.1"
    (real / "etc" / "placement").mkdir(parents=True)
    (real / "etc" / "placement" / "placement.conf").write_text(
        "password = @@wsgistack-secret:PLACEMENT_PASSWORD@@\nstate = $state_path\n")
    (tmp_path / "files" / "..data").symlink_to(real.name)
    (tmp_path / "files" / "etc").symlink_to("..data/etc")
    script = tmp_path / "config.py"
    script.write_text(kubernetes_scripts.CONFIG_PY)
    state = tmp_path / "state"
    subprocess.run([sys.executable, str(script), str(tmp_path / "files"), str(state)],
                   env={"PLACEMENT_PASSWORD": "from-the-secret"}, check=True)
    assert sorted(p.relative_to(state).as_posix() for p in state.rglob("*") if p.is_file()) \
        == ["etc/placement/placement.conf"]
    assert (state / "etc/placement/placement.conf").read_text() == (
        "password = from-the-secret\nstate = $state_path\n")


CHECKOV = "checkov==3.3.30"


@pytest.fixture(scope="module")
def checkov(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """checkov from PyPI in a venv of its own (its dependencies are many, and not ours)."""
    venv = tmp_path_factory.mktemp("checkov")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", CHECKOV], check=True,
                   capture_output=True, timeout=900)
    return venv / "bin" / "checkov"


@pytest.mark.pypi
@pytest.mark.parametrize("backend_id", k8s.FITS)
def test_checkov_finds_nothing_unjustified(checkov: Path, tmp_path: Path,
                                           backend_id: str) -> None:
    """examples/openstack: 0 failed checks; each check skipped says why, in the file."""
    _, files = _render("openstack", backend_id, tmp_path)
    out = tmp_path / "k8s"
    out.mkdir()
    for name, text in files.items():
        (out / name).write_text(text)
    done = subprocess.run([str(checkov), "-d", str(out), "--framework", "kubernetes",
                           "--compact", "-o", "json"], capture_output=True,
                          text=True, check=False, timeout=600)
    report = json.loads(done.stdout)
    summary = report["summary"]
    print(f"checkov {backend_id}: {summary['passed']} passed, {summary['failed']} failed, "
          f"{summary['skipped']} skipped")
    assert summary["failed"] == 0 and summary["passed"] > 500, summary
    skipped = report["results"]["skipped_checks"]
    assert {c["check_id"] for c in skipped} <= {"CKV_K8S_11", "CKV_K8S_35", "CKV_K8S_43"}
    assert all(len(c["check_result"].get("suppress_comment", "")) > 30 for c in skipped)


# ---- the image: its Containerfile ---------------------------------------------------------

def _hello_manifest(where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    (where / "wsgistack.toml").write_text(
        '[stack]\nname = "img"\n\n[services.hello]\napp = "wsgistack.apps.hello:application"\n'
        'prefix = "/hello"\nrequirements = ["flask>=3"]\n')
    return where / "wsgistack.toml"


def _render_cli(manifest: Path, out: Path, *extra: str) -> Any:
    return run_cli("-f", str(manifest), "render", "--target", "kubernetes", "--backend",
                   "gunicorn", "--image", IMAGE, "-o", str(out), *extra)


def test_containerfile_builds_the_contract_from_wheels(tmp_path: Path) -> None:
    manifest = _hello_manifest(tmp_path / "stack")
    (tmp_path / "stack" / "wheels").mkdir()
    done = _render_cli(manifest, tmp_path / "out", "--base-image", "localhost/base:12",
                       "--wheels", str(tmp_path / "stack" / "wheels"))
    assert done.code == 0, done.err
    text = (tmp_path / "out" / "Containerfile").read_text()
    assert text.count("FROM localhost/base:12") == 2  # the build stage, the image
    install = re.search(r"RUN /usr/local/bin/python3 -m pip install (.*?)\n\n", text, re.S)
    assert install, text
    words = install.group(1).split()
    assert words[:3] == ["--no-index", "--find-links", "/app/wheels"]
    pins = {w.partition("==")[0]: w for w in words if "==" in w}
    assert set(pins) == {"wsgistack", "gunicorn", "prometheus_client"}
    assert "'flask>=3'" in words and "rm -rf /app/wheels" in install.group(1)
    # The interpreter of the contract, whatever the base's own is.
    assert "RUN if [ ! -x /usr/local/bin/python3 ]; then python3 -m venv /usr/local; fi" in text
    assert "useradd --system --uid 10001 --gid 10001" in text
    assert text.rstrip().endswith("WORKDIR /app\nUSER 10001:10001")
    assert "COPY --from=build /usr/local /usr/local\nCOPY --from=build /app /app" in text
    wanted = (tmp_path / "out" / "image-requirements.txt").read_text().splitlines()
    assert pins["gunicorn"] in wanted and "flask>=3" in wanted
    assert pins["wsgistack"] in wanted or str(REPO) in wanted  # its source, when one


def test_containerfile_without_wheels_uses_the_index(tmp_path: Path) -> None:
    done = _render_cli(_hello_manifest(tmp_path / "stack"), tmp_path / "out")
    assert done.code == 0, done.err
    text = (tmp_path / "out" / "Containerfile").read_text()
    assert "FROM docker.io/library/python:3.11-slim AS build" in text
    assert "--no-index" not in text and "rm -rf" not in text


def test_wheels_dir_must_exist() -> None:
    from wsgistack.errors import WsgistackError
    from wsgistack.targets import kubernetes_build

    plan, _ = _render("example", "granian", Path("/nonexistent/scratch-never-made"))
    with pytest.raises(WsgistackError, match=r"^--wheels /no/such/wheels: no such directory; "
                       r"fill one with `pip wheel -w DIR -r image-requirements.txt`"):
        kubernetes_build.read_build(plan, "granian", "", "/no/such/wheels")


def test_wheels_dir_must_be_in_the_build_context(tmp_path: Path) -> None:
    manifest = _hello_manifest(tmp_path / "stack")
    (tmp_path / "elsewhere").mkdir()
    done = _render_cli(manifest, tmp_path / "out", "--wheels", str(tmp_path / "elsewhere"))
    assert done.code != 0
    assert re.fullmatch(r"wsgistack: error: --wheels \S+/elsewhere is outside \S+/stack, the "
                        r"manifest's directory the image is built from; put the wheels under "
                        r"it\n", done.err), done.err
    assert not (tmp_path / "out").exists()


def test_image_options_only_with_kubernetes(tmp_path: Path) -> None:
    done = run_cli("-f", str(_hello_manifest(tmp_path / "stack")), "render", "-o",
                   str(tmp_path / "out"), "--base-image", "x")
    assert done.code != 0 and "--base-image and --wheels are for --target kubernetes" in done.err
