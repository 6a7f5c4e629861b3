"""Group commit of Stripe events: many events per transaction, still each exactly once.

The store thread is held busy (a real blocking call on it) while deliveries arrive, so they pile up
and are committed together: batching is forced, not hoped for, and no assertion depends on timing.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from collector.sources.stripe import state
from collector.sources.stripe.events import Event, decode_event, effects
from collector.sources.stripe.source import StripeSource
from collector.sources.stripe.writer import GroupCommitter, Job
from collector.store import StateStore
from tests.helpers import Running, value
from tests.sources.stripe_helpers import body_of, deliver, event
from tests.sources.stripe_running import T0, collector, sub_event


def _ev(name: str = "payment_intent.succeeded", **kw: Any) -> Event:
    return decode_event(body_of(event(name, **kw)))


def _item(ev: Event, cursor: str | None = None) -> state.BatchItem:
    return (ev.id, ev.type, ev.created, effects(ev), cursor)


def _conn() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE kv (owner TEXT, key TEXT, value BLOB, PRIMARY KEY (owner, key))")
    state.create_tables(conn)
    return conn


# -- apply_batch: pure store logic -------------------------------------------------------------------


def test_same_event_twice_in_one_batch_is_applied_once() -> None:
    conn = _conn()
    pay = _ev(amount_received=700)
    out = state.apply_batch(conn, [_item(pay), _item(_ev(amount_received=300)), _item(pay)], 1.0)
    assert [a.duplicate for a in out] == [False, False, True]
    assert out[2].counters == []
    loaded = state.load(conn)
    assert sorted(loaded.counters) == [
        ("stripe_payment_value_total", ("usd",), 1000),
        ("stripe_payments_total", ("usd",), 2),
    ]
    # ... and a later batch sees it too.
    assert state.apply_batch(conn, [_item(pay)], 2.0)[0].duplicate


def test_one_subscription_out_of_order_within_a_batch_resolves_by_created() -> None:
    conn = _conn()
    deleted = decode_event(body_of(sub_event("customer.subscription.deleted", "sub_B", T0 + 20)))
    updated = decode_event(
        body_of(sub_event("customer.subscription.updated", "sub_B", T0 + 10, status="active"))
    )
    created = decode_event(body_of(sub_event("customer.subscription.created", "sub_B", T0)))
    out = state.apply_batch(conn, [_item(deleted), _item(updated), _item(created)], 1.0)
    assert out[0].subscription is not None and out[0].subscription.status == "canceled"
    assert out[1].subscription is None and out[2].subscription is None  # older: not written
    assert ("stripe_subscriptions_canceled_total", (), 1) in out[0].counters
    loaded = state.load(conn)
    assert [(s.id, s.status, s.created) for s in loaded.subscriptions] == [("sub_B", "canceled", T0 + 20)]
    assert sorted(loaded.counters) == [
        ("stripe_subscriptions_canceled_total", (), 1),
        ("stripe_subscriptions_created_total", (), 1),
    ]


def test_cursor_is_stored_with_its_event_in_the_batch() -> None:
    conn = _conn()
    a, b = _ev(), _ev()
    state.apply_batch(conn, [_item(a, cursor=a.id), _item(b), _item(a, cursor="evt_later")], 1.0)
    assert state.read_kv(conn, "cursor") == "evt_later"


#: Batch sizes at and around each prepared statement size (`state._SIZES`) and the chunk size (256).
_CAMPAIGN_SIZES = (1, 2, 3, 4, 5, 7, 9, 13, 16, 17, 25, 31, 33, 49, 97, 129, 193, 255, 256, 257, 300, 520)


@pytest.mark.parametrize("seed", range(4))
def test_seeded_batches_of_every_size_record_each_id_once_as_a_plain_model_does(seed: int) -> None:
    """Ids drawn with repeats (within a batch and across batches) over batch sizes padded to each
    statement size and cut into chunks; the model is a dict of first sightings and sums."""
    rng = random.Random(seed)
    pool = []
    for _ in range(700):
        cur, amount = rng.choice(["usd", "eur", "jpy"]), rng.randrange(1, 10**6)
        ev = _ev(created=T0 + rng.randrange(10**6), currency=cur, amount_received=amount)
        pool.append((ev, cur, amount))
    conn = _conn()
    stored: dict[str, tuple[str, str, int, float]] = {}
    payments: dict[str, int] = {}
    value_minor: dict[str, int] = {}
    for batch_no in range(40):
        now = 1000.0 + batch_no
        batch = [rng.choice(pool) for _ in range(rng.choice(_CAMPAIGN_SIZES))]
        expected = []
        for ev, cur, amount in batch:
            duplicate = ev.id in stored
            expected.append(duplicate)
            if not duplicate:
                stored[ev.id] = (ev.id, "payment_intent.succeeded", ev.created, now)
                payments[cur] = payments.get(cur, 0) + 1
                value_minor[cur] = value_minor.get(cur, 0) + amount
        conn.execute("BEGIN")
        out = state.apply_batch(conn, [_item(ev) for ev, _cur, _amount in batch], now)
        conn.execute("COMMIT")
        assert [a.duplicate for a in out] == expected, (seed, batch_no, len(batch))
    rows = conn.execute("SELECT id, type, created, seen_at FROM stripe_events ORDER BY id").fetchall()
    assert rows == sorted(stored.values())
    assert sorted(state.load(conn).counters) == sorted(
        [("stripe_payments_total", (c,), n) for c, n in payments.items()]
        + [("stripe_payment_value_total", (c,), v) for c, v in value_minor.items()]
    )


# -- GroupCommitter on a real store ------------------------------------------------------------------


@asynccontextmanager
async def held(store: StateStore) -> AsyncIterator[None]:
    """Keep the store's one thread busy until the block ends, so writes queue behind it."""
    gate = threading.Event()
    blocker = asyncio.ensure_future(store.call(lambda _c: gate.wait(30)))
    try:
        yield
    finally:
        gate.set()
        await blocker


