"""`render --target kubernetes` played for real: the image built from the rendered
Containerfile, the Deployments, ConfigMaps and Secret run under `podman kube play`.

Stacks: the embedded example (default.toml) on uWSGI, and examples/openstack on granian.
The base image is Debian bookworm made by mmdebstrap and `podman import`ed (no registry is
reachable); the build installs from wheels fetched on this machine (`--wheels`).

What podman does not do, and how the test stands in for it (README, Kubernetes):
- No Jobs: each setup Job's pod template is played as a Pod, one after another in their
  order, each to its exit; the Deployments' `wait` init container (it asks the Kubernetes
  API about those Jobs) is left out, and so are its ServiceAccount token volume and the
  after_up Job's wait, as the test plays them in order itself.
- No Services and one network: the pods run on the host's network (`--network host`), so
  each pod's ports are made free ones in the played copy (the server's 8080 and the metrics
  sidecar's 9180, in the container's argv, its ini and its ports), and the in-cluster
  Service URLs (`http://STACK-SVC`) become the pods' loopback addresses.
- No readiness probes in podman 4.3 (containers/podman#12417): the test runs each pod's
  own readinessProbe (its httpGet, on the port it names) as the kubelet would, bounded by
  the startupProbe's budget.
- One replica a Deployment; the image by tag is used as built (`imagePullPolicy: Never`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, run_cli
from tests.podman_sandbox import Podman, SandboxUnavailable, podman_sandbox

yaml = pytest.importorskip("yaml")

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
BASE = "localhost/wsgistack-test-base:bookworm"
# The base: Debian's Python, and what the wheels built here link to (uWSGI's: libpython,
# libxml2, libpcre2, libssl), as Debian's own uwsgi package would pull in.
BASE_DEBS = ["python3", "python3-venv", "ca-certificates", "libpython3.11", "libxml2",
             "libpcre2-8-0", "libssl3", "libyaml-0-2", "libcap2", "libuuid1", "libjansson4"]
PORT, METRICS_PORT = 8080, 9180  # as kubernetes_image has them
# A directory that keeps the base's root.tar and the wheels from one run to the next (when
# working on these tests); unset, each run makes them afresh.
KEEP = "WSGISTACK_TEST_K8S_KEEP"


def _timed(what: str, t0: float) -> None:
    print(f"{what}: {time.monotonic() - t0:.1f}s", flush=True)  # shown with -s


# ---- shared: the sandbox, the base image, the wheels ------------------------------------

@pytest.fixture(scope="module")
def pm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    try:
        with podman_sandbox(tmp_path_factory.mktemp("sandbox")) as podman:
            yield podman
    except SandboxUnavailable as exc:
        pytest.skip(f"podman cannot run here: {exc}")


@pytest.fixture(scope="module")
def base(pm: Podman, tmp_path_factory: pytest.TempPathFactory) -> str:
    if not shutil.which("mmdebstrap"):
        pytest.skip("mmdebstrap is needed for the base image (Debian's mmdebstrap)")
    t0 = time.monotonic()
    kept = os.environ.get(KEEP, "")
    tar = (Path(kept) if kept else tmp_path_factory.mktemp("base")) / "root.tar"
    sources = [p for p in ("/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list")
               if Path(p).exists() and Path(p).read_text().strip()][:1]
    if not tar.exists():
        subprocess.run(["mmdebstrap", "--variant=minbase", "--mode=root", "--quiet",
                        "--include=" + ",".join(BASE_DEBS), "bookworm", str(tar), *sources],
                       check=True, timeout=900)
    pm.run("import", str(tar), BASE)
    if not kept:
        tar.unlink()
    _timed("base image (mmdebstrap + import)", t0)
    return BASE


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory of wheels for every image the module builds (pip's own cache keeps
    what it downloaded and built between runs)."""
    kept = os.environ.get(KEEP, "")
    if kept:
        (Path(kept) / "wheels").mkdir(parents=True, exist_ok=True)
        return Path(kept) / "wheels"
    return tmp_path_factory.mktemp("wheels")


