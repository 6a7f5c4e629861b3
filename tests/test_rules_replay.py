"""`collector replay`: the real command's output equals what the daemon serves for the same file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics

from collector.sources.logs import LogsSource
from tests.cli_helpers import collector
from tests.helpers import REPO, make_settings, parse, serve, value

FIXTURES = Path(__file__).parent / "fixtures" / "logs"


def make_log(tmp_path: Path) -> Path:
    """20,000 benchmark lines, the real app-events sample, and a few bad lines."""
    log = tmp_path / "app.log"
    gen = subprocess.run(
        [sys.executable, str(REPO / "bench" / "genlogs.py"), "20000"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    bad = b'{"message":"http_request", oops\n\xff\xfe\n{"message":"http_request","method":"GET","route":"/","status":200,"duration_ms":"fast"}\n'
    log.write_bytes(gen.stdout + (FIXTURES / "app-events" / "sample.log").read_bytes() + bad)
    return log


async def test_replay_prints_exactly_what_the_daemon_serves_after_reading_the_same_file(
    tmp_path: Path,
) -> None:
    log = make_log(tmp_path)
    out = collector("replay", "--preset", "winston,app-events", str(log), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "replayed 20029 lines" in out.stderr and "invalid_json 1, invalid_utf8 1" in out.stderr
    replayed = parse(out.stdout)
    assert sum(s.value for s in replayed["http_requests_total"]) > 15000

    daemon_dir = tmp_path / "daemon"
    daemon_dir.mkdir()
    (daemon_dir / "app.log").write_bytes(log.read_bytes())
    settings = make_settings(
        tmp_path,
        logs={"paths": [str(daemon_dir / "*.log")], "start_at": "beginning", "preset": ["winston", "app-events"], "poll_interval": 0.1},
    )  # fmt: skip
    async with serve(settings, {"logs": LogsSource}) as run:
        served = await run.wait_for(
            lambda s: sum((value(s, "collector_log_lines_total", result=r) or 0) for r in ("parsed", "unmatched", "invalid_json", "invalid_utf8")) == 20029,
            timeout=30,
        )  # fmt: skip
    for name, samples in replayed.items():
        assert sorted(samples, key=repr) == sorted(served[name], key=repr), name
    catalog = {"http_requests_total", "http_request_duration_seconds_bucket", "auth_attempts_total", "security_events_total",
               "content_access_total", "websocket_messages_total", "video_streams_total", "collector_log_value_errors_total"}  # fmt: skip
    assert catalog <= set(replayed)


def test_replay_openmetrics_output_parses_and_ends_in_eof(tmp_path: Path) -> None:
    out = collector(
        "replay",
        "--preset",
        "pino-http",
        "--format",
        "openmetrics",
        str(FIXTURES / "pino-http" / "sample.log"),
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.endswith("# EOF\n")
    families = {f.name: f for f in parse_openmetrics(out.stdout)}
    assert sum(s.value for s in families["http_requests"].samples if s.name == "http_requests_total") == 12


def test_replay_check_validates_rules_from_flags_or_settings(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - metric: a_total\n    type: counter\n")
    ok = collector("replay", "--check", "--rules", str(rules), "--preset", "nginx-json", cwd=tmp_path)
    assert ok.returncode == 0 and "rules OK: 5 rules, 5 metrics" in ok.stdout, ok.stderr
    rules.write_text("rules:\n  - metric: a\n    type: counter\n")
    env_bad = subprocess.run(
        [sys.executable, "-m", "collector", "replay", "--check"],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}, "PYTHONPATH": str(REPO),
             "COLLECTOR_LOGS__RULES": str(rules)},
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert env_bad.returncode == 2
    assert "rule 1 (a): metric: counter names must end in _total" in env_bad.stderr


def test_replay_without_rules_says_how_to_configure_them(tmp_path: Path) -> None:
    out = collector("replay", "x.log", cwd=tmp_path)
    assert out.returncode == 2
    assert "COLLECTOR_LOGS__PRESET or COLLECTOR_LOGS__RULES" in out.stderr
