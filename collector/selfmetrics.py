"""The collector's own small registry (prometheus_client): build info, source health, loop lag, process."""

from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector, disable_created_metrics
from prometheus_client.exposition import generate_latest as text_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from collector import __version__

__all__ = ["SelfMetrics"]

# The states of `collector.source.STATES` (not imported: collector.source imports this module).
_STATES = ("starting", "running", "degraded", "failed", "stopped")

#: `collector_state_store_errors_total{operation}` values known at start-up.
STORE_OPERATIONS = ("open", "logs_checkpoint")


class SelfMetrics:
    """Self-metrics with the `collector_` prefix, plus the collector's own `process_*` metrics.

    Args:
        registry: where to register (a fresh private registry by default; never the global one).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # `_created` samples double the series count and nobody graphs them.
        disable_created_metrics()
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        Gauge(
            "collector_build_info",
            "Collector build information; always 1.",
            ["version", "python"],
            registry=r,
        ).labels(__version__, platform.python_version()).set(1)
        self.source_up = Gauge(
            "collector_source_up",
            "1 when the source is running (also when degraded), 0 while it is starting, failed or stopped.",
            ["source"],
            registry=r,
        )
        self.source_state = Gauge(
            "collector_source_state",
            "1 for the source's current state (starting, running, degraded, failed, stopped), 0 for the others.",
            ["source", "state"],
            registry=r,
        )
        self.source_errors = Counter(
            "collector_source_errors_total",
            "Errors seen by each source, by reason.",
            ["source", "reason"],
            registry=r,
        )
        self.source_restarts = Counter(
            "collector_source_restarts_total", "Times a failed source was restarted.", ["source"], registry=r
        )
        self.loop_lag = Gauge(
            "collector_event_loop_lag_seconds",
            "How late the event loop woke a 1 s timer, last measurement.",
            registry=r,
        )
        self.store_resets = Counter(
            "collector_state_store_resets_total",
            "Times the state store was unusable (corrupt or incompatible) and was moved aside for a fresh one.",
            registry=r,
        )
        self.store_errors = Counter(
            "collector_state_store_errors_total",
            "Failed state store operations, by operation.",
            ["operation"],
            registry=r,
        )
        for op in STORE_OPERATIONS:
            self.store_errors.labels(op).inc(0)
        self.series_overflow = Counter(
            "collector_series_overflow_total",
            "Label sets folded into a family's __overflow__ series because it hit its series limit.",
            ["metric"],
            registry=r,
        )
        self.scrape_duration = Gauge(
            "collector_scrape_render_seconds", "Time the last /metrics response took to render.", registry=r
        )

    def init_source(self, source: str, error_reasons: tuple[str, ...] = ()) -> None:
        """Series of one enabled source that exist from start-up at 0 (exporter guidelines), so dashboards
        show 0 instead of "No data" and `increase()` sees the first error."""
        self.set_source_state(source, "starting")
        self.source_restarts.labels(source).inc(0)
        for reason in error_reasons:
            self.source_errors.labels(source, reason).inc(0)

    def set_source_state(self, source: str, state: str) -> None:
        """`collector_source_up` and the one-hot `collector_source_state` for `source`."""
        self.source_up.labels(source).set(1 if state in ("running", "degraded") else 0)
        for s in _STATES:
            self.source_state.labels(source, s).set(1 if s == state else 0)

    def render(self, openmetrics: bool) -> bytes:
        """The registry's exposition; in OpenMetrics it ends with `# EOF`."""
        return openmetrics_latest(self.registry) if openmetrics else text_latest(self.registry)
