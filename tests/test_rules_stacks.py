"""Each stack's preset on the log its REAL framework wrote (tests/fixtures/logs/stacks/, make_stacks.sh):
every request counted exactly by method and status code, every request in the duration histogram,
`route` bounded after a 500-URL and a 12,000-URL scanner burst, 5xx visible after it, and the daemon
tailing the live file shows what `collector replay` shows.

Ground truth is the client's: `truth.json` lists every request the driver sent and the status it got.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from collector.exposition import render_document
from collector.metrics import OVERFLOW, MetricState
from collector.replay import replay
from collector.rules import RuleSet
from collector.sources.logs import LogsSource
from tests.helpers import make_settings, serve, value

STACKS_DIR = Path(__file__).parent / "fixtures" / "logs" / "stacks"
STACKS = ["pino-http", "express-winston", "winston", "fastify", "fastify-routes", "structlog", "python-json-logger",
          "uvicorn", "nginx-json"]  # fmt: skip
#: Fixture folder -> preset (fastify-routes: Fastify with the req serializer docs/metrics.md recommends).
PRESET = {"fastify-routes": "fastify"}
#: Stacks whose access log carries no duration at all (uvicorn's access logger has none).
NO_DURATION = {"uvicorn"}
#: The app's 11 routes plus the constants `unmatched`, `other`, `unknown`.
MAX_ROUTES = 11 + 3
_REQ_ID = re.compile(rb'"reqId":"([^"]+)"')


_APP = {
    "/auth/login",
    "/old-page",
    "/cached",
    "/boom",
    "/unavailable",
    "/slow",
    "/health",
    "/search",
    "unmatched",
}
#: Every route value each stack may produce: its framework's templates (or the normalised URLs, which
#: give the same) plus `unmatched`; nothing else, however many URLs the scanner tried.
ROUTES = {
    **{s: {*_APP, "/api/users/:id", "/api/videos/:id", "/blog/:slug"}
       for s in ("pino-http", "express-winston", "winston", "fastify", "fastify-routes", "uvicorn", "nginx-json")},
    "structlog": {*_APP, "/api/users/{user_id}", "/api/videos/{video_id}", "/blog/{slug}"},
    "python-json-logger": {*_APP, "/api/users/<user_id>", "/api/videos/<video_id>", "/blog/<slug>",
                           "/static/<path:filename>"},  # Flask's own static route
}  # fmt: skip


def truth(stack: str) -> dict[str, Any]:
    return json.loads((STACKS_DIR / stack / "truth.json").read_text())  # type: ignore[no-any-return]


def by_method_status(requests: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    return Counter((r["method"], str(r["status"])) for r in requests)


def run_replay(path: Path, stack: str, max_series: int = 10_000) -> dict[str, list[Any]]:
    metrics = MetricState()
    rules = RuleSet(
        metrics, logging.getLogger("test.stacks"), [PRESET.get(stack, stack)], max_series=max_series
    )
    replay([str(path)], rules, 1 << 20)
    text = render_document(
        [metrics.families[n] for n in rules.family_names() if n in metrics.families], False
    )
    out: dict[str, list[Any]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


def counted(samples: dict[str, list[Any]]) -> Counter[tuple[str, str]]:
    got: Counter[tuple[str, str]] = Counter()
    for s in samples.get("http_requests_total", []):
        got[(s.labels["method"], s.labels["status_code"])] += int(s.value)
    return got


def routes(samples: dict[str, list[Any]]) -> set[str]:
    return {s.labels["route"] for fam in samples.values() for s in fam if "route" in s.labels}


def scan_lines(stack: str, urls: list[str], tag: str) -> bytes:
    """The lines one scanner request made in the fixture, repeated for each of `urls` (fresh reqIds)."""
    lines = (STACKS_DIR / stack / "access.log").read_bytes().splitlines()
    first = truth(stack)["scan"][0].encode()
    hits = [ln for ln in lines if first in ln]
    ids = {m.group(1) for ln in hits if (m := _REQ_ID.search(ln))}
    if ids:  # fastify: every line of that request (incoming, not found, completed)
        hits = [ln for ln in lines if (m := _REQ_ID.search(ln)) and m.group(1) in ids]
    out = []
    for n, url in enumerate(urls):
        for ln in hits:
            ln = ln.replace(first, url.encode())
            for rid in ids:
                ln = ln.replace(b'"reqId":"' + rid + b'"', f'"reqId":"{tag}{n}"'.encode())
            out.append(ln)
    return b"\n".join(out) + b"\n"


def normal_lines(stack: str, tag: str) -> bytes:
    """The fixture without its scanner burst, reqIds renamed so it can be appended as new requests."""
    data = (STACKS_DIR / stack / "access.log").read_bytes()
    scan = {u.encode() for u in truth(stack)["scan"]}
    scan_ids = {
        m.group(1) for ln in data.splitlines() if any(u in ln for u in scan) and (m := _REQ_ID.search(ln))
    }
    out = []
    for ln in data.splitlines():
        m = _REQ_ID.search(ln)
        if any(u in ln for u in scan) or (m and m.group(1) in scan_ids):
            continue
        if m:
            ln = ln.replace(m.group(0), b'"reqId":"' + tag.encode() + m.group(1) + b'"')
        out.append(ln)
    return b"\n".join(out) + b"\n"


def random_urls(n: int, seed: int) -> list[str]:
    rnd = random.Random(seed)
    word = lambda: "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(8))  # noqa: E731
    return [f"/{word()}/{word()}.php?x={rnd.randint(0, 10**9)}" for _ in range(n)]


@pytest.mark.parametrize("stack", STACKS)
def test_replay_counts_every_request_of_the_real_stack_exactly(stack: str) -> None:
    t = truth(stack)
    s = run_replay(STACKS_DIR / stack / "access.log", stack)
    assert counted(s) == by_method_status(t["requests"])
    n = len(t["requests"])
    if stack in NO_DURATION:
        assert "http_request_duration_seconds_count" not in s
    else:
        assert sum(x.value for x in s["http_request_duration_seconds_count"]) == n
        assert (
            value(
                s,
                "collector_log_value_errors_total",
                metric="http_request_duration_seconds",
                reason="missing",
            )
            is None
        )
    errors = sum(1 for r in t["requests"] if r["status"] >= 400)
    assert sum(x.value for x in s["http_request_errors_total"]) == errors
    # 500 scanner URLs: one `unmatched` series, never a raw URL
    got = routes(s)
    assert got == ROUTES[stack]
    # (Flask logs its built-in `/static/<path:filename>` template for the scanner's /static/*.js)
    assert value(s, "http_requests_total", method="GET", route="unmatched", status_code="404") >= 440
    for url in t["scan"][:50]:
        assert url.split("?")[0] not in got
    for word in ("tab=posts", "why-we-moved", "550e8400", "127.0.0.1"):
        assert not any(word in r for r in got)


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("max_series", [10_000, 8])
def test_a_12000_url_scan_keeps_route_bounded_and_5xx_visible(
    tmp_path: Path, stack: str, max_series: int
) -> None:
    t = truth(stack)
    log = tmp_path / "big.log"
    urls = random_urls(12_000, seed=hash(stack) & 0xFFFF)
    log.write_bytes(
        (STACKS_DIR / stack / "access.log").read_bytes()
        + scan_lines(stack, urls, "scan-")
        + normal_lines(stack, "again-")
    )
    normal = [r for r in t["requests"] if r["url"] not in set(t["scan"])]
    want = by_method_status(t["requests"]) + by_method_status(normal)
    want[("GET", "404")] += len(urls)
    s = run_replay(log, stack, max_series)
    assert counted(s) == want  # exact per method and status, whatever the series limit folded
    fives = sum(v for (_m, code), v in want.items() if code.startswith("5"))
    assert fives >= 4
    assert sum(x.value for x in s["http_requests_total"] if x.labels["status_code"].startswith("5")) == fives
    assert sum(x.value for x in s["http_request_errors_total"] if x.labels["error_class"] == "5xx") == fives
    got = routes(s) - {OVERFLOW}
    assert got <= ROUTES[stack] and len(got) <= MAX_ROUTES
    if stack not in NO_DURATION:
        assert sum(x.value for x in s["http_request_duration_seconds_count"]) == sum(want.values())
    if max_series == 8:  # the limit folded route only: method and status_code are as logged
        folded = [x for x in s["http_requests_total"] if x.labels["route"] == OVERFLOW]
        assert folded and all(
            x.labels["status_code"] != OVERFLOW and x.labels["method"] != OVERFLOW for x in folded
        )
        assert value(s, "collector_log_series_overflow_total", metric="http_requests_total", label="route")


@pytest.mark.parametrize("stack", STACKS)
async def test_the_daemon_tailing_the_live_file_shows_what_replay_shows(tmp_path: Path, stack: str) -> None:
    data = (STACKS_DIR / stack / "access.log").read_bytes()
    lines = data.splitlines(keepends=True)
    logs = tmp_path / "logs"
    logs.mkdir()
    live = logs / "app.log"
    live.write_bytes(b"")
    settings = make_settings(
        tmp_path,
        logs={
            "paths": [str(logs / "*.log")],
            "start_at": "beginning",
            "preset": [PRESET.get(stack, stack)],
            "poll_interval": 0.05,
        },
    )
    rnd = random.Random(16)
    async with serve(settings, {"logs": LogsSource}) as run:
        import asyncio

        pos = 0
        while pos < len(lines):  # the app writes while the daemon reads: chunks cut mid-line too
            step = rnd.randint(1, 120)
            chunk = b"".join(lines[pos : pos + step])
            cut = rnd.randint(0, len(chunk))
            with live.open("ab") as fh:
                fh.write(chunk[:cut])
                fh.flush()
                await asyncio.sleep(0)
                fh.write(chunk[cut:])
            pos += step
            await asyncio.sleep(rnd.choice([0, 0.01, 0.05]))

        def done(s: Any) -> bool:
            seen = sum(value(s, "collector_log_lines_total", result=r) or 0 for r in ("parsed", "unmatched"))
            return seen == len(lines)

        daemon = await run.wait_for(done, timeout=30)
    want = run_replay(live, stack)
    for name in ("http_requests_total", "http_request_errors_total", "http_request_duration_seconds_bucket",
                 "http_request_duration_seconds_sum", "http_response_size_bytes_count"):  # fmt: skip
        assert {(tuple(sorted(x.labels.items())), x.value) for x in daemon.get(name, [])} == {
            (tuple(sorted(x.labels.items())), x.value) for x in want.get(name, [])
        }, name
    assert counted(daemon) == by_method_status(truth(stack)["requests"])


async def test_a_fastify_join_pending_at_a_restart_counts_each_request_once(tmp_path: Path) -> None:
    """Stopped between `incoming request` and `request completed`: the pending half is checkpointed
    with the offsets, so after the restart the request is counted once, with its method."""
    lines = (STACKS_DIR / "fastify" / "access.log").read_bytes().splitlines(keepends=True)
    cuts = [i + 1 for i, ln in enumerate(lines) if b'"incoming request"' in ln][::60]
    logs = tmp_path / "logs"
    logs.mkdir()
    live = logs / "app.log"
    live.write_bytes(b"")
    settings = make_settings(
        tmp_path,
        logs={
            "paths": [str(logs / "*.log")],
            "start_at": "beginning",
            "preset": ["fastify"],
            "poll_interval": 0.05,
        },
    )
    pos = 0
    for cut in [*cuts, len(lines)]:
        with live.open("ab") as fh:
            fh.write(b"".join(lines[pos:cut]))
        pos = cut
        async with serve(settings, {"logs": LogsSource}) as run:
            s = await run.wait_for(
                lambda s, n=cut: (
                    sum(value(s, "collector_log_lines_total", result=r) or 0 for r in ("parsed", "unmatched"))
                    == n
                ),
                timeout=20,
            )
    assert len(cuts) >= 5
    assert counted(s) == by_method_status(truth("fastify")["requests"])
    assert value(s, "collector_log_join_total", outcome="end_without_start") is None
    assert value(s, "collector_log_join_total", outcome="joined") == len(truth("fastify")["requests"])


@pytest.mark.parametrize("stack", STACKS)
def test_the_exposition_after_a_scan_is_promtool_clean(tmp_path: Path, stack: str) -> None:
    import subprocess

    log = tmp_path / "scan.log"
    log.write_bytes(
        (STACKS_DIR / stack / "access.log").read_bytes() + scan_lines(stack, random_urls(2000, 1), "s-")
    )
    metrics = MetricState()
    rules = RuleSet(metrics, logging.getLogger("test.stacks"), [PRESET.get(stack, stack)], max_series=8)
    replay([str(log)], rules, 1 << 20)
    text = render_document(
        [metrics.families[n] for n in rules.family_names() if n in metrics.families], False
    )
    out = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("stack", ["fastify", "express-winston"])
async def test_the_daemon_matches_replay_through_a_12000_url_scan_at_a_tight_series_limit(
    tmp_path: Path, stack: str
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    live = logs / "app.log"
    data = (
        (STACKS_DIR / stack / "access.log").read_bytes()
        + scan_lines(stack, random_urls(12_000, 7), "scan-")
        + normal_lines(stack, "again-")
    )
    n = len(data.splitlines())
    live.write_bytes(b"")
    settings = make_settings(
        tmp_path,
        logs={"paths": [str(logs / "*.log")], "start_at": "beginning", "preset": [PRESET.get(stack, stack)], "poll_interval": 0.05,
              "max_series": 8},
    )  # fmt: skip
    async with serve(settings, {"logs": LogsSource}) as run:
        import asyncio

        step = len(data) // 7 + 1
        for pos in range(0, len(data), step):  # seven writes, cut anywhere
            with live.open("ab") as fh:
                fh.write(data[pos : pos + step])
            await asyncio.sleep(0.05)
        daemon = await run.wait_for(
            lambda s: (
                sum(value(s, "collector_log_lines_total", result=r) or 0 for r in ("parsed", "unmatched"))
                == n
            ),
            timeout=60,
        )
    want = run_replay(live, stack, max_series=8)
    for name in ("http_requests_total", "http_request_errors_total", "http_request_duration_seconds_count",
                 "collector_log_series_overflow_total"):  # fmt: skip
        assert {(tuple(sorted(x.labels.items())), x.value) for x in daemon.get(name, [])} == {
            (tuple(sorted(x.labels.items())), x.value) for x in want.get(name, [])
        }, name
    assert any(x.labels["route"] == OVERFLOW for x in daemon["http_requests_total"])
