"""`python -m benchmarks`: what wsgistack costs and what each backend gives, in one run.

Every comparison is made inside this run, alternating the two sides round by round, and
reported as medians and ratios: these machines are shared and noisy, absolute figures
from different runs do not compare.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from benchmarks import openstack, overhead, report, servers, wrk
from wsgistack.backends import BACKENDS
from wsgistack.lifecycle.preflight import free_ports

AB_BACKENDS = ("granian", "gunicorn", "uwsgi", "mod_wsgi")
QUIET = 'access_log = "off"\nmetrics = "off"\n'
MIB = 1024 * 1024


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run")
    ap.add_argument("--rounds", type=int, default=3, help="alternations per A/B comparison")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results.md")
    ap.add_argument("--openstack", action="store_true",
                    help="also Placement GET / and Keystone token validation, from "
                    "examples/openstack (the first run installs it: about 25 s)")
    return ap.parse_args(argv)


def alternate(sides: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Run each side once per round, in turn, after one unmeasured warm-up each."""
    for fn in sides.values():
        fn()
    runs: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, fn in sides.items():
            runs[name].append(fn())
    return runs


def rps(url: str, args: argparse.Namespace, upload: int = 0) -> Callable[[], float]:
    def measure() -> float:
        res = wrk.run(url, args.duration, args.connections, upload=upload)
        if res.errors:
            print(f"    {url}: {res.errors} errors")
        return res.rps
    return measure


# A second by-hand side, for the record: (its hand_command name, the row's label).
VARIANTS = {
    # One request per connection: what uWSGI gives without its router.
    "uwsgi": ("uwsgi http-socket", "uwsgi (by hand: http-socket)"),
    # Like for like: granian writing an access line of its own at every request.
    "granian": ("granian access-log", "granian (by hand: with its own --access-log)"),
}


def ab_hello(args: argparse.Namespace, work: Path, backends: list[str]) -> list[list[str]]:
    """wsgistack-deployed vs the same server by hand, same app, processes and threads."""
    rows = []
    for backend in [b for b in AB_BACKENDS if b in backends]:
        port = free_ports()
        argv = servers.hand_command(backend, port, args.processes, args.threads,
                                    work / f"hand-{backend}")
        if argv is None:
            rows.append([backend, "-", "-", "-", "by-hand command not installed"])
            continue
        with ExitStack() as stack:
            ours = stack.enter_context(servers.wsgistack_stack(
                work / f"ab-{backend}", backend, {"hello": servers.HELLO}, args.processes,
                args.threads))
            hand = stack.enter_context(servers.by_hand(backend, argv, port,
                                                       work / f"hand-{backend}"))
            # The same stack without its access lines and metrics: what the entry's other
            # layers cost, apart from those two features (on by default).
            quiet = stack.enter_context(servers.wsgistack_stack(
                work / f"ab-quiet-{backend}", backend, {"hello": servers.HELLO},
                args.processes, args.threads, QUIET))
            sides = {"wsgistack": rps(ours.urls["hello"] + "/", args),
                     "by hand": rps(hand.url + "/", args),
                     "quiet": rps(quiet.urls["hello"] + "/", args)}
            variant = VARIANTS.get(backend)
            if variant:
                other = free_ports()
                extra = stack.enter_context(servers.by_hand(
                    variant[0], servers.hand_command(
                        variant[0], other, args.processes, args.threads,
                        work / f"hand-{variant[0]}") or [], other, work / f"hand-{variant[0]}"))
                sides["variant"] = rps(extra.url + "/", args)
            runs = alternate(sides, args.rounds)
        for ours_side, side, label in (
                ("wsgistack", "by hand", backend),
                ("quiet", "by hand", f"{backend}, access log and metrics off"),
                ("wsgistack", "variant", (variant or ("", ""))[1])):
            if side not in runs:
                continue
            a, b = statistics.median(runs[ours_side]), statistics.median(runs[side])
            rows.append([label, f"{a:,.0f}", f"{b:,.0f}", f"{a / b:.3f}",
                         " / ".join(f"{x:,.0f}" for x in runs[ours_side]) + " vs "
                         + " / ".join(f"{x:,.0f}" for x in runs[side])])
            print(f"  A/B {label}: {rows[-1]}", flush=True)
    return rows


