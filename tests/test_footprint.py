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


#: Runs `python -m collector ARGS` as the benchmark does and prints the modules it loaded (no json:
#: the printer must not load what the test looks for).
_MAIN_THEN_MODULES = """
import runpy, sys
sys.argv = ["collector", *sys.argv[1:]]
try:
    runpy.run_module("collector", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
print(repr((code, sorted(sys.modules))), flush=True)
"""

#: What `collector replay` of an empty file must not import: none of it is needed before a first line
#: (start-up: ~60 ms of the ~100 ms it cost; bench/replay.py measures the figure).
NOT_BEFORE_A_LINE = {
    "argparse": "replay reads its plain options itself (collector.replay.parse_args)",
    "logging": "set up at the first record (replay._Log)",
    "dataclasses": "plain classes (rules.checks.Spec)",
    "typing": "imported under TYPE_CHECKING only",
    "json": "lenient_json imports it for a bad line",
    "hashlib": "the engine compares the rules file's bytes",
    "msgspec": "the decoder builds its Structs at the first decode",
    "yaml": "the parsed rules file is cached (rules.yamlcache)",
    "heapq": "the discriminator is a max()",
    "collector.cli": "python -m collector replay goes to collector.replay.main",
    "collector.settings": "no COLLECTOR_* setting",
    "collector.sources": "the line splitter is imported when a chunk needs splitting",
}


#: The `collector` console script as pip writes it (pyproject.toml: collector.__main__:main).
_SCRIPT_THEN_MODULES = """
import sys
from collector.__main__ import main
try:
    code = main()
except SystemExit as exc:
    code = exc.code
print(repr((code, sorted(sys.modules))), flush=True)
"""


def _replay_modules(tmp_path: Path, *args: str, script: bool = False) -> tuple[int, list[str]]:
    import ast

    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT_THEN_MODULES if script else _MAIN_THEN_MODULES, "replay", *args],
        env=_clean_env(XDG_CACHE_HOME=str(tmp_path / "cache")),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    code, modules = ast.literal_eval(out.stdout.splitlines()[-1])
    return code, modules


@pytest.mark.parametrize("rules", ["preset", "file"])
def test_replay_of_an_empty_file_imports_nothing_a_line_would_need(tmp_path: Path, rules: str) -> None:
    empty = tmp_path / "empty.log"
    empty.touch()
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text("rules:\n  - metric: hits_total\n    type: counter\n    match: {message: hit}\n")
    args = ["--preset", "winston"] if rules == "preset" else ["--rules", str(rules_file)]
    first = _replay_modules(tmp_path, *args, str(empty))  # a YAML file: parsed once, then cached
    assert first[0] == 0
    if rules == "file":
        assert "yaml" in first[1]  # the cold run parses it
    for script in (False, True):  # python -m collector, and the console script
        code, modules = _replay_modules(tmp_path, *args, str(empty), script=script)
        assert code == 0 and "collector.rules.engine" in modules
        loaded = _loaded(modules, NOT_BEFORE_A_LINE)
        assert loaded == [], {name: f"imported, though {NOT_BEFORE_A_LINE[name]}" for name in loaded}
    # the same command with one line decodes it: the lazy imports do happen
    line = tmp_path / "one.log"
    line.write_text('{"message": "hit"}\n')
    code, modules = _replay_modules(tmp_path, *args, str(line))
    assert code == 0 and "msgspec" in modules


#: argv after `replay`: what collector.replay.parse_args must read as argparse does, or leave to it.
_ARGVS = [
    [],
    ["a.log"],
    ["-"],
    ["a.log", "b.log"],
    ["--rules", "r.yaml", "a.log"],
    ["--rules=r.yaml", "a.log"],
    ["a.log", "--rules", "r.yaml"],
    ["--preset", "winston", "--preset", "fastify,levels", "x"],
    ["--preset=pino-http"],
    ["--format", "openmetrics", "a"],
    ["--format=text", "a"],
    ["--check"],
    ["--check", "--rules", "r"],
    ["--show-compiled", "--preset", "winston"],
    ["--explain", "s.log"],
    ["--explain", "s.log", "--explain-lines", "7"],
    ["--explain-lines=3", "--explain=s"],
    ["--rules", "a", "--rules", "b", "f"],
    ["--format", "text", "--format", "openmetrics", "f"],
    # left to argparse: help, errors, abbreviations, env file, odd values
    ["-h"],
    ["--help"],
    ["--rul", "r"],
    ["--env-file", "x", "a"],
    ["--format", "json", "a"],
    ["--explain-lines", "x"],
    ["--rules"],
    ["a", "--check", "b"],
    ["--", "a"],
    ["--rules", "-x"],
    ["--check=1"],
    ["-x.log"],
    ["--version"],
    ["--explain-lines", "-3"],
]


@pytest.mark.quick
@pytest.mark.parametrize("argv", _ARGVS, ids=lambda a: " ".join(a) or "none")
def test_replay_reads_its_options_as_argparse_does(argv: list[str]) -> None:
    from collector.cli import _parser
    from collector.replay import ReplayArgs, parse_args

    fast = parse_args(argv)
    try:
        namespace = _parser("replay").parse_args(["replay", *argv])
    except SystemExit:
        assert fast is None  # argparse's error or help, as before
        return
    if fast is None:
        return  # left to argparse, which reads it
    expected = {name: getattr(namespace, name) for name in ReplayArgs.__slots__}
    assert {name: getattr(fast, name) for name in ReplayArgs.__slots__} == expected


@pytest.mark.quick
def test_the_console_script_starts_where_python_m_collector_does() -> None:
    import tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["collector"] == "collector.__main__:main"  # not cli.py's imports
