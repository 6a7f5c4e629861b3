"""The WebSocket source: periodic and persistent probes per configured target, and a `/probe` endpoint.

Each target runs in its own task, so a slow or hung target never delays another; every probe is bounded
by its timeout and its errors become metrics, never exceptions that reach the supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from collector.exposition import content_type, render_document, wants_openmetrics
from collector.logsetup import LogFirst
from collector.metrics import Family, MetricState
from collector.routes import Route
from collector.settings import WebSocketSettings, WebSocketTarget
from collector.source import SourceBase, SourceContext
from collector.sources.websocket.logic import (
    PHASES,
    REASONS,
    PhaseClock,
    ProbeResult,
    allowed,
    classify,
    normalize_ws_url,
)
from collector.sources.websocket.probe import Plan, exchange, hold, open_ws, probe_once

__all__ = ["ProbeMetrics", "WebSocketSource"]

#: Ping round trips from loopback (sub-millisecond) to a distant, loaded server (seconds).
RTT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: `/probe` request outcomes (`collector_websocket_probe_requests_total{result}`).
PROBE_RESULTS = ("success", "failure", "forbidden", "busy", "bad_request")


#: How a degraded reason words each failure reason ("ws://app:3000/ws refused: ...").
_WHAT = {
    "dns": "does not resolve",
    "refused": "refused",
    "connect": "unreachable",
    "timeout": "timed out",
    "tls": "failed TLS",
    "handshake": "failed the upgrade",
    "closed": "closed the connection",
    "unexpected_reply": "sent an unexpected reply",
    "error": "could not be probed",
}


class ProbeMetrics:
    """The `probe_websocket_*` families in one `MetricState` (the shared one, or a `/probe` scratch one)."""

    def __init__(self, m: MetricState) -> None:
        self.success = m.gauge(
            "probe_websocket_success",
            "1 if the last probe succeeded (persistent: connected and answering pings).",
            ["target"],
        )
        self.duration = m.gauge(
            "probe_websocket_duration_seconds",
            "Duration of each phase of the last probe or connection attempt; 0 for phases not reached.",
            ["target", "phase"],
        )
        self.status = m.gauge(
            "probe_websocket_status_code",
            "HTTP status of the last upgrade response (101 on success); 0 when none came.",
            ["target"],
        )
        self.rtt = m.histogram(
            "probe_websocket_ping_rtt_seconds",
            "WebSocket ping to pong round trip.",
            ["target"],
            buckets=RTT_BUCKETS,
        )
        self.failures = m.counter(
            "probe_websocket_failures_total",
            "Failed probes, connection attempts and drops by reason.",
            ["target", "reason"],
        )
        self.drops = m.counter(
            "probe_websocket_connection_drops_total",
            "Persistent connections lost after they were established (server close or unanswered ping).",
            ["target"],
        )
        self.connected = m.gauge(
            "probe_websocket_connected",
            "1 while the persistent connection is open (persistent mode).",
            ["target"],
        )
        self.cert_expiry = m.gauge(
            "probe_ssl_earliest_cert_expiry",
            "Earliest NotAfter of the certificates the wss:// server sent, Unix seconds.",
            ["target"],
        )

    def init(self, label: str, persistent: bool) -> None:
        """Series that exist before the first probe, so `rate()` and absence alerts work from the start."""
        for reason in REASONS:
            self.failures.inc((label, reason), 0)
        self.success.set((label,), 0)
        if persistent:
            self.drops.inc((label,), 0)
            self.connected.set((label,), 0)

    def record(self, label: str, result: ProbeResult) -> None:
        """Write one probe's (or connection attempt's) outcome."""
        self.success.set((label,), 1 if result.success else 0)
        for phase in PHASES:
            self.duration.set((label, phase), result.phases[phase])
        self.status.set((label,), result.status_code)
        if result.ping_rtt is not None:
            self.rtt.observe((label,), result.ping_rtt)
        if result.cert_expiry is not None:
            self.cert_expiry.set((label,), result.cert_expiry)
        if result.reason is not None:
            self.failures.inc((label, result.reason))


class WebSocketSource(SourceBase):
    """Probes `COLLECTOR_WEBSOCKET__TARGETS`; serves `/probe?target=` for the multi-target pattern."""

    name = "websocket"
    #: `collector_source_errors_total{reason}` values, at 0 from start-up.
    error_reasons = ("probe_exception",)

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        self.settings: WebSocketSettings = ctx.settings
        s = self.settings
        token = s.token.get_secret_value() if s.token is not None else None
        self.plans = [Plan(t, t.interval or s.interval, t.timeout or s.timeout, token) for t in s.targets]
        self.metrics = ProbeMetrics(ctx.metrics)
        self.requests: Family = ctx.metrics.counter(
            "collector_websocket_probe_requests_total", "/probe requests by result.", ["result"]
        )
        for result in PROBE_RESULTS:
            self.requests.inc((result,), 0)
        for plan in self.plans:
            self.metrics.init(plan.label, plan.target.mode == "persistent")
        # Bounds concurrent /probe work; requests beyond it are refused, not queued.
        self.probe_slots = asyncio.Semaphore(s.probe_concurrency)
        self.log_first = LogFirst(ctx.log)
        self._urls = {p.label: p.target.url for p in self.plans}  # degraded reasons name the URL

    def routes(self) -> list[Route]:
        return [Route("GET", "/probe", self.handle_probe, auth="basic", kind="probe")]

    async def run(self) -> None:
        tasks = [
            asyncio.create_task(
                (self._persistent if p.target.mode == "persistent" else self._periodic)(p),
                name=f"websocket-{p.label}",
            )
            for p in self.plans
        ]
        self.ctx.started()
        try:
            await self.ctx.stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- periodic ---------------------------------------------------------------------------------
    async def _periodic(self, plan: Plan) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not self.ctx.stop.is_set():
            result = await self._guarded(probe_once, plan)
            self._report(plan.label, result)
            # Fixed rate: a slow probe does not push later ones back; a missed slot is skipped.
            next_at += plan.interval
            now = loop.time()
            if next_at < now:
                next_at = now
            if await self.ctx.sleep(next_at - now):
                return

    async def _guarded(self, fn: Callable[[Plan], Awaitable[ProbeResult]], plan: Plan) -> ProbeResult:
        try:
            return await fn(plan)
        except Exception as exc:  # a bug must not stop the target's loop
            self.ctx.error("probe_exception", f"{plan.label}: {exc}")
            self.ctx.log.exception("websocket probe raised", extra={"target": plan.label})
            return ProbeResult(reason="error", detail=f"{type(exc).__name__}: {exc}")

    # -- persistent -------------------------------------------------------------------------------
    async def _persistent(self, plan: Plan) -> None:
        label = plan.label
        first_backoff = min(1.0, plan.interval)
        backoff = first_backoff
        while not self.ctx.stop.is_set():
            result = ProbeResult()
            clock = PhaseClock(result)
            ws = None
            try:
                async with asyncio.timeout(plan.timeout):
                    ws = await open_ws(plan, clock)
                    if plan.target.send is not None:
                        clock.begin("exchange")
                        await exchange(ws, plan.target, result)
                clock.finish()
                result.success = True
            except Exception as exc:
                clock.finish()
                result.reason = classify(exc, clock.phase, result.unexpected)
                result.detail = f"{type(exc).__name__}: {exc}"
                if ws is not None:
                    ws.transport.abort()
                    ws = None
            self._report(label, result)
            if ws is not None:
                self.metrics.connected.set((label,), 1)
                pinged: list[float] = []
                began = time.monotonic()

                def on_rtt(rtt: float, label: str = label, pinged: list[float] = pinged) -> None:
                    pinged.append(rtt)
                    self.metrics.rtt.observe((label,), rtt)

                try:
                    reason = await hold(ws, plan, self.ctx.stop, on_rtt)
                finally:
                    self.metrics.connected.set((label,), 0)
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(min(1.0, plan.timeout)):
                            await ws.close()
                    ws.transport.abort()
                if reason is None:
                    return
                self.metrics.drops.inc((label,))
                self._report(
                    label,
                    ProbeResult(
                        reason=reason,
                        phase="connected",
                        status_code=result.status_code,
                        phases=result.phases,
                        detail=f"connection dropped after {time.monotonic() - began:.1f}s",
                    ),
                    drop=True,
                )
                if pinged:  # it worked for a while: a new failure, start the backoff over
                    backoff = first_backoff
            if await self.ctx.sleep(backoff):
                return
            backoff = min(backoff * 2, plan.target.backoff_max)

    # -- reporting --------------------------------------------------------------------------------
    def _report(self, label: str, result: ProbeResult, drop: bool = False) -> None:
        if drop:  # keep the connection's phases and status; count the drop's reason
            self.metrics.success.set((label,), 0)
            self.metrics.failures.inc((label, result.reason or "error"))
        else:
            self.metrics.record(label, result)
        self._record(label, result)
        url = self._urls.get(label, label)
        if result.reason is not None:
            # Logged once when the target starts failing (and once when it recovers), not per probe.
            self.ctx.degraded(
                f"target:{label}",
                f"{url} {_WHAT.get(result.reason, result.reason)}: {result.detail}",
                target=label,
                reason=result.reason,
                phase=result.phase,
                status_code=result.status_code,
                error=result.detail,
            )
        else:
            self.ctx.recovered(f"target:{label}")

    def _record(self, target: str, result: ProbeResult) -> None:
        """One probe for the status page's recent probes (a bounded ring)."""
        self.ctx.record(
            "probes",
            target=target[:200],
            result="success" if result.reason is None else result.reason,
            status_code=result.status_code,
            **{f"{ph}_ms": round(result.phases[ph] * 1000, 1) for ph in PHASES},
            failure=result.detail[:200],
        )

    # -- /probe -----------------------------------------------------------------------------------
    def _plan_for(self, target: str) -> Plan | None:
        """A configured target (by name or URL), or an allow-listed URL probed with the defaults."""
        for plan in self.plans:
            if target in (plan.label, plan.target.url):
                return plan
        if allowed(target, self.settings.probe_allow):
            # The normalised URL is the one matched, so it is the one probed: no raw space or
            # control character reaches the handshake's request line.
            url = normalize_ws_url(target)
            try:
                t = WebSocketTarget(url=url or "")
            except ValueError:
                return None
            # No token: the source-wide token is only for targets the operator configured.
            return Plan(t, self.settings.interval, self.settings.timeout)
        return None

    async def handle_probe(self, request: web.Request) -> web.Response:
        target = request.query.get("target", "")
        if not target:
            self.requests.inc(("bad_request",))
            return web.Response(status=400, text="target parameter is missing\n")
        plan = self._plan_for(target)
        if plan is None:
            self.requests.inc(("forbidden",))
            self.log_first(
                "probe_forbidden", "/probe target not allowed", target=target[:200], peer=request.remote
            )
            return web.Response(
                status=403,
                text="target is neither configured nor allowed by COLLECTOR_WEBSOCKET__PROBE_ALLOW\n",
            )
        if self.probe_slots.locked():
            self.requests.inc(("busy",))
            return web.Response(status=503, text="too many concurrent probes\n")
        timeout = plan.timeout
        scrape = request.headers.get("X-Prometheus-Scrape-Timeout-Seconds")
        with contextlib.suppress(ValueError):
            # Leave Prometheus time to receive the answer, as blackbox_exporter does.
            if scrape:
                timeout = max(0.1, min(timeout, float(scrape) - 0.5))
        async with self.probe_slots:
            result = await self._guarded(lambda p: probe_once(p, timeout), plan)
        self.requests.inc(("success" if result.success else "failure",))
        self._record(f"/probe {plan.label}", result)
        if result.reason is not None:
            self.log_first(
                f"probe:{result.reason}",
                "/probe failed",
                target=plan.label,
                reason=result.reason,
                phase=result.phase,
                error=result.detail,
                level=logging.INFO,
            )
        scratch = MetricState()
        ProbeMetrics(scratch).record(plan.label, result)
        openmetrics = wants_openmetrics(request.headers.get("Accept"))
        return web.Response(
            body=render_document(scratch.families.values(), openmetrics).encode(),
            headers={"Content-Type": content_type(openmetrics), "Cache-Control": "no-store"},
        )
