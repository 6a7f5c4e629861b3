"""The one small interface every source implements, and the supervisor that runs it.

A source is constructed with a `SourceContext` (its settings, the metric state, the store, a logger, the
stop event, a clock), registers its metric families in `__init__`, may offer aiohttp routes, and runs
in `run()` until `ctx.stop` is set. It calls `ctx.started()` once it is working. If `run()` raises,
the supervisor marks it down, counts the error, and restarts it with exponential backoff.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from aiohttp import web

from collector.metrics import MetricState
from collector.selfmetrics import SelfMetrics
from collector.store import StateStore

__all__ = ["Source", "SourceContext", "SourceStatus", "supervise"]


@dataclass
class SourceStatus:
    """What /health and the landing page say about a source."""

    state: str = "starting"  # starting | running | failed | stopped
    started_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    restarts: int = 0
    detail: dict[str, Any] = field(default_factory=dict)  # source-specific (logs: pending files)

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "up": self.state == "running",
            "started_at": self.started_at,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "restarts": self.restarts,
            **self.detail,
        }


@dataclass
class SourceContext:
    """Everything the runtime hands a source."""

    name: str
    settings: Any  # the source's own settings model
    metrics: MetricState
    store: StateStore
    self_metrics: SelfMetrics
    log: logging.Logger
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    clock: Callable[[], float] = time.time
    status: SourceStatus = field(default_factory=SourceStatus)
    # Set once the source's metric families hold their restored values: /metrics serves the shared
    # families only when every source has set it, so no scrape sees a counter below a value served
    # before a restart. `started()` sets it; a source that restores may set it earlier.
    restored: asyncio.Event = field(default_factory=asyncio.Event)

    def started(self) -> None:
        """Tell the supervisor the source is up (readiness flips once every source has said so)."""
        self.restored.set()
        self.status.state = "running"
        self.status.started_at = self.clock()
        self.self_metrics.source_up.labels(self.name).set(1)

    def error(self, reason: str, message: str | None = None) -> None:
        """Count a non-fatal error (bounded `reason` label) and remember it for /health."""
        self.self_metrics.source_errors.labels(self.name, reason).inc()
        self.status.last_error = f"{reason}: {message}" if message else reason
        self.status.last_error_at = self.clock()

    async def sleep(self, seconds: float) -> bool:
        """Sleep unless stopping; True when the source should stop."""
        try:
            await asyncio.wait_for(self.stop.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True


class Source(Protocol):
    """A data source: one module in `collector/sources/`, one entry in `collector.sources.SOURCES`."""

    name: ClassVar[str]

    def __init__(self, ctx: SourceContext) -> None: ...

    def routes(self) -> list[web.RouteDef]:
        """HTTP routes the source serves (webhooks); registered before the server starts."""
        ...

    async def run(self) -> None:
        """Work until `ctx.stop` is set; call `ctx.started()` once working; flush state before returning."""
        ...

    # Optional, read by `collector.server.durable_render` (getattr):
    #   held_families() -> list[str]: families restored from the store, left out of /metrics until
    #       `ctx.restored` is set (a scrape must never see a restored counter below a served value).
    #   before_scrape() -> asyncio.Future | None: called right before /metrics renders, with no await
    #       in between; queue a write of the state the served values come from (the response waits).


async def supervise(source: Source, ctx: SourceContext, max_backoff: float = 60.0) -> None:
    """Run a source until stop, restarting it with exponential backoff when it fails."""
    backoff = 1.0
    ctx.self_metrics.source_up.labels(ctx.name).set(0)
    while not ctx.stop.is_set():
        ctx.status.state = "starting"
        began = time.monotonic()
        try:
            await source.run()
            if ctx.stop.is_set():
                break
            raise RuntimeError("source stopped on its own")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            ctx.status.state = "failed"
            ctx.self_metrics.source_up.labels(ctx.name).set(0)
            ctx.error(type(exc).__name__, str(exc))
            if time.monotonic() - began > 60:
                backoff = 1.0  # it ran for a while: a new failure, not the same one looping
            ctx.log.error(
                "source failed; restarting",
                extra={"source": ctx.name, "error": f"{type(exc).__name__}: {exc}", "retry_in_s": backoff},
                exc_info=ctx.log.isEnabledFor(logging.DEBUG),
            )
            if await ctx.sleep(backoff):
                break
            backoff = min(backoff * 2, max_backoff)
            ctx.status.restarts += 1
            ctx.self_metrics.source_restarts.labels(ctx.name).inc()
    ctx.status.state = "stopped"
    ctx.self_metrics.source_up.labels(ctx.name).set(0)
