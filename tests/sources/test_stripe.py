"""Stripe webhooks end to end: real fixture payloads, signed as Stripe signs, POSTed to the running collector."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import CollectorProcess, value
from tests.sources.stripe_helpers import (
    OLD_SECRET,
    SECRET,
    body_of,
    deliver,
    event,
    post,
    sign,
)
from tests.sources.stripe_running import T0, collector, sub_event


async def test_fixture_events_give_exact_metrics(tmp_path: Path) -> None:
    events = [
        event("payment_intent.succeeded"),
        event("payment_intent.payment_failed"),
        event("charge.refunded"),
        event("charge.dispute.created"),
        event("checkout.session.completed"),
        event("invoice.payment_failed"),
        event("invoice.paid"),
        event("invoice.payment_succeeded"),
        sub_event("customer.subscription.created", "sub_A", T0),
        sub_event("customer.subscription.updated", "sub_A", T0 + 10, quantity=3),
        sub_event("customer.subscription.created", "sub_B", T0 + 1),
        sub_event("customer.subscription.deleted", "sub_B", T0 + 20),
    ]
    # quantity lives on the item too: the MRR reads items, as Stripe prices per item
    events[9]["data"]["object"]["items"]["data"][0]["quantity"] = 3
    async with collector(tmp_path) as c:
        for ev in events:
            assert await deliver(c.url, ev) == (200, {"received": True, "status": "processed"})
        m = await c.metrics()
    assert value(m, "stripe_payments_total", currency="usd") == 1
    assert (
        value(m, "stripe_payment_value_total", currency="usd") == 20.0
    )  # 2000 cents, from the PaymentIntent only
    assert value(m, "stripe_payment_failures_total", currency="usd", decline_code="generic_decline") == 1
    assert value(m, "stripe_refund_value_total", currency="usd") == 1.0
    assert value(m, "stripe_refunds_total", currency="usd") == 1
    assert value(m, "stripe_disputes_total", status="warning_needs_response") == 1
    assert value(m, "stripe_checkout_sessions_completed_total", mode="payment") == 1
    assert value(m, "stripe_invoice_payment_failures_total", kind="one_off") == 1
    assert value(m, "stripe_subscriptions_created_total") == 2
    assert value(m, "stripe_subscriptions_canceled_total") == 1
    assert value(m, "stripe_subscriptions_active") == 1
    assert value(m, "stripe_subscriptions", status="active") == 1
    assert value(m, "stripe_subscriptions", status="canceled") == 1
    assert value(m, "stripe_monthly_recurring_revenue", currency="usd") == 45.0  # 15.00 x 3 seats
    assert value(m, "stripe_last_event_timestamp_seconds") == T0 + 20
    for ev_type in ("invoice.paid", "charge.refunded", "customer.subscription.created"):
        expected = 2 if ev_type == "customer.subscription.created" else 1
        assert value(m, "stripe_webhooks_total", event_type=ev_type, status="processed") == expected


async def test_zero_and_three_decimal_currencies_in_major_units(tmp_path: Path) -> None:
    amounts = {"jpy": 5000, "kwd": 12345, "isk": 50000, "ugx": 7000, "eur": 1999}
    async with collector(tmp_path) as c:
        for cur, amount in amounts.items():
            ev = event("payment_intent.succeeded", currency=cur, amount=amount, amount_received=amount)
            assert (await deliver(c.url, ev))[0] == 200
        ev = event("charge.refunded", id="ch_jpy", currency="jpy", amount=3000, amount_refunded=1000)
        ev["data"]["previous_attributes"]["amount_refunded"] = 0
        assert (await deliver(c.url, ev))[0] == 200
        m = await c.metrics()
    assert value(m, "stripe_payment_value_total", currency="jpy") == 5000.0
    assert value(m, "stripe_payment_value_total", currency="kwd") == 12.345
    assert value(m, "stripe_payment_value_total", currency="isk") == 500.0  # Stripe keeps ISK two-decimal
    assert value(m, "stripe_payment_value_total", currency="ugx") == 7000.0
    assert value(m, "stripe_payment_value_total", currency="eur") == 19.99
    assert value(m, "stripe_refund_value_total", currency="jpy") == 1000.0


async def test_partial_refunds_count_once_each(tmp_path: Path) -> None:
    first = event("charge.refunded", id="ch_partial", amount=10000, amount_refunded=3000)
    first["data"]["previous_attributes"]["amount_refunded"] = 0
    second = event("charge.refunded", id="ch_partial", amount=10000, amount_refunded=10000)
    second["data"]["previous_attributes"]["amount_refunded"] = 3000
    async with collector(tmp_path) as c:
        for ev in (second, first, second):  # out of order, and the second redelivered
            assert (await deliver(c.url, ev))[0] == 200
        m = await c.metrics()
    assert value(m, "stripe_refund_value_total", currency="usd") == 100.0
    assert value(m, "stripe_refunds_total", currency="usd") == 2


async def test_duplicate_delivery_is_answered_200_and_never_reapplied(tmp_path: Path) -> None:
    ev = event("payment_intent.succeeded")
    async with collector(tmp_path) as c:
        assert await deliver(c.url, ev) == (200, {"received": True, "status": "processed"})
        results = await asyncio.gather(*(deliver(c.url, ev) for _ in range(3)))
        assert results == [(200, {"received": True, "status": "duplicate"})] * 3
        m = await c.metrics()
    assert value(m, "stripe_payments_total", currency="usd") == 1
    assert value(m, "stripe_payment_value_total", currency="usd") == 20.0
    assert value(m, "stripe_webhooks_total", event_type="payment_intent.succeeded", status="processed") == 1
    assert value(m, "stripe_webhooks_total", event_type="payment_intent.succeeded", status="duplicate") == 3


async def test_late_updated_never_resurrects_a_deleted_subscription(tmp_path: Path) -> None:
    deleted = sub_event("customer.subscription.deleted", "sub_X", T0 + 20)
    updated = sub_event("customer.subscription.updated", "sub_X", T0 + 10, status="active")
    created = sub_event("customer.subscription.created", "sub_X", T0)
    async with collector(tmp_path) as c:
        for ev in (deleted, updated, created):
            assert await deliver(c.url, ev) == (200, {"received": True, "status": "processed"})
        m = await c.metrics()
    assert value(m, "stripe_subscriptions_active") == 0
    assert value(m, "stripe_subscriptions", status="canceled") == 1
    assert value(m, "stripe_subscriptions", status="active") is None
    assert value(m, "stripe_monthly_recurring_revenue", currency="usd") is None
    assert value(m, "stripe_subscriptions_created_total") == 1
    assert value(m, "stripe_subscriptions_canceled_total") == 1


async def test_newer_update_wins_over_an_older_one_arriving_later(tmp_path: Path) -> None:
    newer = sub_event("customer.subscription.updated", "sub_Y", T0 + 10, status="past_due")
    older = sub_event("customer.subscription.updated", "sub_Y", T0 + 5, status="active")
    async with collector(tmp_path) as c:
        for ev in (newer, older):
            assert (await deliver(c.url, ev))[0] == 200
        m = await c.metrics()
    assert value(m, "stripe_subscriptions", status="past_due") == 1
    assert value(m, "stripe_subscriptions_active") == 0


async def test_expired_timestamp_is_rejected_with_400(tmp_path: Path) -> None:
    body = body_of(event("payment_intent.succeeded"))
    async with collector(tmp_path, tolerance=300) as c:
        status, payload = await post(c.url, body, sign(body, SECRET, t=int(time.time()) - 301))
        m = await c.metrics()
    assert (status, payload) == (400, {"error": "signature_expired"})
    assert value(m, "stripe_webhooks_total", event_type="unknown", status="signature_failed") == 1
    assert value(m, "collector_source_errors_total", source="stripe", reason="signature_expired") == 1
    assert value(m, "stripe_payments_total", currency="usd") is None


async def test_wrong_secret_and_missing_header_are_rejected(tmp_path: Path) -> None:
    body = body_of(event("payment_intent.succeeded"))
    async with collector(tmp_path) as c:
        assert await post(c.url, body, secrets="whsec_someone_else") == (400, {"error": "signature_mismatch"})
        assert await post(c.url, body, header="") == (400, {"error": "signature_missing"})
        assert await post(c.url, body, header="garbage") == (400, {"error": "signature_malformed"})
        m = await c.metrics()
    assert value(m, "stripe_webhooks_total", event_type="unknown", status="signature_failed") == 3
    assert value(m, "collector_source_errors_total", source="stripe", reason="signature_mismatch") == 1
    assert value(m, "stripe_payments_total", currency="usd") is None


async def test_two_secrets_accepted_during_rotation(tmp_path: Path) -> None:
    async with collector(tmp_path / "both", webhook_secrets=[SECRET, OLD_SECRET]) as c:
        for secrets in ([OLD_SECRET], [SECRET], [OLD_SECRET, SECRET]):
            body = body_of(event("payment_intent.succeeded"))
            assert (await post(c.url, body, secrets=secrets))[0] == 200
        m = await c.metrics()
    assert value(m, "stripe_payments_total", currency="usd") == 3
    # Stripe sends one v1 per active secret: a collector that only knows the new one accepts it too.
    async with collector(tmp_path / "new", webhook_secrets=[SECRET]) as c:
        body = body_of(event("payment_intent.succeeded"))
        assert (await post(c.url, body, secrets=[OLD_SECRET, SECRET]))[0] == 200
        assert (await post(c.url, body_of(event("invoice.paid")), secrets=[OLD_SECRET]))[0] == 400


async def test_signed_malformed_json_is_acknowledged_rejected_and_counted_invalid(tmp_path: Path) -> None:
    # Signed, so from Stripe: any non-2xx would be retried for 3 days, so it is acknowledged as rejected.
    rejected = {"received": True, "status": "rejected"}
    async with collector(tmp_path) as c:
        assert await post(c.url, b'{"id": "evt_1", "type": ') == (200, {**rejected, "reason": "invalid_json"})
        assert await post(c.url, b'{"hello": "world"}') == (200, {**rejected, "reason": "invalid_event"})
        m = await c.metrics()
    assert value(m, "stripe_webhooks_total", event_type="unknown", status="invalid") == 2
    assert value(m, "collector_source_errors_total", source="stripe", reason="invalid_json") == 1


async def test_oversized_body_is_refused_before_verification(tmp_path: Path) -> None:
    ev = event("payment_intent.succeeded", description="x" * 10_000)
    async with collector(tmp_path, max_body_bytes=8192) as c:
        assert await deliver(c.url, ev) == (413, {"error": "body_too_large"})
        assert (await deliver(c.url, event("payment_intent.succeeded")))[0] == 200
        m = await c.metrics()
    assert value(m, "stripe_webhooks_total", event_type="unknown", status="invalid") == 1
    assert value(m, "stripe_payments_total", currency="usd") == 1


async def test_unknown_event_type_is_ignored_with_200(tmp_path: Path) -> None:
    ev = event("payment_intent.succeeded")
    ev["type"] = "issuing_card.created"
    async with collector(tmp_path) as c:
        assert await deliver(c.url, ev) == (200, {"received": True, "status": "ignored"})
        m = await c.metrics()
    assert value(m, "stripe_webhooks_total", event_type="issuing_card.created", status="ignored") == 1
    assert value(m, "stripe_payments_total", currency="usd") is None


async def test_post_basil_payloads(tmp_path: Path) -> None:
    sub = event("customer.subscription.updated", generation="openapi-fixtures3-wrapped", created=T0)
    inv = event("invoice.created", generation="openapi-fixtures3-wrapped", created=T0 + 1)
    inv["type"] = "invoice.payment_failed"
    old_inv = event("invoice.payment_failed", subscription="sub_A")
    async with collector(tmp_path) as c:
        for ev in (sub, inv, old_inv):
            assert await deliver(c.url, ev) == (200, {"received": True, "status": "processed"})
        m = await c.metrics()
    assert value(m, "stripe_subscriptions_active") == 1
    assert value(m, "stripe_monthly_recurring_revenue", currency="usd") == 20.0
    assert value(m, "stripe_invoice_payment_failures_total", kind="subscription") == 2


async def test_event_with_unexpected_object_is_acknowledged_and_counted_invalid(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ev = event("payment_intent.succeeded", amount_received="lots", customer="cus_SECRET1")
    ev["data"]["object"]["receipt_email"] = "jane@example.com"
    caplog.set_level(logging.INFO)
    async with collector(tmp_path) as c:
        assert await deliver(c.url, ev) == (200, {"received": True, "status": "invalid"})
        assert await deliver(c.url, ev) == (200, {"received": True, "status": "duplicate"})
        m = await c.metrics()
    assert value(m, "stripe_webhooks_total", event_type="payment_intent.succeeded", status="invalid") == 1
    assert value(m, "collector_source_errors_total", source="stripe", reason="invalid_object") == 1
    # Every string a record carries (message and extra fields); numbers such as the record's own
    # timestamp are left out, or "4242" can turn up in 1796194649.2693424 by chance.
    logged = " ".join(
        str(v) for r in caplog.records for v in r.__dict__.values() if not isinstance(v, float | int)
    )
    assert ev["id"] in logged
    assert "cus_SECRET1" not in logged and "jane@example.com" not in logged and "4242" not in logged


async def test_restart_keeps_dedupe_counters_and_subscriptions(tmp_path: Path) -> None:
    pay = event("payment_intent.succeeded", currency="kwd", amount_received=1500)
    created = sub_event("customer.subscription.created", "sub_R", T0)
    deleted = sub_event("customer.subscription.deleted", "sub_Q", T0 + 30)
    async with collector(tmp_path) as c:
        for ev in (pay, created, deleted):
            assert (await deliver(c.url, ev))[0] == 200
    async with collector(tmp_path) as c:
        m = await c.metrics()
        assert value(m, "stripe_payment_value_total", currency="kwd") == 1.5
        assert value(m, "stripe_subscriptions_active") == 1
        assert value(m, "stripe_monthly_recurring_revenue", currency="usd") == 15.0
        assert value(m, "stripe_last_event_timestamp_seconds") == T0 + 30
        # Stripe redelivers after the restart: recognised, not re-applied.
        assert await deliver(c.url, pay) == (200, {"received": True, "status": "duplicate"})
        # A late update of the subscription deleted before the restart stays ignored.
        late = sub_event("customer.subscription.updated", "sub_Q", T0 + 5, status="active")
        assert (await deliver(c.url, late))[0] == 200
        m = await c.metrics()
    assert value(m, "stripe_payments_total", currency="kwd") == 1
    assert value(m, "stripe_payment_value_total", currency="kwd") == 1.5
    assert value(m, "stripe_subscriptions_active") == 1
    assert value(m, "stripe_subscriptions", status="canceled") == 1
    assert value(m, "stripe_subscriptions_canceled_total") == 1
    assert value(m, "stripe_webhooks_total", event_type="payment_intent.succeeded", status="duplicate") == 1


def _post_sync(url: str, ev: dict[str, Any]) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    body = body_of(ev)
    req = urllib.request.Request(
        url + "/webhooks/stripe", data=body, headers={"Stripe-Signature": sign(body)}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _post_until_ready(url: str, ev: dict[str, Any]) -> tuple[int, bytes]:
    for _ in range(200):
        status, body = _post_sync(url, ev)
        if status != 503:  # the source is still loading its state
            return status, body
        time.sleep(0.05)
    raise AssertionError("webhook never became ready")


def test_real_process_killed_with_sigkill_keeps_exactly_once(tmp_path: Path) -> None:
    env = {"COLLECTOR_STRIPE__WEBHOOK_SECRETS": SECRET, "COLLECTOR_DATA_DIR": str(tmp_path / "data")}
    pay = event("payment_intent.succeeded", currency="jpy", amount_received=5000)
    sub = sub_event("customer.subscription.created", "sub_K", T0)
    proc = CollectorProcess(env, tmp_path)
    try:
        proc.wait_live()
        assert _post_until_ready(proc.url, pay)[0] == 200
        assert _post_until_ready(proc.url, sub)[0] == 200
    finally:
        proc.kill()  # SIGKILL: no shutdown hook runs, only committed transactions survive
    proc = CollectorProcess(env, tmp_path)
    try:
        proc.wait_live()
        status, body = _post_until_ready(proc.url, pay)
        assert (status, json.loads(body)["status"]) == (200, "duplicate")
        m = proc.scrape()
        assert proc.terminate() == 0
    finally:
        if proc.proc.poll() is None:
            proc.kill()
    assert value(m, "stripe_payment_value_total", currency="jpy") == 5000.0
    assert value(m, "stripe_payments_total", currency="jpy") == 1
    assert value(m, "stripe_subscriptions_active") == 1
    assert value(m, "stripe_monthly_recurring_revenue", currency="usd") == 15.0
    assert "whsec_" not in proc.stderr()


async def test_store_failure_answers_500_and_the_retry_applies_once(tmp_path: Path) -> None:
    ev = event("payment_intent.succeeded")
    async with collector(tmp_path) as c:
        store = c.runtime.store
        await store.call(lambda conn: conn.execute("ALTER TABLE stripe_events RENAME TO parked"))
        assert await deliver(c.url, ev) == (500, {"error": "could not record the event"})
        m = await c.metrics()
        assert value(m, "stripe_payments_total", currency="usd") is None
        await store.call(lambda conn: conn.execute("ALTER TABLE parked RENAME TO stripe_events"))
        assert await deliver(c.url, ev) == (200, {"received": True, "status": "processed"})  # Stripe's retry
        m = await c.metrics()
    assert value(m, "stripe_payments_total", currency="usd") == 1
    assert value(m, "stripe_webhooks_total", event_type="payment_intent.succeeded", status="error") == 1
    assert value(m, "collector_source_errors_total", source="stripe", reason="store") == 1
