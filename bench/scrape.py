"""Scrape and memory benchmarks: /metrics over HTTP vs prometheus_client's generate_latest; RSS at 100k series.

Run through `bench/run.py`; each function returns a dict of figures for the table.
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import statistics
import subprocess
import sys
import time
from types import SimpleNamespace
from typing import Any

import aiohttp
import psutil
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from collector.exposition import render
from collector.metrics import MetricState
from collector.selfmetrics import SelfMetrics
from collector.server import add_routes

BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
ROUTES = 1000


def populate(counters: int = 10_000, histograms: int = 1_000) -> tuple[MetricState, CollectorRegistry]:
    """The same values in our metric state and in a prometheus_client registry."""
    state = MetricState()
    c = state.counter(
        "http_requests_total", "Requests.", ["method", "route", "status_code"], max_series=10**6
    )
    h = state.histogram(
        "http_request_duration_seconds", "Latency.", ["method", "route"], buckets=BUCKETS, max_series=10**6
    )
    reg = CollectorRegistry()
    pc = Counter("http_requests", "Requests.", ["method", "route", "status_code"], registry=reg)
    ph = Histogram(
        "http_request_duration_seconds", "Latency.", ["method", "route"], buckets=BUCKETS, registry=reg
    )
    for i in range(counters):
        key = ("GET" if i % 3 else "POST", f"/api/r{i % ROUTES}", str(200 + i // ROUTES))
        c.inc(key, i + 1)
        pc.labels(*key).inc(i + 1)
    for i in range(histograms):
        key = ("GET", f"/api/r{i}")
        for v in (0.003, 0.2, 3.0, 0.04):
            h.observe(key, v)
            ph.labels(*key).observe(v)
    return state, reg


def _median_ms(fn: Any, runs: int) -> float:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1000


def change_every_series(state: MetricState) -> None:
    """Give every series a new value, as if each had been updated since the last scrape (the worst case)."""
    for fam in state.families.values():
        if fam.kind == "histogram":
            for cells in fam.series.values():
                cells[0] += 1
        else:
            for key in fam.series:
                fam.series[key] += 1
        fam.touch()


async def _http_scrape_ms(state: MetricState, runs: int, change: bool) -> tuple[float, int, str]:
    """Median time of a scrape of the collector's own /metrics handler over HTTP; `change`: every
    series changes between scrapes, else none (each family's text is then reused as it is)."""
    runtime = SimpleNamespace(metrics=state, self_metrics=SelfMetrics(), sources=[])  # what the handler reads
    app = web.Application()
    add_routes(app, runtime)  # type: ignore[arg-type]
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    times = []
    body = b""
    async with aiohttp.ClientSession() as session:
        for _ in range(runs + 1):
            if change:
                change_every_series(state)  # outside the timed request
            began = time.perf_counter()
            async with session.get(
                f"http://{host}:{port}/metrics", headers={"Accept-Encoding": "identity"}
            ) as r:
                body = await r.read()
            times.append(time.perf_counter() - began)
    await runner.cleanup()
    return statistics.median(times[1:]) * 1000, len(body), body.decode()


def bench_scrape(runs: int = 7) -> dict[str, Any]:
    state, reg = populate()
    http_ms, size, text = asyncio.run(_http_scrape_ms(state, runs, change=True))
    http_idle_ms, _, _ = asyncio.run(_http_scrape_ms(state, runs, change=False))

    times = []
    for _ in range(runs):
        change_every_series(state)
        began = time.perf_counter()
        render(state.families.values())
        times.append(time.perf_counter() - began)
    render_ms = statistics.median(times) * 1000
    client_ms = _median_ms(lambda: generate_latest(reg), max(3, runs // 2))
    samples = sum(len(f.samples) for f in text_string_to_metric_families(text))
    promtool = "skipped (promtool not installed)"
    if shutil.which("promtool"):
        r = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True)
        promtool = (
            "clean"
            if r.returncode == 0 and not (r.stdout + r.stderr).strip()
            else (r.stdout + r.stderr).decode()[:200]
        )
    return {
        "http_ms": http_ms,
        "http_idle_ms": http_idle_ms,
        "render_ms": render_ms,
        "client_python_ms": client_ms,
        "ratio": client_ms / render_ms,
        "bytes": size,
        "samples": samples,
        "promtool": promtool,
    }


def _memory_child(series: int) -> None:
    """Runs in a fresh interpreter: RSS before, with `series` live series, and after they expire."""
    proc = psutil.Process()
    state = MetricState()
    fam = state.counter("user_events_total", "Events.", ["route", "status_code"], max_series=series)
    gc.collect()
    base = proc.memory_info().rss
    for i in range(series):
        fam.inc((f"/api/items/{i}", "200"))
    render([fam])  # the label-text caches are part of the live cost
    live = proc.memory_info().rss
    fam.clear()
    gc.collect()
    after = proc.memory_info().rss
    print(base, live, after)


def bench_memory(series: int = 100_000) -> dict[str, Any]:
    code = f"import sys; sys.path.insert(0, {os.getcwd()!r}); from bench.scrape import _memory_child; _memory_child({series})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    base, live, after = (int(x) for x in out.split())
    return {
        "series": series,
        "rss_base_mb": base / 2**20,
        "rss_live_mb": live / 2**20,
        "rss_after_mb": after / 2**20,
    }
