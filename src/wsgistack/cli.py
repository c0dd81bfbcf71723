"""The `wsgistack` command. Each subcommand is a `(args) -> int` handler.

User errors (the WsgistackError family) print as one line and exit 2; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from wsgistack import __version__, access, check, entry, jobs, manifest, plan, runtime, secrets
from wsgistack.backends import BACKENDS, exposure_warnings, resolve
from wsgistack.backends.base import Backend
from wsgistack.errors import WsgistackError
from wsgistack.host import DEFAULT_PATH, Host
from wsgistack.lifecycle import health, processes

EXIT_USER_ERROR = 2
EXIT_NOT_UP = 3


def _say(message: str) -> None:
    print(secrets.redact(message), file=sys.stderr, flush=True)


def _show(text: str) -> None:
    """Standard output: every line passes the secret filter."""
    print(secrets.redact(text), flush=True)


def _load(args: argparse.Namespace) -> manifest.Manifest:
    return _with_base_port(manifest.find(args.file, Path.cwd()), getattr(args, "base_port", None))


def _with_base_port(m: manifest.Manifest, port: int | None) -> manifest.Manifest:
    return dataclasses.replace(m, stack=dataclasses.replace(m.stack, base_port=port)) if port \
        else m


def _state(m: manifest.Manifest) -> processes.StackState | None:
    """The stack this manifest's state dir holds: only ever its own. A state dir another
    manifest wrote (both set one `state_dir`) is refused before anything is touched."""
    state = processes.load_state(str(m.state_path))
    if state and state.manifest_id and state.manifest_id != m.identity:
        raise WsgistackError(
            f"{m.path}: the state dir {m.state_path} holds stack '{state.stack}' of "
            f"{state.manifest_id}, not this manifest's; leave [stack] state_dir unset (one "
            "per manifest) or give each manifest its own")
    return state


def _plan(args: argparse.Namespace, m: manifest.Manifest | None = None) -> plan.Plan:
    m = m or _load(args)
    built = _built(plan.build(m, resolve(m, getattr(args, "backend", None))))
    return dataclasses.replace(built, base_port_given=bool(getattr(args, "base_port", None)))


def _built(p: plan.Plan) -> plan.Plan:
    """A plan fresh from plan.build: its secrets hidden from all output, its warnings said."""
    secrets.hide(p.secrets)
    for warning in (*p.warnings, *exposure_warnings(p)):
        _say(f"wsgistack: warning: {warning}")
    return p


def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    cells = [list(map(str, header))] + [list(map(str, r)) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def catalog_table(p: plan.Plan, running: list[processes.Running]) -> str:
    rows = []
    for svc in p.services:
        status, _why = health.http_status(svc.health_url)
        answer = "healthy" if status == svc.config.health_status else (
            f"HTTP {status}" if status else "down")
        rows.append((svc.name, svc.public_url, p.backend, runtime.pid_of(running, svc.name),
                     answer))
    return table(rows, ("service", "url", "server", "pid", "health"))


def cmd_up(args: argparse.Namespace) -> int:
    m = _load(args)
    _state(m)
    if m.path == manifest.EMBEDDED:
        _say(f"no {manifest.MANIFEST_NAME} here: starting the built-in example stack; "
             "`wsgistack init` writes a manifest for your app (README, Quick start)")
    p = _plan(args, m)
    t0 = time.monotonic()
    _say(f"starting stack '{p.name}' ({len(p.services)} services, backend {p.backend}) "
         f"from {p.source}")
    running = runtime.up(p, lambda m: _say(f"  {m}"))
    _say(f"up in {time.monotonic() - t0:.2f}s; state in {p.state}")
    _show(catalog_table(p, running))
    if args.detach:
        return 0
    _say("running in the foreground; Ctrl-C stops the stack")
    code = runtime.wait_foreground(running, lambda m: _say(f"  {m}"))
    runtime.stop_stack(p.state, running)
    _say("stopped")
    return code


def cmd_reload(args: argparse.Namespace) -> int:
    m = _load(args)
    state = _state(m)
    # As `up` was run: its --backend and --base-port are in the state.
    if state:
        args.backend = args.backend or state.backend
        if not args.base_port and state.base_port:
            args.base_port = state.base_port
            m = _with_base_port(m, args.base_port)
    p = _plan(args, m)
    t0 = time.monotonic()
    running = runtime.reload(p, lambda msg: _say(f"  {msg}"))
    _say(f"reloaded {len(running)} process(es) of stack '{p.name}' in "
         f"{time.monotonic() - t0:.2f}s")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    m = _load(args)
    _state(m)
    stopped = runtime.down(str(m.state_path))
    if not stopped:
        _say(f"stack '{m.stack.name}' is not up (no state in {m.state_path})")
        return 0
    _say(f"stopped {len(stopped)} process(es) of stack '{m.stack.name}'")
    return 0


def _service_status(state: processes.StackState, svc: processes.ServiceRecord
                    ) -> tuple[str, list[dict[str, object]]]:
    """A service's health, and each process it needs: its leaders (its own server, a front
    end) and their workers, with pid, role, state and user."""
    procs = state.serving(svc.name)
    gone = [r for r in procs if not r.alive()]
    status, _why = health.http_status(svc.health_url)
    answers = status == svc.health_status
    if gone:
        names = ", ".join(f"{r.name} (pid {r.pid})" for r in gone)
        health_text = (f"{'degraded' if answers else 'crashed'}: {names} gone; see "
                       f"wsgistack logs {gone[0].name}")
    else:
        health_text = "healthy" if answers else (f"HTTP {status}" if status else
                                                 "not answering")
    members: list[dict[str, object]] = []
    for r in procs:
        role = "leader" if r.name == svc.name else "front end"
        members.append({"name": r.name, "pid": r.pid, "role": role,
                        "state": "running" if r.alive() else "gone",
                        "user": processes.owner(r.pid)})
        members += [{"name": r.name, "pid": pid, "role": "worker", "state": "running",
                     "user": processes.owner(pid)}
                    for pid in (processes.descendants(r.pid) if r.alive() else [])]
    return health_text, members


def _balancer_view(config: Any, where: Any) -> list[dict[str, Any]] | None:
    """Each node of each service as the stack's HAProxy sees it, when it runs here."""
    from wsgistack.targets import cluster

    if cluster.running(where) is None:
        return None
    return [{**dataclasses.asdict(s), "address": config.nodes[s.node]}
            for s in cluster.states(where)]


