"""Stripe Events API polling against a fake Stripe API on 127.0.0.1: cursor, catch-up, errors, reconciliation."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from collector.settings import StripeSettings
from tests.helpers import Running, make_settings, serve, value
from tests.sources.stripe_helpers import API_KEY, SECRET, FakeStripe, deliver, event, fake_stripe
from tests.sources.stripe_running import until_started

NOW = int(time.time())


def payment(n: int, created: int, amount: int = 100) -> dict[str, Any]:
    return event(
        "payment_intent.succeeded",
        event_id=f"evt_p{n:05d}",
        created=created,
        amount=amount,
        amount_received=amount,
    )


@asynccontextmanager
async def polling(tmp_path: Path, base: str, **stripe: Any) -> AsyncIterator[Running]:
    stripe = {"api_key": API_KEY, "api_base": base, "poll_interval": 0.05, **stripe}
    async with serve(make_settings(tmp_path, stripe=StripeSettings(**stripe))) as running:
        await until_started(running)
        yield running


def payments_are(n: int) -> Any:
    return lambda m: value(m, "stripe_payments_total", currency="usd") == n


def processed_order(tmp_path: Path) -> list[str]:
    with sqlite3.connect(tmp_path / "data" / "state.db") as conn:
        return [i for (i,) in conn.execute("SELECT id FROM stripe_events ORDER BY seen_at, created")]


async def test_first_start_begins_at_newest_then_catches_up_after_downtime(tmp_path: Path) -> None:
    fake = FakeStripe()
    fake.add(*(payment(i, NOW - 1000 + i) for i in range(3)))  # history before the collector existed
    async with fake_stripe(fake) as base:
        async with polling(tmp_path, base, webhook_secrets=[SECRET]) as c:
            await c.wait_for(lambda m: value(m, "stripe_poll_last_success_timestamp_seconds") is not None)
            fake.add(payment(3, NOW - 900, 250), payment(4, NOW - 899, 250))
            m = await c.wait_for(payments_are(2))
            # The same event over the webhook too: one pipeline, counted once.
            assert await deliver(c.url, fake.events[3]) == (200, {"received": True, "status": "duplicate"})
        assert value(m, "stripe_payment_value_total", currency="usd") == 5.0
        # Down while 250 events happen (three pages), then started again.
        fake.add(*(payment(i, NOW - 800 + i, 101) for i in range(5, 255)))
        async with polling(tmp_path, base) as c:
            m = await c.wait_for(payments_are(252), timeout=30)
        assert value(m, "stripe_payment_value_total", currency="usd") == 5.0 + 250 * 1.01
        assert (
            value(m, "stripe_polled_events_total", event_type="payment_intent.succeeded", status="processed")
            == 250
        )
        assert value(m, "stripe_last_event_timestamp_seconds") == NOW - 800 + 254
    assert processed_order(tmp_path) == [f"evt_p{i:05d}" for i in range(3, 255)]
    assert not any("starting_after" in r for r in fake.requests)  # forward only after the first start


async def test_api_error_and_rate_limit_mid_catch_up_lose_and_double_nothing(tmp_path: Path) -> None:
    fake = FakeStripe()
    fake.add(*(payment(i, NOW - 500 + i) for i in range(230)))
    fake.fail_when = {"ending_before=evt_p00100": 500, "ending_before=evt_p00200": 429}
    async with fake_stripe(fake) as base, polling(tmp_path, base, backfill=3600) as c:
        m = await c.wait_for(payments_are(230), timeout=30)
    assert value(m, "stripe_payment_value_total", currency="usd") == 230.0
    assert value(m, "stripe_api_requests_total", endpoint="events", code="500") == 1
    assert value(m, "stripe_api_requests_total", endpoint="events", code="429") == 1
    assert value(m, "collector_source_errors_total", source="stripe", reason="api_5xx") == 1
    assert value(m, "collector_source_errors_total", source="stripe", reason="api_rate_limited") == 1
    assert processed_order(tmp_path) == [f"evt_p{i:05d}" for i in range(230)]


async def test_backfill_reads_only_the_configured_window(tmp_path: Path) -> None:
    fake = FakeStripe()
    fake.add(payment(0, NOW - 7200), payment(1, NOW - 1800), payment(2, NOW - 60))
    async with fake_stripe(fake) as base, polling(tmp_path, base, backfill=3600) as c:
        await c.wait_for(payments_are(2))
    assert processed_order(tmp_path) == ["evt_p00001", "evt_p00002"]


async def test_expired_cursor_rereads_the_retention_window_without_double_counting(tmp_path: Path) -> None:
    fake = FakeStripe()
    fake.add(payment(0, NOW - 100), payment(1, NOW - 90))
    async with fake_stripe(fake) as base:
        async with polling(tmp_path, base, backfill=3600) as c:
            await c.wait_for(payments_are(2))
        fake.deleted.add("evt_p00001")  # the cursor event aged out of Stripe's 30 days
        fake.add(payment(2, NOW - 80))
        async with polling(tmp_path, base) as c:
            m = await c.wait_for(payments_are(3))
    assert value(m, "collector_source_errors_total", source="stripe", reason="cursor_expired") == 1
    assert value(m, "stripe_payments_total", currency="usd") == 3


def subscription(sub_id: str, status: str, quantity: int) -> dict[str, Any]:
    obj = event("customer.subscription.created", id=sub_id, status=status)["data"]["object"]
    obj["items"]["data"][0]["quantity"] = quantity
    return obj


async def test_reconciliation_corrects_subscription_state_from_the_api(tmp_path: Path) -> None:
    fake = FakeStripe()
    fake.subscriptions = [subscription("sub_1", "active", 2), subscription("sub_2", "canceled", 1)]
    fake.subscriptions += [subscription(f"sub_x{i}", "trialing", 1) for i in range(120)]  # two pages
    stale = event("customer.subscription.created", id="sub_2", created=NOW - 3600)
    async with fake_stripe(fake) as base:
        settings = {"webhook_secrets": [SECRET], "reconcile_interval": 3600}
        async with polling(tmp_path, base, **settings) as c:
            await c.wait_for(lambda m: value(m, "stripe_subscriptions", status="trialing") == 120)
            assert (await deliver(c.url, stale))[0] == 200  # older than the API snapshot: no effect
            m = await c.metrics()
    assert value(m, "stripe_subscriptions_active") == 1
    assert value(m, "stripe_subscriptions", status="canceled") == 1
    assert value(m, "stripe_monthly_recurring_revenue", currency="usd") == 30.0
    assert value(m, "stripe_subscriptions_created_total") == 1  # counted from the event, not the snapshot