async def _until(predicate: Any, what: str) -> None:
    for _ in range(800):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


class Recorder:
    def __init__(self) -> None:
        self.committed: list[tuple[str, bool]] = []
        self.failed: list[list[str]] = []

    def on_committed(self, job: Job, applied: state.Applied) -> str:
        self.committed.append((job.ev.id, applied.duplicate))
        return "duplicate" if applied.duplicate else "processed"

    def on_failed(self, jobs: list[Job], _exc: Exception) -> None:
        self.failed.append([j.ev.id for j in jobs])


@asynccontextmanager
async def committer(tmp_path: Path) -> AsyncIterator[tuple[GroupCommitter, StateStore, Recorder]]:
    store = StateStore(tmp_path / "state.db")
    await store.open()
    await store.call(state.create_tables)
    rec = Recorder()
    writer = GroupCommitter(store, lambda: 1.0, rec.on_committed, rec.on_failed)
    try:
        yield writer, store, rec
    finally:
        await writer.close()
        await store.close()


async def test_queued_events_share_one_transaction_and_each_waiter_gets_its_own_outcome(
    tmp_path: Path,
) -> None:
    async with committer(tmp_path) as (writer, store, rec):
        evs = [_ev() for _ in range(10)]
        async with held(store):
            futures = [writer.submit(ev, effects(ev)) for ev in [*evs, evs[3]]]
            await _until(lambda: writer.pending == 11, "queued")
        assert await asyncio.gather(*futures) == ["processed"] * 10 + ["duplicate"]
        assert (writer.commits, writer.last_batch) == (1, 11)
        assert rec.committed == [(e.id, False) for e in evs] + [(evs[3].id, True)]
        counters = (await store.call(state.load)).counters
        assert ("stripe_payments_total", ("usd",), 10) in counters


async def test_a_waiter_that_goes_away_still_has_its_event_applied_and_mirrored(tmp_path: Path) -> None:
    async with committer(tmp_path) as (writer, store, rec):
        a, b = _ev(), _ev()
        async with held(store):
            fa, fb = writer.submit(a, effects(a)), writer.submit(b, effects(b))
            await _until(lambda: writer.pending == 2, "queued")
            fa.cancel()  # the webhook's client hung up
        assert await fb == "processed"
        assert rec.committed == [(a.id, False), (b.id, False)]


async def test_a_failed_transaction_fails_every_waiter_and_applies_nothing(tmp_path: Path) -> None:
    async with committer(tmp_path) as (writer, store, rec):
        await store.call(lambda c: c.execute("ALTER TABLE stripe_events RENAME TO parked"))
        evs = [_ev() for _ in range(4)]
        async with held(store):
            futures = [writer.submit(ev, effects(ev)) for ev in evs]
            await _until(lambda: writer.pending == 4, "queued")
        assert await asyncio.gather(*futures) == [None] * 4
        assert rec.committed == []
        assert sorted(id_ for batch in rec.failed for id_ in batch) == sorted(e.id for e in evs)
        await store.call(lambda c: c.execute("ALTER TABLE parked RENAME TO stripe_events"))
        # The senders retry: each applied once now, nothing of the failed attempt left behind.
        assert await asyncio.gather(*(writer.submit(ev, effects(ev)) for ev in evs)) == ["processed"] * 4
        counters = (await store.call(state.load)).counters
        assert ("stripe_payments_total", ("usd",), 4) in counters


