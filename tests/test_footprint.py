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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import package_imports

#: Libraries of sources other than logs, of commands other than `run`, and of features that are off.
NOT_IN_LOGS_ONLY = {
    "pydantic_settings": "the settings loader is collector.settings.env",
    "dotenv": "no env file",
    "yaml": "presets only, no YAML rules file",
    "websockets": "websocket source (and the demo app)",
    "stripe": "stripe source (signatures are checked without it)",
    "gidgethub": "github source",
    "psutil": "process source",
    "watchfiles": "recursive `**` patterns or a system without inotify (sources/logs/notify.py reads inotify)",
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
    modules = _daemon_modules(tmp_path, COLLECTOR_LOGS__PRESET="winston")
    loaded = _loaded(modules, NOT_IN_LOGS_ONLY)
    assert loaded == [], {name: f"imported, though only for: {NOT_IN_LOGS_ONLY[name]}" for name in loaded}


def _replay_loaded(tmp_path: Path, *args: str) -> list[str]:
    """`sys.modules` of a real `collector replay ARGS` that succeeded (see `_replay_modules`)."""
    code, modules = _replay_modules(tmp_path, *args)
    assert code == 0 and "collector.rules" in modules  # it is replay, and it ran
    return modules


@pytest.mark.parametrize("rules", ["preset", "file"])
def test_replay_loads_neither_settings_nor_the_http_stack(tmp_path: Path, rules: str) -> None:
    empty = tmp_path / "empty.log"
    empty.touch()
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text("rules:\n  - metric: hits_total\n    type: counter\n    match: {message: hit}\n")
    args = ["--preset", "winston"] if rules == "preset" else ["--rules", str(rules_file)]
    modules = _replay_loaded(tmp_path, *args, str(empty))
    heavy = {"pydantic", "pydantic_core", "aiohttp", "prometheus_client", "watchfiles", "collector.settings"}
    if rules == "preset":
        heavy.add("yaml")  # parsed only when a YAML file is given
    assert _loaded(modules, heavy) == []


def _logs_daemon_env(tmp_path: Path, **env: str) -> dict[str, str]:
    """The environment of a logs-only `collector run` in `tmp_path`, tailing one line of app.log."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    log = tmp_path / "app.log"
    log.write_text('{"level":"info","message":"hello"}\n')
    return _clean_env(**{
        "COLLECTOR_LISTEN": f"127.0.0.1:{_free_port()}",
        "COLLECTOR_DATA_DIR": str(tmp_path / "data"),
        "COLLECTOR_LOGS__PATHS": str(log),
        "COLLECTOR_LOG_LEVEL": "WARNING",
        **env,
    })  # fmt: skip


def _daemon_modules(tmp_path: Path, **env: str) -> list[str]:
    """`sys.modules` of a real `collector run` once it serves the logs source's metrics."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], env=_logs_daemon_env(tmp_path, **env), cwd=tmp_path, capture_output=True, text=True, timeout=90
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
    assert _prometheus_client(_replay_loaded(tmp_path, "--rules", str(rules), str(empty))) == []


def test_no_collector_module_imports_prometheus_client() -> None:
    """Whatever sources are enabled: no module of the package imports it, at any level (tests may)."""
    found = [f"{p}:{line}" for p, line, n in package_imports() if n.split(".")[0] == "prometheus_client"]
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


# --- OpenSSL: loaded only when a setting needs it (collector/importpolicy.py) -----------------------

#: A daemon that prints its modules, and what `import ssl` raises in it, once the test creates the file
#: PROBE_TRIGGER. The HTTP(S) requests are the test's, so nothing here imports ssl or hashlib.
_LEAN_PROBE = """
import json, os, sys, threading, time
early = []  # what loads before collector.importpolicy decides (then a Refuse finder is on sys.meta_path)
class Early:
    def find_spec(self, name, path, target=None):
        if name in ("asyncio", "ssl", "_ssl", "hashlib", "_hashlib") and not any(
            type(f).__name__ == "Refuse" for f in sys.meta_path
        ):
            early.append(name)
        return None
sys.meta_path.insert(0, Early())
trigger = os.environ["PROBE_TRIGGER"]
def probe():
    while not os.path.exists(trigger):
        time.sleep(0.05)
    try:
        import ssl
        error = None
    except ImportError as exc:
        error = str(exc)
    import mimetypes
    finders = [repr(f) for f in sys.meta_path if type(f).__name__ == "Refuse"]
    print(json.dumps({"modules": sorted(sys.modules), "ssl_error": error, "early": early,
                      "finders": finders, "mime_files": mimetypes.knownfiles}), flush=True)
    os._exit(0)
threading.Thread(target=probe, daemon=True).start()
from collector.cli import main
sys.exit(main(["run"]))
"""

OPENSSL = ("ssl", "_ssl", "_hashlib")


class LeanDaemon:
    """`collector run` in a subprocess running `_LEAN_PROBE`; `modules()` stops it and reports."""

    def __init__(self, tmp_path: Path, **env: str) -> None:
        self.port = _free_port()
        self.trigger = tmp_path / "report-now"
        full = _logs_daemon_env(tmp_path, **{
            "COLLECTOR_LISTEN": f"127.0.0.1:{self.port}",
            "COLLECTOR_LOGS__PRESET": "winston",
            "PROBE_TRIGGER": str(self.trigger),
            **env,
        })  # fmt: skip
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _LEAN_PROBE], env=full, cwd=tmp_path, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def wait_up(self, opener: Any = None, scheme: str = "http") -> bytes:
        """The first /metrics answer that shows the logs source's lines (fetched by the test)."""
        import time
        import urllib.request

        url = f"{scheme}://127.0.0.1:{self.port}/metrics"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.communicate()[1]
            try:
                body: bytes = (opener or urllib.request.urlopen)(url, timeout=5).read()
                if b"collector_log_lines_total" in body:
                    return body
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("the daemon never served the logs source's metrics")

    def report(self) -> dict[str, Any]:
        self.trigger.touch()
        out, err = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, err
        report: dict[str, Any] = json.loads(out.splitlines()[-1])
        return report

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture
def lean(tmp_path: Path) -> Iterator[Callable[..., LeanDaemon]]:
    started: list[LeanDaemon] = []

    def start(**env: str) -> LeanDaemon:
        started.append(LeanDaemon(tmp_path, **env))
        return started[-1]

    yield start
    for daemon in started:
        daemon.kill()


