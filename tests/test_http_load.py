"""The load test's suite size (bench/httpload.py): slow-body clients and a wrong-password flood at once
against the real collector; every `/health/live` and authenticated `/metrics` answers 200. The latency
figures are printed, never asserted (the machine may be loaded); the long run is the bench script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "httpload.py"


def test_health_and_scrapes_answer_200_every_time_under_slow_bodies_and_an_auth_flood() -> None:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--slow", "160", "--flood", "30", "--duration", "6", "--cost", "8"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    report = json.loads(out.stdout)
    print(json.dumps({k: report[k] for k in ("conditions", "/health/live", "/metrics")}))
    for path in ("/health/live", "/metrics"):
        assert report[path]["requests"] >= 20, report
        assert report[path]["statuses"] == {"200": report[path]["requests"]}, report
    # The load was real: slow bodies were cut by the rate floor, the webhook class (128) filled up, the flood
    # asked bcrypt for every guess and was refused.
    counters = report["server_counters"]
    assert counters.get("body_too_slow", 0) > 0, counters
    assert counters.get("concurrency", 0) > 0, counters
    assert counters.get("unauthorized", 0) + counters.get("auth_busy", 0) > 30, counters
    assert report["all_200"] and out.returncode == 0
