"""The benchmark's Markdown table and bar chart."""

from __future__ import annotations

from pathlib import Path


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head),
            *("| " + " | ".join(r) + " |" for r in rows), ""]


def markdown(context: str, ab: list[list[str]], workload_names: list[str],
             table: list[list[str]], memory: list[list[str]], base: list[list[str]],
             ups: list[list[str]], layers: list[tuple[str, float]],
             real: list[list[str]], fronts: list[list[str]],
             reloads: list[list[str]] | None = None) -> str:
    lines = ["# wsgistack benchmarks", "", f"Run: {context}.", "",
             "## wsgistack vs the same server by hand (hello world, req/s, medians)", ""]
    lines += _table(["backend", "wsgistack", "by hand", "ratio", "rounds"], ab)
    lines += ["## What each of the entry's layers adds, in-process (hello world, ns a request)",
              "", "Without the network, one interpreter: the first row is the app alone, each "
              "other row what a layer adds to it (benchmarks/overhead.py).", ""]
    lines += _table(["layer", "ns"], [[what, f"{ns:,.0f}"] for what, ns in layers])
    lines += ["## Workloads under each backend (deployed by wsgistack, req/s)", ""]
    lines += _table(["backend", *workload_names], table)
    lines += ["`err`: socket errors as wrk counts them (wrk counts a connection the server "
              "ends as a read error).", ""]
    if fronts:
        lines += ["## Front doors against uWSGI alone (same app and workers, req/s, medians)",
                  ""]
        lines += _table(["workload", "front door", "through it", "uWSGI alone", "ratio",
                         "rounds"], fronts)
    lines += ["## Peak RSS per process group after the workloads (MiB)", ""]
    lines += _table(["backend", "service or front end: MiB"], memory)
    lines += ["## The embedded default against the baselines (hello world, req/s, medians)", ""]
    lines += _table(["server", "req/s", "embedded default / this"], base)
    lines += ["## `up` to all healthy, and `down` (granian, 1 process per service, seconds)", ""]
    lines += _table(["services", "up", "down", "up vs 1 service"], ups)
    if reloads:
        lines += ["## `reload` of an idle stack like the example (3 services x 2 processes, "
                  "seconds, medians)", ""]
        lines += _table(["backend", "reload", "rounds"], reloads)
    if real:
        lines += ["## examples/openstack under each backend (req/s)", ""]
        lines += _table(["backend", "Placement GET /", "Keystone token validation", "wrk"], real)
    return "\n".join(lines)


def chart(path: Path, ab: list[list[str]], base: list[list[str]]) -> Path | None:
    """A bar chart of the A/B and the baselines; None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None

    def num(text: str) -> float:
        return float(text.replace(",", "")) if text not in ("-", "") else 0.0

    measured = [r for r in ab if r[1] != "-"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    xs = range(len(measured))
    left.bar([x - 0.2 for x in xs], [num(r[1]) for r in measured], 0.4, label="wsgistack")
    left.bar([x + 0.2 for x in xs], [num(r[2]) for r in measured], 0.4, label="by hand")
    left.set_xticks(list(xs), [r[0] for r in measured])
    left.set_title("hello world: wsgistack vs by hand (req/s)")
    left.legend()
    right.bar([r[0] for r in base], [num(r[1]) for r in base], color="gray")
    right.set_title("embedded default vs baselines (req/s)")
    right.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