def _show_balancer(view: list[dict[str, Any]]) -> int:
    """The view as a table; 0 when every node of every service is UP, else 1."""
    _show(table([(s["backend"], s["node"], s["address"], s["status"], s["sessions"])
                 for s in view], ("service", "node", "address", "state", "sessions")))
    return _balanced(view)


def _balanced(view: list[dict[str, Any]]) -> int:
    return 0 if all(s["status"] == "UP" for s in view) else 1


def cmd_status(args: argparse.Namespace) -> int:
    m = _load(args)
    state = _state(m)
    view = None
    if m.cluster is not None:
        from wsgistack.targets import cluster

        view = _balancer_view(m.cluster, cluster.balancer(m))
    if state is None:
        if view is not None:  # the balancer's host: the nodes, as HAProxy sees them
            if args.json:
                _show(json.dumps({"stack": m.stack.name, "up": False, "cluster": view},
                                 indent=1))
                return _balanced(view)
            return _show_balancer(view)
        _show(json.dumps({"stack": m.stack.name, "up": False}) if args.json
              else f"stack '{m.stack.name}' is not up")
        return EXIT_NOT_UP
    rows, docs, healthy = [], [], True
    rates = _rates(state.metrics)
    for svc in state.services:
        health_text, members = _service_status(state, svc)
        healthy &= health_text == "healthy"
        rate = rates.get(svc.name, {})
        rows.append((svc.name, svc.url, state.backend, runtime.pid_of(state.procs, svc.name),
                     health_text, rate.get("requests_per_second", "-"),
                     rate.get("errors_5xx", "-")))
        docs.append({"name": svc.name, "url": svc.url, "health": health_text,
                     "server": svc.server, "python": svc.python, "processes": members,
                     **({"last_minute": rate} if rate else {})})
    metrics = f"http://{state.metrics}/metrics" if state.metrics else ""
    if args.json:
        _show(json.dumps({"stack": m.stack.name, "up": True, "backend": state.backend,
                          "metrics": metrics, "services": docs,
                          **({"cluster": view} if view else {})}, indent=1))
    else:
        _show(table(rows, ("service", "url", "server", "pid", "health", "req/s", "5xx")))
        if metrics:
            _show(f"metrics: {metrics} (req/s and 5xx: the last minute)")
        if view:
            _show_balancer(view)
    return 0 if healthy else 1