def test_the_logs_only_daemon_loads_no_openssl_and_says_why_when_asked(lean: Any) -> None:
    import urllib.request

    daemon = lean()
    daemon.wait_up()
    for path in ("/", "/status.json", "/health/ready"):  # what loads on first use works without it
        with urllib.request.urlopen(f"http://127.0.0.1:{daemon.port}{path}", timeout=10) as resp:
            assert resp.status == 200
    report = daemon.report()
    assert "collector.status" in report["modules"]
    loaded = [m for m in OPENSSL if m in report["modules"]]
    assert "collector.sources.logs" in report["modules"] and "asyncio" in report["modules"]
    assert loaded == []
    # Nothing the parser, the settings or the rules import loads asyncio or hashlib before the decision.
    assert report["early"] == []
    error = report["ssl_error"]
    assert error is not None and error.startswith("ssl is not importable in this process: ")
    assert "COLLECTOR_LEAN_IMPORTS=false" in error and "COLLECTOR_WEB_CONFIG_FILE" in error
    assert report["mime_files"] == []  # aiohttp's MimeTypes() did not read /etc/mime.types (~0.3 MB)


def test_lean_imports_false_loads_openssl_as_before(lean: Any) -> None:
    daemon = lean(COLLECTOR_LEAN_IMPORTS="false")
    daemon.wait_up()
    report = daemon.report()
    assert [m for m in OPENSSL if m not in report["modules"]] == []
    assert report["ssl_error"] is None and report["finders"] == []
    assert report["mime_files"] != []


