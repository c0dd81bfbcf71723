"""Kubernetes manifests for a stack (`wsgistack render --target kubernetes`): pure text from
the plan, the backend's own renderers and its server command, for `kubectl apply -k DIR`.

Per service: a Deployment (one server per container, on PORT, prefixes kept), a Service, a
PodDisruptionBudget and a ConfigMap of the files under the state dir (entry, server ini,
rendered templates); a Job per setup step; for the stack: a Gateway API HTTPRoute and an
Ingress routing by prefix, the scripts the init containers run, and a kustomization.

Inside the container, as on a host:
  /etc/wsgistack/STACK/          the state dir: an emptyDir (in memory) that the `config`
                                 init container fills from the service's ConfigMap, putting
                                 the operator's secrets into the templates that name them
  /var/lib/wsgistack/STACK/SVC   the data dir: a PersistentVolumeClaim when the manifest
                                 uses `${data}` (the setup Jobs write there: sqlite, keys),
                                 else an emptyDir
  /run/wsgistack/STACK/SVC, /tmp emptyDirs: the root filesystem is read-only
  /run/wsgistack/STACK/metrics/SVC
                                 an emptyDir the server's workers write their request
                                 counts in (prometheus_client's multiprocess files), which
                                 the `metrics` sidecar reads and serves on METRICS_PORT
  APP_DIR                        the manifest's directory, as the image has it

Secrets never appear in a file written here: every secret env key, and every `${secret:}`
or `${file:}` a template or command names, is a key of the Secret `STACK-secrets` that the
operator makes; containers get them as secretKeyRefs, commands as `$(VAR)`, templates as a
marker the `config` init container replaces.
"""

from __future__ import annotations

import math
import os
import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from wsgistack import secrets
from wsgistack.backends.base import server_name, service_files
from wsgistack.errors import ServerError
from wsgistack.plan import EXPORTER, Plan, ServicePlan, Target, substitute
from wsgistack.targets.kubernetes_build import Build, containerfile, requirements_txt
from wsgistack.targets.kubernetes_image import (
    IMAGE_PYTHON,
    MARKER_RE,
    METRICS_PORT,
    PORT,
    Image,
    Secrets,
    digest_of,
    dns_name,
    image_plan,
    plan_secrets,
    public_base,
    raw_texts,
    secret_ref,
)
from wsgistack.targets.kubernetes_scripts import CONFIG_PY, HEALTH_PY, WAIT_PY
from wsgistack.targets.yaml_text import dump

ETC = "/etc/wsgistack"
LIB = "/var/lib/wsgistack"
RUN = "/run/wsgistack"
SERVICE_PORT = 80
APP_UID = 10001
APP_USER = "app"
GATEWAY = "wsgistack"  # the HTTPRoute's parent: the operator's Gateway (patch to rename)
# A pod is taken out of the Service's endpoints as soon as it is told to stop, but proxies
# and kube-proxy learn of it a few seconds later: it keeps serving until then.
PRESTOP_SLEEP = 5
SCRIPTS = "/wsgistack/scripts"
FILES = "/wsgistack/files"
TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
FITS = ("granian", "gunicorn", "uwsgi")
_TWO_SERVERS = {"apache+uwsgi": "runs two servers (Apache and uWSGI) in one container",
                "nginx+uwsgi": "runs two servers (nginx and uWSGI) in one container",
                "mod_wsgi": "runs Apache and its daemon processes in one container"}


class Renderer(Protocol):
    """What the target needs of a backend (backends.base.Backend has it)."""

    ID: str

    def render(self, plan: Plan) -> dict[str, str]: ...

    def command(self, plan: Plan) -> list[Any]: ...


def check_backend(backend_id: str) -> None:
    if backend_id in FITS:
        return
    why = _TWO_SERVERS.get(backend_id, "is not one server per container")
    raise ServerError(f"backend {backend_id} {why}; render for Kubernetes with "
                      f"{', '.join(FITS[:-1])} or {FITS[-1]}")


