"""Wiring: settings -> state store and metric state -> enabled sources -> aiohttp app and its lifecycle.

This is the only module that knows every part. Sources come from a registry (`collector.sources.SOURCES`
by default; tests pass their own) and are wired from what each declares.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from collector import server
from collector.metrics import MetricState
from collector.routes import Route, RoutePolicies
from collector.runtime import RUNTIME, Runtime
from collector.selfmetrics import SelfMetrics
from collector.settings import Settings
from collector.source import Service, Source, SourceContext, supervise
from collector.sources import SOURCES, SourceSpec
from collector.store import StateStore
from collector.web import install as install_web_security

__all__ = ["RUNTIME", "Runtime", "build_app"]

log = logging.getLogger("collector")


def build_app(
    settings: Settings,
    sources: Mapping[str, SourceSpec] | None = None,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    """Build the aiohttp application with every enabled source; nothing starts until the app does.

    Each source's declarations are read here, never looked up by name elsewhere: its settings
    section, its storage (registered with the store, applied when it opens), the services it shares
    (built once, injected), its routes with their auth policies (what the guard enforces), its error
    reasons (at 0 from start-up).

    Args:
        settings: validated settings, of the class `settings_class(sources)` assembled.
        sources: the registry (`collector.sources.SOURCES` by default; tests pass their own).
        clock: wall clock handed to sources (tests may freeze it).

    Raises:
        KeyError: `settings` has no section for a registered source (built for another registry).
    """
    registry = SOURCES if sources is None else sources
    self_metrics = SelfMetrics()
    metrics = MetricState(
        on_overflow=lambda name: self_metrics.series_overflow.labels(name).inc(),
        on_family=lambda name: self_metrics.series_overflow.labels(name).inc(0),  # 0 from the start
    )
    store = StateStore(
        settings.effective_state_path, on_reset=lambda _reason: self_metrics.store_resets.inc()
    )
    runtime = Runtime(settings, metrics, self_metrics, store, clock)
    # Services several sources share (the DORA engine of github + deployments): one per app, never
    # module-level; each is built from the context of the first enabled source that declares it.
    shared: dict[Service[Any], object] = {}
    service_routes: list[Route] = []
    for name, spec in registry.items():
        cfg = settings.source_settings(name)
        if not cfg.is_enabled():
            continue
        cls = spec.load()  # imported only when enabled
        ctx = SourceContext(
            name=name,
            settings=cfg,
            metrics=metrics,
            store=store,
            self_metrics=self_metrics,
            log=logging.getLogger(f"collector.sources.{name}"),
            clock=clock,
        )
        store.register(name, cls.storage)
        runtime.sources.append((_construct(cls, ctx, shared, service_routes), ctx))
        self_metrics.init_source(name, cls.error_reasons)

    # Bodies over the limit fail to read (413); collector.web counts them.
    app = web.Application(client_max_size=settings.http.max_body_bytes)
    app[RUNTIME] = runtime
    routes = RoutePolicies()
    install_web_security(app, runtime, routes)
    server.add_routes(app, runtime, routes)
    for route in service_routes:
        routes.add(app.router, route)
    for source, _ctx in runtime.sources:
        for route in source.routes():
            routes.add(app.router, route)
    app.on_startup.append(_on_startup)
    app.on_cleanup.append(_on_cleanup)
    return app


def _construct(
    cls: type[Source], ctx: SourceContext, shared: dict[Service[Any], object], service_routes: list[Route]
) -> Source:
    """`cls(ctx)`, passing the shared services its `shares` declares (argument name -> service); a
    service built here for the first time brings its routes (once per app, whoever declares it)."""
    services: dict[str, object] = {}
    for arg, service in cls.shares.items():
        if service not in shared:
            built = shared[service] = service.build(ctx)
            service_routes.extend(service.routes(built))
        services[arg] = shared[service]
    # The protocol's constructor takes the context only; the shared services are keyword arguments
    # the declaring class accepts (its `shares` names them).
    make: Callable[..., Source] = cls
    return make(ctx, **services)


async def _on_startup(app: web.Application) -> None:
    rt = app[RUNTIME]
    rt.started_at = rt.clock()
    rt.tasks.append(asyncio.create_task(_open_store_then_start_sources(rt), name="startup"))
    rt.tasks.append(asyncio.create_task(_watch_loop_lag(rt), name="loop-lag"))
    # "collector started" is logged by the CLI once the listeners are bound (with their addresses).


async def _open_store_then_start_sources(rt: Runtime) -> None:
    if rt.gate is not None:  # wait for the listeners (or for a stop: a port clash)
        stopping = asyncio.ensure_future(rt.stopping.wait())
        gate = asyncio.ensure_future(rt.gate.wait())
        await asyncio.wait((stopping, gate), return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        gate.cancel()
        if not rt.gate.is_set():
            return
    # Sources restore offsets and state from the store, so none starts before it is open.
    delay = 1.0
    while not rt.store.is_open:
        try:
            await rt.store.open()
        except Exception as exc:
            rt.store.last_error = str(exc)
            rt.self_metrics.store_errors.labels("open").inc()
            log.error("cannot open the state store; retrying", extra={"error": str(exc), "retry_in_s": delay})
            try:
                await asyncio.wait_for(rt.stopping.wait(), delay)
                return
            except TimeoutError:
                delay = min(delay * 2, 30.0)
    for source, ctx in rt.sources:
        rt.tasks.append(asyncio.create_task(supervise(source, ctx), name=f"source-{ctx.name}"))


async def _watch_loop_lag(rt: Runtime, period: float = 1.0) -> None:
    # One wake-up a second: at 4 a second this timer alone was a third of an idle collector's CPU
    # (0.07 of 0.21 % of a core). The gauge is read at scrape time, which sees only the last
    # measurement either way.
    loop = asyncio.get_running_loop()
    while not rt.stopping.is_set():
        began = loop.time()
        await asyncio.sleep(period)
        rt.self_metrics.loop_lag.set(max(0.0, loop.time() - began - period))


async def _on_cleanup(app: web.Application) -> None:
    rt = app[RUNTIME]
    rt.stopping.set()
    for _source, ctx in rt.sources:
        ctx.stop.set()
    pending = [t for t in rt.tasks if not t.done()]
    if pending:
        _done, late = await asyncio.wait(pending, timeout=rt.settings.shutdown_timeout)
        for task in late:
            log.warning("task did not stop in time; cancelling", extra={"task": task.get_name()})
            task.cancel()
        for task in late:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    await rt.store.close()
    if rt.gate is None or rt.gate.is_set():  # after a port clash nothing started: the error says it all
        log.info("collector stopped")
