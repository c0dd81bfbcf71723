"""Drive a URL with wrk and read back its figures."""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

UPLOAD_SCRIPT = """
wrk.method = "POST"
wrk.body = string.rep("x", {size})
wrk.headers["Content-Type"] = "application/octet-stream"
"""
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass(frozen=True)
class Result:
    rps: float
    latency_ms: float  # mean
    errors: int  # socket errors and non-2xx/3xx answers
    requests: int = 0  # answered in all
    detail: str = ""  # wrk's own lines on what failed, if anything did


def run(url: str, duration: float, connections: int, threads: int = 2,
        upload: int = 0, headers: dict[str, str] | None = None) -> Result:
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--timeout", "10s"]
    for key, value in (headers or {}).items():
        argv += ["-H", f"{key}: {value}"]
    with tempfile.TemporaryDirectory() as tmp:
        if upload:
            script = Path(tmp, "upload.lua")
            script.write_text(UPLOAD_SCRIPT.format(size=upload))
            argv += ["-s", str(script)]
        out = subprocess.run([*argv, url], capture_output=True, text=True, check=True).stdout
    return parse(out)


def parse(out: str) -> Result:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    lat = re.search(r"Latency\s+([\d.]+)(us|ms|s)\b", out)
    errors = 0
    for m in re.finditer(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                         out):
        errors += sum(int(g) for g in m.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0
    total = re.search(r"(\d+) requests in", out)
    if not rps or not lat or not total:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    detail = "; ".join(re.findall(r"(?:Socket errors|Non-2xx or 3xx responses):[^\n]*", out))
    return Result(float(rps.group(1)), float(lat.group(1)) * _UNITS[lat.group(2)], errors,
                  int(total.group(1)), detail)
