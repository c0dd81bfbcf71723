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
import subprocess
from collections.abc import Callable
from pathlib import Path

from wsgistack.errors import ManifestError, ServerError
from wsgistack.plan import Plan, ServicePlan, substitute

DONE = ".wsgistack-installed"


def _run_logged(argv: list[str] | tuple[str, ...], log: Path,
                env: dict[str, str] | None = None, cwd: str | None = None) -> int:
    with open(log, "ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        try:
            return subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                  stdin=subprocess.DEVNULL, check=False).returncode
        except OSError as exc:
            out.write(f"{exc}\n".encode())
            return 127


def _last_line(log: Path) -> str:
    from wsgistack.runtime import log_tail  # runtime imports this module

    return log_tail(str(log)) or "(no output)"


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
        if _run_logged(argv, log) != 0:
            raise ServerError(
                f"service '{svc.name}': `{' '.join(argv[:4])} ...` failed: {_last_line(log)}; "
                f"see {log}; fix services.{svc.name}.requirements or [stack] venv_python")
    done.write_text(json.dumps(sorted(installed | set(missing))))


def render_templates(plan: Plan) -> None:
    for svc in plan.services:
        prov = svc.provision
        for target, source in prov.templates:
            key = f"services.{svc.name}.templates"
            try:
                text = Path(source).read_text(encoding="utf-8")
            except OSError as exc:
                raise ManifestError(plan.source, key, f"cannot read template {source}: "
                                    f"{exc.strerror}") from None
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            Path(target).write_text(substitute(text, prov.variables, source, key),
                                    encoding="utf-8")


def _give(path: str, user: str) -> None:
    """Hand the data dir to the app's user: sqlite files and key repositories are written
    by the app, which under mod_wsgi runs as www-data."""
    pw = pwd.getpwnam(user)
    if os.geteuid() != 0 or pw.pw_uid == 0:
        return
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.chown(name, pw.pw_uid, pw.pw_gid)


def run_setup(plan: Plan, progress: Callable[[str], None]) -> None:
    """Run each service's setup commands once; keep their output; record what was done."""
    logs = Path(plan.state, "logs")
    logs.mkdir(parents=True, exist_ok=True)
    for svc in plan.services:
        prov = svc.provision
        Path(prov.data_dir).mkdir(parents=True, exist_ok=True)
        record = hashlib.sha256(json.dumps(prov.setup).encode()).hexdigest()
        done = Path(plan.state, "setup", f"{svc.name}.done")
        if prov.setup and not (done.exists() and done.read_text() == record):
            log = logs / f"{svc.name}-setup.log"
            env = {**os.environ, **svc.env, "VIRTUAL_ENV": svc.python_home,
                   "PATH": os.path.join(svc.python_home, "bin") + os.pathsep
                   + os.environ.get("PATH", "")}
            progress(f"{svc.name}: running {len(prov.setup)} setup command(s)")
            for argv in prov.setup:
                code = _run_logged(argv, log, env=env, cwd=svc.working_dir)
                if code != 0:
                    raise ServerError(
                        f"service '{svc.name}': setup command `{' '.join(argv)}` failed "
                        f"(exit {code}): {_last_line(log)}; see {log}; fix "
                        f"services.{svc.name}.setup and run `wsgistack up` again")
            done.parent.mkdir(parents=True, exist_ok=True)
            done.write_text(record)
        _give(prov.data_dir, prov.user)


def prepare(plan: Plan, progress: Callable[[str], None]) -> None:
    """Venvs first (the requirement checks look at their interpreters)."""
    seen: set[str] = set()
    for svc in plan.services:
        if svc.python_home not in seen:
            seen.add(svc.python_home)
            ensure_venv(svc, Path(plan.state, "logs"), progress)