async def test_close_finishes_the_commit_in_flight_and_refuses_the_rest(tmp_path: Path) -> None:
    async with committer(tmp_path) as (writer, store, rec):
        first, queued, late = _ev(), _ev(), _ev()
        async with held(store):
            f1 = writer.submit(first, effects(first))
            await _until(lambda: writer.pending == 1 and writer._in_flight == 1, "in flight")
            f2 = writer.submit(queued, effects(queued))
            closing = asyncio.ensure_future(writer.close())
            await asyncio.sleep(0.05)
            assert not closing.done()  # waits for the transaction the store thread will still run
        await closing
        assert (await f1, await f2) == ("processed", None)
        assert await writer.submit(late, effects(late)) is None
        assert rec.committed == [(first.id, False)]
        assert rec.failed == [[late.id]]
        writer.open()  # a restarted source accepts events again
        assert await writer.submit(late, effects(late)) == "processed"


# -- end to end over HTTP ----------------------------------------------------------------------------


def _source(c: Running) -> StripeSource:
    return next(s for s, _ctx in c.runtime.sources if isinstance(s, StripeSource))


async def test_concurrent_deliveries_and_concurrent_duplicates_batch_and_count_once(tmp_path: Path) -> None:
    async with collector(tmp_path) as c:
        src = _source(c)
        events = [event("payment_intent.succeeded", amount_received=100 + i) for i in range(30)]
        twin = event("payment_intent.succeeded", amount_received=5)
        async with held(c.runtime.store):
            sends = [*events, *([twin] * 8)]
            pending = [asyncio.ensure_future(deliver(c.url, ev)) for ev in sends]
            await _until(lambda: src.writer.pending == len(sends), "all deliveries queued")
        results = await asyncio.gather(*pending)
        m = await c.metrics()
    assert [r[0] for r in results] == [200] * 38
    assert [r[1]["status"] for r in results[:30]] == ["processed"] * 30
    assert sorted(r[1]["status"] for r in results[30:]) == ["duplicate"] * 7 + ["processed"]
    assert src.writer.commits <= 2  # 38 events, one or two transactions (the first may start alone)
    assert value(m, "stripe_payments_total", currency="usd") == 31
    assert value(m, "stripe_payment_value_total", currency="usd") == (sum(range(100, 130)) + 5) / 100
    assert value(m, "stripe_webhooks_total", event_type="payment_intent.succeeded", status="processed") == 31
    assert value(m, "stripe_webhooks_total", event_type="payment_intent.succeeded", status="duplicate") == 7


async def test_one_subscriptions_events_in_one_batch_resolve_by_created(tmp_path: Path) -> None:
    deleted = sub_event("customer.subscription.deleted", "sub_Q", T0 + 20)
    updated = sub_event("customer.subscription.updated", "sub_Q", T0 + 10, status="active")
    created = sub_event("customer.subscription.created", "sub_Q", T0)
    async with collector(tmp_path) as c:
        src = _source(c)
        async with held(c.runtime.store):
            pending = [asyncio.ensure_future(deliver(c.url, ev)) for ev in (deleted, updated, created)]
            await _until(lambda: src.writer.pending == 3, "queued")
        assert [r[0] for r in await asyncio.gather(*pending)] == [200] * 3
        m = await c.metrics()
    assert value(m, "stripe_subscriptions_active") == 0
    assert value(m, "stripe_subscriptions", status="canceled") == 1
    assert value(m, "stripe_subscriptions", status="active") is None
    assert value(m, "stripe_subscriptions_created_total") == 1
    assert value(m, "stripe_subscriptions_canceled_total") == 1


async def test_failed_group_commit_answers_500_to_all_and_redelivery_applies_once(tmp_path: Path) -> None:
    events = [event("payment_intent.succeeded") for _ in range(5)]
    async with collector(tmp_path) as c:
        src, store = _source(c), c.runtime.store
        await store.call(lambda conn: conn.execute("ALTER TABLE stripe_events RENAME TO parked"))
        async with held(store):
            pending = [asyncio.ensure_future(deliver(c.url, ev)) for ev in events]
            await _until(lambda: src.writer.pending == 5, "queued")
        assert await asyncio.gather(*pending) == [(500, {"error": "could not record the event"})] * 5
        m = await c.metrics()
        assert value(m, "stripe_payments_total", currency="usd") is None
        await store.call(lambda conn: conn.execute("ALTER TABLE parked RENAME TO stripe_events"))
        retried = await asyncio.gather(*(deliver(c.url, ev) for ev in events))  # Stripe's retries
        assert retried == [(200, {"received": True, "status": "processed"})] * 5
        m = await c.metrics()
    assert value(m, "stripe_payments_total", currency="usd") == 5
    assert value(m, "stripe_webhooks_total", event_type="payment_intent.succeeded", status="error") == 5
    assert value(m, "stripe_webhooks_total", event_type="payment_intent.succeeded", status="processed") == 5
    assert value(m, "collector_source_errors_total", source="stripe", reason="store") == 5