def test_a_stripe_daemon_verifies_webhooks_with_openssl_hashes_but_no_tls(lean: Any) -> None:
    import urllib.request

    from tests.helpers import parse, value
    from tests.sources.stripe_helpers import SECRET, body_of, event, sign

    daemon = lean(COLLECTOR_STRIPE__WEBHOOK_SECRETS=SECRET)
    daemon.wait_up()
    body = body_of(event("invoice.paid"))
    req = urllib.request.Request(
        f"http://127.0.0.1:{daemon.port}/webhooks/stripe",
        body,
        {"Content-Type": "application/json", "Stripe-Signature": sign(body)},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
    samples = parse(urllib.request.urlopen(f"http://127.0.0.1:{daemon.port}/metrics").read().decode())
    assert value(samples, "stripe_webhooks_total", event_type="invoice.paid", status="processed") == 1
    report = daemon.report()
    assert "_hashlib" in report["modules"] and "collector.sources.stripe.signature" in report["modules"]
    assert [m for m in ("ssl", "_ssl") if m in report["modules"]] == []


def test_a_web_config_file_with_tls_serves_https(lean: Any, tmp_path: Path) -> None:
    import ssl
    import urllib.request

    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    leaf.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    (tmp_path / "web.yml").write_text("tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n")
    daemon = lean(COLLECTOR_WEB_CONFIG_FILE=str(tmp_path / "web.yml"))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=client))
    body = daemon.wait_up(opener.open, scheme="https")
    assert b"collector_log_lines_total" in body
    report = daemon.report()
    assert [m for m in OPENSSL if m not in report["modules"]] == []
    assert report["ssl_error"] is None and report["finders"] == []


@pytest.mark.quick
@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"logs": {"paths": ["a.log"]}, "process": {"pid": 1}, "deployments": {"token": "t"}}, []),
        ({"web_config_file": "/dev/null"}, [("tls", "COLLECTOR_WEB_CONFIG_FILE")]),
        ({"stripe": {"webhook_secrets": ["whsec_a"]}}, [("hashes", "COLLECTOR_STRIPE__WEBHOOK_SECRETS")]),
        (
            {"stripe": {"api_key": "sk_test_a", "api_base": "https://api.stripe.com"}},
            [("hashes", "COLLECTOR_STRIPE__WEBHOOK_SECRETS"), ("tls", "COLLECTOR_STRIPE__API_BASE")],
        ),
        ({"stripe": {"api_key": "sk_test_a", "api_base": "http://127.0.0.1:1"}}, [("hashes", "COLLECTOR_STRIPE__WEBHOOK_SECRETS")]),
        ({"github": {"webhook_secret": "s"}}, [("hashes", "COLLECTOR_GITHUB__WEBHOOK_SECRET")]),
        ({"github": {"token": "t", "repositories": ["o/r"]}}, [("tls", "COLLECTOR_GITHUB__API_URL")]),
        ({"github": {"token": "t", "repositories": ["o/r"], "api_url": "http://ghe.local/api/v3"}}, []),
        ({"websocket": {"targets": ["ws://127.0.0.1:1/"]}}, [("tls", "COLLECTOR_WEBSOCKET__TARGETS")]),
        ({"stripe": {"webhook_secrets": ["whsec_a"], "enabled": False}}, []),
    ],
)  # fmt: skip
def test_what_each_setting_needs_of_openssl(
    tmp_path: Path, settings: dict[str, Any], expected: list[Any]
) -> None:
    from collector import importpolicy
    from tests.helpers import make_settings

    found = importpolicy.needs(make_settings(tmp_path, **settings))
    got = [(n.what, n.setting) for n in found if n.setting != "uvloop"]
    assert got == expected


@pytest.mark.quick
def test_the_refusals_follow_the_needs_and_name_the_settings() -> None:
    from collector.importpolicy import HASHES, TLS, Need, Refuse, blocked

    nothing = blocked([], loaded={})
    assert sorted(nothing) == ["_hashlib", "_ssl", "ssl"]
    assert sorted(blocked([Need(HASHES, "COLLECTOR_STRIPE__WEBHOOK_SECRETS")], loaded={})) == ["_ssl", "ssl"]
    assert blocked([Need(TLS, "COLLECTOR_WEB_CONFIG_FILE")], loaded={}) == {}
    assert blocked([], loaded={"ssl": object()}) == {}  # already mapped: refusing saves nothing
    assert sorted(blocked([], loaded={"_hashlib": object()})) == ["_ssl", "ssl"]
    with pytest.raises(ModuleNotFoundError) as err:
        Refuse(nothing).find_spec("ssl", None)
    assert err.value.name == "ssl"
    assert "COLLECTOR_LEAN_IMPORTS=false" in str(err.value) and "COLLECTOR_WEB_CONFIG_FILE" in str(err.value)
    assert Refuse(nothing).find_spec("json", None) is None


@pytest.mark.quick
def test_lean_imports_false_installs_nothing(tmp_path: Path) -> None:
    from collector import importpolicy
    from tests.helpers import make_settings

    assert importpolicy.install(make_settings(tmp_path), environ={importpolicy.ENV: "false"}) is None


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
