"""The soak's 60 s CI mode (bench/soak.py): steady logs, webhooks, probes and scrapes against the real
collector process; exact final counts, RSS growth under 10% after warm-up, no fd or task growth."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO


@pytest.mark.timeout(300)
def test_soak_60s_counts_everything_and_does_not_leak(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "soak.py"),
            "--duration",
            "60",
            "--warmup",
            "15",
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    report = json.loads(out.stdout)
    failed = [name for name, ok in report["checks"].items() if not ok]
    assert report["ok"], f"failed checks {failed}: {json.dumps(report, indent=1)}\n{out.stderr[-3000:]}"
    assert report["sent"]["lines"] >= 500 and report["sent"]["stripe"] >= 1
    assert report["counted"]["log lines"] == report["sent"]["lines"]
