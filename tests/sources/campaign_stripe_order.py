"""Long campaign: seeded Stripe subscription lifecycles (many same-second steps) and refunds, applied
through the real decode -> effects -> store core in random orders and batch splits, checked against the
lifecycles themselves. Prints figures; exits 1 on the first mismatch (the seed replays it).

    .venv/bin/python -m tests.sources.campaign_stripe_order --seeds 300
"""

from __future__ import annotations

import argparse
import itertools
import random
import sqlite3
import sys
from fractions import Fraction
from typing import Any

from collector.sources.stripe import state
from collector.sources.stripe.events import decode_event, effects
from tests.sources.stripe_helpers import body_of, event
from tests.sources.stripe_lifecycles import T, lifecycle_history, truth


def refunds(rng: random.Random, charge: str) -> tuple[list[dict[str, Any]], int, int]:
    """A charge refunded in 1-4 steps, events without previous_attributes; (events, count, total)."""
    total, out = 0, []
    for _ in range(rng.randint(1, 4)):
        total += rng.randint(1, 500)
        ev = event("charge.refunded", id=charge, currency="jpy", amount=10_000, amount_refunded=total)
        del ev["data"]["previous_attributes"]
        del ev["data"]["object"]["refunds"]
        out.append(ev)
    return out, len(out), total


def run_once(seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    histories = [lifecycle_history(rng, f"sub_{seed}_{i}", T - 50) for i in range(rng.randint(1, 20))]
    charges = [refunds(rng, f"ch_{seed}_{i}") for i in range(rng.randint(0, 5))]
    events = [e for h, _ in histories for e in h] + [e for evs, _n, _t in charges for e in evs]
    redelivered = [rng.choice(events) for _ in range(rng.randint(0, 5))]
    order = events + redelivered
    rng.shuffle(order)
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE kv (owner TEXT, key TEXT, value BLOB, PRIMARY KEY (owner, key))")
    state.create_tables(conn)
    i = 0
    while i < len(order):  # random group-commit splits
        n = rng.randint(1, 8)
        batch = []
        for ev in order[i : i + n]:
            e = decode_event(body_of(ev))
            batch.append((e.id, e.type, e.created, effects(e), None))
        conn.execute("BEGIN")
        state.apply_batch(conn, batch, 1.0)
        conn.execute("COMMIT")
        i += n
    loaded = state.load(conn)
    active = [s for s in loaded.subscriptions if s.status == "active"]
    mrr = float(sum((s.mrr for s in active), Fraction(0)) / 100)
    got = (len(active), mrr)
    expected = truth(histories)
    counts = {(n, labels): v for n, labels, v in loaded.counters}
    refund_count = counts.get(("stripe_refunds_total", ("jpy",)), 0)
    refund_value = counts.get(("stripe_refund_value_total", ("jpy",)), 0)
    want_refunds = (sum(n for _e, n, _t in charges), sum(t for _e, _n, t in charges))
    if got != expected or (refund_count, refund_value) != want_refunds:
        print(
            f"MISMATCH seed={seed}: subscriptions {got} != {expected}, refunds {(refund_count, refund_value)} != {want_refunds}"
        )
        sys.exit(1)
    ties = sum(1 for h, _ in histories for a, b in itertools.pairwise(h) if a["created"] == b["created"])
    return {"events": len(order), "subscriptions": len(histories), "ties": ties, "charges": len(charges)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--start", type=int, default=0)
    args = parser.parse_args()
    totals = {"events": 0, "subscriptions": 0, "ties": 0, "charges": 0}
    for seed in range(args.start, args.start + args.seeds):
        for k, v in run_once(seed).items():
            totals[k] += v
    print(
        f"seeds={args.seeds} events={totals['events']} subscriptions={totals['subscriptions']} "
        f"same_second_steps={totals['ties']} refunded_charges={totals['charges']} mismatches=0"
    )


if __name__ == "__main__":
    main()
