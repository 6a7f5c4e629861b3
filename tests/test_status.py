"""Health that tells the truth: four broken inputs make their sources degraded with reasons naming the
problem, readiness stays 200 (strict: 503), and the status page and /status.json say the same."""

from __future__ import annotations

import html
import json
import logging
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import make_settings, serve, value
from tests.status_helpers import missing_pid, until


def closed_port() -> int:
    """A loopback port nothing listens on (bound once, then released: connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def broken_settings(tmp_path: Path) -> tuple[Any, dict[str, Any]]:
    api, ws = closed_port(), closed_port()
    pid = missing_pid()
    pattern = str(tmp_path / "missing" / "*.log")
    settings = make_settings(
        tmp_path,
        process={"pid": pid, "interval": 0.2},
        stripe={
            "api_key": "sk_test_unreachable",
            "api_base": f"http://127.0.0.1:{api}",
            "poll_interval": 0.2,
        },
        websocket={"targets": [{"url": f"ws://127.0.0.1:{ws}/ws", "name": "app"}], "interval": 0.2},
        logs={"paths": [pattern], "poll_interval": 0.2},
    )
    return settings, {"pid": pid, "ws": ws, "pattern": pattern, "dir": str(tmp_path / "missing")}


async def test_four_broken_inputs_degrade_their_sources_with_reasons_while_ready_stays_200(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings, known = broken_settings(tmp_path)
    caplog.set_level(logging.INFO, logger="collector")
    async with serve(settings) as run:
        h = await until(
            run,
            lambda h: (
                all(s["state"] == "degraded" for s in h["sources"].values())
                and "(2 failures)" in h["sources"]["stripe"]["reasons"][0]
            ),
        )
        reasons = {name: s["reasons"] for name, s in h["sources"].items()}
        assert reasons["process"] == [f"app process not found (pid {known['pid']})"]
        assert reasons["logs"] == [f"directory {known['dir']} does not exist (pattern {known['pattern']})"]
        [stripe] = reasons["stripe"]
        assert stripe.startswith("Stripe API unreachable since ") and "(2 failures): GET /v1/events" in stripe
        [ws] = reasons["websocket"]
        assert ws.startswith(f"ws://127.0.0.1:{known['ws']}/ws refused: ")
        assert h["status"] == "ready" and h["sources_status"] == "degraded"

        # Readiness is the collector's own: outside systems being down never unready a sidecar.
        status, _h, body = await run.get("/health/ready")
        assert (status, json.loads(body)) == (200, {"status": "ready"})
        status, _h, body = await run.get("/health/ready?strict=1")
        assert status == 503
        strict = json.loads(body)["reasons"]
        assert [r.split(":")[0] for r in strict] == [f"source {n} is degraded" for n in h["sources"]]

        samples = await run.metrics()
        for name in h["sources"]:
            assert value(samples, "collector_source_up", source=name) == 1
            assert value(samples, "collector_source_state", source=name, state="degraded") == 1
            for other in ("starting", "running", "failed", "stopped"):
                assert value(samples, "collector_source_state", source=name, state=other) == 0

        _s, _h, page = await run.get("/")
        text = page.decode()
        for rs in reasons.values():
            assert html.escape(rs[0].split(" since ")[0]) in text
        status_json = json.loads((await run.get("/status.json"))[2])
        assert status_json["sources"]["process"]["reasons"] == reasons["process"]

        # The log directory appears, then a file in it: the logs source recovers.
        Path(known["dir"]).mkdir()
        await until(
            run, lambda h: h["sources"]["logs"]["reasons"] == [f"pattern {known['pattern']} matches no file"]
        )
        (Path(known["dir"]) / "app.log").write_text('{"level":"info"}\n')
        await until(run, lambda h: h["sources"]["logs"]["state"] == "running")
        samples = await run.metrics()
        assert value(samples, "collector_source_state", source="logs", state="running") == 1

    # Each problem is logged once when it begins, and once when it ends (the logs one ended).
    records = [r for r in caplog.records if r.getMessage() in ("source degraded", "source problem resolved")]
    by_source: dict[str, list[str]] = {}
    for r in records:
        by_source.setdefault(r.source, []).append(r.getMessage())  # type: ignore[attr-defined]
    assert by_source == {
        "process": ["source degraded"],
        "stripe": ["source degraded"],
        "websocket": ["source degraded"],
        "logs": ["source degraded", "source problem resolved"],
    }


async def test_counters_exist_at_zero_from_start_up(tmp_path: Path) -> None:
    settings, _known = broken_settings(tmp_path)
    async with serve(settings) as run:
        samples = await run.metrics()
        for name in ("process", "stripe", "websocket", "logs"):
            assert value(samples, "collector_source_restarts_total", source=name) == 0
        assert value(samples, "collector_source_errors_total", source="stripe", reason="api_4xx") == 0
        assert value(samples, "collector_source_errors_total", source="logs", reason="permission_denied") == 0
        assert value(samples, "collector_state_store_errors_total", operation="open") == 0
        assert value(samples, "collector_series_overflow_total", metric="stripe_webhooks_total") == 0
        # families created later (the tailer's, at the logs source's start) get theirs when created
        samples = await run.wait_for(lambda s: value(s, "collector_source_up", source="logs") == 1)
        assert value(samples, "collector_series_overflow_total", metric="collector_log_read_lines_total") == 0
        assert value(samples, "collector_series_overflow_total", metric="app_process_up") is None  # no labels
        if shutil.which("promtool"):
            _s, _h, body = await run.get("/metrics")
            lint = subprocess.run(
                ["promtool", "check", "metrics"], input=body, capture_output=True, timeout=30
            )
            assert (lint.returncode, lint.stdout + lint.stderr) == (0, b"")


async def test_github_api_unreachable_degrades_the_github_source(tmp_path: Path) -> None:
    port = closed_port()
    gh = {
        "token": "ghp_x",
        "repositories": ["octo/shop"],
        "api_url": f"http://127.0.0.1:{port}",
        "poll_interval": 1,
    }
    async with serve(make_settings(tmp_path, github=gh)) as run:
        h = await until(run, lambda h: h["sources"]["github"]["state"] == "degraded")
        [reason] = h["sources"]["github"]["reasons"]
        assert reason.startswith("GitHub API unreachable since ") and "(1 failed poll): octo/shop: " in reason
        assert (await run.get("/health/ready"))[0] == 200