def target(name: str, scratch: str) -> Target:
    """`scratch`: a throwaway directory (the CLI's temporary one) where planning keeps the
    `${secret:NAME}` values it makes. They are never written out: the operator's Secret
    holds the real ones."""
    return Target(name="kubernetes", state=f"{ETC}/{name}", dirs={
        "run": f"{RUN}/{name}", "logs": f"{RUN}/{name}/logs", "data": f"{LIB}/{name}",
        "metrics": f"{RUN}/{name}/metrics",
        "venvs": f"{LIB}/{name}/.venvs", "setup": f"{LIB}/{name}/.setup"},
        port=PORT, secrets=scratch)


def read_templates(plan: Plan) -> dict[str, str]:
    """The templates' text by source path: the one read from disk, done before rendering."""
    out = {}
    for svc in plan.services:
        for _, source in svc.provision.templates:
            with open(source, encoding="utf-8") as f:
                out[source] = f.read()
    return out


# ---- objects ------------------------------------------------------------------------------

def _labels(plan: Plan, name: str, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": dns_name(name), "app.kubernetes.io/instance":
            dns_name(plan.name), "app.kubernetes.io/component": component,
            "app.kubernetes.io/part-of": "wsgistack", "app.kubernetes.io/managed-by": "wsgistack"}


def _selector(plan: Plan, name: str) -> dict[str, str]:
    labels = _labels(plan, name, "api")
    return {k: labels[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance",
                                   "app.kubernetes.io/component")}


def namespace(plan: Plan) -> str:
    """The stack's own namespace (kustomize's `namespace:` moves it elsewhere)."""
    return dns_name(plan.name)


