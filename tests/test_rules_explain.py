"""Rules you can debug: `replay --explain`, `--show-compiled`, generated code in tracebacks, and the
missing value field made visible (counted by metric and reason, warned about by replay)."""

from __future__ import annotations

import json
import linecache
import logging
import traceback
from pathlib import Path

from collector.metrics import MetricState
from collector.rules import RuleSet
from tests.cli_helpers import collector
from tests.helpers import parse, value

STACKS = Path(__file__).parent / "fixtures" / "logs" / "stacks"


def test_explain_names_the_matching_rule_its_labels_and_update_and_why_others_failed(tmp_path: Path) -> None:
    sample = tmp_path / "sample.log"
    sample.write_text(
        "\n".join(
            json.dumps(d)
            for d in [
                {
                    "message": "http_request",
                    "method": "GET",
                    "url": "/api/users/42?x=1",
                    "statusCode": 503,
                    "responseTime": 12.5,
                    "route": "/api/users/:id",
                },
                {"message": "http_request", "method": "GET", "url": "/wp-admin/x.php", "statusCode": 404},
                {"message": "cache_warmed", "entries": 3},
            ]
        )
        + "\n"
    )
    out = collector("replay", "--preset", "winston", "--explain", str(sample), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    first, second, third = text.split("\nline ")[0], text.split("\nline ")[1], text.split("\nline ")[2]
    assert "rule 1 http_requests_total (preset winston): matched" in first
    assert 'labels {method="GET" route="/api/users/:id" status_code="503"}' in first
    assert 'labels {method="GET" route="/api/users/:id" error_class="5xx"}' in first
    assert "update: observe 0.0125" in first
    # a 404 without a template is the one `unmatched` route; its missing duration is named
    assert 'route="unmatched" status_code="404"' in second
    assert 'reason="missing"' in second and "responseTime" in second
    # an unmatched line: why each candidate failed, field by field
    assert "message='cache_warmed' is not one of" in third
    assert "=> no rule matched" in third


def test_explain_shows_fastify_join_and_uvicorn_extraction(tmp_path: Path) -> None:
    out = collector(
        "replay", "--preset", "fastify", "--explain", str(STACKS / "fastify" / "access.log"), "--explain-lines", "3",
        cwd=tmp_path,
    )  # fmt: skip
    assert "join: start of request ('vm'" in out.stdout
    assert "join: end of request" in out.stdout and "carries ['req']" in out.stdout
    assert "stopped after 3 lines" in out.stdout
    out = collector(
        "replay", "--preset", "uvicorn", "--explain", str(STACKS / "uvicorn" / "access.log"), "--explain-lines", "1",
        cwd=tmp_path,
    )  # fmt: skip
    assert "extract: /" in out.stdout and 'status_code="200"' in out.stdout


def test_show_compiled_prints_readable_code_and_tracebacks_show_its_lines(tmp_path: Path) -> None:
    out = collector("replay", "--preset", "pino-http", "--show-compiled", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    # the interpreted decisions per group, then the one generated loop
    assert "decided per distinct" in out.stdout and "def apply(objs" in out.stdout
    assert "def prep(raw):" not in out.stdout and "def group(o):" not in out.stdout
    assert "# label route <- route, req.route, req.routePath, req.originalUrl, req.url" in out.stdout
    assert "<- res.statusCode" in out.stdout
    assert "e = entries_1[key] = new_entry_1(key)" in out.stdout  # readable names, not r5/B3
    rs = RuleSet(MetricState(), logging.getLogger("test"), ["pino-http"])
    loop = rs._compiled.loop
    assert loop is not None
    filename = loop.apply.__code__.co_filename
    assert filename.startswith("<rules loop")
    src = "".join(linecache.getlines(filename))
    assert (
        src == loop.source and src in out.stdout
    )  # a traceback through the generated code shows these lines


def test_a_traceback_through_the_generated_loop_shows_its_source_line(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    rs = RuleSet(MetricState(), logging.getLogger("test"), ["pino-http"])

    def broken(*_args: object) -> str:
        raise RuntimeError("label failed")

    monkeypatch.setattr(rs._compiled.labeler, "label", broken)
    line = b'{"req":{"method":"GET","url":"/a"},"res":{"statusCode":200},"responseTime":3}'
    try:
        rs.consume([line])
    except RuntimeError as exc:
        frames = traceback.extract_tb(exc.__traceback__)
    else:
        raise AssertionError("the broken label did not raise")
    shown = [f.line for f in frames if f.filename.startswith("<rules loop")]
    assert shown == ["e = entries_1[key] = new_entry_1(key)"]
    assert any(f.name == "decide" for f in frames)  # the interpreted decision, named


def test_a_missing_duration_field_is_counted_by_metric_and_reason_and_replay_warns(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    # the app logs its latency as `took`: the winston preset knows responseTime, duration_ms, ...
    log.write_text(
        "".join(
            json.dumps({"message": "http_request", "method": "GET", "url": "/", "statusCode": 200, "took": 3})
            + "\n"
            for _ in range(7)
        )
    )
    out = collector("replay", "--preset", "winston", str(log), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    s = parse(out.stdout)
    assert value(s, "http_requests_total", method="GET", route="/", status_code="200") == 7
    assert (
        value(s, "collector_log_value_errors_total", metric="http_request_duration_seconds", reason="missing")
        == 7
    )
    assert "warning: preset winston: 7 requests counted but none had a duration field" in out.stderr
    assert "responseTime" in out.stderr
    out = collector("replay", "--preset", "uvicorn", str(STACKS / "uvicorn" / "access.log"), cwd=tmp_path)
    assert "preset uvicorn: this log format carries no request duration" in out.stderr
    out = collector("replay", "--preset", "fastify", str(STACKS / "fastify" / "access.log"), cwd=tmp_path)
    assert "warning" not in out.stderr
