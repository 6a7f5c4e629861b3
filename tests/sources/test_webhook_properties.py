"""Property tests (hypothesis, bounded) over the real event shapes of tests/fixtures/: any one field of a
real Stripe or GitHub payload replaced by any JSON value, correctly signed, never produces a 5xx, a dead
task, a NaN/Inf metric, or a change to metrics the event has nothing to do with.

A long run: `HYPOTHESIS_PROFILE=long .venv/bin/pytest -q tests/sources/test_webhook_properties.py -s`.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import math
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.settings import GitHubSettings, StripeSettings
from tests.helpers import make_settings
from tests.threaded import ThreadedCollector, running

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
STRIPE_SECRET = "whsec_props"
GITHUB_SECRET = "gh_props"
NOW = int(time.time())


def _stripe_fixtures() -> list[dict[str, Any]]:
    out = []
    for path in sorted((FIXTURES / "stripe").glob("*/*.json")):
        ev = json.loads(path.read_text())
        ev["created"] = NOW - 60
        out.append(ev)
    return out


def _issue() -> dict[str, Any]:
    return {
        "action": "opened",
        "issue": {
            "number": 1,
            "state": "open",
            "created_at": "2026-01-01T00:00:00Z",
            "closed_at": None,
            "labels": [{"name": "incident"}, {"name": "environment:production"}],
        },
        "repository": {"full_name": "Codertocat/Hello-World"},
    }


def _github_fixtures() -> list[tuple[str, dict[str, Any]]]:
    out = [
        (path.parent.name, json.loads(path.read_text()))
        for path in sorted((FIXTURES / "github").glob("*/*.json"))
    ]
    return [*out, ("issues", _issue())]


STRIPE = _stripe_fixtures()
GITHUB = _github_fixtures()

# Families each Stripe event type may change (besides delivery and error counters).
_SUBS = {
    "stripe_subscriptions_created_total",
    "stripe_subscriptions_canceled_total",
    "stripe_subscriptions_active",
    "stripe_subscriptions",
    "stripe_monthly_recurring_revenue",
}
_PAY = {"stripe_payments_total", "stripe_payment_value_total"}
STRIPE_TOUCHES: dict[str, set[str]] = {
    "payment_intent.succeeded": _PAY,
    "charge.succeeded": _PAY,
    "payment_intent.payment_failed": {"stripe_payment_failures_total"},
    "charge.refunded": {"stripe_refund_value_total", "stripe_refunds_total"},
    "charge.dispute.created": {"stripe_disputes_total"},
    "charge.dispute.closed": {"stripe_disputes_total"},
    "checkout.session.completed": {"stripe_checkout_sessions_completed_total"},
    "invoice.payment_failed": {"stripe_invoice_payment_failures_total"},
}
ALWAYS = {
    "collector_source_errors_total",
    "collector_http_requests_total",
    "collector_http_request_duration_seconds",
}
STRIPE_ALWAYS = {"stripe_webhooks_total", "stripe_last_event_timestamp_seconds"}
GITHUB_TOUCHES = {
    "github_webhooks_total",
    "deployments_total",
    "deployment_lead_time_seconds",
    "deployment_recovery_time_seconds",
    "deployment_change_failure_ratio",
    "deployment_frequency_per_day",
    "deployment_last_success_timestamp_seconds",
}


def stripe_touches(event_type: Any) -> set[str]:
    allowed = ALWAYS | STRIPE_ALWAYS
    if isinstance(event_type, str):
        allowed |= (
            _SUBS
            if event_type.startswith("customer.subscription.")
            else STRIPE_TOUCHES.get(event_type, set())
        )
    return allowed


# -- hostile JSON values ------------------------------------------------------------------------------
_edge_numbers = st.sampled_from(
    [0, -1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30, 1e308, -1e308, 5e-324, 0.5]
)
_edge_strings = st.sampled_from(
    [
        "",
        "1e400",
        "NaN",
        "Infinity",
        "-5",
        "0x10",
        "9" * 400,
        "2019-05-15T15:20:53Z",
        "0001-01-01T00:00:00",
        "9999-12-31T23:59:59+14:00",
        "\u0000",
        "é" * 50,
        "production",
        "success",
        "failure",
        "active",
        "canceled",
    ]
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    _edge_numbers,
    st.text(max_size=30),
    _edge_strings,
)
_json = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_deep = st.integers(min_value=100, max_value=5000).map(lambda n: ("deep", n))
_values = st.one_of(_json, _deep)


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value in `doc` (dict keys and list indexes), the root excluded."""
    out = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.append((*prefix, k))
            out.extend(paths(v, (*prefix, k)))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.append((*prefix, i))
            out.extend(paths(v, (*prefix, i)))
    return out