def _meta(plan: Plan, name: str, labels: Mapping[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": namespace(plan), "labels": dict(labels)}


def pinned(image: str) -> bool:
    return "@sha256:" in image


def skips(image: str) -> dict[str, str]:
    """What checkov flags in every pod that is so on purpose, each with its reason (checkov
    reads these annotations, and so does a reviewer)."""
    reasons = [
        ("CKV_K8S_11", "no CPU limit on purpose: CFS throttling stalls every request a "
         "worker holds; memory is limited"),
        ("CKV_K8S_35", "secrets reach the apps as environment variables (secretKeyRef): "
         "the apps and setup commands read them from their env, as the manifest declares"),
        *([] if pinned(image) else [(
            "CKV_K8S_43", "the image is the operator's (--image); give it by digest "
            "(IMAGE@sha256:...) to pin it")]),
    ]
    return {f"checkov.io/skip{i + 1}": f"{check}={why}"
            for i, (check, why) in enumerate(reasons)}


POD_SECURITY = {"runAsNonRoot": True, "runAsUser": APP_UID, "runAsGroup": APP_UID,
                "fsGroup": APP_UID, "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY = {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
                      "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}


def _escape(text: str) -> str:
    """Kubernetes expands `$(VAR)` in commands and env values: a literal one stays."""
    return text.replace("$(", "$$(")


def _with_refs(text: str) -> str:
    """A command word with its secrets as `$(VAR)`, which Kubernetes fills from the env."""
    return MARKER_RE.sub(lambda m: f"$({m.group(1)})", _escape(text))


@dataclass(frozen=True)
class Pod:
    """What every pod of a service shares: its volumes, and who may read what."""

    plan: Plan
    image: str
    img: Image
    files: Mapping[str, str]  # relpath under the state dir -> text (with markers)
    config_map: str
    claim: str  # the data PVC's name, "" : an emptyDir
    var_keys: Mapping[str, str]  # container variable -> Secret key
    secret_name: str

    def env_refs(self, variables: set[str]) -> list[dict[str, Any]]:
        return [secret_ref(v, self.var_keys[v], self.secret_name) for v in sorted(variables)]

    def markers(self, *texts: str) -> set[str]:
        return {m for t in texts for m in MARKER_RE.findall(t)}

    def volumes(self, waits_for_jobs: bool, metrics: bool) -> list[dict[str, Any]]:
        items = [{"key": _key(rel), "path": rel} for rel in sorted(self.files)]
        data: dict[str, Any] = ({"persistentVolumeClaim": {"claimName": self.claim}}
                                if self.claim else {"emptyDir": {}})
        vols = [
            {"name": "files", "configMap": {"name": self.config_map, "items": items}},
            {"name": "scripts", "configMap": {"name": scripts_name(self.plan)}},
            # In memory: the templates hold the operator's secrets once filled in.
            {"name": "state", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
            {"name": "run", "emptyDir": {"sizeLimit": "16Mi"}},
            {"name": "tmp", "emptyDir": {}},
            {"name": "data", **data},
            *([{"name": "metrics", "emptyDir": {"sizeLimit": "64Mi"}}] if metrics else []),
        ]
        if waits_for_jobs:
            # The API token reaches the container that waits, and no other.
            vols.append({"name": "kube-api", "projected": {"sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
                {"configMap": {"name": "kube-root-ca.crt",
                               "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
                    "fieldPath": "metadata.namespace"}}]}}]}})
        return vols

    def mounts(self) -> list[dict[str, Any]]:
        svc = self.img.svc
        return [{"name": "state", "mountPath": self.plan.state, "readOnly": True},
                {"name": "run", "mountPath": svc.run_dir},
                {"name": "tmp", "mountPath": "/tmp"},
                {"name": "data", "mountPath": svc.provision.data_dir},
                {"name": "scripts", "mountPath": SCRIPTS, "readOnly": True}]

    def container(self, name: str, argv: list[str], **extra: Any) -> dict[str, Any]:
        # By digest the image cannot change under its name; by tag it can: ask every time.
        pull = "IfNotPresent" if pinned(self.image) else "Always"
        return {"name": name, "image": self.image, "imagePullPolicy": pull,
                "command": argv, "securityContext": CONTAINER_SECURITY, **extra}

    def init(self, waits: list[str]) -> list[dict[str, Any]]:
        """Wait for what must be done first, then fill the state dir."""
        out = []
        if waits:
            out.append(self.container(
                "wait", [IMAGE_PYTHON, f"{SCRIPTS}/wait.py", *waits],
                volumeMounts=[{"name": "scripts", "mountPath": SCRIPTS, "readOnly": True},
                              {"name": "kube-api", "mountPath": TOKEN_DIR, "readOnly": True}],
                resources=SMALL))
        out.append(self.container(
            "config", [IMAGE_PYTHON, f"{SCRIPTS}/config.py", FILES, self.plan.state],
            **_env_field(self.env_refs(self.markers(*self.files.values()))),
            volumeMounts=[{"name": "files", "mountPath": FILES, "readOnly": True},
                          {"name": "scripts", "mountPath": SCRIPTS, "readOnly": True},
                          {"name": "state", "mountPath": self.plan.state}],
            resources=SMALL))
        return out

    def spec(self, containers: list[dict[str, Any]], waits: list[str],
             **extra: Any) -> dict[str, Any]:
        jobs = any(w.startswith("job:") for w in waits)
        metrics = any(c["name"] == EXPORTER for c in containers)
        return {**({"serviceAccountName": waiter_name(self.plan)} if jobs else {}),
                "automountServiceAccountToken": False, "enableServiceLinks": False,
                "securityContext": POD_SECURITY, "initContainers": self.init(waits),
                "containers": containers, "volumes": self.volumes(jobs, metrics), **extra}


def _env_field(env: list[dict[str, Any]]) -> dict[str, Any]:
    return {"env": env} if env else {}


SMALL = {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}}


def _key(rel: str) -> str:
    return rel.replace("/", "_")


def scripts_name(plan: Plan) -> str:
    return dns_name(plan.name, "wsgistack-scripts")


def waiter_name(plan: Plan) -> str:
    return dns_name(plan.name, "setup-waiter")


def _hashed(digest: str, *parts: str) -> str:
    return f"{dns_name(*parts)[:54].rstrip('-')}-{digest}"


