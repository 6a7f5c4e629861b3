"""The fuzz target's random mode with a small CI budget (atheris itself is optional, run by hand)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_fuzz_target_random_mode_finds_no_crash() -> None:
    target = Path(__file__).with_name("fuzz_inputs.py")
    out = subprocess.run(
        [sys.executable, str(target), "--random", "3000"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