def _rates(address: str) -> dict[str, dict[str, Any]]:
    """Requests per second and 5xx over the last minute, per service, from the stack's
    metrics endpoint ({} when it has none or it does not answer)."""
    if not address:
        return {}
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{address}/rates", timeout=2) as resp:
            found: dict[str, dict[str, Any]] = json.loads(resp.read())
            return found
    except (OSError, ValueError):
        return {}


def cmd_logs(args: argparse.Namespace) -> int:
    from wsgistack import logview

    m = _load(args)
    _state(m)
    name = f"{args.name}-access" if args.access else args.name
    log = Path(m.state_path, "logs", f"{name}.log")
    if not log.exists():
        known = sorted(p.stem for p in Path(m.state_path, "logs").glob("*.log"))
        raise WsgistackError(
            f"no log for '{name}' in {log.parent}"
            + (f"; logs there: {', '.join(known)}" if known else "; has the stack been up?")
        )
    try:
        after = logview.since(args.since) if args.since else None
    except ValueError as exc:
        raise WsgistackError(str(exc)) from None
    _plan(args, m)  # what it holds of the manifest's secrets is masked
    data = log.read_bytes()
    shown = list(logview.select(data.decode("utf-8", "replace").splitlines(), after,
                                args.errors))
    if args.lines > 0 and shown:
        _show("\n".join(shown[-args.lines:]))
    if args.follow:
        logview.follow(log, _show, args.errors, start=len(data))
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    m = _load(args)
    out = Path(args.output).absolute()
    if args.target == "kubernetes":
        return _render_kubernetes(m, resolve(m, args.backend), args, out)
    if args.base_image or args.wheels:
        raise WsgistackError("--base-image and --wheels are for --target kubernetes (the "
                             "image's Containerfile)")
    if args.target in jobs.CI_TARGETS:  # the test jobs: a GitHub workflow, Zuul's
        return jobs.write_ci(m, args.target, out, _show)
    p = _built(plan.build(m, resolve(m, args.backend), state=out))
    files = runtime.render(p)
    if not args.no_check:
        for note in runtime.try_rendered(p, files):
            _say(f"wsgistack: not loaded before writing: {note}")
    access.layout(p)  # the directories the commands log, listen and keep data in
    runtime.metrics_dirs(p)  # the workers' counts, and uWSGI's stats socket
    access.write_rendered(p, files)  # as under the state dir: entries hold env values
    script = out / "commands.sh"
    access.make_file(p, str(script), 0o700, text=runtime.commands_sh(p))
    for item in runtime.still_to_make(p):
        _say(f"wsgistack: `up` would still make {item}")
    for rel in sorted(files):
        _show(str(out / rel))
    _show(str(script))
    return 0


def _render_kubernetes(m: manifest.Manifest, backend: Backend, args: argparse.Namespace,
                       out: Path) -> int:
    from wsgistack.targets import kubernetes, kubernetes_build

    image = args.image
    kubernetes.check_backend(backend.ID)
    if not image:
        raise WsgistackError("render --target kubernetes needs --image IMAGE: the image that "
                             "holds the apps and their server (README, Kubernetes)")
    # The pods' users are the image's: nothing of this machine goes into the manifests.
    host = Host(root=False, user=kubernetes.APP_USER, group=kubernetes.APP_USER,
                home="/nonexistent", environ={"PATH": DEFAULT_PATH, "LANG": "C.UTF-8"})
    with tempfile.TemporaryDirectory() as scratch:  # made-up secrets, never written out
        p = _built(plan.build(m, backend, host=host,
                              target=kubernetes.target(m.stack.name, scratch)))
        build = kubernetes_build.read_build(p, backend.ID, args.base_image, args.wheels)
        files = kubernetes.render(p, backend, image, kubernetes.read_templates(p), build)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in sorted(files.items()):
        (out / name).write_text(text, encoding="utf-8")  # no secret in any: checked
        _show(str(out / name))
    return 0


