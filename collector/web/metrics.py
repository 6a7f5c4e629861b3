"""`collector_http_*` and `collector_web_config_*` self-metrics, in the collector's own registry (`SelfRegistry`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from collector.selfmetrics import CounterChild, SelfRegistry
from collector.web.budget import ROUTE_CLASSES

__all__ = ["LISTENERS", "REJECT_REASONS", "HttpMetrics"]

LISTENERS = ("main", "webhook")
#: Every reason a request or connection is refused before (or instead of) its handler.
REJECT_REASONS = (
    "unauthorized",  # basic auth missing or wrong (401)
    "body_too_large",  # request body over COLLECTOR_HTTP__MAX_BODY_BYTES (413)
    "headers_too_large",  # request head over COLLECTOR_HTTP__MAX_HEADER_BYTES (431)
    "header_timeout",  # request head not complete within COLLECTOR_HTTP__HEADER_TIMEOUT (connection closed)
    "body_timeout",  # request body not complete within COLLECTOR_HTTP__BODY_TIMEOUT (408)
    "concurrency",  # the route class's COLLECTOR_HTTP__MAX_CONCURRENT_* in flight on the listener (503)
    "client_concurrency",  # one address holds its COLLECTOR_HTTP__MAX_CLIENT_SHARE of a class (503)
    "body_too_slow",  # request body slower than COLLECTOR_HTTP__MIN_BODY_RATE (408)
    "bad_encoding",  # a gzip/deflate/br request body that does not decode (400)
    "auth_busy",  # COLLECTOR_HTTP__AUTH_QUEUE uncached basic-auth checks already waiting (503)
    "bad_request",  # unparseable HTTP (400)
    "not_webhook",  # a non-webhook path on the webhook listener (404)
    "handler_error",  # an unhandled exception in a handler (500; a bug, logged)
)


def _task_count() -> float:
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:  # rendered outside the event loop (tests)
        return float("nan")


class HttpMetrics:
    """The HTTP layer's counters and gauges, every label value created up front (absent != zero)."""

    def __init__(self, registry: SelfRegistry, listeners: tuple[str, ...] = LISTENERS) -> None:
        self.requests = registry.counter(
            "collector_http_requests_total",
            "HTTP requests answered, by listener and status code.",
            ["listener", "code"],
        )
        self.in_flight = registry.gauge(
            "collector_http_requests_in_flight",
            "HTTP requests being handled now, by listener.",
            ["listener"],
        )
        self.class_in_flight = registry.gauge(
            "collector_http_route_class_in_flight",
            "HTTP requests holding a slot of a route class's budget now, by listener and class.",
            ["listener", "route_class"],
        )
        self.auth_checks = registry.counter(
            "collector_http_auth_checks_total",
            "Basic-auth checks, by result (cached, verified, failed, busy).",
            ["result"],
        )
        self.connections = registry.gauge(
            "collector_http_connections",
            "Open HTTP connections, by listener.",
            ["listener"],
        )
        self.rejected = registry.counter(
            "collector_http_rejected_total",
            "Requests or connections refused by the HTTP layer, by listener and reason.",
            ["listener", "reason"],
        )
        self.reloads = registry.counter(
            "collector_web_config_reloads_total",
            "Reloads of COLLECTOR_WEB_CONFIG_FILE after a change, by result (success, failure).",
            ["result"],
        )
        self.last_reload_ok = registry.gauge(
            "collector_web_config_last_reload_successful",
            "1 when the last load of the web config succeeded, 0 when the running config is an older one.",
        )
        self.last_reload_time = registry.gauge(
            "collector_web_config_last_reload_success_timestamp_seconds",
            "Unix time the web config in use was loaded.",
        )
        # Soak tests and on-call look for leaks here: tasks and connections that never end.
        registry.gauge("collector_asyncio_tasks", "asyncio tasks alive in the collector.").set_function(
            _task_count
        )
        # The counter child the guard bumps on every request, looked up once per (listener, status code):
        # `labels()` builds its key from the status code each time.
        self._answered: dict[tuple[str, int], CounterChild] = {}
        self._listeners = listeners
        self.last_reload_ok.set(1)
        for result in ("success", "failure"):
            self.reloads.labels(result)
        for result in ("cached", "verified", "failed", "busy"):
            self.auth_checks.labels(result)
        for listener in listeners:
            self.in_flight.labels(listener)
            for klass in ROUTE_CLASSES:
                self.class_in_flight.labels(listener, klass)
            self.connections.labels(listener)
            for reason in REJECT_REASONS:
                self.rejected.labels(listener, reason)

    def answered(self, listener: str, status: int) -> CounterChild:
        """`collector_http_requests_total{listener, code}`'s child (status codes are a bounded set)."""
        child = self._answered.get((listener, status))
        if child is None:
            child = self._answered[(listener, status)] = self.requests.labels(listener, str(status))
        return child

    def follow_budgets(self, in_flight: Mapping[tuple[str, str], int]) -> None:
        """Read both in-flight gauges from the budgets' own count at scrape time.

        A request is in flight exactly while it holds a budget slot, so the slot count is the gauge:
        reading it when scraped costs nothing per request (four locked inc/dec calls before).
        """

        def listener_total(listener: str) -> Callable[[], float]:
            return lambda: float(sum(n for (li, _k), n in in_flight.items() if li == listener))

        def class_total(key: tuple[str, str]) -> Callable[[], float]:
            return lambda: float(in_flight.get(key, 0))

        for listener in self._listeners:
            self.in_flight.labels(listener).set_function(listener_total(listener))
            for klass in ROUTE_CLASSES:
                self.class_in_flight.labels(listener, klass).set_function(class_total((listener, klass)))
