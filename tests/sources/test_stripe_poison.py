"""Poison Stripe events, correctly signed: each rejected alone with a counted reason and a 200 (Stripe
retries every non-2xx for 3 days), the valid events sent with them applied, stored state never
poisoned, and restarts - of the source's task, of the collector, after a failed restore - change no counter."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

from collector.settings import StripeSettings
from collector.sources.stripe import StripeSource, state
from collector.sources.stripe.events import Effects, decode_event
from collector.sources.stripe.writer import GroupCommitter
from collector.store import StateStore
from tests.helpers import make_settings, serve, value
from tests.sources.crash import crashable, kill_and_wait_restart
from tests.sources.stripe_helpers import SECRET, body_of, event, post
from tests.sources.stripe_running import until_started

DEPTH = 5000


def payment(n: int, amount: int = 1000) -> dict[str, Any]:
    return event("payment_intent.succeeded", event_id=f"evt_ok{n:03d}", amount=amount, amount_received=amount)


def decimal_sub(sub_id: str, decimal: str) -> dict[str, Any]:
    ev = event("customer.subscription.created", id=sub_id)
    price = ev["data"]["object"]["items"]["data"][0]["price"]
    price["unit_amount"] = None
    price["unit_amount_decimal"] = decimal
    return ev


def poison() -> dict[str, tuple[bytes, str]]:
    """name -> (signed body, reason counted in collector_source_errors_total)."""
    huge_created = payment(900)
    huge_created["created"] = 2**63
    huge_amount = payment(901)
    huge_amount["data"]["object"]["amount_received"] = 2**63
    deep = body_of(payment(902)).decode()
    deep = deep.replace('"metadata": {}', '"metadata": ' + "[" * DEPTH + "]" * DEPTH, 1)
    assert "[[[[" in deep
    return {
        "unit_amount_decimal_1e400": (body_of(decimal_sub("sub_1e400", "1e400")), "out_of_range"),
        "unit_amount_decimal_nan": (body_of(decimal_sub("sub_nan", "NaN")), "out_of_range"),
        "created_2_63": (body_of(huge_created), "out_of_range"),
        "amount_2_63": (body_of(huge_amount), "out_of_range"),
        "nested_5000_deep": (deep.encode(), "too_deep"),
        "nan_literal": (
            body_of(payment(903)).replace(b'"amount_received": 1000', b'"amount_received": NaN'),
            "invalid_json",
        ),
    }


def counters(m: dict[str, Any]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every counter sample of the collector (`*_total`) - what a restart must not change."""
    return {
        (name, tuple(sorted(s.labels.items()))): s.value
        for name, samples in m.items()
        # not the scrapes themselves (HTTP traffic) nor the restart being counted
        if name.endswith("_total")
        and not name.startswith(("collector_source_restarts", "process_", "collector_http_"))
        for s in samples
        if not (name == "collector_source_errors_total" and s.labels.get("reason") == "RuntimeError")
    }


async def test_poison_events_are_rejected_alone_and_restarts_change_no_counter(tmp_path: Path) -> None:
    bad = poison()
    good = [payment(i) for i in range(20)] + [event("customer.subscription.created", id="sub_fine")]
    settings = make_settings(tmp_path, stripe=StripeSettings(webhook_secrets=[SECRET]))
    sources = {"stripe": crashable(StripeSource)}
    async with serve(settings, sources) as c:
        await until_started(c)
        # All at once, interleaved: the writer batches them into shared group commits.
        bodies = (
            [body_of(e) for e in good[:10]] + [b for b, _ in bad.values()] + [body_of(e) for e in good[10:]]
        )
        answers = await asyncio.gather(*(post(c.url, b) for b in bodies))
        assert all(status < 500 for status, _ in answers), answers
        for name, (body, _reason) in bad.items():
            status, answer = await post(c.url, body)  # once more, alone: the same answer
            assert status == 200 and answer["status"] in ("rejected", "invalid", "duplicate"), (name, answer)
        m = await c.metrics()
        for _body, reason in bad.values():
            assert (value(m, "collector_source_errors_total", source="stripe", reason=reason) or 0) >= 1, (
                reason
            )
        assert value(m, "stripe_payments_total", currency="usd") == 20
        assert value(m, "stripe_payment_value_total", currency="usd") == 200.0
        assert value(m, "stripe_subscriptions_created_total") == 1  # the poison subscriptions never counted
        assert value(m, "stripe_monthly_recurring_revenue", currency="usd") == 15.0
        for s in (x for name, xs in m.items() for x in xs):
            assert s.value == s.value and abs(s.value) != float("inf"), s
        before = counters(m)

        await kill_and_wait_restart(c, "stripe")
        after = counters(await c.metrics())
        assert after == before
        assert (await post(c.url, body_of(payment(999))))[0] == 200  # and it still works
        before = counters(await c.metrics())
    with sqlite3.connect(tmp_path / "data" / "state.db") as conn:
        stored = dict(conn.execute("SELECT name, value FROM stripe_counters").fetchall())
        subs = [r[0] for r in conn.execute("SELECT id FROM stripe_subscriptions")]
    assert stored["stripe_payments_total"] == 21 and subs == ["sub_fine"]

    async with serve(settings) as c:  # the whole collector restarted on the same state
        await until_started(c)
        after = counters(await c.metrics())

    def persisted(cs: dict[Any, float]) -> dict[Any, float]:
        return {k: v for k, v in cs.items() if k[0] not in _PER_PROCESS}

    assert persisted(after) == persisted(before)
    assert value_of(after, "stripe_payments_total") == 21


