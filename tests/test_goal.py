"""`wsgistack goal`: the two real goal documents in ../shared/seed (the Pike goal as of April
2017, and as archived when complete) read whole, and the status page in every format,
joined with the audit of fixture trees (tests/test_audit.py)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.test_audit import trees  # noqa: F401  (the fixture trees, built in tmp_path)
from wsgistack.goal import document

SEED = Path(__file__).parent.parent.parent / "shared" / "seed"
APRIL = SEED / "goal-deploy-api-in-wsgi.rst"
DONE = SEED / "goal-deploy-api-in-wsgi.completed.rst"
CANNOT_2017 = ["cloudkitty", "congress", "designate", "freezer", "glance", "kuryr", "magnum",
               "murano", "neutron", "octavia", "searchlight", "solum", "tacker", "trove",
               "vitrage", "watcher", "zun"]
CAN_2017 = ["aodh", "ceilometer", "cinder", "gnocchi", "ironic", "keystone", "mistral", "nova",
            "panko", "swift", "zaqar"]


def _team_headings(path: Path) -> list[str]:
    """The titles underlined with '-' after 'Project Teams', read here independently."""
    text = path.read_text().split("Project Teams\n=============\n", 1)[1]
    return re.findall(r"^(\S[^\n]*)\n-{3,}$", text, re.M)


@pytest.mark.parametrize("path", [APRIL, DONE], ids=["april-2017", "completed"])
def test_the_seed_documents_are_read_whole(path):
    goal = document.read(str(path))
    assert goal.title == "Control Plane API endpoints deployment via WSGI"
    assert goal.topic == "goal-deploy-api-in-wsgi" and goal.review_date == "12 Jan 2017"
    assert len(goal.criteria) == 2 and goal.criteria[0].startswith("Provide WSGI application")
    assert [t.name for t in goal.teams] == _team_headings(path)
    assert len(goal.teams) == (60 if path == APRIL else 61)
    if path == APRIL:
        assert list(goal.cannot) == CANNOT_2017 and list(goal.can) == CAN_2017
    else:  # freezer moved across; kuryr is named by its repository
        assert "freezer" in goal.can and "kuryr-libnetwork" in goal.cannot
        assert len(goal.cannot) == 16 and len(goal.can) == 12


def test_artifacts_keep_links_none_and_prose():
    teams = {t.name: t for t in document.read(str(DONE)).teams}
    assert teams["barbican"].completion.links == ("https://review.opendev.org/#/c/476996/",
                                                  "https://review.opendev.org/#/c/476995/")
    chef = teams["Chef OpenStack"]
    assert (chef.planning.state, chef.completion.state) == ("none", "none")
    assert chef.notes[0].startswith("The Chef cookbooks do not provide any API directly")
    freezer = teams["freezer"].completion
    assert freezer.state == "links" and freezer.items[0].startswith("Freezer is already using")
    assert teams["heat"].completion.state == "links"  # a :repo: role counts as a link
    assert teams["designate"].completion.state == "empty"
    assert teams["ironic"].completion.items == ("ironic: PARTIAL (using mod_wsgi instead of "
                                                "uWSGI)", "ironic-inspector: TODO (Queens)")


TEAMS = 'glance = ["ready"]\nkeystone = ["eventlet-only"]\nbarbican = ["library"]\n'


def _page(trees_dir: Path, fmt: str) -> str:
    (trees_dir / "teams.toml").write_text(TEAMS)
    res = run_cli("goal", str(DONE), "--trees", "ready", "eventlet-only", "library",
                  "--teams", "teams.toml", "--format", fmt, cwd=trees_dir)
    assert res.code == 0, res.err
    return res.out


def test_the_page_flags_where_document_and_code_disagree(trees):  # noqa: F811
    doc = json.loads(_page(trees, "json"))
    rows = {t["team"]: t for t in doc["teams"]}
    assert len(rows) == 61 and doc["review"]["cannot"][0] == "cloudkitty"
    glance = rows["glance"]  # the review said cannot; its code is a ready WSGI app
    assert glance["review"] == "cannot" and glance["audit"][0]["verdict"] == "supported"
    assert glance["flags"] == ["the review says it cannot, but the code has a WSGI entry "
                               "(" + ", ".join(glance["audit"][0]["entries"][:3]) + ")"]
    assert "setup.cfg:6" in glance["audit"][0]["entries"]
    keystone = rows["keystone"]  # listed complete; this tree only runs its own server
    assert keystone["flags"] == ["listed as done, but the code has no WSGI entry "
                                 "(not supported)"]
    assert rows["barbican"]["audit"][0]["verdict"] == "no API service"
    assert rows["nova"]["audit"] == [] and rows["nova"]["flags"] == []


def test_text_markdown_and_rst(trees):  # noqa: F811
    out = _page(trees, "text")
    assert "61 teams; 3 with code audited; 3 where the document and the code disagree" in out
    assert "  FLAG: the review says it cannot, but the code has a WSGI entry" in out
    md = _page(trees, "md").splitlines()
    assert sum(1 for line in md if line.startswith("| ")) == 63  # head, rule, 61 teams
    rst = _page(trees, "rst")
    docutils = pytest.importorskip("docutils.core")
    # Read back by docutils: a warning (a malformed table) stops it. `:repo:` is the
    # governance repository's own role, kept as the document has it.
    from docutils import nodes
    from docutils.parsers.rst import roles
    roles.register_generic_role("repo", nodes.literal)
    tree = docutils.publish_doctree(rst, settings_overrides={"report_level": 2,
                                                              "halt_level": 2})
    rows = sum(1 for n in tree.findall(condition=lambda n: n.tagname == "row"))
    assert "glance" in tree.astext() and rows == 62  # the header and 61 teams


def test_html_is_one_page_that_a_browser_draws(trees, tmp_path):  # noqa: F811
    page = _page(trees, "html")
    assert page.startswith("<!doctype html>") and "<script>" in page and "http" not in \
        re.sub(r'href="[^"]*"|>https?://[^<]*<|https?://[^\s<"]+', "", page)
    assert page.count("<tr>") == 62 and 'name="viewport"' in page
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium")
    (tmp_path / "goal.html").write_text(page)
    shot = tmp_path / "goal.png"
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=390,2000",
         f"--screenshot={shot}", f"file://{tmp_path}/goal.html"],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and shot.stat().st_size > 10_000, done.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_document_that_is_not_a_goal_is_one_line(tmp_path):
    path = tmp_path / "notes.rst"
    path.write_text("Some notes\n==========\n\nNothing here.\n")
    res = run_cli("goal", str(path))
    assert res.code == 2
    assert res.err.strip() == (f"wsgistack: error: {path}: no title (a line over- and "
                               "underlined with '='): not a goal document")


def test_a_missing_tree_and_a_team_without_one_are_a_line_each(trees):  # noqa: F811
    """The page is still written for the rest, and the exit status says something was
    left out."""
    (trees / "teams.toml").write_text('glance = ["ready"]\nnova = ["nova"]\nnoteam = ["x"]\n')
    res = run_cli("goal", str(DONE), "--trees", "ready", "gone", "--teams", "teams.toml",
                  "--format", "json", "-o", "page.json", cwd=trees)
    assert res.code == 1
    assert res.err.splitlines() == [
        "wsgistack: warning: gone: no such file or directory; pass a source tree (a git "
        "checkout or an unpacked sdist); left out of the page",
        "wsgistack: warning: team 'nova': no tree given for nova; its row has no audit (pass "
        "the tree with --trees or --list)",
        f"wsgistack: warning: the teams file names team 'noteam', which {DONE} does not have; "
        "check its spelling against the document's sections",
        "wrote page.json (61 teams, 1 trees, 1 flagged)"]
    rows = {t["team"]: t for t in json.loads((trees / "page.json").read_text())["teams"]}
    assert rows["glance"]["audit"][0]["verdict"] == "supported"
