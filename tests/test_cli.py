"""The real `collector` command: check-config, exit codes, JSON logs, graceful SIGTERM."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from collector import __version__
from tests.helpers import CollectorProcess, value


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    return subprocess.run(
        [sys.executable, "-m", "collector", *args],
        env={**base, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_version(tmp_path: Path) -> None:
    assert _run(["--version"], {}, tmp_path).stdout.strip() == f"collector {__version__}"


def test_check_config_prints_the_effective_configuration(tmp_path: Path) -> None:
    result = _run(
        ["check-config"],
        {
            "COLLECTOR_PROCESS__MATCH": "node",
            "COLLECTOR_DATA_DIR": "/var/lib/c",
            "COLLECTOR_PROCES__PID": "1",
        },
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    assert config["listen"] == "0.0.0.0:9464"
    assert config["state_path"] == "/var/lib/c/state.db"
    assert config["process"] == {
        "enabled": True,
        "pid": None,
        "pid_file": None,
        "match": "node",
        "interval": 5.0,
    }
    assert "COLLECTOR_PROCES__PID is not a known setting" in result.stderr


def test_env_file_option_is_read(tmp_path: Path) -> None:
    (tmp_path / "x.env").write_text("COLLECTOR_LISTEN=127.0.0.1:1234\n")
    result = _run(["--env-file", "x.env", "check-config"], {}, tmp_path)
    assert json.loads(result.stdout)["listen"] == "127.0.0.1:1234"


def test_bad_value_exits_2_with_one_line_naming_the_variable(tmp_path: Path) -> None:
    for args in (["check-config"], []):
        result = _run(args, {"COLLECTOR_PROCESS__INTERVAL": "soon"}, tmp_path)
        assert result.returncode == 2
        assert result.stderr.splitlines() == [
            "collector: invalid setting COLLECTOR_PROCESS__INTERVAL='soon': "
            "Input should be a valid number, unable to parse string as a number"
        ]


def test_sigterm_stops_gracefully_with_exit_0_and_json_logs(tmp_path: Path) -> None:
    proc = CollectorProcess(
        {"COLLECTOR_PROCESS__PID": str(os.getpid()), "COLLECTOR_PROCESS__INTERVAL": "0.2"}, tmp_path
    )
    try:
        proc.wait_live()
        deadline = time.monotonic() + 10
        while value(s := proc.scrape(), "app_process_up") != 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert value(s, "app_process_up") == 1
        began = time.monotonic()
        assert proc.terminate(timeout=15) == 0
        assert time.monotonic() - began < 10
    finally:
        if proc.proc.poll() is None:
            proc.kill()
    records = [json.loads(line) for line in proc.stderr().splitlines() if line.strip()]
    messages = [r["msg"] for r in records]
    assert messages[0] == "collector started"
    assert messages[-2:] == ["stopping", "collector stopped"]
    assert all({"ts", "level", "logger", "msg"} <= r.keys() for r in records)
    assert (tmp_path / "data" / "state.db").exists()


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _run([], {"COLLECTOR_LISTEN": f"127.0.0.1:{port}"}, tmp_path)
    assert result.returncode == 1
    errors = [json.loads(line) for line in result.stderr.splitlines() if '"error"' in line]
    assert errors[0]["msg"] == "cannot listen; check COLLECTOR_LISTEN"
    assert errors[0]["listen"] == f"127.0.0.1:{port}"


def test_unknown_preset_and_bad_rules_file_stop_start_up_with_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "rules.yaml"
    bad.write_text("rules:\n  - metric: x_total\n")
    logs = {"COLLECTOR_LOGS__PATHS": str(tmp_path / "*.log")}
    result = _run([], {**logs, "COLLECTOR_LOGS__PRESET": "winston,nope"}, tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "collector: invalid setting COLLECTOR_LOGS__PRESET='winston,nope': unknown preset 'nope'; expected one of "
        "winston, pino-http, express-winston, fastify, structlog, python-json-logger, uvicorn, nginx-json, app-events"
    ]
    result = _run(["check-config"], {**logs, "COLLECTOR_LOGS__RULES": str(bad)}, tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"collector: invalid setting COLLECTOR_LOGS__RULES='{bad}': {bad}: rule 1 (x_total)"
    )
    result = _run([], {**logs, "COLLECTOR_LOGS__RULES": str(tmp_path / "missing.yaml")}, tmp_path)
    assert result.returncode == 2
    assert "cannot read the file (No such file or directory)" in result.stderr