def value_of(cs: dict[Any, float], name: str) -> float:
    return sum(v for (n, _labels), v in cs.items() if n == name)


# Counted per process (HTTP traffic, deliveries), not persisted: they start again at 0.
_PER_PROCESS = ("stripe_webhooks_total", "collector_source_errors_total", "collector_http_requests_total")


async def test_a_failed_restore_then_a_restart_does_not_add_the_stored_totals_again(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, stripe=StripeSettings(webhook_secrets=[SECRET]))
    async with serve(settings) as c:
        await until_started(c)
        for i in range(4):
            assert (await post(c.url, body_of(event("customer.subscription.created", id=f"sub_{i}"))))[
                0
            ] == 200

    failures = {"left": 2}

    class FailsToRestoreTwice(StripeSource):
        def _publish_subscriptions(self) -> None:
            if failures["left"] > 0:  # fails after the counters were mirrored, as the overflow did
                failures["left"] -= 1
                raise OverflowError("integer division result too large for a float")
            super()._publish_subscriptions()

    async with serve(settings, {"stripe": FailsToRestoreTwice}) as c:
        await until_started(c)
        m = await c.metrics()
    assert failures["left"] == 0
    assert value(m, "stripe_subscriptions_created_total") == 4  # was 12, 16, ... before
    assert value(m, "stripe_subscriptions_active") == 4


async def test_an_unreadable_stored_row_is_skipped_and_counted_not_fatal(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, stripe=StripeSettings(webhook_secrets=[SECRET]))
    async with serve(settings) as c:
        await until_started(c)
        assert (await post(c.url, body_of(event("customer.subscription.created", id="sub_ok"))))[0] == 200
        assert (await post(c.url, body_of(payment(1))))[0] == 200
    with sqlite3.connect(
        tmp_path / "data" / "state.db"
    ) as conn:  # a state written by an older, buggy version
        conn.execute(
            "INSERT INTO stripe_subscriptions (id, status, currency, mrr, created) VALUES ('sub_bad', 'active', 'usd', ?, 1)",
            (str(10**400),),
        )
        conn.execute("INSERT INTO stripe_counters VALUES ('stripe_payments_total', '[\"eur\"]', 1e300)")
    async with serve(settings) as c:
        await until_started(c)
        assert (await post(c.url, body_of(payment(2))))[0] == 200
        m = await c.metrics()
    assert value(m, "collector_source_errors_total", source="stripe", reason="stored_state_invalid") == 2
    assert value(m, "stripe_payments_total", currency="usd") == 2
    assert value(m, "stripe_payments_total", currency="eur") is None
    assert value(m, "stripe_monthly_recurring_revenue", currency="usd") == 15.0


async def test_group_commit_isolates_an_event_the_store_refuses(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    await store.open()
    await store.call(state.create_tables)
    results: dict[str, str] = {}

    def committed(job: Any, applied: Any) -> str:
        results[job.ev.id] = "duplicate" if applied.duplicate else "processed"
        return results[job.ev.id]

    def rejected(job: Any, reason: str, _exc: Exception) -> str:
        results[job.ev.id] = reason
        return reason

    writer = GroupCommitter(store, lambda: 1.0, committed, lambda jobs, exc: None, rejected)
    evs = [decode_event(body_of(payment(i))) for i in range(10)]
    # Bypasses decode-time validation on purpose: the store itself cannot hold 2^64.
    poisoned = Effects(counters=[("stripe_payments_total", ("usd",), 2**64)])
    futures = [
        writer.submit(ev, poisoned if i == 4 else Effects(counters=[("stripe_payments_total", ("usd",), 1)]))
        for i, ev in enumerate(evs)
    ]
    answers = await asyncio.gather(*futures)
    await writer.close()
    total = await store.call(lambda conn: conn.execute("SELECT value FROM stripe_counters").fetchone()[0])
    await store.close()
    assert answers == ["processed"] * 4 + ["store_rejected"] + ["processed"] * 5
    assert total == 9
    assert json.dumps(results)
