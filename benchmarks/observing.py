"""What seeing every request costs: hello world with the access log and metrics on (the
default) against both off, per backend, both stacks up at once and rounds alternating.

`python -m benchmarks.observing [--backends B,B] [--rounds N] [--duration S]` runs this
part alone; `python -m benchmarks` runs it with the rest.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from contextlib import ExitStack
from pathlib import Path

from benchmarks import servers, wrk

SIDES = {"on": "", "off": 'access_log = "off"\nmetrics = "off"\n'}


def measure(args: argparse.Namespace, work: Path, backends: list[str]) -> list[list[str]]:
    rows = []
    for backend in backends:
        with ExitStack() as stack:
            up = {side: stack.enter_context(servers.wsgistack_stack(
                work / f"obs-{backend}-{side}", backend, {"hello": servers.HELLO},
                args.processes, args.threads, extra)) for side, extra in SIDES.items()}
            runs: dict[str, list[float]] = {side: [] for side in up}
            for n in range(args.rounds + 1):  # the first round warms up, unmeasured
                for side, target in up.items():
                    res = wrk.run(target.urls["hello"] + "/", args.duration, args.connections)
                    if n:
                        runs[side].append(res.rps)
        on, off = statistics.median(runs["on"]), statistics.median(runs["off"])
        rows.append([backend, f"{on:,.0f}", f"{off:,.0f}", f"{on / off:.3f}",
                     " / ".join(f"{x:,.0f}" for x in runs["on"]) + " vs "
                     + " / ".join(f"{x:,.0f}" for x in runs["off"])])
        print(f"  observing {backend}: {rows[-1]}", flush=True)
    return rows


def section(rows: list[list[str]]) -> list[str]:
    if not rows:
        return []
    head = ["backend", "log + metrics on", "both off", "ratio", "rounds"]
    return ["## What seeing every request costs (hello world, req/s, medians)", "",
            "The default (an access line per request, prometheus_client's multiprocess "
            "counters and histograms) against `access_log = \"off\"` and `metrics = \"off\"`.",
            "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head),
            *("| " + " | ".join(r) + " |" for r in rows), ""]


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.observing", description=__doc__)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backends", default="granian,gunicorn,uwsgi,mod_wsgi,apache+uwsgi,"
                    "nginx+uwsgi")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="wsgistack-bench-", dir="/tmp") as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        rows = measure(args, work, [b for b in args.backends.split(",") if b])
    print("\n".join(section(rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
