"""CI job definitions that run `wsgistack test`, rendered from the manifest:

- `render --target github-actions -o .github/workflows/wsgistack.yml`: a workflow with a job
  per backend (a matrix) that installs the Debian servers and the project, runs the
  `[test]` command through `wsgistack test` and uploads the artifacts;
- `render --target zuul -o DIR`: `zuul.d/wsgistack.yaml` (the job `wsgistack-test` and a
  child per other backend; the `[test] backends` voting) and its playbooks, laid out as
  devstack's: pre-run installs, run calls `wsgistack test`, post-run puts the artifacts in
  `~/zuul-output/logs`, which Zuul's base job collects.

Pure text from the manifest; where wsgistack itself is installed from is a variable
(`WSGISTACK_PIP`, `wsgistack_pip`): a PyPI name, a path or a git URL.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wsgistack.backends import BACKENDS
from wsgistack.errors import WsgistackError
from wsgistack.jobs.job import select, slug
from wsgistack.manifest import EMBEDDED, Manifest
from wsgistack.targets.yaml_text import dump

TARGETS = ("github-actions", "zuul")
ARTIFACTS = "wsgistack-artifacts"
VENV = ".wsgistack-venv"
# What each backend needs from Debian (granian and gunicorn come from PyPI, with wsgistack).
DEBIAN = {
    "granian": (), "gunicorn": (),
    "uwsgi": ("uwsgi", "uwsgi-plugin-python3"),
    "mod_wsgi": ("apache2", "libapache2-mod-wsgi-py3"),
    "apache+uwsgi": ("apache2", "uwsgi", "uwsgi-plugin-python3"),
    "nginx+uwsgi": ("nginx", "uwsgi", "uwsgi-plugin-python3"),
}
UNDER_APACHE = ("mod_wsgi", "apache+uwsgi")  # the goal's: their jobs vote, the others do not
BASE_DEBS = ("python3-venv", "python3-dev")
# The project itself, when it is a package or has requirements: installed beside wsgistack.
INSTALL_PROJECT = """if [ -f requirements.txt ]; then {venv}/bin/pip install -r requirements.txt; fi
if [ -f pyproject.toml ] || [ -f setup.py ]; then {venv}/bin/pip install -e .; fi
"""


def _checked(m: Manifest) -> tuple[str, ...]:
    """The backends the jobs run on; the manifest must name its test command."""
    if m.path == EMBEDDED:
        raise WsgistackError("the CI jobs run a project's manifest: pass -f MANIFEST")
    if not m.test.command:
        raise WsgistackError(f"{m.path}: no test command for the CI jobs to run: set "
                             "[test] command (e.g. [\"pytest\", \"tests\"])")
    return select(list(BACKENDS) if "all" in m.test.backends else m.test.backends,
                  f"{m.path}: test.backends")


def _debs(backends: tuple[str, ...]) -> list[str]:
    return sorted({*BASE_DEBS, *(d for b in backends for d in DEBIAN[b])})


def relative(m: Manifest, base: Path) -> str:
    """The manifest's path from the repository's root (`base`), where the jobs run."""
    return os.path.relpath(m.root / Path(m.path).name, base.absolute())


def github_actions(m: Manifest, base: Path) -> str:
    """The workflow; `base`: the repository's root, where its jobs run."""
    backends = _checked(m)
    test = " ".join(["wsgistack", "-f", relative(m, base), "test", "--backends",
                     "${{ matrix.backend }}", "--artifacts", ARTIFACTS, "--junit",
                     f"{ARTIFACTS}/junit.xml"])
    steps: list[dict[str, Any]] = [
        {"uses": "actions/checkout@v4"},
        {"name": "Install the servers from Debian's packages",
         "run": "sudo apt-get update -qq\nsudo DEBIAN_FRONTEND=noninteractive apt-get install "
                f"-y -qq --no-install-recommends {' '.join(_debs(backends))}\n"},
        {"name": "Install wsgistack and the project",
         "run": f"/usr/bin/python3 -m venv {VENV}\n{VENV}/bin/pip install \"$WSGISTACK_PIP\"\n"
                + INSTALL_PROJECT.format(venv=VENV)},
        {"name": "wsgistack test under ${{ matrix.backend }}",
         "run": f"PATH=\"$PWD/{VENV}/bin:$PATH\" {test}\n"},
        {"name": "Upload the artifacts", "if": "always()",
         "uses": "actions/upload-artifact@v4",
         "with": {"name": "wsgistack-${{ matrix.slug }}", "path": f"{ARTIFACTS}/",
                  "if-no-files-found": "warn"}},
    ]
    doc = {"name": f"wsgistack test ({m.stack.name})",
           "on": {"push": None, "pull_request": None, "workflow_dispatch": None},
           "env": {"WSGISTACK_PIP": "wsgistack"},
           "jobs": {"wsgistack-test": {
               "name": "wsgistack test (${{ matrix.backend }})",
               "runs-on": "ubuntu-24.04", "timeout-minutes": int(m.test.timeout // 60) + 30,
               "strategy": {"fail-fast": False, "matrix": {
                   "include": [{"backend": b, "slug": slug(b)} for b in backends]}},
               "steps": steps}}}
    return dump(doc, "Written by `wsgistack render --target github-actions`: the project's "
                "own tests\nagainst its stack, one job per backend. WSGISTACK_PIP: where pip "
                "finds wsgistack.")


def zuul(m: Manifest, base: Path) -> dict[str, str]:
    """zuul.d/wsgistack.yaml and playbooks/wsgistack/{pre,run,post}.yaml; `base`: the
    repository's root, where the jobs run."""
    backends = _checked(m)
    voting = {b for b in backends if b in UNDER_APACHE} or set(backends)
    first, *others = backends
    jobs: list[dict[str, Any]] = [{"job": {
        "name": "wsgistack-test",
        "description": f"The tests of stack '{m.stack.name}' against it, deployed by "
                       f"wsgistack under {first}.",
        "pre-run": "playbooks/wsgistack/pre.yaml", "run": "playbooks/wsgistack/run.yaml",
        "post-run": "playbooks/wsgistack/post.yaml",
        "timeout": int(m.test.timeout) + 1800, "voting": first in voting,
        "vars": {"wsgistack_backend": first, "wsgistack_manifest": relative(m, base),
                 "wsgistack_pip": "wsgistack",
                 "wsgistack_project_dir": "{{ ansible_user_dir }}/{{ zuul.project.src_dir }}"}}}]
    jobs += [{"job": {"name": f"wsgistack-test-{slug(b)}", "parent": "wsgistack-test",
                      "description": f"wsgistack-test under {b}.", "voting": b in voting,
                      "vars": {"wsgistack_backend": b}}} for b in others]
    names = ["wsgistack-test", *(f"wsgistack-test-{slug(b)}" for b in others)]
    jobs.append({"project": {"check": {"jobs": names}, "gate": {"jobs": [
        n for n, b in zip(names, backends, strict=True) if b in voting]}}})
    head = "Written by `wsgistack render --target zuul`."
    return {"zuul.d/wsgistack.yaml": dump_list(jobs, head),
            "playbooks/wsgistack/pre.yaml": dump_list(_pre(backends), head),
            "playbooks/wsgistack/run.yaml": dump_list(_run(), head),
            "playbooks/wsgistack/post.yaml": dump_list(_post(), head)}


def dump_list(items: list[dict[str, Any]], comment: str) -> str:
    """A YAML document that is a list (Zuul's config, Ansible's plays)."""
    text = dump({"x": items}, comment)
    head, _, body = text.partition("x:\n")
    return "---\n" + head + "\n".join(line[2:] for line in body.splitlines()) + "\n"


# The node's paths, with defaults a job's vars (or -e) override.
PROJECT = "{{ wsgistack_project_dir }}"  # set by the job: the project's checkout
VENV_DIR = "{{ wsgistack_venv | default(ansible_user_dir ~ '/" + VENV + "') }}"
ARTIFACTS_DIR = "{{ wsgistack_artifacts | default(ansible_user_dir ~ '/" + ARTIFACTS + "') }}"


def _pre(backends: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{"name": "Install the servers, wsgistack and the project", "hosts": "all",
             "tasks": [
                 {"name": "Install the servers from Debian's packages", "become": True,
                  "ansible.builtin.apt": {"name": _debs(backends), "update_cache": True,
                                          "install_recommends": False}},
                 {"name": "Install wsgistack", "ansible.builtin.pip": {
                     "name": "{{ wsgistack_pip | default('wsgistack') }}",
                     "virtualenv": VENV_DIR, "virtualenv_command": "/usr/bin/python3 -m venv"}},
                 {"name": "Install the project", "args": {"chdir": PROJECT},
                  "ansible.builtin.shell": INSTALL_PROJECT.format(venv=VENV_DIR),
                  "changed_when": True}]}]


def _run() -> list[dict[str, Any]]:
    argv = ["{{ wsgistack_venv_bin }}/wsgistack", "-f",
            "{{ wsgistack_manifest | default('wsgistack.toml') }}", "test", "--backends",
            "{{ wsgistack_backend | default('mod_wsgi') }}", "--artifacts", ARTIFACTS_DIR,
            "--junit", ARTIFACTS_DIR + "/junit.xml"]
    return [{"name": "Run the project's tests against its stack (wsgistack test)",
             "hosts": "all",
             "vars": {"wsgistack_venv_bin": VENV_DIR + "/bin"},
             "tasks": [{"name": "Run wsgistack test",
                        "ansible.builtin.command": {"argv": argv, "chdir": PROJECT},
                        "environment": {"PATH": "{{ wsgistack_venv_bin }}:{{ ansible_env.PATH }}"},
                        "changed_when": True}]}]


def _post() -> list[dict[str, Any]]:
    logs = "{{ ansible_user_dir }}/zuul-output/logs/wsgistack/"
    return [{"name": "Put the artifacts where Zuul collects the job's logs", "hosts": "all",
             "tasks": [
                 {"name": "Make the log directory",
                  "ansible.builtin.file": {"path": logs, "state": "directory", "mode": "0755"}},
                 {"name": "Copy the artifacts", "ansible.builtin.copy": {
                     "src": ARTIFACTS_DIR + "/", "dest": logs, "remote_src": True,
                     "mode": "preserve"}}]}]


def write(m: Manifest, target: str, out: Path, show: Callable[[str], None]) -> int:
    """Write the CI files of `target` (github-actions: the file `out`; zuul: under the
    directory `out`) for jobs run from the current directory, the repository's root; each
    path written is shown."""
    if target == "github-actions":
        files = {out.name: github_actions(m, Path.cwd())}
        out = out.parent
    else:
        files = zuul(m, Path.cwd())
    for rel, text in files.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text, encoding="utf-8")
        show(str(out / rel))
    return 0
