"""The stack as the image and the cluster see it (targets/kubernetes.py): which values are
the operator's Secret's, and a plan whose paths, interpreter, URLs and ports are the
container's, not this machine's."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from wsgistack import plan as planning
from wsgistack import secrets
from wsgistack.apps.catalog import ENV_VAR as CATALOG_ENV
from wsgistack.errors import ServerError
from wsgistack.plan import Plan, ServicePlan, substitute

PORT = 8080  # every container's; the Service answers on SERVICE_PORT
METRICS_PORT = 9180  # the metrics sidecar's (Prometheus scrapes the pod there)
# The image's contract (README): one Python, in the official python images' layout, holds the
# apps, their requirements, the server (pip install granian, gunicorn or uwsgi), wsgistack and
# prometheus_client (the metrics sidecar runs wsgistack.exporter); the
# manifest's directory is APP_DIR; a user `app` with APP_UID exists (keystone-manage's
# --keystone-user looks it up by name).
IMAGE_PREFIX = "/usr/local"
IMAGE_PYTHON = f"{IMAGE_PREFIX}/bin/python3"
IMAGE_UWSGI = f"{IMAGE_PREFIX}/bin/uwsgi"  # PyPI's uWSGI: Python built in, no plugin
APP_DIR = "/app"
MARKER = "@@wsgistack-secret:{}@@"
MARKER_RE = re.compile(r"@@wsgistack-secret:([A-Za-z_][A-Za-z0-9_]*)@@")


# ---- names -------------------------------------------------------------------------------

def dns_name(*parts: str) -> str:
    """A DNS-1123 label: what Services, and the pods a Job names after itself, need."""
    name = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")
    if len(name) > 63:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{name[:54].rstrip('-')}-{digest}"
    return name or "x"


def digest_of(value: object, length: int = 8) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:length]


def _env_var(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", key).upper()


# ---- secrets ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Secrets:
    """Which env keys and `${secret:}`/`${file:}` references are the operator's Secret's,
    under which Secret key and container variable."""

    stack: str  # the Secret's name
    env: Mapping[tuple[str, str], str]  # (service, env key) -> Secret key
    refs: Mapping[str, tuple[str, str]]  # "secret:NAME" -> (variable, Secret key)

    def keys(self) -> list[str]:
        return sorted({*self.env.values(), *(k for _, k in self.refs.values())})

    def ref(self, name: str) -> str:
        return MARKER.format(self.refs[name][0])


_REF = re.compile(r"\$\{((?:secret|file):[^}]+)\}")


def secret_env_keys(svc: ServicePlan) -> list[str]:
    """The env keys of `svc` whose value is, or holds, a secret: named so, declared,
    read from a file, or made of a `${secret:}`/`${file:}`."""
    cfg = svc.config
    out = []
    for key, value in svc.env.items():
        raw = cfg.env.get(key, "")
        if key != CATALOG_ENV and (
                secrets.secret_key(key, cfg.secrets) or _REF.search(raw) or key not in cfg.env
                or any(s and s in value for s in svc.secrets)):
            out.append(key)
    return sorted(out)


def raw_texts(svc: ServicePlan, templates: Mapping[str, str]) -> Iterator[str]:
    cfg = svc.config
    yield from (*cfg.setup, *cfg.after_up, *cfg.static.values())
    yield from (templates[source] for _, source in svc.provision.templates)


def plan_secrets(plan: Plan, templates: Mapping[str, str]) -> Secrets:
    """A reference that an env key holds alone (`PLACEMENT_PASSWORD = "${secret:placement}"`)
    is that key's: the operator sets one value for both. The same key in two services is one
    Secret key when both take it from the same place, else one each."""
    sources: dict[str, set[str]] = {}
    for svc in plan.services:
        for key in secret_env_keys(svc):
            sources.setdefault(key, set()).add(svc.config.env.get(key, f"env_files:{svc.name}"))
    env: dict[tuple[str, str], str] = {}
    refs: dict[str, tuple[str, str]] = {}
    for svc in plan.services:
        for key in secret_env_keys(svc):
            shared = len(sources[key]) == 1
            env[(svc.name, key)] = key if shared else f"{svc.name}.{key}"
            alone = _REF.fullmatch(svc.config.env.get(key, "").strip())
            if alone and shared:
                refs.setdefault(alone.group(1), (key, key))
    for svc in plan.services:
        for text in raw_texts(svc, templates):
            for name in _REF.findall(text):
                kind, _, arg = name.partition(":")
                key = f"{kind}.{os.path.basename(arg)}"
                refs.setdefault(name, (_env_var(f"WSGISTACK_{kind}_{os.path.basename(arg)}"),
                                       key))
    taken = {k for k in sources}
    clash = [v for v, k in refs.values() if v in taken and (v, v) != (v, k)]
    if clash:
        raise ServerError(f"env key {clash[0]} is also the name wsgistack gives a secret "
                          "reference; rename the env key")
    return Secrets(f"{plan.name}-secrets", env, refs)


def secret_ref(var: str, key: str, stack: str) -> dict[str, Any]:
    return {"name": var, "valueFrom": {"secretKeyRef": {"name": stack, "key": key}}}


# ---- the plan as the image sees it ----------------------------------------------------------

def _origin(url: str) -> str:
    return "/".join(url.split("/")[:3])


def public_base(svc: ServicePlan, internal: str) -> str:
    """`[stack] public_host` reached through the Gateway; without one (a loopback address),
    the in-cluster Service."""
    host = _origin(svc.public_url).split("//")[1].rsplit(":", 1)[0].strip("[]")
    if host in ("127.0.0.1", "::1", "localhost", ""):
        return internal
    return f"http://{host}"


def _addresses(plan: Plan) -> dict[str, str]:
    out = {}
    for svc in plan.services:
        internal = f"http://{dns_name(plan.name, svc.name)}"
        out[f"services.{svc.name}.url"] = public_base(svc, internal) + svc.prefix
        out[f"services.{svc.name}.internal_url"] = internal + svc.prefix
    return out


class _ImageVariables(Mapping[str, str]):
    """A service's `${variables}` as the container has them: URLs of the cluster, the
    image's Python, APP_DIR, and a marker in place of every secret (no file is read)."""

    def __init__(self, svc: ServicePlan, overrides: Mapping[str, str], refs: Secrets) -> None:
        self._base = svc.provision.variables
        self._over = overrides
        self._refs = refs

    def __getitem__(self, name: str) -> str:
        if name in self._over:
            return self._over[name]
        if name.startswith(("secret:", "file:")):
            return self._refs.ref(name)
        if name.startswith("env."):
            raise KeyError(name)
        return self._base[name]

    def __iter__(self) -> Iterator[str]:
        return iter({*self._base, *self._over})

    def __len__(self) -> int:
        return len({*self._base, *self._over})


