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
from tests.test_audit import (
    commit,
    git,
    served_repo,
    trees,  # noqa: F401  (the fixture trees, built in tmp_path)
)
from wsgistack.goal import document, projects

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


@pytest.mark.parametrize("name", ["projects-2017-04.yaml", "projects-current.yaml"])
def test_projects_yaml_is_read_as_yaml_reads_it(name):
    """Both layouts (2017's and today's), every team and repository, as PyYAML reads them."""
    yaml = pytest.importorskip("yaml")
    data = yaml.safe_load((SEED / name).read_text())
    want = {team: [r for d in (v.get("deliverables") or {}).values() for r in d.get("repos", [])]
            for team, v in data.items()}
    assert projects.read(str(SEED / name)) == want
    assert "openstack/freezer-api" in want["freezer"]


SETUP = "[metadata]\nname = {name}\n\n[entry_points]\n{eps}\n"
# The repositories of the 2017 review that a team name alone does not find, as they were
# at 2017-01-12 (reduced to what decides each verdict): (directory, remote, dated commits).
REPOS_2017 = {
    "freezer": ("openstack/freezer", [("2016-09-01", {  # the backup agent: no API
        "setup.cfg": SETUP.format(name="freezer", eps="console_scripts =\n"
                                  "    freezer-agent = freezer.main:main"),
        "freezer/__init__.py": "", "freezer/main.py": "def main():\n    return 0\n"})]),
    "freezer-api": ("openstack/freezer-api", [("2015-10-01", {
        "setup.cfg": SETUP.format(name="freezer-api", eps="wsgi_scripts =\n"
                                  "    freezer-api-wsgi = freezer_api.cmd.api:build_app"),
        "freezer_api/__init__.py": "", "freezer_api/cmd/__init__.py": "",
        "freezer_api/cmd/api.py": "def build_app():\n    return None\n"})]),
    "kuryr": ("openstack/kuryr", [("2016-10-01", {  # the common library
        "setup.cfg": SETUP.format(name="kuryr-lib", eps=""),
        "kuryr/__init__.py": "", "kuryr/lib/__init__.py": "def helper():\n    return 1\n"})]),
    # A checkout whose directory is not the repository's name: found by its remote.
    "libnetwork": ("openstack/kuryr-libnetwork", [("2016-11-01", {
        "setup.cfg": SETUP.format(name="kuryr-libnetwork", eps="console_scripts =\n"
                                  "    kuryr-server = kuryr_libnetwork.server:start"),
        "kuryr_libnetwork/__init__.py": "",
        "kuryr_libnetwork/server.py": "import flask\n\napp = flask.Flask('kuryr')\n\n"
                                      "def start():\n    app.run('0.0.0.0', 23750)\n"})]),
    # An unpacked tree known only by its package name.
    "inspector-src": ("", [("2016-12-01", {
        "setup.cfg": SETUP.format(name="ironic-inspector", eps="console_scripts =\n"
                                  "    ironic-inspector = ironic_inspector.main:main"),
        "ironic_inspector/__init__.py": "",
        "ironic_inspector/main.py": "import eventlet.wsgi\n\ndef main():\n"
                                    "    eventlet.wsgi.server(None, None)\n"})]),
    "mystery": ("", [("2016-12-01", {"setup.cfg": SETUP.format(name="mystery", eps="")})]),
}


@pytest.fixture
def repos_2017(tmp_path):
    for name, (remote, commits) in REPOS_2017.items():
        repo = tmp_path / name
        for date, files in commits:
            commit(repo, date, files)
        # Work after the review: read at 2017-01-12, none of it may show.
        commit(repo, "2017-06-01", {"LATER.rst": "after the review\n"})
        if remote:
            git(repo, "remote", "add", "origin", f"https://opendev.org/{remote}.git")
    return tmp_path