def _probes(pod: Pod) -> dict[str, Any]:
    """The health path under the prefix, on the container's port. httpGet counts 200-399 as
    healthy: another expected status is asked by a small exec probe instead."""
    svc, plan = pod.img.svc, pod.plan
    path = svc.prefix + svc.config.health_path
    want = svc.config.health_status
    check: dict[str, Any] = (
        {"httpGet": {"path": path, "port": "http"}} if 200 <= want < 400 else
        {"exec": {"command": [IMAGE_PYTHON, f"{SCRIPTS}/health.py",
                              f"http://127.0.0.1:{PORT}{path}", str(want)]}})
    period = 2
    return {
        # As `up` waits: start_timeout for the app to load, then the usual checks.
        "startupProbe": {**check, "periodSeconds": period, "timeoutSeconds": 5,
                         "failureThreshold": max(1, math.ceil(plan.start_timeout / period))},
        "readinessProbe": {**check, "periodSeconds": 5, "timeoutSeconds": 5,
                           "failureThreshold": 2},
        "livenessProbe": {**check, "periodSeconds": 10, "timeoutSeconds": 10,
                          "failureThreshold": 6},
    }


EXPORTER_RESOURCES = {"requests": {"cpu": "10m", "memory": "48Mi"},
                      "limits": {"memory": "128Mi"}}


def metrics_mount(pod: Pod, read_only: bool) -> dict[str, Any]:
    return {"name": "metrics", "mountPath": pod.plan.path("metrics", pod.img.svc.name),
            **({"readOnly": True} if read_only else {})}


def exporter(pod: Pod) -> dict[str, Any]:
    """The stack's exporter (wsgistack.exporter, as `up` runs it) for this pod: it adds up
    what the server's workers wrote in the shared metrics emptyDir. Beside the server, not in
    it: one port for Prometheus, away from the apps' URL space, whatever the server."""
    plan = pod.plan
    check = {"httpGet": {"path": "/metrics", "port": EXPORTER}}
    return pod.container(
        EXPORTER, [IMAGE_PYTHON, "-m", "wsgistack.exporter", "--listen",
                   f"0.0.0.0:{METRICS_PORT}", "--state", plan.state,
                   "--metrics", plan.path("metrics")],
        ports=[{"name": EXPORTER, "containerPort": METRICS_PORT, "protocol": "TCP"}],
        readinessProbe={**check, "periodSeconds": 10, "timeoutSeconds": 5},
        livenessProbe={**check, "periodSeconds": 30, "timeoutSeconds": 10,
                       "failureThreshold": 3},
        resources=EXPORTER_RESOURCES, volumeMounts=[metrics_mount(pod, True)])


def scrape_annotations(plan: Plan) -> dict[str, str]:
    """What Prometheus' kubernetes_sd relabelling conventionally reads."""
    if not plan.metrics:
        return {}
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(METRICS_PORT),
            "prometheus.io/path": "/metrics"}


def _grace(svc: ServicePlan) -> int:
    """As the host's units (TimeoutStopSec): a request may run `timeout` seconds, and the
    servers stop gracefully within 15 more; after the preStop sleep."""
    return PRESTOP_SLEEP + svc.config.timeout + 15


