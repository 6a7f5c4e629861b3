"""Each preset on lines its real library wrote (tests/fixtures/logs/<preset>/sample.log, see README there),
fed through the running collector (tailer + rules engine), every catalog metric checked exactly.

Expected values come from an independent oracle: plain `json.loads` of the sample and the preset's
documented field mapping, summed in file order (so float sums match bit for bit).
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from collector.sources.logs import LogsSource
from tests.helpers import make_settings, serve, value

FIXTURES = Path(__file__).parent / "fixtures" / "logs"
SECONDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
BYTES = [100.0, 1e3, 1e4, 1e5, 1e6, 1e7]
LONG = [1.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0]
#: Raw paths in the samples -> the route label the presets must produce (ids, uuids, hashes collapsed).
ROUTES = {
    "/api/users/123": "/api/users/:id",
    "/api/users/456": "/api/users/:id",
    "/api/videos/550e8400-e29b-41d4-a716-446655440000": "/api/videos/:id",
    "/api/videos/550e8400-e29b-41d4-a716-446655440001": "/api/videos/:id",
    "/static/app.3f9a2b1c4d5e6f708192a3b4c5d6e7f8.js": "/static/app.:hash.js",
}


def route(raw: str, status: int = 200, template: bool = False) -> str:
    """The preset's route label: a 404/405 with no logged template is the one `unmatched` series."""
    if status in (404, 405) and not template:
        return "unmatched"
    path = raw.split("?")[0]
    return ROUTES.get(path, path)