def test_the_2017_review_with_governance_data_accounts_for_every_tree(repos_2017):
    res = run_cli("goal", str(APRIL), "--projects", str(SEED / "projects-2017-04.yaml"),
                  "--at", "2017-01-12", "--trees", *REPOS_2017, "--format", "json",
                  "-o", "page.json", cwd=repos_2017)
    assert res.code == 1  # the tree of no team says so
    said = res.err.splitlines()
    assert [ln.split(": read ")[0] for ln in said[:6]] == list(REPOS_2017)
    assert all(" of 2016-" in ln or " of 2015-" in ln for ln in said[:6])
    assert said[6:] == [
        "wsgistack: warning: tree mystery belongs to no team in the goal (no team's "
        "repositories name mystery); name its team with --projects or --teams",
        "wrote page.json (60 teams, 6 trees, 2 flagged)"]
    page = json.loads((repos_2017 / "page.json").read_text())
    assert page["left_out"] == [said[6].removeprefix("wsgistack: warning: ")]  # on the page too
    rows = {t["team"]: t for t in page["teams"]}
    placed = sorted(a["path"] for r in rows.values() for a in r["audit"])
    assert placed == sorted(set(REPOS_2017) - {"mystery"})  # no silent drop
    freezer = rows["freezer"]  # both repositories; the API's decides
    assert [(a["project"], a["verdict"]) for a in freezer["audit"]] == [
        ("freezer", "no API service"), ("freezer-api", "supported")]
    assert freezer["review"] == "cannot" and freezer["verdict"] == "supported"
    assert freezer["flags"] == ["the review says it cannot, but the code has a WSGI entry "
                                "(freezer-api: setup.cfg:6)"]
    kuryr = rows["kuryr"]  # agrees with the review once its API's repository is there
    assert [(a["project"], a["verdict"]) for a in kuryr["audit"]] == [
        ("kuryr-lib", "no API service"), ("kuryr-libnetwork", "not supported")]
    assert kuryr["verdict"] == "not supported" and kuryr["flags"] == []
    assert [a["project"] for a in rows["ironic"]["audit"]] == ["ironic-inspector"]
    text = run_cli("goal", str(APRIL), "--projects", str(SEED / "projects-2017-04.yaml"),
                   "--at", "2017-01-12", "--trees", "freezer", "freezer-api",
                   cwd=repos_2017).out
    assert "freezer: review cannot; audit supported" in text
    rst = run_cli("goal", str(APRIL), "--projects", str(SEED / "projects-2017-04.yaml"),
                  "--trees", "mystery", "--format", "rst", cwd=repos_2017).out
    assert "* Left out: tree mystery belongs to no team in the goal" in rst
    docutils = pytest.importorskip("docutils.core")
    docutils.publish_doctree(rst, settings_overrides={"report_level": 2, "halt_level": 2})
    assert re.search(r"  audit: freezer-api at [0-9a-f]{12} of 2015-10-01 on master: "
                     r"supported \(WSGI entry", text)


def test_todays_projects_yaml_moves_kuryr_libnetwork_to_zun(repos_2017):
    res = run_cli("goal", str(DONE), "--projects", str(SEED / "projects-current.yaml"),
                  "--trees", "freezer", "freezer-api", "libnetwork", "kuryr", "--format", "json",
                  cwd=repos_2017)
    assert res.code == 0, res.err
    rows = {t["team"]: t for t in json.loads(res.out)["teams"]}
    assert [a["path"] for a in rows["zun"]["audit"]] == ["libnetwork", "kuryr"]
    assert len(rows["freezer"]["audit"]) == 2 and rows["kuryr"]["audit"] == []


def test_a_team_of_projects_yaml_missing_from_the_goal_is_a_warning(repos_2017):
    """Governance places the tree, but the document has no such team: still no silent drop."""
    (repos_2017 / "p.yaml").write_text("Nobody:\n  deliverables:\n    mystery:\n      repos:\n"
                                       "        - openstack/mystery\n")
    res = run_cli("goal", str(APRIL), "--projects", "p.yaml", "--trees", "mystery",
                  cwd=repos_2017)
    assert res.code == 1
    assert res.err.splitlines()[0] == (
        "wsgistack: warning: tree mystery belongs to no team in the goal (projects.yaml gives "
        f"it to team 'nobody', which {APRIL} does not have)")