def _resources(svc: ServicePlan) -> dict[str, Any]:
    """A starting point the operator patches: no CPU limit (throttling stalls requests
    across the board), memory bounded at twice what is asked."""
    cfg = svc.config
    memory = 128 + 96 * cfg.processes * max(1, cfg.threads // 4 + 1)
    return {"requests": {"cpu": f"{100 * cfg.processes}m", "memory": f"{memory}Mi"},
            "limits": {"memory": f"{2 * memory}Mi"}}


def deployment(pod: Pod, proc_argv: tuple[str, ...], cwd: str, waits: list[str],
               digest: str) -> dict[str, Any]:
    svc, plan = pod.img.svc, pod.plan
    hidden = {v for v, _ in pod.img.secret_env}
    server = dns_name(os.path.basename(server_name(proc_argv)))
    container = pod.container(
        server, list(proc_argv), workingDir=cwd,
        env=[*({"name": k, "value": _escape(v)} for k, v in sorted(svc.base_env.items())),
             *pod.env_refs(hidden)],
        ports=[{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        **_probes(pod), lifecycle={"preStop": {"sleep": {"seconds": PRESTOP_SLEEP}}},
        resources=_resources(svc),
        volumeMounts=[*pod.mounts(), *([metrics_mount(pod, False)] if plan.metrics else [])])
    containers = [container, *([exporter(pod)] if plan.metrics else [])]
    stateful = bool(pod.claim)
    labels = _labels(plan, svc.name, "api")
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {**_meta(plan, dns_name(plan.name, svc.name), labels),
                     "annotations": skips(pod.image)},
        "spec": {
            # A data dir is one writer's (sqlite, keys): one pod, replaced, not overlapped.
            "replicas": 1 if stateful else 2,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": _selector(plan, svc.name)},
            "strategy": {"type": "Recreate"} if stateful else {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                # A changed file rolls the pods: they copy their files once, at start.
                "metadata": {"labels": labels, "annotations": {
                    "wsgistack/files": digest, **scrape_annotations(plan),
                    **skips(pod.image)}},
                "spec": pod.spec(containers, waits,
                                 terminationGracePeriodSeconds=_grace(svc))}}}


def service(plan: Plan, svc: ServicePlan) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": _meta(plan, dns_name(plan.name, svc.name),
                              _labels(plan, svc.name, "api")),
            "spec": {"type": "ClusterIP", "selector": _selector(plan, svc.name),
                     "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http",
                                "protocol": "TCP"}]}}


def disruption_budget(plan: Plan, svc: ServicePlan) -> dict[str, Any]:
    # maxUnavailable, not minAvailable: a one-pod service must not block a node's drain.
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": _meta(plan, dns_name(plan.name, svc.name),
                              _labels(plan, svc.name, "api")),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels":
                                                       _selector(plan, svc.name)}}}


def config_map(plan: Plan, name: str, svc_name: str, files: Mapping[str, str]
               ) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": _meta(plan, name, _labels(plan, svc_name, "config")),
            "data": {_key(rel): files[rel] for rel in sorted(files)}}


def claim(plan: Plan, name: str, svc_name: str) -> dict[str, Any]:
    # ReadWriteMany: the setup Jobs and the API pod may land on different nodes.
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": _meta(plan, name, _labels(plan, svc_name, "data")),
            "spec": {"accessModes": ["ReadWriteMany"],
                     "resources": {"requests": {"storage": "1Gi"}}}}


def _command_env(pod: Pod, argv: list[str]) -> list[dict[str, Any]]:
    """A one-off command's environment, as `up` gives it (the service's env over the clean
    base), with the secrets it needs from the operator's Secret."""
    svc = pod.img.svc
    plain = {**svc.base_env, **svc.env}
    needed = {v for v, _ in pod.img.secret_env} | pod.markers(*argv)
    return [*({"name": k, "value": _escape(v)} for k, v in sorted(plain.items())),
            *pod.env_refs(needed)]


def job(pod: Pod, name: str, steps: list[list[str]], waits: list[str],
        component: str) -> dict[str, Any]:
    """One Job: its commands in order (all but the last as init containers, which
    Kubernetes runs one after another), after what it waits for."""
    plan, svc = pod.plan, pod.img.svc
    cwd = svc.working_dir
    containers = [pod.container(f"step-{i + 1}" if i < len(steps) - 1 else "run",
                                [_with_refs(a) for a in argv], workingDir=cwd,
                                env=_command_env(pod, argv), resources=_resources(svc),
                                volumeMounts=pod.mounts())
                  for i, argv in enumerate(steps)]
    spec = pod.spec(containers[-1:], waits, restartPolicy="Never")
    spec["initContainers"] += containers[:-1]
    labels = _labels(plan, svc.name, component)
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {**_meta(plan, name, labels), "annotations": skips(pod.image)},
            "spec": {"backoffLimit": 3, "template": {
                "metadata": {"labels": labels, "annotations": skips(pod.image)},
                "spec": spec}}}