def get(d: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        if not isinstance(d, dict):
            return None
        d = d.get(part)  # type: ignore[assignment]
    return d


# preset -> line -> (method, raw route, status, duration in seconds, size in bytes or None) or None
Oracle = Callable[[dict[str, Any]], tuple[str, str, int, float, float | None] | None]
ORACLES: dict[str, Oracle] = {
    "winston": lambda d: (d["method"], d["route"], d["status"], float(d["duration_ms"]) * 0.001,
                          float(d["content_length"])) if d.get("message") == "http_request" else None,
    "pino-http": lambda d: (d["req"]["method"], d["req"]["url"], d["res"]["statusCode"], float(d["responseTime"]) * 0.001,
                            float(d["res"]["headers"]["content-length"])) if "res" in d else None,
    "express-winston": lambda d: (get(d, "meta.req.method"), get(d, "meta.req.originalUrl"), get(d, "meta.res.statusCode"),
                                  float(get(d, "meta.responseTime")) * 0.001, None),
    "structlog": lambda d: (d["method"], d["path"], d["status_code"], float(d["duration_ms"]) * 0.001,
                            float(d["response_size"])) if d.get("event") == "request_finished" else None,
    "python-json-logger": lambda d: (d["method"], d["path"], d["status_code"], float(d["duration_ms"]) * 0.001,
                                     float(d["response_size"])) if d.get("message") == "request_finished" else None,
    "nginx-json": lambda d: (d["request_method"], d["request_uri"], int(d["status"]), float(d["request_time"]),
                             float(d["body_bytes_sent"])),
}  # fmt: skip


def expected_http(preset: str) -> dict[str, Any]:
    requests: dict[tuple[str, ...], float] = defaultdict(float)
    errors: dict[tuple[str, ...], float] = defaultdict(float)
    durations: dict[tuple[str, ...], list[float]] = defaultdict(list)
    sizes: dict[tuple[str, ...], list[float]] = defaultdict(list)
    for raw in (FIXTURES / preset / "sample.log").read_bytes().splitlines():
        got = ORACLES[preset](json.loads(raw))
        if got is None:
            continue
        method, path, status, seconds, size = got
        r = route(path, status, template=preset == "winston")  # only winston's sample logs `route`
        requests[(method, r, str(status))] += 1
        if status >= 400:
            errors[(method, r, f"{str(status)[0]}xx")] += 1
        durations[(method, r)].append(seconds)
        if size is not None:
            sizes[(method, r)].append(size)
    return {"requests": requests, "errors": errors, "durations": durations, "sizes": sizes}


def assert_histogram(
    samples: Any, name: str, labels: dict[str, str], observed: list[float], bounds: list[float]
) -> None:
    total = 0.0
    for v in observed:
        total += v  # same order as the engine: the sums match exactly
    buckets = samples.get(f"{name}_bucket", [])
    for le in bounds:
        want = sum(1 for v in observed if v <= le)
        got = [
            s.value
            for s in buckets
            if float(s.labels["le"]) == le and {k: v for k, v in s.labels.items() if k != "le"} == labels
        ]
        assert got == [want], (name, labels, le, got, want)
    assert value(samples, f"{name}_bucket", **labels, le="+Inf") == len(observed)
    assert value(samples, f"{name}_count", **labels) == len(observed)
    assert value(samples, f"{name}_sum", **labels) == total


def series(samples: Any, name: str) -> dict[tuple[str, ...], float]:
    return {tuple(s.labels.values()): s.value for s in samples.get(name, [])}


async def run_collector(tmp_path: Path, preset: str, sample: str) -> Any:
    logs = tmp_path / "logs"
    logs.mkdir()
    shutil.copy(FIXTURES / sample / "sample.log", logs / "app.log")
    n = len((logs / "app.log").read_bytes().splitlines())
    settings = make_settings(
        tmp_path,
        logs={
            "paths": [str(logs / "*.log")],
            "start_at": "beginning",
            "preset": [preset],
            "poll_interval": 0.1,
        },
    )
    async with serve(settings, {"logs": LogsSource}) as run:

        def done(s: Any) -> bool:
            seen = sum(value(s, "collector_log_lines_total", result=r) or 0 for r in ("parsed", "unmatched"))
            return seen == n

        return await run.wait_for(done, timeout=20)


@pytest.mark.parametrize("preset", list(ORACLES))
async def test_preset_turns_real_library_lines_into_exact_http_metrics(tmp_path: Path, preset: str) -> None:
    samples = await run_collector(tmp_path, preset, preset)
    want = expected_http(preset)
    assert series(samples, "http_requests_total") == want["requests"]
    assert series(samples, "http_request_errors_total") == want["errors"]
    assert {k for k in series(samples, "http_request_duration_seconds_count")} == set(want["durations"])
    for (method, path), observed in want["durations"].items():
        assert_histogram(
            samples, "http_request_duration_seconds", {"method": method, "route": path}, observed, SECONDS
        )
    assert {k for k in series(samples, "http_response_size_bytes_count")} == set(want["sizes"])
    for (method, path), observed in want["sizes"].items():
        assert_histogram(
            samples, "http_response_size_bytes", {"method": method, "route": path}, observed, BYTES
        )
    # no personal data or raw URLs in any label value
    text = json.dumps([s.labels for fam in samples.values() for s in fam])
    for leak in ("127.0.0.1", "192.0.2.1", "tab=posts", "550e8400", "3f9a2b1c"):
        assert leak not in text


async def test_winston_request_start_lines_drive_the_in_flight_gauge(tmp_path: Path) -> None:
    samples = await run_collector(tmp_path, "winston", "winston")
    # the sample logs request_start then http_request for each of its 12 requests, one at a time
    assert value(samples, "http_requests_in_flight") == 0
    assert value(samples, "collector_log_lines_total", result="parsed") == 24


async def test_app_events_preset_counts_auth_security_websocket_and_content_exactly(tmp_path: Path) -> None:
    samples = await run_collector(tmp_path, "app-events", "app-events")
    assert series(samples, "auth_attempts_total") == {
        ("login", "success"): 1,
        ("login", "failed"): 2,
        ("jwt", "success"): 1,
    }
    assert value(samples, "auth_sessions_active") == 1  # two created, one destroyed
    assert series(samples, "user_registrations_total") == {("google",): 1, ("direct",): 1}
    assert series(samples, "security_events_total") == {
        ("sql_injection", "critical"): 2,
        ("directory_traversal", "high"): 1,
    }
    assert series(samples, "rate_limit_hits_total") == {("/auth/login",): 1, ("/api/users/:id",): 1}
    assert series(samples, "suspicious_activity_total") == {("credential_stuffing",): 1}
    assert value(samples, "websocket_connections_total") == 2
    assert value(samples, "websocket_connections_active") == 1
    assert series(samples, "websocket_messages_total") == {
        ("inbound", "chat"): 1,
        ("outbound", "chat"): 1,
        ("inbound", "ping"): 1,
    }
    assert_histogram(samples, "websocket_connection_duration_seconds", {}, [65000 * 0.001], LONG)
    assert series(samples, "content_access_total") == {
        ("markdown", "public"): 1,
        ("video", "premium"): 1,
        ("video", "public"): 1,
    }
    assert series(samples, "video_streams_total") == {("hd",): 1, ("sd",): 1}
    assert_histogram(samples, "video_stream_duration_seconds", {}, [125000 * 0.001, 4200 * 0.001], LONG)
    text = json.dumps([s.labels for fam in samples.values() for s in fam])
    for leak in ("u1", "203.0.113", "198.51.100", "@example.com", "v123", "c1"):
        assert leak not in text


async def test_rule_metrics_survive_a_restart_and_each_line_counts_once(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    sample = (FIXTURES / "app-events" / "sample.log").read_bytes()
    (logs / "app.log").write_bytes(sample)
    settings = make_settings(
        tmp_path,
        logs={
            "paths": [str(logs / "*.log")],
            "start_at": "beginning",
            "preset": ["app-events"],
            "poll_interval": 0.1,
        },
    )
    async with serve(settings, {"logs": LogsSource}) as run:
        await run.wait_for(lambda s: value(s, "collector_log_lines_total", result="parsed") == 26)
    with (logs / "app.log").open("ab") as fh:
        fh.write(sample)  # written while the collector was down
    async with serve(settings, {"logs": LogsSource}) as run:
        s = await run.wait_for(
            lambda s: value(s, "auth_attempts_total", method="login", outcome="failed") == 4
        )
        assert value(s, "security_events_total", event_type="sql_injection", severity="critical") == 4
        assert value(s, "websocket_connections_active") == 2
        assert value(s, "video_stream_duration_seconds_count") == 4
