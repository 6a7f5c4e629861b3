"""The github source: POST /webhooks/github, REST API polling, GET /dora and the window recompute loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import ClassVar
from urllib.parse import parse_qs

import gidgethub
import msgspec
from aiohttp import web
from gidgethub.sansio import validate_event

from collector.logsetup import LogFirst
from collector.routes import Route
from collector.settings import GitHubSettings
from collector.source import Service, Shares, SourceBase, SourceContext
from collector.sources.github import store_sql
from collector.sources.github.engine import DoraEngine, dora_engine
from collector.sources.github.events import KNOWN_EVENTS, parse_event
from collector.sources.github.poller import Poller
from collector.sources.http import read_limited
from collector.sources.storage import Migration

__all__ = ["DORA", "GitHubSource", "dora_routes", "keep_fresh"]

#: GitHub caps webhook payloads at 25 MB.
MAX_WEBHOOK_BODY = 25 * 1024 * 1024


def dora_routes(engine: DoraEngine) -> list[Route]:
    """GET /dora, served by the shared DORA engine itself (registered once, with the service)."""

    async def dora_json(_request: web.Request) -> web.Response:
        await engine.ready()
        return web.json_response(await engine.dora_json(), dumps=lambda o: json.dumps(o, indent=1))

    return [Route("GET", "/dora", dora_json, auth="basic")]


#: The DORA engine github and deployments share: one per app, built from the first enabled one's
#: context (github's DORA definitions when it is on), serving GET /dora whichever of them is enabled.
DORA = Service("dora", dora_engine, routes=dora_routes)


async def keep_fresh(ctx: SourceContext, engine: DoraEngine, interval: float) -> None:
    """Recompute the window gauges every `interval` seconds until stop (windows move with time)."""
    while not await ctx.sleep(interval / 4):
        if engine.refresh_due(interval):
            await engine.refresh()
            await engine.forget_old_deliveries()


class GitHubSource(SourceBase):
    """GitHub deployments, statuses, pushes, workflow runs and incident issues into the DORA history."""

    name = "github"
    #: Services shared with other sources, built once per app by `collector.app` and passed in.
    shares: ClassVar[Shares] = {"engine": DORA}
    #: The tables and migrations of the shared history (registered with the store; applied once at open).
    storage: ClassVar[tuple[Migration, ...]] = store_sql.MIGRATIONS
    #: `collector_source_errors_total{reason}` values, at 0 from start-up.
    error_reasons = (
        "missing_signature", "invalid_signature", "bad_request", "bad_payload", "store", "api_error",
        "rate_limited", "deployment_order",
    )  # fmt: skip

    def __init__(self, ctx: SourceContext, engine: DoraEngine | None = None) -> None:
        self.ctx = ctx
        self.settings: GitHubSettings = ctx.settings
        self.engine = engine if engine is not None else dora_engine(ctx)
        m = ctx.metrics
        self.webhooks = m.counter(
            "github_webhooks_total", "GitHub webhook deliveries by event and outcome.", ("event", "status")
        )
        self.api_requests = m.counter(
            "github_api_requests_total",
            "GitHub REST API answers by HTTP status (304: ETag hit).",
            ("status",),
        )
        self.rate_remaining = m.gauge(
            "github_api_rate_limit_remaining", "Requests left in the GitHub API rate limit window."
        )
        self.log_first = LogFirst(ctx.log)
        self.secret = (
            self.settings.webhook_secret.get_secret_value() if self.settings.webhook_secret else None
        )

    def held_families(self) -> list[str]:
        """Counters and histograms rebuilt from the stored history: not served before it is loaded."""
        return [self.engine.total.name, self.engine.lead.name, self.engine.recovery.name]

    def routes(self) -> list[Route]:
        if self.secret is None:
            return []
        # Signed: the handler checks X-Hub-Signature-256 against the raw body; ingest class.
        return [Route("POST", "/webhooks/github", self.webhook, auth="signed", kind="ingest")]

    async def run(self) -> None:
        await self.engine.ready()
        self.ctx.started()
        tasks = [asyncio.create_task(keep_fresh(self.ctx, self.engine, self.settings.recompute_interval))]
        if self.settings.token is not None:
            poller = Poller(self.ctx, self.engine, self.log_first, self.api_requests, self.rate_remaining)
            tasks.append(asyncio.create_task(poller.run()))
        try:
            done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # a crash of either part restarts the source through the supervisor
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def _count(self, event: str, status: str) -> None:
        self.webhooks.inc((event if event in KNOWN_EVENTS else "other", status))

    async def webhook(self, request: web.Request) -> web.Response:
        """One delivery: verify, de-duplicate on X-GitHub-Delivery, decode, record."""
        event = request.headers.get("X-GitHub-Event", "")
        delivery = request.headers.get("X-GitHub-Delivery", "")
        body = await read_limited(request, MAX_WEBHOOK_BODY)
        if body is None:
            return self._reject(event, "bad_request", 413, "payload too large", delivery)
        signature = request.headers.get("X-Hub-Signature-256")
        if not signature:
            return self._reject(event, "missing_signature", 401, "X-Hub-Signature-256 is missing", delivery)
        if not signature.isascii():
            # `sha256=<hex>` is ASCII; gidgethub's compare_digest raises TypeError on a non-ASCII str.
            return self._reject(event, "invalid_signature", 401, "signature does not match", delivery)
        try:
            assert self.secret is not None
            validate_event(body, signature=signature, secret=self.secret)  # HMAC-SHA256, constant time
        except gidgethub.ValidationFailure:
            return self._reject(event, "invalid_signature", 401, "signature does not match", delivery)
        if not event or not delivery:
            return self._reject(
                event, "bad_request", 400, "X-GitHub-Event and X-GitHub-Delivery are required", delivery
            )
        if event == "ping":
            self._count(event, "accepted")
            self._record(event, "accepted", 200, delivery, "ping")
            return web.json_response({"status": "pong"})
        if request.content_type == "application/x-www-form-urlencoded":
            body = (parse_qs(body.decode("utf-8", "replace")).get("payload") or [""])[0].encode()
        try:
            result = parse_event(event, body, self.settings)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return self._reject(event, "bad_payload", 400, f"cannot decode {event} payload: {exc}", delivery)
        if isinstance(result, str):
            status = "unsupported" if result == "unsupported" else "ignored"
            self._count(event, status)
            self._record(event, status, 202, delivery, result)
            return web.json_response({"status": status, "reason": result}, status=202)
        try:
            applied = await self.engine.apply(result, delivery)
        except Exception as exc:  # the state store failed: do not claim the event was recorded
            self.ctx.error("store", str(exc))
            self.log_first("store", "cannot record a webhook event", error=str(exc), delivery=delivery)
            return self._reject(
                event, "error", 503, "cannot record the event now; redeliver", delivery, count_error=False
            )
        status = "accepted" if applied else "duplicate"
        self._count(event, status)
        self._record(event, status, 200, delivery, "")
        return web.json_response({"status": status})

    def _record(self, event: str, status: str, code: int, delivery: str, reason: str) -> None:
        self.ctx.record(
            "deliveries",
            type=event[:64] or "unknown",
            status=status,
            code=code,
            id=delivery[:64],
            reason=reason,
        )

    def _reject(
        self, event: str, status: str, code: int, msg: str, delivery: str, count_error: bool = True
    ) -> web.Response:
        self._count(event, status)
        self._record(event, status, code, delivery, msg)
        if count_error:
            self.ctx.error(status, msg)
        self.log_first(
            status,
            "rejected a GitHub webhook delivery",
            level=logging.WARNING,
            reason=msg,
            event=event[:64],
            delivery=delivery[:64],
        )
        return web.json_response({"error": msg}, status=code)
