"""The one small interface every source implements, and the supervisor that runs it.

A source is constructed with a `SourceContext` (its settings, the metric state, the store, a logger, the
stop event, a clock), registers its metric families in `__init__`, declares its routes (each with an
auth policy), its storage and the services it shares (see `Source`), and runs
in `run()` until `ctx.stop` is set. It calls `ctx.started()` once it is working, `ctx.degraded(key,
message)` while something it should collect is out of reach (and `ctx.recovered(key)` when it is back),
and `ctx.record(kind, ...)` for the status page's recent activity. If `run()` raises, the supervisor
marks it failed, counts the error, and restarts it with exponential backoff.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from collector.metrics import MetricState
from collector.routes import Route
from collector.selfmetrics import SelfMetrics
from collector.store import StateStore

if TYPE_CHECKING:
    from collector.sources.storage import Migration

T = TypeVar("T")

__all__ = [
    "RECENT",
    "STATES",
    "Problem",
    "Service",
    "Shares",
    "Source",
    "SourceBase",
    "SourceContext",
    "SourceStatus",
    "Table",
    "supervise",
]


#: Every state a source can be in (`collector_source_state{state}`); bounded by construction.
STATES = ("starting", "running", "degraded", "failed", "stopped")

#: Entries kept per recent-activity ring (deliveries, probes): enough for an operator's glance.
RECENT = 20


@dataclass
class Table:
    """A table a source contributes to the status page and /status.json (followed files, rules, ...)."""

    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "columns": self.columns,
            "rows": [dict(zip(self.columns, row, strict=False)) for row in self.rows],
            "note": self.note,
        }


@dataclass
class Problem:
    """One current reason a running source is degraded, e.g. "app process not found (pid 4242)"."""

    message: str
    since: float
    count: int = 1  # times it was reported since it began (failed polls, refused connects, ...)

    def as_dict(self) -> dict[str, Any]:
        return {"message": self.message, "since": self.since, "count": self.count}


@dataclass
class SourceStatus:
    """What /health and the status page say about a source.

    `phase` is the supervisor's lifecycle (starting, running, failed, stopped); `state` adds `degraded`:
    running, but with at least one current problem (its reasons say what is not being collected).
    """

    phase: str = "starting"  # starting | running | failed | stopped
    started_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    restarts: int = 0
    detail: dict[str, Any] = field(default_factory=dict)  # source-specific (logs: pending files)
    problems: dict[str, Problem] = field(default_factory=dict)  # key (bounded per source) -> problem
    # Recent activity per kind ("deliveries", "probes"): small bounded rings the status page shows.
    recent: dict[str, deque[dict[str, Any]]] = field(default_factory=dict)

    @property
    def state(self) -> str:
        if self.phase == "running" and self.problems:
            return "degraded"
        return self.phase

    @property
    def reasons(self) -> list[str]:
        return [p.message for p in self.problems.values()]

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "up": self.state in ("running", "degraded"),
            "reasons": self.reasons,
            "problems": {k: p.as_dict() for k, p in self.problems.items()},
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
        """Tell the supervisor the source is up and working (its state is restored by now)."""
        self.restored.set()
        self._set_phase("running")
        self.status.started_at = self.clock()

    def error(self, reason: str, message: str | None = None) -> None:
        """Count a non-fatal error (bounded `reason` label) and remember it for /health."""
        self.self_metrics.source_errors.labels(self.name, reason).inc()
        self.status.last_error = f"{reason}: {message}" if message else reason
        self.status.last_error_at = self.clock()

    def degraded(self, key: str, message: str, **context: Any) -> None:
        """Report a current problem: the source runs but is not collecting something it should.

        Logged once when the problem begins (a new `key`), not on every repeat; `message` may change
        while it lasts (e.g. a failure count) and /health shows the latest.

        Args:
            key: bounded identity of the problem within the source ("api", "pattern:/var/log/*.log").
            message: what an operator reads, naming the thing that is wrong.
            context: extra fields for the one log line (target, phase, ...).
        """
        problem = self.status.problems.get(key)
        if problem is not None:
            problem.message = message
            problem.count += 1
            return
        was = self.status.state
        self.status.problems[key] = Problem(message, self.clock())
        self.log.warning("source degraded", extra={"source": self.name, "problem": message, **context})
        if was != self.status.state:
            self._publish()

    def recovered(self, key: str) -> None:
        """The problem reported under `key` is over (logged once; a no-op when there was none)."""
        problem = self.status.problems.pop(key, None)
        if problem is None:
            return
        self.log.info(
            "source problem resolved",
            extra={
                "source": self.name,
                "problem": problem.message,
                "lasted_s": round(self.clock() - problem.since, 1),
            },
        )
        self._publish()

    def record(self, kind: str, **entry: Any) -> None:
        """Remember one recent activity (a webhook delivery, a probe) for the status page; O(1), bounded."""
        ring = self.status.recent.get(kind)
        if ring is None:
            ring = self.status.recent[kind] = deque(maxlen=RECENT)
        ring.appendleft({"time": self.clock(), **entry})

    def _set_phase(self, phase: str) -> None:
        self.status.phase = phase
        self._publish()

    def _publish(self) -> None:
        """Mirror the state in `collector_source_up` and the one-hot `collector_source_state`."""
        self.self_metrics.set_source_state(self.name, self.status.state)

    async def sleep(self, seconds: float) -> bool:
        """Sleep unless stopping; True when the source should stop."""
        try:
            await asyncio.wait_for(self.stop.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True


def _no_routes(_service: object) -> list[Route]:
    return []


@dataclass(frozen=True, eq=False)
class Service(Generic[T]):
    """A service several sources share (the DORA engine of github and deployments), declared by them.

    The runtime builds it once per app, from the context of the first enabled source that declares
    it, and passes it to each declaring source's constructor; the routes it serves (GET /dora) are
    registered once, with it, so which source "owns" them is never a question. Never module-level
    state: two apps in one process (tests) each get their own.
    """

    name: str
    build: Callable[[SourceContext], T]
    routes: Callable[[T], list[Route]] = _no_routes


#: What a source declares it shares with others: constructor argument name -> service.
Shares = Mapping[str, Service[Any]]


class Source(Protocol):
    """A data source: one package in `collector/sources/`, one `SourceSpec` in `collector.sources.SOURCES`.

    Everything generic code reads about a source is declared here (no `getattr` conventions):
    `SourceBase` gives the defaults, so a source states only what it has.
    """

    name: ClassVar[str]
    #: `collector_source_errors_total{reason}` values, at 0 from start-up (bounded by construction).
    error_reasons: ClassVar[tuple[str, ...]]
    #: The tables and migrations it owns; registered with the store, applied when it opens.
    storage: ClassVar[tuple[Migration, ...]]
    #: Services shared with other sources (constructor argument name -> service), injected by the app.
    shares: ClassVar[Shares]

    def __init__(self, ctx: SourceContext) -> None: ...

    def routes(self) -> list[Route]:
        """HTTP routes the source serves, each with its auth policy; registered before the server starts."""
        ...

    async def run(self) -> None:
        """Work until `ctx.stop` is set; call `ctx.started()` once working; flush state before returning."""
        ...

    def held_families(self) -> list[str]:
        """Families restored from the store, left out of /metrics until `ctx.restored` is set (a
        scrape must never see a restored counter below a value served before a restart)."""
        ...

    def before_scrape(self) -> asyncio.Future[None] | None:
        """Called right before /metrics renders, with no await in between: queue a write of the state
        the served values come from (the response waits for it); None when there is nothing to write."""
        ...

    def scrape_ready(self) -> asyncio.Future[None] | None:
        """Awaited by /metrics before any `before_scrape`: the write in flight (None: none). Scrapes
        arriving during a slow commit then share the next write instead of queuing one each."""
        ...

    def status_tables(self) -> list[Table]:
        """What the status page shows for this source beyond its state, reasons and recent activity
        (read at each page view, never on the hot path)."""
        ...


class SourceBase(Source):
    """The defaults of `Source`: no error reasons, storage, shared services, routes, held families,
    scrape hook or status tables. Every source subclasses it (the registry checks) and declares what
    it has; subclassing the protocol explicitly makes mypy check each source's declarations."""

    error_reasons: ClassVar[tuple[str, ...]] = ()
    storage: ClassVar[tuple[Migration, ...]] = ()
    shares: ClassVar[Shares] = MappingProxyType({})

    def routes(self) -> list[Route]:
        return []

    def held_families(self) -> list[str]:
        return []

    def before_scrape(self) -> asyncio.Future[None] | None:
        return None

    def scrape_ready(self) -> asyncio.Future[None] | None:
        return None

    def status_tables(self) -> list[Table]:
        return []


async def supervise(source: Source, ctx: SourceContext, max_backoff: float = 60.0) -> None:
    """Run a source until stop, restarting it with exponential backoff when it fails."""
    backoff = 1.0
    while not ctx.stop.is_set():
        ctx._set_phase("starting")
        began = time.monotonic()
        try:
            await source.run()
            if ctx.stop.is_set():
                break
            raise RuntimeError("source stopped on its own")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            ctx.status.problems.clear()  # a restart finds its problems anew
            ctx._set_phase("failed")
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
    ctx._set_phase("stopped")
