"""Quiet logs: under a steady 200 appended lines a second the collector writes O(1) INFO lines a minute,
and nothing from third-party loggers (watchfiles logged "1 change detected" per write, ~2,900 a minute).

The suite runs the load for a few seconds at the full rate (COLLECTOR_TEST_QUIET_SECONDS=60 runs the full
minute); the budget of 10 INFO lines is a minute's, so the short run is the stricter one.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tests.helpers import CollectorProcess, value

RATE = 200  # lines per second
SECONDS = float(os.environ.get("COLLECTOR_TEST_QUIET_SECONDS", "6"))


def test_steady_load_gives_fewer_than_10_info_lines_and_no_library_lines(tmp_path: Path) -> None:
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    app_log = log_dir / "app.log"
    app_log.write_text("")
    # The collector's own stderr goes to a file in the watched directory: it must not feed itself.
    proc = CollectorProcess(
        {
            "COLLECTOR_LOGS__PATHS": str(log_dir / "*.log"),
            "COLLECTOR_LOGS__PRESET": "winston",
            "COLLECTOR_LOGS__POLL_INTERVAL": "0.5",
        },
        log_dir,
    )
    written = 0
    try:
        proc.wait_live()
        deadline = time.monotonic() + 10
        while value(proc.scrape(), "collector_source_up", source="logs") != 1:
            assert time.monotonic() < deadline, proc.stderr()
            time.sleep(0.05)
        before = len(proc.stderr().splitlines())
        line = json.dumps(
            {"level": "info", "message": "http_request", "method": "GET", "route": "/", "status": 200}
        )
        began = time.monotonic()
        with app_log.open("a") as fh:
            while (elapsed := time.monotonic() - began) < SECONDS:
                due = int(elapsed * RATE) + 1
                if due > written:
                    fh.write((line + "\n") * (due - written))
                    fh.flush()
                    written = due
                time.sleep(0.01)  # ~100 writes a second, each one a change notification
        deadline = time.monotonic() + 15
        while value(proc.scrape(), "collector_log_lines_total", result="parsed") != written:
            assert time.monotonic() < deadline, (written, proc.stderr()[-2000:])
            time.sleep(0.1)
        during = [json.loads(x) for x in proc.stderr().splitlines()[before:]]
    finally:
        proc.terminate()
    assert written >= RATE * SECONDS * 0.95
    info = [r for r in during if r["level"] == "info"]
    print(f"{written} lines in {SECONDS:.0f}s at {RATE}/s: {len(during)} log lines, {len(info)} at INFO")
    assert len(info) < 10, info
    assert not [r for r in during if not r["logger"].startswith("collector")], during