def _fetch_wheels(requirements: Path, into: Path) -> None:
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--use-pep517",
                           "-w", str(into),
                           "--find-links", str(into), "-r", str(requirements)],
                          capture_output=True, text=True, timeout=1800, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    _timed(f"pip wheel -r {requirements.name}", t0)


# ---- a stack, rendered, built and played -----------------------------------------------

@dataclass
class Played:
    """A stack as the test plays it: the rendered tree, the ports each pod got."""

    name: str
    out: Path  # the rendered tree
    docs: dict[str, Any]  # rendered file name -> object
    ports: dict[str, int] = field(default_factory=dict)  # service -> its server's port
    metrics: dict[str, int] = field(default_factory=dict)  # service -> sidecar's port
    files: list[Path] = field(default_factory=list)  # what was played, to take down
    secret: dict[str, str] = field(default_factory=dict)

    def services(self) -> list[str]:
        return [n.removeprefix("deployment-").removesuffix(".yaml") for n in self.docs
                if n.startswith("deployment-")]


def _render(manifest: Path, backend: str, out: Path, image: str, *extra: str) -> None:
    result = run_cli("-f", str(manifest), "render", "--target", "kubernetes", "--backend",
                     backend, "--image", image, "-o", str(out), *extra)
    assert result.code == 0, result.err


def _context(tmp: Path, stack: str) -> Path:
    """The manifest's directory, copied: the build context, with the wheels put in it."""
    ctx = tmp / stack
    if stack == "example":
        ctx.mkdir()
        text = resources.files("wsgistack").joinpath("default.toml").read_text()
        (ctx / "wsgistack.toml").write_text(text)
    else:
        shutil.copytree(REPO / "examples" / stack, ctx)
    return ctx


def build(pm: Podman, base: str, wheels: Path, tmp: Path, stack: str, backend: str,
          tag: str) -> tuple[Path, str]:
    """Render, fetch the wheels the image needs, render with them, build. Returns the
    context and the image."""
    ctx = _context(tmp, stack)
    image = f"localhost/wsgistack-test-{stack}-{backend}:{tag}"
    first = tmp / f"{stack}-first"
    _render(ctx / "wsgistack.toml", backend, first, image)
    _fetch_wheels(first / "image-requirements.txt", wheels)
    shutil.copytree(wheels, ctx / "wheels", copy_function=_link)
    out = tmp / f"{stack}-k8s"
    _render(ctx / "wsgistack.toml", backend, out, image, "--base-image", base,
            "--wheels", str(ctx / "wheels"))
    t0 = time.monotonic()
    pm.run("build", "--network", "host", "--pull=never", "-f", str(out / "Containerfile"),
           "-t", image, str(ctx), timeout=1800)
    _timed(f"podman build {stack} ({backend})", t0)
    return out, image


def _link(src: str, dst: str) -> None:
    try:
        Path(dst).hardlink_to(src)
    except OSError:
        shutil.copy2(src, dst)


def for_podman(out: Path, stack: str) -> Played:
    """The rendered tree as the host's network plays it: free ports, loopback URLs."""
    names = [p.name.removeprefix("deployment-").removesuffix(".yaml")
             for p in sorted(out.glob("deployment-*.yaml"))]
    first = free_port(2 * len(names))
    return _on_ports(out, stack, {svc: first + 2 * i for i, svc in enumerate(names)},
                     {svc: first + 2 * i + 1 for i, svc in enumerate(names)})


def for_podman_ports(out: Path, stack: str, like: Played) -> Played:
    """Another render of the same stack, on the ports `like` got."""
    return _on_ports(out, stack, like.ports, like.metrics)