EXAMPLE = {"catalog": "wsgistack.apps.catalog:application", "probe": servers.PROBE,
           "hello": servers.HELLO}


def reload_times(work: Path, backends: list[str], rounds: int) -> list[list[str]]:
    """`wsgistack reload` of an idle stack like the example (catalog, probe, hello; 2
    processes each), from command to done: every old worker gone, every service healthy."""
    rows = []
    for backend in backends:
        with servers.wsgistack_stack(work / f"reload-{backend}", backend, EXAMPLE, 2, 1):
            took = []
            for _ in range(rounds):
                started = time.perf_counter()
                res = servers.wsgistack_cli("reload", cwd=work / f"reload-{backend}")
                took.append(time.perf_counter() - started)
                if res.returncode:
                    raise RuntimeError(f"reload ({backend}) failed: {res.stderr.strip()}")
        rows.append([backend, f"{statistics.median(took):.2f}",
                     " / ".join(f"{t:.2f}" for t in took)])
        print(f"  reload {backend}: {rows[-1]}", flush=True)
    return rows


WORKLOADS = (
    ("hello world", "hello", "/", 0),
    ("probe echo", "probe", "/echo", 0),
    ("1 MiB streamed", "probe", f"/stream?bytes={MIB}", 0),
    ("5 MiB upload", "probe", "/upload", 5 * MIB),
)


def workloads(args: argparse.Namespace, work: Path,
              backends: list[str]) -> tuple[list[list[str]], list[list[str]]]:
    """Every workload under every backend, and each service's peak RSS after them."""
    table, memory = [], []
    for backend in backends:
        apps = {"hello": servers.HELLO, "probe": servers.PROBE}
        with servers.wsgistack_stack(work / f"wl-{backend}", backend, apps, args.processes,
                                     args.threads) as stack:
            row = [backend]
            for _label, service, path, upload in WORKLOADS:
                res = wrk.run(stack.urls[service] + path, args.duration, args.connections,
                              upload=upload)
                row.append(f"{res.rps:,.0f}" + (f" ({res.errors} err)" if res.errors else ""))
            table.append(row)
            memory.append([backend, ", ".join(
                f"{name} {servers.peak_rss_mib((pid,)):.0f}" for name, pid in stack.procs.items())])
        print(f"  workloads {backend}: {row}", flush=True)
    return table, memory


FRONT_DOORS = ("apache+uwsgi", "nginx+uwsgi")
HEAVY = [w for w in WORKLOADS if w[0] in ("1 MiB streamed", "5 MiB upload")]


def front_doors(args: argparse.Namespace, work: Path,
                backends: list[str]) -> list[list[str]]:
    """Streaming and uploads through each front end against the same uWSGI alone: same
    app, processes and threads; every stack up at once, rounds alternating between them."""
    fronts = [b for b in FRONT_DOORS if b in backends]
    if not fronts:
        return []
    rows = []
    with ExitStack() as stack:
        up = {b: stack.enter_context(servers.wsgistack_stack(
            work / f"fd-{b}", b, {"probe": servers.PROBE}, args.processes, args.threads))
            for b in ("uwsgi", *fronts)}
        for label, _service, path, upload in HEAVY:
            runs = alternate({b: rps(s.urls["probe"] + path, args, upload)
                              for b, s in up.items()}, args.rounds)
            alone = statistics.median(runs["uwsgi"])
            for b in fronts:
                med = statistics.median(runs[b])
                rows.append([label, b, f"{med:,.0f}", f"{alone:,.0f}", f"{med / alone:.2f}",
                             " / ".join(f"{x:,.0f}" for x in runs[b]) + " vs "
                             + " / ".join(f"{x:,.0f}" for x in runs["uwsgi"])])
                print(f"  front door {label}: {rows[-1]}", flush=True)
    return rows


