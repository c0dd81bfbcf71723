"""The stack's environment, for test commands and for people: its name, its state dir and
each service's URLs, as `WSGISTACK_*` variables (`wsgistack env`, `wsgistack test`)."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from collections.abc import Mapping

from wsgistack import plan as plans
from wsgistack.backends import get
from wsgistack.lifecycle import processes
from wsgistack.manifest import Manifest
from wsgistack.plan import Plan
from wsgistack.provision import CLOUDS

STACK = "WSGISTACK_STACK"  # the stack's name (in the servers' own environment: the marker)
STATE_DIR = "WSGISTACK_STATE_DIR"
BACKEND = "WSGISTACK_BACKEND"
FORMATS = ("shell", "json")


def variable(service: str, what: str) -> str:
    """`WSGISTACK_<SERVICE>_<WHAT>`: the service's name upper-cased, `-` as `_`."""
    return f"WSGISTACK_{re.sub(r'[^A-Z0-9]', '_', service.upper())}_{what}"


def stack_env(plan: Plan) -> dict[str, str]:
    """The variables a test command (or a shell, through `wsgistack env`) gets for `plan`:
    URLs as `${url}` and `${internal_url}` are, without a trailing slash."""
    env = {STACK: plan.name, STATE_DIR: plan.state, BACKEND: plan.backend}
    for svc in plan.services:
        env[variable(svc.name, "URL")] = svc.public_url.removesuffix("/")
        internal = svc.health_url.removesuffix(svc.config.health_path)
        env[variable(svc.name, "INTERNAL_URL")] = internal.removesuffix("/")
    if any(svc.config.clouds for svc in plan.services):  # a Keystone: its clouds.yaml
        env["OS_CLIENT_CONFIG_FILE"] = plan.path(CLOUDS)
        env["OS_CLOUD"] = f"{plan.name}-admin"
    return env


def running(m: Manifest) -> Plan | None:
    """The plan of the manifest's own stack as `up` ran it (its backend, its base port),
    when it is up; None when it is not."""
    state = processes.load_state(str(m.state_path))
    if state is None or not any(r.alive() for r in state.procs):
        return None
    if state.base_port:
        m = dataclasses.replace(m, stack=dataclasses.replace(m.stack, base_port=state.base_port))
    return plans.build(m, get(state.backend))


def formatted(env: Mapping[str, str], fmt: str) -> str:
    """`export KEY=VALUE` lines for `eval "$(wsgistack env)"`, or a JSON object."""
    if fmt == "json":
        return json.dumps(dict(env), indent=1, sort_keys=True)
    return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items()))
