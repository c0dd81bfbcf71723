"""systemd units for an installed stack: one service unit per app server, grouped by a
target. Pure text from the plan and the backend's processes.

As devstack's uWSGI units and Debian's packages have them: `Type=notify` where the server
tells systemd it is ready (uWSGI, with `NotifyAccess=all`: its workers notify too; gunicorn),
`ExecReload` its graceful reload (SIGHUP for all three), `Restart=on-failure`, the app's
own user, and the directories systemd makes for it. The stop signal is SIGTERM, not the
SIGQUIT devstack uses: our uWSGI ini turns SIGTERM into a graceful stop
(`gracefully_kill_them_all`), where SIGQUIT ends requests in flight. `KillMode=mixed`: the
master stops its workers itself; systemd kills what is left after the stop timeout.
"""

from __future__ import annotations

import os
import shlex

from wsgistack.backends.base import Proc, server_name
from wsgistack.plan import EXPORTER as EXPORTER
from wsgistack.plan import Plan, ServicePlan, counts_requests

# How each server starts up under systemd: (Type, NotifyAccess).
SERVER_TYPES = {"uwsgi": ("notify", "all"), "gunicorn": ("notify", "main"),
                "granian": ("exec", "")}
# What the app tolerates: no write access outside its own directories, no new privileges,
# no view of /home or another /tmp. Not MemoryDenyWriteExecute: cffi and JITs need it.
HARDENING = (
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectControlGroups=yes",
    "RestrictSUIDSGID=yes",
    "LockPersonality=yes",
    "UMask=0027",
)


def unit_name(plan: Plan, name: str) -> str:
    return f"wsgistack-{plan.name}-{name}.service"


def target_name(plan: Plan) -> str:
    return f"wsgistack-{plan.name}.target"


def server_kind(proc: Proc) -> str:
    """uwsgi, gunicorn or granian: what the command runs."""
    return os.path.basename(server_name(proc.argv))


def _quote(arg: str) -> str:
    # systemd's own quoting is close to the shell's; `%` and `$` are its specifiers.
    return shlex.quote(arg.replace("%", "%%").replace("$", "$$"))


def _dir(path: str, base: str) -> str:
    """`path` relative to systemd's base (`/run`, `/var/log`, `/var/lib`) for its
    *Directory= settings."""
    return os.path.relpath(path, base)


def service_unit(plan: Plan, svc: ServicePlan, proc: Proc, front_group: str) -> str:
    """One app server's unit. `front_group`: behind a front end, the group that must pass
    through the service's runtime dir to its socket."""
    kind = server_kind(proc)
    unit_type, notify = SERVER_TYPES[kind]
    timeout = svc.config.timeout
    env = sorted({**proc.env}.items())
    lines = [
        "[Unit]",
        f"Description=wsgistack {plan.name}: {svc.name} ({svc.config.app}) on {kind}",
        f"PartOf={target_name(plan)}",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        f"Type={unit_type}",
        *([f"NotifyAccess={notify}"] if notify else []),
        f"User={svc.user}",
        f"Group={svc.group}",
        f"WorkingDirectory={proc.cwd}",
        *(f"Environment={_quote(f'{k}={v}')}" for k, v in env),
        "ExecStart=" + " ".join(_quote(a) for a in proc.argv),
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillSignal=SIGTERM",
        "KillMode=mixed",
        f"TimeoutStartSec={int(plan.start_timeout)}",
        f"TimeoutStopSec={timeout + 15}",
        "Restart=on-failure",
        "RestartSec=2",
        f"RuntimeDirectory={_dir(svc.run_dir, '/run')}" + (
            f" {_dir(plan.path('metrics', svc.name), '/run')}" if counts_requests(plan) else ""),
        # Behind a front end its socket (0660) is handed to the front end's group once it
        # is there: systemd gives the directory back to the app's group before every
        # command it runs, so the directory cannot be the front end's.
        f"RuntimeDirectoryMode={'0711' if front_group else '0700'}",
        *([f"ExecStartPost=+/bin/chgrp {front_group} {svc.socket}"] if front_group else []),
        f"StateDirectory={_dir(svc.provision.data_dir, '/var/lib')}",
        "StateDirectoryMode=0750",
        f"LogsDirectory={_dir(plan.path('logs'), '/var/log')}",
        "LogsDirectoryMode=0750",
        # granian cannot reopen a log: systemd appends its output to one (rotated by
        # copytruncate). uWSGI and gunicorn write their own, and reopen it when rotated;
        # what they say before that goes to the journal.
        *([f"StandardOutput=append:{proc.log}", f"StandardError=append:{proc.log}"]
          if kind == "granian" else []),
        *HARDENING,
        "",
        "[Install]",
        f"WantedBy={target_name(plan)}",
    ]
    return "\n".join(lines) + "\n"


def exporter_unit(plan: Plan, python: str) -> str:
    """The stack's metrics endpoint, as `up` runs it: it only reads the services' metrics
    dirs (0700, each its service's): a user of its own with the right to read, no other."""
    argv = [python, "-m", "wsgistack.exporter", "--listen", plan.metrics, "--state",
            plan.state, "--metrics", plan.path("metrics")]
    return "\n".join([
        "[Unit]",
        f"Description=wsgistack {plan.name}: metrics on http://{plan.metrics}/metrics",
        f"PartOf={target_name(plan)}",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=exec",
        "DynamicUser=yes",
        "AmbientCapabilities=CAP_DAC_READ_SEARCH",
        "CapabilityBoundingSet=CAP_DAC_READ_SEARCH",
        "Environment=LANG=C.UTF-8",
        "ExecStart=" + " ".join(_quote(a) for a in argv),
        "Restart=on-failure",
        "RestartSec=2",
        *HARDENING,
        "",
        "[Install]",
        f"WantedBy={target_name(plan)}",
    ]) + "\n"


def target_unit(plan: Plan, units: list[str], front: str) -> str:
    """The stack as one unit: `systemctl start|stop|reload` it, enabled at boot."""
    wants = " ".join([*units, *([f"{front}.service"] if front else [])])
    return "\n".join([
        "[Unit]",
        f"Description=wsgistack stack {plan.name} ({plan.backend})",
        *([f"Wants={wants}"] if wants else []),
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]) + "\n"
