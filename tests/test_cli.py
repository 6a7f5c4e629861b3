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
    assert result.stderr.splitlines() == [
        "collector: warning: COLLECTOR_PROCES__PID is not a known setting (in the environment); "
        "did you mean COLLECTOR_PROCESS__PID?"
    ]


def test_a_typo_in_an_env_file_warns_with_the_nearest_name(tmp_path: Path) -> None:
    (tmp_path / "x.env").write_text("COLLECTOR_LISTEN=127.0.0.1:1234\nCOLLECTOR_DATA_DIRS=/var/lib/c\n")
    (tmp_path / ".env").write_text("COLLECTOR_LOG_LEVLE=debug\n")
    result = _run(["check-config", "--env-file", "x.env"], {}, tmp_path)
    assert result.returncode == 0
    assert result.stderr.splitlines() == [
        "collector: warning: COLLECTOR_DATA_DIRS is not a known setting (in env file x.env); "
        "did you mean COLLECTOR_DATA_DIR?"
    ]
    result = _run(["check-config"], {}, tmp_path)  # the default .env is checked the same way
    assert result.stderr.splitlines() == [
        "collector: warning: COLLECTOR_LOG_LEVLE is not a known setting (in env file .env); "
        "did you mean COLLECTOR_LOG_LEVEL?"
    ]
    # A misspelt field of a source is an error (its model forbids unknown fields), with the same hint,
    # from the environment and from an env file alike.
    (tmp_path / "y.env").write_text("COLLECTOR_LOGS__PATH=/var/log/*.log\n")
    for args, env in (
        (["check-config", "--env-file", "y.env"], {}),
        (["check-config"], {"COLLECTOR_LOGS__PATH": "/x"}),
    ):
        result = _run(args, env, tmp_path)
        assert result.returncode == 2
        assert (
            "invalid setting COLLECTOR_LOGS__PATH: unknown setting; did you mean COLLECTOR_LOGS__PATHS?"
            in (result.stderr)
        )


def test_a_missing_env_file_is_an_error_unless_it_is_the_default(tmp_path: Path) -> None:
    for args, env in ((["--env-file", "nope.env"], {}), (["run"], {"COLLECTOR_ENV_FILE": "nope.env"})):
        result = _run(args, env, tmp_path)
        assert result.returncode == 2
        assert len(result.stderr.splitlines()) == 1
        assert result.stderr.startswith("collector: env file 'nope.env' (")
        assert "does not exist" in result.stderr
    assert _run(["check-config"], {}, tmp_path).returncode == 0  # no .env here: fine, it is optional
    assert _run(["--env-file", "/dev/null", "check-config"], {}, tmp_path).returncode == 0  # "no env file"


def test_every_setting_is_a_flag_before_or_after_the_subcommand(tmp_path: Path) -> None:
    (tmp_path / "x.env").write_text("COLLECTOR_LISTEN=127.0.0.1:1234\nCOLLECTOR_PROCESS__PID=7\n")
    env = {"COLLECTOR_PROCESS__INTERVAL": "9"}
    for args in (
        ["--env-file", "x.env", "--process-interval", "2", "check-config"],
        ["check-config", "--env-file", "x.env", "--process-interval", "2"],
        ["--env-file", "x.env", "check-config", "--process-interval=2"],
    ):
        result = _run(args, env, tmp_path)
        assert result.returncode == 0, result.stderr
        config = json.loads(result.stdout)
        # flag > environment > env file
        assert (config["listen"], config["process"]["pid"], config["process"]["interval"]) == (
            "127.0.0.1:1234",
            7,
            2.0,
        )
    result = _run(["check-config", "--logs-paths", "/a/*.log,/b/*.log", "--log-format", "text"], {}, tmp_path)
    config = json.loads(result.stdout)
    assert config["logs"]["paths"] == ["/a/*.log", "/b/*.log"] and config["log_format"] == "text"
    result = _run(["check-config", "--process-interval", "soon"], {}, tmp_path)
    assert result.returncode == 2 and "COLLECTOR_PROCESS__INTERVAL='soon'" in result.stderr


def test_help_lists_each_setting_with_flag_variable_default_and_meaning(tmp_path: Path) -> None:
    from collector.settings.flags import setting_flags

    for command in ("run", "check-config"):
        result = _run([command, "--help"], {}, tmp_path)
        assert result.returncode == 0
        text = " ".join(result.stdout.split())  # argparse wraps help text
        for f in setting_flags():
            assert f"{f.flag} VALUE" in text, f.flag
            assert f"[{f.env}; default: {f.default or 'unset'}]" in text, f.env
            assert " ".join(f.help.split()) in text, f.env
    top = _run(["--help"], {}, tmp_path).stdout
    assert "COLLECTOR_" in top and "collector run --help" in top


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


def test_text_log_format(tmp_path: Path) -> None:
    proc = CollectorProcess({"COLLECTOR_LOG_FORMAT": "text"}, tmp_path)
    try:
        proc.wait_live()
    finally:
        assert proc.terminate() == 0
    lines = proc.stderr().splitlines()
    assert " INFO    collector: collector started version=" in lines[0]
    assert f" listen=127.0.0.1:{proc.port} " in lines[0]
    assert not any(line.lstrip().startswith("{") for line in lines)


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
    # after the listeners are bound, with the version, the bound addresses and the enabled sources
    assert records[0]["version"] == __version__
    assert records[0]["listen"] == [f"127.0.0.1:{proc.port}"]
    assert records[0]["sources"] == ["process"]
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
    # One clear line, and nothing claiming the collector started or stopped.
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert [r["level"] for r in records] == ["error"], records
    assert records[0]["msg"] == (
        f"cannot listen on 127.0.0.1:{port}: Address already in use; "
        "set COLLECTOR_LISTEN (or --listen) to a free host:port"
    )
    assert records[0]["listen"] == f"127.0.0.1:{port}"


def test_unknown_preset_and_bad_rules_file_stop_start_up_with_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "rules.yaml"
    bad.write_text("rules:\n  - metric: x_total\n")
    logs = {"COLLECTOR_LOGS__PATHS": str(tmp_path / "*.log")}
    result = _run([], {**logs, "COLLECTOR_LOGS__PRESET": "winston,nope"}, tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "collector: invalid setting COLLECTOR_LOGS__PRESET='winston,nope': unknown preset 'nope'; expected one of "
        "winston, pino-http, express-winston, fastify, structlog, python-json-logger, uvicorn, nginx-json, app-events, "
        "levels"
    ]
    result = _run(["check-config"], {**logs, "COLLECTOR_LOGS__RULES": str(bad)}, tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"collector: invalid setting COLLECTOR_LOGS__RULES='{bad}': {bad}: rule 1 (x_total)"
    )
    result = _run([], {**logs, "COLLECTOR_LOGS__RULES": str(tmp_path / "missing.yaml")}, tmp_path)
    assert result.returncode == 2
    assert "cannot read the file (No such file or directory)" in result.stderr
