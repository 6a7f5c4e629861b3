"""What the running collector holds (`Runtime`), shared by the wiring (`collector.app`), the HTTP face
(`collector.server`, `collector.status`) and the web guard, which all read it and none builds it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from collector.metrics import MetricState
from collector.selfmetrics import SelfMetrics
from collector.settings import Settings
from collector.source import Source, SourceContext
from collector.store import StateStore

__all__ = ["RUNTIME", "Runtime"]


@dataclass
class Runtime:
    """Everything the running collector holds; reachable from handlers as `app[RUNTIME]`."""

    settings: Settings
    metrics: MetricState
    self_metrics: SelfMetrics
    store: StateStore
    clock: Callable[[], float]
    sources: list[tuple[Source, SourceContext]] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    # Set by `collector run` once the listeners are bound; sources wait for it (None: start at once).
    gate: asyncio.Event | None = None


RUNTIME = web.AppKey("runtime", Runtime)
