"""The panels of the collector's Grafana dashboards: what each shows, as PromQL (rendered by dashboards.py).

Queries use `$service`, `$job` and `$instance` (the scrape target's labels), `$__rate_interval` and
`$__range`; every metric and label name must be one the collector exposes or a recording rule records
(tests/deploy/test_grafana.py checks). The heaviest HTTP queries read the recording rules of
deploy/prometheus/rules/recording.rules.yml. A description naming an alert ("HighErrorRate fires ...")
gets a link to that alert's runbook.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DASHBOARDS", "Dashboard", "Panel"]

S = '{service=~"$service",job=~"$job",instance=~"$instance"}'  # the selector every query carries
# Recorded series (deploy/prometheus/rules/recording.rules.yml) keep job and service, not instance.
RS = '{service=~"$service",job=~"$job"}'
RECORDED = "Recorded by collector-recording (5m rate; the instance filter does not apply)."
R = "$__rate_interval"


def sel(extra: str = "") -> str:
    """`{service=~"$service",<extra>}`."""
    return S if not extra else S[:-1] + "," + extra + "}"


@dataclass
class Panel:
    """One panel: `queries` are (PromQL, legend) pairs."""

    title: str
    queries: list[tuple[str, str]]
    unit: str = "short"
    kind: str = "timeseries"  # timeseries | stat | table | bargauge
    description: str = ""
    width: int = 12


@dataclass
class Dashboard:
    uid: str
    title: str
    description: str
    panels: list[Panel] = field(default_factory=list)
    tags: list[str] = field(default_factory=lambda: ["collector"])


def _q(metric: str, labels: str = "") -> str:
    return f"{metric}{sel(labels)}"


AUTH_FAILED = _q("auth_attempts_total", 'outcome=~"fail|failed|failure"')
W7 = sel('window="7d"')

HTTP = Dashboard(
    "collector-http-red",
    "HTTP RED",
    "Rate, errors and duration of the app's HTTP requests, from its logs (log rules presets).",
    [
        Panel(
            "Requests per second by status",
            [(f"sum by (status_code) (job_service_status_code:http_requests:rate5m{RS})", "{{status_code}}")],
            "reqps",
            description=RECORDED,
        ),
        Panel(
            "5xx error ratio",
            [
                (
                    f'sum(job_service_status_code:http_requests:rate5m{RS[:-1]},status_code=~"5.."}}) '
                    f"/ sum(job_service_status_code:http_requests:rate5m{RS})",
                    "5xx",
                )
            ],
            "percentunit",
            description="HighErrorRate fires above 5% for 5 minutes. " + RECORDED,
        ),
        Panel(
            "Errors per second by class",
            [(f"sum by (error_class) (rate({_q('http_request_errors_total')}[{R}]))", "{{error_class}}")],
            "reqps",
        ),
        Panel(
            "Latency p50 / p95 / p99",
            [
                (
                    f"histogram_quantile({q}, sum by (le) (job_service_le:http_request_duration_seconds_bucket:rate5m{RS}))",
                    f"p{int(q * 100)}",
                )
                for q in (0.5, 0.95, 0.99)
            ],
            "s",
            description="HighResponseTime fires when p95 stays above 2 s for 10 minutes. " + RECORDED,
        ),
        Panel(
            "p95 latency by route",
            [
                (
                    "histogram_quantile(0.95, sum by (le, route) "
                    f"(job_service_route_le:http_request_duration_seconds_bucket:rate5m{RS}))",
                    "{{route}}",
                )
            ],
            "s",
            description=RECORDED,
        ),
        Panel(
            "Top routes by traffic",
            [
                (
                    f"topk(10, sum by (method, route) (rate({_q('http_requests_total')}[{R}])))",
                    "{{method}} {{route}}",
                )
            ],
            "reqps",
        ),
        Panel(
            "Requests in flight", [(f"sum({_q('http_requests_in_flight')})", "in flight")], "short", "stat"
        ),
        Panel(
            "Response size p95",
            [
                (
                    f"histogram_quantile(0.95, sum by (le) (rate({_q('http_response_size_bytes_bucket')}[{R}])))",
                    "p95",
                )
            ],
            "bytes",
        ),
    ],
)

DORA = Dashboard(
    "collector-dora",
    "DORA",
    "The four keys from GitHub deployments (docs/dora.md has the exact definitions).",
    [
        Panel(
            "Deployment frequency (per day, 7d window)",
            [(f"deployment_frequency_per_day{W7}", "{{repository}} {{environment}}")],
            "short",
            "stat",
        ),
        Panel(
            "Change failure rate (7d window)",
            [(f"deployment_change_failure_ratio{W7}", "{{repository}} {{environment}}")],
            "percentunit",
            "stat",
            description="HighChangeFailureRate fires above 15% for an hour.",
        ),
        Panel(
            "Lead time for changes p50 / p90",
            [
                (
                    f"histogram_quantile({q}, sum by (le) (increase({_q('deployment_lead_time_seconds_bucket')}[$__range])))",
                    f"p{int(q * 100)}",
                )
                for q in (0.5, 0.9)
            ],
            "s",
            "stat",
        ),
        Panel(
            "Mean failed-deployment recovery time",
            [
                (
                    f"sum(increase({_q('deployment_recovery_time_seconds_sum')}[$__range])) / sum(increase({_q('deployment_recovery_time_seconds_count')}[$__range]))",
                    "mean",
                )
            ],
            "s",
            "stat",
            description="HighRecoveryTime fires when recoveries of the last 6 h average more than 1 h.",
        ),
        Panel(
            "Deployments by status",
            [(f"sum by (status) (increase({_q('deployments_total')}[$__range]))", "{{status}}")],
            "short",
            "bargauge",
        ),
        Panel(
            "Time since last successful deployment",
            [
                (
                    f"time() - max by (repository, environment) ({_q('deployment_last_success_timestamp_seconds')})",
                    "{{repository}} {{environment}}",
                )
            ],
            "s",
            "stat",
        ),
        Panel(
            "Deployment frequency by window",
            [(f"deployment_frequency_per_day{S}", "{{repository}} {{environment}} {{window}}")],
            "short",
        ),
        Panel(
            "GitHub webhooks by event and status",
            [(f"sum by (event, status) (rate({_q('github_webhooks_total')}[{R}]))", "{{event}} {{status}}")],
            "reqps",
        ),
    ],
)

AUTH = Dashboard(
    "collector-auth-security",
    "Auth & Security",
    "Logins, sessions, registrations, security events and rate limiting, from the app's logs.",
    [
        Panel(
            "Auth attempts by outcome",
            [(f"sum by (outcome) (rate({_q('auth_attempts_total')}[{R}]))", "{{outcome}}")],
            "ops",
        ),
        Panel(
            "Failed auth per second by method",
            [(f"sum by (method) (rate({AUTH_FAILED}[{R}]))", "{{method}}")],
            "ops",
            description="HighAuthenticationFailures fires above 10/s for 5 minutes.",
        ),
        Panel("Active sessions", [(f"sum({_q('auth_sessions_active')})", "sessions")], "short", "stat"),
        Panel(
            "Registrations by source",
            [(f"sum by (source) (increase({_q('user_registrations_total')}[$__range]))", "{{source}}")],
            "short",
            "bargauge",
        ),
        Panel(
            "Security events by type and severity",
            [
                (
                    f"sum by (event_type, severity) (rate({_q('security_events_total')}[{R}]))",
                    "{{event_type}} {{severity}}",
                )
            ],
            "ops",
            description="SecurityEventsDetected fires above 5/s for 2 minutes.",
        ),
        Panel(
            "Rate-limit hits by route",
            [(f"sum by (route) (rate({_q('rate_limit_hits_total')}[{R}]))", "{{route}}")],
            "ops",
            description="HighRateLimitHits fires above 10/s for 5 minutes.",
        ),
        Panel(
            "Suspicious activity by kind",
            [(f"sum by (activity_type) (rate({_q('suspicious_activity_total')}[{R}]))", "{{activity_type}}")],
            "ops",
        ),
    ],
)

STRIPE = Dashboard(
    "collector-stripe",
    "Stripe Payments & Revenue",
    "Payments, revenue, subscriptions, refunds and disputes from Stripe events (major currency units).",
    [
        Panel(
            "Payment value per hour by currency",
            [(f"sum by (currency) (increase({_q('stripe_payment_value_total')}[1h]))", "{{currency}}")],
            "short",
        ),
        Panel(
            "Payments per second by currency",
            [(f"sum by (currency) (rate({_q('stripe_payments_total')}[{R}]))", "{{currency}}")],
            "ops",
        ),
        Panel(
            "Payment failures by decline code",
            [
                (
                    f"sum by (decline_code) (increase({_q('stripe_payment_failures_total')}[$__range]))",
                    "{{decline_code}}",
                )
            ],
            "short",
            "bargauge",
        ),
        Panel(
            "Active subscriptions",
            [(f"sum({_q('stripe_subscriptions_active')})", "active")],
            "short",
            "stat",
            description="LowSubscriptionCount fires below 1 for an hour.",
        ),
        Panel(
            "Monthly recurring revenue by currency",
            [(f"sum by (currency) ({_q('stripe_monthly_recurring_revenue')})", "{{currency}}")],
            "short",
            "stat",
        ),
        Panel(
            "Subscriptions created vs canceled",
            [
                (f"sum(increase({_q('stripe_subscriptions_created_total')}[$__range]))", "created"),
                (f"sum(increase({_q('stripe_subscriptions_canceled_total')}[$__range]))", "canceled"),
            ],
            "short",
            "bargauge",
        ),
        Panel(
            "Refund value by currency",
            [(f"sum by (currency) (increase({_q('stripe_refund_value_total')}[$__range]))", "{{currency}}")],
            "short",
            "bargauge",
        ),
        Panel(
            "Disputes by status",
            [(f"sum by (status) (increase({_q('stripe_disputes_total')}[$__range]))", "{{status}}")],
            "short",
            "bargauge",
        ),
        Panel(
            "Invoice payment failures and completed checkouts",
            [
                (
                    f"sum(increase({_q('stripe_invoice_payment_failures_total')}[$__range]))",
                    "invoice payment failures",
                ),
                (
                    f"sum(increase({_q('stripe_checkout_sessions_completed_total')}[$__range]))",
                    "checkouts completed",
                ),
            ],
            "short",
            "stat",
        ),
        Panel(
            "Webhooks by status",
            [(f"sum by (status) (rate({_q('stripe_webhooks_total')}[{R}]))", "{{status}}")],
            "ops",
            description="StripeWebhookProcessingErrors pages when more than 5% of signed deliveries are "
            "answered 500; StripeWebhooksMissing when none verifies for an hour; WebhookSignatureFailures "
            "is a ticket for sustained signature_failed/invalid requests.",
        ),
        Panel(
            "Time since last Stripe event",
            [(f"time() - max({_q('stripe_last_event_timestamp_seconds')})", "age")],
            "s",
            "stat",
            description="StripeEventsStale fires after 6 hours.",
        ),
    ],
)

WEBSOCKET = Dashboard(
    "collector-websocket",
    "WebSocket",
    "Client-side probes of the app's WebSocket endpoints, and the app's own WebSocket activity from its logs.",
    [
        Panel(
            "Probe success by target",
            [(f"min by (target) (probe_websocket_success{S})", "{{target}}")],
            "bool",
            "stat",
        ),
        Panel(
            "Probe phase durations",
            [(f"max by (target, phase) (probe_websocket_duration_seconds{S})", "{{target}} {{phase}}")],
            "s",
        ),
        Panel(
            "Ping round trip p95",
            [
                (
                    f"histogram_quantile(0.95, sum by (le, target) (rate({_q('probe_websocket_ping_rtt_seconds_bucket')}[{R}])))",
                    "{{target}}",
                )
            ],
            "s",
        ),
        Panel(
            "Probe failures by reason",
            [
                (
                    f"sum by (target, reason) (increase({_q('probe_websocket_failures_total')}[$__range]))",
                    "{{target}} {{reason}}",
                )
            ],
            "short",
            "bargauge",
        ),
        Panel(
            "Persistent connections: connected and drops",
            [
                (f"max by (target) (probe_websocket_connected{S})", "{{target}} connected"),
                (
                    f"sum by (target) (increase({_q('probe_websocket_connection_drops_total')}[$__range]))",
                    "{{target}} drops",
                ),
            ],
            "short",
            description="WebSocketConnectionDrop fires after a drop; ServiceDown when a probe fails for 1 minute.",
        ),
        Panel(
            "Upgrade status code",
            [(f"max by (target) (probe_websocket_status_code{S})", "{{target}}")],
            "none",
            "stat",
        ),
        Panel(
            "TLS certificate expires in",
            [(f"min by (target) (probe_ssl_earliest_cert_expiry{S}) - time()", "{{target}}")],
            "s",
            "stat",
        ),
        Panel(
            "App: open WebSocket connections",
            [
                (f"sum({_q('websocket_connections_active')})", "open"),
                (
                    'avg_over_time(service:websocket_connections_active:sum{service=~"$service"}[5m])',
                    "5m mean",
                ),
            ],
            "short",
            description="The gauge jumps with every connect and disconnect; WebSocketConnectionDrop compares "
            "the 5-minute mean with the mean of the 30 minutes before.",
        ),
        Panel(
            "App: connections accepted per second",
            [(f"sum(rate({_q('websocket_connections_total')}[{R}]))", "accepted")],
            "ops",
        ),
        Panel(
            "App: messages by direction and type",
            [
                (
                    f"sum by (direction, message_type) (rate({_q('websocket_messages_total')}[{R}]))",
                    "{{direction}} {{message_type}}",
                )
            ],
            "ops",
        ),
        Panel(
            "App: connection duration p50",
            [
                (
                    f"histogram_quantile(0.5, sum by (le) (rate({_q('websocket_connection_duration_seconds_bucket')}[$__range])))",
                    "p50",
                )
            ],
            "s",
            "stat",
        ),
    ],
)

BUSINESS = Dashboard(
    "collector-business",
    "Business & Content",
    "What users do: content, video, sign-ups and revenue at a glance.",
    [
        Panel(
            "Content access by type and level",
            [
                (
                    f"sum by (content_type, access_level) (rate({_q('content_access_total')}[{R}]))",
                    "{{content_type}} {{access_level}}",
                )
            ],
            "ops",
        ),
        Panel(
            "Video streams by quality",
            [(f"sum by (quality) (increase({_q('video_streams_total')}[$__range]))", "{{quality}}")],
            "short",
            "bargauge",
        ),
        Panel(
            "Video stream duration p50",
            [
                (
                    f"histogram_quantile(0.5, sum by (le) (rate({_q('video_stream_duration_seconds_bucket')}[$__range])))",
                    "p50",
                )
            ],
            "s",
            "stat",
        ),
        Panel(
            "Sign-ups in range",
            [(f"sum(increase({_q('user_registrations_total')}[$__range]))", "sign-ups")],
            "short",
            "stat",
        ),
        Panel(
            "Revenue in range by currency",
            [(f"sum by (currency) (increase({_q('stripe_payment_value_total')}[$__range]))", "{{currency}}")],
            "short",
            "stat",
        ),
        Panel(
            "Active subscriptions", [(f"sum({_q('stripe_subscriptions_active')})", "active")], "short", "stat"
        ),
    ],
)

COLLECTOR = Dashboard(
    "collector-health",
    "Collector health",
    "The collector itself and the app process it watches.",
    [
        Panel(
            "Collector up", [('up{job=~".*collector.*",service=~"$service"}', "{{instance}}")], "bool", "stat"
        ),
        Panel("Source up", [(f"min by (source) (collector_source_up{S})", "{{source}}")], "bool", "stat"),
        Panel(
            "Source errors by reason",
            [
                (
                    f"sum by (source, reason) (rate({_q('collector_source_errors_total')}[{R}]))",
                    "{{source}} {{reason}}",
                )
            ],
            "ops",
        ),
        Panel(
            "Source restarts",
            [
                (
                    f"sum by (source) (increase({_q('collector_source_restarts_total')}[$__range]))",
                    "{{source}}",
                )
            ],
            "short",
            "bargauge",
        ),
        Panel(
            "Log lines by result",
            [(f"sum by (result) (rate({_q('collector_log_lines_total')}[{R}]))", "{{result}}")],
            "ops",
        ),
        Panel(
            "Log bytes behind per file",
            [(f"max by (path) (collector_log_behind_bytes{S})", "{{path}}")],
            "bytes",
        ),
        Panel(
            "Files watched and checkpoint age",
            [
                (f"sum(collector_log_files_watched{S})", "files"),
                (f"max(collector_log_checkpoint_age_seconds{S})", "checkpoint age (s)"),
            ],
            "short",
        ),
        Panel(
            "Series folded at the limit",
            [
                (f"sum by (metric) ({_q('collector_series_overflow_total')})", "{{metric}}"),
                (f"sum by (metric) ({_q('collector_log_series_overflow_total')})", "{{metric}} (log rules)"),
            ],
            "short",
            "table",
        ),
        Panel(
            "State store resets and errors",
            [
                (f"sum({_q('collector_state_store_resets_total')})", "resets"),
                (f"sum by (operation) ({_q('collector_state_store_errors_total')})", "errors {{operation}}"),
            ],
            "short",
            "stat",
        ),
        Panel(
            "Event loop lag and /metrics render time",
            [
                (f"max(collector_event_loop_lag_seconds{S})", "loop lag"),
                (f"max(collector_scrape_render_seconds{S})", "render"),
            ],
            "s",
        ),
        Panel(
            "Collector memory",
            [('process_resident_memory_bytes{job=~".*collector.*",service=~"$service"}', "{{instance}}")],
            "bytes",
        ),
        Panel("App process up", [(f"max(app_process_up{S})", "up")], "bool", "stat"),
        Panel(
            "App CPU (cores)", [(f"sum(rate({_q('app_process_cpu_seconds_total')}[{R}]))", "cpu")], "short"
        ),
        Panel(
            "App memory",
            [
                (f"max(app_process_resident_memory_bytes{S})", "resident"),
                (f"max(app_process_virtual_memory_bytes{S})", "virtual"),
            ],
            "bytes",
            description="HighMemoryUsage fires above 90% of the container's memory limit for 5 minutes.",
        ),
        Panel(
            "App file descriptors",
            [(f"max(app_process_open_fds{S})", "open"), (f"max(app_process_max_fds{S})", "limit")],
            "short",
        ),
        Panel(
            "App threads and uptime",
            [
                (f"max(app_process_threads{S})", "threads"),
                (f"time() - max(app_process_start_time_seconds{S})", "uptime (s)"),
            ],
            "short",
        ),
        Panel(
            "Collector version",
            [(f"max by (version, python) (collector_build_info{S})", "{{version}} (Python {{python}})")],
            "short",
            "table",
        ),
    ],
)

DASHBOARDS = [HTTP, DORA, AUTH, STRIPE, WEBSOCKET, BUSINESS, COLLECTOR]