_DEEP_MARK = "__deep_placeholder__"


def replaced(doc: Any, path: tuple[Any, ...], value: Any) -> bytes:
    """`doc` with the value at `path` replaced by `value` (a `("deep", n)` is n nested lists), as JSON."""
    doc = copy.deepcopy(doc)
    cur = doc
    for key in path[:-1]:
        cur = cur[key]
    deep = isinstance(value, tuple)
    cur[path[-1]] = _DEEP_MARK if deep else value
    body = json.dumps(doc)
    if deep:
        n = value[1]
        body = body.replace(json.dumps(_DEEP_MARK), "[" * n + "]" * n, 1)
    return body.encode()


# -- the collector in a thread, driven synchronously by hypothesis --------------------------------------
class Server(ThreadedCollector):
    def snapshot(self) -> dict[str, Any]:
        async def take() -> dict[str, Any]:
            fams = self.run.runtime.metrics.families
            return {n: copy.deepcopy(dict(f.series)) for n, f in fams.items()}

        return asyncio.run_coroutine_threadsafe(take(), self.loop).result(10)

    def alive(self) -> list[str]:
        """Problems: sources not running, or the Stripe writer task dead with an exception."""
        problems = [
            f"{ctx.name}: {ctx.status.state}"
            for _s, ctx in self.run.runtime.sources
            if ctx.status.state != "running"
        ]
        for source, _ctx in self.run.runtime.sources:
            task = getattr(getattr(source, "writer", None), "_task", None)
            if task is not None and task.done() and not task.cancelled() and task.exception() is not None:
                problems.append(f"stripe writer died: {task.exception()!r}")
        return problems


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = make_settings(
        tmp_path_factory.mktemp("webhook-props"),
        stripe=StripeSettings(webhook_secrets=[STRIPE_SECRET], tolerance=86400),
        github=GitHubSettings(
            webhook_secret=GITHUB_SECRET,
            incident_label="incident",
            deploy_workflows=["CI", "test"],
            production_environments=".*",
            change_failure="both",
        ),
    )
    with running(Server(s, timeout=30, headers={"Content-Type": "application/json"})) as srv:
        yield srv


def finite_everywhere(snapshot: dict[str, Any]) -> list[str]:
    bad = []
    for name, series in snapshot.items():
        for labels, v in series.items():
            values = v if isinstance(v, list) else [v]
            if any(isinstance(x, float) and not math.isfinite(x) for x in values):
                bad.append(f"{name}{labels}={v}")
    return bad


def changed(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    return {n for n in set(before) | set(after) if before.get(n) != after.get(n)}


EXAMPLES = int(os.environ.get("WEBHOOK_PROPERTY_EXAMPLES", "120"))
BUDGET = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def stripe_sign(body: bytes) -> str:
    ts = int(time.time())
    mac = hmac.new(STRIPE_SECRET.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


@BUDGET
@given(
    which=st.integers(min_value=0, max_value=len(STRIPE) - 1), pick=st.integers(min_value=0), value=_values
)
def test_any_field_of_a_real_stripe_event_replaced_never_breaks_anything(
    server: Server, which: int, pick: int, value: Any
) -> None:
    ev = copy.deepcopy(STRIPE[which])
    ev["id"] = f"evt_prop_{uuid.uuid4().hex}"  # fresh: de-duplication must not hide the effect
    choices = paths(ev)
    path = choices[pick % len(choices)]
    body = replaced(ev, path, value)
    final_type = ev["type"] if path != ("type",) else (value if not isinstance(value, tuple) else None)
    before = server.snapshot()
    status = server.post("/webhooks/stripe", body, {"Stripe-Signature": stripe_sign(body)})
    after = server.snapshot()
    assert status < 500, (path, value, status)
    assert not server.alive(), server.alive()
    assert not finite_everywhere(after)
    assert changed(before, after) <= stripe_touches(final_type), (path, value)


@BUDGET
@given(
    which=st.integers(min_value=0, max_value=len(GITHUB) - 1), pick=st.integers(min_value=0), value=_values
)
def test_any_field_of_a_real_github_event_replaced_never_breaks_anything(
    server: Server, which: int, pick: int, value: Any
) -> None:
    event, payload = GITHUB[which]
    choices = paths(payload)
    path = choices[pick % len(choices)]
    body = replaced(payload, path, value)
    sig = "sha256=" + hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": str(uuid.uuid4()), "X-Hub-Signature-256": sig}
    before = server.snapshot()
    status = server.post("/webhooks/github", body, headers)
    after = server.snapshot()
    assert status < 500, (event, path, value, status)
    assert not server.alive(), server.alive()
    assert not finite_everywhere(after)
    assert changed(before, after) <= ALWAYS | GITHUB_TOUCHES, (event, path, value)
