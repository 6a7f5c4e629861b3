"""`collector demo` honours the operator's own settings: COLLECTOR_LISTEN, the env file and flags."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.helpers import free_port


def test_demo_serves_on_collector_listen_and_takes_env_file_and_flag_overrides(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "ops.env").write_text("COLLECTOR_LOG_FORMAT=text\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    env["COLLECTOR_LISTEN"] = f"127.0.0.1:{port}"
    stderr = tmp_path / "demo.stderr"
    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "collector", "demo", "--env-file", "ops.env", "--websocket-interval", "7"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            deadline = time.monotonic() + 60
            status: dict[str, object] = {}
            while time.monotonic() < deadline:
                assert proc.poll() is None, stderr.read_text()[-3000:]
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status.json", timeout=2) as resp:
                        status = json.loads(resp.read())
                    if "websocket" in status["sources"]:  # type: ignore[operator]
                        break
                except OSError:
                    pass
                time.sleep(0.2)
            assert "websocket" in status["sources"], stderr.read_text()[-3000:]  # type: ignore[operator]
        finally:
            proc.send_signal(signal.SIGINT)
            assert proc.wait(30) == 0
    text = stderr.read_text()
    # the child collector logs as text (the env file's setting) and says where it listens (the environment's)
    started = next(line for line in text.splitlines() if "collector: collector started" in line)
    assert f" listen=127.0.0.1:{port} " in started
    assert not any(line.startswith("{") for line in text.splitlines())
