"""The Stripe ledger core, without a store or a server: event effects + stored facts in, changes out."""

from __future__ import annotations

import random
import sqlite3
from fractions import Fraction

import pytest

from collector.sources.stripe import ledger, state
from collector.sources.stripe.events import KIND_CREATED, KIND_DELETED, Effects, RefundObs, SubState
from collector.sources.stripe.ledger import ChargeFacts, Mirror, SubFacts

pytestmark = pytest.mark.quick  # the quick tier (`make test-quick`): no servers or processes


def test_a_refund_counts_the_value_above_the_mark_and_each_refund_once() -> None:
    r = RefundObs("ch_1", "usd", 700, None, ("re_1", "re_2"), (700,))
    write, deltas = ledger.refund(r, ChargeFacts(500, frozenset({"id:re_1", "total:500"})), now=9.0)
    assert deltas == [("stripe_refund_value_total", ("usd",), 200), ("stripe_refunds_total", ("usd",), 1)]
    assert write == ledger.ChargeWrite("ch_1", 700, ("id:re_1", "id:re_2", "total:700"), 9.0)


def test_previous_attributes_give_the_exact_change_and_an_old_total_counts_nothing_new() -> None:
    late = RefundObs("ch_1", "eur", 300, 100, (), (300,))
    _w, deltas = ledger.refund(late, ChargeFacts(900, frozenset({"total:300", "total:900"})), now=1.0)
    assert deltas == [("stripe_refund_value_total", ("eur",), 200)]  # exact, though below the mark
    _w, deltas = ledger.refund(RefundObs("ch_1", "eur", 300, None), ChargeFacts(900), now=1.0)
    assert deltas == []


def test_a_cancellation_counts_once_even_when_a_later_state_is_stored() -> None:
    later = SubState("sub_1", "canceled", "usd", Fraction(0), 20, KIND_DELETED)
    early_cancel = SubState("sub_1", "canceled", "usd", Fraction(0), 10)
    write, first, tied = ledger.subscription(early_cancel, SubFacts(later, canceled_counted=False))
    assert (write, first, tied) == (ledger.SubWrite("sub_1", None, True), True, False)
    write, first, _tied = ledger.subscription(early_cancel, SubFacts(later, canceled_counted=True))
    assert (write, first) == (None, False)


def test_a_tie_on_the_same_second_is_ordered_by_the_lifecycle_and_flagged() -> None:
    created = SubState("sub_1", "incomplete", "usd", Fraction(0), 5, KIND_CREATED)
    active = SubState("sub_1", "active", "usd", Fraction(1500), 5)
    applied, _charge, _sub = ledger.step(Effects(subscription=active), None, SubFacts(created), now=1.0)
    assert applied.subscription == active and applied.tied == "sub_1"
    applied, _charge, sub = ledger.step(Effects(subscription=created), None, SubFacts(active), now=1.0)
    assert applied.subscription is None and sub is None


def test_a_snapshot_replaces_only_a_different_older_state() -> None:
    old = SubState("sub_1", "active", "usd", Fraction(1500), 5)
    assert not ledger.snapshot_supersedes(SubState("sub_1", "active", "usd", Fraction(1500), 9), old)
    assert ledger.snapshot_supersedes(SubState("sub_1", "past_due", "usd", Fraction(1500), 9), old)
    assert not ledger.snapshot_supersedes(SubState("sub_1", "past_due", "usd", Fraction(1500), 4), old)


def test_outcome_names_the_delivery_status() -> None:
    assert ledger.outcome(ledger.Applied(duplicate=True), Effects(problem="x")) == "duplicate"
    assert ledger.outcome(ledger.Applied(), Effects(problem="x")) == "invalid"
    assert ledger.outcome(ledger.Applied(), Effects(handled=False)) == "ignored"
    assert ledger.outcome(ledger.Applied(), Effects()) == "processed"