def network_policies(plan: Plan) -> list[dict[str, Any]]:
    """The API pods take connections on their port (and the metrics sidecar's) only; the
    setup and after_up pods take none. (Egress stays open: the apps reach their databases
    and each other.)"""
    selector = {"app.kubernetes.io/instance": dns_name(plan.name),
                "app.kubernetes.io/part-of": "wsgistack"}
    return [
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
         "metadata": _meta(plan, dns_name(plan.name, "api"), _labels(plan, plan.name, "api")),
         "spec": {"podSelector": {"matchLabels": {**selector,
                                                  "app.kubernetes.io/component": "api"}},
                  "policyTypes": ["Ingress"],
                  "ingress": [{"ports": [
                      {"port": PORT, "protocol": "TCP"},
                      *([{"port": METRICS_PORT, "protocol": "TCP"}] if plan.metrics else [])]}]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
         "metadata": _meta(plan, dns_name(plan.name, "jobs"),
                           _labels(plan, plan.name, "setup")),
         "spec": {"podSelector": {"matchLabels": selector, "matchExpressions": [
             {"key": "app.kubernetes.io/component", "operator": "In",
              "values": ["setup", "after-up"]}]},
                  "policyTypes": ["Ingress"]}},
    ]


def _resolved(pod: Pod, commands: tuple[str, ...], what: str) -> list[list[str]]:
    svc = pod.img.svc
    return [shlex.split(substitute(c, pod.img.variables, pod.plan.source,
                                   f"services.{svc.name}.{what}")) for c in commands]


def setup_jobs(pod: Pod) -> dict[str, dict[str, Any]]:
    """A Job per setup step, each waiting for the one before. Named by what they run (the
    commands, the image, the env): a change makes new Jobs, which run again, as `up` runs
    setup again when its commands change; unchanged, the finished ones stand."""
    svc, plan = pod.img.svc, pod.plan
    steps = _resolved(pod, svc.config.setup, "setup")
    digest = digest_of([steps, pod.image, _command_env(pod, [a for s in steps for a in s])])
    out, before = {}, ""
    for i, argv in enumerate(steps):
        name = _hashed(digest, plan.name, svc.name, "setup", str(i + 1))
        out[name] = job(pod, name, [argv], [f"job:{before}"] if before else [], "setup")
        before = name
    return out


def after_up_job(pod: Pod, health: list[str]) -> dict[str, dict[str, Any]]:
    """`after_up`, once every service answers its health check: once per change of what it
    runs (a Job), where `up` runs it on every start."""
    svc, plan = pod.img.svc, pod.plan
    steps = _resolved(pod, svc.config.after_up, "after_up")
    if not steps:
        return {}
    name = _hashed(digest_of([steps, pod.image]), plan.name, svc.name, "after-up")
    return {name: job(pod, name, steps, health, "after-up")}


def rbac(plan: Plan, jobs: list[str]) -> list[dict[str, Any]]:
    """Who waits may read those Jobs, by name, and nothing else."""
    name, labels = waiter_name(plan), _labels(plan, plan.name, "setup")
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(plan, name, labels),
         "automountServiceAccountToken": False},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": _meta(plan, name, labels),
         "rules": [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get"],
                    "resourceNames": sorted(jobs)}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": _meta(plan, name, labels),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name}]},
    ]


def hostnames(plan: Plan) -> list[str]:
    """`[stack] public_host`, when it is a name (Ingress takes no address), from the plan as
    built: the routes' host."""
    host = public_base(plan.services[0], "").removeprefix("http://")
    return [host] if host and not re.fullmatch(r"[0-9.:\[\]]+", host) else []


def _path(svc: ServicePlan) -> str:
    return svc.prefix or "/"


def _by_prefix(plan: Plan) -> list[ServicePlan]:
    # Longest first: both APIs pick the longest match anyway; this reads as it routes.
    return sorted(plan.services, key=lambda s: (-len(s.prefix), s.name))