def _pairs(items: Sequence[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise WsgistackError(f"{flag} {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


def cmd_entry(args: argparse.Namespace) -> int:
    spec = entry.EntrySpec(
        app=args.spec, name=args.name or Path(args.output).stem, env=_pairs(args.env, "--env"),
        args=args.arg, python_path=[str(Path(p).absolute()) for p in args.python_path],
        mount=args.prefix.rstrip("/"),
        # Where the spec was named: a module or script beside it loads from any directory.
        working_dir=str(Path.cwd()),
    )
    if args.no_check:
        Path(args.output).write_text(entry.render(spec), encoding="utf-8")
    else:
        entry.write_checked(spec, Path(args.output))
    _say(f"wrote {args.output}: import it for `application`, or run "
         f"`python {args.output} --host 127.0.0.1 --port 8000`")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    m = _load(args)
    names = {s.name for s in m.services}
    if args.target in names:
        svc = m.service(args.target)
    else:
        svc = manifest.ServiceConfig(name="app", app=args.target, prefix="")
    svc = dataclasses.replace(
        svc, port=args.port or svc.port,
        prefix=svc.prefix if args.prefix is None else args.prefix.rstrip("/"),
        args=tuple(args.app_args) or svc.args,
    )
    state = Path(m.state_path, "serve", svc.name)
    needed = tuple(check.with_needs(m, svc.name)[:-1]) if svc.name in names else ()
    single = dataclasses.replace(m, services=(*needed, svc))
    p = _built(plan.build(single, resolve(m, args.backend), state=state, whole=m))
    running = runtime.up(p, lambda msg: _say(f"  {msg}"), after_up=False)
    _show(catalog_table(p, running))
    code = runtime.wait_foreground(running, lambda msg: _say(f"  {msg}"))
    runtime.stop_stack(p.state, running)
    return code


def cmd_check(args: argparse.Namespace) -> int:
    # Not _load: --base-port moves the check's own ports only. The stack's other services
    # stay where its own `up` puts them (a checked service's `${services.keystone.url}`):
    # moved too, they fell on the check's ports, and Nova's metadata API, checked alone
    # under granian, called itself for Keystone and hung its one worker.
    m = manifest.find(args.file, Path.cwd())
    _plan(args, m)  # the manifest's secrets are masked in what the checks print
    paths = [check.PathCheck.parse(text) for text in args.path]
    results, skipped = check.run(m, args.service, check.select(args.backends),
                                 lambda msg: _say(f"  {msg}"), paths, args.strict,
                                 args.base_port or 0)
    rows = check.checks(paths, args.strict)
    differ = check.diverging(results, rows)
    if args.format == "json":
        _show(json.dumps({"service": args.service, "backends": list(results),
                          "rows": check.matrix(results, rows), "skipped": skipped,
                          "diverging": differ}, indent=1))
        return 1 if differ or skipped else 0
    if results:
        _show(check.text(check.matrix(results, rows)))
    for backend, why in skipped.items():
        _show(f"{backend}: could not run: {why}")
    if differ:
        _say(f"backends diverge on: {', '.join(differ)}")
    elif results:
        _say(f"all {len(results)} backends agree on {args.service}")
    return 1 if differ or skipped else 0


def cmd_audit(args: argparse.Namespace) -> int:
    from wsgistack import audit
    from wsgistack.audit import git, report

    paths = [*args.paths, *(audit.read_list(args.list) if args.list else [])]
    if not paths:
        raise WsgistackError("audit: name at least one source tree, or --list FILE")
    if args.at:
        date = git.parse_date(args.at)
        audits = [audit.audit_at(p, date) for p in paths]
        for a in audits:
            _say(f"{a.path}: read {a.revision}, the last commit before {date}")
    else:
        audits = [audit.audit_tree(p) for p in paths]
    _write_out(args.output, report.FORMATS[args.format](audits), f"{len(audits)} project(s)")
    return 0


def _write_out(output: str | None, text: str, what: str) -> None:
    if output:
        Path(output).write_text(text, encoding="utf-8")
        _say(f"wrote {output} ({what})")
    else:
        sys.stdout.write(text)


def cmd_goal(args: argparse.Namespace) -> int:
    from wsgistack import audit, goal
    from wsgistack.audit import git
    from wsgistack.goal import document, page, projects

    doc = document.read(args.document)
    paths = [*args.trees, *(audit.read_list(args.list) if args.list else [])]
    teams = goal.read_teams(args.teams) if args.teams else None
    owners = projects.read(args.projects) if args.projects else None
    if args.since_history and not args.at:
        raise WsgistackError("goal: --since-history reads history from the --at date on; "
                             "add --at YYYY-MM-DD")
    date = git.parse_date(args.at) if args.at else ""
    audits, problems = [], []
    for path in paths:  # a tree that cannot be read is one line; the page is still made
        try:
            audits.append(audit.audit_at(path, date) if date else audit.audit_tree(path))
        except audit.AuditError as exc:
            problems.append(f"{exc}; left out of the page")
        else:
            if date:
                _say(f"{path}: read {audits[-1].revision}, the last commit before {date}")
    since = goal.entry_since if args.since_history else None
    rows = goal.rows(doc, audits, teams, owners, since)
    problems += goal.assign(doc, audits, teams, owners)[1]
    problems += goal.unmatched(doc, audits, teams)
    for problem in problems:
        _say(f"wsgistack: warning: {problem}")
    flagged = sum(1 for r in rows if r.flags)
    _write_out(args.output, page.FORMATS[args.format](doc, rows, problems),
               f"{len(rows)} teams, {len(audits)} trees, {flagged} flagged")
    return 1 if problems else 0


def cmd_test(args: argparse.Namespace) -> int:
    m = _load(args)
    job = jobs.make(m, args.command, args.backends, args.timeout, args.artifacts, args.keep)
    _plan(args, m)  # the manifest's secrets masked, its warnings said, once
    outcomes = jobs.run(job, lambda o, i: _say(jobs.progress_line(o, i, len(job.backends))))
    _show(jobs.matrix(outcomes, job.artifacts))
    if args.junit:
        _write_out(args.junit, jobs.junit(outcomes, f"wsgistack.{m.stack.name}"), "JUnit")
    return jobs.exit_code(outcomes)


def cmd_env(args: argparse.Namespace) -> int:
    m = _load(args)
    state = _state(m)
    if state is None:
        raise WsgistackError(f"stack '{m.stack.name}' is not up: `wsgistack up -d` first")
    args.backend = state.backend  # as `up` was run
    p = _plan(args, _with_base_port(m, state.base_port))
    _show(jobs.formatted(jobs.stack_env(p), args.format))
    return 0


def cmd_install(args: argparse.Namespace) -> int:
    from wsgistack.targets import install

    m = _load(args)
    backend = resolve(m, args.backend).ID
    under = str(Path(args.root).absolute()) if args.root else ""
    layout = install.install(m, backend, lambda msg: _say(f"  {msg}"), port=args.port,
                             tls_port=args.tls_port, under=under, dry_run=args.dry_run)
    if args.dry_run:
        found = install.changes(layout)
        for what, path in found:
            _show(f"{what} {path}")
        if layout.site is not None:
            _show(f"enable {layout.site_link}")
        for unit in (*layout.units, layout.target):
            _show(f"enable {unit}")
        _say(f"dry run: {len(found)} file(s) would change; nothing was written")
        return 0
    for f in layout.files:
        if f.text is not None:
            _show((under or "") + f.path)
    where = f"under {under}" if under else "on this host"
    _say(f"installed stack '{m.stack.name}' ({backend}) {where}: {len(layout.files)} paths")
    return 0


def cmd_uninstall(args: argparse.Namespace) -> int:
    from wsgistack.targets import install

    name = args.name or _load(args).stack.name
    install.uninstall(name, lambda msg: _say(f"  {msg}"), purge=args.purge,
                      under=str(Path(args.root).absolute()) if args.root else "")
    return 0


def _cluster(args: argparse.Namespace) -> tuple[plan.Plan, Any, Any]:
    from wsgistack.targets import cluster

    m = _load(args)
    config = cluster.cluster_of(m)
    return _built(plan.build(m, resolve(m))), config, cluster.balancer(m)


def cmd_cluster(args: argparse.Namespace) -> int:
    from wsgistack.targets import cluster

    p, config, where = _cluster(args)
    if args.action == "up":
        cluster.up(p, config, where, lambda msg: _say(f"  {msg}"))
        return 0
    if args.action == "down":
        _say("stopped the balancer" if cluster.down(where) else "the balancer is not up")
        return 0
    view = _balancer_view(config, where)
    if view is None:
        _say(f"the balancer of stack '{p.name}' is not up")
        return EXIT_NOT_UP
    if args.json:
        _show(json.dumps(view, indent=1))
        return _balanced(view)
    return _show_balancer(view)


def cmd_roll(args: argparse.Namespace) -> int:
    from wsgistack.targets import cluster

    p, config, where = _cluster(args)
    t0 = time.monotonic()
    done = cluster.roll(p, config, where, lambda msg: _say(f"  {msg}"), args.max_unavailable)
    _say(f"rolled {len(done)} node(s) in {time.monotonic() - t0:.1f}s")
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from wsgistack.lifecycle import stacks

    found = stacks.up_on_this_machine()
    if args.json:
        _show(json.dumps([{"state_dir": f.state_dir, "stack": f.state and f.state.stack,
                           "manifest": f.state and (f.state.manifest_id or f.state.manifest),
                           "services": [s.name for s in f.state.services] if f.state else [],
                           "health": f.health()} for f in found], indent=1))
        return 0
    if not found:
        _say("no stack is up on this machine (that this user can see)")
        return 0
    _show(table([(f.state.stack if f.state else "?",
                  (f.state.manifest_id or f.state.manifest) if f.state else "?", f.state_dir,
                  ",".join(s.name for s in f.state.services) if f.state else "", f.health())
                 for f in found], ("stack", "manifest", "state", "services", "health")))
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    from wsgistack.lifecycle import stacks

    m = _load(args)
    freed = stacks.clean(_plan(args, m), m.state_path, _say)
    _say(f"freed {freed / 2**20:.1f} MiB in {m.state_path}")
    return 0


def cmd_venv(args: argparse.Namespace) -> int:
    from wsgistack.lifecycle import stacks

    m = _load(args)
    _state(m)
    for name in args.services:
        m.service(name)  # an unknown name: one line, with "did you mean"
    done = stacks.rebuild_venvs(_plan(args, m), args.services, lambda msg: _say(f"  {msg}"))
    _say(f"rebuilt {len(done)} venv(s)" + (f": {', '.join(done)}" if done else
                                           " (no service has one of its own)"))
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from wsgistack import scaffold

    target = Path(args.file or manifest.MANIFEST_NAME)
    found = scaffold.write(Path.cwd(), target, args.app)
    _say(f"wrote {target} for {found}; read it, then `wsgistack up`")
    return 0


def cmd_completion(args: argparse.Namespace) -> int:
    from wsgistack import completion

    print(getattr(completion, args.shell)(parser()), end="")
    return 0


def cmd_settings(_args: argparse.Namespace) -> int:
    print(manifest.settings_reference())
    return 0


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: a number from 1 to 65535")
    return int(text)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="wsgistack", description="Deploy Python API services as WSGI applications.")
    top.add_argument("-f", "--file", help="manifest (default: ./wsgistack.toml, else the "
                     "embedded example stack)")
    top.add_argument("-v", "--verbose", action="store_true",
                     help="on an error, also print what lies behind it (an app's traceback)")
    top.add_argument("--version", action="version", version=f"wsgistack {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Callable[[argparse.Namespace], int], text: str,
            backend: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text)
        p.set_defaults(handler=handler)
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                       help="on an error, also print what lies behind it")
        if backend:
            p.add_argument("--backend", choices=sorted(BACKENDS),
                           help="server backend (default: the manifest's [stack] backend)")
        return p

    p = add("up", cmd_up, "bring the stack up, health-checked, and print its catalog", True)
    p.add_argument("-d", "--detach", action="store_true", help="leave it running and return")
    p.add_argument("--base-port", type=_port, help="override [stack] base_port")
    p = add("reload", cmd_reload, "re-render and have every server replace its workers "
            "gracefully, in place (same processes, ports and prefixes)", True)
    p.add_argument("--base-port", type=_port, help="default: the one `up` used")
    add("down", cmd_down, "stop every process of the stack")
    p = add("status", cmd_status, "show each service's process and health")
    p.add_argument("--json", action="store_true", help="per service: URL, health and each "
                   "process (name, pid, role, state, user), as JSON")
    p = add("logs", cmd_logs, "show a service's (or server process's) log")
    p.add_argument("name")
    p.add_argument("-n", "--lines", type=int, default=50)
    p.add_argument("-f", "--follow", action="store_true",
                   help="then print what is appended, across rotation, until Ctrl-C")
    p.add_argument("--since", metavar="WHEN", help="lines from then on: 30s, 5m, 2h, 1d or "
                   "an ISO time (a line without a time goes with the one before)")
    show = p.add_mutually_exclusive_group()
    show.add_argument("--access", action="store_true", help="the service's access log")
    show.add_argument("--errors", action="store_true",
                      help="only lines that report an error (with a traceback's lines)")
    p = add("test", cmd_test, "run the project's tests against its stack on each backend (a "
            "stack of its own); exit 1: a command failed, 2: a stack did not come up")
    jobs.arguments(p)
    p = add("env", cmd_env, "the running stack's environment: eval \"$(wsgistack env)\"")
    p.add_argument("--format", choices=["shell", "json"], default="shell")
    p = add("render", cmd_render, "write the files a server would use, start nothing", True)
    p.add_argument("-o", "--output", required=True, help="directory to write into")
    p.add_argument("--target", choices=["local", "kubernetes", *jobs.CI_TARGETS],
                   default="local", help="kubernetes: Deployments, Services, Jobs, routes "
                   "and a kustomization for `kubectl apply -k` (granian, gunicorn or uwsgi); "
                   "github-actions (-o FILE), zuul: CI jobs that run `wsgistack test`")
    p.add_argument("--image", help="with --target kubernetes: the image the pods run")
    p.add_argument("--base-image", default="", help="with --target kubernetes: the "
                   "Containerfile's FROM (default: the official python:3.11-slim)")
    p.add_argument("--wheels", default="", metavar="DIR", help="with --target kubernetes: "
                   "the image installs from the wheels in DIR (under the manifest's directory) "
                   "and not from an index (pip wheel -w DIR -r image-requirements.txt)")
    p.add_argument("--no-check", action="store_true",
                   help="write without loading each app first, in a throwaway process")
    p = add("entry", cmd_entry, "write a server-agnostic WSGI entry file for an app spec")
    p.add_argument("spec", help="pkg.mod:app, pkg.mod:factory(), paste:FILE#name, FILE.wsgi, "
                   "ep:GROUP:NAME")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--name", help="argv[0] the app sees (default: the file's stem)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--arg", action="append", default=[], help="an argument for the app's argv")
    p.add_argument("--python-path", action="append", default=[])
    p.add_argument("--prefix", default="", help="mount the app under this prefix")
    p.add_argument("--no-check", action="store_true",
                   help="write it without loading the app first (in this interpreter)")
    p = add("serve", cmd_serve, "serve one service or app spec in the foreground", True)
    p.add_argument("target", help="a service of the manifest, or an app spec")
    p.add_argument("--port", type=_port, default=0)
    p.add_argument("--prefix", default=None)
    p.add_argument("app_args", nargs="*", help="after --: the app's own arguments")
    p = add("check", cmd_check, "run one service under each backend and compare, side by side")
    p.add_argument("service")
    p.add_argument("--backends", default="all", help="'all' or a comma-separated list")
    p.add_argument("--path", action="append", default=[],
                   metavar="'METHOD /PATH [@FILE] [-H \"Name: value\"]...'",
                   help="a request of your own, compared too (repeatable; @FILE: its body, "
                   "its Content-Type from the file's extension unless -H gives one)")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("--strict", action="store_true",
                   help="put wsgiref's PEP 3333 validator in front of the app, as a row")
    p.add_argument("--base-port", type=_port,
                   help=f"ports to use (default: the manifest's base_port + "
                        f"{check.CHECK_PORT_OFFSET})")
    p = add("audit", cmd_audit, "review source trees: can each project's API be deployed via "
            "WSGI, and what blocks it (static reading, no import)")
    p.add_argument("paths", nargs="*", metavar="DIR", help="source trees (checkouts, sdists)")
    p.add_argument("--list", help="a file naming one tree per line")
    p.add_argument("--at", metavar="YYYY-MM-DD", help="read git repositories as their default "
                   "branch was before that day (first-parent; work tree and HEAD untouched)")
    p.add_argument("--format", choices=["text", "md", "json", "html"], default="text")
    p.add_argument("-o", "--output", help="write the report here instead of stdout")
    p = add("install", cmd_install, "put the stack on this host: system Apache or nginx "
            "site, one systemd unit per service, /etc, /var/lib and /var/log, logrotate; "
            "checked before anything is enabled", True)
    p.add_argument("--root", metavar="DIR", help="write the same tree under DIR and touch "
                   "nothing else (for packages and images)")
    p.add_argument("--dry-run", action="store_true", help="list what would change")
    p.add_argument("--port", type=_port, default=0, help="the front door's port (default 80); "
                   "without a front end, the first service's (default: [stack] base_port)")
    p.add_argument("--tls-port", type=_port, default=443, help="with [stack.tls]: the HTTPS "
                   "port (default 443)")
    p = add("uninstall", cmd_uninstall, "remove what `install` wrote; keep data and logs "
            "unless --purge")
    p.add_argument("--purge", action="store_true", help="also remove data and logs")
    p.add_argument("--name", help="the installed stack (default: the manifest's name)")
    p.add_argument("--root", metavar="DIR", help="remove a tree `install --root DIR` wrote")
    p = add("cluster", cmd_cluster, "HAProxy in front of the [cluster] nodes: start it, "
            "stop it, or show each node's state per service as HAProxy sees it")
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument("--json", action="store_true", help="status as JSON")
    p = add("roll", cmd_roll, "reload or upgrade the [cluster] nodes one at a time: drain "
            "through HAProxy, run the node's command, wait until healthy, put it back; stop "
            "at the first node that fails")
    p.add_argument("--max-unavailable", type=int, default=0,
                   help="nodes out at once (default: [cluster] max_unavailable, 1)")
    p = add("goal", cmd_goal, "a community goal's status page: its document (governance "
            "format) and the audit of the teams' trees, side by side, disagreements flagged")
    p.add_argument("document", help="the goal document (RST)")
    p.add_argument("--trees", nargs="*", default=[], metavar="DIR",
                   help="the teams' source trees (matched to teams by name, or --teams)")
    p.add_argument("--list", help="a file naming one tree per line")
    p.add_argument("--teams", help="TOML: team = [\"repository\", ...] (default: by name)")
    p.add_argument("--projects", metavar="PROJECTS.YAML", help="governance's "
                   "reference/projects.yaml: a tree belongs to the team whose deliverables "
                   "list its repository (by directory, git remote or package name)")
    p.add_argument("--at", metavar="YYYY-MM-DD", help="read the trees (git repositories) as "
                   "their default branch was before that day; work trees untouched")
    p.add_argument("--since-history", action="store_true", help="with --at: for a team "
                   "listed as done whose code then had no WSGI entry, the commit that added "
                   "the entry its branch has today")
    p.add_argument("--format", choices=["text", "md", "rst", "html", "json"], default="text")
    p.add_argument("-o", "--output", help="write the page here instead of stdout")
    p = add("ls", cmd_ls, "list the stacks up on this machine (that this user can see): "
            "name, manifest, state dir, services, health")
    p.add_argument("--json", action="store_true")
    add("clean", cmd_clean, "remove the venvs no service of the manifest uses and the check "
        "and serve stacks with nothing running; say how much space it freed")
    p = add("venv", cmd_venv, "make services' own venvs again from their requirements "
            "(the stack must be down)")
    p.add_argument("action", choices=["rebuild"])
    p.add_argument("services", nargs="*", metavar="SERVICE", help="default: every service")
    p = add("init", cmd_init, "write a commented manifest (wsgistack.toml, or -f FILE) for "
            "the app in this directory")
    p.add_argument("--app", help="the app spec, when it is not found by reading the files")
    p = add("completion", cmd_completion, "print a shell completion script: "
            "eval \"$(wsgistack completion bash)\"")
    p.add_argument("shell", choices=["bash", "zsh"])
    add("settings", cmd_settings, "print the manifest settings reference (Markdown)")
    return top


def run(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    secrets.forget()
    try:
        code: int = args.handler(args)
    except WsgistackError as exc:
        if args.verbose and exc.detail:
            _say(exc.detail)
        _say(f"wsgistack: error: {exc}")
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130
    return code


def main() -> int:
    return run()
