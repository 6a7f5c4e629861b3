"""Import footprint: the logs-only daemon and `collector replay` load only what they use.

Each optional library costs the sidecar resident memory and start-up CPU whether or not its source is
enabled (bench/sidecar.py measures the figures; these tests hold the cause, without timing anything).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

#: Libraries of sources other than logs, of commands other than `run`, and of features that are off.
NOT_IN_LOGS_ONLY = {
    "pydantic_settings": "the settings loader is collector.settings.env",
    "dotenv": "no env file",
    "yaml": "presets only, no YAML rules file",
    "websockets": "websocket source (and the demo app)",
    "stripe": "stripe source (signatures are checked without it)",
    "gidgethub": "github source",
    "psutil": "process source",
    "bcrypt": "no basic auth",
    "collector.status": "the status page, loaded when first asked for",
    "collector.demo.synthetic": "`collector demo` only",
    "collector.sources.stripe": "stripe source",
    "collector.sources.github": "github source",
    "collector.sources.websocket": "websocket source",
    "collector.sources.process": "process source",
}

#: The daemon under test prints its modules once it serves the logs source's metrics.
_PROBE = """
import json, os, sys, threading, time, urllib.request
url = "http://%s/metrics" % os.environ["COLLECTOR_LISTEN"]
def probe():
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if b"collector_log_lines_total" in urllib.request.urlopen(url, timeout=5).read():
                time.sleep(1.5)  # the first read, checkpoint and scrape have run
                print(json.dumps(sorted(sys.modules)), flush=True)
                os._exit(0)
        except OSError:
            pass
        time.sleep(0.1)
    os._exit(3)
threading.Thread(target=probe, daemon=True).start()
from collector.cli import main
sys.exit(main(["run"]))
"""

_AFTER = """
import json, sys
from collector.cli import main
code = main(sys.argv[1:])
print(json.dumps(sorted(sys.modules)), flush=True)
sys.exit(code)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    env.update(extra)
    return env


def _loaded(found: list[str], names: dict[str, str] | set[str]) -> list[str]:
    """The names (of `names`) that are, or have submodules, in `found`."""
    return sorted({name for m in found for name in names if m == name or m.startswith(name + ".")})


def test_the_logs_only_daemon_imports_no_other_source_library(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text('{"level":"info","message":"hello"}\n')
    env = _clean_env(
        COLLECTOR_LISTEN=f"127.0.0.1:{_free_port()}",
        COLLECTOR_DATA_DIR=str(tmp_path / "data"),
        COLLECTOR_LOGS__PATHS=str(log),
        COLLECTOR_LOGS__PRESET="winston",
        COLLECTOR_LOG_LEVEL="WARNING",
    )
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=90
    )
    assert out.returncode == 0, out.stderr
    modules = json.loads(out.stdout)
    assert "collector.sources.logs" in modules and "aiohttp.web" in modules  # it is the daemon
    loaded = _loaded(modules, NOT_IN_LOGS_ONLY)
    assert loaded == [], {name: f"imported, though only for: {NOT_IN_LOGS_ONLY[name]}" for name in loaded}


@pytest.mark.parametrize("rules", ["preset", "file"])
def test_replay_loads_neither_settings_nor_the_http_stack(tmp_path: Path, rules: str) -> None:
    empty = tmp_path / "empty.log"
    empty.touch()
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text("rules:\n  - metric: hits_total\n    type: counter\n    match: {message: hit}\n")
    args = ["--preset", "winston"] if rules == "preset" else ["--rules", str(rules_file)]
    out = subprocess.run(
        [sys.executable, "-c", _AFTER, "replay", *args, str(empty)],
        env=_clean_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    modules = json.loads(out.stdout.splitlines()[-1])
    assert "collector.rules" in modules
    heavy = {"pydantic", "pydantic_core", "aiohttp", "prometheus_client", "watchfiles", "collector.settings"}
    if rules == "preset":
        heavy.add("yaml")  # parsed only when a YAML file is given
    assert _loaded(modules, heavy) == []


def _daemon_modules(tmp_path: Path, **env: str) -> list[str]:
    """`sys.modules` of a real `collector run` once it serves the logs source's metrics."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    log = tmp_path / "app.log"
    log.write_text('{"level":"info","message":"hello"}\n')
    full_env = _clean_env(
        COLLECTOR_LISTEN=f"127.0.0.1:{_free_port()}",
        COLLECTOR_DATA_DIR=str(tmp_path / "data"),
        COLLECTOR_LOGS__PATHS=str(log),
        COLLECTOR_LOG_LEVEL="WARNING",
        **env,
    )
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], env=full_env, cwd=tmp_path, capture_output=True, text=True, timeout=90
    )
    assert out.returncode == 0, out.stderr
    modules: list[str] = json.loads(out.stdout)
    assert "collector.sources.logs" in modules and "aiohttp.web" in modules  # it is the daemon
    return modules


def _prometheus_client(modules: list[str]) -> list[str]:
    return [m for m in modules if m.startswith("prometheus_client")]


def test_the_daemon_and_replay_load_no_prometheus_client(tmp_path: Path) -> None:
    # The self metrics (collector/selfmetrics.py) and the HTTP layer's (collector/web/metrics.py) render
    # through collector.exposition: prometheus_client's import alone is ~4.5 MB of RSS.
    rules = Path(__file__).parent.parent / "bench" / "app_rules.yaml"
    assert _prometheus_client(_daemon_modules(tmp_path / "rules", COLLECTOR_LOGS__RULES=str(rules))) == []
    empty = tmp_path / "empty.log"
    empty.touch()
    out = subprocess.run(
        [sys.executable, "-c", _AFTER, "replay", "--rules", str(rules), str(empty)],
        env=_clean_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    modules = json.loads(out.stdout.splitlines()[-1])
    assert "collector.rules" in modules and _prometheus_client(modules) == []


def test_no_collector_module_imports_prometheus_client() -> None:
    """Whatever sources are enabled: no module of the package imports it, at any level (tests may)."""
    import ast

    package = Path(__file__).parent.parent / "collector"
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            found += [
                f"{path.relative_to(package.parent)}:{node.lineno}"
                for n in names
                if n.split(".")[0] == "prometheus_client"
            ]
    assert found == []


def _pydantic(modules: list[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0].startswith("pydantic"))


def test_no_command_loads_pydantic(tmp_path: Path) -> None:
    """Issue 22: pydantic cost the idle daemon ~10 MB (import plus building the models); the settings
    are collector/settings/model.py's own models. Neither the logs-only daemon nor `check-config` nor
    a `replay` that loads settings (an env file) imports any `pydantic*` module."""
    found = {"run": _pydantic(_daemon_modules(tmp_path / "run"))}
    log = tmp_path / "app.log"
    log.write_text('{"level":"info","message":"hello"}\n')
    env_file = tmp_path / "c.env"
    env_file.write_text(f"COLLECTOR_LOGS__PATHS={log}\nCOLLECTOR_LOGS__PRESET=winston\n")
    env = _clean_env(COLLECTOR_DATA_DIR=str(tmp_path / "data"), COLLECTOR_LOGS__PATHS=str(log))
    for command in (["check-config"], ["replay", "--env-file", str(env_file), str(log)]):
        out = subprocess.run(
            [sys.executable, "-c", _AFTER, *command],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        modules = json.loads(out.stdout.splitlines()[-1])
        assert "collector.settings" in modules  # it did load settings
        found[command[0]] = _pydantic(modules)
    assert found == {"run": [], "check-config": [], "replay": []}
