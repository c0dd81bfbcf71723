"""What `wsgistack test` prints: a progress line per backend as each finishes, then the
matrix, with what went wrong under each backend that did not pass."""

from __future__ import annotations

from pathlib import Path

from wsgistack.jobs.job import PASSED, Outcome


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def progress_line(outcome: Outcome, index: int, total: int) -> str:
    """`[1/2] mod_wsgi: passed (healthy in 0.9s, command 3.2s)`."""
    if outcome.healthy_seconds is None:
        return f"[{index}/{total}] {outcome.backend}: {outcome.status}: {outcome.error}"
    return (f"[{index}/{total}] {outcome.backend}: {outcome.status} (healthy in "
            f"{_seconds(outcome.healthy_seconds)}, command {_seconds(outcome.command_seconds)})")


def matrix(outcomes: list[Outcome], artifacts: Path) -> str:
    """The table (backend, seconds to healthy, command seconds, result), then for each
    backend that did not pass: the tests that failed, the last lines of the command's
    output, why the stack did not come up, the first error line of the services' logs and
    where its artifacts are."""
    rows = [("backend", "healthy", "command", "result")]
    rows += [(o.backend, _seconds(o.healthy_seconds), _seconds(o.command_seconds), o.status)
             for o in outcomes]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    for o in outcomes:
        if o.result == PASSED:
            continue
        lines += ["", f"{o.backend}: {o.status}"]
        lines += [f"  failed: {test}" for test in o.failed_tests]
        if o.error:
            lines.append(f"  error: {o.error}")
        lines += [f"  | {line}" for line in o.output_tail]
        if o.log_error:
            lines.append(f"  log: {o.log_error}")
        lines.append(f"  artifacts: {o.artifacts}")
    return "\n".join([*lines, "", f"artifacts: {artifacts}"])
