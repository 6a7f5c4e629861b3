"""The real `collector` command line (replay, check) in a subprocess, without the operator's COLLECTOR_*."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO


def collector(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    return subprocess.run(
        [sys.executable, "-m", "collector", "--env-file", "/dev/null", *args],
        env={**env, "PYTHONPATH": str(REPO)}, cwd=cwd, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
