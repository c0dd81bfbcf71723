"""The CI jobs `render` writes: a GitHub workflow checked against GitHub's workflow schema
(check-jsonschema's vendored copy, offline), and Zuul's job with its playbooks, linted by
ansible-lint and the run playbook run for real against the Flask example."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_cli
from wsgistack.backends import BACKENDS
from wsgistack.lifecycle import processes

EXAMPLE = Path(__file__).parent.parent / "examples" / "flask"
BIN = Path(sys.executable).parent


def project(tmp_path: Path, backends: str = "") -> Path:
    """A repository with the Flask example in `app/`."""
    shutil.copytree(EXAMPLE, tmp_path / "app")
    if backends:
        toml = tmp_path / "app" / "wsgistack.toml"
        toml.write_text(toml.read_text().replace(
            'backends = ["mod_wsgi", "apache+uwsgi"]', f"backends = {backends}"))
    return tmp_path


def test_github_workflow_is_valid_and_runs_a_job_per_backend(tmp_path: Path) -> None:
    root = project(tmp_path, '["all"]')
    out = root / ".github" / "workflows" / "wsgistack.yml"
    res = run_cli("-f", "app/wsgistack.toml", "render", "--target", "github-actions",
                  "-o", str(out), cwd=root)
    assert res.code == 0, res.err
    assert res.out.split() == [str(out)]
    check = subprocess.run([BIN / "check-jsonschema", "--builtin-schema",
                            "vendor.github-workflows", str(out)],
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    job = yaml.safe_load(out.read_text())["jobs"]["wsgistack-test"]
    assert [m["backend"] for m in job["strategy"]["matrix"]["include"]] == list(BACKENDS)
    runs = "\n".join(step.get("run", "") for step in job["steps"])
    assert ("wsgistack -f app/wsgistack.toml test --backends ${{ matrix.backend }} "
            "--artifacts wsgistack-artifacts --junit wsgistack-artifacts/junit.xml") in runs
    assert "libapache2-mod-wsgi-py3" in runs and "nginx" in runs
    upload = job["steps"][-1]
    assert (upload["uses"], upload["if"]) == ("actions/upload-artifact@v4", "always()")


def test_ci_jobs_need_a_test_command(tmp_path: Path) -> None:
    root = project(tmp_path)
    toml = root / "app" / "wsgistack.toml"
    toml.write_text(toml.read_text().replace("command = ", "# command = "))
    res = run_cli("-f", "app/wsgistack.toml", "render", "--target", "zuul", "-o", "z",
                  cwd=root)
    assert res.code == 2
    assert "no test command for the CI jobs to run: set [test] command" in res.err


def test_zuul_job_per_backend_apache_voting_and_lint_clean(tmp_path: Path) -> None:
    root = project(tmp_path, '["mod_wsgi", "granian"]')
    res = run_cli("-f", "app/wsgistack.toml", "render", "--target", "zuul", "-o", "ci",
                  cwd=root)
    assert res.code == 0, res.err
    config = yaml.safe_load((root / "ci" / "zuul.d" / "wsgistack.yaml").read_text())
    jobs = {item["job"]["name"]: item["job"] for item in config if "job" in item}
    assert jobs["wsgistack-test"]["vars"]["wsgistack_backend"] == "mod_wsgi"
    assert jobs["wsgistack-test"]["vars"]["wsgistack_manifest"] == "app/wsgistack.toml"
    assert (jobs["wsgistack-test"]["voting"], jobs["wsgistack-test-granian"]["voting"]) == (
        True, False)
    assert config[-1]["project"]["gate"]["jobs"] == ["wsgistack-test"]
    lint = subprocess.run([BIN / "ansible-lint", "--offline", "--profile", "production", "."],
                          cwd=root / "ci", capture_output=True, text=True, check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr


@pytest.mark.live
def test_zuul_run_playbook_runs_for_real(tmp_path: Path) -> None:
    root = project(tmp_path)
    assert run_cli("-f", "app/wsgistack.toml", "render", "--target", "zuul", "-o", "ci",
                   cwd=root).code == 0
    home = root / "home"
    home.mkdir()
    extra = {"ansible_python_interpreter": "/usr/bin/python3", "ansible_user_dir": str(home),
             "wsgistack_project_dir": str(root), "wsgistack_venv": str(BIN.parent),
             "wsgistack_manifest": "app/wsgistack.toml", "wsgistack_backend": "mod_wsgi"}
    for playbook in ("run", "post"):
        res = subprocess.run(
            [BIN / "ansible-playbook", "-i", "localhost,", "-c", "local",
             "-e", json.dumps(extra), root / "ci" / "playbooks" / "wsgistack" /
             f"{playbook}.yaml"], capture_output=True, text=True, check=False)
        assert res.returncode == 0, res.stdout + res.stderr
    logs = home / "zuul-output" / "logs" / "wsgistack"
    summary = json.loads((logs / "mod_wsgi" / "summary.json").read_text())
    assert summary["status"] == "passed"
    assert "3 passed" in (logs / "mod_wsgi" / "command-stdout.txt").read_text()
    assert (logs / "junit.xml").is_file()
    assert processes.marked(str(root / "app" / ".wsgistack"), nested=True) == []
