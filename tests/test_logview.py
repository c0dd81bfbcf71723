"""`wsgistack logs`: lines since a moment, errors only, and following across rotation."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from wsgistack import logview


def test_since_keeps_unstamped_lines_with_the_line_before() -> None:
    lines = ["[2026-12-02 10:00:00 +0000] [1] [INFO] old", "  old detail",
             "[2026-12-02 10:05:00 +0000] [1] [ERROR] new", "Traceback (most recent call last):",
             '  File "app.py", line 3', "2026/12/02 10:06:00 [warn] 7#7: nginx says"]
    after = datetime(2026, 12, 2, 10, 1, tzinfo=UTC)
    assert list(logview.select(lines, after, errors=False)) == lines[2:]
    assert list(logview.select(lines, None, errors=True)) == lines[2:5]


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("5m", 300), ("2h", 7200)])
def test_since_reads_durations(text: str, seconds: int) -> None:
    ago = (datetime.now(UTC) - logview.since(text)).total_seconds()
    assert seconds - 1 <= ago < seconds + 5


def test_since_refuses_what_it_cannot_read() -> None:
    with pytest.raises(ValueError, match="--since 'soon': write 30s, 5m, 2h, 1d or an ISO"):
        logview.since("soon")


def test_follow_goes_on_across_rotation(tmp_path: Path) -> None:
    log = tmp_path / "svc.log"
    log.write_text("before\n")
    seen: list[str] = []
    done = threading.Event()
    thread = threading.Thread(target=logview.follow, args=(log, seen.append),
                              kwargs={"poll": 0.01, "stop": done.is_set})
    thread.start()
    try:
        def wait_for(line: str) -> None:
            deadline = time.monotonic() + 10
            while line not in seen and time.monotonic() < deadline:
                time.sleep(0.01)
            assert line in seen, seen

        time.sleep(0.1)  # follow starts at the end: "before" is not followed
        with open(log, "a") as fh:
            fh.write("first\n")
        wait_for("first")
        os.rename(log, tmp_path / "svc.log.1")  # logrotate's rename, then a new file
        log.write_text("after rotation\n")
        wait_for("after rotation")
        log.write_text("cut\n")  # copytruncate: shorter than where follow had read to
        wait_for("cut")
    finally:
        done.set()
        thread.join(timeout=10)
    assert seen == ["first", "after rotation", "cut"]
