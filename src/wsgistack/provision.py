"""What services need before their first start: their own venvs, config files rendered from
templates, one-off setup commands, and data directories the app's user can write.

Each step is idempotent and leaves a record, so a second `up` reuses what the first made:
a venv is named by its requirements and records what pip installed into it; a setup is
marked done with the commands it ran, and runs again only when they change.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from wsgistack import access, secrets
from wsgistack.errors import ManifestError, ServerError
from wsgistack.lifecycle.health import log_tail
from wsgistack.lifecycle.processes import as_service
from wsgistack.plan import Plan, ServicePlan, substitute

DONE = ".wsgistack-installed"


def _run_logged(argv: list[str] | tuple[str, ...], log: Path, hidden: Iterable[str] = (),
                **popen: Any) -> int:
    """Run `argv` with its output appended to `log`; its command line is logged with the
    secret values in it masked."""
    # A log made here is root's alone (a setup log was made group-readable beforehand).
    with open(os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab") as out:
        out.write(f"$ {secrets.redact(shlex.join(argv), hidden)}\n".encode())
        out.flush()
        try:
            return subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, check=False, **popen).returncode
        except OSError as exc:
            out.write(f"{exc}\n".encode())
            return 127


def _last_line(log: Path) -> str:
    return log_tail(str(log)) or "(no output)"


def ensure_users(plan: Plan, progress: Callable[[str], None]) -> None:
    """Create the default app user when missing, as Debian packages create theirs: a system
    user and group of its own, no login shell, no home."""
    for name in sorted({s.user for s in plan.services if s.identity.create}):
        try:
            pwd.getpwnam(name)
            continue
        except KeyError:
            pass
        progress(f"creating system user {name}")
        argv = (["adduser", "--system", "--group", "--quiet", "--home", "/nonexistent",
                 "--no-create-home", name] if shutil.which("adduser") else
                ["useradd", "--system", "--user-group", "--home-dir", "/nonexistent",
                 "--no-create-home", "--shell", "/usr/sbin/nologin", name])
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ServerError(f"cannot create system user {name}: `{' '.join(argv)}` failed: "
                              f"{(done.stderr or done.stdout).strip()}; create it by hand, "
                              "or set [stack] user")


def ensure_venv(svc: ServicePlan, logs: Path, progress: Callable[[str], None]) -> None:
    """Create the service's own venv and install its packages, unless already done."""
    prov, home = svc.provision, Path(svc.python_home)
    if not prov.venv_base:
        return
    done = home / DONE
    installed = set(json.loads(done.read_text())) if done.exists() else set()
    missing = [p for p in prov.packages if p not in installed]
    if not missing:
        return
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"venv-{home.name}.log"
    steps = [[str(home / "bin" / "python"), "-m", "pip", "install", "--quiet",
              "--disable-pip-version-check", *missing]]
    if not installed:
        steps.insert(0, [prov.venv_base, "-m", "venv", str(home)])
    progress(f"{svc.name}: installing {len(missing)} package(s) into {home}")
    for argv in steps:
        # A venv is code: readable by the app (umask 022); its top directory keeps the
        # rest of the machine out.
        if _run_logged(argv, log, umask=0o022) != 0:
            raise ServerError(
                f"service '{svc.name}': `{' '.join(argv[:4])} ...` failed: {_last_line(log)}; "
                f"see {log}; fix services.{svc.name}.requirements or [stack] venv_python")
    done.write_text(json.dumps(sorted(installed | set(missing))))


CLOUDS = "clouds.yaml"  # under the state dir, from a service's `clouds` template


def render_templates(plan: Plan) -> None:
    """Config files from templates: they hold secrets, so only the service's group reads
    them; the stack's clouds.yaml, only whoever started it."""
    for svc in plan.services:
        prov = svc.provision
        for target, source in prov.templates:
            text = _rendered(plan, svc, source, f"services.{svc.name}.templates")
            access.group_readable(plan, svc, target, text)
        if svc.config.clouds:
            source = os.path.join(prov.variables["manifest_dir"], svc.config.clouds)
            text = _rendered(plan, svc, source, f"services.{svc.name}.clouds")
            access.make_file(plan, plan.path(CLOUDS), access.PRIVATE_FILE, text=text)
        # A secret named only in a template (a database URL) is shown nowhere either.
        secrets.hide(prov.variables.secrets)


def _rendered(plan: Plan, svc: ServicePlan, source: str, key: str) -> str:
    try:
        text = Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestError(plan.source, key, f"cannot read template {source}: "
                            f"{exc.strerror}") from None
    return substitute(text, svc.provision.variables, source, key)


def _run_commands(plan: Plan, svc: ServicePlan, what: str,
                  commands: tuple[tuple[str, ...], ...], progress: Callable[[str], None],
                  again: str) -> None:
    """Run `commands` in order as the app's user with the service's own environment, their
    output kept in logs/NAME-WHAT.log; the first failure is one line."""
    log = Path(plan.path("logs", f"{svc.name}-{what}.log"))
    access.group_readable(plan, svc, str(log))
    how = as_service(plan, svc, VIRTUAL_ENV=svc.python_home,
                     PATH=os.path.join(svc.python_home, "bin") + os.pathsep
                     + svc.base_env["PATH"])
    progress(f"{svc.name}: running {len(commands)} {what} command(s)")
    for argv in commands:
        code = _run_logged(argv, log, hidden=svc.secrets | svc.provision.variables.secrets,
                           **how)
        if code != 0:
            raise ServerError(
                f"service '{svc.name}': {what} command `{secrets.redact(shlex.join(argv))}` "
                f"failed (exit {code}): {_last_line(log)}; see {log}; fix "
                f"services.{svc.name}.{what} and {again}")


def run_setup(plan: Plan, progress: Callable[[str], None]) -> None:
    """Run each service's setup commands once; record what was done."""
    for svc in plan.services:
        prov = svc.provision
        record = hashlib.sha256(json.dumps(prov.setup).encode()).hexdigest()
        done = Path(plan.path("setup", f"{svc.name}.done"))
        if prov.setup and not (done.exists() and done.read_text() == record):
            _run_commands(plan, svc, "setup", prov.setup, progress,
                          "run `wsgistack up` again")
            access.make_file(plan, str(done), access.PRIVATE_FILE, text=record)
        access.hand_over(plan, svc, prov.data_dir)


def run_after_up(plan: Plan, progress: Callable[[str], None]) -> None:
    """Each service's after_up commands, every time the whole stack has come up healthy."""
    for svc in plan.services:
        if svc.provision.after_up:
            _run_commands(plan, svc, "after_up", svc.provision.after_up, progress,
                          "run `wsgistack up` again (the stack was stopped)")


def prepare(plan: Plan, progress: Callable[[str], None]) -> None:
    """Venvs first (the requirement checks look at their interpreters)."""
    seen: set[str] = set()
    for svc in plan.services:
        if svc.python_home not in seen:
            seen.add(svc.python_home)
            ensure_venv(svc, Path(plan.path("logs")), progress)
            if svc.provision.venv_base:
                access.venv(plan, svc, svc.python_home)
