"""HTTP face: /metrics (text, OpenMetrics, gzip), the landing page and the health endpoints."""

from __future__ import annotations

import asyncio
import gzip
import html
import platform
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from collector import __version__
from collector.exposition import content_type, render, wants_openmetrics

if TYPE_CHECKING:
    from collector.app import Runtime

__all__ = ["accepts_gzip", "add_routes"]

# Compressing a large exposition takes milliseconds; past this size it moves off the event loop.
_GZIP_INLINE_LIMIT = 64 * 1024


def accepts_gzip(header: str | None) -> bool:
    """True when Accept-Encoding allows gzip (a `q=0` refuses it)."""
    if not header:
        return False
    for part in header.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def add_routes(app: web.Application, rt: Runtime) -> None:
    """Register the collector's own routes, bound to the runtime."""

    async def metrics(request: web.Request) -> web.Response:
        began = time.perf_counter()
        openmetrics = wants_openmetrics(request.headers.get("Accept"))
        body = await durable_render(rt, openmetrics)
        headers = {
            "Content-Type": content_type(openmetrics),
            "Vary": "Accept, Accept-Encoding",
            "Cache-Control": "no-store",
        }
        if accepts_gzip(request.headers.get("Accept-Encoding")):
            if len(body) > _GZIP_INLINE_LIMIT:
                body = await asyncio.to_thread(gzip.compress, body, 1)
            else:
                body = gzip.compress(body, 1)
            headers["Content-Encoding"] = "gzip"
        rt.self_metrics.scrape_duration.set(time.perf_counter() - began)
        return web.Response(body=body, headers=headers)

    async def live(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def ready(_request: web.Request) -> web.Response:
        reasons = not_ready_reasons(rt)
        if reasons:
            return web.json_response({"status": "not ready", "reasons": reasons}, status=503)
        return web.json_response({"status": "ready"})

    async def health(_request: web.Request) -> web.Response:
        return web.json_response(summary(rt))

    async def landing(_request: web.Request) -> web.Response:
        return web.Response(text=landing_page(rt), content_type="text/html")

    app.add_routes(
        [
            web.get("/", landing),
            web.get("/metrics", metrics),
            web.get("/health", health),
            web.get("/health/live", live),
            web.get("/health/ready", ready),
        ]
    )


async def durable_render(rt: Runtime, openmetrics: bool) -> bytes:
    """The exposition, holding no restored counter before its restore and only values already durable.

    A counter served and then lost in a crash would come back lower after the restart, which
    Prometheus reads as a reset (`increase()` then counts everything again). So a source's
    `held_families()` are left out until its `ctx.restored` is set, and each source's
    `before_scrape()` (which queues a write of the state the served values come from) is called right
    before the render, with no await in between; the response waits for those writes. If a write
    fails (disk full), the values are served anyway and the failure is counted: the counts stay
    visible, and only a crash during the fault can then take back what was served.
    """
    hidden: set[str] = set()
    writes: list[asyncio.Future[None]] = []
    for source, ctx in rt.sources:
        if not ctx.restored.is_set():
            held = getattr(source, "held_families", None)
            hidden.update(held() if held is not None else ())
            continue
        hook = getattr(source, "before_scrape", None)
        write = hook() if hook is not None else None
        if write is not None:
            writes.append(write)
    families = rt.metrics.families.values()
    body = render([f for f in families if f.name not in hidden] if hidden else families, openmetrics)
    if writes:
        results = await asyncio.gather(*writes, return_exceptions=True)
        if any(isinstance(r, BaseException) for r in results):
            rt.self_metrics.store_errors.labels("scrape_checkpoint").inc()
    return body.encode() + rt.self_metrics.render(openmetrics)


def not_ready_reasons(rt: Runtime) -> list[str]:
    reasons = []
    if not rt.store.is_open:
        reasons.append(f"state store not open: {rt.store.last_error or 'opening'}")
    for _source, ctx in rt.sources:
        status = ctx.status
        if status.state != "running":
            detail = f": {status.last_error}" if status.last_error and status.state == "failed" else ""
            reasons.append(f"source {ctx.name} is {status.state}{detail}")
    return reasons


def summary(rt: Runtime) -> dict[str, Any]:
    reasons = not_ready_reasons(rt)
    errors = [
        (ctx.status.last_error_at, ctx.status.last_error) for _s, ctx in rt.sources if ctx.status.last_error
    ]
    return {
        "status": "ready" if not reasons else "not ready",
        "reasons": reasons,
        "version": __version__,
        "python": platform.python_version(),
        "uptime_seconds": round(rt.clock() - rt.started_at, 3),
        "state_store": {
            "path": str(rt.store.path),
            "open": rt.store.is_open,
            "last_error": rt.store.last_error,
            "resets": rt.store.resets,
        },
        "sources": {ctx.name: ctx.status.as_dict() for _s, ctx in rt.sources},
        "last_error": max(errors, key=lambda e: e[0] or 0)[1] if errors else None,
    }


def landing_page(rt: Runtime) -> str:
    rows = (
        "".join(
            f"<tr><td>{html.escape(ctx.name)}</td><td>{html.escape(ctx.status.state)}</td>"
            f"<td>{html.escape(ctx.status.last_error or '')}</td></tr>"
            for _s, ctx in rt.sources
        )
        or '<tr><td colspan="3">no source is enabled: see the README for COLLECTOR_* settings</td></tr>'
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>collector</title></head>
<body>
<h1>collector {html.escape(__version__)}</h1>
<p>Prometheus sidecar exporter. Python {html.escape(platform.python_version())}.</p>
<ul>
<li><a href="metrics">/metrics</a></li>
<li><a href="health">/health</a> (<a href="health/ready">ready</a>, <a href="health/live">live</a>)</li>
</ul>
<h2>Sources</h2>
<table border="1" cellpadding="4"><tr><th>source</th><th>state</th><th>last error</th></tr>{rows}</table>
</body></html>
"""
