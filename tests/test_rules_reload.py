"""Hot reload of the rules file: values of unchanged metrics survive, a bad file keeps the old rules."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from collector.exposition import render
from collector.metrics import MetricState
from collector.rules import RuleSet
from collector.sources.logs import LogsSource
from tests.helpers import make_settings, parse, serve, value

A = "  - metric: a_total\n    type: counter\n    match: {message: a}\n    labels: {k: k}\n"
B = "  - metric: b_total\n    type: counter\n    match: {message: b}\n"
B_LABELLED = "  - metric: b_total\n    type: counter\n    match: {message: b}\n    labels: {k: k}\n"
C = "  - metric: c_total\n    type: counter\n    match: {message: c}\n"
LINES = [b'{"message":"a","k":"x"}', b'{"message":"b","k":"y"}', b'{"message":"c"}']


def write(path: Path, text: str) -> None:
    # a new inode and mtime every time, like an editor or a ConfigMap update
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def scrape(metrics: MetricState) -> dict:
    return parse(render(metrics.families.values()))


async def test_reload_keeps_unchanged_metrics_resets_redefined_ones_and_drops_removed_ones(
    tmp_path: Path,
) -> None:
    path = tmp_path / "rules.yaml"
    write(path, f"rules:\n{A}{B}")
    metrics = MetricState()
    rs = RuleSet(metrics, logging.getLogger("t"), ["winston"], path)
    rs.consume(LINES)
    rs.consume([b'{"message":"http_request","method":"GET","route":"/","status":200,"duration_ms":3}'])
    write(path, f"rules:\n{A}{B_LABELLED}{C}")
    assert await rs.check_reload()
    rs.consume(LINES)
    s = scrape(metrics)
    assert value(s, "a_total", k="x") == 2  # unchanged: kept its value
    assert value(s, "b_total") is None and value(s, "b_total", k="y") == 1  # redefined: starts again
    assert value(s, "c_total") == 1  # new
    assert value(s, "http_requests_total", method="GET", route="/", status_code="200") == 1  # preset kept
    write(path, f"rules:\n{A}")
    assert await rs.check_reload()
    assert "c_total" not in metrics.families and "b_total" not in rs.family_names()
    assert value(scrape(metrics), "collector_rules_reload_failures_total") == 0


async def test_bad_rules_file_keeps_the_old_rules_logs_why_and_counts_the_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "rules.yaml"
    write(path, f"rules:\n{A}")
    metrics = MetricState()
    rs = RuleSet(metrics, logging.getLogger("t"), (), path)
    rs.consume(LINES)
    with caplog.at_level(logging.ERROR, logger="t"):
        write(path, "rules:\n  - metric: a_total\n    type: histogram\n")
        assert not await rs.check_reload()
        assert not await rs.check_reload()  # unchanged bad file: counted once
        path.unlink()
        assert not await rs.check_reload()
    rs.consume(LINES)
    s = scrape(metrics)
    assert value(s, "a_total", k="x") == 2
    assert value(s, "collector_rules_reload_failures_total") == 2
    errors = [r for r in caplog.records if "keeping the previous rules" in r.getMessage()]
    assert len(errors) == 2
    assert "rule 1 (a_total): value: a histogram needs a value field" in str(errors[0].errors)  # type: ignore[attr-defined]
    write(path, f"rules:\n{A}{C}")
    assert await rs.check_reload()
    rs.consume(LINES)
    assert value(scrape(metrics), "c_total") == 1


async def test_running_collector_picks_up_an_edited_rules_file(tmp_path: Path) -> None:
    logs, rules = tmp_path / "logs", tmp_path / "rules.yaml"
    logs.mkdir()
    write(rules, f"rules:\n{A}")
    (logs / "app.log").write_bytes(b"\n".join(LINES) + b"\n")
    settings = make_settings(
        tmp_path,
        logs={
            "paths": [str(logs / "*.log")],
            "start_at": "beginning",
            "rules": str(rules),
            "poll_interval": 0.1,
        },
    )
    async with serve(settings, {"logs": LogsSource}) as run:
        await run.wait_for(lambda s: value(s, "a_total", k="x") == 1)
        write(rules, "rules: [broken")
        await run.wait_for(lambda s: value(s, "collector_rules_reload_failures_total") == 1)
        write(rules, f"rules:\n{A}{C}")
        await run.wait_for(lambda s: value(s, "collector_rules_loaded") == 2)
        with (logs / "app.log").open("ab") as fh:
            fh.write(b"\n".join(LINES) + b"\n")
        s = await run.wait_for(lambda s: value(s, "c_total") == 1)
        assert value(s, "a_total", k="x") == 2


@pytest.mark.quick
def test_example_config_copies_cleanly(tmp_path: Path) -> None:
    # the shipped example must survive being copied next to the collector and loaded
    src = Path(__file__).parent.parent / "config" / "rules.example.yaml"
    shutil.copy(src, tmp_path / "rules.yaml")
    rs = RuleSet(MetricState(), logging.getLogger("t"), (), tmp_path / "rules.yaml")
    rs.consume(
        [b'{"message":"checkout","outcome":"ok","provider":"Stripe","amount_cents":1999,"currency":"EUR"}']
    )
    s = scrape(rs.metrics)
    assert value(s, "checkout_attempts_total", provider="stripe", outcome="paid") == 1