def _on_ports(out: Path, stack: str, ports: dict[str, int], metrics: dict[str, int]
              ) -> Played:
    names = list(ports)
    docs = {}
    for path in sorted(out.glob("*.yaml")):
        text = path.read_text()
        own = next((s for s in names if path.name in (f"deployment-{s}.yaml",
                                                      f"configmap-{s}.yaml")), "")
        if own:
            p, m = ports[own], metrics[own]
            for old, new in ((f"0.0.0.0:{PORT}", f"0.0.0.0:{p}"),
                             (f"127.0.0.1:{PORT}", f"127.0.0.1:{p}"),
                             (f'"{PORT}"', f'"{p}"'),  # granian's --port
                             (f"containerPort: {PORT}", f"containerPort: {p}"),
                             (f"0.0.0.0:{METRICS_PORT}", f"0.0.0.0:{m}"),
                             (f"containerPort: {METRICS_PORT}", f"containerPort: {m}")):
                text = text.replace(old, new)
        for svc in names:  # the Services' addresses: the pods' own, on loopback
            text = re.sub(rf"http://{stack}-{svc}(?=[/\"'\s]|$)",
                          f"http://127.0.0.1:{ports[svc]}", text)
        docs[path.name] = yaml.safe_load(text)
    return Played(stack, out, docs, ports, metrics)


