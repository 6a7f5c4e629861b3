"""Endpoint security and limits: exporter-toolkit web config (TLS, mTLS, basic auth, headers), reloaded
when it changes, an optional webhook-only listener, and request limits counted in `collector_http_*`.

`install(app, runtime)` adds the guard to the app; `start_sites(runner, app)` opens the listeners.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from collector.logsetup import LogFirst
from collector.redact import Redactor
from collector.routes import RoutePolicies
from collector.web.auth import BasicAuth, parse_basic_header
from collector.web.budget import Budgets
from collector.web.config import WebConfig, WebConfigError, fingerprint, load_web_config
from collector.web.guard import GuardedSite, make_middleware
from collector.web.lean import header_block
from collector.web.metrics import HttpMetrics

if TYPE_CHECKING:
    from collector.runtime import Runtime
    from collector.settings import HttpSettings, Settings

__all__ = ["WEB", "ListenError", "WebSecurity", "install", "start_sites"]

log = logging.getLogger("collector.web")


class WebSecurity:
    """The current web config, the HTTP limits and metrics, and the listeners they apply to."""

    def __init__(
        self,
        settings: Settings,
        metrics: HttpMetrics,
        clock: Any = time.time,
        routes: RoutePolicies | None = None,
    ) -> None:
        self.settings = settings
        # The declared routes (auth policy and class of each): what the guard enforces per request.
        self.routes = routes if routes is not None else RoutePolicies()
        self.http: HttpSettings = settings.http
        self.metrics = metrics
        self.clock = clock
        self.path: Path | None = settings.web_config_file
        self.config = WebConfig()
        self.header_block = b""
        self.auth = self._basic_auth({})
        # Requests in the guard now, per listener, route class and client (what the limits read).
        self.budgets = Budgets(self.http)
        metrics.follow_budgets(self.budgets.in_flight)
        # At most a few log lines per kind of refusal, per server (a flood is a counter, not a log).
        self.log_first = LogFirst(log)
        # Masks secrets in the answers of every route but /metrics.
        self.redactor = Redactor.from_settings(settings)
        self.sites: list[GuardedSite] = []
        # The fingerprint of the file content last tried, so a bad file is reported once, not every poll.
        self._last_tried = ""
        if self.path is not None:
            # Settings validation already loaded it once; a failure now is a race with an edit.
            self._apply(load_web_config(self.path))
        self.metrics.last_reload_time.set(self.clock())

    def _apply(self, cfg: WebConfig) -> None:
        self.config = cfg
        self.header_block = header_block(cfg.headers)
        self._last_tried = cfg.fingerprint
        if dict(cfg.users) != self.auth.users:
            self.auth.close()
            self.auth = self._basic_auth(cfg.users)

    def _basic_auth(self, users: Any) -> BasicAuth:
        return BasicAuth(
            users,
            concurrency=self.http.auth_concurrency,
            queue=self.http.auth_queue,
            on_result=lambda result: self.metrics.auth_checks.labels(result).inc(),
        )

    async def authorized(self, request: web.Request) -> bool | None:
        """Whether the request's basic-auth credentials are valid; None when bcrypt is saturated."""
        creds = parse_basic_header(request.headers.get("Authorization"))
        if creds is None:
            return False
        return await self.auth.check(*creds)

    async def reload(self) -> bool | None:
        """Re-read the web config when it (or a certificate it names) changed.

        Returns True when a new config was applied, False when it was invalid (the old one stays), None
        when nothing changed.
        """
        if self.path is None:
            return None
        current = await asyncio.to_thread(fingerprint, self.path)
        if current in (self.config.fingerprint, self._last_tried):
            return None
        self._last_tried = current
        try:
            cfg = await asyncio.to_thread(load_web_config, self.path)
        except WebConfigError as exc:
            self.metrics.reloads.labels("failure").inc()
            self.metrics.last_reload_ok.set(0)
            log.error(
                "invalid web config; keeping the previous one",
                extra={"env_var": "COLLECTOR_WEB_CONFIG_FILE", "path": str(self.path), "error": str(exc)},
            )
            return False
        tls_changed = cfg.fingerprint != self.config.fingerprint and (
            cfg.tls is not None or self.config.tls is not None
        )
        for site in self.sites:
            if site.listener == "main" and tls_changed:
                await site.swap_tls(cfg.tls_context)
            elif site.listener == "webhook" and tls_changed and self.http.webhook_tls:
                await site.swap_tls(_webhook_context(cfg))
        self._apply(cfg)
        self.metrics.reloads.labels("success").inc()
        self.metrics.last_reload_ok.set(1)
        self.metrics.last_reload_time.set(self.clock())
        log.info(
            "web config reloaded",
            extra={"path": str(self.path), "tls": cfg.tls is not None, "basic_auth_users": len(cfg.users)},
        )
        return True

    async def watch(self, stopping: asyncio.Event) -> None:
        """Poll the web config for changes until `stopping` is set."""
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.http.config_reload_interval)
                return
            try:
                await self.reload()
            except Exception as exc:  # a reload bug must not end the watch: the old config keeps serving
                self.metrics.reloads.labels("failure").inc()
                self.metrics.last_reload_ok.set(0)
                log.error("web config reload failed", extra={"error": f"{type(exc).__name__}: {exc}"})

    def handler_kwargs(self) -> dict[str, Any]:
        """aiohttp protocol limits: no single head line may exceed the whole head's limit."""
        return {
            "keepalive_timeout": self.http.idle_timeout,
            "max_line_size": self.http.max_header_bytes,
            "max_field_size": self.http.max_header_bytes,
            "access_log": None,
            # After refusing a body, read (and drop) what the client still sends for at most a second, so
            # it sees the 413/408 instead of a reset, but a slow client cannot hold the connection on.
            "lingering_time": 1.0,
        }

    def add_headers(self, response: web.StreamResponse) -> None:
        for name, value in self.config.headers.items():
            response.headers.setdefault(name, value)


