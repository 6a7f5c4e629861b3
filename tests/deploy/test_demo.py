"""`collector demo`: correctly signed synthetic events, every metric family filled, a clean stop on Ctrl-C."""

from __future__ import annotations

import json
import random
import signal
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import stripe
from gidgethub import sansio

from collector.demo import collector_env
from collector.demo.payloads import GitHubScript, StripeScript, github_signature, log_lines, stripe_signature
from collector.settings import Settings
from collector.sources import SOURCES
from tests.deploy.kit import Demo
from tests.helpers import parse

#: Every family the demo must fill (samples, not just HELP): one per source and catalog area.
EVERY_FAMILY = [
    "app_process_up",
    "app_process_cpu_seconds_total",
    "app_process_resident_memory_bytes",
    "app_process_open_fds",
    "http_requests_total",
    "http_request_duration_seconds_bucket",
    "http_request_errors_total",
    "http_requests_in_flight",
    "http_response_size_bytes_bucket",
    "auth_attempts_total",
    "auth_sessions_active",
    "user_registrations_total",
    "security_events_total",
    "rate_limit_hits_total",
    "suspicious_activity_total",
    "websocket_connections_total",
    "websocket_connections_active",
    "websocket_messages_total",
    "websocket_connection_duration_seconds_bucket",
    "content_access_total",
    "video_streams_total",
    "video_stream_duration_seconds_bucket",
    "stripe_webhooks_total",
    "stripe_payment_value_total",
    "stripe_payments_total",
    "stripe_payment_failures_total",
    "stripe_subscriptions_active",
    "stripe_subscriptions_created_total",
    "stripe_subscriptions_canceled_total",
    "stripe_invoice_payment_failures_total",
    "stripe_refund_value_total",
    "stripe_disputes_total",
    "stripe_checkout_sessions_completed_total",
    "stripe_monthly_recurring_revenue",
    "stripe_last_event_timestamp_seconds",
    "deployments_total",
    "deployment_lead_time_seconds_bucket",
    "deployment_recovery_time_seconds_bucket",
    "deployment_change_failure_ratio",
    "deployment_frequency_per_day",
    "deployment_last_success_timestamp_seconds",
    "github_webhooks_total",
    "probe_websocket_success",
    "probe_websocket_duration_seconds",
    "probe_websocket_status_code",
    "probe_websocket_ping_rtt_seconds_bucket",
    "probe_websocket_connected",
    "probe_websocket_connection_drops_total",
    "collector_log_lines_total",
    "collector_log_behind_bytes",
    "collector_source_up",
    "collector_build_info",
]


#: The sources the demo configures (POST /deployments, the CI endpoint, is left off: GitHub covers DORA).
DEMO_SOURCES = ["process", "logs", "websocket", "stripe", "github"]


@pytest.mark.quick
def test_stripe_events_are_signed_as_stripe_signs_and_verify_with_the_stripe_library() -> None:
    script = StripeScript("t1")
    now = time.time()
    events = [script.next_event(now) for _ in range(len(StripeScript.CYCLE))]
    assert [e["type"] for e in events] == StripeScript.CYCLE
    assert len({e["id"] for e in events}) == len(events)  # de-duplication never hides a demo event
    body = json.dumps(events[0]).encode()
    header = stripe_signature("whsec_x", body, int(now))
    stripe.WebhookSignature.verify_header(body.decode(), header, "whsec_x", tolerance=300)
    created = [e["data"]["object"]["id"] for e in events if e["type"] == "customer.subscription.created"]
    deleted = [e["data"]["object"]["id"] for e in events if e["type"] == "customer.subscription.deleted"]
    assert deleted == created[:1]  # the oldest subscription is canceled, one stays active


@pytest.mark.quick
def test_github_releases_are_signed_as_github_signs_and_fail_then_recover() -> None:
    script = GitHubScript("t1")
    releases = [script.next_release(1_800_000_000.0 + 60 * i) for i in range(21)]
    assert [[name for name, _p in r] for r in releases] == [["push", "deployment", "deployment_status"]] * 21
    states = [r[2][1]["deployment_status"]["state"] for r in releases]
    # the 10th of every 10 fails and the next recovers: the change failure rate never exceeds 10%,
    # below HighChangeFailureRate's 15% (a healthy demo is quiet)
    assert [i + 1 for i, s in enumerate(states) if s == "failure"] == [10, 20]
    assert max(states[: n + 1].count("failure") / (n + 1) for n in range(len(states))) == 0.1
    push, deployment = releases[1][0][1], releases[1][1][1]
    assert push["before"] == releases[0][0][1]["after"] and push["after"] == deployment["deployment"]["sha"]
    body = json.dumps(deployment).encode()
    headers = {
        "x-github-event": "deployment",
        "x-github-delivery": "d1",
        "x-hub-signature-256": github_signature("s3cret", body),
        "content-type": "application/json",
    }
    assert sansio.Event.from_http(headers, body, secret="s3cret").event == "deployment"


@pytest.mark.quick
def test_log_lines_are_winston_json_with_the_benchmark_field_names() -> None:
    lines = [json.loads(x) for x in log_lines(random.Random(1), 1_800_000_000.0, 500)]
    messages = {line["message"] for line in lines}
    assert {
        "http_request",
        "request_start",
        "auth_attempt",
        "security_event",
        "ws_message",
        "content_access",
    } <= messages
    http = next(line for line in lines if line["message"] == "http_request")
    assert {"level", "timestamp", "method", "route", "status", "duration_ms"} <= set(http)


@pytest.mark.quick
def test_demo_configures_the_sources_it_finds_and_skips_the_others(tmp_path: Path) -> None:
    fields = set(Settings.model_fields)
    env, skipped = collector_env(
        SOURCES, fields, tmp_path / "logs", tmp_path / "data", "ws://127.0.0.1:1/ws", 42
    )
    assert skipped == [] and env["COLLECTOR_PROCESS__PID"] == "42"
    without = {k: v for k, v in SOURCES.items() if k != "stripe"}
    env, skipped = collector_env(
        without, fields, tmp_path / "logs", tmp_path / "data", "ws://127.0.0.1:1/ws", 42
    )
    assert skipped == ["stripe"] and not any(k.startswith("COLLECTOR_STRIPE__") for k in env)


def test_demo_fills_every_metric_family(demo: Demo) -> None:
    parsed = parse(demo.wait_for({n.removesuffix("_bucket") for n in EVERY_FAMILY}))
    samples = set(parsed)
    assert sorted(set(EVERY_FAMILY) - samples) == []
    assert "source not in this build" not in demo.log_path.read_text()
    # every source of this build runs, and both probes of the synthetic app's WebSocket succeed
    assert {s.labels["source"]: s.value for s in parsed["collector_source_up"]} == dict.fromkeys(
        DEMO_SOURCES, 1.0
    )
    assert {s.labels["target"]: s.value for s in parsed["probe_websocket_success"]} == {
        "demo-ping": 1.0,
        "demo-persistent": 1.0,
    }


def test_demo_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    demo = Demo(tmp_path)
    demo.wait_for({"collector_build_info"}, timeout=30)
    children = psutil.Process(demo.proc.pid).children(recursive=True)
    assert children, "the collector runs as a child process"
    assert demo.stop(signal.SIGINT, timeout=30) == 0
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
    try:
        urllib.request.urlopen(demo.url + "/health/live", timeout=2)
        raise AssertionError("collector still serving after Ctrl-C")
    except OSError:
        pass
    assert '"msg": "collector stopped"' in demo.log_path.read_text()