RULES_PER_ROUTE = 16  # the HTTPRoute CRD's maxItems


def http_routes(plan: Plan, hosts: list[str]) -> list[dict[str, Any]]:
    services = _by_prefix(plan)
    out = []
    for n in range(0, len(services), RULES_PER_ROUTE):
        name = dns_name(plan.name, *([str(n // RULES_PER_ROUTE + 1)] if n else []))
        out.append({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": _meta(plan, name, _labels(plan, plan.name, "route")),
            "spec": {"parentRefs": [{"name": GATEWAY}],
                     **({"hostnames": hosts} if hosts else {}),
                     "rules": [{"matches": [{"path": {"type": "PathPrefix",
                                                      "value": _path(s)}}],
                                "backendRefs": [{"name": dns_name(plan.name, s.name),
                                                 "port": SERVICE_PORT}]}
                               for s in services[n:n + RULES_PER_ROUTE]]}})
    return out


def ingress(plan: Plan, host: list[str]) -> dict[str, Any]:
    paths = [{"path": _path(s), "pathType": "Prefix", "backend": {"service": {
        "name": dns_name(plan.name, s.name), "port": {"name": "http"}}}}
        for s in _by_prefix(plan)]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": _meta(plan, dns_name(plan.name), _labels(plan, plan.name, "route")),
            "spec": {"rules": [{**({"host": host[0]} if host else {}),
                                "http": {"paths": paths}}]}}


def kustomization(plan: Plan, files: list[str], refs: Secrets) -> str:
    keys = refs.keys()
    note = [f"{plan.name}: generated by wsgistack (render --target kubernetes); do not edit,",
            "patch it from a kustomization of your own. Apply with: kubectl apply -k DIR", ""]
    if keys:
        note += [f"Make the Secret {refs.stack} first, with these keys (values never",
                 "appear in these files):",
                 f"  kubectl create secret generic {refs.stack} \\",
                 *(f"    --from-literal={k}=... \\" for k in keys[:-1]),
                 f"    --from-literal={keys[-1]}=..."]
    doc = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
           "namespace": namespace(plan), "resources": sorted(files)}
    return dump(doc, "\n".join(note))


# ---- the whole stack ----------------------------------------------------------------------

def _uses_data(svc: ServicePlan, templates: Mapping[str, str]) -> bool:
    return any("${data}" in t for t in (*svc.config.env.values(),
                                        *raw_texts(svc, templates)))


def _service_files(plan: Plan, img: Image, rendered: Mapping[str, str],
                   templates: Mapping[str, str]) -> dict[str, str]:
    """What the service's pods find under the state dir: the backend's files of this service,
    and its templates filled in (secrets as markers)."""
    svc = img.svc
    files = {rel: rendered[rel] for rel in service_files(svc) if rel in rendered}
    for target_path, source in svc.provision.templates:
        rel = os.path.relpath(target_path, plan.state)
        if rel.startswith(".."):
            raise ServerError(f"services.{svc.name}.templates: {target_path} is outside the "
                              "state dir; a pod has only that one")
        files[rel] = substitute(templates[source], img.variables, source,
                                f"services.{svc.name}.templates")
    keys = [_key(rel) for rel in files]
    if len(set(keys)) != len(keys):
        raise ServerError(f"service {svc.name}: two of its files make the same ConfigMap key "
                          f"({', '.join(sorted(files))}); rename a template")
    return files


def _service_objects(plan: Plan, backend: Renderer, image: str, refs: Secrets,
                     images: Mapping[str, Image], templates: Mapping[str, str]
                     ) -> Iterator[tuple[str, dict[str, Any]]]:
    rendered = backend.render(plan)
    procs = {p.name: p for p in backend.command(plan)}
    shared = {v: k for v, k in refs.refs.values()}
    health = [f"url:{s.config.health_status}:{s.health_url}" for s in plan.services]
    for svc in plan.services:
        img = images[svc.name]
        files = _service_files(plan, img, rendered, templates)
        name = dns_name(plan.name, svc.name)
        pod = Pod(plan, image, img, files, name, f"{name}-data" if _uses_data(
            svc, templates) else "", {**shared, **dict(img.secret_env)}, refs.stack)
        jobs = setup_jobs(pod)
        yield f"configmap-{svc.name}.yaml", config_map(plan, name, svc.name, files)
        if pod.claim:
            yield f"pvc-{svc.name}.yaml", claim(plan, pod.claim, svc.name)
        for i, doc in enumerate(jobs.values()):
            yield f"job-{svc.name}-setup-{i + 1}.yaml", doc
        for doc in after_up_job(pod, health).values():
            yield f"job-{svc.name}-after-up.yaml", doc
        proc = procs[svc.name]
        digest = digest_of([files, image, CONFIG_PY, WAIT_PY, HEALTH_PY], 16)
        yield f"deployment-{svc.name}.yaml", deployment(
            pod, proc.argv, proc.cwd, [f"job:{j}" for j in jobs], digest)
        yield f"service-{svc.name}.yaml", service(plan, svc)
        yield f"pdb-{svc.name}.yaml", disruption_budget(plan, svc)


def render(plan: Plan, backend: Renderer, image: str,
           templates: Mapping[str, str] | None = None, build: Build | None = None
           ) -> dict[str, str]:
    """File name -> text for `plan` (built with `target(...)`): the objects' YAML, their
    kustomization, and the Containerfile that builds `image` (with `build`, else from the
    index on the default base). `templates`: the text of each template by its source path
    (`read_templates`); nothing is read here."""
    check_backend(backend.ID)
    if plan.target != "kubernetes":
        raise ValueError("render needs a plan built with kubernetes.target(...)")
    texts = dict(templates or {})
    refs = plan_secrets(plan, texts)
    kplan, images = image_plan(plan, refs)
    docs = dict(_service_objects(kplan, backend, image, refs, images, texts))
    jobs = [d["metadata"]["name"] for d in docs.values() if d["kind"] == "Job"
            and d["metadata"]["labels"]["app.kubernetes.io/component"] == "setup"]
    if jobs:
        for doc in rbac(kplan, jobs):
            docs[f"{doc['kind'].lower()}-{waiter_name(kplan)}.yaml"] = doc
    docs["configmap-wsgistack-scripts.yaml"] = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": _meta(kplan, scripts_name(kplan), _labels(kplan, plan.name, "scripts")),
        "data": {"config.py": CONFIG_PY, "wait.py": WAIT_PY, "health.py": HEALTH_PY}}
    for i, route in enumerate(http_routes(kplan, hostnames(plan))):
        docs[f"httproute{'-' + str(i + 1) if i else ''}.yaml"] = route
    docs["ingress.yaml"] = ingress(kplan, hostnames(plan))
    docs["namespace.yaml"] = {"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": namespace(kplan), "labels": _labels(kplan, plan.name, "namespace")}}
    for policy in network_policies(kplan):
        docs[f"networkpolicy-{policy['metadata']['name']}.yaml"] = policy
    out = {name: dump(doc) for name, doc in sorted(docs.items())}
    out["kustomization.yaml"] = kustomization(kplan, list(docs), refs)
    build = build or Build()
    root = plan.services[0].provision.variables["manifest_dir"]
    out["Containerfile"] = containerfile(plan, build, root)
    out["image-requirements.txt"] = requirements_txt(plan, build)
    _refuse_secrets(plan, out)
    return out


def _refuse_secrets(plan: Plan, files: Mapping[str, str]) -> None:
    """The last word: no secret value of the plan in any file (the Secret is the
    operator's). A value shorter than secrets.SHORTEST would match any number."""
    for name, text in files.items():
        for value in plan.secrets:
            if len(value) >= secrets.SHORTEST and value in text:
                raise ServerError(f"{name} would hold a secret value; report this as a bug "
                                  "of wsgistack (render --target kubernetes)")