def _webhook_context(cfg: WebConfig) -> Any:
    """The webhook listener's TLS context: the same certificate, but never asking for a client one
    (Stripe and GitHub do not present client certificates)."""
    if cfg.tls is None:
        return None
    import ssl
    from dataclasses import replace

    from collector.web.config import build_tls_context

    return build_tls_context(replace(cfg.tls, client_ca_file=None, client_auth=ssl.CERT_NONE))


WEB = web.AppKey("web_security", WebSecurity)


class ListenError(OSError):
    """A listener could not bind; `env_var` names the setting to check."""

    def __init__(self, env_var: str, reason: str) -> None:
        super().__init__(f"cannot listen on {env_var}: {reason}")
        self.env_var = env_var
        self.reason = reason


def install(app: web.Application, rt: Runtime, routes: RoutePolicies) -> WebSecurity:
    """Add the guard middleware, the configured response headers and the reload watcher to `app`.

    Args:
        app: the application.
        rt: the runtime (settings, self metrics, clock, tasks).
        routes: the app's declared routes; the guard applies each one's auth policy and class.
    """
    listeners = ("main", "webhook") if rt.settings.webhook_listen else ("main",)
    guard = WebSecurity(rt.settings, HttpMetrics(rt.self_metrics.registry, listeners), rt.clock, routes)
    app[WEB] = guard
    app.middlewares.append(make_middleware(guard))

    async def on_prepare(_request: web.Request, response: web.StreamResponse) -> None:
        guard.add_headers(response)

    on_prepare.collector_headers = True  # type: ignore[attr-defined]  # the lean path writes these itself

    async def on_startup(_app: web.Application) -> None:
        if guard.path is not None:
            rt.tasks.append(asyncio.create_task(guard.watch(rt.stopping), name="web-config-watch"))

    app.on_response_prepare.append(on_prepare)
    app.on_startup.append(on_startup)
    return guard


async def start_sites(runner: web.AppRunner, app: web.Application) -> list[GuardedSite]:
    """Open the main listener (and the webhook one when configured) on an already set-up runner.

    Raises:
        ListenError: a listener cannot bind; it names the setting.
    """
    guard = app[WEB]
    s = guard.settings
    sites = [
        GuardedSite(
            runner,
            s.listen_host,
            s.listen_port,
            guard=guard,
            listener="main",
            ssl_context=guard.config.tls_context,
            handler_kwargs=guard.handler_kwargs(),
        )
    ]
    if s.webhook_listen:
        host, _, port = s.webhook_listen.rpartition(":")
        sites.append(
            GuardedSite(
                runner,
                host.strip("[]") or "0.0.0.0",
                int(port),
                guard=guard,
                listener="webhook",
                ssl_context=_webhook_context(guard.config) if s.http.webhook_tls else None,
                handler_kwargs=guard.handler_kwargs(),
            )
        )
    for site in sites:
        try:
            await site.start()
        except OSError as exc:
            var = "COLLECTOR_LISTEN" if site.listener == "main" else "COLLECTOR_WEBHOOK_LISTEN"
            raise ListenError(var, exc.strerror or str(exc)) from exc
        guard.sites.append(site)
    return sites
