"""The benchmark runner's own logic: reading wrk's output, alternating the sides."""

from __future__ import annotations

import pytest
from benchmarks import wrk
from benchmarks.__main__ import alternate

WRK_OUT = """Running 3s test @ http://127.0.0.1:9781/probe/stream?bytes=1048576
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   812.50us    1.20ms  20.01ms   91.00%
    Req/Sec     1.69k   207.59     2.33k    85.00%
  6734 requests in 2.00s, 6.58GB read
  Socket errors: connect 0, read 6734, write 2, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:   3364.23
Transfer/sec:      3.29GB
"""


def test_parse_reads_rate_latency_and_errors() -> None:
    res = wrk.parse(WRK_OUT)
    assert res == wrk.Result(rps=3364.23, latency_ms=0.8125, errors=6734 + 2 + 1 + 5,
                             requests=6734, detail="Socket errors: connect 0, read 6734, "
                             "write 2, timeout 1; Non-2xx or 3xx responses: 5")


def test_parse_refuses_output_it_cannot_read() -> None:
    with pytest.raises(RuntimeError, match="cannot read wrk's output"):
        wrk.parse("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_alternate_warms_up_then_takes_turns() -> None:
    calls: list[str] = []

    def side(name: str, value: float):
        def run() -> float:
            calls.append(name)
            return value + len(calls)
        return run

    runs = alternate({"a": side("a", 0), "b": side("b", 100)}, rounds=2)
    assert calls == ["a", "b", "a", "b", "a", "b"]
    assert runs == {"a": [3, 5], "b": [104, 106]}
