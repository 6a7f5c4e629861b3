"""HTTP face: /metrics (text, OpenMetrics, gzip), the status page (/, /status.json) and the health endpoints."""

from __future__ import annotations

import asyncio
import gzip
import platform
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from collector import __version__
from collector.exposition import content_type, render, wants_openmetrics
from collector.routes import Route, RoutePolicies

if TYPE_CHECKING:
    from collector.runtime import Runtime

__all__ = ["accepts_gzip", "add_routes", "routes"]

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


def add_routes(app: web.Application, rt: Runtime, policies: RoutePolicies | None = None) -> None:
    """Register the collector's own routes, bound to the runtime, with their declarations in `policies`."""
    table = policies if policies is not None else RoutePolicies()
    for route in routes(rt):
        table.add(app.router, route)


def routes(rt: Runtime) -> list[Route]:
    """The collector's own routes, bound to the runtime: each declares its auth policy and class."""

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

    async def ready(request: web.Request) -> web.Response:
        reasons = not_ready_reasons(rt, strict=_truthy(request.query.get("strict")))
        if reasons:
            return web.json_response({"status": "not ready", "reasons": reasons}, status=503)
        return web.json_response({"status": "ready"})

    async def health(_request: web.Request) -> web.Response:
        return web.json_response(summary(rt))

    def _status(request: web.Request) -> dict[str, Any]:
        from collector.status import status_data  # the status page: loaded when first asked for

        paths = [r.canonical for r in request.app.router.resources()]
        return status_data(rt, paths, not_ready_reasons(rt))

    async def landing(request: web.Request) -> web.Response:
        from collector.status import render_html

        return web.Response(
            text=render_html(_status(request)),
            content_type="text/html",
            headers={"Cache-Control": "no-store"},
        )

    async def status_json(request: web.Request) -> web.Response:
        return web.json_response(_status(request), headers={"Cache-Control": "no-store"})

    return [
        Route("GET", "/", landing, auth="basic"),
        Route("GET", "/status.json", status_json, auth="basic"),
        Route("GET", "/metrics", metrics, auth="basic", kind="metrics"),
        # Readiness and /health carry error details: behind auth. Liveness says "ok" and nothing else:
        # kubelet and load balancers probe it without credentials.
        Route("GET", "/health", health, auth="basic", kind="health"),
        Route("GET", "/health/live", live, auth="public", kind="health"),
        Route("GET", "/health/ready", ready, auth="basic", kind="health"),
    ]


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
    # First the writes in flight (`scrape_ready`): a scrape that took now would only queue behind them,
    # and the scrapes that wait together then share one write. Their errors are not this scrape's.
    waits = [
        w for source, ctx in rt.sources if ctx.restored.is_set() and (w := source.scrape_ready()) is not None
    ]
    if waits:
        await asyncio.wait(waits)
    for source, ctx in rt.sources:
        if not ctx.restored.is_set():
            hidden.update(source.held_families())
            continue
        write = source.before_scrape()
        if write is not None:
            writes.append(write)
    families = rt.metrics.families.values()
    body = render([f for f in families if f.name not in hidden] if hidden else families, openmetrics)
    if writes:
        results = await asyncio.gather(*writes, return_exceptions=True)
        if any(isinstance(r, BaseException) for r in results):
            rt.self_metrics.store_errors.labels("scrape_checkpoint").inc()
    return body.encode() + rt.self_metrics.render(openmetrics)


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("", "1", "true", "yes", "on")


def not_ready_reasons(rt: Runtime, strict: bool = False) -> list[str]:
    """Why the collector is not ready; empty when it is.

    A sidecar is ready when the collector itself can serve: its state store is open (and, being asked,
    its HTTP server is up). An outside system being down (the app, Stripe, GitHub, a WebSocket target)
    never makes it unready, or a sidecar would take its app's pod out of the Service exactly when the
    app is in trouble. `strict` also requires every source to be running without problems.
    """
    reasons = []
    if not rt.store.is_open:
        reasons.append(f"state store not open: {rt.store.last_error or 'opening'}")
    if strict:
        for _source, ctx in rt.sources:
            status = ctx.status
            if status.state == "running":
                continue
            detail = status.reasons or (
                [status.last_error] if status.last_error and status.state == "failed" else []
            )
            reasons.append(
                f"source {ctx.name} is {status.state}" + (f": {'; '.join(detail)}" if detail else "")
            )
    return reasons


def summary(rt: Runtime) -> dict[str, Any]:
    reasons = not_ready_reasons(rt)
    errors = [
        (ctx.status.last_error_at, ctx.status.last_error) for _s, ctx in rt.sources if ctx.status.last_error
    ]
    states = [ctx.status.state for _s, ctx in rt.sources]
    return {
        "status": "ready" if not reasons else "not ready",
        "reasons": reasons,
        # The worst source state, for a glance: ok (all running), degraded, or failed.
        "sources_status": "failed"
        if "failed" in states
        else "degraded"
        if any(st != "running" for st in states)
        else "ok",
        "strict_reasons": not_ready_reasons(rt, strict=True),
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