def _laid_out(played: Played, volume: dict[str, Any]) -> dict[str, Any]:
    """A ConfigMap volume whose items go into subdirectories, laid out as the kubelet lays
    it out, in a directory of the test's: podman 4.3 does not make an item's directory
    ("cannot create file conf/x.ini at volume mountpoint")."""
    source = volume["configMap"]
    data = next(d["data"] for d in played.docs.values() if d["kind"] == "ConfigMap"
                and d["metadata"]["name"] == source["name"])
    where = played.out.parent / f"played-{played.name}" / f"configmap-{source['name']}"
    shutil.rmtree(where, ignore_errors=True)
    for item in source["items"]:
        path = where / item["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(data[item["key"]])
    return {"name": volume["name"], "hostPath": {"path": str(where), "type": "Directory"}}


def _empty_dir(played: Played, pod: str, volume: dict[str, Any]) -> dict[str, Any]:
    """An emptyDir as a directory of the test's, made for this start of the pod, mode 0777
    as the kubelet makes them: the pod's init containers run as pods of their own before it
    (below), and must see the same directory."""
    where = (played.out.parent / f"played-{played.name}" / "emptydirs" / played.out.name / pod
             / volume["name"])
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    where.chmod(0o777)
    return {"name": volume["name"], "hostPath": {"path": str(where), "type": "Directory"}}


def staged(played: Played, pod: str, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """A pod template as podman 4.3 plays it here: its init containers (but `wait`, which
    asks the Kubernetes API; the test plays in order itself) each as a pod of its own, run
    to its end, in order, then the pod without them. (podman 4.3's own init containers fail
    the pod here: "failed to remove once init container ... as it is running".) The
    emptyDirs are the test's directories, shared by those pods; the image as built here."""
    spec = json.loads(json.dumps(spec))
    spec.pop("serviceAccountName", None)
    spec["volumes"] = [
        _laid_out(played, v) if any("/" in i["path"] for i in v.get("configMap", {}).get(
            "items", [])) else _empty_dir(played, pod, v) if "emptyDir" in v else v
        for v in spec["volumes"] if v["name"] != "kube-api"]
    for c in [*spec.get("initContainers", []), *spec["containers"]]:
        c["imagePullPolicy"] = "Never"
        # podman 4.3 maps a containerPort (as a hostPort), which the host's network refuses;
        # the test reads the ports from the rendered objects.
        c.pop("ports", None)
    inits = [c for c in spec.pop("initContainers", []) if c["name"] != "wait"]
    return [*({**spec, "containers": [c], "restartPolicy": "Never"} for c in inits), spec]


def _config_maps(played: Played, service: str) -> list[dict[str, Any]]:
    return [d for n, d in played.docs.items() if n in (
        f"configmap-{service}.yaml", "configmap-wsgistack-scripts.yaml")]


def _write(played: Played, name: str, docs: list[dict[str, Any]]) -> Path:
    path = played.out.parent / f"played-{played.name}" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


def play(pm: Podman, played: Played, name: str, docs: list[dict[str, Any]],
         *flags: str) -> Path:
    path = _write(played, name, docs)
    played.files.append(path)
    pm.run("kube", "play", "--network", "host", *flags, str(path), timeout=300)
    return path


def down(pm: Podman, played: Played) -> None:
    for path in reversed(played.files):
        pm.run("kube", "down", str(path), check=False, timeout=300)
    played.files.clear()


def make_secret(pm: Podman, played: Played) -> None:
    """The operator's Secret, with values of the test's: podman (which plays no Secret
    objects) reads a secretKeyRef from a podman secret of that name."""
    keys = sorted({e["valueFrom"]["secretKeyRef"]["key"] for d in played.docs.values()
                   if "template" in d.get("spec", {})
                   for c in [*d["spec"]["template"]["spec"].get("initContainers", []),
                             *d["spec"]["template"]["spec"]["containers"]]
                   for e in c.get("env", []) if "valueFrom" in e})
    if not keys:
        return
    played.secret = {k: secrets.token_hex(12) for k in keys}
    name = f"{played.name}-secrets"
    # podman 4.3 reads a JSON object of the keys and their values in base64 (a Secret's
    # `data`).
    data = {k: base64.b64encode(v.encode()).decode() for k, v in played.secret.items()}
    pm.run("secret", "create", name, "-", input=json.dumps(data))


def _containers(pm: Podman, pod_prefix: str) -> dict[str, str]:
    """Container name -> its status, of the pods whose name starts with `pod_prefix`."""
    rows = json.loads(pm.run("ps", "-a", "--pod", "--format", "json").stdout or "[]")
    return {r["Names"][0]: r["State"] for r in rows
            if str(r.get("PodName", "")).startswith(pod_prefix)}


def to_end(pm: Podman, played: Played, name: str, spec: dict[str, Any],
           labels: dict[str, str], service: str) -> None:
    """One pod of one container, played to its end: exit 0 or the test fails."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
           "spec": spec}
    path = play(pm, played, f"pod-{name}.yaml", [*_config_maps(played, service), pod])
    main = f"{name}-{spec['containers'][0]['name']}"
    code = pm.run("wait", main, timeout=900).stdout.strip()
    logs = pm.run("logs", main, check=False)
    assert code == "0", f"{main} exited {code}:\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}"
    pm.run("kube", "down", str(path), timeout=300)
    played.files.remove(path)


def run_job(pm: Podman, played: Played, file: str) -> None:
    """A Job's pod template, its init containers then its own, each to its end."""
    t0 = time.monotonic()
    job = played.docs[file]
    name = job["metadata"]["name"]
    svc = job["metadata"]["labels"]["app.kubernetes.io/name"]
    template = job["spec"]["template"]
    for i, spec in enumerate(staged(played, name, template["spec"])):
        to_end(pm, played, f"{name[:50]}-{i}", spec, template["metadata"]["labels"], svc)
    _timed(f"job {file}", t0)


def played_deployment(played: Played, svc: str) -> tuple[
        list[dict[str, Any]], dict[str, Any]]:
    """The Deployment's init pods, and the Deployment as played (one replica)."""
    dep: dict[str, Any] = json.loads(json.dumps(played.docs[f"deployment-{svc}.yaml"]))
    dep["spec"]["replicas"] = 1  # on the host's network, one pod a port
    *inits, dep["spec"]["template"]["spec"] = staged(
        played, dep["metadata"]["name"], dep["spec"]["template"]["spec"])
    return inits, dep


def play_deployment(pm: Podman, played: Played, svc: str, *flags: str) -> None:
    inits, dep = played_deployment(played, svc)
    labels = dep["spec"]["template"]["metadata"]["labels"]
    for i, spec in enumerate(inits):
        to_end(pm, played, f"{dep['metadata']['name']}-init-{i}", spec, labels, svc)
    play(pm, played, f"deployment-{svc}.yaml", [*_config_maps(played, svc), dep], *flags)


def _probe_url(container: dict[str, Any], probe: str) -> str:
    get = container[probe]["httpGet"]
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == get["port"])
    return f"http://127.0.0.1:{port}{get['path']}"


def _status(url: str, timeout: float = 5) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def wait_ready(pm: Podman, played: Played, svc: str) -> None:
    """Every container's readinessProbe passes, as the kubelet runs it (podman does not),
    within the startupProbe's budget; a container that ends first fails the test."""
    spec = for_pod(played, svc)
    startup = spec["containers"][0]["startupProbe"]
    deadline = time.monotonic() + startup["periodSeconds"] * startup["failureThreshold"] + 30
    pending = {c["name"]: _probe_url(c, "readinessProbe") for c in spec["containers"]}
    pod = f"{played.name}-{svc}"
    while pending:
        pending = {n: u for n, u in pending.items() if not 200 <= _status(u) < 400}
        states = _containers(pm, pod)
        ended = [c for c, s in states.items() if s in ("exited", "stopped")
                 and not c.endswith(("-config", "-wait"))]
        if ended or time.monotonic() > deadline:
            logs = "\n".join(f"--- {c}\n" + pm.run("logs", c, check=False).stdout[-3000:]
                             + pm.run("logs", c, check=False).stderr[-3000:] for c in states)
            raise AssertionError(f"{pod}: not ready ({sorted(pending)}); {states}\n{logs}")
        time.sleep(0.5)


def for_pod(played: Played, svc: str) -> dict[str, Any]:
    spec: dict[str, Any] = played.docs[f"deployment-{svc}.yaml"]["spec"]["template"]["spec"]
    return spec


def server_container(pm: Podman, played: Played, svc: str) -> str:
    name = for_pod(played, svc)["containers"][0]["name"]
    found = [c for c in _containers(pm, f"{played.name}-{svc}") if c.endswith(f"-{name}")]
    assert len(found) == 1, found
    return found[0]


def in_container(pm: Podman, container: str, code: str) -> subprocess.CompletedProcess[str]:
    return pm.run("exec", container, "/usr/local/bin/python3", "-c", code, check=False)


def check_pod(pm: Podman, played: Played, svc: str) -> None:
    """The server runs as 10001 with a read-only root: a write outside its emptyDirs fails,
    one in /tmp (an emptyDir) works."""
    container = server_container(pm, played, svc)
    ids = in_container(pm, container, "import os; print(os.getuid(), os.getgid())")
    assert ids.stdout.split() == ["10001", "10001"], ids
    root = in_container(pm, container, "open('/app/written-by-the-test', 'w')")
    assert root.returncode != 0 and "Read-only file system" in root.stderr, root
    tmp = in_container(pm, container, "open('/tmp/written-by-the-test', 'w').write('x')")
    assert tmp.returncode == 0, tmp


def request(method: str, url: str, body: dict[str, Any] | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={
        **({"Content-Type": "application/json"} if data else {}), **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as answer:
            return answer.status, _lower(answer.headers.items()), answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, _lower(exc.headers.items()), exc.read()


def _lower(items: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in items}


def scraped(played: Played, svc: str) -> dict[tuple[str, str], float]:
    """The pod's sidecar's counts: (method, code) -> requests of `svc`."""
    _, _, body = request("GET", f"http://127.0.0.1:{played.metrics[svc]}/metrics")
    out = {}
    for line in body.decode().splitlines():
        m = re.match(r'wsgistack_http_requests_total\{(.*)\} ([0-9.e+]+)$', line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            if labels["service"] == svc:
                out[(labels["method"], labels["code"])] = float(m.group(2))
    return out


def counted(played: Played, svc: str, key: tuple[str, str], want: float) -> None:
    """The sidecar shows `want` (the workers flush their counts each second)."""
    deadline = time.monotonic() + 20
    while (got := scraped(played, svc).get(key, 0.0)) != want:
        assert time.monotonic() < deadline, f"{svc} {key}: {got}, not {want}"
        time.sleep(0.5)


def settled(played: Played, svc: str, key: tuple[str, str]) -> float:
    """The count once the requests before it are in (the workers flush each second): the
    same in two scrapes 1.5 s apart."""
    deadline = time.monotonic() + 20
    last = scraped(played, svc).get(key, 0.0)
    while True:
        time.sleep(1.5)  # longer than the workers' flush interval (observe.Metrics.FLUSH)
        now = scraped(played, svc).get(key, 0.0)
        if now == last:
            return now
        assert time.monotonic() < deadline, f"{svc} {key}: still moving ({last}, {now})"
        last = now


@contextlib.contextmanager
def stack_played(pm: Podman, played: Played) -> Iterator[Played]:
    """The setup Jobs in their order, the Deployments, then after_up; all taken down at the
    end, also on failure, and nothing of theirs left."""
    try:
        make_secret(pm, played)
        for name in sorted(n for n in played.docs if n.startswith("pvc-")):
            play(pm, played, name, [played.docs[name]])  # the claims, before what uses them
        for svc in played.services():
            for file in sorted(n for n in played.docs if n.startswith(f"job-{svc}-setup-")):
                run_job(pm, played, file)
        for svc in played.services():
            t0 = time.monotonic()
            play_deployment(pm, played, svc)
            wait_ready(pm, played, svc)
            _timed(f"ready: {svc}", t0)
        for file in sorted(n for n in played.docs if n.endswith("-after-up.yaml")):
            run_job(pm, played, file)
        yield played
    finally:
        down(pm, played)
        left = pm.leftovers()
        remove_kept_volumes(pm, played)
        if played.secret:
            pm.run("secret", "rm", f"{played.name}-secrets", check=False)
    assert left["pods"] == left["containers"] == []
    assert set(left["volumes"]) <= kept_volumes(played), left  # emptyDirs went with the pods
    assert pm.leftovers() == {"pods": [], "containers": [], "volumes": []}


def kept_volumes(played: Played) -> set[str]:
    """What `kube down` keeps: the claims (as a cluster keeps them) and, in podman 4.3, the
    volumes it made of the ConfigMaps."""
    return {d["metadata"]["name"] for d in played.docs.values()
            if d["kind"] in ("PersistentVolumeClaim", "ConfigMap")}


def remove_kept_volumes(pm: Podman, played: Played) -> None:
    for name in sorted(kept_volumes(played) & set(pm.leftovers()["volumes"])):
        pm.run("volume", "rm", "--force", name, check=False)


def remove_image(pm: Podman, image: str) -> None:
    pm.run("rmi", "--force", image)
    assert image not in pm.run("images", "--format", "{{.Repository}}:{{.Tag}}").stdout


# ---- the tests ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def example(pm: Podman, base: str, wheels: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, str]]:
    """The example stack on uWSGI, built once: (its context, its rendered tree, image)."""
    tmp = tmp_path_factory.mktemp("example")
    out, image = build(pm, base, wheels, tmp, "example", "uwsgi", "1")
    yield tmp / "example", out, image
    remove_image(pm, image)


def test_example_stack_on_uwsgi(pm: Podman, example: tuple[Path, Path, str]) -> None:
    t0 = time.monotonic()
    _, out, _ = example
    played = for_podman(out, "example")
    with stack_played(pm, played):
        for svc in played.services():
            check_pod(pm, played, svc)
        status, _, body = request("GET", f"http://127.0.0.1:{played.ports['catalog']}/")
        assert status == 200 and json.loads(body)["stack"] == "example"
        hello = f"http://127.0.0.1:{played.ports['hello']}/hello"
        assert request("GET", hello)[2] == b"Hello, world!\n"
        assert request("GET", f"http://127.0.0.1:{played.ports['probe']}/probe/status/"
                       "418")[0] == 418
        assert request("GET", f"http://127.0.0.1:{played.ports['hello']}/nope")[0] == 404
        # The requests the test makes, counted by the hello pod's sidecar.
        before = settled(played, "hello", ("POST", "200"))
        for _ in range(5):
            assert request("POST", hello, {"n": 1})[0] == 200
        counted(played, "hello", ("POST", "200"), before + 5)
    _timed("example stack, uwsgi, played and checked", t0)


def test_config_change_rolls_the_pod(pm: Podman, example: tuple[Path, Path, str]) -> None:
    """A ConfigMap change re-rendered and played again: the pod is replaced (its files'
    hash annotation changed) and the app reads the new config (the catalog's URLs, from
    its entry in the ConfigMap)."""
    t0 = time.monotonic()
    ctx, out, image = example
    manifest = ctx / "wsgistack.toml"
    text = manifest.read_text()
    manifest.write_text(text.replace('[stack]\n', '[stack]\npublic_host = "api.example.test"\n'))
    changed = out.parent / "example-k8s-changed"
    try:
        _render(manifest, "uwsgi", changed, image, "--base-image", BASE,
                "--wheels", str(ctx / "wheels"))
    finally:
        manifest.write_text(text)
    before = for_podman(out, "example")
    after = for_podman_ports(changed, "example", before)  # the same pod, played again
    key = "wsgistack/files"
    annotation = [p.docs["deployment-catalog.yaml"]["spec"]["template"]["metadata"][
        "annotations"][key] for p in (before, after)]
    assert annotation[0] != annotation[1]
    url = f"http://127.0.0.1:{before.ports['catalog']}/"
    try:
        play_deployment(pm, before, "catalog")
        wait_ready(pm, before, "catalog")
        first = pm.run("pod", "ps", "-q", "--no-trunc").stdout.split()
        hello = {s["name"]: s["url"] for s in json.loads(request("GET", url)[2])["services"]}
        assert hello["hello"] == f"http://127.0.0.1:{before.ports['hello']}/hello/"
        play_deployment(pm, after, "catalog", "--replace")
        wait_ready(pm, after, "catalog")
        second = pm.run("pod", "ps", "-q", "--no-trunc").stdout.split()
        # Rolled: another pod, of the template whose annotation changed (podman 4.3 keeps a
        # template's annotations off its pods and containers, so they are read above).
        assert len(second) == 1 and second != first
        hello = {s["name"]: s["url"] for s in json.loads(request("GET", url)[2])["services"]}
        assert hello["hello"] == "http://api.example.test/hello/"
    finally:
        down(pm, after)
        down(pm, before)
        left = pm.leftovers()
        remove_kept_volumes(pm, before)
    assert left["pods"] == left["containers"] == []
    assert set(left["volumes"]) <= kept_volumes(before), left
    assert pm.leftovers() == {"pods": [], "containers": [], "volumes": []}
    _timed("config change rolled", t0)


def test_openstack_on_granian(pm: Podman, base: str, wheels: Path, tmp_path: Path) -> None:
    t0 = time.monotonic()
    out, image = build(pm, base, wheels, tmp_path, "openstack", "granian", "1")
    try:
        played = for_podman(out, "openstack")
        with stack_played(pm, played):
            for svc in played.services():
                check_pod(pm, played, svc)
            ports = played.ports
            for svc, path in (("keystone", "/identity/v3"), ("placement", "/placement/"),
                              ("glance", "/image/versions")):
                status = request("GET", f"http://127.0.0.1:{ports[svc]}{path}")[0]
                assert status in (200, 300), (svc, status)
            token = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
                "name": "admin", "domain": {"id": "default"},
                "password": played.secret["OS_BOOTSTRAP_PASSWORD"]}}},
                "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}
            status, headers, body = request(
                "POST", f"http://127.0.0.1:{ports['keystone']}/identity/v3/auth/tokens", token)
            assert status == 201 and headers.get("x-subject-token"), body[:500]
            catalog = {e["type"] for e in json.loads(body)["token"]["catalog"]}
            assert {"identity", "placement", "image"} <= catalog, catalog
            before = settled(played, "keystone", ("POST", "201"))
            for _ in range(3):
                assert request("POST", f"http://127.0.0.1:{ports['keystone']}/identity/v3/"
                               "auth/tokens", token)[0] == 201
            counted(played, "keystone", ("POST", "201"), before + 3)
    finally:
        remove_image(pm, image)
    _timed("openstack, granian, in all", t0)