def test_since_history_finds_the_commit_that_added_the_entry(tmp_path):
    """keystone is listed done; its code at the review had no entry; since when has its
    default branch had one? The merge that brought `wsgi_scripts` to master (2017-02-01),
    not the side branch's own commit of 2016-12-15."""
    shas = served_repo(tmp_path / "keystone")
    merge = git(tmp_path / "keystone", "rev-parse", "master^")
    res = run_cli("goal", str(DONE), "--at", "2017-01-12", "--since-history", "--trees",
                  "keystone", "--format", "json", cwd=tmp_path)
    assert res.code == 0, res.err
    assert res.err.splitlines()[0] == (f"keystone: read {shas['before']} of 2016-11-01 on "
                                       "master, the last commit before 2017-01-12")
    rows = {t["team"]: t for t in json.loads(res.out)["teams"]}
    assert rows["keystone"]["flags"] == [
        "listed as done, but the code at 2016-11-01 has no WSGI entry (not supported); "
        f"served has a WSGI entry since 2017-02-01 (commit {merge[:12]} added `wsgi_scripts` "
        "to setup.cfg)"]
    html = run_cli("goal", str(DONE), "--at", "2017-01-12", "--trees", "keystone",
                   "--format", "html", cwd=tmp_path).out
    assert "since 2017-02-01" not in html  # only when asked: it reads the whole history
    # The completion artifacts that are changes sit beside the evidence.
    keystone = next(row for row in html.split("<tr>") if row.startswith(
        '<td data-h="Team">keystone<'))
    assert ("completion artifact: <a href=\"https://opendev.org/openstack/devstack/commit/"
            "a00e5f8810b6ca3b0b5d63cc228125e19bc91955\">") in keystone
    rows = {t["team"]: t for t in json.loads(run_cli("goal", str(DONE), "--format", "json",
                                                       cwd=tmp_path).out)["teams"]}
    assert rows["barbican"]["changes"] == ["https://review.opendev.org/#/c/476996/",
                                           "https://review.opendev.org/#/c/476995/"]
    assert rows["Chef OpenStack"]["changes"] == []


def test_since_history_needs_at(tmp_path):
    res = run_cli("goal", str(DONE), "--since-history", cwd=tmp_path)
    assert res.code == 2 and res.err.strip() == (
        "wsgistack: error: goal: --since-history reads history from the --at date on; add "
        "--at YYYY-MM-DD")


# The page inside a frame of the width to check: the frame's own scroll width says whether
# anything runs off its side (a headless window is never narrower than 500 px).
FRAME = """<!doctype html><html><head><title>-</title></head><body>
<iframe id="f" src="goal.html" style="width:{width}px;height:900px;border:0"></iframe>
<script>document.getElementById('f').onload = () => {{
  const w = document.getElementById('f').contentWindow;
  document.title = 'W' + w.document.documentElement.scrollWidth + 'x' + w.innerWidth}}
</script></body></html>"""


def test_the_2017_page_fits_a_phone_and_a_desktop(repos_2017):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium")
    res = run_cli("goal", str(APRIL), "--projects", str(SEED / "projects-2017-04.yaml"),
                  "--at", "2017-01-12", "--list", "repos.txt", "--format", "html", "-o",
                  "goal.html", cwd=_listed(repos_2017))
    assert res.code == 1 and "wrote goal.html (60 teams, 6 trees, 2 flagged)" in res.err
    page = (repos_2017 / "goal.html").read_text()
    freezer = next(row for row in page.split("<tr>") if "data-h=\"Team\">freezer<" in row)
    assert freezer.count(" on master: ") == 2 and "class=flag" in freezer
    for width in (390, 1280):
        (repos_2017 / "frame.html").write_text(FRAME.format(width=width))
        done = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu",
             "--allow-file-access-from-files", f"--window-size={width + 100},1000",
             "--dump-dom", f"file://{repos_2017}/frame.html"],
            capture_output=True, text=True, timeout=120, check=False)
        size = re.search(r"<title>W(\d+)x(\d+)</title>", done.stdout)
        assert size, done.stderr[-2000:]
        assert int(size.group(1)) <= int(size.group(2)) == width  # no sideways scrolling
        shot = repos_2017 / f"goal-{width}.png"
        done = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu",
             f"--window-size={width},1400", f"--screenshot={shot}",
             f"file://{repos_2017}/goal.html"],
            capture_output=True, text=True, timeout=120, check=False)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", done.stderr[-2000:]


def _listed(where):
    (where / "repos.txt").write_text("".join(f"{name}\n" for name in REPOS_2017))
    return where