def _variables(plan: Plan, svc: ServicePlan, refs: Secrets, addresses: Mapping[str, str],
               env: Mapping[str, str]) -> _ImageVariables:
    own = f"services.{svc.name}."
    over = {**addresses, "url": addresses[own + "url"],
            "internal_url": addresses[own + "internal_url"],
            "front_url": addresses[f"services.{plan.services[0].name}.url"].rstrip("/"),
            "python": IMAGE_PYTHON, "venv": IMAGE_PREFIX, "manifest_dir": APP_DIR,
            **{f"env.{k}": v for k, v in env.items()}}
    return _ImageVariables(svc, over, refs)


def _rebase(path: str, root: str) -> str:
    """A path of the manifest's tree, where the image has that tree."""
    rel = os.path.relpath(path, root)
    return path if rel.startswith("..") else os.path.normpath(os.path.join(APP_DIR, rel))


@dataclass(frozen=True)
class Image:
    """One service as its containers run it."""

    svc: ServicePlan  # env without secrets, paths and URLs of the image and the cluster
    secret_env: tuple[tuple[str, str], ...]  # (variable, Secret key)
    variables: _ImageVariables


def _image_service(plan: Plan, svc: ServicePlan, refs: Secrets,
                   addresses: Mapping[str, str]) -> Image:
    cfg, root = svc.config, svc.provision.variables["manifest_dir"]
    hidden = set(secret_env_keys(svc))
    probe = _variables(plan, svc, refs, addresses, {})
    env = {k: substitute(cfg.env[k], probe, plan.source, f"services.{svc.name}.env.{k}")
           for k in cfg.env if k not in hidden}
    markers = {k: MARKER.format(k) for k in hidden}
    variables = _variables(plan, svc, refs, addresses, {**env, **markers})
    image = dataclasses.replace(
        svc, port=PORT, python=IMAGE_PYTHON, python_home=IMAGE_PREFIX, env=env,
        working_dir=_rebase(svc.working_dir, root),
        static=tuple((p, _rebase(d, root)) for p, d in svc.static),
        found={"bin/uwsgi": IMAGE_UWSGI},
        public_url=addresses[f"services.{svc.name}.url"].rstrip("/") + "/",
        health_url=addresses[f"services.{svc.name}.internal_url"] + cfg.health_path)
    secret_env = tuple((k, refs.env[(svc.name, k)]) for k in sorted(hidden))
    return Image(image, secret_env, variables)


def image_plan(plan: Plan, refs: Secrets) -> tuple[Plan, dict[str, Image]]:
    addresses = _addresses(plan)
    images = {s.name: _image_service(plan, s, refs, addresses) for s in plan.services}
    services = [i.svc for i in images.values()]
    catalog = planning.catalog(plan.name, plan.backend, services)
    services = [dataclasses.replace(s, env={**s.env, CATALOG_ENV: catalog}) for s in services]
    for s in services:
        images[s.name] = dataclasses.replace(images[s.name], svc=s)
    return dataclasses.replace(plan, host="0.0.0.0", services=tuple(services)), images
