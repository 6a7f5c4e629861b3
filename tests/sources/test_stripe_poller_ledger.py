"""The Events API poller against its narrow `Ledger` interface alone: no StripeSource, a fake Stripe API."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from collector.logsetup import LogFirst
from collector.metrics import MetricState
from collector.selfmetrics import SelfMetrics
from collector.settings import StripeSettings
from collector.settings.model import Secret
from collector.source import SourceContext
from collector.sources.stripe import state
from collector.sources.stripe.events import Event, SubState
from collector.sources.stripe.poller import Ledger, Poller
from collector.store import StateStore
from tests.sources.stripe_helpers import API_KEY, FakeStripe, event, fake_stripe

NOW = int(time.time())


def payment(n: int, created: int) -> dict[str, Any]:
    return event("payment_intent.succeeded", event_id=f"evt_p{n:05d}", created=created)


def subscription(sub_id: str, status: str) -> dict[str, Any]:
    obj: dict[str, Any] = event("customer.subscription.created", id=sub_id, status=status)["data"]["object"]
    return obj


class RecordingLedger:
    """Records what the poller hands over, in order; every event is processed."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str | None]] = []
        self.polled: list[tuple[str, str]] = []
        self.snapshots: list[str] = []

    async def process(self, ev: Event, cursor: str | None = None) -> str:
        self.events.append((ev.id, cursor))
        return "processed"

    def count_polled(self, event_type: str, status: str) -> None:
        self.polled.append((event_type, status))

    def subscriptions_written(self, states: Iterable[SubState]) -> None:
        self.snapshots.extend(s.id for s in states)


async def test_the_poller_needs_only_the_ledger_protocol(tmp_path: Path) -> None:
    fake = FakeStripe()
    fake.add(*(payment(i, NOW - 1000 + i) for i in range(2)))
    store = StateStore(tmp_path / "state.db")
    await store.open()
    await store.call(state.create_tables)
    log = logging.getLogger("test.stripe.poller")
    try:
        async with fake_stripe(fake) as base:
            settings = StripeSettings(api_key=Secret(API_KEY), api_base=base)
            ctx = SourceContext("stripe", settings, MetricState(), store, SelfMetrics(), log)
            ledger = RecordingLedger()
            check: Ledger = ledger  # conformance checked by the type checker too
            poller = Poller(ctx, settings, check, LogFirst(log))
            assert await poller.poll_once() is False  # first start: the cursor is the newest event
            assert ledger.events == []
            fake.add(*(payment(i, NOW - 900 + i) for i in range(2, 5)))
            fake.add(
                {
                    "id": "evt_bad",
                    "object": "event",
                    "type": "charge.refunded",
                    "created": NOW - 800,
                    "data": 7,
                }
            )
            while await poller.poll_once():
                pass
            # Oldest first, each with its own id as the cursor to store in the same transaction.
            assert ledger.events == [(f"evt_p{i:05d}", f"evt_p{i:05d}") for i in range(2, 5)]
            # The undecodable event is counted as invalid and skipped: the cursor moves past it.
            assert ledger.polled == [("payment_intent.succeeded", "processed")] * 3 + [("unknown", "invalid")]
            assert await store.call(state.read_kv, "cursor") == "evt_bad"
            fake.subscriptions = [subscription("sub_1", "active")]
            assert await poller.reconcile() == 1
            assert ledger.snapshots == ["sub_1"]
            await poller.close()
    finally:
        await store.close()