def baselines(args: argparse.Namespace, work: Path) -> list[list[str]]:
    """The embedded default against wsgiref (the plain Python command) and nginx's
    `return 200` (no Python at all: the machine's HTTP ceiling)."""
    p1, p2 = free_ports(), free_ports()
    with ExitStack() as stack:
        ours = stack.enter_context(servers.wsgistack_stack(
            work / "embedded", "granian", {"hello": servers.HELLO}, 2, 1))
        ref = stack.enter_context(servers.by_hand("wsgiref", servers.wsgiref_command(p1), p1,
                                                  work / "wsgiref"))
        ngx = stack.enter_context(servers.by_hand(
            "nginx", servers.nginx_return_200(p2, work / "nginx"), p2, work / "nginx"))
        runs = alternate({"embedded default (granian)": rps(ours.urls["hello"] + "/", args),
                          "wsgiref": rps(ref.url + "/", args),
                          "nginx return 200": rps(ngx.url + "/", args)}, args.rounds)
    med = {k: statistics.median(v) for k, v in runs.items()}
    base = med["embedded default (granian)"]
    return [[k, f"{v:,.0f}", f"{base / v:.2f}"] for k, v in med.items()]


def up_times(work: Path, rounds: int) -> list[list[str]]:
    """`up` from command to all healthy, and `down`, for 1, 4 and 16 embedded services."""
    rows = []
    for count in (1, 4, 16):
        ups, downs = [], []
        for i in range(rounds):
            services = {f"s{n}": servers.HELLO for n in range(count)}
            with servers.wsgistack_stack(work / f"up-{count}-{i}", "granian", services, 1,
                                         1) as stack:
                ups.append(stack.up_seconds)
                started = time.perf_counter()
            downs.append(time.perf_counter() - started)
        rows.append([str(count), f"{statistics.median(ups):.2f}",
                     f"{statistics.median(downs):.2f}"])
        print(f"  up/down {count}: {rows[-1]}", flush=True)
    one = float(rows[0][1])
    for row in rows:
        row.append(f"{float(row[1]) / one:.1f}x")
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="wsgistack-bench-", dir="/tmp") as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        layers = overhead.measure()
        for what, ns in layers:
            print(f"  in-process: {what}: {ns:.0f} ns", flush=True)
        print("A/B: wsgistack vs by hand (hello world)", flush=True)
        ab = ab_hello(args, work, backends)
        print("workloads per backend", flush=True)
        table, memory = workloads(args, work, backends)
        print("front doors against uWSGI alone", flush=True)
        fronts = front_doors(args, work, backends)
        print("baselines", flush=True)
        base = baselines(args, work)
        print("up and down", flush=True)
        ups = up_times(work, max(1, args.rounds - 1))
        print("reload", flush=True)
        reloads = reload_times(work, backends, args.rounds)
        real = []
        if args.openstack:
            print("examples/openstack", flush=True)
            real = openstack.run(args.duration, args.connections, backends)
    context = (f"{platform.node()}, {platform.machine()}, Linux {platform.release()}; "
               f"wrk -t2 -c{args.connections} -d{args.duration:g}s; "
               f"{args.processes} process(es) x {args.threads} thread(s); "
               f"{args.rounds} rounds; run took {time.perf_counter() - started:.0f}s; "
               # Other work on the machine moves the figures more than anything measured.
               f"load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the "
               "end")
    text = report.markdown(context, ab, [w[0] for w in WORKLOADS], table, memory, base, ups,
                           layers, real, fronts, reloads)
    args.out.write_text(text)
    png = report.chart(args.out.with_suffix(".png"), ab, base)
    print(text)
    print(f"written: {args.out}" + (f", {png}" if png else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