def test_the_mirror_turns_committed_results_into_exact_metric_changes() -> None:
    m = Mirror()
    pay = ledger.Applied(
        counters=[("stripe_payments_total", ("jpy",), 1), ("stripe_payment_value_total", ("jpy",), 7)]
    )
    assert m.applied(pay, created=100) == [
        ("stripe_payments_total", ("jpy",), 1, True),
        ("stripe_payment_value_total", ("jpy",), 7, False),  # zero-decimal: 7 yen
        ("stripe_last_event_timestamp_seconds", (), 100, False),
    ]
    # Value families are set from the exact minor total, never a running float sum.
    for _ in range(9):
        m.counter("stripe_payment_value_total", ("usd",), 10)
    assert m.counter("stripe_payment_value_total", ("usd",), 10)[2] == 1.0
    sub = ledger.Applied(subscription=SubState("sub_1", "active", "usd", Fraction(1500), 50))
    assert m.applied(sub, created=50) == [  # an older event leaves the newest-event gauge alone
        ("stripe_subscriptions_active", (), 1, False),
        ("stripe_subscriptions", ("active",), 1, False),
        ("stripe_monthly_recurring_revenue", ("usd",), 15.0, False),
    ]
    m.subscription(SubState("sub_1", "canceled", "usd", Fraction(0), 60))
    assert ("stripe_subscriptions", ("active",), 0, False) in m.subscription_gauges()


def test_restore_sets_the_stored_totals_and_forgets_the_old_view() -> None:
    m = Mirror()
    m.counter("stripe_payment_value_total", ("usd",), 999)
    changes = m.restore(
        [("stripe_payments_total", ("usd",), 4), ("stripe_payment_value_total", ("usd",), 250)], 77
    )
    assert changes == [
        ("stripe_payments_total", ("usd",), 4, False),
        ("stripe_payment_value_total", ("usd",), 2.5, False),
        ("stripe_last_event_timestamp_seconds", (), 77, False),
    ]


# -- the core against an independent model of the stored facts ------------------------------------------


def _random_effects(rng: random.Random) -> Effects:
    charge = f"ch_{rng.randrange(3)}"
    if rng.random() < 0.5:
        total = rng.choice([100, 250, 400, 1000])
        ids = tuple(sorted({f"re_{rng.randrange(4)}" for _ in range(rng.randrange(3))}))
        prev = rng.choice([None, None, total - 100])
        return Effects(refund=RefundObs(charge, "usd", total, prev, ids, (total,)))
    status = rng.choice(["incomplete", "active", "past_due", "canceled"])
    st = SubState(
        f"sub_{rng.randrange(3)}",
        status,
        "usd",
        Fraction(rng.randrange(3) * 500),
        rng.randrange(5),
        rng.randrange(3),
    )
    return Effects(subscription=st)


def test_the_sql_shell_stores_exactly_what_the_core_decides_over_a_random_campaign() -> None:
    """state.apply_batch (SQL facts) and the core over plain dicts (the model) agree event by event."""
    for seed in range(20):
        rng = random.Random(seed)
        conn = sqlite3.connect(":memory:")
        state.create_tables(conn)
        charges: dict[str, ChargeFacts] = {}
        subs: dict[str, SubFacts] = {}
        for i in range(60):
            eff = _random_effects(rng)
            got = state.apply_batch(conn, [(f"evt_{i}", "x", 1, eff, None)], now=float(i))[0]
            ch = charges.get(eff.refund.charge_id) if eff.refund else None
            sb = subs.get(eff.subscription.id) if eff.subscription else None
            want, charge_write, sub_write = ledger.step(eff, ch, sb, now=float(i))
            assert got == want, (seed, i)
            if charge_write is not None:
                old = charges.get(charge_write.charge_id, ChargeFacts())
                charges[charge_write.charge_id] = ChargeFacts(
                    max(old.amount_refunded, charge_write.amount_refunded), old.keys | set(charge_write.keys)
                )
            if sub_write is not None:
                old_sub = subs.get(sub_write.sub_id, SubFacts())
                subs[sub_write.sub_id] = SubFacts(
                    sub_write.state or old_sub.state, sub_write.canceled_counted
                )
        stored = {s.id: s for s in state.load(conn).subscriptions}
        assert stored == {k: v.state for k, v in subs.items() if v.state is not None}, seed
