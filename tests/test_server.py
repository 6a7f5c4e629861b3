"""The HTTP face on a real loopback port: /metrics negotiation and gzip, landing page, health endpoints."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse

from collector import __version__
from collector.source import SourceBase, SourceContext
from tests.helpers import make_settings, parse, registry_for, serve, value


class CountingSource(SourceBase):
    """A minimal well-behaved source: registers families, starts, waits for stop."""

    name = "process"

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        self.events = ctx.metrics.counter("demo_events_total", "Demo events.", ["kind"])
        self.latency = ctx.metrics.histogram("demo_latency_seconds", "Demo latency.", buckets=[0.1, 1])

    async def run(self) -> None:
        self.events.inc(("a",), 3)
        self.events.inc(('b"q',))
        for v in (0.05, 0.5, 5):
            self.latency.observe((), v)
        self.ctx.started()
        await self.ctx.stop.wait()


class FlakySource(CountingSource):
    """Fails its first two starts, then runs."""

    def __init__(self, ctx: SourceContext) -> None:
        super().__init__(ctx)
        self.attempts = 0

    async def run(self) -> None:
        self.attempts += 1
        if self.attempts <= 2:
            raise RuntimeError(f"upstream refused (attempt {self.attempts})")
        await super().run()


# Test sources with their own settings sections; "process" is the name the assertions read.
COUNTING = registry_for(process=CountingSource)
FLAKY = registry_for(process=FlakySource)


def _settings(tmp_path: Path, **kw):
    return make_settings(tmp_path, COUNTING, **kw)


async def test_metrics_serves_source_families_and_self_metrics(tmp_path: Path) -> None:
    async with serve(_settings(tmp_path), COUNTING) as c:
        s = await c.wait_for(lambda s: value(s, "collector_source_up", source="process") == 1)
        assert value(s, "demo_events_total", kind="a") == 3
        assert value(s, "demo_events_total", kind='b"q') == 1
        assert value(s, "demo_latency_seconds_bucket", le="0.1") == 1
        assert value(s, "demo_latency_seconds_bucket", le="1.0") == 2
        assert value(s, "demo_latency_seconds_bucket", le="+Inf") == 3
        assert value(s, "demo_latency_seconds_sum") == 5.55
        assert (
            value(
                s, "collector_build_info", version=__version__, python=__import__("platform").python_version()
            )
            == 1
        )
        assert value(s, "collector_state_store_resets_total") == 0
        assert value(s, "collector_event_loop_lag_seconds") is not None
        assert value(s, "process_resident_memory_bytes") > 0
        status, headers, _ = await c.get("/metrics")
        assert status == 200
        assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"


async def test_openmetrics_when_accept_asks_for_it(tmp_path: Path) -> None:
    async with serve(_settings(tmp_path), COUNTING) as c:
        await c.wait_for(lambda s: value(s, "collector_source_up", source="process") == 1)
        status, headers, body = await c.get(
            "/metrics", headers={"Accept": "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"}
        )
        assert status == 200
        assert headers["Content-Type"] == "application/openmetrics-text; version=1.0.0; charset=utf-8"
        text = body.decode()
        assert text.endswith("# EOF\n") and text.count("# EOF") == 1
        fams = {f.name: f for f in om_parse(text)}
        assert fams["demo_events"].type == "counter"
        assert {s.labels["kind"]: s.value for s in fams["demo_events"].samples} == {"a": 3, 'b"q': 1}
        assert fams["collector_source_up"].samples[0].value == 1


async def test_gzip_only_when_accepted(tmp_path: Path) -> None:
    async with serve(_settings(tmp_path), COUNTING) as c:
        await c.wait_for(lambda s: value(s, "collector_source_up", source="process") == 1)
        _, plain_headers, plain = await c.get("/metrics", headers={"Accept-Encoding": "identity"})
        assert "Content-Encoding" not in plain_headers
        assert value(parse(plain.decode()), "demo_events_total", kind="a") == 3
        _, headers, zipped = await c.get("/metrics", headers={"Accept-Encoding": "gzip, deflate"})
        assert headers["Content-Encoding"] == "gzip"
        s = parse(gzip.decompress(zipped).decode())
        assert value(s, "demo_events_total", kind="a") == 3
        _, refused_headers, _ = await c.get("/metrics", headers={"Accept-Encoding": "gzip;q=0"})
        assert "Content-Encoding" not in refused_headers


async def test_landing_page_lists_version_and_sources(tmp_path: Path) -> None:
    async with serve(_settings(tmp_path), COUNTING) as c:
        await c.wait_for(lambda s: value(s, "collector_source_up", source="process") == 1)
        status, headers, body = await c.get("/")
        page = body.decode()
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert f"collector {__version__}" in page
        assert (
            '<tr id="source-process"><td>process</td><td><span class="state running">running</span>' in page
        )
        assert 'href="metrics"' in page and 'href="health"' in page and 'href="status.json"' in page


async def test_a_failing_source_keeps_ready_200_but_strict_ready_503_until_it_recovers(
    tmp_path: Path,
) -> None:
    async with serve(_settings(tmp_path), FLAKY) as c:
        s = await c.wait_for(
            lambda s: value(s, "collector_source_errors_total", source="process", reason="RuntimeError") == 1
        )
        assert value(s, "collector_source_up", source="process") == 0
        assert value(s, "collector_source_state", source="process", state="failed") == 1
        assert value(s, "collector_source_state", source="process", state="running") == 0
        # A sidecar stays in its Service while a source fails: readiness is about the collector itself.
        status, _, body = await c.get("/health/ready")
        assert (status, json.loads(body)) == (200, {"status": "ready"})
        status, _, body = await c.get("/health/ready?strict=1")
        reply = json.loads(body)
        assert status == 503
        assert reply["status"] == "not ready"
        assert reply["reasons"] == ["source process is failed: RuntimeError: upstream refused (attempt 1)"]
        status, _, body = await c.get("/health/live")
        assert status == 200

        s = await c.wait_for(lambda s: value(s, "collector_source_up", source="process") == 1, timeout=15)
        assert value(s, "collector_source_errors_total", source="process", reason="RuntimeError") == 2
        assert value(s, "collector_source_restarts_total", source="process") == 2
        status, _, body = await c.get("/health/ready?strict=1")
        assert (status, json.loads(body)) == (200, {"status": "ready"})
        _, _, body = await c.get("/health")
        health = json.loads(body)
        assert health["version"] == __version__
        assert health["sources"]["process"]["state"] == "running"
        assert health["sources"]["process"]["restarts"] == 2
        assert health["last_error"] == "RuntimeError: upstream refused (attempt 2)"
        assert health["state_store"]["open"] is True
        assert health["uptime_seconds"] >= 0


async def test_ready_is_503_while_the_state_store_cannot_open(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    settings = make_settings(tmp_path, state_path=blocker / "state.db")
    async with serve(settings) as c:
        status, _, body = await c.get("/health/ready")
        reply = json.loads(body)
        assert status == 503
        assert reply["reasons"][0].startswith("state store not open")
        s = await c.wait_for(
            lambda s: (value(s, "collector_state_store_errors_total", operation="open") or 0) >= 1
        )
        assert (
            value(
                s, "collector_build_info", version=__version__, python=__import__("platform").python_version()
            )
            == 1
        )


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (Debian package prometheus)"
)
async def test_promtool_finds_nothing_to_complain_about(tmp_path: Path) -> None:
    async with serve(_settings(tmp_path), COUNTING) as c:
        await c.wait_for(lambda s: value(s, "collector_source_up", source="process") == 1)
        _, _, body = await c.get("/metrics")
    result = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, timeout=30)
    assert (result.returncode, result.stdout + result.stderr) == (0, b"")


async def test_a_failing_source_does_not_take_the_others_down(tmp_path: Path) -> None:
    class CountingLogs(CountingSource):
        name = "logs"

    registry = registry_for(process=FlakySource, logs=CountingLogs)
    settings = make_settings(tmp_path, registry)
    async with serve(settings, registry) as c:
        s = await c.wait_for(
            lambda s: (
                value(s, "collector_source_up", source="logs") == 1
                and value(s, "collector_source_errors_total", source="process", reason="RuntimeError") == 1
            )
        )
        assert value(s, "collector_source_up", source="process") == 0
        assert value(s, "demo_events_total", kind="a") == 3
        assert (await c.get("/health/ready"))[0] == 200
        status, _, body = await c.get("/health/ready?strict=true")
        assert status == 503
        assert json.loads(body)["reasons"] == [
            "source process is failed: RuntimeError: upstream refused (attempt 1)"
        ]
