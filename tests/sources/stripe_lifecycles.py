"""Stripe subscription lifecycles as real histories walk them, and their ground truth (tests and the campaign)."""

from __future__ import annotations

import random
import time
from typing import Any

from tests.sources.stripe_helpers import event

NOW = int(time.time())
T = NOW - 600  # a whole second shared by the pair

# Stripe's lifecycle moves forward through these (docs.stripe.com/billing/subscriptions/overview); a
# real history is a walk along one of them, each step at the same second as the previous or later.
LIFECYCLES = (
    ("incomplete", "active", "past_due", "unpaid", "canceled"),
    ("incomplete", "incomplete_expired"),
    ("trialing", "active", "canceled"),
    ("incomplete", "active", "paused"),
    ("trialing", "past_due", "canceled"),
)


def sub_event(kind: str, sub_id: str, created: int, status: str, quantity: int = 1) -> dict[str, Any]:
    ev = event(f"customer.subscription.{kind}", created=created, id=sub_id, status=status)
    ev["data"]["object"]["items"]["data"][0]["quantity"] = quantity
    return ev


def lifecycle_history(rng: random.Random, sub_id: str, start: int) -> tuple[list[dict[str, Any]], str]:
    """A real walk along one lifecycle with many same-second steps; returns its events and last status."""
    path = rng.choice(LIFECYCLES)
    steps = path[: rng.randint(1, len(path))]
    events, t = [], start
    for i, status in enumerate(steps):
        t += rng.choice((0, 0, 1))  # ties are the point
        last = i == len(steps) - 1
        kind = "created" if i == 0 else "deleted" if last and status == "canceled" else "updated"
        events.append(sub_event(kind, sub_id, t, status, quantity=rng.randint(1, 3)))
    return events, steps[-1]


def truth(histories: list[tuple[list[dict[str, Any]], str]]) -> tuple[int, float]:
    """Active subscriptions and USD MRR from the lifecycles themselves (their last step)."""
    active = [h for h, last in histories if last == "active"]
    mrr = sum(15.0 * h[-1]["data"]["object"]["items"]["data"][0]["quantity"] for h in active)
    return len(active), mrr
